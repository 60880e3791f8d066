/* The app's connection to p11certd (see p11d-client.h). */
#include "p11d-client.h"

#include <unistd.h>

#include "p11d-i18n.h"
#include "p11d-text.h"

struct _P11dClient {
  GObject parent;
  P11dClientState state;
  char *problem;
  GDBusConnection *conn;
  GPtrArray *tokens;            /* GVariant a{sv} */
  GPtrArray *certs;             /* GVariant a{sv} */
  GVariant *pin_policy;
  gboolean system_allowed;
  guint generation;             /* of the refresh in flight */
  gboolean refreshing;
  gboolean refresh_again;
  GHashTable *pin_warned;       /* token path -> warning level already reported */
  guint watch_id;
  GCancellable *cancellable;
};

enum {
  SIG_CHANGED, SIG_CARD_EVENT, SIG_TOKEN_EVENT, SIG_EXPIRING, SIG_PIN_WARNING,
  SIG_JOB_CHANGED, SIG_JOB_FINISHED, N_SIGNALS
};
static guint signals[N_SIGNALS];

G_DEFINE_TYPE (P11dClient, p11d_client, G_TYPE_OBJECT)

const char *
p11d_dict_str (GVariant *dict, const char *key, const char *def)
{
  const char *s = def;
  if (dict != NULL)
    g_variant_lookup (dict, key, "&s", &s);
  return s;
}

gboolean
p11d_dict_bool (GVariant *dict, const char *key, gboolean def)
{
  gboolean b = def;
  if (dict != NULL)
    g_variant_lookup (dict, key, "b", &b);
  return b;
}

gint64
p11d_dict_int64 (GVariant *dict, const char *key, gint64 def)
{
  gint64 x = def;
  if (dict != NULL)
    g_variant_lookup (dict, key, "x", &x);
  return x;
}

static GPtrArray *
variant_array (GVariant *aa)
{
  GPtrArray *a = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);
  if (aa != NULL)
    for (gsize i = 0; i < g_variant_n_children (aa); i++)
      g_ptr_array_add (a, g_variant_get_child_value (aa, i));
  return a;
}

static void
set_state (P11dClient *self, P11dClientState state, const char *problem)
{
  self->state = state;
  g_free (self->problem);
  self->problem = g_strdup (problem);
  g_signal_emit (self, signals[SIG_CHANGED], 0);
}

/* ---- calls -------------------------------------------------------------- */

void
p11d_client_call (P11dClient *self, const char *path, const char *iface, const char *method,
                  GVariant *params, const GVariantType *reply_type, GUnixFDList *fds,
                  GCancellable *cancellable, GAsyncReadyCallback cb, gpointer user_data)
{
  if (self->conn == NULL)
    {
      GTask *task = g_task_new (self, cancellable, cb, user_data);
      if (params != NULL)
        g_variant_unref (g_variant_ref_sink (params));
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED, "not connected to the system bus");
      g_object_unref (task);
      return;
    }
  /* a long timeout: the call is asynchronous, a slow token or CA freezes nothing */
  g_dbus_connection_call_with_unix_fd_list (self->conn, P11D_BUS_NAME, path, iface, method, params, reply_type,
                                            G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, 600 * 1000,
                                            fds, cancellable, cb, user_data);
}

GVariant *
p11d_client_call_finish (P11dClient *self, GAsyncResult *res, GError **error)
{
  if (G_IS_TASK (res))
    return g_task_propagate_pointer (G_TASK (res), error);
  return g_dbus_connection_call_with_unix_fd_list_finish (self->conn, NULL, res, error);
}

/* ---- listing ------------------------------------------------------------ */

typedef struct {
  P11dClient *self;
  guint generation;
  int pending;
  GVariant *tokens;
  GVariant *certs;
  GError *error;
} Refresh;

static void refresh_start (P11dClient *self);

