/* org.p11certd1.Job: jobs on the bus — their object paths and properties
 * (the owner's part only to the owner), export, notifications, the end of
 * a job and its removal, Cancel; starting a job's worker. */
#define G_LOG_DOMAIN "p11c-dbus"
#include "p11c-dbus-private.h"

char *
p11c_dbus_job_path (P11cJob *job)
{
  return g_strdup_printf (P11C_DBUS_JOBS_PATH "/%u", p11c_job_get_id (job));
}

/* Error details as they leave the daemon: a token named by its id inside
 * becomes its object path */
static GVariant *
error_details_for_bus (const GError *error)
{
  g_autoptr(GVariant) details = g_variant_ref_sink (p11c_error_get_details (error));
  GVariantBuilder b;
  GVariantIter iter;
  const char *key;
  GVariant *value;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_iter_init (&iter, details);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &value))
    {
      if (g_str_equal (key, "token") && g_variant_is_of_type (value, G_VARIANT_TYPE_STRING))
        g_variant_builder_add (&b, "{sv}", key,
                               g_variant_new_object_path (p11c_dbus_token_path_for_id (g_variant_get_string (value, NULL))));
      else
        g_variant_builder_add (&b, "{sv}", key, value);
      g_variant_unref (value);
    }
  return g_variant_builder_end (&b);
}

/* "org.p11certd.Error.PinIncorrect" */
static char *
error_name_for_bus (const GError *error)
{
  const char *name = error->domain == P11C_ERROR ? p11c_error_to_name (error->code) : NULL;
  return g_strconcat (P11C_DBUS_ERROR_PREFIX, name ? name : "Failed", NULL);
}

/* Every Job property (a floating a{sv}) */
GVariant *
p11c_dbus_job_props (const P11cJobState *st)
{
  g_autofree char *error_name = st->error ? error_name_for_bus (st->error) : NULL;
  P11cWireJob w = {
    .operation = st->operation, .state = st->state, .progress = st->progress, .attempt = st->attempt,
    .retry_at = st->retry_at, .error = error_name, .error_message = st->error ? st->error->message : NULL,
    .error_details = st->error ? error_details_for_bus (st->error) : NULL, .result = st->result,
    .owner = st->owner_uid,
  };
  return p11c_wire_job_to_variant (&w);
}

GVariant *
p11c_dbus_job_props_now (P11cJob *job)
{
  g_autoptr(P11cJobState) st = p11c_job_get_state (job);
  return p11c_dbus_job_props (st);
}

/* A job's changes: its state and progress to everyone, its result, owner
 * and error only to the connection that started it (docs/security.md,
 * "Jobs") — that part first, so a client that stops at the final State
 * already has them. */
static void
emit_job_changes (P11cDaemon *d, P11cJob *job, GVariant *now)
{
  g_autofree char *path = p11c_dbus_job_path (job);
  g_autoptr(GVariant) changed = p11c_dbus_changed_since (d->p11c_dbus_job_props, path, now);
  GVariant *pub = NULL, *priv = NULL;

  if (changed == NULL)
    return;
  g_variant_ref_sink (changed);
  p11c_wire_job_split_props (changed, &pub, &priv);
  if (priv != NULL)
    p11c_dbus_emit_properties_changed (d, p11c_job_get_owner_sender (job), path, P11C_DBUS_JOB_IFACE, priv);
  if (pub != NULL)
    p11c_dbus_emit_properties_changed (d, NULL, path, P11C_DBUS_JOB_IFACE, pub);
}

static void
job_notify (P11cJob *job, const P11cJobState *state, gpointer user_data)
{
  P11cDaemon *d = user_data;
  g_autofree char *path = p11c_dbus_job_path (job);
  if (g_hash_table_contains (d->jobs, path))
    emit_job_changes (d, job, p11c_dbus_job_props (state));
}

typedef struct {
  P11cDaemon *d;
  char       *path;
} JobRemoval;

