#pragma once
/* p11certctl: following an enroll or renew job (ctl-job.c) */
#include <gio/gio.h>
#include "p11c-wire.h"

G_BEGIN_DECLS

/* Follow a job until it ends (Ctrl-C cancels it), showing progress.
 * @prefix labels lines when several jobs are followed (may be NULL).
 * Returns FALSE with error when the job cannot be followed (not found,
 * daemon gone); the job's own outcome is in @out (clear it with
 * p11c_wire_job_clear). */
gboolean ctl_follow_job (GDBusConnection *bus, const char *path, const char *prefix,
                         P11cWireJob *out, GError **error);
/* Report the end of a job the usual way (@output_file: the PKCS#12 file of
 * a file enrollment, for the message); returns the exit code. */
int ctl_job_report (GDBusConnection *bus, const P11cWireJob *r, const char *output_file);
/* The exit code of a finished job */
int ctl_job_exit_code (const P11cWireJob *r);

G_END_DECLS
