/* PC/SC hotplug monitor: one thread blocked in SCardGetStatusChange.
 * See p11c-pcsc.h for the contract. */
#define G_LOG_DOMAIN "p11c-pcsc"

#include "p11c-pcsc.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <PCSC/winscard.h>
#include <PCSC/wintypes.h>

#define PNP_READER        "\\\\?PnP?\\Notification"
#define BACKOFF_MIN_US    (200 * G_TIME_SPAN_MILLISECOND)
#define BACKOFF_MAX_US    (10 * G_TIME_SPAN_SECOND)
#define INITIAL_WAIT_US   (2 * G_TIME_SPAN_SECOND)
#define CANCEL_RETRY_US   (10 * G_TIME_SPAN_MILLISECOND)
#define MAX_READER_ERRORS 3
#define MAX_WAKES_PER_SECOND 50
#define SOCKET_DEFAULT    "/run/pcscd/pcscd.comm"   /* pcsc-lite's, unless PCSCLITE_CSOCK_NAME */
#define SOCKET_TRIES      5   /* connects refused while the socket exists, before waiting for a new one */
/* How long one SCardGetStatusChange waits.  Not INFINITE: libpcsclite turns
 * INFINITE into a 60 s poll that it re-arms with two messages to pcscd (3
 * wake-ups a minute); a finite timeout is one poll() of that length.  ~23
 * days: below poll()'s INT_MAX milliseconds, after which the wait is simply
 * made again. */
#define LONG_WAIT_MS      ((DWORD) 2000000000)

typedef struct {
  char    *name;
  DWORD    state;   /* last dwEventState, fed back as dwCurrentState (thread only) */
  gboolean present;
  GBytes  *atr;     /* set while present (may be empty for a mute card) */
} Reader;

struct _P11cPcscMonitor {
  gint              refcount;   /* the owner + a pending idle source */
  GMainContext     *context;
  P11cPcscCallback  cb;
  gpointer          user_data;
  GThread          *thread;

  GMutex    lock;               /* protects everything below */
  GCond     cond;               /* stopping, initial_done, thread_done */
  gboolean  stopping;
  gboolean  initial_done;       /* new() has returned: changes are events */
  gboolean  thread_done;
  gboolean  service_up;
  gboolean  logged_down;
  gboolean  have_ctx;
  SCARDCONTEXT ctx;
  GPtrArray *readers;           /* of Reader; written by the thread only */
  GQueue    events;             /* of P11cPcscEvent, not yet dispatched */
  GSource  *idle;               /* pending dispatch source (owned ref) */

  GRecMutex dispatch_lock;      /* held while a callback runs */

  /* While pcscd is absent the thread sleeps in poll() until its socket is
   * created (inotify), not on a timer: no wake-ups while nothing happens. */
  char     *sock_path;
  int       wake_fd;            /* eventfd: free() wakes the poll */
  int       inotify_fd;         /* thread only, like the two below */
  int       wd_dir;             /* the socket's directory */
  int       wd_parent;          /* its parent, while the directory is missing */
};

/* --- events --------------------------------------------------------------- */

const char *
p11c_pcsc_event_kind_to_string (P11cPcscEventKind kind)
{
  switch (kind)
    {
    case P11C_PCSC_CARD_INSERTED:  return "card-inserted";
    case P11C_PCSC_CARD_REMOVED:   return "card-removed";
    case P11C_PCSC_READER_ADDED:   return "reader-added";
    case P11C_PCSC_READER_REMOVED: return "reader-removed";
    case P11C_PCSC_SERVICE_UP:     return "service-up";
    case P11C_PCSC_SERVICE_DOWN:   return "service-down";
    default:                       return "unknown";
    }
}

P11cPcscEvent *
p11c_pcsc_event_new (P11cPcscEventKind kind, const char *reader, GBytes *atr)
{
  P11cPcscEvent *e = g_new0 (P11cPcscEvent, 1);
  e->kind = kind;
  e->reader = g_strdup (reader);
  e->atr = atr ? g_bytes_ref (atr) : NULL;
  return e;
}

void
p11c_pcsc_event_free (P11cPcscEvent *e)
{
  if (e == NULL)
    return;
  g_free (e->reader);
  g_clear_pointer (&e->atr, g_bytes_unref);
  g_free (e);
}

