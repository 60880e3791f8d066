#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-error.h"
#include "p11c-i18n.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include "p11c-uri.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

G_DEFINE_QUARK (p11certctl-error-quark, ctl_error)

/* ---- messages ------------------------------------------------------------ */

void
ctl_warn (const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  fflush (stdout);
  fprintf (stderr, "p11certctl: %s\n", msg);
}

void
ctl_message (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vfprintf (stdout, fmt, ap);
  va_end (ap);
  fputc ('\n', stdout);
  fflush (stdout);
}

int
ctl_usage_error (GOptionContext *ctx, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  fprintf (stderr, "p11certctl: %s\n", msg);
  if (ctx != NULL)
    {
      fprintf (stderr, _("Try “%s --help”."), g_get_prgname ());
      fputc ('\n', stderr);
    }
  return CTL_EXIT_USAGE;
}

int
ctl_parse (GOptionContext *ctx, int *argc, char ***argv)
{
  g_autoptr(GError) error = NULL;

  g_option_context_set_help_enabled (ctx, TRUE);
  /* option descriptions (N_() in the commands), summary and parameter
   * string in the user's language */
  g_option_context_set_translation_domain (ctx, GETTEXT_PACKAGE);
  if (!g_option_context_parse (ctx, argc, argv, &error))
    return ctl_usage_error (ctx, "%s", error->message);
  return -1;
}

/* ---- bus ----------------------------------------------------------------- */

static CtlBusKind bus_kind = CTL_BUS_DEFAULT;
static char *bus_address;
static GDBusConnection *bus_conn;

void
ctl_set_bus (CtlBusKind kind, const char *address)
{
  bus_kind = kind;
  g_free (bus_address);
  bus_address = g_strdup (address);
}

GDBusConnection *
ctl_bus (int *exit_code)
{
  g_autoptr(GError) error = NULL;
  const char *address = NULL;
  const char *what = _("the system bus");

  if (bus_conn != NULL)
    return bus_conn;
  switch (bus_kind)
    {
    case CTL_BUS_ADDRESS:
      address = bus_address;
      break;
    case CTL_BUS_DEFAULT:
      address = g_getenv (P11C_ENV_BUS_ADDRESS);
      if (address != NULL && address[0] == '\0')
        address = NULL;
      break;
    default:
      break;
    }
  if (address != NULL)
    {
      what = address;
      bus_conn = g_dbus_connection_new_for_address_sync (address,
                                                         G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT
                                                         | G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                                         NULL, NULL, &error);
    }
  else if (bus_kind == CTL_BUS_SESSION)
    {
      what = _("the session bus");
      bus_conn = g_bus_get_sync (G_BUS_TYPE_SESSION, NULL, &error);
    }
  else
    bus_conn = g_bus_get_sync (G_BUS_TYPE_SYSTEM, NULL, &error);
  if (bus_conn == NULL)
    {
      /* TRANSLATORS: %1$s is a bus ("the system bus" or an address), %2$s GIO's reason */
      ctl_warn (_("Cannot connect to %1$s: %2$s"), what, error->message);
      *exit_code = CTL_EXIT_FAILURE;
      return NULL;
    }
  g_dbus_connection_set_exit_on_close (bus_conn, FALSE);
  return bus_conn;
}

gboolean
ctl_interactive (void)
{
  return isatty (STDIN_FILENO);
}

GVariant *
ctl_call (GDBusConnection *bus, const char *path, const char *iface, const char *method,
          GVariant *params, const char *reply_type, int timeout_ms, GError **error)
{
  return g_dbus_connection_call_sync (bus, P11C_DBUS_NAME, path, iface, method, params,
                                      reply_type ? G_VARIANT_TYPE (reply_type) : NULL,
                                      ctl_interactive () ? G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION
                                                         : G_DBUS_CALL_FLAGS_NONE,
                                      timeout_ms, NULL, error);
}

GVariant *
ctl_call_manager (GDBusConnection *bus, const char *method, GVariant *params,
                  const char *reply_type, int timeout_ms, GError **error)
{
  return ctl_call (bus, P11C_DBUS_PATH, P11C_DBUS_MANAGER_IFACE, method, params, reply_type,
                   timeout_ms, error);
}

GVariant *
ctl_get_manager_property (GDBusConnection *bus, const char *name, GError **error)
{
  g_autoptr(GVariant) reply = ctl_call (bus, P11C_DBUS_PATH, "org.freedesktop.DBus.Properties", "Get",
                                        g_variant_new ("(ss)", P11C_DBUS_MANAGER_IFACE, name), "(v)",
                                        CTL_TIMEOUT_LIST, error);
  GVariant *value;
  if (reply == NULL)
    return NULL;
  g_variant_get (reply, "(v)", &value);
  return value;
}

gboolean
ctl_get_pin_policy (GDBusConnection *bus, P11cPinPolicy *policy, GError **error)
{
  g_autoptr(GVariant) v = ctl_get_manager_property (bus, "PinPolicy", error);
  guint32 u;
  gboolean b;

  p11c_pin_policy_init_default (policy);
  if (v == NULL)
    return FALSE;
  if (!g_variant_is_of_type (v, G_VARIANT_TYPE_VARDICT))
    return TRUE;
  if (g_variant_lookup (v, "min_length", "u", &u))
    policy->min_length = u;
  if (g_variant_lookup (v, "max_length", "u", &u))
    policy->max_length = u;
  if (g_variant_lookup (v, "require_digit", "b", &b))
    policy->require_digit = b;
  if (g_variant_lookup (v, "require_upper", "b", &b))
    policy->require_upper = b;
  if (g_variant_lookup (v, "require_lower", "b", &b))
    policy->require_lower = b;
  return TRUE;
}

