#define G_LOG_DOMAIN "p11c-cert"
#include "p11c-cert.h"
#include "p11c-error.h"
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/sha.h>

void
p11c_x509_stack_free (P11cX509Stack *sk)
{
  sk_X509_pop_free (sk, X509_free);
}

char *
p11c_openssl_error_string (void)
{
  GString *s = g_string_new (NULL);
  unsigned long e;
  char buf[256];

  while ((e = ERR_get_error ()) != 0)
    {
      ERR_error_string_n (e, buf, sizeof buf);
      if (s->len)
        g_string_append (s, "; ");
      g_string_append (s, buf);
    }
  if (s->len == 0)
    g_string_append (s, "no details");
  return g_string_free (s, FALSE);
}

void
p11c_cert_summary_free (P11cCertSummary *s)
{
  if (s == NULL)
    return;
  g_free (s->subject);
  g_free (s->issuer);
  g_free (s->serial);
  g_free (s->sha256);
  g_free (s->key_type);
  g_free (s);
}

char *
p11c_sha256_hex (const guint8 *data, gsize len)
{
  return g_compute_checksum_for_data (G_CHECKSUM_SHA256, data, len);
}

static char *
name_oneline (const X509_NAME *name)
{
  g_autoptr(BIO) bio = BIO_new (BIO_s_mem ());
  char *data = NULL;
  long n;

  if (X509_NAME_print_ex (bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0)
    return g_strdup ("");
  n = BIO_get_mem_data (bio, &data);
  /* an empty name (allowed with subjectAltName) prints nothing and leaves
   * data NULL: g_strndup (NULL, 0) would return NULL, not "" */
  if (data == NULL || n <= 0)
    return g_strdup ("");
  return g_strndup (data, n);
}

static gint64
asn1_time_to_unix (const ASN1_TIME *t)
{
  struct tm tm = { 0 };

  if (t == NULL || !ASN1_TIME_to_tm (t, &tm))
    return 0;
  return (gint64) timegm (&tm);
}

char *
p11c_pkey_type_name (EVP_PKEY *pkey)
{
  if (pkey == NULL)
    return g_strdup ("unknown");
  switch (EVP_PKEY_get_base_id (pkey))
    {
    case EVP_PKEY_EC:
      {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param (pkey, OSSL_PKEY_PARAM_GROUP_NAME,
                                            group, sizeof group, &glen))
          {
            if (g_str_equal (group, "prime256v1") || g_str_equal (group, "P-256"))
              return g_strdup ("ec-p256");
            if (g_str_equal (group, "secp384r1") || g_str_equal (group, "P-384"))
              return g_strdup ("ec-p384");
            return g_strdup_printf ("ec-%s", group);
          }
        return g_strdup ("ec");
      }
    case EVP_PKEY_RSA:
      return g_strdup_printf ("rsa-%d", EVP_PKEY_get_bits (pkey));
    default:
      return g_strdup (OBJ_nid2sn (EVP_PKEY_get_base_id (pkey)));
    }
}

P11cCertSummary *
p11c_cert_summary_from_x509 (X509 *cert)
{
  P11cCertSummary *s = g_new0 (P11cCertSummary, 1);
  g_autoptr(BIGNUM) bn = ASN1_INTEGER_to_BN (X509_get0_serialNumber (cert), NULL);
  unsigned char *der = NULL;
  int len;

  s->subject = name_oneline (X509_get_subject_name (cert));
  s->issuer = name_oneline (X509_get_issuer_name (cert));
  if (bn != NULL)
    {
      char *hex = BN_bn2hex (bn);
      s->serial = g_strdup (hex);
      OPENSSL_free (hex);
    }
  else
    s->serial = g_strdup ("");
  s->not_before = asn1_time_to_unix (X509_get0_notBefore (cert));
  s->not_after = asn1_time_to_unix (X509_get0_notAfter (cert));
  len = i2d_X509 (cert, &der);
  s->sha256 = len > 0 ? p11c_sha256_hex (der, len) : g_strdup ("");
  OPENSSL_free (der);
  s->key_type = p11c_pkey_type_name (X509_get0_pubkey (cert));
  return s;
}

P11cCertSummary *
p11c_cert_summary_from_der (const guint8 *der, gsize len, GError **error)
{
  const unsigned char *p = der;
  g_autoptr(X509) cert = NULL;

  if (der == NULL || len == 0 || len > G_MAXINT)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "The certificate is empty");
      return NULL;
    }
  cert = d2i_X509 (NULL, &p, (long) len);
  if (cert == NULL || p != der + len)
    {
      ERR_clear_error ();
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED,
                   "The certificate value is not a valid DER X.509 certificate");
      return NULL;
    }
  return p11c_cert_summary_from_x509 (cert);
}
