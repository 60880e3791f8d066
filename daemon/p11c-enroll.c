#define G_LOG_DOMAIN "p11c-enroll"
#include "p11c-enroll.h"
#include "p11c-error.h"
#include "p11c-est.h"
#include "p11c-scep.h"
#include "p11c-localca.h"
#include "p11c-log.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include "p11c-store.h"
#include "p11c-tokenkey.h"
#include "p11c-records.h"
#include <glib/gstdio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <string.h>
#include <unistd.h>

typedef enum { STORAGE_TOKEN, STORAGE_SYSTEM, STORAGE_FILE } Storage;

struct _P11cEnrollRequest {
  const P11cCaProfile *ca;
  const P11cConfig    *config;
  Storage              storage;
  P11cToken           *token;
  char                *login;
  char                *otp;        /* secret */
  char                *pin;        /* secret */
  char                *password;   /* secret, PKCS#12 */
  P11cKeyType          key_type;
  char                *subject;
  char                *label;
  char                *name;
  int                  fd;
  gboolean             unattended; /* the PIN comes from an admin's PIN file */
  char                *pin_file;   /* that file */
  /* renewal of an existing certificate */
  gboolean             renew;
  gboolean             rekey;
  X509                *old_cert;
  GBytes              *old_id;      /* token: CKA_ID of the current key */
  EVP_PKEY            *old_key;     /* system: the current key */
  char                *old_sha256;
  gint64               enrolled_by; /* -1: the job's owner */
};

void
p11c_enroll_request_free (P11cEnrollRequest *r)
{
  if (r == NULL)
    return;
  g_clear_pointer (&r->token, p11c_token_unref);
  g_free (r->login);
  p11c_secret_free (r->otp);
  p11c_secret_free (r->pin);
  p11c_secret_free (r->password);
  g_free (r->subject);
  g_free (r->label);
  g_free (r->name);
  if (r->fd >= 0)
    close (r->fd);
  g_clear_pointer (&r->old_cert, X509_free);
  g_clear_pointer (&r->old_id, g_bytes_unref);
  g_clear_pointer (&r->old_key, EVP_PKEY_free);
  g_free (r->old_sha256);
  g_free (r->pin_file);
  g_free (r);
}

static gboolean
missing (const char *key, const char *why, GError **error)
{
  g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Missing required key \"%s\" (%s)", key, why);
  return FALSE;
}

/* "CN=${login}" → "CN=alice" */
static char *
expand_subject (const char *tmpl, const char *login)
{
  g_autoptr(GString) s = g_string_new (tmpl);
  g_string_replace (s, "${login}", login ? login : "", 0);
  return g_string_free (g_steal_pointer (&s), FALSE);
}

/* A subject as people write it: "CN=a,O=b" (RFC 4514: the most
 * significant attribute last, so the DN is O=b then CN=a) or OpenSSL's
 * "/O=b/CN=a" (most significant first).  Backslash escapes a separator. */
static X509_NAME *
parse_subject (const char *text, GError **error)
{
  g_autoptr(X509_NAME) name = X509_NAME_new ();
  gboolean slash = text[0] == '/';
  const char *p = slash ? text + 1 : text;
  g_autoptr(GString) part = g_string_new (NULL);
  g_autoptr(GPtrArray) parts = g_ptr_array_new_with_free_func (g_free);

  for (; ; p++)
    {
      if (*p == '\\' && p[1])
        {
          g_string_append_c (part, *++p);
          continue;
        }
      if (*p == '\0' || *p == (slash ? '/' : ','))
        {
          g_ptr_array_add (parts, g_strdup (g_strstrip (part->str)));
          g_string_truncate (part, 0);
          if (*p == '\0')
            break;
          continue;
        }
      g_string_append_c (part, *p);
    }
  for (guint n = 0; n < parts->len; n++)
    {
      const char *kv = parts->pdata[slash ? n : parts->len - 1 - n];
      const char *eq = strchr (kv, '=');
      g_autofree char *key = NULL;
      if (kv[0] == '\0' && parts->len > 1)
        continue;
      if (eq == NULL || eq == kv || eq[1] == '\0')
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "Key \"subject\": \"%s\" is not ATTRIBUTE=value (e.g. CN=agent-42,O=Shop)", kv);
          return NULL;
        }
      key = g_strndup (kv, eq - kv);
      g_strstrip (key);
      if (!X509_NAME_add_entry_by_txt (name, key, MBSTRING_UTF8, (const guchar *) eq + 1, -1, -1, 0))
        {
          ERR_clear_error ();
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "Key \"subject\": unknown attribute \"%s\" or bad value", key);
          return NULL;
        }
    }
  if (X509_NAME_entry_count (name) == 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Key \"subject\": empty subject");
      return NULL;
    }
  return g_steal_pointer (&name);
}