/* ---- errors -------------------------------------------------------------- */

static int
exit_code_for_p11c (int code)
{
  switch (code)
    {
    case P11C_ERROR_INVALID_ARGS:      return CTL_EXIT_USAGE;
    case P11C_ERROR_NOT_FOUND:         return CTL_EXIT_NOT_FOUND;
    case P11C_ERROR_NOT_AUTHORIZED:    return CTL_EXIT_NOT_AUTHORIZED;
    case P11C_ERROR_PIN_INCORRECT:     return CTL_EXIT_PIN_INCORRECT;
    case P11C_ERROR_PIN_LOCKED:        return CTL_EXIT_PIN_LOCKED;
    case P11C_ERROR_PIN_POLICY:        return CTL_EXIT_PIN_POLICY;
    case P11C_ERROR_TOKEN_NOT_PRESENT: return CTL_EXIT_TOKEN_NOT_PRESENT;
    case P11C_ERROR_CA_UNREACHABLE:    return CTL_EXIT_CA_UNREACHABLE;
    case P11C_ERROR_CA_REJECTED:       return CTL_EXIT_CA_REJECTED;
    case P11C_ERROR_CANCELLED:         return CTL_EXIT_CANCELLED;
    default:                           return CTL_EXIT_FAILURE;
    }
}

int
ctl_exit_code_for_name (const char *name)
{
  int code;

  if (name == NULL || name[0] == '\0')
    return CTL_EXIT_FAILURE;
  if (g_str_equal (name, "org.freedesktop.DBus.Error.AccessDenied")
      || g_str_equal (name, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"))
    return CTL_EXIT_NOT_AUTHORIZED;
  if (g_str_equal (name, "org.freedesktop.DBus.Error.InvalidArgs"))
    return CTL_EXIT_USAGE;
  if (g_str_equal (name, "org.freedesktop.DBus.Error.UnknownObject"))
    return CTL_EXIT_NOT_FOUND;
  if (strchr (name, '.') != NULL && !g_str_has_prefix (name, P11C_DBUS_ERROR_PREFIX))
    return CTL_EXIT_FAILURE;
  code = p11c_error_from_name (name);
  return code < 0 ? CTL_EXIT_FAILURE : exit_code_for_p11c (code);
}

char *
ctl_error_short_name (const GError *error)
{
  g_autofree char *remote = g_dbus_error_get_remote_error (error);
  if (remote != NULL)
    {
      if (g_str_has_prefix (remote, P11C_DBUS_ERROR_PREFIX))
        return g_strdup (remote + strlen (P11C_DBUS_ERROR_PREFIX));
      return g_steal_pointer (&remote);
    }
  if (error->domain == P11C_ERROR)
    return g_strdup (p11c_error_to_name (error->code));
  return NULL;
}

int
ctl_exit_code (const GError *error)
{
  g_autofree char *remote = NULL;

  if (error == NULL)
    return CTL_EXIT_OK;
  if (error->domain == CTL_ERROR)
    return error->code == CTL_ERROR_USAGE ? CTL_EXIT_USAGE
           : error->code == CTL_ERROR_NOT_FOUND ? CTL_EXIT_NOT_FOUND : CTL_EXIT_FAILURE;
  remote = g_dbus_error_get_remote_error (error);
  if (remote != NULL)
    return ctl_exit_code_for_name (remote);
  if (error->domain == P11C_ERROR)
    return exit_code_for_p11c (error->code);
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return CTL_EXIT_CANCELLED;
  if (g_error_matches (error, G_DBUS_ERROR, G_DBUS_ERROR_ACCESS_DENIED)
      || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED))
    return CTL_EXIT_NOT_AUTHORIZED;
  return CTL_EXIT_FAILURE;
}

static gboolean
name_is (const char *remote, const GError *error, const char *name, GQuark domain, int code)
{
  return (remote != NULL && g_str_equal (remote, name)) || g_error_matches (error, domain, code);
}

int
ctl_report (const GError *error, const char *what)
{
  return ctl_report_details (error, what, NULL);
}

int
ctl_report_details (const GError *error, const char *what, GVariant *details)
{
  /* only errors that came over the bus: a P11C_ERROR made here has a D-Bus
   * name too (the domain is registered), but its message is ours */
  g_autofree char *remote = g_dbus_error_is_remote_error (error) ? g_dbus_error_get_remote_error (error) : NULL;
  g_autoptr(GError) copy = g_error_copy (error);
  g_autofree char *text = NULL;

  g_dbus_error_strip_remote_error (copy);
  if (name_is (remote, error, "org.freedesktop.DBus.Error.ServiceUnknown", G_DBUS_ERROR, G_DBUS_ERROR_SERVICE_UNKNOWN)
      || name_is (remote, error, "org.freedesktop.DBus.Error.NameHasNoOwner", G_DBUS_ERROR,
                  G_DBUS_ERROR_NAME_HAS_NO_OWNER))
    {
      ctl_warn ("%s", _("p11certd is not running (or not reachable on this bus)"));
      return CTL_EXIT_FAILURE;
    }
  if (name_is (remote, error, "org.freedesktop.DBus.Error.UnknownMethod", G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD))
    /* TRANSLATORS: %s is the bus's English message, for an administrator */
    text = g_strdup_printf (_("this p11certd does not support that (%s); is the daemon older than p11certctl?"),
                            copy->message);
  else if (name_is (remote, error, "org.freedesktop.DBus.Error.NoReply", G_DBUS_ERROR, G_DBUS_ERROR_NO_REPLY)
           || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT))
    text = g_strdup_printf (_("p11certd did not answer in time (%s)"), copy->message);
  else if (name_is (remote, error, "org.freedesktop.DBus.Error.AccessDenied", G_DBUS_ERROR,
                    G_DBUS_ERROR_ACCESS_DENIED))
    text = g_strdup_printf (_("not allowed by the bus policy: %s"), copy->message);
  else if (remote != NULL)
    /* the daemon's English message is never shown as the explanation */
    text = ctl_error_text (remote, details, copy->message);
  else
    /* the client's own errors are written in the user's language */
    text = g_strdup (copy->message);
  if (what != NULL)
    /* TRANSLATORS: %1$s says what failed ("Cannot delete"), %2$s why */
    ctl_warn (_("%1$s: %2$s"), what, text);
  else
    ctl_warn ("%s", text);
  return ctl_exit_code (error);
}