static void
reader_free (gpointer data)
{
  Reader *r = data;
  g_free (r->name);
  g_clear_pointer (&r->atr, g_bytes_unref);
  g_free (r);
}

static P11cPcscMonitor *
monitor_ref (P11cPcscMonitor *m)
{
  g_atomic_int_inc (&m->refcount);
  return m;
}

static void
monitor_unref (gpointer data)
{
  P11cPcscMonitor *m = data;

  if (!g_atomic_int_dec_and_test (&m->refcount))
    return;
  g_queue_clear_full (&m->events, (GDestroyNotify) p11c_pcsc_event_free);
  g_clear_pointer (&m->readers, g_ptr_array_unref);
  g_main_context_unref (m->context);
  g_mutex_clear (&m->lock);
  g_cond_clear (&m->cond);
  g_rec_mutex_clear (&m->dispatch_lock);
  if (m->wake_fd >= 0)
    close (m->wake_fd);
  if (m->inotify_fd >= 0)
    close (m->inotify_fd);
  g_free (m->sock_path);
  g_free (m);
}

/* Runs in the owner's context: drains the queue in order. */
static gboolean
dispatch_cb (gpointer data)
{
  P11cPcscMonitor *m = data;

  for (;;)
    {
      g_autoptr(P11cPcscEvent) e = NULL;

      g_rec_mutex_lock (&m->dispatch_lock);
      g_mutex_lock (&m->lock);
      if (!m->stopping)
        e = g_queue_pop_head (&m->events);
      if (e == NULL)
        {
          GSource *src = g_steal_pointer (&m->idle);
          g_mutex_unlock (&m->lock);
          g_rec_mutex_unlock (&m->dispatch_lock);
          if (src)
            g_source_unref (src);
          return G_SOURCE_REMOVE;
        }
      g_mutex_unlock (&m->lock);
      m->cb (e, m->user_data);
      g_rec_mutex_unlock (&m->dispatch_lock);
    }
}

/* Called with m->lock held. */
static void
emit_locked (P11cPcscMonitor *m, P11cPcscEventKind kind, const char *reader, GBytes *atr)
{
  if (m->stopping)
    return;   /* free() has started: nothing more is delivered */
  g_debug ("event %s %s", p11c_pcsc_event_kind_to_string (kind), reader ? reader : "");
  g_queue_push_tail (&m->events, p11c_pcsc_event_new (kind, reader, atr));
  if (m->idle == NULL)
    {
      m->idle = g_idle_source_new ();
      g_source_set_priority (m->idle, G_PRIORITY_DEFAULT);
      g_source_set_static_name (m->idle, "[p11c-pcsc] dispatch");
      g_source_set_callback (m->idle, dispatch_cb, monitor_ref (m), monitor_unref);
      g_source_attach (m->idle, m->context);
    }
}

/* --- the monitor thread ------------------------------------------------- */

static gboolean
is_stopping (P11cPcscMonitor *m)
{
  g_mutex_lock (&m->lock);
  gboolean stopping = m->stopping;
  g_mutex_unlock (&m->lock);
  return stopping;
}

static void
mark_initial_done (P11cPcscMonitor *m)
{
  g_mutex_lock (&m->lock);
  if (!m->initial_done)
    {
      m->initial_done = TRUE;
      g_cond_broadcast (&m->cond);
    }
  g_mutex_unlock (&m->lock);
}

/* Waits @us or until stopping, whichever comes first. */
static void
wait_backoff (P11cPcscMonitor *m, gint64 us)
{
  gint64 deadline = g_get_monotonic_time () + us;

  g_mutex_lock (&m->lock);
  while (!m->stopping)
    if (!g_cond_wait_until (&m->cond, &m->lock, deadline))
      break;
  g_mutex_unlock (&m->lock);
}

