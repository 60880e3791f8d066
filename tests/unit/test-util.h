#pragma once
/* Helpers shared by the GTest unit tests. */
#include <glib.h>
#include "p11c-openssl.h"

G_BEGIN_DECLS

/* A self-signed certificate "CN=@cn,O=Shop, Ltd" valid from @not_before to
 * @not_after, for a new key: @curve_or_rsa "P-256", "P-384" or "rsa".  The
 * key is returned in @key_out when it is not NULL. */
X509 *p11c_test_make_cert (const char *cn, gint64 not_before, gint64 not_after, const char *curve_or_rsa,
                           EVP_PKEY **key_out);

/* A new empty directory under the temporary directory, removed (with what
 * is in it) by p11c_test_rmtree. */
char *p11c_test_mkdtemp (void);
void p11c_test_rmtree (const char *dir);

G_END_DECLS
