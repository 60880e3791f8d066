/* Unit tests for the EST client: the pure parsers (table-driven) and, when a
 * test EST server is available, the HTTPS calls against it.
 *
 * Integration cases use the server in $EST_DIR listening on 127.0.0.1:$EST_PORT
 * (tests/est/estserver.py).  Without those, $EST_SERVER may name
 * estserver.py and the test starts it itself in a temporary directory.
 * With neither the integration cases are skipped, unless EST_REQUIRED=1,
 * then they fail. */
#define G_LOG_DOMAIN "test-est"

#include "p11c-est.h"
#include "p11c-error.h"

#include <glib/gstdio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* OpenSSL helpers                                                          */
/* ------------------------------------------------------------------------ */

static EVP_PKEY *
make_key (void)
{
  EVP_PKEY *k = EVP_EC_gen ("P-256");
  g_assert_nonnull (k);
  return k;
}

static X509 *
make_cert (EVP_PKEY *key, EVP_PKEY *signer, const char *cn, gboolean ca)
{
  X509 *c = X509_new ();
  X509_NAME *name = X509_get_subject_name (c);
  X509V3_CTX v3;
  X509_EXTENSION *ext;

  ASN1_INTEGER_set (X509_get_serialNumber (c), g_random_int_range (1, G_MAXINT32));
  X509_set_version (c, 2);
  X509_gmtime_adj (X509_getm_notBefore (c), 0);
  X509_gmtime_adj (X509_getm_notAfter (c), 3600);
  X509_NAME_add_entry_by_txt (name, "CN", MBSTRING_UTF8, (const unsigned char *) cn, -1, -1, 0);
  X509_set_issuer_name (c, name);
  X509_set_pubkey (c, key);
  X509V3_set_ctx (&v3, c, c, NULL, NULL, 0);
  ext = X509V3_EXT_conf_nid (NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  g_assert_nonnull (ext);
  X509_add_ext (c, ext, -1);
  X509_EXTENSION_free (ext);
  g_assert_cmpint (X509_sign (c, signer, EVP_sha256 ()), >, 0);
  return c;
}

/* DER of a certs-only SignedData holding @certs (may be empty). */
static GBytes *
make_p7_der (X509 **certs, int n)
{
  g_autoptr(PKCS7) p7 = PKCS7_new ();
  unsigned char *der = NULL;
  int len;
  GBytes *b;

  g_assert_true (PKCS7_set_type (p7, NID_pkcs7_signed));
  g_assert_true (PKCS7_content_new (p7, NID_pkcs7_data));
  for (int i = 0; i < n; i++)
    g_assert_true (PKCS7_add_certificate (p7, certs[i]));
  len = i2d_PKCS7 (p7, &der);
  g_assert_cmpint (len, >, 0);
  b = g_bytes_new (der, len);
  OPENSSL_free (der);
  return b;
}

static GBytes *
make_csr (EVP_PKEY *key, const char *cn)
{
  g_autoptr(X509_REQ) req = X509_REQ_new ();
  X509_NAME *name = X509_REQ_get_subject_name (req);
  unsigned char *der = NULL;
  int len;
  GBytes *b;

  X509_REQ_set_version (req, 0);
  X509_NAME_add_entry_by_txt (name, "CN", MBSTRING_UTF8, (const unsigned char *) cn, -1, -1, 0);
  X509_REQ_set_pubkey (req, key);
  g_assert_cmpint (X509_REQ_sign (req, key, EVP_sha256 ()), >, 0);
  len = i2d_X509_REQ (req, &der);
  g_assert_cmpint (len, >, 0);
  b = g_bytes_new (der, len);
  OPENSSL_free (der);
  return b;
}

static char *
b64_wrapped (const guint8 *data, gsize len, const char *eol, guint width)
{
  g_autofree char *b64 = g_base64_encode (data, len);
  GString *s = g_string_new (NULL);
  gsize n = strlen (b64);

  for (gsize i = 0; i < n; i += width)
    {
      g_string_append_len (s, b64 + i, MIN ((gsize) width, n - i));
      g_string_append (s, eol);
    }
  return g_string_free (s, FALSE);
}

static char *
cert_cn (X509 *c)
{
  char buf[256] = "";
  X509_NAME_get_text_by_NID (X509_get_subject_name (c), NID_commonName, buf, sizeof buf);
  return g_strdup (buf);
}

/* ------------------------------------------------------------------------ */
/* p11c_est_parse_certs_only                                                */
/* ------------------------------------------------------------------------ */

typedef struct {
  GBytes *der2;  /* two certs: "EST Test CA", "leaf" */
  GBytes *der0;  /* zero certs */
  GBytes *data;  /* PKCS#7 data, not signed */
} CertsFixture;

static CertsFixture certs_fx;

static void
certs_fixture_init (void)
{
  g_autoptr(EVP_PKEY) cakey = make_key ();
  g_autoptr(EVP_PKEY) leafkey = make_key ();
  X509 *certs[2];
  g_autoptr(PKCS7) p7 = NULL;
  unsigned char *der = NULL;
  int len;

  certs[0] = make_cert (cakey, cakey, "EST Test CA", TRUE);
  certs[1] = make_cert (leafkey, cakey, "leaf", FALSE);
  certs_fx.der2 = make_p7_der (certs, 2);
  certs_fx.der0 = make_p7_der (NULL, 0);
  X509_free (certs[0]);
  X509_free (certs[1]);

  p7 = PKCS7_new ();
  PKCS7_set_type (p7, NID_pkcs7_data);
  ASN1_OCTET_STRING_set (p7->d.data, (const unsigned char *) "hi", 2);
  len = i2d_PKCS7 (p7, &der);
  g_assert_cmpint (len, >, 0);
  certs_fx.data = g_bytes_new (der, len);
  OPENSSL_free (der);
}

typedef enum {
  B_B64_ONE_LINE,
  B_B64_LF,
  B_B64_CRLF,
  B_B64_WHITESPACE,
  B_B64_NO_PADDING,
  B_PEM_PKCS7,
  B_PEM_PKCS7_CRLF,
  B_PEM_NO_END,
  B_EMPTY,
  B_WHITESPACE_ONLY,
  B_GARBAGE_TEXT,
  B_HTML,
  B_BAD_CHAR,
  B_PADDING_IN_MIDDLE,
  B_BAD_LENGTH,
  B_TRUNCATED_DER,
  B_TRAILING_GARBAGE_DER,
  B_ZERO_CERTS,
  B_NOT_SIGNED,
  B_RAW_DER,
} BodyKind;

typedef struct {
  const char *name;
  BodyKind kind;
  int n_certs; /* expected count, -1 = CA_BAD_REPLY */
} CertsCase;

static const CertsCase certs_cases[] = {
  { "b64-one-line",      B_B64_ONE_LINE,         2 },
  { "b64-lf",            B_B64_LF,               2 },
  { "b64-crlf",          B_B64_CRLF,             2 },
  { "b64-whitespace",    B_B64_WHITESPACE,       2 },
  { "b64-no-padding",    B_B64_NO_PADDING,       2 },
  { "pem-pkcs7",         B_PEM_PKCS7,            2 },
  { "pem-pkcs7-crlf",    B_PEM_PKCS7_CRLF,       2 },
  { "pem-no-end",        B_PEM_NO_END,          -1 },
  { "empty",             B_EMPTY,               -1 },
  { "whitespace-only",   B_WHITESPACE_ONLY,     -1 },
  { "garbage-text",      B_GARBAGE_TEXT,        -1 },
  { "html",              B_HTML,                -1 },
  { "bad-char",          B_BAD_CHAR,            -1 },
  { "padding-in-middle", B_PADDING_IN_MIDDLE,   -1 },
  { "bad-length",        B_BAD_LENGTH,          -1 },
  { "truncated-der",     B_TRUNCATED_DER,       -1 },
  { "trailing-garbage",  B_TRAILING_GARBAGE_DER, -1 },
  { "zero-certs",        B_ZERO_CERTS,          -1 },
  { "not-signed-data",   B_NOT_SIGNED,          -1 },
  { "raw-der",           B_RAW_DER,             -1 },
};

static GBytes *
make_body (BodyKind kind)
{
  gsize len;
  const guint8 *der = g_bytes_get_data (certs_fx.der2, &len);
  g_autofree char *one = g_base64_encode (der, len);
  char *s = NULL;

  switch (kind)
    {
    case B_B64_ONE_LINE:
      s = g_strdup (one);
      break;
    case B_B64_LF:
      s = b64_wrapped (der, len, "\n", 64);
      break;
    case B_B64_CRLF:
      s = b64_wrapped (der, len, "\r\n", 76);
      break;
    case B_B64_WHITESPACE:
      {
        g_autofree char *w = b64_wrapped (der, len, " \t\r\n  ", 10);
        s = g_strconcat ("\n\n  ", w, "\n", NULL);
      }
      break;
    case B_B64_NO_PADDING:
      s = g_strdup (one);
      g_strdelimit (s, "=", ' ');
      g_assert_cmpuint (strlen (one) % 4, ==, 0);
      break;
    case B_PEM_PKCS7:
    case B_PEM_PKCS7_CRLF:
    case B_PEM_NO_END:
      {
        const char *eol = kind == B_PEM_PKCS7_CRLF ? "\r\n" : "\n";
        g_autofree char *w = b64_wrapped (der, len, eol, 64);
        s = g_strdup_printf ("-----BEGIN PKCS7-----%s%s%s", eol, w,
                             kind == B_PEM_NO_END ? "" : "-----END PKCS7-----\n");
      }
      break;
    case B_EMPTY:
      return g_bytes_new (NULL, 0);
    case B_WHITESPACE_ONLY:
      s = g_strdup (" \r\n\t\n");
      break;
    case B_GARBAGE_TEXT:
      s = g_strdup ("this is not base64!");
      break;
    case B_HTML:
      s = g_strdup ("<html><body>Internal error</body></html>");
      break;
    case B_BAD_CHAR:
      s = g_strdup (one);
      s[strlen (s) / 2] = '*';
      break;
    case B_PADDING_IN_MIDDLE:
      s = g_strdup (one);
      s[8] = '=';
      break;
    case B_BAD_LENGTH:
      s = g_strndup (one, 4 * 10 + 1);
      break;
    case B_TRUNCATED_DER:
      s = g_base64_encode (der, len / 2);
      break;
    case B_TRAILING_GARBAGE_DER:
      {
        g_autofree guint8 *buf = g_malloc (len + 3);
        memcpy (buf, der, len);
        memcpy (buf + len, "xyz", 3);
        s = g_base64_encode (buf, len + 3);
      }
      break;
    case B_ZERO_CERTS:
      {
        gsize l0;
        const guint8 *d0 = g_bytes_get_data (certs_fx.der0, &l0);
        s = g_base64_encode (d0, l0);
      }
      break;
    case B_NOT_SIGNED:
      {
        gsize ld;
        const guint8 *dd = g_bytes_get_data (certs_fx.data, &ld);
        s = g_base64_encode (dd, ld);
      }
      break;
    case B_RAW_DER:
      return g_bytes_new (der, len);
    default:
      g_assert_not_reached ();
    }
  return g_bytes_new_take (s, strlen (s));
}

static void
test_parse_certs_only (gconstpointer data)
{
  const CertsCase *tc = data;
  g_autoptr(GBytes) body = make_body (tc->kind);
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cX509Stack) certs = NULL;
  gsize len;
  const char *p = g_bytes_get_data (body, &len);

  certs = p11c_est_parse_certs_only (p, len, &error);
  if (tc->n_certs < 0)
    {
      g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY);
      g_assert_null (certs);
      g_test_message ("%s: %s", tc->name, error->message);
    }
  else
    {
      g_autofree char *cn0 = NULL;
      g_autofree char *cn1 = NULL;

      g_assert_no_error (error);
      g_assert_nonnull (certs);
      g_assert_cmpint (sk_X509_num (certs), ==, tc->n_certs);
      cn0 = cert_cn (sk_X509_value (certs, 0));
      cn1 = cert_cn (sk_X509_value (certs, 1));
      g_assert_cmpstr (cn0, ==, "EST Test CA");
      g_assert_cmpstr (cn1, ==, "leaf");
    }
}

