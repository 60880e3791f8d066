#include "p11c-cert.h"
#include "p11c-error.h"
#include "test-util.h"
#include <openssl/pem.h>
#include <string.h>

static X509 *
make_cert (const char *cn, gint64 not_before, gint64 not_after, const char *curve_or_rsa)
{
  return p11c_test_make_cert (cn, not_before, not_after, curve_or_rsa, NULL);
}

static void
test_summary (void)
{
  g_autoptr(X509) c = make_cert ("Агент 42", 1700000000, 1800000000, "P-256");
  unsigned char *der = NULL;
  int len = i2d_X509 (c, &der);
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cCertSummary) s = p11c_cert_summary_from_der (der, len, &error);
  g_autofree char *sha = p11c_sha256_hex (der, len);

  g_assert_no_error (error);
  g_assert_cmpstr (s->subject, ==, "O=Shop\\, Ltd,CN=Агент 42");
  g_assert_cmpstr (s->issuer, ==, s->subject);
  g_assert_cmpstr (s->serial, ==, "1234");
  g_assert_cmpint (s->not_before, ==, 1700000000);
  g_assert_cmpint (s->not_after, ==, 1800000000);
  g_assert_cmpstr (s->sha256, ==, sha);
  g_assert_cmpstr (s->key_type, ==, "ec-p256");
  OPENSSL_free (der);
}

static void
test_key_types (void)
{
  g_autoptr(X509) rsa = make_cert ("r", 0, 1, "rsa");
  g_autoptr(X509) p384 = make_cert ("e", 0, 1, "P-384");
  g_autoptr(P11cCertSummary) a = p11c_cert_summary_from_x509 (rsa);
  g_autoptr(P11cCertSummary) b = p11c_cert_summary_from_x509 (p384);
  g_assert_cmpstr (a->key_type, ==, "rsa-2048");
  g_assert_cmpstr (b->key_type, ==, "ec-p384");
}

static void
test_garbage (void)
{
  const guint8 junk[] = { 0x30, 0x03, 0x01, 0x01, 0xff };
  g_autoptr(GError) e1 = NULL;
  g_autoptr(GError) e2 = NULL;
  g_assert_null (p11c_cert_summary_from_der (junk, sizeof junk, &e1));
  g_assert_error (e1, P11C_ERROR, P11C_ERROR_FAILED);
  g_assert_null (p11c_cert_summary_from_der (NULL, 0, &e2));
}

static void
test_trailing_bytes (void)
{
  g_autoptr(X509) c = make_cert ("t", 0, 1, "P-256");
  unsigned char *der = NULL;
  int len = i2d_X509 (c, &der);
  guint8 *longer = g_malloc (len + 3);
  g_autoptr(GError) error = NULL;

  memcpy (longer, der, len);
  memset (longer + len, 0, 3);
  g_assert_null (p11c_cert_summary_from_der (longer, len + 3, &error));
  g_free (longer);
  OPENSSL_free (der);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/cert/summary", test_summary);
  g_test_add_func ("/cert/key-types", test_key_types);
  g_test_add_func ("/cert/garbage", test_garbage);
  g_test_add_func ("/cert/trailing-bytes", test_trailing_bytes);
  return g_test_run ();
}