P11cEnrollRequest *
p11c_enroll_request_new (P11cEngine *engine, const P11cEnrollParams *params, P11cToken *token,
                         int fd, GError **error)
{
  g_autoptr(P11cEnrollRequest) r = g_new0 (P11cEnrollRequest, 1);
  const char *ca, *storage, *key_type;
  g_autoptr(X509_NAME) name = NULL;

  r->fd = fd;
  r->enrolled_by = -1;
  r->config = p11c_engine_get_config (engine);

  ca = params->ca;
  r->ca = p11c_engine_find_ca (engine, ca);
  if (r->ca == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
                   "Key \"ca\": no CA profile \"%s\"; list the profiles the daemon offers", ca);
      return NULL;
    }

  storage = params->storage ? params->storage : "token";
  if (g_str_equal (storage, "token"))
    r->storage = STORAGE_TOKEN;
  else if (g_str_equal (storage, "system"))
    r->storage = STORAGE_SYSTEM;
  else if (g_str_equal (storage, "file"))
    r->storage = STORAGE_FILE;
  else
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Key \"storage\" must be token, system or file, not \"%s\"", storage);
      return NULL;
    }
  if (r->storage != STORAGE_FILE && r->fd >= 0)
    {
      close (r->fd);   /* only a file storage writes to one */
      r->fd = -1;
    }

  r->login = g_strdup (params->login);
  r->otp = g_strdup (params->otp);
  r->pin = g_strdup (params->pin);
  r->password = g_strdup (params->password);
  if (r->ca->type == P11C_CA_EST)
    {
      if (r->login == NULL || r->login[0] == '\0')
        return missing ("login", "the login your manager gave you", error) ? NULL : NULL;
      if (r->otp == NULL)
        return missing ("otp", "the one-time password your manager gave you", error) ? NULL : NULL;
      if (!p11c_secret_check (r->otp, "one-time password", error))
        return NULL;
      if (strchr (r->login, ':') != NULL || !g_utf8_validate (r->login, -1, NULL))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Key \"login\": must be UTF-8 without ':'");
          return NULL;
        }
    }
  else if (r->ca->type == P11C_CA_SCEP)
    {
      /* the one-time password is SCEP's challenge password; no login */
      if (r->otp == NULL)
        return missing ("otp", "the challenge password your manager gave you", error) ? NULL : NULL;
      if (!p11c_secret_check (r->otp, "challenge password", error))
        return NULL;
      if (r->login != NULL && !g_utf8_validate (r->login, -1, NULL))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Key \"login\": must be UTF-8");
          return NULL;
        }
    }

  key_type = params->key_type;
  r->key_type = r->ca->key_type;
  if (key_type && !p11c_key_type_from_string (key_type, &r->key_type))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Key \"key_type\" must be ec-p256, ec-p384, rsa-2048 or rsa-3072, not \"%s\"", key_type);
      return NULL;
    }
  if (r->ca->type == P11C_CA_SCEP && r->key_type != P11C_KEY_RSA_2048 && r->key_type != P11C_KEY_RSA_3072)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Key \"key_type\": the CA profile \"%s\" speaks SCEP, which needs an RSA key "
                   "(rsa-2048 or rsa-3072): the CA encrypts its reply to the requester's key, and "
                   "an EC key cannot decrypt it", r->ca->name);
      return NULL;
    }

  r->label = g_strdup (params->label);
  r->name = g_strdup (params->name);
  switch (r->storage)
    {
    case STORAGE_TOKEN:
      if (params->token == NULL)
        return missing ("token", "the token URI or object path", error) ? NULL : NULL;
      r->token = token ? token : p11c_engine_resolve_token (engine, params->token, error);
      if (r->token == NULL)
        {
          g_prefix_error (error, "Key \"token\": ");
          return NULL;
        }
      p11c_token_ref (r->token);
      {
        CK_TOKEN_INFO info;
        p11c_token_get_info (r->token, &info, NULL);
        /* e.g. NSS's "Generic Crypto Services" token beside its database */
        if (info.flags & CKF_WRITE_PROTECTED)
          {
            g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_SUPPORTED,
                         "Key \"token\": the token %s is read-only (write-protected): it cannot store a key "
                         "or a certificate; choose another token", p11c_token_get_id (r->token));
            return NULL;
          }
      }
      if (r->pin == NULL)
        return missing ("pin", "the token PIN", error) ? NULL : NULL;
      if (!p11c_secret_check (r->pin, "PIN", error))
        return NULL;
      if (r->label == NULL)
        {
          g_autoptr(GDateTime) now = g_date_time_new_now_utc ();
          g_autofree char *date = g_date_time_format (now, "%Y-%m-%d");
          r->label = g_strdup_printf ("%s %s", r->ca->name, date);
        }
      if (strlen (r->label) > 128)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Key \"label\": at most 128 bytes");
          return NULL;
        }
      break;
    case STORAGE_SYSTEM:
      if (r->name == NULL)
        return missing ("name", "the system store entry name", error) ? NULL : NULL;
      if (!p11c_name_is_valid (r->name))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "Key \"name\": use 1-64 letters, digits, '.', '_' or '-' (no '/', no '..')");
          return NULL;
        }
      break;
    case STORAGE_FILE:
      if (!params->has_fd)
        return missing ("fd", "an open, writable file descriptor for the PKCS#12 file", error) ? NULL : NULL;
      if (r->fd < 0)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Key \"fd\": no file descriptor was passed");
          return NULL;
        }
      if (!p11c_store_check_output_fd (r->fd, error))
        return NULL;
      if (r->password == NULL)
        return missing ("password", "the password protecting the PKCS#12 file", error) ? NULL : NULL;
      if (!p11c_secret_check (r->password, "password", error)
          || !p11c_pin_policy_check (&p11c_engine_get_config (engine)->pin_policy, r->password, error))
        {
          g_prefix_error (error, "Key \"password\": ");
          return NULL;
        }
      break;
    }
  if (params->subject)
    r->subject = g_strdup (params->subject);
  else if (r->login)
    r->subject = expand_subject (r->ca->subject, r->login);
  else
    {
      const char *who = params->name ? params->name : params->label ? params->label : "p11certd";
      r->subject = g_strdup_printf ("CN=%s", who);
    }
  name = parse_subject (r->subject, error);
  if (name == NULL)
    return NULL;

  return g_steal_pointer (&r);
}

P11cEnrollRequest *
p11c_enroll_request_new_renewal (P11cEngine *engine, const P11cRenewSpec *spec)
{
  P11cEnrollRequest *r = g_new0 (P11cEnrollRequest, 1);
  g_autoptr(P11cCertSummary) sum = p11c_cert_summary_from_x509 (spec->old_cert);

  r->fd = -1;
  r->config = p11c_engine_get_config (engine);
  r->renew = TRUE;
  r->ca = spec->ca;
  r->rekey = spec->rekey;
  r->key_type = spec->key_type;
  r->old_cert = X509_dup (spec->old_cert);
  r->old_sha256 = g_strdup (sum->sha256);
  r->subject = g_strdup (sum->subject);
  r->pin = g_strdup (spec->pin);
  r->pin_file = g_strdup (spec->pin_file);
  r->unattended = spec->pin_file != NULL;
  r->enrolled_by = spec->enrolled_by;
  if (spec->token != NULL)
    {
      r->storage = STORAGE_TOKEN;
      r->token = p11c_token_ref (spec->token);
      r->old_id = g_bytes_ref (spec->old_id);
      r->label = g_strdup (spec->label);
    }
  else
    {
      r->storage = STORAGE_SYSTEM;
      r->name = g_strdup (spec->name);
      EVP_PKEY_up_ref (spec->old_key);
      r->old_key = spec->old_key;
    }
  return r;
}

const char *
p11c_enroll_request_get_renewed (const P11cEnrollRequest *req)
{
  return req->old_sha256;
}

/* ---- the key: on the token, or in software ------------------------------ */

typedef struct {
  P11cEnrollRequest *req;
  P11cJob           *job;
  /* token */
  GBytes            *id;
  char              *pending_file;
  gboolean           generated;
  /* software */
  EVP_PKEY          *soft_key;
  /* both */
  EVP_PKEY          *pub;
} Key;

static gboolean
job_check (P11cJob *job, GError **error)
{
  if (g_cancellable_is_cancelled (p11c_job_get_cancellable (job)))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CANCELLED, "The job was cancelled");
      return FALSE;
    }
  return TRUE;
}

static const EVP_MD *
md_for (P11cKeyType t)
{
  return t == P11C_KEY_EC_P384 ? EVP_sha384 () : EVP_sha256 ();
}

/* Record the key we are about to make, before making it, so a crash is
 * recoverable (see p11c_enroll_recover). */
static gboolean
pending_record (Key *k, GError **error)
{
  g_autofree char *dir = g_build_filename (k->req->config->state_dir, "pending", NULL);
  g_autoptr(GKeyFile) kf = g_key_file_new ();
  g_autofree char *id = p11c_id_to_hex (k->id);
  g_autofree char *data = NULL;
  CK_TOKEN_INFO info;
  g_autofree char *serial = NULL;
  gsize len;

  p11c_token_get_info (k->req->token, &info, NULL);
  serial = p11c_padded_string (info.serialNumber, sizeof info.serialNumber);
  g_key_file_set_string (kf, "pending", "token-uri", p11c_token_get_uri (k->req->token));
  g_key_file_set_string (kf, "pending", "token-serial", serial);
  g_key_file_set_string (kf, "pending", "id", id);
  g_key_file_set_int64 (kf, "pending", "pid", getpid ());
  g_key_file_set_int64 (kf, "pending", "created", g_get_real_time () / G_USEC_PER_SEC);
  data = g_key_file_to_data (kf, &len, NULL);
  if (g_mkdir_with_parents (dir, 0700) != 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot create %s", dir);
      return FALSE;
    }
  k->pending_file = g_strdup_printf ("%s/%s.ini", dir, id);
  return p11c_store_write_file (k->pending_file, data, len, 0600, NULL, error);
}

