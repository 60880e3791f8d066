/* p11certctl — what a daemon error means, in the user's language.
 *
 * The daemon's messages are English, for logs and administrators.  A
 * person reads text made here from the error NAME and structured details
 * (Job.ErrorDetails, the token's PIN properties, Manager.CheckPin); the
 * daemon's message is only ever shown verbatim, as details to quote, never
 * parsed or compared (tools/check-error-text enforces that). */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-error.h"
#include "p11c-i18n.h"
#include "p11c-names.h"
#include "p11c-secret.h"

#include <string.h>

static const char *
short_name (const char *name)
{
  if (name == NULL)
    return "";
  if (g_str_has_prefix (name, P11C_DBUS_ERROR_PREFIX))
    return name + strlen (P11C_DBUS_ERROR_PREFIX);
  return name;
}

static gboolean
detail_bool (GVariant *details, const char *key)
{
  gboolean b = FALSE;
  if (details != NULL)
    g_variant_lookup (details, key, "b", &b);
  return b;
}

static guint32
detail_uint (GVariant *details, const char *key, guint32 def)
{
  guint32 u;
  if (details != NULL && g_variant_lookup (details, key, "u", &u))
    return u;
  return def;
}

static const char *
detail_str (GVariant *details, const char *key)
{
  const char *s = NULL;
  if (details != NULL)
    g_variant_lookup (details, key, "&s", &s);
  return s;
}

char *
ctl_pin_policy_text (const P11cPinPolicy *policy)
{
  g_autoptr(GPtrArray) parts = g_ptr_array_new_with_free_func (g_free);

  g_ptr_array_add (parts, g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "at least %u character",
                                                        "at least %u characters", policy->min_length),
                                           policy->min_length));
  if (policy->require_digit)
    g_ptr_array_add (parts, g_strdup (_("digits (0-9)")));
  if (policy->require_upper && policy->require_lower)
    g_ptr_array_add (parts, g_strdup (_("upper- and lower-case Latin letters (A-Z, a-z)")));
  else if (policy->require_upper)
    g_ptr_array_add (parts, g_strdup (_("upper-case Latin letters (A-Z)")));
  else if (policy->require_lower)
    g_ptr_array_add (parts, g_strdup (_("lower-case Latin letters (a-z)")));
  g_ptr_array_add (parts, NULL);
  {
    g_autofree char *list = g_strjoinv (", ", (char **) parts->pdata);
    /* TRANSLATORS: %s lists the rules: "at least 8 characters, digits (0-9), …" */
    return g_strdup_printf (_("The password must have %s."), list);
  }
}

