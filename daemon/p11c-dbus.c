#define G_LOG_DOMAIN "p11c-dbus"
#include "p11c-scep.h"
#include "p11c-dbus.h"
#include "p11c-auth.h"
#include "p11c-enroll.h"
#include "p11c-error.h"
#include "p11c-job.h"
#include "p11c-localca.h"
#include "p11c-store.h"
#include "p11c-renewal.h"
#include "p11c-log.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include "p11c-wire.h"
#include <gio/gunixfdlist.h>
#include <string.h>
#include "p11c-resources.h"

typedef struct _FastPath FastPath;

struct _P11cDaemon {
  GDBusConnection *conn;
  P11cEngine      *engine;
  GDBusNodeInfo   *api;
  GDBusNodeInfo   *om;
  guint            manager_id;
  guint            om_id;
  GHashTable      *token_regs;   /* path → reg id */
  GHashTable      *token_props;  /* path → a{sv} last emitted */
  GHashTable      *jobs;         /* path → P11cJob */
  GHashTable      *job_regs;     /* path → reg id */
  GHashTable      *job_props;    /* path → a{sv} last emitted */
  guint            next_job;
  /* CertificateExpiring: fingerprints already announced, next crossing */
  GHashTable      *expiring_sent;
  guint            expiry_timer;
  gboolean         expiry_running;
  /* ListCerts replies: request shape → ListReply (main thread only) */
  GHashTable      *list_cache;
  FastPath        *fast;     /* FastPath, shared with GDBus's thread */
  guint            fast_filter;
};

static void schedule_expiry (P11cDaemon *d);

static const char om_xml[] =
  "<node><interface name='org.freedesktop.DBus.ObjectManager'>"
  "<method name='GetManagedObjects'><arg name='objects' type='a{oa{sa{sv}}}' direction='out'/></method>"
  "<signal name='InterfacesAdded'><arg name='object' type='o'/><arg name='interfaces' type='a{sa{sv}}'/></signal>"
  "<signal name='InterfacesRemoved'><arg name='object' type='o'/><arg name='interfaces' type='as'/></signal>"
  "</interface></node>";

/* ---- object paths: built here, never below ------------------------------- */

/* A token's object path (the engine's token id under P11C_DBUS_TOKENS_PATH);
 * interned: tokens are few, and a path outlives nothing it names */
static const char *
token_path_for_id (const char *id)
{
  g_autofree char *path = g_strdup_printf (P11C_DBUS_TOKENS_PATH "/%s", id);
  return g_intern_string (path);
}

static const char *
token_path (P11cToken *t)
{
  return token_path_for_id (p11c_token_get_id (t));
}

static P11cToken *
token_for_path (P11cDaemon *d, const char *path)
{
  const char *prefix = P11C_DBUS_TOKENS_PATH "/";
  if (path == NULL || !g_str_has_prefix (path, prefix))
    return NULL;
  return p11c_engine_find_token_by_id (d->engine, path + strlen (prefix));
}

/* A token named by a caller: its object path here, a PKCS#11 URI by the
 * engine's resolver */
static P11cToken *
resolve_token (P11cDaemon *d, const char *spec, GError **error)
{
  P11cToken *t = spec && spec[0] == '/' ? token_for_path (d, spec) : NULL;
  return t ? t : p11c_engine_resolve_token (d->engine, spec, error);
}

static char *
job_path (P11cJob *job)
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
                               g_variant_new_object_path (token_path_for_id (g_variant_get_string (value, NULL))));
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
static GVariant *
job_props (const P11cJobState *st)
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

static GVariant *
job_props_now (P11cJob *job)
{
  g_autoptr(P11cJobState) st = p11c_job_get_state (job);
  return job_props (st);
}

/* ---- calls -------------------------------------------------------------- */

typedef struct _Call Call;

/* One method call, from its arrival to its reply */
struct _Call {
  P11cDaemon            *d;
  GDBusMethodInvocation *inv;
  GVariant              *params;        /* wiped when freed: may hold secrets */
  const char            *path;
  guint                  uid;
  void                 (*handler) (Call *c);
  gboolean               owner_may;
  const char            *pending[4];    /* polkit actions still to ask */
  guint                  next_action;
  gpointer               args;          /* the method's typed arguments (…Args) */
  GDestroyNotify         args_free;
  P11cToken             *token;         /* the token it works on: properties re-read after */
  gboolean               changes_certs; /* re-plan CertificateExpiring after it */
};

static void
call_free (Call *c)
{
  /* Wipe the arguments, which may hold PINs, before they are freed. */
  if (c->params)
    {
      p11c_variant_wipe (c->params);
      g_variant_unref (c->params);
    }
  if (c->inv != NULL)
    g_dbus_method_invocation_return_error (g_steal_pointer (&c->inv), P11C_ERROR, P11C_ERROR_FAILED,
                                           "Internal error: the request was dropped");
  if (c->args != NULL && c->args_free != NULL)
    c->args_free (c->args);
  g_clear_pointer (&c->token, p11c_token_unref);
  g_free (c);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Call, call_free)

/* Give @c its typed arguments (@free_func frees them with the call) */
static gpointer
call_set_args (Call *c, gpointer args, GDestroyNotify free_func)
{
  c->args = args;
  c->args_free = free_func;
  return args;
}

/* Reply with @error (taken) */
static void
call_return_error (Call *c, GError *error)
{
  p11c_error_convert (&error);
  g_dbus_method_invocation_return_gerror (g_steal_pointer (&c->inv), error);
  g_error_free (error);
}

static void
call_fail (Call *c, GError *error)
{
  call_return_error (c, error);
  call_free (c);
}

/* ---- the one way a call reaches a worker ---------------------------------
 *
 * @work(c) runs in a worker thread and returns its result (NULL and @error
 * on failure); then @done(c, result, error) runs on the main loop, owning
 * the call, the result and the error.  A call that needs a second phase on
 * the main loop (start a job, ask polkit again) does it in @done. */

typedef gpointer (*CallWork) (Call *c, GError **error);
typedef void (*CallDone) (Call *c, gpointer result, GError *error);

typedef struct {
  Call           *c;
  CallWork        work;
  GDestroyNotify  result_free;
  CallDone        done;
} CallTask;

static void
call_task_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
  CallTask *ct = data;
  GError *error = NULL;
  gpointer result = ct->work (ct->c, &error);

  if (result == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, result, ct->result_free);
}

static void
call_task_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  CallTask *ct = g_task_get_task_data (G_TASK (res));
  GError *error = NULL;
  gpointer result = g_task_propagate_pointer (G_TASK (res), &error);

  ct->done (ct->c, result, error);
}

/* Takes @c */
static void
call_run (Call *c, CallWork work, GDestroyNotify result_free, CallDone done)
{
  g_autoptr(GTask) task = g_task_new (NULL, NULL, call_task_done, NULL);
  CallTask *ct = g_new0 (CallTask, 1);

  ct->c = c;
  ct->work = work;
  ct->result_free = result_free;
  ct->done = done;
  g_task_set_task_data (task, ct, g_free);
  p11c_engine_run_worker (c->d->engine, task, call_task_thread);
}

static void emit_token_changes (P11cDaemon *d, P11cToken *t);

/* A work whose result is the reply (a GVariant, sunk by reply_take) */
static void
call_reply_done (Call *c, gpointer result, GError *error)
{
  g_autoptr(GVariant) reply = result;

  if (error != NULL)
    call_return_error (c, error);
  else
    g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), reply);
  if (c->token != NULL)
    emit_token_changes (c->d, c->token);
  if (c->changes_certs)
    schedule_expiry (c->d);
  call_free (c);
}

static gpointer
reply_take (GVariant *reply)
{
  return reply ? g_variant_ref_sink (reply) : NULL;
}

/* Run @work(c) in a worker thread, reply with its result. Takes @c. */
static void
call_in_thread (Call *c, CallWork work)
{
  call_run (c, work, (GDestroyNotify) g_variant_unref, call_reply_done);
}

/* ---- properties --------------------------------------------------------- */

/* The token as the wire sees it (strings owned by @out) */
static void
token_to_wire (P11cToken *t, P11cWireToken *out)
{
  CK_TOKEN_INFO info;
  CK_SLOT_INFO slot;

  p11c_token_get_info (t, &info, &slot);
  memset (out, 0, sizeof *out);
  out->path = g_strdup (token_path (t));
  out->label = p11c_padded_string (info.label, sizeof info.label);
  out->serial = p11c_padded_string (info.serialNumber, sizeof info.serialNumber);
  out->manufacturer = p11c_padded_string (info.manufacturerID, sizeof info.manufacturerID);
  out->model = p11c_padded_string (info.model, sizeof info.model);
  out->slot = p11c_padded_string (slot.slotDescription, sizeof slot.slotDescription);
  out->uri = g_strdup (p11c_token_get_uri (t));
  out->module = g_strdup (p11c_token_get_module_name (t));
  out->present = p11c_token_is_present (t);
  out->login_required = !!(info.flags & CKF_LOGIN_REQUIRED);
  out->pin_count_low = !!(info.flags & CKF_USER_PIN_COUNT_LOW);
  out->pin_final_try = !!(info.flags & CKF_USER_PIN_FINAL_TRY);
  out->pin_locked = !!(info.flags & CKF_USER_PIN_LOCKED);
}

/* The Token properties (a new reference) */
static GVariant *
token_props (P11cToken *t)
{
  P11cWireToken w;
  GVariant *v;

  token_to_wire (t, &w);
  v = g_variant_ref_sink (p11c_wire_token_props_to_variant (&w));
  p11c_wire_token_clear (&w);
  return v;
}