static gboolean
job_remove_cb (gpointer data)
{
  JobRemoval *r = data;
  guint id = GPOINTER_TO_UINT (g_hash_table_lookup (r->d->job_regs, r->path));

  if (id)
    p11c_bus_unregister_object (r->d->bus, id);
  g_hash_table_remove (r->d->job_regs, r->path);
  g_hash_table_remove (r->d->p11c_dbus_job_props, r->path);
  if (g_hash_table_remove (r->d->jobs, r->path))
    p11c_dbus_emit_interfaces_removed (r->d, r->path, P11C_DBUS_JOB_IFACE);
  g_free (r->path);
  g_free (r);
  return G_SOURCE_REMOVE;
}

static void
job_finished (P11cDaemon *d, P11cJob *job, const char *result, GError *error)
{
  JobRemoval *r;
  g_autofree char *error_name = NULL;

  p11c_error_convert (&error);
  p11c_job_finish (job, result, error);
  error_name = error ? error_name_for_bus (error) : NULL;
  emit_job_changes (d, job, p11c_dbus_job_props_now (job));
  /* only to the connection that started the job: it carries the error */
  r = g_new0 (JobRemoval, 1);
  r->d = d;
  r->path = p11c_dbus_job_path (job);
  p11c_bus_emit_signal (d->bus, p11c_job_get_owner_sender (job), r->path, P11C_DBUS_JOB_IFACE, "Finished",
                                 g_variant_new ("(bss)", error == NULL, error_name ? error_name : "",
                                                error ? error->message : ""));
  g_timeout_add_seconds_full (G_PRIORITY_DEFAULT, p11c_engine_get_config (d->engine)->job_linger, job_remove_cb, r, NULL);
}

typedef struct {
  P11cDaemon        *d;
  P11cJob           *job;
  P11cEnrollRequest *req;
} EnrollRun;

static void
enroll_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
  EnrollRun *run = data;
  GError *error = NULL;
  char *uri;

  uri = p11c_enroll_run (run->d->engine, run->job, run->req, &error);

  if (uri == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, uri, g_free);
}

static void
enroll_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  EnrollRun *run = g_task_get_task_data (G_TASK (res));
  GError *error = NULL;
  g_autofree char *uri = g_task_propagate_pointer (G_TASK (res), &error);
  const char *renewed = p11c_enroll_request_get_renewed (run->req);

  if (renewed != NULL)
    p11c_renewal_release (renewed);
  job_finished (run->d, run->job, uri, error);
  g_clear_error (&error);
  /* the token view changed: drop caches and refresh flags */
  for (guint i = 0; i < p11c_engine_get_tokens (run->d->engine)->len; i++)
    p11c_dbus_emit_token_changes (run->d, p11c_engine_get_tokens (run->d->engine)->pdata[i]);
  p11c_dbus_schedule_expiry (run->d);
}

static void
enroll_run_free (EnrollRun *run)
{
  p11c_job_unref (run->job);
  p11c_enroll_request_free (run->req);
  g_free (run);
}

static P11cJob *
job_register (P11cDaemon *d, const char *operation, guint uid, const char *sender, GError **error)
{
  P11cJob *job = p11c_job_new (++d->next_job, operation, uid, sender);
  g_autofree char *path = p11c_dbus_job_path (job);
  GDBusInterfaceInfo *iface = g_dbus_node_info_lookup_interface (d->api, P11C_DBUS_JOB_IFACE);
  guint id = p11c_bus_register_object (d->bus, path, iface, p11c_dbus_method_call, p11c_dbus_get_property, d, error);

  if (id == 0)
    {
      p11c_job_unref (job);
      return NULL;
    }
  p11c_job_set_notify (job, job_notify, d);
  g_hash_table_insert (d->jobs, g_strdup (path), job);
  g_hash_table_insert (d->job_regs, g_strdup (path), GUINT_TO_POINTER (id));
  {
    /* everyone learns that a job exists, and what runs: not whose it is */
    g_autoptr(GVariant) all = g_variant_ref_sink (p11c_dbus_job_props_now (job));
    GVariant *pub = NULL, *priv = NULL;
    p11c_wire_job_split_props (all, &pub, &priv);
    g_clear_pointer (&priv, g_variant_unref);
    p11c_dbus_emit_interfaces_added (d, path, P11C_DBUS_JOB_IFACE, pub);
  }
  return job;
}

