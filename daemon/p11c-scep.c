/* p11c-scep — SCEP client (RFC 8894).  See p11c-scep.h. */
#define G_LOG_DOMAIN "p11c-scep"

#include "p11c-scep.h"
#include "p11c-error.h"

#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <string.h>

#define CT_PKI_MESSAGE "application/x-pki-message"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (EVP_CIPHER_CTX, EVP_CIPHER_CTX_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EVP_CIPHER, EVP_CIPHER_free)

/* ---- SCEP attribute OIDs (id-VeriSign pki attributes) -------------------- */

static int nid_message_type, nid_pki_status, nid_fail_info, nid_sender_nonce,
           nid_recipient_nonce, nid_transaction_id;

static int
scep_nid (const char *oid, const char *name)
{
  int nid = OBJ_txt2nid (oid);
  if (nid == NID_undef)
    nid = OBJ_create (oid, name, name);
  return nid;
}

static void
oids_init (void)
{
  static gsize once = 0;
  if (g_once_init_enter (&once))
    {
      nid_message_type = scep_nid ("2.16.840.1.113733.1.9.2", "scepMessageType");
      nid_pki_status = scep_nid ("2.16.840.1.113733.1.9.3", "scepPkiStatus");
      nid_fail_info = scep_nid ("2.16.840.1.113733.1.9.4", "scepFailInfo");
      nid_sender_nonce = scep_nid ("2.16.840.1.113733.1.9.5", "scepSenderNonce");
      nid_recipient_nonce = scep_nid ("2.16.840.1.113733.1.9.6", "scepRecipientNonce");
      nid_transaction_id = scep_nid ("2.16.840.1.113733.1.9.7", "scepTransactionId");
      g_once_init_leave (&once, 1);
    }
}

/* ---- capabilities --------------------------------------------------------- */

guint
p11c_scep_parse_caps (const char *text, gsize len)
{
  static const struct { const char *name; guint cap; } names[] = {
    { "renewal", P11C_SCEP_CAP_RENEWAL }, { "aes", P11C_SCEP_CAP_AES },
    { "des3", P11C_SCEP_CAP_DES3 }, { "sha-256", P11C_SCEP_CAP_SHA256 },
    { "sha-512", P11C_SCEP_CAP_SHA512 }, { "postpkioperation", P11C_SCEP_CAP_POST },
    { "scepstandard", P11C_SCEP_CAP_STANDARD },
  };
  g_autofree char *copy = g_strndup (text ? text : "", text ? len : 0);
  g_auto(GStrv) lines = g_strsplit_set (copy, "\r\n", -1);
  guint caps = 0;

  for (guint i = 0; lines[i] != NULL; i++)
    {
      g_strstrip (lines[i]);
      for (gsize n = 0; n < G_N_ELEMENTS (names); n++)
        if (g_ascii_strcasecmp (lines[i], names[n].name) == 0)
          caps |= names[n].cap;
    }
  if (caps & P11C_SCEP_CAP_STANDARD)
    caps |= P11C_SCEP_CAP_AES | P11C_SCEP_CAP_SHA256 | P11C_SCEP_CAP_POST;
  return caps;
}

/* url?operation=OP[&message=M] — the profile URL must have no query */
static char *
operation_url (const P11cEstServer *srv, const char *op, const char *message, GError **error)
{
  g_autofree char *escaped = message ? g_uri_escape_string (message, NULL, FALSE) : NULL;

  if (srv->url == NULL || !(g_str_has_prefix (srv->url, "http://") || g_str_has_prefix (srv->url, "https://"))
      || strchr (srv->url, '?') != NULL || strchr (srv->url, '#') != NULL || strchr (srv->url, '@') != NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The SCEP URL “%s” must be http:// or https://, without a query, fragment or user name",
                   srv->url ? srv->url : "");
      return NULL;
    }
  return g_strdup_printf ("%s?operation=%s%s%s", srv->url, op, escaped ? "&message=" : "",
                          escaped ? escaped : "");
}

gboolean
p11c_scep_get_caps (const P11cEstServer *srv, GCancellable *cancel, guint *caps_out, GError **error)
{
  g_autofree char *url = operation_url (srv, "GetCACaps", NULL, error);
  g_autoptr(GBytes) body = NULL;
  gsize len;
  const char *data;

  if (url == NULL || !p11c_http_get_or_post (srv, url, "text/plain", NULL, NULL, 0, cancel, NULL, &body, error))
    return FALSE;
  data = g_bytes_get_data (body, &len);
  *caps_out = p11c_scep_parse_caps (data, len);
  g_debug ("GetCACaps: 0x%x", *caps_out);
  return TRUE;
}

