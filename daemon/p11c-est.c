/* p11c-est — EST client (RFC 7030) over libcurl.  See p11c-est.h. */
#define G_LOG_DOMAIN "p11c-est"

#include "p11c-est.h"
#include "p11c-error.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>

#ifndef P11C_VERSION
#define P11C_VERSION "0"
#endif

#define DEFAULT_CONNECT_TIMEOUT 10
#define DEFAULT_TIMEOUT 60
#define ERROR_BODY_MAX 200

G_DEFINE_AUTOPTR_CLEANUP_FUNC (CURL, curl_easy_cleanup)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (CURLU, curl_url_cleanup)

static void
curl_slist_cleanup (struct curl_slist *l)
{
  curl_slist_free_all (l);
}
typedef struct curl_slist P11cCurlSlist;
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cCurlSlist, curl_slist_cleanup)

static void
curl_string_clear (char **s)
{
  g_clear_pointer (s, curl_free);
}
#define p11c_autocurlstr __attribute__((cleanup (curl_string_clear))) char *

static const char *const auth_names[] = { "auto", "basic", "digest" };

gboolean
p11c_est_auth_from_string (const char *name, P11cEstAuth *out)
{
  for (gsize i = 0; name != NULL && i < G_N_ELEMENTS (auth_names); i++)
    if (g_str_equal (name, auth_names[i]))
      {
        *out = (P11cEstAuth) i;
        return TRUE;
      }
  return FALSE;
}

const char *
p11c_est_auth_to_string (P11cEstAuth auth)
{
  return (gsize) auth < G_N_ELEMENTS (auth_names) ? auth_names[auth] : "auto";
}

/* ------------------------------------------------------------------------ */
/* Pure parsers                                                             */
/* ------------------------------------------------------------------------ */

gboolean
p11c_est_content_type_is_pkcs7 (const char *content_type)
{
  static const char *const types[] = { "application/pkcs7-mime", "application/x-pkcs7-mime" };
  const char *p = content_type;

  if (p == NULL)
    return FALSE;
  while (*p == ' ' || *p == '\t')
    p++;
  for (gsize i = 0; i < G_N_ELEMENTS (types); i++)
    {
      gsize n = strlen (types[i]);
      const char *q;

      if (g_ascii_strncasecmp (p, types[i], n) != 0)
        continue;
      q = p + n;
      while (*q == ' ' || *q == '\t')
        q++;
      if (*q == '\0' || *q == ';')
        return TRUE;
    }
  return FALSE;
}

static gboolean
is_b64_char (guchar c)
{
  return g_ascii_isalnum (c) || c == '+' || c == '/';
}

static gboolean
is_ws (guchar c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Find @needle in the first @len bytes of @hay (not NUL-terminated). */
static const char *
mem_find (const char *hay, gsize len, const char *needle)
{
  gsize n = strlen (needle);

  if (n == 0 || len < n)
    return NULL;
  for (gsize i = 0; i + n <= len; i++)
    if (hay[i] == needle[0] && memcmp (hay + i, needle, n) == 0)
      return hay + i;
  return NULL;
}

P11cX509Stack *
p11c_est_parse_certs_only (const char *body, gsize len, GError **error)
{
  static const char *const pem_labels[] = { "PKCS7", "PKCS #7 SIGNED DATA", "CMS" };
  g_autoptr(GString) b64 = NULL;
  g_autofree guchar *der = NULL;
  g_autoptr(PKCS7) p7 = NULL;
  g_autoptr(P11cX509Stack) out = NULL;
  const unsigned char *p;
  STACK_OF(X509) *certs;
  gsize der_len = 0, pad = 0;

  if (body == NULL)
    len = 0;

  /* Optional PEM armour: keep only what lies between BEGIN and END. */
  for (gsize i = 0; i < G_N_ELEMENTS (pem_labels) && len > 0; i++)
    {
      g_autofree char *begin = g_strdup_printf ("-----BEGIN %s-----", pem_labels[i]);
      g_autofree char *end = g_strdup_printf ("-----END %s-----", pem_labels[i]);
      const char *b = mem_find (body, len, begin);
      const char *e;

      if (b == NULL)
        continue;
      b += strlen (begin);
      e = mem_find (b, len - (gsize) (b - body), end);
      if (e == NULL)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                       "The CA's reply has a PEM \"%s\" header but no end line", begin);
          return NULL;
        }
      len = (gsize) (e - b);
      body = b;
      break;
    }

  b64 = g_string_sized_new (len);
  for (gsize i = 0; i < len; i++)
    {
      guchar c = (guchar) body[i];

      if (is_ws (c))
        continue;
      if (c == '=')
        {
          pad++;
          continue;
        }
      if (pad > 0 && is_b64_char (c))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                       "The CA's reply is not valid base64 (data after '=' padding at offset %" G_GSIZE_FORMAT ")",
                       i);
          return NULL;
        }
      if (!is_b64_char (c))
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                       "The CA's reply is not base64 (unexpected byte 0x%02x at offset %" G_GSIZE_FORMAT ")",
                       c, i);
          return NULL;
        }
      g_string_append_c (b64, (char) c);
    }
  if (b64->len == 0)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                           "The CA's reply is empty: no certificates");
      return NULL;
    }
  /* padding is optional, but if present it must complete the last group */
  if (b64->len % 4 == 1 || pad > 2 || (pad > 0 && (b64->len + pad) % 4 != 0))
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                           "The CA's reply is not valid base64 (bad length or padding)");
      return NULL;
    }
  while (b64->len % 4 != 0)
    g_string_append_c (b64, '=');

  der = g_base64_decode (b64->str, &der_len);
  if (der == NULL || der_len == 0 || der_len > G_MAXLONG)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                           "The CA's reply is not valid base64");
      return NULL;
    }

  p = der;
  ERR_clear_error ();
  p7 = d2i_PKCS7 (NULL, &p, (long) der_len);
  if (p7 == NULL)
    {
      g_autofree char *detail = p11c_openssl_error_string ();
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The CA's reply is not a PKCS#7 structure (%s)", detail);
      return NULL;
    }
  if (p != der + der_len)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The CA's reply has %" G_GSIZE_FORMAT " bytes of garbage after the PKCS#7 structure",
                   der_len - (gsize) (p - der));
      return NULL;
    }
  if (!PKCS7_type_is_signed (p7) || p7->d.sign == NULL)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                           "The CA's reply is PKCS#7 but not a certs-only SignedData");
      return NULL;
    }
  certs = p7->d.sign->cert;
  if (certs == NULL || sk_X509_num (certs) <= 0)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                           "The CA's reply contains no certificate");
      return NULL;
    }

  out = sk_X509_new_null ();
  for (int i = 0; i < sk_X509_num (certs); i++)
    {
      X509 *c = sk_X509_value (certs, i);

      if (c == NULL || !X509_up_ref (c))
        continue;
      if (!sk_X509_push (out, c))
        {
          X509_free (c);
          g_set_error_literal (error, P11C_ERROR, P11C_ERROR_FAILED, "Out of memory");
          return NULL;
        }
    }
  if (sk_X509_num (out) <= 0)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                           "The CA's reply contains no certificate");
      return NULL;
    }
  return g_steal_pointer (&out);
}