static gboolean
is_service_error (LONG rv)
{
  switch (rv)
    {
    case SCARD_E_NO_SERVICE:
    case SCARD_E_SERVICE_STOPPED:
    case SCARD_E_READER_UNAVAILABLE:
    case SCARD_E_NO_READERS_AVAILABLE:
    case SCARD_E_INVALID_HANDLE:
    case SCARD_E_UNKNOWN_READER:
    case SCARD_E_COMM_DATA_LOST:
    case SCARD_F_COMM_ERROR:
    case SCARD_E_CANCELLED:
    /* pcscd answers "Access denied" to a client while it shuts down and when
     * its polkit check fails (polkitd restarting): life of the service too */
    case SCARD_W_SECURITY_VIOLATION:
      return TRUE;
    default:
      return FALSE;
    }
}

static Reader *
find_reader (P11cPcscMonitor *m, const char *name, guint *index)
{
  for (guint i = 0; i < m->readers->len; i++)
    {
      Reader *r = g_ptr_array_index (m->readers, i);
      if (g_strcmp0 (r->name, name) == 0)
        {
          if (index)
            *index = i;
          return r;
        }
    }
  return NULL;
}

/* Called with m->lock held.  Only SCARD_STATE_PRESENT transitions (and an
 * ATR swap while present) are events; the event counter, INUSE, EXCLUSIVE
 * and friends are noise. */
static void
apply_state_locked (P11cPcscMonitor *m, Reader *r, const SCARD_READERSTATE *st, gboolean emit)
{
  gboolean present = (st->dwEventState & SCARD_STATE_PRESENT) != 0;
  g_autoptr(GBytes) atr = NULL;

  if (present)
    atr = g_bytes_new (st->rgbAtr, MIN (st->cbAtr, (DWORD) MAX_ATR_SIZE));

  if (present && r->present)
    {
      /* A swap faster than we could see, or the ATR arriving late. */
      if (r->atr && g_bytes_get_size (r->atr) > 0 && g_bytes_get_size (atr) > 0 &&
          !g_bytes_equal (r->atr, atr))
        {
          if (emit)
            {
              emit_locked (m, P11C_PCSC_CARD_REMOVED, r->name, NULL);
              emit_locked (m, P11C_PCSC_CARD_INSERTED, r->name, atr);
            }
        }
      g_clear_pointer (&r->atr, g_bytes_unref);
      r->atr = g_steal_pointer (&atr);
      return;
    }
  if (present == r->present)
    return;

  r->present = present;
  g_clear_pointer (&r->atr, g_bytes_unref);
  r->atr = g_steal_pointer (&atr);
  if (emit)
    emit_locked (m, present ? P11C_PCSC_CARD_INSERTED : P11C_PCSC_CARD_REMOVED,
                 r->name, r->atr);
}

/* Re-lists the readers and reads every reader's state without blocking,
 * reporting the differences to what is known.  On success *pnp_state holds
 * the PnP pseudo-reader's state to wait from. */
