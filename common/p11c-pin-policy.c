#define G_LOG_DOMAIN "p11c-pin-policy"
#include "p11c-pin-policy.h"
#include "p11c-error.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include <string.h>

void
p11c_pin_policy_init_default (P11cPinPolicy *policy)
{
  policy->min_length = 8;
  policy->max_length = P11C_SECRET_MAX;
  policy->require_digit = TRUE;
  policy->require_upper = TRUE;
  policy->require_lower = TRUE;
}

char *
p11c_pin_policy_describe (const P11cPinPolicy *policy)
{
  g_autoptr(GPtrArray) parts = g_ptr_array_new ();
  g_autofree char *len = g_strdup_printf ("at least %u characters", policy->min_length);

  g_ptr_array_add (parts, len);
  if (policy->require_digit)
    g_ptr_array_add (parts, "a digit (0-9)");
  if (policy->require_upper)
    g_ptr_array_add (parts, "an upper-case Latin letter (A-Z)");
  if (policy->require_lower)
    g_ptr_array_add (parts, "a lower-case Latin letter (a-z)");
  g_ptr_array_add (parts, NULL);
  return g_strjoinv (", ", (char **) parts->pdata);
}

char **
p11c_pin_policy_broken (const P11cPinPolicy *policy, const char *pin, guint *n_chars)
{
  g_autoptr(GPtrArray) broken = g_ptr_array_new ();
  gboolean digit = FALSE, upper = FALSE, lower = FALSE;
  gsize max = policy->max_length ? policy->max_length : P11C_SECRET_MAX;
  glong chars;

  if (n_chars != NULL)
    *n_chars = 0;
  if (pin == NULL || !g_utf8_validate (pin, -1, NULL))
    {
      g_ptr_array_add (broken, g_strdup (P11C_PIN_RULE_UTF8));
      g_ptr_array_add (broken, NULL);
      return (char **) g_ptr_array_free (g_steal_pointer (&broken), FALSE);
    }
  /* ASCII only: a Cyrillic letter is not a Latin one */
  for (const char *p = pin; *p; p++)
    {
      digit |= (*p >= '0' && *p <= '9');
      upper |= (*p >= 'A' && *p <= 'Z');
      lower |= (*p >= 'a' && *p <= 'z');
    }
  chars = g_utf8_strlen (pin, -1);
  if (n_chars != NULL)
    *n_chars = (guint) chars;
  if ((guint) chars < policy->min_length)
    g_ptr_array_add (broken, g_strdup (P11C_PIN_RULE_MIN_LENGTH));
  if (strlen (pin) > max)
    g_ptr_array_add (broken, g_strdup (P11C_PIN_RULE_MAX_LENGTH));
  if (policy->require_digit && !digit)
    g_ptr_array_add (broken, g_strdup (P11C_PIN_RULE_DIGIT));
  if (policy->require_upper && !upper)
    g_ptr_array_add (broken, g_strdup (P11C_PIN_RULE_UPPER));
  if (policy->require_lower && !lower)
    g_ptr_array_add (broken, g_strdup (P11C_PIN_RULE_LOWER));
  if (strpbrk (pin, "\r\n") != NULL)
    g_ptr_array_add (broken, g_strdup (P11C_PIN_RULE_LINE_BREAK));
  g_ptr_array_add (broken, NULL);
  return (char **) g_ptr_array_free (g_steal_pointer (&broken), FALSE);
}

static const char *
rule_text (const char *rule)
{
  if (g_str_equal (rule, P11C_PIN_RULE_DIGIT))
    return "it has no digit (0-9)";
  if (g_str_equal (rule, P11C_PIN_RULE_UPPER))
    return "it has no upper-case Latin letter (A-Z)";
  if (g_str_equal (rule, P11C_PIN_RULE_LOWER))
    return "it has no lower-case Latin letter (a-z)";
  if (g_str_equal (rule, P11C_PIN_RULE_LINE_BREAK))
    return "it contains a line break";
  return NULL;
}

gboolean
p11c_pin_policy_check (const P11cPinPolicy *policy, const char *pin, GError **error)
{
  guint chars;
  g_auto(GStrv) broken = p11c_pin_policy_broken (policy, pin, &chars);
  g_autoptr(GPtrArray) texts = g_ptr_array_new_with_free_func (g_free);
  gsize max = policy->max_length ? policy->max_length : P11C_SECRET_MAX;
  GError *e;

  if (broken[0] == NULL)
    return TRUE;
  if (g_str_equal (broken[0], P11C_PIN_RULE_UTF8))
    e = g_error_new_literal (P11C_ERROR, P11C_ERROR_PIN_POLICY, "The password is not valid UTF-8 text");
  else
    {
      g_autofree char *list = NULL;
      g_autofree char *rule = p11c_pin_policy_describe (policy);
      for (guint i = 0; broken[i]; i++)
        {
          if (g_str_equal (broken[i], P11C_PIN_RULE_MIN_LENGTH))
            g_ptr_array_add (texts, g_strdup_printf ("it has %u characters, at least %u are required",
                                                     chars, policy->min_length));
          else if (g_str_equal (broken[i], P11C_PIN_RULE_MAX_LENGTH))
            g_ptr_array_add (texts, g_strdup_printf ("it is longer than %zu bytes", max));
          else
            g_ptr_array_add (texts, g_strdup (rule_text (broken[i])));
        }
      g_ptr_array_add (texts, NULL);
      list = g_strjoinv ("; ", (char **) texts->pdata);
      e = g_error_new (P11C_ERROR, P11C_ERROR_PIN_POLICY,
                       "The new password does not meet the policy: %s. It needs %s.", list, rule);
    }
  p11c_error_set_detail_strv (e, "broken", (const char *const *) broken);
  p11c_error_set_detail_uint (e, "length", chars);
  p11c_error_set_detail_uint (e, "min_length", policy->min_length);
  p11c_error_set_detail_uint (e, "max_length", (guint32) max);
  g_propagate_error (error, e);
  return FALSE;
}

GVariant *
p11c_pin_policy_to_variant (const P11cPinPolicy *policy)
{
  GVariantBuilder b;
  g_autofree char *desc = p11c_pin_policy_describe (policy);

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "min_length", g_variant_new_uint32 (policy->min_length));
  g_variant_builder_add (&b, "{sv}", "max_length",
                         g_variant_new_uint32 (policy->max_length ? policy->max_length : P11C_SECRET_MAX));
  g_variant_builder_add (&b, "{sv}", "require_digit", g_variant_new_boolean (policy->require_digit));
  g_variant_builder_add (&b, "{sv}", "require_upper", g_variant_new_boolean (policy->require_upper));
  g_variant_builder_add (&b, "{sv}", "require_lower", g_variant_new_boolean (policy->require_lower));
  g_variant_builder_add (&b, "{sv}", "description", g_variant_new_string (desc));
  return g_variant_builder_end (&b);
}

gboolean
p11c_pin_policy_from_variant (GVariant *dict, P11cPinPolicy *policy)
{
  guint32 u;

  p11c_pin_policy_init_default (policy);
  if (dict == NULL || !g_variant_is_of_type (dict, G_VARIANT_TYPE_VARDICT))
    return FALSE;
  if (g_variant_lookup (dict, "min_length", "u", &u))
    policy->min_length = u;
  if (g_variant_lookup (dict, "max_length", "u", &u))
    policy->max_length = u;
  g_variant_lookup (dict, "require_digit", "b", &policy->require_digit);
  g_variant_lookup (dict, "require_upper", "b", &policy->require_upper);
  g_variant_lookup (dict, "require_lower", "b", &policy->require_lower);
  return TRUE;
}
