/* p11certctl enroll — a wizard on a terminal, flags for scripts: the
 * options, then the wizard's steps (ctl-wizard.c) */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-wizard.h"
#include "p11c-i18n.h"

int
ctl_cmd_enroll (int argc, char **argv)
{
  CtlWizard w = { .out_fd = -1 };
  GOptionEntry entries[] = {
    { "ca", 0, 0, G_OPTION_ARG_STRING, &w.ca_name, N_("CA profile (see “p11certctl ca list”)"), N_("NAME") },
    { "login", 0, 0, G_OPTION_ARG_STRING, &w.login, N_("Login at the CA (EST profiles)"), N_("L") },
    { "otp-file", 0, 0, G_OPTION_ARG_FILENAME, &w.otp_file, N_("Read the one-time password from FILE"), N_("FILE") },
    { "storage", 0, 0, G_OPTION_ARG_STRING, &w.storage, N_("Where the key goes: token (default), system, file"), N_("S") },
    { "token", 0, 0, G_OPTION_ARG_STRING, &w.token_spec, N_("The token (PKCS#11 URI or object path)"), N_("URI") },
    { "pin-file", 0, 0, G_OPTION_ARG_FILENAME, &w.pin_file, N_("Read the token PIN from FILE"), N_("FILE") },
    { "key-type", 0, 0, G_OPTION_ARG_STRING, &w.key_type, N_("ec-p256, ec-p384, rsa-2048 or rsa-3072"), N_("T") },
    { "subject", 0, 0, G_OPTION_ARG_STRING, &w.subject, N_("Subject DN (default: the profile's)"), N_("S") },
    { "label", 0, 0, G_OPTION_ARG_STRING, &w.label, N_("Label of the new objects on the token"), N_("L") },
    { "name", 0, 0, G_OPTION_ARG_STRING, &w.name, N_("Name in the system store (--storage system)"), N_("NAME") },
    { "output", 0, 0, G_OPTION_ARG_FILENAME, &w.output, N_("PKCS#12 file to create (--storage file)"), N_("FILE.p12") },
    { "password-file", 0, 0, G_OPTION_ARG_FILENAME, &w.password_file,
      N_("Read the PKCS#12 password from FILE"), N_("FILE") },
    { "no-wait", 0, 0, G_OPTION_ARG_NONE, &w.no_wait, N_("Print the job path and exit at once"), NULL },
    { "yes", 'y', 0, G_OPTION_ARG_NONE, &w.yes, N_("Do not ask for confirmation"), NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("— request a new certificate"));
  int rc = -1;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx,
    _("Generates a key and requests a certificate from a CA profile. On a terminal,\n"
      "whatever the options leave open is asked: CA profile, login and one-time\n"
      "password (EST), storage (token, system, file), the token and its PIN, or the\n"
      "output file and its password. Then follows the job (Ctrl-C cancels it)."));
  w.ctx = ctx;
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    ;
  else if (argc > 1)
    rc = ctl_usage_error (ctx, _("enroll: unexpected argument “%s”"), argv[1]);
  else if ((rc = ctl_wizard_check_options (&w)) >= 0)
    ;
  else if ((w.bus = ctl_bus (&rc)) != NULL)
    rc = ctl_wizard_run (&w);
  ctl_wizard_clear (&w);
  return rc;
}
