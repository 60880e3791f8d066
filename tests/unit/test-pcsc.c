/* PC/SC monitor against the real pcscd + vpcd + vicc.
 *
 * Run through tests/pcsc/run-test-pcsc.py, which starts pcscd in private
 * namespaces (tests/pcscenv.py) and hands us a command channel in
 * P11C_TEST_PCSC_FD: we write "insert N", "remove N", "apdu N",
 * "restart-pcscd", "stop-pcscd", "start-pcscd" lines and read back "ok" or "error ...".
 * Every wait is a deadline on the main loop; the measured figures are
 * printed with g_test_message (TAP comments) and on stderr. */
#define G_LOG_DOMAIN "test-pcsc"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "p11c-pcsc.h"

#define READER0 "Test VPCD 00 00"
#define READER1 "Test VPCD 00 01"

static int cmd_fd = -1;

/* --- command channel ----------------------------------------------------- */

static void
command (const char *fmt, ...) G_GNUC_PRINTF (1, 2);

static void
command (const char *fmt, ...)
{
  va_list ap;
  g_autofree char *cmd = NULL;
  g_autofree char *line = NULL;
  GString *reply = g_string_new (NULL);
  gint64 deadline = g_get_monotonic_time () + 60 * G_TIME_SPAN_SECOND;

  va_start (ap, fmt);
  cmd = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  line = g_strconcat (cmd, "\n", NULL);
  g_assert_cmpint (write (cmd_fd, line, strlen (line)), ==, (gssize) strlen (line));

  for (;;)
    {
      struct pollfd pfd = { .fd = cmd_fd, .events = POLLIN };
      gint64 left = deadline - g_get_monotonic_time ();
      char c;
      ssize_t n;

      if (left <= 0)
        g_error ("command '%s': no reply within 60 s", cmd);
      if (poll (&pfd, 1, (int) (left / 1000) + 1) < 0 && errno != EINTR)
        g_error ("poll: %s", g_strerror (errno));
      if (!(pfd.revents & (POLLIN | POLLHUP)))
        continue;
      n = read (cmd_fd, &c, 1);
      if (n <= 0)
        g_error ("command '%s': channel closed", cmd);
      if (c == '\n')
        break;
      g_string_append_c (reply, c);
    }
  if (!g_str_equal (reply->str, "ok"))
    g_error ("command '%s' failed: %s", cmd, reply->str);
  g_string_free (reply, TRUE);
}

/* --- event recording ----------------------------------------------------- */

typedef struct {
  P11cPcscEvent *event;
  gint64         when;   /* monotonic, at delivery in the main context */
} Rec;

typedef struct {
  GMainContext    *ctx;
  P11cPcscMonitor *monitor;
  GQueue           recs;     /* of Rec*, not yet consumed */
  GPtrArray       *all;      /* every event kind seen, in order (GINT_TO_POINTER) */
  GThread         *main_thread;
} Fixture;

static void
rec_free (gpointer data)
{
  Rec *r = data;
  p11c_pcsc_event_free (r->event);
  g_free (r);
}

static void
on_event (const P11cPcscEvent *e, gpointer user_data)
{
  Fixture *f = user_data;
  Rec *r = g_new0 (Rec, 1);
  g_autofree char *atr = NULL;

  g_assert_true (g_thread_self () == f->main_thread);
  r->event = p11c_pcsc_event_new (e->kind, e->reader, e->atr);
  r->when = g_get_monotonic_time ();
  if (e->atr)
    {
      gsize len;
      const guint8 *d = g_bytes_get_data (e->atr, &len);
      GString *s = g_string_new (NULL);
      for (gsize i = 0; i < len; i++)
        g_string_append_printf (s, "%02X", d[i]);
      atr = g_string_free (s, FALSE);
    }
  g_test_message ("event %s %s %s", p11c_pcsc_event_kind_to_string (e->kind),
                  e->reader ? e->reader : "", atr ? atr : "");
  g_queue_push_tail (&f->recs, r);
  g_ptr_array_add (f->all, GINT_TO_POINTER (e->kind));
}

