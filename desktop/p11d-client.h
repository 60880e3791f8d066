#pragma once
/* The app's view of p11certd, through the public D-Bus API only.
 *
 * One P11dClient per process: it connects to the system bus asynchronously,
 * lists tokens and certificates (ListTokens + ListCerts, refreshed whenever
 * the daemon says something changed: TokenInserted/TokenRemoved, a token's
 * PropertiesChanged, the name coming or going), and turns the daemon's
 * signals into GObject signals.  Nothing polls: with no event it is idle.
 * Every call is asynchronous and carries
 * G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION. */
#include <gio/gio.h>

G_BEGIN_DECLS

#define P11D_BUS_NAME      "org.p11certd"
#define P11D_PATH          "/org/p11certd"
#define P11D_MANAGER_IFACE "org.p11certd1.Manager"
#define P11D_TOKEN_IFACE   "org.p11certd1.Token"
#define P11D_JOB_IFACE     "org.p11certd1.Job"
#define P11D_ERROR_PREFIX  "org.p11certd.Error."

#define P11D_TYPE_CLIENT (p11d_client_get_type ())
G_DECLARE_FINAL_TYPE (P11dClient, p11d_client, P11D, CLIENT, GObject)

typedef enum {
  P11D_CLIENT_CONNECTING,   /* no answer yet */
  P11D_CLIENT_READY,        /* tokens and certificates listed */
  P11D_CLIENT_UNAVAILABLE,  /* no bus, or the daemon cannot be reached */
} P11dClientState;

P11dClient *p11d_client_get_default (void);

P11dClientState p11d_client_get_state (P11dClient *self);
/* Why the service is unavailable (plain words), or NULL */
const char *p11d_client_get_problem (P11dClient *self);
GDBusConnection *p11d_client_get_connection (P11dClient *self);

/* The last listing: arrays of GVariant a{sv} (ListTokens / ListCerts
 * entries), never NULL. */
GPtrArray *p11d_client_get_tokens (P11dClient *self);
GPtrArray *p11d_client_get_certs (P11dClient *self);
GVariant  *p11d_client_find_token (P11dClient *self, const char *path);
GVariant  *p11d_client_find_cert (P11dClient *self, const char *uri);
/* The Manager's PinPolicy (a{sv}), or NULL before it is known */
GVariant  *p11d_client_get_pin_policy (P11dClient *self);
/* Whether this user may manage the system store (polkit
 * org.p11certd.system.manage, asked without interaction) */
gboolean   p11d_client_get_system_allowed (P11dClient *self);

void p11d_client_refresh (P11dClient *self);

/* An asynchronous call on the daemon, with interactive authorization. */
void p11d_client_call (P11dClient *self, const char *path, const char *iface, const char *method,
                       GVariant *params, const GVariantType *reply_type, GUnixFDList *fds,
                       GCancellable *cancellable, GAsyncReadyCallback cb, gpointer user_data);
GVariant *p11d_client_call_finish (P11dClient *self, GAsyncResult *res, GError **error);

/* Job events: "job-changed" (path, a{sv} changed properties) and
 * "job-finished" (path, success, error name, message) are emitted for every
 * job the daemon announces, so a caller that subscribes before it calls
 * Enroll sees its whole life. */

/* helpers for a{sv} dictionaries */
const char *p11d_dict_str (GVariant *dict, const char *key, const char *def);
gboolean    p11d_dict_bool (GVariant *dict, const char *key, gboolean def);
gint64      p11d_dict_int64 (GVariant *dict, const char *key, gint64 def);

G_END_DECLS