/* --- Retry-After --------------------------------------------------------- */

static const char *const month_names[] = {
  "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};
static const char *const day_names[] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
static const char *const long_day_names[] = {
  "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"
};

/* Read exactly @n digits. */
static gboolean
take_digits (const char **s, int n, int *out)
{
  int v = 0;

  for (int i = 0; i < n; i++)
    {
      if (!g_ascii_isdigit ((*s)[i]))
        return FALSE;
      v = v * 10 + ((*s)[i] - '0');
    }
  *s += n;
  *out = v;
  return TRUE;
}

static gboolean
take_literal (const char **s, const char *lit)
{
  gsize n = strlen (lit);

  if (strncmp (*s, lit, n) != 0)
    return FALSE;
  *s += n;
  return TRUE;
}

static gboolean
take_name (const char **s, const char *const *names, gsize n_names, gsize name_len, int *out)
{
  for (gsize i = 0; i < n_names; i++)
    {
      gsize n = name_len ? name_len : strlen (names[i]);

      if (strlen (names[i]) == n && strncmp (*s, names[i], n) == 0)
        {
          *s += n;
          *out = (int) i;
          return TRUE;
        }
    }
  return FALSE;
}

static gboolean
take_time (const char **s, int *h, int *mi, int *sec)
{
  return take_digits (s, 2, h) && take_literal (s, ":") &&
         take_digits (s, 2, mi) && take_literal (s, ":") &&
         take_digits (s, 2, sec);
}

/* IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850 "Sunday, 06-Nov-94
 * 08:49:37 GMT", asctime "Sun Nov  6 08:49:37 1994".  Case-sensitive as in
 * RFC 9110.  Returns Unix time or -1. */
static gint64
parse_http_date (const char *value)
{
  int wday, day, mon, year, h, mi, sec;
  g_autoptr(GDateTime) dt = NULL;
  const char *s = value;

  if (take_name (&s, day_names, G_N_ELEMENTS (day_names), 3, &wday) && take_literal (&s, ", "))
    {
      /* IMF-fixdate */
      if (!(take_digits (&s, 2, &day) && take_literal (&s, " ") &&
            take_name (&s, month_names, 12, 3, &mon) && take_literal (&s, " ") &&
            take_digits (&s, 4, &year) && take_literal (&s, " ") &&
            take_time (&s, &h, &mi, &sec) && take_literal (&s, " GMT") && *s == '\0'))
        return -1;
    }
  else if ((s = value, take_name (&s, day_names, G_N_ELEMENTS (day_names), 3, &wday)) &&
           take_literal (&s, " "))
    {
      /* asctime: day is 2 chars, space-padded */
      if (!(take_name (&s, month_names, 12, 3, &mon) && take_literal (&s, " ")))
        return -1;
      if (*s == ' ')
        {
          s++;
          if (!take_digits (&s, 1, &day))
            return -1;
        }
      else if (!take_digits (&s, 2, &day))
        return -1;
      if (!(take_literal (&s, " ") && take_time (&s, &h, &mi, &sec) &&
            take_literal (&s, " ") && take_digits (&s, 4, &year) && *s == '\0'))
        return -1;
    }
  else if ((s = value, take_name (&s, long_day_names, G_N_ELEMENTS (long_day_names), 0, &wday)) &&
           take_literal (&s, ", "))
    {
      /* RFC 850, two-digit year: within 50 years (RFC 9110 §5.6.7) → 1970..2069 */
      if (!(take_digits (&s, 2, &day) && take_literal (&s, "-") &&
            take_name (&s, month_names, 12, 3, &mon) && take_literal (&s, "-") &&
            take_digits (&s, 2, &year) && take_literal (&s, " ") &&
            take_time (&s, &h, &mi, &sec) && take_literal (&s, " GMT") && *s == '\0'))
        return -1;
      year += year < 70 ? 2000 : 1900;
    }
  else
    return -1;

  if (year < 1 || sec > 60)
    return -1;
  if (sec == 60)
    sec = 59; /* leap second */
  dt = g_date_time_new_utc (year, mon + 1, day, h, mi, sec);
  if (dt == NULL)
    return -1;
  return g_date_time_to_unix (dt);
}

gboolean
p11c_est_parse_retry_after (const char *value, gint64 now, guint *seconds_out)
{
  g_autofree char *v = NULL;
  gint64 delta;

  if (value == NULL)
    return FALSE;
  v = g_strstrip (g_strdup (value));
  if (*v == '\0')
    return FALSE;

  if (g_ascii_isdigit (v[0]))
    {
      guint64 n = 0;
      const char *p;

      for (p = v; g_ascii_isdigit (*p); p++)
        {
          n = n * 10 + (guint64) (*p - '0');
          if (n > P11C_EST_MAX_RETRY_AFTER)
            n = P11C_EST_MAX_RETRY_AFTER + 1; /* saturate, keep scanning */
        }
      if (*p != '\0')
        return FALSE;
      delta = (gint64) n;
    }
  else
    {
      gint64 t = parse_http_date (v);

      if (t < 0)
        return FALSE;
      /* saturating t - now: @now comes from the caller, any value */
      if (t <= now)
        delta = 0;
      else if (now < t - P11C_EST_MAX_RETRY_AFTER)
        delta = P11C_EST_MAX_RETRY_AFTER;
      else
        delta = t - now;
    }

  if (seconds_out != NULL)
    *seconds_out = (guint) CLAMP (delta, 1, P11C_EST_MAX_RETRY_AFTER);
  return TRUE;
}

/* ------------------------------------------------------------------------ */
/* HTTP                                                                     */
/* ------------------------------------------------------------------------ */

static gpointer
global_init_once (G_GNUC_UNUSED gpointer data)
{
  CURLcode rc = curl_global_init (CURL_GLOBAL_DEFAULT);
  const curl_version_info_data *vi = curl_version_info (CURLVERSION_NOW);

  if (rc != CURLE_OK)
    g_warning ("curl_global_init failed: %s", curl_easy_strerror (rc));
  g_debug ("libcurl %s, TLS %s", vi->version, vi->ssl_version ? vi->ssl_version : "none");
  return GINT_TO_POINTER (rc == CURLE_OK ? 1 : 2);
}

static gboolean
global_init (GError **error)
{
  static GOnce once = G_ONCE_INIT;

  if (GPOINTER_TO_INT (g_once (&once, global_init_once, NULL)) != 1)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_FAILED,
                           "libcurl could not be initialised");
      return FALSE;
    }
  return TRUE;
}

