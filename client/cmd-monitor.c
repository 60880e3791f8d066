/* p11certctl monitor [--json] — one line per event until SIGINT/SIGTERM */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-i18n.h"
#include "p11c-names.h"
#include "p11c-wire.h"

#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  GMainLoop *loop;
  gboolean   json;
  gboolean   daemon_gone;
  GHashTable *last;   /* job path → last state line (the daemon repeats every property) */
  GHashTable *ended;  /* job paths whose end was printed */
} Monitor;

/* dates in event lines: a log format, the same in every language */
static char *
log_date (gint64 t)
{
  g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local (t);
  return dt ? g_date_time_format (dt, "%Y-%m-%d") : g_strdup ("?");
}

static char *
timestamp (gboolean iso)
{
  g_autoptr(GDateTime) now = g_date_time_new_now_local ();
  return g_date_time_format (now, iso ? "%Y-%m-%dT%H:%M:%S%:z" : "%Y-%m-%d %H:%M:%S");
}

static void
emit_line (GString *line)
{
  g_string_append_c (line, '\n');
  fputs (line->str, stdout);
  fflush (stdout);
}

/* key=value pairs of a dictionary, values quoted when they hold spaces */
static void
append_pairs (GString *s, GVariant *dict)
{
  GVariantIter iter;
  const char *key;
  GVariant *value;

  g_variant_iter_init (&iter, dict);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &value))
    {
      g_autofree char *text = NULL;
      if (g_variant_is_of_type (value, G_VARIANT_TYPE_STRING) || g_variant_is_of_type (value, G_VARIANT_TYPE_OBJECT_PATH))
        text = g_strdup (g_variant_get_string (value, NULL));
      else
        text = g_variant_print (value, FALSE);
      for (char *p = text; *p; p++)
        if ((guchar) *p < 0x20)
          *p = ' ';
      if (text[0] == '\0' || strpbrk (text, " \"=") != NULL)
        {
          g_autofree char *q = g_strescape (text, NULL);
          g_string_append_printf (s, " %s=\"%s\"", key, q);
        }
      else
        g_string_append_printf (s, " %s=%s", key, text);
      g_variant_unref (value);
    }
}

static void
json_begin (GString *s, const char *event)
{
  g_autofree char *ts = timestamp (TRUE);
  g_string_append (s, "{\"time\":");
  ctl_json_append_string (s, ts);
  g_string_append (s, ",\"event\":");
  ctl_json_append_string (s, event);
}

static void
json_field (GString *s, const char *key, GVariant *v)
{
  g_string_append_c (s, ',');
  ctl_json_append_string (s, key);
  g_string_append_c (s, ':');
  ctl_json_append (s, v, -1);
}

static void
json_string (GString *s, const char *key, const char *value)
{
  g_autoptr(GVariant) v = g_variant_ref_sink (g_variant_new_string (value));
  json_field (s, key, v);
}

static void
json_int64 (GString *s, const char *key, gint64 value)
{
  g_autoptr(GVariant) v = g_variant_ref_sink (g_variant_new_int64 (value));
  json_field (s, key, v);
}

static void
on_manager_signal (GDBusConnection *conn, const char *sender, const char *path, const char *iface,
                   const char *signal, GVariant *params, gpointer user_data)
{
  Monitor *m = user_data;
  g_autoptr(GString) s = g_string_new (NULL);
  g_autofree char *ts = timestamp (FALSE);

  if (g_str_equal (signal, "TokenInserted") || g_str_equal (signal, "TokenRemoved"))
    {
      P11cWireTokenEvent ev;
      g_autoptr(GVariant) info = NULL;
      if (!p11c_wire_token_event_from_variant (params, &ev))
        return;
      info = g_variant_ref_sink (p11c_wire_token_event_info (&ev));
      if (m->json)
        {
          g_autoptr(GVariant) token = g_variant_ref_sink (g_variant_new_object_path (ev.token));
          json_begin (s, signal);
          json_field (s, "token", token);
          json_field (s, "info", info);
          g_string_append_c (s, '}');
        }
      else
        {
          g_string_printf (s, "%s %s %s", ts, signal, ev.token);
          append_pairs (s, info);
        }
      p11c_wire_token_event_clear (&ev);
    }
  else if (g_str_equal (signal, "RenewalNeeded"))
    {
      P11cWireRenewalNeeded rn;
      g_autoptr(GVariant) info = NULL;
      if (!p11c_wire_renewal_needed_from_variant (params, &rn))
        return;
      info = g_variant_ref_sink (p11c_wire_renewal_needed_info (&rn));
      if (m->json)
        {
          json_begin (s, signal);
          json_string (s, "uri", rn.uri);
          json_int64 (s, "not_after", rn.not_after);
          json_field (s, "info", info);
          g_string_append_c (s, '}');
        }
      else
        {
          g_autofree char *date = log_date (rn.not_after);
          g_string_printf (s, "%s %s %s expires=%s", ts, signal, rn.uri, date);
          append_pairs (s, info);
        }
      p11c_wire_renewal_needed_clear (&rn);
    }
  else if (g_str_equal (signal, "CertificateExpiring"))
    {
      P11cWireExpiring ex;
      if (!p11c_wire_expiring_from_variant (params, &ex))
        return;
      if (m->json)
        {
          json_begin (s, signal);
          json_string (s, "uri", ex.uri);
          json_int64 (s, "not_after", ex.not_after);
          g_string_append_c (s, '}');
        }
      else
        {
          g_autofree char *date = log_date (ex.not_after);
          g_string_printf (s, "%s %s %s expires=%s days_left=%" G_GINT64_FORMAT, ts, signal, ex.uri, date,
                           MAX (ex.not_after - g_get_real_time () / G_USEC_PER_SEC, (gint64) 0) / 86400);
        }
      p11c_wire_expiring_clear (&ex);
    }
  else
    return;
  emit_line (s);
}

