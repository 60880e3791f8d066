/* p11certctl — the client layer: commands, the bus and calls (ctl-common.c),
 * errors → texts and exit codes (ctl-errors.c); secrets (ctl-secret.h),
 * output (ctl-output.h) and jobs (ctl-job.h) have headers of their own. */
#pragma once
#include <gio/gio.h>
#include "p11c-pin-policy.h"
#include "p11c-wire.h"
#include "ctl-output.h"
#include "ctl-secret.h"

G_BEGIN_DECLS

/* Exit codes (docs/design.md, p11certctl(1)) */
enum {
  CTL_EXIT_OK = 0,
  CTL_EXIT_FAILURE = 1,
  CTL_EXIT_USAGE = 2,
  CTL_EXIT_PIN_INCORRECT = 3,
  CTL_EXIT_PIN_LOCKED = 4,
  CTL_EXIT_PIN_POLICY = 5,
  CTL_EXIT_NOT_AUTHORIZED = 6,
  CTL_EXIT_NOT_FOUND = 7,
  CTL_EXIT_CA_UNREACHABLE = 8,
  CTL_EXIT_CA_REJECTED = 9,
  CTL_EXIT_TOKEN_NOT_PRESENT = 10,
  CTL_EXIT_CANCELLED = 11,
  CTL_EXIT_NEEDS_PERSON = 20,
};

/* D-Bus call timeouts (ms) */
#define CTL_TIMEOUT_LIST   30000
#define CTL_TIMEOUT_TOKEN  120000
#define CTL_TIMEOUT_START  30000

/* Local errors of the client (usage problems, secret input) */
#define CTL_ERROR (ctl_error_quark ())
GQuark ctl_error_quark (void);
typedef enum {
  CTL_ERROR_USAGE,      /* exit 2 */
  CTL_ERROR_FAILED,     /* exit 1 */
  CTL_ERROR_NOT_FOUND,  /* exit 7 */
} CtlError;

typedef int (*CtlCommandFunc) (int argc, char **argv);

typedef struct {
  const char    *name;
  CtlCommandFunc func;
  const char    *summary;
} CtlCommand;

/* commands (one file each) */
int ctl_cmd_tokens (int argc, char **argv);
int ctl_cmd_list (int argc, char **argv);
int ctl_cmd_delete (int argc, char **argv);
int ctl_cmd_passwd (int argc, char **argv);
int ctl_cmd_enroll (int argc, char **argv);
int ctl_cmd_job (int argc, char **argv);
int ctl_cmd_ca (int argc, char **argv);
int ctl_cmd_renew (int argc, char **argv);
int ctl_cmd_monitor (int argc, char **argv);
int ctl_cmd_rescan (int argc, char **argv);

/* ---- bus ---------------------------------------------------------------- */

typedef enum { CTL_BUS_DEFAULT, CTL_BUS_SYSTEM, CTL_BUS_SESSION, CTL_BUS_ADDRESS } CtlBusKind;
void ctl_set_bus (CtlBusKind kind, const char *address);
/* The connection (made on first use); NULL with a message printed and
 * *exit_code set when it cannot be made. */
GDBusConnection *ctl_bus (int *exit_code);

/* Call a Manager method; returns the reply tuple or NULL with error. */
GVariant *ctl_call (GDBusConnection *bus, const char *path, const char *iface, const char *method,
                    GVariant *params, const char *reply_type, int timeout_ms, GError **error);
GVariant *ctl_call_manager (GDBusConnection *bus, const char *method, GVariant *params,
                            const char *reply_type, int timeout_ms, GError **error);
/* Manager property (e.g. "PinPolicy"), NULL with error */
GVariant *ctl_get_manager_property (GDBusConnection *bus, const char *name, GError **error);
gboolean ctl_get_pin_policy (GDBusConnection *bus, P11cPinPolicy *policy, GError **error);

/* TRUE when polkit may ask the user (stdin is a terminal) */
gboolean ctl_interactive (void);

/* ---- errors ------------------------------------------------------------- */

