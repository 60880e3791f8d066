#define G_LOG_DOMAIN "p11c-wire"
#include "p11c-wire.h"
#include "p11c-secret.h"
#include "p11c-vardict.h"
#include <gio/gio.h>
#include <string.h>

static void
add_string (GVariantBuilder *b, const char *key, const char *value)
{
  if (value != NULL)
    g_variant_builder_add (b, "{sv}", key, g_variant_new_string (value));
}

static void
add_bool (GVariantBuilder *b, const char *key, gboolean value)
{
  g_variant_builder_add (b, "{sv}", key, g_variant_new_boolean (value));
}

/* the string at @key, "" when absent */
static char *
lookup_string (GVariant *dict, const char *key)
{
  const char *v = NULL;
  return g_strdup (g_variant_lookup (dict, key, "&s", &v) ? v : "");
}

/* ---- Enroll ---------------------------------------------------------------- */

static const P11cKeySpec enroll_keys[] = {
  { P11C_KEY_CA, "s", TRUE }, { P11C_KEY_LOGIN, "s", FALSE }, { P11C_KEY_OTP, "s", FALSE },
  { P11C_KEY_STORAGE, "s", FALSE }, { P11C_KEY_TOKEN, "s", FALSE }, { P11C_KEY_PIN, "s", FALSE },
  { P11C_KEY_KEY_TYPE, "s", FALSE }, { P11C_KEY_SUBJECT, "s", FALSE }, { P11C_KEY_LABEL, "s", FALSE },
  { P11C_KEY_NAME, "s", FALSE }, { P11C_KEY_FD, "h", FALSE }, { P11C_KEY_PASSWORD, "s", FALSE },
  { P11C_KEY_ALLOW_INTERACTION, "b", FALSE }, { NULL },
};

static char *
dup_string (GVariant *dict, const char *key)
{
  return g_strdup (p11c_vardict_get_string (dict, key, NULL));
}

gboolean
p11c_wire_enroll_from_variant (GVariant *dict, P11cEnrollParams *out, GError **error)
{
  memset (out, 0, sizeof *out);
  if (!p11c_vardict_validate (dict, enroll_keys, error))
    return FALSE;
  out->ca = dup_string (dict, P11C_KEY_CA);
  out->storage = dup_string (dict, P11C_KEY_STORAGE);
  out->token = dup_string (dict, P11C_KEY_TOKEN);
  out->login = dup_string (dict, P11C_KEY_LOGIN);
  out->otp = p11c_vardict_dup_secret (dict, P11C_KEY_OTP);
  out->pin = p11c_vardict_dup_secret (dict, P11C_KEY_PIN);
  out->password = p11c_vardict_dup_secret (dict, P11C_KEY_PASSWORD);
  out->key_type = dup_string (dict, P11C_KEY_KEY_TYPE);
  out->subject = dup_string (dict, P11C_KEY_SUBJECT);
  out->label = dup_string (dict, P11C_KEY_LABEL);
  out->name = dup_string (dict, P11C_KEY_NAME);
  out->has_fd = g_variant_lookup (dict, P11C_KEY_FD, "h", &out->fd_index);
  out->allow_interaction = p11c_vardict_get_bool (dict, P11C_KEY_ALLOW_INTERACTION, FALSE);
  return TRUE;
}

GVariant *
p11c_wire_enroll_to_variant (const P11cEnrollParams *p)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  add_string (&b, P11C_KEY_CA, p->ca);
  add_string (&b, P11C_KEY_STORAGE, p->storage);
  add_string (&b, P11C_KEY_TOKEN, p->token);
  add_string (&b, P11C_KEY_LOGIN, p->login);
  add_string (&b, P11C_KEY_OTP, p->otp);
  add_string (&b, P11C_KEY_PIN, p->pin);
  add_string (&b, P11C_KEY_PASSWORD, p->password);
  add_string (&b, P11C_KEY_KEY_TYPE, p->key_type);
  add_string (&b, P11C_KEY_SUBJECT, p->subject);
  add_string (&b, P11C_KEY_LABEL, p->label);
  add_string (&b, P11C_KEY_NAME, p->name);
  if (p->has_fd)
    g_variant_builder_add (&b, "{sv}", P11C_KEY_FD, g_variant_new_handle (p->fd_index));
  if (p->allow_interaction)
    add_bool (&b, P11C_KEY_ALLOW_INTERACTION, TRUE);
  return g_variant_builder_end (&b);
}

