/* fuzz-scep-reply: a SCEP CertRep (DER) as p11c_scep_parse_reply gets it
 * from the network, and the same bytes as a GetCACaps body.
 *
 * To reach past the signature check, the fuzzer plays a client that trusts
 * the certificates the input itself carries (as if they were the CA's) and
 * expects the transaction id and nonce the input names; the requester is a
 * fixed RSA key (below), so the seeds in corpus/scep-reply — made by
 * tests/scep/scepserver.py for this key — decrypt (AES and DES replies).
 * Invariants: FALSE comes with a P11C_ERROR that has a message; TRUE with a
 * certificate for the requester's key, or none (PENDING). */
#include "fuzz-common.h"
#include "p11c-error.h"
#include "p11c-scep.h"
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

static const char requester_key_pem[] =
  "-----BEGIN PRIVATE KEY-----\n"
  "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCplTmJJ0R/IT8E\n"
  "noKNXWgbcpO7ML3YUQ9uvkV2m06iBwImpteymjCwZxHLdNrWUujR7Hvg66/qZfdw\n"
  "vxlZExq/zVTdJa8ks/Ug2nWTOwqm+n8Bba6i2YCYGCnLzHLXaH6pjxurGnMDfbGo\n"
  "p9kAMpL8gZZw3EAz00nnVcIlLGdjDbaf6nmitkhCj/JEypJOxQPyn5LqV64BlysY\n"
  "p2G31bh0s8L3PLHq+dRjHj88/yxbq6gpHRCTQ1dreaCWhjeA+rEBid4x8BihPjHb\n"
  "oaCCW/k1ZO6Cr0NEpLsyRlSqpH6P7rI3hoHwZIgzpmr0hgsw+EbQ03YWmzzDzoFK\n"
  "Q1OsuNIDAgMBAAECggEAEcnT67WhQz6fCCKCaka6hWqK4Y9W0qqKFmFCExNud6OJ\n"
  "j7lfld4DrnVZUgCzddjjkCWgxvKiFNHWV07MX2IYI7drp/jsesqfs28G90cxsltD\n"
  "WEiDkZSEHzAlrjmHcF4HL00SJ2wSVXLpYFoe8pzbez4ypCsOVwFaVrhRsamLPMIH\n"
  "R4F6fLMu1bP7Opj3C0N2D7sYtJWKhR4Wd/5M/sW43gn2GNDdwHRzcPCkgZzai9J3\n"
  "q/H8LrWtMEBtGu6gbFr0zozjaZ009vWyadw/ounc+5oP1+l+M2k7emp1GSQKPFZi\n"
  "q9dwvT2WwLVA9FcvOuobxUc/+CoRQjk0fotulRzs3QKBgQDS0LjB6y4tSQ9TZ1O+\n"
  "u5+wsAujZA8yJydrWEslkgagBTzFS9l7hHIh001Y7fD8GK0u0N9hnK+OtR0Kvwz7\n"
  "zJmAFANpVQjc8NLqBpQD8BzEeeYqdOYWAj8uI3i7LSbq+ZHu1Y9q+pOQmmmeZT7j\n"
  "awwJnm/g6Tb+OT0XCx6xUHzZhwKBgQDN7hyVsUAjuuRLIU55ADgGmKZtXgS99yAN\n"
  "4D7aj1rivt1pcpluGSPFNDkwjdO8YsIqYerSXsvLnqLXl7Fp60GDZL0kuW24GUJ4\n"
  "pokYs6G5zro9GbVchPIFWmadSPDpF8N8o3ux7INOKxpKf6trPyRZ9931r4DnExG2\n"
  "0csWkCnypQKBgHqNH3qLjxKAUEp53LMaOyDpljprpnHPVRkQAM9cbkGECenfyBQH\n"
  "0JldTq+N0vOaHMMEZXdHML9TBgkDOzb9n5ZXDAylhDt8PAATxuPrJ64H9wdjYYYV\n"
  "1EisEjktbFxYrL8covzbogED4rZTwRVPW3YUBpHGwVNUTvEgY71MPuftAoGASi8i\n"
  "GwbsfTKhdTM9areadz3cjn+VI733zSfgXKnR6ucpKgh/nzrtOOh0RbqB8VZ+bfgy\n"
  "OLCvp92w+guKfQaj5iqPPMCT9wMagA42SzDC7QW876/oNrkp2qXTW4vgRYgrAyZ9\n"
  "s/3o22sJoJbXcN4hQUvaqNwdiqDC++Id0DYE9oUCgYEAyf81ucJvZtH/jg30kZJm\n"
  "0uoy2v5nxNKwzVzmmFwOOf9wA27XXL9N/dig3ZYJ0hoGtX7cw+hLVoqr929aR2id\n"
  "7ei6AON2vpfrqu9MJTWpYwH9Jcjpx3CdM+7o2XxE2ZbPL/JJ8k/B1AS92WntcySt\n"
  "30e/OPSkhhiCfUJ8KpbvKaQ=\n"
  "-----END PRIVATE KEY-----\n";
