/* Renewal planning without a bus: two SoftHSM tokens, an engine, issuance
 * records in a temporary state directory.  What is due, who needs a person
 * and why, where a PIN file may go, copies, pruning, the expiry plan; and
 * the engine's token resolver on the same tokens. */
#include "p11c-renewal.h"
#include "p11c-cert.h"
#include "p11c-error.h"
#include "p11c-store.h"
#include "test-util.h"
#include <glib/gstdio.h>
#include <string.h>

#define SOFTHSM "/usr/lib/softhsm/libsofthsm2.so"
#define PIN "Passw0rdA"
#define NB 1700000000
#define NA 1800000000
#define DUE_AT (NA - 86400)      /* inside the window */
#define EARLY (NB + 86400)       /* not due yet */

typedef struct {
  char       *dir;
  P11cEngine *engine;
  GPtrArray  *tokens;
  P11cToken  *a, *b;     /* "agent", "mallory" */
  char       *pin_file;
} Fixture;

static void
run (const char *const *argv)
{
  g_autoptr(GError) error = NULL;
  gint status = 0;
  g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                NULL, NULL, &status, &error);
  g_assert_no_error (error);
  g_assert_true (g_spawn_check_wait_status (status, NULL));
}

static void
write_file (const char *dir, const char *name, const char *text, mode_t mode)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_assert_true (g_file_set_contents (path, text, -1, NULL));
  g_assert_cmpint (g_chmod (path, mode), ==, 0);
}

/* profiles: "plain" (a person renews), "auto" (PIN file), "bound" (PIN file
 * for the agent token only) */
static void
fixture_set_up (Fixture *f, gconstpointer data)
{
  g_autofree char *conf = NULL, *ca_dir = NULL, *tokdir = NULL, *hsm = NULL, *text = NULL;
  g_autoptr(GError) error = NULL;
  P11cConfig *config;

  f->dir = p11c_test_mkdtemp ();
  tokdir = g_build_filename (f->dir, "tokens", NULL);
  ca_dir = g_build_filename (f->dir, "ca.d", NULL);
  g_assert_cmpint (g_mkdir (tokdir, 0700), ==, 0);
  g_assert_cmpint (g_mkdir (ca_dir, 0700), ==, 0);
  {
    g_autofree char *state = g_build_filename (f->dir, "state", NULL);
    g_assert_cmpint (g_mkdir (state, 0700), ==, 0);
  }
  hsm = g_strdup_printf ("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokdir);
  write_file (f->dir, "softhsm2.conf", hsm, 0600);
  conf = g_build_filename (f->dir, "softhsm2.conf", NULL);
  g_setenv ("SOFTHSM2_CONF", conf, TRUE);
  for (const char *const *l = (const char *const[]) { "agent", "mallory", NULL }; *l; l++)
    run ((const char *const[]) { "softhsm2-util", "--init-token", "--free", "--label", *l, "--pin", PIN,
                                 "--so-pin", "S0-Passw0rd", NULL });
  f->pin_file = g_build_filename (f->dir, "token.pin", NULL);
  write_file (f->dir, "token.pin", PIN "\n", 0600);
  text = g_strdup_printf ("[ca]\ntype=local\npin-file=%s\n", f->pin_file);
  write_file (ca_dir, "auto.conf", text, 0644);
  g_free (text);
  text = g_strdup_printf ("[ca]\ntype=local\npin-file=%s\npin-file-token=pkcs11:token=agent\n", f->pin_file);
  write_file (ca_dir, "bound.conf", text, 0644);
  write_file (ca_dir, "plain.conf", "[ca]\ntype=local\n", 0644);
  g_free (text);
  text = g_strdup_printf ("[daemon]\nstate-dir=%s/state\nca-dir=%s\n[modules]\nmodules=" SOFTHSM "\n"
                          "[renewal]\nwindow-days=30\nwarn-days=14\n", f->dir, ca_dir);
  config = p11c_config_parse (text, -1, "test", &error);
  g_assert_no_error (error);
  f->engine = p11c_engine_new (config);
  p11c_engine_load_modules (f->engine);
  p11c_engine_apply_scan (f->engine, p11c_engine_scan (f->engine));
  f->tokens = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_token_unref);
  for (guint i = 0; i < p11c_engine_get_tokens (f->engine)->len; i++)
    {
      P11cToken *t = p11c_engine_get_tokens (f->engine)->pdata[i];
      CK_TOKEN_INFO info;
      g_autofree char *label = NULL;
      p11c_token_get_info (t, &info, NULL);
      label = p11c_padded_string (info.label, sizeof info.label);
      if (g_str_equal (label, "agent"))
        f->a = t;
      else if (g_str_equal (label, "mallory"))
        f->b = t;
      g_ptr_array_add (f->tokens, p11c_token_ref (t));
    }
  g_assert_nonnull (f->a);
  g_assert_nonnull (f->b);
}

