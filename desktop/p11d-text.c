/* What a person reads (see p11d-text.h). */
#include "p11d-text.h"

#include <string.h>

#include "p11d-client.h"
#include "p11d-i18n.h"

const char *
p11d_error_name (const GError *error)
{
  static GQuark names;
  g_autofree char *name = NULL;

  if (error == NULL)
    return "";
  name = g_dbus_error_get_remote_error (error);
  if (name == NULL)
    return "";
  /* interned: callers keep the pointer */
  names = g_quark_from_string (name);
  return g_quark_to_string (names);
}

char *
p11d_error_text_for_name (const char *n)
{
  static const struct { const char *name; const char *text; } texts[] = {
    { P11D_ERROR_PREFIX "PinIncorrect", N_("The token password is wrong.") },
    { P11D_ERROR_PREFIX "PinLocked", N_("The token is locked: too many wrong passwords were entered. Ask your administrator to unlock it.") },
    { P11D_ERROR_PREFIX "PinPolicy", N_("The new password does not meet the requirements.") },
    { P11D_ERROR_PREFIX "NotAuthorized", N_("You are not allowed to do this on this computer. Ask your administrator.") },
    { P11D_ERROR_PREFIX "TokenNotPresent", N_("The token was removed. Insert it and try again.") },
    { P11D_ERROR_PREFIX "CaUnreachable", N_("The certificate authority cannot be reached. Check the network connection and try again.") },
    { P11D_ERROR_PREFIX "CaRejected", N_("The certificate authority did not accept the login or the one-time password.") },
    { P11D_ERROR_PREFIX "CaBadReply", N_("The certificate authority sent an answer that cannot be understood.") },
    { P11D_ERROR_PREFIX "Cancelled", N_("The operation was cancelled.") },
    { P11D_ERROR_PREFIX "NotFound", N_("The certificate or token was not found. It may have been removed.") },
    { P11D_ERROR_PREFIX "NotSupported", N_("The token or the certificate authority does not support this.") },
    { P11D_ERROR_PREFIX "Busy", N_("The token is busy with another operation. Try again in a moment.") },
    { P11D_ERROR_PREFIX "NoSpace", N_("There is no space left on the token.") },
    { P11D_ERROR_PREFIX "TokenError", N_("The token reported an error.") },
    { P11D_ERROR_PREFIX "InvalidArgs", N_("The request was not complete or not valid.") },
    { "org.freedesktop.DBus.Error.ServiceUnknown", N_("The token service is not running.") },
    { "org.freedesktop.DBus.Error.NameHasNoOwner", N_("The token service is not running.") },
    { "org.freedesktop.DBus.Error.Spawn.ExecFailed", N_("The token service cannot be started.") },
    { "org.freedesktop.DBus.Error.NoReply", N_("The token service did not answer in time.") },
    { "org.freedesktop.DBus.Error.Timeout", N_("The token service did not answer in time.") },
    { "org.freedesktop.DBus.Error.UnknownObject", N_("The token was removed. Insert it and try again.") },
    { "org.freedesktop.DBus.Error.UnknownMethod", N_("The token was removed. Insert it and try again.") },
    { "org.freedesktop.DBus.Error.AccessDenied", N_("You are not allowed to do this on this computer. Ask your administrator.") },
  };
  for (guint i = 0; n != NULL && i < G_N_ELEMENTS (texts); i++)
    if (g_str_equal (n, texts[i].name))
      return g_strdup (_(texts[i].text));
  return g_strdup (_("Something went wrong."));
}

char *
p11d_error_text (const GError *error)
{
  const char *name = p11d_error_name (error);

  if (name[0] == '\0' && error != NULL && error->domain == G_IO_ERROR)
    {
      if (error->code == G_IO_ERROR_NOT_CONNECTED || error->code == G_IO_ERROR_CLOSED)
        return g_strdup (_("The token service cannot be reached."));
      if (error->code == G_IO_ERROR_TIMED_OUT)
        return g_strdup (_("The token service did not answer in time."));
    }
  return p11d_error_text_for_name (name);
}

const char *
p11d_pin_state_text (gboolean count_low, gboolean final_try, gboolean locked)
{
  if (locked)
    return _("The token is locked: too many wrong passwords were entered. Ask your administrator to unlock it.");
  if (final_try)
    return _("Last attempt: one more wrong password will lock the token.");
  if (count_low)
    return _("A wrong password was entered. Few attempts are left before the token locks.");
  return NULL;
}