/* ---- secrets ------------------------------------------------------------- */

gboolean
ctl_stdin_is_tty (void)
{
  return isatty (STDIN_FILENO);
}

gboolean
ctl_stdout_is_tty (void)
{
  return isatty (STDOUT_FILENO);
}

/* Read one line from @fd byte by byte (so nothing of the next line is
 * consumed and no stdio buffer keeps a copy). */
static char *
read_line_fd (int fd, const char *what, gboolean *eof_empty, GError **error)
{
  char buf[P11C_SECRET_MAX + 2];
  gsize len = 0;
  gboolean too_long = FALSE, any = FALSE;
  char *out;

  *eof_empty = FALSE;
  for (;;)
    {
      char ch;
      ssize_t n = read (fd, &ch, 1);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          int e = errno;
          p11c_memwipe (buf, sizeof buf);
          /* TRANSLATORS: %1$s is what was read ("token password"), %2$s the system's reason */
          g_set_error (error, CTL_ERROR, CTL_ERROR_FAILED, _("%1$s: cannot read it: %2$s"), what, g_strerror (e));
          return NULL;
        }
      if (n == 0)
        break;
      any = TRUE;
      if (ch == '\n')
        break;
      if (len < sizeof buf - 1)
        buf[len++] = ch;
      else
        too_long = TRUE;
      ch = 0;
    }
  if (!any)
    {
      *eof_empty = TRUE;
      g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, _("%s: nothing was entered (end of input)"), what);
      return NULL;
    }
  if (len > 0 && buf[len - 1] == '\r')
    len--;
  buf[len] = '\0';
  if (too_long || len > P11C_SECRET_MAX)
    {
      p11c_memwipe (buf, sizeof buf);
      g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE,
                   ngettext ("%s: too long (at most %d byte)", "%s: too long (at most %d bytes)", P11C_SECRET_MAX),
                   what, P11C_SECRET_MAX);
      return NULL;
    }
  out = g_strndup (buf, len);
  p11c_memwipe (buf, sizeof buf);
  return out;
}

static char *
checked (char *secret, const char *what, GError **error)
{
  const char *problem = NULL;
  if (secret == NULL)
    return NULL;
  /* what p11c_secret_check refuses, in the user's words */
  if (secret[0] == '\0')
    problem = _("%s: it is empty; enter it");
  else if (strlen (secret) > P11C_SECRET_MAX)
    problem = _("%s: too long");
  else if (!g_utf8_validate (secret, -1, NULL))
    problem = _("%s: it is not valid UTF-8 text");
  else if (strpbrk (secret, "\r\n") != NULL)
    problem = _("%s: it contains a line break");
  if (problem != NULL)
    {
      p11c_secret_free (secret);
      g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, problem, what);
      return NULL;
    }
  return secret;
}

char *
ctl_secret_from_fd (int fd, const char *what, GError **error)
{
  gboolean eof;
  char *s = read_line_fd (fd, what, &eof, error);
  return checked (s, what, error);
}

char *
ctl_secret_from_file (const char *path, const char *what, GError **error)
{
  struct stat st;
  gboolean eof;
  char *s;
  int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

  if (fd < 0)
    {
      int e = errno;
      /* TRANSLATORS: %1$s is what the file holds ("token password"), %2$s the file, %3$s the reason */
      g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, _("%1$s: cannot open the file %2$s: %3$s"), what, path,
                   g_strerror (e));
      return NULL;
    }
  if (fstat (fd, &st) == 0)
    {
      if (!S_ISREG (st.st_mode) && !S_ISFIFO (st.st_mode) && !S_ISCHR (st.st_mode))
        {
          close (fd);
          g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, _("%1$s: the file %2$s is not a regular file"), what, path);
          return NULL;
        }
      if (S_ISREG (st.st_mode) && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
        /* TRANSLATORS: %1$s is what the file holds, %2$s the file, %3$04o its mode */
        ctl_warn (_("warning: %1$s: the file %2$s can be read by other users (mode %3$04o); make it private with "
                    "“chmod 600 %2$s”"), what, path, (unsigned) (st.st_mode & 07777));
    }
  s = read_line_fd (fd, what, &eof, error);
  close (fd);
  if (s == NULL && eof)
    {
      g_clear_error (error);
      g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, _("%1$s: the file %2$s is empty"), what, path);
    }
  return checked (s, what, error);
}

static int tty_fd = -1;
static struct termios tty_saved, tty_noecho;
static const char *tty_prompt;
static struct sigaction old_int, old_term, old_quit, old_hup, old_tstp;