void
p11c_enroll_params_clear (P11cEnrollParams *p)
{
  g_free (p->ca);
  g_free (p->storage);
  g_free (p->token);
  g_free (p->login);
  p11c_secret_free (p->otp);
  p11c_secret_free (p->pin);
  p11c_secret_free (p->password);
  g_free (p->key_type);
  g_free (p->subject);
  g_free (p->label);
  g_free (p->name);
  memset (p, 0, sizeof *p);
}

const char *
p11c_wire_enroll_peek_storage (GVariant *dict)
{
  return p11c_vardict_get_string (dict, P11C_KEY_STORAGE, "token");
}

const char *
p11c_wire_enroll_peek_ca (GVariant *dict)
{
  return p11c_vardict_get_string (dict, P11C_KEY_CA, "");
}

/* ---- Renew ------------------------------------------------------------------ */

static const P11cKeySpec renew_keys[] = {
  { P11C_KEY_PIN, "s", FALSE }, { P11C_KEY_REKEY, "b", FALSE }, { P11C_KEY_ALLOW_INTERACTION, "b", FALSE },
  { NULL },
};

gboolean
p11c_wire_renew_from_variant (GVariant *dict, P11cRenewParams *out, GError **error)
{
  memset (out, 0, sizeof *out);
  if (!p11c_vardict_validate (dict, renew_keys, error))
    return FALSE;
  out->pin = p11c_vardict_dup_secret (dict, P11C_KEY_PIN);
  out->rekey = p11c_vardict_get_bool (dict, P11C_KEY_REKEY, TRUE);
  out->allow_interaction = p11c_vardict_get_bool (dict, P11C_KEY_ALLOW_INTERACTION, FALSE);
  return TRUE;
}

GVariant *
p11c_wire_renew_to_variant (const P11cRenewParams *p)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  add_string (&b, P11C_KEY_PIN, p->pin);
  if (!p->rekey)
    add_bool (&b, P11C_KEY_REKEY, FALSE);
  if (p->allow_interaction)
    add_bool (&b, P11C_KEY_ALLOW_INTERACTION, TRUE);
  return g_variant_builder_end (&b);
}

void
p11c_renew_params_clear (P11cRenewParams *p)
{
  p11c_secret_free (p->pin);
  memset (p, 0, sizeof *p);
}

/* ---- ListCerts ---------------------------------------------------------------- */

static const P11cKeySpec list_keys[] = {
  { P11C_KEY_TOKEN, "s", FALSE }, { P11C_KEY_STORAGE, "s", FALSE }, { P11C_KEY_ALLOW_INTERACTION, "b", FALSE },
  { NULL },
};

gboolean
p11c_wire_list_from_variant (GVariant *dict, P11cListParams *out, GError **error)
{
  memset (out, 0, sizeof *out);
  if (!p11c_vardict_validate (dict, list_keys, error))
    return FALSE;
  out->token = dup_string (dict, P11C_KEY_TOKEN);
  out->storage = dup_string (dict, P11C_KEY_STORAGE);
  out->allow_interaction = p11c_vardict_get_bool (dict, P11C_KEY_ALLOW_INTERACTION, FALSE);
  return TRUE;
}

GVariant *
p11c_wire_list_to_variant (const P11cListParams *p)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  add_string (&b, P11C_KEY_TOKEN, p->token);
  add_string (&b, P11C_KEY_STORAGE, p->storage);
  if (p->allow_interaction)
    add_bool (&b, P11C_KEY_ALLOW_INTERACTION, TRUE);
  return g_variant_builder_end (&b);
}

void
p11c_list_params_clear (P11cListParams *p)
{
  g_free (p->token);
  g_free (p->storage);
  memset (p, 0, sizeof *p);
}

/* ---- options ---------------------------------------------------------------- */

static const P11cKeySpec options_keys[] = {
  { P11C_KEY_ALLOW_INTERACTION, "b", FALSE }, { NULL },
};
static const P11cKeySpec delete_keys[] = {
  { P11C_KEY_KEEP_KEY, "b", FALSE }, { P11C_KEY_ALLOW_INTERACTION, "b", FALSE }, { NULL },
};

gboolean
p11c_wire_options_from_variant (GVariant *dict, gboolean keep_key_allowed, P11cOptions *out, GError **error)
{
  memset (out, 0, sizeof *out);
  if (!p11c_vardict_validate (dict, keep_key_allowed ? delete_keys : options_keys, error))
    return FALSE;
  out->keep_key = p11c_vardict_get_bool (dict, P11C_KEY_KEEP_KEY, FALSE);
  out->allow_interaction = p11c_vardict_get_bool (dict, P11C_KEY_ALLOW_INTERACTION, FALSE);
  return TRUE;
}

