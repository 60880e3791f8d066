/* p11certctl list [--token URI|PATH] [--storage token|system|file] [--json] */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-wire.h"
#include "p11c-i18n.h"

#include <stdio.h>

/* Where @cert is, for the table: "system", its token's label, or the path */
static char *
token_label (GVariant *tokens, const P11cWireCert *cert)
{
  if (g_strcmp0 (cert->storage, "system") == 0)
    return g_strdup (C_("storage", "system"));
  for (gsize i = 0; tokens != NULL && i < g_variant_n_children (tokens); i++)
    {
      g_autoptr(GVariant) dict = g_variant_get_child_value (tokens, i);
      P11cWireToken t;
      char *label = NULL;

      p11c_wire_token_from_variant (dict, &t);
      if (g_strcmp0 (t.path, cert->token) == 0)
        label = g_strdup (t.label);
      p11c_wire_token_clear (&t);
      if (label != NULL)
        return label;
    }
  return g_strdup (cert->token);
}

int
ctl_cmd_list (int argc, char **argv)
{
  g_autofree char *opt_token = NULL;
  g_autofree char *opt_storage = NULL;
  gboolean opt_json = FALSE, opt_verbose = FALSE;
  GOptionEntry entries[] = {
    { "token", 0, 0, G_OPTION_ARG_STRING, &opt_token, N_("Only this token (PKCS#11 URI or object path)"), N_("URI") },
    { "storage", 0, 0, G_OPTION_ARG_STRING, &opt_storage, N_("Only this storage: token, system or file"), N_("S") },
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, N_("Print JSON (every field, DER as base64)"), NULL },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose, N_("Print every certificate in full, with its URI"), NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("— list certificates"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) certs = NULL;
  g_autoptr(GVariant) tokens = NULL;
  g_autoptr(CtlTable) table = NULL;
  static const char *const headers[] = { N_("SUBJECT"), N_("EXPIRES"), N_("LEFT"), N_("TOKEN"), N_("LABEL") };
  GDBusConnection *bus;
  int rc;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx, _("Lists the certificates on the tokens and in the system store: subject,\n"
                                       "expiry date and days left, token (or “system”) and label.\n"
                                       "Use --verbose or --json for URIs and details."));
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (argc > 1)
    return ctl_usage_error (ctx, _("list: unexpected argument “%s”"), argv[1]);
  if (opt_storage && !g_str_equal (opt_storage, "token") && !g_str_equal (opt_storage, "system")
      && !g_str_equal (opt_storage, "file"))
    return ctl_usage_error (ctx, _("--storage must be token, system or file, not “%s”"), opt_storage);
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;

  {
    P11cListParams request = { .token = opt_token, .storage = opt_storage, .allow_interaction = ctl_interactive () };
    reply = ctl_call_manager (bus, "ListCerts", g_variant_new ("(@a{sv})", p11c_wire_list_to_variant (&request)),
                              "(aa{sv})", CTL_TIMEOUT_LIST, &error);
  }
  if (reply == NULL)
    return ctl_report (error, NULL);
  certs = g_variant_get_child_value (reply, 0);
  if (opt_json)
    {
      ctl_json_print (certs);
      return CTL_EXIT_OK;
    }
  if (g_variant_n_children (certs) == 0)
    {
      ctl_message ("%s", _("No certificates."));
      return CTL_EXIT_OK;
    }
  tokens = ctl_list_tokens (bus, NULL);
  if (opt_verbose)
    {
      for (gsize i = 0; i < g_variant_n_children (certs); i++)
        {
          g_autoptr(GVariant) dict = g_variant_get_child_value (certs, i);
          g_auto(P11cWireCert) c = { 0 };
          if (!p11c_wire_cert_from_variant (dict, &c, NULL))
            continue;
          if (i > 0)
            putchar ('\n');
          ctl_print_cert (&c, tokens);
          if (c.error == NULL)
            {
              /* TRANSLATORS: aligned with the lines of a certificate (Subject:, Issuer:, …) */
              printf (c.has_private_key ? _("  Key:      %s, private key present\n")
                                                                  : _("  Key:      %s, no private key\n"),
                      c.key_type ? c.key_type : "?");
              if (c.renewal_due)
                printf ("%s", _("  Renewal:  due\n"));
              if (c.ca != NULL)
                printf (_("  CA:       %s\n"), c.ca);
              printf (_("  SHA-256:  %s\n"), c.sha256 ? c.sha256 : "");
            }
        }
      fflush (stdout);
      return CTL_EXIT_OK;
    }
  table = ctl_table_new (5, headers);
  ctl_table_set_shrinkable (table, 0, 16);
  ctl_table_set_shrinkable (table, 3, 8);
  ctl_table_set_shrinkable (table, 4, 8);
  for (gsize i = 0; i < g_variant_n_children (certs); i++)
    {
      g_autoptr(GVariant) dict = g_variant_get_child_value (certs, i);
      g_autofree char *subject = NULL;
      g_autofree char *date = NULL;
      g_autofree char *left = NULL;
      g_autofree char *where = NULL;
      P11cWireCert c;

      if (!p11c_wire_cert_from_variant (dict, &c, NULL))
        continue;
      if (!c.parsed)
        {
          subject = g_strdup_printf (_("(unreadable: %s)"), c.error ? c.error : "?");
          date = g_strdup ("-");
          left = g_strdup ("-");
        }
      else
        {
          subject = g_strdup (c.subject);
          date = ctl_format_date (c.not_after);
          left = ctl_format_days_left (c.not_after);
          if (c.renewal_due && c.not_after > g_get_real_time () / G_USEC_PER_SEC)
            {
              char *tmp = g_strconcat (left, " !", NULL);
              g_free (left);
              left = tmp;
            }
        }
      where = token_label (tokens, &c);
      ctl_table_add_row (table, subject, date, left, where, c.label ? c.label : "");
      p11c_wire_cert_clear (&c);
    }
  ctl_table_print (table, ctl_output_width ());
  return CTL_EXIT_OK;
}
