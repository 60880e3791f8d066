#pragma once
#include <glib.h>
#include <p11-kit/pkcs11.h>

G_BEGIN_DECLS

/* RFC 7512 PKCS#11 URIs, through p11-kit's reference implementation. */

typedef enum {
  P11C_OBJECT_ANY = 0,
  P11C_OBJECT_CERT,
  P11C_OBJECT_PRIVATE,
  P11C_OBJECT_PUBLIC,
} P11cObjectType;

typedef struct {
  /* token attributes present in the URI (NULL when absent) */
  char   *token;          /* label */
  char   *manufacturer;
  char   *model;
  char   *serial;
  /* object attributes */
  char   *object;         /* CKA_LABEL */
  GBytes *id;             /* CKA_ID */
  P11cObjectType type;
} P11cUri;

void p11c_uri_free (P11cUri *uri);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cUri, p11c_uri_free)

/* Parse a "pkcs11:" URI.  Unknown query attributes (pin-value included) are
 * refused: a URI names objects, it never carries a PIN. */
P11cUri *p11c_uri_parse (const char *string, GError **error);

/* Does the token part of @uri match this token?  (absent attributes match) */
gboolean p11c_uri_matches_token (const P11cUri *uri, const CK_TOKEN_INFO *info);

/* Build the URI of a token, or of an object on it (@id may be NULL,
 * @label may be NULL). */
char *p11c_uri_for_token (const CK_TOKEN_INFO *info);
char *p11c_uri_for_object (const CK_TOKEN_INFO *info, P11cObjectType type,
                           const guint8 *id, gsize id_len, const char *label);

/* CKA_ID as lower-case hex ("" for an empty id), and back (NULL when @hex
 * is not an even number of hex digits) */
char *p11c_id_to_hex (GBytes *id);
GBytes *p11c_id_from_hex (const char *hex);

/* Token identity.  PKCS#11 pads CK_TOKEN_INFO strings with blanks; some
 * modules pad with NUL bytes instead (tpm2-pkcs11's model).  Everywhere a
 * field is read, a NUL ends it and trailing blanks are trimmed
 * (p11c_padded_string).  URIs built here never carry a NUL: a NUL-padded
 * manufacturer or model is left out of the URI (p11-kit compares those
 * fields byte for byte, NULs included, so a trimmed value would match
 * nothing in gnutls or p11tool; absent, it matches); a NUL-padded label or
 * serial is written trimmed.
 *
 * The same token: label, manufacturer, model and serial all equal (a serial
 * alone is not unique: tpm2-pkcs11 and NSS report 0000000000000000). */
gboolean p11c_token_info_same (const CK_TOKEN_INFO *a, const CK_TOKEN_INFO *b);
/* A stable D-Bus path element for the token: its serial (letters and
 * digits, others as '_'), '_', then 8 hex digits of SHA-256 over
 * manufacturer, model, label and serial (trimmed, NUL-separated). */
char *p11c_token_identity_id (const CK_TOKEN_INFO *info);

/* Blank-padded PKCS#11 fixed-size string → trimmed UTF-8 (invalid bytes
 * replaced) */
char *p11c_padded_string (const CK_UTF8CHAR *s, gsize len);

G_END_DECLS
