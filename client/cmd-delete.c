/* p11certctl delete URI | --label L | --id HEX [--token URI] [--keep-key] [--yes]
 *                   [--pin-file FILE | --pin-fd N] */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-wire.h"
#include "p11c-i18n.h"
#include "p11c-secret.h"

#include <stdio.h>
#include <string.h>

static char *
normalize_id (const char *hex)
{
  GString *s = g_string_new (NULL);
  if (g_str_has_prefix (hex, "0x") || g_str_has_prefix (hex, "0X"))
    hex += 2;
  for (const char *p = hex; *p; p++)
    if (*p != ':' && *p != ' ')
      g_string_append_c (s, g_ascii_tolower (*p));
  return g_string_free (s, FALSE);
}

static void
cert_out_set (GVariant **cert_out, GVariant *cert)
{
  g_clear_pointer (cert_out, g_variant_unref);
  *cert_out = cert;
}

/* The one certificate with @label or @id (on @token, when given) into
 * *cert_out; -1 when found, else the exit code (after saying why) */
static int
find_by_label_or_id (GDBusConnection *bus, const char *opt_label, const char *opt_id, const char *opt_token,
                     GVariant **cert_out)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) list_reply = NULL;
  g_autoptr(GVariant) list = NULL;
  g_autofree char *want_id = opt_id ? normalize_id (opt_id) : NULL;
  guint matches = 0;
  P11cListParams request = { .token = (char *) opt_token, .allow_interaction = ctl_interactive () };

  list_reply = ctl_call_manager (bus, "ListCerts", g_variant_new ("(@a{sv})", p11c_wire_list_to_variant (&request)),
                                 "(aa{sv})", CTL_TIMEOUT_LIST, &error);
  if (list_reply == NULL)
    return ctl_report (error, NULL);
  list = g_variant_get_child_value (list_reply, 0);
  for (gsize i = 0; i < g_variant_n_children (list); i++)
    {
      g_autoptr(GVariant) c = g_variant_get_child_value (list, i);
      g_auto(P11cWireCert) entry = { 0 };
      g_autofree char *id = NULL;
      if (!p11c_wire_cert_from_variant (c, &entry, NULL))
        continue;
      id = normalize_id (entry.id ? entry.id : "");
      if ((opt_label && g_strcmp0 (entry.label, opt_label) == 0) || (want_id && g_str_equal (id, want_id)))
        {
          matches++;
          cert_out_set (cert_out, g_steal_pointer (&c));
        }
    }
  if (matches == 0)
    {
      if (opt_token != NULL)
        /* TRANSLATORS: %1$s is a label or hex id, %2$s a token URI */
        ctl_warn (opt_label ? _("No certificate with label “%1$s” on %2$s; see “p11certctl list”")
                            : _("No certificate with id “%1$s” on %2$s; see “p11certctl list”"),
                  opt_label ? opt_label : opt_id, opt_token);
      else
        ctl_warn (opt_label ? _("No certificate with label “%s”; see “p11certctl list”")
                            : _("No certificate with id “%s”; see “p11certctl list”"),
                  opt_label ? opt_label : opt_id);
      return CTL_EXIT_NOT_FOUND;
    }
  if (matches > 1)
    {
      ctl_warn (opt_label ? ngettext ("%u certificate has label “%s”; give the URI (see “p11certctl list --verbose”) or --token",
                                      "%u certificates have label “%s”; give the URI (see “p11certctl list --verbose”) or --token",
                                      matches)
                          : ngettext ("%u certificate has id “%s”; give the URI (see “p11certctl list --verbose”) or --token",
                                      "%u certificates have id “%s”; give the URI (see “p11certctl list --verbose”) or --token",
                                      matches),
                matches, opt_label ? opt_label : opt_id);
      return CTL_EXIT_USAGE;
    }
  return -1;
}

/* What the daemon removed, in the user's words */
static void
report_deleted (GVariant *result, const char *uri)
{
  P11cWireDeleted d;

  p11c_wire_deleted_from_variant (result, &d);
  ctl_message (_("Deleted the certificate %s."), d.certificate ? d.certificate : uri);
  for (guint i = 0; d.removed[i]; i++)
    ctl_message (_("  removed %s"), d.removed[i]);
  if (d.keys_removed > 0)
    ctl_message (ngettext ("%u key object removed.", "%u key objects removed.", d.keys_removed), d.keys_removed);
  if (d.keys_shared_with > 0)
    ctl_message (ngettext ("The key was kept: %u other certificate uses it.",
                           "The key was kept: %u other certificates use it.", d.keys_shared_with),
                 d.keys_shared_with);
  else if (d.keys_kept != NULL && d.keys_kept[0] != '\0')
    /* TRANSLATORS: %s is the daemon's English reason, for an administrator */
    ctl_message (_("Keys kept: %s"), d.keys_kept);
  p11c_wire_deleted_clear (&d);
}

