/* The bus face: registration, the ObjectManager, properties and their
 * signals, the one typed thread helper for calls, the authorization chain
 * and the method → polkit action table; tokens appearing on the bus.  Each
 * interface's methods are in p11c-dbus-{manager,token,job}.c. */
#define G_LOG_DOMAIN "p11c-dbus"
#include "p11c-dbus-private.h"
#include "p11c-resources.h"

static const char om_xml[] =
  "<node><interface name='org.freedesktop.DBus.ObjectManager'>"
  "<method name='GetManagedObjects'><arg name='objects' type='a{oa{sa{sv}}}' direction='out'/></method>"
  "<signal name='InterfacesAdded'><arg name='object' type='o'/><arg name='interfaces' type='a{sa{sv}}'/></signal>"
  "<signal name='InterfacesRemoved'><arg name='object' type='o'/><arg name='interfaces' type='as'/></signal>"
  "</interface></node>";

/* ---- object paths: built here, never below ------------------------------- */

/* A token's object path (the engine's token id under P11C_DBUS_TOKENS_PATH);
 * interned: tokens are few, and a path outlives nothing it names */
const char *
p11c_dbus_token_path_for_id (const char *id)
{
  g_autofree char *path = g_strdup_printf (P11C_DBUS_TOKENS_PATH "/%s", id);
  return g_intern_string (path);
}

const char *
p11c_dbus_token_path (P11cToken *t)
{
  return p11c_dbus_token_path_for_id (p11c_token_get_id (t));
}

P11cToken *
p11c_dbus_token_for_path (P11cDaemon *d, const char *path)
{
  const char *prefix = P11C_DBUS_TOKENS_PATH "/";
  if (path == NULL || !g_str_has_prefix (path, prefix))
    return NULL;
  return p11c_engine_find_token_by_id (d->engine, path + strlen (prefix));
}

/* A token named by a caller: its object path here, a PKCS#11 URI by the
 * engine's resolver */
P11cToken *
p11c_dbus_resolve_token (P11cDaemon *d, const char *spec, GError **error)
{
  P11cToken *t = spec && spec[0] == '/' ? p11c_dbus_token_for_path (d, spec) : NULL;
  return t ? t : p11c_engine_resolve_token (d->engine, spec, error);
}

/* ---- calls (the struct: p11c-dbus-private.h) ---------------------------- */

void
p11c_dbus_call_free (Call *c)
{
  /* Wipe the arguments, which may hold PINs, before they are freed. */
  if (c->params)
    {
      p11c_variant_wipe (c->params);
      g_variant_unref (c->params);
    }
  if (c->inv != NULL)
    p11c_invocation_return_error (g_steal_pointer (&c->inv), P11C_ERROR, P11C_ERROR_FAILED,
                                           "Internal error: the request was dropped");
  if (c->args != NULL && c->args_free != NULL)
    c->args_free (c->args);
  g_clear_pointer (&c->token, p11c_token_unref);
  g_free (c);
}

/* Give @c its typed arguments (@free_func frees them with the call) */
gpointer
p11c_dbus_call_set_args (Call *c, gpointer args, GDestroyNotify free_func)
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
  p11c_invocation_return_gerror (g_steal_pointer (&c->inv), error);
  g_error_free (error);
}

void
p11c_dbus_call_fail (Call *c, GError *error)
{
  call_return_error (c, error);
  p11c_dbus_call_free (c);
}

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
void
p11c_dbus_call_run (Call *c, CallWork work, GDestroyNotify result_free, CallDone done)
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

/* A work whose result is the reply (a GVariant, sunk by p11c_dbus_reply_take) */
void
p11c_dbus_call_reply_done (Call *c, gpointer result, GError *error)
{
  g_autoptr(GVariant) reply = result;

  if (error != NULL)
    call_return_error (c, error);
  else
    p11c_invocation_return_value (g_steal_pointer (&c->inv), reply);
  if (c->token != NULL)
    p11c_dbus_emit_token_changes (c->d, c->token);
  if (c->changes_certs)
    p11c_dbus_schedule_expiry (c->d);
  p11c_dbus_call_free (c);
}

