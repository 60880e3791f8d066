#pragma once
#include <glib.h>

/* A journal entry with a stable MESSAGE_ID and the certificate/token
 * fields (P11C_TOKEN, P11C_CERT_SHA256, P11C_SUBJECT, P11C_NOT_AFTER).
 * Never pass secrets here. */
void p11c_log_event (GLogLevelFlags level, const char *message_id,
                     const char *token, const char *sha256,
                     const char *subject, gint64 not_after,
                     const char *format, ...) G_GNUC_PRINTF (7, 8);
