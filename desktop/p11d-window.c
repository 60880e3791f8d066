/* The main window: the tokens present and their certificates, live.
 *
 * Rebuilt from the client's listing on every "changed" (TokenInserted,
 * TokenRemoved, a token's PropertiesChanged): no refresh button.  A card
 * entering a reader (CardInserted) shows "Reading the token…" at once, until
 * TokenInserted names the token in that reader. */
#define G_LOG_DOMAIN "p11d"
#include "p11d-app.h"
#include "p11d-client.h"
#include "p11d-i18n.h"
#include "p11d-text.h"

#define SOON_DAYS 30

typedef struct {
  GtkWindow *window;
  GtkStack *stack;
  GtkBox *token_box;
  AdwStatusPage *error_page;
  GtkRevealer *reading_revealer;
  GtkLabel *reading_label;
  GtkSpinner *reading_spinner;
  GHashTable *expanded;       /* certificate URIs whose details are open */
  GHashTable *cert_rows;      /* uri -> AdwExpanderRow (owned by the box) */
  GHashTable *token_groups;   /* token path -> AdwPreferencesGroup */
  GPtrArray *reading;         /* readers whose card is being read */
  GPtrArray *unknown;         /* readers holding a card no module recognised */
  GVariant *shown;            /* what the list shows now */
  GPtrArray *retired;         /* the list before, hidden; destroyed at the next change */
  gboolean painted;
  P11dClient *client;
} Win;

void
p11d_set_accessible_name (gpointer widget, const char *name)
{
  gtk_accessible_update_property (GTK_ACCESSIBLE (widget), GTK_ACCESSIBLE_PROPERTY_LABEL, name, -1);
}

/* Names the icon-only buttons libadwaita puts inside a password row (the
 * "show the password" toggle), which have no name of their own. */
void
p11d_name_icon_buttons (GtkWidget *widget, const char *name)
{
  for (GtkWidget *c = gtk_widget_get_first_child (widget); c; c = gtk_widget_get_next_sibling (c))
    {
      if (GTK_IS_BUTTON (c) && gtk_button_get_label (GTK_BUTTON (c)) == NULL)
        p11d_set_accessible_name (c, name);
      p11d_name_icon_buttons (c, name);
    }
}

static void
win_free (Win *w)
{
  g_signal_handlers_disconnect_by_data (w->client, w);
  g_hash_table_unref (w->expanded);
  g_hash_table_unref (w->cert_rows);
  g_hash_table_unref (w->token_groups);
  g_ptr_array_unref (w->reading);
  g_ptr_array_unref (w->unknown);
  g_ptr_array_unref (w->retired);
  g_clear_pointer (&w->shown, g_variant_unref);
  g_free (w);
}

/* Shows page @name of @stack and hides the others, so what is not on screen
 * is not visible to assistive technologies either. */
void
p11d_stack_show (GtkStack *stack, const char *name)
{
  GtkWidget *page = gtk_stack_get_child_by_name (stack, name);

  gtk_widget_set_visible (page, TRUE);
  gtk_stack_set_visible_child (stack, page);
  for (GtkWidget *c = gtk_widget_get_first_child (GTK_WIDGET (stack)); c; c = gtk_widget_get_next_sibling (c))
    if (c != page)
      gtk_widget_set_visible (c, FALSE);
}

/* ---- certificate rows --------------------------------------------------- */

static void
add_detail (GtkGrid *grid, int row, const char *name, const char *value)
{
  GtkWidget *k = gtk_label_new (name);
  GtkWidget *v = gtk_label_new (value);

  gtk_label_set_xalign (GTK_LABEL (k), 0);
  gtk_widget_set_valign (k, GTK_ALIGN_START);
  gtk_widget_add_css_class (k, "dim-label");
  gtk_label_set_xalign (GTK_LABEL (v), 0);
  gtk_label_set_selectable (GTK_LABEL (v), TRUE);
  gtk_label_set_wrap (GTK_LABEL (v), TRUE);
  gtk_label_set_wrap_mode (GTK_LABEL (v), PANGO_WRAP_WORD_CHAR);
  gtk_widget_set_hexpand (v, TRUE);
  gtk_grid_attach (grid, k, 0, row, 1, 1);
  gtk_grid_attach (grid, v, 1, row, 1, 1);
}