GVariant *
p11c_wire_options_to_variant (const P11cOptions *o, gboolean keep_key_allowed)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  if (keep_key_allowed && o->keep_key)
    add_bool (&b, P11C_KEY_KEEP_KEY, TRUE);
  if (o->allow_interaction)
    add_bool (&b, P11C_KEY_ALLOW_INTERACTION, TRUE);
  return g_variant_builder_end (&b);
}

gboolean
p11c_wire_allow_interaction (GVariant *params)
{
  g_autoptr(GVariant) options = NULL;
  gsize n = g_variant_is_container (params) ? g_variant_n_children (params) : 0;

  if (n == 0)
    return FALSE;
  options = g_variant_get_child_value (params, n - 1);
  return g_variant_is_of_type (options, G_VARIANT_TYPE_VARDICT)
         && p11c_vardict_get_bool (options, P11C_KEY_ALLOW_INTERACTION, FALSE);
}

/* ---- certificates ------------------------------------------------------------ */

#define CERT_URI             "uri"
#define CERT_TOKEN           "token"
#define CERT_STORAGE         "storage"
#define CERT_LABEL           "label"
#define CERT_ID              "id"
#define CERT_DER             "der"
#define CERT_HAS_PRIVATE_KEY "has_private_key"
#define CERT_CA              "ca"
#define CERT_SUBJECT         "subject"
#define CERT_ISSUER          "issuer"
#define CERT_SERIAL          "serial"
#define CERT_NOT_BEFORE      "not_before"
#define CERT_NOT_AFTER       "not_after"
#define CERT_SHA256          "sha256"
#define CERT_KEY_TYPE        "key_type"
#define CERT_RENEWAL_DUE     "renewal_due"
#define CERT_DAYS_LEFT       "days_left"
#define CERT_ERROR           "error"

GVariant *
p11c_wire_cert_to_variant (const P11cWireCert *c)
{
  GVariantBuilder b;
  gsize der_len = 0;
  const guint8 *der = c->der ? g_bytes_get_data (c->der, &der_len) : NULL;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", CERT_URI, g_variant_new_string (c->uri ? c->uri : ""));
  g_variant_builder_add (&b, "{sv}", CERT_TOKEN, g_variant_new_object_path (c->token ? c->token : "/"));
  g_variant_builder_add (&b, "{sv}", CERT_STORAGE, g_variant_new_string (c->storage ? c->storage : ""));
  g_variant_builder_add (&b, "{sv}", CERT_LABEL, g_variant_new_string (c->label ? c->label : ""));
  g_variant_builder_add (&b, "{sv}", CERT_ID, g_variant_new_string (c->id ? c->id : ""));
  g_variant_builder_add (&b, "{sv}", CERT_DER,
                         g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, der ? der : (const guint8 *) "", der_len, 1));
  add_bool (&b, CERT_HAS_PRIVATE_KEY, c->has_private_key);
  if (!c->parsed)
    {
      add_string (&b, CERT_ERROR, c->error ? c->error : "invalid");
      return g_variant_builder_end (&b);
    }
  add_string (&b, CERT_CA, c->ca);
  add_string (&b, CERT_SUBJECT, c->subject ? c->subject : "");
  add_string (&b, CERT_ISSUER, c->issuer ? c->issuer : "");
  add_string (&b, CERT_SERIAL, c->serial ? c->serial : "");
  g_variant_builder_add (&b, "{sv}", CERT_NOT_BEFORE, g_variant_new_int64 (c->not_before));
  g_variant_builder_add (&b, "{sv}", CERT_NOT_AFTER, g_variant_new_int64 (c->not_after));
  add_string (&b, CERT_SHA256, c->sha256 ? c->sha256 : "");
  add_string (&b, CERT_KEY_TYPE, c->key_type ? c->key_type : "");
  add_bool (&b, CERT_RENEWAL_DUE, c->renewal_due);
  g_variant_builder_add (&b, "{sv}", CERT_DAYS_LEFT, g_variant_new_int64 (c->days_left));
  return g_variant_builder_end (&b);
}

static char *
lookup_dup (GVariant *dict, const char *key)
{
  const char *v = NULL;
  return g_variant_lookup (dict, key, "&s", &v) ? g_strdup (v) : NULL;
}

