#define G_LOG_DOMAIN "p11c-job"
#include "p11c-job.h"
#include "p11c-error.h"

struct _P11cJob {
  gint          ref;
  guint         id;
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
  GError       *error;
  char         *result;
  gboolean      finished;
  /* ---- main thread ---- */
  P11cJobNotify notify;
  gpointer      notify_data;
};

P11cJob *
p11c_job_new (guint id, const char *operation, guint owner_uid, const char *sender)
{
  P11cJob *j = g_new0 (P11cJob, 1);

  j->ref = 1;
  j->id = id;
  j->operation = g_strdup (operation);
  j->owner_uid = owner_uid;
  j->owner_sender = g_strdup (sender);
  j->cancel = g_cancellable_new ();
  j->context = g_main_context_ref_thread_default ();
  g_mutex_init (&j->lock);
  j->state = g_strdup ("queued");
  return j;
}

P11cJob *
p11c_job_ref (P11cJob *j)
{
  g_atomic_int_inc (&j->ref);
  return j;
}

void
p11c_job_unref (P11cJob *j)
{
  if (j == NULL || !g_atomic_int_dec_and_test (&j->ref))
    return;
  g_free (j->operation);
  g_free (j->owner_sender);
  g_object_unref (j->cancel);
  g_main_context_unref (j->context);
  g_mutex_clear (&j->lock);
  g_free (j->state);
  g_clear_error (&j->error);
  g_free (j->result);
  g_free (j);
}

guint
p11c_job_get_id (P11cJob *j)
{
  return j->id;
}

guint
p11c_job_get_owner_uid (P11cJob *j)
{
  return j->owner_uid;
}

const char *
p11c_job_get_owner_sender (P11cJob *j)
{
  return j->owner_sender;
}

GCancellable *
p11c_job_get_cancellable (P11cJob *j)
{
  return j->cancel;
}

void
p11c_job_set_notify (P11cJob *j, P11cJobNotify notify, gpointer user_data)
{
  j->notify = notify;
  j->notify_data = user_data;
}

void
p11c_job_state_free (P11cJobState *st)
{
  if (st == NULL)
    return;
  g_free (st->operation);
  g_free (st->state);
  g_clear_error (&st->error);
  g_free (st->result);
  g_free (st);
}

static P11cJobState *
state_locked (P11cJob *j)
{
  P11cJobState *st = g_new0 (P11cJobState, 1);

  st->id = j->id;
  st->operation = g_strdup (j->operation);
  st->state = g_strdup (j->state);
  st->progress = j->progress;
  st->attempt = j->attempt;
  st->retry_at = j->retry_at;
  st->error = j->error ? g_error_copy (j->error) : NULL;
  st->result = g_strdup (j->result);
  st->owner_uid = j->owner_uid;
  st->finished = j->finished;
  return st;
}

P11cJobState *
p11c_job_get_state (P11cJob *j)
{
  P11cJobState *st;
  g_mutex_lock (&j->lock);
  st = state_locked (j);
  g_mutex_unlock (&j->lock);
  return st;
}

typedef struct {
  P11cJob      *job;
  P11cJobState *state;
} Notify;

static void
notify_free (Notify *n)
{
  p11c_job_unref (n->job);
  p11c_job_state_free (n->state);
  g_free (n);
}

static gboolean
notify_idle (gpointer data)
{
  Notify *n = data;
  if (n->job->notify)
    n->job->notify (n->job, n->state, n->job->notify_data);
  return G_SOURCE_REMOVE;
}

/* Called with the lock held: every change is reported, in order, with the
 * values it had (a client following the job sees each state). */
static void
schedule_notify (P11cJob *j)
{
  Notify *n = g_new0 (Notify, 1);
  n->job = p11c_job_ref (j);
  n->state = state_locked (j);
  g_main_context_invoke_full (j->context, G_PRIORITY_DEFAULT, notify_idle, n, (GDestroyNotify) notify_free);
}

void
p11c_job_set_state (P11cJob *j, const char *state, double progress)
{
  g_mutex_lock (&j->lock);
  if (!j->finished)
    {
      g_free (j->state);
      j->state = g_strdup (state);
      j->progress = progress;
      if (!g_str_equal (state, "waiting-for-ca"))
        j->retry_at = 0;
      schedule_notify (j);
    }
  g_mutex_unlock (&j->lock);
}

void
p11c_job_set_attempt (P11cJob *j, guint attempt, gint64 retry_at)
{
  g_mutex_lock (&j->lock);
  j->attempt = attempt;
  j->retry_at = retry_at;
  schedule_notify (j);
  g_mutex_unlock (&j->lock);
}

void
p11c_job_set_waiting (P11cJob *j, double progress, gint64 retry_at)
{
  g_mutex_lock (&j->lock);
  if (!j->finished)
    {
      g_free (j->state);
      j->state = g_strdup ("waiting-for-ca");
      j->progress = progress;
      j->retry_at = retry_at;
      schedule_notify (j);
    }
  g_mutex_unlock (&j->lock);
}

void
p11c_job_finish (P11cJob *j, const char *result, const GError *error)
{
  g_mutex_lock (&j->lock);
  j->finished = TRUE;
  g_free (j->state);
  if (error == NULL)
    {
      j->state = g_strdup ("done");
      j->progress = 1.0;
      j->result = g_strdup (result);
    }
  else
    {
      gboolean cancelled = g_error_matches (error, P11C_ERROR, P11C_ERROR_CANCELLED);
      j->state = g_strdup (cancelled ? "cancelled" : "failed");
      j->error = g_error_copy (error);
    }
  j->retry_at = 0;
  g_mutex_unlock (&j->lock);
}

gboolean
p11c_job_is_finished (P11cJob *j)
{
  gboolean finished;
  g_mutex_lock (&j->lock);
  finished = j->finished;
  g_mutex_unlock (&j->lock);
  return finished;
}

typedef struct {
  GMutex m;
  GCond  c;
} Waiter;

static void
wake_waiter (GCancellable *cancel, gpointer data)
{
  Waiter *w = data;
  g_mutex_lock (&w->m);
  g_cond_broadcast (&w->c);
  g_mutex_unlock (&w->m);
}

gboolean
p11c_job_wait (P11cJob *j, guint seconds)
{
  /* Woken by the cancellable: the wait ends at once on Cancel(). */
  Waiter w;
  gulong id;
  gint64 end = g_get_monotonic_time () + (gint64) seconds * G_USEC_PER_SEC;
  gboolean ok;

  g_mutex_init (&w.m);
  g_cond_init (&w.c);
  id = g_cancellable_connect (j->cancel, G_CALLBACK (wake_waiter), &w, NULL);
  g_mutex_lock (&w.m);
  while (!g_cancellable_is_cancelled (j->cancel))
    if (!g_cond_wait_until (&w.c, &w.m, end))
      break;
  ok = !g_cancellable_is_cancelled (j->cancel);
  g_mutex_unlock (&w.m);
  g_cancellable_disconnect (j->cancel, id);
  g_cond_clear (&w.c);
  g_mutex_clear (&w.m);
  return ok;
}