const char *
p11d_token_pin_text (GVariant *token)
{
  return p11d_pin_state_text (p11d_dict_bool (token, "pin_count_low", FALSE),
                              p11d_dict_bool (token, "pin_final_try", FALSE),
                              p11d_dict_bool (token, "pin_locked", FALSE));
}

char *
p11d_date_text (gint64 t)
{
  g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local (t);
  return dt ? g_date_time_format (dt, "%x") : g_strdup ("?");
}

char *
p11d_datetime_text (gint64 t)
{
  g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local (t);
  return dt ? g_date_time_format (dt, "%x %X") : g_strdup ("?");
}

char *
p11d_expiry_text (gint64 not_after, gint64 days_left)
{
  g_autofree char *date = p11d_date_text (not_after);
  gulong n;

  if (days_left < 0)
    {
      n = (gulong) -days_left;
      /* TRANSLATORS: %s is a date */
      return g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "expired on %s (%lu day ago)",
                                           "expired on %s (%lu days ago)", n), date, n);
    }
  n = (gulong) days_left;
  return g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "valid until %s (%lu day left)",
                                       "valid until %s (%lu days left)", n), date, n);
}

char *
p11d_common_name (const char *dn)
{
  g_auto(GStrv) parts = NULL;

  if (dn == NULL)
    return g_strdup ("");
  parts = g_strsplit (dn, ",", -1);
  for (guint i = 0; parts[i] != NULL; i++)
    {
      const char *p = parts[i];
      while (*p == ' ' || *p == '/')
        p++;
      if (g_ascii_strncasecmp (p, "CN=", 3) == 0)
        return g_strdup (p + 3);
    }
  return g_strdup (dn);
}

static void
rule_free (P11dRule *r)
{
  g_free (r->text);
  g_free (r);
}

static void
add_rule (GPtrArray *a, char *text, gboolean met)
{
  P11dRule *r = g_new0 (P11dRule, 1);
  r->text = text;
  r->met = met;
  g_ptr_array_add (a, r);
}

GPtrArray *
p11d_policy_rules (GVariant *policy, const char *pin)
{
  GPtrArray *a = g_ptr_array_new_with_free_func ((GDestroyNotify) rule_free);
  guint32 min = 0, max = 0;
  gboolean digit = FALSE, upper = FALSE, lower = FALSE;
  gboolean has_digit = FALSE, has_upper = FALSE, has_lower = FALSE;

  pin = pin ? pin : "";
  if (policy != NULL)
    {
      g_variant_lookup (policy, "min_length", "u", &min);
      g_variant_lookup (policy, "max_length", "u", &max);
      g_variant_lookup (policy, "require_digit", "b", &digit);
      g_variant_lookup (policy, "require_upper", "b", &upper);
      g_variant_lookup (policy, "require_lower", "b", &lower);
    }
  for (const char *p = pin; *p; p++)
    {
      has_digit |= g_ascii_isdigit (*p);
      has_upper |= (*p >= 'A' && *p <= 'Z');   /* Latin only: a Cyrillic letter does not count */
      has_lower |= (*p >= 'a' && *p <= 'z');
    }
  if (min > 0)
    add_rule (a, g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "at least %u character", "at least %u characters", min),
                                  min), g_utf8_validate (pin, -1, NULL) && g_utf8_strlen (pin, -1) >= min);
  if (digit)
    add_rule (a, g_strdup (_("digits (0–9)")), has_digit);
  if (upper)
    add_rule (a, g_strdup (_("upper-case Latin letters (A–Z)")), has_upper);
  if (lower)
    add_rule (a, g_strdup (_("lower-case Latin letters (a–z)")), has_lower);
  if (max > 0 && strlen (pin) > max)
    add_rule (a, g_strdup_printf (_("at most %u bytes"), max), FALSE);
  return a;
}

guint
p11d_policy_broken (GPtrArray *rules)
{
  guint n = 0;
  for (guint i = 0; i < rules->len; i++)
    n += !((P11dRule *) rules->pdata[i])->met;
  return n;
}

char *
p11d_policy_broken_text (GPtrArray *rules)
{
  GString *s = g_string_new (NULL);
  for (guint i = 0; i < rules->len; i++)
    {
      P11dRule *r = rules->pdata[i];
      if (!r->met)
        g_string_append_printf (s, "%s%s", s->len ? "; " : "", r->text);
    }
  return g_string_free (s, FALSE);
}