gboolean
p11c_wire_cert_from_variant (GVariant *dict, P11cWireCert *out, GError **error)
{
  g_autoptr(GVariant) der = NULL;
  const char *token = NULL;

  memset (out, 0, sizeof *out);
  if (!g_variant_is_of_type (dict, G_VARIANT_TYPE_VARDICT)
      || !g_variant_lookup (dict, CERT_URI, "&s", NULL))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "A certificate entry without a uri");
      return FALSE;
    }
  out->uri = lookup_dup (dict, CERT_URI);
  out->token = g_strdup (g_variant_lookup (dict, CERT_TOKEN, "&o", &token) ? token : "/");
  out->storage = lookup_dup (dict, CERT_STORAGE);
  out->label = lookup_dup (dict, CERT_LABEL);
  out->id = lookup_dup (dict, CERT_ID);
  der = g_variant_lookup_value (dict, CERT_DER, G_VARIANT_TYPE_BYTESTRING);
  out->der = der ? g_variant_get_data_as_bytes (der) : g_bytes_new (NULL, 0);
  g_variant_lookup (dict, CERT_HAS_PRIVATE_KEY, "b", &out->has_private_key);
  out->ca = lookup_dup (dict, CERT_CA);
  out->error = lookup_dup (dict, CERT_ERROR);
  out->parsed = g_variant_lookup (dict, CERT_NOT_AFTER, "x", &out->not_after);
  out->subject = lookup_dup (dict, CERT_SUBJECT);
  out->issuer = lookup_dup (dict, CERT_ISSUER);
  out->serial = lookup_dup (dict, CERT_SERIAL);
  g_variant_lookup (dict, CERT_NOT_BEFORE, "x", &out->not_before);
  out->sha256 = lookup_dup (dict, CERT_SHA256);
  out->key_type = lookup_dup (dict, CERT_KEY_TYPE);
  g_variant_lookup (dict, CERT_RENEWAL_DUE, "b", &out->renewal_due);
  g_variant_lookup (dict, CERT_DAYS_LEFT, "x", &out->days_left);
  return TRUE;
}

void
p11c_wire_cert_clear (P11cWireCert *c)
{
  g_free (c->uri);
  g_free (c->token);
  g_free (c->storage);
  g_free (c->label);
  g_free (c->id);
  g_clear_pointer (&c->der, g_bytes_unref);
  g_free (c->ca);
  g_free (c->subject);
  g_free (c->issuer);
  g_free (c->serial);
  g_free (c->sha256);
  g_free (c->key_type);
  g_free (c->error);
  memset (c, 0, sizeof *c);
}

/* ---- tokens ------------------------------------------------------------------ */

/* One table: the property name, its ListTokens key, where it lives */
typedef struct {
  const char *property;
  const char *key;
  gsize       offset;
  gboolean    is_bool;
} TokenField;

#define TF_S(prop, key, field) { prop, key, G_STRUCT_OFFSET (P11cWireToken, field), FALSE }
#define TF_B(prop, key, field) { prop, key, G_STRUCT_OFFSET (P11cWireToken, field), TRUE }
static const TokenField token_fields[] = {
  TF_S ("Label", "label", label), TF_S ("Serial", "serial", serial),
  TF_S ("Manufacturer", "manufacturer", manufacturer), TF_S ("Model", "model", model),
  TF_S ("Slot", "slot", slot), TF_S ("Uri", "uri", uri), TF_S ("Module", "module", module),
  TF_B ("Present", "present", present), TF_B ("LoginRequired", "login_required", login_required),
  TF_B ("PinCountLow", "pin_count_low", pin_count_low), TF_B ("PinFinalTry", "pin_final_try", pin_final_try),
  TF_B ("PinLocked", "pin_locked", pin_locked),
};

static void
token_fields_add (GVariantBuilder *b, const P11cWireToken *t, gboolean properties)
{
  for (gsize i = 0; i < G_N_ELEMENTS (token_fields); i++)
    {
      const TokenField *f = &token_fields[i];
      const char *key = properties ? f->property : f->key;
      if (f->is_bool)
        add_bool (b, key, G_STRUCT_MEMBER (gboolean, t, f->offset));
      else
        {
          const char *v = G_STRUCT_MEMBER (char *, t, f->offset);
          g_variant_builder_add (b, "{sv}", key, g_variant_new_string (v ? v : ""));
        }
    }
}

GVariant *
p11c_wire_token_props_to_variant (const P11cWireToken *t)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  token_fields_add (&b, t, TRUE);
  return g_variant_builder_end (&b);
}

GVariant *
p11c_wire_token_to_variant (const P11cWireToken *t)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "path", g_variant_new_object_path (t->path ? t->path : "/"));
  token_fields_add (&b, t, FALSE);
  return g_variant_builder_end (&b);
}