/* One JobFinished line per job.  Its error name and message are known to
 * the job's owner and root only (docs/security.md): others see the state. */
static void
print_job_finished (Monitor *m, const char *path, const char *state, const char *name, const char *message)
{
  g_autoptr(GString) s = g_string_new (NULL);
  g_autofree char *ts = timestamp (m->json);
  gboolean ok = g_strcmp0 (state, "done") == 0;

  if (!g_hash_table_add (m->ended, g_strdup (path)))
    return;
  g_hash_table_remove (m->last, path);
  if (m->json)
    {
      g_autoptr(GVariant) p = g_variant_ref_sink (g_variant_new_object_path (path));
      g_autoptr(GVariant) sv = g_variant_ref_sink (g_variant_new_boolean (ok));
      g_autoptr(GVariant) st = g_variant_ref_sink (g_variant_new_string (state));
      g_autoptr(GVariant) nv = g_variant_ref_sink (g_variant_new_string (name));
      g_autoptr(GVariant) mv = g_variant_ref_sink (g_variant_new_string (message));
      json_begin (s, "JobFinished");
      json_field (s, "job", p);
      json_field (s, "success", sv);
      json_field (s, "state", st);
      json_field (s, "error", nv);
      json_field (s, "message", mv);
      g_string_append_c (s, '}');
    }
  else
    {
      g_string_printf (s, "%s JobFinished %s %s", ts, path, ok ? "success" : name[0] ? name : state);
      if (!ok && message[0])
        {
          g_autofree char *q = g_strescape (message, NULL);
          g_string_append_printf (s, " message=\"%s\"", q);
        }
    }
  emit_line (s);
}

static void
on_job_signal (GDBusConnection *conn, const char *sender, const char *path, const char *iface,
               const char *signal, GVariant *params, gpointer user_data)
{
  Monitor *m = user_data;
  g_autoptr(GString) s = g_string_new (NULL);
  g_autofree char *ts = timestamp (FALSE);

  if (!g_str_has_prefix (path, P11C_DBUS_JOBS_PATH "/"))
    return;
  if (g_str_equal (signal, "PropertiesChanged"))
    {
      g_autofree char *which = NULL;
      g_autoptr(GVariant) changed = NULL;
      g_auto(P11cWireJob) job = { 0 };   /* only what changed: absent fields stay NULL/0 */
      const char *state;
      if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(sa{sv}as)")))
        return;
      g_variant_get (params, "(s@a{sv}as)", &which, &changed, NULL);
      p11c_wire_job_update (&job, changed);
      if (!g_str_equal (which, P11C_DBUS_JOB_IFACE) || (state = job.state) == NULL)
        return;
      if (g_str_equal (state, "done") || g_str_equal (state, "failed") || g_str_equal (state, "cancelled"))
        {
          /* the end, as every user sees it; the error as far as we may read it */
          g_autoptr(GVariant) reply = g_dbus_connection_call_sync (conn, P11C_DBUS_NAME, path,
                                                                   "org.freedesktop.DBus.Properties", "GetAll",
                                                                   g_variant_new ("(s)", P11C_DBUS_JOB_IFACE),
                                                                   G_VARIANT_TYPE ("(a{sv})"),
                                                                   G_DBUS_CALL_FLAGS_NONE, CTL_TIMEOUT_LIST,
                                                                   NULL, NULL);
          g_auto(P11cWireJob) all = { 0 };
          if (reply != NULL)
            {
              g_autoptr(GVariant) props = g_variant_get_child_value (reply, 0);
              p11c_wire_job_from_variant (props, &all);
            }
          print_job_finished (m, path, state, all.error ? all.error : "",
                              all.error_message ? all.error_message : "");
          return;
        }
      if (m->json)
        {
          g_autoptr(GVariant) p = g_variant_ref_sink (g_variant_new_object_path (path));
          json_begin (s, "JobChanged");
          json_field (s, "job", p);
          json_field (s, "properties", changed);
          g_string_append_c (s, '}');
        }
      else
        {
          g_autofree char *key = NULL;
          g_string_printf (s, "state=%s progress=%d%%", state, (int) (CLAMP (job.progress, 0.0, 1.0) * 100 + 0.5));
          if (job.attempt > 1)
            g_string_append_printf (s, " attempt=%u", job.attempt);
          if (g_strcmp0 (g_hash_table_lookup (m->last, path), s->str) == 0)
            return;
          g_hash_table_replace (m->last, g_strdup (path), g_strdup (s->str));
          key = g_strdup_printf ("%s JobChanged %s ", ts, path);
          g_string_prepend (s, key);
        }
      emit_line (s);
    }
  else if (g_str_equal (signal, "Finished"))
    {
      /* sent only to the connection that started the job */
      gboolean ok;
      g_autofree char *name = NULL;
      g_autofree char *message = NULL;
      if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(bss)")))
        return;
      g_variant_get (params, "(bss)", &ok, &name, &message);
      print_job_finished (m, path, ok ? "done" : g_strcmp0 (name, P11C_DBUS_ERROR_PREFIX "Cancelled") == 0
                                                   ? "cancelled" : "failed", name, message);
    }
}

