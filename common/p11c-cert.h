#pragma once
#include <glib.h>
#include "p11c-openssl.h"

G_BEGIN_DECLS

/* What ListCerts shows about one X.509 certificate. */
typedef struct {
  char   *subject;     /* RFC 2253 one-line form */
  char   *issuer;
  char   *serial;      /* hex, upper-case */
  gint64  not_before;  /* Unix time */
  gint64  not_after;
  char   *sha256;      /* hex fingerprint of the DER, lower-case, no colons */
  char   *key_type;    /* "ec-p256", "rsa-2048", ... */
} P11cCertSummary;

void p11c_cert_summary_free (P11cCertSummary *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cCertSummary, p11c_cert_summary_free)

P11cCertSummary *p11c_cert_summary_from_der (const guint8 *der, gsize len, GError **error);
P11cCertSummary *p11c_cert_summary_from_x509 (X509 *cert);

/* Hex SHA-256 of a buffer, lower-case */
char *p11c_sha256_hex (const guint8 *data, gsize len);

/* Key type name for a public key ("ec-p256", "ec-p384", "rsa-2048", ...) */
char *p11c_pkey_type_name (EVP_PKEY *pkey);

G_END_DECLS
