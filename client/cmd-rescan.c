/* p11certctl rescan */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-i18n.h"

int
ctl_cmd_rescan (int argc, char **argv)
{
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("— look for tokens again"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = NULL;
  GDBusConnection *bus;
  int rc;

  g_option_context_set_summary (ctx, _("Asks p11certd to enumerate every module's slots again (software tokens\n"
                                       "are otherwise only seen at start)."));
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (argc > 1)
    return ctl_usage_error (ctx, _("rescan: unexpected argument “%s”"), argv[1]);
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;
  reply = ctl_call_manager (bus, "Rescan", NULL, "()", CTL_TIMEOUT_TOKEN, &error);
  if (reply == NULL)
    return ctl_report (error, NULL);
  return CTL_EXIT_OK;
}
