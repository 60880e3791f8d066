/* p11certctl: secrets (PINs, one-time passwords, passwords) from a file, an
 * fd or the terminal without echo — the terminal restored on any signal —
 * and yes/no questions.  Never from argv. */
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