static void
pending_clear (Key *k)
{
  if (k->pending_file)
    g_unlink (k->pending_file);
  g_clear_pointer (&k->pending_file, g_free);
}

static X509_REQ *
build_csr (Key *k, EVP_PKEY *pub, P11cSession *s, CK_OBJECT_HANDLE priv, GError **error)
{
  g_autoptr(X509_REQ) req = X509_REQ_new ();
  g_autoptr(X509_NAME) name = parse_subject (k->req->subject, error);
  P11cKeyType kt = k->req->key_type;
  const EVP_MD *md = md_for (kt);

  if (name == NULL)
    return NULL;
  if (!X509_REQ_set_version (req, 0) || !X509_REQ_set_subject_name (req, name)
      || !X509_REQ_set_pubkey (req, pub))
    goto fail;
  /* SCEP: the one-time password is the request's challengePassword */
  if (k->req->ca->type == P11C_CA_SCEP && !k->req->renew && k->req->otp != NULL
      && !X509_REQ_add1_attr_by_NID (req, NID_pkcs9_challengePassword, MBSTRING_UTF8,
                                     (const unsigned char *) k->req->otp, -1))
    goto fail;
  if (k->req->old_cert != NULL)
    {
      /* servers refuse a re-enrollment that changes the names */
      int pos = X509_get_ext_by_NID (k->req->old_cert, NID_subject_alt_name, -1);
      if (!X509_REQ_set_subject_name (req, X509_get_subject_name (k->req->old_cert)))
        goto fail;
      if (pos >= 0)
        {
          STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null ();
          sk_X509_EXTENSION_push (exts, X509_get_ext (k->req->old_cert, pos));
          X509_REQ_add_extensions (req, exts);
          sk_X509_EXTENSION_free (exts);
        }
    }

  if (s == NULL)
    {
      if (X509_REQ_sign (req, k->soft_key, md) <= 0)
        goto fail;
      return g_steal_pointer (&req);
    }
  else
    {
      /* The private key stays on the token: sign the DER of the request
       * info there and put the signature in. */
      X509_ALGOR *alg = X509_ALGOR_new ();
      ASN1_BIT_STRING *bits;
      g_autoptr(GBytes) sig = NULL;
      unsigned char *tbs = NULL;
      int tbs_len, nid;

      if (kt == P11C_KEY_EC_P256)
        nid = NID_ecdsa_with_SHA256;
      else if (kt == P11C_KEY_EC_P384)
        nid = NID_ecdsa_with_SHA384;
      else
        nid = NID_sha256WithRSAEncryption;
      X509_ALGOR_set0 (alg, OBJ_nid2obj (nid),
                       nid == NID_sha256WithRSAEncryption ? V_ASN1_NULL : V_ASN1_UNDEF, NULL);
      X509_REQ_set1_signature_algo (req, alg);
      X509_ALGOR_free (alg);
      tbs_len = i2d_re_X509_REQ_tbs (req, &tbs);
      if (tbs_len <= 0)
        goto fail;
      sig = p11c_session_sign (s, priv, kt, md, tbs, tbs_len, k->req->pin, error);
      OPENSSL_free (tbs);
      if (sig == NULL)
        return NULL;
      bits = ASN1_BIT_STRING_new ();
      ASN1_BIT_STRING_set (bits, (unsigned char *) g_bytes_get_data (sig, NULL), g_bytes_get_size (sig));
      bits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
      bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
      X509_REQ_set0_signature (req, bits);
      if (X509_REQ_verify (req, pub) != 1)
        {
          ERR_clear_error ();
          g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR,
                       "The token's signature on the certificate request does not verify");
          return NULL;
        }
      return g_steal_pointer (&req);
    }

fail:
  {
    g_autofree char *why = p11c_openssl_error_string ();
    g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot build the certificate request: %s", why);
  }
  return NULL;
}

/* rekey=false: the CSR is signed by the key the certificate already has */
/* The job's first login uses the PIN as its source gave it; every later
 * login of the job is the daemon's own doing (P11C_LOGIN_AUTOMATIC). */
static P11cLoginKind
first_login_kind (const P11cEnrollRequest *r)
{
  return r->unattended ? P11C_LOGIN_AUTOMATIC : P11C_LOGIN_PERSON;
}

static X509_REQ *
csr_with_old_key (Key *k, GError **error)
{
  P11cEnrollRequest *r = k->req;
  X509_REQ *csr = NULL;

  k->pub = EVP_PKEY_dup (X509_get0_pubkey (r->old_cert));
  if (r->storage != STORAGE_TOKEN)
    {
      k->soft_key = EVP_PKEY_dup (r->old_key);
      return build_csr (k, k->soft_key, NULL, 0, error);
    }
  {
    P11cToken *t = r->token;
    g_autoptr(P11cSession) s = NULL;
    CK_OBJECT_HANDLE key;

    k->id = g_bytes_ref (r->old_id);
    p11c_token_lock_operations (t);
    s = p11c_token_open_session (t, FALSE, error);
    if (s != NULL && p11c_token_login (t, s, r->pin, first_login_kind (r), error)
        && (key = p11c_token_prove_key (s, r->old_id, r->old_cert, r->pin, error)) != 0)
      csr = build_csr (k, k->pub, s, key, error);
    g_clear_pointer (&s, p11c_session_close);
    p11c_token_unlock_operations (t);
    return csr;
  }
}

static X509_REQ *
key_generate (Key *k, GError **error)
{
  P11cEnrollRequest *r = k->req;
  X509_REQ *csr = NULL;

  p11c_job_set_state (k->job, "generating-key", 0.1);
  if (r->renew && !r->rekey)
    return csr_with_old_key (k, error);
  if (r->storage != STORAGE_TOKEN)
    {
      k->soft_key = r->key_type == P11C_KEY_EC_P256 ? EVP_PKEY_Q_keygen (NULL, NULL, "EC", "P-256")
                  : r->key_type == P11C_KEY_EC_P384 ? EVP_PKEY_Q_keygen (NULL, NULL, "EC", "P-384")
                  : EVP_PKEY_Q_keygen (NULL, NULL, "RSA", (size_t) (r->key_type == P11C_KEY_RSA_3072 ? 3072 : 2048));
      if (k->soft_key == NULL)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot generate the key");
          return NULL;
        }
      k->pub = EVP_PKEY_dup (k->soft_key);
      return build_csr (k, k->soft_key, NULL, 0, error);
    }

  {
    guint8 id[20];
    g_autoptr(P11cSession) s = NULL;
    CK_OBJECT_HANDLE pub = 0, priv = 0;
    P11cToken *t = r->token;

    RAND_bytes (id, sizeof id);
    k->id = g_bytes_new (id, sizeof id);
    if (!pending_record (k, error))
      return NULL;
    p11c_token_lock_operations (t);
    s = p11c_token_open_session (t, TRUE, error);
    /* a renewal proves first that the certificate's key is on this token:
     * a copy of someone else's certificate gets no new key, nothing issued */
    if (s != NULL && p11c_token_login (t, s, r->pin, first_login_kind (r), error)
        && (!r->renew || p11c_token_prove_key (s, r->old_id, r->old_cert, r->pin, error) != 0))
      {
        if (p11c_session_generate_key_pair (s, r->key_type, r->ca->type == P11C_CA_SCEP, k->id, r->label, &pub, &priv, error))
          {
            k->generated = TRUE;
            k->pub = p11c_session_public_key (s, pub, error);
            p11c_job_set_state (k->job, "generating-key", 0.2);
            if (k->pub != NULL)
              csr = build_csr (k, k->pub, s, priv, error);
          }
      }
    g_clear_pointer (&s, p11c_session_close);
    p11c_token_unlock_operations (t);
    p11c_token_invalidate (t);
    if (!k->generated)
      pending_clear (k);
    return csr;
  }
}

