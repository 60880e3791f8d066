/* The enrollment wizard, the steps of the agents' manual (../shared/seed):
 * intro → CA (ListCas, the default preselected) → login + one-time password
 * → storage type (eToken / System / File) → device and its password (live
 * hints from PinPolicy; File: a save dialog and a password, the app opens
 * the file and passes the fd; System: a name) → progress from the job
 * (states, progress, the retry time while the CA makes us wait, Cancel) →
 * "The certificate was written successfully" with its summary.
 *
 * On failure: the error in plain words and "Try again"; after the third
 * failed attempt, "contact your manager" with the details to quote.  A
 * rejected one-time password asks for a new one: the same one is never sent
 * again.  A refused token password goes back to the device page with the
 * token's state and is not sent again by the app. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "p11d-app.h"
#include "p11d-client.h"
#include "p11d-i18n.h"
#include "p11d-text.h"

#define MAX_ATTEMPTS 3

typedef struct {
  GtkWindow *window;
  GtkStack *pages;
  AdwWindowTitle *title;
  GtkWidget *back, *next, *close;
  AdwPreferencesGroup *ca_group, *device_group;
  AdwPreferencesGroup *login_group;
  GtkWidget *login_row, *otp_row, *login_error;
  GtkWidget *storage_token, *storage_system, *storage_file;
  GtkWidget *pin_group, *pin_row, *file_group, *file_row, *file_pw_row, *file_pw2_row;
  GtkWidget *system_group, *name_row, *hints_group, *hints, *device_error;
  GtkWidget *progress_state, *progress_bar, *progress_retry, *cancel_button;
  AdwStatusPage *done_page, *failed_page;
  GtkWidget *done_summary, *failed_details, *retry_button;

  P11dClient *client;
  GPtrArray *cas;            /* GVariant a{sv} */
  GPtrArray *ca_checks;      /* GtkCheckButton per CA */
  GPtrArray *token_checks;   /* GtkCheckButton per token, "path" data */
  GtkWidget *token_placeholder;
  char *selected_token;
  char *file_path;
  GHashTable *rejected_otps; /* SHA-256 of one-time passwords the CA refused */
  guint failures;

  GCancellable *cancellable;
  gboolean starting;         /* Enroll call in flight */
  char *job;                 /* the job's object path */
  GHashTable *early;         /* path -> a{sv} of job properties seen before the reply */
  GVariantDict *props;       /* the job's properties */
  guint countdown_id;
  gboolean finished;
} Wizard;

static const char *const page_order[] = { "intro", "ca", "login", "storage", "device", NULL };

static void update_buttons (Wizard *w);
static void show_page (Wizard *w, const char *name);

/* ---- helpers ------------------------------------------------------------ */

static const char *
text_of (GtkWidget *editable)
{
  return gtk_editable_get_text (GTK_EDITABLE (editable));
}

static void
clear_text (GtkWidget *editable)
{
  gtk_editable_set_text (GTK_EDITABLE (editable), "");
}

static GVariant *
selected_ca (Wizard *w)
{
  for (guint i = 0; i < w->ca_checks->len; i++)
    if (gtk_check_button_get_active (w->ca_checks->pdata[i]))
      return w->cas->pdata[i];
  return NULL;
}

static const char *
storage (Wizard *w)
{
  if (gtk_check_button_get_active (GTK_CHECK_BUTTON (w->storage_system)))
    return "system";
  if (gtk_check_button_get_active (GTK_CHECK_BUTTON (w->storage_file)))
    return "file";
  return "token";
}

static char *
otp_digest (const char *otp)
{
  return g_compute_checksum_for_string (G_CHECKSUM_SHA256, otp, -1);
}

static void
set_error (GtkWidget *label, const char *text)
{
  gtk_label_set_text (GTK_LABEL (label), text ? text : "");
  gtk_widget_set_visible (label, text != NULL);
}

static const char *
current_page (Wizard *w)
{
  return gtk_stack_get_visible_child_name (w->pages);
}

static int
page_index (const char *name)
{
  for (int i = 0; page_order[i]; i++)
    if (g_str_equal (page_order[i], name))
      return i;
  return -1;
}

/* What the chosen CA asks for in the authorization step (ListCas): EST a
 * login and a one-time password, SCEP only its challenge password, the local
 * CA nothing (the step is skipped). */
static gboolean
asks_login (Wizard *w)
{
  return p11d_dict_bool (selected_ca (w), "needs_login", TRUE);
}

static gboolean
asks_otp (Wizard *w)
{
  return p11d_dict_bool (selected_ca (w), "needs_otp", asks_login (w));
}

static gboolean
asks_anything (Wizard *w)
{
  return asks_login (w) || asks_otp (w);
}

/* The one-time password is SCEP's challenge password: named so, in the
 * user's language (the daemon's otp_name is English, a key only) */
static gboolean
otp_is_challenge (Wizard *w)
{
  GVariant *ca = selected_ca (w);
  return g_str_equal (p11d_dict_str (ca, "otp_name", ""), "challenge password")
         || g_str_equal (p11d_dict_str (ca, "type", ""), "scep");
}

static void
login_layout (Wizard *w)
{
  gboolean challenge = otp_is_challenge (w);

  gtk_widget_set_visible (w->login_row, asks_login (w));
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (w->otp_row),
                                 challenge ? _("Challenge password") : _("One-time password"));
  adw_preferences_group_set_description (
    w->login_group,
    challenge ? _("Enter the challenge password of the person the certificate is for, as your manager gave it to you.")
              : _("Enter the login and the one-time password of the person the certificate is for, as your manager gave them to you."));
}

