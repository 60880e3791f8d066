/* fuzz-cert: certificate summaries (ListCerts) from DER read off a token,
 * a file or a CA reply: p11c_cert_summary_from_der on the raw bytes. */
#include "fuzz-common.h"
#include "p11c-cert.h"
#include "p11c-renewal.h"

P11C_FUZZ_INITIALIZE

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cCertSummary) s = p11c_cert_summary_from_der (data, size, &error);
  gint64 days_left = 0;

  if (s == NULL)
    {
      P11C_FUZZ_ASSERT (error != NULL);
      return 0;
    }
  P11C_FUZZ_ASSERT (error == NULL);
  P11C_FUZZ_ASSERT (s->subject && s->issuer && s->serial && s->sha256 && s->key_type);
  /* every string goes out on D-Bus as "s": it must be valid UTF-8 */
  P11C_FUZZ_ASSERT (g_utf8_validate (s->subject, -1, NULL));
  P11C_FUZZ_ASSERT (g_utf8_validate (s->issuer, -1, NULL));
  P11C_FUZZ_ASSERT (g_utf8_validate (s->serial, -1, NULL));
  P11C_FUZZ_ASSERT (g_utf8_validate (s->key_type, -1, NULL));
  P11C_FUZZ_ASSERT (strlen (s->sha256) == 64);
  (void) p11c_renewal_due (s->not_before, s->not_after, 1700000000, 30, &days_left);
  return 0;
}
