/* p11certctl enroll's wizard, step by step (ctl-wizard.h) */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-wizard.h"
#include "p11c-names.h"
#include "p11c-wire.h"
#include "ctl-job.h"
#include "p11c-i18n.h"
#include "p11c-secret.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const key_types[] = { "ec-p256", "ec-p384", "rsa-2048", "rsa-3072", NULL };
static const char *const storages[] = { "token", "system", "file", NULL };

/* Menu on the terminal: returns the index chosen (default @def) or -1;
 * @items (ids) are shown as @labels when given, and either may be typed */
static int
choose (const char *title, const char *const *items, const char *const *labels, const char *const *notes,
        guint n, guint def)
{
  printf ("%s\n", title);
  for (guint i = 0; i < n; i++)
    printf ("  %u) %s%s%s\n", i + 1, labels ? labels[i] : items[i], notes && notes[i] ? "  " : "",
            notes && notes[i] ? notes[i] : "");
  for (;;)
    {
      g_autofree char *prompt = g_strdup_printf (_("Choose [%u]: "), def + 1);
      g_autofree char *answer = ctl_prompt_line (prompt);
      guint64 k;
      if (answer == NULL)
        return -1;
      if (answer[0] == '\0')
        return (int) def;
      if (g_ascii_string_to_unsigned (answer, 10, 1, n, &k, NULL))
        return (int) k - 1;
      for (guint i = 0; i < n; i++)
        if (g_str_equal (answer, items[i]) || (labels && g_str_equal (answer, labels[i])))
          return (int) i;
      printf (_("Enter a number from 1 to %u."), n);
      putchar ('\n');
    }
}

static char *
ask_text (const char *prompt, GError **error)
{
  for (;;)
    {
      char *s = ctl_prompt_line (prompt);
      if (s == NULL)
        {
          g_set_error_literal (error, CTL_ERROR, CTL_ERROR_USAGE, _("No answer (end of input)"));
          return NULL;
        }
      if (s[0] != '\0')
        return s;
      g_free (s);
    }
}

static gboolean
in_list (const char *s, const char *const *list)
{
  return s != NULL && g_strv_contains (list, s);
}

