#define G_LOG_DOMAIN "p11c-store"
#include "p11c-store.h"
#include "p11c-cert.h"
#include "p11c-config.h"
#include "p11c-engine.h"
#include "p11c-error.h"
#include "p11c-names.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <glib/gstdio.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

static GMutex store_lock;
static gint store_generation;   /* see p11c_system_store_generation */

static void
set_errno_error (GError **error, int err, const char *what, const char *path)
{
  g_set_error (error, P11C_ERROR, err == ENOSPC || err == EDQUOT ? P11C_ERROR_NO_SPACE : P11C_ERROR_FAILED,
               "%s %s: %s", what, path, g_strerror (err));
}

static gboolean
write_all (int fd, const void *data, gsize len, int *err)
{
  const char *p = data;
  while (len > 0)
    {
      ssize_t n = write (fd, p, len);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          *err = errno;
          return FALSE;
        }
      p += n;
      len -= n;
    }
  return TRUE;
}

static void
fsync_dir (const char *path)
{
  g_autofree char *dir = g_path_get_dirname (path);
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0)
    {
      fsync (fd);
      close (fd);
    }
}

/* getgrnam_r: store writes run in worker threads */
static gboolean
lookup_group (const char *name, gid_t *gid)
{
  struct group gr, *found = NULL;
  char buf[4096];

  if (getgrnam_r (name, &gr, buf, sizeof buf, &found) != 0 || found == NULL)
    return FALSE;
  *gid = found->gr_gid;
  return TRUE;
}

gboolean
p11c_store_write_file (const char *path, const void *data, gsize len, mode_t mode,
                       const char *group, GError **error)
{
  g_autofree char *tmp = g_strdup_printf ("%s.tmp-XXXXXX", path);
  int fd, err = 0;

  fd = g_mkstemp_full (tmp, O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0)
    {
      set_errno_error (error, errno, "Cannot create", tmp);
      return FALSE;
    }
  if (group != NULL)
    {
      gid_t gid;
      if (!lookup_group (group, &gid) || fchown (fd, 0, gid) != 0)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot give group %s access to %s", group, path);
          goto fail;
        }
      mode = (mode & 0600) | 0040;
    }
  if (fchmod (fd, mode) != 0 || !write_all (fd, data, len, &err) || fsync (fd) != 0)
    {
      set_errno_error (error, err ? err : errno, "Cannot write", path);
      goto fail;
    }
  close (fd);
  fd = -1;
  if (rename (tmp, path) != 0)
    {
      set_errno_error (error, errno, "Cannot rename into", path);
      goto fail;
    }
  fsync_dir (path);
  return TRUE;

fail:
  if (fd >= 0)
    close (fd);
  g_unlink (tmp);
  return FALSE;
}

gboolean
p11c_store_check_output_fd (int fd, GError **error)
{
  struct stat st;
  struct statfs sfs;
  int flags = fcntl (fd, F_GETFL);

  if (fd < 0 || flags < 0 || fstat (fd, &st) != 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Key \"fd\": not an open file descriptor");
      return FALSE;
    }
  if (S_ISDIR (st.st_mode))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Key \"fd\": is a directory, not a file");
      return FALSE;
    }
  if ((flags & O_ACCMODE) == O_RDONLY)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "Key \"fd\": opened read-only; open it for writing");
      return FALSE;
    }
  /* Only a file on a local file system: a write to a pipe or socket whose
   * reader stops reading, or to a FUSE file whose server does not answer,
   * would hold a worker thread for good (Cancel cannot reach it, shutdown
   * waits for it).  What an app passes is a file it opened anyway. */
  if (!S_ISREG (st.st_mode))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Key \"fd\": must be a regular file opened for writing (%s are refused: a reader "
                   "that stops reading would stall the daemon)",
                   S_ISFIFO (st.st_mode) ? "pipes" : S_ISSOCK (st.st_mode) ? "sockets" : "devices");
      return FALSE;
    }
  if (fstatfs (fd, &sfs) == 0 && sfs.f_type == FUSE_SUPER_MAGIC)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Key \"fd\": the file is on a FUSE file system, whose server could stall the daemon's "
                   "write; create it on a local disk and copy it afterwards");
      return FALSE;
    }
  return TRUE;
}