static int
pin_level (GVariant *token)
{
  if (p11d_dict_bool (token, "pin_locked", FALSE))
    return 3;
  if (p11d_dict_bool (token, "pin_final_try", FALSE))
    return 2;
  if (p11d_dict_bool (token, "pin_count_low", FALSE))
    return 1;
  return 0;
}

static void
refresh_done (Refresh *r)
{
  P11dClient *self = r->self;

  if (r->generation == self->generation)
    {
      if (r->error != NULL)
        {
          g_autofree char *text = p11d_error_text (r->error);
          g_ptr_array_set_size (self->tokens, 0);
          g_ptr_array_set_size (self->certs, 0);
          set_state (self, P11D_CLIENT_UNAVAILABLE, text);
        }
      else
        {
          g_autoptr(GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
          g_ptr_array_unref (self->tokens);
          g_ptr_array_unref (self->certs);
          self->tokens = variant_array (r->tokens);
          self->certs = variant_array (r->certs);
          /* a token whose PIN nears lock is reported once per level reached */
          for (guint i = 0; i < self->tokens->len; i++)
            {
              GVariant *t = self->tokens->pdata[i];
              const char *path = NULL;
              int level = pin_level (t), before;
              if (!g_variant_lookup (t, "path", "&o", &path))
                continue;
              g_hash_table_add (seen, (gpointer) path);
              before = GPOINTER_TO_INT (g_hash_table_lookup (self->pin_warned, path));
              g_hash_table_insert (self->pin_warned, g_strdup (path), GINT_TO_POINTER (level));
              if (level > before)
                g_signal_emit (self, signals[SIG_PIN_WARNING], 0, path);
            }
          set_state (self, P11D_CLIENT_READY, NULL);
        }
      self->refreshing = FALSE;
      if (self->refresh_again)
        refresh_start (self);
    }
  g_clear_pointer (&r->tokens, g_variant_unref);
  g_clear_pointer (&r->certs, g_variant_unref);
  g_clear_error (&r->error);
  g_object_unref (r->self);
  g_free (r);
}

static void
refresh_reply (GObject *source, GAsyncResult *res, gpointer user_data, GVariant **slot)
{
  Refresh *r = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = p11d_client_call_finish (r->self, res, &error);

  if (reply != NULL)
    *slot = g_variant_get_child_value (reply, 0);
  else if (r->error == NULL)
    r->error = g_steal_pointer (&error);
  if (--r->pending == 0)
    refresh_done (r);
}

static void
tokens_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Refresh *r = user_data;
  refresh_reply (source, res, user_data, &r->tokens);
}

static void
certs_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Refresh *r = user_data;
  refresh_reply (source, res, user_data, &r->certs);
}

static void
refresh_start (P11dClient *self)
{
  Refresh *r = g_new0 (Refresh, 1);

  self->refreshing = TRUE;
  self->refresh_again = FALSE;
  r->self = g_object_ref (self);
  r->generation = ++self->generation;
  r->pending = 2;
  p11d_client_call (self, P11D_PATH, P11D_MANAGER_IFACE, "ListTokens", NULL, G_VARIANT_TYPE ("(aa{sv})"),
                    NULL, self->cancellable, tokens_reply, r);
  p11d_client_call (self, P11D_PATH, P11D_MANAGER_IFACE, "ListCerts", g_variant_new_parsed ("(@a{sv} {},)"),
                    G_VARIANT_TYPE ("(aa{sv})"), NULL, self->cancellable, certs_reply, r);
}

/* Coalesced: while a listing is in flight, one more follows it. */
void
p11d_client_refresh (P11dClient *self)
{
  if (self->refreshing)
    self->refresh_again = TRUE;
  else
    refresh_start (self);
}