static void
restore_tty_and_reraise (int sig)
{
  if (tty_fd >= 0)
    tcsetattr (tty_fd, TCSAFLUSH, &tty_saved);
  (void) !write (tty_fd >= 0 ? tty_fd : STDERR_FILENO, "\n", 1);
  signal (sig, SIG_DFL);
  raise (sig);
}

/* Ctrl-Z at the prompt: give the shell its terminal back as it was (echo
 * on, what was typed of the secret discarded), stop; on fg turn echo off
 * again and ask anew — the rest of the secret is never echoed. */
static void
suspend_at_prompt (int sig)
{
  int saved_errno = errno;
  struct sigaction dfl, ours;
  sigset_t set;

  if (tty_fd >= 0)
    tcsetattr (tty_fd, TCSAFLUSH, &tty_saved);
  (void) !write (tty_fd >= 0 ? tty_fd : STDERR_FILENO, "\n", 1);
  memset (&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset (&dfl.sa_mask);
  sigaction (sig, &dfl, &ours);
  sigemptyset (&set);
  sigaddset (&set, sig);
  sigprocmask (SIG_UNBLOCK, &set, NULL);
  raise (sig);                          /* stopped here until SIGCONT */
  sigprocmask (SIG_BLOCK, &set, NULL);
  sigaction (sig, &ours, NULL);
  if (tty_fd >= 0)
    {
      tcsetattr (tty_fd, TCSAFLUSH, &tty_noecho);
      if (tty_prompt != NULL)
        (void) !write (tty_fd, tty_prompt, strlen (tty_prompt));
    }
  errno = saved_errno;
}

static void
set_handlers (gboolean on)
{
  if (on)
    {
      struct sigaction sa;
      memset (&sa, 0, sizeof sa);
      sa.sa_handler = restore_tty_and_reraise;
      sigemptyset (&sa.sa_mask);
      sigaction (SIGINT, &sa, &old_int);
      sigaction (SIGTERM, &sa, &old_term);
      sigaction (SIGQUIT, &sa, &old_quit);
      sigaction (SIGHUP, &sa, &old_hup);
      sa.sa_handler = suspend_at_prompt;
      sigaction (SIGTSTP, &sa, &old_tstp);
    }
  else
    {
      sigaction (SIGINT, &old_int, NULL);
      sigaction (SIGTERM, &old_term, NULL);
      sigaction (SIGQUIT, &old_quit, NULL);
      sigaction (SIGHUP, &old_hup, NULL);
      sigaction (SIGTSTP, &old_tstp, NULL);
    }
}

char *
ctl_secret_prompt (const char *prompt, const char *what, GError **error)
{
  gboolean eof;
  char *s;
  int fd;

  fflush (stdout);
  if (!isatty (STDIN_FILENO))
    {
      /* piped input: one line per secret */
      s = read_line_fd (STDIN_FILENO, what, &eof, error);
      if (s == NULL && eof)
        {
          g_clear_error (error);
          g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE,
                       _("%s: nothing was entered: standard input is not a terminal; use a --*-file option "
                         "(see --help)"), what);
        }
      return checked (s, what, error);
    }
  fd = open ("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    fd = dup (STDIN_FILENO);
  if (fd < 0 || tcgetattr (fd, &tty_saved) != 0)
    {
      if (fd >= 0)
        close (fd);
      g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, _("%s: cannot read it from the terminal"), what);
      return NULL;
    }
  tty_noecho = tty_saved;
  tty_noecho.c_lflag &= ~(tcflag_t) (ECHO | ECHOE | ECHOK);
  tty_noecho.c_lflag |= ECHONL | ICANON;
  tty_prompt = prompt;
  tty_fd = fd;
  (void) !write (fd, prompt, strlen (prompt));
  set_handlers (TRUE);
  tcsetattr (fd, TCSAFLUSH, &tty_noecho);
  s = read_line_fd (fd, what, &eof, error);
  tcsetattr (fd, TCSAFLUSH, &tty_saved);
  set_handlers (FALSE);
  tty_fd = -1;
  tty_prompt = NULL;
  close (fd);
  return checked (s, what, error);
}

char *
ctl_secret_get (const char *file, int fd, const char *prompt, const char *what, GError **error)
{
  if (file != NULL)
    return ctl_secret_from_file (file, what, error);
  if (fd >= 0)
    return ctl_secret_from_fd (fd, what, error);
  return ctl_secret_prompt (prompt, what, error);
}

char *
ctl_secret_new (const char *file, const char *prompt, const char *what,
                const P11cPinPolicy *policy, GError **error)
{
  p11c_autosecret first = NULL;
  p11c_autosecret again = NULL;
  g_autofree char *prompt2 = NULL;

  if (file != NULL)
    {
      first = ctl_secret_from_file (file, what, error);
      if (first == NULL)
        return NULL;
      if (policy != NULL && !ctl_check_new_pin (policy, first, error))
        return NULL;
      return g_steal_pointer (&first);
    }
  for (int tries = 0;; tries++)
    {
      g_autoptr(GError) local = NULL;
      p11c_secret_clear (&first);
      p11c_secret_clear (&again);
      first = ctl_secret_prompt (prompt, what, error);
      if (first == NULL)
        return NULL;
      if (policy != NULL && !ctl_check_new_pin (policy, first, &local))
        {
          if (!ctl_stdin_is_tty () || tries >= 2)
            {
              g_propagate_error (error, g_steal_pointer (&local));
              return NULL;
            }
          fprintf (stderr, "%s\n", local->message);
          continue;
        }
      /* TRANSLATORS: the prompt to type a new secret a second time; %s is what it is ("new token password") */
      prompt2 = g_strdup_printf (_("Repeat the %s: "), what);
      again = ctl_secret_prompt (prompt2, what, error);
      g_clear_pointer (&prompt2, g_free);
      if (again == NULL)
        return NULL;
      if (g_str_equal (first, again))
        return g_steal_pointer (&first);
      if (!ctl_stdin_is_tty () || tries >= 2)
        {
          g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, _("%s: the two entries do not match"), what);
          return NULL;
        }
      fprintf (stderr, "%s\n", _("The two entries do not match; try again."));
    }
}

