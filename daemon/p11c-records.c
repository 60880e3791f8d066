#define G_LOG_DOMAIN "p11c-records"
#include "p11c-records.h"
#include "p11c-cert.h"
#include "p11c-error.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include "p11c-store.h"
#include "p11c-uri.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/rand.h>

/* ---- one record --------------------------------------------------------- */

static char *
token_field (const CK_UTF8CHAR *s, gsize len)
{
  return p11c_padded_string (s, len);
}

P11cIssued *
p11c_issued_new (X509 *cert, const char *ca, const char *uri, const char *storage,
                 const CK_TOKEN_INFO *token, gint64 enrolled_by)
{
  P11cIssued *rec = g_new0 (P11cIssued, 1);
  g_autoptr(P11cCertSummary) sum = p11c_cert_summary_from_x509 (cert);
  unsigned char *spki = NULL;
  int len = i2d_X509_PUBKEY (X509_get_X509_PUBKEY (cert), &spki);

  rec->sha256 = g_strdup (sum->sha256);
  rec->ca = g_strdup (ca);
  rec->uri = g_strdup (uri);
  rec->storage = g_strdup (storage);
  rec->not_after = sum->not_after;
  rec->key_sha256 = len > 0 ? p11c_sha256_hex (spki, len) : NULL;
  OPENSSL_free (spki);
  if (token != NULL)
    {
      rec->token_serial = token_field (token->serialNumber, sizeof token->serialNumber);
      rec->token_label = token_field (token->label, sizeof token->label);
      rec->token_model = token_field (token->model, sizeof token->model);
      rec->token_manufacturer = token_field (token->manufacturerID, sizeof token->manufacturerID);
    }
  rec->enrolled_by = enrolled_by;
  return rec;
}

P11cIssued *
p11c_issued_copy (const P11cIssued *r)
{
  P11cIssued *c = g_new0 (P11cIssued, 1);
  c->sha256 = g_strdup (r->sha256);
  c->ca = g_strdup (r->ca);
  c->uri = g_strdup (r->uri);
  c->storage = g_strdup (r->storage);
  c->not_after = r->not_after;
  c->token_serial = g_strdup (r->token_serial);
  c->token_label = g_strdup (r->token_label);
  c->token_model = g_strdup (r->token_model);
  c->token_manufacturer = g_strdup (r->token_manufacturer);
  c->key_sha256 = g_strdup (r->key_sha256);
  c->enrolled_by = r->enrolled_by;
  c->legacy = r->legacy;
  return c;
}

void
p11c_issued_free (P11cIssued *r)
{
  if (r == NULL)
    return;
  g_free (r->sha256);
  g_free (r->ca);
  g_free (r->uri);
  g_free (r->storage);
  g_free (r->token_serial);
  g_free (r->token_label);
  g_free (r->token_model);
  g_free (r->token_manufacturer);
  g_free (r->key_sha256);
  g_free (r);
}

/* An old record knows its token only by what its URI names: those fields
 * must match, the others are unknown.  A current record names all four. */
static gboolean
field_matches (const char *want, const CK_UTF8CHAR *have, gsize len, gboolean legacy)
{
  g_autofree char *s = NULL;
  if (want == NULL)
    return legacy;
  s = token_field (have, len);
  return g_str_equal (want, s);
}

gboolean
p11c_issued_is_on_token (const P11cIssued *rec, const CK_TOKEN_INFO *info)
{
  if (rec->storage == NULL || !g_str_equal (rec->storage, "token"))
    return FALSE;
  if (rec->legacy && rec->token_serial == NULL && rec->token_label == NULL)
    return FALSE;    /* an old record whose URI names no token */
  return field_matches (rec->token_serial, info->serialNumber, sizeof info->serialNumber, rec->legacy)
      && field_matches (rec->token_label, info->label, sizeof info->label, rec->legacy)
      && field_matches (rec->token_model, info->model, sizeof info->model, rec->legacy)
      && field_matches (rec->token_manufacturer, info->manufacturerID, sizeof info->manufacturerID, rec->legacy);
}

const char *
p11c_issued_ca_at (const P11cIssued *rec, const char *uri, const CK_TOKEN_INFO *token)
{
  if (token != NULL)
    return p11c_issued_is_on_token (rec, token) ? rec->ca : NULL;
  return g_strcmp0 (rec->storage, "system") == 0 && g_strcmp0 (rec->uri, uri) == 0 ? rec->ca : NULL;
}

char *
p11c_issued_describe_token (const P11cIssued *rec)
{
  return g_strdup_printf ("token \"%s\" (serial %s)", rec->token_label ? rec->token_label : "?",
                          rec->token_serial ? rec->token_serial : "?");
}