/* A row of @group with a radio button, in the group of *@first (the first
 * row's button, set here for the first row); returns the button. */
static GtkWidget *
choice_row_new (AdwPreferencesGroup *group, const char *title, const char *subtitle, GtkCheckButton **first)
{
  GtkWidget *row = adw_action_row_new ();
  GtkWidget *check = gtk_check_button_new ();

  adw_preferences_row_set_use_markup (ADW_PREFERENCES_ROW (row), FALSE);
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
  adw_action_row_set_subtitle (ADW_ACTION_ROW (row), subtitle);
  if (*first == NULL)
    *first = GTK_CHECK_BUTTON (check);
  else
    gtk_check_button_set_group (GTK_CHECK_BUTTON (check), *first);
  adw_action_row_add_prefix (ADW_ACTION_ROW (row), check);
  adw_action_row_set_activatable_widget (ADW_ACTION_ROW (row), check);
  adw_preferences_group_add (group, row);
  return check;
}

/* ---- CA page ------------------------------------------------------------ */

static void
cas_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Wizard *w = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = p11d_client_call_finish (p11d_client_get_default (), res, &error);
  g_autoptr(GVariant) list = NULL;
  GtkCheckButton *first = NULL, *preferred = NULL;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (reply == NULL)
    {
      g_autofree char *text = p11d_error_text (error);
      adw_preferences_group_set_description (w->ca_group, text);
      return;
    }
  list = g_variant_get_child_value (reply, 0);
  for (gsize i = 0; i < g_variant_n_children (list); i++)
    {
      GVariant *ca = g_variant_get_child_value (list, i);
      const char *url = p11d_dict_str (ca, "url", "");
      GtkWidget *check = choice_row_new (w->ca_group, p11d_dict_str (ca, "name", ""),
                                         url[0] ? url : g_str_equal (p11d_dict_str (ca, "type", ""), "local")
                                                          ? _("The local certificate authority of this computer") : "",
                                         &first);

      g_ptr_array_add (w->cas, ca);
      /* the default: one the daemon marks so, else the first that asks for
       * a one-time password (the agents' CA), else the first */
      if (p11d_dict_bool (ca, "default", FALSE)
          || (preferred == NULL && p11d_dict_bool (ca, "needs_otp", p11d_dict_bool (ca, "needs_login", FALSE))))
        preferred = GTK_CHECK_BUTTON (check);
      g_signal_connect_swapped (check, "toggled", G_CALLBACK (update_buttons), w);
      g_ptr_array_add (w->ca_checks, check);
    }
  if (first == NULL)
    adw_preferences_group_set_description (w->ca_group, _("No certificate authority is configured on this computer. Ask your administrator."));
  else
    gtk_check_button_set_active (preferred ? preferred : first, TRUE);
  update_buttons (w);
}

/* ---- device page -------------------------------------------------------- */

static void
token_toggled (GtkCheckButton *check, Wizard *w)
{
  if (gtk_check_button_get_active (check))
    {
      g_free (w->selected_token);
      w->selected_token = g_strdup (g_object_get_data (G_OBJECT (check), "path"));
    }
  update_buttons (w);
}

/* The tokens present, live: the list follows TokenInserted/TokenRemoved. */
static void
fill_tokens (Wizard *w)
{
  GPtrArray *tokens = p11d_client_get_tokens (w->client);
  GtkCheckButton *first = NULL;
  gboolean kept = FALSE;

  for (guint i = 0; i < w->token_checks->len; i++)
    adw_preferences_group_remove (w->device_group,
                                  gtk_widget_get_ancestor (w->token_checks->pdata[i], ADW_TYPE_ACTION_ROW));
  g_ptr_array_set_size (w->token_checks, 0);
  if (w->token_placeholder != NULL)
    adw_preferences_group_remove (w->device_group, g_steal_pointer (&w->token_placeholder));
  for (guint i = 0; i < tokens->len; i++)
    {
      GVariant *t = tokens->pdata[i];
      const char *path = "";
      const char *warn = p11d_token_pin_text (t);
      g_autofree char *sub = g_strdup_printf ("%s · %s%s%s", p11d_dict_str (t, "model", ""),
                                              p11d_dict_str (t, "slot", ""), warn ? "\n" : "", warn ? warn : "");
      GtkWidget *check = choice_row_new (w->device_group, p11d_dict_str (t, "label", ""), sub, &first);

      g_variant_lookup (t, "path", "&o", &path);
      g_object_set_data_full (G_OBJECT (check), "path", g_strdup (path), g_free);
      if (w->selected_token && g_str_equal (w->selected_token, path))
        {
          gtk_check_button_set_active (GTK_CHECK_BUTTON (check), TRUE);
          kept = TRUE;
        }
      g_signal_connect (check, "toggled", G_CALLBACK (token_toggled), w);
      g_ptr_array_add (w->token_checks, check);
    }
  if (first == NULL)
    {
      w->token_placeholder = adw_action_row_new ();
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (w->token_placeholder),
                                     _("No token. Insert your token: it appears here by itself."));
      adw_preferences_group_add (w->device_group, w->token_placeholder);
      g_clear_pointer (&w->selected_token, g_free);
    }
  else if (!kept)
    {
      g_clear_pointer (&w->selected_token, g_free);
      gtk_check_button_set_active (first, TRUE);
      token_toggled (first, w);
    }
  update_buttons (w);
}

