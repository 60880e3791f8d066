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

/* Rule ids (stable, on D-Bus: CheckPin's broken, a PinPolicy error's
 * "broken" detail); clients show their own words for each. */
#define P11C_PIN_RULE_MIN_LENGTH "min_length"  /* fewer characters than min_length */
#define P11C_PIN_RULE_MAX_LENGTH "max_length"  /* more bytes than max_length */
#define P11C_PIN_RULE_DIGIT      "digit"       /* no digit 0-9 */
#define P11C_PIN_RULE_UPPER      "upper"       /* no upper-case Latin letter A-Z */
#define P11C_PIN_RULE_LOWER      "lower"       /* no lower-case Latin letter a-z */
#define P11C_PIN_RULE_LINE_BREAK "line_break"  /* contains CR or LF */
#define P11C_PIN_RULE_UTF8       "utf8"        /* not valid UTF-8 (alone) */
#define P11C_PIN_RULE_TOKEN      "token"       /* the token's own rules refused it */
#define P11C_PIN_RULE_EXPIRED    "expired"     /* the token says the PIN has expired */

/* The rules @pin breaks, as rule ids (empty when it meets the policy); the
 * length in characters in @n_chars. Free with g_strfreev. */
char **p11c_pin_policy_broken (const P11cPinPolicy *policy, const char *pin, guint *n_chars);

/* Returns TRUE when @pin satisfies @policy; otherwise sets
 * P11C_ERROR_PIN_POLICY with a message naming every broken rule and the
 * details broken as (rule ids), length u, min_length u, max_length u. */
gboolean p11c_pin_policy_check (const P11cPinPolicy *policy,
                                const char          *pin,
                                GError             **error);

/* a{sv}: min_length u, require_digit b, require_upper b, require_lower b,
 * description s */
GVariant *p11c_pin_policy_to_variant (const P11cPinPolicy *policy);
/* The reverse (the Manager's PinPolicy property): the fields present in
 * @dict over the defaults; FALSE (defaults) when it is not an a{sv} */
gboolean p11c_pin_policy_from_variant (GVariant *dict, P11cPinPolicy *policy);
char *p11c_pin_policy_describe (const P11cPinPolicy *policy);

G_END_DECLS