static LONG
sync_readers (P11cPcscMonitor *m, SCARDCONTEXT ctx, DWORD *pnp_state)
{
  g_autofree char *buf = NULL;
  g_autoptr(GPtrArray) names = g_ptr_array_new ();
  g_autofree SCARD_READERSTATE *states = NULL;
  DWORD len = 0;
  LONG rv;
  guint n;

  for (int attempt = 0; ; attempt++)
    {
      rv = SCardListReaders (ctx, NULL, NULL, &len);
      if (rv == SCARD_S_SUCCESS)
        {
          g_free (buf);
          buf = g_malloc0 (len + 1);
          rv = SCardListReaders (ctx, NULL, buf, &len);
        }
      if (rv == SCARD_E_INSUFFICIENT_BUFFER && attempt < 3)
        continue;   /* a reader appeared between the two calls */
      break;
    }
  if (rv == SCARD_E_NO_READERS_AVAILABLE)
    rv = SCARD_S_SUCCESS;   /* no reader is normal */
  else if (rv != SCARD_S_SUCCESS)
    return rv;
  else
    for (const char *p = buf; p < buf + len && *p != '\0'; p += strlen (p) + 1)
      g_ptr_array_add (names, (gpointer) p);

  n = names->len;
  states = g_new0 (SCARD_READERSTATE, n + 1);
  for (guint i = 0; i < n; i++)
    {
      states[i].szReader = g_ptr_array_index (names, i);
      states[i].dwCurrentState = SCARD_STATE_UNAWARE;
    }
  states[n].szReader = PNP_READER;
  states[n].dwCurrentState = SCARD_STATE_UNAWARE;

  rv = SCardGetStatusChange (ctx, 0, states, n + 1);
  if (rv == SCARD_E_TIMEOUT)
    rv = SCARD_S_SUCCESS;
  if (rv != SCARD_S_SUCCESS)
    return rv;
  for (guint i = 0; i < n; i++)
    if (states[i].dwEventState & SCARD_STATE_UNKNOWN)
      return SCARD_E_UNKNOWN_READER;   /* vanished meanwhile: list again */
  *pnp_state = states[n].dwEventState & ~SCARD_STATE_CHANGED;
  g_debug ("%u reader(s), PnP state 0x%lx", n, (unsigned long) *pnp_state);

  g_mutex_lock (&m->lock);
  {
    gboolean emit = m->initial_done;

    if (!m->service_up)
      {
        g_message ("PC/SC service available, %u reader(s)", n);
        m->service_up = TRUE;
        m->logged_down = FALSE;
        if (emit)
          emit_locked (m, P11C_PCSC_SERVICE_UP, NULL, NULL);
      }

    for (guint i = m->readers->len; i > 0; i--)
      {
        Reader *r = g_ptr_array_index (m->readers, i - 1);
        gboolean listed = FALSE;

        for (guint j = 0; j < n && !listed; j++)
          listed = g_str_equal (r->name, g_ptr_array_index (names, j));
        if (listed)
          continue;
        g_message ("reader removed: %s", r->name);
        if (emit && r->present)
          emit_locked (m, P11C_PCSC_CARD_REMOVED, r->name, NULL);
        if (emit)
          emit_locked (m, P11C_PCSC_READER_REMOVED, r->name, NULL);
        g_ptr_array_remove_index (m->readers, i - 1);
      }

    for (guint i = 0; i < n; i++)
      {
        Reader *r = find_reader (m, states[i].szReader, NULL);

        if (r == NULL)
          {
            r = g_new0 (Reader, 1);
            r->name = g_strdup (states[i].szReader);
            g_ptr_array_add (m->readers, r);
            g_message ("reader added: %s", r->name);
            if (emit)
              emit_locked (m, P11C_PCSC_READER_ADDED, r->name, NULL);
          }
        r->state = states[i].dwEventState & ~SCARD_STATE_CHANGED;
        apply_state_locked (m, r, &states[i], emit);
      }
  }
  g_mutex_unlock (&m->lock);
  return SCARD_S_SUCCESS;
}

/* sync_readers(), listing again (a few times) when a reader vanishes
 * between the listing and the status call. */
static LONG
sync_readers_retry (P11cPcscMonitor *m, SCARDCONTEXT ctx, DWORD *pnp_state)
{
  LONG rv = SCARD_E_UNKNOWN_READER;

  for (guint i = 0; i < MAX_READER_ERRORS && rv == SCARD_E_UNKNOWN_READER; i++)
    rv = sync_readers (m, ctx, pnp_state);
  return rv;
}