static void
device_layout (Wizard *w)
{
  const char *s = storage (w);
  gboolean token = g_str_equal (s, "token"), file = g_str_equal (s, "file");

  gtk_widget_set_visible (GTK_WIDGET (w->device_group), token);
  gtk_widget_set_visible (w->pin_group, token);
  gtk_widget_set_visible (w->file_group, file);
  gtk_widget_set_visible (w->system_group, g_str_equal (s, "system"));
  gtk_widget_set_visible (w->hints_group, token || file);
  adw_window_title_set_subtitle (w->title, token ? _("The token and its password")
                                         : file ? _("The file and its password") : _("The name in the system store"));
}

static void
update_hints (Wizard *w)
{
  const char *s = storage (w);
  if (g_str_equal (s, "token"))
    p11d_show_rules (GTK_BOX (w->hints), text_of (w->pin_row));
  else if (g_str_equal (s, "file"))
    p11d_show_rules (GTK_BOX (w->hints), text_of (w->file_pw_row));
  update_buttons (w);
}

static void
file_chosen (GtkNativeDialog *dialog, int response, Wizard *w)
{
  if (response == GTK_RESPONSE_ACCEPT)
    {
      g_autoptr(GFile) file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (dialog));
      g_free (w->file_path);
      w->file_path = file ? g_file_get_path (file) : NULL;
      adw_action_row_set_subtitle (ADW_ACTION_ROW (w->file_row), w->file_path ? w->file_path : _("No file chosen"));
    }
  g_object_unref (dialog);
  update_buttons (w);
}

static void
choose_file (Wizard *w)
{
  GtkFileChooserNative *dialog = gtk_file_chooser_native_new (_("Save the certificate and key"), w->window,
                                                              GTK_FILE_CHOOSER_ACTION_SAVE, _("_Save"), _("_Cancel"));
  gtk_file_chooser_set_current_name (GTK_FILE_CHOOSER (dialog), "certificate.p12");
  g_signal_connect (dialog, "response", G_CALLBACK (file_chosen), w);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (dialog));
}

/* ---- navigation --------------------------------------------------------- */

static gboolean
page_complete (Wizard *w, const char *page)
{
  if (g_str_equal (page, "ca"))
    return selected_ca (w) != NULL;
  if (g_str_equal (page, "login"))
    {
      g_autofree char *digest = NULL;
      const char *otp = text_of (w->otp_row);
      if ((asks_login (w) && text_of (w->login_row)[0] == '\0') || (asks_otp (w) && otp[0] == '\0'))
        return FALSE;
      digest = otp_digest (otp);
      return !g_hash_table_contains (w->rejected_otps, digest);
    }
  if (g_str_equal (page, "device"))
    {
      const char *s = storage (w);
      if (g_str_equal (s, "token"))
        return w->selected_token != NULL && text_of (w->pin_row)[0] != '\0';
      if (g_str_equal (s, "system"))
        return text_of (w->name_row)[0] != '\0';
      {
        /* a new secret: it must meet the policy (the daemon checks it too) */
        g_autoptr(GPtrArray) rules = p11d_policy_rules (p11d_client_get_pin_policy (w->client),
                                                        text_of (w->file_pw_row));
        return w->file_path != NULL && p11d_policy_broken (rules) == 0
               && g_str_equal (text_of (w->file_pw_row), text_of (w->file_pw2_row));
      }
    }
  return TRUE;
}

static void
update_buttons (Wizard *w)
{
  const char *page = current_page (w);
  int i = page_index (page);
  gboolean form = i >= 0;

  gtk_widget_set_visible (w->back, form && i > 0);
  gtk_widget_set_visible (w->next, form);
  gtk_widget_set_sensitive (w->next, form && page_complete (w, page));
  gtk_widget_set_visible (w->close, !form && !g_str_equal (page, "progress"));
  if (g_str_equal (page, "login"))
    {
      const char *otp = text_of (w->otp_row);
      g_autofree char *digest = otp[0] ? otp_digest (otp) : NULL;
      if (digest && g_hash_table_contains (w->rejected_otps, digest))
        set_error (w->login_error,
                   otp_is_challenge (w)
                     ? _("This challenge password was already refused. Enter the new challenge password from your manager.")
                     : _("This one-time password was already refused. Enter the new one-time password from your manager."));
    }
}

static void
show_page (Wizard *w, const char *name)
{
  static const struct { const char *page; const char *subtitle; } subtitles[] = {
    { "intro", N_("Step 1 of 6") }, { "ca", N_("Step 2 of 6: the certificate authority") },
    { "login", N_("Step 3 of 6: authorization") }, { "storage", N_("Step 4 of 6: storage type") },
    { "device", N_("Step 5 of 6") }, { "progress", N_("Step 6 of 6: writing") },
    { "done", "" }, { "failed", "" },
  };
  p11d_stack_show (w->pages, name);
  for (guint i = 0; i < G_N_ELEMENTS (subtitles); i++)
    if (g_str_equal (subtitles[i].page, name))
      adw_window_title_set_subtitle (w->title, subtitles[i].subtitle[0] ? _(subtitles[i].subtitle) : "");
  if (g_str_equal (name, "device"))
    {
      device_layout (w);
      fill_tokens (w);
      update_hints (w);
    }
  if (g_str_equal (name, "login"))
    login_layout (w);
  update_buttons (w);
  if (g_str_equal (name, "login"))
    gtk_widget_grab_focus (asks_login (w) && text_of (w->login_row)[0] == '\0' ? w->login_row : w->otp_row);
  else if (g_str_equal (name, "device") && g_str_equal (storage (w), "token"))
    gtk_widget_grab_focus (w->pin_row);
}

static void start_job (Wizard *w);

static void
go_back (Wizard *w)
{
  int i = page_index (current_page (w));
  if (i <= 0)
    return;
  i--;
  if (g_str_equal (page_order[i], "login") && !asks_anything (w))
    i--;
  show_page (w, page_order[i]);
}

