#define G_LOG_DOMAIN "p11c-vardict"
#include "p11c-vardict.h"
#include "p11c-error.h"
#include <string.h>

gboolean
p11c_vardict_validate (GVariant *dict, const P11cKeySpec *spec, GError **error)
{
  GVariantIter iter;
  const char *key;
  GVariant *value;

  if (dict == NULL || !g_variant_is_of_type (dict, G_VARIANT_TYPE_VARDICT))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Expected a dictionary a{sv}");
      return FALSE;
    }
  g_variant_iter_init (&iter, dict);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &value))
    {
      const P11cKeySpec *s = NULL;
      g_autoptr(GVariant) v = value;
      for (const P11cKeySpec *p = spec; p->key; p++)
        if (g_str_equal (p->key, key))
          s = p;
      if (s == NULL)
        {
          g_autofree char *safe = g_utf8_make_valid (key, MIN (strlen (key), 64));
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "Unknown key \"%s\"", safe);
          return FALSE;
        }
      if (!g_variant_is_of_type (v, G_VARIANT_TYPE (s->type)))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "Key \"%s\" must have type %s, not %s", key, s->type,
                       g_variant_get_type_string (v));
          return FALSE;
        }
      if (g_variant_is_of_type (v, G_VARIANT_TYPE_STRING))
        {
          gsize len;
          g_variant_get_string (v, &len);
          if (len > P11C_VARDICT_STRING_MAX)
            {
              g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                           "Key \"%s\" is too long (%zu bytes, at most %d)", key, len,
                           P11C_VARDICT_STRING_MAX);
              return FALSE;
            }
        }
    }
  for (const P11cKeySpec *p = spec; p->key; p++)
    {
      g_autoptr(GVariant) v = p->required ? g_variant_lookup_value (dict, p->key, NULL) : NULL;
      if (p->required && v == NULL)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "Missing required key \"%s\" (%s)", p->key, p->type);
          return FALSE;
        }
    }
  return TRUE;
}

const char *
p11c_vardict_get_string (GVariant *dict, const char *key, const char *def)
{
  const char *s;
  if (dict && g_variant_lookup (dict, key, "&s", &s))
    return s;
  return def;
}

gboolean
p11c_vardict_get_bool (GVariant *dict, const char *key, gboolean def)
{
  gboolean b;
  if (dict && g_variant_lookup (dict, key, "b", &b))
    return b;
  return def;
}

char *
p11c_vardict_dup_secret (GVariant *dict, const char *key)
{
  const char *s = p11c_vardict_get_string (dict, key, NULL);
  return s ? g_strdup (s) : NULL;
}
