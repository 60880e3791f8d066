#define G_LOG_DOMAIN "p11c-renew"
#include "p11c-renew.h"
#include "p11c-cert.h"
#include "p11c-error.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include "p11c-store.h"
#include "p11c-engine.h"
#include "p11c-uri.h"
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static GMutex issued_lock;

static char *
issued_path (const char *state_dir)
{
  return g_build_filename (state_dir, "issued.ini", NULL);
}

static void
save (const char *path, GKeyFile *kf)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *data = NULL;
  gsize len;

  data = g_key_file_to_data (kf, &len, NULL);
  if (!p11c_store_write_file (path, data, len, 0600, NULL, &error))
    g_warning ("Cannot save the issued-certificate records: %s", error->message);
}

void
p11c_issued_record (const char *state_dir, X509 *cert, const char *ca, const char *uri, X509 *replaced)
{
  g_autofree char *path = issued_path (state_dir);
  g_autoptr(GKeyFile) kf = g_key_file_new ();
  g_autoptr(P11cCertSummary) sum = p11c_cert_summary_from_x509 (cert);

  g_mutex_lock (&issued_lock);
  g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, NULL);
  g_key_file_set_string (kf, sum->sha256, "ca", ca);
  g_key_file_set_string (kf, sum->sha256, "uri", uri);
  g_key_file_set_int64 (kf, sum->sha256, "not-after", sum->not_after);
  if (replaced != NULL)
    {
      g_autoptr(P11cCertSummary) old = p11c_cert_summary_from_x509 (replaced);
      g_key_file_remove_group (kf, old->sha256, NULL);
    }
  save (path, kf);
  g_mutex_unlock (&issued_lock);
}

GHashTable *
p11c_issued_load (const char *state_dir)
{
  g_autofree char *path = issued_path (state_dir);
  g_autoptr(GKeyFile) kf = g_key_file_new ();
  GHashTable *map = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_auto(GStrv) groups = NULL;

  g_mutex_lock (&issued_lock);
  if (g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, NULL))
    groups = g_key_file_get_groups (kf, NULL);
  for (char **g = groups; g && *g; g++)
    {
      char *ca = g_key_file_get_string (kf, *g, "ca", NULL);
      if (ca != NULL)
        g_hash_table_insert (map, g_strdup (*g), ca);
    }
  g_mutex_unlock (&issued_lock);
  return map;
}

static gboolean
record_on_present_token (GKeyFile *kf, const char *group, GPtrArray *tokens)
{
  g_autofree char *uri = g_key_file_get_string (kf, group, "uri", NULL);
  g_autoptr(P11cUri) parsed = NULL;

  if (uri == NULL || g_str_has_prefix (uri, "system:"))
    return TRUE;
  if (g_str_has_prefix (uri, "file:"))
    return FALSE;    /* a PKCS#12 file is the caller's: never pruned here */
  parsed = p11c_uri_parse (uri, NULL);
  for (guint i = 0; parsed && i < tokens->len; i++)
    {
      CK_TOKEN_INFO info;
      p11c_token_get_info (tokens->pdata[i], &info, NULL);
      if (p11c_uri_matches_token (parsed, &info))
        return TRUE;
    }
  return FALSE;
}

void
p11c_issued_prune_missing (const char *state_dir, GHashTable *present, GPtrArray *tokens)
{
  g_autofree char *path = issued_path (state_dir);
  g_autoptr(GKeyFile) kf = g_key_file_new ();
  g_auto(GStrv) groups = NULL;
  gboolean changed = FALSE;

  g_mutex_lock (&issued_lock);
  if (g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, NULL))
    groups = g_key_file_get_groups (kf, NULL);
  for (char **g = groups; g && *g; g++)
    if (!g_hash_table_contains (present, *g) && record_on_present_token (kf, *g, tokens))
      {
        g_key_file_remove_group (kf, *g, NULL);
        changed = TRUE;
      }
  if (changed)
    save (path, kf);
  g_mutex_unlock (&issued_lock);
}

char *
p11c_profile_read_pin (const P11cCaProfile *profile, GError **error)
{
  struct stat st;
  char buf[P11C_SECRET_MAX + 2];
  ssize_t n;
  int fd;
  char *pin;

  if (profile->pin_file == NULL)
    return NULL;
  fd = open (profile->pin_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 || fstat (fd, &st) != 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot read the PIN file %s of CA profile %s: %s",
                   profile->pin_file, profile->name, g_strerror (errno));
      if (fd >= 0)
        close (fd);
      return NULL;
    }
  if (!S_ISREG (st.st_mode) || st.st_uid != 0 || (st.st_mode & 077) != 0)
    {
      close (fd);
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED,
                   "The PIN file %s must be a regular file owned by root with mode 0600 or stricter",
                   profile->pin_file);
      return NULL;
    }
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "The PIN file %s is empty", profile->pin_file);
      return NULL;
    }
  buf[n] = '\0';
  buf[strcspn (buf, "\r\n")] = '\0';
  pin = g_strdup (buf);
  p11c_memwipe (buf, sizeof buf);
  if (!p11c_secret_check (pin, "PIN", error))
    {
      p11c_secret_free (pin);
      return NULL;
    }
  return pin;
}