static void
go_next (Wizard *w)
{
  const char *page = current_page (w);
  int i = page_index (page);

  if (i < 0 || !page_complete (w, page))
    return;
  if (g_str_equal (page, "device"))
    {
      start_job (w);
      return;
    }
  i++;
  if (g_str_equal (page_order[i], "login") && !asks_anything (w))
    i++;
  if (g_str_equal (page_order[i], "login"))
    set_error (w->login_error, NULL);
  show_page (w, page_order[i]);
}

/* ---- the job ------------------------------------------------------------ */

static const char *
state_text (const char *state)
{
  static const struct { const char *state; const char *text; } texts[] = {
    { "queued", N_("Waiting for the token…") },
    { "generating-key", N_("Creating the key on the token…") },
    { "requesting", N_("Sending the request to the certificate authority…") },
    { "waiting-for-ca", N_("The certificate authority asked to wait.") },
    { "writing", N_("Writing the certificate…") },
    { "done", N_("Done.") },
    { "failed", N_("Failed.") },
    { "cancelled", N_("Cancelled.") },
  };
  for (guint i = 0; state && i < G_N_ELEMENTS (texts); i++)
    if (g_str_equal (texts[i].state, state))
      return _(texts[i].text);
  return "";
}

static gboolean
countdown (gpointer user_data)
{
  Wizard *w = user_data;
  gint64 retry_at = 0, now = g_get_real_time () / G_USEC_PER_SEC;
  guint32 attempt = 0;
  const char *state = NULL;

  g_variant_dict_lookup (w->props, "RetryAt", "x", &retry_at);
  g_variant_dict_lookup (w->props, "Attempt", "u", &attempt);
  g_variant_dict_lookup (w->props, "State", "&s", &state);
  if (state && g_str_equal (state, "waiting-for-ca") && retry_at > now)
    {
      g_autofree char *at = p11d_datetime_text (retry_at);
      g_autofree char *text = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE,
                                                            "Next attempt at %s (in %ld second), attempt %u.",
                                                            "Next attempt at %s (in %ld seconds), attempt %u.",
                                                            (gulong) (retry_at - now)),
                                               at, (long) (retry_at - now), attempt + 1);
      gtk_label_set_text (GTK_LABEL (w->progress_retry), text);
      return G_SOURCE_CONTINUE;
    }
  gtk_label_set_text (GTK_LABEL (w->progress_retry), "");
  w->countdown_id = 0;
  return G_SOURCE_REMOVE;
}

static void
show_progress (Wizard *w)
{
  const char *state = NULL;
  double progress = 0;

  g_variant_dict_lookup (w->props, "State", "&s", &state);
  g_variant_dict_lookup (w->props, "Progress", "d", &progress);
  gtk_label_set_text (GTK_LABEL (w->progress_state), state_text (state));
  gtk_progress_bar_set_fraction (GTK_PROGRESS_BAR (w->progress_bar), CLAMP (progress, 0.0, 1.0));
  /* the retry time counts down only while the CA makes us wait */
  if (w->countdown_id == 0 && countdown (w) == G_SOURCE_CONTINUE)
    w->countdown_id = g_timeout_add_seconds (1, countdown, w);
}

static void
merge_props (GVariantDict *dict, GVariant *changed)
{
  GVariantIter iter;
  const char *key;
  GVariant *value;

  g_variant_iter_init (&iter, changed);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &value))
    {
      g_variant_dict_insert_value (dict, key, value);
      g_variant_unref (value);
    }
}

static void job_finished (Wizard *w, gboolean ok, const char *error_name, const char *message);

static void
on_job_changed (P11dClient *c, const char *path, GVariant *changed, Wizard *w)
{
  if (w->job == NULL)
    {
      /* the job's first changes can come before Enroll's reply */
      if (w->starting)
        {
          GVariantDict *d = g_hash_table_lookup (w->early, path);
          if (d == NULL)
            g_hash_table_insert (w->early, g_strdup (path), d = g_variant_dict_new (NULL));
          merge_props (d, changed);
        }
      return;
    }
  if (!g_str_equal (path, w->job))
    return;
  merge_props (w->props, changed);
  show_progress (w);
}

static void
on_job_finished (P11dClient *c, const char *path, gboolean ok, const char *error_name, const char *message,
                 Wizard *w)
{
  if (w->job == NULL && w->starting)
    {
      GVariantDict *d = g_hash_table_lookup (w->early, path);
      if (d == NULL)
        g_hash_table_insert (w->early, g_strdup (path), d = g_variant_dict_new (NULL));
      g_variant_dict_insert (d, "p11d-finished", "(bss)", ok, error_name, message);
      return;
    }
  if (w->job != NULL && g_str_equal (path, w->job))
    job_finished (w, ok, error_name, message);
}

/* Replies that outlive the window: they hold a reference on it, and find
 * the wizard through it (gone once the window was destroyed). */
static Wizard *
wizard_of (GtkWindow *window)
{
  return g_object_get_data (G_OBJECT (window), "p11d-wizard");
}

