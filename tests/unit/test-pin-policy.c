#include "p11c-pin-policy.h"
#include "p11c-error.h"
#include "p11c-secret.h"
#include <gio/gio.h>
#include <string.h>

typedef struct {
  const char *pin;
  gboolean    ok;
  const char *mentions[4];   /* substrings the error must name */
} Case;

static const Case cases[] = {
  { "Passw0rdA", TRUE, { NULL } },
  { "Abcdefg1", TRUE, { NULL } },                              /* exactly 8 */
  { "Abcdef1", FALSE, { "7 characters", NULL } },               /* 7: too short */
  { "abcdefg1", FALSE, { "upper-case", NULL } },
  { "ABCDEFG1", FALSE, { "lower-case", NULL } },
  { "Abcdefgh", FALSE, { "digit", NULL } },
  { "12345678", FALSE, { "upper-case", "lower-case", NULL } },
  { "", FALSE, { "0 characters", "digit", "upper-case", "lower-case" } },
  { "short", FALSE, { "5 characters", "digit", "upper-case", NULL } },
  /* Cyrillic letters are not Latin: "Пароль12" has no A-Z / a-z */
  { "Пароль1234", FALSE, { "upper-case", "lower-case", NULL } },
  /* non-Latin letters count as characters for the length */
  { "Пароль1Aa", TRUE, { NULL } },
  { "Ab1ПППП", FALSE, { "7 characters", NULL } },               /* 7 code points, 11 bytes */
  { "Passw0rd\nA", FALSE, { "line break", NULL } },
  { "Pass word 1", TRUE, { NULL } },                            /* spaces allowed */
};

static void
test_table (void)
{
  P11cPinPolicy policy;

  p11c_pin_policy_init_default (&policy);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr(GError) error = NULL;
      gboolean ok = p11c_pin_policy_check (&policy, cases[i].pin, &error);
      g_test_message ("case %zu: \"%s\" → %s", i, cases[i].pin, error ? error->message : "ok");
      g_assert_cmpint (ok, ==, cases[i].ok);
      if (!ok)
        {
          g_assert_error (error, P11C_ERROR, P11C_ERROR_PIN_POLICY);
          for (gsize j = 0; j < 4 && cases[i].mentions[j]; j++)
            g_assert_nonnull (strstr (error->message, cases[i].mentions[j]));
        }
    }
}

static void
test_length_edges (void)
{
  P11cPinPolicy policy;
  char buf[300];

  p11c_pin_policy_init_default (&policy);
  memset (buf, 'a', sizeof buf);
  buf[0] = 'A';
  buf[1] = '1';
  buf[256] = '\0';
  g_assert_true (p11c_pin_policy_check (&policy, buf, NULL));     /* 256 bytes: ok */
  buf[256] = 'a';
  buf[257] = '\0';
  g_assert_false (p11c_pin_policy_check (&policy, buf, NULL));    /* 257: too long */

  policy.min_length = 4;
  policy.require_upper = FALSE;
  g_assert_true (p11c_pin_policy_check (&policy, "ab12", NULL));
  g_assert_false (p11c_pin_policy_check (&policy, "ab1", NULL));
}

