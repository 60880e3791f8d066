/* fuzz-est-headers: HTTP header values from an EST server — Retry-After
 * (p11c_est_parse_retry_after, at several "now"s including the extremes)
 * and Content-Type (p11c_est_content_type_is_pkcs7), on the input as a
 * C string.  Invariants: a parsed Retry-After lies in [1, 86400], and
 * plain digits always parse; an accepted Content-Type names pkcs7-mime. */
#include "fuzz-common.h"
#include "p11c-est.h"

P11C_FUZZ_INITIALIZE

static gboolean
all_digits (const char *s)
{
  g_autofree char *t = g_strstrip (g_strdup (s));

  if (*t == '\0')
    return FALSE;
  for (const char *p = t; *p; p++)
    if (!g_ascii_isdigit (*p))
      return FALSE;
  return TRUE;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const gint64 nows[] = { 0, 1700000000, G_MININT64, G_MAXINT64, -1 };
  g_autofree char *s = p11c_fuzz_strndup (data, size);
  gboolean digits = all_digits (s);

  for (gsize i = 0; i < G_N_ELEMENTS (nows); i++)
    {
      guint secs = 0;
      gboolean ok = p11c_est_parse_retry_after (s, nows[i], &secs);

      if (ok)
        P11C_FUZZ_ASSERT (secs >= 1 && secs <= P11C_EST_MAX_RETRY_AFTER);
      if (digits)
        P11C_FUZZ_ASSERT (ok);
      P11C_FUZZ_ASSERT (ok == p11c_est_parse_retry_after (s, nows[i], NULL));
    }

  if (p11c_est_content_type_is_pkcs7 (s))
    {
      g_autofree char *lower = g_ascii_strdown (s, -1);
      P11C_FUZZ_ASSERT (strstr (lower, "pkcs7-mime") != NULL);
    }
  return 0;
}
