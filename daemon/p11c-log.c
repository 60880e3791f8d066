#define G_LOG_DOMAIN "p11certd"
#include "p11c-log.h"

void
p11c_log_event (GLogLevelFlags level, const char *message_id, const char *token,
                const char *sha256, const char *subject, gint64 not_after,
                const char *format, ...)
{
  g_autofree char *message = NULL;
  g_autofree char *expiry = not_after > 0 ? g_strdup_printf ("%" G_GINT64_FORMAT, not_after) : NULL;
  GLogField fields[8];
  gsize n = 0;
  va_list ap;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);

  fields[n++] = (GLogField) { "MESSAGE", message, -1 };
  fields[n++] = (GLogField) { "GLIB_DOMAIN", G_LOG_DOMAIN, -1 };
  if (message_id)
    fields[n++] = (GLogField) { "MESSAGE_ID", message_id, -1 };
  if (token)
    fields[n++] = (GLogField) { "P11C_TOKEN", token, -1 };
  if (sha256)
    fields[n++] = (GLogField) { "P11C_CERT_SHA256", sha256, -1 };
  if (subject)
    fields[n++] = (GLogField) { "P11C_SUBJECT", subject, -1 };
  if (expiry)
    fields[n++] = (GLogField) { "P11C_NOT_AFTER", expiry, -1 };
  g_log_structured_array (level, fields, n);
}
