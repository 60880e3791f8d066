/* The system store without a bus (daemon/p11c-store.c): an entry saved,
 * listed, loaded, replaced and deleted in a temporary state directory;
 * file modes; names refused; the generation counter; what a crash leaves
 * is cleaned up. */
#include "p11c-store.h"
#include "p11c-engine.h"
#include "p11c-error.h"
#include "test-util.h"
#include <glib/gstdio.h>
#include <sys/stat.h>

static guint
mode_of (const char *dir, const char *a, const char *b)
{
  g_autofree char *path = g_build_filename (dir, a, b, NULL);
  struct stat st;
  g_assert_cmpint (stat (path, &st), ==, 0);
  return st.st_mode & 07777;
}

static P11cCertEntry *
find_entry (GPtrArray *list, const char *uri)
{
  for (guint i = 0; i < list->len; i++)
    if (g_str_equal (((P11cCertEntry *) list->pdata[i])->uri, uri))
      return list->pdata[i];
  return NULL;
}

static void
test_round_trip (void)
{
  g_autofree char *dir = p11c_test_mkdtemp ();
  EVP_PKEY *key = NULL, *key2 = NULL;
  g_autoptr(X509) cert = p11c_test_make_cert ("web", 1700000000, 1800000000, "P-256", &key);
  g_autoptr(X509) next = p11c_test_make_cert ("web", 1700000000, 1900000000, "P-256", &key2);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) list = NULL;
  g_autoptr(X509) loaded = NULL;
  g_autoptr(EVP_PKEY) loaded_key = NULL;
  guint gen = p11c_system_store_generation ();
  P11cCertEntry *e;

  g_assert_true (p11c_system_store_save (dir, "web", key, cert, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (p11c_system_store_generation (), !=, gen);
  g_assert_cmpuint (mode_of (dir, "system/web", "key.pem"), ==, 0600);
  g_assert_cmpuint (mode_of (dir, "system/web", "cert.pem"), ==, 0644);

  list = p11c_system_store_list (dir);
  e = find_entry (list, "system:web");
  g_assert_nonnull (e);
  g_assert_cmpstr (e->storage, ==, "system");
  g_assert_null (e->token_id);
  g_assert_true (e->has_private_key);
  g_assert_nonnull (e->summary);
  g_assert_cmpint (e->summary->not_after, ==, 1800000000);

  g_assert_true (p11c_system_store_load (dir, "web", &loaded, &loaded_key, &error));
  g_assert_no_error (error);
  g_assert_cmpint (X509_cmp (loaded, cert), ==, 0);
  g_assert_cmpint (EVP_PKEY_eq (loaded_key, key), ==, 1);

  /* replaced in one step: the new certificate and key together */
  g_assert_true (p11c_system_store_save (dir, "web", key2, next, NULL, NULL, &error));
  g_clear_pointer (&loaded, X509_free);
  g_clear_pointer (&loaded_key, EVP_PKEY_free);
  g_assert_true (p11c_system_store_load (dir, "web", &loaded, &loaded_key, &error));
  g_assert_cmpint (X509_cmp (loaded, next), ==, 0);
  g_assert_cmpint (EVP_PKEY_eq (loaded_key, key2), ==, 1);

  gen = p11c_system_store_generation ();
  g_assert_true (p11c_system_store_delete (dir, "web", &error));
  g_assert_no_error (error);
  g_assert_cmpuint (p11c_system_store_generation (), !=, gen);
  g_clear_pointer (&list, g_ptr_array_unref);
  list = p11c_system_store_list (dir);
  g_assert_null (find_entry (list, "system:web"));

  EVP_PKEY_free (key);
  EVP_PKEY_free (key2);
  p11c_test_rmtree (dir);
}

static void
test_refused (void)
{
  g_autofree char *dir = p11c_test_mkdtemp ();
  EVP_PKEY *key = NULL;
  g_autoptr(X509) cert = p11c_test_make_cert ("web", 1700000000, 1800000000, "P-256", &key);
  const char *bad[] = { "", "../etc", "a/b", ".hidden", NULL };

  for (const char **n = bad; *n; n++)
    {
      g_autoptr(GError) error = NULL;
      g_autofree char *escaped = g_build_filename (dir, "etc", NULL);
      g_assert_false (p11c_system_store_save (dir, *n, key, cert, NULL, NULL, &error));
      g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
      g_assert_false (g_file_test (escaped, G_FILE_TEST_EXISTS));
    }
  {
    g_autoptr(GError) error = NULL;
    g_assert_false (p11c_system_store_delete (dir, "nosuch", &error));
    g_assert_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND);
  }
  {
    g_autoptr(GError) error = NULL;
    g_assert_false (p11c_system_store_delete (dir, "../system", &error));
    g_assert_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND);
  }
  EVP_PKEY_free (key);
  p11c_test_rmtree (dir);
}

/* A crash between writing and moving into place leaves .new-* and .tmp-*:
 * recovery removes them and keeps the complete entry. */
static void
test_recover (void)
{
  g_autofree char *dir = p11c_test_mkdtemp ();
  EVP_PKEY *key = NULL;
  g_autoptr(X509) cert = p11c_test_make_cert ("web", 1700000000, 1800000000, "P-256", &key);
  g_autofree char *half = g_build_filename (dir, "system", ".new-ABCDEF", NULL);
  g_autofree char *half_key = g_build_filename (half, "key.pem", NULL);
  g_autofree char *tmp = g_build_filename (dir, "system", "web", "cert.pem.tmp-123", NULL);
  g_autoptr(GPtrArray) list = NULL;

  g_assert_true (p11c_system_store_save (dir, "web", key, cert, NULL, NULL, NULL));
  g_assert_cmpint (g_mkdir (half, 0700), ==, 0);
  g_assert_true (g_file_set_contents (half_key, "half", -1, NULL));
  g_assert_true (g_file_set_contents (tmp, "half", -1, NULL));
  p11c_system_store_recover (dir);
  g_assert_false (g_file_test (half, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (tmp, G_FILE_TEST_EXISTS));
  list = p11c_system_store_list (dir);
  g_assert_cmpuint (list->len, ==, 1);
  g_assert_nonnull (find_entry (list, "system:web"));
  EVP_PKEY_free (key);
  p11c_test_rmtree (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/store/round-trip", test_round_trip);
  g_test_add_func ("/store/refused", test_refused);
  g_test_add_func ("/store/recover", test_recover);
  return g_test_run ();
}
