#define G_LOG_DOMAIN "p11c-wire"
#include "p11c-wire.h"
#include "p11c-secret.h"
#include "p11c-vardict.h"
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

static char *
lookup_string (GVariant *dict, const char *key)
{
  const char *v = NULL;
  return g_strdup (g_variant_lookup (dict, key, "&s", &v) ? v : "");
}

void
p11c_wire_job_from_variant (GVariant *props, P11cWireJob *out)
{
  memset (out, 0, sizeof *out);
  out->operation = lookup_string (props, P11C_JOB_OPERATION);
  out->state = lookup_string (props, P11C_JOB_STATE);
  g_variant_lookup (props, P11C_JOB_PROGRESS, "d", &out->progress);
  g_variant_lookup (props, P11C_JOB_ATTEMPT, "u", &out->attempt);
  g_variant_lookup (props, P11C_JOB_RETRY_AT, "x", &out->retry_at);
  out->error = lookup_string (props, P11C_JOB_ERROR);
  out->error_message = lookup_string (props, P11C_JOB_ERROR_MESSAGE);
  out->error_details = g_variant_lookup_value (props, P11C_JOB_ERROR_DETAILS, G_VARIANT_TYPE_VARDICT);
  if (out->error_details == NULL)
    out->error_details = g_variant_ref_sink (g_variant_new_array (G_VARIANT_TYPE ("{sv}"), NULL, 0));
  out->result = lookup_string (props, P11C_JOB_RESULT);
  g_variant_lookup (props, P11C_JOB_OWNER, "u", &out->owner);
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
