/* p11certctl enroll — a wizard on a terminal, flags for scripts */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
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

int
ctl_cmd_enroll (int argc, char **argv)
{
  g_autofree char *opt_ca = NULL, *opt_login = NULL, *opt_otp_file = NULL, *opt_storage = NULL;
  g_autofree char *opt_token = NULL, *opt_pin_file = NULL, *opt_key_type = NULL, *opt_subject = NULL;
  g_autofree char *opt_label = NULL, *opt_name = NULL, *opt_output = NULL, *opt_password_file = NULL;
  gboolean opt_no_wait = FALSE, opt_yes = FALSE;
  GOptionEntry entries[] = {
    { "ca", 0, 0, G_OPTION_ARG_STRING, &opt_ca, N_("CA profile (see “p11certctl ca list”)"), N_("NAME") },
    { "login", 0, 0, G_OPTION_ARG_STRING, &opt_login, N_("Login at the CA (EST profiles)"), N_("L") },
    { "otp-file", 0, 0, G_OPTION_ARG_FILENAME, &opt_otp_file, N_("Read the one-time password from FILE"), N_("FILE") },
    { "storage", 0, 0, G_OPTION_ARG_STRING, &opt_storage, N_("Where the key goes: token (default), system, file"), N_("S") },
    { "token", 0, 0, G_OPTION_ARG_STRING, &opt_token, N_("The token (PKCS#11 URI or object path)"), N_("URI") },
    { "pin-file", 0, 0, G_OPTION_ARG_FILENAME, &opt_pin_file, N_("Read the token PIN from FILE"), N_("FILE") },
    { "key-type", 0, 0, G_OPTION_ARG_STRING, &opt_key_type, N_("ec-p256, ec-p384, rsa-2048 or rsa-3072"), N_("T") },
    { "subject", 0, 0, G_OPTION_ARG_STRING, &opt_subject, N_("Subject DN (default: the profile's)"), N_("S") },
    { "label", 0, 0, G_OPTION_ARG_STRING, &opt_label, N_("Label of the new objects on the token"), N_("L") },
    { "name", 0, 0, G_OPTION_ARG_STRING, &opt_name, N_("Name in the system store (--storage system)"), N_("NAME") },
    { "output", 0, 0, G_OPTION_ARG_FILENAME, &opt_output, N_("PKCS#12 file to create (--storage file)"), N_("FILE.p12") },
    { "password-file", 0, 0, G_OPTION_ARG_FILENAME, &opt_password_file,
      N_("Read the PKCS#12 password from FILE"), N_("FILE") },
    { "no-wait", 0, 0, G_OPTION_ARG_NONE, &opt_no_wait, N_("Print the job path and exit at once"), NULL },
    { "yes", 'y', 0, G_OPTION_ARG_NONE, &opt_yes, N_("Do not ask for confirmation"), NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("— request a new certificate"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) cas_reply = NULL;
  g_autoptr(GVariant) cas = NULL;
  g_autoptr(GVariant) ca = NULL;
  g_autoptr(GVariant) token = NULL;
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GUnixFDList) fds = NULL;
  p11c_autosecret otp = NULL;
  p11c_autosecret pin = NULL;
  p11c_autosecret password = NULL;
  g_autofree char *job = NULL;
  gboolean interactive, asked = FALSE, needs_login;
  GDBusConnection *bus;
  P11cWireJob r = { 0 };
  int out_fd = -1, rc;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx,
    _("Generates a key and requests a certificate from a CA profile. On a terminal,\n"
      "whatever the options leave open is asked: CA profile, login and one-time\n"
      "password (EST), storage (token, system, file), the token and its PIN, or the\n"
      "output file and its password. Then follows the job (Ctrl-C cancels it)."));
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (argc > 1)
    return ctl_usage_error (ctx, _("enroll: unexpected argument “%s”"), argv[1]);
  if (opt_storage && !in_list (opt_storage, storages))
    return ctl_usage_error (ctx, _("--storage must be token, system or file, not “%s”"), opt_storage);
  if (opt_key_type && !in_list (opt_key_type, key_types))
    return ctl_usage_error (ctx, _("--key-type must be ec-p256, ec-p384, rsa-2048 or rsa-3072, not “%s”"),
                            opt_key_type);
  interactive = ctl_stdin_is_tty ();
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;

  /* (1) CA profile */
  cas_reply = ctl_call_manager (bus, "ListCas", NULL, "(aa{sv})", CTL_TIMEOUT_LIST, &error);
  if (cas_reply == NULL)
    return ctl_report (error, NULL);
  cas = g_variant_get_child_value (cas_reply, 0);
  {
    gsize n = g_variant_n_children (cas);
    g_autoptr(GPtrArray) names = g_ptr_array_new ();
    g_autoptr(GPtrArray) notes = g_ptr_array_new_with_free_func (g_free);
    guint def = 0;
    int pick = -1;

    for (gsize i = 0; i < n; i++)
      {
        g_autoptr(GVariant) c = g_variant_get_child_value (cas, i);
        const char *name = ctl_dict_str (c, "name", "");
        const char *url = ctl_dict_str (c, "url", "");
        g_ptr_array_add (names, (gpointer) ctl_dict_str (c, "name", ""));
        g_ptr_array_add (notes, g_strdup_printf ("(%s%s%s)", ctl_dict_str (c, "type", ""), url[0] ? " " : "", url));
        if (opt_ca && g_str_equal (name, opt_ca))
          pick = (int) i;
        if (g_str_equal (name, "local") && n > 1)
          def = i;
      }
    g_ptr_array_add (names, NULL);
    if (opt_ca && pick < 0)
      {
        g_autofree char *list = g_strjoinv (", ", (char **) names->pdata);
        ctl_warn (_("No CA profile “%s”; configured: %s"), opt_ca, n ? list : C_("CA profiles", "none"));
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
        else if (interactive)
          {
            pick = choose (_("CA profile:"), (const char *const *) names->pdata, NULL, (const char *const *) notes->pdata,
                           n, def);
            asked = TRUE;
            if (pick < 0)
              return ctl_usage_error (NULL, "%s", _("No CA profile chosen"));
          }
        else
          {
            g_autofree char *list = g_strjoinv (", ", (char **) names->pdata);
            return ctl_usage_error (ctx, _("enroll: several CA profiles (%s); choose one with --ca"), list);
          }
      }
    ca = g_variant_get_child_value (cas, pick);
  }
  needs_login = ctl_dict_bool (ca, "needs_login", g_strcmp0 (ctl_dict_str (ca, "type", ""), "est") == 0);

  /* (2) login and one-time password */
  if (needs_login)
    {
      if (opt_login == NULL)
        {
          if (!interactive)
            return ctl_usage_error (ctx, _("enroll: the CA profile “%s” needs --login and --otp-file"),
                                    ctl_dict_str (ca, "name", ""));
          opt_login = ask_text (_("Login: "), &error);
          asked = TRUE;
          if (opt_login == NULL)
            return ctl_report (error, NULL);
        }
      if (opt_otp_file == NULL && interactive)
        asked = TRUE;
      otp = ctl_secret_get (opt_otp_file, -1, _("One-time password: "), _("one-time password"), &error);
      if (otp == NULL)
        return ctl_report (error, NULL);
    }
  else if (ctl_dict_bool (ca, "needs_otp", FALSE))
    {
      /* SCEP: the one-time password is the CA's challenge password; no login */
      if (opt_otp_file == NULL && !interactive)
        return ctl_usage_error (ctx, _("enroll: the CA profile “%s” needs --otp-file (its challenge password)"),
                                ctl_dict_str (ca, "name", ""));
      if (opt_otp_file == NULL)
        asked = TRUE;
      otp = ctl_secret_get (opt_otp_file, -1, _("Challenge password: "), _("challenge password"), &error);
      if (otp == NULL)
        return ctl_report (error, NULL);
    }

  /* (3) storage */
  if (opt_storage == NULL)
    {
      if (interactive && !opt_token && !opt_name && !opt_output)
        {
          const char *const labels[] = { C_("storage type", "token"), C_("storage type", "system"),
                                         C_("storage type", "file") };
          const char *const notes[] = { _("key generated on the token, never leaves it"),
                                        _("the service keeps it for this host (administrators)"),
                                        _("a password-protected PKCS#12 file for you") };
          int pick = choose (_("Storage type:"), storages, labels, notes, 3, 0);
          asked = TRUE;
          if (pick < 0)
            return ctl_usage_error (NULL, "%s", _("No storage type chosen"));
          opt_storage = g_strdup (storages[pick]);
        }
      else
        opt_storage = g_strdup (opt_output ? "file" : opt_name ? "system" : "token");
    }

  /* (4)/(5) where it goes */
  if (g_str_equal (opt_storage, "token"))
    {
      g_autofree char *prompt = NULL;
      token = ctl_choose_token (bus, opt_token, interactive, &error);
      if (token == NULL)
        return ctl_report (error, NULL);
      if (ctl_dict_bool (token, "pin_locked", FALSE))
        {
          ctl_warn (_("The PIN of token “%s” is locked; it must be unlocked with the SO PIN first"),
                    ctl_dict_str (token, "label", ""));
          return CTL_EXIT_PIN_LOCKED;
        }
      if (opt_pin_file == NULL)
        {
          asked = asked || interactive;
          if (ctl_dict_bool (token, "pin_final_try", FALSE))
            fprintf (stderr, "%s\n", _("Warning: one more wrong PIN locks the token."));
        }
      prompt = g_strdup_printf (_("PIN of token “%s”: "), ctl_dict_str (token, "label", ""));
      pin = ctl_secret_get (opt_pin_file, -1, prompt, _("token PIN"), &error);
      if (pin == NULL)
        return ctl_report (error, NULL);
    }
  else if (g_str_equal (opt_storage, "system"))
    {
      if (opt_name == NULL)
        {
          if (!interactive)
            return ctl_usage_error (ctx, "%s", _("enroll: --storage system needs --name NAME"));
          opt_name = ask_text (_("Name in the system store (e.g. the service, like nginx): "), &error);
          asked = TRUE;
          if (opt_name == NULL)
            return ctl_report (error, NULL);
        }
    }
  else
    {
      P11cPinPolicy policy;
      if (opt_output == NULL)
        {
          if (!interactive)
            return ctl_usage_error (ctx, "%s", _("enroll: --storage file needs --output FILE.p12"));
          opt_output = ask_text (_("Output file (PKCS#12, e.g. me.p12): "), &error);
          asked = TRUE;
          if (opt_output == NULL)
            return ctl_report (error, NULL);
        }
      if (g_file_test (opt_output, G_FILE_TEST_EXISTS))
        {
          ctl_warn (_("%s exists already; choose another file name (nothing is overwritten)"), opt_output);
          return CTL_EXIT_FAILURE;
        }
      if (!ctl_get_pin_policy (bus, &policy, &error))
        return ctl_report (error, _("Cannot read the password policy"));
      if (opt_password_file == NULL && interactive)
        {
          g_autofree char *rules = ctl_pin_policy_text (&policy);
          printf ("%s\n", rules);
          asked = TRUE;
        }
      password = ctl_secret_new (opt_password_file, _("Password for the file: "), _("file password"), &policy, &error);
      if (password == NULL)
        return ctl_report (error, NULL);
    }

  if (asked && !opt_yes)
    {
      putchar ('\n');
      /* TRANSLATORS: the summary before the request; keep the values aligned */
      printf (_("CA profile: %s\n"), ctl_dict_str (ca, "name", ""));
      if (opt_login)
        printf (_("Login:      %s\n"), opt_login);
      if (token)
        printf (_("Storage:    token “%s”\n"), ctl_dict_str (token, "label", ""));
      else if (opt_name)
        printf (_("Storage:    system store, name “%s”\n"), opt_name);
      else
        printf (_("Storage:    file %s\n"), opt_output);
      printf (_("Key type:   %s\n"), opt_key_type ? opt_key_type : ctl_dict_str (ca, "key_type", "ec-p256"));
      if (opt_subject)
        printf (_("Subject:    %s\n"), opt_subject);
      if (!ctl_confirm (_("Request the certificate now?"), TRUE))
        {
          ctl_message ("%s", _("Nothing was requested."));
          return CTL_EXIT_CANCELLED;
        }
    }

  /* the output file is ours: created here, never overwritten */
  if (opt_output && g_str_equal (opt_storage, "file"))
    {
      out_fd = open (opt_output, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
      if (out_fd < 0)
        {
          int e = errno;
          ctl_warn (_("Cannot create %s: %s"), opt_output, g_strerror (e));
          return e == EACCES ? CTL_EXIT_NOT_AUTHORIZED : CTL_EXIT_FAILURE;
        }
      fds = g_unix_fd_list_new ();
      if (g_unix_fd_list_append (fds, out_fd, &error) < 0)
        {
          remove_output (opt_output, out_fd);
          close (out_fd);
          return ctl_report (error, NULL);
        }
    }

  {
    P11cEnrollParams request = {
      .ca = (char *) ctl_dict_str (ca, "name", ""), .storage = opt_storage, .login = opt_login, .otp = otp,
      .token = token ? (char *) ctl_dict_str (token, "path", "") : NULL, .pin = token ? pin : NULL,
      .key_type = opt_key_type, .subject = opt_subject, .label = opt_label,
      .name = opt_name && g_str_equal (opt_storage, "system") ? opt_name : NULL,
      .has_fd = fds != NULL, .fd_index = 0, .password = fds ? password : NULL,
      .allow_interaction = ctl_interactive (),
    };
    GVariant *params = g_variant_ref_sink (g_variant_new ("(@a{sv})", p11c_wire_enroll_to_variant (&request)));
    reply = g_dbus_connection_call_with_unix_fd_list_sync (bus, P11C_DBUS_NAME, P11C_DBUS_PATH,
                                                           P11C_DBUS_MANAGER_IFACE, "Enroll", params,
                                                           G_VARIANT_TYPE ("(o)"),
                                                           interactive ? G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION
                                                                       : G_DBUS_CALL_FLAGS_NONE,
                                                           CTL_TIMEOUT_START, fds, NULL, NULL, &error);
    p11c_variant_wipe (params);
    g_variant_unref (params);
  }
  p11c_secret_clear (&otp);
  p11c_secret_clear (&pin);
  p11c_secret_clear (&password);
  if (reply == NULL)
    {
      remove_output (opt_output, out_fd);
      if (out_fd >= 0)
        close (out_fd);
      return ctl_report (error, NULL);
    }
  g_variant_get (reply, "(o)", &job);
  if (opt_no_wait)
    {
      if (out_fd >= 0)
        close (out_fd);
      ctl_message ("%s", job);
      return CTL_EXIT_OK;
    }
  if (!ctl_follow_job (bus, job, NULL, &r, &error))
    {
      if (out_fd >= 0)
        close (out_fd);
      return ctl_report (error, NULL);
    }
  rc = ctl_job_report (bus, &r, opt_output);
  if (rc != CTL_EXIT_OK && g_strcmp0 (r.state, "interrupted") != 0)
    remove_output (opt_output, out_fd);
  if (out_fd >= 0)
    close (out_fd);
  p11c_wire_job_clear (&r);
  return rc;
}