static void
add_details (AdwExpanderRow *row)
{
  GVariant *c = g_object_get_data (G_OBJECT (row), "cert");
  const char *cn = g_object_get_data (G_OBJECT (row), "cn");
  const char *uri = p11d_dict_str (c, "uri", "");
  const char *error = p11d_dict_str (c, "error", NULL);
  gint64 not_after = p11d_dict_int64 (c, "not_after", 0);
  GtkWidget *grid, *box, *button;
  g_autofree char *button_name = NULL;
  int r = 0;

  if (g_object_get_data (G_OBJECT (row), "details") != NULL)
    return;
  g_object_set_data (G_OBJECT (row), "details", GINT_TO_POINTER (1));
  grid = gtk_grid_new ();
  gtk_grid_set_column_spacing (GTK_GRID (grid), 12);
  gtk_grid_set_row_spacing (GTK_GRID (grid), 6);
  if (error == NULL)
    {
      g_autofree char *from = p11d_datetime_text (p11d_dict_int64 (c, "not_before", 0));
      g_autofree char *until = p11d_datetime_text (not_after);
      add_detail (GTK_GRID (grid), r++, _("Subject"), p11d_dict_str (c, "subject", ""));
      add_detail (GTK_GRID (grid), r++, _("Issuer"), p11d_dict_str (c, "issuer", ""));
      add_detail (GTK_GRID (grid), r++, _("Serial number"), p11d_dict_str (c, "serial", ""));
      add_detail (GTK_GRID (grid), r++, _("Valid from"), from);
      add_detail (GTK_GRID (grid), r++, _("Valid until"), until);
      add_detail (GTK_GRID (grid), r++, _("SHA-256 fingerprint"), p11d_dict_str (c, "sha256", ""));
      add_detail (GTK_GRID (grid), r++, _("Private key"),
                  p11d_dict_bool (c, "has_private_key", FALSE) ? _("on the token, next to the certificate")
                                                               : _("none"));
    }
  add_detail (GTK_GRID (grid), r++, _("URI"), uri);

  box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 12);
  gtk_widget_set_margin_top (box, 12);
  gtk_widget_set_margin_bottom (box, 12);
  gtk_widget_set_margin_start (box, 12);
  gtk_widget_set_margin_end (box, 12);
  gtk_box_append (GTK_BOX (box), grid);
  button = gtk_button_new_with_mnemonic (_("_Delete certificate"));
  gtk_widget_set_halign (button, GTK_ALIGN_END);
  gtk_widget_add_css_class (button, "destructive-action");
  gtk_actionable_set_action_target (GTK_ACTIONABLE (button), "s", uri);
  gtk_actionable_set_action_name (GTK_ACTIONABLE (button), "win.delete-cert");
  button_name = g_strdup_printf (_("Delete certificate “%s”"), cn[0] ? cn : uri);
  p11d_set_accessible_name (button, button_name);
  gtk_box_append (GTK_BOX (box), button);
  adw_expander_row_add_row (row, box);

}

static void
expanded_changed (AdwExpanderRow *row, GParamSpec *pspec, Win *w)
{
  const char *uri = g_object_get_data (G_OBJECT (row), "uri");
  if (adw_expander_row_get_expanded (row))
    {
      add_details (row);
      g_hash_table_add (w->expanded, g_strdup (uri));
    }
  else
    g_hash_table_remove (w->expanded, uri);
}

static void
unparent_popover (GtkWidget *row, GtkWidget *popover)
{
  gtk_widget_unparent (popover);
}