/* ---- the set ------------------------------------------------------------ */

struct _P11cRecords {
  GMutex      lock;
  char       *path;          /* STATE/issued.ini */
  char       *refused_path;  /* STATE/pin-refused.ini */
  char       *key_path;      /* STATE/pin-refused.key */
  GHashTable *issued;        /* sha256 → P11cIssued */
  GKeyFile   *refused;
  guint64     generation;
};

static void
set_opt (GKeyFile *kf, const char *group, const char *key, const char *value)
{
  if (value != NULL)
    g_key_file_set_string (kf, group, key, value);
}

static P11cIssued *
record_from_keyfile (GKeyFile *kf, const char *group)
{
  g_autofree char *ca = g_key_file_get_string (kf, group, "ca", NULL);
  P11cIssued *r;

  if (ca == NULL)
    return NULL;
  r = g_new0 (P11cIssued, 1);
  r->sha256 = g_strdup (group);
  r->ca = g_steal_pointer (&ca);
  r->uri = g_key_file_get_string (kf, group, "uri", NULL);
  r->not_after = g_key_file_get_int64 (kf, group, "not-after", NULL);
  r->storage = g_key_file_get_string (kf, group, "storage", NULL);
  r->enrolled_by = -1;
  if (r->storage == NULL)
    {
      /* written before the records named the token: what the URI says */
      g_autoptr(P11cUri) parsed = NULL;
      r->legacy = TRUE;
      if (r->uri == NULL || g_str_has_prefix (r->uri, "system:"))
        r->storage = g_strdup ("system");
      else if (g_str_has_prefix (r->uri, "file:"))
        r->storage = g_strdup ("file");
      else
        {
          r->storage = g_strdup ("token");
          parsed = p11c_uri_parse (r->uri, NULL);
          if (parsed != NULL)
            {
              r->token_serial = g_strdup (parsed->serial);
              r->token_label = g_strdup (parsed->token);
              r->token_model = g_strdup (parsed->model);
              r->token_manufacturer = g_strdup (parsed->manufacturer);
            }
        }
      return r;
    }
  r->token_serial = g_key_file_get_string (kf, group, "token-serial", NULL);
  r->token_label = g_key_file_get_string (kf, group, "token-label", NULL);
  r->token_model = g_key_file_get_string (kf, group, "token-model", NULL);
  r->token_manufacturer = g_key_file_get_string (kf, group, "token-manufacturer", NULL);
  r->key_sha256 = g_key_file_get_string (kf, group, "key-sha256", NULL);
  if (g_key_file_has_key (kf, group, "enrolled-by", NULL))
    r->enrolled_by = g_key_file_get_int64 (kf, group, "enrolled-by", NULL);
  return r;
}

static void
record_to_keyfile (GKeyFile *kf, const P11cIssued *r)
{
  const char *g = r->sha256;

  g_key_file_set_string (kf, g, "ca", r->ca);
  set_opt (kf, g, "uri", r->uri);
  g_key_file_set_int64 (kf, g, "not-after", r->not_after);
  if (r->legacy)
    return;   /* kept as it was read until its renewal replaces it */
  set_opt (kf, g, "storage", r->storage);
  set_opt (kf, g, "token-serial", r->token_serial);
  set_opt (kf, g, "token-label", r->token_label);
  set_opt (kf, g, "token-model", r->token_model);
  set_opt (kf, g, "token-manufacturer", r->token_manufacturer);
  set_opt (kf, g, "key-sha256", r->key_sha256);
  if (r->enrolled_by >= 0)
    g_key_file_set_int64 (kf, g, "enrolled-by", r->enrolled_by);
}

P11cRecords *
p11c_records_new (const char *state_dir)
{
  P11cRecords *rs = g_new0 (P11cRecords, 1);
  g_autoptr(GKeyFile) kf = g_key_file_new ();
  g_auto(GStrv) groups = NULL;

  g_mutex_init (&rs->lock);
  rs->path = g_build_filename (state_dir, "issued.ini", NULL);
  rs->refused_path = g_build_filename (state_dir, "pin-refused.ini", NULL);
  rs->key_path = g_build_filename (state_dir, "pin-refused.key", NULL);
  rs->issued = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) p11c_issued_free);
  rs->refused = g_key_file_new ();
  rs->generation = 1;
  if (g_key_file_load_from_file (kf, rs->path, G_KEY_FILE_NONE, NULL))
    groups = g_key_file_get_groups (kf, NULL);
  for (char **g = groups; g && *g; g++)
    {
      P11cIssued *r = record_from_keyfile (kf, *g);
      if (r != NULL)
        g_hash_table_replace (rs->issued, r->sha256, r);
    }
  g_key_file_load_from_file (rs->refused, rs->refused_path, G_KEY_FILE_NONE, NULL);
  return rs;
}

