/* The legacy EC_KEY_METHOD / RSA_METHOD hooks are the one way in OpenSSL 3
 * to give libssl a key whose private operation happens elsewhere without a
 * provider; they are deprecated but supported in 3.x. */
#undef OPENSSL_API_COMPAT
#define OPENSSL_API_COMPAT 10101
#define G_LOG_DOMAIN "p11c-tokenkey"
#include "p11c-tokenkey.h"
#include "p11c-error.h"
#include "p11c-secret.h"
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include "p11c-cert.h"
#include <string.h>

typedef struct {
  P11cToken *token;
  char      *pin;
  GBytes    *id;
  GError    *error;   /* the first failure of a signature on the token */
} TokenKey;

static int ex_index = -1;
static int ex_index_rsa = -1;
static EC_KEY_METHOD *ec_method;
static RSA_METHOD *rsa_method;

static void
token_key_free (void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
  TokenKey *k = ptr;
  if (k == NULL)
    return;
  p11c_token_unref (k->token);
  p11c_secret_free (k->pin);
  g_bytes_unref (k->id);
  g_clear_error (&k->error);
  g_free (k);
}

/* A logged-in session and the private key's handle; under op_lock. */
static P11cSession *
key_session (TokenKey *k, CK_OBJECT_HANDLE *priv, GError **error)
{
  g_autoptr(P11cSession) s = p11c_token_open_session (k->token, FALSE, error);
  g_autoptr(GArray) keys = NULL;

  if (s == NULL || !p11c_token_login (k->token, s, k->pin, P11C_LOGIN_AUTOMATIC, error))
    return NULL;
  keys = p11c_session_find (s, CKO_PRIVATE_KEY, k->id, NULL, error);
  if (keys == NULL || keys->len == 0)
    {
      if (error != NULL && *error == NULL)
        g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND, "The certificate's private key is not on the token");
      return NULL;
    }
  *priv = g_array_index (keys, CK_OBJECT_HANDLE, 0);
  return g_steal_pointer (&s);
}

/* Sign @in with @mech on the token; returns the raw signature, which must
 * be @expect bytes long (the token's output is not trusted to fit). */
static GBytes *
token_sign_raw (TokenKey *k, CK_MECHANISM_TYPE mech, const guint8 *in, gsize in_len, gsize expect)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cSession) s = NULL;
  g_autofree guint8 *sig = NULL;
  CK_MECHANISM m = { mech, NULL, 0 };
  CK_OBJECT_HANDLE priv = 0;
  CK_ULONG len = 0, room;
  GBytes *out = NULL;

  p11c_token_lock_operations (k->token);
  s = key_session (k, &priv, &error);
  if (s == NULL)
    goto done;
  if (!p11c_session_sign_init (s, &m, priv, k->pin, &error)
      || !p11c_ckr_check (s->f->C_Sign (s->handle, (guint8 *) in, in_len, NULL, &len), "sign", &error)
      || len == 0 || len > 4096)
    goto done;
  sig = g_malloc0 (room = len);
  if (!p11c_ckr_check (s->f->C_Sign (s->handle, (guint8 *) in, in_len, sig, &len), "sign", &error)
      || !p11c_check_reported (len, room, "sign (the signature's length)", &error))
    goto done;
  if (len != expect)
    {
      g_set_error (&error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR, "The token returned a %lu-byte signature "
                   "where %" G_GSIZE_FORMAT " bytes were expected", (unsigned long) len, expect);
      goto done;
    }
  out = g_bytes_new (sig, len);
done:
  g_clear_pointer (&s, p11c_session_close);
  p11c_token_unlock_operations (k->token);
  if (out == NULL)
    {
      if (error == NULL)
        g_set_error (&error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
                     "The certificate's private key is not on the token");
      g_warning ("TLS client signature on the token failed: %s", error->message);
      if (k->error == NULL)
        k->error = g_steal_pointer (&error);
    }
  return out;
}