struct _P11cEstConn {
  CURL *curl;   /* NULL until the first request, and while one runs */
};

P11cEstConn *
p11c_est_conn_new (void)
{
  return g_new0 (P11cEstConn, 1);
}

void
p11c_est_conn_free (P11cEstConn *conn)
{
  if (conn == NULL)
    return;
  g_clear_pointer (&conn->curl, curl_easy_cleanup);
  g_free (conn);
}

/* The curl handle of one request: the connection's (kept alive for the
 * next request, with its TLS session) or a handle of its own. */
typedef struct {
  CURL        *curl;
  P11cEstConn *conn;
} Handle;

static CURL *
handle_get (Handle *h)
{
  if (h->conn != NULL && h->conn->curl != NULL)
    h->curl = g_steal_pointer (&h->conn->curl);
  else
    h->curl = curl_easy_init ();
  return h->curl;
}

static void
handle_release (Handle *h)
{
  if (h->curl == NULL)
    return;
  if (h->conn != NULL && h->conn->curl == NULL)
    {
      /* back to its defaults — nothing of this request stays set (pointers
       * into its frame, credentials) — but connected */
      curl_easy_reset (h->curl);
      h->conn->curl = g_steal_pointer (&h->curl);
    }
  else
    g_clear_pointer (&h->curl, curl_easy_cleanup);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Handle, handle_release)

typedef struct {
  const P11cEstServer *srv;
  GCancellable *cancel;
  GByteArray *body;
  gboolean too_big;
  gboolean cancelled;
} Xfer;

static size_t
write_cb (char *ptr, size_t size, size_t nmemb, void *userdata)
{
  Xfer *x = userdata;
  gsize n = size * nmemb;

  if (x->body->len + n > P11C_EST_MAX_REPLY)
    {
      x->too_big = TRUE;
      return 0; /* abort: CURLE_WRITE_ERROR */
    }
  g_byte_array_append (x->body, (const guint8 *) ptr, (guint) n);
  return n;
}

static int
xferinfo_cb (void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
  Xfer *x = clientp;

  (void) dltotal; (void) dlnow; (void) ultotal; (void) ulnow;
  if (g_cancellable_is_cancelled (x->cancel))
    {
      x->cancelled = TRUE;
      return 1;
    }
  return 0;
}