/* ---- GetCACert ------------------------------------------------------------ */

static gboolean
fingerprint_matches (X509 *cert, const char *fingerprint)
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  g_autoptr(GString) want = g_string_new (NULL);
  g_autofree char *have = NULL;

  for (const char *c = fingerprint; *c; c++)
    if (g_ascii_isxdigit (*c))
      g_string_append_c (want, g_ascii_tolower (*c));
  if (!X509_digest (cert, EVP_sha256 (), md, &n))
    return FALSE;
  have = g_malloc0 (2 * n + 1);
  for (unsigned int i = 0; i < n; i++)
    g_snprintf (have + 2 * i, 3, "%02x", md[i]);
  return g_str_equal (have, want->str);
}

static gboolean
verifies_against_anchor (X509 *cert, P11cX509Stack *untrusted, const char *anchor_file)
{
  g_autoptr(X509_STORE) store = X509_STORE_new ();
  g_autoptr(X509_STORE_CTX) ctx = X509_STORE_CTX_new ();
  gboolean ok;

  if (store == NULL || ctx == NULL || X509_STORE_load_file (store, anchor_file) != 1
      || !X509_STORE_CTX_init (ctx, store, cert, untrusted))
    {
      ERR_clear_error ();
      return FALSE;
    }
  X509_STORE_CTX_set_purpose (ctx, X509_PURPOSE_ANY);
  ok = X509_verify_cert (ctx) == 1;
  ERR_clear_error ();
  return ok;
}

static gboolean
is_rsa (X509 *cert)
{
  EVP_PKEY *k = X509_get0_pubkey (cert);
  return k != NULL && EVP_PKEY_get_base_id (k) == EVP_PKEY_RSA;
}

/* The reply of GetCACert: one DER certificate, or a certs-only PKCS#7. */
static P11cX509Stack *
parse_ca_reply (const P11cEstServer *srv, const char *ctype, GBytes *body, GError **error)
{
  gsize len;
  const unsigned char *der = g_bytes_get_data (body, &len), *p = der;
  g_autoptr(P11cX509Stack) out = sk_X509_new_null ();
  g_autoptr(X509) one = NULL;
  g_autoptr(PKCS7) p7 = NULL;

  if (len == 0 || len > G_MAXLONG)
    goto bad;
  if (ctype && g_ascii_strncasecmp (ctype, "application/x-x509-ca-cert", 26) == 0)
    {
      one = d2i_X509 (NULL, &p, (long) len);
      if (one == NULL || p != der + len)
        goto bad;
      sk_X509_push (out, g_steal_pointer (&one));
      return g_steal_pointer (&out);
    }
  if (ctype && g_ascii_strncasecmp (ctype, "application/x-x509-ca-ra-cert", 29) == 0)
    {
      p7 = d2i_PKCS7 (NULL, &p, (long) len);
      if (p7 == NULL || p != der + len || !PKCS7_type_is_signed (p7) || p7->d.sign == NULL
          || p7->d.sign->cert == NULL || sk_X509_num (p7->d.sign->cert) <= 0)
        goto bad;
      for (int i = 0; i < sk_X509_num (p7->d.sign->cert); i++)
        {
          X509 *c = sk_X509_value (p7->d.sign->cert, i);
          X509_up_ref (c);
          sk_X509_push (out, c);
        }
      return g_steal_pointer (&out);
    }
  ERR_clear_error ();
  g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
               "The SCEP CA at %s answered GetCACert with content type “%s”, not a CA certificate",
               srv->url, ctype ? ctype : "(none)");
  return NULL;
bad:
  ERR_clear_error ();
  g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
               "The SCEP CA at %s answered GetCACert with data that is not a certificate (%s)",
               srv->url, ctype ? ctype : "no content type");
  return NULL;
}