char *
ctl_prompt_line (const char *prompt)
{
  g_autoptr(GString) s = g_string_new (NULL);
  int ch;

  fputs (prompt, stdout);
  fflush (stdout);
  while ((ch = getchar ()) != EOF && ch != '\n')
    g_string_append_c (s, (char) ch);
  if (ch == EOF && s->len == 0)
    return NULL;
  return g_strstrip (g_string_free (g_steal_pointer (&s), FALSE));
}

gboolean
ctl_confirm (const char *question, gboolean default_yes)
{
  /* TRANSLATORS: the choices after a yes/no question; the capital one is the default */
  g_autofree char *prompt = g_strdup_printf ("%s %s ", question, default_yes ? _("[Y/n]") : _("[y/N]"));
  g_autofree char *answer = ctl_prompt_line (prompt);
  g_autofree char *folded = NULL;

  if (answer == NULL)
    return FALSE;
  if (answer[0] == '\0')
    return default_yes;
  folded = g_utf8_casefold (answer, -1);
  /* English answers always work; the translated ones too */
  return g_str_equal (folded, "y") || g_str_equal (folded, "yes")
         /* TRANSLATORS: short "yes" answer to a [y/N] question, lower case */
         || g_str_equal (folded, C_("answer", "y"))
         /* TRANSLATORS: "yes" answer to a [y/N] question, lower case */
         || g_str_equal (folded, C_("answer", "yes"));
}

/* ---- tables -------------------------------------------------------------- */

struct _CtlTable {
  guint      n;
  char     **headers;
  guint     *min;      /* 0 = not shrinkable */
  GPtrArray *rows;     /* char** */
};

CtlTable *
ctl_table_new (guint n_columns, const char *const *headers)
{
  CtlTable *t = g_new0 (CtlTable, 1);
  t->n = n_columns;
  t->headers = g_new0 (char *, n_columns + 1);
  for (guint i = 0; i < n_columns; i++)
    t->headers[i] = g_strdup (_(headers[i]));   /* N_() in the callers */
  t->min = g_new0 (guint, n_columns);
  t->rows = g_ptr_array_new_with_free_func ((GDestroyNotify) g_strfreev);
  return t;
}

void
ctl_table_set_shrinkable (CtlTable *t, guint col, guint min_width)
{
  g_return_if_fail (col < t->n);
  t->min[col] = min_width;
}

void
ctl_table_add_row (CtlTable *t, ...)
{
  va_list ap;
  char **row = g_new0 (char *, t->n + 1);
  va_start (ap, t);
  for (guint i = 0; i < t->n; i++)
    {
      const char *s = va_arg (ap, const char *);
      g_autofree char *clean = g_strdup (s ? s : "");
      /* no control characters in a table cell */
      for (char *p = clean; *p; p++)
        if ((guchar) *p < 0x20 || *p == 0x7f)
          *p = ' ';
      row[i] = g_utf8_make_valid (clean, -1);
    }
  va_end (ap);
  g_ptr_array_add (t->rows, row);
}

char *
ctl_ellipsize (const char *s, guint width)
{
  glong len = g_utf8_strlen (s, -1);
  const char *end;
  GString *out;

  if (len <= (glong) width)
    return g_strdup (s);
  if (width == 0)
    return g_strdup ("");
  end = g_utf8_offset_to_pointer (s, width - 1);
  out = g_string_new_len (s, end - s);
  g_string_append (out, "…");
  return g_string_free (out, FALSE);
}

void
ctl_table_print (CtlTable *t, guint max_width)
{
  g_autofree guint *w = g_new0 (guint, t->n);
  guint total;
  g_autoptr(GString) line = g_string_new (NULL);

  for (guint i = 0; i < t->n; i++)
    {
      w[i] = g_utf8_strlen (t->headers[i], -1);
      for (guint r = 0; r < t->rows->len; r++)
        w[i] = MAX (w[i], (guint) g_utf8_strlen (((char **) t->rows->pdata[r])[i], -1));
    }
  for (;;)
    {
      guint best = G_MAXUINT, best_slack = 0;
      total = 0;
      for (guint i = 0; i < t->n; i++)
        total += w[i] + (i + 1 < t->n ? 2 : 0);
      if (total <= max_width)
        break;
      for (guint i = 0; i < t->n; i++)
        if (t->min[i] > 0 && w[i] > t->min[i] && w[i] - t->min[i] > best_slack)
          {
            best = i;
            best_slack = w[i] - t->min[i];
          }
      if (best == G_MAXUINT)
        break;
      w[best]--;
    }
  for (guint r = 0; r <= t->rows->len; r++)
    {
      char **cells = r == 0 ? t->headers : t->rows->pdata[r - 1];
      g_string_truncate (line, 0);
      for (guint i = 0; i < t->n; i++)
        {
          g_autofree char *cell = ctl_ellipsize (cells[i], w[i]);
          g_string_append (line, cell);
          if (i + 1 < t->n)
            for (guint pad = g_utf8_strlen (cell, -1); pad < w[i] + 2; pad++)
              g_string_append_c (line, ' ');
        }
      while (line->len > 0 && line->str[line->len - 1] == ' ')
        g_string_truncate (line, line->len - 1);
      puts (line->str);
    }
  fflush (stdout);
}

