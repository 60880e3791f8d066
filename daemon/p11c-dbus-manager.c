/* org.p11certd1.Manager: parse the wire into typed parameters, call the
 * core, reply (ListCerts with its reply cache and warm path, ListTokens,
 * ListCas, CheckPin, GetCaCertificate, DeleteCert, Rescan, Enroll, Renew,
 * RenewDue) and the CertificateExpiring timer. */
#define G_LOG_DOMAIN "p11c-dbus"
#include "p11c-dbus-private.h"

/* ---- method handlers ---------------------------------------------------- */

/* @issued: sha256 → P11cIssued; @token: the info of the token @e is on,
 * NULL for the system store */
static GVariant *
cert_dict (P11cCertEntry *e, const P11cConfig *config, gint64 now, GHashTable *issued, const CK_TOKEN_INFO *token)
{
  g_autofree char *hex = p11c_id_to_hex (e->id);
  P11cCertSummary *s = e->summary;
  P11cWireCert w = {
    .uri = e->uri, .token = (char *) (e->token_id ? p11c_dbus_token_path_for_id (e->token_id) : "/"),
    .storage = e->storage, .label = e->label, .id = hex, .der = e->der, .has_private_key = e->has_private_key,
    .parsed = s != NULL, .error = e->error,
  };

  if (s != NULL)
    {
      const P11cIssued *rec = g_hash_table_lookup (issued, s->sha256);
      w.ca = (char *) (rec ? p11c_issued_ca_at (rec, e->uri, token) : NULL);   /* not on a copy */
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

static ListReply *
list_reply_ref (ListReply *lr)
{
  g_atomic_int_inc (&lr->ref);
  return lr;
}

void
p11c_dbus_list_reply_free (ListReply *lr)
{
  if (!g_atomic_int_dec_and_test (&lr->ref))
    return;
  g_clear_pointer (&lr->tokens, g_ptr_array_unref);
  g_clear_pointer (&lr->generations, g_array_unref);
  g_clear_pointer (&lr->reply, p11c_bus_reply_unref);
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

/* Everything @lr was built from is unchanged. */
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

static void
fast_entry_free (FastEntry *e)
{
  p11c_dbus_list_reply_free (e->lr);
  g_free (e);
}

FastPath *
p11c_dbus_fast_path_new (P11cEngine *engine)
{
  FastPath *fp = g_new0 (FastPath, 1);
  fp->engine = engine;
  fp->replies = g_hash_table_new_full (g_bytes_hash, g_bytes_equal, (GDestroyNotify) g_bytes_unref,
                                       (GDestroyNotify) fast_entry_free);
  return fp;
}

void
p11c_dbus_fast_path_free (FastPath *fp)
{
  g_hash_table_unref (fp->replies);
  g_free (fp);
}

/* Remember that @params, resolved when the token set was @token_set, were
 * answered with @lr. */
static void
fast_path_learn (FastPath *fp, GVariant *params, guint token_set, ListReply *lr)
{
  FastEntry *e = g_new0 (FastEntry, 1);

  e->lr = list_reply_ref (lr);
  e->token_set = token_set;
  if (g_hash_table_size (fp->replies) >= FAST_PATH_MAX)
    g_hash_table_remove_all (fp->replies);
  /* a copy: the call's arguments are wiped when it is freed */
  g_hash_table_replace (fp->replies, g_bytes_new (g_variant_get_data (params), g_variant_get_size (params)), e);
}

/* Answer @inv (TRUE) when it is a warm ListCerts from root */
gboolean
p11c_dbus_fast_path_answer (FastPath *fp, P11cInvocation *inv)
{
  const char *sender = p11c_invocation_get_sender (inv);
  GVariant *params = p11c_invocation_get_parameters (inv);
  g_autoptr(GBytes) key = NULL;
  FastEntry *e;
  guint uid;

  if (!g_str_equal (p11c_invocation_get_method_name (inv), "ListCerts")
      || g_strcmp0 (p11c_invocation_get_interface_name (inv), P11C_DBUS_MANAGER_IFACE) != 0
      || g_strcmp0 (p11c_invocation_get_object_path (inv), P11C_DBUS_PATH) != 0
      || sender == NULL || !p11c_auth_cached_uid (sender, &uid) || uid != 0)
    return FALSE;
  key = g_variant_get_data_as_bytes (params);
  e = g_hash_table_lookup (fp->replies, key);
  if (e == NULL || e->token_set != fp->token_set || !list_reply_current (fp->engine, e->lr))
    return FALSE;
  p11c_invocation_return_reply (inv, e->lr->reply);
  return TRUE;
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
    p11c_dbus_list_reply_free (b->lr);
  g_free (b);
}

static char *
list_cache_key (Call *c, const ListArgs *a)
{
  return g_strdup_printf ("%s|%c%c", a->named ? p11c_dbus_token_path (c->token) : "",
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
  issued = p11c_records_map (p11c_engine_get_records (c->d->engine));

  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; a->tokens && i < a->tokens->len; i++)
    {
      P11cToken *t = a->tokens->pdata[i];
      g_autoptr(GError) local = NULL;
      g_autoptr(GPtrArray) certs = p11c_token_list_certs (t, &local);
      CK_TOKEN_INFO info;

      if (certs == NULL)
        {
          /* one bad token must not hide the others; a named token fails */
          if (a->named)
            {
              g_variant_builder_clear (&b);
              p11c_dbus_list_reply_free (lr);
              g_propagate_error (error, g_steal_pointer (&local));
              return NULL;
            }
          g_warning ("Listing certificates on %s failed: %s", p11c_token_get_id (t), local->message);
          complete = FALSE;
          continue;
        }
      p11c_token_get_info (t, &info, NULL);
      for (guint j = 0; j < certs->len; j++)
        {
          P11cCertEntry *e = certs->pdata[j];
          g_variant_builder_add_value (&b, cert_dict (e, config, now, issued, &info));
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
          g_variant_builder_add_value (&b, cert_dict (e, config, now, issued, NULL));
          if (e->summary)
            lr->valid_until = MIN (lr->valid_until, cert_fields_change_at (e->summary, now, config->window_days));
        }
    }
  built = g_new0 (ListBuilt, 1);
  built->reply = g_variant_ref_sink (g_variant_new ("(aa{sv})", &b));
  if (complete)
    {
      lr->reply = p11c_bus_reply_new (built->reply);   /* walked once, here in the worker */
      built->lr = lr;
    }
  else
    p11c_dbus_list_reply_free (lr);
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
  p11c_dbus_call_reply_done (c, built ? g_steal_pointer (&built->reply) : NULL, error);
  if (built != NULL)
    list_built_free (built);
}

void
p11c_dbus_handle_list_certs (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  GError *error = NULL;
  P11cListParams params;
  const char *token_spec, *storage;
  ListArgs *a = p11c_dbus_call_set_args (c, g_new0 (ListArgs, 1), (GDestroyNotify) list_args_free);

  g_variant_get (c->params, "(@a{sv})", &options);
  if (!p11c_wire_list_from_variant (options, &params, &error))
    { p11c_dbus_call_fail (c, error); return; }
  token_spec = params.token;
  storage = params.storage;
  if (storage && !g_str_equal (storage, "token") && !g_str_equal (storage, "system")
      && !g_str_equal (storage, "file"))
    {
      g_set_error (&error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Key \"storage\" must be token, system or file, not \"%s\"", storage);
      p11c_list_params_clear (&params);
      { p11c_dbus_call_fail (c, error); return; }
    }
  if (token_spec != NULL)
    {
      P11cToken *t = p11c_dbus_resolve_token (c->d, token_spec, &error);
      if (t == NULL)
        {
          g_prefix_error (&error, "Key \"token\": ");
          p11c_list_params_clear (&params);
          { p11c_dbus_call_fail (c, error); return; }
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
  a->token_set = c->d->fast->token_set;
  {
    g_autofree char *key = list_cache_key (c, a);
    ListReply *lr = g_hash_table_lookup (c->d->list_cache, key);
    if (lr != NULL && list_reply_fresh (c->d, lr, a->tokens, a->system))
      {
        /* warm: the same immutable reply, answered right here */
        fast_path_learn (c->d->fast, c->params, a->token_set, lr);
        p11c_invocation_return_reply (g_steal_pointer (&c->inv), lr->reply);
        p11c_dbus_call_free (c);
        return;
      }
  }
  p11c_dbus_call_run (c, list_certs_work, (GDestroyNotify) list_built_free, list_certs_done);
}

void
p11c_dbus_handle_list_tokens (Call *c)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < p11c_engine_get_tokens (c->d->engine)->len; i++)
    g_variant_builder_add_value (&b, p11c_dbus_token_dict (p11c_engine_get_tokens (c->d->engine)->pdata[i]));
  p11c_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(aa{sv})", &b));
  p11c_dbus_call_free (c);
}

void
p11c_dbus_handle_list_cas (Call *c)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < p11c_engine_get_cas (c->d->engine)->len; i++)
    {
      P11cCaProfile *p = p11c_engine_get_cas (c->d->engine)->pdata[i];
      P11cWireCa w = {
        .name = p->name, .type = (char *) p11c_ca_type_to_string (p->type), .url = p->url, .label = p->label,
        .key_type = (char *) p11c_key_type_to_string (p->key_type), .needs_login = p->type == P11C_CA_EST,
        .needs_otp = p->type != P11C_CA_LOCAL,
        .otp_name = p->type == P11C_CA_SCEP ? "challenge password" : p->type == P11C_CA_EST ? "one-time password" : "",
        .is_default = g_strcmp0 (p->name, p11c_engine_get_config (c->d->engine)->default_ca) == 0,
      };
      g_variant_builder_add_value (&b, p11c_wire_ca_to_variant (&w));
    }
  p11c_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(aa{sv})", &b));
  p11c_dbus_call_free (c);
}

/* CheckPin: the rules a candidate PIN or password breaks, so clients name
 * each in their own words (nothing is sent to a token; the argument is
 * wiped with the call). */
void
p11c_dbus_handle_check_pin (Call *c)
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
  p11c_invocation_return_value (g_steal_pointer (&c->inv), g_variant_new ("(a{sv})", &b));
  p11c_dbus_call_free (c);
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
  return pem ? p11c_dbus_reply_take (g_variant_new ("(s)", pem)) : NULL;
}

