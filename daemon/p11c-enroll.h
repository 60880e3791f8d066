#pragma once
/* Enrollment: key pair on the token (or in software for system/file), CSR,
 * certificate from the CA (EST or the local CA), written next to the key.
 * Runs in a worker thread as a job. */
#include <gio/gio.h>
#include "p11c-wire.h"
#include "p11c-engine.h"
#include "p11c-job.h"

G_BEGIN_DECLS

typedef struct _P11cEnrollRequest P11cEnrollRequest;

/* Validate and resolve a request on the main thread (token, CA profile,
 * secrets, fd).  Errors name the offending key.  @token: the token
 * @params->token named, when the caller resolved it (an object path);
 * NULL: resolve it here as a PKCS#11 URI.  @fd: the output file the
 * caller passed (taken), -1: none. */
P11cEnrollRequest *p11c_enroll_request_new (P11cEngine *engine, const P11cEnrollParams *params,
                                            P11cToken *token, int fd, GError **error);
void p11c_enroll_request_free (P11cEnrollRequest *req);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cEnrollRequest, p11c_enroll_request_free)

/* A renewal (built by the renewal module, p11c-renewal.h): the
 * certificate and where it is, already checked against its issuance
 * record. */
typedef struct {
  const P11cCaProfile *ca;
  X509        *old_cert;     /* the certificate renewed (a reference is taken) */
  P11cToken   *token;        /* its token; NULL: the system store */
  GBytes      *old_id;       /* token: the certificate's CKA_ID */
  const char  *label;        /* token: its label, kept */
  const char  *name;         /* system store: the entry */
  EVP_PKEY    *old_key;      /* system store: the entry's key (a reference is taken) */
  const char  *pin;          /* token: copied; wiped with the request */
  const char  *pin_file;     /* the PIN is an admin's PIN file's (nobody typed it), or NULL */
  gboolean     rekey;
  P11cKeyType  key_type;
  gint64       enrolled_by;  /* uid kept in the new record; -1: the job's owner */
} P11cRenewSpec;

P11cEnrollRequest *p11c_enroll_request_new_renewal (P11cEngine *engine, const P11cRenewSpec *spec);
/* SHA-256 of the certificate a renewal replaces; NULL for an enrollment */
const char *p11c_enroll_request_get_renewed (const P11cEnrollRequest *req);

/* Blocking: run the enrollment, updating @job.  Returns the new
 * certificate's URI. */
char *p11c_enroll_run (P11cEngine *engine, P11cJob *job, P11cEnrollRequest *req, GError **error);

/* Blocking: the CA certificate the profile @name trusts, as PEM (the local
 * CA's own; a SCEP CA's, fetched, when only its fingerprint is configured;
 * else the profile's trust anchor).  NotFound: no such profile. */
char *p11c_enroll_ca_certificate_pem (P11cEngine *engine, const char *name, GError **error);

/* At start: remove keys that a dead enrollment generated but never
 * finished (recorded in the state directory before generation). */
void p11c_enroll_recover (P11cEngine *engine);

G_END_DECLS
