#define G_LOG_DOMAIN "p11c-uri"
#include "p11c-uri.h"
#include "p11c-error.h"
#include <p11-kit/uri.h>
#include <string.h>

void
p11c_uri_free (P11cUri *uri)
{
  if (uri == NULL)
    return;
  g_free (uri->token);
  g_free (uri->manufacturer);
  g_free (uri->model);
  g_free (uri->serial);
  g_free (uri->object);
  g_clear_pointer (&uri->id, g_bytes_unref);
  g_free (uri);
}

char *
p11c_id_to_hex (GBytes *id)
{
  gsize len = 0;
  const guint8 *p = id ? g_bytes_get_data (id, &len) : NULL;
  GString *s = g_string_sized_new (2 * len + 1);

  for (gsize i = 0; i < len; i++)
    g_string_append_printf (s, "%02x", p[i]);
  return g_string_free (s, FALSE);
}

GBytes *
p11c_id_from_hex (const char *hex)
{
  gsize len = hex ? strlen (hex) : 0;
  guint8 *raw;

  if (hex == NULL || len % 2 != 0)
    return NULL;
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isxdigit (hex[i]))
      return NULL;
  raw = g_malloc0 (len / 2 + 1);
  for (gsize i = 0; i < len / 2; i++)
    raw[i] = (g_ascii_xdigit_value (hex[2 * i]) << 4) | g_ascii_xdigit_value (hex[2 * i + 1]);
  return g_bytes_new_take (raw, len / 2);
}

/* Length of a padded field: up to the first NUL, trailing blanks trimmed */
static gsize
padded_len (const CK_UTF8CHAR *s, gsize len)
{
  gsize n = strnlen ((const char *) s, len);

  while (n > 0 && s[n - 1] == ' ')
    n--;
  return n;
}

char *
p11c_padded_string (const CK_UTF8CHAR *s, gsize len)
{
  return g_utf8_make_valid ((const char *) s, padded_len (s, len));
}

/* The four fields that name a token, in identity order */
enum { ID_MANUFACTURER, ID_MODEL, ID_LABEL, ID_SERIAL, N_ID_FIELDS };

static void
id_fields (const CK_TOKEN_INFO *info, const CK_UTF8CHAR *f[N_ID_FIELDS], gsize len[N_ID_FIELDS])
{
  f[ID_MANUFACTURER] = info->manufacturerID; len[ID_MANUFACTURER] = sizeof info->manufacturerID;
  f[ID_MODEL] = info->model;                 len[ID_MODEL] = sizeof info->model;
  f[ID_LABEL] = info->label;                 len[ID_LABEL] = sizeof info->label;
  f[ID_SERIAL] = info->serialNumber;         len[ID_SERIAL] = sizeof info->serialNumber;
}

gboolean
p11c_token_info_same (const CK_TOKEN_INFO *a, const CK_TOKEN_INFO *b)
{
  const CK_UTF8CHAR *fa[N_ID_FIELDS], *fb[N_ID_FIELDS];
  gsize len[N_ID_FIELDS];

  id_fields (a, fa, len);
  id_fields (b, fb, len);
  for (int i = 0; i < N_ID_FIELDS; i++)
    {
      g_autofree char *x = p11c_padded_string (fa[i], len[i]);
      g_autofree char *y = p11c_padded_string (fb[i], len[i]);
      if (!g_str_equal (x, y))
        return FALSE;
    }
  return TRUE;
}

char *
p11c_token_identity_id (const CK_TOKEN_INFO *info)
{
  g_autoptr(GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  const CK_UTF8CHAR *f[N_ID_FIELDS];
  gsize len[N_ID_FIELDS];
  g_autofree char *serial = p11c_padded_string (info->serialNumber, sizeof info->serialNumber);
  GString *out = g_string_new (NULL);

  id_fields (info, f, len);
  for (int i = 0; i < N_ID_FIELDS; i++)
    {
      g_autofree char *v = p11c_padded_string (f[i], len[i]);
      g_checksum_update (sum, (const guchar *) v, strlen (v) + 1);
    }
  for (const char *p = serial[0] ? serial : "token"; *p; p++)
    g_string_append_c (out, g_ascii_isalnum (*p) ? *p : '_');
  g_string_append_printf (out, "_%.8s", g_checksum_get_string (sum));
  return g_string_free (out, FALSE);
}

static char *
token_field (const CK_UTF8CHAR *s, gsize len)
{
  gsize n = padded_len (s, len);
  if (n == 0)
    return NULL;   /* p11-kit leaves absent attributes blank */
  return g_strndup ((const char *) s, n);
}

P11cUri *
p11c_uri_parse (const char *string, GError **error)
{
  g_autoptr(P11cUri) out = g_new0 (P11cUri, 1);
  P11KitUri *uri;
  CK_TOKEN_INFO *ti;
  CK_ATTRIBUTE *attr;
  int rv;

  if (string == NULL || !g_str_has_prefix (string, "pkcs11:"))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Not a PKCS#11 URI (it must start with \"pkcs11:\")");
      return NULL;
    }
  if (strlen (string) > 4096)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "The PKCS#11 URI is too long");
      return NULL;
    }
  /* p11-kit cannot tell "token=%00" from no token attribute at all: a NUL
   * has no place in a label or serial, so refuse it (id= may hold any byte) */
  {
    g_auto(GStrv) attrs = g_strsplit_set (string + strlen ("pkcs11:"), ";?&", -1);
    for (char **a = attrs; *a; a++)
      if (!g_str_has_prefix (*a, "id=") && g_strstr_len (*a, -1, "%00") != NULL)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "Invalid PKCS#11 URI: a NUL character in \"%.*s\"", (int) strcspn (*a, "="), *a);
          return NULL;
        }
  }
  uri = p11_kit_uri_new ();
  rv = p11_kit_uri_parse (string, P11_KIT_URI_FOR_ANY, uri);
  if (rv != P11_KIT_URI_OK)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Invalid PKCS#11 URI: %s", p11_kit_uri_message (rv));
      p11_kit_uri_free (uri);
      return NULL;
    }
  if (p11_kit_uri_get_pin_value (uri) != NULL || p11_kit_uri_get_pin_source (uri) != NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The PKCS#11 URI carries a PIN; pass the PIN separately");
      p11_kit_uri_free (uri);
      return NULL;
    }

  ti = p11_kit_uri_get_token_info (uri);
  /* p11-kit leaves unset fields as all-zero */
  out->token = token_field (ti->label, sizeof ti->label);
  out->manufacturer = token_field (ti->manufacturerID, sizeof ti->manufacturerID);
  out->model = token_field (ti->model, sizeof ti->model);
  out->serial = token_field (ti->serialNumber, sizeof ti->serialNumber);

  attr = p11_kit_uri_get_attribute (uri, CKA_LABEL);
  if (attr && attr->pValue)
    out->object = g_strndup (attr->pValue, attr->ulValueLen);
  attr = p11_kit_uri_get_attribute (uri, CKA_ID);
  if (attr && attr->pValue)
    out->id = g_bytes_new (attr->pValue, attr->ulValueLen);
  attr = p11_kit_uri_get_attribute (uri, CKA_CLASS);
  if (attr && attr->pValue && attr->ulValueLen == sizeof (CK_OBJECT_CLASS))
    {
      CK_OBJECT_CLASS klass = *(CK_OBJECT_CLASS *) attr->pValue;
      out->type = klass == CKO_CERTIFICATE ? P11C_OBJECT_CERT
                : klass == CKO_PRIVATE_KEY ? P11C_OBJECT_PRIVATE
                : klass == CKO_PUBLIC_KEY ? P11C_OBJECT_PUBLIC
                : P11C_OBJECT_ANY;
    }
  p11_kit_uri_free (uri);
  return g_steal_pointer (&out);
}