void
p11c_wire_token_from_variant (GVariant *dict, P11cWireToken *out)
{
  const char *path = NULL;

  memset (out, 0, sizeof *out);
  out->path = g_strdup (g_variant_lookup (dict, "path", "&o", &path) ? path : "/");
  for (gsize i = 0; i < G_N_ELEMENTS (token_fields); i++)
    {
      const TokenField *f = &token_fields[i];
      if (f->is_bool)
        g_variant_lookup (dict, f->key, "b", &G_STRUCT_MEMBER (gboolean, out, f->offset));
      else
        G_STRUCT_MEMBER (char *, out, f->offset) = lookup_string (dict, f->key);
    }
}

void
p11c_wire_token_clear (P11cWireToken *t)
{
  g_free (t->path);
  for (gsize i = 0; i < G_N_ELEMENTS (token_fields); i++)
    if (!token_fields[i].is_bool)
      g_free (G_STRUCT_MEMBER (char *, t, token_fields[i].offset));
  memset (t, 0, sizeof *t);
}

/* ---- CA profiles ----------------------------------------------------------------- */

GVariant *
p11c_wire_ca_to_variant (const P11cWireCa *ca)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "name", g_variant_new_string (ca->name ? ca->name : ""));
  g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string (ca->type ? ca->type : ""));
  g_variant_builder_add (&b, "{sv}", "url", g_variant_new_string (ca->url ? ca->url : ""));
  g_variant_builder_add (&b, "{sv}", "label", g_variant_new_string (ca->label ? ca->label : ""));
  g_variant_builder_add (&b, "{sv}", "key_type", g_variant_new_string (ca->key_type ? ca->key_type : ""));
  add_bool (&b, "needs_login", ca->needs_login);
  add_bool (&b, "needs_otp", ca->needs_otp);
  g_variant_builder_add (&b, "{sv}", "otp_name", g_variant_new_string (ca->otp_name ? ca->otp_name : ""));
  add_bool (&b, "default", ca->is_default);
  return g_variant_builder_end (&b);
}

void
p11c_wire_ca_from_variant (GVariant *dict, P11cWireCa *out)
{
  memset (out, 0, sizeof *out);
  out->name = lookup_string (dict, "name");
  out->type = lookup_string (dict, "type");
  out->url = lookup_string (dict, "url");
  out->label = lookup_string (dict, "label");
  out->key_type = lookup_string (dict, "key_type");
  g_variant_lookup (dict, "needs_login", "b", &out->needs_login);
  g_variant_lookup (dict, "needs_otp", "b", &out->needs_otp);
  out->otp_name = lookup_string (dict, "otp_name");
  g_variant_lookup (dict, "default", "b", &out->is_default);
}

void
p11c_wire_ca_clear (P11cWireCa *ca)
{
  g_free (ca->name);
  g_free (ca->type);
  g_free (ca->url);
  g_free (ca->label);
  g_free (ca->key_type);
  g_free (ca->otp_name);
  memset (ca, 0, sizeof *ca);
}

/* ---- DeleteCert's result ---------------------------------------------------------- */

GVariant *
p11c_wire_deleted_to_variant (const P11cWireDeleted *d)
{
  const char *const none[] = { NULL };
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "removed",
                         g_variant_new_strv (d->removed ? (const char *const *) d->removed : none, -1));
  g_variant_builder_add (&b, "{sv}", "certificate", g_variant_new_string (d->certificate ? d->certificate : ""));
  g_variant_builder_add (&b, "{sv}", "keys_removed", g_variant_new_uint32 (d->keys_removed));
  add_string (&b, "keys_kept", d->keys_kept);
  if (d->keys_shared_with > 0)
    g_variant_builder_add (&b, "{sv}", "keys_shared_with", g_variant_new_uint32 (d->keys_shared_with));
  return g_variant_builder_end (&b);
}

void
p11c_wire_deleted_from_variant (GVariant *dict, P11cWireDeleted *out)
{
  memset (out, 0, sizeof *out);
  if (!g_variant_lookup (dict, "removed", "^as", &out->removed))
    out->removed = g_new0 (char *, 1);
  out->certificate = lookup_dup (dict, "certificate");
  g_variant_lookup (dict, "keys_removed", "u", &out->keys_removed);
  out->keys_kept = lookup_dup (dict, "keys_kept");
  g_variant_lookup (dict, "keys_shared_with", "u", &out->keys_shared_with);
}

void
p11c_wire_deleted_clear (P11cWireDeleted *d)
{
  g_strfreev (d->removed);
  g_free (d->certificate);
  g_free (d->keys_kept);
  memset (d, 0, sizeof *d);
}