/* A ListTokens entry (floating) */
static GVariant *
token_dict (P11cToken *t)
{
  P11cWireToken w;
  GVariant *v;

  token_to_wire (t, &w);
  v = p11c_wire_token_to_variant (&w);
  p11c_wire_token_clear (&w);
  return v;
}

static GVariant *
tokens_value (P11cDaemon *d)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("ao"));
  for (guint i = 0; i < p11c_engine_get_tokens (d->engine)->len; i++)
    g_variant_builder_add (&b, "o", token_path (p11c_engine_get_tokens (d->engine)->pdata[i]));
  return g_variant_builder_end (&b);
}

static GVariant *
modules_value (P11cDaemon *d)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < p11c_engine_get_modules (d->engine)->len; i++)
    {
      P11cModuleState *m = p11c_engine_get_modules (d->engine)->pdata[i];
      g_variant_builder_open (&b, G_VARIANT_TYPE_VARDICT);
      g_variant_builder_add (&b, "{sv}", "name", g_variant_new_string (m->name));
      g_variant_builder_add (&b, "{sv}", "loaded", g_variant_new_boolean (m->module != NULL));
      if (m->description)
        g_variant_builder_add (&b, "{sv}", "description", g_variant_new_string (m->description));
      if (m->error)
        g_variant_builder_add (&b, "{sv}", "error", g_variant_new_string (m->error));
      g_variant_builder_close (&b);
    }
  return g_variant_builder_end (&b);
}

static GVariant *
manager_props (P11cDaemon *d)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "Version", g_variant_new_uint32 (P11C_API_VERSION));
  g_variant_builder_add (&b, "{sv}", "Tokens", tokens_value (d));
  g_variant_builder_add (&b, "{sv}", "Modules", modules_value (d));
  g_variant_builder_add (&b, "{sv}", "PinPolicy", p11c_pin_policy_to_variant (&p11c_engine_get_config (d->engine)->pin_policy));
  return g_variant_builder_end (&b);
}

/* PropertiesChanged to everyone (@dest NULL) or to one connection */
static void
emit_properties_changed (P11cDaemon *d, const char *dest, const char *path, const char *iface,
                         GVariant *changed)
{
  g_dbus_connection_emit_signal (d->conn, dest, path, "org.freedesktop.DBus.Properties",
                                 "PropertiesChanged",
                                 g_variant_new ("(s@a{sv}as)", iface, changed, NULL), NULL);
}

/* What changed in @now (taken) since the last call for @path: a floating
 * a{sv}, or NULL when nothing did. */
static GVariant *
changed_since (GHashTable *last, const char *path, GVariant *now)
{
  GVariant *before = g_hash_table_lookup (last, path);
  GVariantBuilder b;
  GVariantIter iter;
  const char *key;
  GVariant *value;
  gboolean any = FALSE;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_iter_init (&iter, now);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &value))
    {
      g_autoptr(GVariant) old = before ? g_variant_lookup_value (before, key, NULL) : NULL;
      if (old == NULL || !g_variant_equal (old, value))
        {
          g_variant_builder_add (&b, "{sv}", key, value);
          any = TRUE;
        }
      g_variant_unref (value);
    }
  g_hash_table_replace (last, g_strdup (path), g_variant_ref_sink (now));
  if (any)
    return g_variant_builder_end (&b);
  g_variant_builder_clear (&b);
  return NULL;
}

/* PropertiesChanged with what changed since the last emission */
static void
emit_changed_props (P11cDaemon *d, GHashTable *last, const char *path, const char *iface, GVariant *now)
{
  GVariant *changed = changed_since (last, path, now);
  if (changed != NULL)
    emit_properties_changed (d, NULL, path, iface, changed);
}

/* A job's changes: its state and progress to everyone, its result, owner
 * and error only to the connection that started it (docs/security.md,
 * "Jobs") — that part first, so a client that stops at the final State
 * already has them. */
static void
emit_job_changes (P11cDaemon *d, P11cJob *job, GVariant *now)
{
  g_autofree char *path = job_path (job);
  g_autoptr(GVariant) changed = changed_since (d->job_props, path, now);
  GVariant *pub = NULL, *priv = NULL;

  if (changed == NULL)
    return;
  g_variant_ref_sink (changed);
  p11c_wire_job_split_props (changed, &pub, &priv);
  if (priv != NULL)
    emit_properties_changed (d, p11c_job_get_owner_sender (job), path, P11C_DBUS_JOB_IFACE, priv);
  if (pub != NULL)
    emit_properties_changed (d, NULL, path, P11C_DBUS_JOB_IFACE, pub);
}

static void
emit_token_changes (P11cDaemon *d, P11cToken *t)
{
  if (!g_hash_table_contains (d->token_props, token_path (t)))
    return;   /* not exported (removed meanwhile) */
  g_autoptr(GVariant) now = token_props (t);
  emit_changed_props (d, d->token_props, token_path (t), P11C_DBUS_TOKEN_IFACE, now);
}

/* ---- method handlers ---------------------------------------------------- */

static GVariant *
cert_dict (P11cCertEntry *e, const P11cConfig *config, gint64 now, GHashTable *issued)
{
  g_autofree char *hex = p11c_id_to_hex (e->id);
  P11cCertSummary *s = e->summary;
  P11cWireCert w = {
    .uri = e->uri, .token = (char *) (e->token_id ? token_path_for_id (e->token_id) : "/"),
    .storage = e->storage, .label = e->label, .id = hex, .der = e->der, .has_private_key = e->has_private_key,
    .parsed = s != NULL, .error = e->error,
  };

  if (s != NULL)
    {
      w.ca = issued ? g_hash_table_lookup (issued, s->sha256) : NULL;
      w.subject = s->subject;
      w.issuer = s->issuer;
      w.serial = s->serial;
      w.not_before = s->not_before;
      w.not_after = s->not_after;
      w.sha256 = s->sha256;
      w.key_type = (char *) s->key_type;
      w.renewal_due = p11c_renewal_due (s->not_before, s->not_after, now, config->window_days, &w.days_left);
    }
  return p11c_wire_cert_to_variant (&w);
}

/* ---- ListCerts: one immutable reply per request shape ---------------------
 *
 * A reply is built in a worker (it may have to read a token) and kept with
 * what it was built from: the tokens it lists with each one's generation
 * (bumped by p11c_token_invalidate, read before the certificates are), the
 * issuance records' and the system store's generations (read before those
 * are), and the time span in which every days_left / renewal_due in it stays
 * what it says.  While all of that still holds, a call is answered on the
 * main thread with a reference to the very same GVariant: no worker, no
 * rebuilding, no freeing of the tree. */

typedef struct {
  gint       ref;
  GPtrArray *tokens;        /* P11cToken listed, in order */
  GArray    *generations;   /* guint per token, read before it was listed */
  gboolean   system;        /* the system store is in it */
  guint      store_gen;
  guint64    issued_gen;    /* p11c_records_generation */
  gint64     built_at;      /* real time, s */
  gint64     valid_until;   /* real time, s: a time-derived field changes then */
  GVariant  *reply;         /* (aa{sv}), not floating */
} ListReply;

static ListReply *
list_reply_ref (ListReply *lr)
{
  g_atomic_int_inc (&lr->ref);
  return lr;
}

static void
list_reply_free (ListReply *lr)
{
  if (!g_atomic_int_dec_and_test (&lr->ref))
    return;
  g_clear_pointer (&lr->tokens, g_ptr_array_unref);
  g_clear_pointer (&lr->generations, g_array_unref);
  g_clear_pointer (&lr->reply, g_variant_unref);
  g_free (lr);
}

/* The first second after @now at which days_left or renewal_due of a
 * certificate with @s changes (see p11c_renewal_due). */
static gint64
cert_fields_change_at (const P11cCertSummary *s, gint64 now, guint window_days)
{
  gint64 left = s->not_after - now;
  gint64 lifetime = s->not_after - s->not_before;
  gint64 two_thirds = s->not_before + (lifetime > 0 ? lifetime * 2 / 3 : 0);
  gint64 window_start = s->not_after - (gint64) window_days * 86400 + 1;
  /* days_left moves by one each time left crosses a multiple of a day */
  gint64 at = now + (left % 86400 + 86400) % 86400 + 1;

  if (two_thirds > now)
    at = MIN (at, two_thirds);
  if (window_start > now)
    at = MIN (at, window_start);
  return at;
}

/* Everything @lr was built from is unchanged (any thread). */
static gboolean
list_reply_current (P11cEngine *engine, const ListReply *lr)
{
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;

  if (now < lr->built_at || now >= lr->valid_until
      || lr->issued_gen != p11c_records_generation (p11c_engine_get_records (engine))
      || (lr->system && lr->store_gen != p11c_system_store_generation ()))
    return FALSE;
  for (guint i = 0; i < lr->tokens->len; i++)
    if (g_array_index (lr->generations, guint, i) != p11c_token_get_generation (lr->tokens->pdata[i]))
      return FALSE;
  return TRUE;
}

/* ... and it lists what a call resolved to now (main thread) */
static gboolean
list_reply_fresh (P11cDaemon *d, const ListReply *lr, GPtrArray *tokens, gboolean system)
{
  guint n = tokens ? tokens->len : 0;

  if (lr->system != system || lr->tokens->len != n)
    return FALSE;
  for (guint i = 0; i < n; i++)
    if (lr->tokens->pdata[i] != tokens->pdata[i])
      return FALSE;
  return list_reply_current (d->engine, lr);
}

/* ---- warm ListCerts from root, answered in GDBus's own thread ------------
 *
 * Like Peer.Ping: a message filter (GDBus's worker thread) answers a
 * ListCerts whose exact arguments were answered before, while that reply is
 * still current and the token set has not changed since those arguments were
 * resolved (d->token_set), from a caller whose uid is known to be 0 — root
 * needs no polkit check (p11c-auth.c); every other caller, and anything not
 * known, goes the normal way through the main loop. */