static gboolean
deadline_cb (gpointer data)
{
  gboolean *expired = data;
  *expired = TRUE;
  return G_SOURCE_REMOVE;
}

/* Runs the main loop until an event is queued or @timeout_ms passes. */
static Rec *
next_event (Fixture *f, guint timeout_ms)
{
  gboolean expired = FALSE;
  GSource *t = g_timeout_source_new (timeout_ms);

  g_source_set_callback (t, deadline_cb, &expired, NULL);
  g_source_attach (t, f->ctx);
  while (g_queue_is_empty (&f->recs) && !expired)
    g_main_context_iteration (f->ctx, TRUE);
  g_source_destroy (t);
  g_source_unref (t);
  return g_queue_pop_head (&f->recs);
}

/* Expects the next event to be @kind (on @reader unless NULL), within
 * @timeout_ms.  Returns the latency in ms from @since (monotonic µs). */
static double
expect_event (Fixture *f, P11cPcscEventKind kind, const char *reader,
              guint timeout_ms, gint64 since, GBytes **atr_out)
{
  Rec *r = next_event (f, timeout_ms);
  double ms;

  if (r == NULL)
    g_error ("no %s event within %u ms", p11c_pcsc_event_kind_to_string (kind), timeout_ms);
  if (r->event->kind != kind)
    g_error ("expected %s, got %s %s", p11c_pcsc_event_kind_to_string (kind),
             p11c_pcsc_event_kind_to_string (r->event->kind),
             r->event->reader ? r->event->reader : "");
  if (reader)
    g_assert_cmpstr (r->event->reader, ==, reader);
  if (kind == P11C_PCSC_CARD_INSERTED)
    {
      g_assert_nonnull (r->event->atr);
      g_assert_cmpuint (g_bytes_get_size (r->event->atr), >, 0);
    }
  else
    g_assert_null (r->event->atr);
  if (atr_out && r->event->atr)
    *atr_out = g_bytes_ref (r->event->atr);
  ms = (r->when - since) / 1000.0;
  rec_free (r);
  return ms;
}

/* Nothing more arrives within @window_ms (an observation window, not a
 * synchronisation). */
static void
expect_quiet (Fixture *f, guint window_ms)
{
  Rec *r = next_event (f, window_ms);
  if (r)
    g_error ("unexpected event %s %s", p11c_pcsc_event_kind_to_string (r->event->kind),
             r->event->reader ? r->event->reader : "");
}

static void
fixture_start (Fixture *f)
{
  f->ctx = g_main_context_new ();
  g_main_context_push_thread_default (f->ctx);
  f->main_thread = g_thread_self ();
  g_queue_init (&f->recs);
  f->all = g_ptr_array_new ();
  f->monitor = p11c_pcsc_monitor_new (f->ctx, on_event, f);
  g_assert_nonnull (f->monitor);
}

static void
fixture_stop (Fixture *f)
{
  g_clear_pointer (&f->monitor, p11c_pcsc_monitor_free);
  g_queue_clear_full (&f->recs, rec_free);
  g_ptr_array_unref (f->all);
  g_main_context_pop_thread_default (f->ctx);
  g_main_context_unref (f->ctx);
}

static void
figure (const char *fmt, ...) G_GNUC_PRINTF (1, 2);

static void
figure (const char *fmt, ...)
{
  va_list ap;
  g_autofree char *s = NULL;

  va_start (ap, fmt);
  s = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_test_message ("FIGURE %s", s);
  fprintf (stderr, "FIGURE %s\n", s);
}

/* --- /proc helpers --------------------------------------------------------- */

static pid_t
monitor_tid (void)
{
  g_autoptr(GDir) dir = g_dir_open ("/proc/self/task", 0, NULL);
  const char *name;
  pid_t found = 0;

  g_assert_nonnull (dir);
  while ((name = g_dir_read_name (dir)))
    {
      g_autofree char *path = g_strdup_printf ("/proc/self/task/%s/comm", name);
      g_autofree char *comm = NULL;

      if (g_file_get_contents (path, &comm, NULL, NULL) &&
          g_str_equal (g_strstrip (comm), "p11c-pcsc"))
        {
          g_assert_cmpint (found, ==, 0);   /* exactly one monitor thread */
          found = (pid_t) atoi (name);
        }
    }
  g_assert_cmpint (found, >, 0);
  return found;
}