/* ---- RenewDue's result ------------------------------------------------------------- */

static GVariant *
strv_value (char **v)
{
  const char *const none[] = { NULL };
  return g_variant_new_strv (v ? (const char *const *) v : none, -1);
}

static GVariant *
map_value (GHashTable *map)
{
  GVariantBuilder b;
  GHashTableIter iter;
  gpointer key, value;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{ss}"));
  if (map != NULL)
    {
      g_hash_table_iter_init (&iter, map);
      while (g_hash_table_iter_next (&iter, &key, &value))
        g_variant_builder_add (&b, "{ss}", key, value);
    }
  return g_variant_builder_end (&b);
}

GVariant *
p11c_wire_due_to_variant (const P11cWireDue *due)
{
  GVariantBuilder b;
  g_autoptr(GPtrArray) paths = g_ptr_array_new ();

  for (char **p = due->jobs; p && *p; p++)
    g_ptr_array_add (paths, g_variant_new_object_path (*p));
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "jobs",
                         g_variant_new_array (G_VARIANT_TYPE_OBJECT_PATH, (GVariant **) paths->pdata, paths->len));
  g_variant_builder_add (&b, "{sv}", "needs_person", strv_value (due->needs_person));
  g_variant_builder_add (&b, "{sv}", "not_renewable", strv_value (due->not_renewable));
  g_variant_builder_add (&b, "{sv}", "reasons", map_value (due->reasons));
  g_variant_builder_add (&b, "{sv}", "reason_codes", map_value (due->reason_codes));
  return g_variant_builder_end (&b);
}

static GHashTable *
lookup_map (GVariant *dict, const char *key)
{
  GHashTable *map = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_autoptr(GVariant) v = g_variant_lookup_value (dict, key, G_VARIANT_TYPE ("a{ss}"));
  GVariantIter iter;
  const char *k, *val;

  if (v != NULL)
    {
      g_variant_iter_init (&iter, v);
      while (g_variant_iter_next (&iter, "{&s&s}", &k, &val))
        g_hash_table_replace (map, g_strdup (k), g_strdup (val));
    }
  return map;
}

void
p11c_wire_due_from_variant (GVariant *dict, P11cWireDue *out)
{
  memset (out, 0, sizeof *out);
  if (!g_variant_lookup (dict, "jobs", "^ao", &out->jobs))
    out->jobs = g_new0 (char *, 1);
  if (!g_variant_lookup (dict, "needs_person", "^as", &out->needs_person))
    out->needs_person = g_new0 (char *, 1);
  if (!g_variant_lookup (dict, "not_renewable", "^as", &out->not_renewable))
    out->not_renewable = g_new0 (char *, 1);
  out->reasons = lookup_map (dict, "reasons");
  out->reason_codes = lookup_map (dict, "reason_codes");
}

void
p11c_wire_due_clear (P11cWireDue *due)
{
  g_strfreev (due->jobs);
  g_strfreev (due->needs_person);
  g_strfreev (due->not_renewable);
  g_clear_pointer (&due->reasons, g_hash_table_unref);
  g_clear_pointer (&due->reason_codes, g_hash_table_unref);
  memset (due, 0, sizeof *due);
}

/* ---- Manager signals ----------------------------------------------------------- */

static const char *
or_empty (const char *s)
{
  return s ? s : "";
}

GVariant *
p11c_wire_token_event_info (const P11cWireTokenEvent *ev)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  if (ev->recognized)
    {
      g_variant_builder_add (&b, "{sv}", "label", g_variant_new_string (or_empty (ev->label)));
      g_variant_builder_add (&b, "{sv}", "serial", g_variant_new_string (or_empty (ev->serial)));
      g_variant_builder_add (&b, "{sv}", "manufacturer", g_variant_new_string (or_empty (ev->manufacturer)));
      g_variant_builder_add (&b, "{sv}", "uri", g_variant_new_string (or_empty (ev->uri)));
    }
  g_variant_builder_add (&b, "{sv}", "reader", g_variant_new_string (or_empty (ev->reader)));
  add_bool (&b, "recognized", ev->recognized);
  add_string (&b, "atr", ev->atr);
  return g_variant_builder_end (&b);
}

GVariant *
p11c_wire_token_event_to_variant (const P11cWireTokenEvent *ev)
{
  return g_variant_new ("(o@a{sv})", ev->token ? ev->token : "/", p11c_wire_token_event_info (ev));
}

