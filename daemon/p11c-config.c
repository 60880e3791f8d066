#define G_LOG_DOMAIN "p11c-config"
#include "p11c-config.h"
#include "p11c-error.h"
#include "p11c-est.h"
#include "p11c-names.h"
#include "p11c-uri.h"
#include <string.h>

void
p11c_config_free (P11cConfig *c)
{
  if (c == NULL)
    return;
  g_free (c->path);
  g_free (c->state_dir);
  g_free (c->ca_dir);
  g_free (c->default_ca);
  g_strfreev (c->modules);
  g_clear_pointer (&c->module_init_args, g_hash_table_unref);
  g_free (c);
}

static gboolean
get_uint (GKeyFile *kf, const char *group, const char *key, guint min, guint max,
          guint *out, GError **error)
{
  g_autoptr(GError) local = NULL;
  gint64 v;

  if (!g_key_file_has_key (kf, group, key, NULL))
    return TRUE;
  v = g_key_file_get_int64 (kf, group, key, &local);
  if (local != NULL || v < (gint64) min || v > (gint64) max)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "[%s] %s must be a whole number from %u to %u", group, key, min, max);
      return FALSE;
    }
  *out = (guint) v;
  return TRUE;
}

static gboolean
get_bool (GKeyFile *kf, const char *group, const char *key, gboolean *out, GError **error)
{
  g_autoptr(GError) local = NULL;
  gboolean v;

  if (!g_key_file_has_key (kf, group, key, NULL))
    return TRUE;
  v = g_key_file_get_boolean (kf, group, key, &local);
  if (local != NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "[%s] %s must be true or false", group, key);
      return FALSE;
    }
  *out = v;
  return TRUE;
}

static char *
get_string (GKeyFile *kf, const char *group, const char *key, const char *def)
{
  g_autofree char *v = g_key_file_get_string (kf, group, key, NULL);
  if (v != NULL)
    g_strstrip (v);
  if (v == NULL || v[0] == '\0')
    return g_strdup (def);
  return g_steal_pointer (&v);
}

const char *
p11c_config_module_init_args (const P11cConfig *c, const char *module)
{
  return c->module_init_args ? g_hash_table_lookup (c->module_init_args, module) : NULL;
}

#define MODULE_GROUP "module "

/* [module NAME] groups: NAME must be one of modules=, the one key is
 * init-args (kept verbatim: it is the module's own syntax). */
static gboolean
parse_module_groups (GKeyFile *kf, P11cConfig *c, GError **error)
{
  g_auto(GStrv) groups = g_key_file_get_groups (kf, NULL);

  c->module_init_args = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  for (char **g = groups; *g; g++)
    {
      const char *name = *g + strlen (MODULE_GROUP);
      g_auto(GStrv) keys = NULL;
      char *value;

      if (!g_str_has_prefix (*g, MODULE_GROUP))
        continue;
      if (!g_strv_contains ((const char *const *) c->modules, name))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "[%s]: \"%s\" is not one of [modules] modules=", *g, name);
          return FALSE;
        }
      keys = g_key_file_get_keys (kf, *g, NULL, NULL);
      for (char **k = keys; k && *k; k++)
        if (!g_str_equal (*k, "init-args"))
          {
            g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                         "[%s]: unknown key %s (the only key is init-args)", *g, *k);
            return FALSE;
          }
      value = g_key_file_get_value (kf, *g, "init-args", NULL);
      if (value != NULL && g_strstrip (value)[0] != '\0')
        g_hash_table_replace (c->module_init_args, g_strdup (name), value);
      else
        g_free (value);
    }
  return TRUE;
}