typedef struct {
  char    state;
  guint64 ticks;     /* utime + stime */
  guint64 vol_cs;    /* voluntary context switches = wake-ups after sleeping */
  guint64 invol_cs;
} TaskStat;

static TaskStat
task_stat (pid_t tid)
{
  g_autofree char *path = g_strdup_printf ("/proc/self/task/%d/stat", (int) tid);
  g_autofree char *spath = g_strdup_printf ("/proc/self/task/%d/status", (int) tid);
  g_autofree char *buf = NULL;
  g_autofree char *sbuf = NULL;
  g_auto(GStrv) fields = NULL;
  g_auto(GStrv) lines = NULL;
  TaskStat st = { 0 };
  const char *p;

  g_assert_true (g_file_get_contents (path, &buf, NULL, NULL));
  p = strrchr (buf, ')');   /* comm may contain spaces */
  g_assert_nonnull (p);
  fields = g_strsplit (p + 2, " ", -1);
  /* fields[0] = state (field 3); utime = field 14, stime = field 15 */
  g_assert_cmpuint (g_strv_length (fields), >, 13);
  st.state = fields[0][0];
  st.ticks = g_ascii_strtoull (fields[11], NULL, 10) + g_ascii_strtoull (fields[12], NULL, 10);

  g_assert_true (g_file_get_contents (spath, &sbuf, NULL, NULL));
  lines = g_strsplit (sbuf, "\n", -1);
  for (guint i = 0; lines[i]; i++)
    {
      if (g_str_has_prefix (lines[i], "voluntary_ctxt_switches:"))
        st.vol_cs = g_ascii_strtoull (lines[i] + strlen ("voluntary_ctxt_switches:"), NULL, 10);
      else if (g_str_has_prefix (lines[i], "nonvoluntary_ctxt_switches:"))
        st.invol_cs = g_ascii_strtoull (lines[i] + strlen ("nonvoluntary_ctxt_switches:"), NULL, 10);
    }
  return st;
}

/* Waits (deadline) until the monitor thread has settled in its blocking
 * wait: asleep, and no wake-up over 100 ms.  Right after monitor_new() the
 * thread may still be asleep in the request that precedes the wait. */
static void
wait_thread_settled (pid_t tid)
{
  gint64 deadline = g_get_monotonic_time () + 3 * G_TIME_SPAN_SECOND;
  TaskStat prev = task_stat (tid);

  for (;;)
    {
      TaskStat now;

      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_usleep (100 * 1000);   /* polling a condition under a deadline */
      now = task_stat (tid);
      if (now.state == 'S' && prev.state == 'S' && now.vol_cs == prev.vol_cs)
        return;
      prev = now;
    }
}

static void
print_syscall (pid_t tid)
{
  g_autofree char *path = g_strdup_printf ("/proc/self/task/%d/syscall", (int) tid);
  g_autofree char *buf = NULL;

  if (g_file_get_contents (path, &buf, NULL, NULL))
    g_test_message ("monitor thread blocked in: %s", g_strstrip (buf));
}

/* --- tests --------------------------------------------------------------- */

static void
assert_snapshot (P11cPcscMonitor *m, P11cPcscEventKind kind0, P11cPcscEventKind kind1)
{
  g_autoptr(GPtrArray) snap = p11c_pcsc_monitor_snapshot (m);
  gboolean seen0 = FALSE, seen1 = FALSE;

  g_assert_cmpuint (snap->len, ==, 2);
  for (guint i = 0; i < snap->len; i++)
    {
      P11cPcscEvent *e = g_ptr_array_index (snap, i);
      P11cPcscEventKind want;

      if (g_str_equal (e->reader, READER0))
        seen0 = TRUE, want = kind0;
      else if (g_str_equal (e->reader, READER1))
        seen1 = TRUE, want = kind1;
      else
        g_error ("unexpected reader %s", e->reader);
      g_assert_cmpint (e->kind, ==, want);
      if (want == P11C_PCSC_CARD_INSERTED)
        g_assert_true (e->atr && g_bytes_get_size (e->atr) > 0);
      else
        g_assert_null (e->atr);
    }
  g_assert_true (seen0 && seen1);
}