gboolean
p11c_uri_matches_token (const P11cUri *uri, const CK_TOKEN_INFO *info)
{
  const char *want[N_ID_FIELDS] = { uri->manufacturer, uri->model, uri->token, uri->serial };
  const CK_UTF8CHAR *f[N_ID_FIELDS];
  gsize len[N_ID_FIELDS];

  id_fields (info, f, len);
  for (int i = 0; i < N_ID_FIELDS; i++)
    {
      g_autofree char *have = NULL;
      if (want[i] == NULL)
        continue;   /* absent attributes match */
      have = token_field (f[i], len[i]);
      if (g_strcmp0 (want[i], have ? have : "") != 0)
        return FALSE;
    }
  return TRUE;
}

static char *
format_uri (P11KitUri *uri, P11KitUriType type)
{
  char *s = NULL;
  if (p11_kit_uri_format (uri, type, &s) != P11_KIT_URI_OK)
    s = g_strdup ("pkcs11:");
  p11_kit_uri_free (uri);
  return s;
}

/* A NUL and what follows become blanks (the field is written trimmed) */
static void
blank_after_nul (CK_UTF8CHAR *s, gsize len)
{
  CK_UTF8CHAR *nul = memchr (s, '\0', len);
  if (nul != NULL)
    memset (nul, ' ', len - (gsize) (nul - s));
}

/* A field p11-kit leaves out of the URI: all zeros means "not set" */
static void
drop_if_nul_padded (CK_UTF8CHAR *s, gsize len)
{
  if (memchr (s, '\0', len) != NULL)
    memset (s, 0, len);
}

/* The token part of a URI: never a NUL (p11c_uri_parse refuses those, see
 * p11c-uri.h for why manufacturer and model are dropped instead) */
static void
set_token_info (P11KitUri *uri, const CK_TOKEN_INFO *info)
{
  CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info (uri);
  memcpy (ti, info, sizeof *info);
  drop_if_nul_padded (ti->manufacturerID, sizeof ti->manufacturerID);
  drop_if_nul_padded (ti->model, sizeof ti->model);
  blank_after_nul (ti->label, sizeof ti->label);
  blank_after_nul (ti->serialNumber, sizeof ti->serialNumber);
}

char *
p11c_uri_for_token (const CK_TOKEN_INFO *info)
{
  P11KitUri *uri = p11_kit_uri_new ();
  set_token_info (uri, info);
  return format_uri (uri, P11_KIT_URI_FOR_TOKEN);
}

char *
p11c_uri_for_object (const CK_TOKEN_INFO *info, P11cObjectType type,
                     const guint8 *id, gsize id_len, const char *label)
{
  P11KitUri *uri = p11_kit_uri_new ();
  CK_OBJECT_CLASS klass;
  CK_ATTRIBUTE a;

  set_token_info (uri, info);
  if (id != NULL && id_len > 0)
    {
      a.type = CKA_ID; a.pValue = (void *) id; a.ulValueLen = id_len;
      p11_kit_uri_set_attribute (uri, &a);
    }
  if (label != NULL && label[0] != '\0')
    {
      a.type = CKA_LABEL; a.pValue = (void *) label; a.ulValueLen = strlen (label);
      p11_kit_uri_set_attribute (uri, &a);
    }
  if (type != P11C_OBJECT_ANY)
    {
      klass = type == P11C_OBJECT_CERT ? CKO_CERTIFICATE
            : type == P11C_OBJECT_PRIVATE ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY;
      a.type = CKA_CLASS; a.pValue = &klass; a.ulValueLen = sizeof klass;
      p11_kit_uri_set_attribute (uri, &a);
    }
  return format_uri (uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN);
}