void
p11c_records_free (P11cRecords *rs)
{
  if (rs == NULL)
    return;
  g_hash_table_unref (rs->issued);
  g_key_file_unref (rs->refused);
  g_free (rs->path);
  g_free (rs->refused_path);
  g_free (rs->key_path);
  g_mutex_clear (&rs->lock);
  g_free (rs);
}

guint64
p11c_records_generation (P11cRecords *rs)
{
  guint64 g;
  g_mutex_lock (&rs->lock);
  g = rs->generation;
  g_mutex_unlock (&rs->lock);
  return g;
}

P11cIssued *
p11c_records_lookup (P11cRecords *rs, const char *sha256)
{
  P11cIssued *r;
  g_mutex_lock (&rs->lock);
  r = sha256 ? g_hash_table_lookup (rs->issued, sha256) : NULL;
  r = r ? p11c_issued_copy (r) : NULL;
  g_mutex_unlock (&rs->lock);
  return r;
}

GHashTable *
p11c_records_map (P11cRecords *rs)
{
  GHashTable *map = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) p11c_issued_free);
  GHashTableIter iter;
  P11cIssued *r;

  g_mutex_lock (&rs->lock);
  g_hash_table_iter_init (&iter, rs->issued);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *) &r))
    {
      P11cIssued *copy = p11c_issued_copy (r);
      g_hash_table_insert (map, copy->sha256, copy);
    }
  g_mutex_unlock (&rs->lock);
  return map;
}

GPtrArray *
p11c_records_list (P11cRecords *rs)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_issued_free);
  GHashTableIter iter;
  P11cIssued *r;

  g_mutex_lock (&rs->lock);
  g_hash_table_iter_init (&iter, rs->issued);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *) &r))
    g_ptr_array_add (out, p11c_issued_copy (r));
  g_mutex_unlock (&rs->lock);
  return out;
}

/* Write the whole set (lock held). */
static gboolean
save_locked (P11cRecords *rs, GError **error)
{
  g_autoptr(GKeyFile) kf = g_key_file_new ();
  g_autoptr(GList) keys = g_hash_table_get_keys (rs->issued);
  g_autofree char *data = NULL;
  gsize len;

  keys = g_list_sort (keys, (GCompareFunc) strcmp);   /* a stable file */
  for (GList *l = keys; l; l = l->next)
    record_to_keyfile (kf, g_hash_table_lookup (rs->issued, l->data));
  data = g_key_file_to_data (kf, &len, NULL);
  return p11c_store_write_file (rs->path, data, len, 0600, NULL, error);
}

gboolean
p11c_records_put (P11cRecords *rs, P11cIssued *rec, const char *replaced_sha256, GError **error)
{
  gboolean ok;

  g_mutex_lock (&rs->lock);
  if (replaced_sha256 != NULL && g_strcmp0 (replaced_sha256, rec->sha256) != 0)
    g_hash_table_remove (rs->issued, replaced_sha256);
  g_hash_table_replace (rs->issued, rec->sha256, rec);
  rs->generation++;
  ok = save_locked (rs, error);
  g_mutex_unlock (&rs->lock);
  if (!ok)
    g_prefix_error (error, "Cannot save the issued-certificate records: ");
  return ok;
}

guint
p11c_records_forget (P11cRecords *rs, GPtrArray *sha256s)
{
  guint n = 0;
  g_autoptr(GError) error = NULL;

  g_mutex_lock (&rs->lock);
  for (guint i = 0; sha256s && i < sha256s->len; i++)
    if (g_hash_table_remove (rs->issued, sha256s->pdata[i]))
      n++;
  if (n > 0)
    {
      rs->generation++;
      if (!save_locked (rs, &error))
        g_warning ("Cannot save the issued-certificate records: %s", error->message);
    }
  g_mutex_unlock (&rs->lock);
  return n;
}

/* ---- PIN files ---------------------------------------------------------- */

char *
p11c_pin_file_read (const char *path, const char *profile_name, GError **error)
{
  struct stat st;
  char buf[P11C_SECRET_MAX + 2];
  ssize_t n;
  int fd;
  char *pin;

  fd = open (path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 || fstat (fd, &st) != 0)
    {
      int err = errno;
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot read the PIN file %s of CA profile %s: %s",
                   path, profile_name, g_strerror (err));
      if (fd >= 0)
        close (fd);
      return NULL;
    }
  if (!S_ISREG (st.st_mode) || st.st_uid != 0 || (st.st_mode & 077) != 0)
    {
      close (fd);
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED,
                   "The PIN file %s must be a regular file owned by root with mode 0600 or stricter", path);
      return NULL;
    }
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "The PIN file %s is empty", path);
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