static void
test_invalid_utf8 (void)
{
  P11cPinPolicy policy;
  g_autoptr(GError) error = NULL;

  p11c_pin_policy_init_default (&policy);
  g_assert_false (p11c_pin_policy_check (&policy, "Passw0rd\xff", &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_PIN_POLICY);
}

static void
test_secret_check (void)
{
  char big[300];
  g_autoptr(GError) e1 = NULL, e2 = NULL, e3 = NULL;

  memset (big, 'x', sizeof big);
  big[299] = '\0';
  g_assert_true (p11c_secret_check ("1234", "PIN", NULL));
  g_assert_false (p11c_secret_check ("", "PIN", &e1));
  g_assert_error (e1, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
  g_assert_false (p11c_secret_check (big, "PIN", &e2));
  g_assert_nonnull (strstr (e2->message, "too long"));
  g_assert_false (p11c_secret_check ("ab\xc3", "PIN", &e3));
  g_assert_nonnull (strstr (e3->message, "UTF-8"));
}

static void
test_variant (void)
{
  P11cPinPolicy policy;
  g_autoptr(GVariant) v = NULL;
  guint32 min;
  const char *desc;

  p11c_pin_policy_init_default (&policy);
  v = g_variant_ref_sink (p11c_pin_policy_to_variant (&policy));
  g_assert_true (g_variant_lookup (v, "min_length", "u", &min));
  g_assert_cmpuint (min, ==, 8);
  g_assert_true (g_variant_lookup (v, "description", "&s", &desc));
  g_assert_nonnull (strstr (desc, "digit"));
  g_clear_pointer (&v, g_variant_unref);

  /* round trip, as p11certctl reads the PinPolicy property */
  {
    P11cPinPolicy in = { .min_length = 5, .max_length = 40, .require_digit = FALSE, .require_upper = TRUE,
                         .require_lower = TRUE };
    P11cPinPolicy out;
    g_autoptr(GVariant) nd = g_variant_ref_sink (g_variant_new_string ("not a dictionary"));
    v = g_variant_ref_sink (p11c_pin_policy_to_variant (&in));
    g_assert_true (p11c_pin_policy_from_variant (v, &out));
    g_assert_cmpuint (out.min_length, ==, 5);
    g_assert_cmpuint (out.max_length, ==, 40);
    g_assert_false (out.require_digit);
    g_assert_true (out.require_upper && out.require_lower);
    g_assert_false (p11c_pin_policy_from_variant (nd, &out));
    g_assert_cmpuint (out.min_length, ==, 8);   /* the defaults */
  }
}

/* the rule ids clients translate from (CheckPin, the "broken" detail) */
static void
test_broken_ids (void)
{
  P11cPinPolicy policy;
  static const struct { const char *pin; const char *broken; guint chars; } cases[] = {
    { "N3wPassw0rd", "", 11 },
    { "abc", "min_length,digit,upper", 3 },
    { "пароль12345", "upper,lower", 11 },            /* Cyrillic letters are not Latin */
    { "ПАРОЛЬ12345a", "upper", 12 },
    { "Abcdefgh", "digit", 8 },
    { "Abcdefg1\n", "line_break", 9 },
  };

  p11c_pin_policy_init_default (&policy);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      guint chars;
      g_auto(GStrv) broken = p11c_pin_policy_broken (&policy, cases[i].pin, &chars);
      g_autofree char *joined = g_strjoinv (",", broken);
      g_assert_cmpstr (joined, ==, cases[i].broken);
      g_assert_cmpuint (chars, ==, cases[i].chars);
    }
}

/* details ride on the error through copies and prefixes (the daemon prefixes
 * the token's state and hands copies to jobs) */
static void
test_error_details (void)
{
  P11cPinPolicy policy;
  g_autoptr(GError) error = NULL;
  g_autoptr(GError) copy = NULL;
  g_autoptr(GVariant) details = NULL;
  g_autoptr(GVariant) other = NULL;
  g_autoptr(GError) plain = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_FAILED, "x");
  g_autofree const char **broken = NULL;
  guint32 length;

  p11c_pin_policy_init_default (&policy);
  g_assert_false (p11c_pin_policy_check (&policy, "пароль12345", &error));
  g_prefix_error (&error, "prefix: ");
  copy = g_error_copy (error);
  p11c_error_set_detail (copy, "extra", g_variant_new_boolean (TRUE));
  details = g_variant_ref_sink (p11c_error_get_details (copy));
  g_assert_true (g_variant_lookup (details, "broken", "^a&s", &broken));
  g_assert_cmpuint (g_strv_length ((char **) broken), ==, 2);
  g_assert_cmpstr (broken[0], ==, "upper");
  g_assert_cmpstr (broken[1], ==, "lower");
  g_assert_true (g_variant_lookup (details, "length", "u", &length));
  g_assert_cmpuint (length, ==, 11);
  /* copy on write: the original does not see the copy's new key */
  other = g_variant_ref_sink (p11c_error_get_details (error));
  g_assert_false (g_variant_lookup (other, "extra", "b", NULL));
  g_assert_true (g_variant_lookup (details, "extra", "b", NULL));
  /* other domains carry nothing, and converting one gives a clean P11C_ERROR */
  p11c_error_set_detail (plain, "x", g_variant_new_boolean (TRUE));
  g_clear_pointer (&other, g_variant_unref);
  other = g_variant_ref_sink (p11c_error_get_details (plain));
  g_assert_cmpuint (g_variant_n_children (other), ==, 0);
  p11c_error_convert (&plain);
  g_assert_error (plain, P11C_ERROR, P11C_ERROR_FAILED);
  g_assert_cmpstr (plain->message, ==, "x");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/pin-policy/table", test_table);
  g_test_add_func ("/pin-policy/length-edges", test_length_edges);
  g_test_add_func ("/pin-policy/invalid-utf8", test_invalid_utf8);
  g_test_add_func ("/pin-policy/secret-check", test_secret_check);
  g_test_add_func ("/pin-policy/variant", test_variant);
  g_test_add_func ("/pin-policy/broken-ids", test_broken_ids);
  g_test_add_func ("/pin-policy/error-details", test_error_details);
  return g_test_run ();
}