static void
test_parse_certs_only_null (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cX509Stack) certs = p11c_est_parse_certs_only (NULL, 10, &error);

  g_assert_null (certs);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY);
  /* NULL error is allowed */
  g_assert_null (p11c_est_parse_certs_only ("!!", 2, NULL));
}

/* ------------------------------------------------------------------------ */
/* p11c_est_parse_retry_after                                               */
/* ------------------------------------------------------------------------ */

#define NOW 1700000000 /* Tue, 14 Nov 2023 22:13:20 GMT */

typedef struct {
  const char *value;
  gboolean ok;
  guint seconds;
} RetryCase;

static const RetryCase retry_cases[] = {
  { "120", TRUE, 120 },
  { "  120  ", TRUE, 120 },
  { "1", TRUE, 1 },
  { "0", TRUE, 1 },                  /* clamped up */
  { "86400", TRUE, 86400 },
  { "86401", TRUE, 86400 },          /* clamped down */
  { "99999999999999999999999999", TRUE, 86400 }, /* huge, no overflow */
  { "-5", FALSE, 0 },                /* not delta-seconds */
  { "+5", FALSE, 0 },
  { "12s", FALSE, 0 },
  { "1.5", FALSE, 0 },
  { "0x10", FALSE, 0 },
  { "", FALSE, 0 },
  { "   ", FALSE, 0 },
  { "soon", FALSE, 0 },
  { "Tue, 14 Nov 2023 22:15:20 GMT", TRUE, 120 },   /* future */
  { "Tue, 14 Nov 2023 22:13:20 GMT", TRUE, 1 },     /* now */
  { "Sun, 06 Nov 1994 08:49:37 GMT", TRUE, 1 },     /* past */
  { "Wed, 15 Nov 2023 22:13:21 GMT", TRUE, 86400 }, /* > 1 day */
  { "Tuesday, 14-Nov-23 22:14:20 GMT", TRUE, 60 },  /* RFC 850 */
  { "Tue Nov 14 22:13:50 2023", TRUE, 30 },         /* asctime */
  { "Tue Nov  4 22:13:50 2023", TRUE, 1 },          /* asctime, padded day */
  { "Tue, 14 Nov 2023 22:15:20 UTC", FALSE, 0 },
  { "Tue, 14 Nov 2023 22:15:20", FALSE, 0 },
  { "Tue, 14 Nov 2023 22:15:20 GMT junk", FALSE, 0 },
  { "Tue, 31 Feb 2023 22:15:20 GMT", FALSE, 0 },
  { "Tue, 14 Foo 2023 22:15:20 GMT", FALSE, 0 },
  { "Tue, 14 Nov 2023 25:15:20 GMT", FALSE, 0 },
  { "tue, 14 nov 2023 22:15:20 gmt", FALSE, 0 },    /* case-sensitive */
  { "Xyz, 14 Nov 2023 22:15:20 GMT", FALSE, 0 },
  { "Tue, 1 Nov 2023 22:15:20 GMT", FALSE, 0 },
  { "Tue, 14 Nov 2023 22:15:2", FALSE, 0 },
  { "Tue,", FALSE, 0 },
};