/* Remove @path only if it is still the file we created (@fd) */
static void
remove_output (const char *path, int fd)
{
  struct stat a, b;
  if (path == NULL || fd < 0)
    return;
  if (fstat (fd, &a) == 0 && stat (path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
    {
      if (unlink (path) == 0)
        {
          fprintf (stderr, _("Removed the incomplete file %s."), path);
          fputc ('\n', stderr);
        }
    }
}


void
ctl_wizard_clear (CtlWizard *w)
{
  g_free (w->ca_name);
  g_free (w->login);
  g_free (w->otp_file);
  g_free (w->storage);
  g_free (w->token_spec);
  g_free (w->pin_file);
  g_free (w->key_type);
  g_free (w->subject);
  g_free (w->label);
  g_free (w->name);
  g_free (w->output);
  g_free (w->password_file);
  g_clear_pointer (&w->cas, g_array_unref);
  p11c_wire_token_clear (&w->token);
  p11c_secret_clear (&w->otp);
  p11c_secret_clear (&w->pin);
  p11c_secret_clear (&w->password);
  if (w->out_fd >= 0)
    close (w->out_fd);
  g_clear_object (&w->fds);
  g_free (w->job);
}

/* (1) the CA profile: --ca, the only one, the one p11certd.conf's default-ca
 * names (ListCas "default"), or a choice (first offered: the first that asks
 * for a one-time password, the agents' CA) */
static int
step_ca (CtlWizard *w)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = ctl_call_manager (w->bus, "ListCas", NULL, "(aa{sv})", CTL_TIMEOUT_LIST, &error);
  g_autoptr(GPtrArray) names = g_ptr_array_new ();
  g_autoptr(GPtrArray) notes = g_ptr_array_new_with_free_func (g_free);
  gsize n;
  guint def = 0;
  gboolean def_seen = FALSE;
  int pick = -1, configured = -1;

  if (reply == NULL)
    return ctl_report (error, NULL);
  {
    g_autoptr(GVariant) list = g_variant_get_child_value (reply, 0);
    n = g_variant_n_children (list);
    w->cas = g_array_sized_new (FALSE, TRUE, sizeof (P11cWireCa), n);
    g_array_set_clear_func (w->cas, (GDestroyNotify) p11c_wire_ca_clear);
    g_array_set_size (w->cas, n);
    for (gsize i = 0; i < n; i++)
      {
        g_autoptr(GVariant) dict = g_variant_get_child_value (list, i);
        p11c_wire_ca_from_variant (dict, &g_array_index (w->cas, P11cWireCa, i));
      }
  }
  for (gsize i = 0; i < n; i++)
    {
      const P11cWireCa *c = &g_array_index (w->cas, P11cWireCa, i);
      g_ptr_array_add (names, c->name);
      g_ptr_array_add (notes, g_strdup_printf ("(%s%s%s)", c->type, c->url[0] ? " " : "", c->url));
      if (w->ca_name && g_str_equal (c->name, w->ca_name))
        pick = (int) i;
      if (c->is_default)
        configured = (int) i;
      if (!def_seen && (c->needs_otp || c->needs_login))
        {
          def = i;
          def_seen = TRUE;
        }
    }
  g_ptr_array_add (names, NULL);
  if (w->ca_name && pick < 0)
    {
      g_autofree char *list = g_strjoinv (", ", (char **) names->pdata);
      ctl_warn (_("No CA profile “%s”; configured: %s"), w->ca_name, n ? list : C_("CA profiles", "none"));
      return CTL_EXIT_NOT_FOUND;
    }
  if (pick < 0)
    {
      if (n == 0)
        {
          ctl_warn ("%s", _("No CA profile is configured (see p11certd.conf(5))"));
          return CTL_EXIT_NOT_FOUND;
        }
      if (n == 1)
        pick = 0;
      else if (configured >= 0)
        {
          pick = configured;
          if (w->interactive)
            printf (_("CA profile: %s (the default; --ca chooses another)\n"), (const char *) names->pdata[pick]);
        }
      else if (w->interactive)
        {
          pick = choose (_("CA profile:"), (const char *const *) names->pdata, NULL, (const char *const *) notes->pdata,
                         n, def);
          w->asked = TRUE;
          if (pick < 0)
            return ctl_usage_error (NULL, "%s", _("No CA profile chosen"));
        }
      else
        {
          g_autofree char *list = g_strjoinv (", ", (char **) names->pdata);
          return ctl_usage_error (w->ctx, _("enroll: several CA profiles (%s); choose one with --ca"), list);
        }
    }
  w->ca = &g_array_index (w->cas, P11cWireCa, pick);
  return -1;
}

/* (2) login and one-time password (EST), or the challenge password (SCEP) */
static int
step_credentials (CtlWizard *w)
{
  g_autoptr(GError) error = NULL;
  gboolean needs_login = w->ca->needs_login;

  if (needs_login)
    {
      if (w->login == NULL)
        {
          if (!w->interactive)
            return ctl_usage_error (w->ctx, _("enroll: the CA profile “%s” needs --login and --otp-file"),
                                    w->ca->name);
          w->login = ask_text (_("Login: "), &error);
          w->asked = TRUE;
          if (w->login == NULL)
            return ctl_report (error, NULL);
        }
      if (w->otp_file == NULL && w->interactive)
        w->asked = TRUE;
      w->otp = ctl_secret_get (w->otp_file, -1, _("One-time password: "), _("one-time password"), &error);
      if (w->otp == NULL)
        return ctl_report (error, NULL);
    }
  else if (w->ca->needs_otp)
    {
      /* SCEP: the one-time password is the CA's challenge password; no login */
      if (w->otp_file == NULL && !w->interactive)
        return ctl_usage_error (w->ctx, _("enroll: the CA profile “%s” needs --otp-file (its challenge password)"),
                                w->ca->name);
      if (w->otp_file == NULL)
        w->asked = TRUE;
      w->otp = ctl_secret_get (w->otp_file, -1, _("Challenge password: "), _("challenge password"), &error);
      if (w->otp == NULL)
        return ctl_report (error, NULL);
    }
  return -1;
}

/* (3) the storage type */
static int
step_storage (CtlWizard *w)
{
  if (w->storage != NULL)
    return -1;
  if (w->interactive && !w->token_spec && !w->name && !w->output)
    {
      const char *const labels[] = { C_("storage type", "token"), C_("storage type", "system"),
                                     C_("storage type", "file") };
      const char *const notes[] = { _("key generated on the token, never leaves it"),
                                    _("the service keeps it for this host (administrators)"),
                                    _("a password-protected PKCS#12 file for you") };
      int pick = choose (_("Storage type:"), storages, labels, notes, 3, 0);
      w->asked = TRUE;
      if (pick < 0)
        return ctl_usage_error (NULL, "%s", _("No storage type chosen"));
      w->storage = g_strdup (storages[pick]);
    }
  else
    w->storage = g_strdup (w->output ? "file" : w->name ? "system" : "token");
  return -1;
}

/* (4) a token and its PIN */
static int
step_token (CtlWizard *w)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *prompt = NULL;
  g_autoptr(GVariant) dict = ctl_choose_token (w->bus, w->token_spec, w->interactive, &error);

  if (dict == NULL)
    return ctl_report (error, NULL);
  p11c_wire_token_from_variant (dict, &w->token);
  w->has_token = TRUE;
  if (w->token.pin_locked)
    {
      ctl_warn (_("The PIN of token “%s” is locked; it must be unlocked with the SO PIN first"),
                w->token.label);
      return CTL_EXIT_PIN_LOCKED;
    }
  if (w->pin_file == NULL)
    {
      w->asked = w->asked || w->interactive;
      if (w->token.pin_final_try)
        fprintf (stderr, "%s\n", _("Warning: one more wrong PIN locks the token."));
    }
  prompt = g_strdup_printf (_("PIN of token “%s”: "), w->token.label);
  w->pin = ctl_secret_get (w->pin_file, -1, prompt, _("token PIN"), &error);
  if (w->pin == NULL)
    return ctl_report (error, NULL);
  return -1;
}