gboolean
p11c_scep_get_ca (const P11cEstServer *srv, const char *fingerprint, GCancellable *cancel,
                  X509 **ca_out, X509 **recipient_out, P11cX509Stack **certs_out, GError **error)
{
  g_autofree char *url = operation_url (srv, "GetCACert", "p11certd", error);
  g_autofree char *ctype = NULL;
  g_autoptr(GBytes) body = NULL;
  g_autoptr(P11cX509Stack) certs = NULL;
  g_autoptr(P11cX509Stack) out = NULL;
  X509 *ca = NULL, *ra = NULL;

  if (url == NULL)
    return FALSE;
  if ((fingerprint == NULL || *fingerprint == '\0') && (srv->trust_anchor == NULL || *srv->trust_anchor == '\0'))
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                           "The SCEP profile has neither ca-fingerprint nor trust-anchor; "
                           "refusing to trust whatever CA certificate the server sends");
      return FALSE;
    }
  if (!p11c_http_get_or_post (srv, url, "application/x-x509-ca-ra-cert, application/x-x509-ca-cert",
                              NULL, NULL, 0, cancel, &ctype, &body, error))
    return FALSE;
  certs = parse_ca_reply (srv, ctype, body, error);
  if (certs == NULL)
    return FALSE;

  for (int i = 0; ca == NULL && i < sk_X509_num (certs); i++)
    {
      X509 *c = sk_X509_value (certs, i);
      if (X509_check_ca (c) == 0)
        continue;
      if (fingerprint && *fingerprint ? fingerprint_matches (c, fingerprint)
                                      : verifies_against_anchor (c, certs, srv->trust_anchor))
        ca = c;
    }
  if (ca == NULL)
    {
      if (fingerprint && *fingerprint)
        g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                     "None of the %d certificate(s) the SCEP server at %s sent is a CA certificate with "
                     "the profile's ca-fingerprint; check the fingerprint with your CA administrator",
                     sk_X509_num (certs), srv->url);
      else
        g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                     "None of the %d certificate(s) the SCEP server at %s sent is a CA certificate "
                     "trusted by the profile's trust anchor %s", sk_X509_num (certs), srv->url,
                     srv->trust_anchor);
      return FALSE;
    }
  /* an RA: an RSA end-entity certificate the CA issued */
  for (int i = 0; ra == NULL && i < sk_X509_num (certs); i++)
    {
      X509 *c = sk_X509_value (certs, i);
      if (c != ca && X509_check_ca (c) == 0 && is_rsa (c) && X509_check_issued (ca, c) == X509_V_OK
          && X509_verify (c, X509_get0_pubkey (ca)) == 1)
        ra = c;
    }
  ERR_clear_error ();
  if (ra == NULL && !is_rsa (ca))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The SCEP CA at %s has no RSA certificate to encrypt the request to", srv->url);
      return FALSE;
    }
  out = sk_X509_new_null ();
  X509_up_ref (ca);
  sk_X509_push (out, ca);
  for (int i = 0; i < sk_X509_num (certs); i++)
    if (sk_X509_value (certs, i) != ca)
      {
        X509_up_ref (sk_X509_value (certs, i));
        sk_X509_push (out, sk_X509_value (certs, i));
      }
  X509_up_ref (ca);
  *ca_out = ca;
  ra = ra ? ra : ca;
  X509_up_ref (ra);
  *recipient_out = ra;
  *certs_out = g_steal_pointer (&out);
  return TRUE;
}

/* ---- pkiMessage ------------------------------------------------------------ */

char *
p11c_scep_transaction_id (EVP_PKEY *key)
{
  unsigned char *der = NULL;
  int len = i2d_PUBKEY (key, &der);
  g_autofree char *hex = NULL;

  if (len <= 0)
    return g_strdup ("0");
  hex = g_compute_checksum_for_data (G_CHECKSUM_SHA256, der, len);
  OPENSSL_free (der);
  return g_ascii_strup (hex, -1);
}

static gboolean
add_string_attr (PKCS7_SIGNER_INFO *si, int nid, int type, const void *data, gsize len)
{
  ASN1_STRING *s = ASN1_STRING_type_new (type);

  if (s == NULL || !ASN1_STRING_set (s, data, (int) len))
    {
      ASN1_STRING_free (s);
      return FALSE;
    }
  if (!PKCS7_add_signed_attribute (si, nid, type, s))
    {
      ASN1_STRING_free (s);
      return FALSE;
    }
  return TRUE;
}

static GBytes *
pkcs7_to_bytes (PKCS7 *p7)
{
  unsigned char *der = NULL;
  int len = i2d_PKCS7 (p7, &der);
  GBytes *out;

  if (len <= 0)
    return NULL;
  out = g_bytes_new (der, len);
  OPENSSL_free (der);
  return out;
}