static CURLcode
ssl_ctx_cb (CURL *curl, void *sslctx, void *userptr)
{
  const P11cEstServer *srv = userptr;
  SSL_CTX *ctx = sslctx;

  (void) curl;
  if (SSL_CTX_use_certificate (ctx, srv->client_cert) != 1 ||
      SSL_CTX_use_PrivateKey (ctx, srv->client_key) != 1 ||
      SSL_CTX_check_private_key (ctx) != 1)
    {
      g_autofree char *detail = p11c_openssl_error_string ();
      g_debug ("client certificate/key refused by OpenSSL: %s", detail);
      return CURLE_SSL_CERTPROBLEM;
    }
  for (int i = 0; srv->client_chain != NULL && i < sk_X509_num (srv->client_chain); i++)
    if (SSL_CTX_add1_chain_cert (ctx, sk_X509_value (srv->client_chain, i)) != 1)
      {
        g_autofree char *detail = p11c_openssl_error_string ();
        g_debug ("client chain certificate refused by OpenSSL: %s", detail);
        return CURLE_SSL_CERTPROBLEM;
      }
  return CURLE_OK;
}

/* Printable, single-line, at most ERROR_BODY_MAX characters. */
static char *
body_excerpt (GByteArray *body)
{
  GString *s = g_string_new (NULL);
  gboolean space = FALSE;

  for (guint i = 0; body != NULL && i < body->len; i++)
    {
      guchar c = body->data[i];

      if (is_ws (c))
        {
          space = s->len > 0;
          continue;
        }
      if (c < 0x20 || c >= 0x7f)
        c = '?';
      if (s->len + (space ? 2 : 1) > ERROR_BODY_MAX)
        {
          g_string_append (s, "…");
          break;
        }
      if (space)
        g_string_append_c (s, ' ');
      space = FALSE;
      g_string_append_c (s, (char) c);
    }
  return g_string_free (s, FALSE);
}

/* Validate the profile and build https://host[:port]/prefix/.well-known/est[/label]/op */
static char *
build_url (const P11cEstServer *srv, const char *op, GError **error)
{
  g_autoptr(CURLU) u = curl_url ();
  p11c_autocurlstr scheme = NULL;
  p11c_autocurlstr user = NULL;
  p11c_autocurlstr path = NULL;
  p11c_autocurlstr query = NULL;
  p11c_autocurlstr out = NULL;
  g_autofree char *newpath = NULL;
  const char *label = srv->label;
  gsize plen;

  if (srv->url == NULL || *srv->url == '\0')
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                           "The CA profile has no URL");
      return NULL;
    }
  if (u == NULL ||
      curl_url_set (u, CURLUPART_URL, srv->url, 0) != CURLUE_OK ||
      curl_url_get (u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      g_ascii_strcasecmp (scheme, "https") != 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The CA URL “%s” is not an https:// URL", srv->url);
      return NULL;
    }
  if (curl_url_get (u, CURLUPART_USER, &user, 0) == CURLUE_OK)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                           "The CA URL must not contain a user name or password");
      return NULL;
    }
  if (curl_url_get (u, CURLUPART_QUERY, &query, 0) == CURLUE_OK)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The CA URL “%s” must not have a query", srv->url);
      return NULL;
    }
  curl_url_set (u, CURLUPART_FRAGMENT, NULL, 0);
  if (label != NULL && *label != '\0')
    {
      for (const char *c = label; *c; c++)
        if (!(g_ascii_isalnum (*c) || strchr ("-._~", *c) != NULL))
          {
            g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                         "The EST label “%s” may only contain letters, digits and -._~", label);
            return NULL;
          }
    }
  else
    label = NULL;

  if (curl_url_get (u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
    path = NULL;
  plen = path ? strlen (path) : 0;
  while (plen > 0 && path[plen - 1] == '/')
    plen--;
  newpath = g_strdup_printf ("%.*s/.well-known/est%s%s/%s", (int) plen, path ? path : "",
                             label ? "/" : "", label ? label : "", op);
  if (curl_url_set (u, CURLUPART_PATH, newpath, 0) != CURLUE_OK ||
      curl_url_get (u, CURLUPART_URL, &out, 0) != CURLUE_OK)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The CA URL “%s” is not valid", srv->url);
      return NULL;
    }
  return g_strdup (out);
}

static gboolean
errbuf_has (const char *errbuf, const char *needle)
{
  g_autofree char *lower = g_ascii_strdown (errbuf, -1);
  return strstr (lower, needle) != NULL;
}

/* The "reason" detail of a CA error (Job.ErrorDetails), for clients to say
 * what happened in their own words. */
static void
set_curl_reason (GError **error, CURLcode rc)
{
  const char *reason;

  if (error == NULL || *error == NULL)
    return;
  if (g_error_matches (*error, P11C_ERROR, P11C_ERROR_CA_REJECTED))
    reason = "client-certificate";
  else if (rc == CURLE_OPERATION_TIMEDOUT)
    reason = "timeout";
  else if (rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY)
    reason = "dns";
  else if (rc == CURLE_COULDNT_CONNECT)
    reason = "connect";
  else if (rc == CURLE_PEER_FAILED_VERIFICATION)
    reason = "untrusted";
  else if (rc == CURLE_SSL_CONNECT_ERROR)
    reason = "tls";
  else
    reason = "transfer";
  p11c_error_set_detail_string (*error, "reason", reason);
}