static void
test_parse_retry_after (void)
{
  guint secs;

  for (gsize i = 0; i < G_N_ELEMENTS (retry_cases); i++)
    {
      const RetryCase *tc = &retry_cases[i];
      gboolean ok;

      secs = 4242;
      ok = p11c_est_parse_retry_after (tc->value, NOW, &secs);
      g_test_message ("Retry-After \"%s\" → %d %u", tc->value, ok, secs);
      g_assert_cmpint (ok, ==, tc->ok);
      if (ok)
        g_assert_cmpuint (secs, ==, tc->seconds);
      else
        g_assert_cmpuint (secs, ==, 4242); /* untouched */
    }
  g_assert_false (p11c_est_parse_retry_after (NULL, NOW, &secs));
  /* any @now works, without overflow */
  g_assert_true (p11c_est_parse_retry_after ("Tue, 14 Nov 2023 22:15:20 GMT", G_MININT64, &secs));
  g_assert_cmpuint (secs, ==, 86400);
  g_assert_true (p11c_est_parse_retry_after ("Tue, 14 Nov 2023 22:15:20 GMT", G_MAXINT64, &secs));
  g_assert_cmpuint (secs, ==, 1);
  g_assert_true (p11c_est_parse_retry_after ("Fri, 31 Dec 9999 23:59:59 GMT", 0, &secs));
  g_assert_cmpuint (secs, ==, 86400);
  g_assert_true (p11c_est_parse_retry_after ("5", NOW, NULL));
}

/* ------------------------------------------------------------------------ */
/* p11c_est_content_type_is_pkcs7                                           */
/* ------------------------------------------------------------------------ */

