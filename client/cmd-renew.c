/* p11certctl renew URI [--pin-file F] [--keep-key] | renew --due */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-wire.h"
#include "ctl-job.h"
#include "p11c-i18n.h"
#include "p11c-secret.h"

#include <stdio.h>

/* why @uri needs a person or cannot be renewed: from its reason code, the
 * daemon's English reason quoted where it adds facts */
static char *
renew_reason (const P11cWireDue *due, const char *uri)
{
  const char *code = g_hash_table_lookup (due->reason_codes, uri);
  const char *english = g_hash_table_lookup (due->reasons, uri);
  const char *text;
  gboolean quote;

  text = ctl_renew_reason_text (code, &quote);
  if (text == NULL)
    return g_strdup (english ? english : _("the service did not say why"));
  if (quote && english != NULL)
    /* TRANSLATORS: %1$s is the reason, %2$s the service's English text, for an administrator */
    return g_strdup_printf (_("%1$s (details: %2$s)"), text, english);
  return g_strdup (text);
}

static int
renew_due (GDBusConnection *bus)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) result = NULL;
  P11cWireDue due;
  char **jobs, **person, **not_renewable;
  guint n_jobs = 0, failed = 0, n_person = 0;
  int rc;

  {
    P11cOptions options = { .allow_interaction = ctl_interactive () };
    reply = ctl_call_manager (bus, "RenewDue", g_variant_new ("(@a{sv})", p11c_wire_options_to_variant (&options, FALSE)),
                              "(a{sv})", CTL_TIMEOUT_TOKEN, &error);
  }
  if (reply == NULL)
    return ctl_report (error, "renew --due");
  result = g_variant_get_child_value (reply, 0);
  p11c_wire_due_from_variant (result, &due);
  jobs = due.jobs;
  person = due.needs_person;
  not_renewable = due.not_renewable;
  n_jobs = g_strv_length (jobs);
  n_person = g_strv_length (person);

  if (n_jobs == 0 && n_person == 0 && not_renewable[0] == NULL)
    {
      ctl_message ("%s", _("No certificate is due for renewal."));
      p11c_wire_due_clear (&due);
      return CTL_EXIT_OK;
    }
  for (guint i = 0; i < n_jobs; i++)
    {
      P11cWireJob r = { 0 };
      g_autoptr(GError) local = NULL;
      g_autofree char *prefix = g_strdup_printf ("%s: ", jobs[i]);

      ctl_message (_("Renewing (job %s)…"), jobs[i]);
      if (!ctl_follow_job (bus, jobs[i], prefix, &r, &local))
        {
          ctl_report (local, jobs[i]);
          failed++;
          continue;
        }
      if (g_strcmp0 (r.state, "interrupted") == 0)
        {
          p11c_wire_job_clear (&r);
          p11c_wire_due_clear (&due);
          return CTL_EXIT_CANCELLED;
        }
      if (ctl_job_report (bus, &r, NULL) != CTL_EXIT_OK)
        failed++;
      p11c_wire_job_clear (&r);
    }
  for (guint i = 0; not_renewable[i]; i++)
    {
      g_autofree char *why = renew_reason (&due, not_renewable[i]);
      ctl_warn (_("%1$s is due but cannot be renewed: %2$s"), not_renewable[i], why);
    }
  if (n_person > 0)
    {
      ctl_message (ngettext ("%u certificate needs a person (the token PIN) to be renewed:",
                             "%u certificates need a person (the token PIN) to be renewed:", n_person), n_person);
      for (guint i = 0; i < n_person; i++)
        {
          g_autofree char *why = renew_reason (&due, person[i]);
          ctl_message ("  p11certctl renew '%s'", person[i]);
          ctl_message ("    (%s)", why);
        }
    }
  if (failed > 0)
    /* TRANSLATORS: %1$u failed renewals of %2$u started */
    ctl_warn (ngettext ("%1$u renewal of %2$u failed", "%1$u renewals of %2$u failed", failed), failed, n_jobs);
  rc = failed > 0 ? CTL_EXIT_FAILURE : n_person > 0 ? CTL_EXIT_NEEDS_PERSON : CTL_EXIT_OK;
  p11c_wire_due_clear (&due);
  return rc;
}