static void
summary_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr(GtkWindow) window = user_data;
  Wizard *w = wizard_of (window);
  g_autoptr(GVariant) reply = p11d_client_call_finish (p11d_client_get_default (), res, NULL);
  const char *result = NULL;
  GString *s;

  if (w == NULL)
    return;
  s = g_string_new (NULL);
  g_variant_dict_lookup (w->props, "Result", "&s", &result);
  if (reply != NULL)
    {
      g_autoptr(GVariant) list = g_variant_get_child_value (reply, 0);
      for (gsize i = 0; i < g_variant_n_children (list); i++)
        {
          g_autoptr(GVariant) c = g_variant_get_child_value (list, i);
          if (result && g_str_equal (p11d_dict_str (c, "uri", ""), result))
            {
              g_autofree char *until = p11d_datetime_text (p11d_dict_int64 (c, "not_after", 0));
              GVariant *t = NULL;
              const char *token = NULL;
              g_string_append_printf (s, _("Subject: %s\nIssuer: %s\nSerial number: %s\nValid until: %s"),
                                      p11d_dict_str (c, "subject", ""), p11d_dict_str (c, "issuer", ""),
                                      p11d_dict_str (c, "serial", ""), until);
              if (g_variant_lookup (c, "token", "&o", &token) && (t = p11d_client_find_token (w->client, token)))
                g_string_append_printf (s, _("\nStored on the token “%s”, next to its key."),
                                        p11d_dict_str (t, "label", ""));
              else if (g_str_equal (p11d_dict_str (c, "storage", ""), "system"))
                g_string_append (s, _("\nStored in the system store of this computer."));
            }
        }
    }
  if (s->len == 0 && result && g_str_has_prefix (result, "file:"))
    g_string_append_printf (s, _("Saved in the file %s (SHA-256 %s)."), w->file_path ? w->file_path : "",
                            result + strlen ("file:sha256="));
  gtk_label_set_text (GTK_LABEL (w->done_summary), s->str);
  g_string_free (s, TRUE);
}

static void
details_reply (GObject *source, GAsyncResult *res, gpointer user_data);

typedef struct {
  GtkWindow *window;
  char *error_name;
  char *message;
} Failure;

static void
show_failure_page (Wizard *w, const char *error_name, const char *message, GVariant *details)
{
  g_autofree char *text = p11d_error_text_for_name (error_name);

  set_error (w->device_error, NULL);
  if (w->failures >= MAX_ATTEMPTS)
    {
      /* the seed: "try again (no more than 3 times); otherwise contact the manager" */
      g_autoptr(GDateTime) now = g_date_time_new_now_local ();
      g_autofree char *when = g_date_time_format (now, "%Y-%m-%d %H:%M:%S %z");
      g_autofree char *body = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE,
                                                            "%s\n\nThe certificate could not be written %u time. Contact your manager and quote the details below.",
                                                            "%s\n\nThe certificate could not be written %u times. Contact your manager and quote the details below.",
                                                            w->failures),
                                               text, w->failures);
      g_autofree char *dump = details ? g_variant_print (details, FALSE) : g_strdup ("{}");
      g_autofree char *quote = g_strdup_printf ("%s: %s\n%s: %s\n%s: %s\n%s: %s\n%s: %s\n%s: %s\n%s: %s",
                                                _("Time"), when,
                                                _("Certificate authority"), p11d_dict_str (selected_ca (w), "name", ""),
                                                _("Login"), text_of (w->login_row),
                                                _("Error"), error_name,
                                                _("Message"), message ? message : "",
                                                _("Details"), dump,
                                                _("Job"), w->job ? w->job : "");
      adw_status_page_set_title (w->failed_page, _("Contact your manager"));
      adw_status_page_set_description (w->failed_page, body);
      gtk_label_set_text (GTK_LABEL (w->failed_details), quote);
      gtk_widget_set_visible (w->failed_details, TRUE);
      gtk_widget_set_visible (w->retry_button, FALSE);
    }
  else
    {
      g_autofree char *body = g_strdup_printf (_("%s\n\nAttempt %u of %u."), text, w->failures, MAX_ATTEMPTS);
      adw_status_page_set_title (w->failed_page, _("The certificate was not written"));
      adw_status_page_set_description (w->failed_page, body);
      gtk_widget_set_visible (w->failed_details, FALSE);
      gtk_widget_set_visible (w->retry_button, TRUE);
    }
  show_page (w, "failed");
}

/* Where a failure sends the person, from the error's NAME and the job's
 * ErrorDetails (structured), never from its English message. */
static void
handle_failure (Wizard *w, const char *error_name, const char *message, GVariant *details)
{
  const char *reason = p11d_dict_str (details, "reason", "credentials");
  g_autofree char *text = p11d_error_text_for_name (error_name);

  if (g_str_equal (error_name, P11D_ERROR_PREFIX "Cancelled"))
    {
      show_page (w, "device");
      set_error (w->device_error, _("Cancelled. Nothing was written."));
      return;
    }
  w->failures++;
  if (w->failures < MAX_ATTEMPTS && g_str_equal (error_name, P11D_ERROR_PREFIX "CaRejected")
      && g_str_equal (reason, "credentials") && asks_otp (w))
    {
      /* never sent again: remembered, cleared, a new one asked for */
      g_hash_table_add (w->rejected_otps, otp_digest (text_of (w->otp_row)));
      clear_text (w->otp_row);
      show_page (w, "login");
      set_error (w->login_error,
                 otp_is_challenge (w)
                   ? _("The certificate authority did not accept the challenge password. Enter the new challenge password from your manager.")
                   : _("The certificate authority did not accept the login or the one-time password. Check the login and enter the new one-time password from your manager."));
      return;
    }
  if (w->failures < MAX_ATTEMPTS && (g_str_equal (error_name, P11D_ERROR_PREFIX "PinIncorrect")
                                     || g_str_equal (error_name, P11D_ERROR_PREFIX "PinLocked")))
    {
      GVariant *token = p11d_client_find_token (w->client, w->selected_token);
      const char *state = p11d_pin_state_text (p11d_dict_bool (details, "pin_count_low", p11d_dict_bool (token, "pin_count_low", FALSE)),
                                               p11d_dict_bool (details, "pin_final_try", p11d_dict_bool (token, "pin_final_try", FALSE)),
                                               p11d_dict_bool (details, "pin_locked", p11d_dict_bool (token, "pin_locked", FALSE)));
      g_autofree char *both = g_strdup_printf ("%s%s%s", text, state ? " " : "", state ? state : "");
      clear_text (w->pin_row);
      show_page (w, "device");
      set_error (w->device_error, both);
      return;
    }
  if (w->failures < MAX_ATTEMPTS && g_str_equal (error_name, P11D_ERROR_PREFIX "PinPolicy"))
    {
      show_page (w, "device");
      set_error (w->device_error, text);
      return;
    }
  show_failure_page (w, error_name, message, details);
}

