/* p11certctl's job follower: watch a job (PropertiesChanged, Finished,
 * the daemon going away) until it ends, showing progress; Ctrl-C cancels it.
 * The job's properties are read through the wire codec (P11cWireJob). */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-job.h"
#include "ctl-common.h"
#include "p11c-i18n.h"
#include "p11c-names.h"

#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define BAR_WIDTH 10

typedef struct {
  GMainLoop       *loop;
  GDBusConnection *bus;
  const char      *path;
  const char      *prefix;
  gboolean         tty;
  P11cWireJob      job;        /* what the job showed so far */
  gboolean         finished;
  gboolean         cancel_sent;
  guint            interrupts;
  gboolean         vanished;
  gboolean         line_open;   /* tty: a progress line without newline */
  gboolean         final_shown; /* tty: the last line was drawn */
  char            *last_plain;
} Follow;

static gboolean
state_is_final (const char *state)
{
  return g_strcmp0 (state, "done") == 0 || g_strcmp0 (state, "failed") == 0
         || g_strcmp0 (state, "cancelled") == 0;
}

static void
apply_props (Follow *f, GVariant *props)
{
  p11c_wire_job_update (&f->job, props);
}

static char *
describe (Follow *f, gboolean countdown)
{
  g_autoptr(GString) s = g_string_new (ctl_job_state_text (f->job.state));
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;

  if (!state_is_final (f->job.state) && (f->job.attempt > 1 || f->job.retry_at > 0))
    {
      g_string_append (s, " (");
      g_string_append_printf (s, _("attempt %u"), MAX (f->job.attempt, 1u));
      if (f->job.retry_at > 0)
        {
          g_string_append (s, ", ");
          if (countdown)
            {
              int left = (int) CLAMP (f->job.retry_at - now, 0, G_MAXINT);
              g_string_append_printf (s, ngettext ("retry in %d second", "retry in %d seconds", left), left);
            }
          else
            {
              g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local (f->job.retry_at);
              /* TRANSLATORS: the time of the next attempt (g_date_time_format) */
              g_autofree char *at = dt ? g_date_time_format (dt, _("%H:%M:%S")) : g_strdup ("?");
              g_string_append_printf (s, _("retry at %s"), at);
            }
        }
      g_string_append_c (s, ')');
    }
  return g_string_free (g_steal_pointer (&s), FALSE);
}

static void
render (Follow *f)
{
  int pct = (int) (CLAMP (f->job.progress, 0.0, 1.0) * 100.0 + 0.5);

  if (f->job.state == NULL)
    return;
  if (f->tty)
    {
      if (f->final_shown)
        return;
      g_autofree char *text = describe (f, TRUE);
      char bar[BAR_WIDTH + 1];
      int fill = pct * BAR_WIDTH / 100;
      for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : ' ';
      bar[BAR_WIDTH] = '\0';
      printf ("\r%s[%s] %3d%% %s\033[K", f->prefix ? f->prefix : "", bar, pct, text);
      f->line_open = TRUE;
      if (state_is_final (f->job.state))
        {
          putchar ('\n');
          f->line_open = FALSE;
          f->final_shown = TRUE;
        }
      fflush (stdout);
    }
  else
    {
      g_autofree char *text = describe (f, FALSE);
      g_autofree char *line = g_strdup_printf ("%s%3d%% %s", f->prefix ? f->prefix : "", pct, text);
      if (g_strcmp0 (line, f->last_plain) != 0)
        {
          puts (line);
          fflush (stdout);
          g_free (f->last_plain);
          f->last_plain = g_steal_pointer (&line);
        }
    }
}

static void
end_line (Follow *f)
{
  if (f->line_open)
    {
      putchar ('\n');
      fflush (stdout);
      f->line_open = FALSE;
    }
}

static void follow_end (Follow *f);

static void
on_properties_changed (GDBusConnection *conn, const char *sender, const char *path, const char *iface,
                       const char *signal, GVariant *params, gpointer user_data)
{
  Follow *f = user_data;
  g_autofree char *which = NULL;
  g_autoptr(GVariant) changed = NULL;

  if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(sa{sv}as)")))
    return;
  g_variant_get (params, "(s@a{sv}as)", &which, &changed, NULL);
  if (!g_str_equal (which, P11C_DBUS_JOB_IFACE) || f->finished)
    return;
  apply_props (f, changed);
  /* the final state is what every user is told; Finished (with the error)
   * goes only to the connection that started the job */
  if (state_is_final (f->job.state))
    follow_end (f);
  else
    render (f);
}