static void
test_snapshot (void)
{
  Fixture f = { 0 };
  gint64 t0 = g_get_monotonic_time ();

  fixture_start (&f);
  figure ("monitor_new (initial state read) = %.1f ms", (g_get_monotonic_time () - t0) / 1000.0);
  g_assert_true (p11c_pcsc_monitor_is_service_up (f.monitor));
  assert_snapshot (f.monitor, P11C_PCSC_READER_ADDED, P11C_PCSC_READER_ADDED);
  expect_quiet (&f, 500);   /* the initial state is not reported as events */
  fixture_stop (&f);

  /* A card present before the monitor starts is in the snapshot, not an event. */
  command ("insert 1");
  {
    /* pcscd sees the card on its next 400 ms poll: wait for it with a
     * monitor of our own, then start the one under test. */
    Fixture w = { 0 };
    fixture_start (&w);
    if (p11c_pcsc_monitor_is_service_up (w.monitor))
      {
        g_autoptr(GPtrArray) snap = p11c_pcsc_monitor_snapshot (w.monitor);
        gboolean present = FALSE;
        for (guint i = 0; i < snap->len; i++)
          {
            P11cPcscEvent *e = g_ptr_array_index (snap, i);
            present |= g_str_equal (e->reader, READER1) && e->kind == P11C_PCSC_CARD_INSERTED;
          }
        if (!present)
          expect_event (&w, P11C_PCSC_CARD_INSERTED, READER1, 2000, g_get_monotonic_time (), NULL);
      }
    fixture_stop (&w);
  }
  fixture_start (&f);
  assert_snapshot (f.monitor, P11C_PCSC_READER_ADDED, P11C_PCSC_CARD_INSERTED);
  expect_quiet (&f, 500);
  command ("remove 1");
  expect_event (&f, P11C_PCSC_CARD_REMOVED, READER1, 2000, g_get_monotonic_time (), NULL);
  fixture_stop (&f);
}

static void
test_insert_remove (void)
{
  Fixture f = { 0 };
  g_autoptr(GBytes) atr = NULL;
  double ins, rem;
  gint64 t;

  fixture_start (&f);
  t = g_get_monotonic_time ();
  command ("insert 0");
  ins = expect_event (&f, P11C_PCSC_CARD_INSERTED, READER0, 1000, t, &atr);
  g_assert_cmpuint (g_bytes_get_size (atr), >=, 2);
  t = g_get_monotonic_time ();
  command ("remove 0");
  rem = expect_event (&f, P11C_PCSC_CARD_REMOVED, READER0, 1000, t, NULL);
  figure ("insert latency = %.0f ms, remove latency = %.0f ms (ATR %zu bytes)",
          ins, rem, g_bytes_get_size (atr));
  expect_quiet (&f, 800);
  fixture_stop (&f);
}

static void
test_cycles (void)
{
  Fixture f = { 0 };
  double ins_max = 0, rem_max = 0, ins_sum = 0, rem_sum = 0;
  const int cycles = 10;
  guint n_ins = 0, n_rem = 0;

  fixture_start (&f);
  for (int i = 0; i < cycles; i++)
    {
      gint64 t = g_get_monotonic_time ();
      double ms;

      command ("insert 0");
      ms = expect_event (&f, P11C_PCSC_CARD_INSERTED, READER0, 1000, t, NULL);
      ins_sum += ms, ins_max = MAX (ins_max, ms);
      t = g_get_monotonic_time ();
      command ("remove 0");
      ms = expect_event (&f, P11C_PCSC_CARD_REMOVED, READER0, 1000, t, NULL);
      rem_sum += ms, rem_max = MAX (rem_max, ms);
    }
  expect_quiet (&f, 1000);
  for (guint i = 0; i < f.all->len; i++)
    {
      P11cPcscEventKind k = GPOINTER_TO_INT (g_ptr_array_index (f.all, i));
      g_assert_cmpint (k, ==, (i % 2) ? P11C_PCSC_CARD_REMOVED : P11C_PCSC_CARD_INSERTED);
      if (k == P11C_PCSC_CARD_INSERTED)
        n_ins++;
      else
        n_rem++;
    }
  g_assert_cmpuint (n_ins, ==, cycles);
  g_assert_cmpuint (n_rem, ==, cycles);
  figure ("%d cycles: %u inserted / %u removed; insert latency mean %.0f max %.0f ms, "
          "remove latency mean %.0f max %.0f ms", cycles, n_ins, n_rem,
          ins_sum / cycles, ins_max, rem_sum / cycles, rem_max);
  fixture_stop (&f);
}