static void
fixture_tear_down (Fixture *f, gconstpointer data)
{
  g_ptr_array_unref (f->tokens);
  p11c_engine_free (f->engine);
  g_unsetenv ("SOFTHSM2_CONF");
  p11c_test_rmtree (f->dir);
  g_free (f->dir);
  g_free (f->pin_file);
}

/* Write @cert onto @t (CKA_ID @id) and return its URI. */
static char *
put_cert (P11cToken *t, X509 *cert, guint8 id)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cSession) s = p11c_token_open_session (t, TRUE, &error);
  g_autoptr(GBytes) cka_id = g_bytes_new (&id, 1);
  CK_TOKEN_INFO info;

  g_assert_no_error (error);
  g_assert_true (p11c_session_login (s, PIN, &error));
  g_assert_true (p11c_session_store_cert (s, cert, cka_id, "cert", NULL, &error));
  g_assert_no_error (error);
  p11c_token_invalidate (t);
  p11c_token_get_info (t, &info, NULL);
  return p11c_uri_for_object (&info, P11C_OBJECT_CERT, &id, 1, "cert");
}

/* @cert issued by @ca onto @t: on the token, and recorded */
static char *
issue_to (Fixture *f, P11cToken *t, X509 *cert, const char *ca, guint8 id)
{
  g_autoptr(GError) error = NULL;
  char *uri = put_cert (t, cert, id);
  CK_TOKEN_INFO info;

  p11c_token_get_info (t, &info, NULL);
  g_assert_true (p11c_records_put (p11c_engine_get_records (f->engine),
                                   p11c_issued_new (cert, ca, uri, "token", &info, 1000), NULL, &error));
  g_assert_no_error (error);
  return uri;
}

static P11cNeedsPerson *
needs_person_for (P11cDuePlan *plan, const char *uri)
{
  for (guint i = 0; i < plan->needs_person->len; i++)
    if (g_str_equal (((P11cNeedsPerson *) plan->needs_person->pdata[i])->uri, uri))
      return plan->needs_person->pdata[i];
  return NULL;
}

static gboolean
contains (GPtrArray *uris, const char *uri)
{
  for (guint i = 0; i < uris->len; i++)
    if (g_str_equal (uris->pdata[i], uri))
      return TRUE;
  return FALSE;
}