/* Export a job for @req (taken) and run it in a worker thread.  A renewal
 * of a certificate another job is renewing now is Busy, naming that job. */
P11cJob *
p11c_dbus_start_job (P11cDaemon *d, const char *operation, P11cEnrollRequest *req, guint uid,
           const char *sender, GError **error)
{
  g_autoptr(GTask) task = NULL;
  const char *renewed = p11c_enroll_request_get_renewed (req);
  g_autofree char *running = renewed ? p11c_renewal_running (renewed) : NULL;
  P11cJob *job;
  EnrollRun *run;

  if (running != NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_BUSY,
                   "The certificate is being renewed already, by job %s; follow that job", running);
      p11c_enroll_request_free (req);
      return NULL;
    }
  job = job_register (d, operation, uid, sender, error);
  if (job == NULL)
    {
      p11c_enroll_request_free (req);
      return NULL;
    }
  if (renewed != NULL)
    {
      g_autofree char *path = p11c_dbus_job_path (job);
      p11c_renewal_claim (renewed, path);
    }
  run = g_new0 (EnrollRun, 1);
  run->d = d;
  run->job = p11c_job_ref (job);
  run->req = req;
  task = g_task_new (NULL, p11c_job_get_cancellable (job), enroll_done, NULL);
  g_task_set_task_data (task, run, (GDestroyNotify) enroll_run_free);
  g_task_set_return_on_cancel (task, FALSE);
  /* The worker reports a cancel itself (job_check, then the key removed).  A
   * Cancel() that comes too late — the certificate already written — must not
   * turn its result into G_IO_ERROR_CANCELLED: that would say "cancelled,
   * removed" about a certificate that stays on the token. */
  g_task_set_check_cancellable (task, FALSE);
  p11c_engine_run_worker (run->d->engine, task, enroll_thread);
  return job;
}

/* Reply with the object path of @job */
void
p11c_dbus_call_return_job (Call *c, P11cJob *job)
{
  g_autofree char *path = p11c_dbus_job_path (job);
  p11c_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(o)", path));
  p11c_dbus_call_free (c);
}

void
p11c_dbus_handle_cancel (Call *c)
{
  P11cJob *job = g_hash_table_lookup (c->d->jobs, c->path);

  if (job == NULL)
    {
      p11c_invocation_return_error (g_steal_pointer (&c->inv), P11C_ERROR, P11C_ERROR_NOT_FOUND,
                                             "The job is gone");
    }
  else
    {
      if (p11c_job_is_finished (job))
        p11c_invocation_return_error (g_steal_pointer (&c->inv), P11C_ERROR, P11C_ERROR_FAILED,
                                               "The job has already finished");
      else
        {
          g_message ("Job %u cancelled by uid %u", p11c_job_get_id (job), c->uid);
          g_cancellable_cancel (p11c_job_get_cancellable (job));
          p11c_invocation_return_value (g_steal_pointer (&c->inv), NULL);
        }
    }
  p11c_dbus_call_free (c);
}

/* Whether @sender may see @job's result, owner and error: the connection
 * that started it, and any connection of root or of the job's owner. */
gboolean
p11c_dbus_job_details_visible (P11cBus *bus, P11cJob *job, const char *sender)
{
  guint uid;

  if (g_strcmp0 (sender, p11c_job_get_owner_sender (job)) == 0)
    return TRUE;
  if (sender == NULL)
    return FALSE;
  if (!p11c_auth_cached_uid (sender, &uid) && !p11c_bus_get_unix_user_sync (bus, sender, &uid))
    return FALSE;
  return uid == 0 || uid == p11c_job_get_owner_uid (job);
}
