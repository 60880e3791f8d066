#define G_LOG_DOMAIN "p11c-secret"
#include "p11c-secret.h"
#include "p11c-error.h"
#include "p11c-names.h"
#include <string.h>

void
p11c_memwipe (void *p, gsize n)
{
  if (p != NULL && n > 0)
    explicit_bzero (p, n);
}

void
p11c_variant_wipe (GVariant *v)
{
  if (v == NULL)
    return;
  if (g_variant_is_of_type (v, G_VARIANT_TYPE_STRING))
    {
      gsize len;
      const char *s = g_variant_get_string (v, &len);
      p11c_memwipe ((void *) s, len);
      return;
    }
  if (g_variant_is_container (v))
    for (gsize i = 0; i < g_variant_n_children (v); i++)
      {
        g_autoptr(GVariant) child = g_variant_get_child_value (v, i);
        p11c_variant_wipe (child);
      }
}

void
p11c_secret_free (char *secret)
{
  if (secret == NULL)
    return;
  p11c_memwipe (secret, strlen (secret));
  g_free (secret);
}

void
p11c_secret_clear (char **secret)
{
  if (secret != NULL)
    {
      p11c_secret_free (*secret);
      *secret = NULL;
    }
}

gboolean
p11c_secret_check (const char *secret, const char *what, GError **error)
{
  gsize len;

  if (secret == NULL || secret[0] == '\0')
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The %s is empty: enter the %s", what, what);
      return FALSE;
    }
  len = strlen (secret);
  if (len > P11C_SECRET_MAX)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The %s is too long (%zu bytes, at most %d)", what, len,
                   P11C_SECRET_MAX);
      return FALSE;
    }
  if (!g_utf8_validate (secret, len, NULL))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The %s is not valid UTF-8 text", what);
      return FALSE;
    }
  if (strpbrk (secret, "\r\n") != NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The %s contains a line break", what);
      return FALSE;
    }
  return TRUE;
}