struct _FastPath {
  gint        ref;
  GMutex      lock;
  gboolean    closed;        /* the daemon is going: answer nothing */
  P11cEngine *engine;
  GHashTable *replies;       /* GBytes of the call's arguments → FastEntry */
  guint       token_set;     /* atomic: bumped when tokens come, go or change */
};
#define FAST_PATH_MAX 64

typedef struct {
  ListReply *lr;
  guint      token_set;     /* FastPath.token_set when the arguments were resolved */
} FastEntry;

static void
fast_entry_free (FastEntry *e)
{
  list_reply_free (e->lr);
  g_free (e);
}

static FastPath *
fast_path_new (P11cEngine *engine)
{
  FastPath *fp = g_new0 (FastPath, 1);
  fp->ref = 1;
  g_mutex_init (&fp->lock);
  fp->engine = engine;
  fp->replies = g_hash_table_new_full (g_bytes_hash, g_bytes_equal, (GDestroyNotify) g_bytes_unref,
                                       (GDestroyNotify) fast_entry_free);
  return fp;
}

static void
fast_path_unref (gpointer data)
{
  FastPath *fp = data;
  if (!g_atomic_int_dec_and_test (&fp->ref))
    return;
  g_hash_table_unref (fp->replies);
  g_mutex_clear (&fp->lock);
  g_free (fp);
}

/* Remember that @params, resolved when the token set was @token_set, were
 * answered with @lr (main thread). */
static void
fast_path_learn (FastPath *fp, GVariant *params, guint token_set, ListReply *lr)
{
  g_mutex_lock (&fp->lock);
  if (!fp->closed)
    {
      FastEntry *e = g_new0 (FastEntry, 1);
      e->lr = list_reply_ref (lr);
      e->token_set = token_set;
      if (g_hash_table_size (fp->replies) >= FAST_PATH_MAX)
        g_hash_table_remove_all (fp->replies);
      /* a copy: the call's arguments are wiped when it is freed */
      g_hash_table_replace (fp->replies, g_bytes_new (g_variant_get_data (params), g_variant_get_size (params)), e);
    }
  g_mutex_unlock (&fp->lock);
}

/* The daemon is going (main thread): nothing is answered from now on. */
static void
fast_path_close (FastPath *fp)
{
  g_mutex_lock (&fp->lock);
  fp->closed = TRUE;
  g_hash_table_remove_all (fp->replies);
  g_mutex_unlock (&fp->lock);
}

static GDBusMessage *
fast_path_filter (GDBusConnection *conn, GDBusMessage *msg, gboolean incoming, gpointer data)
{
  FastPath *fp = data;
  const char *member, *sender;
  GVariant *body;
  g_autoptr(GBytes) key = NULL;
  g_autoptr(GVariant) reply_body = NULL;
  GDBusMessage *reply;
  guint uid;

  if (!incoming || g_dbus_message_get_message_type (msg) != G_DBUS_MESSAGE_TYPE_METHOD_CALL
      || (member = g_dbus_message_get_member (msg)) == NULL || !g_str_equal (member, "ListCerts")
      || g_strcmp0 (g_dbus_message_get_interface (msg), P11C_DBUS_MANAGER_IFACE) != 0
      || g_strcmp0 (g_dbus_message_get_path (msg), P11C_DBUS_PATH) != 0
      || (g_dbus_message_get_flags (msg) & G_DBUS_MESSAGE_FLAGS_NO_REPLY_EXPECTED)
      || (sender = g_dbus_message_get_sender (msg)) == NULL
      || (body = g_dbus_message_get_body (msg)) == NULL
      || !g_variant_is_of_type (body, G_VARIANT_TYPE ("(a{sv})"))
      || !p11c_auth_cached_uid (sender, &uid) || uid != 0)
    return msg;
  key = g_variant_get_data_as_bytes (body);
  g_mutex_lock (&fp->lock);
  if (!fp->closed)
    {
      FastEntry *e = g_hash_table_lookup (fp->replies, key);
      if (e != NULL && e->token_set == (guint) g_atomic_int_get (&fp->token_set)
          && list_reply_current (fp->engine, e->lr))
        reply_body = g_variant_ref (e->lr->reply);
    }
  g_mutex_unlock (&fp->lock);
  if (reply_body == NULL)
    return msg;
  reply = g_dbus_message_new_method_reply (msg);
  g_dbus_message_set_body (reply, reply_body);
  g_dbus_connection_send_message (conn, reply, G_DBUS_SEND_MESSAGE_FLAGS_NONE, NULL, NULL);
  g_object_unref (reply);
  g_object_unref (msg);
  return NULL;
}

typedef struct {
  GPtrArray *tokens;     /* the tokens to list (NULL: none) */
  gboolean   system;     /* and the system store */
  gboolean   named;      /* one token was named: its failure fails the call */
  guint      token_set;  /* FastPath.token_set when they were resolved */
} ListArgs;

static void
list_args_free (ListArgs *a)
{
  g_clear_pointer (&a->tokens, g_ptr_array_unref);
  g_free (a);
}

/* What a ListCerts worker built: the reply, and its cache entry when every
 * token answered */
typedef struct {
  GVariant  *reply;
  ListReply *lr;
} ListBuilt;

static void
list_built_free (ListBuilt *b)
{
  g_clear_pointer (&b->reply, g_variant_unref);
  if (b->lr != NULL)
    list_reply_free (b->lr);
  g_free (b);
}

static char *
list_cache_key (Call *c, const ListArgs *a)
{
  return g_strdup_printf ("%s|%c%c", a->named ? token_path (c->token) : "",
                          a->tokens ? 't' : '-', a->system ? 's' : '-');
}

static gpointer
list_certs_work (Call *c, GError **error)
{
  ListArgs *a = c->args;
  const P11cConfig *config = p11c_engine_get_config (c->d->engine);
  GVariantBuilder b;
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  gboolean complete = TRUE;
  ListReply *lr = g_new0 (ListReply, 1);
  g_autoptr(GHashTable) issued = NULL;
  ListBuilt *built;

  lr->ref = 1;
  /* generations first: what is read after them is at least that new */
  lr->built_at = now;
  lr->valid_until = G_MAXINT64;
  lr->issued_gen = p11c_records_generation (p11c_engine_get_records (c->d->engine));
  lr->store_gen = p11c_system_store_generation ();
  lr->system = a->system;
  lr->tokens = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_token_unref);
  lr->generations = g_array_new (FALSE, FALSE, sizeof (guint));
  for (guint i = 0; a->tokens && i < a->tokens->len; i++)
    {
      guint gen = p11c_token_get_generation (a->tokens->pdata[i]);
      g_ptr_array_add (lr->tokens, p11c_token_ref (a->tokens->pdata[i]));
      g_array_append_val (lr->generations, gen);
    }
  issued = p11c_records_ca_map (p11c_engine_get_records (c->d->engine));

  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; a->tokens && i < a->tokens->len; i++)
    {
      P11cToken *t = a->tokens->pdata[i];
      g_autoptr(GError) local = NULL;
      g_autoptr(GPtrArray) certs = p11c_token_list_certs (t, &local);

      if (certs == NULL)
        {
          /* one bad token must not hide the others; a named token fails */
          if (a->named)
            {
              g_variant_builder_clear (&b);
              list_reply_free (lr);
              g_propagate_error (error, g_steal_pointer (&local));
              return NULL;
            }
          g_warning ("Listing certificates on %s failed: %s", p11c_token_get_id (t), local->message);
          complete = FALSE;
          continue;
        }
      for (guint j = 0; j < certs->len; j++)
        {
          P11cCertEntry *e = certs->pdata[j];
          g_variant_builder_add_value (&b, cert_dict (e, config, now, issued));
          if (e->summary)
            lr->valid_until = MIN (lr->valid_until, cert_fields_change_at (e->summary, now, config->window_days));
        }
    }
  if (a->system)
    {
      g_autoptr(GPtrArray) sys = p11c_engine_list_system_certs (c->d->engine);
      for (guint j = 0; j < sys->len; j++)
        {
          P11cCertEntry *e = sys->pdata[j];
          g_variant_builder_add_value (&b, cert_dict (e, config, now, issued));
          if (e->summary)
            lr->valid_until = MIN (lr->valid_until, cert_fields_change_at (e->summary, now, config->window_days));
        }
    }
  built = g_new0 (ListBuilt, 1);
  built->reply = g_variant_ref_sink (g_variant_new ("(aa{sv})", &b));
  if (complete)
    {
      lr->reply = g_variant_ref (built->reply);   /* the cache's reference */
      built->lr = lr;
    }
  else
    list_reply_free (lr);
  return built;
}

static void
list_certs_done (Call *c, gpointer result, GError *error)
{
  ListBuilt *built = result;
  ListArgs *a = c->args;

  if (built != NULL && built->lr != NULL)
    {
      fast_path_learn (c->d->fast, c->params, a->token_set, built->lr);
      g_hash_table_replace (c->d->list_cache, list_cache_key (c, a), g_steal_pointer (&built->lr));
    }
  call_reply_done (c, built ? g_steal_pointer (&built->reply) : NULL, error);
  if (built != NULL)
    list_built_free (built);
}