/* Remove every object with our fresh CKA_ID (keys, and a certificate if one
 * was written).  Logs in with the PIN that already worked once. */
static void
key_discard (Key *k)
{
  P11cToken *t = k->req->token;
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cSession) s = NULL;
  guint removed = 0;
  gboolean ok = FALSE;

  if (k->req->storage != STORAGE_TOKEN || !k->generated)
    return;   /* nothing generated (or the key is the certificate's own) */
  p11c_token_lock_operations (t);
  s = p11c_token_open_session (t, TRUE, &error);
  if (s != NULL && p11c_token_login (t, s, k->req->pin, P11C_LOGIN_AUTOMATIC, &error))
    {
      g_autoptr(GArray) objs = p11c_session_find (s, CK_UNAVAILABLE_INFORMATION, k->id, NULL, &error);
      ok = objs != NULL;
      for (guint i = 0; objs && i < objs->len; i++)
        if (p11c_session_destroy (s, g_array_index (objs, CK_OBJECT_HANDLE, i), &error))
          removed++;
        else
          ok = FALSE;
    }
  g_clear_pointer (&s, p11c_session_close);
  p11c_token_unlock_operations (t);
  p11c_token_invalidate (t);
  if (ok)
    {
      g_message ("Removed the %u object(s) generated for the failed enrollment", removed);
      pending_clear (k);
    }
  else
    {
      g_autoptr(GKeyFile) kf = g_key_file_new ();
      if (k->pending_file && g_key_file_load_from_file (kf, k->pending_file, G_KEY_FILE_NONE, NULL))
        {
          gsize len;
          g_autofree char *data = NULL;
          g_key_file_set_boolean (kf, "pending", "abandoned", TRUE);
          data = g_key_file_to_data (kf, &len, NULL);
          p11c_store_write_file (k->pending_file, data, len, 0600, NULL, NULL);
        }
      g_warning ("Could not remove the key generated for the failed enrollment (%s); "
                 "it will be removed at the next login to the token", error ? error->message : "?");
      g_clear_pointer (&k->pending_file, g_free);   /* keep the record */
    }
}

static void
key_clear (Key *k)
{
  g_clear_pointer (&k->id, g_bytes_unref);
  g_clear_pointer (&k->soft_key, EVP_PKEY_free);
  g_clear_pointer (&k->pub, EVP_PKEY_free);
  g_free (k->pending_file);
}

/* ---- the CA ------------------------------------------------------------- */

typedef gboolean (*CaCall) (const P11cEstServer *srv, P11cJob *job, gpointer data, GError **error);

/* Transient failures (CaUnreachable) are retried up to max-attempts with a
 * doubling delay; everything else is final at once. */
static gboolean
with_retries (const P11cCaProfile *ca, P11cJob *job, const P11cEstServer *srv, CaCall call,
              gpointer data, GError **error)
{
  for (guint attempt = 1; ; attempt++)
    {
      g_autoptr(GError) local = NULL;
      guint delay;

      p11c_job_set_attempt (job, attempt, 0);
      if (call (srv, job, data, &local))
        return TRUE;
      /* a TLS failure caused by the token key (wrong PIN, token pulled)
       * is the token's error, and final */
      if (p11c_token_key_take_error (srv->client_key, error))
        return FALSE;
      if (!g_error_matches (local, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE) || attempt >= ca->max_attempts)
        {
          if (g_error_matches (local, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE))
            {
              g_prefix_error (&local, "Gave up after %u attempt(s); contact your CA administrator (manager). ", attempt);
              p11c_error_set_detail_uint (local, "attempts", attempt);
            }
          g_propagate_error (error, g_steal_pointer (&local));
          return FALSE;
        }
      delay = ca->retry_delay << MIN (attempt - 1, 10);
      g_message ("Attempt %u of %u at the CA failed (%s); retrying in %u s", attempt, ca->max_attempts,
                 local->message, delay);
      p11c_job_set_attempt (job, attempt, g_get_real_time () / G_USEC_PER_SEC + delay);
      if (!p11c_job_wait (job, delay))
        return job_check (job, error);
    }
}

/* ---- the CA's certificates, fetched once per profile --------------------
 * kept until they fail to verify a certificate the CA issued (its chain
 * changed: fetched again) or CACERTS_TTL has passed. */

#define CACERTS_TTL (G_GINT64_CONSTANT (3600) * G_USEC_PER_SEC)

typedef struct {
  P11cX509Stack *cas;
  gint64         fetched;   /* monotonic */
} CachedCas;

static GMutex      cacerts_lock;
static GHashTable *cacerts_cache;   /* profile key → CachedCas */

static void
cached_cas_free (CachedCas *c)
{
  p11c_x509_stack_free (c->cas);
  g_free (c);
}

static char *
cacerts_key (const P11cCaProfile *ca)
{
  return g_strjoin ("\n", ca->name, ca->url ? ca->url : "", ca->label ? ca->label : "",
                    ca->trust_anchor ? ca->trust_anchor : "", NULL);
}

/* A copy of the profile's cached certificates, NULL when none is fresh. */
static P11cX509Stack *
cacerts_cached (const P11cCaProfile *ca)
{
  g_autofree char *key = cacerts_key (ca);
  P11cX509Stack *out = NULL;
  CachedCas *c;

  g_mutex_lock (&cacerts_lock);
  c = cacerts_cache ? g_hash_table_lookup (cacerts_cache, key) : NULL;
  if (c != NULL && g_get_monotonic_time () - c->fetched < CACERTS_TTL)
    out = X509_chain_up_ref (c->cas);
  g_mutex_unlock (&cacerts_lock);
  return out;
}

/* @cas: NULL forgets */
static void
cacerts_store (const P11cCaProfile *ca, P11cX509Stack *cas)
{
  char *key = cacerts_key (ca);

  g_mutex_lock (&cacerts_lock);
  if (cacerts_cache == NULL)
    cacerts_cache = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) cached_cas_free);
  if (cas != NULL)
    {
      CachedCas *c = g_new0 (CachedCas, 1);
      c->cas = X509_chain_up_ref (cas);
      c->fetched = g_get_monotonic_time ();
      g_hash_table_replace (cacerts_cache, key, c);
    }
  else
    {
      g_hash_table_remove (cacerts_cache, key);
      g_free (key);
    }
  g_mutex_unlock (&cacerts_lock);
}

static gboolean
call_cacerts (const P11cEstServer *srv, P11cJob *job, gpointer data, GError **error)
{
  P11cX509Stack **out = data;
  *out = p11c_est_get_cacerts (srv, p11c_job_get_cancellable (job), error);
  return *out != NULL;
}

typedef struct {
  P11cEnrollRequest *req;
  const guint8      *csr;
  gsize              csr_len;
  X509              *cert;
  guint              waited;
} EnrollCall;

