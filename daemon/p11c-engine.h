#pragma once
/* The engine: modules, tokens, cached certificate lists and the token
 * operations.  No D-Bus here.  Token operations are blocking and run in
 * worker threads; the token table itself belongs to the main thread. */
#include <glib.h>
#include <gio/gio.h>
#include "p11c-config.h"
#include "p11c-cert.h"
#include "p11c-pkcs11.h"
#include "p11c-records.h"
#include "p11c-uri.h"

G_BEGIN_DECLS

typedef struct {
  char       *name;
  char       *description;
  P11cModule *module;    /* NULL when loading failed */
  char       *error;
} P11cModuleState;

typedef struct _P11cToken P11cToken;
struct _P11cToken {
  gint          ref;
  char         *id;          /* sanitised stable id, last path element */
  char         *object_path;
  char         *uri;
  P11cModule   *module;
  char         *module_name;
  char         *pending_dir;  /* STATE/pending: keys of unfinished enrollments */
  CK_SLOT_ID    slot;
  /* ---- guarded by lock ---- */
  GMutex        lock;
  CK_SLOT_INFO  slot_info;
  CK_TOKEN_INFO info;
  GPtrArray    *certs;       /* cached P11cCertEntry list, NULL = stale */
  guint         generation;
  gboolean      present;
  gboolean      pin_rejected;     /* the token refused the PIN whose */
  guint8        rejected_pin[32]; /* keyed digest this is (see p11c_token_login) */
  /* ---- serialisation ---- */
  GMutex        op_lock;     /* one PKCS#11 session phase at a time */
  GCond         job_cond;    /* one job (enroll/renew) at a time: */
  gboolean      job_busy;    /* guarded by lock */
};

P11cToken *p11c_token_ref (P11cToken *t);
void p11c_token_unref (P11cToken *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cToken, p11c_token_unref)

/* Wait (cancellably, no polling) until no other job runs on the token and
 * take it; FALSE when @cancel fired first. */
gboolean p11c_token_job_acquire (P11cToken *t, GCancellable *cancel);
void p11c_token_job_release (P11cToken *t);

/* Snapshot of token info under the lock */
void p11c_token_get_info (P11cToken *t, CK_TOKEN_INFO *info, CK_SLOT_INFO *slot_info);
void p11c_token_invalidate (P11cToken *t);

typedef struct {
  gint             ref;
  char            *uri;
  char            *storage;    /* "token", "system" */
  char            *token_path; /* object path or "/" */
  char            *label;
  GBytes          *id;
  GBytes          *der;
  P11cCertSummary *summary;    /* NULL when the value does not parse */
  char            *error;      /* why summary is NULL */
  gboolean         has_private_key;
} P11cCertEntry;

P11cCertEntry *p11c_cert_entry_ref (P11cCertEntry *e);
void p11c_cert_entry_unref (P11cCertEntry *e);

typedef struct _P11cEngine P11cEngine;

typedef struct {
  void (*token_added)   (P11cEngine *engine, P11cToken *token, gpointer user_data);
  void (*token_removed) (P11cEngine *engine, P11cToken *token, gpointer user_data);
  void (*token_changed) (P11cEngine *engine, P11cToken *token, gpointer user_data);
} P11cEngineCallbacks;

struct _P11cEngine {
  P11cConfig          *config;
  GPtrArray           *modules;   /* P11cModuleState */
  GPtrArray           *tokens;    /* P11cToken, main thread only */
  GPtrArray           *cas;       /* P11cCaProfile */
  P11cRecords         *records;   /* issuance records, refused PIN files */
  P11cEngineCallbacks  callbacks;
  gpointer             user_data;
  GMutex               scan_lock;
  /* worker threads inside the engine (see p11c_engine_wait_workers) */
  GMutex               workers_lock;
  GCond                workers_cond;
  guint                workers;
};

