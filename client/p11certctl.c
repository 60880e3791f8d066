/* p11certctl — command-line client of p11certd */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-i18n.h"
#include "p11c-names.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static const CtlCommand commands[] = {
  { "tokens",  ctl_cmd_tokens,  N_("List the tokens and their PIN state") },
  { "list",    ctl_cmd_list,    N_("List certificates on tokens and in the system store") },
  { "delete",  ctl_cmd_delete,  N_("Delete a certificate (and its key)") },
  { "passwd",  ctl_cmd_passwd,  N_("Change a token's user PIN") },
  { "enroll",  ctl_cmd_enroll,  N_("Request a new certificate from a CA") },
  { "job",     ctl_cmd_job,     N_("Follow an enroll or renew job") },
  { "ca",      ctl_cmd_ca,      N_("List or show CA profiles") },
  { "renew",   ctl_cmd_renew,   N_("Renew a certificate, or every due one") },
  { "monitor", ctl_cmd_monitor, N_("Print token and certificate events") },
  { "rescan",  ctl_cmd_rescan,  N_("Look for tokens again") },
};

/* Secrets must never be given on the command line. */
static const char *const secret_options[] = {
  "--pin", "--otp", "--password", "--new-pin", "--old-pin", "--so-pin", NULL,
};

static int
reject_secret_args (int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    {
      if (g_str_equal (argv[i], "--"))
        break;
      for (guint k = 0; secret_options[k]; k++)
        {
          gsize n = strlen (secret_options[k]);
          if (strncmp (argv[i], secret_options[k], n) == 0 && (argv[i][n] == '\0' || argv[i][n] == '='))
            {
              const char *hint = g_str_equal (secret_options[k], "--otp") ? _("--otp-file FILE")
                                 : g_str_equal (secret_options[k], "--password") ? _("--password-file FILE")
                                 : g_str_equal (secret_options[k], "--new-pin") ? _("--new-pin-file FILE")
                                 : _("--pin-file FILE or --pin-fd N");
              /* never echo the value */
              fprintf (stderr, "p11certctl: ");
              /* TRANSLATORS: %1$s is the option given (--pin), %2$s the ones to use instead */
              fprintf (stderr, _("secrets are not accepted on the command line (%1$s), where other users can "
                                 "see them; use %2$s, or type it when asked"),
                       secret_options[k], hint);
              fputc ('\n', stderr);
              return CTL_EXIT_USAGE;
            }
        }
    }
  return -1;
}

static char *
commands_description (void)
{
  GString *s = g_string_new (_("Commands:"));
  g_string_append_c (s, '\n');
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    g_string_append_printf (s, "  %-9s %s\n", commands[i].name, _(commands[i].summary));
  g_string_append_c (s, '\n');
  g_string_append (s, _("Run 'p11certctl COMMAND --help' for the options of a command.\n"
                        "Exit status: 0 ok, 1 failure, 2 usage, 3 PIN incorrect, 4 PIN locked, 5 PIN policy,\n"
                        "6 not authorized, 7 not found, 8 CA unreachable, 9 CA rejected, 10 token not present,\n"
                        "11 cancelled, 20 (renew --due) some certificates need a person."));
  return g_string_free (s, FALSE);
}

int
main (int argc, char **argv)
{
  gboolean opt_system = FALSE, opt_session = FALSE, opt_version = FALSE;
  g_autofree char *opt_address = NULL;
  g_autofree char *desc = NULL;
  g_autoptr(GOptionContext) ctx = NULL;
  g_autoptr(GError) error = NULL;
  GOptionEntry entries[] = {
    { "system", 0, 0, G_OPTION_ARG_NONE, &opt_system, N_("Use the system bus (default)"), NULL },
    { "session", 0, 0, G_OPTION_ARG_NONE, &opt_session, N_("Use the session bus"), NULL },
    { "address", 0, 0, G_OPTION_ARG_STRING, &opt_address, N_("Use the bus at ADDR (default: $P11CERTD_BUS_ADDRESS, else the system bus)"), N_("ADDR") },
    { "version", 0, 0, G_OPTION_ARG_NONE, &opt_version, N_("Print the version and exit"), NULL },
    { NULL },
  };
  const char *name;
  int rc;

  p11c_i18n_init ();
  signal (SIGPIPE, SIG_IGN);
  g_set_prgname ("p11certctl");

  if ((rc = reject_secret_args (argc, argv)) >= 0)
    return rc;

  ctx = g_option_context_new (_("COMMAND [ARGS…] — manage certificates on PKCS#11 tokens through p11certd"));
  desc = commands_description ();
  g_option_context_set_description (ctx, desc);
  g_option_context_add_main_entries (ctx, entries, GETTEXT_PACKAGE);
  g_option_context_set_strict_posix (ctx, TRUE);
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return ctl_usage_error (ctx, "%s", error->message);
  if (opt_version)
    {
      printf ("p11certctl %s\n", P11C_VERSION);
      return CTL_EXIT_OK;
    }
  if ((opt_system ? 1 : 0) + (opt_session ? 1 : 0) + (opt_address ? 1 : 0) > 1)
    return ctl_usage_error (ctx, _("--system, --session and --address exclude each other"));
  if (opt_address)
    ctl_set_bus (CTL_BUS_ADDRESS, opt_address);
  else if (opt_session)
    ctl_set_bus (CTL_BUS_SESSION, NULL);
  else if (opt_system)
    ctl_set_bus (CTL_BUS_SYSTEM, NULL);

  if (argc < 2)
    {
      g_autofree char *help = g_option_context_get_help (ctx, TRUE, NULL);
      fputs (help, stderr);
      return CTL_EXIT_USAGE;
    }
  name = argv[1];
  if (g_str_equal (name, "help"))
    {
      g_autofree char *help = g_option_context_get_help (ctx, TRUE, NULL);
      fputs (help, stdout);
      return CTL_EXIT_OK;
    }
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    if (g_str_equal (commands[i].name, name))
      {
        g_autofree char *prgname = g_strdup_printf ("p11certctl %s", name);
        g_set_prgname (prgname);
        /* the command sees argv[0] = its name */
        return commands[i].func (argc - 1, argv + 1);
      }
  return ctl_usage_error (ctx, _("Unknown command “%s”"), name);
}