GBytes *
p11c_scep_build_message (const P11cScepClient *cl, P11cScepMessageType type,
                         const char *transaction_id, const guint8 nonce[16],
                         const guint8 *inner, gsize inner_len, GError **error)
{
  /* the strongest content cipher the CA announces: AES (AES-128-CBC in
   * RFC 8894), else triple DES, which every SCEP CA must accept */
  const EVP_CIPHER *cipher = (cl->caps & P11C_SCEP_CAP_AES) ? EVP_aes_128_cbc () : EVP_des_ede3_cbc ();
  const EVP_MD *md = (cl->caps & P11C_SCEP_CAP_SHA512) ? EVP_sha512 ()
                   : (cl->caps & P11C_SCEP_CAP_SHA256) ? EVP_sha256 () : EVP_sha1 ();
  g_autoptr(P11cX509Stack) rcpt = sk_X509_new_null ();
  g_autoptr(BIO) in = BIO_new_mem_buf (inner, (int) inner_len);
  g_autoptr(PKCS7) env = NULL;
  g_autoptr(PKCS7) p7 = PKCS7_new ();
  g_autoptr(GBytes) env_der = NULL;
  g_autofree char *type_str = g_strdup_printf ("%d", (int) type);
  PKCS7_SIGNER_INFO *si;
  BIO *b = NULL;
  GBytes *out = NULL;
  gsize env_len;
  const guint8 *env_data;

  oids_init ();
  X509_up_ref (cl->recipient);
  sk_X509_push (rcpt, cl->recipient);
  env = PKCS7_encrypt (rcpt, in, cipher, PKCS7_BINARY);
  if (env == NULL || (env_der = pkcs7_to_bytes (env)) == NULL)
    goto fail;
  env_data = g_bytes_get_data (env_der, &env_len);

  if (!PKCS7_set_type (p7, NID_pkcs7_signed) || !PKCS7_content_new (p7, NID_pkcs7_data)
      || (si = PKCS7_add_signature (p7, cl->signer_cert, cl->signer_key, md)) == NULL
      || !PKCS7_add_certificate (p7, cl->signer_cert)
      || !PKCS7_add_signed_attribute (si, NID_pkcs9_contentType, V_ASN1_OBJECT, OBJ_nid2obj (NID_pkcs7_data))
      || !add_string_attr (si, nid_message_type, V_ASN1_PRINTABLESTRING, type_str, strlen (type_str))
      || !add_string_attr (si, nid_transaction_id, V_ASN1_PRINTABLESTRING, transaction_id, strlen (transaction_id))
      || !add_string_attr (si, nid_sender_nonce, V_ASN1_OCTET_STRING, nonce, 16)
      || (b = PKCS7_dataInit (p7, NULL)) == NULL
      || BIO_write (b, env_data, (int) env_len) != (int) env_len || BIO_flush (b) != 1
      || !PKCS7_dataFinal (p7, b))
    goto fail;
  out = pkcs7_to_bytes (p7);
  BIO_free_all (b);
  if (out != NULL)
    return out;
  b = NULL;
fail:
  BIO_free_all (b);
  {
    g_autofree char *why = p11c_openssl_error_string ();
    g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot build the SCEP request: %s", why);
  }
  return NULL;
}

/* ---- CertRep ---------------------------------------------------------------- */

static const char *
attr_string (PKCS7_SIGNER_INFO *si, int nid, int type, gsize *len_out)
{
  ASN1_TYPE *t = PKCS7_get_signed_attribute (si, nid);

  if (t == NULL || t->type != type || t->value.asn1_string == NULL)
    return NULL;
  *len_out = (gsize) ASN1_STRING_length (t->value.asn1_string);
  return (const char *) ASN1_STRING_get0_data (t->value.asn1_string);
}

static gboolean
attr_equals (PKCS7_SIGNER_INFO *si, int nid, int type, const void *want, gsize want_len)
{
  gsize len = 0;
  const char *v = attr_string (si, nid, type, &len);
  return v != NULL && len == want_len && memcmp (v, want, len) == 0;
}

static gboolean
bad_reply (GError **error, const char *what)
{
  ERR_clear_error ();
  g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY, "The SCEP CA's reply %s", what);
  return FALSE;
}