/* Another client using the card (INUSE, event counter, power changes) is
 * noise: no event. */
static void
test_other_client_noise (void)
{
  Fixture f = { 0 };
  gint64 t;

  fixture_start (&f);
  t = g_get_monotonic_time ();
  command ("insert 0");
  expect_event (&f, P11C_PCSC_CARD_INSERTED, READER0, 1000, t, NULL);
  for (int i = 0; i < 3; i++)
    command ("apdu 0");
  expect_quiet (&f, 1000);
  t = g_get_monotonic_time ();
  command ("remove 0");
  expect_event (&f, P11C_PCSC_CARD_REMOVED, READER0, 1000, t, NULL);
  expect_quiet (&f, 800);
  fixture_stop (&f);
}

static void
test_restart (void)
{
  Fixture f = { 0 };
  gint64 t;
  double down, up, ins;

  fixture_start (&f);
  t = g_get_monotonic_time ();
  command ("insert 0");
  expect_event (&f, P11C_PCSC_CARD_INSERTED, READER0, 1000, t, NULL);

  t = g_get_monotonic_time ();
  command ("restart-pcscd");   /* returns when the new pcscd lists its readers */
  down = expect_event (&f, P11C_PCSC_SERVICE_DOWN, NULL, 5000, t, NULL);
  expect_event (&f, P11C_PCSC_CARD_REMOVED, READER0, 1000, t, NULL);
  up = expect_event (&f, P11C_PCSC_SERVICE_UP, NULL, 15000, t, NULL);
  g_assert_true (p11c_pcsc_monitor_is_service_up (f.monitor));
  /* same readers again: no reader events, no card */
  assert_snapshot (f.monitor, P11C_PCSC_READER_ADDED, P11C_PCSC_READER_ADDED);

  t = g_get_monotonic_time ();
  command ("insert 0");
  ins = expect_event (&f, P11C_PCSC_CARD_INSERTED, READER0, 1000, t, NULL);
  t = g_get_monotonic_time ();
  command ("remove 0");
  expect_event (&f, P11C_PCSC_CARD_REMOVED, READER0, 1000, t, NULL);
  expect_quiet (&f, 800);
  figure ("pcscd restart: service-down after %.0f ms, service-up after %.0f ms; "
          "next insert seen after %.0f ms", down, up, ins);
  fixture_stop (&f);
}

static void
test_absent_at_start (void)
{
  Fixture f = { 0 };
  gint64 t;
  double up, free_ms;

  command ("stop-pcscd");
  t = g_get_monotonic_time ();
  fixture_start (&f);
  figure ("monitor_new without pcscd = %.1f ms", (g_get_monotonic_time () - t) / 1000.0);
  g_assert_false (p11c_pcsc_monitor_is_service_up (f.monitor));
  {
    g_autoptr(GPtrArray) snap = p11c_pcsc_monitor_snapshot (f.monitor);
    g_assert_cmpuint (snap->len, ==, 0);
  }
  expect_quiet (&f, 300);   /* no SERVICE_DOWN for the initial state */

  t = g_get_monotonic_time ();
  command ("start-pcscd");
  up = expect_event (&f, P11C_PCSC_SERVICE_UP, NULL, 15000, t, NULL);
  expect_event (&f, P11C_PCSC_READER_ADDED, READER0, 1000, t, NULL);
  expect_event (&f, P11C_PCSC_READER_ADDED, READER1, 1000, t, NULL);
  figure ("pcscd started later: service-up after %.0f ms", up);

  /* free while waiting in the backoff */
  command ("stop-pcscd");
  expect_event (&f, P11C_PCSC_SERVICE_DOWN, NULL, 5000, t, NULL);
  t = g_get_monotonic_time ();
  g_clear_pointer (&f.monitor, p11c_pcsc_monitor_free);
  free_ms = (g_get_monotonic_time () - t) / 1000.0;
  figure ("monitor_free during reconnect backoff = %.2f ms", free_ms);
  g_assert_cmpfloat (free_ms, <, 1000);
  fixture_stop (&f);
  command ("start-pcscd");
}

