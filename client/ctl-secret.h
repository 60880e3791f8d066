#pragma once
/* p11certctl: secrets from a file, an fd or the terminal (ctl-secret.c) */
#include <glib.h>
#include "p11c-pin-policy.h"

G_BEGIN_DECLS

/* The first line of FILE (newline stripped); warns when the file is group-
 * or world-readable. Free with p11c_secret_free. */
char *ctl_secret_from_file (const char *path, const char *what, GError **error);
char *ctl_secret_from_fd (int fd, const char *what, GError **error);
/* From the terminal without echo; when stdin is not a terminal, one line of
 * stdin. */
char *ctl_secret_prompt (const char *prompt, const char *what, GError **error);
/* file if given, else prompt */
char *ctl_secret_get (const char *file, int fd, const char *prompt, const char *what, GError **error);
/* A new secret asked twice (or read from file), checked against @policy */
char *ctl_secret_new (const char *file, const char *prompt, const char *what,
                      const P11cPinPolicy *policy, GError **error);
/* Ask a yes/no question on the terminal; default_yes for [Y/n] */
gboolean ctl_confirm (const char *question, gboolean default_yes);
/* A line of text from the terminal (echoed); NULL on EOF */
char *ctl_prompt_line (const char *prompt);
gboolean ctl_stdin_is_tty (void);
gboolean ctl_stdout_is_tty (void);

G_END_DECLS