static void
handle_list_certs (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  GError *error = NULL;
  P11cListParams params;
  const char *token_spec, *storage;
  ListArgs *a = call_set_args (c, g_new0 (ListArgs, 1), (GDestroyNotify) list_args_free);

  g_variant_get (c->params, "(@a{sv})", &options);
  if (!p11c_wire_list_from_variant (options, &params, &error))
    { call_fail (c, error); return; }
  token_spec = params.token;
  storage = params.storage;
  if (storage && !g_str_equal (storage, "token") && !g_str_equal (storage, "system")
      && !g_str_equal (storage, "file"))
    {
      g_set_error (&error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Key \"storage\" must be token, system or file, not \"%s\"", storage);
      p11c_list_params_clear (&params);
      { call_fail (c, error); return; }
    }
  if (token_spec != NULL)
    {
      P11cToken *t = resolve_token (c->d, token_spec, &error);
      if (t == NULL)
        {
          g_prefix_error (&error, "Key \"token\": ");
          p11c_list_params_clear (&params);
          { call_fail (c, error); return; }
        }
      c->token = p11c_token_ref (t);
      a->named = TRUE;
      a->tokens = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_token_unref);
      g_ptr_array_add (a->tokens, p11c_token_ref (t));
    }
  else if (storage == NULL || g_str_equal (storage, "token"))
    a->tokens = p11c_engine_tokens_snapshot (c->d->engine);
  /* the daemon's own store unless a token or another storage was asked for */
  a->system = token_spec == NULL && (storage == NULL || g_str_equal (storage, "system"));
  p11c_list_params_clear (&params);
  a->token_set = (guint) g_atomic_int_get (&c->d->fast->token_set);
  {
    g_autofree char *key = list_cache_key (c, a);
    ListReply *lr = g_hash_table_lookup (c->d->list_cache, key);
    if (lr != NULL && list_reply_fresh (c->d, lr, a->tokens, a->system))
      {
        /* warm: the same immutable reply, answered right here */
        fast_path_learn (c->d->fast, c->params, a->token_set, lr);
        g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), lr->reply);
        call_free (c);
        return;
      }
  }
  call_run (c, list_certs_work, (GDestroyNotify) list_built_free, list_certs_done);
}

static void
handle_list_tokens (Call *c)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < p11c_engine_get_tokens (c->d->engine)->len; i++)
    g_variant_builder_add_value (&b, token_dict (p11c_engine_get_tokens (c->d->engine)->pdata[i]));
  g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(aa{sv})", &b));
  call_free (c);
}

static void
handle_list_cas (Call *c)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < p11c_engine_get_cas (c->d->engine)->len; i++)
    {
      P11cCaProfile *p = p11c_engine_get_cas (c->d->engine)->pdata[i];
      g_variant_builder_open (&b, G_VARIANT_TYPE_VARDICT);
      g_variant_builder_add (&b, "{sv}", "name", g_variant_new_string (p->name));
      g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string (p11c_ca_type_to_string (p->type)));
      g_variant_builder_add (&b, "{sv}", "url", g_variant_new_string (p->url ? p->url : ""));
      g_variant_builder_add (&b, "{sv}", "label", g_variant_new_string (p->label ? p->label : ""));
      g_variant_builder_add (&b, "{sv}", "key_type", g_variant_new_string (p11c_key_type_to_string (p->key_type)));
      g_variant_builder_add (&b, "{sv}", "needs_login", g_variant_new_boolean (p->type == P11C_CA_EST));
      g_variant_builder_add (&b, "{sv}", "needs_otp", g_variant_new_boolean (p->type != P11C_CA_LOCAL));
      g_variant_builder_add (&b, "{sv}", "otp_name",
                             g_variant_new_string (p->type == P11C_CA_SCEP ? "challenge password"
                                                   : p->type == P11C_CA_EST ? "one-time password" : ""));
      g_variant_builder_add (&b, "{sv}", "default",
                             g_variant_new_boolean (g_strcmp0 (p->name, p11c_engine_get_config (c->d->engine)->default_ca) == 0));
      g_variant_builder_close (&b);
    }
  g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(aa{sv})", &b));
  call_free (c);
}

/* CheckPin: the rules a candidate PIN or password breaks, so clients name
 * each in their own words (nothing is sent to a token; the argument is
 * wiped with the call). */
static void
handle_check_pin (Call *c)
{
  const P11cPinPolicy *policy = &p11c_engine_get_config (c->d->engine)->pin_policy;
  const char *pin;
  guint chars;
  g_auto(GStrv) broken = NULL;
  GVariantBuilder b;

  g_variant_get (c->params, "(&s)", &pin);
  broken = p11c_pin_policy_broken (policy, pin, &chars);
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "ok", g_variant_new_boolean (broken[0] == NULL));
  g_variant_builder_add (&b, "{sv}", "broken", g_variant_new_strv ((const char *const *) broken, -1));
  g_variant_builder_add (&b, "{sv}", "length", g_variant_new_uint32 (chars));
  g_variant_builder_add (&b, "{sv}", "min_length", g_variant_new_uint32 (policy->min_length));
  g_variant_builder_add (&b, "{sv}", "max_length",
                         g_variant_new_uint32 (policy->max_length ? policy->max_length : P11C_SECRET_MAX));
  g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(a{sv})", &b));
  call_free (c);
}

static gpointer
ca_certificate_work (Call *c, GError **error)
{
  const char *name = c->args;
  g_autofree char *pem = p11c_enroll_ca_certificate_pem (c->d->engine, name, error);
  const P11cCaProfile *p = p11c_engine_find_ca (c->d->engine, name);

  if (pem == NULL && p != NULL && p->type == P11C_CA_LOCAL
      && g_error_matches (*error, P11C_ERROR, P11C_ERROR_NOT_FOUND))
    {
      /* the local CA is not made yet: say who may make it */
      char *message = g_strdup_printf ("%s, which needs %s", (*error)->message, P11C_ACTION_LOCAL_CA);
      g_free ((*error)->message);
      (*error)->message = message;
    }
  return pem ? reply_take (g_variant_new ("(s)", pem)) : NULL;
}

static void
handle_get_ca_certificate (Call *c)
{
  const char *name;
  g_variant_get (c->params, "(&s)", &name);
  call_set_args (c, g_strdup (name), g_free);
  call_in_thread (c, ca_certificate_work);
}

static GVariant *
delete_result_to_variant (const P11cDeleteResult *r)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "removed", g_variant_new_strv ((const char *const *) r->removed, -1));
  g_variant_builder_add (&b, "{sv}", "certificate", g_variant_new_string (r->removed[0]));
  g_variant_builder_add (&b, "{sv}", "keys_removed", g_variant_new_uint32 (r->keys_removed));
  if (r->keys_kept)
    g_variant_builder_add (&b, "{sv}", "keys_kept", g_variant_new_string (r->keys_kept));
  if (r->keys_shared_with > 0)
    g_variant_builder_add (&b, "{sv}", "keys_shared_with", g_variant_new_uint32 (r->keys_shared_with));
  return g_variant_new ("(@a{sv})", g_variant_builder_end (&b));
}

typedef struct {
  P11cUri  *uri;
  char     *pin;          /* secret */
  gboolean  keep_key;
  char     *system_name;  /* "system:NAME": the system store's entry NAME */
} DeleteArgs;

static void
delete_args_free (DeleteArgs *a)
{
  g_clear_pointer (&a->uri, p11c_uri_free);
  p11c_secret_free (a->pin);
  g_free (a->system_name);
  g_free (a);
}

static gpointer
delete_work (Call *c, GError **error)
{
  DeleteArgs *a = c->args;
  g_autoptr(P11cDeleteResult) result = NULL;

  if (a->system_name != NULL)
    result = p11c_engine_delete_system_cert (c->d->engine, a->system_name, error);
  else
    result = p11c_token_delete_cert (c->token, a->uri, a->pin, a->keep_key, error);
  if (result == NULL)
    return NULL;
  p11c_log_event (G_LOG_LEVEL_MESSAGE, P11C_MSGID_DELETED, c->token ? p11c_token_get_id (c->token) : NULL,
                  NULL, NULL, 0, a->system_name ? "Deleted system certificate %s (by uid %u)"
                                                : "Deleted certificate %s (by uid %u)",
                  result->removed[0], c->uid);
  return reply_take (delete_result_to_variant (result));
}

static void
handle_delete_cert (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  const char *uri, *pin;
  GError *error = NULL;
  P11cOptions opts;
  P11cToken *t;
  DeleteArgs *a = call_set_args (c, g_new0 (DeleteArgs, 1), (GDestroyNotify) delete_args_free);

  g_variant_get (c->params, "(&s&s@a{sv})", &uri, &pin, &options);
  if (!p11c_wire_options_from_variant (options, TRUE, &opts, &error))
    { call_fail (c, error); return; }
  a->keep_key = opts.keep_key;
  c->changes_certs = TRUE;
  if (g_str_has_prefix (uri, "system:"))
    {
      /* the daemon's own store: no PIN, polkit (system.manage) decided */
      a->system_name = g_strdup (uri + strlen ("system:"));
      call_in_thread (c, delete_work);
      return;
    }
  a->pin = g_strdup (pin);
  a->uri = p11c_uri_parse (uri, &error);
  if (a->uri == NULL)
    { call_fail (c, error); return; }
  if (!p11c_secret_check (a->pin, "PIN", &error))
    { call_fail (c, error); return; }

  /* a certificate of a token that is not here is not found */
  t = p11c_engine_resolve_token_uri (c->d->engine, a->uri, uri, P11C_ERROR_NOT_FOUND, &error);
  if (t == NULL)
    { call_fail (c, error); return; }
  c->token = p11c_token_ref (t);
  call_in_thread (c, delete_work);
}

typedef struct {
  char *old_pin;   /* secrets */
  char *new_pin;
} ChangePinArgs;

static void
change_pin_args_free (ChangePinArgs *a)
{
  p11c_secret_free (a->old_pin);
  p11c_secret_free (a->new_pin);
  g_free (a);
}