/* Map a failed curl_easy_perform to a P11C_ERROR. */
static void
set_curl_error (GError **error, const P11cEstServer *srv, const Xfer *x,
                CURLcode rc, const char *errbuf, guint connect_timeout, guint timeout)
{
  const char *url = srv->url;
  const char *detail = (errbuf && *errbuf) ? errbuf : curl_easy_strerror (rc);

  if (x->cancelled || rc == CURLE_ABORTED_BY_CALLBACK)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CANCELLED,
                   "The request to the CA at %s was cancelled", url);
      return;
    }
  if (x->too_big)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The CA at %s sent a reply larger than %d bytes", url, P11C_EST_MAX_REPLY);
      return;
    }

  switch (rc)
    {
    case CURLE_OPERATION_TIMEDOUT:
      if (errbuf_has (detail, "connection timed out") ||
          errbuf_has (detail, "resolving timed out") ||
          errbuf_has (detail, "ssl connection timeout"))
        g_set_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE,
                     "The CA at %s could not be reached within %u s (%s)",
                     url, MIN (connect_timeout, timeout), detail);
      else
        g_set_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE,
                     "The CA at %s did not answer within %u s", url, timeout);
      return;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE,
                   "The host name of the CA at %s could not be resolved (%s)", url, detail);
      return;
    case CURLE_COULDNT_CONNECT:
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE,
                   "The CA at %s refused the connection or could not be reached (%s)", url, detail);
      return;
    case CURLE_PEER_FAILED_VERIFICATION:
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE,
                   "The server certificate of the CA at %s is not trusted by the profile's trust anchor %s (%s)",
                   url, srv->trust_anchor, detail);
      return;
    case CURLE_SSL_CACERT_BADFILE:
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED,
                   "The trust anchor file %s of the CA profile could not be loaded (%s)",
                   srv->trust_anchor, detail);
      return;
    case CURLE_SSL_CERTPROBLEM:
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED,
                   "The client certificate or key could not be used for TLS to %s (%s)", url, detail);
      return;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The CA URL %s cannot be used (%s)", url, detail);
      return;
    default:
      break;
    }

  /* A server that refuses our client certificate aborts the handshake with
   * an alert; with TLS 1.3 that shows up as a receive error afterwards. */
  if (errbuf_has (detail, "alert certificate required") ||
      errbuf_has (detail, "alert bad certificate") ||
      errbuf_has (detail, "alert unknown ca") ||
      errbuf_has (detail, "alert certificate revoked") ||
      errbuf_has (detail, "alert certificate expired") ||
      errbuf_has (detail, "alert certificate unknown"))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                   "The CA at %s did not accept the client certificate (%s)", url, detail);
      return;
    }

  switch (rc)
    {
    case CURLE_SSL_CONNECT_ERROR:
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE,
                   "The TLS handshake with the CA at %s failed (%s)", url, detail);
      return;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE,
                   "The CA at %s closed the connection without a complete reply (%s)", url, detail);
      return;
    default:
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE,
                   "The request to the CA at %s failed (%s)", url, detail);
      return;
    }
}

typedef struct {
  long status;
  char *content_type;
  char *retry_after;
  char *challenge;          /* the auth scheme of the first WWW-Authenticate, or NULL */
  gboolean sent_login;      /* the request that got this reply carried the login */
  GByteArray *body;
} Reply;

static void
reply_clear (Reply *r)
{
  g_clear_pointer (&r->content_type, g_free);
  g_clear_pointer (&r->retry_after, g_free);
  g_clear_pointer (&r->challenge, g_free);
  g_clear_pointer (&r->body, g_byte_array_unref);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Reply, reply_clear)

/* What one exchange sends. */
typedef struct {
  const char *url;
  const char *protocols;     /* "https" or "http,https" */
  const char *content_type;  /* of @post */
  const char *accept;
  const guint8 *post;        /* NULL: GET */
  gsize post_len;
  const char *login, *password;
} Exchange;

static gboolean http_exchange (const P11cEstServer *srv, const Exchange *ex, GCancellable *cancel,
                               Reply *reply, GError **error);

/* One EST request (https only, the profile's trust anchor required).
 * @post may be NULL (GET).  On transport success fills @reply (any HTTP
 * status) and returns TRUE. */
static gboolean
est_request (const P11cEstServer *srv, const char *op, const char *post,
             const char *login, const char *password, GCancellable *cancel,
             Reply *reply, GError **error)
{
  g_autofree char *url = NULL;
  Exchange ex = { NULL, "https", "application/pkcs10", "application/pkcs7-mime",
                  (const guint8 *) post, post ? strlen (post) : 0, login, password };

  if (srv->trust_anchor == NULL || *srv->trust_anchor == '\0')
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                           "The CA profile has no trust anchor; refusing to connect without one");
      return FALSE;
    }
  if (!g_file_test (srv->trust_anchor, G_FILE_TEST_IS_REGULAR))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED,
                   "The trust anchor file %s of the CA profile does not exist", srv->trust_anchor);
      return FALSE;
    }
  if ((srv->client_cert == NULL) != (srv->client_key == NULL))
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                           "A TLS client certificate needs its key, and a key its certificate");
      return FALSE;
    }
  url = build_url (srv, op, error);
  if (url == NULL)
    return FALSE;
  ex.url = url;
  return http_exchange (srv, &ex, cancel, reply, error);
}