static void
policy_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  P11dClient *self = user_data;
  g_autoptr(GVariant) reply = p11d_client_call_finish (self, res, NULL);

  if (reply != NULL)
    {
      g_autoptr(GVariant) v = NULL;
      g_variant_get (reply, "(v)", &v);
      if (g_variant_is_of_type (v, G_VARIANT_TYPE_VARDICT))
        {
          g_clear_pointer (&self->pin_policy, g_variant_unref);
          self->pin_policy = g_steal_pointer (&v);
          g_signal_emit (self, signals[SIG_CHANGED], 0);
        }
    }
  g_object_unref (self);
}

static void
authority_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  P11dClient *self = user_data;
  g_autoptr(GVariant) reply = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), res, NULL);
  gboolean allowed = FALSE, challenge = FALSE;

  if (reply != NULL)
    g_variant_get (reply, "((bb@a{ss}))", &allowed, &challenge, NULL);
  /* root is always allowed by the daemon, with or without polkit */
  allowed = allowed || getuid () == 0;
  if (allowed != self->system_allowed)
    {
      self->system_allowed = allowed;
      g_signal_emit (self, signals[SIG_CHANGED], 0);
    }
  g_object_unref (self);
}

static void
ask_system_allowed (P11dClient *self)
{
  GVariantBuilder subject;

  g_variant_builder_init (&subject, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&subject, "{sv}", "name",
                         g_variant_new_string (g_dbus_connection_get_unique_name (self->conn)));
  g_dbus_connection_call (self->conn, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
                          "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization",
                          g_variant_new ("((s@a{sv})s@a{ss}us)", "system-bus-name", g_variant_builder_end (&subject),
                                         "org.p11certd.system.manage",
                                         g_variant_new_array (G_VARIANT_TYPE ("{ss}"), NULL, 0), 0, ""),
                          G_VARIANT_TYPE ("((bba{ss}))"), G_DBUS_CALL_FLAGS_NONE, 30 * 1000, self->cancellable,
                          authority_reply, g_object_ref (self));
}

static void
fetch_policy (P11dClient *self)
{
  p11d_client_call (self, P11D_PATH, "org.freedesktop.DBus.Properties", "Get",
                    g_variant_new ("(ss)", P11D_MANAGER_IFACE, "PinPolicy"), G_VARIANT_TYPE ("(v)"), NULL,
                    self->cancellable, policy_reply, g_object_ref (self));
}

/* ---- signals ------------------------------------------------------------ */

static void
on_manager_signal (GDBusConnection *conn, const char *sender, const char *path, const char *iface,
                   const char *name, GVariant *params, gpointer user_data)
{
  P11dClient *self = user_data;

  if (g_str_equal (name, "TokenInserted") || g_str_equal (name, "TokenRemoved"))
    {
      const char *token = NULL;
      g_autoptr(GVariant) info = NULL;
      g_variant_get (params, "(&o@a{sv})", &token, &info);
      g_signal_emit (self, signals[SIG_TOKEN_EVENT], 0, g_str_equal (name, "TokenInserted"), token,
                     p11d_dict_str (info, "reader", ""));
      p11d_client_refresh (self);
    }
  else if (g_str_equal (name, "CardInserted") || g_str_equal (name, "CardRemoved"))
    {
      const char *reader = NULL;
      g_variant_get (params, "(&s@a{sv})", &reader, NULL);
      g_signal_emit (self, signals[SIG_CARD_EVENT], 0, g_str_equal (name, "CardInserted"), reader);
    }
  else if (g_str_equal (name, "CertificateExpiring") && g_variant_is_of_type (params, G_VARIANT_TYPE ("(sx)")))
    {
      const char *uri;
      gint64 not_after;
      g_variant_get (params, "(&sx)", &uri, &not_after);
      g_signal_emit (self, signals[SIG_EXPIRING], 0, uri, not_after, FALSE);
    }
  else if (g_str_equal (name, "RenewalNeeded") && g_variant_is_of_type (params, G_VARIANT_TYPE ("(sxa{sv})")))
    {
      const char *uri;
      gint64 not_after;
      g_variant_get (params, "(&sx@a{sv})", &uri, &not_after, NULL);
      g_signal_emit (self, signals[SIG_EXPIRING], 0, uri, not_after, TRUE);
    }
}

