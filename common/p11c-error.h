#pragma once
#include <glib.h>

G_BEGIN_DECLS

/* Keep in sync with the table in p11c-error.c; the D-Bus names are a
 * contract (org.p11certd.Error.<Name>). */
typedef enum {
  P11C_ERROR_FAILED,
  P11C_ERROR_INVALID_ARGS,
  P11C_ERROR_NOT_FOUND,
  P11C_ERROR_NOT_SUPPORTED,
  P11C_ERROR_NOT_AUTHORIZED,
  P11C_ERROR_PIN_INCORRECT,
  P11C_ERROR_PIN_LOCKED,
  P11C_ERROR_PIN_POLICY,
  P11C_ERROR_TOKEN_NOT_PRESENT,
  P11C_ERROR_CA_UNREACHABLE,
  P11C_ERROR_CA_REJECTED,
  P11C_ERROR_CANCELLED,
  P11C_ERROR_BUSY,
  P11C_ERROR_CA_BAD_REPLY,
  P11C_ERROR_TOKEN_ERROR,
  P11C_ERROR_NO_SPACE,
} P11cError;

#define P11C_ERROR (p11c_error_quark ())
GQuark p11c_error_quark (void);

/* "PinIncorrect" for P11C_ERROR_PIN_INCORRECT, NULL when out of range */
const char *p11c_error_to_name (P11cError code);
/* Map a D-Bus error name (full or short) back to the code, -1 if unknown */
int p11c_error_from_name (const char *name);

/* Turn any GError into a P11C_ERROR (GIO cancel → Cancelled, others → Failed),
 * keeping the message (the GError is replaced, never changed in place: a
 * P11C_ERROR carries private data). Used at the D-Bus boundary. */
void p11c_error_convert (GError **error);

/* Structured details of an error, for clients that must not read the
 * English message (translations, decisions): a P11C_ERROR carries an a{sv}
 * that survives g_error_copy / g_prefix_error / g_propagate_error.  Keys are
 * documented in dbus/org.p11certd1.xml (Job.ErrorDetails).  Setting a key on
 * an error of another domain does nothing. */
void p11c_error_set_detail (GError *error, const char *key, GVariant *value);
/* The same, typed (the daemon's core sets details through these and never
 * builds a GVariant itself).  A token is named by its id inside the daemon
 * (key "token", a string); the bus face turns it into the token's object
 * path before the details leave the daemon. */
void p11c_error_set_detail_string (GError *error, const char *key, const char *value);
void p11c_error_set_detail_uint (GError *error, const char *key, guint32 value);
void p11c_error_set_detail_bool (GError *error, const char *key, gboolean value);
void p11c_error_set_detail_strv (GError *error, const char *key, const char *const *value);
void p11c_error_set_detail_token (GError *error, const char *token_id);
/* The details as a{sv} (an empty dictionary when there are none); never NULL */
GVariant *p11c_error_get_details (const GError *error);

G_END_DECLS
