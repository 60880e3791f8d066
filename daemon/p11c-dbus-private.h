#pragma once

/* Inside the bus face (p11c-dbus*.c): the daemon object, a method call and
 * its thread helper, object paths, and what the files share.  The core
 * never includes this. */

#include "p11c-scep.h"
#include "p11c-dbus.h"
#include "p11c-bus.h"
#include "p11c-auth.h"
#include "p11c-enroll.h"
#include "p11c-error.h"
#include "p11c-job.h"
#include "p11c-localca.h"
#include "p11c-store.h"
#include "p11c-renewal.h"
#include "p11c-log.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include "p11c-wire.h"
#include <gio/gunixfdlist.h>
#include <string.h>


G_BEGIN_DECLS

typedef struct _FastPath FastPath;

struct _P11cDaemon {
  P11cBus         *bus;
  P11cEngine      *engine;
  GDBusNodeInfo   *api;
  GDBusNodeInfo   *om;
  guint            manager_id;
  guint            om_id;
  GHashTable      *token_regs;   /* path → reg id */
  GHashTable      *p11c_dbus_token_props;  /* path → a{sv} last emitted */
  GHashTable      *jobs;         /* path → P11cJob */
  GHashTable      *job_regs;     /* path → reg id */
  GHashTable      *p11c_dbus_job_props;    /* path → a{sv} last emitted */
  guint            next_job;
  /* CertificateExpiring: fingerprints already announced, next crossing */
  GHashTable      *expiring_sent;
  guint            expiry_timer;
  gboolean         expiry_running;
  /* ListCerts replies: request shape → ListReply (main thread only) */
  GHashTable      *list_cache;
  FastPath        *fast;
};

typedef struct _Call Call;

/* One method call, from its arrival to its reply */
struct _Call {
  P11cDaemon            *d;
  P11cInvocation        *inv;
  GVariant              *params;        /* wiped when freed: may hold secrets */
  const char            *path;
  guint                  uid;
  void                 (*handler) (Call *c);
  gboolean               owner_may;
  const char            *pending[4];    /* polkit actions still to ask */
  guint                  next_action;
  gpointer               args;          /* the method's typed arguments (…Args) */
  GDestroyNotify         args_free;
  P11cToken             *token;         /* the token it works on: properties re-read after */
  gboolean               changes_certs; /* re-plan CertificateExpiring after it */
};

/* ---- the one way a call reaches a worker ---------------------------------
 *
 * @work(c) runs in a worker thread and returns its result (NULL and @error
 * on failure); then @done(c, result, error) runs on the main loop, owning
 * the call, the result and the error.  A call that needs a second phase on
 * the main loop (start a job, ask polkit again) does it in @done. */

typedef gpointer (*CallWork) (Call *c, GError **error);
typedef void (*CallDone) (Call *c, gpointer result, GError *error);

typedef struct {
  Call           *c;
  CallWork        work;
  GDestroyNotify  result_free;
  CallDone        done;
} CallTask;

/* ---- ListCerts: one immutable reply per request shape ---------------------
 *
 * A reply is built in a worker (it may have to read a token) and kept with
 * what it was built from: the tokens it lists with each one's generation
 * (bumped by p11c_token_invalidate, read before the certificates are), the
 * issuance records' and the system store's generations (read before those
 * are), and the time span in which every days_left / renewal_due in it stays
 * what it says.  While all of that still holds, a call is answered on the
 * main thread from the very same reply, walked once (P11cBusReply): no
 * worker, no rebuilding, no GVariant walk per answer. */

typedef struct {
  gint       ref;
  GPtrArray *tokens;        /* P11cToken listed, in order */
  GArray    *generations;   /* guint per token, read before it was listed */
  gboolean   system;        /* the system store is in it */
  guint      store_gen;
  guint64    issued_gen;    /* p11c_records_generation */
  gint64     built_at;      /* real time, s */
  gint64     valid_until;   /* real time, s: a time-derived field changes then */
  P11cBusReply *reply;      /* (aa{sv}) */
} ListReply;

/* ---- warm ListCerts from root, answered at once ---------------------------
 *
 * Like Peer.Ping: a ListCerts whose exact arguments were answered before is
 * answered as it arrives — no Call, no authorization round, no task — while
 * that reply is still current and the token set has not changed since those
 * arguments were resolved (token_set), from a caller whose uid is known to
 * be 0: root needs no polkit check (p11c-auth.c).  Every other caller, and
 * anything not known, goes the normal way (a warm reply still comes from
 * the cache, after the caller's polkit check).  Main thread only. */