/* Serves one established context until it fails or we are stopping. */
static LONG
run_context (P11cPcscMonitor *m, SCARDCONTEXT ctx)
{
  DWORD pnp_state = SCARD_STATE_UNAWARE;
  guint wait_errors = 0;   /* consecutive failed waits: never a tight loop */
  gint64 window_start = 0;
  guint window_wakes = 0;
  gboolean warned_busy = FALSE;
  LONG rv;

  rv = sync_readers_retry (m, ctx, &pnp_state);
  if (rv != SCARD_S_SUCCESS)
    return rv;
  mark_initial_done (m);

  for (;;)
    {
      g_autofree SCARD_READERSTATE *states = NULL;
      guint n = m->readers->len;   /* only this thread changes the list */

      states = g_new0 (SCARD_READERSTATE, n + 1);
      for (guint i = 0; i < n; i++)
        {
          Reader *r = g_ptr_array_index (m->readers, i);
          states[i].szReader = r->name;
          /* The full last event state, event counter included: anything
           * that moved since (even before we block) wakes us at once, and
           * INUSE/EXCLUSIVE of other clients do not keep waking us. */
          states[i].dwCurrentState = r->state;
        }
      states[n].szReader = PNP_READER;
      states[n].dwCurrentState = pnp_state;

      /* Safety net: real events come at most a few per second.  Should a
       * pcsc-lite quirk make every call return at once, throttle instead
       * of spinning. */
      if (g_get_monotonic_time () - window_start > G_TIME_SPAN_SECOND)
        {
          window_start = g_get_monotonic_time ();
          window_wakes = 0;
        }
      else if (++window_wakes > MAX_WAKES_PER_SECOND)
        {
          if (!warned_busy)
            g_warning ("PC/SC reports changes continuously; throttling the monitor");
          warned_busy = TRUE;
          wait_backoff (m, BACKOFF_MIN_US);
        }

      /* Block until something changes. */
      for (;;)
        {
          if (is_stopping (m))
            return SCARD_E_CANCELLED;
          rv = SCardGetStatusChange (ctx, LONG_WAIT_MS, states, n + 1);
          if (rv == SCARD_E_TIMEOUT)
            continue;
          if (rv == SCARD_E_CANCELLED)
            {
              if (is_stopping (m))
                return rv;
              continue;   /* someone else's SCardCancel */
            }
          break;
        }

      if (rv == SCARD_E_UNKNOWN_READER || rv == SCARD_E_READER_UNAVAILABLE)
        {
          /* The reader list moved under us: list again, a few times at
           * most, then treat it as a service failure (with backoff). */
          if (++wait_errors >= MAX_READER_ERRORS)
            return rv;
        }
      else if (rv != SCARD_S_SUCCESS)
        return rv;
      else
        wait_errors = 0;

      /* Something moved: list the readers and read every state again, and
       * report the differences to what we know.  Listing on every wake
       * matters with pcsc-lite 1.9.9: its PnP pseudo-reader only reports
       * reader count changes that happen *during* a call (its state word
       * stays 0), so a reader added between two calls would go unseen. */
      rv = sync_readers_retry (m, ctx, &pnp_state);
      if (rv != SCARD_S_SUCCESS)
        return rv;
    }
}

/* --- waiting for pcscd's socket ------------------------------------------ */

/* (Re)arm the watches: the socket's directory, or its parent while that
 * directory is missing.  Armed before each connection attempt, so a socket
 * created after a failed attempt is always seen.  FALSE: no inotify (the
 * caller falls back to timed retries). */
