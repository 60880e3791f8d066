/* Delete a certificate (confirmation → token password → result) and change
 * a token's password (with the PIN policy's live hints).  A refused password
 * is shown with the token's state and never sent again by the app. */
#include <string.h>

#include "p11d-app.h"
#include "p11d-client.h"
#include "p11d-i18n.h"
#include "p11d-text.h"

static void
wipe_free (char *s)
{
  if (s != NULL)
    {
      explicit_bzero (s, strlen (s));
      g_free (s);
    }
}

static AdwMessageDialog *reusable_dialog (GtkWindow *parent, const char *key, const char *heading,
                                          GtkWidget *extra);

/* One message dialog per window, hidden and shown again (see reusable_dialog) */
void
p11d_message (GtkWindow *parent, const char *heading, const char *body)
{
  AdwMessageDialog *d = g_object_get_data (G_OBJECT (parent), "p11d-message");

  if (d == NULL)
    {
      d = reusable_dialog (parent, "p11d-message", heading, NULL);
      adw_message_dialog_add_response (d, "ok", _("_OK"));
      adw_message_dialog_set_default_response (d, "ok");
    }
  adw_message_dialog_set_heading (d, heading);
  adw_message_dialog_set_body (d, body);
  gtk_window_present (GTK_WINDOW (d));
}

void
p11d_show_rules (GtkBox *box, const char *pin)
{
  g_autoptr(GPtrArray) rules = p11d_policy_rules (p11d_client_get_pin_policy (p11d_client_get_default ()), pin);
  GtkWidget *child;

  while ((child = gtk_widget_get_first_child (GTK_WIDGET (box))) != NULL)
    gtk_box_remove (box, child);
  for (guint i = 0; i < rules->len; i++)
    {
      P11dRule *r = rules->pdata[i];
      /* the mark is part of the text, so a screen reader says it too */
      g_autofree char *text = g_strdup_printf ("%s %s", r->met ? "✓" : "✗", r->text);
      GtkWidget *label = gtk_label_new (text);
      gtk_label_set_xalign (GTK_LABEL (label), 0);
      gtk_widget_add_css_class (label, r->met ? "rule-met" : "rule-broken");
      gtk_box_append (box, label);
    }
}

/* A GtkEntry on a GtkPasswordEntryBuffer (the text in non-pageable memory,
 * wiped when freed).  Not a GtkPasswordEntry: in GTK 4.8 an accessibility
 * client reading one while its dialog closes crashed the app. */
GtkWidget *
p11d_password_entry (const char *name)
{
  g_autoptr(GtkEntryBuffer) buffer = gtk_password_entry_buffer_new ();
  GtkWidget *e = gtk_entry_new_with_buffer (buffer);

  gtk_entry_set_visibility (GTK_ENTRY (e), FALSE);
  gtk_entry_set_input_purpose (GTK_ENTRY (e), GTK_INPUT_PURPOSE_PASSWORD);
  gtk_entry_set_placeholder_text (GTK_ENTRY (e), name);
  p11d_set_accessible_name (e, name);
  return e;
}

/* ---- the token's state after a refused password ------------------------- */

typedef struct {
  GtkWindow *parent;
  char *heading;
  char *body;
} Explain;

static void
explain_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Explain *x = user_data;
  P11dClient *client = p11d_client_get_default ();
  g_autoptr(GVariant) reply = p11d_client_call_finish (client, res, NULL);
  g_autoptr(GVariant) props = NULL;
  const char *state = NULL;
  g_autofree char *body = NULL;

  if (reply != NULL)
    {
      g_variant_get (reply, "(@a{sv})", &props);
      state = p11d_pin_state_text (p11d_dict_bool (props, "PinCountLow", FALSE),
                                   p11d_dict_bool (props, "PinFinalTry", FALSE),
                                   p11d_dict_bool (props, "PinLocked", FALSE));
    }
  body = g_strdup_printf ("%s\n\n%s", x->body,
                          state ? state : _("The token is not locked. Check the password and try again."));
  p11d_message (x->parent, x->heading, body);
  g_object_unref (x->parent);
  g_free (x->heading);
  g_free (x->body);
  g_free (x);
}