gboolean
p11c_store_write_fd (int fd, const void *data, gsize len, GError **error)
{
  int err = 0;

  if (!p11c_store_check_output_fd (fd, error))
    return FALSE;
  if (ftruncate (fd, 0) != 0 || lseek (fd, 0, SEEK_SET) < 0)
    {
      set_errno_error (error, errno, "Cannot truncate", "the output file");
      return FALSE;
    }
  if (!write_all (fd, data, len, &err) || fsync (fd) != 0)
    {
      set_errno_error (error, err ? err : errno, "Cannot write", "the output file");
      (void) ftruncate (fd, 0);   /* leave nothing half-written */
      return FALSE;
    }
  return TRUE;
}

/* ---- the system store --------------------------------------------------- */

static char *
store_dir (const char *state_dir)
{
  return g_build_filename (state_dir, "system", NULL);
}

static char *
pem_of_cert (X509 *cert, P11cX509Stack *chain, gsize *len)
{
  g_autoptr(BIO) bio = BIO_new (BIO_s_mem ());
  char *data;
  if (cert)
    PEM_write_bio_X509 (bio, cert);
  for (int i = 0; chain && i < sk_X509_num (chain); i++)
    PEM_write_bio_X509 (bio, sk_X509_value (chain, i));
  *len = BIO_get_mem_data (bio, &data);
  return g_memdup2 (data, *len);
}

/* The state directory and system/ are 0700, except where a CA profile's
 * system-group must reach its entries (system/NAME is 0750 root:GROUP and
 * key.pem 0640): then both get the search bit for group and others (0711),
 * never the read bit, so their contents cannot be listed.  Everything else
 * in the state directory stays closed by its own mode: pending/ and
 * local-ca/ are 0700, files 0600.  Only adds the missing bits. */
static gboolean
make_traversable (const char *dir, GError **error)
{
  struct stat st;

  if (stat (dir, &st) != 0)
    {
      set_errno_error (error, errno, "Cannot read the mode of", dir);
      return FALSE;
    }
  if ((st.st_mode & 0011) == 0011)
    return TRUE;
  if (chmod (dir, (st.st_mode & 07777) | 0011) != 0)
    {
      set_errno_error (error, errno, "Cannot let the system-group traverse", dir);
      return FALSE;
    }
  g_message ("Made %s traversable (mode %04o) for system-group readers",
             dir, (unsigned) ((st.st_mode & 07777) | 0011));
  return TRUE;
}

static gboolean
open_store_for_groups (const char *state_dir, GError **error)
{
  g_autofree char *base = store_dir (state_dir);
  return make_traversable (state_dir, error) && make_traversable (base, error);
}