gpointer
p11c_dbus_reply_take (GVariant *reply)
{
  return reply ? g_variant_ref_sink (reply) : NULL;
}

/* Run @work(c) in a worker thread, reply with its result. Takes @c. */
void
p11c_dbus_call_in_thread (Call *c, CallWork work)
{
  p11c_dbus_call_run (c, work, (GDestroyNotify) g_variant_unref, p11c_dbus_call_reply_done);
}

/* ---- properties --------------------------------------------------------- */

static GVariant *
tokens_value (P11cDaemon *d)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("ao"));
  for (guint i = 0; i < p11c_engine_get_tokens (d->engine)->len; i++)
    g_variant_builder_add (&b, "o", p11c_dbus_token_path (p11c_engine_get_tokens (d->engine)->pdata[i]));
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
void
p11c_dbus_emit_properties_changed (P11cDaemon *d, const char *dest, const char *path, const char *iface,
                         GVariant *changed)
{
  p11c_bus_emit_signal (d->bus, dest, path, "org.freedesktop.DBus.Properties",
                                 "PropertiesChanged",
                                 g_variant_new ("(s@a{sv}as)", iface, changed, NULL));
}

/* What changed in @now (taken) since the last call for @path: a floating
 * a{sv}, or NULL when nothing did. */
GVariant *
p11c_dbus_changed_since (GHashTable *last, const char *path, GVariant *now)
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
void
p11c_dbus_emit_changed_props (P11cDaemon *d, GHashTable *last, const char *path, const char *iface, GVariant *now)
{
  GVariant *changed = p11c_dbus_changed_since (last, path, now);
  if (changed != NULL)
    p11c_dbus_emit_properties_changed (d, NULL, path, iface, changed);
}

void
p11c_dbus_emit_interfaces_added (P11cDaemon *d, const char *path, const char *iface, GVariant *props)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{sa{sv}}"));
  g_variant_builder_add (&b, "{s@a{sv}}", iface, props);
  p11c_bus_emit_signal (d->bus, NULL, P11C_DBUS_PATH, "org.freedesktop.DBus.ObjectManager",
                                 "InterfacesAdded", g_variant_new ("(oa{sa{sv}})", path, &b));
}

void
p11c_dbus_emit_interfaces_removed (P11cDaemon *d, const char *path, const char *iface)
{
  const char *ifaces[] = { iface, NULL };
  p11c_bus_emit_signal (d->bus, NULL, P11C_DBUS_PATH, "org.freedesktop.DBus.ObjectManager",
                                 "InterfacesRemoved", g_variant_new ("(o^as)", path, ifaces));
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
      g_autoptr(GVariant) props = p11c_dbus_token_props (t);
      g_variant_builder_add_parsed (&b, "{%o, {%s: %@a{sv}}}", p11c_dbus_token_path (t), P11C_DBUS_TOKEN_IFACE, props);
    }
  g_hash_table_iter_init (&iter, c->d->jobs);
  while (g_hash_table_iter_next (&iter, &key, &value))
    {
      P11cJob *j = value;
      GVariant *props = p11c_dbus_job_props_now (j), *pub = NULL, *priv = NULL;
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
  p11c_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(a{oa{sa{sv}}})", &b));
  p11c_dbus_call_free (c);
}