static gpointer
change_pin_work (Call *c, GError **error)
{
  ChangePinArgs *a = c->args;

  if (!p11c_token_change_pin (c->token, a->old_pin, a->new_pin, error))
    return NULL;
  p11c_log_event (G_LOG_LEVEL_MESSAGE, P11C_MSGID_PIN_CHANGED, p11c_token_get_id (c->token), NULL, NULL, 0,
                  "Changed the user PIN of token %s (by uid %u)", p11c_token_get_id (c->token), c->uid);
  return reply_take (g_variant_new ("()"));
}

static void
handle_change_pin (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  const char *old_pin, *new_pin;
  GError *error = NULL;
  P11cToken *t = token_for_path (c->d, c->path);
  P11cOptions opts;
  ChangePinArgs *a = call_set_args (c, g_new0 (ChangePinArgs, 1), (GDestroyNotify) change_pin_args_free);

  g_variant_get (c->params, "(&s&s@a{sv})", &old_pin, &new_pin, &options);
  a->old_pin = g_strdup (old_pin);
  a->new_pin = g_strdup (new_pin);
  if (t == NULL)
    g_set_error (&error, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT, "The token was removed");
  /* every check before the token is touched; the policy names each broken rule */
  if (error != NULL
      || !p11c_wire_options_from_variant (options, FALSE, &opts, &error)
      || !p11c_secret_check (a->old_pin, "current PIN", &error)
      || !p11c_secret_check (a->new_pin, "new PIN", &error)
      || !p11c_pin_policy_check (&p11c_engine_get_config (c->d->engine)->pin_policy, a->new_pin, &error))
    {
      call_fail (c, error);
      return;
    }
  c->token = p11c_token_ref (t);
  call_in_thread (c, change_pin_work);
}

static void
rescan_done (P11cEngine *engine, gpointer data)
{
  Call *c = data;

  g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), NULL);
  call_free (c);
}

void
p11c_daemon_rescan (P11cDaemon *d)
{
  p11c_engine_rescan (d->engine, NULL, NULL);
}

static void
handle_rescan (Call *c)
{
  /* folded into the running scan's next one: answered now */
  if (!p11c_engine_rescan (c->d->engine, rescan_done, c))
    {
      g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), NULL);
      call_free (c);
    }
}

/* ---- jobs --------------------------------------------------------------- */

static const GDBusInterfaceVTable job_vtable;

static void
job_notify (P11cJob *job, const P11cJobState *state, gpointer user_data)
{
  P11cDaemon *d = user_data;
  g_autofree char *path = job_path (job);
  if (g_hash_table_contains (d->jobs, path))
    emit_job_changes (d, job, job_props (state));
}

static void
emit_interfaces_added (P11cDaemon *d, const char *path, const char *iface, GVariant *props)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{sa{sv}}"));
  g_variant_builder_add (&b, "{s@a{sv}}", iface, props);
  g_dbus_connection_emit_signal (d->conn, NULL, P11C_DBUS_PATH, "org.freedesktop.DBus.ObjectManager",
                                 "InterfacesAdded", g_variant_new ("(oa{sa{sv}})", path, &b), NULL);
}

static void
emit_interfaces_removed (P11cDaemon *d, const char *path, const char *iface)
{
  const char *ifaces[] = { iface, NULL };
  g_dbus_connection_emit_signal (d->conn, NULL, P11C_DBUS_PATH, "org.freedesktop.DBus.ObjectManager",
                                 "InterfacesRemoved", g_variant_new ("(o^as)", path, ifaces), NULL);
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
    g_dbus_connection_unregister_object (r->d->conn, id);
  g_hash_table_remove (r->d->job_regs, r->path);
  g_hash_table_remove (r->d->job_props, r->path);
  if (g_hash_table_remove (r->d->jobs, r->path))
    emit_interfaces_removed (r->d, r->path, P11C_DBUS_JOB_IFACE);
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
  emit_job_changes (d, job, job_props_now (job));
  /* only to the connection that started the job: it carries the error */
  r = g_new0 (JobRemoval, 1);
  r->d = d;
  r->path = job_path (job);
  g_dbus_connection_emit_signal (d->conn, p11c_job_get_owner_sender (job), r->path, P11C_DBUS_JOB_IFACE, "Finished",
                                 g_variant_new ("(bss)", error == NULL, error_name ? error_name : "",
                                                error ? error->message : ""), NULL);
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
    emit_token_changes (run->d, p11c_engine_get_tokens (run->d->engine)->pdata[i]);
  schedule_expiry (run->d);
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
  g_autofree char *path = job_path (job);
  GDBusInterfaceInfo *iface = g_dbus_node_info_lookup_interface (d->api, P11C_DBUS_JOB_IFACE);
  guint id = g_dbus_connection_register_object (d->conn, path, iface, &job_vtable, d, NULL, error);

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
    g_autoptr(GVariant) all = g_variant_ref_sink (job_props_now (job));
    GVariant *pub = NULL, *priv = NULL;
    p11c_wire_job_split_props (all, &pub, &priv);
    g_clear_pointer (&priv, g_variant_unref);
    emit_interfaces_added (d, path, P11C_DBUS_JOB_IFACE, pub);
  }
  return job;
}

/* Export a job for @req (taken) and run it in a worker thread.  A renewal
 * of a certificate another job is renewing now is Busy, naming that job. */
static P11cJob *
start_job (P11cDaemon *d, const char *operation, P11cEnrollRequest *req, guint uid,
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
      g_autofree char *path = job_path (job);
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
static void
call_return_job (Call *c, P11cJob *job)
{
  g_autofree char *path = job_path (job);
  g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(o)", path));
  call_free (c);
}

static void
handle_enroll (Call *c)
{
  g_autoptr(GVariant) request = NULL;
  GError *error = NULL;
  GUnixFDList *fds = g_dbus_message_get_unix_fd_list (g_dbus_method_invocation_get_message (c->inv));
  P11cEnrollParams params;
  P11cEnrollRequest *req;
  P11cToken *token;
  P11cJob *job;
  int fd = -1;

  g_variant_get (c->params, "(@a{sv})", &request);
  if (!p11c_wire_enroll_from_variant (request, &params, &error))
    {
      call_fail (c, error);
      return;
    }
  if (params.has_fd && fds != NULL && params.fd_index >= 0 && params.fd_index < g_unix_fd_list_get_length (fds))
    fd = g_unix_fd_list_get (fds, params.fd_index, NULL);
  token = params.token && params.token[0] == '/' ? token_for_path (c->d, params.token) : NULL;
  req = p11c_enroll_request_new (c->d->engine, &params, token, fd, &error);
  p11c_enroll_params_clear (&params);
  if (req == NULL
      || (job = start_job (c->d, "enroll", req, c->uid, g_dbus_method_invocation_get_sender (c->inv), &error)) == NULL)
    {
      call_fail (c, error);
      return;
    }
  call_return_job (c, job);
}

/* ---- renewal (the domain is p11c-renewal.c) ----------------------------- */

typedef struct {
  GPtrArray   *tokens;   /* the present tokens when the call came */
  char        *uri;      /* Renew: the certificate */
  char        *pin;      /* Renew: secret, or NULL */
  gboolean     rekey;
  P11cDuePlan *plan;     /* RenewDue: what is due, once planned */
} RenewArgs;

static void
renew_args_free (RenewArgs *a)
{
  g_clear_pointer (&a->tokens, g_ptr_array_unref);
  g_free (a->uri);
  p11c_secret_free (a->pin);
  g_clear_pointer (&a->plan, p11c_due_plan_free);
  g_free (a);
}

static gpointer
renew_resolve_work (Call *c, GError **error)
{
  RenewArgs *a = c->args;
  return p11c_renewal_resolve (c->d->engine, a->tokens, a->uri, a->pin, a->rekey, error);
}

static void
renew_resolved (Call *c, gpointer result, GError *error)
{
  P11cEnrollRequest *req = result;
  P11cJob *job;

  if (req == NULL)
    {
      call_fail (c, error);
      return;
    }
  job = start_job (c->d, "renew", req, c->uid, g_dbus_method_invocation_get_sender (c->inv), &error);
  if (job == NULL)
    {
      call_fail (c, error);
      return;
    }
  call_return_job (c, job);
}

static void
handle_renew (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  GError *error = NULL;
  P11cRenewParams params;
  const char *uri;
  RenewArgs *a = call_set_args (c, g_new0 (RenewArgs, 1), (GDestroyNotify) renew_args_free);

  g_variant_get (c->params, "(&s@a{sv})", &uri, &options);
  if (!p11c_wire_renew_from_variant (options, &params, &error))
    {
      call_fail (c, error);
      return;
    }
  a->uri = g_strdup (uri);
  a->pin = g_steal_pointer (&params.pin);
  a->rekey = params.rekey;
  p11c_renew_params_clear (&params);
  a->tokens = p11c_engine_tokens_snapshot (c->d->engine);
  call_run (c, renew_resolve_work, (GDestroyNotify) p11c_enroll_request_free, renew_resolved);
}

static gpointer
renew_due_work (Call *c, GError **error)
{
  RenewArgs *a = c->args;
  return p11c_renewal_plan_due (c->d->engine, a->tokens, g_get_real_time () / G_USEC_PER_SEC);
}

/* Start the plan's jobs, announce who needs a person, reply. */
static void
renew_due_start (Call *c)
{
  P11cDuePlan *plan = ((RenewArgs *) c->args)->plan;
  GVariantBuilder jobs, person, reasons, codes, b;
  const char *sender;
  GHashTableIter iter;
  gpointer key, value;

  sender = g_dbus_method_invocation_get_sender (c->inv);
  g_variant_builder_init (&jobs, G_VARIANT_TYPE ("ao"));
  g_variant_builder_init (&person, G_VARIANT_TYPE ("as"));
  g_variant_builder_init (&reasons, G_VARIANT_TYPE ("a{ss}"));
  g_variant_builder_init (&codes, G_VARIANT_TYPE ("a{ss}"));
  while (plan->requests->len > 0)
    {
      P11cEnrollRequest *req = g_ptr_array_steal_index (plan->requests, 0);
      const char *renewed = p11c_enroll_request_get_renewed (req);
      g_autofree char *running = renewed ? p11c_renewal_running (renewed) : NULL;
      g_autoptr(GError) local = NULL;
      P11cJob *job;

      if (running != NULL)
        {
          /* one renewal per certificate: the one running stands for this */
          g_variant_builder_add (&jobs, "o", running);
          p11c_enroll_request_free (req);
          continue;
        }
      job = start_job (c->d, "renew", req, c->uid, sender, &local);
      if (job != NULL)
        {
          g_autofree char *path = job_path (job);
          g_variant_builder_add (&jobs, "o", path);
        }
      else
        g_warning ("Cannot start a renewal: %s", local->message);
    }
  for (guint i = 0; i < plan->needs_person->len; i++)
    {
      P11cNeedsPerson *n = plan->needs_person->pdata[i];
      GVariantBuilder info;

      g_variant_builder_init (&info, G_VARIANT_TYPE_VARDICT);
      g_variant_builder_add (&info, "{sv}", "subject", g_variant_new_string (n->subject));
      if (n->token != NULL)
        g_variant_builder_add (&info, "{sv}", "token", g_variant_new_object_path (token_path (n->token)));
      g_variant_builder_add (&info, "{sv}", "ca", g_variant_new_string (n->ca));
      g_variant_builder_add (&info, "{sv}", "days_left", g_variant_new_int64 (n->days_left));
      g_variant_builder_add (&info, "{sv}", "reason", g_variant_new_string (n->reason));
      g_variant_builder_add (&info, "{sv}", "reason_code", g_variant_new_string (n->reason_code));
      g_variant_builder_add (&person, "s", n->uri);
      g_variant_builder_add (&reasons, "{ss}", n->uri, n->reason);
      g_variant_builder_add (&codes, "{ss}", n->uri, n->reason_code);
      g_dbus_connection_emit_signal (c->d->conn, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, "RenewalNeeded",
                                     g_variant_new ("(sx@a{sv})", n->uri, n->not_after,
                                                    g_variant_builder_end (&info)), NULL);
      p11c_log_event (G_LOG_LEVEL_MESSAGE, P11C_MSGID_NEEDS_PERSON, n->token ? p11c_token_get_id (n->token) : NULL, NULL,
                      n->subject, n->not_after, "Certificate %s is due for renewal and needs a person: %s",
                      n->uri, n->reason);
    }
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "jobs", g_variant_builder_end (&jobs));
  g_variant_builder_add (&b, "{sv}", "needs_person", g_variant_builder_end (&person));
  g_ptr_array_add (plan->not_renewable, NULL);
  g_variant_builder_add (&b, "{sv}", "not_renewable",
                         g_variant_new_strv ((const char *const *) plan->not_renewable->pdata, -1));
  g_hash_table_iter_init (&iter, plan->why_not);
  while (g_hash_table_iter_next (&iter, &key, &value))
    g_variant_builder_add (&reasons, "{ss}", key, value);
  g_variant_builder_add (&b, "{sv}", "reasons", g_variant_builder_end (&reasons));
  g_hash_table_iter_init (&iter, plan->why_not_code);
  while (g_hash_table_iter_next (&iter, &key, &value))
    g_variant_builder_add (&codes, "{ss}", key, value);
  g_variant_builder_add (&b, "{sv}", "reason_codes", g_variant_builder_end (&codes));
  g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(@a{sv})", g_variant_builder_end (&b)));
  call_free (c);
}

