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

/* Proof of possession: a private key on the token, with CKA_ID @id, signs a
 * fresh random challenge (in @s, logged in; @pin for keys that want it per
 * signature), and the signature verifies with @cert's public key.  Returns
 * the key, or 0 with NotAuthorized saying the certificate's private key is
 * not on this token (a copy of someone else's certificate), or the token's
 * own error (PIN, token removed). */
CK_OBJECT_HANDLE p11c_token_prove_key (P11cSession *s, GBytes *id, X509 *cert, const char *pin,
                                       GError **error);

/* RSA PKCS#1 v1.5 decryption (C_Decrypt, CKM_RSA_PKCS) with the private
 * key behind @pkey (an RSA key from p11c_token_key_new): the plaintext,
 * or NULL with the token's error.  For SCEP, whose CA
 * encrypts its reply's content key to the requester's key. */
GBytes *p11c_token_key_decrypt (EVP_PKEY *pkey, const guint8 *in, gsize in_len, GError **error);

G_END_DECLS
