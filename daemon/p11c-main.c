#define G_LOG_DOMAIN "p11certd"
#include "p11c-auth.h"
#include "p11c-config.h"
#include "p11c-dbus.h"
#include "p11c-engine.h"
#include "p11c-enroll.h"
#include "p11c-error.h"
#include "p11c-names.h"
#include "p11c-pcsc.h"
#include <glib-unix.h>
#include <locale.h>
#include <signal.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

typedef struct {
  GMainLoop       *loop;
  P11cEngine      *engine;
  P11cDaemon      *daemon;
  P11cBus         *bus;
  P11cPcscMonitor *pcsc;
  int              exit_code;
} App;

static void
on_pcsc_event (const P11cPcscEvent *ev, gpointer data)
{
  App *app = data;

  switch (ev->kind)
    {
    case P11C_PCSC_CARD_INSERTED:
    case P11C_PCSC_CARD_REMOVED:
      p11c_daemon_card_event (app->daemon, ev->kind == P11C_PCSC_CARD_INSERTED, ev->reader, ev->atr);
      break;
    case P11C_PCSC_SERVICE_UP:
    case P11C_PCSC_READER_ADDED:
    case P11C_PCSC_READER_REMOVED:
      /* slots may have come or gone with the readers */
      p11c_daemon_rescan (app->daemon);
      break;
    case P11C_PCSC_SERVICE_DOWN:
      break;    /* logged by the monitor; we keep serving what we know */
    }
}

static gboolean
on_signal (gpointer data)
{
  App *app = data;
  g_message ("Stopping");
  sd_notify (0, "STOPPING=1");
  g_main_loop_quit (app->loop);
  return G_SOURCE_CONTINUE;
}

static gboolean
on_watchdog (gpointer data)
{
  sd_notify (0, "WATCHDOG=1");
  return G_SOURCE_CONTINUE;
}

static void
name_acquired (App *app, const char *name)
{
  g_autofree char *status = g_strdup_printf ("STATUS=Serving %u token(s)", p11c_engine_get_tokens (app->engine)->len);

  g_message ("Owning %s; %u token(s) present", name, p11c_engine_get_tokens (app->engine)->len);
  sd_notify (0, "READY=1");
  sd_notify (0, status);
}

static void
bus_closed (gpointer data)
{
  App *app = data;
  g_warning ("Lost the bus connection");
  app->exit_code = 1;
  g_main_loop_quit (app->loop);
}

int
main (int argc, char **argv)
{
  App app = { 0 };
  gboolean session = FALSE, verbose = FALSE, version = FALSE;
  g_autofree char *address = NULL, *config_file = NULL, *state_dir = NULL;
  g_autoptr(GOptionContext) ctx = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cConfig) config = NULL;
  g_autoptr(GPtrArray) scan = NULL;
  guint64 watchdog_usec = 0;
  GOptionEntry entries[] = {
    { "session", 0, 0, G_OPTION_ARG_NONE, &session, "Use the session bus (for tests)", NULL },
    { "address", 0, 0, G_OPTION_ARG_STRING, &address, "Use the bus at ADDRESS", "ADDRESS" },
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_file, "Configuration file (default " P11C_DEFAULT_CONFIG ")", "FILE" },
    { "state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir, "State directory (default from the configuration)", "DIR" },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log debug messages", NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL },
    { NULL }
  };

  setlocale (LC_ALL, "");
  /* the daemon's messages — its own, GLib's, strerror's — stay English for
   * logs and administrators; clients translate from error names and
   * structured details (docs/design.md, "Languages") */
  setlocale (LC_MESSAGES, "C");
  /* a caller's pipe that closes early is an error to report, not a death */
  signal (SIGPIPE, SIG_IGN);
  ctx = g_option_context_new ("- PKCS#11 token and certificate service");
  g_option_context_set_summary (ctx, "Owns org.p11certd on the system bus and manages certificates on PKCS#11 tokens.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    {
      g_printerr ("p11certd: %s\n", error->message);
      return 2;
    }
  if (version)
    {
      g_print ("p11certd %s (D-Bus API %u)\n", P11C_VERSION, P11C_API_VERSION);
      return 0;
    }
  if (verbose)
    g_log_set_debug_enabled (TRUE);
  if (config_file == NULL && g_getenv (P11C_ENV_CONFIG))
    config_file = g_strdup (g_getenv (P11C_ENV_CONFIG));

  config = p11c_config_load (config_file, &error);
  if (config == NULL)
    {
      g_printerr ("p11certd: %s\n", error->message);
      return 1;
    }
  if (state_dir == NULL && g_getenv (P11C_ENV_STATE_DIR))
    state_dir = g_strdup (g_getenv (P11C_ENV_STATE_DIR));
  if (state_dir)
    {
      g_free (config->state_dir);
      config->state_dir = g_steal_pointer (&state_dir);
    }
  if (g_mkdir_with_parents (config->state_dir, 0700) != 0)
    g_warning ("Cannot create the state directory %s: %m", config->state_dir);

  app.loop = g_main_loop_new (NULL, FALSE);
  app.engine = p11c_engine_new (g_steal_pointer (&config));
  p11c_engine_load_modules (app.engine);
  scan = p11c_engine_scan (app.engine);
  p11c_engine_apply_scan (app.engine, scan);
  p11c_enroll_recover (app.engine);

  app.bus = p11c_bus_new (address, session, G_CALLBACK (bus_closed), &app, &error);
  if (app.bus == NULL)
    {
      g_printerr ("p11certd: cannot connect to the bus: %s\n", error->message);
      return 1;
    }
  (void) P11C_ERROR;   /* register the error domain before any reply */

  app.daemon = p11c_daemon_new (app.bus, app.engine, &error);
  if (app.daemon == NULL)
    {
      g_printerr ("p11certd: cannot export the D-Bus objects: %s\n", error->message);
      return 1;
    }
  /* hotplug: a thread blocked in SCardGetStatusChange, events on our loop */
  app.pcsc = p11c_pcsc_monitor_new (NULL, on_pcsc_event, &app);

  if (p11c_bus_request_name (app.bus, P11C_DBUS_NAME, &error))
    name_acquired (&app, P11C_DBUS_NAME);
  else
    {
      g_warning ("%s: is another p11certd running, or does the bus policy forbid it?", error->message);
      app.exit_code = 1;
      g_main_loop_quit (app.loop);
    }

  g_unix_signal_add (SIGTERM, on_signal, &app);
  g_unix_signal_add (SIGINT, on_signal, &app);
  if (sd_watchdog_enabled (0, &watchdog_usec) > 0 && watchdog_usec > 0)
    g_timeout_add (watchdog_usec / 2000, on_watchdog, NULL);

  if (app.exit_code == 0)
    g_main_loop_run (app.loop);

  p11c_pcsc_monitor_free (app.pcsc);
  p11c_daemon_shutdown (app.daemon);
  p11c_daemon_free (app.daemon);
  p11c_auth_shutdown ();
  p11c_bus_free (app.bus);   /* sends what is queued */
  p11c_engine_free (app.engine);
  g_main_loop_unref (app.loop);
  return app.exit_code;
}