static void
test_due_and_people (Fixture *f, gconstpointer data)
{
  g_autoptr(X509) plain = p11c_test_make_cert ("plain", NB, NA, "P-256", NULL);
  g_autoptr(X509) automatic = p11c_test_make_cert ("auto", NB, NA, "P-384", NULL);
  g_autoptr(X509) foreign = p11c_test_make_cert ("not ours", NB, NA, "P-256", NULL);
  g_autofree char *u_plain = issue_to (f, f->a, plain, "plain", 1);
  g_autofree char *u_auto = issue_to (f, f->a, automatic, "auto", 2);
  g_autofree char *u_foreign = put_cert (f->a, foreign, 3);    /* no record: not ours to renew */
  g_autoptr(P11cCertSummary) auto_sum = p11c_cert_summary_from_x509 (automatic);

  {
    g_autoptr(P11cDuePlan) plan = p11c_renewal_plan_due (f->engine, f->tokens, EARLY);
    g_assert_cmpuint (plan->requests->len + plan->system_requests->len + plan->needs_person->len
                      + plan->not_renewable->len, ==, 0);
  }
  {
    g_autoptr(P11cDuePlan) plan = p11c_renewal_plan_due (f->engine, f->tokens, DUE_AT);
    P11cNeedsPerson *n = needs_person_for (plan, u_plain);

    g_assert_nonnull (n);
    g_assert_cmpstr (n->reason, ==, "the token PIN is needed");
    g_assert_cmpstr (n->ca, ==, "plain");
    g_assert_cmpint (n->days_left, ==, 1);
    g_assert_true (n->token == f->a);
    g_assert_cmpuint (plan->needs_person->len, ==, 1);
    g_assert_cmpuint (plan->requests->len, ==, 1);     /* "auto": its PIN file */
    g_assert_cmpstr (p11c_enroll_request_get_renewed (plan->requests->pdata[0]), ==, auto_sum->sha256);
    g_assert_false (contains (plan->not_renewable, u_foreign));
  }
  /* an unsafe PIN file: a person, and the reason says why */
  g_assert_cmpint (g_chmod (f->pin_file, 0644), ==, 0);
  g_test_expect_message ("p11c-renewal", G_LOG_LEVEL_WARNING, "*owned by root with mode 0600*");
  {
    g_autoptr(P11cDuePlan) plan = p11c_renewal_plan_due (f->engine, f->tokens, DUE_AT);
    P11cNeedsPerson *n = needs_person_for (plan, u_auto);
    g_test_assert_expected_messages ();
    g_assert_nonnull (n);
    g_assert_nonnull (strstr (n->reason, "mode 0600"));
    g_assert_cmpuint (plan->requests->len, ==, 0);
  }
  g_assert_cmpint (g_chmod (f->pin_file, 0600), ==, 0);
  /* a PIN file the token refused: not used for it again, until it changes */
  {
    CK_TOKEN_INFO info;
    p11c_token_get_info (f->a, &info, NULL);
    p11c_records_pin_refused_add (p11c_engine_get_records (f->engine), &info, f->pin_file, PIN);
  }
  {
    g_autoptr(P11cDuePlan) plan = p11c_renewal_plan_due (f->engine, f->tokens, DUE_AT);
    P11cNeedsPerson *n = needs_person_for (plan, u_auto);
    g_assert_nonnull (n);
    g_assert_nonnull (strstr (n->reason, "refused the PIN"));
    g_assert_cmpuint (plan->requests->len, ==, 0);
  }
  write_file (f->dir, "token.pin", "An0therPin\n", 0600);
  {
    g_autoptr(P11cDuePlan) plan = p11c_renewal_plan_due (f->engine, f->tokens, DUE_AT);
    g_assert_null (needs_person_for (plan, u_auto));
    g_assert_cmpuint (plan->requests->len, ==, 1);
  }
}

/* The PIN file goes only to the token a certificate was issued to, and with
 * pin-file-token= only to that token; a copy elsewhere is not renewed. */