static ECDSA_SIG *
ec_sign_sig (const unsigned char *dgst, int dlen, const BIGNUM *kinv, const BIGNUM *r, EC_KEY *ec)
{
  TokenKey *k = EC_KEY_get_ex_data (ec, ex_index);
  /* CKM_ECDSA gives r | s, each as long as the curve's order */
  gsize half = (gsize) (EC_GROUP_order_bits (EC_KEY_get0_group (ec)) + 7) / 8;
  g_autoptr(GBytes) raw = k ? token_sign_raw (k, CKM_ECDSA, dgst, dlen, 2 * half) : NULL;
  ECDSA_SIG *sig;
  gsize len;
  const guint8 *p;

  if (raw == NULL)
    return NULL;
  p = g_bytes_get_data (raw, &len);
  sig = ECDSA_SIG_new ();
  ECDSA_SIG_set0 (sig, BN_bin2bn (p, len / 2, NULL), BN_bin2bn (p + len / 2, len / 2, NULL));
  return sig;
}

static int
ec_sign (int type, const unsigned char *dgst, int dlen, unsigned char *out, unsigned int *outlen,
         const BIGNUM *kinv, const BIGNUM *r, EC_KEY *ec)
{
  ECDSA_SIG *sig = ec_sign_sig (dgst, dlen, kinv, r, ec);
  unsigned char *p = out;
  int n;

  if (sig == NULL)
    return 0;
  /* out has room for ECDSA_size (ec) bytes */
  if (i2d_ECDSA_SIG (sig, NULL) > ECDSA_size (ec))
    {
      ECDSA_SIG_free (sig);
      return 0;
    }
  n = i2d_ECDSA_SIG (sig, &p);
  ECDSA_SIG_free (sig);
  if (n <= 0)
    return 0;
  *outlen = n;
  return 1;
}

static int
rsa_priv_enc (int flen, const unsigned char *from, unsigned char *to, RSA *rsa, int padding)
{
  TokenKey *k = RSA_get_ex_data (rsa, ex_index_rsa);
  g_autoptr(GBytes) raw = NULL;
  gsize len;

  if (k == NULL)
    return -1;
  /* PKCS#1 v1.5 (TLS 1.2) → CKM_RSA_PKCS; PSS padded by OpenSSL (TLS 1.3)
   * → raw CKM_RSA_X_509, which some tokens lack. */
  if (padding == RSA_PKCS1_PADDING)
    raw = token_sign_raw (k, CKM_RSA_PKCS, from, flen, RSA_size (rsa));
  else if (padding == RSA_NO_PADDING)
    raw = token_sign_raw (k, CKM_RSA_X_509, from, flen, RSA_size (rsa));
  if (raw == NULL)
    return -1;
  len = g_bytes_get_size (raw);
  memcpy (to, g_bytes_get_data (raw, NULL), len);
  return (int) len;
}

static void
init_methods (void)
{
  static gsize once = 0;
  if (g_once_init_enter (&once))
    {
      ex_index = EC_KEY_get_ex_new_index (0, NULL, NULL, NULL, token_key_free);
      ex_index_rsa = RSA_get_ex_new_index (0, NULL, NULL, NULL, token_key_free);
      ec_method = EC_KEY_METHOD_new (EC_KEY_get_default_method ());
      EC_KEY_METHOD_set_sign (ec_method, ec_sign, NULL, ec_sign_sig);
      rsa_method = RSA_meth_dup (RSA_get_default_method ());
      RSA_meth_set1_name (rsa_method, "p11certd token key");
      RSA_meth_set_priv_enc (rsa_method, rsa_priv_enc);
      g_once_init_leave (&once, 1);
    }
}

