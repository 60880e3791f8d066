#pragma once
/* Enrollment: key pair on the token (or in software for system/file), CSR,
 * certificate from the CA (EST or the local CA), written next to the key.
 * Runs in a worker thread as a job. */
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include "p11c-engine.h"
#include "p11c-job.h"

G_BEGIN_DECLS

typedef struct _P11cEnrollRequest P11cEnrollRequest;

/* polkit actions the request needs (NULL-terminated, static strings) */
void p11c_enroll_request_actions (GVariant *request, const char *actions[4]);

/* Validate and resolve a request on the main thread (token, CA profile,
 * secrets, fd).  Errors name the offending key. */
P11cEnrollRequest *p11c_enroll_request_new (P11cEngine *engine, GVariant *request,
                                            GUnixFDList *fds, GError **error);
void p11c_enroll_request_free (P11cEnrollRequest *req);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cEnrollRequest, p11c_enroll_request_free)

/* A renewal of @entry (on @token, or in the system store when @token is
 * NULL) through CA profile @ca_name; options: pin s, rekey b (default true). */
P11cEnrollRequest *p11c_renew_request_new (P11cEngine *engine, P11cCertEntry *entry, P11cToken *token,
                                           const char *ca_name, GVariant *options, GError **error);

/* The request's PIN comes from an admin's PIN file, not from a person:
 * once the token refused it, it is not sent again (see p11c_token_login). */
void p11c_enroll_request_set_unattended (P11cEnrollRequest *req);

/* Blocking: run the enrollment, updating @job.  Returns the new
 * certificate's URI. */
char *p11c_enroll_run (P11cEngine *engine, P11cJob *job, P11cEnrollRequest *req, GError **error);

/* At start: remove keys that a dead enrollment generated but never
 * finished (recorded in the state directory before generation). */
void p11c_enroll_recover (P11cEngine *engine);

G_END_DECLS
