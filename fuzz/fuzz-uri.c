/* fuzz-uri: PKCS#11 URIs (RFC 7512) as D-Bus callers and the CLI pass them.
 * p11c_uri_parse on the input as a C string; when it parses, match it
 * against a fixed token and check the object URI round trip
 * (parse → p11c_uri_for_object → parse gives the same object). */
#include "fuzz-common.h"
#include "p11c-uri.h"

P11C_FUZZ_INITIALIZE

static void
pad (CK_UTF8CHAR *field, gsize size, const char *value)
{
  gsize n = value ? MIN (strlen (value), size) : 0;
  memset (field, ' ', size);
  if (n)
    memcpy (field, value, n);
}

static gboolean
str_equal_or_empty (const char *a, const char *b)
{
  return g_strcmp0 (a && *a ? a : NULL, b && *b ? b : NULL) == 0;
}

static gboolean
bytes_equal_or_empty (GBytes *a, GBytes *b)
{
  gsize la = a ? g_bytes_get_size (a) : 0, lb = b ? g_bytes_get_size (b) : 0;
  if (la != lb)
    return FALSE;
  return la == 0 || memcmp (g_bytes_get_data (a, NULL), g_bytes_get_data (b, NULL), la) == 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *s = p11c_fuzz_strndup (data, size);
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cUri) uri = NULL;
  g_autoptr(P11cUri) again = NULL;
  g_autofree char *formatted = NULL;
  g_autofree char *token_uri = NULL;
  CK_TOKEN_INFO info;
  const guint8 *id = NULL;
  gsize id_len = 0;

  uri = p11c_uri_parse (s, &error);
  if (uri == NULL)
    {
      P11C_FUZZ_ASSERT (error != NULL && error->message != NULL);
      return 0;
    }
  P11C_FUZZ_ASSERT (error == NULL);

  /* a fixed token, and the token the URI names (so both outcomes run) */
  memset (&info, 0, sizeof info);
  pad (info.label, sizeof info.label, "p11certd test token");
  pad (info.manufacturerID, sizeof info.manufacturerID, "OpenSC Project");
  pad (info.model, sizeof info.model, "PKCS#15 emulated");
  pad (info.serialNumber, sizeof info.serialNumber, "0123456789abcdef");
  info.flags = CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | CKF_LOGIN_REQUIRED;
  (void) p11c_uri_matches_token (uri, &info);

  pad (info.label, sizeof info.label, uri->token);
  pad (info.manufacturerID, sizeof info.manufacturerID, uri->manufacturer);
  pad (info.model, sizeof info.model, uri->model);
  pad (info.serialNumber, sizeof info.serialNumber, uri->serial);
  token_uri = p11c_uri_for_token (&info);
  P11C_FUZZ_ASSERT (token_uri != NULL && g_str_has_prefix (token_uri, "pkcs11:"));

  if (uri->id)
    id = g_bytes_get_data (uri->id, &id_len);
  formatted = p11c_uri_for_object (&info, uri->type, id, id_len, uri->object);
  P11C_FUZZ_ASSERT (formatted != NULL);
  again = p11c_uri_parse (formatted, NULL);
  if (again == NULL)
    {
      /* only a URI longer than the parser's limit may fail to come back */
      P11C_FUZZ_ASSERT (strlen (formatted) > 4096);
      return 0;
    }
  P11C_FUZZ_ASSERT (str_equal_or_empty (uri->object, again->object));
  P11C_FUZZ_ASSERT (bytes_equal_or_empty (uri->id, again->id));
  P11C_FUZZ_ASSERT (uri->type == again->type);
  P11C_FUZZ_ASSERT (p11c_uri_matches_token (again, &info));
  return 0;
}