/* right-click (or a long press) on a certificate: its context menu */
static void
row_context_menu (GtkGestureClick *gesture, int n_press, double x, double y, gpointer user_data)
{
  GtkWidget *row = gtk_event_controller_get_widget (GTK_EVENT_CONTROLLER (gesture));
  GtkWidget *popover = g_object_get_data (G_OBJECT (row), "menu");

  if (popover == NULL)
    {
      g_autoptr(GMenu) menu = g_menu_new ();
      g_autoptr(GMenuItem) show = g_menu_item_new (_("Show details"), NULL);
      g_autoptr(GMenuItem) del = g_menu_item_new (_("Delete certificate"), NULL);
      const char *uri = g_object_get_data (G_OBJECT (row), "uri");
      g_menu_item_set_action_and_target (show, "win.show-cert", "s", uri);
      g_menu_item_set_action_and_target (del, "win.delete-cert", "s", uri);
      g_menu_append_item (menu, show);
      g_menu_append_item (menu, del);
      popover = gtk_popover_menu_new_from_model (G_MENU_MODEL (menu));
      gtk_popover_set_has_arrow (GTK_POPOVER (popover), FALSE);
      gtk_widget_set_halign (popover, GTK_ALIGN_START);
      gtk_widget_set_parent (popover, row);
      g_object_set_data (G_OBJECT (row), "menu", popover);
      g_signal_connect (row, "destroy", G_CALLBACK (unparent_popover), popover);
    }
  gtk_popover_set_pointing_to (GTK_POPOVER (popover), &(GdkRectangle) { (int) x, (int) y, 1, 1 });
  gtk_popover_popup (GTK_POPOVER (popover));
  gtk_gesture_set_state (GTK_GESTURE (gesture), GTK_EVENT_SEQUENCE_CLAIMED);
}

static GtkWidget *
cert_row (Win *w, GVariant *c)
{
  const char *uri = p11d_dict_str (c, "uri", "");
  const char *error = p11d_dict_str (c, "error", NULL);
  g_autofree char *cn = p11d_common_name (p11d_dict_str (c, "subject", ""));
  g_autofree char *issuer = p11d_common_name (p11d_dict_str (c, "issuer", ""));
  gint64 not_after = p11d_dict_int64 (c, "not_after", 0);
  gint64 days = p11d_dict_int64 (c, "days_left", 0);
  AdwExpanderRow *row = ADW_EXPANDER_ROW (adw_expander_row_new ());
  GtkWidget *status = NULL;
  g_autofree char *subtitle = NULL, *expiry = NULL;
  GtkGesture *click;

  g_object_set_data_full (G_OBJECT (row), "uri", g_strdup (uri), g_free);
  adw_preferences_row_set_use_markup (ADW_PREFERENCES_ROW (row), FALSE);
  adw_expander_row_set_icon_name (row, "application-certificate-symbolic");
  if (error != NULL)
    {
      const char *label = p11d_dict_str (c, "label", "");
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), label[0] ? label : _("Certificate"));
      adw_expander_row_set_subtitle (row, _("This object is not a valid certificate."));
    }
  else
    {
      expiry = p11d_expiry_text (not_after, days);
      /* TRANSLATORS: "issued by <issuer> · <valid until … / expired …>" */
      subtitle = g_strdup_printf (_("issued by %s · %s"), issuer, expiry);
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), cn);
      adw_expander_row_set_subtitle (row, subtitle);
      if (days < 0)
        status = gtk_label_new (_("Expired"));
      else if (days <= SOON_DAYS)
        status = gtk_label_new (_("Expires soon"));
      if (status != NULL)
        {
          gtk_widget_add_css_class (status, days < 0 ? "cert-expired" : "cert-soon");
          gtk_widget_add_css_class (status, "heading");
          adw_expander_row_add_action (row, status);
        }
    }

  /* details on demand: made when the row is first opened */
  g_object_set_data_full (G_OBJECT (row), "cert", g_variant_ref (c), (GDestroyNotify) g_variant_unref);
  g_object_set_data_full (G_OBJECT (row), "cn", g_strdup (cn), g_free);
  g_signal_connect (row, "notify::expanded", G_CALLBACK (expanded_changed), w);
  if (g_hash_table_contains (w->expanded, uri))
    adw_expander_row_set_expanded (row, TRUE);

  click = gtk_gesture_click_new ();
  gtk_gesture_single_set_button (GTK_GESTURE_SINGLE (click), GDK_BUTTON_SECONDARY);
  g_signal_connect (click, "pressed", G_CALLBACK (row_context_menu), w);
  gtk_widget_add_controller (GTK_WIDGET (row), GTK_EVENT_CONTROLLER (click));

  g_hash_table_insert (w->cert_rows, g_strdup (uri), row);
  return GTK_WIDGET (row);
}