gboolean
p11c_wire_token_event_from_variant (GVariant *params, P11cWireTokenEvent *out)
{
  g_autoptr(GVariant) info = NULL;

  memset (out, 0, sizeof *out);
  if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(oa{sv})")))
    return FALSE;
  g_variant_get (params, "(o@a{sv})", &out->token, &info);
  g_variant_lookup (info, "recognized", "b", &out->recognized);
  out->label = lookup_dup (info, "label");
  out->serial = lookup_dup (info, "serial");
  out->manufacturer = lookup_dup (info, "manufacturer");
  out->uri = lookup_dup (info, "uri");
  out->reader = lookup_string (info, "reader");
  out->atr = lookup_dup (info, "atr");
  return TRUE;
}

void
p11c_wire_token_event_clear (P11cWireTokenEvent *ev)
{
  g_free (ev->token);
  g_free (ev->label);
  g_free (ev->serial);
  g_free (ev->manufacturer);
  g_free (ev->uri);
  g_free (ev->reader);
  g_free (ev->atr);
  memset (ev, 0, sizeof *ev);
}

GVariant *
p11c_wire_card_event_to_variant (const P11cWireCardEvent *ev)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  add_string (&b, "atr", ev->atr);
  return g_variant_new ("(s@a{sv})", or_empty (ev->reader), g_variant_builder_end (&b));
}

gboolean
p11c_wire_card_event_from_variant (GVariant *params, P11cWireCardEvent *out)
{
  g_autoptr(GVariant) info = NULL;

  memset (out, 0, sizeof *out);
  if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(sa{sv})")))
    return FALSE;
  g_variant_get (params, "(s@a{sv})", &out->reader, &info);
  out->atr = lookup_dup (info, "atr");
  return TRUE;
}

void
p11c_wire_card_event_clear (P11cWireCardEvent *ev)
{
  g_free (ev->reader);
  g_free (ev->atr);
  memset (ev, 0, sizeof *ev);
}

GVariant *
p11c_wire_renewal_needed_info (const P11cWireRenewalNeeded *rn)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "subject", g_variant_new_string (or_empty (rn->subject)));
  if (rn->token != NULL)
    g_variant_builder_add (&b, "{sv}", "token", g_variant_new_object_path (rn->token));
  g_variant_builder_add (&b, "{sv}", "ca", g_variant_new_string (or_empty (rn->ca)));
  g_variant_builder_add (&b, "{sv}", "days_left", g_variant_new_int64 (rn->days_left));
  g_variant_builder_add (&b, "{sv}", "reason", g_variant_new_string (or_empty (rn->reason)));
  g_variant_builder_add (&b, "{sv}", "reason_code", g_variant_new_string (or_empty (rn->reason_code)));
  return g_variant_builder_end (&b);
}

GVariant *
p11c_wire_renewal_needed_to_variant (const P11cWireRenewalNeeded *rn)
{
  return g_variant_new ("(sx@a{sv})", or_empty (rn->uri), rn->not_after, p11c_wire_renewal_needed_info (rn));
}

gboolean
p11c_wire_renewal_needed_from_variant (GVariant *params, P11cWireRenewalNeeded *out)
{
  g_autoptr(GVariant) info = NULL;
  const char *token = NULL;

  memset (out, 0, sizeof *out);
  if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(sxa{sv})")))
    return FALSE;
  g_variant_get (params, "(sx@a{sv})", &out->uri, &out->not_after, &info);
  out->subject = lookup_string (info, "subject");
  if (g_variant_lookup (info, "token", "&o", &token))
    out->token = g_strdup (token);
  out->ca = lookup_string (info, "ca");
  g_variant_lookup (info, "days_left", "x", &out->days_left);
  out->reason = lookup_string (info, "reason");
  out->reason_code = lookup_string (info, "reason_code");
  return TRUE;
}

void
p11c_wire_renewal_needed_clear (P11cWireRenewalNeeded *rn)
{
  g_free (rn->uri);
  g_free (rn->subject);
  g_free (rn->token);
  g_free (rn->ca);
  g_free (rn->reason);
  g_free (rn->reason_code);
  memset (rn, 0, sizeof *rn);
}

GVariant *
p11c_wire_expiring_to_variant (const P11cWireExpiring *ex)
{
  return g_variant_new ("(sx)", or_empty (ex->uri), ex->not_after);
}

gboolean
p11c_wire_expiring_from_variant (GVariant *params, P11cWireExpiring *out)
{
  memset (out, 0, sizeof *out);
  if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(sx)")))
    return FALSE;
  g_variant_get (params, "(sx)", &out->uri, &out->not_after);
  return TRUE;
}