void
p11c_dbus_handle_get_ca_certificate (Call *c)
{
  const char *name;
  g_variant_get (c->params, "(&s)", &name);
  p11c_dbus_call_set_args (c, g_strdup (name), g_free);
  p11c_dbus_call_in_thread (c, ca_certificate_work);
}

static GVariant *
delete_result_to_variant (const P11cDeleteResult *r)
{
  P11cWireDeleted w = {
    .removed = r->removed, .certificate = r->removed[0], .keys_removed = r->keys_removed,
    .keys_kept = r->keys_kept, .keys_shared_with = r->keys_shared_with,
  };
  return g_variant_new ("(@a{sv})", p11c_wire_deleted_to_variant (&w));
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
  return p11c_dbus_reply_take (delete_result_to_variant (result));
}

void
p11c_dbus_handle_delete_cert (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  const char *uri, *pin;
  GError *error = NULL;
  P11cOptions opts;
  P11cToken *t;
  DeleteArgs *a = p11c_dbus_call_set_args (c, g_new0 (DeleteArgs, 1), (GDestroyNotify) delete_args_free);

  g_variant_get (c->params, "(&s&s@a{sv})", &uri, &pin, &options);
  if (!p11c_wire_options_from_variant (options, TRUE, &opts, &error))
    { p11c_dbus_call_fail (c, error); return; }
  a->keep_key = opts.keep_key;
  c->changes_certs = TRUE;
  if (g_str_has_prefix (uri, "system:"))
    {
      /* the daemon's own store: no PIN, polkit (system.manage) decided */
      a->system_name = g_strdup (uri + strlen ("system:"));
      p11c_dbus_call_in_thread (c, delete_work);
      return;
    }
  a->pin = g_strdup (pin);
  a->uri = p11c_uri_parse (uri, &error);
  if (a->uri == NULL)
    { p11c_dbus_call_fail (c, error); return; }
  if (!p11c_secret_check (a->pin, "PIN", &error))
    { p11c_dbus_call_fail (c, error); return; }

  /* a certificate of a token that is not here is not found */
  t = p11c_engine_resolve_token_uri (c->d->engine, a->uri, uri, P11C_ERROR_NOT_FOUND, &error);
  if (t == NULL)
    { p11c_dbus_call_fail (c, error); return; }
  c->token = p11c_token_ref (t);
  p11c_dbus_call_in_thread (c, delete_work);
}