/* ---- token groups ------------------------------------------------------- */

static GtkWidget *
token_group (Win *w, GVariant *t, GPtrArray *certs)
{
  const char *path = "", *label = p11d_dict_str (t, "label", "");
  const char *pin_text = p11d_token_pin_text (t);
  AdwPreferencesGroup *group = ADW_PREFERENCES_GROUP (adw_preferences_group_new ());
  g_autofree char *desc = NULL, *change_name = NULL;
  GtkWidget *change;
  guint n = 0;

  g_variant_lookup (t, "path", "&o", &path);
  adw_preferences_group_set_title (group, label);
  /* TRANSLATORS: a token's model, manufacturer and the reader it is in */
  desc = g_strdup_printf (_("%s · %s · reader: %s"), p11d_dict_str (t, "model", ""),
                          p11d_dict_str (t, "manufacturer", ""), p11d_dict_str (t, "slot", ""));
  adw_preferences_group_set_description (group, desc);
  p11d_set_accessible_name (group, label);

  change = gtk_button_new_with_mnemonic (_("Change _password…"));
  gtk_widget_add_css_class (change, "flat");
  gtk_widget_set_valign (change, GTK_ALIGN_CENTER);
  gtk_actionable_set_action_target (GTK_ACTIONABLE (change), "s", path);
  gtk_actionable_set_action_name (GTK_ACTIONABLE (change), "win.change-pin");
  change_name = g_strdup_printf (_("Change the password of token “%s”"), label);
  p11d_set_accessible_name (change, change_name);
  adw_preferences_group_set_header_suffix (group, change);

  if (pin_text != NULL)
    {
      GtkWidget *row = adw_action_row_new ();
      GtkWidget *icon = gtk_image_new_from_icon_name ("dialog-warning-symbolic");
      adw_preferences_row_set_use_markup (ADW_PREFERENCES_ROW (row), FALSE);
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), pin_text);
      adw_action_row_set_title_lines (ADW_ACTION_ROW (row), 0);
      adw_action_row_add_prefix (ADW_ACTION_ROW (row), icon);
      gtk_widget_add_css_class (row, "pin-warning");
      adw_preferences_group_add (group, row);
    }
  for (guint i = 0; i < certs->len; i++)
    {
      const char *owner = "";
      if (g_variant_lookup (certs->pdata[i], "token", "&o", &owner) && g_str_equal (owner, path))
        {
          adw_preferences_group_add (group, cert_row (w, certs->pdata[i]));
          n++;
        }
    }
  if (n == 0)
    {
      GtkWidget *row = adw_action_row_new ();
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), _("No certificates on this token"));
      adw_preferences_group_add (group, row);
    }
  g_hash_table_insert (w->token_groups, g_strdup (path), group);
  return GTK_WIDGET (group);
}

static GtkWidget *
system_group (Win *w, GPtrArray *certs)
{
  AdwPreferencesGroup *group = NULL;

  for (guint i = 0; i < certs->len; i++)
    if (g_str_equal (p11d_dict_str (certs->pdata[i], "storage", ""), "system"))
      {
        if (group == NULL)
          {
            group = ADW_PREFERENCES_GROUP (adw_preferences_group_new ());
            adw_preferences_group_set_title (group, _("System store of this computer"));
            adw_preferences_group_set_description (group, _("Certificates kept for the services of this computer"));
          }
        adw_preferences_group_add (group, cert_row (w, certs->pdata[i]));
      }
  return group ? GTK_WIDGET (group) : NULL;
}

/* G_MESSAGES_DEBUG=p11d: the frame that first draws the listing (bench/desktop.py) */
static gboolean
first_frame (GtkWidget *widget, GdkFrameClock *clock, gpointer user_data)
{
  Win *w = user_data;
  g_debug ("List shown: %u token(s), %u certificate(s)", p11d_client_get_tokens (w->client)->len,
           p11d_client_get_certs (w->client)->len);
  return G_SOURCE_REMOVE;
}