static gboolean
socket_watch_arm (P11cPcscMonitor *m)
{
  g_autofree char *dir = g_path_get_dirname (m->sock_path);

  if (m->wake_fd < 0)
    return FALSE;   /* nothing could wake the wait for free() */
  if (m->inotify_fd < 0 && (m->inotify_fd = inotify_init1 (IN_CLOEXEC | IN_NONBLOCK)) < 0)
    return FALSE;
  if (m->wd_dir < 0)
    m->wd_dir = inotify_add_watch (m->inotify_fd, dir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
  if (m->wd_dir < 0 && m->wd_parent < 0)
    {
      g_autofree char *parent = g_path_get_dirname (dir);
      m->wd_parent = inotify_add_watch (m->inotify_fd, parent, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
      /* the directory may have come between the two calls */
      m->wd_dir = inotify_add_watch (m->inotify_fd, dir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
    }
  return m->wd_dir >= 0 || m->wd_parent >= 0;
}

/* Sleep until the socket (or its directory) is created or a watch goes
 * away, or free() is called. */
static void
socket_watch_wait (P11cPcscMonitor *m)
{
  g_autofree char *dir = g_path_get_dirname (m->sock_path);
  g_autofree char *dir_name = g_path_get_basename (dir);
  g_autofree char *sock_name = g_path_get_basename (m->sock_path);
  struct pollfd p[2] = { { m->inotify_fd, POLLIN, 0 }, { m->wake_fd, POLLIN, 0 } };

  while (!is_stopping (m))
    {
      char buf[4096] __attribute__ ((aligned (__alignof__ (struct inotify_event))));
      gboolean wake = FALSE;
      ssize_t len;

      if (poll (p, 2, -1) < 0 && errno != EINTR)
        return;
      if (p[1].revents != 0)
        return;
      while ((len = read (m->inotify_fd, buf, sizeof buf)) > 0)
        for (char *ptr = buf; ptr < buf + len; ptr += sizeof (struct inotify_event) + ((struct inotify_event *) ptr)->len)
          {
            const struct inotify_event *ev = (const struct inotify_event *) ptr;
            if (ev->mask & IN_IGNORED)
              {
                /* a watched directory went away: arm again */
                if (ev->wd == m->wd_dir)
                  m->wd_dir = -1;
                if (ev->wd == m->wd_parent)
                  m->wd_parent = -1;
                wake = TRUE;
              }
            else if (ev->len > 0 && ((ev->wd == m->wd_dir && g_str_equal (ev->name, sock_name))
                                     || (ev->wd == m->wd_parent && g_str_equal (ev->name, dir_name))))
              wake = TRUE;
          }
      if (wake)
        return;
    }
}

/* The context failed (or could not be established) with @rv. */
static void
service_lost (P11cPcscMonitor *m, LONG rv)
{
  g_mutex_lock (&m->lock);
  if (m->service_up)
    {
      gboolean emit = m->initial_done;

      if (is_service_error (rv))
        g_message ("PC/SC service lost (%s); reconnecting in the background",
                   pcsc_stringify_error (rv));
      else
        g_warning ("unexpected PC/SC error %s (0x%08lx); reconnecting in the background",
                   pcsc_stringify_error (rv), (unsigned long) rv);
      m->service_up = FALSE;
      m->logged_down = TRUE;
      if (emit)
        emit_locked (m, P11C_PCSC_SERVICE_DOWN, NULL, NULL);
      for (guint i = 0; i < m->readers->len; i++)
        {
          Reader *r = g_ptr_array_index (m->readers, i);
          if (!r->present)
            continue;
          r->present = FALSE;
          g_clear_pointer (&r->atr, g_bytes_unref);
          if (emit)
            emit_locked (m, P11C_PCSC_CARD_REMOVED, r->name, NULL);
        }
    }
  else if (!m->logged_down)
    {
      g_message ("PC/SC service not available (%s); waiting for pcscd",
                 pcsc_stringify_error (rv));
      m->logged_down = TRUE;
    }
  g_mutex_unlock (&m->lock);
}

static gpointer
monitor_thread (gpointer data)
{
  P11cPcscMonitor *m = data;
  gint64 backoff = BACKOFF_MIN_US;
  guint refused = 0;   /* connects refused while the socket was there */

  while (!is_stopping (m))
    {
      SCARDCONTEXT ctx = 0;
      gboolean watching = socket_watch_arm (m);
      LONG rv = SCardEstablishContext (SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);

      if (rv == SCARD_S_SUCCESS)
        {
          gboolean was_up;

          g_mutex_lock (&m->lock);
          if (m->stopping)
            {
              g_mutex_unlock (&m->lock);
              SCardReleaseContext (ctx);
              break;
            }
          m->ctx = ctx;
          m->have_ctx = TRUE;
          g_mutex_unlock (&m->lock);

          rv = run_context (m, ctx);

          g_mutex_lock (&m->lock);
          m->have_ctx = FALSE;
          was_up = m->service_up;
          g_mutex_unlock (&m->lock);
          SCardReleaseContext (ctx);
          if (is_stopping (m))
            break;
          if (was_up)
            backoff = BACKOFF_MIN_US;
        }

      service_lost (m, rv);
      mark_initial_done (m);
      /* pcscd absent: no socket, or one nobody accepts on (pcscd killed,
       * or between its bind and listen — hence a few timed tries).  Wait
       * for a new socket; pcscd creates it afresh when it starts. */
      if (rv == SCARD_E_NO_SERVICE && watching
          && (!g_file_test (m->sock_path, G_FILE_TEST_EXISTS) || ++refused >= SOCKET_TRIES))
        {
          refused = 0;
          backoff = BACKOFF_MIN_US;
          socket_watch_wait (m);
          continue;
        }
      wait_backoff (m, backoff);
      backoff = MIN (backoff * 2, BACKOFF_MAX_US);
    }

  g_mutex_lock (&m->lock);
  m->thread_done = TRUE;
  g_cond_broadcast (&m->cond);
  g_mutex_unlock (&m->lock);
  return NULL;
}

/* --- public ------------------------------------------------------------- */

P11cPcscMonitor *
p11c_pcsc_monitor_new (GMainContext *context, P11cPcscCallback cb, gpointer user_data)
{
  P11cPcscMonitor *m;
  gint64 deadline;

  g_return_val_if_fail (cb != NULL, NULL);

  m = g_new0 (P11cPcscMonitor, 1);
  m->refcount = 1;
  m->context = g_main_context_ref (context ? context : g_main_context_default ());
  m->cb = cb;
  m->user_data = user_data;
  g_mutex_init (&m->lock);
  g_cond_init (&m->cond);
  g_rec_mutex_init (&m->dispatch_lock);
  g_queue_init (&m->events);
  m->readers = g_ptr_array_new_with_free_func (reader_free);
  m->sock_path = g_strdup (g_getenv ("PCSCLITE_CSOCK_NAME") && *g_getenv ("PCSCLITE_CSOCK_NAME")
                           ? g_getenv ("PCSCLITE_CSOCK_NAME") : SOCKET_DEFAULT);
  m->wake_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  m->inotify_fd = m->wd_dir = m->wd_parent = -1;

  m->thread = g_thread_new ("p11c-pcsc", monitor_thread, m);

  deadline = g_get_monotonic_time () + INITIAL_WAIT_US;
  g_mutex_lock (&m->lock);
  while (!m->initial_done)
    if (!g_cond_wait_until (&m->cond, &m->lock, deadline))
      break;
  if (!m->initial_done)
    {
      /* pcscd is slow to answer: from now on everything is an event. */
      g_message ("PC/SC initial state not read yet; it will arrive as events");
      m->initial_done = TRUE;
    }
  g_mutex_unlock (&m->lock);
  return m;
}

void
p11c_pcsc_monitor_free (P11cPcscMonitor *m)
{
  GSource *src;

  if (m == NULL)
    return;

  g_mutex_lock (&m->lock);
  m->stopping = TRUE;
  g_cond_broadcast (&m->cond);
  if (m->wake_fd >= 0)
    {
      guint64 one = 1;
      if (write (m->wake_fd, &one, sizeof one) < 0)
        g_debug ("waking the monitor thread: %s", g_strerror (errno));
    }
  src = g_steal_pointer (&m->idle);
  g_queue_clear_full (&m->events, (GDestroyNotify) p11c_pcsc_event_free);
  g_queue_init (&m->events);
  /* SCardCancel only interrupts a call already blocked, so repeat it until
   * the thread has noticed `stopping`.  The context stays valid meanwhile:
   * the thread releases it only after taking the lock we hold here. */
  while (!m->thread_done)
    {
      if (m->have_ctx)
        SCardCancel (m->ctx);
      g_cond_wait_until (&m->cond, &m->lock, g_get_monotonic_time () + CANCEL_RETRY_US);
    }
  g_mutex_unlock (&m->lock);
  g_thread_join (m->thread);

  if (src)
    {
      g_source_destroy (src);
      g_source_unref (src);
    }
  /* Wait for a callback running in another thread to return. */
  g_rec_mutex_lock (&m->dispatch_lock);
  g_rec_mutex_unlock (&m->dispatch_lock);
  monitor_unref (m);
}

GPtrArray *
p11c_pcsc_monitor_snapshot (P11cPcscMonitor *m)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_pcsc_event_free);

  g_return_val_if_fail (m != NULL, out);
  g_mutex_lock (&m->lock);
  for (guint i = 0; i < m->readers->len; i++)
    {
      Reader *r = g_ptr_array_index (m->readers, i);
      g_ptr_array_add (out, p11c_pcsc_event_new (r->present ? P11C_PCSC_CARD_INSERTED
                                                            : P11C_PCSC_READER_ADDED,
                                                 r->name, r->present ? r->atr : NULL));
    }
  g_mutex_unlock (&m->lock);
  return out;
}

gboolean
p11c_pcsc_monitor_is_service_up (P11cPcscMonitor *m)
{
  g_return_val_if_fail (m != NULL, FALSE);
  g_mutex_lock (&m->lock);
  gboolean up = m->service_up;
  g_mutex_unlock (&m->lock);
  return up;
}