/* ---- the method → action table (deny what is not listed) --------------- */

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
  { P11C_DBUS_MANAGER_IFACE, "ListTokens", P11C_ACTION_LIST, NULL, FALSE, p11c_dbus_handle_list_tokens },
  { P11C_DBUS_MANAGER_IFACE, "ListCerts", P11C_ACTION_LIST, NULL, FALSE, p11c_dbus_handle_list_certs },
  { P11C_DBUS_MANAGER_IFACE, "ListCas", P11C_ACTION_LIST, NULL, FALSE, p11c_dbus_handle_list_cas },
  { P11C_DBUS_MANAGER_IFACE, "GetCaCertificate", P11C_ACTION_LIST, NULL, FALSE, p11c_dbus_handle_get_ca_certificate },
  { P11C_DBUS_MANAGER_IFACE, "Rescan", P11C_ACTION_LIST, NULL, FALSE, p11c_dbus_handle_rescan },
  { P11C_DBUS_MANAGER_IFACE, "CheckPin", P11C_ACTION_LIST, NULL, FALSE, p11c_dbus_handle_check_pin },
  { P11C_DBUS_MANAGER_IFACE, "DeleteCert", NULL, delete_actions, FALSE, p11c_dbus_handle_delete_cert },
  { P11C_DBUS_MANAGER_IFACE, "Enroll", NULL, enroll_actions, FALSE, p11c_dbus_handle_enroll },
  { P11C_DBUS_MANAGER_IFACE, "Renew", NULL, renew_actions, FALSE, p11c_dbus_handle_renew },
  { P11C_DBUS_MANAGER_IFACE, "RenewDue", P11C_ACTION_RENEW, NULL, FALSE, p11c_dbus_handle_renew_due },
  { P11C_DBUS_TOKEN_IFACE, "ChangePin", P11C_ACTION_CHANGE_PIN, NULL, FALSE, p11c_dbus_handle_change_pin },
  { P11C_DBUS_JOB_IFACE, "Cancel", P11C_ACTION_CANCEL_OTHER, NULL, TRUE, p11c_dbus_handle_cancel },
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
      g_message ("Refused %s.%s to %s: %s", p11c_invocation_get_interface_name (c->inv),
                 p11c_invocation_get_method_name (c->inv),
                 p11c_invocation_get_sender (c->inv), error->message);
      p11c_dbus_call_fail (c, error);
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

void
p11c_dbus_method_call (P11cBus *bus, P11cInvocation *inv, gpointer user_data)
{
  P11cDaemon *d = user_data;
  const char *iface = p11c_invocation_get_interface_name (inv);
  const char *method = p11c_invocation_get_method_name (inv);
  GVariant *params = p11c_invocation_get_parameters (inv);
  Call *c;

  if (p11c_dbus_fast_path_answer (d->fast, inv))
    return;
  for (gsize i = 0; i < G_N_ELEMENTS (methods); i++)
    {
      if (g_strcmp0 (methods[i].iface, iface) != 0 || !g_str_equal (methods[i].method, method))
        continue;
      c = g_new0 (Call, 1);
      c->d = d;
      c->inv = inv;     /* we own the invocation until we reply */
      c->params = g_variant_ref (params);
      c->path = p11c_invocation_get_object_path (inv);
      if (methods[i].actions_for)
        methods[i].actions_for (c->d, params, c->pending);
      else
        c->pending[0] = methods[i].action;
      c->handler = methods[i].handler;
      c->owner_may = methods[i].owner_may;
      auth_next (c);
      return;
    }
  p11c_invocation_return_error (inv, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD,
                                "No such method %s.%s", iface ? iface : "", method);
}

GVariant *
p11c_dbus_get_property (P11cBus *bus, const char *sender, const char *path,
                        const char *iface, const char *name, GError **error, gpointer user_data)
{
  P11cDaemon *d = user_data;
  g_autoptr(GVariant) props = NULL;
  GVariant *v;

  if (g_str_equal (iface, P11C_DBUS_MANAGER_IFACE))
    props = g_variant_ref_sink (manager_props (d));
  else if (g_str_equal (iface, P11C_DBUS_TOKEN_IFACE))
    {
      P11cToken *t = p11c_dbus_token_for_path (d, path);
      if (t)
        props = p11c_dbus_token_props (t);
    }
  else if (g_str_equal (iface, P11C_DBUS_JOB_IFACE))
    {
      P11cJob *j = g_hash_table_lookup (d->jobs, path);
      if (j && !p11c_wire_job_property_is_public (name) && !p11c_dbus_job_details_visible (bus, j, sender))
        {
          g_set_error (error, G_DBUS_ERROR, G_DBUS_ERROR_ACCESS_DENIED,
                       "The job's %s is shown only to the user who started it and to root", name);
          return NULL;
        }
      if (j)
        props = g_variant_ref_sink (p11c_dbus_job_props_now (j));
    }
  v = props ? g_variant_lookup_value (props, name, NULL) : NULL;
  if (v == NULL)
    g_set_error (error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_PROPERTY, "No property %s", name);
  return v;
}