static GVariant *
snapshot (P11dClient *c)
{
  GPtrArray *tokens = p11d_client_get_tokens (c), *certs = p11d_client_get_certs (c);
  return g_variant_ref_sink (g_variant_new ("(u@aa{sv}@aa{sv}bs)", p11d_client_get_state (c),
                                            g_variant_new_array (G_VARIANT_TYPE_VARDICT, (GVariant **) tokens->pdata,
                                                                 tokens->len),
                                            g_variant_new_array (G_VARIANT_TYPE_VARDICT, (GVariant **) certs->pdata,
                                                                 certs->len),
                                            p11d_client_get_system_allowed (c),
                                            p11d_client_get_problem (c) ? p11d_client_get_problem (c) : ""));
}

/* The list is drawn again only when what it shows changed.  The widgets it
 * replaces are hidden first and destroyed at the next change: in GTK 4.8 an
 * accessibility client (a screen reader, the tests) still reading a widget
 * the moment it was destroyed crashed the app. */
static void
rebuild (Win *w)
{
  P11dClient *c = w->client;
  GPtrArray *tokens = p11d_client_get_tokens (c), *certs = p11d_client_get_certs (c);
  GVariant *now = snapshot (c);
  GtkWidget *child, *sys = NULL;

  if (w->shown != NULL && g_variant_equal (now, w->shown))
    {
      g_variant_unref (now);
      return;
    }
  g_clear_pointer (&w->shown, g_variant_unref);
  w->shown = now;
  for (guint i = 0; i < w->retired->len; i++)
    gtk_box_remove (w->token_box, w->retired->pdata[i]);
  g_ptr_array_set_size (w->retired, 0);
  for (child = gtk_widget_get_first_child (GTK_WIDGET (w->token_box)); child; child = gtk_widget_get_next_sibling (child))
    {
      gtk_widget_set_visible (child, FALSE);
      g_ptr_array_add (w->retired, child);
    }
  g_hash_table_remove_all (w->cert_rows);
  g_hash_table_remove_all (w->token_groups);

  switch (p11d_client_get_state (c))
    {
    case P11D_CLIENT_CONNECTING:
      p11d_stack_show (w->stack, "loading");
      return;
    case P11D_CLIENT_UNAVAILABLE:
      adw_status_page_set_description (w->error_page, p11d_client_get_problem (c));
      p11d_stack_show (w->stack, "error");
      return;
    case P11D_CLIENT_READY:
      break;
    }
  for (guint i = 0; i < tokens->len; i++)
    gtk_box_append (w->token_box, token_group (w, tokens->pdata[i], certs));
  if (p11d_client_get_system_allowed (c) && (sys = system_group (w, certs)) != NULL)
    gtk_box_append (w->token_box, sys);
  p11d_stack_show (w->stack, tokens->len || sys ? "list" : "empty");
  if (!w->painted)
    {
      w->painted = TRUE;
      gtk_widget_add_tick_callback (GTK_WIDGET (w->token_box), first_frame, w, NULL);
    }
}

/* ---- card events -------------------------------------------------------- */

static void
update_reading (Win *w)
{
  gboolean reading = w->reading->len > 0, unknown = w->unknown->len > 0;
  g_autofree char *text = NULL;

  if (reading)
    text = g_strdup_printf (_("Reading the token in “%s”…"), (char *) w->reading->pdata[w->reading->len - 1]);
  else if (unknown)
    text = g_strdup_printf (_("The card in “%s” is not a token this computer can use."),
                            (char *) w->unknown->pdata[w->unknown->len - 1]);
  if (text != NULL)
    gtk_label_set_text (w->reading_label, text);
  gtk_spinner_set_spinning (w->reading_spinner, reading);
  gtk_widget_set_visible (GTK_WIDGET (w->reading_spinner), reading);
  gtk_widget_set_visible (GTK_WIDGET (w->reading_revealer), reading || unknown);
  gtk_revealer_set_reveal_child (w->reading_revealer, reading || unknown);
}

static void
drop_reader (GPtrArray *readers, const char *reader)
{
  for (guint i = 0; i < readers->len; i++)
    if (g_str_equal (readers->pdata[i], reader))
      g_ptr_array_remove_index (readers, i--);
}

/* CardInserted comes as soon as PC/SC sees the card: "reading the token…"
 * until TokenInserted says what it is */