P11cConfig *
p11c_config_parse (const char *data, gsize len, const char *origin, GError **error)
{
  g_autoptr(GKeyFile) kf = g_key_file_new ();
  g_autoptr(P11cConfig) c = g_new0 (P11cConfig, 1);
  g_autoptr(GError) local = NULL;

  c->path = g_strdup (origin);
  p11c_pin_policy_init_default (&c->pin_policy);
  c->job_linger = 300;
  c->window_days = 30;
  c->warn_days = 14;

  if (data != NULL && !g_key_file_load_from_data (kf, data, len, G_KEY_FILE_NONE, &local))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "%s: %s",
                   origin ? origin : "config", local->message);
      return NULL;
    }

  c->state_dir = get_string (kf, "daemon", "state-dir", P11C_DEFAULT_STATE_DIR);
  c->ca_dir = get_string (kf, "daemon", "ca-dir", P11C_DEFAULT_CONFIG_DIR "/ca.d");
  c->default_ca = get_string (kf, "daemon", "default-ca", NULL);
  if (c->default_ca != NULL && !p11c_name_is_valid (c->default_ca))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "%s: [daemon] default-ca=%s is not a CA profile name (letters, digits, '.', '_', '-'; "
                   "the NAME of CA-DIR/NAME.conf)", origin ? origin : "config", c->default_ca);
      return NULL;
    }
  if (g_key_file_has_key (kf, "modules", "modules", NULL))
    {
      c->modules = g_key_file_get_string_list (kf, "modules", "modules", NULL, NULL);
      for (char **m = c->modules; m && *m; m++)
        g_strstrip (*m);
    }
  if (c->modules == NULL || c->modules[0] == NULL)
    {
      g_strfreev (c->modules);
      c->modules = g_new0 (char *, 2);
      c->modules[0] = g_strdup (P11C_DEFAULT_MODULE);
    }

  if (!parse_module_groups (kf, c, error)
      || !get_uint (kf, "daemon", "job-linger", 0, 86400, &c->job_linger, error)
      || !get_uint (kf, "pin-policy", "min-length", 1, P11C_SECRET_MAX, &c->pin_policy.min_length, error)
      || !get_bool (kf, "pin-policy", "require-digit", &c->pin_policy.require_digit, error)
      || !get_bool (kf, "pin-policy", "require-upper", &c->pin_policy.require_upper, error)
      || !get_bool (kf, "pin-policy", "require-lower", &c->pin_policy.require_lower, error)
      || !get_uint (kf, "renewal", "window-days", 0, 3650, &c->window_days, error)
      || !get_uint (kf, "renewal", "warn-days", 0, 3650, &c->warn_days, error))
    {
      g_prefix_error (error, "%s: ", origin ? origin : "config");
      return NULL;
    }
  return g_steal_pointer (&c);
}

P11cConfig *
p11c_config_load (const char *path, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr(GError) local = NULL;
  const char *file = path ? path : P11C_DEFAULT_CONFIG;

  if (!g_file_get_contents (file, &data, &len, &local))
    {
      if (path == NULL && g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return p11c_config_parse (NULL, 0, NULL, error);
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
                   "Cannot read the configuration %s: %s", file, local->message);
      return NULL;
    }
  return p11c_config_parse (data, len, file, error);
}

/* ---- CA profiles -------------------------------------------------------- */

gboolean
p11c_config_check_default_ca (const P11cConfig *c, GPtrArray *cas, GError **error)
{
  if (c->default_ca == NULL)
    return TRUE;
  for (guint i = 0; i < cas->len; i++)
    if (g_str_equal (((P11cCaProfile *) cas->pdata[i])->name, c->default_ca))
      return TRUE;
  g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
               "%s: [daemon] default-ca=%s names no CA profile (no usable %s/%s.conf); no profile is marked "
               "default", c->path ? c->path : "config", c->default_ca, c->ca_dir, c->default_ca);
  return FALSE;
}

gboolean
p11c_name_is_valid (const char *name)
{
  gsize len = name ? strlen (name) : 0;

  if (len == 0 || len > 64 || name[0] == '.')
    return FALSE;
  for (const char *p = name; *p; p++)
    if (!g_ascii_isalnum (*p) && *p != '.' && *p != '_' && *p != '-')
      return FALSE;
  return TRUE;
}

const char *
p11c_ca_type_to_string (P11cCaType type)
{
  return type == P11C_CA_EST ? "est" : type == P11C_CA_SCEP ? "scep" : "local";
}

