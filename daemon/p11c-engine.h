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
#include "p11c-error.h"

G_BEGIN_DECLS

typedef struct {
  char       *name;
  char       *description;
  P11cModule *module;    /* NULL when loading failed */
  char       *error;
} P11cModuleState;

/* A token the engine knows.  Opaque: its state is guarded by locks private
 * to p11c-engine.c; read it through the accessors (any thread). */
typedef struct _P11cToken P11cToken;

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

/* Fixed for the token's life */
const char *p11c_token_get_id (P11cToken *t);          /* stable, unique among present tokens */
const char *p11c_token_get_uri (P11cToken *t);
const char *p11c_token_get_module_name (P11cToken *t);
/* Still in its slot (FALSE once the engine saw it go) */
gboolean p11c_token_is_present (P11cToken *t);
/* Bumped whenever the cached certificate list is dropped */
guint p11c_token_get_generation (P11cToken *t);
/* One PKCS#11 session phase at a time on the token (blocking) */
void p11c_token_lock_operations (P11cToken *t);
void p11c_token_unlock_operations (P11cToken *t);

typedef struct {
  gint             ref;
  char            *uri;
  char            *storage;    /* "token", "system" */
  char            *token_id;   /* its token's id; NULL: not on a token */
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

/* What the engine tells its owner, on the main thread.  @announce is FALSE
 * for a token that came or went in the rescan of a card event: that event's
 * card_event callback reports it. */
typedef struct {
  gboolean   inserted;
  const char *reader;
  GBytes    *atr;        /* may be NULL */
  P11cToken *token;      /* the token a module recognised in that reader, or NULL */
  GPtrArray *others;     /* other tokens that came (inserted) or went in the same rescan */
} P11cCardEvent;

typedef struct {
  void (*token_added)   (P11cEngine *engine, P11cToken *token, gboolean announce, gpointer user_data);
  void (*token_removed) (P11cEngine *engine, P11cToken *token, gboolean announce, gpointer user_data);
  void (*token_changed) (P11cEngine *engine, P11cToken *token, gpointer user_data);
  void (*card_event)    (P11cEngine *engine, const P11cCardEvent *event, gpointer user_data);
  /* a rescan finished: certificates may have changed */
  void (*rescanned)     (P11cEngine *engine, gpointer user_data);
} P11cEngineCallbacks;

P11cEngine *p11c_engine_new (P11cConfig *config);   /* takes config */
void p11c_engine_free (P11cEngine *engine);
void p11c_engine_load_modules (P11cEngine *engine);
/* @callbacks is copied; NULL stops them */
void p11c_engine_set_callbacks (P11cEngine *engine, const P11cEngineCallbacks *callbacks,
                                gpointer user_data);
const P11cConfig *p11c_engine_get_config (P11cEngine *engine);
/* Main thread only: the present tokens (P11cToken), the modules
 * (P11cModuleState) and the CA profiles (P11cCaProfile), in order. */
GPtrArray *p11c_engine_get_tokens (P11cEngine *engine);
/* A new array holding a reference to each present token (main thread) */
GPtrArray *p11c_engine_tokens_snapshot (P11cEngine *engine);
GPtrArray *p11c_engine_get_modules (P11cEngine *engine);
GPtrArray *p11c_engine_get_cas (P11cEngine *engine);
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

/* Hotplug coordination (main thread).  Rescans never overlap: a request
 * while one runs (or a card event is handled) is folded into one more scan
 * after it.  p11c_engine_rescan returns FALSE when it was folded that way
 * (@done is not called); otherwise @done(@data) runs when the scan is
 * applied.  A PC/SC card event queues a rescan of its own; its outcome is
 * reported once through the card_event callback. */
typedef void (*P11cRescanDone) (P11cEngine *engine, gpointer data);
gboolean p11c_engine_rescan (P11cEngine *engine, P11cRescanDone done, gpointer data);
void p11c_engine_card_event (P11cEngine *engine, gboolean inserted, const char *reader, GBytes *atr);

P11cToken *p11c_engine_find_token_by_id (P11cEngine *engine, const char *id);

/* The one resolver of "which token does this name": a token given as a
 * PKCS#11 URI (its token attributes); exactly one present token must match.
 * (Object paths are resolved by the bus face, p11c-dbus.c; one that reaches
 * here named a token that is gone.)  @absent is the error code when none does:
 * P11C_ERROR_TOKEN_NOT_PRESENT where a token was named, P11C_ERROR_NOT_FOUND
 * where an object on a token was. */
P11cToken *p11c_engine_resolve_token (P11cEngine *engine, const char *spec, GError **error);
P11cToken *p11c_engine_resolve_token_uri (P11cEngine *engine, const P11cUri *uri, const char *spec,
                                          P11cError absent, GError **error);
const P11cCaProfile *p11c_engine_find_ca (P11cEngine *engine, const char *name);

/* What a deletion removed */
typedef struct {
  GStrv  removed;           /* URIs of the objects removed, the certificate first */
  guint  keys_removed;
  char  *keys_kept;         /* why the keys stayed, or NULL */
  guint  keys_shared_with;  /* other certificates that use the kept key */
} P11cDeleteResult;

void p11c_delete_result_free (P11cDeleteResult *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cDeleteResult, p11c_delete_result_free)

/* The daemon's own certificate store (blocking: a worker thread) */
GPtrArray *p11c_engine_list_system_certs (P11cEngine *engine);   /* P11cCertEntry */
/* Delete the entry @name ("system:NAME" without the prefix) */
P11cDeleteResult *p11c_engine_delete_system_cert (P11cEngine *engine, const char *name, GError **error);

/* ---- token operations (blocking: call from a worker thread) ---- */

/* Certificates on the token, from the cache when fresh. */
GPtrArray *p11c_token_list_certs (P11cToken *t, GError **error);

/* Delete the certificate @uri names (and its keys unless @keep_key); verify
 * it is gone. */
P11cDeleteResult *p11c_token_delete_cert (P11cToken *t, const P11cUri *uri, const char *pin,
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