static gboolean
http_exchange (const P11cEstServer *srv, const Exchange *ex, GCancellable *cancel,
               Reply *reply, GError **error)
{
  g_auto(Handle) handle = { NULL, srv->conn };
  CURL *curl = NULL;
  g_autoptr(P11cCurlSlist) headers = NULL;
  g_autofree char *ua = NULL;
  g_autofree char *accept = NULL;
  g_autofree char *ctype = NULL;
  char errbuf[CURL_ERROR_SIZE] = "";
  guint connect_timeout = srv->connect_timeout ? srv->connect_timeout : DEFAULT_CONNECT_TIMEOUT;
  guint timeout = srv->timeout ? srv->timeout : DEFAULT_TIMEOUT;
  Xfer x = { srv, cancel, NULL, FALSE, FALSE };
  CURLcode rc = CURLE_OK;
  char *ct = NULL;
  struct curl_header *h = NULL;
  const char *url = ex->url, *login = ex->login, *password = ex->password;
  gboolean post = ex->post != NULL;

  if (!global_init (error))
    return FALSE;
  if (g_cancellable_is_cancelled (cancel))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CANCELLED,
                   "The request to the CA at %s was cancelled", srv->url);
      return FALSE;
    }

  curl = handle_get (&handle);
  if (curl == NULL)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_FAILED, "curl_easy_init failed");
      return FALSE;
    }
  ua = g_strdup_printf ("p11certd/%s", P11C_VERSION);
  x.body = g_byte_array_new ();

  accept = g_strconcat ("Accept: ", ex->accept, NULL);
  headers = curl_slist_append (headers, accept);
  if (post)
    {
      ctype = g_strconcat ("Content-Type: ", ex->content_type, NULL);
      headers = curl_slist_append (headers, ctype);
      headers = curl_slist_append (headers, "Expect:");
    }

#define SET(opt, val) \
  G_STMT_START { \
    if ((rc = curl_easy_setopt (curl, opt, val)) != CURLE_OK) \
      goto setopt_failed; \
  } G_STMT_END

  SET (CURLOPT_URL, url);
  SET (CURLOPT_ERRORBUFFER, errbuf);
  SET (CURLOPT_NOSIGNAL, 1L);
  SET (CURLOPT_PROTOCOLS_STR, ex->protocols);
  SET (CURLOPT_REDIR_PROTOCOLS_STR, "https");
  SET (CURLOPT_FOLLOWLOCATION, 0L);
  SET (CURLOPT_SSL_VERIFYPEER, 1L);
  SET (CURLOPT_SSL_VERIFYHOST, 2L);
  SET (CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
  if (srv->trust_anchor != NULL)
    {
      SET (CURLOPT_CAINFO, srv->trust_anchor);
      SET (CURLOPT_CAPATH, NULL);
    }
  SET (CURLOPT_CONNECTTIMEOUT, (long) connect_timeout);
  SET (CURLOPT_TIMEOUT, (long) timeout);
  SET (CURLOPT_USERAGENT, ua);
  SET (CURLOPT_HTTPHEADER, headers);
  SET (CURLOPT_WRITEFUNCTION, write_cb);
  SET (CURLOPT_WRITEDATA, &x);
  SET (CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
  SET (CURLOPT_XFERINFODATA, &x);
  SET (CURLOPT_NOPROGRESS, 0L);
  SET (CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) P11C_EST_MAX_REPLY);
  if (post)
    {
      SET (CURLOPT_POST, 1L);
      SET (CURLOPT_POSTFIELDS, ex->post);
      SET (CURLOPT_POSTFIELDSIZE, (long) ex->post_len);
    }
  else
    SET (CURLOPT_HTTPGET, 1L);
  if (srv->client_cert != NULL)
    {
      SET (CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
      SET (CURLOPT_SSL_CTX_DATA, (void *) srv);
    }
  if (login != NULL)
    {
      /* curl keeps its own copies; they go with curl_easy_cleanup.
       * basic: sent at once (over verified TLS, RFC 7030 §3.2.3).  digest
       * and auto: curl asks without credentials first and answers the
       * challenge (auto: Digest when offered, else Basic).  curl never
       * sends credentials a second time after a 401 to them (it stops with
       * an "authentication problem"), except for a Digest "stale=true"
       * nonce, where the password was not judged. */
      long how = srv->auth == P11C_EST_AUTH_BASIC ? CURLAUTH_BASIC
               : srv->auth == P11C_EST_AUTH_DIGEST ? CURLAUTH_DIGEST
               : (CURLAUTH_BASIC | CURLAUTH_DIGEST);
      SET (CURLOPT_HTTPAUTH, how);
      SET (CURLOPT_USERNAME, login);
      SET (CURLOPT_PASSWORD, password ? password : "");
    }

  g_debug ("%s %s", post ? "POST" : "GET", url);
  rc = curl_easy_perform (curl);
  if (rc != CURLE_OK)
    {
      if (rc == CURLE_FILESIZE_EXCEEDED)
        x.too_big = TRUE;
      g_debug ("%s: %s (%s)", url, curl_easy_strerror (rc), errbuf);
      set_curl_error (error, srv, &x, rc, errbuf, connect_timeout, timeout);
      set_curl_reason (error, rc);
      goto out_fail;
    }

  curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &reply->status);
  if (curl_easy_header (curl, "WWW-Authenticate", 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h && h->value)
    reply->challenge = g_strndup (h->value, strcspn (h->value, " \t"));
  /* basic sends the login in its one request; digest and auto only in a
   * second one, after a challenge (curl numbers the requests of a transfer) */
  if (login != NULL)
    reply->sent_login = srv->auth == P11C_EST_AUTH_BASIC
                        || curl_easy_header (curl, "WWW-Authenticate", 0, CURLH_HEADER, 1, &h) != CURLHE_NOREQUEST;

  if (curl_easy_getinfo (curl, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct != NULL)
    reply->content_type = g_strdup (ct);
  if (curl_easy_header (curl, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h && h->value)
    reply->retry_after = g_strdup (h->value);
  reply->body = g_steal_pointer (&x.body);
  g_debug ("%s -> HTTP %ld (%s, %u bytes)", url, reply->status,
           reply->content_type ? reply->content_type : "no content type", reply->body->len);

  /* drop curl's copy of the credentials now rather than at cleanup */
  if (login != NULL)
    curl_easy_setopt (curl, CURLOPT_PASSWORD, NULL);
  return TRUE;

setopt_failed:
  g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_SUPPORTED,
               "libcurl lacks a needed feature (%s)", curl_easy_strerror (rc));
out_fail:
  if (login != NULL)
    curl_easy_setopt (curl, CURLOPT_PASSWORD, NULL);
  g_clear_pointer (&x.body, g_byte_array_unref);
  return FALSE;
#undef SET
}

/* A 401/403 to a request that had a login (@with_login) or a TLS client
 * certificate (renewal). */
static void
set_auth_error (GError **error, const P11cEstServer *srv, const Reply *r, gboolean with_login,
                const char *text)
{
  long st = r->status;
  gboolean digest = r->challenge && g_ascii_strcasecmp (r->challenge, "digest") == 0;

  if (with_login && st == 401 && !r->sent_login && r->challenge == NULL)
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                 "The CA at %s answered HTTP 401 without saying which login it wants (no WWW-Authenticate); "
                 "the one-time password was not sent and is still good. Set http-auth=basic or "
                 "http-auth=digest in the CA profile, as your CA administrator says", srv->url);
  else if (with_login && st == 401 && !r->sent_login)
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                 "The CA at %s asks for HTTP %s authentication, which the CA profile's http-auth=%s does "
                 "not allow (p11certd speaks Basic and Digest); the one-time password was not sent and is "
                 "still good", srv->url, r->challenge, p11c_est_auth_to_string (srv->auth));
  else if (with_login && st == 401 && srv->auth == P11C_EST_AUTH_BASIC && (digest || r->challenge == NULL))
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                 "The CA refused the login or one-time password sent with HTTP Basic (HTTP 401%s). "
                 "If the CA expects HTTP Digest, set http-auth=auto or http-auth=digest in the CA "
                 "profile; either way the one-time password may be used up — ask your manager for a new one",
                 digest ? ", and it asks for Digest" : ", no challenge");
  else if (with_login)
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                 "The CA refused the login or one-time password (HTTP %ld); "
                 "one-time passwords work once — ask your manager for a new one", st);
  else if (st == 401 && r->challenge != NULL)
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                 "The CA at %s wants a login (HTTP %s authentication) for renewal on top of the "
                 "client certificate; unattended renewal has no login by design. Configure the CA to "
                 "accept certificate authentication for re-enrollment (simplereenroll), or enroll again "
                 "with a one-time password", srv->url, r->challenge);
  else
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                 "The CA at %s refused the request (HTTP %ld): it did not accept "
                 "the client certificate%s%s", srv->url, st, *text ? ": " : "", text);
}