/* Shows a failed call: for a password the token refused, with the token's
 * PIN state read from its properties (not from the error message). */
static void
show_failure (GtkWindow *parent, const char *heading, const GError *error, const char *token_path)
{
  const char *name = p11d_error_name (error);
  g_autofree char *text = p11d_error_text (error);

  if (token_path != NULL && g_str_has_prefix (token_path, "/org/p11certd/tokens/")
      && (g_str_equal (name, P11D_ERROR_PREFIX "PinIncorrect") || g_str_equal (name, P11D_ERROR_PREFIX "PinLocked")))
    {
      Explain *x = g_new0 (Explain, 1);
      x->parent = g_object_ref (parent);
      x->heading = g_strdup (heading);
      x->body = g_steal_pointer (&text);
      p11d_client_call (p11d_client_get_default (), token_path, "org.freedesktop.DBus.Properties", "GetAll",
                        g_variant_new ("(s)", P11D_TOKEN_IFACE), G_VARIANT_TYPE ("(a{sv})"), NULL, NULL,
                        explain_reply, x);
      return;
    }
  p11d_message (parent, heading, text);
}

/* ---- delete ------------------------------------------------------------- */

typedef struct {
  GtkWindow *parent;
  char *uri;
  char *token;      /* object path, NULL for the system store */
  char *name;       /* the certificate's common name */
  char *token_label;
  GtkWidget *entry;
} Delete;

static void
delete_free (Delete *d)
{
  g_object_unref (d->parent);
  g_free (d->uri);
  g_free (d->token);
  g_free (d->name);
  g_free (d->token_label);
  g_free (d);
}

static void
delete_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Delete *d = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = p11d_client_call_finish (p11d_client_get_default (), res, &error);

  if (reply == NULL)
    show_failure (d->parent, _("The certificate was not deleted"), error, d->token);
  else
    {
      g_autofree char *text = g_strdup_printf (_("The certificate “%s” was deleted."), d->name);
      p11d_message (d->parent, _("Certificate deleted"), text);
      p11d_client_refresh (p11d_client_get_default ());
    }
  delete_free (d);
}

static void
delete_call (Delete *d, const char *pin)
{
  p11d_client_call (p11d_client_get_default (), P11D_PATH, P11D_MANAGER_IFACE, "DeleteCert",
                    g_variant_new ("(ss@a{sv})", d->uri, pin, g_variant_new_array (G_VARIANT_TYPE ("{sv}"), NULL, 0)),
                    G_VARIANT_TYPE ("(a{sv})"), NULL, NULL, delete_reply, d);
}

/* Dialogs are made once per window and hidden, not destroyed, after each
 * use: in GTK 4.8 an accessibility client (a screen reader, the tests)
 * reading a dialog while it was destroyed crashed the app. */
static AdwMessageDialog *
reusable_dialog (GtkWindow *parent, const char *key, const char *heading, GtkWidget *extra)
{
  AdwMessageDialog *dialog = g_object_get_data (G_OBJECT (parent), key);

  if (dialog != NULL)
    return dialog;
  dialog = ADW_MESSAGE_DIALOG (adw_message_dialog_new (parent, heading, NULL));
  gtk_window_set_hide_on_close (GTK_WINDOW (dialog), TRUE);
  gtk_window_set_destroy_with_parent (GTK_WINDOW (dialog), TRUE);
  if (extra != NULL)
    adw_message_dialog_set_extra_child (dialog, extra);
  g_object_set_data (G_OBJECT (parent), key, dialog);
  return dialog;
}

static void
password_response (AdwMessageDialog *dialog, const char *response, gpointer unused)
{
  Delete *d = g_object_steal_data (G_OBJECT (dialog), "delete");
  GtkWidget *entry = g_object_get_data (G_OBJECT (dialog), "entry");
  char *pin;

  if (d == NULL)
    return;
  pin = g_strdup (gtk_editable_get_text (GTK_EDITABLE (entry)));
  gtk_editable_set_text (GTK_EDITABLE (entry), "");
  if (g_str_equal (response, "delete"))
    delete_call (d, pin);
  else
    delete_free (d);
  wipe_free (pin);
}

