#pragma once
#include <glib.h>

G_BEGIN_DECLS

/* Validation of a{sv} option/request dictionaries from D-Bus callers:
 * unknown keys, wrong types, missing required keys and oversized strings are
 * refused with org.p11certd.Error.InvalidArgs naming the key. */
typedef struct {
  const char *key;
  const char *type;      /* GVariant type string, e.g. "s", "b", "h" */
  gboolean    required;
} P11cKeySpec;

#define P11C_VARDICT_STRING_MAX 4096

gboolean p11c_vardict_validate (GVariant *dict, const P11cKeySpec *spec, GError **error);

/* Typed getters (after validation): absent → default */
const char *p11c_vardict_get_string (GVariant *dict, const char *key, const char *def);
gboolean p11c_vardict_get_bool (GVariant *dict, const char *key, gboolean def);
/* A secret string: a wipeable copy (free with p11c_secret_free), NULL when absent */
char *p11c_vardict_dup_secret (GVariant *dict, const char *key);

G_END_DECLS