static gboolean
fail_info_error (PKCS7_SIGNER_INFO *si, GError **error)
{
  static const char *const why[] = {
    "badAlg: the CA does not accept an algorithm of the request",
    "badMessageCheck: the CA could not verify the request's signature",
    ("badRequest: the CA refused the request — a wrong or already used challenge password is the "
     "usual cause; challenge passwords work once, ask your manager for a new one"),
    "badTime: the CA says the request's time is wrong; check this machine's clock",
    "badCertId: the CA does not know the certificate the request refers to",
  };
  gsize len = 0;
  const char *v = attr_string (si, nid_fail_info, V_ASN1_PRINTABLESTRING, &len);
  g_autofree char *s = v ? g_strndup (v, len) : NULL;
  guint64 n = G_MAXUINT64;

  if (s != NULL && !g_ascii_string_to_unsigned (s, 10, 0, 4, &n, NULL))
    n = G_MAXUINT64;
  if (n < G_N_ELEMENTS (why))
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED, "The SCEP CA refused the request (%s)", why[n]);
  else
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                 "The SCEP CA refused the request (failInfo %s)", s ? s : "missing");
  /* for clients: Job.ErrorDetails reason (badRequest: the challenge password,
   * i.e. the one-time password, was refused) and the failInfo name */
  if (error != NULL && *error != NULL)
    {
      static const char *const names[] = { "badAlg", "badMessageCheck", "badRequest", "badTime", "badCertId" };
      p11c_error_set_detail_string (*error, "reason", n == 2 ? "credentials" : n == 3 ? "clock" : "request");
      if (n < G_N_ELEMENTS (names))
        p11c_error_set_detail_string (*error, "fail_info", names[n]);
    }
  return FALSE;
}

static X509 *
find_by_issuer_serial (P11cX509Stack *certs, X509_NAME *issuer, ASN1_INTEGER *serial)
{
  for (int i = 0; certs != NULL && i < sk_X509_num (certs); i++)
    {
      X509 *c = sk_X509_value (certs, i);
      if (X509_NAME_cmp (X509_get_issuer_name (c), issuer) == 0
          && ASN1_INTEGER_cmp (X509_get0_serialNumber (c), serial) == 0)
        return c;
    }
  return NULL;
}

/* The content cipher of a reply.  Besides AES and triple DES, single DES:
 * real SCEP servers (micromdm's scepserver, Debian's `scep`) encrypt their
 * CertRep with DES-CBC whatever the request used.  What it protects is the
 * issued certificate — public — and the CA's signature over the envelope
 * guards its integrity, so reading it costs no secret.  DES lives in
 * OpenSSL's legacy provider, loaded into a library context of its own
 * (never the default one) for this one decryption. */
static EVP_CIPHER *
fetch_reply_cipher (int nid)
{
  static const int allowed[] = { NID_aes_128_cbc, NID_aes_192_cbc, NID_aes_256_cbc, NID_des_ede3_cbc };
  static OSSL_LIB_CTX *legacy_ctx;
  static gsize once = 0;

  for (gsize i = 0; i < G_N_ELEMENTS (allowed); i++)
    if (nid == allowed[i])
      return EVP_CIPHER_fetch (NULL, OBJ_nid2sn (nid), NULL);
  if (nid != NID_des_cbc)
    return NULL;
  if (g_once_init_enter (&once))
    {
      legacy_ctx = OSSL_LIB_CTX_new ();
      if (legacy_ctx != NULL && (OSSL_PROVIDER_load (legacy_ctx, "legacy") == NULL
                                 || OSSL_PROVIDER_load (legacy_ctx, "default") == NULL))
        g_warning ("OpenSSL's legacy provider is not available: DES-encrypted SCEP replies cannot be read");
      g_once_init_leave (&once, 1);
    }
  return legacy_ctx ? EVP_CIPHER_fetch (legacy_ctx, "DES-CBC", NULL) : NULL;
}

/* The pkcsPKIEnvelope of a SUCCESS: find our recipient info, decrypt the
 * content-encryption key through the callback, then the content. */
