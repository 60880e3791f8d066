#pragma once
/* An OpenSSL private key whose signatures are made by the token (C_Sign on
 * the private key with a given CKA_ID), for TLS client authentication with
 * a certificate whose key never leaves the token.  Each signature opens a
 * session and logs in with the PIN (already verified by the caller) through
 * p11c_token_login, under the token's op_lock. */
#include "p11c-engine.h"

G_BEGIN_DECLS

EVP_PKEY *p11c_token_key_new (P11cToken *token, const char *pin, GBytes *id,
                              EVP_PKEY *pub, GError **error);
/* TRUE, with the error moved to @error, when a signature through @pkey (a
 * key from p11c_token_key_new) failed on the token since the last call — the
 * TLS failure that followed is then the token's (wrong PIN, token removed),
 * not the CA's, and is not retried.  FALSE for any other key. */
gboolean p11c_token_key_take_error (EVP_PKEY *pkey, GError **error);

G_END_DECLS