static gboolean
fetch_props (Follow *f, GError **error)
{
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync (f->bus, P11C_DBUS_NAME, f->path,
                                                           "org.freedesktop.DBus.Properties", "GetAll",
                                                           g_variant_new ("(s)", P11C_DBUS_JOB_IFACE),
                                                           G_VARIANT_TYPE ("(a{sv})"), G_DBUS_CALL_FLAGS_NONE,
                                                           CTL_TIMEOUT_LIST, NULL, error);
  g_autoptr(GVariant) props = NULL;
  if (reply == NULL)
    return FALSE;
  g_variant_get (reply, "(@a{sv})", &props);
  apply_props (f, props);
  return TRUE;
}

static void
on_finished (GDBusConnection *conn, const char *sender, const char *path, const char *iface,
             const char *signal, GVariant *params, gpointer user_data)
{
  Follow *f = user_data;
  gboolean success;
  g_autofree char *name = NULL;
  g_autofree char *message = NULL;

  if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(bss)")) || f->finished)
    return;
  g_variant_get (params, "(bss)", &success, &name, &message);
  if (!state_is_final (f->job.state))
    {
      g_free (f->job.state);
      f->job.state = g_strdup (success ? "done" : g_strcmp0 (name, P11C_DBUS_ERROR_PREFIX "Cancelled") == 0
                                                ? "cancelled" : "failed");
    }
  if (!success)
    {
      g_free (f->job.error);
      f->job.error = g_strdup (name);
      g_free (f->job.error_message);
      f->job.error_message = g_strdup (message);
    }
  follow_end (f);
}

/* The job ended: read the final properties once more (Result, or the error
 * for its owner and root) in case a change was lost, show them, stop. */
static void
follow_end (Follow *f)
{
  g_autofree char *state = g_strdup (f->job.state);

  fetch_props (f, NULL);
  if (!state_is_final (f->job.state))
    {
      g_free (f->job.state);
      f->job.state = g_steal_pointer (&state);
    }
  f->finished = TRUE;
  render (f);
  g_main_loop_quit (f->loop);
}

static void
cancel_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Follow *f = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), res, &error);

  if (reply == NULL && !f->finished)
    {
      end_line (f);
      ctl_report (error, _("Cannot cancel the job"));
    }
}

static gboolean
on_signal (gpointer user_data)
{
  Follow *f = user_data;

  f->interrupts++;
  if (f->finished)
    return G_SOURCE_CONTINUE;
  end_line (f);
  if (f->interrupts == 1)
    {
      fprintf (stderr, "%s\n", _("Cancelling the job… (press Ctrl-C again to stop waiting)"));
      f->cancel_sent = TRUE;
      g_dbus_connection_call (f->bus, P11C_DBUS_NAME, f->path, P11C_DBUS_JOB_IFACE, "Cancel", NULL, NULL,
                              G_DBUS_CALL_FLAGS_NONE, CTL_TIMEOUT_LIST, NULL, cancel_done, f);
    }
  else
    {
      fprintf (stderr, _("Stopped waiting; the job may still be running: p11certctl job %s"), f->path);
      fputc ('\n', stderr);
      g_free (f->job.state);
      f->job.state = g_strdup ("interrupted");
      g_main_loop_quit (f->loop);
    }
  return G_SOURCE_CONTINUE;
}

static gboolean
on_tick (gpointer user_data)
{
  Follow *f = user_data;
  if (f->job.retry_at > 0 && !f->finished)
    render (f);
  return G_SOURCE_CONTINUE;
}

static void
on_name_vanished (GDBusConnection *conn, const char *name, gpointer user_data)
{
  Follow *f = user_data;
  if (f->finished)
    return;
  f->vanished = TRUE;
  g_main_loop_quit (f->loop);
}