static void
test_pin_file_binding (Fixture *f, gconstpointer data)
{
  g_autoptr(X509) victim = p11c_test_make_cert ("victim", NB, NA, "P-256", NULL);
  g_autoptr(X509) own = p11c_test_make_cert ("mallory", NB, NA, "P-256", NULL);
  g_autofree char *u_victim = issue_to (f, f->a, victim, "auto", 1);
  g_autofree char *u_copy = put_cert (f->b, victim, 7);
  g_autofree char *u_own = issue_to (f, f->b, own, "bound", 2);
  g_autoptr(P11cDuePlan) plan = p11c_renewal_plan_due (f->engine, f->tokens, DUE_AT);
  P11cNeedsPerson *n = needs_person_for (plan, u_own);

  g_assert_cmpuint (plan->requests->len, ==, 1);           /* the victim's, on its own token */
  g_assert_true (contains (plan->not_renewable, u_copy));
  g_assert_nonnull (strstr (g_hash_table_lookup (plan->why_not, u_copy), "is a copy"));
  g_assert_nonnull (strstr (g_hash_table_lookup (plan->why_not, u_copy), "token \"agent\""));
  g_assert_cmpstr (g_hash_table_lookup (plan->why_not_code, u_copy), ==, "not-in-place");
  g_assert_nonnull (n);
  g_assert_nonnull (strstr (n->reason, "only for pkcs11:token=agent"));
  g_assert_null (needs_person_for (plan, u_victim));
}

/* Renew(uri): a copy is refused saying where the certificate belongs; the
 * genuine one wants the PIN; a certificate not issued here is NotFound. */
static void
test_resolve (Fixture *f, gconstpointer data)
{
  g_autoptr(X509) victim = p11c_test_make_cert ("victim", NB, NA, "rsa", NULL);
  g_autoptr(X509) foreign = p11c_test_make_cert ("foreign", NB, NA, "P-256", NULL);
  g_autofree char *u_victim = issue_to (f, f->a, victim, "plain", 1);
  g_autofree char *u_copy = put_cert (f->b, victim, 7);
  g_autofree char *u_foreign = put_cert (f->a, foreign, 3);
  g_autoptr(GError) error = NULL;
  P11cEnrollRequest *req;

  req = p11c_renewal_resolve (f->engine, f->tokens, u_copy, PIN, TRUE, &error);
  g_assert_null (req);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED);
  g_assert_nonnull (strstr (error->message, "is a copy"));
  g_clear_error (&error);
  req = p11c_renewal_resolve (f->engine, f->tokens, u_foreign, PIN, TRUE, &error);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND);
  g_clear_error (&error);
  req = p11c_renewal_resolve (f->engine, f->tokens, "pkcs11:token=agent;id=%99;type=cert", PIN, TRUE, &error);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND);
  g_clear_error (&error);
  req = p11c_renewal_resolve (f->engine, f->tokens, u_victim, NULL, TRUE, &error);
  g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
  g_assert_nonnull (strstr (error->message, "\"pin\""));
  g_clear_error (&error);
  req = p11c_renewal_resolve (f->engine, f->tokens, u_victim, PIN, TRUE, &error);
  g_assert_no_error (error);
  g_assert_nonnull (req);
  p11c_enroll_request_free (req);
}

static gboolean
has_record (P11cRecords *records, const char *sha256)
{
  g_autoptr(P11cIssued) rec = p11c_records_lookup (records, sha256);
  return rec != NULL;
}

/* Records of certificates gone from a listed token, or from the system
 * store, are forgotten; a token not listed keeps its records. */