static void
rescan_done (P11cEngine *engine, gpointer data)
{
  Call *c = data;

  p11c_invocation_return_value (g_steal_pointer (&c->inv), NULL);
  p11c_dbus_call_free (c);
}

void
p11c_daemon_rescan (P11cDaemon *d)
{
  p11c_engine_rescan (d->engine, NULL, NULL);
}

void
p11c_dbus_handle_rescan (Call *c)
{
  /* folded into the running scan's next one: answered now */
  if (!p11c_engine_rescan (c->d->engine, rescan_done, c))
    {
      p11c_invocation_return_value (g_steal_pointer (&c->inv), NULL);
      p11c_dbus_call_free (c);
    }
}

void
p11c_dbus_handle_enroll (Call *c)
{
  g_autoptr(GVariant) request = NULL;
  GError *error = NULL;
  GUnixFDList *fds = p11c_invocation_get_fd_list (c->inv);
  P11cEnrollParams params;
  P11cEnrollRequest *req;
  P11cToken *token;
  P11cJob *job;
  int fd = -1;

  g_variant_get (c->params, "(@a{sv})", &request);
  if (!p11c_wire_enroll_from_variant (request, &params, &error))
    {
      p11c_dbus_call_fail (c, error);
      return;
    }
  if (params.has_fd && fds != NULL && params.fd_index >= 0 && params.fd_index < g_unix_fd_list_get_length (fds))
    fd = g_unix_fd_list_get (fds, params.fd_index, NULL);
  token = params.token && params.token[0] == '/' ? p11c_dbus_token_for_path (c->d, params.token) : NULL;
  req = p11c_enroll_request_new (c->d->engine, &params, token, fd, &error);
  p11c_enroll_params_clear (&params);
  if (req == NULL
      || (job = p11c_dbus_start_job (c->d, "enroll", req, c->uid, p11c_invocation_get_sender (c->inv), &error)) == NULL)
    {
      p11c_dbus_call_fail (c, error);
      return;
    }
  p11c_dbus_call_return_job (c, job);
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
      p11c_dbus_call_fail (c, error);
      return;
    }
  job = p11c_dbus_start_job (c->d, "renew", req, c->uid, p11c_invocation_get_sender (c->inv), &error);
  if (job == NULL)
    {
      p11c_dbus_call_fail (c, error);
      return;
    }
  p11c_dbus_call_return_job (c, job);
}

