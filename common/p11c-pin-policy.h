#pragma once
#include <glib.h>

G_BEGIN_DECLS

/* The users' password rule: at least 8 characters, with digits, upper-case
 * and lower-case Latin letters.  Every new secret (token PIN, PKCS#12
 * password) is checked with p11c_pin_policy_check(). */
typedef struct {
  guint    min_length;      /* in characters (UTF-8 code points) */
  guint    max_length;      /* in bytes, 0 = P11C_SECRET_MAX */
  gboolean require_digit;
  gboolean require_upper;   /* A-Z */
  gboolean require_lower;   /* a-z */
} P11cPinPolicy;

void p11c_pin_policy_init_default (P11cPinPolicy *policy);

/* Returns TRUE when @pin satisfies @policy; otherwise sets
 * P11C_ERROR_PIN_POLICY with a message naming every broken rule. */
gboolean p11c_pin_policy_check (const P11cPinPolicy *policy,
                                const char          *pin,
                                GError             **error);

/* a{sv}: min_length u, require_digit b, require_upper b, require_lower b,
 * description s */
GVariant *p11c_pin_policy_to_variant (const P11cPinPolicy *policy);
char *p11c_pin_policy_describe (const P11cPinPolicy *policy);

G_END_DECLS
