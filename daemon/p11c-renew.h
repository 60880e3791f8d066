#pragma once
/* Renewal bookkeeping: which CA profile issued each certificate the daemon
 * enrolled (STATE/issued.ini, keyed by SHA-256 fingerprint), and the PIN
 * sources an admin configured for unattended renewal. */
#include <glib.h>
#include "p11c-openssl.h"
#include "p11c-config.h"

G_BEGIN_DECLS

/* Remember that @cert came from profile @ca; forget @replaced (may be NULL). */
void p11c_issued_record (const char *state_dir, X509 *cert, const char *ca, const char *uri, X509 *replaced);
/* sha256 → profile name */
GHashTable *p11c_issued_load (const char *state_dir);
/* Drop the entries whose certificate is gone (@present: set of sha256) —
 * system-store ones, and token ones whose token is among @tokens (present
 * now; an unplugged token keeps its records). */
void p11c_issued_prune_missing (const char *state_dir, GHashTable *present, GPtrArray *tokens);

/* The token PIN for unattended renewal from the profile's pin-file, which
 * must be a regular file owned by root and not readable by others.  NULL
 * when none is configured (a person must renew); sets @error when the file
 * is unsafe or unreadable. */
char *p11c_profile_read_pin (const P11cCaProfile *profile, GError **error);

G_END_DECLS
