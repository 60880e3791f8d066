#define G_LOG_DOMAIN "p11c-localca"
#include "p11c-localca.h"
#include "p11c-cert.h"
#include "p11c-error.h"
#include "p11c-store.h"
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <string.h>

static GMutex ca_lock;

static gboolean
add_ext (X509 *cert, X509 *issuer, int nid, const char *value)
{
  X509V3_CTX ctx;
  X509_EXTENSION *ext;
  gboolean ok;

  X509V3_set_ctx (&ctx, issuer, cert, NULL, NULL, 0);
  ext = X509V3_EXT_conf_nid (NULL, &ctx, nid, value);
  if (ext == NULL)
    return FALSE;
  ok = X509_add_ext (cert, ext, -1) == 1;
  X509_EXTENSION_free (ext);
  return ok;
}

static gboolean
set_serial_and_validity (X509 *cert, gint64 not_before, gint64 not_after)
{
  guint8 bytes[16];
  g_autoptr(BIGNUM) bn = NULL;
  ASN1_INTEGER *serial;
  gboolean ok;

  if (RAND_bytes (bytes, sizeof bytes) != 1)
    return FALSE;
  bytes[0] &= 0x7f;    /* positive */
  bytes[0] |= 0x01;    /* no leading zero byte */
  bn = BN_bin2bn (bytes, sizeof bytes, NULL);
  serial = BN_to_ASN1_INTEGER (bn, NULL);
  ok = serial && X509_set_serialNumber (cert, serial)
       && X509_time_adj_ex (X509_getm_notBefore (cert), 0, 0, (time_t *) &(time_t) { not_before })
       && X509_time_adj_ex (X509_getm_notAfter (cert), 0, 0, (time_t *) &(time_t) { not_after });
  ASN1_INTEGER_free (serial);
  return ok;
}

static gboolean
create_ca (const char *dir, GError **error)
{
  g_autoptr(EVP_PKEY) key = EVP_PKEY_Q_keygen (NULL, NULL, "EC", "P-256");
  g_autoptr(X509) cert = X509_new ();
  g_autoptr(BIO) kbio = BIO_new (BIO_s_mem ());
  g_autoptr(BIO) cbio = BIO_new (BIO_s_mem ());
  g_autofree char *host = g_strdup (g_get_host_name ());
  g_autofree char *cn = g_strdup_printf ("p11certd local CA on %s", host);
  X509_NAME *name;
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  char *data;
  long len;

  if (key == NULL || cert == NULL)
    goto fail;
  name = X509_get_subject_name (cert);
  /* most significant first (O, then CN): reads "CN=…,O=p11certd" in RFC 4514 order */
  X509_NAME_add_entry_by_txt (name, "O", MBSTRING_UTF8, (const guchar *) "p11certd", -1, -1, 0);
  X509_NAME_add_entry_by_txt (name, "CN", MBSTRING_UTF8, (const guchar *) cn, -1, -1, 0);
  if (!X509_set_version (cert, 2) || !X509_set_issuer_name (cert, name)
      || !set_serial_and_validity (cert, now - 300, now + 10LL * 365 * 86400)
      || !X509_set_pubkey (cert, key)
      || !add_ext (cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0")
      || !add_ext (cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign")
      || !add_ext (cert, cert, NID_subject_key_identifier, "hash")
      || !add_ext (cert, cert, NID_authority_key_identifier, "keyid:always")
      || X509_sign (cert, key, EVP_sha256 ()) <= 0)
    goto fail;
  if (!PEM_write_bio_PrivateKey (kbio, key, NULL, NULL, 0, NULL, NULL)
      || !PEM_write_bio_X509 (cbio, cert))
    goto fail;
  if (g_mkdir_with_parents (dir, 0700) != 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot create %s: %s", dir, g_strerror (errno));
      return FALSE;
    }
  len = BIO_get_mem_data (kbio, &data);
  {
    g_autofree char *path = g_build_filename (dir, "ca.key", NULL);
    gboolean ok = p11c_store_write_file (path, data, len, 0600, NULL, error);
    OPENSSL_cleanse (data, len);
    if (!ok)
      return FALSE;
  }
  len = BIO_get_mem_data (cbio, &data);
  {
    g_autofree char *path = g_build_filename (dir, "ca.pem", NULL);
    if (!p11c_store_write_file (path, data, len, 0644, NULL, error))
      return FALSE;
  }
  g_message ("Created the local CA \"%s\" in %s", cn, dir);
  return TRUE;

fail:
  {
    g_autofree char *why = p11c_openssl_error_string ();
    g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot create the local CA: %s", why);
  }
  return FALSE;
}

/* The CA's certificate (and key, with @key_out).  Only issuing (@create)
 * makes a CA that does not exist yet: reading it never does. */
static gboolean
load_ca (const char *dir, gboolean create, X509 **cert_out, EVP_PKEY **key_out, GError **error)
{
  g_autofree char *cpath = g_build_filename (dir, "ca.pem", NULL);
  g_autofree char *kpath = g_build_filename (dir, "ca.key", NULL);
  g_autoptr(BIO) cbio = NULL;
  g_autoptr(BIO) kbio = NULL;

  g_mutex_lock (&ca_lock);
  if (!g_file_test (cpath, G_FILE_TEST_EXISTS))
    {
      if (!create)
        {
          g_mutex_unlock (&ca_lock);
          g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
                       "The local CA does not exist yet: it is created by its first certificate "
                       "(an enrollment through a profile of type local)");
          return FALSE;
        }
      if (!create_ca (dir, error))
        {
          g_mutex_unlock (&ca_lock);
          return FALSE;
        }
    }
  g_mutex_unlock (&ca_lock);
  cbio = BIO_new_file (cpath, "r");
  *cert_out = cbio ? PEM_read_bio_X509 (cbio, NULL, NULL, NULL) : NULL;
  if (key_out)
    {
      kbio = BIO_new_file (kpath, "r");
      *key_out = kbio ? PEM_read_bio_PrivateKey (kbio, NULL, NULL, NULL) : NULL;
    }
  if (*cert_out == NULL || (key_out && *key_out == NULL))
    {
      g_clear_pointer (cert_out, X509_free);
      if (key_out)
        g_clear_pointer (key_out, EVP_PKEY_free);
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED,
                   "The local CA in %s is unreadable; move it away to create a new one", dir);
      return FALSE;
    }
  return TRUE;
}

