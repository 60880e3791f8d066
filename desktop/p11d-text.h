#pragma once
/* What a person reads: errors from their D-Bus names (never from the
 * daemon's English message), the token's PIN state, expiry, the PIN policy's
 * rules.  Every string is translated. */
#include <gio/gio.h>

G_BEGIN_DECLS

/* The error's D-Bus name ("" for a local error) */
const char *p11d_error_name (const GError *error);
/* Plain words for a failed call, from the error's D-Bus name */
char *p11d_error_text (const GError *error);
char *p11d_error_text_for_name (const char *dbus_error_name);

/* The token's PIN state as a warning (NULL when all is well) */
const char *p11d_pin_state_text (gboolean count_low, gboolean final_try, gboolean locked);
const char *p11d_token_pin_text (GVariant *token);

/* "valid until 3 March 2027 (120 days left)" / "expired 3 days ago" */
char *p11d_expiry_text (gint64 not_after, gint64 days_left);
char *p11d_date_text (gint64 unix_time);
char *p11d_datetime_text (gint64 unix_time);

/* The CN of a DN string ("CN=Agent 42,O=Org" -> "Agent 42"), or the DN */
char *p11d_common_name (const char *dn);

/* The PIN policy's rules, each with whether @pin meets it.  Returns the
 * number of rules broken; @rules (optional) gets "✓ rule" / "✗ rule" lines. */
typedef struct {
  char    *text;   /* the rule, translated */
  gboolean met;
} P11dRule;
GPtrArray *p11d_policy_rules (GVariant *policy, const char *pin);   /* of P11dRule* */
guint p11d_policy_broken (GPtrArray *rules);
/* "At least 8 characters; digits" — the broken rules joined */
char *p11d_policy_broken_text (GPtrArray *rules);

G_END_DECLS