/* Map a non-2xx HTTP status; FALSE always. */
static gboolean
set_http_error (GError **error, const P11cEstServer *srv, const Reply *r, gboolean with_login)
{
  g_autofree char *text = body_excerpt (r->body);
  long st = r->status;

  if (st == 401 || st == 403)
    set_auth_error (error, srv, r, with_login, text);
  else if (st >= 400 && st < 500)
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED,
                 "The CA at %s rejected the request (HTTP %ld)%s%s",
                 srv->url, st, *text ? ": " : "", text);
  else if (st >= 500)
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_UNREACHABLE,
                 "The CA at %s failed to handle the request (HTTP %ld)%s%s",
                 srv->url, st, *text ? ": " : "", text);
  else if (st >= 300 && st < 400)
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                 "The CA at %s sent a redirect (HTTP %ld); redirects are not followed — "
                 "check the URL of the CA profile", srv->url, st);
  else
    g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                 "The CA at %s sent an unexpected reply (HTTP %ld)", srv->url, st);
  if (error != NULL && *error != NULL)
    {
      const char *reason = (st == 401 || st == 403) ? (with_login ? "credentials" : "client-certificate")
                           : st >= 500 ? "server-error" : st >= 400 ? "request"
                           : st >= 300 && st < 400 ? "redirect" : "bad-reply";
      p11c_error_set_detail_string (*error, "reason", reason);
      p11c_error_set_detail_uint (*error, "http_status", (guint32) st);
    }
  return FALSE;
}

static P11cX509Stack *
parse_pkcs7_reply (const P11cEstServer *srv, const Reply *r, GError **error)
{
  GError *local = NULL;
  P11cX509Stack *certs;

  if (!p11c_est_content_type_is_pkcs7 (r->content_type))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The CA at %s answered with content type “%s” instead of application/pkcs7-mime",
                   srv->url, r->content_type ? r->content_type : "(none)");
      return NULL;
    }
  certs = p11c_est_parse_certs_only ((const char *) r->body->data, r->body->len, &local);
  if (certs == NULL)
    {
      g_propagate_prefixed_error (error, local, "Bad reply from the CA at %s: ", srv->url);
      return NULL;
    }
  return certs;
}