void
p11c_dbus_handle_renew (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  GError *error = NULL;
  P11cRenewParams params;
  const char *uri;
  RenewArgs *a = p11c_dbus_call_set_args (c, g_new0 (RenewArgs, 1), (GDestroyNotify) renew_args_free);

  g_variant_get (c->params, "(&s@a{sv})", &uri, &options);
  if (!p11c_wire_renew_from_variant (options, &params, &error))
    {
      p11c_dbus_call_fail (c, error);
      return;
    }
  a->uri = g_strdup (uri);
  a->pin = g_steal_pointer (&params.pin);
  a->rekey = params.rekey;
  p11c_renew_params_clear (&params);
  a->tokens = p11c_engine_tokens_snapshot (c->d->engine);
  p11c_dbus_call_run (c, renew_resolve_work, (GDestroyNotify) p11c_enroll_request_free, renew_resolved);
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
  const char *sender = p11c_invocation_get_sender (c->inv);
  g_autoptr(GPtrArray) jobs = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GPtrArray) person = g_ptr_array_new ();
  g_autoptr(GHashTable) reasons = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr(GHashTable) codes = g_hash_table_new (g_str_hash, g_str_equal);
  GHashTableIter iter;
  gpointer key, value;
  P11cWireDue due;

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
          g_ptr_array_add (jobs, g_steal_pointer (&running));
          p11c_enroll_request_free (req);
          continue;
        }
      job = p11c_dbus_start_job (c->d, "renew", req, c->uid, sender, &local);
      if (job != NULL)
        g_ptr_array_add (jobs, p11c_dbus_job_path (job));
      else
        g_warning ("Cannot start a renewal: %s", local->message);
    }
  for (guint i = 0; i < plan->needs_person->len; i++)
    {
      P11cNeedsPerson *n = plan->needs_person->pdata[i];
      P11cWireRenewalNeeded rn = { .uri = n->uri, .not_after = n->not_after, .subject = n->subject,
                                   .token = n->token ? (char *) p11c_dbus_token_path (n->token) : NULL,
                                   .ca = n->ca, .days_left = n->days_left, .reason = n->reason,
                                   .reason_code = (char *) n->reason_code };

      g_ptr_array_add (person, n->uri);
      g_hash_table_replace (reasons, n->uri, n->reason);
      g_hash_table_replace (codes, n->uri, (gpointer) n->reason_code);
      p11c_bus_emit_signal (c->d->bus, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, "RenewalNeeded",
                                     p11c_wire_renewal_needed_to_variant (&rn));
      p11c_log_event (G_LOG_LEVEL_MESSAGE, P11C_MSGID_NEEDS_PERSON, n->token ? p11c_token_get_id (n->token) : NULL, NULL,
                      n->subject, n->not_after, "Certificate %s is due for renewal and needs a person: %s",
                      n->uri, n->reason);
    }
  g_hash_table_iter_init (&iter, plan->why_not);
  while (g_hash_table_iter_next (&iter, &key, &value))
    g_hash_table_replace (reasons, key, value);
  g_hash_table_iter_init (&iter, plan->why_not_code);
  while (g_hash_table_iter_next (&iter, &key, &value))
    g_hash_table_replace (codes, key, value);
  g_ptr_array_add (jobs, NULL);
  g_ptr_array_add (person, NULL);
  g_ptr_array_add (plan->not_renewable, NULL);
  due = (P11cWireDue) {
    .jobs = (char **) jobs->pdata, .needs_person = (char **) person->pdata,
    .not_renewable = (char **) plan->not_renewable->pdata, .reasons = reasons, .reason_codes = codes,
  };
  p11c_invocation_return_value (g_steal_pointer (&c->inv),
                                         g_variant_new ("(@a{sv})", p11c_wire_due_to_variant (&due)));
  p11c_dbus_call_free (c);
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
      p11c_dbus_call_fail (c, error);
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

void
p11c_dbus_handle_renew_due (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  GError *error = NULL;
  P11cOptions opts;
  RenewArgs *a = p11c_dbus_call_set_args (c, g_new0 (RenewArgs, 1), (GDestroyNotify) renew_args_free);

  g_variant_get (c->params, "(@a{sv})", &options);
  if (!p11c_wire_options_from_variant (options, FALSE, &opts, &error))
    {
      p11c_dbus_call_fail (c, error);
      return;
    }
  a->tokens = p11c_engine_tokens_snapshot (c->d->engine);
  p11c_dbus_call_run (c, renew_due_work, (GDestroyNotify) p11c_due_plan_free, renew_due_planned);
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
  p11c_dbus_schedule_expiry (d);
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
      P11cWireExpiring ex = { .uri = e->uri, .not_after = e->summary->not_after };

      p11c_bus_emit_signal (d->bus, NULL, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE,
                                     "CertificateExpiring", p11c_wire_expiring_to_variant (&ex));
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
void
p11c_dbus_schedule_expiry (P11cDaemon *d)
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