static gboolean
call_enroll (const P11cEstServer *srv, P11cJob *job, gpointer data, GError **error)
{
  EnrollCall *c = data;

  for (;;)
    {
      guint retry_after = 0;
      if (!p11c_est_enroll (srv, c->req->renew, c->csr, c->csr_len, c->req->login, c->req->otp,
                            p11c_job_get_cancellable (job), &c->cert, &retry_after, error))
        return FALSE;
      if (c->cert != NULL)
        return TRUE;
      /* 202 Accepted: the CA wants time (manual approval).  The job waits
       * (state waiting-for-ca, RetryAt = when it asks again) as long as the
       * CA's Retry-After fits in what is left of max-wait; a Retry-After
       * beyond that ends the job now rather than waiting in vain. */
      if (c->waited + retry_after > c->req->ca->max_wait)
        {
          if (c->waited == 0)
            g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                         "The CA holds the request for approval and asks to come back in %u s "
                         "(Retry-After), longer than the CA profile allows to wait (max-wait=%u s); "
                         "nothing was written. Ask your CA administrator to approve requests "
                         "sooner, or raise max-wait in the CA profile, then enroll again",
                         retry_after, c->req->ca->max_wait);
          else
            g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                         "The CA did not issue the certificate within %u s (max-wait; it asks to come "
                         "back in %u s more); ask your CA administrator to approve the request, "
                         "then enroll again", c->req->ca->max_wait, retry_after);
          if (error != NULL)
            {
              p11c_error_set_detail_string (*error, "reason", "not-issued");
              p11c_error_set_detail_uint (*error, "max_wait", c->req->ca->max_wait);
              p11c_error_set_detail_uint (*error, "retry_after", retry_after);
            }
          return FALSE;
        }
      p11c_job_set_waiting (job, 0.5, g_get_real_time () / G_USEC_PER_SEC + retry_after);
      if (!p11c_job_wait (job, retry_after))
        return job_check (job, error);
      c->waited += retry_after;
      p11c_job_set_state (job, "requesting", 0.4);
    }
}

static gboolean
verify_chain (X509 *cert, P11cX509Stack *cas, GError **error)
{
  g_autoptr(X509_STORE) store = X509_STORE_new ();
  g_autoptr(X509_STORE_CTX) ctx = X509_STORE_CTX_new ();
  int rc;

  for (int i = 0; cas && i < sk_X509_num (cas); i++)
    X509_STORE_add_cert (store, sk_X509_value (cas, i));
  if (!X509_STORE_CTX_init (ctx, store, cert, cas))
    return FALSE;
  X509_STORE_CTX_set_purpose (ctx, X509_PURPOSE_ANY);
  rc = X509_verify_cert (ctx);
  if (rc != 1)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The CA's certificate does not chain to its own CA certificates (%s); "
                   "nothing was written. Contact your CA administrator",
                   X509_verify_cert_error_string (X509_STORE_CTX_get_error (ctx)));
      ERR_clear_error ();
      return FALSE;
    }
  return TRUE;
}

/* ---- SCEP (RFC 8894) ----------------------------------------------------- */

typedef struct {
  const char    *fingerprint;
  guint          caps;
  X509          *ca;
  X509          *recipient;
  P11cX509Stack *certs;
} ScepCa;

static void
scep_ca_clear (ScepCa *c)
{
  g_clear_pointer (&c->ca, X509_free);
  g_clear_pointer (&c->recipient, X509_free);
  g_clear_pointer (&c->certs, p11c_x509_stack_free);
}

static P11cEstServer
scep_server (const P11cEnrollRequest *r)
{
  P11cEstServer srv = { .url = r->ca->url, .trust_anchor = r->ca->trust_anchor,
                        .connect_timeout = r->ca->connect_timeout, .timeout = r->ca->timeout };
  return srv;
}

static gboolean
call_scep_discover (const P11cEstServer *srv, P11cJob *job, gpointer data, GError **error)
{
  ScepCa *c = data;

  scep_ca_clear (c);
  return p11c_scep_get_caps (srv, p11c_job_get_cancellable (job), &c->caps, error)
         && p11c_scep_get_ca (srv, c->fingerprint, p11c_job_get_cancellable (job), &c->ca, &c->recipient, &c->certs, error);
}

/* Before any key is made: what the CA can do, and its certificates (so a
 * CA that cannot be reached, or does not renew, costs no key). */
static gboolean
scep_discover (P11cJob *job, P11cEnrollRequest *r, ScepCa *c, GError **error)
{
  P11cEstServer srv = scep_server (r);

  c->fingerprint = r->ca->ca_fingerprint;
  p11c_job_set_state (job, "requesting", 0.05);
  if (!with_retries (r->ca, job, &srv, call_scep_discover, c, error))
    return FALSE;
  if (r->renew && !(c->caps & P11C_SCEP_CAP_RENEWAL))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                   "The SCEP CA of profile \"%s\" does not renew certificates (its GetCACaps has no "
                   "Renewal); enroll again with a challenge password", r->ca->name);
      return FALSE;
    }
  return TRUE;
}

/* The key that signs the pkiMessage; the CA encrypts its reply to it. */
typedef struct {
  EVP_PKEY *key;
  gboolean  on_token;
} ScepSigner;

static GBytes *
scep_decrypt (gpointer data, const guint8 *in, gsize len, GError **error)
{
  ScepSigner *s = data;
  g_autoptr(GError) local = NULL;
  GBytes *out = NULL;

  if (s->on_token)
    out = p11c_token_key_decrypt (s->key, in, len, &local);
  else
    {
      g_autoptr(EVP_PKEY_CTX) ctx = EVP_PKEY_CTX_new (s->key, NULL);
      size_t n = 0;
      if (ctx && EVP_PKEY_decrypt_init (ctx) > 0 && EVP_PKEY_CTX_set_rsa_padding (ctx, RSA_PKCS1_PADDING) > 0
          && EVP_PKEY_decrypt (ctx, NULL, &n, in, len) > 0)
        {
          g_autofree guint8 *buf = g_malloc0 (n);
          if (EVP_PKEY_decrypt (ctx, buf, &n, in, len) > 0)
            out = g_bytes_new (buf, n);
          OPENSSL_cleanse (buf, n);
        }
      if (out == NULL)
        {
          g_autofree char *why = p11c_openssl_error_string ();
          g_set_error (&local, P11C_ERROR, P11C_ERROR_FAILED, "%s", why);
        }
    }
  if (out != NULL)
    return out;
  /* the token's own trouble stays what it is; anything else means the
   * reply is not for this key */
  if (local->domain == P11C_ERROR && (local->code == P11C_ERROR_PIN_INCORRECT || local->code == P11C_ERROR_PIN_LOCKED
                                      || local->code == P11C_ERROR_TOKEN_NOT_PRESENT))
    g_propagate_error (error, g_steal_pointer (&local));
  else
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                 "The SCEP CA's reply does not decrypt with the request's key (%s)", local->message);
  return NULL;
}

/* The transient self-signed certificate that carries the request key as
 * the pkiMessage's signer (RFC 8894 §2.3). */
static X509 *
scep_signer_cert (X509_REQ *csr, EVP_PKEY *key, GError **error)
{
  g_autoptr(X509) x = X509_new ();
  g_autoptr(BIGNUM) bn = BN_new ();
  guint8 serial[8];

  RAND_bytes (serial, sizeof serial);
  serial[0] &= 0x7f;
  if (x == NULL || bn == NULL || !BN_bin2bn (serial, sizeof serial, bn)
      || !BN_to_ASN1_INTEGER (bn, X509_get_serialNumber (x)) || !X509_set_version (x, 2)
      || !X509_set_subject_name (x, X509_REQ_get_subject_name (csr))
      || !X509_set_issuer_name (x, X509_REQ_get_subject_name (csr))
      || !X509_gmtime_adj (X509_getm_notBefore (x), -600) || !X509_gmtime_adj (X509_getm_notAfter (x), 86400)
      || !X509_set_pubkey (x, key) || X509_sign (x, key, EVP_sha256 ()) <= 0)
    {
      g_autofree char *why = p11c_openssl_error_string ();
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot make the SCEP signer certificate: %s", why);
      return NULL;
    }
  return g_steal_pointer (&x);
}