guint
ctl_output_width (void)
{
  struct winsize ws;
  if (isatty (STDOUT_FILENO) && ioctl (STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 80)
    return ws.ws_col;
  return 80;
}

void
ctl_table_free (CtlTable *t)
{
  if (t == NULL)
    return;
  g_strfreev (t->headers);
  g_free (t->min);
  g_ptr_array_unref (t->rows);
  g_free (t);
}

/* ---- JSON ---------------------------------------------------------------- */

void
ctl_json_append_string (GString *out, const char *s)
{
  g_string_append_c (out, '"');
  for (const guchar *p = (const guchar *) s; *p; p++)
    {
      switch (*p)
        {
        case '"':  g_string_append (out, "\\\""); break;
        case '\\': g_string_append (out, "\\\\"); break;
        case '\b': g_string_append (out, "\\b"); break;
        case '\f': g_string_append (out, "\\f"); break;
        case '\n': g_string_append (out, "\\n"); break;
        case '\r': g_string_append (out, "\\r"); break;
        case '\t': g_string_append (out, "\\t"); break;
        default:
          if (*p < 0x20 || *p == 0x7f)
            g_string_append_printf (out, "\\u%04x", *p);
          else
            g_string_append_c (out, (char) *p);
        }
    }
  g_string_append_c (out, '"');
}

static void
newline (GString *out, int indent)
{
  if (indent < 0)
    return;
  g_string_append_c (out, '\n');
  for (int i = 0; i < indent; i++)
    g_string_append (out, "  ");
}

void
ctl_json_append (GString *out, GVariant *v, int indent)
{
  const GVariantType *type = g_variant_get_type (v);
  int inner = indent < 0 ? -1 : indent + 1;

  if (g_variant_is_of_type (v, G_VARIANT_TYPE_VARIANT))
    {
      g_autoptr(GVariant) child = g_variant_get_variant (v);
      ctl_json_append (out, child, indent);
      return;
    }
  if (g_variant_type_is_maybe (type))
    {
      g_autoptr(GVariant) child = g_variant_get_maybe (v);
      if (child == NULL)
        g_string_append (out, "null");
      else
        ctl_json_append (out, child, indent);
      return;
    }
  if (g_variant_is_of_type (v, G_VARIANT_TYPE_BYTESTRING))
    {
      gsize len;
      const guint8 *data = g_variant_get_fixed_array (v, &len, 1);
      g_autofree char *b64 = g_base64_encode (data, len);
      ctl_json_append_string (out, b64);
      return;
    }
  if (g_variant_type_is_array (type)
      && g_variant_type_is_dict_entry (g_variant_type_element (type))
      && g_variant_type_equal (g_variant_type_key (g_variant_type_element (type)), G_VARIANT_TYPE_STRING))
    {
      gsize n = g_variant_n_children (v);
      g_string_append_c (out, '{');
      for (gsize i = 0; i < n; i++)
        {
          g_autoptr(GVariant) entry = g_variant_get_child_value (v, i);
          g_autoptr(GVariant) key = g_variant_get_child_value (entry, 0);
          g_autoptr(GVariant) value = g_variant_get_child_value (entry, 1);
          newline (out, inner);
          ctl_json_append_string (out, g_variant_get_string (key, NULL));
          g_string_append (out, indent < 0 ? ":" : ": ");
          ctl_json_append (out, value, inner);
          if (i + 1 < n)
            g_string_append_c (out, ',');
        }
      if (n > 0)
        newline (out, indent);
      g_string_append_c (out, '}');
      return;
    }
  if (g_variant_type_is_array (type) || g_variant_type_is_tuple (type) || g_variant_type_is_dict_entry (type))
    {
      gsize n = g_variant_n_children (v);
      g_string_append_c (out, '[');
      for (gsize i = 0; i < n; i++)
        {
          g_autoptr(GVariant) child = g_variant_get_child_value (v, i);
          newline (out, inner);
          ctl_json_append (out, child, inner);
          if (i + 1 < n)
            g_string_append_c (out, ',');
        }
      if (n > 0)
        newline (out, indent);
      g_string_append_c (out, ']');
      return;
    }
  switch (g_variant_classify (v))
    {
    case G_VARIANT_CLASS_BOOLEAN:
      g_string_append (out, g_variant_get_boolean (v) ? "true" : "false");
      break;
    case G_VARIANT_CLASS_BYTE:
      g_string_append_printf (out, "%u", g_variant_get_byte (v));
      break;
    case G_VARIANT_CLASS_INT16:
      g_string_append_printf (out, "%d", g_variant_get_int16 (v));
      break;
    case G_VARIANT_CLASS_UINT16:
      g_string_append_printf (out, "%u", g_variant_get_uint16 (v));
      break;
    case G_VARIANT_CLASS_INT32:
      g_string_append_printf (out, "%" G_GINT32_FORMAT, g_variant_get_int32 (v));
      break;
    case G_VARIANT_CLASS_UINT32:
      g_string_append_printf (out, "%" G_GUINT32_FORMAT, g_variant_get_uint32 (v));
      break;
    case G_VARIANT_CLASS_INT64:
      g_string_append_printf (out, "%" G_GINT64_FORMAT, g_variant_get_int64 (v));
      break;
    case G_VARIANT_CLASS_UINT64:
      g_string_append_printf (out, "%" G_GUINT64_FORMAT, g_variant_get_uint64 (v));
      break;
    case G_VARIANT_CLASS_HANDLE:
      g_string_append_printf (out, "%" G_GINT32_FORMAT, g_variant_get_handle (v));
      break;
    case G_VARIANT_CLASS_DOUBLE:
      {
        double d = g_variant_get_double (v);
        char buf[G_ASCII_DTOSTR_BUF_SIZE];
        if (d != d || d > G_MAXDOUBLE || d < -G_MAXDOUBLE)
          g_string_append (out, "null");
        else
          {
            /* the shortest form that reads back the same (0.1, not 0.10000000000000001) */
            g_ascii_formatd (buf, sizeof buf, "%.15g", d);
            if (g_ascii_strtod (buf, NULL) != d)
              g_ascii_formatd (buf, sizeof buf, "%.17g", d);
            g_string_append (out, buf);
          }
        break;
      }
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
      ctl_json_append_string (out, g_variant_get_string (v, NULL));
      break;
    default:
      g_string_append (out, "null");
    }
}

void
ctl_json_print (GVariant *v)
{
  g_autoptr(GString) out = g_string_new (NULL);
  ctl_json_append (out, v, 0);
  g_string_append_c (out, '\n');
  fputs (out->str, stdout);
  fflush (stdout);
}

/* ---- formatting ---------------------------------------------------------- */

char *
ctl_format_date (gint64 t)
{
  g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local (t);
  if (dt == NULL)
    return g_strdup ("?");
  /* TRANSLATORS: a date as your users write it (g_date_time_format), e.g. "%d.%m.%Y" */
  return g_date_time_format (dt, _("%Y-%m-%d"));
}

char *
ctl_format_days_left (gint64 not_after)
{
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  gint64 days;

  if (not_after <= now)
    return g_strdup (_("EXPIRED"));
  days = (not_after - now) / 86400;
  if (days == 0)
    return g_strdup (_("in less than a day"));
  return g_strdup_printf (ngettext ("in %d day", "in %d days", (unsigned long) MIN (days, G_MAXINT)),
                          (int) MIN (days, G_MAXINT));
}

const char *
ctl_dict_str (GVariant *dict, const char *key, const char *def)
{
  const char *s;
  g_autoptr(GVariant) v = g_variant_lookup_value (dict, key, NULL);
  if (v == NULL || !(g_variant_is_of_type (v, G_VARIANT_TYPE_STRING)
                     || g_variant_is_of_type (v, G_VARIANT_TYPE_OBJECT_PATH)))
    return def;
  /* interned: valid for the life of the process, whatever form @dict has */
  s = g_intern_string (g_variant_get_string (v, NULL));
  return s;
}

gboolean
ctl_dict_bool (GVariant *dict, const char *key, gboolean def)
{
  gboolean b;
  return g_variant_lookup (dict, key, "b", &b) ? b : def;
}

gint64
ctl_dict_int64 (GVariant *dict, const char *key, gint64 def)
{
  gint64 x;
  return g_variant_lookup (dict, key, "x", &x) ? x : def;
}

/* ---- tokens and certificates ---------------------------------------------- */

GVariant *
ctl_list_tokens (GDBusConnection *bus, GError **error)
{
  g_autoptr(GVariant) reply = ctl_call_manager (bus, "ListTokens", NULL, "(aa{sv})", CTL_TIMEOUT_LIST, error);
  if (reply == NULL)
    return NULL;
  return g_variant_get_child_value (reply, 0);
}

GVariant *
ctl_find_cert (GDBusConnection *bus, const char *uri, GError **error)
{
  GVariantBuilder b;
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) list = NULL;
  GVariant *found = NULL;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  if (g_str_has_prefix (uri, "system:"))
    g_variant_builder_add (&b, "{sv}", "storage", g_variant_new_string ("system"));
  reply = ctl_call_manager (bus, "ListCerts", g_variant_new ("(a{sv})", &b), "(aa{sv})", CTL_TIMEOUT_LIST, error);
  if (reply == NULL)
    return NULL;
  list = g_variant_get_child_value (reply, 0);
  for (gsize i = 0; i < g_variant_n_children (list) && found == NULL; i++)
    {
      g_autoptr(GVariant) c = g_variant_get_child_value (list, i);
      if (g_strcmp0 (ctl_dict_str (c, "uri", NULL), uri) == 0)
        found = g_steal_pointer (&c);
    }
  return found;
}