static const char requester_cert_pem[] =
  "-----BEGIN CERTIFICATE-----\n"
  "MIIDFTCCAf2gAwIBAgIUQd7nplU6IiYMr35a2b3PnldJIb8wDQYJKoZIhvcNAQEL\n"
  "BQAwGTEXMBUGA1UEAwwOZnV6eiByZXF1ZXN0ZXIwIBcNMjYxMjAyMDI1MDI3WhgP\n"
  "MjEyNjExMDgwMjUwMjdaMBkxFzAVBgNVBAMMDmZ1enogcmVxdWVzdGVyMIIBIjAN\n"
  "BgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqZU5iSdEfyE/BJ6CjV1oG3KTuzC9\n"
  "2FEPbr5FdptOogcCJqbXspowsGcRy3Ta1lLo0ex74Ouv6mX3cL8ZWRMav81U3SWv\n"
  "JLP1INp1kzsKpvp/AW2uotmAmBgpy8xy12h+qY8bqxpzA32xqKfZADKS/IGWcNxA\n"
  "M9NJ51XCJSxnYw22n+p5orZIQo/yRMqSTsUD8p+S6leuAZcrGKdht9W4dLPC9zyx\n"
  "6vnUYx4/PP8sW6uoKR0Qk0NXa3mgloY3gPqxAYneMfAYoT4x26Ggglv5NWTugq9D\n"
  "RKS7MkZUqqR+j+6yN4aB8GSIM6Zq9IYLMPhG0NN2Fps8w86BSkNTrLjSAwIDAQAB\n"
  "o1MwUTAdBgNVHQ4EFgQUcjQ5Sk38Jy2rDc41gq0jNBqkJa0wHwYDVR0jBBgwFoAU\n"
  "cjQ5Sk38Jy2rDc41gq0jNBqkJa0wDwYDVR0TAQH/BAUwAwEB/zANBgkqhkiG9w0B\n"
  "AQsFAAOCAQEAiJLIiuzY14ueV7IuiKr7HYOSLn0YZL/Y/LZLWm6XPsR/N/qC2NuZ\n"
  "NvxmHQyWW8UqrjmKLLFVqbO9DA597VOcSE56LEFB9oK2IaHLo4TvMgmbCAQb0lvv\n"
  "pxHMZAVMkHDUSfeQQ9DXow6t6yvM187XRG9wQDcLVa4qvKxfJs3FCOYHvYrwMs0V\n"
  "Bn3aTIZ9CXKNQW02SUo+WcaqMvMLcaeemtS9ZSnGvSUEz6+llSv3YgNpCq8kxOTQ\n"
  "BxfX0bI5YqLeE6OG6hGJ0VGnepdiItAbXKAbasUEqMRqVWg9KixH5RUYJviOlWfx\n"
  "YuyeEVU1LnXIrsUrhQ0Ip4z3fSbX//TRtw==\n"
  "-----END CERTIFICATE-----\n";

static EVP_PKEY *requester_key;
static X509 *requester_cert;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  g_autoptr(BIO) kb = BIO_new_mem_buf (requester_key_pem, -1);
  g_autoptr(BIO) cb = BIO_new_mem_buf (requester_cert_pem, -1);

  (void) argc; (void) argv;
  g_log_set_writer_func (p11c_fuzz_log_writer, NULL, NULL);
  requester_key = PEM_read_bio_PrivateKey (kb, NULL, NULL, NULL);
  requester_cert = PEM_read_bio_X509 (cb, NULL, NULL, NULL);
  if (requester_key == NULL || requester_cert == NULL)
    abort ();
  return 0;
}