static void
remove_tree (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *e;
  while (d && (e = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *p = g_build_filename (dir, e, NULL);
      g_unlink (p);
    }
  g_rmdir (dir);
}

gboolean
p11c_system_store_save (const char *state_dir, const char *name, EVP_PKEY *key, X509 *cert,
                        P11cX509Stack *chain, const char *group, GError **error)
{
  g_autofree char *base = store_dir (state_dir);
  g_autofree char *final = g_build_filename (base, name, NULL);
  g_autofree char *tmpl = g_build_filename (base, ".new-XXXXXX", NULL);
  g_autoptr(BIO) kbio = BIO_new (BIO_s_mem ());
  g_autofree char *cert_pem = NULL, *chain_pem = NULL;
  gsize clen, chlen;
  char *kdata;
  long klen;
  gboolean ok;

  if (!p11c_name_is_valid (name))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "Key \"name\": use 1-64 letters, digits, '.', '_' or '-', not starting with '.'");
      return FALSE;
    }
  if (g_mkdir_with_parents (base, 0700) != 0 || g_mkdtemp_full (tmpl, 0700) == NULL)
    {
      set_errno_error (error, errno, "Cannot create a directory in", base);
      return FALSE;
    }
  cert_pem = pem_of_cert (cert, NULL, &clen);
  chain_pem = pem_of_cert (NULL, chain, &chlen);
  PEM_write_bio_PrivateKey (kbio, key, NULL, NULL, 0, NULL, NULL);
  klen = BIO_get_mem_data (kbio, &kdata);
  {
    g_autofree char *kp = g_build_filename (tmpl, "key.pem", NULL);
    g_autofree char *cp = g_build_filename (tmpl, "cert.pem", NULL);
    g_autofree char *chp = g_build_filename (tmpl, "chain.pem", NULL);
    ok = p11c_store_write_file (kp, kdata, klen, 0600, group, error)
         && p11c_store_write_file (cp, cert_pem, clen, 0644, NULL, error)
         && p11c_store_write_file (chp, chain_pem, chlen, 0644, NULL, error);
  }
  OPENSSL_cleanse (kdata, klen);
  if (ok && group != NULL)
    {
      gid_t gid;
      ok = lookup_group (group, &gid) && chown (tmpl, 0, gid) == 0 && chmod (tmpl, 0750) == 0;
      if (!ok)
        g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot give group %s access to %s", group, final);
      else
        ok = open_store_for_groups (state_dir, error);
    }
  if (!ok)
    {
      remove_tree (tmpl);
      return FALSE;
    }

  {
    /* test hook: P11CERTD_TEST_HOOKS=system-store-pause=SECONDS stops here,
     * with the new entry complete but not yet in place (crash tests) */
    const char *hooks = g_getenv (P11C_ENV_DEBUG_HOOKS);
    const char *pause = hooks ? strstr (hooks, "system-store-pause=") : NULL;
    if (pause)
      g_usleep (G_USEC_PER_SEC * g_ascii_strtoull (pause + strlen ("system-store-pause="), NULL, 10));
  }
  g_mutex_lock (&store_lock);
  /* Swap atomically when an entry exists: the old files stay complete
   * until the new ones are in place. */
  if (g_file_test (final, G_FILE_TEST_IS_DIR))
    ok = renameat2 (AT_FDCWD, tmpl, AT_FDCWD, final, RENAME_EXCHANGE) == 0;
  else
    ok = rename (tmpl, final) == 0;
  if (!ok)
    set_errno_error (error, errno, "Cannot move the new files into", final);
  g_mutex_unlock (&store_lock);
  fsync_dir (final);
  remove_tree (tmpl);   /* the old entry after an exchange, or the failed new one */
  g_atomic_int_inc (&store_generation);
  return ok;
}

GPtrArray *
p11c_system_store_list (const char *state_dir)
{
  g_autofree char *base = store_dir (state_dir);
  g_autoptr(GDir) d = g_dir_open (base, 0, NULL);
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_cert_entry_unref);
  const char *name;

  while (d && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *cp = NULL, *kp = NULL, *pem = NULL;
      g_autoptr(GError) error = NULL;
      g_autoptr(BIO) bio = NULL;
      g_autoptr(X509) cert = NULL;
      P11cCertEntry *e;
      gsize len;

      if (!p11c_name_is_valid (name))
        continue;
      cp = g_build_filename (base, name, "cert.pem", NULL);
      kp = g_build_filename (base, name, "key.pem", NULL);
      e = g_new0 (P11cCertEntry, 1);
      e->ref = 1;
      e->uri = g_strconcat ("system:", name, NULL);
      e->storage = g_strdup ("system");
      e->label = g_strdup (name);
      e->id = g_bytes_new (NULL, 0);
      e->has_private_key = g_file_test (kp, G_FILE_TEST_EXISTS);
      if (g_file_get_contents (cp, &pem, &len, &error)
          && (bio = BIO_new_mem_buf (pem, len)) != NULL
          && (cert = PEM_read_bio_X509 (bio, NULL, NULL, NULL)) != NULL)
        {
          unsigned char *der = NULL;
          int dlen = i2d_X509 (cert, &der);
          e->der = g_bytes_new (der, MAX (dlen, 0));
          OPENSSL_free (der);
          e->summary = p11c_cert_summary_from_x509 (cert);
        }
      else
        {
          e->der = g_bytes_new (NULL, 0);
          e->error = g_strdup ("cert.pem is missing or not a PEM certificate");
        }
      g_ptr_array_add (out, e);
    }
  return out;
}