/* Due system-store entries are renewed only for a caller who may renew the
 * system store (org.p11certd.renew.system: admins, the renewal timer's
 * user); for anyone else they are not_renewable, saying why. */
static void
renew_due_system_checked (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Call *c = user_data;
  P11cDuePlan *plan = ((RenewArgs *) c->args)->plan;
  g_autoptr(GError) error = NULL;

  if (p11c_auth_check_finish (res, NULL, &error))
    while (plan->system_requests->len > 0)
      g_ptr_array_add (plan->requests, g_ptr_array_steal_index (plan->system_requests, 0));
  else
    {
      g_autofree char *why = g_strdup_printf ("renewing the system store needs %s (an administrator, or the "
                                              "renewal timer): %s", P11C_ACTION_RENEW_SYSTEM, error->message);
      p11c_due_plan_drop_system (plan, why);
    }
  renew_due_start (c);
}

static void
renew_due_planned (Call *c, gpointer result, GError *error)
{
  RenewArgs *a = c->args;

  if (result == NULL)
    {
      call_fail (c, error);
      return;
    }
  a->plan = result;
  if (a->plan->system_requests->len == 0)
    {
      renew_due_start (c);
      return;
    }
  p11c_auth_check_async (c->inv, P11C_ACTION_RENEW_SYSTEM, p11c_wire_allow_interaction (c->params),
                         G_MAXUINT, NULL, renew_due_system_checked, c);
}

static void
handle_renew_due (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  GError *error = NULL;
  P11cOptions opts;
  RenewArgs *a = call_set_args (c, g_new0 (RenewArgs, 1), (GDestroyNotify) renew_args_free);

  g_variant_get (c->params, "(@a{sv})", &options);
  if (!p11c_wire_options_from_variant (options, FALSE, &opts, &error))
    {
      call_fail (c, error);
      return;
    }
  a->tokens = p11c_engine_tokens_snapshot (c->d->engine);
  call_run (c, renew_due_work, (GDestroyNotify) p11c_due_plan_free, renew_due_planned);
}

/* ---- CertificateExpiring: a timer for the next threshold crossing ------- */

static void
expiry_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
  P11cDaemon *d = data;
  GPtrArray *tokens = g_object_get_data (G_OBJECT (task), "tokens");

  g_task_return_pointer (task, p11c_renewal_collect (d->engine, tokens, NULL), (GDestroyNotify) g_ptr_array_unref);
}

static gboolean
expiry_timer_cb (gpointer data)
{
  P11cDaemon *d = data;
  d->expiry_timer = 0;
  schedule_expiry (d);
  return G_SOURCE_REMOVE;
}

static void
expiry_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  P11cDaemon *d = user_data;
  g_autoptr(GPtrArray) all = g_task_propagate_pointer (G_TASK (res), NULL);
  g_autoptr(GPtrArray) crossing = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_cert_entry_unref);
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  gint64 next = p11c_renewal_expiry_scan (all, now, (gint64) p11c_engine_get_config (d->engine)->warn_days * 86400,
                                          d->expiring_sent, crossing);

  d->expiry_running = FALSE;
  for (guint i = 0; i < crossing->len; i++)
    {
      P11cCertEntry *e = crossing->pdata[i];
      g_dbus_connection_emit_signal (d->conn, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE,
                                     "CertificateExpiring",
                                     g_variant_new ("(sx)", e->uri, e->summary->not_after), NULL);
      p11c_log_event (G_LOG_LEVEL_MESSAGE, NULL, NULL, e->summary->sha256, e->summary->subject,
                      e->summary->not_after, "Certificate %s expires in %" G_GINT64_FORMAT " s",
                      e->uri, e->summary->not_after - now);
    }
  if (d->expiry_timer)
    g_source_remove (d->expiry_timer);
  d->expiry_timer = 0;
  if (next != G_MAXINT64)
    d->expiry_timer = g_timeout_add_seconds_full (G_PRIORITY_LOW, (guint) MIN (next - now + 1, 86400),
                                                  expiry_timer_cb, d, NULL);
}

/* Called when certificates may have changed: re-read them and set the timer. */
static void
schedule_expiry (P11cDaemon *d)
{
  g_autoptr(GTask) task = NULL;

  if (d->expiry_running)
    return;
  d->expiry_running = TRUE;
  task = g_task_new (NULL, NULL, expiry_done, d);
  g_task_set_task_data (task, d, NULL);
  g_object_set_data_full (G_OBJECT (task), "tokens", p11c_engine_tokens_snapshot (d->engine), (GDestroyNotify) g_ptr_array_unref);
  p11c_engine_run_worker (d->engine, task, expiry_thread);
}

static void
handle_cancel (Call *c)
{
  P11cJob *job = g_hash_table_lookup (c->d->jobs, c->path);

  if (job == NULL)
    {
      g_dbus_method_invocation_return_error (g_steal_pointer (&c->inv), P11C_ERROR, P11C_ERROR_NOT_FOUND,
                                             "The job is gone");
    }
  else
    {
      if (p11c_job_is_finished (job))
        g_dbus_method_invocation_return_error (g_steal_pointer (&c->inv), P11C_ERROR, P11C_ERROR_FAILED,
                                               "The job has already finished");
      else
        {
          g_message ("Job %u cancelled by uid %u", p11c_job_get_id (job), c->uid);
          g_cancellable_cancel (p11c_job_get_cancellable (job));
          g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), NULL);
        }
    }
  call_free (c);
}

static void
handle_get_managed_objects (Call *c)
{
  GVariantBuilder b;
  GHashTableIter iter;
  gpointer key, value;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{oa{sa{sv}}}"));
  for (guint i = 0; i < p11c_engine_get_tokens (c->d->engine)->len; i++)
    {
      P11cToken *t = p11c_engine_get_tokens (c->d->engine)->pdata[i];
      g_autoptr(GVariant) props = token_props (t);
      g_variant_builder_add_parsed (&b, "{%o, {%s: %@a{sv}}}", token_path (t), P11C_DBUS_TOKEN_IFACE, props);
    }
  g_hash_table_iter_init (&iter, c->d->jobs);
  while (g_hash_table_iter_next (&iter, &key, &value))
    {
      P11cJob *j = value;
      GVariant *props = job_props_now (j), *pub = NULL, *priv = NULL;
      if (c->uid != 0 && c->uid != p11c_job_get_owner_uid (j))
        {
          /* another user's job: its state and progress only */
          g_variant_ref_sink (props);
          p11c_wire_job_split_props (props, &pub, &priv);
          g_variant_unref (props);
          g_clear_pointer (&priv, g_variant_unref);
          props = pub;
        }
      g_variant_builder_add_parsed (&b, "{%o, {%s: %@a{sv}}}", key, P11C_DBUS_JOB_IFACE, props);
    }
  g_dbus_method_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(a{oa{sa{sv}}})", &b));
  call_free (c);
}