void
p11c_ca_profile_free (P11cCaProfile *p)
{
  if (p == NULL)
    return;
  g_free (p->name);
  g_free (p->ca_fingerprint);
  g_free (p->url);
  g_free (p->label);
  g_free (p->trust_anchor);
  g_free (p->subject);
  g_free (p->pin_file);
  g_free (p->pin_file_token);
  g_free (p->system_group);
  g_free (p);
}

P11cCaProfile *
p11c_ca_profile_parse (const char *name, const char *data, gsize len, GError **error)
{
  g_autoptr(GKeyFile) kf = g_key_file_new ();
  g_autoptr(P11cCaProfile) p = g_new0 (P11cCaProfile, 1);
  g_autoptr(GError) local = NULL;
  g_autofree char *type = NULL;
  g_autofree char *key_type = NULL;

  if (!p11c_name_is_valid (name))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Invalid CA profile name");
      return NULL;
    }
  if (!g_key_file_load_from_data (kf, data, len, G_KEY_FILE_NONE, &local))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "CA profile %s: %s", name, local->message);
      return NULL;
    }
  p->name = g_strdup (name);
  type = get_string (kf, "ca", "type", "est");
  if (g_str_equal (type, "est"))
    p->type = P11C_CA_EST;
  else if (g_str_equal (type, "local"))
    p->type = P11C_CA_LOCAL;
  else if (g_str_equal (type, "scep"))
    p->type = P11C_CA_SCEP;
  else
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "CA profile %s: type must be est, scep or local, not \"%s\"", name, type);
      return NULL;
    }
  p->url = get_string (kf, "ca", "url", NULL);
  p->label = get_string (kf, "ca", "label", NULL);
  p->trust_anchor = get_string (kf, "ca", "trust-anchor", NULL);
  p->subject = get_string (kf, "ca", "subject", "CN=${login}");
  p->pin_file = get_string (kf, "ca", "pin-file", NULL);
  p->pin_file_token = get_string (kf, "ca", "pin-file-token", NULL);
  if (p->pin_file_token != NULL)
    {
      g_autoptr(P11cUri) uri = p11c_uri_parse (p->pin_file_token, &local);
      if (uri == NULL || (uri->token == NULL && uri->serial == NULL))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "CA profile %s: pin-file-token must be a PKCS#11 URI naming a token (token= or serial=): %s",
                       name, local ? local->message : p->pin_file_token);
          return NULL;
        }
      if (p->pin_file == NULL)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "CA profile %s: pin-file-token needs pin-file", name);
          return NULL;
        }
    }
  p->system_group = get_string (kf, "ca", "system-group", NULL);
  p->ca_fingerprint = get_string (kf, "ca", "ca-fingerprint", NULL);
  /* SCEP encrypts the CA's reply to the requester's key: RSA only */
  key_type = get_string (kf, "ca", "key-type", p->type == P11C_CA_SCEP ? "rsa-2048" : "ec-p256");
  if (!p11c_key_type_from_string (key_type, &p->key_type))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "CA profile %s: key-type must be ec-p256, ec-p384, rsa-2048 or rsa-3072", name);
      return NULL;
    }
  {
    g_autofree char *auth = get_string (kf, "ca", "http-auth", "auto");
    P11cEstAuth how;
    if (!p11c_est_auth_from_string (auth, &how))
      {
        g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                     "CA profile %s: http-auth must be auto, basic or digest, not \"%s\"", name, auth);
        return NULL;
      }
    p->http_auth = how;
  }
  p->write_chain = TRUE;
  p->connect_timeout = 10;
  p->timeout = 60;
  p->max_attempts = 3;
  p->retry_delay = 2;
  p->max_wait = 3600;
  p->validity_days = 365;
  p->poll_interval = 60;
  if (!get_bool (kf, "ca", "write-chain", &p->write_chain, error)
      || !get_uint (kf, "ca", "connect-timeout", 1, 600, &p->connect_timeout, error)
      || !get_uint (kf, "ca", "timeout", 1, 3600, &p->timeout, error)
      || !get_uint (kf, "ca", "max-attempts", 1, 10, &p->max_attempts, error)
      || !get_uint (kf, "ca", "retry-delay", 0, 600, &p->retry_delay, error)
      || !get_uint (kf, "ca", "max-wait", 0, 7 * 86400, &p->max_wait, error)
      || !get_uint (kf, "ca", "validity-days", 1, 3650, &p->validity_days, error)
      || !get_uint (kf, "ca", "poll-interval", 1, 86400, &p->poll_interval, error))
    {
      g_prefix_error (error, "CA profile %s: ", name);
      return NULL;
    }
  if (p->type == P11C_CA_EST)
    {
      if (p->url == NULL || !g_str_has_prefix (p->url, "https://"))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "CA profile %s: url must be an https:// URL", name);
          return NULL;
        }
      if (p->trust_anchor == NULL)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "CA profile %s: trust-anchor (the CA's certificate file) is required", name);
          return NULL;
        }
      if (p->label != NULL && !p11c_name_is_valid (p->label))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "CA profile %s: label may hold only letters, digits, '.', '_' and '-'", name);
          return NULL;
        }
    }
  if (p->type == P11C_CA_SCEP)
    {
      if (p->url == NULL || !(g_str_has_prefix (p->url, "http://") || g_str_has_prefix (p->url, "https://"))
          || strpbrk (p->url, "?#@") != NULL)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "CA profile %s: url must be the SCEP server's http:// or https:// URL "
                       "(e.g. http://ca.example.org/scep), without a query or user name", name);
          return NULL;
        }
      if (p->ca_fingerprint == NULL && p->trust_anchor == NULL)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "CA profile %s: a SCEP profile needs ca-fingerprint (SHA-256 of the CA "
                       "certificate) or trust-anchor (the CA's certificate file)", name);
          return NULL;
        }
      if (p->ca_fingerprint != NULL)
        {
          guint n = 0;
          for (const char *c = p->ca_fingerprint; *c; c++)
            if (g_ascii_isxdigit (*c))
              n++;
            else if (*c != ':' && *c != ' ')
              n = 1000;
          if (n != 64)
            {
              g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                           "CA profile %s: ca-fingerprint must be the 64 hex digits of a SHA-256 "
                           "fingerprint (':' allowed)", name);
              return NULL;
            }
        }
      if (p->key_type != P11C_KEY_RSA_2048 && p->key_type != P11C_KEY_RSA_3072)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "CA profile %s: key-type must be rsa-2048 or rsa-3072 for SCEP (the CA "
                       "encrypts its reply to the requester's key, which needs RSA)", name);
          return NULL;
        }
    }
  return g_steal_pointer (&p);
}