static void
password_changed (GtkEditable *entry, AdwMessageDialog *dialog)
{
  adw_message_dialog_set_response_enabled (dialog, "delete", gtk_editable_get_text (entry)[0] != '\0');
}

static void
ask_password (Delete *d)
{
  g_autofree char *body = g_strdup_printf (_("Enter the password of the token “%s” to delete the certificate."),
                                           d->token_label);
  AdwMessageDialog *dialog = g_object_get_data (G_OBJECT (d->parent), "p11d-password");
  GVariant *token = p11d_client_find_token (p11d_client_get_default (), d->token);
  const char *state = p11d_token_pin_text (token);
  GtkWidget *entry, *warn;

  if (dialog == NULL)
    {
      GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 12);
      entry = p11d_password_entry (_("Token password"));
      g_object_set (entry, "activates-default", TRUE, NULL);
      warn = gtk_label_new (NULL);
      gtk_label_set_wrap (GTK_LABEL (warn), TRUE);
      gtk_widget_add_css_class (warn, "pin-warning");
      gtk_box_append (GTK_BOX (box), entry);
      gtk_box_append (GTK_BOX (box), warn);
      dialog = reusable_dialog (d->parent, "p11d-password", _("Token password"), box);
      g_object_set_data (G_OBJECT (dialog), "entry", entry);
      g_object_set_data (G_OBJECT (dialog), "warn", warn);
      adw_message_dialog_add_responses (dialog, "cancel", _("_Cancel"), "delete", _("_Delete"), NULL);
      adw_message_dialog_set_response_appearance (dialog, "delete", ADW_RESPONSE_DESTRUCTIVE);
      adw_message_dialog_set_default_response (dialog, "delete");
      adw_message_dialog_set_close_response (dialog, "cancel");
      g_signal_connect (entry, "changed", G_CALLBACK (password_changed), dialog);
      g_signal_connect (dialog, "response", G_CALLBACK (password_response), NULL);
    }
  entry = g_object_get_data (G_OBJECT (dialog), "entry");
  warn = g_object_get_data (G_OBJECT (dialog), "warn");
  adw_message_dialog_set_body (dialog, body);
  gtk_label_set_text (GTK_LABEL (warn), state ? state : "");
  gtk_widget_set_visible (warn, state != NULL);
  gtk_editable_set_text (GTK_EDITABLE (entry), "");
  adw_message_dialog_set_response_enabled (dialog, "delete", FALSE);
  g_object_set_data_full (G_OBJECT (dialog), "delete", d, (GDestroyNotify) delete_free);
  gtk_window_present (GTK_WINDOW (dialog));
  gtk_widget_grab_focus (entry);
}

static void
confirm_response (AdwMessageDialog *dialog, const char *response, gpointer unused)
{
  Delete *d = g_object_steal_data (G_OBJECT (dialog), "delete");

  if (d == NULL)
    return;
  if (!g_str_equal (response, "yes"))
    delete_free (d);
  else if (d->token == NULL)
    delete_call (d, "");     /* the system store takes no PIN: polkit decides */
  else
    ask_password (d);
}

void
p11d_delete_cert (GtkWindow *parent, const char *uri)
{
  P11dClient *client = p11d_client_get_default ();
  GVariant *cert = p11d_client_find_cert (client, uri);
  const char *token = NULL;
  Delete *d;
  AdwMessageDialog *dialog;
  g_autofree char *heading = NULL;

  if (cert == NULL)
    return;
  d = g_new0 (Delete, 1);
  d->parent = g_object_ref (parent);
  d->uri = g_strdup (uri);
  d->name = p11d_common_name (p11d_dict_str (cert, "subject", p11d_dict_str (cert, "label", "")));
  if (!g_str_equal (p11d_dict_str (cert, "storage", ""), "system") && g_variant_lookup (cert, "token", "&o", &token))
    {
      d->token = g_strdup (token);
      d->token_label = g_strdup (p11d_dict_str (p11d_client_find_token (client, token), "label", ""));
    }
  heading = g_strdup_printf (_("Delete certificate “%s”"), d->name);
  dialog = g_object_get_data (G_OBJECT (parent), "p11d-confirm");
  if (dialog == NULL)
    {
      dialog = reusable_dialog (parent, "p11d-confirm", heading, NULL);
      adw_message_dialog_set_body (dialog, _("The certificate will be deleted. Continue?"));
      adw_message_dialog_add_responses (dialog, "no", _("_No"), "yes", _("_Yes"), NULL);
      adw_message_dialog_set_response_appearance (dialog, "yes", ADW_RESPONSE_DESTRUCTIVE);
      adw_message_dialog_set_default_response (dialog, "no");
      adw_message_dialog_set_close_response (dialog, "no");
      g_signal_connect (dialog, "response", G_CALLBACK (confirm_response), NULL);
    }
  adw_message_dialog_set_heading (dialog, heading);
  g_object_set_data_full (G_OBJECT (dialog), "delete", d, (GDestroyNotify) delete_free);
  gtk_window_present (GTK_WINDOW (dialog));
}

