/* fuzz-est-certs: the body of an EST /cacerts or /simpleenroll reply
 * (base64 or PEM of a certs-only PKCS#7), as p11c_est_parse_certs_only
 * gets it from the network.  Invariants: an error is always CA_BAD_REPLY
 * with a message; a success is a non-empty stack of certificates that
 * survives a re-encode → parse round trip with the same count. */
#include "fuzz-common.h"
#include "p11c-est.h"
#include "p11c-error.h"
#include <openssl/err.h>

P11C_FUZZ_INITIALIZE

static char *
reencode (P11cX509Stack *certs)
{
  g_autoptr(PKCS7) p7 = PKCS7_new ();
  unsigned char *der = NULL;
  char *b64;
  int len;

  if (p7 == NULL || !PKCS7_set_type (p7, NID_pkcs7_signed) ||
      !PKCS7_content_new (p7, NID_pkcs7_data))
    return NULL;
  for (int i = 0; i < sk_X509_num (certs); i++)
    if (!PKCS7_add_certificate (p7, sk_X509_value (certs, i)))
      return NULL;
  len = i2d_PKCS7 (p7, &der);
  if (len <= 0)
    return NULL;
  b64 = g_base64_encode (der, (gsize) len);
  OPENSSL_free (der);
  return b64;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cX509Stack) certs = NULL;
  g_autoptr(P11cX509Stack) again = NULL;
  g_autofree char *b64 = NULL;

  /* exactly the bytes, not NUL-terminated: the parser must respect len */
  certs = p11c_est_parse_certs_only ((const char *) data, size, &error);
  if (certs == NULL)
    {
      P11C_FUZZ_ASSERT (error != NULL && error->message != NULL);
      P11C_FUZZ_ASSERT (error->domain == P11C_ERROR);
      P11C_FUZZ_ASSERT (error->code == P11C_ERROR_CA_BAD_REPLY || error->code == P11C_ERROR_FAILED);
      ERR_clear_error ();
      return 0;
    }
  P11C_FUZZ_ASSERT (error == NULL);
  P11C_FUZZ_ASSERT (sk_X509_num (certs) > 0);
  for (int i = 0; i < sk_X509_num (certs); i++)
    P11C_FUZZ_ASSERT (sk_X509_value (certs, i) != NULL);

  b64 = reencode (certs);
  if (b64 != NULL)
    {
      again = p11c_est_parse_certs_only (b64, strlen (b64), NULL);
      P11C_FUZZ_ASSERT (again != NULL);
      P11C_FUZZ_ASSERT (sk_X509_num (again) == sk_X509_num (certs));
    }
  ERR_clear_error ();
  return 0;
}
