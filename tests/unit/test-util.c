#include "test-util.h"
#include <glib/gstdio.h>

X509 *
p11c_test_make_cert (const char *cn, gint64 not_before, gint64 not_after, const char *curve_or_rsa,
                     EVP_PKEY **key_out)
{
  EVP_PKEY *key = g_str_equal (curve_or_rsa, "rsa") ? EVP_PKEY_Q_keygen (NULL, NULL, "RSA", (size_t) 2048)
                                                     : EVP_PKEY_Q_keygen (NULL, NULL, "EC", curve_or_rsa);
  X509 *c = X509_new ();
  X509_NAME *n = X509_get_subject_name (c);
  time_t nb = not_before, na = not_after;

  X509_NAME_add_entry_by_txt (n, "CN", MBSTRING_UTF8, (const guchar *) cn, -1, -1, 0);
  X509_NAME_add_entry_by_txt (n, "O", MBSTRING_UTF8, (const guchar *) "Shop, Ltd", -1, -1, 0);
  X509_set_issuer_name (c, n);
  ASN1_INTEGER_set (X509_get_serialNumber (c), 0x1234);
  X509_time_adj_ex (X509_getm_notBefore (c), 0, 0, &nb);
  X509_time_adj_ex (X509_getm_notAfter (c), 0, 0, &na);
  X509_set_pubkey (c, key);
  X509_sign (c, key, EVP_sha256 ());
  if (key_out != NULL)
    *key_out = key;
  else
    EVP_PKEY_free (key);
  return c;
}

char *
p11c_test_mkdtemp (void)
{
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp ("p11c-unit-XXXXXX", &error);
  g_assert_no_error (error);
  return dir;
}

void
p11c_test_rmtree (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (dir, name, NULL);
      if (g_file_test (path, G_FILE_TEST_IS_DIR) && !g_file_test (path, G_FILE_TEST_IS_SYMLINK))
        p11c_test_rmtree (path);
      else
        g_unlink (path);
    }
  g_rmdir (dir);
}
