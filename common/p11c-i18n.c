#define G_LOG_DOMAIN "p11c-i18n"
#include "p11c-i18n.h"
#include "p11c-names.h"

#include <locale.h>
#include <stdlib.h>

void
p11c_i18n_init (void)
{
  /* secure_getenv: never let the environment pick the catalogue of a
   * set-id process */
  const char *dir = secure_getenv (P11C_ENV_LOCALEDIR);

  setlocale (LC_ALL, "");
  bindtextdomain (GETTEXT_PACKAGE, dir != NULL && *dir != '\0' ? dir : LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);
}