P11cX509Stack *
p11c_est_get_cacerts (const P11cEstServer *srv, GCancellable *cancel, GError **error)
{
  g_auto(Reply) r = { 0 };

  g_return_val_if_fail (srv != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (!est_request (srv, "cacerts", NULL, NULL, NULL, cancel, &r, error))
    return NULL;
  if (r.status != 200)
    {
      set_http_error (error, srv, &r, FALSE);
      return NULL;
    }
  return parse_pkcs7_reply (srv, &r, error);
}

static char *
base64_lines (const guint8 *data, gsize len)
{
  g_autofree char *b64 = g_base64_encode (data, len);
  gsize n = strlen (b64);
  GString *s = g_string_sized_new (n + n / 64 * 2 + 4);

  for (gsize i = 0; i < n; i += 64)
    {
      g_string_append_len (s, b64 + i, MIN ((gsize) 64, n - i));
      g_string_append (s, "\r\n");
    }
  return g_string_free (s, FALSE);
}

gboolean
p11c_est_enroll (const P11cEstServer *srv, gboolean reenroll,
                 const guint8 *csr_der, gsize csr_len,
                 const char *login, const char *password, GCancellable *cancel,
                 X509 **cert_out, guint *retry_after_out, GError **error)
{
  g_auto(Reply) r = { 0 };
  g_autoptr(X509_REQ) req = NULL;
  g_autoptr(P11cX509Stack) certs = NULL;
  g_autofree char *body = NULL;
  const unsigned char *p = csr_der;
  EVP_PKEY *csr_key;
  X509 *match = NULL;

  g_return_val_if_fail (srv != NULL, FALSE);
  g_return_val_if_fail (cert_out != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  *cert_out = NULL;
  if (retry_after_out != NULL)
    *retry_after_out = 0;

  if (csr_der == NULL || csr_len == 0 || csr_len > G_MAXLONG ||
      (req = d2i_X509_REQ (NULL, &p, (long) csr_len)) == NULL ||
      p != csr_der + csr_len ||
      (csr_key = X509_REQ_get0_pubkey (req)) == NULL)
    {
      ERR_clear_error ();
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                           "The certificate request is not a valid DER PKCS#10 request");
      return FALSE;
    }
  if (!reenroll && login == NULL)
    {
      g_set_error_literal (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                           "Enrollment needs a login and one-time password");
      return FALSE;
    }

  body = base64_lines (csr_der, csr_len);
  if (!est_request (srv, reenroll ? "simplereenroll" : "simpleenroll", body,
                    login, password, cancel, &r, error))
    return FALSE;

  if (r.status == 202)
    {
      guint secs = P11C_EST_DEFAULT_RETRY_AFTER;

      if (!p11c_est_parse_retry_after (r.retry_after, g_get_real_time () / G_USEC_PER_SEC, &secs))
        secs = P11C_EST_DEFAULT_RETRY_AFTER;
      g_debug ("request accepted, retry after %u s", secs);
      if (retry_after_out != NULL)
        *retry_after_out = secs;
      return TRUE;
    }
  if (r.status != 200)
    return set_http_error (error, srv, &r, login != NULL);

  certs = parse_pkcs7_reply (srv, &r, error);
  if (certs == NULL)
    return FALSE;

  /* The issued certificate is the one for our key; prefer a non-CA one if
   * (oddly) several carry it. */
  for (int i = 0; i < sk_X509_num (certs); i++)
    {
      X509 *c = sk_X509_value (certs, i);
      EVP_PKEY *k = X509_get0_pubkey (c);

      if (k == NULL || EVP_PKEY_eq (k, csr_key) != 1)
        continue;
      if (match == NULL || (X509_check_ca (match) != 0 && X509_check_ca (c) == 0))
        match = c;
    }
  ERR_clear_error ();
  if (match == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_BAD_REPLY,
                   "The CA at %s returned %d certificate(s), none for the key of the request",
                   srv->url, sk_X509_num (certs));
      return FALSE;
    }
  X509_up_ref (match);
  *cert_out = match;
  return TRUE;
}

gboolean
p11c_http_get_or_post (const P11cEstServer *srv, const char *url, const char *accept,
                       const char *content_type, const guint8 *post, gsize post_len,
                       GCancellable *cancel, char **content_type_out, GBytes **body_out,
                       GError **error)
{
  g_auto(Reply) r = { 0 };
  Exchange ex = { url, "http,https", content_type, accept, post, post_len, NULL, NULL };

  g_return_val_if_fail (srv != NULL && url != NULL && body_out != NULL, FALSE);
  if (!http_exchange (srv, &ex, cancel, &r, error))
    return FALSE;
  if (r.status == 401 || r.status == 403)
    {
      g_autofree char *text = body_excerpt (r.body);
      g_set_error (error, P11C_ERROR, P11C_ERROR_CA_REJECTED, "The CA at %s refused the request (HTTP %ld)%s%s",
                   srv->url, r.status, *text ? ": " : "", text);
      return FALSE;
    }
  if (r.status != 200)
    return set_http_error (error, srv, &r, FALSE);
  if (content_type_out != NULL)
    *content_type_out = g_steal_pointer (&r.content_type);
  *body_out = g_byte_array_free_to_bytes (g_steal_pointer (&r.body));
  return TRUE;
}
