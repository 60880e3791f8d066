/* p11certctl: the client layer — messages, the bus connection, calls on the
 * daemon, its tokens and certificates.  Secrets: ctl-secret.c; output:
 * ctl-output.c; errors and exit codes: ctl-errors.c; jobs: ctl-job.c. */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-error.h"
#include "p11c-i18n.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include "p11c-uri.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

G_DEFINE_QUARK (p11certctl-error-quark, ctl_error)

/* ---- messages ------------------------------------------------------------ */

void
ctl_warn (const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  fflush (stdout);
  fprintf (stderr, "p11certctl: %s\n", msg);
}

void
ctl_message (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vfprintf (stdout, fmt, ap);
  va_end (ap);
  fputc ('\n', stdout);
  fflush (stdout);
}

int
ctl_usage_error (GOptionContext *ctx, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  fprintf (stderr, "p11certctl: %s\n", msg);
  if (ctx != NULL)
    {
      fprintf (stderr, _("Try “%s --help”."), g_get_prgname ());
      fputc ('\n', stderr);
    }
  return CTL_EXIT_USAGE;
}

int
ctl_parse (GOptionContext *ctx, int *argc, char ***argv)
{
  g_autoptr(GError) error = NULL;

  g_option_context_set_help_enabled (ctx, TRUE);
  /* option descriptions (N_() in the commands), summary and parameter
   * string in the user's language */
  g_option_context_set_translation_domain (ctx, GETTEXT_PACKAGE);
  if (!g_option_context_parse (ctx, argc, argv, &error))
    return ctl_usage_error (ctx, "%s", error->message);
  return -1;
}

/* ---- bus ----------------------------------------------------------------- */

static CtlBusKind bus_kind = CTL_BUS_DEFAULT;
static char *bus_address;
static GDBusConnection *bus_conn;

void
ctl_set_bus (CtlBusKind kind, const char *address)
{
  bus_kind = kind;
  g_free (bus_address);
  bus_address = g_strdup (address);
}

GDBusConnection *
ctl_bus (int *exit_code)
{
  g_autoptr(GError) error = NULL;
  const char *address = NULL;
  const char *what = _("the system bus");

  if (bus_conn != NULL)
    return bus_conn;
  switch (bus_kind)
    {
    case CTL_BUS_ADDRESS:
      address = bus_address;
      break;
    case CTL_BUS_DEFAULT:
      address = g_getenv (P11C_ENV_BUS_ADDRESS);
      if (address != NULL && address[0] == '\0')
        address = NULL;
      break;
    default:
      break;
    }
  if (address != NULL)
    {
      what = address;
      bus_conn = g_dbus_connection_new_for_address_sync (address,
                                                         G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT
                                                         | G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                                         NULL, NULL, &error);
    }
  else if (bus_kind == CTL_BUS_SESSION)
    {
      what = _("the session bus");
      bus_conn = g_bus_get_sync (G_BUS_TYPE_SESSION, NULL, &error);
    }
  else
    bus_conn = g_bus_get_sync (G_BUS_TYPE_SYSTEM, NULL, &error);
  if (bus_conn == NULL)
    {
      /* TRANSLATORS: %1$s is a bus ("the system bus" or an address), %2$s GIO's reason */
      ctl_warn (_("Cannot connect to %1$s: %2$s"), what, error->message);
      *exit_code = CTL_EXIT_FAILURE;
      return NULL;
    }
  g_dbus_connection_set_exit_on_close (bus_conn, FALSE);
  return bus_conn;
}

gboolean
ctl_interactive (void)
{
  return isatty (STDIN_FILENO);
}

GVariant *
ctl_call (GDBusConnection *bus, const char *path, const char *iface, const char *method,
          GVariant *params, const char *reply_type, int timeout_ms, GError **error)
{
  return g_dbus_connection_call_sync (bus, P11C_DBUS_NAME, path, iface, method, params,
                                      reply_type ? G_VARIANT_TYPE (reply_type) : NULL,
                                      ctl_interactive () ? G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION
                                                         : G_DBUS_CALL_FLAGS_NONE,
                                      timeout_ms, NULL, error);
}