static double
measure_free (gboolean settle)
{
  Fixture f = { 0 };
  gint64 t;
  double ms;

  fixture_start (&f);
  if (settle)
    wait_thread_settled (monitor_tid ());
  t = g_get_monotonic_time ();
  g_clear_pointer (&f.monitor, p11c_pcsc_monitor_free);
  ms = (g_get_monotonic_time () - t) / 1000.0;
  fixture_stop (&f);
  return ms;
}

static void
test_free_blocked (void)
{
  double worst_blocked = 0, worst_early = 0;

  /* settled in SCardGetStatusChange(INFINITE): one SCardCancel */
  for (int i = 0; i < 3; i++)
    worst_blocked = MAX (worst_blocked, measure_free (TRUE));
  /* right after new(): the thread may not be cancellable yet (cancel retry) */
  for (int i = 0; i < 5; i++)
    worst_early = MAX (worst_early, measure_free (FALSE));
  figure ("monitor_free while blocked in SCardGetStatusChange: worst of 3 = %.2f ms; "
          "right after monitor_new: worst of 5 = %.2f ms", worst_blocked, worst_early);
  g_assert_cmpfloat (worst_blocked, <, 1000);
  g_assert_cmpfloat (worst_early, <, 1000);
}

static void
test_idle_cpu (void)
{
  Fixture f = { 0 };
  TaskStat a, b;
  pid_t tid;
  long hz = sysconf (_SC_CLK_TCK);

  fixture_start (&f);
  tid = monitor_tid ();
  wait_thread_settled (tid);
  print_syscall (tid);
  a = task_stat (tid);
  expect_quiet (&f, 5000);   /* the 5 s measurement window */
  b = task_stat (tid);
  figure ("idle 5 s with pcscd running: monitor thread %" G_GUINT64_FORMAT
          " CPU ticks (%ld/s), %" G_GUINT64_FORMAT " voluntary + %" G_GUINT64_FORMAT
          " involuntary context switches (wake-ups)", b.ticks - a.ticks, hz,
          b.vol_cs - a.vol_cs, b.invol_cs - a.invol_cs);
  g_assert_cmpuint (b.ticks - a.ticks, ==, 0);
  g_assert_cmpuint (b.vol_cs - a.vol_cs, ==, 0);
  fixture_stop (&f);
}

int
main (int argc, char **argv)
{
  const char *fd = g_getenv ("P11C_TEST_PCSC_FD");

  g_test_init (&argc, &argv, NULL);
  if (fd == NULL)
    {
      g_printerr ("run me through tests/pcsc/run-test-pcsc.py (needs pcscd + vpcd + vicc)\n");
      return 77;
    }
  cmd_fd = atoi (fd);

  g_test_add_func ("/pcsc/snapshot", test_snapshot);
  g_test_add_func ("/pcsc/insert-remove", test_insert_remove);
  g_test_add_func ("/pcsc/cycles", test_cycles);
  g_test_add_func ("/pcsc/other-client-noise", test_other_client_noise);
  g_test_add_func ("/pcsc/restart", test_restart);
  g_test_add_func ("/pcsc/absent-at-start", test_absent_at_start);
  g_test_add_func ("/pcsc/free-blocked", test_free_blocked);
  g_test_add_func ("/pcsc/idle-cpu", test_idle_cpu);
  return g_test_run ();
}