void
p11c_wire_expiring_clear (P11cWireExpiring *ex)
{
  g_free (ex->uri);
  memset (ex, 0, sizeof *ex);
}

/* ---- Job properties ---------------------------------------------------------- */

GVariant *
p11c_wire_job_to_variant (const P11cWireJob *j)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", P11C_JOB_OPERATION, g_variant_new_string (j->operation ? j->operation : ""));
  g_variant_builder_add (&b, "{sv}", P11C_JOB_STATE, g_variant_new_string (j->state ? j->state : ""));
  g_variant_builder_add (&b, "{sv}", P11C_JOB_PROGRESS, g_variant_new_double (j->progress));
  g_variant_builder_add (&b, "{sv}", P11C_JOB_ATTEMPT, g_variant_new_uint32 (j->attempt));
  g_variant_builder_add (&b, "{sv}", P11C_JOB_RETRY_AT, g_variant_new_int64 (j->retry_at));
  g_variant_builder_add (&b, "{sv}", P11C_JOB_ERROR, g_variant_new_string (j->error ? j->error : ""));
  g_variant_builder_add (&b, "{sv}", P11C_JOB_ERROR_MESSAGE,
                         g_variant_new_string (j->error_message ? j->error_message : ""));
  g_variant_builder_add (&b, "{sv}", P11C_JOB_ERROR_DETAILS,
                         j->error_details ? j->error_details : g_variant_new_array (G_VARIANT_TYPE ("{sv}"), NULL, 0));
  g_variant_builder_add (&b, "{sv}", P11C_JOB_RESULT, g_variant_new_string (j->result ? j->result : ""));
  g_variant_builder_add (&b, "{sv}", P11C_JOB_OWNER, g_variant_new_uint32 (j->owner));
  return g_variant_builder_end (&b);
}

static void
update_string (char **field, GVariant *dict, const char *key)
{
  const char *v;
  if (g_variant_lookup (dict, key, "&s", &v))
    {
      g_free (*field);
      *field = g_strdup (v);
    }
}

void
p11c_wire_job_update (P11cWireJob *j, GVariant *changed)
{
  GVariant *details;

  update_string (&j->operation, changed, P11C_JOB_OPERATION);
  update_string (&j->state, changed, P11C_JOB_STATE);
  g_variant_lookup (changed, P11C_JOB_PROGRESS, "d", &j->progress);
  g_variant_lookup (changed, P11C_JOB_ATTEMPT, "u", &j->attempt);
  g_variant_lookup (changed, P11C_JOB_RETRY_AT, "x", &j->retry_at);
  update_string (&j->error, changed, P11C_JOB_ERROR);
  update_string (&j->error_message, changed, P11C_JOB_ERROR_MESSAGE);
  details = g_variant_lookup_value (changed, P11C_JOB_ERROR_DETAILS, G_VARIANT_TYPE_VARDICT);
  if (details != NULL)
    {
      g_clear_pointer (&j->error_details, g_variant_unref);
      j->error_details = details;
    }
  update_string (&j->result, changed, P11C_JOB_RESULT);
  g_variant_lookup (changed, P11C_JOB_OWNER, "u", &j->owner);
}

void
p11c_wire_job_from_variant (GVariant *props, P11cWireJob *out)
{
  memset (out, 0, sizeof *out);
  out->operation = g_strdup ("");
  out->state = g_strdup ("");
  out->error = g_strdup ("");
  out->error_message = g_strdup ("");
  out->result = g_strdup ("");
  p11c_wire_job_update (out, props);
  if (out->error_details == NULL)
    out->error_details = g_variant_ref_sink (g_variant_new_array (G_VARIANT_TYPE ("{sv}"), NULL, 0));
}

void
p11c_wire_job_clear (P11cWireJob *j)
{
  g_free (j->operation);
  g_free (j->state);
  g_free (j->error);
  g_free (j->error_message);
  g_clear_pointer (&j->error_details, g_variant_unref);
  g_free (j->result);
  memset (j, 0, sizeof *j);
}

gboolean
p11c_wire_job_property_is_public (const char *name)
{
  static const char *const public_props[] = {
    P11C_JOB_OPERATION, P11C_JOB_STATE, P11C_JOB_PROGRESS, P11C_JOB_ATTEMPT, P11C_JOB_RETRY_AT, NULL,
  };
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
p11c_wire_job_split_props (GVariant *props, GVariant **public_part, GVariant **private_part)
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
      gboolean is_public = p11c_wire_job_property_is_public (key);
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
