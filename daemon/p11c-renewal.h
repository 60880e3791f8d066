#pragma once
/* Renewal, in one place: which certificates the daemon sees, which of them
 * are due, who must type a PIN, when a PIN file may be used, the request
 * that renews one certificate, and the CertificateExpiring plan — on top
 * of the issuance records (p11c-records.h).  No D-Bus here: typed in, GError
 * out.  Everything that reads tokens is blocking (worker thread). */
#include "p11c-engine.h"
#include "p11c-enroll.h"
#include "p11c-records.h"

G_BEGIN_DECLS

/* Renewal window: due when 2/3 of the lifetime has passed or fewer than
 * @window_days remain, whichever comes first.  Sets *days_left (may be
 * negative once expired). */
gboolean p11c_renewal_due (gint64 not_before, gint64 not_after, gint64 now,
                           guint window_days, gint64 *days_left);

/* A certificate the daemon can see: on @token, or in the system store. */
typedef struct {
  P11cCertEntry *entry;
  P11cToken     *token;     /* NULL: the system store */
} P11cFoundCert;

/* Every certificate on @tokens (a snapshot of the engine's tokens) and in
 * the system store.  @listed (optional): the tokens of @tokens whose
 * certificates were listed; one that failed to list (busy, removed
 * meanwhile, device error) is left out, so nothing is concluded about it. */
GPtrArray *p11c_renewal_collect (P11cEngine *engine, GPtrArray *tokens, GPtrArray **listed);

/* Renew(uri): the request renewing the certificate @uri on @tokens or in the
 * system store.  @pin: the token PIN a person gave (token certificates);
 * @rekey: a new key (default) or the current one. */
P11cEnrollRequest *p11c_renewal_resolve (P11cEngine *engine, GPtrArray *tokens, const char *uri,
                                         const char *pin, gboolean rekey, GError **error);

/* A due certificate nobody can renew without a person, and why. */
typedef struct {
  char      *uri;
  char      *subject;
  char      *ca;
  gint64     not_after;
  gint64     days_left;
  char      *reason;
  char      *reason_code; /* stable id for clients: pin-needed, pin-file-other-token,
                           * pin-file-unusable, pin-refused */
  P11cToken *token;
} P11cNeedsPerson;

typedef struct {
  GPtrArray *requests;       /* P11cEnrollRequest, to run as jobs */
  GPtrArray *system_requests; /* the system store's: they need the caller's
                               * right to renew the system store, which the
                               * bus face checks */
  GPtrArray *system_uris;    /* the URI of each of system_requests */
  GPtrArray *needs_person;   /* P11cNeedsPerson */
  GPtrArray *not_renewable;  /* char *uri: no profile any more, unreadable, a copy */
  GHashTable *why_not;       /* uri → why it is not renewable */
  GHashTable *why_not_code;  /* uri → stable id: not-in-place, profile-gone, request-failed,
                              * not-authorized */
} P11cDuePlan;

void p11c_due_plan_free (P11cDuePlan *plan);
/* The caller may not renew the system store: its due entries become
 * not_renewable, saying so. */
void p11c_due_plan_drop_system (P11cDuePlan *plan, const char *why);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cDuePlan, p11c_due_plan_free)

/* RenewDue: plan the renewal of every certificate due at @now on @tokens and
 * in the system store; forget the records of certificates that are gone
 * from the tokens that could be listed. */
P11cDuePlan *p11c_renewal_plan_due (P11cEngine *engine, GPtrArray *tokens, gint64 now);

/* One renewal per certificate at a time.  The job (its path) renewing the
 * certificate @sha256 now, NULL when none; claim when a renewal job starts,
 * release when it ended.  Any thread. */
char *p11c_renewal_running (const char *sha256);
void p11c_renewal_claim (const char *sha256, const char *job);
void p11c_renewal_release (const char *sha256);

/* CertificateExpiring: of @found (P11cFoundCert), the entries whose
 * not_after - @warn_seconds has passed at @now and whose SHA-256 is not in
 * @announced yet (added to it) go into @crossing (P11cCertEntry, refs);
 * returns the next crossing after @now, G_MAXINT64 when none. */
gint64 p11c_renewal_expiry_scan (GPtrArray *found, gint64 now, gint64 warn_seconds,
                                 GHashTable *announced, GPtrArray *crossing);

G_END_DECLS