int
ctl_cmd_renew (int argc, char **argv)
{
  g_autofree char *opt_pin_file = NULL;
  gboolean opt_keep_key = FALSE, opt_due = FALSE, opt_no_wait = FALSE;
  GOptionEntry entries[] = {
    { "pin-file", 0, 0, G_OPTION_ARG_FILENAME, &opt_pin_file, N_("Read the token PIN from FILE"), N_("FILE") },
    { "keep-key", 0, 0, G_OPTION_ARG_NONE, &opt_keep_key, N_("Keep the key pair (default: a new one)"), NULL },
    { "due", 0, 0, G_OPTION_ARG_NONE, &opt_due, N_("Renew every due certificate that needs no person"), NULL },
    { "no-wait", 0, 0, G_OPTION_ARG_NONE, &opt_no_wait, N_("Print the job path and exit at once"), NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("URI | --due — renew certificates"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) cert = NULL;
  g_autoptr(GVariant) reply = NULL;
  p11c_autosecret pin = NULL;
  g_autofree char *job = NULL;
  GDBusConnection *bus;
  P11cWireJob r = { 0 };
  const char *uri;
  int rc;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx,
    _("Renews a certificate through the CA profile that issued it, with a new key\n"
      "unless --keep-key. With --due, renews every due certificate that can be\n"
      "renewed without a person and lists those that need their token PIN\n"
      "(exit status 20)."));
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  if (opt_due)
    {
      if (argc > 1 || opt_pin_file || opt_keep_key || opt_no_wait)
        return ctl_usage_error (ctx, "%s", _("renew --due takes no URI or other options"));
      if ((bus = ctl_bus (&rc)) == NULL)
        return rc;
      return renew_due (bus);
    }
  if (argc != 2)
    return ctl_usage_error (ctx, "%s", argc < 2 ? _("renew: give a certificate URI (see “p11certctl list --verbose”) or --due")
                                                : _("renew: give one certificate URI"));
  uri = argv[1];
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;
  cert = ctl_find_cert (bus, uri, &error);
  if (cert == NULL && error != NULL)
    return ctl_report (error, NULL);
  if (cert == NULL)
    {
      ctl_warn (_("No certificate %s; see “p11certctl list --verbose” (is the token inserted?)"), uri);
      return CTL_EXIT_NOT_FOUND;
    }
  if (!g_str_has_prefix (uri, "system:"))
    {
      g_autoptr(GVariant) tokens = ctl_list_tokens (bus, NULL);
      g_auto(P11cWireCert) entry = { 0 };
      g_auto(P11cWireToken) t = { 0 };
      g_autofree char *prompt = NULL;
      if (p11c_wire_cert_from_variant (cert, &entry, NULL) && ctl_token_by_path (tokens, entry.token, &t))
        {
          if ((rc = ctl_token_pin_check (&t, opt_pin_file != NULL)) >= 0)
            return rc;
          prompt = g_strdup_printf (_("PIN of token “%s”: "), t.label);
        }
      pin = ctl_secret_get (opt_pin_file, -1, prompt ? prompt : _("Token PIN: "), _("token PIN"), &error);
      if (pin == NULL)
        return ctl_report (error, NULL);
    }
  {
    P11cRenewParams request = { .pin = pin, .rekey = !opt_keep_key, .allow_interaction = ctl_interactive () };
    GVariant *params = g_variant_ref_sink (g_variant_new ("(s@a{sv})", uri, p11c_wire_renew_to_variant (&request)));
    reply = ctl_call_manager (bus, "Renew", params, "(o)", CTL_TIMEOUT_START, &error);
    p11c_variant_wipe (params);
    g_variant_unref (params);
  }
  p11c_secret_clear (&pin);
  if (reply == NULL)
    return ctl_report (error, NULL);
  g_variant_get (reply, "(o)", &job);
  if (opt_no_wait)
    {
      ctl_message ("%s", job);
      return CTL_EXIT_OK;
    }
  if (!ctl_follow_job (bus, job, NULL, &r, &error))
    return ctl_report (error, NULL);
  rc = ctl_job_report (bus, &r, NULL);
  p11c_wire_job_clear (&r);
  return rc;
}
