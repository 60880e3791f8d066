#pragma once
#include <glib.h>
#include "p11c-pin-policy.h"
#include "p11c-pkcs11.h"

G_BEGIN_DECLS

typedef struct {
  char         *path;           /* file it was read from, NULL = defaults */
  char         *state_dir;
  char         *ca_dir;
  guint         job_linger;     /* seconds */
  char         *default_ca;     /* [daemon] default-ca: the profile clients preselect, NULL = none */
  char        **modules;
  /* module name (as in modules=) → its init-args string, from the
   * [module NAME] groups: handed to C_Initialize as pReserved */
  GHashTable   *module_init_args;
  P11cPinPolicy pin_policy;
  guint         window_days;
  guint         warn_days;
} P11cConfig;

/* Read @path (NULL = the default file; a missing default file means
 * defaults, a missing explicit file is an error). */
P11cConfig *p11c_config_load (const char *path, GError **error);
/* Parse config text (used by the loader and the fuzzer) */
P11cConfig *p11c_config_parse (const char *data, gsize len, const char *origin, GError **error);
void p11c_config_free (P11cConfig *config);
/* The init-args of @module (NULL when it has none) */
const char *p11c_config_module_init_args (const P11cConfig *config, const char *module);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cConfig, p11c_config_free)

typedef enum { P11C_CA_EST, P11C_CA_LOCAL, P11C_CA_SCEP } P11cCaType;

const char *p11c_ca_type_to_string (P11cCaType type);

typedef struct {
  char       *name;
  P11cCaType  type;
  char       *url;
  char       *label;
  char       *trust_anchor;
  P11cKeyType key_type;
  char       *subject;        /* template; ${login} is replaced */
  gboolean    write_chain;
  guint       connect_timeout;
  guint       timeout;
  guint       max_attempts;
  guint       retry_delay;
  guint       max_wait;
  char       *pin_file;
  char       *pin_file_token; /* PKCS#11 URI: the only token the pin-file's PIN may go to */
  char       *system_group;
  guint       validity_days;
  int         http_auth;      /* P11cEstAuth: auto (0), basic, digest */
  char       *ca_fingerprint; /* scep: SHA-256 of the CA certificate (hex) */
  guint       poll_interval;  /* scep: seconds between polls while PENDING */
} P11cCaProfile;

P11cCaProfile *p11c_ca_profile_parse (const char *name, const char *data, gsize len, GError **error);
void p11c_ca_profile_free (P11cCaProfile *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cCaProfile, p11c_ca_profile_free)

/* Every NAME.conf in @dir; broken files are logged and skipped.  The
 * built-in "local" profile is added when no file defines it. */
GPtrArray *p11c_ca_profiles_load (const char *dir);

/* FALSE (and why) when default-ca names none of the loaded @cas: the
 * daemon warns at startup and marks no profile default */
gboolean p11c_config_check_default_ca (const P11cConfig *config, GPtrArray *cas, GError **error);

/* Profile names are [A-Za-z0-9._-]{1,64}, not starting with '.' */
gboolean p11c_name_is_valid (const char *name);

G_END_DECLS
