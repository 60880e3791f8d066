/* The issuance records and the refused-PIN-file memory: round trip through
 * the state directory, old records, modes, the generation counter. */
#include "p11c-records.h"
#include "p11c-cert.h"
#include "test-util.h"
#include <string.h>
#include <sys/stat.h>

static void
pad (CK_UTF8CHAR *field, gsize len, const char *value)
{
  memset (field, ' ', len);
  memcpy (field, value, MIN (strlen (value), len));
}

static void
token_info (CK_TOKEN_INFO *info, const char *label, const char *serial)
{
  memset (info, 0, sizeof *info);
  pad (info->label, sizeof info->label, label);
  pad (info->serialNumber, sizeof info->serialNumber, serial);
  pad (info->model, sizeof info->model, "SoftHSM v2");
  pad (info->manufacturerID, sizeof info->manufacturerID, "SoftHSM project");
}

static guint
file_mode (const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  struct stat st;
  g_assert_cmpint (stat (path, &st), ==, 0);
  return st.st_mode & 07777;
}

static void
test_round_trip (void)
{
  g_autofree char *dir = p11c_test_mkdtemp ();
  g_autoptr(X509) cert = p11c_test_make_cert ("agent", 1700000000, 1800000000, "P-256", NULL);
  g_autoptr(X509) next = p11c_test_make_cert ("agent", 1700000000, 1900000000, "P-256", NULL);
  g_autoptr(P11cCertSummary) sum = p11c_cert_summary_from_x509 (cert);
  g_autoptr(P11cCertSummary) next_sum = p11c_cert_summary_from_x509 (next);
  g_autoptr(GError) error = NULL;
  CK_TOKEN_INFO a, b;
  guint64 gen;

  token_info (&a, "agent", "A-1");
  token_info (&b, "agent", "B-2");   /* same label, another token */
  {
    g_autoptr(P11cRecords) rs = p11c_records_new (dir);
    gen = p11c_records_generation (rs);
    g_assert_true (p11c_records_put (rs, p11c_issued_new (cert, "est", "pkcs11:token=agent", "token", &a, 1000),
                                     NULL, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (p11c_records_generation (rs), >, gen);
  }
  g_assert_cmpuint (file_mode (dir, "issued.ini"), ==, 0600);
  {
    g_autoptr(P11cRecords) rs = p11c_records_new (dir);
    g_autoptr(P11cIssued) r = p11c_records_lookup (rs, sum->sha256);
    g_autoptr(GHashTable) map = p11c_records_map (rs);
    g_autoptr(GPtrArray) gone = g_ptr_array_new ();
    unsigned char *spki = NULL;
    int len = i2d_X509_PUBKEY (X509_get_X509_PUBKEY (cert), &spki);
    g_autofree char *spki_sha = p11c_sha256_hex (spki, len);

    OPENSSL_free (spki);
    g_assert_nonnull (r);
    g_assert_false (r->legacy);
    g_assert_cmpstr (r->ca, ==, "est");
    g_assert_cmpstr (r->storage, ==, "token");
    g_assert_cmpstr (r->token_serial, ==, "A-1");
    g_assert_cmpstr (r->token_label, ==, "agent");
    g_assert_cmpstr (r->token_model, ==, "SoftHSM v2");
    g_assert_cmpstr (r->token_manufacturer, ==, "SoftHSM project");
    g_assert_cmpstr (r->key_sha256, ==, spki_sha);
    g_assert_cmpint (r->enrolled_by, ==, 1000);
    g_assert_cmpint (r->not_after, ==, 1800000000);
    g_assert_true (p11c_issued_is_on_token (r, &a));
    g_assert_false (p11c_issued_is_on_token (r, &b));
    /* the CA is shown where the certificate was written, not on a copy */
    g_assert_cmpstr (p11c_issued_ca_at (g_hash_table_lookup (map, sum->sha256), "pkcs11:token=agent", &a), ==, "est");
    g_assert_null (p11c_issued_ca_at (g_hash_table_lookup (map, sum->sha256), "pkcs11:token=agent", &b));
    g_assert_null (p11c_issued_ca_at (g_hash_table_lookup (map, sum->sha256), "system:agent", NULL));

    /* a renewal replaces the record in one write */
    gen = p11c_records_generation (rs);
    g_assert_true (p11c_records_put (rs, p11c_issued_new (next, "est", "pkcs11:token=agent", "token", &a, 1000),
                                     sum->sha256, &error));
    g_assert_null (p11c_records_lookup (rs, sum->sha256));
    g_assert_cmpuint (p11c_records_generation (rs), >, gen);
    /* forgetting: counted, and the generation moves only when something went */
    g_ptr_array_add (gone, sum->sha256);
    gen = p11c_records_generation (rs);
    g_assert_cmpuint (p11c_records_forget (rs, gone), ==, 0);
    g_assert_cmpuint (p11c_records_generation (rs), ==, gen);
    g_ptr_array_add (gone, next_sum->sha256);
    g_assert_cmpuint (p11c_records_forget (rs, gone), ==, 1);
    g_assert_cmpuint (p11c_records_generation (rs), >, gen);
  }
  {
    g_autoptr(P11cRecords) rs = p11c_records_new (dir);
    g_autoptr(GPtrArray) all = p11c_records_list (rs);
    g_assert_cmpuint (all->len, ==, 0);
  }
  p11c_test_rmtree (dir);
}

/* Records written before they named the token: the URI's token attributes
 * identify it; the record is made whole when its renewal replaces it. */
static void
test_old_records (void)
{
  g_autofree char *dir = p11c_test_mkdtemp ();
  g_autofree char *path = g_build_filename (dir, "issued.ini", NULL);
  g_autoptr(X509) next = p11c_test_make_cert ("agent", 1700000000, 1900000000, "P-256", NULL);
  g_autoptr(P11cCertSummary) next_sum = p11c_cert_summary_from_x509 (next);
  g_autoptr(GError) error = NULL;
  g_autofree char *text = NULL;
  CK_TOKEN_INFO a, b;
  const char *old =
    "[aaaa]\nca=est\nuri=pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=A-1;token=agent;"
    "id=%01;object=c;type=cert\nnot-after=1800000000\n"
    "[bbbb]\nca=local\nuri=system:web\nnot-after=1800000000\n"
    "[cccc]\nca=local\nuri=file:sha256=cccc\nnot-after=1800000000\n";

  token_info (&a, "agent", "A-1");
  token_info (&b, "agent", "B-2");
  g_assert_true (g_file_set_contents (path, old, -1, NULL));
  {
    g_autoptr(P11cRecords) rs = p11c_records_new (dir);
    g_autoptr(P11cIssued) t = p11c_records_lookup (rs, "aaaa");
    g_autoptr(P11cIssued) s = p11c_records_lookup (rs, "bbbb");
    g_autoptr(P11cIssued) f = p11c_records_lookup (rs, "cccc");

    g_assert_true (t->legacy);
    g_assert_cmpstr (t->storage, ==, "token");
    g_assert_cmpstr (t->token_serial, ==, "A-1");
    g_assert_cmpint (t->enrolled_by, ==, -1);
    g_assert_true (p11c_issued_is_on_token (t, &a));
    g_assert_false (p11c_issued_is_on_token (t, &b));
    g_assert_cmpstr (s->storage, ==, "system");
    g_assert_false (p11c_issued_is_on_token (s, &a));
    g_assert_cmpstr (p11c_issued_ca_at (s, "system:web", NULL), ==, "local");
    g_assert_null (p11c_issued_ca_at (s, "system:other", NULL));
    g_assert_null (p11c_issued_ca_at (s, "pkcs11:token=agent", &a));
    g_assert_cmpstr (p11c_issued_ca_at (t, "pkcs11:token=agent", &a), ==, "est");
    g_assert_cmpstr (f->storage, ==, "file");
    g_assert_null (p11c_issued_ca_at (f, "file:sha256=cccc", NULL));
    /* the renewal's record replaces the old one */
    g_assert_true (p11c_records_put (rs, p11c_issued_new (next, "est", "pkcs11:token=agent", "token", &a, -1),
                                     "aaaa", &error));
    g_assert_no_error (error);
  }
  g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
  g_assert_null (strstr (text, "[aaaa]"));
  g_assert_nonnull (strstr (text, "[bbbb]\nca=local\nuri=system:web\n"));   /* untouched */
  {
    g_autoptr(P11cRecords) rs = p11c_records_new (dir);
    g_autoptr(P11cIssued) n = p11c_records_lookup (rs, next_sum->sha256);
    g_autoptr(P11cIssued) s = p11c_records_lookup (rs, "bbbb");
    g_assert_false (n->legacy);
    g_assert_cmpstr (n->token_serial, ==, "A-1");
    g_assert_true (s->legacy);
  }
  p11c_test_rmtree (dir);
}

static void
test_pin_refused (void)
{
  g_autofree char *dir = p11c_test_mkdtemp ();
  g_autofree char *pin_file = g_build_filename (dir, "token.pin", NULL);
  g_autofree char *ini = NULL;
  CK_TOKEN_INFO a, b;

  token_info (&a, "agent", "A-1");
  token_info (&b, "agent", "B-2");
  g_assert_true (g_file_set_contents (pin_file, "Wr0ngPin77\n", -1, NULL));
  {
    g_autoptr(P11cRecords) rs = p11c_records_new (dir);
    g_assert_false (p11c_records_pin_refused (rs, &a, pin_file, "Wr0ngPin77"));
    p11c_records_pin_refused_add (rs, &a, pin_file, "Wr0ngPin77");
    g_assert_true (p11c_records_pin_refused (rs, &a, pin_file, "Wr0ngPin77"));
  }
  g_assert_cmpuint (file_mode (dir, "pin-refused.ini"), ==, 0600);
  g_assert_cmpuint (file_mode (dir, "pin-refused.key"), ==, 0600);
  {
    g_autofree char *path = g_build_filename (dir, "pin-refused.ini", NULL);
    g_assert_true (g_file_get_contents (path, &ini, NULL, NULL));
    g_assert_null (strstr (ini, "Wr0ngPin77"));    /* a keyed digest, not the PIN */
  }
  {
    /* across a restart; another token, another file or another PIN is not refused */
    g_autofree char *other = g_build_filename (dir, "other.pin", NULL);
    g_autoptr(P11cRecords) rs = p11c_records_new (dir);
    g_assert_true (p11c_records_pin_refused (rs, &a, pin_file, "Wr0ngPin77"));
    g_assert_false (p11c_records_pin_refused (rs, &b, pin_file, "Wr0ngPin77"));
    g_assert_false (p11c_records_pin_refused (rs, &a, other, "Wr0ngPin77"));
    g_assert_false (p11c_records_pin_refused (rs, &a, pin_file, "Passw0rdA"));
  }
  p11c_test_rmtree (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/records/round-trip", test_round_trip);
  g_test_add_func ("/records/old-records", test_old_records);
  g_test_add_func ("/records/pin-refused", test_pin_refused);
  return g_test_run ();
}
