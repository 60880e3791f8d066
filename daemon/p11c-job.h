#pragma once
/* A long operation (enroll, renew) with state and progress.  Workers update
 * it from any thread; listeners are told on the main context. */
#include <gio/gio.h>

G_BEGIN_DECLS

typedef struct _P11cJob P11cJob;
typedef void (*P11cJobNotify) (P11cJob *job, GVariant *props, gpointer user_data);

struct _P11cJob {
  gint          ref;
  guint         id;
  char         *path;
  char         *operation;
  guint         owner_uid;
  char         *owner_sender;
  GCancellable *cancel;
  GMainContext *context;
  /* ---- guarded by lock ---- */
  GMutex        lock;
  char         *state;
  double        progress;
  guint         attempt;
  gint64        retry_at;
  char         *error_name;
  char         *error_message;
  GVariant     *error_details;  /* a{sv}, p11c_error_get_details */
  char         *result;
  gboolean      finished;
  /* ---- main thread ---- */
  P11cJobNotify notify;
  gpointer      notify_data;
};

P11cJob *p11c_job_new (guint id, const char *operation, guint owner_uid, const char *sender);
P11cJob *p11c_job_ref (P11cJob *job);
void p11c_job_unref (P11cJob *job);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cJob, p11c_job_unref)

/* Any thread. */
void p11c_job_set_state (P11cJob *job, const char *state, double progress);
void p11c_job_set_attempt (P11cJob *job, guint attempt, gint64 retry_at);
/* Main thread: the job ends (state done/failed/cancelled). */
void p11c_job_finish (P11cJob *job, const char *result, const GError *error);

/* Any thread: the job has ended */
gboolean p11c_job_is_finished (P11cJob *job);

/* Property snapshot as a{sv} (D-Bus property names). */
GVariant *p11c_job_to_variant (P11cJob *job);

/* What a job shows to users other than its owner and root: what runs and
 * how far it is (Operation, State, Progress, Attempt, RetryAt) — not its
 * Result, Owner, Error or ErrorMessage.  split_props divides an a{sv} of job
 * properties into those two parts (each a new floating a{sv}, or NULL when
 * empty). */
gboolean p11c_job_property_is_public (const char *name);
void p11c_job_split_props (GVariant *props, GVariant **public_part, GVariant **private_part);

/* Sleep up to @seconds unless the job is cancelled; FALSE when cancelled. */
gboolean p11c_job_wait (P11cJob *job, guint seconds);

G_END_DECLS