char *
ctl_pin_rules_text (const char *const *broken, guint length, const P11cPinPolicy *policy)
{
  g_autoptr(GPtrArray) parts = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *list = NULL;

  for (guint i = 0; broken != NULL && broken[i]; i++)
    {
      const char *r = broken[i];
      if (g_str_equal (r, P11C_PIN_RULE_MIN_LENGTH))
        {
          /* TRANSLATORS: the first %u is the length of the password typed, the second the minimum */
          g_autofree char *has = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "it has %u character",
                                                               "it has %u characters", length), length);
          g_ptr_array_add (parts, g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "%s, at least %u is required",
                                                                "%s, at least %u are required",
                                                                policy->min_length),
                                                   has, policy->min_length));
        }
      else if (g_str_equal (r, P11C_PIN_RULE_MAX_LENGTH))
        g_ptr_array_add (parts, g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "it is longer than %u byte",
                                                              "it is longer than %u bytes", policy->max_length),
                                                 policy->max_length ? policy->max_length : P11C_SECRET_MAX));
      else if (g_str_equal (r, P11C_PIN_RULE_DIGIT))
        g_ptr_array_add (parts, g_strdup (_("it has no digit (0-9)")));
      else if (g_str_equal (r, P11C_PIN_RULE_UPPER))
        g_ptr_array_add (parts, g_strdup (_("it has no upper-case Latin letter (A-Z)")));
      else if (g_str_equal (r, P11C_PIN_RULE_LOWER))
        g_ptr_array_add (parts, g_strdup (_("it has no lower-case Latin letter (a-z)")));
      else if (g_str_equal (r, P11C_PIN_RULE_LINE_BREAK))
        g_ptr_array_add (parts, g_strdup (_("it contains a line break")));
      else if (g_str_equal (r, P11C_PIN_RULE_UTF8))
        g_ptr_array_add (parts, g_strdup (_("it is not valid UTF-8 text")));
      else if (g_str_equal (r, P11C_PIN_RULE_TOKEN))
        g_ptr_array_add (parts, g_strdup (_("the token does not accept a password of this form or length")));
      else if (g_str_equal (r, P11C_PIN_RULE_EXPIRED))
        g_ptr_array_add (parts, g_strdup (_("the token password has expired; change it first")));
      else
        /* TRANSLATORS: %s is a rule id the daemon reported that this client does not know */
        g_ptr_array_add (parts, g_strdup_printf (_("rule “%s”"), r));
    }
  if (parts->len == 0)
    return g_strdup (_("The token does not accept the new password."));
  g_ptr_array_add (parts, NULL);
  list = g_strjoinv ("; ", (char **) parts->pdata);
  {
    g_autofree char *rules = ctl_pin_policy_text (policy);
    /* TRANSLATORS: %1$s lists each broken rule, %2$s is "The password must have …" */
    return g_strdup_printf (_("The new password does not meet the requirements: %1$s. %2$s"), list, rules);
  }
}

char *
ctl_pin_state_text (GVariant *state)
{
  if (detail_bool (state, "pin_locked"))
    return g_strdup (_("The token password is now locked: no tries are left. Unblock it with the administrator "
                       "(SO) password or ask your administrator."));
  if (detail_bool (state, "pin_final_try"))
    return g_strdup (_("Only one try is left: one more wrong password locks the token."));
  if (detail_bool (state, "pin_count_low"))
    return g_strdup (_("Few tries are left (the token reports the count is low)."));
  return NULL;
}

/* the policy for PinPolicy texts: the daemon's, else the default */
static void
policy_for (GVariant *details, P11cPinPolicy *policy)
{
  p11c_pin_policy_init_default (policy);
  policy->min_length = detail_uint (details, "min_length", policy->min_length);
  policy->max_length = detail_uint (details, "max_length", policy->max_length);
}