int
ctl_cmd_delete (int argc, char **argv)
{
  g_autofree char *opt_label = NULL;
  g_autofree char *opt_id = NULL;
  g_autofree char *opt_token = NULL;
  g_autofree char *opt_pin_file = NULL;
  int opt_pin_fd = -1;
  gboolean opt_keep_key = FALSE, opt_yes = FALSE;
  GOptionEntry entries[] = {
    { "label", 0, 0, G_OPTION_ARG_STRING, &opt_label, N_("The certificate with this label"), N_("L") },
    { "id", 0, 0, G_OPTION_ARG_STRING, &opt_id, N_("The certificate with this CKA_ID (hex)"), N_("HEX") },
    { "token", 0, 0, G_OPTION_ARG_STRING, &opt_token, N_("Look for --label/--id only on this token"), N_("URI") },
    { "keep-key", 0, 0, G_OPTION_ARG_NONE, &opt_keep_key, N_("Keep the private and public key"), NULL },
    { "yes", 'y', 0, G_OPTION_ARG_NONE, &opt_yes, N_("Do not ask for confirmation"), NULL },
    { "pin-file", 0, 0, G_OPTION_ARG_FILENAME, &opt_pin_file, N_("Read the token PIN from FILE (first line)"), N_("FILE") },
    { "pin-fd", 0, 0, G_OPTION_ARG_INT, &opt_pin_fd, N_("Read the token PIN from file descriptor N"), N_("N") },
    { NULL },
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("URI | --label L | --id HEX — delete a certificate"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) cert = NULL;
  g_autoptr(GVariant) tokens = NULL;
  g_auto(P11cWireCert) entry = { 0 };
  g_auto(P11cWireToken) tok = { 0 };
  P11cWireToken *token = NULL;   /* the token the certificate is on, if known */
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) result = NULL;
  p11c_autosecret pin = NULL;
  g_autofree char *uri = NULL;
  GDBusConnection *bus;
  gboolean is_system;
  int given, rc;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx, _("Deletes a certificate and, unless --keep-key, its key pair. Shows the\n"
                                       "certificate and asks before deleting unless --yes. The token PIN is read\n"
                                       "from --pin-file, --pin-fd or the terminal; system: URIs need no PIN."));
  if ((rc = ctl_parse (ctx, &argc, &argv)) >= 0)
    return rc;
  given = (argc > 1 ? 1 : 0) + (opt_label ? 1 : 0) + (opt_id ? 1 : 0);
  if (argc > 2)
    return ctl_usage_error (ctx, _("delete: unexpected argument “%s”"), argv[2]);
  if (given != 1)
    return ctl_usage_error (ctx, _("delete: give exactly one of URI, --label or --id"));
  if (opt_pin_file && opt_pin_fd >= 0)
    return ctl_usage_error (ctx, _("--pin-file and --pin-fd exclude each other"));
  if (!opt_yes && !ctl_stdin_is_tty ())
    return ctl_usage_error (ctx, _("delete: not asking for confirmation without a terminal; add --yes"));
  if ((bus = ctl_bus (&rc)) == NULL)
    return rc;
  tokens = ctl_list_tokens (bus, &error);
  if (tokens == NULL)
    return ctl_report (error, NULL);

  if (argc == 2)
    {
      uri = g_strdup (argv[1]);
      cert = ctl_find_cert (bus, uri, &error);
      if (cert == NULL && error != NULL)
        return ctl_report (error, NULL);
    }
  else
    {
      if ((rc = find_by_label_or_id (bus, opt_label, opt_id, opt_token, &cert)) >= 0)
        return rc;
    }
  if (cert != NULL && p11c_wire_cert_from_variant (cert, &entry, NULL))
    {
      if (uri == NULL)
        uri = g_strdup (entry.uri);
      if (ctl_token_by_path (tokens, entry.token, &tok))
        token = &tok;
    }
  if (uri == NULL)
    uri = g_strdup ("");
  is_system = g_str_has_prefix (uri, "system:");

  if (!opt_yes)
    {
      printf ("%s\n", _("Certificate:"));
      if (cert != NULL)
        ctl_print_cert (&entry, tokens);
      else
        printf (_("  URI:      %s\n"), uri);
      if (!opt_keep_key)
        printf ("%s\n", _("Its private key is deleted too (unless another certificate uses it)."));
      /* the question of the users' manual (see README) */
      if (!ctl_confirm (_("Certificate will be deleted. Continue?"), FALSE))
        {
          ctl_message ("%s", _("Nothing was deleted."));
          return CTL_EXIT_CANCELLED;
        }
    }

  if (!is_system)
    {
      g_autofree char *prompt = NULL;
      if (token != NULL && (rc = ctl_token_pin_check (token, opt_pin_file != NULL || opt_pin_fd >= 0)) >= 0)
        return rc;
      prompt = g_strdup_printf (_("PIN of token “%s”: "), token ? token->label : uri);
      pin = ctl_secret_get (opt_pin_file, opt_pin_fd, prompt, _("token PIN"), &error);
      if (pin == NULL)
        return ctl_report (error, NULL);
    }

  {
    P11cOptions options = { .keep_key = opt_keep_key, .allow_interaction = ctl_interactive () };
    GVariant *params = g_variant_ref_sink (g_variant_new ("(ss@a{sv})", uri, pin ? pin : "",
                                                          p11c_wire_options_to_variant (&options, TRUE)));
    reply = ctl_call_manager (bus, "DeleteCert", params, "(a{sv})", CTL_TIMEOUT_TOKEN, &error);
    /* wipe our serialised copy of the PIN */
    if (pin != NULL)
      p11c_variant_wipe (params);
    g_variant_unref (params);
  }
  p11c_secret_clear (&pin);
  if (reply == NULL)
    return ctl_report_token_error (bus, error, token ? token->path : NULL);
  result = g_variant_get_child_value (reply, 0);
  report_deleted (result, uri);
  return CTL_EXIT_OK;
}