/* The digest key: 32 random bytes in STATE/pin-refused.key (0600), made on
 * first use.  FALSE when it can be neither read nor made. */
static gboolean
refused_key (P11cRecords *rs, guint8 key[32], gboolean create)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr(GError) error = NULL;

  if (g_file_get_contents (rs->key_path, &data, &len, NULL) && len == 32)
    {
      memcpy (key, data, 32);
      p11c_memwipe (data, len);
      return TRUE;
    }
  if (data != NULL)
    p11c_memwipe (data, len);
  if (!create)
    return FALSE;
  if (RAND_bytes (key, 32) != 1 || !p11c_store_write_file (rs->key_path, key, 32, 0600, NULL, &error))
    {
      g_warning ("Cannot keep the refused-PIN key %s: %s", rs->key_path, error ? error->message : "no randomness");
      p11c_memwipe (key, 32);
      return FALSE;
    }
  return TRUE;
}

/* Group name of (token, file): a hash, so the file needs no escaping */
static char *
refused_group (const CK_TOKEN_INFO *info, const char *path)
{
  g_autoptr(GString) s = g_string_new (NULL);
  g_autofree char *serial = token_field (info->serialNumber, sizeof info->serialNumber);
  g_autofree char *label = token_field (info->label, sizeof info->label);
  g_autofree char *model = token_field (info->model, sizeof info->model);
  g_autofree char *manu = token_field (info->manufacturerID, sizeof info->manufacturerID);

  g_string_append_printf (s, "%s%c%s%c%s%c%s%c%s", serial, 0, label, 0, model, 0, manu, 0, path);
  return p11c_sha256_hex ((const guint8 *) s->str, s->len);
}

static char *
pin_digest_hex (const guint8 key[32], const char *pin)
{
  g_autoptr(GHmac) h = g_hmac_new (G_CHECKSUM_SHA256, key, 32);
  g_hmac_update (h, (const guchar *) pin, -1);
  return g_strdup (g_hmac_get_string (h));
}

gboolean
p11c_records_pin_refused (P11cRecords *rs, const CK_TOKEN_INFO *info, const char *path, const char *pin)
{
  g_autofree char *group = refused_group (info, path);
  g_autofree char *stored = NULL, *digest = NULL;
  guint8 key[32];
  gboolean refused = FALSE;

  g_mutex_lock (&rs->lock);
  stored = g_key_file_get_string (rs->refused, group, "digest", NULL);
  if (stored != NULL && refused_key (rs, key, FALSE))
    {
      digest = pin_digest_hex (key, pin);
      p11c_memwipe (key, sizeof key);
      refused = g_str_equal (stored, digest);
    }
  g_mutex_unlock (&rs->lock);
  return refused;
}

void
p11c_records_pin_refused_add (P11cRecords *rs, const CK_TOKEN_INFO *info, const char *path, const char *pin)
{
  g_autofree char *group = refused_group (info, path);
  g_autofree char *digest = NULL, *data = NULL;
  g_autofree char *serial = token_field (info->serialNumber, sizeof info->serialNumber);
  g_autofree char *label = token_field (info->label, sizeof info->label);
  g_autoptr(GError) error = NULL;
  struct stat st;
  guint8 key[32];
  gsize len;

  g_mutex_lock (&rs->lock);
  if (refused_key (rs, key, TRUE))
    {
      digest = pin_digest_hex (key, pin);
      p11c_memwipe (key, sizeof key);
      g_key_file_remove_group (rs->refused, group, NULL);
      g_key_file_set_string (rs->refused, group, "token-serial", serial);
      g_key_file_set_string (rs->refused, group, "token-label", label);
      g_key_file_set_string (rs->refused, group, "pin-file", path);
      if (stat (path, &st) == 0)
        {
          g_key_file_set_uint64 (rs->refused, group, "dev", st.st_dev);
          g_key_file_set_uint64 (rs->refused, group, "ino", st.st_ino);
        }
      g_key_file_set_string (rs->refused, group, "digest", digest);
      g_key_file_set_int64 (rs->refused, group, "refused-at", g_get_real_time () / G_USEC_PER_SEC);
      data = g_key_file_to_data (rs->refused, &len, NULL);
      if (!p11c_store_write_file (rs->refused_path, data, len, 0600, NULL, &error))
        g_warning ("Cannot save the refused PIN file record %s: %s", rs->refused_path, error->message);
    }
  g_mutex_unlock (&rs->lock);
}