/* ---- change PIN ---------------------------------------------------------- */

typedef struct {
  GtkWindow *parent;
  char *token;
} ChangePin;

typedef struct {
  GtkWidget *old_entry, *new_entry, *again_entry, *warn;
  GtkBox *rules;
  GtkLabel *match;
} ChangeDialog;

static void
change_free (ChangePin *c)
{
  g_object_unref (c->parent);
  g_free (c->token);
  g_free (c);
}

static void
change_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  ChangePin *c = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = p11d_client_call_finish (p11d_client_get_default (), res, &error);

  if (reply == NULL)
    show_failure (c->parent, _("The password was not changed"), error, c->token);
  else
    p11d_message (c->parent, _("Password changed"), _("The token password was changed. Use the new password from now on."));
  change_free (c);
}

static void
change_update (GtkEditable *unused, ChangeDialog *cd)
{
  const char *new_pin = gtk_editable_get_text (GTK_EDITABLE (cd->new_entry));
  const char *again = gtk_editable_get_text (GTK_EDITABLE (cd->again_entry));

  p11d_show_rules (cd->rules, new_pin);
  gtk_label_set_text (cd->match, again[0] == '\0' || g_str_equal (new_pin, again)
                                   ? "" : _("The two new passwords differ."));
}

static void
change_response (AdwMessageDialog *dialog, const char *response, ChangeDialog *cd)
{
  ChangePin *c = g_object_steal_data (G_OBJECT (dialog), "change");
  char *old_pin, *new_pin;
  gboolean same;
  g_autoptr(GPtrArray) rules = NULL;

  if (c == NULL)
    return;
  old_pin = g_strdup (gtk_editable_get_text (GTK_EDITABLE (cd->old_entry)));
  new_pin = g_strdup (gtk_editable_get_text (GTK_EDITABLE (cd->new_entry)));
  same = g_str_equal (new_pin, gtk_editable_get_text (GTK_EDITABLE (cd->again_entry)));
  rules = p11d_policy_rules (p11d_client_get_pin_policy (p11d_client_get_default ()), new_pin);
  gtk_editable_set_text (GTK_EDITABLE (cd->old_entry), "");
  gtk_editable_set_text (GTK_EDITABLE (cd->new_entry), "");
  gtk_editable_set_text (GTK_EDITABLE (cd->again_entry), "");
  if (!g_str_equal (response, "change"))
    change_free (c);
  else if (p11d_policy_broken (rules) > 0)
    {
      /* refused here, before the token sees it: each broken rule named */
      g_autofree char *broken = p11d_policy_broken_text (rules);
      g_autofree char *body = g_strdup_printf (_("The new password must have: %s."), broken);
      p11d_message (c->parent, _("The new password is too weak"), body);
      change_free (c);
    }
  else if (!same)
    {
      p11d_message (c->parent, _("The password was not changed"), _("The two new passwords differ."));
      change_free (c);
    }
  else
    p11d_client_call (p11d_client_get_default (), c->token, P11D_TOKEN_IFACE, "ChangePin",
                      g_variant_new ("(ss@a{sv})", old_pin, new_pin, g_variant_new_array (G_VARIANT_TYPE ("{sv}"), NULL, 0)),
                      NULL, NULL, NULL, change_reply, c);
  wipe_free (old_pin);
  wipe_free (new_pin);
}

/* A password field with its label in front.  (Not an AdwPasswordEntryRow:
 * see reusable_dialog.) */