struct _FastPath {
  P11cEngine *engine;
  GHashTable *replies;       /* GBytes of the call's arguments → FastEntry */
  guint       token_set;     /* bumped when tokens come, go or change */
};
#define FAST_PATH_MAX 64

typedef struct {
  ListReply *lr;
  guint      token_set;     /* FastPath.token_set when the arguments were resolved */
} FastEntry;

/* entries of the method table (p11c-dbus.c) */

typedef void (*Handler) (Call *c);
typedef void (*ActionsFor) (P11cDaemon *d, GVariant *params, const char *actions[4]);

void p11c_dbus_method_call (P11cBus *bus, P11cInvocation *inv, gpointer user_data);
GVariant *p11c_dbus_get_property (P11cBus *bus, const char *sender, const char *path, const char *iface,
                                  const char *name, GError **error, gpointer user_data);

/* p11c-dbus.c */
const char *p11c_dbus_token_path_for_id (const char *id);
const char *p11c_dbus_token_path (P11cToken *t);
P11cToken *p11c_dbus_token_for_path (P11cDaemon *d, const char *path);
P11cToken *p11c_dbus_resolve_token (P11cDaemon *d, const char *spec, GError **error);
void p11c_dbus_call_free (Call *c);
gpointer p11c_dbus_call_set_args (Call *c, gpointer args, GDestroyNotify free_func);
void p11c_dbus_call_fail (Call *c, GError *error);
void p11c_dbus_call_run (Call *c, CallWork work, GDestroyNotify result_free, CallDone done);
void p11c_dbus_call_reply_done (Call *c, gpointer result, GError *error);
gpointer p11c_dbus_reply_take (GVariant *reply);
void p11c_dbus_call_in_thread (Call *c, CallWork work);
void p11c_dbus_emit_properties_changed (P11cDaemon *d, const char *dest, const char *path, const char *iface, GVariant *changed);
GVariant *p11c_dbus_changed_since (GHashTable *last, const char *path, GVariant *now);
void p11c_dbus_emit_changed_props (P11cDaemon *d, GHashTable *last, const char *path, const char *iface, GVariant *now);
void p11c_dbus_emit_interfaces_added (P11cDaemon *d, const char *path, const char *iface, GVariant *props);
void p11c_dbus_emit_interfaces_removed (P11cDaemon *d, const char *path, const char *iface);

/* p11c-dbus-token.c */
GVariant *p11c_dbus_token_props (P11cToken *t);
GVariant *p11c_dbus_token_dict (P11cToken *t);
void p11c_dbus_emit_token_changes (P11cDaemon *d, P11cToken *t);
void p11c_dbus_handle_change_pin (Call *c);
char *p11c_dbus_atr_hex (GBytes *atr);   /* NULL when @atr is */
GVariant *p11c_dbus_token_event (P11cToken *t, const char *reader, GBytes *atr);   /* floating (oa{sv}) */

/* p11c-dbus-job.c */
char *p11c_dbus_job_path (P11cJob *job);
GVariant *p11c_dbus_job_props (const P11cJobState *st);
GVariant *p11c_dbus_job_props_now (P11cJob *job);
P11cJob *p11c_dbus_start_job (P11cDaemon *d, const char *operation, P11cEnrollRequest *req, guint uid, const char *sender, GError **error);
void p11c_dbus_call_return_job (Call *c, P11cJob *job);
void p11c_dbus_handle_cancel (Call *c);
gboolean p11c_dbus_job_details_visible (P11cBus *bus, P11cJob *job, const char *sender);

/* p11c-dbus-manager.c */
void p11c_dbus_list_reply_free (ListReply *lr);
FastPath *p11c_dbus_fast_path_new (P11cEngine *engine);
void p11c_dbus_fast_path_free (FastPath *fp);
gboolean p11c_dbus_fast_path_answer (FastPath *fp, P11cInvocation *inv);
void p11c_dbus_handle_list_certs (Call *c);
void p11c_dbus_handle_list_tokens (Call *c);
void p11c_dbus_handle_list_cas (Call *c);
void p11c_dbus_handle_check_pin (Call *c);
void p11c_dbus_handle_get_ca_certificate (Call *c);
void p11c_dbus_handle_delete_cert (Call *c);
void p11c_dbus_handle_rescan (Call *c);
void p11c_dbus_handle_enroll (Call *c);
void p11c_dbus_handle_renew (Call *c);
void p11c_dbus_handle_renew_due (Call *c);
void p11c_dbus_schedule_expiry (P11cDaemon *d);

G_END_DECLS