/* ---- the method → action table (deny what is not listed) --------------- */

typedef void (*Handler) (Call *c);
typedef void (*ActionsFor) (P11cDaemon *d, GVariant *params, const char *actions[4]);

static void
delete_actions (P11cDaemon *d, GVariant *params, const char *actions[4])
{
  const char *uri = NULL;
  g_variant_get_child (params, 0, "&s", &uri);
  actions[0] = g_str_has_prefix (uri, "system:") ? P11C_ACTION_SYSTEM : P11C_ACTION_DELETE;
  actions[1] = NULL;
}

/* Renewing a system-store entry replaces its key: the system store's right */
static void
renew_actions (P11cDaemon *d, GVariant *params, const char *actions[4])
{
  const char *uri = NULL;
  g_variant_get_child (params, 0, "&s", &uri);
  actions[0] = P11C_ACTION_RENEW;
  actions[1] = g_str_has_prefix (uri, "system:") ? P11C_ACTION_SYSTEM : NULL;
  actions[2] = NULL;
}

static void
enroll_actions (P11cDaemon *d, GVariant *params, const char *actions[4])
{
  g_autoptr(GVariant) request = g_variant_get_child_value (params, 0);
  const P11cCaProfile *ca = p11c_engine_find_ca (d->engine, p11c_wire_enroll_peek_ca (request));

  /* decided on the unvalidated request (validation follows the check) */
  p11c_auth_enroll_actions (p11c_wire_enroll_peek_storage (request),
                            ca != NULL && ca->type == P11C_CA_LOCAL, actions);
}

static const struct {
  const char *iface;
  const char *method;
  const char *action;
  ActionsFor  actions_for;
  gboolean    owner_may;   /* the job's owner needs no extra right */
  Handler     handler;
} methods[] = {
  { P11C_DBUS_MANAGER_IFACE, "ListTokens", P11C_ACTION_LIST, NULL, FALSE, handle_list_tokens },
  { P11C_DBUS_MANAGER_IFACE, "ListCerts", P11C_ACTION_LIST, NULL, FALSE, handle_list_certs },
  { P11C_DBUS_MANAGER_IFACE, "ListCas", P11C_ACTION_LIST, NULL, FALSE, handle_list_cas },
  { P11C_DBUS_MANAGER_IFACE, "GetCaCertificate", P11C_ACTION_LIST, NULL, FALSE, handle_get_ca_certificate },
  { P11C_DBUS_MANAGER_IFACE, "Rescan", P11C_ACTION_LIST, NULL, FALSE, handle_rescan },
  { P11C_DBUS_MANAGER_IFACE, "CheckPin", P11C_ACTION_LIST, NULL, FALSE, handle_check_pin },
  { P11C_DBUS_MANAGER_IFACE, "DeleteCert", NULL, delete_actions, FALSE, handle_delete_cert },
  { P11C_DBUS_MANAGER_IFACE, "Enroll", NULL, enroll_actions, FALSE, handle_enroll },
  { P11C_DBUS_MANAGER_IFACE, "Renew", NULL, renew_actions, FALSE, handle_renew },
  { P11C_DBUS_MANAGER_IFACE, "RenewDue", P11C_ACTION_RENEW, NULL, FALSE, handle_renew_due },
  { P11C_DBUS_TOKEN_IFACE, "ChangePin", P11C_ACTION_CHANGE_PIN, NULL, FALSE, handle_change_pin },
  { P11C_DBUS_JOB_IFACE, "Cancel", P11C_ACTION_CANCEL_OTHER, NULL, TRUE, handle_cancel },
  { "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", P11C_ACTION_LIST, NULL, FALSE, handle_get_managed_objects },
};

static void auth_next (Call *c);

static void
auth_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Call *c = user_data;
  GError *error = NULL;

  if (!p11c_auth_check_finish (res, &c->uid, &error))
    {
      g_message ("Refused %s.%s to %s: %s", g_dbus_method_invocation_get_interface_name (c->inv),
                 g_dbus_method_invocation_get_method_name (c->inv),
                 g_dbus_method_invocation_get_sender (c->inv), error->message);
      call_fail (c, error);
      return;
    }
  auth_next (c);
}

static void
auth_next (Call *c)
{
  const char *action = c->pending[c->next_action];
  gboolean interactive;
  guint owner = G_MAXUINT;

  if (action == NULL)
    {
      c->handler (c);
      return;
    }
  c->next_action++;
  /* trailing a{sv} options may ask for interactive authorization */
  interactive = p11c_wire_allow_interaction (c->params);
  if (c->owner_may)
    {
      P11cJob *job = g_hash_table_lookup (c->d->jobs, c->path);
      if (job)
        owner = p11c_job_get_owner_uid (job);
    }
  p11c_auth_check_async (c->inv, action, interactive, owner, NULL, auth_done, c);
}

static void
method_call (GDBusConnection *conn, const char *sender, const char *path,
             const char *iface, const char *method, GVariant *params,
             GDBusMethodInvocation *inv, gpointer user_data)
{
  Call *c;

  for (gsize i = 0; i < G_N_ELEMENTS (methods); i++)
    {
      if (!g_str_equal (methods[i].iface, iface) || !g_str_equal (methods[i].method, method))
        continue;
      c = g_new0 (Call, 1);
      c->d = user_data;
      c->inv = inv;     /* we own the invocation until we reply */
      c->params = g_variant_ref (params);
      c->path = g_dbus_method_invocation_get_object_path (inv);
      if (methods[i].actions_for)
        methods[i].actions_for (c->d, params, c->pending);
      else
        c->pending[0] = methods[i].action;
      c->handler = methods[i].handler;
      c->owner_may = methods[i].owner_may;
      auth_next (c);
      return;
    }
  g_dbus_method_invocation_return_error (inv, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD,
                                         "No such method %s.%s", iface, method);
}

/* Whether @sender may see @job's result, owner and error: the connection
 * that started it, and any connection of root or of the job's owner. */
static gboolean
job_details_visible (GDBusConnection *conn, P11cJob *job, const char *sender)
{
  g_autoptr(GVariant) reply = NULL;
  guint32 uid;

  if (g_strcmp0 (sender, p11c_job_get_owner_sender (job)) == 0)
    return TRUE;
  if (sender == NULL)
    return FALSE;
  reply = g_dbus_connection_call_sync (conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus", "GetConnectionUnixUser",
                                       g_variant_new ("(s)", sender), G_VARIANT_TYPE ("(u)"),
                                       G_DBUS_CALL_FLAGS_NONE, 5000, NULL, NULL);
  if (reply == NULL)
    return FALSE;
  g_variant_get (reply, "(u)", &uid);
  return uid == 0 || uid == p11c_job_get_owner_uid (job);
}

static GVariant *
get_property (GDBusConnection *conn, const char *sender, const char *path,
              const char *iface, const char *name, GError **error, gpointer user_data)
{
  P11cDaemon *d = user_data;
  g_autoptr(GVariant) props = NULL;
  GVariant *v;

  if (g_str_equal (iface, P11C_DBUS_MANAGER_IFACE))
    props = g_variant_ref_sink (manager_props (d));
  else if (g_str_equal (iface, P11C_DBUS_TOKEN_IFACE))
    {
      P11cToken *t = token_for_path (d, path);
      if (t)
        props = token_props (t);
    }
  else if (g_str_equal (iface, P11C_DBUS_JOB_IFACE))
    {
      P11cJob *j = g_hash_table_lookup (d->jobs, path);
      if (j && !p11c_wire_job_property_is_public (name) && !job_details_visible (conn, j, sender))
        {
          g_set_error (error, G_DBUS_ERROR, G_DBUS_ERROR_ACCESS_DENIED,
                       "The job's %s is shown only to the user who started it and to root", name);
          return NULL;
        }
      if (j)
        props = g_variant_ref_sink (job_props_now (j));
    }
  v = props ? g_variant_lookup_value (props, name, NULL) : NULL;
  if (v == NULL)
    g_set_error (error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_PROPERTY, "No property %s", name);
  return v;
}

static const GDBusInterfaceVTable vtable = { method_call, get_property, NULL, { 0 } };
static const GDBusInterfaceVTable job_vtable = { method_call, get_property, NULL, { 0 } };

/* ---- tokens on the bus -------------------------------------------------- */

static void
add_atr (GVariantBuilder *b, GBytes *atr)
{
  g_autofree char *hex = NULL;
  gsize len;
  const guint8 *p;
  GString *s;

  if (atr == NULL)
    return;
  p = g_bytes_get_data (atr, &len);
  s = g_string_new (NULL);
  for (gsize i = 0; i < len; i++)
    g_string_append_printf (s, "%02X", p[i]);
  hex = g_string_free (s, FALSE);
  g_variant_builder_add (b, "{sv}", "atr", g_variant_new_string (hex));
}

