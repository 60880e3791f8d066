/* p11certctl job JOB_PATH (the follower is ctl-job.c) */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "ctl-job.h"
#include "p11c-i18n.h"
#include "p11c-names.h"


/* ---- the command -------------------------------------------------------- */

int
ctl_cmd_job (int argc, char **argv)
{
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("JOB_PATH — follow a job until it finishes"));
  g_autoptr(GError) error = NULL;
  P11cWireJob r = { 0 };
  GDBusConnection *bus;
  int rc;

  g_option_context_set_summary (ctx, _("Shows the state of an enroll or renew job (object path as printed by\n"
                                       "“enroll --no-wait”) and follows it; Ctrl-C cancels the job."));
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (argc != 2)
    return ctl_usage_error (ctx, _("job: give one job object path (like %s/1)"), P11C_DBUS_JOBS_PATH);
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;
  if (!ctl_follow_job (bus, argv[1], NULL, &r, &error))
    return ctl_report (error, NULL);
  rc = ctl_job_report (bus, &r, NULL);
  p11c_wire_job_clear (&r);
  return rc;
}