static void
details_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Failure *f = user_data;
  Wizard *w = wizard_of (f->window);
  g_autoptr(GVariant) reply = p11d_client_call_finish (p11d_client_get_default (), res, NULL);
  g_autoptr(GVariant) details = NULL;

  if (w != NULL && reply != NULL)
    {
      g_autoptr(GVariant) v = NULL;
      g_variant_get (reply, "(v)", &v);
      if (g_variant_is_of_type (v, G_VARIANT_TYPE_VARDICT))
        details = g_steal_pointer (&v);
    }
  if (w != NULL)
    handle_failure (w, f->error_name, f->message, details);
  g_object_unref (f->window);
  g_free (f->error_name);
  g_free (f->message);
  g_free (f);
}

static void
job_finished (Wizard *w, gboolean ok, const char *error_name, const char *message)
{
  if (w->finished)
    return;
  w->finished = TRUE;
  g_clear_handle_id (&w->countdown_id, g_source_remove);
  gtk_widget_set_sensitive (w->cancel_button, TRUE);
  if (ok)
    {
      clear_text (w->pin_row);
      clear_text (w->otp_row);
      clear_text (w->file_pw_row);
      clear_text (w->file_pw2_row);
      show_page (w, "done");
      gtk_widget_grab_focus (w->close);
      p11d_client_refresh (w->client);
      p11d_client_call (w->client, P11D_PATH, P11D_MANAGER_IFACE, "ListCerts", g_variant_new_parsed ("(@a{sv} {},)"),
                        G_VARIANT_TYPE ("(aa{sv})"), NULL, w->cancellable, summary_reply, g_object_ref (w->window));
    }
  else if (w->job == NULL)
    handle_failure (w, error_name, message, NULL);    /* Enroll itself was refused */
  else
    {
      /* the structured details of the failure (daemons without them: the name alone) */
      Failure *f = g_new0 (Failure, 1);
      f->window = g_object_ref (w->window);
      f->error_name = g_strdup (error_name);
      f->message = g_strdup (message);
      p11d_client_call (w->client, w->job, "org.freedesktop.DBus.Properties", "Get",
                        g_variant_new ("(ss)", P11D_JOB_IFACE, "ErrorDetails"), G_VARIANT_TYPE ("(v)"), NULL, NULL,
                        details_reply, f);
    }
}

static void
job_props_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr(GtkWindow) window = user_data;
  Wizard *w = wizard_of (window);
  g_autoptr(GVariant) reply = p11d_client_call_finish (p11d_client_get_default (), res, NULL);
  const char *state = NULL, *error_name = "", *message = "";

  if (w != NULL && reply != NULL && !w->finished)
    {
      g_autoptr(GVariant) all = g_variant_get_child_value (reply, 0);
      merge_props (w->props, all);
      show_progress (w);
      /* it may have finished before we listened */
      if (g_variant_dict_lookup (w->props, "State", "&s", &state)
          && (g_str_equal (state, "done") || g_str_equal (state, "failed") || g_str_equal (state, "cancelled")))
        {
          g_variant_dict_lookup (w->props, "Error", "&s", &error_name);
          g_variant_dict_lookup (w->props, "ErrorMessage", "&s", &message);
          job_finished (w, g_str_equal (state, "done"), error_name, message);
        }
    }
}

static void
enroll_reply (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr(GtkWindow) window = user_data;
  Wizard *w = wizard_of (window);
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = p11d_client_call_finish (p11d_client_get_default (), res, &error);
  GVariantDict *early;

  if (w == NULL)
    {
      /* closed while starting: the job is not wanted any more */
      const char *job = NULL;
      if (reply != NULL)
        {
          g_variant_get (reply, "(&o)", &job);
          p11d_client_call (p11d_client_get_default (), job, P11D_JOB_IFACE, "Cancel", NULL, NULL, NULL, NULL,
                            NULL, NULL);
        }
      return;
    }
  w->starting = FALSE;
  if (reply == NULL)
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          w->finished = FALSE;
          job_finished (w, FALSE, p11d_error_name (error), error->message);
        }
      g_hash_table_remove_all (w->early);
      return;
    }
  g_variant_get (reply, "(o)", &w->job);
  early = g_hash_table_lookup (w->early, w->job);
  if (early != NULL)
    {
      g_autoptr(GVariant) seen = g_variant_ref_sink (g_variant_dict_end (early));
      gboolean ok;
      const char *name, *message;
      merge_props (w->props, seen);
      show_progress (w);
      if (g_variant_lookup (seen, "p11d-finished", "(b&s&s)", &ok, &name, &message))
        job_finished (w, ok, name, message);
    }
  g_hash_table_remove_all (w->early);
  /* and its state now, in case a signal came before we listened */
  p11d_client_call (w->client, w->job, "org.freedesktop.DBus.Properties", "GetAll",
                    g_variant_new ("(s)", P11D_JOB_IFACE), G_VARIANT_TYPE ("(a{sv})"), NULL, w->cancellable,
                    job_props_reply, g_object_ref (w->window));
}

