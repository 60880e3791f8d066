/* p11c-scep — SCEP client (RFC 8894): GetCACaps, GetCACert, PKIOperation
 * (PKCSReq, RenewalReq, CertPoll/GetCertInitial) and the CertRep reply.
 *
 * No D-Bus and no token I/O here: the caller gives the key that signs the
 * pkiMessage (an EVP_PKEY; a token-backed one from p11c-tokenkey signs on
 * the token) and a callback that decrypts the reply's content-encryption
 * key with the private key of the signer certificate (C_Decrypt
 * CKM_RSA_PKCS on a token); the content cipher runs here, in OpenSSL.
 * The HTTP transport is p11c_http_get_or_post (p11c-est.c).
 *
 * Network calls block: run them in a worker thread.  Errors are P11C_ERROR:
 *   CA_UNREACHABLE  transport failures, HTTP 5xx (retryable)
 *   CA_REJECTED     CertRep FAILURE (badRequest — e.g. a wrong or used
 *                   challenge password —, badMessageCheck, badTime,
 *                   badCertId, badAlg), HTTP 4xx
 *   CA_BAD_REPLY    a reply that is not a valid CertRep for this request:
 *                   not PKCS#7, signed by a certificate that is not the
 *                   CA's or RA's, a signature that does not verify, wrong
 *                   transaction id or nonce, encrypted to another
 *                   certificate, no certificate for the request's key;
 *                   a GetCACert reply with no CA matching the profile
 *   INVALID_ARGS    a bad URL (not http(s), a query), no way to trust the CA
 *   CANCELLED
 */
#pragma once

#include <gio/gio.h>
#include "p11c-est.h"
#include "p11c-openssl.h"

G_BEGIN_DECLS

typedef enum {
  P11C_SCEP_CAP_RENEWAL  = 1 << 0,
  P11C_SCEP_CAP_AES      = 1 << 1,
  P11C_SCEP_CAP_DES3     = 1 << 2,
  P11C_SCEP_CAP_SHA256   = 1 << 3,
  P11C_SCEP_CAP_SHA512   = 1 << 4,
  P11C_SCEP_CAP_POST     = 1 << 5,
  P11C_SCEP_CAP_STANDARD = 1 << 6,   /* SCEPStandard: AES, SHA-256, POST */
} P11cScepCaps;

typedef enum {
  P11C_SCEP_RENEWAL_REQ = 17,
  P11C_SCEP_PKCS_REQ    = 19,
  P11C_SCEP_CERT_POLL   = 20,        /* GetCertInitial */
} P11cScepMessageType;

/* The GetCACaps body (one capability per line, any case) → P11cScepCaps. */
guint p11c_scep_parse_caps (const char *text, gsize len);

gboolean p11c_scep_get_caps (const P11cEstServer *srv, GCancellable *cancel, guint *caps_out,
                             GError **error);

/* GetCACert.  The CA certificate is the one whose SHA-256 fingerprint is
 * @fingerprint (hex, ':' and spaces allowed), or, without one, the CA
 * certificate that verifies against @srv->trust_anchor; one of them is
 * required.  *recipient_out is the RA certificate (issued by the CA, RSA,
 * not a CA) when the reply has one, else the CA itself (must be RSA).
 * *certs_out: the CA (first) and every other certificate of the reply. */
gboolean p11c_scep_get_ca (const P11cEstServer *srv, const char *fingerprint, GCancellable *cancel,
                           X509 **ca_out, X509 **recipient_out, P11cX509Stack **certs_out,
                           GError **error);

/* Decrypts @in (RSA PKCS#1 v1.5) with the private key of the signer
 * certificate; returns the plaintext or NULL with @error. */
typedef GBytes *(*P11cScepDecrypt) (gpointer data, const guint8 *in, gsize len, GError **error);

typedef struct {
  guint            caps;
  X509            *ca;
  X509            *recipient;     /* the request is encrypted to it */
  P11cX509Stack   *ca_certs;      /* a CertRep must be signed by one of these */
  X509            *signer_cert;   /* transient self-signed (PKCSReq) or the current one (RenewalReq) */
  EVP_PKEY        *signer_key;
  P11cScepDecrypt  decrypt;
  gpointer         decrypt_data;
} P11cScepClient;

/* One PKIOperation of @type for @csr (CertPoll asks for the certificate
 * of @csr's subject from the CA).  TRUE: *cert_out is the issued
 * certificate for @csr's key (SUCCESS), or NULL when the CA answered
 * PENDING.  FAILURE and every problem: FALSE with @error. */
gboolean p11c_scep_pki_operation (const P11cEstServer *srv, const P11cScepClient *cl,
                                  P11cScepMessageType type, X509_REQ *csr, GCancellable *cancel,
                                  X509 **cert_out, GError **error);

/* Pure parts, for the unit tests and the fuzzer. */

/* The signed, encrypted pkiMessage (DER) for @inner, with @nonce (16
 * bytes) as senderNonce and @transaction_id. */
GBytes *p11c_scep_build_message (const P11cScepClient *cl, P11cScepMessageType type,
                                 const char *transaction_id, const guint8 nonce[16],
                                 const guint8 *inner, gsize inner_len, GError **error);

/* Check a CertRep (DER) against the request it answers and, on SUCCESS,
 * decrypt it: as p11c_scep_pki_operation. */
gboolean p11c_scep_parse_reply (const P11cScepClient *cl, const guint8 *der, gsize len,
                                const char *transaction_id, const guint8 nonce[16],
                                EVP_PKEY *request_key, X509 **cert_out, GError **error);

/* Transaction id of a request: hex SHA-256 of its public key (DER SPKI). */
char *p11c_scep_transaction_id (EVP_PKEY *key);

G_END_DECLS