static void
on_card_event (P11dClient *c, gboolean inserted, const char *reader, Win *w)
{
  drop_reader (w->reading, reader);
  drop_reader (w->unknown, reader);
  if (inserted)
    g_ptr_array_add (w->reading, g_strdup (reader));
  update_reading (w);
}

static void
on_token_event (P11dClient *c, gboolean inserted, const char *path, const char *reader, Win *w)
{
  if (reader[0] == '\0')
    return;
  drop_reader (w->reading, reader);
  drop_reader (w->unknown, reader);
  if (inserted && g_str_equal (path, "/"))
    g_ptr_array_add (w->unknown, g_strdup (reader));
  update_reading (w);
}

/* ---- actions ------------------------------------------------------------ */

static void
action_delete (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  Win *w = user_data;
  p11d_delete_cert (w->window, g_variant_get_string (param, NULL));
}

static void
action_change_pin (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  Win *w = user_data;
  p11d_change_pin (w->window, g_variant_get_string (param, NULL));
}

static void
action_show_cert (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  Win *w = user_data;
  p11d_window_show_cert (w->window, g_variant_get_string (param, NULL));
}

void
p11d_window_show_cert (GtkWindow *window, const char *uri)
{
  Win *w = g_object_get_data (G_OBJECT (window), "p11d-main");
  GtkWidget *row;

  g_hash_table_add (w->expanded, g_strdup (uri));
  row = g_hash_table_lookup (w->cert_rows, uri);
  if (row != NULL)
    {
      adw_expander_row_set_expanded (ADW_EXPANDER_ROW (row), TRUE);
      gtk_widget_grab_focus (row);
    }
}

void
p11d_window_show_token (GtkWindow *window, const char *path)
{
  Win *w = g_object_get_data (G_OBJECT (window), "p11d-main");
  GtkWidget *group = g_hash_table_lookup (w->token_groups, path);

  if (group != NULL)
    gtk_widget_child_focus (group, GTK_DIR_TAB_FORWARD);
}

GtkWindow *
p11d_window_new (GtkApplication *app)
{
  g_autoptr(GtkBuilder) b = gtk_builder_new ();
  static const GActionEntry actions[] = {
    { "delete-cert", action_delete, "s", NULL, NULL, { 0 } },
    { "change-pin", action_change_pin, "s", NULL, NULL, { 0 } },
    { "show-cert", action_show_cert, "s", NULL, NULL, { 0 } },
  };
  Win *w = g_new0 (Win, 1);

  gtk_builder_set_translation_domain (b, GETTEXT_PACKAGE);
  gtk_builder_add_from_resource (b, "/org/p11certd/Tokens/window.ui", NULL);
  w->window = GTK_WINDOW (gtk_builder_get_object (b, "window"));
  w->stack = GTK_STACK (gtk_builder_get_object (b, "stack"));
  w->token_box = GTK_BOX (gtk_builder_get_object (b, "token_box"));
  w->error_page = ADW_STATUS_PAGE (gtk_builder_get_object (b, "error_page"));
  w->reading_revealer = GTK_REVEALER (gtk_builder_get_object (b, "reading_revealer"));
  w->reading_label = GTK_LABEL (gtk_builder_get_object (b, "reading_label"));
  w->reading_spinner = GTK_SPINNER (gtk_builder_get_object (b, "reading_spinner"));
  w->expanded = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  w->cert_rows = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  w->token_groups = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  w->reading = g_ptr_array_new_with_free_func (g_free);
  w->unknown = g_ptr_array_new_with_free_func (g_free);
  w->retired = g_ptr_array_new ();
  w->client = p11d_client_get_default ();
  g_object_set_data_full (G_OBJECT (w->window), "p11d-main", w, (GDestroyNotify) win_free);
  g_action_map_add_action_entries (G_ACTION_MAP (w->window), actions, G_N_ELEMENTS (actions), w);
  gtk_window_set_application (w->window, app);
  g_signal_connect_swapped (w->client, "changed", G_CALLBACK (rebuild), w);
  g_signal_connect (w->client, "card-event", G_CALLBACK (on_card_event), w);
  g_signal_connect (w->client, "token-event", G_CALLBACK (on_token_event), w);
  rebuild (w);
  return w->window;
}