static void
on_properties_changed (GDBusConnection *conn, const char *sender, const char *path, const char *iface,
                       const char *name, GVariant *params, gpointer user_data)
{
  P11dClient *self = user_data;
  const char *changed_iface = NULL;
  g_autoptr(GVariant) changed = NULL;

  if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(sa{sv}as)")))
    return;
  g_variant_get (params, "(&s@a{sv}@as)", &changed_iface, &changed, NULL);
  if (g_str_equal (changed_iface, P11D_JOB_IFACE))
    g_signal_emit (self, signals[SIG_JOB_CHANGED], 0, path, changed);
  else if (g_str_equal (changed_iface, P11D_TOKEN_IFACE))
    p11d_client_refresh (self);
  else if (g_str_equal (changed_iface, P11D_MANAGER_IFACE) && g_variant_lookup_value (changed, "PinPolicy", NULL))
    fetch_policy (self);
}

static void
on_job_finished (GDBusConnection *conn, const char *sender, const char *path, const char *iface,
                 const char *name, GVariant *params, gpointer user_data)
{
  gboolean ok;
  const char *error_name, *message;

  if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(bss)")))
    return;
  g_variant_get (params, "(b&s&s)", &ok, &error_name, &message);
  g_signal_emit (user_data, signals[SIG_JOB_FINISHED], 0, path, ok, error_name, message);
}

static void
name_appeared (GDBusConnection *conn, const char *name, const char *owner, gpointer user_data)
{
  P11dClient *self = user_data;
  fetch_policy (self);
  p11d_client_refresh (self);
}

static void
name_vanished (GDBusConnection *conn, const char *name, gpointer user_data)
{
  P11dClient *self = user_data;
  if (conn == NULL)
    return;
  /* the daemon may be bus-activated: listing starts it */
  p11d_client_refresh (self);
}

static void
bus_ready (GObject *source, GAsyncResult *res, gpointer user_data)
{
  P11dClient *self = user_data;
  g_autoptr(GError) error = NULL;
  GDBusConnection *conn = g_bus_get_finish (res, &error);

  if (conn == NULL)
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          g_warning ("System bus: %s", error->message);
          set_state (self, P11D_CLIENT_UNAVAILABLE, _("The system message bus cannot be reached."));
        }
      g_object_unref (self);
      return;
    }
  self->conn = conn;
  g_dbus_connection_signal_subscribe (conn, P11D_BUS_NAME, P11D_MANAGER_IFACE, NULL, P11D_PATH, NULL,
                                      G_DBUS_SIGNAL_FLAGS_NONE, on_manager_signal, self, NULL);
  g_dbus_connection_signal_subscribe (conn, P11D_BUS_NAME, "org.freedesktop.DBus.Properties", "PropertiesChanged",
                                      NULL, NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_properties_changed, self, NULL);
  g_dbus_connection_signal_subscribe (conn, P11D_BUS_NAME, P11D_JOB_IFACE, "Finished", NULL, NULL,
                                      G_DBUS_SIGNAL_FLAGS_NONE, on_job_finished, self, NULL);
  self->watch_id = g_bus_watch_name_on_connection (conn, P11D_BUS_NAME, G_BUS_NAME_WATCHER_FLAGS_NONE,
                                                   name_appeared, name_vanished, self, NULL);
  ask_system_allowed (self);
  g_object_unref (self);
}

/* ---- object ------------------------------------------------------------- */

