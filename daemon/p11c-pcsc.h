#pragma once
/* PC/SC hotplug monitor.
 *
 * A dedicated thread blocks in SCardGetStatusChange (a ~23-day timeout, not
 * INFINITE, which libpcsclite polls every 60 s) over every reader plus
 * "\\?PnP?\Notification" (no polling, no wake-ups while idle)
 * and turns state changes into events delivered in the caller's main
 * context, in order.  pcscd being absent, stopping or restarting is normal:
 * the thread reports SERVICE_DOWN once and re-establishes its context when
 * pcscd's socket appears (inotify on its directory, PCSCLITE_CSOCK_NAME or
 * /run/pcscd/pcscd.comm): no wake-ups while pcscd stays away.  Timed retries
 * (0.2 s doubling to 10 s) remain for a socket that exists but refuses (a
 * few tries, then the wait for a new socket), for other errors, and where
 * inotify is unavailable.
 *
 * Event order on a service loss: SERVICE_DOWN, then CARD_REMOVED for each
 * card that was known present.  On recovery: SERVICE_UP, then READER_ADDED /
 * READER_REMOVED for reader list differences, then CARD_INSERTED for cards
 * present now that were not known.  Readers are remembered while the
 * service is down (the snapshot keeps them, with no card).
 *
 * The initial state is not reported as events: p11c_pcsc_monitor_new()
 * returns once the first attempt to read it has finished (bounded), and
 * p11c_pcsc_monitor_snapshot() gives it. */
#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  P11C_PCSC_CARD_INSERTED,
  P11C_PCSC_CARD_REMOVED,
  P11C_PCSC_READER_ADDED,
  P11C_PCSC_READER_REMOVED,
  P11C_PCSC_SERVICE_UP,
  P11C_PCSC_SERVICE_DOWN,
} P11cPcscEventKind;

typedef struct {
  P11cPcscEventKind kind;
  char   *reader;   /* NULL for SERVICE_UP / SERVICE_DOWN */
  GBytes *atr;      /* NULL unless CARD_INSERTED */
} P11cPcscEvent;

typedef void (*P11cPcscCallback) (const P11cPcscEvent *event, gpointer user_data);

typedef struct _P11cPcscMonitor P11cPcscMonitor;

/* Starts the monitor thread (named "p11c-pcsc").  @cb is invoked in
 * @context (NULL = the global default context) from idle sources, in event
 * order.  Blocks until the initial state has been read or found unavailable
 * (at most about 2 s). */
P11cPcscMonitor *p11c_pcsc_monitor_new (GMainContext *context,
                                        P11cPcscCallback cb,
                                        gpointer user_data);

/* Stops the thread (SCardCancel from the calling thread, also interrupts the
 * backoff wait) and joins it; no callback runs after it returns, events still
 * queued are dropped.  May be called from within the callback. */
void p11c_pcsc_monitor_free (P11cPcscMonitor *monitor);

/* Thread-safe snapshot of the known readers: a GPtrArray (free function set)
 * of P11cPcscEvent, kind CARD_INSERTED (with ATR) for a reader holding a card,
 * READER_ADDED (atr NULL) for an empty one.  Empty while the service has never
 * been reached. */
GPtrArray *p11c_pcsc_monitor_snapshot (P11cPcscMonitor *monitor);

/* Whether the monitor currently holds a working PC/SC context. */
gboolean p11c_pcsc_monitor_is_service_up (P11cPcscMonitor *monitor);

const char *p11c_pcsc_event_kind_to_string (P11cPcscEventKind kind);

P11cPcscEvent *p11c_pcsc_event_new (P11cPcscEventKind kind, const char *reader, GBytes *atr);
void p11c_pcsc_event_free (P11cPcscEvent *e);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cPcscEvent, p11c_pcsc_event_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cPcscMonitor, p11c_pcsc_monitor_free)

G_END_DECLS
