/* p11certd-tokens: the desktop app for tokens and certificates.
 *
 * A client of p11certd's public D-Bus API only.  Started normally it opens
 * its window; started with --background (the XDG autostart entry) or by
 * D-Bus activation (--gapplication-service) it opens none and only turns the
 * daemon's signals into desktop notifications — waiting on the bus, no
 * polling. */
#include "p11d-app.h"
#include "p11d-client.h"
#include "p11d-i18n.h"
#include "p11d-text.h"

static gboolean opt_background;
/* --background (autostart) or D-Bus activation as a service: no window until
 * asked for one; the app stays for the notifications. */
static gboolean skip_first_activate;

static GtkWindow *
main_window (GtkApplication *app)
{
  GList *l = gtk_application_get_windows (app);
  for (; l != NULL; l = l->next)
    if (g_object_get_data (l->data, "p11d-main") != NULL)
      return l->data;
  return p11d_window_new (app);
}

static void
action_enroll (GSimpleAction *action, GVariant *param, gpointer app)
{
  GtkWindow *w = main_window (app);
  gtk_window_present (w);
  p11d_wizard_open (w);
}

static void
action_show_cert (GSimpleAction *action, GVariant *param, gpointer app)
{
  GtkWindow *w = main_window (app);
  gtk_window_present (w);
  p11d_window_show_cert (w, g_variant_get_string (param, NULL));
}

static void
action_show_token (GSimpleAction *action, GVariant *param, gpointer app)
{
  GtkWindow *w = main_window (app);
  gtk_window_present (w);
  p11d_window_show_token (w, g_variant_get_string (param, NULL));
}

static void
action_about (GSimpleAction *action, GVariant *param, gpointer app)
{
  AdwAboutWindow *about = ADW_ABOUT_WINDOW (adw_about_window_new ());
  adw_about_window_set_application_name (about, _("Tokens and Certificates"));
  adw_about_window_set_application_icon (about, P11D_APP_ID);
  adw_about_window_set_version (about, P11C_VERSION);
  adw_about_window_set_license_type (about, GTK_LICENSE_LGPL_2_1);
  adw_about_window_set_comments (about, _("Your tokens and certificates: delete a certificate, get a new one."));
  gtk_window_set_transient_for (GTK_WINDOW (about), main_window (app));
  gtk_window_present (GTK_WINDOW (about));
}

static void
action_quit (GSimpleAction *action, GVariant *param, gpointer app)
{
  g_application_quit (app);
}

/* ---- notifications ------------------------------------------------------ */

typedef struct {
  char *uri;
  gint64 not_after;
  gboolean needs_renewal;
} Expiring;

static void
expiring_free (Expiring *x)
{
  g_free (x->uri);
  g_free (x);
}

/* announced before the app listed the certificates: told once they are */
static GPtrArray *pending_expiring;

static void notify_expiring (P11dClient *client, const char *uri, gint64 not_after, gboolean needs_renewal,
                             GApplication *app);

static void
on_expiring (P11dClient *client, const char *uri, gint64 not_after, gboolean needs_renewal, GApplication *app)
{
  Expiring *x;

  if (p11d_client_find_cert (client, uri) != NULL)
    {
      notify_expiring (client, uri, not_after, needs_renewal, app);
      return;
    }
  x = g_new0 (Expiring, 1);
  x->uri = g_strdup (uri);
  x->not_after = not_after;
  x->needs_renewal = needs_renewal;
  g_ptr_array_add (pending_expiring, x);
  p11d_client_refresh (client);
}

static void
on_listed (P11dClient *client, GApplication *app)
{
  if (p11d_client_get_state (client) != P11D_CLIENT_READY)
    return;
  for (guint i = 0; i < pending_expiring->len; i++)
    {
      Expiring *x = pending_expiring->pdata[i];
      notify_expiring (client, x->uri, x->not_after, x->needs_renewal, app);
    }
  g_ptr_array_set_size (pending_expiring, 0);
}