EVP_PKEY *
p11c_token_key_new (P11cToken *token, const char *pin, GBytes *id, EVP_PKEY *pub, GError **error)
{
  TokenKey *k;
  EVP_PKEY *pkey = EVP_PKEY_new ();

  init_methods ();
  k = g_new0 (TokenKey, 1);
  k->token = p11c_token_ref (token);
  k->pin = g_strdup (pin);
  k->id = g_bytes_ref (id);

  /* Once set as ex_data, k belongs to the key copy (freed with it by
   * token_key_free); once assigned, the copy belongs to pkey. */
  if (EVP_PKEY_get_base_id (pub) == EVP_PKEY_EC)
    {
      EC_KEY *ec = EVP_PKEY_get1_EC_KEY (pub);
      EC_KEY *copy = ec ? EC_KEY_dup (ec) : NULL;
      EC_KEY_free (ec);
      if (copy == NULL || !EC_KEY_set_method (copy, ec_method) || !EC_KEY_set_ex_data (copy, ex_index, k))
        {
          EC_KEY_free (copy);
          goto fail;
        }
      k = NULL;
      if (!EVP_PKEY_assign_EC_KEY (pkey, copy))
        {
          EC_KEY_free (copy);
          goto fail;
        }
    }
  else if (EVP_PKEY_get_base_id (pub) == EVP_PKEY_RSA)
    {
      RSA *rsa = EVP_PKEY_get1_RSA (pub);
      RSA *copy = rsa ? RSAPublicKey_dup (rsa) : NULL;
      RSA_free (rsa);
      if (copy == NULL || !RSA_set_method (copy, rsa_method) || !RSA_set_ex_data (copy, ex_index_rsa, k))
        {
          RSA_free (copy);
          goto fail;
        }
      k = NULL;
      if (!EVP_PKEY_assign_RSA (pkey, copy))
        {
          RSA_free (copy);
          goto fail;
        }
    }
  else
    goto fail;
  return pkey;

fail:
  token_key_free (NULL, k, NULL, 0, 0, NULL);
  EVP_PKEY_free (pkey);
  g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_SUPPORTED,
               "Cannot use this token key for TLS client authentication");
  return NULL;
}

gboolean
p11c_token_key_take_error (EVP_PKEY *pkey, GError **error)
{
  TokenKey *k = NULL;

  if (pkey == NULL)
    return FALSE;
  if (EVP_PKEY_get_base_id (pkey) == EVP_PKEY_EC)
    {
      const EC_KEY *ec = EVP_PKEY_get0_EC_KEY (pkey);
      k = ec && ex_index >= 0 ? EC_KEY_get_ex_data (ec, ex_index) : NULL;
    }
  else if (EVP_PKEY_get_base_id (pkey) == EVP_PKEY_RSA)
    {
      const RSA *rsa = EVP_PKEY_get0_RSA (pkey);
      k = rsa && ex_index_rsa >= 0 ? RSA_get_ex_data (rsa, ex_index_rsa) : NULL;
    }
  if (k == NULL || k->error == NULL)
    return FALSE;
  g_propagate_error (error, g_steal_pointer (&k->error));
  return TRUE;
}

/* Does @sig (X.509 encoding) over @data verify with @pub? */
static gboolean
signature_verifies (EVP_PKEY *pub, const EVP_MD *md, const guint8 *data, gsize len, GBytes *sig)
{
  g_autoptr(EVP_MD_CTX) ctx = EVP_MD_CTX_new ();
  gboolean ok = ctx != NULL && EVP_DigestVerifyInit (ctx, NULL, md, NULL, pub) == 1
                && EVP_DigestVerify (ctx, g_bytes_get_data (sig, NULL), g_bytes_get_size (sig), data, len) == 1;
  ERR_clear_error ();
  return ok;
}