typedef struct {
  P11cEnrollRequest *req;
  P11cScepClient    *cl;
  ScepSigner        *signer;
  X509_REQ          *csr;
  gboolean           pending;   /* the CA holds the request: poll for it */
  guint              waited;
  X509              *cert;
} ScepCall;

static gboolean
call_scep (const P11cEstServer *srv, P11cJob *job, gpointer data, GError **error)
{
  ScepCall *c = data;
  guint interval = c->req->ca->poll_interval;

  for (;;)
    {
      P11cScepMessageType type = c->pending ? P11C_SCEP_CERT_POLL
                               : c->req->renew ? P11C_SCEP_RENEWAL_REQ : P11C_SCEP_PKCS_REQ;
      g_autoptr(GError) token_error = NULL;

      if (!p11c_scep_pki_operation (srv, c->cl, type, c->csr, p11c_job_get_cancellable (job), &c->cert, error))
        {
          /* a signature on the token failed: the token's error, final */
          if (c->signer->on_token && p11c_token_key_take_error (c->signer->key, &token_error))
            {
              g_clear_error (error);
              g_propagate_error (error, g_steal_pointer (&token_error));
            }
          return FALSE;
        }
      if (c->cert != NULL)
        return TRUE;
      /* PENDING: the CA holds the request for approval; poll within max-wait */
      c->pending = TRUE;
      if (c->waited + interval > c->req->ca->max_wait)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                       "The SCEP CA holds the request for approval (PENDING) and did not issue the "
                       "certificate within %u s (max-wait); ask your CA administrator to approve it, "
                       "then enroll again", c->req->ca->max_wait);
          return FALSE;
        }
      p11c_job_set_waiting (job, 0.5, g_get_real_time () / G_USEC_PER_SEC + interval);
      if (!p11c_job_wait (job, interval))
        return job_check (job, error);
      c->waited += interval;
      p11c_job_set_state (job, "requesting", 0.4);
    }
}

static X509 *
scep_obtain (P11cJob *job, P11cEnrollRequest *r, Key *k, ScepCa *sc, X509_REQ *csr, GError **error)
{
  P11cEstServer srv = scep_server (r);
  g_autoptr(EVP_PKEY) token_key = NULL;
  g_autoptr(X509) transient = NULL;
  ScepSigner signer = { NULL, r->storage == STORAGE_TOKEN };
  P11cScepClient cl = { sc->caps, sc->ca, sc->recipient, sc->certs, NULL, NULL, scep_decrypt, &signer };
  ScepCall call = { r, &cl, &signer, csr, FALSE, 0, NULL };

  if (r->renew)
    {
      /* RenewalReq: signed with the current certificate and key */
      if (signer.on_token)
        token_key = p11c_token_key_new (r->token, r->pin, r->old_id, X509_get0_pubkey (r->old_cert), error);
      signer.key = signer.on_token ? token_key : r->old_key;
      cl.signer_cert = r->old_cert;
    }
  else
    {
      if (signer.on_token)
        token_key = p11c_token_key_new (r->token, r->pin, k->id, k->pub, error);
      signer.key = signer.on_token ? token_key : k->soft_key;
      if (signer.key != NULL)
        {
          g_autoptr(GError) local = NULL;
          transient = scep_signer_cert (csr, signer.key, &local);
          /* a signature on the token that failed is the token's error */
          if (transient == NULL && !(signer.on_token && p11c_token_key_take_error (token_key, error)))
            g_propagate_error (error, g_steal_pointer (&local));
        }
      cl.signer_cert = transient;
    }
  if (signer.key == NULL || cl.signer_cert == NULL)
    return NULL;
  cl.signer_key = signer.key;
  if (!with_retries (r->ca, job, &srv, call_scep, &call, error))
    return NULL;
  return call.cert;
}

static X509 *
obtain_cert (P11cEngine *engine, P11cJob *job, P11cEnrollRequest *r, Key *k, ScepCa *sc,
             X509_REQ *csr, EVP_PKEY *pub, P11cX509Stack **chain_out, GError **error)
{
  g_autoptr(X509) cert = NULL;
  g_autoptr(P11cX509Stack) cas = NULL;

  p11c_job_set_state (job, "requesting", 0.4);
  if (r->ca->type == P11C_CA_SCEP)
    {
      cert = scep_obtain (job, r, k, sc, csr, error);
      /* the chain: the CA certificates GetCACert gave (not the RA's) */
      cas = sk_X509_new_null ();
      for (int i = 0; sc->certs != NULL && i < sk_X509_num (sc->certs); i++)
        if (X509_check_ca (sk_X509_value (sc->certs, i)) != 0)
          {
            X509_up_ref (sk_X509_value (sc->certs, i));
            sk_X509_push (cas, sk_X509_value (sc->certs, i));
          }
    }
  else if (r->ca->type == P11C_CA_LOCAL)
    {
      g_autofree char *dir = g_build_filename (r->config->state_dir, "local-ca", NULL);
      X509 *ca_cert;
      p11c_job_set_attempt (job, 1, 0);
      /* issue first: the first issuance is what creates the CA — an
       * enrollment's (local-ca.issue was checked), never a renewal's */
      cert = p11c_local_ca_issue (dir, csr, r->ca->validity_days, !r->renew, error);
      if (cert == NULL || (ca_cert = p11c_local_ca_certificate (dir, error)) == NULL)
        return NULL;
      cas = sk_X509_new_null ();
      sk_X509_push (cas, ca_cert);
    }
  else
    {
      /* one connection, one TLS handshake for all of the job's requests */
      g_autoptr(P11cEstConn) conn = p11c_est_conn_new ();
      P11cEstServer srv = {
        .url = r->ca->url, .label = r->ca->label, .trust_anchor = r->ca->trust_anchor,
        .connect_timeout = r->ca->connect_timeout, .timeout = r->ca->timeout, .auth = r->ca->http_auth,
        .conn = conn,
      };
      gboolean cached;
      unsigned char *der = NULL;
      int der_len = i2d_X509_REQ (csr, &der);
      EnrollCall call = { .req = r, .csr = der, .csr_len = MAX (der_len, 0) };
      g_autoptr(EVP_PKEY) client_key = NULL;
      gboolean ok;

      if (r->renew)
        {
          /* simplereenroll: authenticated by the current certificate and its
           * key — on the token through C_Sign, or the system store's file */
          client_key = r->storage == STORAGE_TOKEN
                         ? p11c_token_key_new (r->token, r->pin, r->old_id, X509_get0_pubkey (r->old_cert), error)
                         : EVP_PKEY_dup (r->old_key);
          if (client_key == NULL)
            {
              OPENSSL_free (der);
              return NULL;
            }
          srv.client_cert = r->old_cert;
          srv.client_key = client_key;
        }

      g_debug ("CSR for %s: %d bytes", r->subject, der_len);
      cas = cacerts_cached (r->ca);
      cached = cas != NULL;
      ok = (cached || with_retries (r->ca, job, &srv, call_cacerts, &cas, error))
           && with_retries (r->ca, job, &srv, call_enroll, &call, error);
      OPENSSL_free (der);
      cert = call.cert;
      if (ok && cached && !verify_chain (cert, cas, NULL))
        {
          /* the CA's chain changed since it was fetched: fetch it again */
          g_debug ("The cached CA certificates of %s do not verify the new certificate; fetching them again",
                   r->ca->name);
          cacerts_store (r->ca, NULL);
          g_clear_pointer (&cas, p11c_x509_stack_free);
          cached = FALSE;
          ok = with_retries (r->ca, job, &srv, call_cacerts, &cas, error);
        }
      if (ok && !cached)
        cacerts_store (r->ca, cas);
      if (!ok)
        return NULL;
    }
  if (cert == NULL)
    return NULL;
  if (EVP_PKEY_eq (X509_get0_pubkey (cert), pub) != 1)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The CA returned a certificate for a different key; nothing was written. "
                   "Contact your CA administrator");
      return NULL;
    }
  if (!verify_chain (cert, cas, error))
    return NULL;
  *chain_out = g_steal_pointer (&cas);
  return g_steal_pointer (&cert);
}

