/* p11certctl passwd [--token URI|PATH] [--pin-file F] [--new-pin-file F] */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-wire.h"
#include "p11c-i18n.h"
#include "p11c-names.h"
#include "p11c-secret.h"

#include <stdio.h>

int
ctl_cmd_passwd (int argc, char **argv)
{
  g_autofree char *opt_token = NULL;
  g_autofree char *opt_pin_file = NULL;
  g_autofree char *opt_new_pin_file = NULL;
  GOptionEntry entries[] = {
    { "token", 0, 0, G_OPTION_ARG_STRING, &opt_token, N_("The token (PKCS#11 URI or object path)"), N_("URI") },
    { "pin-file", 0, 0, G_OPTION_ARG_FILENAME, &opt_pin_file, N_("Read the current PIN from FILE"), N_("FILE") },
    { "new-pin-file", 0, 0, G_OPTION_ARG_FILENAME, &opt_new_pin_file, N_("Read the new PIN from FILE"), N_("FILE") },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("— change a token's user PIN"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) dict = NULL;
  g_auto(P11cWireToken) token = { 0 };
  g_autoptr(GVariant) reply = NULL;
  g_autofree char *prompt = NULL;
  g_autofree char *prompt_new = NULL;
  g_autofree char *rules = NULL;
  p11c_autosecret old_pin = NULL;
  p11c_autosecret new_pin = NULL;
  P11cPinPolicy policy;
  GDBusConnection *bus;
  const char *label, *path;
  int rc;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx, _("Changes the user PIN of a token. The new PIN is asked twice and must meet\n"
                                       "the PIN policy of p11certd."));
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (argc > 1)
    return ctl_usage_error (ctx, _("passwd: unexpected argument “%s”"), argv[1]);
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;
  dict = ctl_choose_token (bus, opt_token, TRUE, &error);
  if (dict == NULL)
    return ctl_report (error, NULL);
  p11c_wire_token_from_variant (dict, &token);
  label = token.label;
  path = token.path;
  if (token.pin_locked)
    {
      ctl_warn (_("The PIN of token “%s” is locked; it must be unlocked with the SO PIN first"), label);
      return CTL_EXIT_PIN_LOCKED;
    }
  if (!ctl_get_pin_policy (bus, &policy, &error))
    return ctl_report (error, _("Cannot read the PIN policy"));

  if (token.pin_final_try && opt_pin_file == NULL)
    fprintf (stderr, "%s\n", _("Warning: one more wrong PIN locks the token."));
  prompt = g_strdup_printf (_("Current PIN of token “%s”: "), label);
  old_pin = ctl_secret_get (opt_pin_file, -1, prompt, _("current token PIN"), &error);
  if (old_pin == NULL)
    return ctl_report (error, NULL);
  if (opt_new_pin_file == NULL && ctl_stdin_is_tty ())
    {
      rules = ctl_pin_policy_text (&policy);
      printf ("%s\n", rules);
      fflush (stdout);
    }
  prompt_new = g_strdup (_("New PIN: "));
  new_pin = ctl_secret_new (opt_new_pin_file, prompt_new, _("new token PIN"), &policy, &error);
  if (new_pin == NULL)
    return ctl_report (error, NULL);

  {
    P11cOptions options = { .allow_interaction = ctl_interactive () };
    GVariant *params = g_variant_ref_sink (g_variant_new ("(ss@a{sv})", old_pin, new_pin,
                                                          p11c_wire_options_to_variant (&options, FALSE)));
    reply = ctl_call (bus, path, P11C_DBUS_TOKEN_IFACE, "ChangePin", params, "()", CTL_TIMEOUT_TOKEN, &error);
    p11c_variant_wipe (params);
    g_variant_unref (params);
  }
  p11c_secret_clear (&old_pin);
  p11c_secret_clear (&new_pin);
  if (reply == NULL)
    {
      g_autofree char *remote = g_dbus_error_get_remote_error (error);
      if (g_strcmp0 (remote, "org.freedesktop.DBus.Error.UnknownMethod") == 0)
        {
          ctl_warn (_("The token “%s” went away; insert it again"), label);
          return CTL_EXIT_TOKEN_NOT_PRESENT;
        }
      return ctl_report_token_error (bus, error, path);
    }
  ctl_message (_("The PIN of token “%s” was changed."), label);
  return CTL_EXIT_OK;
}
