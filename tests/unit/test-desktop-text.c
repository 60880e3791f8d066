/* The desktop app's words (desktop/p11d-text.c): errors explained from their
 * D-Bus names, the PIN rules as a person reads them (a Cyrillic letter is not
 * a Latin one), the token's PIN state, expiry with Russian plurals. */
#include <locale.h>
#include <stdlib.h>

#include "p11c-i18n.h"
#include "p11d-text.h"

static void
test_errors (void)
{
  g_autofree char *denied = p11d_error_text_for_name ("org.p11certd.Error.NotAuthorized");
  g_autofree char *otp = p11d_error_text_for_name ("org.p11certd.Error.CaRejected");
  g_autofree char *gone = p11d_error_text_for_name ("org.freedesktop.DBus.Error.ServiceUnknown");
  g_autofree char *other = p11d_error_text_for_name ("org.example.Unheard");
  g_autoptr(GError) remote = g_dbus_error_new_for_dbus_error ("org.p11certd.Error.PinIncorrect",
                                                                "some English text the app never reads");
  g_autofree char *pin = p11d_error_text (remote);

  g_assert_cmpstr (denied, ==, "You are not allowed to do this on this computer. Ask your administrator.");
  g_assert_cmpstr (otp, ==, "The certificate authority did not accept the login or the one-time password.");
  g_assert_cmpstr (gone, ==, "The token service is not running.");
  g_assert_cmpstr (other, ==, "Something went wrong.");
  g_assert_cmpstr (p11d_error_name (remote), ==, "org.p11certd.Error.PinIncorrect");
  g_assert_cmpstr (pin, ==, "The token password is wrong.");
}

static GVariant *
policy (void)
{
  return g_variant_ref_sink (g_variant_new_parsed ("{'min_length': <uint32 8>, 'max_length': <uint32 64>, "
                                                   "'require_digit': <true>, 'require_upper': <true>, "
                                                   "'require_lower': <true>}"));
}

static void
test_rules (void)
{
  g_autoptr(GVariant) p = policy ();
  g_autoptr(GPtrArray) good = p11d_policy_rules (p, "Passw0rdA");
  g_autoptr(GPtrArray) weak = p11d_policy_rules (p, "weak");
  g_autoptr(GPtrArray) cyr = p11d_policy_rules (p, "Пароль12345A");   /* lower-case only Cyrillic */
  g_autofree char *weak_text = NULL, *cyr_text = NULL;

  g_assert_cmpuint (good->len, ==, 4);
  g_assert_cmpuint (p11d_policy_broken (good), ==, 0);
  g_assert_cmpuint (p11d_policy_broken (weak), ==, 3);
  weak_text = p11d_policy_broken_text (weak);
  g_assert_cmpstr (weak_text, ==, "at least 8 characters; digits (0–9); upper-case Latin letters (A–Z)");
  cyr_text = p11d_policy_broken_text (cyr);
  g_assert_cmpstr (cyr_text, ==, "lower-case Latin letters (a–z)");
}

static void
test_pin_state (void)
{
  g_assert_null (p11d_pin_state_text (FALSE, FALSE, FALSE));
  g_assert_cmpstr (p11d_pin_state_text (TRUE, TRUE, FALSE), ==,
                   "Last attempt: one more wrong password will lock the token.");
  g_assert_true (g_str_has_prefix (p11d_pin_state_text (TRUE, TRUE, TRUE), "The token is locked"));
}

static void
test_russian_plurals (void)
{
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  g_autofree char *one = NULL, *two = NULL, *five = NULL, *ago = NULL, *err = NULL;

  if (setlocale (LC_ALL, "ru_RU.UTF-8") == NULL)
    {
      g_test_fail_printf ("the ru_RU.UTF-8 locale is missing (tools/install-deps generates it)");
      return;
    }
  g_setenv ("LANGUAGE", "ru", TRUE);
  g_setenv ("LC_ALL", "ru_RU.UTF-8", TRUE);
  p11c_i18n_init ();
  one = p11d_expiry_text (now + 86400, 1);
  two = p11d_expiry_text (now + 2 * 86400, 2);
  five = p11d_expiry_text (now + 5 * 86400, 5);
  ago = p11d_expiry_text (now - 21 * 86400, -21);
  err = p11d_error_text_for_name ("org.p11certd.Error.NotAuthorized");
  g_assert_true (g_str_has_suffix (one, "(остался 1 день)"));
  g_assert_true (g_str_has_suffix (two, "(осталось 2 дня)"));
  g_assert_true (g_str_has_suffix (five, "(осталось 5 дней)"));
  g_assert_true (g_str_has_suffix (ago, "(21 день назад)"));
  g_assert_cmpstr (err, !=, "You are not allowed to do this on this computer. Ask your administrator.");
  setlocale (LC_ALL, "C.UTF-8");
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "C.UTF-8");
  g_unsetenv ("LANGUAGE");
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/desktop-text/errors", test_errors);
  g_test_add_func ("/desktop-text/rules", test_rules);
  g_test_add_func ("/desktop-text/pin-state", test_pin_state);
  g_test_add_func ("/desktop-text/russian-plurals", test_russian_plurals);
  return g_test_run ();
}