static GBytes *
open_envelope (const P11cScepClient *cl, const guint8 *der, gsize len, GError **error)
{
  const unsigned char *p = der;
  g_autoptr(PKCS7) env = d2i_PKCS7 (NULL, &p, (long) len);
  g_autoptr(GBytes) cek = NULL;
  g_autoptr(EVP_CIPHER_CTX) ctx = NULL;
  g_autoptr(EVP_CIPHER) cipher = NULL;
  PKCS7_RECIP_INFO *mine = NULL;
  PKCS7_ENC_CONTENT *ec;
  unsigned char iv[EVP_MAX_IV_LENGTH];
  guint8 *plain;
  int ivlen, n1 = 0, n2 = 0;
  GBytes *out;

  if (env == NULL || p != der + len || !PKCS7_type_is_enveloped (env) || env->d.enveloped == NULL)
    {
      bad_reply (error, "has no encrypted pkcsPKIEnvelope");
      return NULL;
    }
  for (int i = 0; mine == NULL && i < sk_PKCS7_RECIP_INFO_num (env->d.enveloped->recipientinfo); i++)
    {
      PKCS7_RECIP_INFO *ri = sk_PKCS7_RECIP_INFO_value (env->d.enveloped->recipientinfo, i);
      if (ri->issuer_and_serial != NULL
          && X509_NAME_cmp (ri->issuer_and_serial->issuer, X509_get_issuer_name (cl->signer_cert)) == 0
          && ASN1_INTEGER_cmp (ri->issuer_and_serial->serial, X509_get0_serialNumber (cl->signer_cert)) == 0)
        mine = ri;
    }
  if (mine == NULL)
    {
      bad_reply (error, "is encrypted to another certificate, not to the one that signed the request; "
                        "it cannot be read");
      return NULL;
    }
  ec = env->d.enveloped->enc_data;
  cipher = ec && ec->algorithm ? fetch_reply_cipher (OBJ_obj2nid (ec->algorithm->algorithm)) : NULL;
  if (cipher == NULL || ec->enc_data == NULL)
    {
      bad_reply (error, "is encrypted with a cipher p11certd does not know");
      return NULL;
    }
  ivlen = EVP_CIPHER_get_iv_length (cipher);
  if (ivlen > 0 && (ec->algorithm->parameter == NULL
                    || ASN1_TYPE_get_octetstring (ec->algorithm->parameter, iv, ivlen) != ivlen))
    {
      bad_reply (error, "has a bad cipher IV");
      return NULL;
    }
  cek = cl->decrypt (cl->decrypt_data, ASN1_STRING_get0_data (mine->enc_key),
                     (gsize) ASN1_STRING_length (mine->enc_key), error);
  if (cek == NULL)
    return NULL;
  if (g_bytes_get_size (cek) != (gsize) EVP_CIPHER_get_key_length (cipher))
    {
      bad_reply (error, "carries a content key of the wrong length (encrypted to another key?)");
      return NULL;
    }
  ctx = EVP_CIPHER_CTX_new ();
  plain = g_malloc (ASN1_STRING_length (ec->enc_data) + EVP_MAX_BLOCK_LENGTH);
  if (ctx == NULL || EVP_DecryptInit_ex (ctx, cipher, NULL, g_bytes_get_data (cek, NULL), ivlen > 0 ? iv : NULL) != 1
      || EVP_DecryptUpdate (ctx, plain, &n1, ASN1_STRING_get0_data (ec->enc_data), ASN1_STRING_length (ec->enc_data)) != 1
      || EVP_DecryptFinal_ex (ctx, plain + n1, &n2) != 1)
    {
      g_autofree char *why = p11c_openssl_error_string ();
      g_free (plain);
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The SCEP CA's reply does not decrypt with %s (encrypted to another key, or damaged: %s)",
                   EVP_CIPHER_get0_name (cipher), why);
      return NULL;
    }
  out = g_bytes_new_take (plain, (gsize) (n1 + n2));
  return out;
}

static X509 *
issued_cert (const guint8 *der, gsize len, EVP_PKEY *request_key, GError **error)
{
  const unsigned char *p = der;
  g_autoptr(PKCS7) p7 = d2i_PKCS7 (NULL, &p, (long) len);
  STACK_OF(X509) *certs;

  if (p7 == NULL || p != der + len || !PKCS7_type_is_signed (p7) || p7->d.sign == NULL
      || (certs = p7->d.sign->cert) == NULL || sk_X509_num (certs) <= 0)
    {
      bad_reply (error, "decrypts, but holds no certificates");
      return NULL;
    }
  for (int i = 0; i < sk_X509_num (certs); i++)
    {
      X509 *c = sk_X509_value (certs, i);
      if (X509_get0_pubkey (c) != NULL && EVP_PKEY_eq (X509_get0_pubkey (c), request_key) == 1)
        {
          X509_up_ref (c);
          ERR_clear_error ();
          return c;
        }
    }
  ERR_clear_error ();
  g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
               "The SCEP CA returned %d certificate(s), none for the key of the request", sk_X509_num (certs));
  return NULL;
}

