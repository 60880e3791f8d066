/* p11certctl tokens [--json] */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-wire.h"
#include "p11c-i18n.h"

static const char *
pin_state (const P11cWireToken *t)
{
  if (t->pin_locked)
    return C_("PIN state", "LOCKED");
  if (t->pin_final_try)
    return C_("PIN state", "final try");
  if (t->pin_count_low)
    return C_("PIN state", "count low");
  if (!t->present)
    return C_("PIN state", "absent");
  return C_("PIN state", "ok");
}

int
ctl_cmd_tokens (int argc, char **argv)
{
  gboolean opt_json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, N_("Print JSON (the full ListTokens reply)"), NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("— list the tokens"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) tokens = NULL;
  g_autoptr(CtlTable) table = NULL;
  static const char *const headers[] = { N_("LABEL"), N_("SERIAL"), N_("MANUFACTURER"), N_("PIN"), N_("PATH") };
  GDBusConnection *bus;
  int rc;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx, _("Lists the PKCS#11 tokens present: label, serial, manufacturer, PIN state\n"
                                       "(ok, count low, final try, LOCKED) and D-Bus object path."));
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (argc > 1)
    return ctl_usage_error (ctx, _("tokens: unexpected argument “%s”"), argv[1]);
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;
  tokens = ctl_list_tokens (bus, &error);
  if (tokens == NULL)
    return ctl_report (error, NULL);
  if (opt_json)
    {
      ctl_json_print (tokens);
      return CTL_EXIT_OK;
    }
  if (g_variant_n_children (tokens) == 0)
    {
      ctl_message ("%s", _("No tokens present."));
      return CTL_EXIT_OK;
    }
  table = ctl_table_new (5, headers);
  /* the path is what --token takes: never cut it */
  ctl_table_set_shrinkable (table, 0, 8);
  ctl_table_set_shrinkable (table, 1, 6);
  ctl_table_set_shrinkable (table, 2, 6);
  for (gsize i = 0; i < g_variant_n_children (tokens); i++)
    {
      g_autoptr(GVariant) dict = g_variant_get_child_value (tokens, i);
      P11cWireToken t;

      p11c_wire_token_from_variant (dict, &t);
      ctl_table_add_row (table, t.label, t.serial, t.manufacturer, pin_state (&t), t.path);
      p11c_wire_token_clear (&t);
    }
  ctl_table_print (table, ctl_output_width ());
  return CTL_EXIT_OK;
}