static GVariant *
token_signal_info (P11cToken *t, const char *reader, GBytes *atr)
{
  P11cWireToken w = { 0 };
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  if (t != NULL)
    {
      token_to_wire (t, &w);
      g_variant_builder_add (&b, "{sv}", "label", g_variant_new_string (w.label));
      g_variant_builder_add (&b, "{sv}", "serial", g_variant_new_string (w.serial));
      g_variant_builder_add (&b, "{sv}", "manufacturer", g_variant_new_string (w.manufacturer));
      g_variant_builder_add (&b, "{sv}", "uri", g_variant_new_string (w.uri));
    }
  g_variant_builder_add (&b, "{sv}", "reader", g_variant_new_string (reader ? reader : w.slot ? w.slot : ""));
  g_variant_builder_add (&b, "{sv}", "recognized", g_variant_new_boolean (t != NULL));
  add_atr (&b, atr);
  p11c_wire_token_clear (&w);
  return g_variant_builder_end (&b);
}

static void
manager_tokens_changed (P11cDaemon *d)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "Tokens", tokens_value (d));
  emit_properties_changed (d, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, g_variant_builder_end (&b));
}

static void
token_added (P11cEngine *e, P11cToken *t, gboolean announce, gpointer user_data)
{
  P11cDaemon *d = user_data;
  GDBusInterfaceInfo *iface = g_dbus_node_info_lookup_interface (d->api, P11C_DBUS_TOKEN_IFACE);
  g_autoptr(GError) error = NULL;
  guint id = g_dbus_connection_register_object (d->conn, token_path (t), iface, &vtable, d, NULL, &error);
  GVariant *props;

  if (id == 0)
    {
      g_warning ("Cannot export token %s: %s", token_path (t), error->message);
      return;
    }
  props = token_props (t);
  g_hash_table_insert (d->token_regs, g_strdup (token_path (t)), GUINT_TO_POINTER (id));
  g_hash_table_insert (d->token_props, g_strdup (token_path (t)), props);
  g_atomic_int_inc (&d->fast->token_set);   /* a URI may name it now */
  emit_interfaces_added (d, token_path (t), P11C_DBUS_TOKEN_IFACE, props);
  manager_tokens_changed (d);
  if (announce)
    g_dbus_connection_emit_signal (d->conn, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, "TokenInserted",
                                   g_variant_new ("(o@a{sv})", token_path (t), token_signal_info (t, NULL, NULL)),
                                   NULL);
}

static void
token_removed (P11cEngine *e, P11cToken *t, gboolean announce, gpointer user_data)
{
  P11cDaemon *d = user_data;
  guint id = GPOINTER_TO_UINT (g_hash_table_lookup (d->token_regs, token_path (t)));

  if (id)
    g_dbus_connection_unregister_object (d->conn, id);
  g_hash_table_remove (d->token_regs, token_path (t));
  g_hash_table_remove (d->token_props, token_path (t));
  g_hash_table_remove_all (d->list_cache);   /* replies that hold it */
  g_atomic_int_inc (&d->fast->token_set);
  emit_interfaces_removed (d, token_path (t), P11C_DBUS_TOKEN_IFACE);
  manager_tokens_changed (d);
  if (announce)
    g_dbus_connection_emit_signal (d->conn, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, "TokenRemoved",
                                   g_variant_new ("(o@a{sv})", token_path (t), token_signal_info (t, NULL, NULL)),
                                   NULL);
}

static void
token_changed (P11cEngine *e, P11cToken *t, gpointer user_data)
{
  P11cDaemon *d = user_data;
  g_atomic_int_inc (&d->fast->token_set);   /* a URI may name another token now */
  emit_token_changes (d, t);
}

/* A card event's rescan is done: one signal for it — the token a module
 * recognised in that reader, or the bare card ("/", recognized false); the
 * other tokens that came or went in the same rescan get their own. */
static void
card_event (P11cEngine *e, const P11cCardEvent *ev, gpointer user_data)
{
  P11cDaemon *d = user_data;
  const char *signal = ev->inserted ? "TokenInserted" : "TokenRemoved";

  g_dbus_connection_emit_signal (d->conn, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, signal,
                                 g_variant_new ("(o@a{sv})", ev->token ? token_path (ev->token) : "/",
                                                token_signal_info (ev->token, ev->reader, ev->atr)), NULL);
  for (guint i = 0; i < ev->others->len; i++)
    g_dbus_connection_emit_signal (d->conn, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, signal,
                                   g_variant_new ("(o@a{sv})", token_path (ev->others->pdata[i]),
                                                  token_signal_info (ev->others->pdata[i], NULL, NULL)), NULL);
}

static void
rescanned (P11cEngine *e, gpointer user_data)
{
  schedule_expiry (user_data);
}

void
p11c_daemon_card_event (P11cDaemon *d, gboolean inserted, const char *reader, GBytes *atr)
{
  GVariantBuilder info;

  /* at once, before the modules are asked (reading a card can take
   * seconds): an app can say "reading the token…" */
  g_variant_builder_init (&info, G_VARIANT_TYPE_VARDICT);
  add_atr (&info, atr);
  g_dbus_connection_emit_signal (d->conn, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE,
                                 inserted ? "CardInserted" : "CardRemoved",
                                 g_variant_new ("(s@a{sv})", reader, g_variant_builder_end (&info)), NULL);
  p11c_engine_card_event (d->engine, inserted, reader, atr);
}

static const P11cEngineCallbacks engine_callbacks = {
  token_added, token_removed, token_changed, card_event, rescanned,
};

/* ---- life cycle --------------------------------------------------------- */

P11cDaemon *
p11c_daemon_new (GDBusConnection *conn, P11cEngine *engine, GError **error)
{
  P11cDaemon *d = g_new0 (P11cDaemon, 1);
  g_autoptr(GBytes) xml = g_resource_lookup_data (p11c_get_resource (), "/org/p11certd/org.p11certd1.xml",
                                                  G_RESOURCE_LOOKUP_FLAGS_NONE, error);

  d->conn = g_object_ref (conn);
  d->engine = engine;
  d->token_regs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  d->token_props = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_variant_unref);
  d->jobs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) p11c_job_unref);
  d->job_regs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  d->job_props = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_variant_unref);
  d->list_cache = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) list_reply_free);
  d->fast = fast_path_new (engine);
  g_atomic_int_inc (&d->fast->ref);   /* the filter's */
  d->fast_filter = g_dbus_connection_add_filter (conn, fast_path_filter, d->fast, fast_path_unref);
  if (xml == NULL
      || (d->api = g_dbus_node_info_new_for_xml (g_bytes_get_data (xml, NULL), error)) == NULL
      || (d->om = g_dbus_node_info_new_for_xml (om_xml, error)) == NULL)
    {
      p11c_daemon_free (d);
      return NULL;
    }
  d->manager_id = g_dbus_connection_register_object (conn, P11C_DBUS_PATH,
                                                     g_dbus_node_info_lookup_interface (d->api, P11C_DBUS_MANAGER_IFACE),
                                                     &vtable, d, NULL, error);
  if (d->manager_id == 0)
    {
      p11c_daemon_free (d);
      return NULL;
    }
  d->om_id = g_dbus_connection_register_object (conn, P11C_DBUS_PATH, d->om->interfaces[0],
                                                &vtable, d, NULL, error);
  if (d->om_id == 0)
    {
      p11c_daemon_free (d);
      return NULL;
    }
  p11c_engine_set_callbacks (engine, &engine_callbacks, d);
  for (guint i = 0; i < p11c_engine_get_tokens (engine)->len; i++)
    token_added (engine, p11c_engine_get_tokens (engine)->pdata[i], TRUE, d);
  d->expiring_sent = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  schedule_expiry (d);
  return d;
}

void
p11c_daemon_shutdown (P11cDaemon *d)
{
  GHashTableIter iter;
  gpointer job;

  g_hash_table_iter_init (&iter, d->jobs);
  while (g_hash_table_iter_next (&iter, NULL, &job))
    g_cancellable_cancel (p11c_job_get_cancellable (job));
  /* jobs clean up what they generated; give them (and readers) time */
  if (!p11c_engine_wait_workers (d->engine, 15 * G_USEC_PER_SEC))
    g_warning ("Some token operations did not finish in time");
}

void
p11c_daemon_free (P11cDaemon *d)
{
  GHashTableIter iter;
  gpointer key, value;

  if (d == NULL)
    return;
  /* Workers that outlived p11c_daemon_shutdown's wait may still reach the
   * daemon through their call data: at process exit, leave it all be. */
  if (d->engine && !p11c_engine_wait_workers (d->engine, 0))
    return;
  if (d->engine)
    p11c_engine_set_callbacks (d->engine, NULL, NULL);
  g_hash_table_iter_init (&iter, d->token_regs);
  while (g_hash_table_iter_next (&iter, &key, &value))
    g_dbus_connection_unregister_object (d->conn, GPOINTER_TO_UINT (value));
  g_hash_table_iter_init (&iter, d->job_regs);
  while (g_hash_table_iter_next (&iter, &key, &value))
    g_dbus_connection_unregister_object (d->conn, GPOINTER_TO_UINT (value));
  if (d->manager_id)
    g_dbus_connection_unregister_object (d->conn, d->manager_id);
  if (d->om_id)
    g_dbus_connection_unregister_object (d->conn, d->om_id);
  g_hash_table_unref (d->token_regs);
  g_hash_table_unref (d->token_props);
  g_hash_table_unref (d->jobs);
  g_hash_table_unref (d->job_regs);
  g_hash_table_unref (d->job_props);
  g_hash_table_unref (d->list_cache);
  fast_path_close (d->fast);
  g_dbus_connection_remove_filter (d->conn, d->fast_filter);
  fast_path_unref (d->fast);
  if (d->expiry_timer)
    g_source_remove (d->expiry_timer);
  g_clear_pointer (&d->expiring_sent, g_hash_table_unref);
  g_clear_pointer (&d->api, g_dbus_node_info_unref);
  g_clear_pointer (&d->om, g_dbus_node_info_unref);
  g_clear_object (&d->conn);
  g_free (d);
}