CK_OBJECT_HANDLE
p11c_token_prove_key (P11cSession *s, GBytes *id, X509 *cert, const char *pin, GError **error)
{
  EVP_PKEY *pub = X509_get0_pubkey (cert);
  g_autofree char *kt_name = pub ? p11c_pkey_type_name (pub) : NULL;
  g_autoptr(GArray) keys = NULL;
  P11cKeyType kt;
  const EVP_MD *md;
  guint8 challenge[32];

  if (kt_name == NULL || !p11c_key_type_from_string (kt_name, &kt))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_SUPPORTED,
                   "The certificate's key type (%s) cannot be renewed here", kt_name ? kt_name : "unknown");
      return 0;
    }
  md = kt == P11C_KEY_EC_P384 ? EVP_sha384 () : EVP_sha256 ();
  keys = p11c_session_find (s, CKO_PRIVATE_KEY, id, NULL, error);
  if (keys == NULL)
    return 0;
  if (RAND_bytes (challenge, sizeof challenge) != 1)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "No randomness for the proof of possession");
      return 0;
    }
  for (guint i = 0; i < keys->len; i++)
    {
      CK_OBJECT_HANDLE key = g_array_index (keys, CK_OBJECT_HANDLE, i);
      g_autoptr(GError) local = NULL;
      g_autoptr(GBytes) sig = p11c_session_sign (s, key, kt, md, challenge, sizeof challenge, pin, &local);

      if (sig == NULL
          && (g_error_matches (local, P11C_ERROR, P11C_ERROR_PIN_INCORRECT)
              || g_error_matches (local, P11C_ERROR, P11C_ERROR_PIN_LOCKED)
              || g_error_matches (local, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT)))
        {
          g_propagate_error (error, g_steal_pointer (&local));
          return 0;
        }
      if (sig != NULL && signature_verifies (pub, md, challenge, sizeof challenge, sig))
        return key;
      g_debug ("Private key %u does not sign for the certificate: %s", (guint) i,
               local ? local->message : "the signature does not verify");
    }
  g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED,
               "The certificate's private key is not on this token (no key here signs for it): the certificate "
               "is a copy, and only the token holding its key can renew it. Nothing was renewed");
  return 0;
}

GBytes *
p11c_token_key_decrypt (EVP_PKEY *pkey, const guint8 *in, gsize in_len, GError **error)
{
  const RSA *rsa = EVP_PKEY_get_base_id (pkey) == EVP_PKEY_RSA ? EVP_PKEY_get0_RSA (pkey) : NULL;
  TokenKey *k = rsa && ex_index_rsa >= 0 ? RSA_get_ex_data (rsa, ex_index_rsa) : NULL;
  g_autoptr(P11cSession) s = NULL;
  CK_MECHANISM m = { CKM_RSA_PKCS, NULL, 0 };
  CK_OBJECT_HANDLE priv = 0;
  CK_ULONG len = 0;
  guint8 *plain = NULL;
  GBytes *out = NULL;

  if (k == NULL)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_NOT_SUPPORTED, "Not an RSA key on a token");
      return NULL;
    }
  p11c_token_lock_operations (k->token);
  s = key_session (k, &priv, error);
  if (s != NULL
      && p11c_ckr_check (s->f->C_DecryptInit (s->handle, &m, priv), "Decrypting on the token", error)
      && p11c_ckr_check (s->f->C_Decrypt (s->handle, (guint8 *) in, in_len, NULL, &len), "Decrypting on the token", error)
      && len > 0 && len <= in_len)
    {
      CK_ULONG cap = len;
      plain = g_malloc0 (cap);
      if (p11c_ckr_check (s->f->C_Decrypt (s->handle, (guint8 *) in, in_len, plain, &len),
                          "Decrypting on the token", error)
          && p11c_check_reported (len, cap, "decrypt (the plaintext's length)", error))
        out = g_bytes_new (plain, len);
      OPENSSL_cleanse (plain, cap);
      g_free (plain);
    }
  else if (s != NULL && error != NULL && *error == NULL)
    g_set_error_literal (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR, "The token returned no plaintext");
  g_clear_pointer (&s, p11c_session_close);
  p11c_token_unlock_operations (k->token);
  return out;
}