static GtkWidget *
titled_password_entry (GtkGrid *grid, int row, const char *title)
{
  GtkWidget *label = gtk_label_new (title);
  GtkWidget *entry = p11d_password_entry (title);

  gtk_label_set_xalign (GTK_LABEL (label), 0);
  gtk_widget_set_hexpand (entry, TRUE);
  gtk_grid_attach (grid, label, 0, row, 1, 1);
  gtk_grid_attach (grid, entry, 1, row, 1, 1);
  return entry;
}

static AdwMessageDialog *
change_dialog (GtkWindow *parent)
{
  AdwMessageDialog *dialog = g_object_get_data (G_OBJECT (parent), "p11d-change-pin");
  ChangeDialog *cd;
  GtkWidget *box, *grid, *hint;

  if (dialog != NULL)
    return dialog;
  cd = g_new0 (ChangeDialog, 1);
  box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 8);
  cd->warn = gtk_label_new (NULL);
  gtk_label_set_wrap (GTK_LABEL (cd->warn), TRUE);
  gtk_widget_add_css_class (cd->warn, "pin-warning");
  gtk_box_append (GTK_BOX (box), cd->warn);
  grid = gtk_grid_new ();
  gtk_grid_set_row_spacing (GTK_GRID (grid), 6);
  gtk_grid_set_column_spacing (GTK_GRID (grid), 12);
  cd->old_entry = titled_password_entry (GTK_GRID (grid), 0, _("Current password"));
  cd->new_entry = titled_password_entry (GTK_GRID (grid), 1, _("New password"));
  cd->again_entry = titled_password_entry (GTK_GRID (grid), 2, _("Repeat the new password"));
  gtk_box_append (GTK_BOX (box), grid);
  hint = gtk_label_new (_("The new password must have:"));
  gtk_label_set_xalign (GTK_LABEL (hint), 0);
  gtk_box_append (GTK_BOX (box), hint);
  cd->rules = GTK_BOX (gtk_box_new (GTK_ORIENTATION_VERTICAL, 2));
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (cd->rules));
  cd->match = GTK_LABEL (gtk_label_new (""));
  gtk_widget_add_css_class (GTK_WIDGET (cd->match), "rule-broken");
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (cd->match));
  dialog = reusable_dialog (parent, "p11d-change-pin", _("Change the token password"), box);
  g_object_set_data_full (G_OBJECT (dialog), "cd", cd, g_free);
  adw_message_dialog_add_responses (dialog, "cancel", _("_Cancel"), "change", _("C_hange"), NULL);
  adw_message_dialog_set_response_appearance (dialog, "change", ADW_RESPONSE_SUGGESTED);
  adw_message_dialog_set_close_response (dialog, "cancel");
  g_signal_connect (cd->new_entry, "changed", G_CALLBACK (change_update), cd);
  g_signal_connect (cd->again_entry, "changed", G_CALLBACK (change_update), cd);
  g_signal_connect (dialog, "response", G_CALLBACK (change_response), cd);
  return dialog;
}

void
p11d_change_pin (GtkWindow *parent, const char *token_path)
{
  GVariant *token = p11d_client_find_token (p11d_client_get_default (), token_path);
  const char *state = p11d_token_pin_text (token);
  g_autofree char *body = NULL;
  AdwMessageDialog *dialog;
  ChangeDialog *cd;
  ChangePin *c;

  if (token == NULL)
    return;
  dialog = change_dialog (parent);
  cd = g_object_get_data (G_OBJECT (dialog), "cd");
  c = g_new0 (ChangePin, 1);
  c->parent = g_object_ref (parent);
  c->token = g_strdup (token_path);
  body = g_strdup_printf (_("Token “%s”"), p11d_dict_str (token, "label", ""));
  adw_message_dialog_set_body (dialog, body);
  gtk_label_set_text (GTK_LABEL (cd->warn), state ? state : "");
  gtk_widget_set_visible (cd->warn, state != NULL);
  g_object_set_data_full (G_OBJECT (dialog), "change", c, (GDestroyNotify) change_free);
  change_update (NULL, cd);
  gtk_window_present (GTK_WINDOW (dialog));
  gtk_widget_grab_focus (cd->old_entry);
}