P11cEngine *p11c_engine_new (P11cConfig *config);   /* takes config */
void p11c_engine_free (P11cEngine *engine);
void p11c_engine_load_modules (P11cEngine *engine);
/* The issuance records (see p11c-records.h; p11c_records_generation()). */
P11cRecords *p11c_engine_get_records (P11cEngine *engine);

/* Every worker is counted from the moment it is queued until its work is
 * done, so shutdown can wait for them before the modules and the daemon go
 * (a thread inside a module being unloaded crashes; one the pool starts
 * after the daemon was freed reads freed memory).  run_worker queues
 * @func(task) on GLib's thread pool counted that way; wait_workers returns
 * FALSE on timeout. */
void p11c_engine_run_worker (P11cEngine *engine, GTask *task, GTaskThreadFunc func);
void p11c_engine_worker_enter (P11cEngine *engine);
void p11c_engine_worker_leave (P11cEngine *engine);
gboolean p11c_engine_wait_workers (P11cEngine *engine, gint64 timeout_usec);

/* Re-enumerate every module's slots.  Blocking (thread); the result is
 * applied on the main thread with p11c_engine_apply_scan(). */
GPtrArray *p11c_engine_scan (P11cEngine *engine);
void p11c_engine_apply_scan (P11cEngine *engine, GPtrArray *scan);
void p11c_engine_rescan_async (P11cEngine *engine, GCancellable *cancel,
                               GAsyncReadyCallback cb, gpointer user_data);
gboolean p11c_engine_rescan_finish (P11cEngine *engine, GAsyncResult *res, GError **error);

P11cToken *p11c_engine_find_token_by_path (P11cEngine *engine, const char *path);
/* Resolve a token given as a PKCS#11 URI or an object path; exactly one
 * token must match. */
P11cToken *p11c_engine_resolve_token (P11cEngine *engine, const char *spec, GError **error);
const P11cCaProfile *p11c_engine_find_ca (P11cEngine *engine, const char *name);

/* ---- token operations (blocking: call from a worker thread) ---- */

/* Certificates on the token, from the cache when fresh. */
GPtrArray *p11c_token_list_certs (P11cToken *t, GError **error);

/* Delete the certificate @uri names (and its keys unless @keep_key); verify
 * it is gone.  Returns a{sv} of what was removed. */
GVariant *p11c_token_delete_cert (P11cToken *t, const P11cUri *uri, const char *pin,
                                  gboolean keep_key, GError **error);
gboolean p11c_token_change_pin (P11cToken *t, const char *old_pin, const char *new_pin,
                                GError **error);

/* Re-read token flags (PIN state); TRUE when they changed. */
gboolean p11c_token_update_info (P11cToken *t);

/* A session on @t for a token operation, refused with TokenNotPresent when
 * the token went away or the slot now holds another token (checked by serial
 * and label): work started on one token never lands on the next one put in
 * the same reader. */
P11cSession *p11c_token_open_session (P11cToken *t, gboolean rw, GError **error);

/* Who stands behind a PIN at a login. */
typedef enum {
  P11C_LOGIN_PERSON,     /* typed for this very call (DeleteCert, a job's first login) */
  P11C_LOGIN_AUTOMATIC,  /* a later step of a job, a TLS signature, an admin's PIN file */
} P11cLoginKind;

/* Log in on @s, and on a failed login add the token's PIN counter state to
 * the message and refresh the token's flags.  Every PIN login goes through
 * here.  The PIN the token last refused is remembered (as a keyed digest)
 * until a login succeeds or the token goes away; an AUTOMATIC login with
 * that PIN fails at once without reaching the token, so nothing the daemon
 * does on its own — a job's later steps, key cleanup, renewal from a wrong
 * PIN file — can burn a second try.  A PERSON login is always sent: the
 * person chose to try again. */
gboolean p11c_token_login (P11cToken *t, P11cSession *s, const char *pin, P11cLoginKind kind,
                           GError **error);

G_END_DECLS