static void
test_prune (Fixture *f, gconstpointer data)
{
  g_autoptr(X509) gone = p11c_test_make_cert ("gone", NB, NA, "P-256", NULL);
  g_autoptr(X509) away = p11c_test_make_cert ("away", NB, NA, "P-256", NULL);
  g_autoptr(X509) kept = p11c_test_make_cert ("kept", NB, NA, "P-256", NULL);
  g_autoptr(P11cCertSummary) s_gone = p11c_cert_summary_from_x509 (gone);
  g_autoptr(P11cCertSummary) s_away = p11c_cert_summary_from_x509 (away);
  g_autoptr(P11cCertSummary) s_kept = p11c_cert_summary_from_x509 (kept);
  g_autoptr(GPtrArray) only_a = g_ptr_array_new ();
  g_autoptr(GError) error = NULL;
  P11cRecords *records = p11c_engine_get_records (f->engine);
  CK_TOKEN_INFO a, b;

  p11c_token_get_info (f->a, &a, NULL);
  p11c_token_get_info (f->b, &b, NULL);
  g_free (issue_to (f, f->a, kept, "plain", 1));
  /* recorded, but not (any more) on their tokens */
  g_assert_true (p11c_records_put (records, p11c_issued_new (gone, "plain", "pkcs11:token=agent", "token", &a, 0),
                                   NULL, &error));
  g_assert_true (p11c_records_put (records, p11c_issued_new (away, "plain", "pkcs11:token=mallory", "token", &b, 0),
                                   NULL, &error));
  g_ptr_array_add (only_a, f->a);       /* mallory is unplugged */
  p11c_due_plan_free (p11c_renewal_plan_due (f->engine, only_a, EARLY));
  g_assert_false (has_record (records, s_gone->sha256));
  g_assert_true (has_record (records, s_away->sha256));
  g_assert_true (has_record (records, s_kept->sha256));
}

/* The system store: due entries need the right to renew it (kept apart). */
static void
test_system_store (Fixture *f, gconstpointer data)
{
  EVP_PKEY *key = NULL;
  g_autoptr(X509) cert = p11c_test_make_cert ("web", NB, NA, "P-256", &key);
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cDuePlan) plan = NULL;

  g_assert_true (p11c_system_store_save (p11c_engine_get_config (f->engine)->state_dir, "web", key, cert, NULL, NULL, &error));
  g_assert_true (p11c_records_put (p11c_engine_get_records (f->engine),
                                   p11c_issued_new (cert, "plain", "system:web", "system", NULL, 0), NULL, &error));
  plan = p11c_renewal_plan_due (f->engine, f->tokens, DUE_AT);
  g_assert_cmpuint (plan->requests->len, ==, 0);
  g_assert_cmpuint (plan->system_requests->len, ==, 1);
  g_assert_cmpstr (plan->system_uris->pdata[0], ==, "system:web");
  p11c_due_plan_drop_system (plan, "not allowed");
  g_assert_cmpuint (plan->system_requests->len, ==, 0);
  g_assert_true (contains (plan->not_renewable, "system:web"));
  g_assert_cmpstr (g_hash_table_lookup (plan->why_not, "system:web"), ==, "not allowed");
  g_assert_cmpstr (g_hash_table_lookup (plan->why_not_code, "system:web"), ==, "not-authorized");
  EVP_PKEY_free (key);
}

/* CertificateExpiring: each certificate once, when it crosses; the next
 * crossing is when the timer fires. */
static void
test_expiry_scan (Fixture *f, gconstpointer data)
{
  g_autoptr(X509) soon = p11c_test_make_cert ("soon", NB, NA, "P-256", NULL);
  g_autoptr(X509) later = p11c_test_make_cert ("later", NB, NA + 1000, "P-256", NULL);
  g_autoptr(GHashTable) announced = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr(GPtrArray) crossing = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_cert_entry_unref);
  g_autoptr(GPtrArray) found = NULL;
  gint64 warn = 14 * 86400, next;

  g_free (put_cert (f->a, soon, 1));
  g_free (put_cert (f->b, later, 2));
  found = p11c_renewal_collect (f->engine, f->tokens, NULL);
  g_assert_cmpuint (found->len, ==, 2);
  next = p11c_renewal_expiry_scan (found, NA - warn - 1, warn, announced, crossing);
  g_assert_cmpuint (crossing->len, ==, 0);
  g_assert_cmpint (next, ==, NA - warn);
  next = p11c_renewal_expiry_scan (found, NA - warn, warn, announced, crossing);
  g_assert_cmpuint (crossing->len, ==, 1);
  g_assert_cmpint (next, ==, NA + 1000 - warn);
  next = p11c_renewal_expiry_scan (found, NA - warn + 10, warn, announced, crossing);
  g_assert_cmpuint (crossing->len, ==, 1);               /* once only */
}