static void
p11d_client_finalize (GObject *object)
{
  P11dClient *self = P11D_CLIENT (object);

  g_cancellable_cancel (self->cancellable);
  g_clear_object (&self->cancellable);
  if (self->watch_id)
    g_bus_unwatch_name (self->watch_id);
  g_clear_object (&self->conn);
  g_ptr_array_unref (self->tokens);
  g_ptr_array_unref (self->certs);
  g_clear_pointer (&self->pin_policy, g_variant_unref);
  g_hash_table_unref (self->pin_warned);
  g_free (self->problem);
  G_OBJECT_CLASS (p11d_client_parent_class)->finalize (object);
}

static void
p11d_client_class_init (P11dClientClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = p11d_client_finalize;
  signals[SIG_CHANGED] = g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                                       NULL, G_TYPE_NONE, 0);
  signals[SIG_CARD_EVENT] = g_signal_new ("card-event", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                                          NULL, NULL, G_TYPE_NONE, 2, G_TYPE_BOOLEAN, G_TYPE_STRING);
  signals[SIG_TOKEN_EVENT] = g_signal_new ("token-event", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                                           NULL, NULL, G_TYPE_NONE, 3, G_TYPE_BOOLEAN, G_TYPE_STRING, G_TYPE_STRING);
  signals[SIG_EXPIRING] = g_signal_new ("certificate-expiring", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                                        NULL, NULL, NULL, G_TYPE_NONE, 3, G_TYPE_STRING, G_TYPE_INT64,
                                        G_TYPE_BOOLEAN);
  signals[SIG_PIN_WARNING] = g_signal_new ("pin-warning", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                                           NULL, NULL, G_TYPE_NONE, 1, G_TYPE_STRING);
  signals[SIG_JOB_CHANGED] = g_signal_new ("job-changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                                           NULL, NULL, G_TYPE_NONE, 2, G_TYPE_STRING, G_TYPE_VARIANT);
  signals[SIG_JOB_FINISHED] = g_signal_new ("job-finished", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                                            NULL, NULL, G_TYPE_NONE, 4, G_TYPE_STRING, G_TYPE_BOOLEAN,
                                            G_TYPE_STRING, G_TYPE_STRING);
}

static void
p11d_client_init (P11dClient *self)
{
  self->tokens = variant_array (NULL);
  self->certs = variant_array (NULL);
  self->pin_warned = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->cancellable = g_cancellable_new ();
  self->state = P11D_CLIENT_CONNECTING;
  self->system_allowed = getuid () == 0;
  g_bus_get (G_BUS_TYPE_SYSTEM, self->cancellable, bus_ready, g_object_ref (self));
}

P11dClient *
p11d_client_get_default (void)
{
  static P11dClient *client;
  if (client == NULL)
    client = g_object_new (P11D_TYPE_CLIENT, NULL);
  return client;
}

P11dClientState p11d_client_get_state (P11dClient *self) { return self->state; }
const char *p11d_client_get_problem (P11dClient *self) { return self->problem; }
GDBusConnection *p11d_client_get_connection (P11dClient *self) { return self->conn; }
GPtrArray *p11d_client_get_tokens (P11dClient *self) { return self->tokens; }
GPtrArray *p11d_client_get_certs (P11dClient *self) { return self->certs; }
GVariant *p11d_client_get_pin_policy (P11dClient *self) { return self->pin_policy; }
gboolean p11d_client_get_system_allowed (P11dClient *self) { return self->system_allowed; }

static GVariant *
find_in (GPtrArray *a, const char *key, const char *value)
{
  for (guint i = 0; value != NULL && i < a->len; i++)
    {
      const char *s = NULL;
      if (g_variant_lookup (a->pdata[i], key, "&s", &s) || g_variant_lookup (a->pdata[i], key, "&o", &s))
        if (g_str_equal (s, value))
          return a->pdata[i];
    }
  return NULL;
}

GVariant *p11d_client_find_token (P11dClient *self, const char *path) { return find_in (self->tokens, "path", path); }
GVariant *p11d_client_find_cert (P11dClient *self, const char *uri) { return find_in (self->certs, "uri", uri); }
