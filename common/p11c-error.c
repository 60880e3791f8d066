#define G_LOG_DOMAIN "p11c-error"
#include "p11c-error.h"
#include "p11c-names.h"
#include <gio/gio.h>
#include <string.h>

static const GDBusErrorEntry entries[] = {
  { P11C_ERROR_FAILED,            P11C_DBUS_ERROR_PREFIX "Failed" },
  { P11C_ERROR_INVALID_ARGS,      P11C_DBUS_ERROR_PREFIX "InvalidArgs" },
  { P11C_ERROR_NOT_FOUND,         P11C_DBUS_ERROR_PREFIX "NotFound" },
  { P11C_ERROR_NOT_SUPPORTED,     P11C_DBUS_ERROR_PREFIX "NotSupported" },
  { P11C_ERROR_NOT_AUTHORIZED,    P11C_DBUS_ERROR_PREFIX "NotAuthorized" },
  { P11C_ERROR_PIN_INCORRECT,     P11C_DBUS_ERROR_PREFIX "PinIncorrect" },
  { P11C_ERROR_PIN_LOCKED,        P11C_DBUS_ERROR_PREFIX "PinLocked" },
  { P11C_ERROR_PIN_POLICY,        P11C_DBUS_ERROR_PREFIX "PinPolicy" },
  { P11C_ERROR_TOKEN_NOT_PRESENT, P11C_DBUS_ERROR_PREFIX "TokenNotPresent" },
  { P11C_ERROR_CA_UNREACHABLE,    P11C_DBUS_ERROR_PREFIX "CaUnreachable" },
  { P11C_ERROR_CA_REJECTED,       P11C_DBUS_ERROR_PREFIX "CaRejected" },
  { P11C_ERROR_CANCELLED,         P11C_DBUS_ERROR_PREFIX "Cancelled" },
  { P11C_ERROR_BUSY,              P11C_DBUS_ERROR_PREFIX "Busy" },
  { P11C_ERROR_CA_BAD_REPLY,      P11C_DBUS_ERROR_PREFIX "CaBadReply" },
  { P11C_ERROR_TOKEN_ERROR,       P11C_DBUS_ERROR_PREFIX "TokenError" },
  { P11C_ERROR_NO_SPACE,          P11C_DBUS_ERROR_PREFIX "NoSpace" },
};

GQuark
p11c_error_quark (void)
{
  static gsize quark = 0;
  g_dbus_error_register_error_domain ("p11c-error-quark", &quark,
                                      entries, G_N_ELEMENTS (entries));
  return (GQuark) quark;
}

const char *
p11c_error_to_name (P11cError code)
{
  for (gsize i = 0; i < G_N_ELEMENTS (entries); i++)
    if (entries[i].error_code == (gint) code)
      return entries[i].dbus_error_name + strlen (P11C_DBUS_ERROR_PREFIX);
  return NULL;
}

int
p11c_error_from_name (const char *name)
{
  if (name == NULL)
    return -1;
  if (g_str_has_prefix (name, P11C_DBUS_ERROR_PREFIX))
    name += strlen (P11C_DBUS_ERROR_PREFIX);
  for (gsize i = 0; i < G_N_ELEMENTS (entries); i++)
    if (g_str_equal (entries[i].dbus_error_name + strlen (P11C_DBUS_ERROR_PREFIX), name))
      return entries[i].error_code;
  return -1;
}

void
p11c_error_convert (GError **error)
{
  GError *e;

  if (error == NULL || *error == NULL)
    return;
  e = *error;
  if (e->domain == P11C_ERROR)
    return;
  if (g_error_matches (e, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    e->code = P11C_ERROR_CANCELLED;
  else if (g_error_matches (e, G_IO_ERROR, G_IO_ERROR_NO_SPACE))
    e->code = P11C_ERROR_NO_SPACE;
  else if (g_error_matches (e, G_IO_ERROR, G_IO_ERROR_NOT_FOUND))
    e->code = P11C_ERROR_NOT_FOUND;
  else if (g_error_matches (e, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED))
    e->code = P11C_ERROR_NOT_AUTHORIZED;
  else
    e->code = P11C_ERROR_FAILED;
  e->domain = P11C_ERROR;
}