/* ---- writing the result ------------------------------------------------- */

static gboolean
cert_on_token (P11cSession *s, X509 *cert)
{
  unsigned char *der = NULL;
  int len = i2d_X509 (cert, &der);
  CK_OBJECT_CLASS klass = CKO_CERTIFICATE;
  CK_ATTRIBUTE t[] = { { CKA_CLASS, &klass, sizeof klass }, { CKA_VALUE, der, len } };
  CK_OBJECT_HANDLE h;
  CK_ULONG n = 0;
  gboolean found = FALSE;

  if (len > 0 && s->f->C_FindObjectsInit (s->handle, t, 2) == CKR_OK)
    {
      found = p11c_session_find_next (s, &h, 1, &n, NULL) && n > 0;
      s->f->C_FindObjectsFinal (s->handle);
    }
  OPENSSL_free (der);
  return found;
}

/* The new certificate is on the token: remove the one it replaces (and its
 * key, when a new key was made).  A failure here leaves both, said in the
 * log; the new certificate is good either way. */
static void
remove_old_on_token (Key *k, P11cSession *s)
{
  P11cEnrollRequest *r = k->req;
  unsigned char *der = NULL;
  int len = i2d_X509 (r->old_cert, &der);
  CK_OBJECT_CLASS klass = CKO_CERTIFICATE;
  CK_ATTRIBUTE t[] = { { CKA_CLASS, &klass, sizeof klass }, { CKA_VALUE, der, len } };
  CK_OBJECT_HANDLE h[8];
  CK_ULONG n = 0;
  g_autoptr(GError) error = NULL;

  if (len > 0 && s->f->C_FindObjectsInit (s->handle, t, 2) == CKR_OK)
    {
      if (!p11c_session_find_next (s, h, G_N_ELEMENTS (h), &n, &error))
        g_warning ("The renewed certificate is written, but the old one was not found: %s", error->message);
      g_clear_error (&error);
      s->f->C_FindObjectsFinal (s->handle);
    }
  OPENSSL_free (der);
  for (CK_ULONG i = 0; i < n; i++)
    if (!p11c_session_destroy (s, h[i], &error))
      g_warning ("The renewed certificate is written, but the old one could not be removed: %s", error->message);
  if (r->rekey)
    {
      static const CK_OBJECT_CLASS keys[] = { CKO_PRIVATE_KEY, CKO_PUBLIC_KEY };
      for (gsize c = 0; c < G_N_ELEMENTS (keys); c++)
        {
          g_autoptr(GArray) objs = p11c_session_find (s, keys[c], r->old_id, NULL, NULL);
          for (guint i = 0; objs && i < objs->len; i++)
            if (!p11c_session_destroy (s, g_array_index (objs, CK_OBJECT_HANDLE, i), NULL))
              g_warning ("The old key of the renewed certificate could not be removed");
        }
    }
}

static char *
write_token (Key *k, X509 *cert, P11cX509Stack *chain, GError **error)
{
  P11cToken *t = k->req->token;
  g_autoptr(P11cSession) s = NULL;
  CK_TOKEN_INFO info;
  char *uri = NULL;

  p11c_token_lock_operations (t);
  s = p11c_token_open_session (t, TRUE, error);
  if (s != NULL && p11c_token_login (t, s, k->req->pin, P11C_LOGIN_AUTOMATIC, error)
      && p11c_session_store_cert (s, cert, k->id, k->req->label, NULL, error))
    {
      p11c_token_get_info (t, &info, NULL);
      uri = p11c_uri_for_object (&info, P11C_OBJECT_CERT, g_bytes_get_data (k->id, NULL),
                                 g_bytes_get_size (k->id), k->req->label);
      /* The CA chain goes next to it, once; a failure here is not fatal. */
      for (int i = 0; k->req->ca->write_chain && chain && i < sk_X509_num (chain); i++)
        {
          X509 *ca = sk_X509_value (chain, i);
          g_autoptr(GError) local = NULL;
          unsigned char *der = NULL;
          int len;
          g_autofree char *cn = NULL;
          g_autoptr(P11cCertSummary) sum = p11c_cert_summary_from_x509 (ca);
          g_autoptr(GBytes) id = NULL;
          guint8 sha1[20];
          gsize sha1_len = sizeof sha1;
          GChecksum *ck = g_checksum_new (G_CHECKSUM_SHA1);

          if (cert_on_token (s, ca))
            {
              g_checksum_free (ck);
              continue;
            }
          len = i2d_X509 (ca, &der);
          g_checksum_update (ck, der, MAX (len, 0));
          g_checksum_get_digest (ck, sha1, &sha1_len);
          g_checksum_free (ck);
          OPENSSL_free (der);
          id = g_bytes_new (sha1, sha1_len);
          cn = g_strdup_printf ("CA %s", sum->subject);
          if (strlen (cn) > 64)
            cn[64] = '\0';
          if (!p11c_session_store_cert (s, ca, id, cn, NULL, &local))
            g_warning ("Could not write the CA certificate %s to the token: %s", sum->subject, local->message);
        }
      if (k->req->renew)
        remove_old_on_token (k, s);
    }
  g_clear_pointer (&s, p11c_session_close);
  p11c_token_unlock_operations (t);
  p11c_token_invalidate (t);
  return uri;
}

static char *
write_file (Key *k, X509 *cert, P11cX509Stack *chain, GError **error)
{
  g_autoptr(P11cCertSummary) sum = p11c_cert_summary_from_x509 (cert);
  g_autoptr(PKCS12) p12 = NULL;
  unsigned char *der = NULL;
  int len;
  gboolean ok;

  p12 = PKCS12_create_ex (k->req->password, sum->subject, k->soft_key, cert, chain,
                          NID_aes_256_cbc, NID_aes_256_cbc, PKCS12_DEFAULT_ITER, PKCS12_DEFAULT_ITER, 0,
                          NULL, NULL);
  if (p12 == NULL || !PKCS12_set_mac (p12, k->req->password, -1, NULL, 0, PKCS12_DEFAULT_ITER, EVP_sha256 ()))
    {
      g_autofree char *why = p11c_openssl_error_string ();
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot build the PKCS#12 file: %s", why);
      return NULL;
    }
  len = i2d_PKCS12 (p12, &der);
  if (len <= 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot encode the PKCS#12 file");
      return NULL;
    }
  ok = p11c_store_write_fd (k->req->fd, der, len, error);
  OPENSSL_free (der);
  if (!ok)
    return NULL;
  return g_strdup_printf ("file:sha256=%s", sum->sha256);
}

