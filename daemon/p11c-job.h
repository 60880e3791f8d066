#pragma once
/* A long operation (enroll, renew) with state and progress.  Workers update
 * it from any thread; the listener is told on the main context, in order,
 * with a typed snapshot of each change (the bus face exports it). */
#include <gio/gio.h>

G_BEGIN_DECLS

typedef struct _P11cJob P11cJob;

/* What a job is at one moment */
typedef struct {
  guint     id;
  char     *operation;   /* "enroll", "renew" */
  char     *state;       /* queued, generating-key, …, done, failed, cancelled */
  double    progress;
  guint     attempt;
  gint64    retry_at;    /* waiting for the CA: when it asks again, or 0 */
  GError   *error;       /* failed/cancelled: why (a P11C_ERROR with its details) */
  char     *result;      /* done: the new certificate's URI */
  guint     owner_uid;
  gboolean  finished;
} P11cJobState;

void p11c_job_state_free (P11cJobState *state);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cJobState, p11c_job_state_free)

typedef void (*P11cJobNotify) (P11cJob *job, const P11cJobState *state, gpointer user_data);

P11cJob *p11c_job_new (guint id, const char *operation, guint owner_uid, const char *sender);
P11cJob *p11c_job_ref (P11cJob *job);
void p11c_job_unref (P11cJob *job);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cJob, p11c_job_unref)

/* Fixed for the job's life (any thread) */
guint p11c_job_get_id (P11cJob *job);
guint p11c_job_get_owner_uid (P11cJob *job);
const char *p11c_job_get_owner_sender (P11cJob *job);
GCancellable *p11c_job_get_cancellable (P11cJob *job);

/* Main thread: who is told of each change */
void p11c_job_set_notify (P11cJob *job, P11cJobNotify notify, gpointer user_data);

/* Any thread. */
void p11c_job_set_state (P11cJob *job, const char *state, double progress);
void p11c_job_set_attempt (P11cJob *job, guint attempt, gint64 retry_at);
/* State "waiting-for-ca" until @retry_at (one change: a listener never
 * sees the state without the time) */
void p11c_job_set_waiting (P11cJob *job, double progress, gint64 retry_at);
/* Main thread: the job ends (state done/failed/cancelled). */
void p11c_job_finish (P11cJob *job, const char *result, const GError *error);
gboolean p11c_job_is_finished (P11cJob *job);
/* A snapshot of the job now */
P11cJobState *p11c_job_get_state (P11cJob *job);

/* Sleep up to @seconds unless the job is cancelled; FALSE when cancelled. */
gboolean p11c_job_wait (P11cJob *job, guint seconds);

G_END_DECLS