gboolean
p11c_scep_parse_reply (const P11cScepClient *cl, const guint8 *der, gsize len,
                       const char *transaction_id, const guint8 nonce[16],
                       EVP_PKEY *request_key, X509 **cert_out, GError **error)
{
  const unsigned char *p = der;
  g_autoptr(PKCS7) p7 = NULL;
  g_autoptr(P11cX509Stack) signer = sk_X509_new_null ();
  g_autoptr(BIO) content = BIO_new (BIO_s_mem ());
  g_autoptr(BIO) none = NULL;
  g_autoptr(GBytes) plain = NULL;
  STACK_OF(PKCS7_SIGNER_INFO) *sis;
  PKCS7_SIGNER_INFO *si;
  X509 *signer_cert;
  gsize slen = 0;
  const char *status;
  char *data;
  long dlen;

  oids_init ();
  *cert_out = NULL;
  if (der == NULL || len == 0 || len > G_MAXLONG || (p7 = d2i_PKCS7 (NULL, &p, (long) len)) == NULL
      || p != der + len || !PKCS7_type_is_signed (p7))
    return bad_reply (error, "is not a signed PKCS#7 pkiMessage");
  sis = PKCS7_get_signer_info (p7);
  if (sis == NULL || sk_PKCS7_SIGNER_INFO_num (sis) != 1)
    return bad_reply (error, "does not have exactly one signer");
  si = sk_PKCS7_SIGNER_INFO_value (sis, 0);
  signer_cert = si->issuer_and_serial
                  ? find_by_issuer_serial (cl->ca_certs, si->issuer_and_serial->issuer, si->issuer_and_serial->serial)
                  : NULL;
  if (signer_cert == NULL)
    return bad_reply (error, "is signed by a certificate that is neither the CA's nor its RA's");
  X509_up_ref (signer_cert);
  sk_X509_push (signer, signer_cert);
  if (PKCS7_get_detached (p7))
    none = BIO_new_mem_buf ("", 0);
  if (PKCS7_verify (p7, signer, NULL, none, content, PKCS7_NOVERIFY | PKCS7_NOINTERN | PKCS7_NOCHAIN | PKCS7_BINARY) != 1)
    return bad_reply (error, "has a signature that does not verify with the CA's certificate");

  if (!attr_equals (si, nid_message_type, V_ASN1_PRINTABLESTRING, "3", 1))
    return bad_reply (error, "is not a CertRep");
  if (!attr_equals (si, nid_transaction_id, V_ASN1_PRINTABLESTRING, transaction_id, strlen (transaction_id)))
    return bad_reply (error, "is for another transaction");
  if (!attr_equals (si, nid_recipient_nonce, V_ASN1_OCTET_STRING, nonce, 16))
    return bad_reply (error, "does not answer this request (recipientNonce differs)");
  status = attr_string (si, nid_pki_status, V_ASN1_PRINTABLESTRING, &slen);
  if (status == NULL || slen != 1)
    return bad_reply (error, "has no pkiStatus");
  if (status[0] == '3')
    {
      g_debug ("CertRep PENDING");
      return TRUE;
    }
  if (status[0] == '2')
    return fail_info_error (si, error);
  if (status[0] != '0')
    return bad_reply (error, "has an unknown pkiStatus");

  dlen = BIO_get_mem_data (content, &data);
  if (dlen <= 0)
    return bad_reply (error, "says SUCCESS but carries nothing");
  plain = open_envelope (cl, (const guint8 *) data, (gsize) dlen, error);
  if (plain == NULL)
    return FALSE;
  *cert_out = issued_cert (g_bytes_get_data (plain, NULL), g_bytes_get_size (plain), request_key, error);
  return *cert_out != NULL;
}

typedef struct {
  unsigned char *data;
  gsize          len;
} Wiped;

static void
wiped_free (gpointer p)
{
  Wiped *w = p;
  OPENSSL_clear_free (w->data, w->len);
  g_free (w);
}

/* GBytes owning OPENSSL_malloc'ed @data, wiped when freed */
static GBytes *
wiped_bytes_take (unsigned char *data, gsize len)
{
  Wiped *w = g_new (Wiped, 1);
  w->data = data;
  w->len = len;
  return g_bytes_new_with_free_func (data, len, wiped_free, w);
}

