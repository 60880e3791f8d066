#pragma once
/* The built-in "local" CA: an EC P-256 CA key kept in the state directory,
 * created on first use, that signs requests with no server at all. */
#include <glib.h>
#include "p11c-openssl.h"

G_BEGIN_DECLS

/* The CA's certificate in @dir; P11C_ERROR_NOT_FOUND when the CA was not
 * created yet (reading never creates it). */
X509 *p11c_local_ca_certificate (const char *dir, GError **error);
/* Issue a clientAuth certificate for @req (its subject and key) valid
 * @days days.  With @create, a CA that does not exist yet is made (an
 * enrollment: the caller checked the right to issue from the local CA, in
 * the bus face's authorization); a renewal passes FALSE and gets
 * P11C_ERROR_NOT_FOUND instead. */
X509 *p11c_local_ca_issue (const char *dir, X509_REQ *req, guint days, gboolean create, GError **error);

G_END_DECLS