static void
test_content_type (void)
{
  static const struct { const char *ct; gboolean ok; } cases[] = {
    { "application/pkcs7-mime", TRUE },
    { "application/pkcs7-mime; smime-type=certs-only", TRUE },
    { "application/pkcs7-mime;smime-type=CertsOnly", TRUE },
    { "Application/PKCS7-MIME", TRUE },
    { "  application/pkcs7-mime  ; smime-type=certs-only", TRUE },
    { "application/pkcs7-mime ", TRUE },
    { "application/x-pkcs7-mime", TRUE },
    { "application/pkcs7-mimex", FALSE },
    { "application/pkcs7-signature", FALSE },
    { "application/pkcs7", FALSE },
    { "application/pkcs10", FALSE },
    { "text/plain", FALSE },
    { "text/plain; x=application/pkcs7-mime", FALSE },
    { "", FALSE },
    { ";", FALSE },
    { NULL, FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_test_message ("Content-Type \"%s\"", cases[i].ct ? cases[i].ct : "(null)");
      g_assert_cmpint (p11c_est_content_type_is_pkcs7 (cases[i].ct), ==, cases[i].ok);
    }
}

/* ------------------------------------------------------------------------ */
/* Argument checks that need no server                                      */
/* ------------------------------------------------------------------------ */

static void
test_bad_profile (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cX509Stack) certs = NULL;
  g_autofree char *ta = NULL;
  P11cEstServer srv = { .url = "https://127.0.0.1:1", .trust_anchor = NULL };
  int fd;

  /* no trust anchor: refused before connecting */
  certs = p11c_est_get_cacerts (&srv, NULL, &error);
  g_assert_null (certs);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
  g_clear_error (&error);

  fd = g_file_open_tmp ("est-ta-XXXXXX.pem", &ta, NULL);
  g_assert_cmpint (fd, >=, 0);
  close (fd);
  srv.trust_anchor = ta;

  srv.url = "http://127.0.0.1:1";
  g_assert_null (p11c_est_get_cacerts (&srv, NULL, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
  g_clear_error (&error);

  srv.url = "https://user:secret@127.0.0.1:1";
  g_assert_null (p11c_est_get_cacerts (&srv, NULL, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
  g_assert_null (strstr (error->message, "secret"));
  g_clear_error (&error);

  srv.url = "https://127.0.0.1:1";
  srv.label = "a/b";
  g_assert_null (p11c_est_get_cacerts (&srv, NULL, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
  g_clear_error (&error);
  srv.label = NULL;

  /* a CSR that does not parse is refused before connecting */
  {
    X509 *cert = NULL;
    guint ra = 7;
    g_assert_false (p11c_est_enroll (&srv, FALSE, (const guint8 *) "nope", 4, "a", "b",
                                     NULL, &cert, &ra, &error));
    g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
    g_assert_null (cert);
    g_clear_error (&error);
  }

  /* already cancelled */
  {
    g_autoptr(GCancellable) c = g_cancellable_new ();
    g_cancellable_cancel (c);
    g_assert_null (p11c_est_get_cacerts (&srv, c, &error));
    g_assert_error (error, P11C_ERROR, P11C_ERROR_CANCELLED);
    g_clear_error (&error);
  }
  g_unlink (ta);
}

/* ------------------------------------------------------------------------ */
/* Integration against tests/est/estserver.py                               */
/* ------------------------------------------------------------------------ */

typedef struct {
  char *dir;
  guint port;
  char *url;
  char *ca;
  GPid pid;     /* when we started the server ourselves */
  char *tmpdir; /* ditto */
} EstEnv;

static EstEnv est;

static gboolean
est_available (void)
{
  if (est.url != NULL)
    return TRUE;
  if (g_strcmp0 (g_getenv ("EST_REQUIRED"), "1") == 0)
    g_test_fail_printf ("EST_REQUIRED=1 but no EST server (set EST_DIR and EST_PORT, or EST_SERVER)");
  else
    g_test_skip ("no EST server: set EST_DIR and EST_PORT, or EST_SERVER");
  return FALSE;
}

static void
write_json (const char *name, const char *json)
{
  g_autofree char *path = g_build_filename (est.dir, name, NULL);
  g_autofree char *tmp = g_strconcat (path, ".tmp", NULL);
  g_autoptr(GError) error = NULL;

  g_assert_true (g_file_set_contents (tmp, json, -1, &error));
  g_assert_no_error (error);
  g_assert_cmpint (g_rename (tmp, path), ==, 0);
}

static void
set_control (const char *json)
{
  write_json ("control.json", json ? json : "{}");
}

static void
server_init (P11cEstServer *srv)
{
  *srv = (P11cEstServer) {
    .url = est.url,
    .trust_anchor = est.ca,
    .connect_timeout = 5,
    .timeout = 10,
  };
}

static guint otp_counter;

/* A fresh user with one OTP; returns the OTP. */
static char *
new_user (const char *login)
{
  g_autofree char *otp = g_strdup_printf ("OTP-%u-%u", (guint) getpid (), ++otp_counter);
  g_autofree char *json = g_strdup_printf ("{\"%s\":{\"otps\":[\"%s\"]}}", login, otp);

  write_json ("users.json", json);
  return g_steal_pointer (&otp);
}

static void
test_int_cacerts (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cX509Stack) certs = NULL;
  g_autoptr(BIO) bio = NULL;
  g_autoptr(X509) ca = NULL;
  P11cEstServer srv;

  if (!est_available ())
    return;
  set_control (NULL);
  server_init (&srv);
  certs = p11c_est_get_cacerts (&srv, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (certs);
  g_assert_cmpint (sk_X509_num (certs), >=, 1);

  /* the CA in ca.pem is among them */
  bio = BIO_new_file (est.ca, "r");
  g_assert_nonnull (bio);
  ca = PEM_read_bio_X509 (bio, NULL, NULL, NULL);
  g_assert_nonnull (ca);
  {
    gboolean found = FALSE;
    for (int i = 0; i < sk_X509_num (certs); i++)
      found |= X509_cmp (sk_X509_value (certs, i), ca) == 0;
    g_assert_true (found);
  }
}

static gboolean
do_enroll (const P11cEstServer *srv, const char *login, const char *otp, EVP_PKEY *key,
           GCancellable *cancel, X509 **cert, guint *retry_after, GError **error)
{
  g_autoptr(GBytes) csr = make_csr (key, login);
  gsize len;
  const guint8 *der = g_bytes_get_data (csr, &len);

  return p11c_est_enroll (srv, FALSE, der, len, login, otp, cancel, cert, retry_after, error);
}

static void
test_int_enroll_ok (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autofree char *otp = NULL;
  g_autofree char *cn = NULL;
  guint ra = 99;
  P11cEstServer srv;

  if (!est_available ())
    return;
  set_control (NULL);
  otp = new_user ("alice");
  server_init (&srv);
  g_assert_true (do_enroll (&srv, "alice", otp, key, NULL, &cert, &ra, &error));
  g_assert_no_error (error);
  g_assert_nonnull (cert);
  g_assert_cmpuint (ra, ==, 0);
  g_assert_cmpint (EVP_PKEY_eq (X509_get0_pubkey (cert), key), ==, 1);
  cn = cert_cn (cert);
  g_test_message ("issued CN=%s", cn);
  g_clear_pointer (&cert, X509_free);

  /* the one-time password worked once */
  g_assert_false (do_enroll (&srv, "alice", otp, key, NULL, &cert, &ra, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED);
  g_assert_null (cert);
}

static void
test_int_wrong_otp (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autofree char *otp = NULL;
  guint ra = 99;
  P11cEstServer srv;

  if (!est_available ())
    return;
  set_control (NULL);
  otp = new_user ("bob");
  server_init (&srv);
  g_assert_false (do_enroll (&srv, "bob", "WRONG-OTP", key, NULL, &cert, &ra, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED);
  g_assert_nonnull (strstr (error->message, "one-time password"));
  g_assert_null (strstr (error->message, "WRONG-OTP"));
  g_assert_null (cert);
  g_test_message ("%s", error->message);
  g_clear_error (&error);

  /* unknown user */
  g_assert_false (do_enroll (&srv, "mallory", otp, key, NULL, &cert, &ra, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED);
}

static void
test_int_error_500 (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autofree char *otp = NULL;
  guint ra = 99;
  P11cEstServer srv;

  if (!est_available ())
    return;
  set_control ("{\"error_500\":1}");
  otp = new_user ("carol");
  server_init (&srv);
  g_assert_false (do_enroll (&srv, "carol", otp, key, NULL, &cert, &ra, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE);
  g_assert_nonnull (strstr (error->message, est.url));
  g_test_message ("%s", error->message);
  g_clear_error (&error);

  /* the OTP was not used up: the next try works */
  set_control (NULL);
  g_assert_true (do_enroll (&srv, "carol", otp, key, NULL, &cert, &ra, &error));
  g_assert_no_error (error);
  g_assert_nonnull (cert);

  set_control ("{\"error_500\":1,\"apply_to_cacerts\":1}");
  {
    g_autoptr(P11cX509Stack) certs = p11c_est_get_cacerts (&srv, NULL, &error);
    g_assert_null (certs);
    g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE);
  }
  set_control (NULL);
}

static void
test_int_accepted_202 (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autofree char *otp = NULL;
  guint ra = 0;
  P11cEstServer srv;

  if (!est_available ())
    return;
  set_control ("{\"accepted_202\":1,\"retry_after\":2}");
  otp = new_user ("dave");
  server_init (&srv);
  g_assert_true (do_enroll (&srv, "dave", otp, key, NULL, &cert, &ra, &error));
  g_assert_no_error (error);
  g_assert_null (cert);
  g_assert_cmpuint (ra, ==, 2);
  set_control (NULL);
}

static void
test_int_slow_timeout (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autofree char *otp = NULL;
  P11cEstServer srv;
  gint64 t0, dt;
  guint ra;

  if (!est_available ())
    return;
  set_control ("{\"slow\":1,\"slow_seconds\":5}");
  otp = new_user ("frank");
  server_init (&srv);
  srv.timeout = 1;
  t0 = g_get_monotonic_time ();
  g_assert_false (do_enroll (&srv, "frank", otp, key, NULL, &cert, &ra, &error));
  dt = g_get_monotonic_time () - t0;
  g_assert_null (cert);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE);
  g_test_message ("%s (after %" G_GINT64_FORMAT " ms)", error->message, dt / 1000);
  g_assert_nonnull (strstr (error->message, "within 1 s"));
  g_assert_nonnull (strstr (error->message, est.url));
  g_assert_cmpint (dt, >=, 900 * 1000);
  g_assert_cmpint (dt, <, 2500 * 1000);
  set_control (NULL);
}

static gboolean
cancel_cb (gpointer data)
{
  g_cancellable_cancel (data);
  return G_SOURCE_REMOVE;
}

static gpointer
cancel_thread (gpointer data)
{
  g_usleep (300 * 1000);
  cancel_cb (data);
  return NULL;
}

static void
test_int_cancel (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autoptr(GCancellable) cancel = g_cancellable_new ();
  g_autofree char *otp = NULL;
  GThread *th;
  P11cEstServer srv;
  gint64 t0, dt;
  guint ra;

  if (!est_available ())
    return;
  set_control ("{\"slow\":1,\"slow_seconds\":3}");
  otp = new_user ("grace");
  server_init (&srv);
  th = g_thread_new ("cancel", cancel_thread, cancel);
  t0 = g_get_monotonic_time ();
  g_assert_false (do_enroll (&srv, "grace", otp, key, cancel, &cert, &ra, &error));
  dt = g_get_monotonic_time () - t0;
  g_thread_join (th);
  g_assert_null (cert);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CANCELLED);
  g_test_message ("%s (after %" G_GINT64_FORMAT " ms)", error->message, dt / 1000);
  g_assert_cmpint (dt, <, 1500 * 1000);
  set_control (NULL);
}

static void
enroll_expect (const char *control, const char *login, P11cError code)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autofree char *otp = NULL;
  guint ra;
  P11cEstServer srv;

  set_control (control);
  otp = new_user (login);
  server_init (&srv);
  /* Basic: one request per attempt.  (With a probe first, the request
   * after it travels on the reused connection, and curl repeats a request
   * whose reused connection closed without a byte of reply.) */
  srv.auth = P11C_EST_AUTH_BASIC;
  g_assert_false (do_enroll (&srv, login, otp, key, NULL, &cert, &ra, &error));
  g_assert_error (error, P11C_ERROR, (gint) code);
  g_assert_null (cert);
  g_test_message ("%s: %s", control, error->message);
  set_control (NULL);
}

static void
test_int_garbage (void)
{
  if (!est_available ())
    return;
  enroll_expect ("{\"garbage_base64\":1}", "erin", P11C_ERROR_CA_BAD_REPLY);
  enroll_expect ("{\"wrong_content_type\":1}", "erin", P11C_ERROR_CA_BAD_REPLY);
  /* a certificate for some other key is useless */
  enroll_expect ("{\"wrong_key\":1}", "erin", P11C_ERROR_CA_BAD_REPLY);
}

static void
test_int_close_connection (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cX509Stack) certs = NULL;
  P11cEstServer srv;

  if (!est_available ())
    return;
  enroll_expect ("{\"close_connection\":1}", "heidi", P11C_ERROR_CA_UNREACHABLE);

  set_control ("{\"close_connection\":1,\"apply_to_cacerts\":1}");
  server_init (&srv);
  certs = p11c_est_get_cacerts (&srv, NULL, &error);
  g_assert_null (certs);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE);
  g_test_message ("%s", error->message);
  set_control (NULL);
}

static void
test_int_digest (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autofree char *otp = NULL;
  guint ra = 99;
  P11cEstServer srv;

  if (!est_available ())
    return;
  set_control ("{\"auth\":\"digest\"}");
  otp = new_user ("ivan");
  server_init (&srv);
  g_assert_false (do_enroll (&srv, "ivan", "WRONG", key, NULL, &cert, &ra, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED);
  g_clear_error (&error);
  g_assert_true (do_enroll (&srv, "ivan", otp, key, NULL, &cert, &ra, &error));
  g_assert_no_error (error);
  g_assert_nonnull (cert);
  g_assert_cmpint (EVP_PKEY_eq (X509_get0_pubkey (cert), key), ==, 1);
  set_control (NULL);
}

/* Requests for @login in requests.log since @skip lines: total, and those
 * that carried credentials. */
static guint
count_requests (const char *login, guint skip, guint *with_credentials)
{
  g_autofree char *path = g_build_filename (est.dir, "requests.log", NULL);
  g_autofree char *data = NULL;
  g_auto(GStrv) lines = NULL;
  g_autofree char *needle = g_strdup_printf ("\"login\": \"%s\"", login);
  guint n = 0, cred = 0;

  if (!g_file_get_contents (path, &data, NULL, NULL))
    data = g_strdup ("");
  lines = g_strsplit (data, "\n", -1);
  for (guint i = skip; lines[i] != NULL; i++)
    {
      if (strstr (lines[i], "\"op\": \"simpleenroll\"") == NULL)
        continue;
      /* a request without credentials has no login; count it as ours */
      if (strstr (lines[i], "\"credentials\": null") != NULL)
        n++;
      else if (strstr (lines[i], needle) != NULL)
        n++, cred++;
    }
  if (with_credentials)
    *with_credentials = cred;
  return n;
}

static guint
log_lines (void)
{
  g_autofree char *path = g_build_filename (est.dir, "requests.log", NULL);
  g_autofree char *data = NULL;
  guint n = 0;

  if (g_file_get_contents (path, &data, NULL, NULL))
    for (const char *c = data; *c; c++)
      n += *c == '\n';
  return n;
}

/* One enrollment with @auth against the server as @control sets it up:
 * success expected or not; the requests it made (total / with credentials). */
static void
auth_case (const char *control, P11cEstAuth auth, gboolean right_otp, gboolean expect_ok,
           guint expect_requests, guint expect_credentialed, const char *expect_words)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autofree char *otp = NULL;
  guint ra = 99, skip, n, cred = 0;
  P11cEstServer srv;

  set_control (control);
  otp = new_user ("kim");
  server_init (&srv);
  srv.auth = auth;
  skip = log_lines ();
  g_assert_cmpint (do_enroll (&srv, "kim", right_otp ? otp : "WRONG-OTP", key, NULL, &cert, &ra, &error),
                   ==, expect_ok);
  if (expect_ok)
    {
      g_assert_no_error (error);
      g_assert_nonnull (cert);
      g_assert_cmpint (EVP_PKEY_eq (X509_get0_pubkey (cert), key), ==, 1);
    }
  else
    {
      g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED);
      g_test_message ("%s: %s", p11c_est_auth_to_string (auth), error->message);
      g_assert_nonnull (strstr (error->message, expect_words));
      g_assert_null (strstr (error->message, otp));
    }
  /* the server logs a request just after its reply */
  for (int i = 0; i < 500 && (n = count_requests ("kim", skip, &cred)) < expect_requests; i++)
    g_usleep (10 * 1000);
  g_assert_cmpuint (n, ==, expect_requests);
  g_assert_cmpuint (cred, ==, expect_credentialed);
  set_control (NULL);
}

static void
test_int_auth_modes (void)
{
  static const char *strict_digest = "{\"auth\":\"digest\",\"strict\":true}";
  static const char *basic = "{\"auth\":\"basic\"}";

  if (!est_available ())
    return;
  /* basic: the login goes out at once, one request */
  auth_case (basic, P11C_EST_AUTH_BASIC, TRUE, TRUE, 1, 1, NULL);
  /* auto against Basic: a probe without credentials, then Basic */
  auth_case (basic, P11C_EST_AUTH_AUTO, TRUE, TRUE, 2, 1, NULL);
  /* the strict Digest server: Basic gets a bare 401 and the profile is
   * told to use Digest */
  auth_case (strict_digest, P11C_EST_AUTH_BASIC, TRUE, FALSE, 1, 1, "http-auth=");
  auth_case (strict_digest, P11C_EST_AUTH_DIGEST, TRUE, TRUE, 2, 1, NULL);
  auth_case (strict_digest, P11C_EST_AUTH_AUTO, TRUE, TRUE, 2, 1, NULL);
  /* a wrong one-time password: exactly one request carries it */
  auth_case (strict_digest, P11C_EST_AUTH_AUTO, FALSE, FALSE, 2, 1, "one-time password");
  auth_case (strict_digest, P11C_EST_AUTH_DIGEST, FALSE, FALSE, 2, 1, "one-time password");
  auth_case (basic, P11C_EST_AUTH_AUTO, FALSE, FALSE, 2, 1, "one-time password");
  auth_case (basic, P11C_EST_AUTH_BASIC, FALSE, FALSE, 1, 1, "one-time password");
  /* digest only, against a Basic server: the password is never sent */
  auth_case (basic, P11C_EST_AUTH_DIGEST, TRUE, FALSE, 1, 0, "not sent");
}

static void
test_auth_names (void)
{
  P11cEstAuth a = 99;

  g_assert_true (p11c_est_auth_from_string ("digest", &a));
  g_assert_cmpint (a, ==, P11C_EST_AUTH_DIGEST);
  g_assert_true (p11c_est_auth_from_string ("auto", &a));
  g_assert_cmpint (a, ==, P11C_EST_AUTH_AUTO);
  g_assert_false (p11c_est_auth_from_string ("Basic", &a));
  g_assert_false (p11c_est_auth_from_string (NULL, &a));
  g_assert_cmpstr (p11c_est_auth_to_string (P11C_EST_AUTH_BASIC), ==, "basic");
}

static void
test_int_reenroll (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(X509) cert = NULL;
  g_autoptr(X509) cert2 = NULL;
  g_autoptr(EVP_PKEY) key = make_key ();
  g_autoptr(EVP_PKEY) key2 = make_key ();
  g_autoptr(GBytes) csr2 = make_csr (key2, "judy");
  g_autofree char *otp = NULL;
  const guint8 *der;
  gsize len;
  guint ra = 99;
  P11cEstServer srv;

  if (!est_available ())
    return;
  set_control (NULL);
  otp = new_user ("judy");
  server_init (&srv);
  g_assert_true (do_enroll (&srv, "judy", otp, key, NULL, &cert, &ra, &error));
  g_assert_no_error (error);
  der = g_bytes_get_data (csr2, &len);

  /* without a client certificate the CA says no */
  g_assert_false (p11c_est_enroll (&srv, TRUE, der, len, NULL, NULL, NULL, &cert2, &ra, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED);
  g_test_message ("%s", error->message);
  g_clear_error (&error);

  /* a key that does not belong to the certificate is refused locally */
  srv.client_cert = cert;
  srv.client_key = key2;
  g_assert_false (p11c_est_enroll (&srv, TRUE, der, len, NULL, NULL, NULL, &cert2, &ra, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_FAILED);
  g_test_message ("%s", error->message);
  g_clear_error (&error);

  /* with the current certificate and key: a new certificate for key2 */
  srv.client_key = key;
  g_assert_true (p11c_est_enroll (&srv, TRUE, der, len, NULL, NULL, NULL, &cert2, &ra, &error));
  g_assert_no_error (error);
  g_assert_nonnull (cert2);
  g_assert_cmpint (EVP_PKEY_eq (X509_get0_pubkey (cert2), key2), ==, 1);
}

static void
test_int_wrong_trust_anchor (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cX509Stack) certs = NULL;
  g_autofree char *other = g_build_filename (est.dir ? est.dir : ".", "other-ca.pem", NULL);
  P11cEstServer srv;

  if (!est_available ())
    return;
  set_control (NULL);
  if (!g_file_test (other, G_FILE_TEST_EXISTS))
    {
      /* make one: a self-signed CA nobody signed the server with */
      g_autoptr(EVP_PKEY) k = make_key ();
      g_autoptr(X509) c = make_cert (k, k, "Other CA", TRUE);
      g_autoptr(BIO) bio = BIO_new_file (other, "w");
      g_assert_nonnull (bio);
      g_assert_true (PEM_write_bio_X509 (bio, c));
    }
  server_init (&srv);
  srv.trust_anchor = other;
  certs = p11c_est_get_cacerts (&srv, NULL, &error);
  g_assert_null (certs);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, "not trusted"));
}

static guint
free_port (void)
{
  struct sockaddr_in sa = { .sin_family = AF_INET };
  socklen_t sl = sizeof sa;
  int fd = socket (AF_INET, SOCK_STREAM, 0);
  guint port;

  g_assert_cmpint (fd, >=, 0);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_cmpint (bind (fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *) &sa, &sl), ==, 0);
  port = ntohs (sa.sin_port);
  close (fd); /* nothing listens there now */
  return port;
}

static void
test_int_nothing_listening (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cX509Stack) certs = NULL;
  g_autofree char *url = g_strdup_printf ("https://127.0.0.1:%u", free_port ());
  P11cEstServer srv;
  gint64 t0;

  if (!est_available ())
    return;
  server_init (&srv);
  srv.url = url;
  t0 = g_get_monotonic_time ();
  certs = p11c_est_get_cacerts (&srv, NULL, &error);
  g_assert_null (certs);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE);
  g_assert_nonnull (strstr (error->message, url));
  g_test_message ("%s", error->message);
  g_assert_cmpint (g_get_monotonic_time () - t0, <, 2 * G_USEC_PER_SEC);
}