/* IssuerAndSubject ::= SEQUENCE { issuer Name, subject Name } */
static GBytes *
issuer_and_subject (X509_NAME *issuer, X509_NAME *subject)
{
  unsigned char *a = NULL, *b = NULL;
  int la = i2d_X509_NAME (issuer, &a), lb = i2d_X509_NAME (subject, &b);
  GByteArray *out = g_byte_array_new ();
  gsize body;
  guint8 hdr[6];
  gsize hl = 0;

  if (la <= 0 || lb <= 0)
    {
      OPENSSL_free (a);
      OPENSSL_free (b);
      g_byte_array_unref (out);
      return NULL;
    }
  body = (gsize) la + (gsize) lb;
  hdr[hl++] = 0x30;
  if (body < 0x80)
    hdr[hl++] = (guint8) body;
  else if (body < 0x100)
    hdr[hl++] = 0x81, hdr[hl++] = (guint8) body;
  else
    hdr[hl++] = 0x82, hdr[hl++] = (guint8) (body >> 8), hdr[hl++] = (guint8) body;
  g_byte_array_append (out, hdr, (guint) hl);
  g_byte_array_append (out, a, (guint) la);
  g_byte_array_append (out, b, (guint) lb);
  OPENSSL_free (a);
  OPENSSL_free (b);
  return g_byte_array_free_to_bytes (out);
}

gboolean
p11c_scep_pki_operation (const P11cEstServer *srv, const P11cScepClient *cl,
                         P11cScepMessageType type, X509_REQ *csr, GCancellable *cancel,
                         X509 **cert_out, GError **error)
{
  EVP_PKEY *key = X509_REQ_get0_pubkey (csr);
  g_autofree char *tid = p11c_scep_transaction_id (key);
  g_autoptr(GBytes) inner = NULL;
  g_autoptr(GBytes) msg = NULL;
  g_autoptr(GBytes) reply = NULL;
  g_autofree char *ctype = NULL;
  g_autofree char *url = NULL;
  guint8 nonce[16];
  const guint8 *data;
  gsize len;

  *cert_out = NULL;
  if (type == P11C_SCEP_CERT_POLL)
    inner = issuer_and_subject (X509_get_subject_name (cl->ca), X509_REQ_get_subject_name (csr));
  else
    {
      /* the CSR holds the challenge password: its copies are wiped */
      unsigned char *der = NULL;
      int n = i2d_X509_REQ (csr, &der);
      if (n > 0)
        inner = wiped_bytes_take (der, (gsize) n);
      else
        OPENSSL_free (der);
    }
  if (inner == NULL || RAND_bytes (nonce, sizeof nonce) != 1)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot encode the SCEP request");
      return FALSE;
    }
  msg = p11c_scep_build_message (cl, type, tid, nonce, g_bytes_get_data (inner, NULL),
                                 g_bytes_get_size (inner), error);
  if (msg == NULL)
    return FALSE;
  data = g_bytes_get_data (msg, &len);
  if (cl->caps & P11C_SCEP_CAP_POST)
    {
      url = operation_url (srv, "PKIOperation", NULL, error);
      if (url == NULL || !p11c_http_get_or_post (srv, url, CT_PKI_MESSAGE, CT_PKI_MESSAGE, data, len,
                                                 cancel, &ctype, &reply, error))
        return FALSE;
    }
  else
    {
      g_autofree char *b64 = g_base64_encode (data, len);
      url = operation_url (srv, "PKIOperation", b64, error);
      if (url == NULL || !p11c_http_get_or_post (srv, url, CT_PKI_MESSAGE, NULL, NULL, 0,
                                                 cancel, &ctype, &reply, error))
        return FALSE;
    }
  if (ctype == NULL || g_ascii_strncasecmp (ctype, CT_PKI_MESSAGE, strlen (CT_PKI_MESSAGE)) != 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The SCEP CA at %s answered with content type “%s” instead of " CT_PKI_MESSAGE,
                   srv->url, ctype ? ctype : "(none)");
      return FALSE;
    }
  data = g_bytes_get_data (reply, &len);
  if (!p11c_scep_parse_reply (cl, data, len, tid, nonce, key, cert_out, error))
    {
      g_prefix_error (error, "%s: ", srv->url);
      return FALSE;
    }
  return TRUE;
}
