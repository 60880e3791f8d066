#pragma once
/* Files: atomic writes, the daemon's own "system" certificate store under
 * STATE_DIR/system/NAME/{key.pem,cert.pem,chain.pem}. */
#include <glib.h>
#include <sys/types.h>
#include "p11c-openssl.h"

G_BEGIN_DECLS

/* temp file in the same directory + fsync + rename (+ fsync of the
 * directory); @group (may be NULL) gets read access (mode & 0640). */
gboolean p11c_store_write_file (const char *path, const void *data, gsize len,
                                mode_t mode, const char *group, GError **error);

/* Write all of @data to a caller's fd (PKCS#12 output): a regular file
 * opened for writing, not on a FUSE file system (pipes, sockets, devices and
 * FUSE files could stall the writer without end); truncated first, fsynced. */
gboolean p11c_store_check_output_fd (int fd, GError **error);
gboolean p11c_store_write_fd (int fd, const void *data, gsize len, GError **error);

/* The system store */
gboolean p11c_system_store_save (const char *state_dir, const char *name, EVP_PKEY *key,
                                 X509 *cert, P11cX509Stack *chain, const char *group,
                                 GError **error);
/* GPtrArray of P11cCertEntry (storage "system", uri "system:NAME") */
GPtrArray *p11c_system_store_list (const char *state_dir);
gboolean p11c_system_store_delete (const char *state_dir, const char *name, GError **error);
gboolean p11c_system_store_load (const char *state_dir, const char *name,
                                 X509 **cert, EVP_PKEY **key, GError **error);
/* Remove half-written entries left by a crash. */
void p11c_system_store_recover (const char *state_dir);
/* Changes whenever the daemon has changed the store (save, delete, recover;
 * bumped after the change is complete): a list read after reading a
 * generation is at least as new as that generation. */
guint p11c_system_store_generation (void);

G_END_DECLS