static void
pad_copy (CK_UTF8CHAR *dst, gsize size, const char *src)
{
  gsize n = src ? MIN (strlen (src), size) : 0;
  memset (dst, ' ', size);
  if (n)
    memcpy (dst, src, n);
}

static gboolean
token_matches (GVariant *tok, const char *spec, const P11cUri *uri)
{
  CK_TOKEN_INFO info;

  if (g_strcmp0 (ctl_dict_str (tok, "path", NULL), spec) == 0
      || g_strcmp0 (ctl_dict_str (tok, "uri", NULL), spec) == 0)
    return TRUE;
  if (uri == NULL)
    return FALSE;
  memset (&info, 0, sizeof info);
  pad_copy (info.label, sizeof info.label, ctl_dict_str (tok, "label", ""));
  pad_copy (info.manufacturerID, sizeof info.manufacturerID, ctl_dict_str (tok, "manufacturer", ""));
  pad_copy (info.model, sizeof info.model, ctl_dict_str (tok, "model", ""));
  pad_copy (info.serialNumber, sizeof info.serialNumber, ctl_dict_str (tok, "serial", ""));
  return p11c_uri_matches_token (uri, &info);
}

GVariant *
ctl_choose_token (GDBusConnection *bus, const char *spec, gboolean interactive, GError **error)
{
  g_autoptr(GVariant) tokens = ctl_list_tokens (bus, error);
  g_autoptr(P11cUri) uri = NULL;
  g_autoptr(GPtrArray) matches = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);
  gsize n;

  if (tokens == NULL)
    return NULL;
  n = g_variant_n_children (tokens);
  if (spec != NULL && g_str_has_prefix (spec, "pkcs11:"))
    {
      uri = p11c_uri_parse (spec, error);
      if (uri == NULL)
        {
          /* a usage error in the user's words (the parser's message is English) */
          g_autoptr(GError) parse = g_steal_pointer (error);
          g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE, _("--token: “%s” is not a valid PKCS#11 URI (%s)"),
                       spec, parse->message);
          return NULL;
        }
    }
  for (gsize i = 0; i < n; i++)
    {
      g_autoptr(GVariant) tok = g_variant_get_child_value (tokens, i);
      if (spec == NULL || token_matches (tok, spec, uri))
        g_ptr_array_add (matches, g_steal_pointer (&tok));
    }
  if (matches->len == 1)
    return g_variant_ref (matches->pdata[0]);
  if (matches->len == 0)
    {
      if (spec != NULL)
        g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT,
                     _("No present token matches %s; insert it, or see “p11certctl tokens”"), spec);
      else
        g_set_error_literal (error, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT,
                             _("No token is present; insert one (or run “p11certctl rescan”)"));
      return NULL;
    }
  if (interactive && ctl_stdin_is_tty ())
    {
      printf ("%s\n", _("Tokens:"));
      for (guint i = 0; i < matches->len; i++)
        {
          printf ("  %u) ", i + 1);
          /* TRANSLATORS: a token in a list: %1$s label, %2$s manufacturer, %3$s serial number */
          printf (_("%1$s  (%2$s, serial %3$s)"), ctl_dict_str (matches->pdata[i], "label", ""),
                  ctl_dict_str (matches->pdata[i], "manufacturer", ""), ctl_dict_str (matches->pdata[i], "serial", ""));
          putchar ('\n');
        }
      for (;;)
        {
          g_autofree char *answer = ctl_prompt_line (_("Choose a token [1]: "));
          guint64 k = 1;
          if (answer == NULL)
            break;
          if (answer[0] == '\0' || (g_ascii_string_to_unsigned (answer, 10, 1, matches->len, &k, NULL)))
            return g_variant_ref (matches->pdata[k - 1]);
          printf (_("Enter a number from 1 to %u."), matches->len);
          putchar ('\n');
        }
    }
  g_set_error (error, CTL_ERROR, CTL_ERROR_USAGE,
               spec ? ngettext ("%u token matches; choose one with --token (URI or object path, see “p11certctl tokens”)",
                                "%u tokens match; choose one with --token (URI or object path, see “p11certctl tokens”)",
                                matches->len)
                    : ngettext ("%u token is present; choose one with --token (URI or object path, see “p11certctl tokens”)",
                                "%u tokens are present; choose one with --token (URI or object path, see “p11certctl tokens”)",
                                matches->len),
               matches->len);
  return NULL;
}

