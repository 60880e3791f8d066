#include "p11c-uri.h"
#include "p11c-error.h"
#include <string.h>

static void
fill (CK_TOKEN_INFO *info, const char *label, const char *serial)
{
  memset (info, ' ', sizeof *info);
  memcpy (info->label, label, strlen (label));
  memcpy (info->serialNumber, serial, strlen (serial));
  memcpy (info->manufacturerID, "SafeNet, Inc.", 13);
  memcpy (info->model, "eToken", 6);
}

static void
test_roundtrip (void)
{
  CK_TOKEN_INFO info;
  const guint8 id[] = { 0x01, 0xab, 0x00, 0xff };
  g_autofree char *s = NULL;
  g_autoptr(P11cUri) u = NULL;

  fill (&info, "My Token;=%", "0123ABCD");
  s = p11c_uri_for_object (&info, P11C_OBJECT_CERT, id, sizeof id, "agent cert / 2026");
  g_assert_true (g_str_has_prefix (s, "pkcs11:"));
  g_assert_nonnull (strstr (s, "type=cert"));
  g_test_message ("%s", s);
  g_assert_nonnull (g_strrstr (s, "id=%01%AB%00%FF") ? s : strstr (s, "id=%01%ab%00%ff"));
  u = p11c_uri_parse (s, NULL);
  g_assert_nonnull (u);
  g_assert_cmpstr (u->token, ==, "My Token;=%");
  g_assert_cmpstr (u->serial, ==, "0123ABCD");
  g_assert_cmpstr (u->object, ==, "agent cert / 2026");
  g_assert_cmpint (u->type, ==, P11C_OBJECT_CERT);
  g_assert_cmpmem (g_bytes_get_data (u->id, NULL), g_bytes_get_size (u->id), id, sizeof id);
  g_assert_true (p11c_uri_matches_token (u, &info));
  fill (&info, "My Token;=%", "OTHER");
  g_assert_false (p11c_uri_matches_token (u, &info));
}

static void
test_partial_matches (void)
{
  CK_TOKEN_INFO info;
  g_autoptr(P11cUri) u = p11c_uri_parse ("pkcs11:token=demo", NULL);

  fill (&info, "demo", "1");
  g_assert_nonnull (u);
  g_assert_null (u->serial);
  g_assert_null (u->id);
  g_assert_true (p11c_uri_matches_token (u, &info));
  fill (&info, "demo2", "1");
  g_assert_false (p11c_uri_matches_token (u, &info));
}

static void
test_bad (void)
{
  const char *bad[] = { "", "http://x", "pkcs11:token=%zz", "pkcs11:id=%0", "pkcs11:token=a;pin-value=1234",
                        "pkcs11:token=a?pin-source=file:/etc/shadow",
                        "pkcs11:token=%00", "pkcs11:serial=%00;token=x", NULL };
  for (const char **b = bad; *b; b++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(P11cUri) u = p11c_uri_parse (*b, &error);
      g_test_message ("%s → %s", *b, error ? error->message : "parsed");
      g_assert_null (u);
      g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
    }
}

static void
test_padded (void)
{
  CK_UTF8CHAR s[8] = { 'a', 'b', ' ', ' ', ' ', ' ', ' ', ' ' };
  g_autofree char *out = p11c_padded_string (s, sizeof s);
  CK_UTF8CHAR bad[4] = { 'a', 0xff, ' ', ' ' };
  g_autofree char *out2 = p11c_padded_string (bad, sizeof bad);
  g_assert_cmpstr (out, ==, "ab");
  g_assert_true (g_utf8_validate (out2, -1, NULL));
}

/* tpm2-pkcs11: the model padded with NUL bytes, serial all zeros.  Every
 * URI built from what the module reports parses back, names the token, and
 * leaves the NUL-padded model out (p11-kit would compare it with its NULs). */
static void
test_nul_padded_token (void)
{
  CK_TOKEN_INFO info, other;
  const guint8 id[] = { 0x42 };
  g_autofree char *tok = NULL, *obj = NULL;
  g_autoptr(P11cUri) u = NULL;
  g_autoptr(P11cUri) v = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *id1 = NULL, *id2 = NULL, *model = NULL;

  fill (&info, "tpm", "0000000000000000");
  memset (info.model, 0, sizeof info.model);
  memcpy (info.model, "SW   TPM", 8);
  memcpy (info.manufacturerID, "IBM", 3);
  /* a NUL ends the field: what follows is not part of it */
  memcpy (info.label + 3, "\0junk", 5);

  tok = p11c_uri_for_token (&info);
  obj = p11c_uri_for_object (&info, P11C_OBJECT_CERT, id, sizeof id, "c");
  g_test_message ("%s", obj);
  g_assert_null (strstr (obj, "%00"));
  g_assert_null (strstr (obj, "model="));
  u = p11c_uri_parse (tok, &error);
  g_assert_no_error (error);
  v = p11c_uri_parse (obj, &error);
  g_assert_no_error (error);
  g_assert_null (v->model);
  g_assert_cmpstr (v->token, ==, "tpm");
  g_assert_cmpstr (v->serial, ==, "0000000000000000");
  g_assert_true (p11c_uri_matches_token (u, &info));
  g_assert_true (p11c_uri_matches_token (v, &info));
  model = p11c_padded_string (info.model, sizeof info.model);
  g_assert_cmpstr (model, ==, "SW   TPM");

  /* the same token whether padded with NULs or blanks */
  other = info;
  memset (other.model, ' ', sizeof other.model);
  memcpy (other.model, "SW   TPM", 8);
  memset (other.label, ' ', sizeof other.label);
  memcpy (other.label, "tpm", 3);
  g_assert_true (p11c_token_info_same (&info, &other));
  g_assert_true (p11c_uri_matches_token (u, &other));
  id1 = p11c_token_identity_id (&info);
  id2 = p11c_token_identity_id (&other);
  g_assert_cmpstr (id1, ==, id2);
  g_assert_true (g_str_has_prefix (id1, "0000000000000000_"));
  for (const char *p = id1; *p; p++)
    g_assert_true (g_ascii_isalnum (*p) || *p == '_');

  /* identity is not the serial alone: same serial, another label or model */
  fill (&other, "tpm2", "0000000000000000");
  memcpy (other.manufacturerID, info.manufacturerID, sizeof info.manufacturerID);
  memcpy (other.model, info.model, sizeof info.model);
  g_assert_false (p11c_token_info_same (&info, &other));
  g_clear_pointer (&id2, g_free);
  id2 = p11c_token_identity_id (&other);
  g_assert_cmpstr (id1, !=, id2);
  other = info;
  memcpy (other.model, "other", 5);
  g_assert_false (p11c_token_info_same (&info, &other));
  other = info;
  memcpy (other.manufacturerID, "XYZ", 3);
  g_assert_false (p11c_token_info_same (&info, &other));
  g_assert_false (p11c_uri_matches_token (v, &other));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/uri/roundtrip", test_roundtrip);
  g_test_add_func ("/uri/partial", test_partial_matches);
  g_test_add_func ("/uri/bad", test_bad);
  g_test_add_func ("/uri/padded", test_padded);
  g_test_add_func ("/uri/nul-padded-token", test_nul_padded_token);
  return g_test_run ();
}
