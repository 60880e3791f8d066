#pragma once
/* The daemon's bus connection: sd-bus (libsystemd) on the GLib main loop,
 * with GVariant in and out — the GDBus-shaped subset the bus face
 * (p11c-dbus*.c, p11c-auth.c) uses.  Main thread only.
 *
 * Why not GDBus: GDBus serialises every reply by walking its GVariant node
 * by node (a ListCerts reply of 200 certificates: ~1.5 ms of CPU, more than
 * dbus-daemon spends routing it), and it cannot send bytes marshalled
 * before.  sd-bus appends straight to the wire format, and a reply kept as
 * a P11cBusReply is replayed into each answer without walking a GVariant
 * (bench/perf.py measures both, docs/design.md "Caches and threads").
 *
 * What GDBus did for us and this does too: org.freedesktop.DBus.Properties
 * (Get, GetAll without the properties a getter refuses, Set refused) and
 * Introspectable (the registered interfaces and child nodes of any path)
 * from GDBusInterfaceInfo; argument signatures checked against the
 * interface (InvalidArgs); UnknownMethod for what is not registered; the
 * GError → D-Bus error name mapping of g_dbus_error_encode_gerror.  Peer is
 * sd-bus's own. */
#include <gio/gio.h>
#include <gio/gunixfdlist.h>

G_BEGIN_DECLS

typedef struct _P11cBus P11cBus;
typedef struct _P11cInvocation P11cInvocation;

/* @inv is the callee's until it replies (p11c_invocation_return_*) */
typedef void (*P11cBusMethodFunc) (P11cBus *bus, P11cInvocation *inv, gpointer user_data);
/* A property's value (floating or not), or NULL with @error set */
typedef GVariant *(*P11cBusGetPropertyFunc) (P11cBus *bus, const char *sender, const char *path,
                                             const char *iface, const char *name, GError **error,
                                             gpointer user_data);

/* Connect to the bus at @address, else the session or system bus, and
 * attach to the thread-default main context.  @closed runs once if the
 * connection is lost. */
P11cBus *p11c_bus_new (const char *address, gboolean session, GCallback closed, gpointer closed_data,
                       GError **error);
/* Sends what is queued, then closes. */
void p11c_bus_free (P11cBus *bus);
/* DO_NOT_QUEUE: FALSE with @error when the name is taken.  The name goes
 * with the connection (p11c_bus_free): no call at exit that could wait. */
gboolean p11c_bus_request_name (P11cBus *bus, const char *name, GError **error);

/* An object at @path with @iface (kept referenced); 0 with @error when the
 * path already has that interface. */
guint p11c_bus_register_object (P11cBus *bus, const char *path, GDBusInterfaceInfo *iface,
                                P11cBusMethodFunc method, P11cBusGetPropertyFunc get_property,
                                gpointer user_data, GError **error);
void p11c_bus_unregister_object (P11cBus *bus, guint id);

/* A signal to everyone (@dest NULL) or to one connection; @params: a tuple,
 * floating or not, or NULL */
void p11c_bus_emit_signal (P11cBus *bus, const char *dest, const char *path, const char *iface,
                           const char *name, GVariant *params);

/* org.freedesktop.DBus.GetConnectionUnixUser */
typedef void (*P11cBusUidFunc) (P11cBus *bus, const char *name, guint uid, const GError *error, gpointer user_data);
void p11c_bus_get_unix_user_async (P11cBus *bus, const char *name, P11cBusUidFunc cb, gpointer user_data);
gboolean p11c_bus_get_unix_user_sync (P11cBus *bus, const char *name, guint *uid);
/* NameOwnerChanged, until p11c_bus_unwatch */
typedef void (*P11cBusNameOwnerFunc) (const char *name, const char *old_owner, const char *new_owner,
                                      gpointer user_data);
guint p11c_bus_watch_name_owners (P11cBus *bus, P11cBusNameOwnerFunc cb, gpointer user_data);
void p11c_bus_unwatch (P11cBus *bus, guint id);

/* ---- one method call ------------------------------------------------------ */

const char *p11c_invocation_get_sender (P11cInvocation *inv);
const char *p11c_invocation_get_object_path (P11cInvocation *inv);
const char *p11c_invocation_get_interface_name (P11cInvocation *inv);
const char *p11c_invocation_get_method_name (P11cInvocation *inv);
GVariant *p11c_invocation_get_parameters (P11cInvocation *inv);     /* a tuple */
GUnixFDList *p11c_invocation_get_fd_list (P11cInvocation *inv);     /* the 'h' arguments' fds, or NULL */
P11cBus *p11c_invocation_get_bus (P11cInvocation *inv);

/* Each of these replies and frees @inv.  @value: a tuple (floating or not)
 * or NULL for no values. */
void p11c_invocation_return_value (P11cInvocation *inv, GVariant *value);
void p11c_invocation_return_gerror (P11cInvocation *inv, const GError *error);
void p11c_invocation_return_error (P11cInvocation *inv, GQuark domain, gint code, const char *format, ...)
  G_GNUC_PRINTF (4, 5);

/* ---- a reply walked once, answered many times ---------------------------- */

typedef struct _P11cBusReply P11cBusReply;
/* @tuple (taken if floating) stays referenced: the reply points into it */
P11cBusReply *p11c_bus_reply_new (GVariant *tuple);
P11cBusReply *p11c_bus_reply_ref (P11cBusReply *reply);
void p11c_bus_reply_unref (P11cBusReply *reply);
GVariant *p11c_bus_reply_get_value (P11cBusReply *reply);
void p11c_invocation_return_reply (P11cInvocation *inv, P11cBusReply *reply);

G_END_DECLS