char *
ctl_error_text (const char *name, GVariant *details, const char *message)
{
  const char *n = short_name (name);
  const char *reason = detail_str (details, "reason");
  g_autoptr(GString) s = g_string_new (NULL);
  gboolean quote = TRUE;   /* add the daemon's message as details to quote */

  if (g_str_equal (n, "PinIncorrect"))
    {
      g_autofree char *state = ctl_pin_state_text (details);
      quote = FALSE;
      g_string_append (s, _("The token password is wrong."));
      if (detail_bool (details, "pin_not_sent"))
        {
          g_string_append_c (s, ' ');
          g_string_append (s, _("The token already refused this password, so it was not sent again; "
                                "enter the correct one."));
        }
      if (state != NULL)
        g_string_append_printf (s, " %s", state);
    }
  else if (g_str_equal (n, "PinLocked"))
    {
      quote = FALSE;
      g_string_append (s, _("The token password is locked: no tries are left. Unblock it with the administrator "
                            "(SO) password or ask your administrator."));
    }
  else if (g_str_equal (n, "PinPolicy"))
    {
      g_autofree const char **broken = NULL;
      g_autofree char *text = NULL;
      P11cPinPolicy policy;
      quote = FALSE;
      policy_for (details, &policy);
      if (details != NULL)
        g_variant_lookup (details, "broken", "^a&s", &broken);
      text = ctl_pin_rules_text (broken, detail_uint (details, "length", 0), &policy);
      g_string_append (s, text);
    }
  else if (g_str_equal (n, "NotAuthorized") || g_str_equal (name, "org.freedesktop.DBus.Error.AccessDenied")
           || g_str_equal (name, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"))
    {
      quote = FALSE;
      g_string_append (s, _("You are not allowed to do this. Ask your administrator for the right to do it."));
    }
  else if (g_str_equal (n, "TokenNotPresent"))
    {
      quote = FALSE;
      g_string_append (s, _("The token is not present (was it removed?). Insert it and try again."));
    }
  else if (g_str_equal (n, "CaUnreachable"))
    {
      guint attempts = detail_uint (details, "attempts", 0);
      if (g_strcmp0 (reason, "timeout") == 0)
        g_string_append (s, _("The certification authority did not answer in time."));
      else if (g_strcmp0 (reason, "dns") == 0)
        g_string_append (s, _("The address of the certification authority could not be found."));
      else if (g_strcmp0 (reason, "untrusted") == 0)
        g_string_append (s, _("The server certificate of the certification authority is not trusted "
                              "(check the trust anchor of the CA profile)."));
      else if (g_strcmp0 (reason, "tls") == 0)
        g_string_append (s, _("A secure connection to the certification authority could not be made."));
      else if (g_strcmp0 (reason, "server-error") == 0)
        g_string_append (s, _("The certification authority failed to handle the request."));
      else
        g_string_append (s, _("The certification authority cannot be reached."));
      if (attempts > 0)
        {
          g_string_append_c (s, ' ');
          g_string_append_printf (s, g_dngettext (GETTEXT_PACKAGE, "Gave up after %u attempt.",
                                                  "Gave up after %u attempts.", attempts), attempts);
        }
      g_string_append_c (s, ' ');
      g_string_append (s, _("Try again later; if it keeps failing, contact your manager."));
    }
  else if (g_str_equal (n, "CaRejected"))
    {
      if (g_strcmp0 (reason, "credentials") == 0)
        {
          quote = FALSE;
          g_string_append (s, _("The certification authority refused the login or the one-time password. "
                                "A one-time password works only once: ask your manager for a new one."));
        }
      else if (g_strcmp0 (reason, "clock") == 0)
        g_string_append (s, _("The certification authority says the clock of this computer is wrong; "
                              "check the date and time, then try again."));
      else if (g_strcmp0 (reason, "client-certificate") == 0)
        g_string_append (s, _("The certification authority did not accept the certificate used for renewal."));
      else if (g_strcmp0 (reason, "not-issued") == 0)
        {
          guint wait = detail_uint (details, "max_wait", 0);
          g_string_append_printf (s, g_dngettext (GETTEXT_PACKAGE,
                                                  "The certification authority did not issue the certificate "
                                                  "within %u second; ask your CA administrator to approve the "
                                                  "request, then enroll again.",
                                                  "The certification authority did not issue the certificate "
                                                  "within %u seconds; ask your CA administrator to approve the "
                                                  "request, then enroll again.", wait), wait);
        }
      else
        g_string_append (s, _("The certification authority rejected the request."));
    }
  else if (g_str_equal (n, "CaBadReply"))
    g_string_append (s, _("The certification authority sent a reply that cannot be used."));
  else if (g_str_equal (n, "Cancelled"))
    {
      quote = FALSE;
      g_string_append (s, _("Cancelled."));
    }
  else if (g_str_equal (n, "Busy"))
    g_string_append (s, _("The token is busy with another operation or application; try again later."));
  else if (g_str_equal (n, "TokenError"))
    g_string_append (s, _("The token reported an error; remove and re-insert it, then try again."));
  else if (g_str_equal (n, "NoSpace"))
    g_string_append (s, _("There is no space left (on the token or on disk); delete unused objects."));
  else if (g_str_equal (n, "NotFound") || g_str_equal (name, "org.freedesktop.DBus.Error.UnknownObject"))
    g_string_append (s, _("Not found."));
  else if (g_str_equal (n, "NotSupported"))
    g_string_append (s, _("This is not supported by the token or the service."));
  else if (g_str_equal (n, "InvalidArgs") || g_str_equal (name, "org.freedesktop.DBus.Error.InvalidArgs"))
    g_string_append (s, _("The request was not accepted (invalid arguments)."));
  else
    g_string_append (s, _("The operation failed."));

  if (quote && message != NULL && message[0] != '\0')
    {
      g_string_append_c (s, '\n');
      /* TRANSLATORS: %s is the service's English message, for an administrator */
      g_string_append_printf (s, _("Details (for your administrator): %s"), message);
    }
  return g_string_free (g_steal_pointer (&s), FALSE);
}

const char *
ctl_job_state_text (const char *state)
{
  static const struct { const char *id; const char *text; } states[] = {
    { "queued", NC_("job state", "queued") },
    { "generating-key", NC_("job state", "generating-key") },
    { "requesting", NC_("job state", "requesting") },
    { "waiting-for-ca", NC_("job state", "waiting-for-ca") },
    { "writing", NC_("job state", "writing") },
    { "done", NC_("job state", "done") },
    { "failed", NC_("job state", "failed") },
    { "cancelled", NC_("job state", "cancelled") },
    { "interrupted", NC_("job state", "interrupted") },
  };
  if (state == NULL)
    return "?";
  for (gsize i = 0; i < G_N_ELEMENTS (states); i++)
    if (g_str_equal (states[i].id, state))
      return g_dpgettext2 (GETTEXT_PACKAGE, "job state", states[i].text);
  return state;
}

gboolean
ctl_check_new_pin (const P11cPinPolicy *policy, const char *pin, GError **error)
{
  guint chars;
  g_auto(GStrv) broken = p11c_pin_policy_broken (policy, pin, &chars);
  g_autofree char *text = NULL;

  if (broken[0] == NULL)
    return TRUE;
  text = ctl_pin_rules_text ((const char *const *) broken, chars, policy);
  g_set_error_literal (error, P11C_ERROR, P11C_ERROR_PIN_POLICY, text);
  return FALSE;
}

GVariant *
ctl_token_pin_state (GDBusConnection *bus, const char *token_path)
{
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) props = NULL;
  GVariantBuilder b;
  static const struct { const char *prop; const char *key; } map[] = {
    { "PinCountLow", "pin_count_low" }, { "PinFinalTry", "pin_final_try" }, { "PinLocked", "pin_locked" },
  };

  if (token_path == NULL || !g_variant_is_object_path (token_path))
    return NULL;
  reply = ctl_call (bus, token_path, "org.freedesktop.DBus.Properties", "GetAll",
                    g_variant_new ("(s)", P11C_DBUS_TOKEN_IFACE), "(a{sv})", CTL_TIMEOUT_LIST, NULL);
  if (reply == NULL)
    return NULL;
  props = g_variant_get_child_value (reply, 0);
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  for (gsize i = 0; i < G_N_ELEMENTS (map); i++)
    {
      gboolean v = FALSE;
      g_variant_lookup (props, map[i].prop, "b", &v);
      g_variant_builder_add (&b, "{sv}", map[i].key, g_variant_new_boolean (v));
    }
  return g_variant_ref_sink (g_variant_builder_end (&b));
}

int
ctl_report_token_error (GDBusConnection *bus, const GError *error, const char *token_path)
{
  g_autofree char *name = ctl_error_short_name (error);
  g_autoptr(GVariant) state = NULL;

  /* a refused PIN: the token's properties hold its state when the error arrives */
  if (g_strcmp0 (name, "PinIncorrect") == 0 || g_strcmp0 (name, "PinLocked") == 0)
    state = ctl_token_pin_state (bus, token_path);
  return ctl_report_details (error, NULL, state);
}

const char *
ctl_renew_reason_text (const char *code, gboolean *quote)
{
  static const struct { const char *code; const char *text; gboolean quote; } reasons[] = {
    { "pin-needed", N_("the token PIN is needed"), FALSE },
    { "pin-file-other-token", N_("the token PIN is needed: the PIN file of the CA profile is for another token"), TRUE },
    { "pin-file-unusable", N_("the token PIN is needed: the PIN file of the CA profile cannot be used"), TRUE },
    { "pin-refused", N_("the token refused the PIN in the CA profile's PIN file; it is not sent again until the "
                        "file changes"), FALSE },
    { "not-in-place", N_("the certificate is not where it was issued (it is a copy)"), TRUE },
    { "profile-gone", N_("its CA profile is not configured any more; enroll a new certificate"), FALSE },
    { "request-failed", N_("the renewal request could not be made"), TRUE },
    { "not-authorized", N_("renewing the system store needs an administrator (or the renewal timer)"), FALSE },
  };
  *quote = TRUE;
  for (gsize i = 0; code != NULL && i < G_N_ELEMENTS (reasons); i++)
    if (g_str_equal (code, reasons[i].code))
      {
        *quote = reasons[i].quote;
        return _(reasons[i].text);
      }
  return NULL;
}

/* ---- exit codes and reports -------------------------------------------------------------- */

static int
exit_code_for_p11c (int code)
{
  switch (code)
    {
    case P11C_ERROR_INVALID_ARGS:      return CTL_EXIT_USAGE;
    case P11C_ERROR_NOT_FOUND:         return CTL_EXIT_NOT_FOUND;
    case P11C_ERROR_NOT_AUTHORIZED:    return CTL_EXIT_NOT_AUTHORIZED;
    case P11C_ERROR_PIN_INCORRECT:     return CTL_EXIT_PIN_INCORRECT;
    case P11C_ERROR_PIN_LOCKED:        return CTL_EXIT_PIN_LOCKED;
    case P11C_ERROR_PIN_POLICY:        return CTL_EXIT_PIN_POLICY;
    case P11C_ERROR_TOKEN_NOT_PRESENT: return CTL_EXIT_TOKEN_NOT_PRESENT;
    case P11C_ERROR_CA_UNREACHABLE:    return CTL_EXIT_CA_UNREACHABLE;
    case P11C_ERROR_CA_REJECTED:       return CTL_EXIT_CA_REJECTED;
    case P11C_ERROR_CANCELLED:         return CTL_EXIT_CANCELLED;
    default:                           return CTL_EXIT_FAILURE;
    }
}

int
ctl_exit_code_for_name (const char *name)
{
  int code;

  if (name == NULL || name[0] == '\0')
    return CTL_EXIT_FAILURE;
  if (g_str_equal (name, "org.freedesktop.DBus.Error.AccessDenied")
      || g_str_equal (name, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"))
    return CTL_EXIT_NOT_AUTHORIZED;
  if (g_str_equal (name, "org.freedesktop.DBus.Error.InvalidArgs"))
    return CTL_EXIT_USAGE;
  if (g_str_equal (name, "org.freedesktop.DBus.Error.UnknownObject"))
    return CTL_EXIT_NOT_FOUND;
  if (strchr (name, '.') != NULL && !g_str_has_prefix (name, P11C_DBUS_ERROR_PREFIX))
    return CTL_EXIT_FAILURE;
  code = p11c_error_from_name (name);
  return code < 0 ? CTL_EXIT_FAILURE : exit_code_for_p11c (code);
}

char *
ctl_error_short_name (const GError *error)
{
  g_autofree char *remote = g_dbus_error_get_remote_error (error);
  if (remote != NULL)
    {
      if (g_str_has_prefix (remote, P11C_DBUS_ERROR_PREFIX))
        return g_strdup (remote + strlen (P11C_DBUS_ERROR_PREFIX));
      return g_steal_pointer (&remote);
    }
  if (error->domain == P11C_ERROR)
    return g_strdup (p11c_error_to_name (error->code));
  return NULL;
}

int
ctl_exit_code (const GError *error)
{
  g_autofree char *remote = NULL;

  if (error == NULL)
    return CTL_EXIT_OK;
  if (error->domain == CTL_ERROR)
    return error->code == CTL_ERROR_USAGE ? CTL_EXIT_USAGE
           : error->code == CTL_ERROR_NOT_FOUND ? CTL_EXIT_NOT_FOUND : CTL_EXIT_FAILURE;
  remote = g_dbus_error_get_remote_error (error);
  if (remote != NULL)
    return ctl_exit_code_for_name (remote);
  if (error->domain == P11C_ERROR)
    return exit_code_for_p11c (error->code);
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return CTL_EXIT_CANCELLED;
  if (g_error_matches (error, G_DBUS_ERROR, G_DBUS_ERROR_ACCESS_DENIED)
      || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED))
    return CTL_EXIT_NOT_AUTHORIZED;
  return CTL_EXIT_FAILURE;
}

static gboolean
name_is (const char *remote, const GError *error, const char *name, GQuark domain, int code)
{
  return (remote != NULL && g_str_equal (remote, name)) || g_error_matches (error, domain, code);
}

int
ctl_report (const GError *error, const char *what)
{
  return ctl_report_details (error, what, NULL);
}

int
ctl_report_details (const GError *error, const char *what, GVariant *details)
{
  /* only errors that came over the bus: a P11C_ERROR made here has a D-Bus
   * name too (the domain is registered), but its message is ours */
  g_autofree char *remote = g_dbus_error_is_remote_error (error) ? g_dbus_error_get_remote_error (error) : NULL;
  g_autoptr(GError) copy = g_error_copy (error);
  g_autofree char *text = NULL;

  g_dbus_error_strip_remote_error (copy);
  if (name_is (remote, error, "org.freedesktop.DBus.Error.ServiceUnknown", G_DBUS_ERROR, G_DBUS_ERROR_SERVICE_UNKNOWN)
      || name_is (remote, error, "org.freedesktop.DBus.Error.NameHasNoOwner", G_DBUS_ERROR,
                  G_DBUS_ERROR_NAME_HAS_NO_OWNER))
    {
      ctl_warn ("%s", _("p11certd is not running (or not reachable on this bus)"));
      return CTL_EXIT_FAILURE;
    }
  if (name_is (remote, error, "org.freedesktop.DBus.Error.UnknownMethod", G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD))
    /* TRANSLATORS: %s is the bus's English message, for an administrator */
    text = g_strdup_printf (_("this p11certd does not support that (%s); is the daemon older than p11certctl?"),
                            copy->message);
  else if (name_is (remote, error, "org.freedesktop.DBus.Error.NoReply", G_DBUS_ERROR, G_DBUS_ERROR_NO_REPLY)
           || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT))
    text = g_strdup_printf (_("p11certd did not answer in time (%s)"), copy->message);
  else if (name_is (remote, error, "org.freedesktop.DBus.Error.AccessDenied", G_DBUS_ERROR,
                    G_DBUS_ERROR_ACCESS_DENIED))
    text = g_strdup_printf (_("not allowed by the bus policy: %s"), copy->message);
  else if (remote != NULL)
    /* the daemon's English message is never shown as the explanation */
    text = ctl_error_text (remote, details, copy->message);
  else
    /* the client's own errors are written in the user's language */
    text = g_strdup (copy->message);
  if (what != NULL)
    /* TRANSLATORS: %1$s says what failed ("Cannot delete"), %2$s why */
    ctl_warn (_("%1$s: %2$s"), what, text);
  else
    ctl_warn ("%s", text);
  return ctl_exit_code (error);
}