X509 *
p11c_local_ca_certificate (const char *dir, GError **error)
{
  X509 *cert = NULL;
  if (!load_ca (dir, FALSE, &cert, NULL, error))
    return NULL;
  return cert;
}

X509 *
p11c_local_ca_issue (const char *dir, X509_REQ *req, guint days, gboolean create, GError **error)
{
  g_autoptr(X509) ca = NULL;
  g_autoptr(EVP_PKEY) ca_key = NULL;
  g_autoptr(X509) cert = X509_new ();
  EVP_PKEY *pub = X509_REQ_get0_pubkey (req);
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;

  if (!load_ca (dir, create, &ca, &ca_key, error))
    return NULL;
  if (pub == NULL || X509_REQ_verify (req, pub) != 1)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED, "The certificate request's signature is invalid");
      return NULL;
    }
  if (!X509_set_version (cert, 2)
      || !X509_set_subject_name (cert, X509_REQ_get_subject_name (req))
      || !X509_set_issuer_name (cert, X509_get_subject_name (ca))
      || !set_serial_and_validity (cert, now - 60, now + (gint64) days * 86400)
      || !X509_set_pubkey (cert, pub)
      || !add_ext (cert, ca, NID_basic_constraints, "critical,CA:FALSE")
      || !add_ext (cert, ca, NID_key_usage, "critical,digitalSignature")
      || !add_ext (cert, ca, NID_ext_key_usage, "clientAuth")
      || !add_ext (cert, ca, NID_subject_key_identifier, "hash")
      || !add_ext (cert, ca, NID_authority_key_identifier, "keyid:always")
      || X509_sign (cert, ca_key, EVP_sha256 ()) <= 0)
    {
      g_autofree char *why = p11c_openssl_error_string ();
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "The local CA cannot sign: %s", why);
      return NULL;
    }
  {
    g_autoptr(P11cCertSummary) sum = p11c_cert_summary_from_x509 (cert);
    g_message ("The local CA issued %s (serial %s, SHA-256 %s)", sum->subject, sum->serial, sum->sha256);
  }
  return g_steal_pointer (&cert);
}