static void
start_job (Wizard *w)
{
  GVariantBuilder b;
  g_autoptr(GUnixFDList) fds = NULL;
  const char *s = storage (w);
  GVariant *ca = selected_ca (w);

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "ca", g_variant_new_string (p11d_dict_str (ca, "name", "")));
  if (asks_login (w))
    g_variant_builder_add (&b, "{sv}", "login", g_variant_new_string (text_of (w->login_row)));
  if (asks_otp (w))
    g_variant_builder_add (&b, "{sv}", "otp", g_variant_new_string (text_of (w->otp_row)));
  g_variant_builder_add (&b, "{sv}", "storage", g_variant_new_string (s));
  if (g_str_equal (s, "token"))
    {
      g_variant_builder_add (&b, "{sv}", "token", g_variant_new_string (w->selected_token));
      g_variant_builder_add (&b, "{sv}", "pin", g_variant_new_string (text_of (w->pin_row)));
    }
  else if (g_str_equal (s, "system"))
    g_variant_builder_add (&b, "{sv}", "name", g_variant_new_string (text_of (w->name_row)));
  else
    {
      /* the app opens the file; the daemon writes into the descriptor */
      g_autoptr(GError) error = NULL;
      int fd = open (w->file_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
      if (fd < 0)
        {
          g_autofree char *text = g_strdup_printf (_("The file cannot be written: %s"), g_strerror (errno));
          g_variant_builder_clear (&b);
          set_error (w->device_error, text);
          return;
        }
      fds = g_unix_fd_list_new ();
      g_unix_fd_list_append (fds, fd, &error);
      close (fd);
      g_variant_builder_add (&b, "{sv}", "fd", g_variant_new_handle (0));
      g_variant_builder_add (&b, "{sv}", "password", g_variant_new_string (text_of (w->file_pw_row)));
    }
  g_clear_pointer (&w->job, g_free);
  g_variant_dict_unref (w->props);
  w->props = g_variant_dict_new (NULL);
  w->finished = FALSE;
  w->starting = TRUE;
  set_error (w->device_error, NULL);
  gtk_label_set_text (GTK_LABEL (w->progress_state), state_text ("queued"));
  gtk_label_set_text (GTK_LABEL (w->progress_retry), "");
  gtk_progress_bar_set_fraction (GTK_PROGRESS_BAR (w->progress_bar), 0);
  show_page (w, "progress");
  /* the variant holds the secrets only until the message is sent */
  p11d_client_call (w->client, P11D_PATH, P11D_MANAGER_IFACE, "Enroll", g_variant_new ("(a{sv})", &b),
                    G_VARIANT_TYPE ("(o)"), fds, NULL, enroll_reply, g_object_ref (w->window));
}

static void
cancel_job (Wizard *w)
{
  if (w->job == NULL)
    return;
  gtk_widget_set_sensitive (w->cancel_button, FALSE);
  gtk_label_set_text (GTK_LABEL (w->progress_state), _("Cancelling…"));
  p11d_client_call (w->client, w->job, P11D_JOB_IFACE, "Cancel", NULL, NULL, NULL, NULL, NULL, NULL);
}

static void
retry (Wizard *w)
{
  start_job (w);
}

/* ---- window ------------------------------------------------------------- */

static void
wizard_free (Wizard *w)
{
  g_cancellable_cancel (w->cancellable);
  g_clear_object (&w->cancellable);
  g_signal_handlers_disconnect_by_data (w->client, w);
  g_clear_handle_id (&w->countdown_id, g_source_remove);
  g_ptr_array_unref (w->cas);
  g_ptr_array_unref (w->ca_checks);
  g_ptr_array_unref (w->token_checks);
  g_hash_table_unref (w->rejected_otps);
  g_hash_table_unref (w->early);
  g_variant_dict_unref (w->props);
  g_free (w->selected_token);
  g_free (w->file_path);
  g_free (w->job);
  g_free (w);
}

/* Closing hides the wizard (its secrets wiped, its job cancelled); it is
 * destroyed with the main window.  (In GTK 4.8 an accessibility client
 * reading a password field while its window was destroyed crashed the app.) */
static gboolean
wizard_hide (Wizard *w)
{
  if (w->job != NULL && !w->finished)
    p11d_client_call (w->client, w->job, P11D_JOB_IFACE, "Cancel", NULL, NULL, NULL, NULL, NULL, NULL);
  w->finished = TRUE;
  g_clear_handle_id (&w->countdown_id, g_source_remove);
  clear_text (w->pin_row);
  clear_text (w->otp_row);
  clear_text (w->file_pw_row);
  clear_text (w->file_pw2_row);
  g_signal_handlers_disconnect_by_data (w->client, w);
  return FALSE;
}

static void
wizard_close (Wizard *w)
{
  gtk_window_close (w->window);
}

static void
client_changed (Wizard *w)
{
  if (g_str_equal (current_page (w), "device"))
    fill_tokens (w);
}

#define GET(name) GTK_WIDGET (gtk_builder_get_object (b, name))