gboolean
p11c_system_store_delete (const char *state_dir, const char *name, GError **error)
{
  g_autofree char *base = store_dir (state_dir);
  g_autofree char *dir = g_build_filename (base, name, NULL);

  if (!p11c_name_is_valid (name) || !g_file_test (dir, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND, "No system certificate named \"%s\"", name);
      return FALSE;
    }
  g_mutex_lock (&store_lock);
  remove_tree (dir);
  g_mutex_unlock (&store_lock);
  g_atomic_int_inc (&store_generation);
  if (g_file_test (dir, G_FILE_TEST_EXISTS))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Could not remove %s completely", dir);
      return FALSE;
    }
  return TRUE;
}

gboolean
p11c_system_store_load (const char *state_dir, const char *name, X509 **cert, EVP_PKEY **key, GError **error)
{
  g_autofree char *cp = g_build_filename (state_dir, "system", name, "cert.pem", NULL);
  g_autofree char *kp = g_build_filename (state_dir, "system", name, "key.pem", NULL);
  g_autoptr(BIO) cb = BIO_new_file (cp, "r");
  g_autoptr(BIO) kb = BIO_new_file (kp, "r");

  *cert = cb ? PEM_read_bio_X509 (cb, NULL, NULL, NULL) : NULL;
  *key = kb ? PEM_read_bio_PrivateKey (kb, NULL, NULL, NULL) : NULL;
  if (*cert == NULL || *key == NULL)
    {
      g_clear_pointer (cert, X509_free);
      g_clear_pointer (key, EVP_PKEY_free);
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND, "The system certificate \"%s\" is missing or unreadable", name);
      return FALSE;
    }
  return TRUE;
}

void
p11c_system_store_recover (const char *state_dir)
{
  g_autofree char *base = store_dir (state_dir);
  g_autoptr(GDir) d = g_dir_open (base, 0, NULL);
  const char *name;
  gboolean group_entries = FALSE;

  while (d && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (base, name, NULL);
      struct stat st;

      /* an entry given to a system-group (by an older version, which left
       * the directories above it 0700) */
      if (p11c_name_is_valid (name) && lstat (path, &st) == 0 && S_ISDIR (st.st_mode)
          && (st.st_mode & 0070) != 0)
        group_entries = TRUE;
      if (g_str_has_prefix (name, ".new-"))
        {
          g_message ("Removing a half-written system store entry %s", path);
          remove_tree (path);
        }
      else if (p11c_name_is_valid (name))
        {
          /* temp files of an interrupted atomic write */
          g_autoptr(GDir) sub = g_dir_open (path, 0, NULL);
          const char *f;
          while (sub && (f = g_dir_read_name (sub)) != NULL)
            if (strstr (f, ".tmp-") != NULL)
              {
                g_autofree char *fp = g_build_filename (path, f, NULL);
                g_unlink (fp);
              }
        }
    }
  if (group_entries)
    {
      g_autoptr(GError) error = NULL;
      if (!open_store_for_groups (state_dir, &error))
        g_warning ("System-store keys given to a group stay unreachable for it: %s", error->message);
    }
  g_atomic_int_inc (&store_generation);
}

guint
p11c_system_store_generation (void)
{
  return (guint) g_atomic_int_get (&store_generation);
}