/* --- server setup -------------------------------------------------------- */

static guint
read_ready_port (const char *ready)
{
  g_autofree char *contents = NULL;
  g_autoptr(GRegex) re = g_regex_new ("([0-9]{2,5})", 0, 0, NULL);
  g_autoptr(GMatchInfo) mi = NULL;
  g_autofree char *num = NULL;

  if (!g_file_get_contents (ready, &contents, NULL, NULL))
    return 0;
  /* either a bare port or JSON like {"port": 12345}: take the last number */
  if (!g_regex_match (re, contents, 0, &mi))
    return 0;
  while (g_match_info_matches (mi))
    {
      g_free (num);
      num = g_match_info_fetch (mi, 1);
      g_match_info_next (mi, NULL);
    }
  return num ? (guint) g_ascii_strtoull (num, NULL, 10) : 0;
}

static void
est_setup (void)
{
  const char *dir = g_getenv ("EST_DIR");
  const char *port = g_getenv ("EST_PORT");
  const char *server = g_getenv ("EST_SERVER");

  if (dir && *dir && port && *port)
    {
      est.dir = g_strdup (dir);
      est.port = (guint) g_ascii_strtoull (port, NULL, 10);
    }
  else if (server && *server)
    {
      g_autoptr(GError) error = NULL;
      g_autofree char *ready = NULL;
      const char *python = g_file_test ("/usr/bin/python3", G_FILE_TEST_IS_EXECUTABLE)
                           ? "/usr/bin/python3" : "python3";
      char *argv[] = { (char *) python, (char *) server, "--dir", NULL, "--port", "0",
                       "--ready-file", NULL, NULL };

      est.tmpdir = g_dir_make_tmp ("test-est-XXXXXX", &error);
      g_assert_no_error (error);
      est.dir = g_strdup (est.tmpdir);
      ready = g_build_filename (est.tmpdir, "ready", NULL);
      argv[3] = est.dir;
      argv[7] = ready;
      if (!g_spawn_async (NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                          NULL, NULL, &est.pid, &error))
        {
          g_printerr ("cannot start %s: %s\n", server, error->message);
          return;
        }
      for (int i = 0; i < 200 && (est.port = read_ready_port (ready)) == 0; i++)
        g_usleep (50 * 1000);
      if (est.port == 0)
        {
          g_printerr ("%s did not get ready within 10 s\n", server);
          return;
        }
    }
  else
    return;

  est.url = g_strdup_printf ("https://127.0.0.1:%u", est.port);
  est.ca = g_build_filename (est.dir, "ca.pem", NULL);
}