void
p11d_wizard_open (GtkWindow *parent)
{
  g_autoptr(GtkBuilder) b = gtk_builder_new ();
  Wizard *w = g_new0 (Wizard, 1);

  gtk_builder_set_translation_domain (b, GETTEXT_PACKAGE);
  gtk_builder_add_from_resource (b, "/org/p11certd/Tokens/wizard.ui", NULL);
  w->window = GTK_WINDOW (gtk_builder_get_object (b, "wizard"));
  w->pages = GTK_STACK (gtk_builder_get_object (b, "pages"));
  w->title = ADW_WINDOW_TITLE (gtk_builder_get_object (b, "title"));
  w->back = GET ("back_button");
  w->next = GET ("next_button");
  w->close = GET ("close_button");
  w->ca_group = ADW_PREFERENCES_GROUP (gtk_builder_get_object (b, "ca_group"));
  w->device_group = ADW_PREFERENCES_GROUP (gtk_builder_get_object (b, "device_group"));
  w->login_group = ADW_PREFERENCES_GROUP (gtk_builder_get_object (b, "login_group"));
  w->login_row = GET ("login_row");
  w->otp_row = GET ("otp_row");
  w->login_error = GET ("login_error");
  w->storage_token = GET ("storage_token");
  w->storage_system = GET ("storage_system");
  w->storage_file = GET ("storage_file");
  w->pin_group = GET ("pin_group");
  w->pin_row = GET ("pin_row");
  w->file_group = GET ("file_group");
  w->file_row = GET ("file_row");
  w->file_pw_row = GET ("file_pw_row");
  w->file_pw2_row = GET ("file_pw2_row");
  w->system_group = GET ("system_group");
  w->name_row = GET ("name_row");
  w->hints_group = GET ("hints_group");
  w->hints = GET ("hints");
  w->device_error = GET ("device_error");
  w->progress_state = GET ("progress_state");
  w->progress_bar = GET ("progress_bar");
  w->progress_retry = GET ("progress_retry");
  w->cancel_button = GET ("cancel_button");
  w->done_page = ADW_STATUS_PAGE (gtk_builder_get_object (b, "done_page"));
  w->failed_page = ADW_STATUS_PAGE (gtk_builder_get_object (b, "failed_page"));
  w->done_summary = GET ("done_summary");
  w->failed_details = GET ("failed_details");
  w->retry_button = GET ("retry_button");
  w->client = p11d_client_get_default ();
  w->cas = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);
  w->ca_checks = g_ptr_array_new ();
  w->token_checks = g_ptr_array_new ();
  w->rejected_otps = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  w->early = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_variant_dict_unref);
  w->props = g_variant_dict_new (NULL);
  w->cancellable = g_cancellable_new ();
  g_object_set_data_full (G_OBJECT (w->window), "p11d-wizard", w, (GDestroyNotify) wizard_free);

  /* Entry rows and check rows are named by their titles (GTK relations);
     the password rows' own "show" buttons get a name. */
  p11d_name_icon_buttons (w->otp_row, _("Show the password"));
  p11d_name_icon_buttons (w->pin_row, _("Show the password"));
  p11d_name_icon_buttons (w->file_pw_row, _("Show the password"));
  p11d_name_icon_buttons (w->file_pw2_row, _("Show the password"));
  g_signal_connect_swapped (w->back, "clicked", G_CALLBACK (go_back), w);
  g_signal_connect_swapped (w->next, "clicked", G_CALLBACK (go_next), w);
  g_signal_connect_swapped (w->close, "clicked", G_CALLBACK (wizard_close), w);
  g_signal_connect_swapped (w->cancel_button, "clicked", G_CALLBACK (cancel_job), w);
  g_signal_connect_swapped (w->retry_button, "clicked", G_CALLBACK (retry), w);
  g_signal_connect_swapped (GET ("file_button"), "clicked", G_CALLBACK (choose_file), w);
  g_signal_connect_swapped (w->login_row, "changed", G_CALLBACK (update_buttons), w);
  g_signal_connect_swapped (w->otp_row, "changed", G_CALLBACK (update_buttons), w);
  g_signal_connect_swapped (w->login_row, "entry-activated", G_CALLBACK (go_next), w);
  g_signal_connect_swapped (w->otp_row, "entry-activated", G_CALLBACK (go_next), w);
  g_signal_connect_swapped (w->pin_row, "entry-activated", G_CALLBACK (go_next), w);
  g_signal_connect_swapped (w->pin_row, "changed", G_CALLBACK (update_hints), w);
  g_signal_connect_swapped (w->file_pw_row, "changed", G_CALLBACK (update_hints), w);
  g_signal_connect_swapped (w->file_pw2_row, "changed", G_CALLBACK (update_buttons), w);
  g_signal_connect_swapped (w->name_row, "changed", G_CALLBACK (update_buttons), w);
  g_signal_connect_swapped (w->client, "changed", G_CALLBACK (client_changed), w);
  g_signal_connect (w->client, "job-changed", G_CALLBACK (on_job_changed), w);
  g_signal_connect (w->client, "job-finished", G_CALLBACK (on_job_finished), w);
  gtk_widget_set_visible (w->storage_system, TRUE);
  gtk_widget_set_visible (GET ("storage_system_row"), p11d_client_get_system_allowed (w->client));

  p11d_client_call (w->client, P11D_PATH, P11D_MANAGER_IFACE, "ListCas", NULL, G_VARIANT_TYPE ("(aa{sv})"), NULL,
                    w->cancellable, cas_reply, w);
  gtk_window_set_hide_on_close (w->window, TRUE);
  gtk_window_set_destroy_with_parent (w->window, TRUE);
  g_signal_connect_swapped (w->window, "close-request", G_CALLBACK (wizard_hide), w);
  gtk_window_set_transient_for (w->window, parent);
  gtk_window_set_application (w->window, gtk_window_get_application (parent));
  show_page (w, "intro");
  gtk_window_present (w->window);
}