/* Text in the user's language for a daemon error (full or short D-Bus
 * name) with its structured @details (Job.ErrorDetails, or a dictionary the
 * caller made, e.g. the token's pin_count_low / pin_final_try / pin_locked;
 * may be NULL).  @message, the daemon's English message, is only appended
 * verbatim as details to quote when the text is generic. (ctl-errors.c) */
char *ctl_error_text (const char *name, GVariant *details, const char *message);
/* "The new password does not meet the requirements: …" for rule ids
 * (P11C_PIN_RULE_*), the length typed and the policy */
char *ctl_pin_rules_text (const char *const *broken, guint length, const P11cPinPolicy *policy);
/* p11c_pin_policy_check with the broken rules in the user's words
 * (P11C_ERROR_PIN_POLICY) */
gboolean ctl_check_new_pin (const P11cPinPolicy *policy, const char *pin, GError **error);
/* "The password must have at least 8 characters, digits, …" */
char *ctl_pin_policy_text (const P11cPinPolicy *policy);
/* The token's PIN state (pin_count_low / pin_final_try / pin_locked in
 * @state) in words, NULL when there is nothing to say */
char *ctl_pin_state_text (GVariant *state);
/* The token's PIN state from its properties as {pin_count_low, pin_final_try,
 * pin_locked}, NULL when it cannot be read */
GVariant *ctl_token_pin_state (GDBusConnection *bus, const char *token_path);
/* ctl_report for an error of a call on a token: a refused PIN is reported
 * with the token's state */
int ctl_report_token_error (GDBusConnection *bus, const GError *error, const char *token_path);
/* Why a due certificate needs a person or cannot be renewed (RenewDue's
 * reason_codes, RenewalNeeded's reason_code) in the user's language, NULL
 * for an unknown code; *quote: the daemon's English reason adds facts */
const char *ctl_renew_reason_text (const char *code, gboolean *quote);
/* A job state (queued, waiting-for-ca, …) in the user's language */
const char *ctl_job_state_text (const char *state);

/* Exit code for any error (D-Bus remote errors by name). */
int ctl_exit_code (const GError *error);
/* Print "p11certctl: <what>: <message>" (what may be NULL) to stderr, with
 * the remote prefix stripped and friendly text for bus-level errors;
 * returns the exit code. */
int ctl_report (const GError *error, const char *what);
/* The same with the structured details of the error (see ctl_error_text) */
int ctl_report_details (const GError *error, const char *what, GVariant *details);
/* The short error name ("PinIncorrect"), or NULL */
char *ctl_error_short_name (const GError *error);
/* Exit code for a D-Bus error name (full or short) */
int ctl_exit_code_for_name (const char *name);
int ctl_usage_error (GOptionContext *ctx, const char *fmt, ...) G_GNUC_PRINTF (2, 3);
/* Parse options: handles --help (exit 0) and errors (exit 2). Returns -1
 * when parsing succeeded and the command should go on. */
int ctl_parse (GOptionContext *ctx, int *argc, char ***argv);
void ctl_warn (const char *fmt, ...) G_GNUC_PRINTF (1, 2);
void ctl_message (const char *fmt, ...) G_GNUC_PRINTF (1, 2);

/* ---- tokens, certificates ----------------------------------------------- */

/* ListTokens → aa{sv} (the inner array) */
GVariant *ctl_list_tokens (GDBusConnection *bus, GError **error);
/* The certificate entry with uri, or NULL (no error when absent) */
GVariant *ctl_find_cert (GDBusConnection *bus, const char *uri, GError **error);
/* Choose a token: @spec (URI or path) as given, the only present token, or
 * (interactive) a choice; returns the token dictionary. */
GVariant *ctl_choose_token (GDBusConnection *bus, const char *spec, gboolean interactive, GError **error);
/* The ListTokens entry (of @tokens, aa{sv}, may be NULL) with object path
 * @path into @out; FALSE (nothing to clear) when there is none */
gboolean ctl_token_by_path (GVariant *tokens, const char *path, P11cWireToken *out);
/* Before asking for @t's PIN: CTL_EXIT_PIN_LOCKED (after saying so) when it
 * is locked; else -1, after a warning on its final try unless
 * @pin_from_file (no one types it) */
int ctl_token_pin_check (const P11cWireToken *t, gboolean pin_from_file);

G_END_DECLS