static void
test_renewal_window (void)
{
  const gint64 day = 86400;
  gint64 left;

  /* one-year cert, 30-day window: due at 2/3 of lifetime (day 243) */
  g_assert_false (p11c_renewal_due (0, 365 * day, 100 * day, 30, &left));
  g_assert_cmpint (left, ==, 265);
  g_assert_true (p11c_renewal_due (0, 365 * day, 244 * day, 30, &left));
  /* 60-day cert: 2/3 at day 40, window at day 30 → due from day 30 */
  g_assert_false (p11c_renewal_due (0, 60 * day, 29 * day, 30, &left));
  g_assert_true (p11c_renewal_due (0, 60 * day, 31 * day, 30, &left));
  /* expired */
  g_assert_true (p11c_renewal_due (0, 10 * day, 11 * day, 30, &left));
  g_assert_cmpint (left, ==, -1);
  /* 5-minute cert: due after 200 s */
  g_assert_false (p11c_renewal_due (0, 300, 199, 0, &left));
  g_assert_true (p11c_renewal_due (0, 300, 200, 0, &left));
}

/* The one token resolver (p11c_engine_resolve_token[_uri]) on the same two
 * tokens: exactly one must match; none is TokenNotPresent where a token was
 * named and NotFound where an object on one was; an object path is the bus
 * face's to resolve. */
static void
test_token_resolver (Fixture *f, gconstpointer data)
{
  struct { const char *spec; P11cError code; } bad[] = {
    { "pkcs11:token=nosuch", P11C_ERROR_TOKEN_NOT_PRESENT },
    { "pkcs11:model=SoftHSM%20v2", P11C_ERROR_INVALID_ARGS },      /* both match */
    { "/org/p11certd/tokens/x", P11C_ERROR_TOKEN_NOT_PRESENT },
    { "", P11C_ERROR_INVALID_ARGS },
    { "not-a-uri", P11C_ERROR_INVALID_ARGS },
  };

  g_assert_true (p11c_engine_resolve_token (f->engine, "pkcs11:token=agent", NULL) == f->a);
  g_assert_true (p11c_engine_resolve_token (f->engine, "pkcs11:token=mallory;type=cert", NULL) == f->b);
  g_assert_true (p11c_engine_resolve_token (f->engine, p11c_token_get_uri (f->a), NULL) == f->a);
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr(GError) error = NULL;
      g_assert_null (p11c_engine_resolve_token (f->engine, bad[i].spec, &error));
      g_assert_error (error, P11C_ERROR, (gint) bad[i].code);
    }
  {
    g_autoptr(P11cUri) uri = p11c_uri_parse ("pkcs11:token=elsewhere;id=%01;type=cert", NULL);
    g_autoptr(GError) error = NULL;
    g_assert_null (p11c_engine_resolve_token_uri (f->engine, uri, "that URI", P11C_ERROR_NOT_FOUND, &error));
    g_assert_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND);
  }
  /* ids: unique, and found again */
  g_assert_cmpstr (p11c_token_get_id (f->a), !=, p11c_token_get_id (f->b));
  g_assert_true (p11c_engine_find_token_by_id (f->engine, p11c_token_get_id (f->a)) == f->a);
  g_assert_null (p11c_engine_find_token_by_id (f->engine, "nosuch"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/renewal/window", test_renewal_window);
#define ADD(path, fn) g_test_add (path, Fixture, NULL, fixture_set_up, fn, fixture_tear_down)
  ADD ("/renewal/due-and-people", test_due_and_people);
  ADD ("/renewal/pin-file-binding", test_pin_file_binding);
  ADD ("/renewal/resolve", test_resolve);
  ADD ("/renewal/prune", test_prune);
  ADD ("/renewal/system-store", test_system_store);
  ADD ("/renewal/expiry-scan", test_expiry_scan);
  ADD ("/engine/token-resolver", test_token_resolver);
  return g_test_run ();
}