gboolean
ctl_follow_job (GDBusConnection *bus, const char *path, const char *prefix, P11cWireJob *out, GError **error)
{
  Follow f = { 0 };
  guint sub_props, sub_fin, watch, sig_int, sig_term, tick = 0;
  g_autoptr(GError) local = NULL;
  gboolean ok = TRUE;

  memset (out, 0, sizeof *out);
  if (!g_variant_is_object_path (path))
    {
      g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, _("“%s” is not a D-Bus object path (like %s/1)"), path,
                   P11C_DBUS_JOBS_PATH);
      return FALSE;
    }
  f.loop = g_main_loop_new (NULL, FALSE);
  f.bus = bus;
  f.path = path;
  f.prefix = prefix;
  f.tty = isatty (STDOUT_FILENO);

  /* subscribe first, then read the state: no change can be missed */
  sub_props = g_dbus_connection_signal_subscribe (bus, P11C_DBUS_NAME, "org.freedesktop.DBus.Properties",
                                                  "PropertiesChanged", path, P11C_DBUS_JOB_IFACE,
                                                  G_DBUS_SIGNAL_FLAGS_NONE, on_properties_changed, &f, NULL);
  sub_fin = g_dbus_connection_signal_subscribe (bus, P11C_DBUS_NAME, P11C_DBUS_JOB_IFACE, "Finished", path, NULL,
                                                G_DBUS_SIGNAL_FLAGS_NONE, on_finished, &f, NULL);
  watch = g_bus_watch_name_on_connection (bus, P11C_DBUS_NAME, G_BUS_NAME_WATCHER_FLAGS_NONE, NULL,
                                          on_name_vanished, &f, NULL);
  sig_int = g_unix_signal_add (SIGINT, on_signal, &f);
  sig_term = g_unix_signal_add (SIGTERM, on_signal, &f);

  if (!fetch_props (&f, &local))
    {
      g_autofree char *remote = g_dbus_error_get_remote_error (local);
      if (g_strcmp0 (remote, "org.freedesktop.DBus.Error.UnknownMethod") == 0
          || g_strcmp0 (remote, "org.freedesktop.DBus.Error.UnknownObject") == 0
          || g_strcmp0 (remote, "org.freedesktop.DBus.Error.UnknownInterface") == 0)
        g_set_error (error, CTL_ERROR, CTL_ERROR_NOT_FOUND,
                     _("No job %s (a finished job stays on the bus only for a while)"), path);
      else
        g_propagate_error (error, g_steal_pointer (&local));
      ok = FALSE;
    }
  else
    {
      render (&f);
      if (state_is_final (f.job.state))
        f.finished = TRUE;
      else
        {
          if (f.tty)
            tick = g_timeout_add_seconds (1, on_tick, &f);
          g_main_loop_run (f.loop);
        }
      end_line (&f);
      if (f.vanished && !f.finished)
        {
          g_set_error (error, CTL_ERROR, CTL_ERROR_FAILED,
                       _("p11certd went away while the job %s was running; see its log "
                         "(journalctl -u p11certd)"), path);
          ok = FALSE;
        }
    }

  if (tick)
    g_source_remove (tick);
  g_source_remove (sig_int);
  g_source_remove (sig_term);
  g_bus_unwatch_name (watch);
  g_dbus_connection_signal_unsubscribe (bus, sub_props);
  g_dbus_connection_signal_unsubscribe (bus, sub_fin);
  g_main_loop_unref (f.loop);

  *out = f.job;   /* taken */
  g_free (f.last_plain);
  if (!ok)
    p11c_wire_job_clear (out);   /* nothing to report: the callers only report @error */
  return ok;
}

int
ctl_job_exit_code (const P11cWireJob *r)
{
  if (g_strcmp0 (r->state, "done") == 0)
    return CTL_EXIT_OK;
  if (g_strcmp0 (r->state, "cancelled") == 0 || g_strcmp0 (r->state, "interrupted") == 0)
    return CTL_EXIT_CANCELLED;
  return ctl_exit_code_for_name (r->error);
}

static gboolean
is_ca_error (const char *name)
{
  return g_strcmp0 (name, P11C_DBUS_ERROR_PREFIX "CaRejected") == 0
         || g_strcmp0 (name, P11C_DBUS_ERROR_PREFIX "CaUnreachable") == 0
         || g_strcmp0 (name, P11C_DBUS_ERROR_PREFIX "CaBadReply") == 0;
}

int
ctl_job_report (GDBusConnection *bus, const P11cWireJob *r, const char *output_file)
{
  if (g_strcmp0 (r->state, "done") == 0)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(GVariant) cert = NULL;

      ctl_message ("%s", _("The certificate was written successfully."));
      if (r->result == NULL || r->result[0] == '\0')
        return CTL_EXIT_OK;
      if (g_str_has_prefix (r->result, "file:"))
        {
          if (output_file)
            ctl_message (_("  File:     %s"), output_file);
          ctl_message (_("  Id:       %s"), r->result);
          return CTL_EXIT_OK;
        }
      cert = ctl_find_cert (bus, r->result, &error);
      if (cert != NULL)
        {
          g_autoptr(GVariant) tokens = ctl_list_tokens (bus, NULL);
          g_auto(P11cWireCert) entry = { 0 };
          if (p11c_wire_cert_from_variant (cert, &entry, NULL))
            ctl_print_cert (&entry, tokens);
        }
      else
        ctl_message (_("  URI:      %s"), r->result);
      return CTL_EXIT_OK;
    }
  if (g_strcmp0 (r->state, "interrupted") == 0)
    return CTL_EXIT_CANCELLED;
  if (g_strcmp0 (r->state, "cancelled") == 0)
    {
      ctl_warn ("%s", _("The job was cancelled; nothing was written."));
      return CTL_EXIT_CANCELLED;
    }
  {
    g_autofree char *text = ctl_error_text (r->error, r->error_details, r->error_message);
    ctl_warn ("%s", text);
  }
  if (is_ca_error (r->error))
    fprintf (stderr, "%s\n", _("Try again (at most 3 times), then contact your manager."));
  return ctl_job_exit_code (r);
}

