#pragma once
#include <glib.h>

G_BEGIN_DECLS

/* Secrets (PINs, one-time passwords, key passwords) live in plain C strings
 * that are wiped before they are freed.  Declare them with p11c_autosecret
 * so every return path wipes them. */
void p11c_secret_free (char *secret);
void p11c_secret_clear (char **secret);
#define p11c_autosecret __attribute__((cleanup (p11c_secret_clear))) char *

/* Wipe a buffer. */
void p11c_memwipe (void *p, gsize n);

/* Wipe, in place, every string inside @v (the PINs, one-time passwords and
 * key passwords of a request), through containers and variants.  Works on
 * serialised values and on values built from children (builder output, D-Bus
 * message bodies) alike.  Never wipe g_variant_get_data() of a value instead:
 * for one built from children that serialises into a new buffer, and the
 * children holding the secrets are freed unwiped. */
void p11c_variant_wipe (GVariant *v);

/* A secret must be non-empty, valid UTF-8, at most P11C_SECRET_MAX bytes
 * and free of NUL/newline.  @what names it in the error ("PIN"). */
gboolean p11c_secret_check (const char *secret, const char *what, GError **error);

G_END_DECLS
