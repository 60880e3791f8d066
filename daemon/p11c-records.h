#pragma once
/* What the daemon remembers about the certificates it issued and about the
 * PIN files an admin gave it — no D-Bus, no tokens opened here.
 *
 * Issuance records (STATE/issued.ini, one group per certificate SHA-256):
 * the CA profile, where the certificate was written (storage, URI, and for a
 * token its serial, label, model and manufacturer), the SHA-256 of its
 * SubjectPublicKeyInfo and who enrolled it.  The daemon is their only
 * writer: they are read once, kept in memory and written through on every
 * change; p11c_records_generation() changes with them (a cache of anything
 * derived from them compares it).
 *
 * Refused PIN files (STATE/pin-refused.ini, keyed digests under a key in
 * STATE/pin-refused.key): a token that refused the PIN of a PIN file is not
 * sent that file's PIN again, across restarts, until the file's content
 * changes. */
#include <glib.h>
#include <p11-kit/pkcs11.h>
#include "p11c-openssl.h"

G_BEGIN_DECLS

typedef struct {
  char    *sha256;         /* the certificate's fingerprint */
  char    *ca;             /* CA profile that issued it */
  char    *uri;            /* where it was written (pkcs11:…, system:NAME, file:…) */
  char    *storage;        /* "token", "system" or "file" */
  gint64   not_after;
  /* the token it was written to (storage "token") */
  char    *token_serial;
  char    *token_label;
  char    *token_model;
  char    *token_manufacturer;
  char    *key_sha256;     /* SHA-256 of the SubjectPublicKeyInfo */
  gint64   enrolled_by;    /* uid; -1 when not known */
  gboolean legacy;         /* written by an older version: the token is known
                            * only by the URI; made whole at its renewal */
} P11cIssued;

/* A record of @cert as issued by @ca into @uri; @token: the token's info
 * (storage "token"), NULL otherwise. */
P11cIssued *p11c_issued_new (X509 *cert, const char *ca, const char *uri, const char *storage,
                             const CK_TOKEN_INFO *token, gint64 enrolled_by);
P11cIssued *p11c_issued_copy (const P11cIssued *rec);
void p11c_issued_free (P11cIssued *rec);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cIssued, p11c_issued_free)

/* Is @info the token the record names?  Serial, label, model and
 * manufacturer must all be equal (an old record: what its URI names). */
gboolean p11c_issued_is_on_token (const P11cIssued *rec, const CK_TOKEN_INFO *info);
/* The CA profile of @rec when the certificate listed at @uri is where the
 * record says it was written: on the token @token (serial, label, model and
 * manufacturer), or the system entry @uri (@token NULL).  NULL for a copy
 * elsewhere, and for a file. */
const char *p11c_issued_ca_at (const P11cIssued *rec, const char *uri, const CK_TOKEN_INFO *token);
/* "token \"agent\" (serial 1234)" of the record, for messages */
char *p11c_issued_describe_token (const P11cIssued *rec);

typedef struct _P11cRecords P11cRecords;

/* Load the records of @state_dir (missing file: none). */
P11cRecords *p11c_records_new (const char *state_dir);
void p11c_records_free (P11cRecords *records);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cRecords, p11c_records_free)

/* Changes whenever a record is added, replaced or dropped. Any thread. */
guint64 p11c_records_generation (P11cRecords *records);

/* A copy of the record of @sha256, NULL when there is none. */
P11cIssued *p11c_records_lookup (P11cRecords *records, const char *sha256);
/* sha256 → a copy of its record (P11cIssued), a snapshot */
GHashTable *p11c_records_map (P11cRecords *records);
/* Every record, copies (P11cIssued) */
GPtrArray *p11c_records_list (P11cRecords *records);

/* Add @rec (taken), dropping the record of @replaced_sha256 (may be NULL):
 * both in one write. */
gboolean p11c_records_put (P11cRecords *records, P11cIssued *rec, const char *replaced_sha256,
                           GError **error);
/* Forget the records of @sha256s (char *); the count dropped. */
guint p11c_records_forget (P11cRecords *records, GPtrArray *sha256s);

/* ---- PIN files --------------------------------------------------------- */

/* The PIN in @path (a regular file owned by root, not readable by others;
 * first line), for profile @profile_name (messages).  A secret. */
char *p11c_pin_file_read (const char *path, const char *profile_name, GError **error);

/* Did the token @info refuse the PIN @pin read from @path?  (A keyed digest
 * of the PIN and the file's path are compared; a changed file is tried
 * again.) */
gboolean p11c_records_pin_refused (P11cRecords *records, const CK_TOKEN_INFO *info, const char *path,
                                   const char *pin);
/* The token @info refused @pin read from @path: remember it (persisted,
 * 0600, atomically). */
void p11c_records_pin_refused_add (P11cRecords *records, const CK_TOKEN_INFO *info, const char *path,
                                   const char *pin);

G_END_DECLS