/* (4) a name in the system store */
static int
step_system_name (CtlWizard *w)
{
  g_autoptr(GError) error = NULL;

  if (w->name != NULL)
    return -1;
  if (!w->interactive)
    return ctl_usage_error (w->ctx, "%s", _("enroll: --storage system needs --name NAME"));
  w->name = ask_text (_("Name in the system store (e.g. the service, like nginx): "), &error);
  w->asked = TRUE;
  if (w->name == NULL)
    return ctl_report (error, NULL);
  return -1;
}

/* (4) an output file that does not exist yet, and its password */
static int
step_file (CtlWizard *w)
{
  g_autoptr(GError) error = NULL;
  P11cPinPolicy policy;

  if (w->output == NULL)
    {
      if (!w->interactive)
        return ctl_usage_error (w->ctx, "%s", _("enroll: --storage file needs --output FILE.p12"));
      w->output = ask_text (_("Output file (PKCS#12, e.g. me.p12): "), &error);
      w->asked = TRUE;
      if (w->output == NULL)
        return ctl_report (error, NULL);
    }
  if (g_file_test (w->output, G_FILE_TEST_EXISTS))
    {
      ctl_warn (_("%s exists already; choose another file name (nothing is overwritten)"), w->output);
      return CTL_EXIT_FAILURE;
    }
  if (!ctl_get_pin_policy (w->bus, &policy, &error))
    return ctl_report (error, _("Cannot read the password policy"));
  if (w->password_file == NULL && w->interactive)
    {
      g_autofree char *rules = ctl_pin_policy_text (&policy);
      printf ("%s\n", rules);
      w->asked = TRUE;
    }
  w->password = ctl_secret_new (w->password_file, _("Password for the file: "), _("file password"), &policy, &error);
  if (w->password == NULL)
    return ctl_report (error, NULL);
  return -1;
}

/* (4)/(5) where it goes */
static int
step_destination (CtlWizard *w)
{
  if (g_str_equal (w->storage, "token"))
    return step_token (w);
  if (g_str_equal (w->storage, "system"))
    return step_system_name (w);
  return step_file (w);
}

/* (6) what will be requested, when anything was asked */
static int
step_confirm (CtlWizard *w)
{
  if (!w->asked || w->yes)
    return -1;
  putchar ('\n');
  /* TRANSLATORS: the summary before the request; keep the values aligned */
  printf (_("CA profile: %s\n"), w->ca->name);
  if (w->login)
    printf (_("Login:      %s\n"), w->login);
  if (w->has_token)
    printf (_("Storage:    token “%s”\n"), w->token.label);
  else if (w->name)
    printf (_("Storage:    system store, name “%s”\n"), w->name);
  else
    printf (_("Storage:    file %s\n"), w->output);
  printf (_("Key type:   %s\n"), w->key_type ? w->key_type : w->ca->key_type[0] ? w->ca->key_type : "ec-p256");
  if (w->subject)
    printf (_("Subject:    %s\n"), w->subject);
  if (!ctl_confirm (_("Request the certificate now?"), TRUE))
    {
      ctl_message ("%s", _("Nothing was requested."));
      return CTL_EXIT_CANCELLED;
    }
  return -1;
}

