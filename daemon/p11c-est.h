/* p11c-est — EST client (RFC 7030) over libcurl.
 *
 * All network calls block: run them in a worker thread, never on the main
 * loop.  Each call uses its own curl handle, so calls from several threads
 * at once are fine — unless the server names a P11cEstConn: then the calls
 * share its connection and TLS session (one thread at a time).  Errors are
 * P11C_ERROR:
 *
 *   CA_UNREACHABLE  connection refused, DNS, timeout, TLS handshake failure,
 *                   server certificate not trusted by the trust anchor,
 *                   HTTP 5xx, connection closed without a reply (retryable)
 *   CA_REJECTED     HTTP 401/403 (login / one-time password refused) and any
 *                   other 4xx (message carries the server's text), TLS client
 *                   certificate refused by the server
 *   CA_BAD_REPLY    2xx/3xx that is not a usable answer: wrong content type,
 *                   bad base64, bad PKCS#7, no (matching) certificate, reply
 *                   larger than 1 MiB, redirect
 *   CANCELLED       @cancel was triggered (noticed within about a second)
 *   INVALID_ARGS    bad profile (no trust anchor, not https, credentials in
 *                   the URL, bad label) or a CSR that does not parse
 *   FAILED          local problems: unreadable trust anchor file, client
 *                   certificate/key that OpenSSL refuses
 */
#pragma once

#include <gio/gio.h>
#include "p11c-openssl.h"

G_BEGIN_DECLS

/* Longest reply body accepted; beyond it the transfer is aborted. */
#define P11C_EST_MAX_REPLY (1024 * 1024)
/* Retry-After used when a 202 reply has none or an invalid one. */
#define P11C_EST_DEFAULT_RETRY_AFTER 60
#define P11C_EST_MAX_RETRY_AFTER 86400

/* HTTP authentication of simpleenroll (the login + one-time password). */
typedef enum {
  P11C_EST_AUTH_AUTO = 0, /* ask without credentials first (costs no one-time
                           * password) and answer the challenge: Digest if
                           * offered, else Basic */
  P11C_EST_AUTH_BASIC,    /* Basic, sent at once (one request per attempt) */
  P11C_EST_AUTH_DIGEST,   /* Digest only (RFC 7616): no Basic credentials ever
                           * go out; some servers answer them with a bare 401 */
} P11cEstAuth;

gboolean    p11c_est_auth_from_string (const char *name, P11cEstAuth *out);
const char *p11c_est_auth_to_string (P11cEstAuth auth);
/* A connection kept between requests to one server with the same TLS
 * settings (a job's cacerts and simpleenroll): one TCP connection, one TLS
 * handshake.  Used by one thread at a time. */
typedef struct _P11cEstConn P11cEstConn;
P11cEstConn *p11c_est_conn_new (void);
void p11c_est_conn_free (P11cEstConn *conn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cEstConn, p11c_est_conn_free)

typedef struct {
  const char *url;          /* "https://host:port[/prefix]" — https only, no user:pass@ */
  const char *label;        /* optional EST label: /.well-known/est/<label>/…; NULL/"" = none */
  const char *trust_anchor; /* PEM file, the ONLY trust used for TLS; required */
  guint connect_timeout;    /* seconds; 0 = 10 */
  guint timeout;            /* seconds, whole request; 0 = 60 */
  X509 *client_cert;        /* optional, TLS client auth (simplereenroll) */
  EVP_PKEY *client_key;     /* required with client_cert; may be token-backed, used in memory only */
  P11cX509Stack *client_chain; /* optional intermediates sent with client_cert */
  P11cEstAuth auth;         /* how the login is sent (simpleenroll) */
  P11cEstConn *conn;        /* optional: requests share its connection */
} P11cEstServer;

/* GET /cacerts → the CA certificates (caller frees, never empty). */
P11cX509Stack *p11c_est_get_cacerts (const P11cEstServer *srv,
                                     GCancellable        *cancel,
                                     GError             **error);

/* POST /simpleenroll (reenroll=FALSE) or /simplereenroll (reenroll=TRUE).
 * @login/@password: sent over the verified TLS connection as @srv->auth
 * says (see P11cEstAuth).  A request carrying the credentials is made at
 * most once: a 401 to it is final (CA_REJECTED), never answered by sending
 * the one-time password again.  @login may be NULL for simplereenroll with
 * TLS client auth; a 401 there with a Basic challenge means the CA wants a
 * login for renewal too (CA_REJECTED saying so).  @password is never copied
 * by this module except into curl, and never logged.
 *
 * 200: *cert_out = the issued certificate whose public key is the CSR's key
 *      (CA_BAD_REPLY if the reply has none), *retry_after_out = 0, TRUE.
 * 202: *cert_out = NULL, *retry_after_out = Retry-After in seconds
 *      ([1, 86400], 60 when missing/invalid), TRUE. */
gboolean p11c_est_enroll (const P11cEstServer *srv,
                          gboolean             reenroll,
                          const guint8        *csr_der,
                          gsize                csr_len,
                          const char          *login,
                          const char          *password,
                          GCancellable        *cancel,
                          X509               **cert_out,
                          guint               *retry_after_out,
                          GError             **error);

/* One plain HTTP(S) exchange for another CA protocol (SCEP): @url as it
 * is, http:// or https:// (TLS checked against @srv->trust_anchor when set,
 * else the system's trust store; no login, no client certificate), GET
 * when @post is NULL.  Only a 200 is a success: *body_out (and
 * *content_type_out, may be NULL) are the reply.  Errors as for EST:
 * transport failures and 5xx CA_UNREACHABLE, 4xx CA_REJECTED, 3xx and a
 * reply over P11C_EST_MAX_REPLY CA_BAD_REPLY, CANCELLED. */
gboolean p11c_http_get_or_post (const P11cEstServer *srv, const char *url, const char *accept,
                                const char *content_type, const guint8 *post, gsize post_len,
                                GCancellable *cancel, char **content_type_out, GBytes **body_out,
                                GError **error);

/* Pure parsers (no I/O; fuzzed). */

/* Base64 (line breaks CRLF/LF and whitespace allowed, padding optional) of a
 * DER PKCS#7 certs-only SignedData; a PEM "-----BEGIN PKCS7-----" wrapper is
 * tolerated.  Returns the certificates (never empty) or CA_BAD_REPLY. */
P11cX509Stack *p11c_est_parse_certs_only (const char *body,
                                          gsize       len,
                                          GError    **error);

/* RFC 9110 Retry-After: delta-seconds or HTTP-date (IMF-fixdate, and the
 * obsolete RFC 850 / asctime forms), relative to @now (Unix seconds).
 * The result is clamped to [1, 86400] (a date in the past gives 1).
 * FALSE for NULL or anything else (e.g. "-5", "soon"). */
gboolean p11c_est_parse_retry_after (const char *value,
                                     gint64      now,
                                     guint      *seconds_out);

/* TRUE for "application/pkcs7-mime" (or the legacy
 * "application/x-pkcs7-mime"), any case, with or without parameters. */
gboolean p11c_est_content_type_is_pkcs7 (const char *content_type);

G_END_DECLS