static void
est_teardown (void)
{
  if (est.pid > 0)
    {
      kill (est.pid, SIGTERM);
      waitpid (est.pid, NULL, 0);
      g_spawn_close_pid (est.pid);
    }
  if (est.tmpdir)
    {
      g_autoptr(GFile) f = g_file_new_for_path (est.tmpdir);
      g_autoptr(GFileEnumerator) en = g_file_enumerate_children (f, G_FILE_ATTRIBUTE_STANDARD_NAME,
                                                                G_FILE_QUERY_INFO_NOFOLLOW_SYMLINKS,
                                                                NULL, NULL);
      GFileInfo *info;

      while (en && (info = g_file_enumerator_next_file (en, NULL, NULL)) != NULL)
        {
          g_autoptr(GFile) child = g_file_get_child (f, g_file_info_get_name (info));
          g_file_delete (child, NULL, NULL);
          g_object_unref (info);
        }
      g_rmdir (est.tmpdir);
    }
  g_free (est.dir);
  g_free (est.url);
  g_free (est.ca);
  g_free (est.tmpdir);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  certs_fixture_init ();
  est_setup ();

  for (gsize i = 0; i < G_N_ELEMENTS (certs_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/est/parse-certs-only/%s", certs_cases[i].name);
      g_test_add_data_func (path, &certs_cases[i], test_parse_certs_only);
    }
  g_test_add_func ("/est/parse-certs-only/null", test_parse_certs_only_null);
  g_test_add_func ("/est/parse-retry-after", test_parse_retry_after);
  g_test_add_func ("/est/content-type", test_content_type);
  g_test_add_func ("/est/bad-profile", test_bad_profile);
  g_test_add_func ("/est/auth-names", test_auth_names);

  g_test_add_func ("/est/server/cacerts", test_int_cacerts);
  g_test_add_func ("/est/server/enroll-ok", test_int_enroll_ok);
  g_test_add_func ("/est/server/wrong-otp", test_int_wrong_otp);
  g_test_add_func ("/est/server/error-500", test_int_error_500);
  g_test_add_func ("/est/server/accepted-202", test_int_accepted_202);
  g_test_add_func ("/est/server/slow-timeout", test_int_slow_timeout);
  g_test_add_func ("/est/server/cancel", test_int_cancel);
  g_test_add_func ("/est/server/garbage", test_int_garbage);
  g_test_add_func ("/est/server/close-connection", test_int_close_connection);
  g_test_add_func ("/est/server/digest", test_int_digest);
  g_test_add_func ("/est/server/auth-modes", test_int_auth_modes);
  g_test_add_func ("/est/server/reenroll", test_int_reenroll);
  g_test_add_func ("/est/server/wrong-trust-anchor", test_int_wrong_trust_anchor);
  g_test_add_func ("/est/server/nothing-listening", test_int_nothing_listening);

  rc = g_test_run ();

  est_teardown ();
  g_bytes_unref (certs_fx.der2);
  g_bytes_unref (certs_fx.der0);
  g_bytes_unref (certs_fx.data);
  return rc;
}