static const char *const storage_names[] = { "token", "system", "file" };

/* The certificate is written: its issuance record replaces the renewed one's. */
static void
record_issued (P11cEngine *engine, P11cJob *job, P11cEnrollRequest *r, X509 *cert, const char *uri)
{
  CK_TOKEN_INFO info;
  g_autoptr(GError) error = NULL;
  P11cIssued *rec;

  if (r->token != NULL)
    p11c_token_get_info (r->token, &info, NULL);
  rec = p11c_issued_new (cert, r->ca->name, uri, storage_names[r->storage], r->token ? &info : NULL,
                         r->enrolled_by >= 0 ? r->enrolled_by : (gint64) p11c_job_get_owner_uid (job));
  if (!p11c_records_put (p11c_engine_get_records (engine), rec, r->old_sha256, &error))
    g_warning ("%s", error->message);
}

char *
p11c_enroll_run (P11cEngine *engine, P11cJob *job, P11cEnrollRequest *r, GError **error)
{
  Key k = { .req = r, .job = job };
  ScepCa scep = { 0 };
  g_autoptr(X509_REQ) csr = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(P11cX509Stack) chain = NULL;
  g_autoptr(P11cCertSummary) sum = NULL;
  g_autoptr(GError) local = NULL;
  char *uri = NULL;
  gboolean locked = FALSE;
  const char *token_id = r->token ? p11c_token_get_id (r->token) : NULL;

  if (r->token != NULL)
    {
      /* one job per token at a time; a queued job stays cancellable */
      if (!p11c_token_job_acquire (r->token, p11c_job_get_cancellable (job)))
        {
          job_check (job, &local);
          goto out;
        }
      locked = TRUE;
    }
  if (!job_check (job, &local))
    goto out;
  if (r->ca->type == P11C_CA_SCEP && (!scep_discover (job, r, &scep, &local) || !job_check (job, &local)))
    goto out;
  csr = key_generate (&k, &local);
  if (csr == NULL || !job_check (job, &local))
    goto out;
  cert = obtain_cert (engine, job, r, &k, &scep, csr, k.pub, &chain, &local);
  if (cert == NULL || !job_check (job, &local))
    goto out;

  p11c_job_set_state (job, "writing", 0.8);
  sum = p11c_cert_summary_from_x509 (cert);
  switch (r->storage)
    {
    case STORAGE_TOKEN:
      uri = write_token (&k, cert, chain, &local);
      break;
    case STORAGE_SYSTEM:
      if (p11c_system_store_save (r->config->state_dir, r->name, k.soft_key, cert, chain,
                                  r->ca->system_group, &local))
        uri = g_strconcat ("system:", r->name, NULL);
      break;
    case STORAGE_FILE:
      uri = write_file (&k, cert, chain, &local);
      break;
    }
  if (uri != NULL)
    {
      pending_clear (&k);
      record_issued (engine, job, r, cert, uri);
      p11c_log_event (G_LOG_LEVEL_MESSAGE, r->renew ? P11C_MSGID_RENEWED : P11C_MSGID_ENROLLED, token_id,
                      sum->sha256, sum->subject, sum->not_after, "%s %s from CA %s into %s (by uid %u)",
                      r->renew ? "Renewed" : "Enrolled", sum->subject, r->ca->name, uri, p11c_job_get_owner_uid (job));
    }

out:
  if (uri == NULL)
    {
      if (r->pin_file != NULL && r->token != NULL
          && (g_error_matches (local, P11C_ERROR, P11C_ERROR_PIN_INCORRECT)
              || g_error_matches (local, P11C_ERROR, P11C_ERROR_PIN_LOCKED)))
        {
          /* not sent to this token again, across restarts, until the file changes */
          CK_TOKEN_INFO info;
          p11c_token_get_info (r->token, &info, NULL);
          p11c_records_pin_refused_add (p11c_engine_get_records (engine), &info, r->pin_file, r->pin);
          g_prefix_error (&local, "The token refused the PIN in %s; it is not used for this token again "
                          "until the file changes. ", r->pin_file);
        }
      key_discard (&k);
      p11c_log_event (G_LOG_LEVEL_WARNING, P11C_MSGID_FAILED, token_id, NULL, r->subject, 0,
                      "%s from CA %s failed: %s", r->renew ? "Renewal" : "Enrollment", r->ca->name,
                      local->message);
      g_propagate_error (error, g_steal_pointer (&local));
    }
  if (locked)
    p11c_token_job_release (r->token);
  key_clear (&k);
  scep_ca_clear (&scep);
  /* the secrets are not needed any more */
  p11c_secret_clear (&r->pin);
  p11c_secret_clear (&r->otp);
  p11c_secret_clear (&r->password);
  return uri;
}

/* ---- crash recovery ----------------------------------------------------- */

void
p11c_enroll_recover (P11cEngine *engine)
{
  g_autofree char *dir = g_build_filename (p11c_engine_get_config (engine)->state_dir, "pending", NULL);
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  p11c_system_store_recover (p11c_engine_get_config (engine)->state_dir);
  while (d && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (dir, name, NULL);
      if (strstr (name, ".tmp-") != NULL)
        {
          g_unlink (path);
          continue;
        }
      if (g_str_has_suffix (name, ".ini"))
        p11c_log_event (G_LOG_LEVEL_MESSAGE, P11C_MSGID_RECOVERED, NULL, NULL, NULL, 0,
                        "Found an interrupted enrollment (%s); its key will be removed at the next "
                        "login to that token", name);
    }
}

/* ---- the CA certificate a profile trusts, as PEM ------------------------ */

static char *
x509_to_pem (X509 *cert)
{
  g_autoptr(BIO) bio = BIO_new (BIO_s_mem ());
  char *data;
  long len;

  PEM_write_bio_X509 (bio, cert);
  len = BIO_get_mem_data (bio, &data);
  return g_strndup (data, len);
}

char *
p11c_enroll_ca_certificate_pem (P11cEngine *engine, const char *name, GError **error)
{
  const P11cCaProfile *p = p11c_engine_find_ca (engine, name);
  char *pem = NULL;

  if (p == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND, "No CA profile \"%s\"", name);
      return NULL;
    }
  if (p->type == P11C_CA_LOCAL)
    {
      g_autofree char *dir = g_build_filename (p11c_engine_get_config (engine)->state_dir, "local-ca", NULL);
      g_autoptr(X509) cert = p11c_local_ca_certificate (dir, error);
      return cert ? x509_to_pem (cert) : NULL;
    }
  if (p->type == P11C_CA_SCEP && p->trust_anchor == NULL)
    {
      /* only a fingerprint is configured: the CA certificate that has it */
      P11cEstServer srv = { .url = p->url, .connect_timeout = p->connect_timeout, .timeout = p->timeout };
      g_autoptr(X509) ca = NULL;
      g_autoptr(X509) ra = NULL;
      g_autoptr(P11cX509Stack) all = NULL;
      if (!p11c_scep_get_ca (&srv, p->ca_fingerprint, NULL, &ca, &ra, &all, error))
        return NULL;
      return x509_to_pem (ca);
    }
  if (!g_file_get_contents (p->trust_anchor, &pem, NULL, error))
    return NULL;
  return pem;
}
