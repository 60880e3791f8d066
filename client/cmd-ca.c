/* p11certctl ca list [--json] | ca show NAME [--pem] */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-wire.h"
#include "p11c-i18n.h"

#include <stdio.h>
#include <string.h>

static GVariant *
list_cas (GDBusConnection *bus, GError **error)
{
  g_autoptr(GVariant) reply = ctl_call_manager (bus, "ListCas", NULL, "(aa{sv})", CTL_TIMEOUT_LIST, error);
  if (reply == NULL)
    return NULL;
  return g_variant_get_child_value (reply, 0);
}

static int
ca_list (int argc, char **argv)
{
  gboolean opt_json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, N_("Print JSON"), NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("— list the CA profiles"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) cas = NULL;
  g_autoptr(CtlTable) table = NULL;
  static const char *const headers[] = { N_("NAME"), N_("TYPE"), N_("KEY TYPE"), N_("LOGIN"), N_("URL") };
  GDBusConnection *bus;
  int rc;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (argc > 1)
    return ctl_usage_error (ctx, _("ca list: unexpected argument “%s”"), argv[1]);
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;
  cas = list_cas (bus, &error);
  if (cas == NULL)
    return ctl_report (error, NULL);
  if (opt_json)
    {
      ctl_json_print (cas);
      return CTL_EXIT_OK;
    }
  if (g_variant_n_children (cas) == 0)
    {
      ctl_message ("%s", _("No CA profiles."));
      return CTL_EXIT_OK;
    }
  table = ctl_table_new (5, headers);
  ctl_table_set_shrinkable (table, 0, 8);
  ctl_table_set_shrinkable (table, 4, 16);
  for (gsize i = 0; i < g_variant_n_children (cas); i++)
    {
      g_autoptr(GVariant) dict = g_variant_get_child_value (cas, i);
      P11cWireCa c;

      p11c_wire_ca_from_variant (dict, &c);
      ctl_table_add_row (table, c.name, c.type, c.key_type,
                         c.needs_login ? _("yes") : c.needs_otp ? _("challenge") : _("no"), c.url[0] ? c.url : "-");
      p11c_wire_ca_clear (&c);
    }
  ctl_table_print (table, ctl_output_width ());
  return CTL_EXIT_OK;
}

static int
ca_show (int argc, char **argv)
{
  gboolean opt_pem = FALSE;
  GOptionEntry entries[] = {
    { "pem", 0, 0, G_OPTION_ARG_NONE, &opt_pem, N_("Print the CA certificate (trust anchor) as PEM"), NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("NAME — show a CA profile"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) cas = NULL;
  P11cWireCa ca = { 0 };
  GDBusConnection *bus;
  int rc;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (argc != 2)
    return ctl_usage_error (ctx, "%s", _("ca show: give one CA profile name"));
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;
  if (opt_pem)
    {
      g_autoptr(GVariant) reply = ctl_call_manager (bus, "GetCaCertificate", g_variant_new ("(s)", argv[1]), "(s)",
                                                    CTL_TIMEOUT_LIST, &error);
      g_autofree char *pem = NULL;
      if (reply == NULL)
        return ctl_report (error, NULL);
      g_variant_get (reply, "(s)", &pem);
      fputs (pem, stdout);
      if (pem[0] && pem[strlen (pem) - 1] != '\n')
        putchar ('\n');
      fflush (stdout);
      return CTL_EXIT_OK;
    }
  cas = list_cas (bus, &error);
  if (cas == NULL)
    return ctl_report (error, NULL);
  for (gsize i = 0; i < g_variant_n_children (cas) && ca.name == NULL; i++)
    {
      g_autoptr(GVariant) dict = g_variant_get_child_value (cas, i);
      p11c_wire_ca_from_variant (dict, &ca);
      if (g_strcmp0 (ca.name, argv[1]) != 0)
        p11c_wire_ca_clear (&ca);
    }
  if (ca.name == NULL)
    {
      ctl_warn (_("No CA profile “%s”; see “p11certctl ca list”"), argv[1]);
      return CTL_EXIT_NOT_FOUND;
    }
  /* TRANSLATORS: a CA profile's fields; keep the values aligned */
  printf (_("Name:        %s\n"), ca.name);
  printf (_("Type:        %s\n"), ca.type);
  if (ca.url[0])
    printf (_("URL:         %s\n"), ca.url);
  if (ca.label[0])
    printf (_("EST label:   %s\n"), ca.label);
  printf (_("Key type:    %s\n"), ca.key_type);
  printf (_("Needs login: %s\n"), ca.needs_login ? _("yes (login and one-time password)")
                                   : ca.needs_otp ? _("no; a challenge password (SCEP)")
                                   : _("no"));
  if (ca.is_default)
    printf ("%s", _("Default:     yes (default-ca in p11certd.conf: enroll uses it without --ca)\n"));
  printf (_("(the CA certificate: p11certctl ca show %s --pem)\n"), ca.name);
  fflush (stdout);
  p11c_wire_ca_clear (&ca);
  return CTL_EXIT_OK;
}

int
ctl_cmd_ca (int argc, char **argv)
{
  if (argc >= 2 && g_str_equal (argv[1], "list"))
    {
      g_set_prgname ("p11certctl ca list");
      return ca_list (argc - 1, argv + 1);
    }
  if (argc >= 2 && g_str_equal (argv[1], "show"))
    {
      g_set_prgname ("p11certctl ca show");
      return ca_show (argc - 1, argv + 1);
    }
  if (argc >= 2 && (g_str_equal (argv[1], "--help") || g_str_equal (argv[1], "-h")))
    {
      printf ("%s", _("Usage:\n  p11certctl ca list [--json]\n  p11certctl ca show NAME [--pem]\n\n"
                      "Lists the CA profiles, or shows one (with --pem, its CA certificate or trust anchor).\n"));
      return CTL_EXIT_OK;
    }
  if (argc < 2)
    return ctl_usage_error (NULL, "%s", _("ca: give a subcommand: list or show NAME"));
  return ctl_usage_error (NULL, _("ca: unknown subcommand “%s” (list, show NAME)"), argv[1]);
}