/* ---- tokens on the bus -------------------------------------------------- */

static void
manager_tokens_changed (P11cDaemon *d)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "Tokens", tokens_value (d));
  p11c_dbus_emit_properties_changed (d, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, g_variant_builder_end (&b));
}

static void
token_added (P11cEngine *e, P11cToken *t, gboolean announce, gpointer user_data)
{
  P11cDaemon *d = user_data;
  GDBusInterfaceInfo *iface = g_dbus_node_info_lookup_interface (d->api, P11C_DBUS_TOKEN_IFACE);
  g_autoptr(GError) error = NULL;
  guint id = p11c_bus_register_object (d->bus, p11c_dbus_token_path (t), iface, p11c_dbus_method_call,
                                       p11c_dbus_get_property, d, &error);
  GVariant *props;

  if (id == 0)
    {
      g_warning ("Cannot export token %s: %s", p11c_dbus_token_path (t), error->message);
      return;
    }
  props = p11c_dbus_token_props (t);
  g_hash_table_insert (d->token_regs, g_strdup (p11c_dbus_token_path (t)), GUINT_TO_POINTER (id));
  g_hash_table_insert (d->p11c_dbus_token_props, g_strdup (p11c_dbus_token_path (t)), props);
  d->fast->token_set++;   /* a URI may name it now */
  p11c_dbus_emit_interfaces_added (d, p11c_dbus_token_path (t), P11C_DBUS_TOKEN_IFACE, props);
  manager_tokens_changed (d);
  if (announce)
    p11c_bus_emit_signal (d->bus, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, "TokenInserted",
                                   p11c_dbus_token_event (t, NULL, NULL));
}

static void
token_removed (P11cEngine *e, P11cToken *t, gboolean announce, gpointer user_data)
{
  P11cDaemon *d = user_data;
  guint id = GPOINTER_TO_UINT (g_hash_table_lookup (d->token_regs, p11c_dbus_token_path (t)));

  if (id)
    p11c_bus_unregister_object (d->bus, id);
  g_hash_table_remove (d->token_regs, p11c_dbus_token_path (t));
  g_hash_table_remove (d->p11c_dbus_token_props, p11c_dbus_token_path (t));
  g_hash_table_remove_all (d->list_cache);   /* replies that hold it */
  d->fast->token_set++;
  p11c_dbus_emit_interfaces_removed (d, p11c_dbus_token_path (t), P11C_DBUS_TOKEN_IFACE);
  manager_tokens_changed (d);
  if (announce)
    p11c_bus_emit_signal (d->bus, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, "TokenRemoved",
                                   p11c_dbus_token_event (t, NULL, NULL));
}

static void
token_changed (P11cEngine *e, P11cToken *t, gpointer user_data)
{
  P11cDaemon *d = user_data;
  d->fast->token_set++;   /* a URI may name another token now */
  p11c_dbus_emit_token_changes (d, t);
}

/* A card event's rescan is done: one signal for it — the token a module
 * recognised in that reader, or the bare card ("/", recognized false); the
 * other tokens that came or went in the same rescan get their own. */
static void
card_event (P11cEngine *e, const P11cCardEvent *ev, gpointer user_data)
{
  P11cDaemon *d = user_data;
  const char *signal = ev->inserted ? "TokenInserted" : "TokenRemoved";

  p11c_bus_emit_signal (d->bus, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, signal,
                                 p11c_dbus_token_event (ev->token, ev->reader, ev->atr));
  for (guint i = 0; i < ev->others->len; i++)
    p11c_bus_emit_signal (d->bus, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, signal,
                                   p11c_dbus_token_event (ev->others->pdata[i], NULL, NULL));
}

static void
rescanned (P11cEngine *e, gpointer user_data)
{
  p11c_dbus_schedule_expiry (user_data);
}