static gint
profile_cmp (gconstpointer a, gconstpointer b)
{
  const P11cCaProfile *pa = *(P11cCaProfile **) a, *pb = *(P11cCaProfile **) b;
  return g_strcmp0 (pa->name, pb->name);
}

GPtrArray *
p11c_ca_profiles_load (const char *dir)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_ca_profile_free);
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *entry;
  gboolean have_local = FALSE;

  while (d != NULL && (entry = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = NULL, *data = NULL, *name = NULL;
      g_autoptr(GError) error = NULL;
      P11cCaProfile *p;
      gsize len;

      if (!g_str_has_suffix (entry, ".conf"))
        continue;
      name = g_strndup (entry, strlen (entry) - 5);
      path = g_build_filename (dir, entry, NULL);
      if (!g_file_get_contents (path, &data, &len, &error)
          || (p = p11c_ca_profile_parse (name, data, len, &error)) == NULL)
        {
          g_warning ("Ignoring CA profile %s: %s", path, error->message);
          continue;
        }
      have_local |= g_str_equal (p->name, "local");
      g_ptr_array_add (out, p);
    }
  if (!have_local)
    {
      P11cCaProfile *p = p11c_ca_profile_parse ("local", "[ca]\ntype=local\n", -1, NULL);
      g_ptr_array_add (out, p);
    }
  g_ptr_array_sort (out, profile_cmp);
  return out;
}