static void
on_name_appeared (GDBusConnection *conn, const char *name, const char *owner, gpointer user_data)
{
  Monitor *m = user_data;
  if (m->daemon_gone)
    fprintf (stderr, "%s\n", _("p11certd is running again."));
  m->daemon_gone = FALSE;
}

static void
on_name_vanished (GDBusConnection *conn, const char *name, gpointer user_data)
{
  Monitor *m = user_data;
  if (!m->daemon_gone)
    fprintf (stderr, "%s\n", _("p11certd is not running (or not reachable on this bus); waiting for it."));
  m->daemon_gone = TRUE;
}

static gboolean
on_quit (gpointer user_data)
{
  Monitor *m = user_data;
  g_main_loop_quit (m->loop);
  return G_SOURCE_CONTINUE;   /* removed by the caller */
}

int
ctl_cmd_monitor (int argc, char **argv)
{
  gboolean opt_json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, N_("One JSON object per line"), NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("— print events as they happen"));
  Monitor m = { 0 };
  GDBusConnection *bus;
  guint subs[3], watch, sig_int, sig_term;
  int rc;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx, _("Prints one line per event (token inserted or removed, renewal needed,\n"
                                       "certificate expiring, job state changes) until interrupted.\n"
                                       "The lines are a log format: event names and fields are not translated."));
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (argc > 1)
    return ctl_usage_error (ctx, _("monitor: unexpected argument “%s”"), argv[1]);
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;
  m.json = opt_json;
  m.loop = g_main_loop_new (NULL, FALSE);
  m.last = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  m.ended = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  subs[0] = g_dbus_connection_signal_subscribe (bus, P11C_DBUS_NAME, P11C_DBUS_MANAGER_IFACE, NULL, P11C_DBUS_PATH,
                                                NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_manager_signal, &m, NULL);
  subs[1] = g_dbus_connection_signal_subscribe (bus, P11C_DBUS_NAME, "org.freedesktop.DBus.Properties",
                                                "PropertiesChanged", NULL, P11C_DBUS_JOB_IFACE,
                                                G_DBUS_SIGNAL_FLAGS_NONE, on_job_signal, &m, NULL);
  subs[2] = g_dbus_connection_signal_subscribe (bus, P11C_DBUS_NAME, P11C_DBUS_JOB_IFACE, "Finished", NULL, NULL,
                                                G_DBUS_SIGNAL_FLAGS_NONE, on_job_signal, &m, NULL);
  watch = g_bus_watch_name_on_connection (bus, P11C_DBUS_NAME, G_BUS_NAME_WATCHER_FLAGS_NONE, on_name_appeared,
                                          on_name_vanished, &m, NULL);
  sig_int = g_unix_signal_add (SIGINT, on_quit, &m);
  sig_term = g_unix_signal_add (SIGTERM, on_quit, &m);
  if (isatty (STDERR_FILENO))
    fprintf (stderr, "%s\n", _("Monitoring… (Ctrl-C to stop)"));
  /* make sure the match rules are in place before anyone relies on us */
  g_dbus_connection_flush_sync (bus, NULL, NULL);
  g_main_loop_run (m.loop);
  for (guint i = 0; i < G_N_ELEMENTS (subs); i++)
    g_dbus_connection_signal_unsubscribe (bus, subs[i]);
  g_bus_unwatch_name (watch);
  g_source_remove (sig_int);
  g_source_remove (sig_term);
  g_main_loop_unref (m.loop);
  g_hash_table_unref (m.last);
  g_hash_table_unref (m.ended);
  return CTL_EXIT_OK;
}