GVariant *
ctl_call_manager (GDBusConnection *bus, const char *method, GVariant *params,
                  const char *reply_type, int timeout_ms, GError **error)
{
  return ctl_call (bus, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, method, params, reply_type,
                   timeout_ms, error);
}

GVariant *
ctl_get_manager_property (GDBusConnection *bus, const char *name, GError **error)
{
  g_autoptr(GVariant) reply = ctl_call (bus, P11C_DBUS_PATH, "org.freedesktop.DBus.Properties", "Get",
                                        g_variant_new ("(ss)", P11C_DBUS_MANAGER_IFACE, name), "(v)",
                                        CTL_TIMEOUT_LIST, error);
  GVariant *value;
  if (reply == NULL)
    return NULL;
  g_variant_get (reply, "(v)", &value);
  return value;
}

gboolean
ctl_get_pin_policy (GDBusConnection *bus, P11cPinPolicy *policy, GError **error)
{
  g_autoptr(GVariant) v = ctl_get_manager_property (bus, "PinPolicy", error);

  p11c_pin_policy_from_variant (v, policy);   /* the defaults when it is not a dictionary */
  return v != NULL;
}

/* ---- tokens and certificates ---------------------------------------------- */

GVariant *
ctl_list_tokens (GDBusConnection *bus, GError **error)
{
  g_autoptr(GVariant) reply = ctl_call_manager (bus, "ListTokens", NULL, "(aa{sv})", CTL_TIMEOUT_LIST, error);
  if (reply == NULL)
    return NULL;
  return g_variant_get_child_value (reply, 0);
}

GVariant *
ctl_find_cert (GDBusConnection *bus, const char *uri, GError **error)
{
  GVariantBuilder b;
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) list = NULL;
  GVariant *found = NULL;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  if (g_str_has_prefix (uri, "system:"))
    g_variant_builder_add (&b, "{sv}", "storage", g_variant_new_string ("system"));
  reply = ctl_call_manager (bus, "ListCerts", g_variant_new ("(a{sv})", &b), "(aa{sv})", CTL_TIMEOUT_LIST, error);
  if (reply == NULL)
    return NULL;
  list = g_variant_get_child_value (reply, 0);
  for (gsize i = 0; i < g_variant_n_children (list) && found == NULL; i++)
    {
      g_autoptr(GVariant) c = g_variant_get_child_value (list, i);
      P11cWireCert cert;
      if (p11c_wire_cert_from_variant (c, &cert, NULL))
        {
          if (g_strcmp0 (cert.uri, uri) == 0)
            found = g_steal_pointer (&c);
          p11c_wire_cert_clear (&cert);
        }
    }
  return found;
}

static void
pad_copy (CK_UTF8CHAR *dst, gsize size, const char *src)
{
  gsize n = src ? MIN (strlen (src), size) : 0;
  memset (dst, ' ', size);
  if (n)
    memcpy (dst, src, n);
}

static gboolean
token_matches (GVariant *dict, const char *spec, const P11cUri *uri)
{
  CK_TOKEN_INFO info;
  P11cWireToken tok;
  gboolean match;

  p11c_wire_token_from_variant (dict, &tok);
  match = g_strcmp0 (tok.path, spec) == 0 || g_strcmp0 (tok.uri, spec) == 0;
  if (!match && uri != NULL)
    {
      memset (&info, 0, sizeof info);
      pad_copy (info.label, sizeof info.label, tok.label);
      pad_copy (info.manufacturerID, sizeof info.manufacturerID, tok.manufacturer);
      pad_copy (info.model, sizeof info.model, tok.model);
      pad_copy (info.serialNumber, sizeof info.serialNumber, tok.serial);
      match = p11c_uri_matches_token (uri, &info);
    }
  p11c_wire_token_clear (&tok);
  return match;
}