/* "  Label:    value", labels padded to the widest of @labels */
static void
print_field (const char *const *labels, const char *label, const char *value)
{
  glong width = 0;
  for (guint i = 0; labels[i]; i++)
    width = MAX (width, g_utf8_strlen (labels[i], -1));
  printf ("  %s", label);
  for (glong pad = g_utf8_strlen (label, -1); pad < width + 2; pad++)
    putchar (' ');
  printf ("%s\n", value);
}

void
ctl_print_cert (GVariant *cert, GVariant *tokens)
{
  const char *err = ctl_dict_str (cert, "error", NULL);
  const char *token_path = ctl_dict_str (cert, "token", "/");
  const char *token_label = NULL;
  const char *labels[] = { _("Subject:"), _("Issuer:"), _("Expires:"), _("Storage:"), _("Token:"), _("Label:"),
                           _("URI:"), NULL };

  for (gsize i = 0; tokens != NULL && i < g_variant_n_children (tokens); i++)
    {
      g_autoptr(GVariant) t = g_variant_get_child_value (tokens, i);
      if (g_strcmp0 (ctl_dict_str (t, "path", NULL), token_path) == 0)
        token_label = ctl_dict_str (t, "label", NULL);
    }
  if (err != NULL)
    {
      /* TRANSLATORS: %s is the daemon's English reason, for an administrator */
      g_autofree char *text = g_strdup_printf (_("(unreadable: %s)"), err);
      print_field (labels, labels[0], text);
    }
  else
    {
      gint64 not_after = ctl_dict_int64 (cert, "not_after", 0);
      g_autofree char *date = ctl_format_date (not_after);
      g_autofree char *left = ctl_format_days_left (not_after);
      g_autofree char *expires = g_strdup_printf ("%s (%s)", date, left);
      print_field (labels, labels[0], ctl_dict_str (cert, "subject", ""));
      print_field (labels, labels[1], ctl_dict_str (cert, "issuer", ""));
      print_field (labels, labels[2], expires);
    }
  if (g_strcmp0 (ctl_dict_str (cert, "storage", ""), "system") == 0)
    print_field (labels, labels[3], _("system store"));
  else
    print_field (labels, labels[4], token_label ? token_label : token_path);
  if (ctl_dict_str (cert, "label", "")[0] != '\0')
    print_field (labels, labels[5], ctl_dict_str (cert, "label", ""));
  print_field (labels, labels[6], ctl_dict_str (cert, "uri", ""));
  fflush (stdout);
}