void
p11c_daemon_card_event (P11cDaemon *d, gboolean inserted, const char *reader, GBytes *atr)
{
  g_autofree char *hex = p11c_dbus_atr_hex (atr);
  P11cWireCardEvent ev = { .reader = (char *) reader, .atr = hex };

  /* at once, before the modules are asked (reading a card can take
   * seconds): an app can say "reading the token…" */
  p11c_bus_emit_signal (d->bus, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE,
                                 inserted ? "CardInserted" : "CardRemoved", p11c_wire_card_event_to_variant (&ev));
  p11c_engine_card_event (d->engine, inserted, reader, atr);
}

static const P11cEngineCallbacks engine_callbacks = {
  token_added, token_removed, token_changed, card_event, rescanned,
};

/* ---- life cycle --------------------------------------------------------- */

P11cDaemon *
p11c_daemon_new (P11cBus *bus, P11cEngine *engine, GError **error)
{
  P11cDaemon *d = g_new0 (P11cDaemon, 1);
  g_autoptr(GBytes) xml = g_resource_lookup_data (p11c_get_resource (), "/org/p11certd/org.p11certd1.xml",
                                                  G_RESOURCE_LOOKUP_FLAGS_NONE, error);

  d->bus = bus;
  d->engine = engine;
  d->token_regs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  d->p11c_dbus_token_props = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_variant_unref);
  d->jobs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) p11c_job_unref);
  d->job_regs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  d->p11c_dbus_job_props = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_variant_unref);
  d->list_cache = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) p11c_dbus_list_reply_free);
  d->fast = p11c_dbus_fast_path_new (engine);
  if (xml == NULL
      || (d->api = g_dbus_node_info_new_for_xml (g_bytes_get_data (xml, NULL), error)) == NULL
      || (d->om = g_dbus_node_info_new_for_xml (om_xml, error)) == NULL)
    {
      p11c_daemon_free (d);
      return NULL;
    }
  d->manager_id = p11c_bus_register_object (bus, P11C_DBUS_PATH,
                                            g_dbus_node_info_lookup_interface (d->api, P11C_DBUS_MANAGER_IFACE),
                                            p11c_dbus_method_call, p11c_dbus_get_property, d, error);
  if (d->manager_id == 0)
    {
      p11c_daemon_free (d);
      return NULL;
    }
  d->om_id = p11c_bus_register_object (bus, P11C_DBUS_PATH, d->om->interfaces[0],
                                       p11c_dbus_method_call, p11c_dbus_get_property, d, error);
  if (d->om_id == 0)
    {
      p11c_daemon_free (d);
      return NULL;
    }
  p11c_engine_set_callbacks (engine, &engine_callbacks, d);
  for (guint i = 0; i < p11c_engine_get_tokens (engine)->len; i++)
    token_added (engine, p11c_engine_get_tokens (engine)->pdata[i], TRUE, d);
  d->expiring_sent = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  p11c_dbus_schedule_expiry (d);
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
    p11c_bus_unregister_object (d->bus, GPOINTER_TO_UINT (value));
  g_hash_table_iter_init (&iter, d->job_regs);
  while (g_hash_table_iter_next (&iter, &key, &value))
    p11c_bus_unregister_object (d->bus, GPOINTER_TO_UINT (value));
  if (d->manager_id)
    p11c_bus_unregister_object (d->bus, d->manager_id);
  if (d->om_id)
    p11c_bus_unregister_object (d->bus, d->om_id);
  g_hash_table_unref (d->token_regs);
  g_hash_table_unref (d->p11c_dbus_token_props);
  g_hash_table_unref (d->jobs);
  g_hash_table_unref (d->job_regs);
  g_hash_table_unref (d->p11c_dbus_job_props);
  g_hash_table_unref (d->list_cache);
  p11c_dbus_fast_path_free (d->fast);
  if (d->expiry_timer)
    g_source_remove (d->expiry_timer);
  g_clear_pointer (&d->expiring_sent, g_hash_table_unref);
  g_clear_pointer (&d->api, g_dbus_node_info_unref);
  g_clear_pointer (&d->om, g_dbus_node_info_unref);
  g_free (d);
}