GVariant *
ctl_choose_token (GDBusConnection *bus, const char *spec, gboolean interactive, GError **error)
{
  g_autoptr(GVariant) tokens = ctl_list_tokens (bus, error);
  g_autoptr(P11cUri) uri = NULL;
  g_autoptr(GPtrArray) matches = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);
  gsize n;

  if (tokens == NULL)
    return NULL;
  n = g_variant_n_children (tokens);
  if (spec != NULL && g_str_has_prefix (spec, "pkcs11:"))
    {
      uri = p11c_uri_parse (spec, error);
      if (uri == NULL)
        {
          /* a usage error in the user's words (the parser's message is English) */
          g_autoptr(GError) parse = g_steal_pointer (error);
          g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, _("--token: “%s” is not a valid PKCS#11 URI (%s)"),
                       spec, parse->message);
          return NULL;
        }
    }
  for (gsize i = 0; i < n; i++)
    {
      g_autoptr(GVariant) tok = g_variant_get_child_value (tokens, i);
      if (spec == NULL || token_matches (tok, spec, uri))
        g_ptr_array_add (matches, g_steal_pointer (&tok));
    }
  if (matches->len == 1)
    return g_variant_ref (matches->pdata[0]);
  if (matches->len == 0)
    {
      if (spec != NULL)
        g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT,
                     _("No present token matches %s; insert it, or see “p11certctl tokens”"), spec);
      else
        g_set_error_literal (error, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT,
                             _("No token is present; insert one (or run “p11certctl rescan”)"));
      return NULL;
    }
  if (interactive && ctl_stdin_is_tty ())
    {
      printf ("%s\n", _("Tokens:"));
      for (guint i = 0; i < matches->len; i++)
        {
          P11cWireToken tok;
          p11c_wire_token_from_variant (matches->pdata[i], &tok);
          printf ("  %u) ", i + 1);
          /* TRANSLATORS: a token in a list: %1$s label, %2$s manufacturer, %3$s serial number */
          printf (_("%1$s  (%2$s, serial %3$s)"), tok.label, tok.manufacturer, tok.serial);
          putchar ('\n');
          p11c_wire_token_clear (&tok);
        }
      for (;;)
        {
          g_autofree char *answer = ctl_prompt_line (_("Choose a token [1]: "));
          guint64 k = 1;
          if (answer == NULL)
            break;
          if (answer[0] == '\0' || (g_ascii_string_to_unsigned (answer, 10, 1, matches->len, &k, NULL)))
            return g_variant_ref (matches->pdata[k - 1]);
          printf (_("Enter a number from 1 to %u."), matches->len);
          putchar ('\n');
        }
    }
  g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE,
               spec ? ngettext ("%u token matches; choose one with --token (URI or object path, see “p11certctl tokens”)",
                                "%u tokens match; choose one with --token (URI or object path, see “p11certctl tokens”)",
                                matches->len)
                    : ngettext ("%u token is present; choose one with --token (URI or object path, see “p11certctl tokens”)",
                                "%u tokens are present; choose one with --token (URI or object path, see “p11certctl tokens”)",
                                matches->len),
               matches->len);
  return NULL;
}


gboolean
ctl_token_by_path (GVariant *tokens, const char *path, P11cWireToken *out)
{
  for (gsize i = 0; tokens != NULL && i < g_variant_n_children (tokens); i++)
    {
      g_autoptr(GVariant) dict = g_variant_get_child_value (tokens, i);
      p11c_wire_token_from_variant (dict, out);
      if (g_strcmp0 (out->path, path) == 0)
        return TRUE;
      p11c_wire_token_clear (out);
    }
  memset (out, 0, sizeof *out);
  return FALSE;
}

int
ctl_token_pin_check (const P11cWireToken *t, gboolean pin_from_file)
{
  if (t->pin_locked)
    {
      ctl_warn (_("The PIN of token “%s” is locked; it must be unlocked with the SO PIN first"), t->label);
      return CTL_EXIT_PIN_LOCKED;
    }
  if (t->pin_final_try && !pin_from_file)
    fprintf (stderr, "%s\n", _("Warning: one more wrong PIN locks the token."));
  return -1;
}
