#define G_LOG_DOMAIN "p11c-job"
#include "p11c-job.h"
#include "p11c-error.h"
#include "p11c-names.h"

P11cJob *
p11c_job_new (guint id, const char *operation, guint owner_uid, const char *sender)
{
  P11cJob *j = g_new0 (P11cJob, 1);

  j->ref = 1;
  j->id = id;
  j->path = g_strdup_printf (P11C_DBUS_JOBS_PATH "/%u", id);
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
  g_free (j->path);
  g_free (j->operation);
  g_free (j->owner_sender);
  g_object_unref (j->cancel);
  g_main_context_unref (j->context);
  g_mutex_clear (&j->lock);
  g_free (j->state);
  g_free (j->error_name);
  g_free (j->error_message);
  g_clear_pointer (&j->error_details, g_variant_unref);
  g_free (j->result);
  g_free (j);
}

typedef struct {
  P11cJob  *job;
  GVariant *props;
} Notify;

static void
notify_free (Notify *n)
{
  p11c_job_unref (n->job);
  g_variant_unref (n->props);
  g_free (n);
}

static gboolean
notify_idle (gpointer data)
{
  Notify *n = data;
  if (n->job->notify)
    n->job->notify (n->job, n->props, n->job->notify_data);
  return G_SOURCE_REMOVE;
}

static GVariant *props_locked (P11cJob *j);

/* Called with the lock held: every change is reported, in order, with the
 * values it had (a client following the job sees each state). */
static void
schedule_notify (P11cJob *j)
{
  Notify *n = g_new0 (Notify, 1);
  n->job = p11c_job_ref (j);
  n->props = g_variant_ref_sink (props_locked (j));
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
      j->error_name = error->domain == P11C_ERROR
                        ? g_strconcat (P11C_DBUS_ERROR_PREFIX, p11c_error_to_name (error->code), NULL)
                        : g_strdup (P11C_DBUS_ERROR_PREFIX "Failed");
      j->error_message = g_strdup (error->message);
      j->error_details = g_variant_ref_sink (p11c_error_get_details (error));
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

static GVariant *
props_locked (P11cJob *j)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "Operation", g_variant_new_string (j->operation));
  g_variant_builder_add (&b, "{sv}", "State", g_variant_new_string (j->state));
  g_variant_builder_add (&b, "{sv}", "Progress", g_variant_new_double (j->progress));
  g_variant_builder_add (&b, "{sv}", "Attempt", g_variant_new_uint32 (j->attempt));
  g_variant_builder_add (&b, "{sv}", "RetryAt", g_variant_new_int64 (j->retry_at));
  g_variant_builder_add (&b, "{sv}", "Error", g_variant_new_string (j->error_name ? j->error_name : ""));
  g_variant_builder_add (&b, "{sv}", "ErrorMessage", g_variant_new_string (j->error_message ? j->error_message : ""));
  g_variant_builder_add (&b, "{sv}", "ErrorDetails",
                         j->error_details ? j->error_details : g_variant_new_array (G_VARIANT_TYPE ("{sv}"), NULL, 0));
  g_variant_builder_add (&b, "{sv}", "Result", g_variant_new_string (j->result ? j->result : ""));
  g_variant_builder_add (&b, "{sv}", "Owner", g_variant_new_uint32 (j->owner_uid));
  return g_variant_builder_end (&b);
}

gboolean
p11c_job_property_is_public (const char *name)
{
  static const char *const public_props[] = { "Operation", "State", "Progress", "Attempt", "RetryAt", NULL };
  return g_strv_contains (public_props, name);
}

static GVariant *
end_or_null (GVariantBuilder *b, guint n)
{
  if (n > 0)
    return g_variant_builder_end (b);
  g_variant_builder_clear (b);
  return NULL;
}

void
p11c_job_split_props (GVariant *props, GVariant **public_part, GVariant **private_part)
{
  GVariantBuilder pub, priv;
  GVariantIter iter;
  const char *key;
  GVariant *value;
  guint n_pub = 0, n_priv = 0;

  g_variant_builder_init (&pub, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_init (&priv, G_VARIANT_TYPE_VARDICT);
  g_variant_iter_init (&iter, props);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &value))
    {
      gboolean is_public = p11c_job_property_is_public (key);
      g_variant_builder_add (is_public ? &pub : &priv, "{sv}", key, value);
      if (is_public)
        n_pub++;
      else
        n_priv++;
      g_variant_unref (value);
    }
  *public_part = end_or_null (&pub, n_pub);
  *private_part = end_or_null (&priv, n_priv);
}

GVariant *
p11c_job_to_variant (P11cJob *j)
{
  GVariant *v;
  g_mutex_lock (&j->lock);
  v = props_locked (j);
  g_mutex_unlock (&j->lock);
  return v;
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