static void
notify_expiring (P11dClient *client, const char *uri, gint64 not_after, gboolean needs_renewal, GApplication *app)
{
  g_autoptr(GNotification) n = NULL;
  g_autofree char *id = g_strconcat ("cert-", uri, NULL);
  g_autofree char *date = p11d_date_text (not_after);
  g_autofree char *body = NULL;
  GVariant *cert = p11d_client_find_cert (client, uri);
  g_autofree char *cn = p11d_common_name (p11d_dict_str (cert, "subject", ""));
  gint64 days = (not_after - g_get_real_time () / G_USEC_PER_SEC) / 86400;

  n = g_notification_new (days < 0 ? _("A certificate has expired") : _("A certificate expires soon"));
  if (days < 0)
    body = g_strdup_printf (_("The certificate “%s” expired on %s. Get a new one."), cn, date);
  else
    body = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE,
                                         "The certificate “%s” expires on %s (%ld day left). Get a new one.",
                                         "The certificate “%s” expires on %s (%ld days left). Get a new one.",
                                         (gulong) days), cn, date, (long) days);
  g_notification_set_body (n, body);
  g_notification_set_priority (n, days < 7 ? G_NOTIFICATION_PRIORITY_HIGH : G_NOTIFICATION_PRIORITY_NORMAL);
  g_notification_set_default_action_and_target (n, "app.show-cert", "s", uri);
  g_notification_add_button_with_target (n, _("Show"), "app.show-cert", "s", uri);
  if (needs_renewal)
    g_notification_add_button (n, _("Get a new certificate"), "app.enroll");
  g_application_send_notification (app, id, n);
}

static void
on_pin_warning (P11dClient *client, const char *path, GApplication *app)
{
  GVariant *token = p11d_client_find_token (client, path);
  const char *text = p11d_token_pin_text (token);
  g_autoptr(GNotification) n = NULL;
  g_autofree char *id = g_strconcat ("pin-", path, NULL);
  g_autofree char *title = NULL;

  if (text == NULL)
    return;
  title = g_strdup_printf (_("Token “%s”: check the password"), p11d_dict_str (token, "label", ""));
  n = g_notification_new (title);
  g_notification_set_body (n, text);
  g_notification_set_priority (n, G_NOTIFICATION_PRIORITY_HIGH);
  g_notification_set_default_action_and_target (n, "app.show-token", "s", path);
  g_notification_add_button_with_target (n, _("Show"), "app.show-token", "s", path);
  g_application_send_notification (app, id, n);
}

static void
startup (GApplication *app)
{
  static const GActionEntry actions[] = {
    { "enroll", action_enroll, NULL, NULL, NULL, { 0 } },
    { "show-cert", action_show_cert, "s", NULL, NULL, { 0 } },
    { "show-token", action_show_token, "s", NULL, NULL, { 0 } },
    { "about", action_about, NULL, NULL, NULL, { 0 } },
    { "quit", action_quit, NULL, NULL, NULL, { 0 } },
  };
  const char *quit_accels[] = { "<Control>q", NULL };
  P11dClient *client = p11d_client_get_default ();

  g_action_map_add_action_entries (G_ACTION_MAP (app), actions, G_N_ELEMENTS (actions), app);
  gtk_application_set_accels_for_action (GTK_APPLICATION (app), "app.quit", quit_accels);
  g_signal_connect_object (client, "certificate-expiring", G_CALLBACK (on_expiring), app, 0);
  g_signal_connect_object (client, "pin-warning", G_CALLBACK (on_pin_warning), app, 0);
  pending_expiring = g_ptr_array_new_with_free_func ((GDestroyNotify) expiring_free);
  g_signal_connect_object (client, "changed", G_CALLBACK (on_listed), app, 0);
  if (skip_first_activate || (g_application_get_flags (app) & G_APPLICATION_IS_SERVICE))
    g_application_hold (app);
}


static void
activate (GApplication *app)
{
  if (skip_first_activate)
    {
      skip_first_activate = FALSE;
      return;
    }
  gtk_window_present (main_window (GTK_APPLICATION (app)));
}

static int
handle_local_options (GApplication *app, GVariantDict *options)
{
  if (opt_background)
    skip_first_activate = TRUE;
  return -1;
}

int
main (int argc, char **argv)
{
  static const GOptionEntry entries[] = {
    { "background", 0, 0, G_OPTION_ARG_NONE, &opt_background,
      N_("Start without a window and show notifications (autostart at login)"), NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr(AdwApplication) app = NULL;

  p11c_i18n_init ();
  g_set_application_name (_("Tokens and Certificates"));

  app = adw_application_new (P11D_APP_ID, G_APPLICATION_DEFAULT_FLAGS);
  g_application_add_main_option_entries (G_APPLICATION (app), entries);
  g_signal_connect (app, "startup", G_CALLBACK (startup), NULL);
  g_signal_connect (app, "activate", G_CALLBACK (activate), NULL);
  g_signal_connect (app, "handle-local-options", G_CALLBACK (handle_local_options), NULL);
  return g_application_run (G_APPLICATION (app), argc, argv);
}