/* (7) the output file is ours: created here, never overwritten */
static int
step_open_output (CtlWizard *w)
{
  g_autoptr(GError) error = NULL;

  if (w->output == NULL || !g_str_equal (w->storage, "file"))
    return -1;
  w->out_fd = open (w->output, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
  if (w->out_fd < 0)
    {
      int e = errno;
      ctl_warn (_("Cannot create %s: %s"), w->output, g_strerror (e));
      return e == EACCES ? CTL_EXIT_NOT_AUTHORIZED : CTL_EXIT_FAILURE;
    }
  w->fds = g_unix_fd_list_new ();
  if (g_unix_fd_list_append (w->fds, w->out_fd, &error) < 0)
    {
      remove_output (w->output, w->out_fd);
      return ctl_report (error, NULL);
    }
  return -1;
}

/* (8) Enroll: the request goes out, the secrets are wiped */
static int
step_request (CtlWizard *w)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = NULL;
  P11cEnrollParams request = {
    .ca = w->ca->name, .storage = w->storage, .login = w->login, .otp = w->otp,
    .token = w->has_token ? w->token.path : NULL, .pin = w->has_token ? w->pin : NULL,
    .key_type = w->key_type, .subject = w->subject, .label = w->label,
    .name = w->name && g_str_equal (w->storage, "system") ? w->name : NULL,
    .has_fd = w->fds != NULL, .fd_index = 0, .password = w->fds ? w->password : NULL,
    .allow_interaction = ctl_interactive (),
  };
  GVariant *params = g_variant_ref_sink (g_variant_new ("(@a{sv})", p11c_wire_enroll_to_variant (&request)));

  reply = g_dbus_connection_call_with_unix_fd_list_sync (w->bus, P11C_DBUS_NAME, P11C_DBUS_PATH,
                                                         P11C_DBUS_MANAGER_IFACE, "Enroll", params,
                                                         G_VARIANT_TYPE ("(o)"),
                                                         w->interactive ? G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION
                                                                        : G_DBUS_CALL_FLAGS_NONE,
                                                         CTL_TIMEOUT_START, w->fds, NULL, NULL, &error);
  p11c_variant_wipe (params);
  g_variant_unref (params);
  p11c_secret_clear (&w->otp);
  p11c_secret_clear (&w->pin);
  p11c_secret_clear (&w->password);
  if (reply == NULL)
    {
      remove_output (w->output, w->out_fd);
      return ctl_report (error, NULL);
    }
  g_variant_get (reply, "(o)", &w->job);
  if (w->no_wait)
    {
      ctl_message ("%s", w->job);
      return CTL_EXIT_OK;
    }
  return -1;
}

/* (9) follow the job to its end */
static int
step_follow (CtlWizard *w)
{
  g_autoptr(GError) error = NULL;
  P11cWireJob r = { 0 };
  int rc;

  if (!ctl_follow_job (w->bus, w->job, NULL, &r, &error))
    return ctl_report (error, NULL);
  rc = ctl_job_report (w->bus, &r, w->output);
  if (rc != CTL_EXIT_OK && g_strcmp0 (r.state, "interrupted") != 0)
    remove_output (w->output, w->out_fd);
  p11c_wire_job_clear (&r);
  return rc;
}

/* Each step returns -1 to go on, or the exit code to stop with. */
typedef int (*WizardStep) (CtlWizard *w);

static const WizardStep wizard_steps[] = {
  step_ca, step_credentials, step_storage, step_destination, step_confirm, step_open_output, step_request,
  step_follow,
};

int
ctl_wizard_check_options (CtlWizard *w)
{
  if (w->storage && !in_list (w->storage, storages))
    return ctl_usage_error (w->ctx, _("--storage must be token, system or file, not “%s”"), w->storage);
  if (w->key_type && !in_list (w->key_type, key_types))
    return ctl_usage_error (w->ctx, _("--key-type must be ec-p256, ec-p384, rsa-2048 or rsa-3072, not “%s”"),
                            w->key_type);
  return -1;
}

int
ctl_wizard_run (CtlWizard *w)
{
  int rc = -1;

  w->interactive = ctl_stdin_is_tty ();
  for (gsize i = 0; rc < 0 && i < G_N_ELEMENTS (wizard_steps); i++)
    rc = wizard_steps[i] (w);
  return rc < 0 ? CTL_EXIT_OK : rc;
}