static GBytes *
decrypt (gpointer data, const guint8 *in, gsize len, GError **error)
{
  g_autoptr(EVP_PKEY_CTX) ctx = EVP_PKEY_CTX_new (requester_key, NULL);
  guint8 out[512];
  size_t n = sizeof out;

  (void) data;
  if (ctx == NULL || EVP_PKEY_decrypt_init (ctx) <= 0 || EVP_PKEY_CTX_set_rsa_padding (ctx, RSA_PKCS1_PADDING) <= 0
      || EVP_PKEY_decrypt (ctx, out, &n, in, len) <= 0)
    {
      ERR_clear_error ();
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_FAILED, "does not decrypt");
      return NULL;
    }
  return g_bytes_new (out, n);
}

/* The signed attribute @oid of the input's first signer, as bytes. */
static char *
attr_of (PKCS7 *p7, const char *oid, gsize *len)
{
  STACK_OF(PKCS7_SIGNER_INFO) *sis = PKCS7_get_signer_info (p7);
  PKCS7_SIGNER_INFO *si = sis && sk_PKCS7_SIGNER_INFO_num (sis) > 0 ? sk_PKCS7_SIGNER_INFO_value (sis, 0) : NULL;
  ASN1_OBJECT *obj = OBJ_txt2obj (oid, 1);
  ASN1_TYPE *t = NULL;
  char *out = NULL;

  for (int i = 0; si && obj && i < X509at_get_attr_count (si->auth_attr); i++)
    {
      X509_ATTRIBUTE *a = X509at_get_attr (si->auth_attr, i);
      if (OBJ_cmp (X509_ATTRIBUTE_get0_object (a), obj) == 0)
        t = X509_ATTRIBUTE_get0_type (a, 0);
    }
  ASN1_OBJECT_free (obj);
  if (t != NULL && (t->type == V_ASN1_PRINTABLESTRING || t->type == V_ASN1_OCTET_STRING))
    {
      *len = (gsize) ASN1_STRING_length (t->value.asn1_string);
      out = g_strndup ((const char *) ASN1_STRING_get0_data (t->value.asn1_string), *len);
    }
  return out;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const unsigned char *p = data;
  g_autoptr(PKCS7) p7 = size > 0 ? d2i_PKCS7 (NULL, &p, (long) size) : NULL;
  g_autoptr(P11cX509Stack) trusted = sk_X509_new_null ();
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autofree char *tid = NULL;
  g_autofree char *nonce_attr = NULL;
  guint8 nonce[16] = { 0 };
  gsize tid_len = 0, nonce_len = 0;
  P11cScepClient cl = { 0 };
  gboolean ok;

  (void) p11c_scep_parse_caps ((const char *) data, size);

  if (p7 != NULL && PKCS7_type_is_signed (p7) && p7->d.sign != NULL)
    {
      for (int i = 0; p7->d.sign->cert != NULL && i < sk_X509_num (p7->d.sign->cert); i++)
        {
          X509_up_ref (sk_X509_value (p7->d.sign->cert, i));
          sk_X509_push (trusted, sk_X509_value (p7->d.sign->cert, i));
        }
      tid = attr_of (p7, "2.16.840.1.113733.1.9.7", &tid_len);
      nonce_attr = attr_of (p7, "2.16.840.1.113733.1.9.6", &nonce_len);
      if (nonce_attr != NULL && nonce_len == sizeof nonce)
        memcpy (nonce, nonce_attr, sizeof nonce);
    }
  ERR_clear_error ();
  cl.caps = P11C_SCEP_CAP_AES;
  cl.ca = requester_cert;           /* unused by the parser */
  cl.recipient = requester_cert;
  cl.ca_certs = trusted;
  cl.signer_cert = requester_cert;
  cl.signer_key = requester_key;
  cl.decrypt = decrypt;

  ok = p11c_scep_parse_reply (&cl, data, size, tid && strlen (tid) == tid_len ? tid : "none", nonce,
                              requester_key, &cert, &error);
  if (!ok)
    {
      P11C_FUZZ_ASSERT (error != NULL && error->message != NULL && error->domain == P11C_ERROR);
      P11C_FUZZ_ASSERT (cert == NULL);
    }
  else
    {
      P11C_FUZZ_ASSERT (error == NULL);
      P11C_FUZZ_ASSERT (cert == NULL || EVP_PKEY_eq (X509_get0_pubkey (cert), requester_key) == 1);
    }
  ERR_clear_error ();
  return 0;
}
