/* p11c-bench: the C (sd-bus) client of bench/, so that the client is never
 * what limits a figure.
 *
 *   p11c-bench rtt   ADDRESS TOKEN N          N × (Peer.Ping, ListCerts) interleaved
 *   p11c-bench ping  ADDRESS N                N × Peer.Ping alone
 *   p11c-bench calls ADDRESS TOKEN N          N × ListCerts back to back
 *   p11c-bench load  ADDRESS TOKEN CLIENTS SECONDS EXPECT OUT
 *   p11c-bench probe ADDRESS SECONDS INTERVAL_MS OUT
 *   p11c-bench serve ADDRESS TOKEN           the peer server (below)
 *
 * ADDRESS is a bus address; TOKEN the "token" option of ListCerts ("" for
 * none).  rtt prints "ping US" and "list US ENTRIES" lines (ENTRIES: the
 * first reply's count, -1 for a later reply of another type); calls prints
 * "calls N seconds S".  load opens CLIENTS connections in one event loop,
 * prints READY, waits for a line on stdin, then keeps one ListCerts in
 * flight per connection for SECONDS and writes OUT: a summary line
 * "calls N errors E wall S cpu S" (cpu: this process, user + system),
 * "error NAME COUNT" lines, then one latency in microseconds per line.
 * EXPECT is the entry count the replies must have (every 64th reply of a
 * connection is counted, else error "wrong-count"; every reply must have
 * the signature aa{sv}).  probe calls Peer.Ping every INTERVAL_MS for SECONDS (a
 * connection of its own) and writes the same format to OUT.
 *
 * serve is the peer the daemon is measured against: what a C service on
 * sd-bus costs at the least for the same reply.  It calls the daemon's
 * ListCerts once, keeps the reply decoded into C values, prints FETCHED,
 * waits for a line on stdin (meanwhile the caller stops the daemon), takes
 * the daemon's bus name, prints READY and answers every ListCerts with
 * that reply, built by sd_bus_message_append_* calls from the C values
 * (nothing is looked up or computed per call); Peer.Ping is answered by
 * sd-bus itself.  It runs until killed. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#define DEST "org.p11certd"
#define OPATH "/org/p11certd"
#define MANAGER "org.p11certd1.Manager"
#define CALL_TIMEOUT_US (30ULL * 1000000ULL)

static uint64_t
now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static void
die (const char *what, int r)
{
  fprintf (stderr, "p11c-bench: %s: %s\n", what, strerror (r < 0 ? -r : r));
  exit (1);
}

static sd_bus *
connect_bus (const char *address)
{
  sd_bus *bus = NULL;
  int r;

  if ((r = sd_bus_new (&bus)) < 0)
    die ("sd_bus_new", r);
  if ((r = sd_bus_set_address (bus, address)) < 0)
    die ("sd_bus_set_address", r);
  if ((r = sd_bus_set_bus_client (bus, 1)) < 0)
    die ("sd_bus_set_bus_client", r);
  if ((r = sd_bus_start (bus)) < 0)
    die ("sd_bus_start", r);
  return bus;
}

static int
new_list_call (sd_bus *bus, const char *token, sd_bus_message **m)
{
  int r = sd_bus_message_new_method_call (bus, m, DEST, OPATH, MANAGER, "ListCerts");
  if (r < 0)
    return r;
  if (*token)
    r = sd_bus_message_append (*m, "a{sv}", 1, "token", "s", token);
  else
    r = sd_bus_message_append (*m, "a{sv}", 0);
  return r;
}

/* entries in a ListCerts reply, or -errno */
static int
count_entries (sd_bus_message *reply)
{
  int n = 0, r;

  if ((r = sd_bus_message_enter_container (reply, 'a', "a{sv}")) < 0)
    return r;
  while ((r = sd_bus_message_at_end (reply, 0)) == 0)
    {
      if ((r = sd_bus_message_skip (reply, "a{sv}")) < 0)
        return r;
      n++;
    }
  return r < 0 ? r : n;
}

static double
cpu_seconds (void)
{
  struct rusage ru;
  getrusage (RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* ---- results ------------------------------------------------------------ */

typedef struct {
  uint32_t *lat_us;
  size_t    n, cap;
  char     *err_name[16];
  unsigned  err_count[16];
  unsigned  errors;
} Results;

static void
add_latency (Results *res, uint64_t ns)
{
  if (res->n == res->cap)
    {
      res->cap = res->cap ? res->cap * 2 : 4096;
      res->lat_us = realloc (res->lat_us, res->cap * sizeof *res->lat_us);
      if (res->lat_us == NULL)
        die ("realloc", ENOMEM);
    }
  res->lat_us[res->n++] = (uint32_t) (ns / 1000);
}

static void
add_error (Results *res, const char *name)
{
  size_t i;
  res->errors++;
  for (i = 0; i < 16 && res->err_name[i]; i++)
    if (strcmp (res->err_name[i], name) == 0)
      break;
  if (i == 16)
    i = 15;
  if (res->err_name[i] == NULL)
    res->err_name[i] = strdup (name);
  res->err_count[i]++;
}

static void
write_results (const char *path, Results *res, double wall, double cpu)
{
  FILE *f = fopen (path, "w");
  if (f == NULL)
    die (path, errno);
  fprintf (f, "calls %zu errors %u wall %.6f cpu %.6f\n", res->n, res->errors, wall, cpu);
  for (size_t i = 0; i < 16 && res->err_name[i]; i++)
    fprintf (f, "error %s %u\n", res->err_name[i], res->err_count[i]);
  for (size_t i = 0; i < res->n; i++)
    fprintf (f, "%u\n", res->lat_us[i]);
  if (fclose (f) != 0)
    die (path, errno);
}

/* ---- rtt / calls -------------------------------------------------------- */

static int
cmd_ping (const char *address, long n)
{
  sd_bus *bus = connect_bus (address);

  for (long i = 0; i < n; i++)
    {
      sd_bus_error err = SD_BUS_ERROR_NULL;
      sd_bus_message *reply = NULL;
      uint64_t t0 = now_ns ();
      int r = sd_bus_call_method (bus, DEST, OPATH, "org.freedesktop.DBus.Peer", "Ping", &err, &reply, "");
      if (r < 0)
        {
          fprintf (stderr, "p11c-bench: Ping: %s\n", err.message ? err.message : strerror (-r));
          return 1;
        }
      printf ("ping %.1f\n", (now_ns () - t0) / 1000.0);
      sd_bus_message_unref (reply);
      sd_bus_error_free (&err);
    }
  sd_bus_flush_close_unref (bus);
  return 0;
}

static int
cmd_rtt (const char *address, const char *token, long n, int with_ping)
{
  sd_bus *bus = connect_bus (address);
  uint64_t start = now_ns ();
  int entries = 0;

  for (long i = 0; i < n; i++)
    {
      sd_bus_error err = SD_BUS_ERROR_NULL;
      sd_bus_message *m = NULL, *reply = NULL;
      uint64_t t0;
      int r;

      if (with_ping)
        {
          t0 = now_ns ();
          r = sd_bus_call_method (bus, DEST, OPATH, "org.freedesktop.DBus.Peer", "Ping", &err, &reply, "");
          if (r < 0)
            {
              fprintf (stderr, "p11c-bench: Ping: %s\n", err.message ? err.message : strerror (-r));
              return 1;
            }
          printf ("ping %.1f\n", (now_ns () - t0) / 1000.0);
          reply = sd_bus_message_unref (reply);
        }
      if ((r = new_list_call (bus, token, &m)) < 0)
        die ("message", r);
      t0 = now_ns ();
      r = sd_bus_call (bus, m, CALL_TIMEOUT_US, &err, &reply);
      if (r < 0)
        {
          fprintf (stderr, "p11c-bench: ListCerts: %s\n", err.message ? err.message : strerror (-r));
          return 1;
        }
      if (with_ping)
        {
          uint64_t dt = now_ns () - t0;
          /* the first reply is counted, the others only checked: the
           * client's own parsing stays out of the figure */
          if (i == 0)
            entries = count_entries (reply);
          else if (!sd_bus_message_has_signature (reply, "aa{sv}"))
            entries = -1;
          printf ("list %.1f %d\n", dt / 1000.0, entries);
        }
      sd_bus_message_unref (reply);
      sd_bus_message_unref (m);
      sd_bus_error_free (&err);
    }
  if (!with_ping)
    printf ("calls %ld seconds %.6f\n", n, (now_ns () - start) / 1e9);
  sd_bus_flush_close_unref (bus);
  return 0;
}

/* ---- load --------------------------------------------------------------- */

typedef struct Load Load;
typedef struct {
  Load     *load;
  sd_bus   *bus;
  uint64_t  sent;
  unsigned  replies;
} Client;

struct Load {
  const char *token;
  int         expect;
  uint64_t    deadline;
  unsigned    in_flight;
  Results     res;
  sd_event   *event;
};

static int send_next (Client *cl);

static int
on_reply (sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
  Client *cl = userdata;
  Load *l = cl->load;
  uint64_t t = now_ns ();
  const sd_bus_error *e = sd_bus_message_get_error (reply);

  l->in_flight--;
  if (e != NULL)
    add_error (&l->res, e->name ? e->name : "error");
  else if (!sd_bus_message_has_signature (reply, "aa{sv}"))
    add_error (&l->res, "wrong-signature");
  else if (cl->replies++ % 64 == 0 && count_entries (reply) != l->expect)
    add_error (&l->res, "wrong-count");   /* every 64th reply is counted: the client stays cheap */
  else
    add_latency (&l->res, t - cl->sent);
  if (t < l->deadline)
    send_next (cl);
  else if (l->in_flight == 0)
    sd_event_exit (l->event, 0);
  return 0;
}

static int
send_next (Client *cl)
{
  sd_bus_message *m = NULL;
  int r = new_list_call (cl->bus, cl->load->token, &m);

  if (r >= 0)
    {
      cl->sent = now_ns ();
      r = sd_bus_call_async (cl->bus, NULL, m, on_reply, cl, CALL_TIMEOUT_US);
    }
  sd_bus_message_unref (m);
  if (r < 0)
    add_error (&cl->load->res, "send-failed");
  else
    cl->load->in_flight++;
  return r;
}

static int
cmd_load (const char *address, const char *token, int clients, double seconds, int expect, const char *out)
{
  Load l = { .token = token, .expect = expect };
  Client *cl = calloc (clients, sizeof *cl);
  char line[64];
  uint64_t t0;
  double cpu0;
  int r;

  if (cl == NULL)
    die ("calloc", ENOMEM);
  if ((r = sd_event_new (&l.event)) < 0)
    die ("sd_event_new", r);
  for (int i = 0; i < clients; i++)
    {
      cl[i].load = &l;
      cl[i].bus = connect_bus (address);
      if ((r = sd_bus_attach_event (cl[i].bus, l.event, SD_EVENT_PRIORITY_NORMAL)) < 0)
        die ("sd_bus_attach_event", r);
    }
  printf ("READY\n");
  fflush (stdout);
  if (fgets (line, sizeof line, stdin) == NULL)
    return 1;
  t0 = now_ns ();
  cpu0 = cpu_seconds ();
  l.deadline = t0 + (uint64_t) (seconds * 1e9);
  for (int i = 0; i < clients; i++)
    send_next (&cl[i]);
  if (l.in_flight > 0 && (r = sd_event_loop (l.event)) < 0)
    die ("sd_event_loop", r);
  write_results (out, &l.res, (now_ns () - t0) / 1e9, cpu_seconds () - cpu0);
  for (int i = 0; i < clients; i++)
    sd_bus_flush_close_unref (cl[i].bus);
  sd_event_unref (l.event);
  free (cl);
  return 0;
}

/* ---- probe -------------------------------------------------------------- */

static int
cmd_probe (const char *address, double seconds, long interval_ms, const char *out)
{
  sd_bus *bus = connect_bus (address);
  Results res = { 0 };
  uint64_t start = now_ns (), end = start + (uint64_t) (seconds * 1e9);
  double cpu0 = cpu_seconds ();

  while (now_ns () < end)
    {
      sd_bus_error err = SD_BUS_ERROR_NULL;
      sd_bus_message *reply = NULL;
      struct timespec pause = { interval_ms / 1000, (interval_ms % 1000) * 1000000L };
      uint64_t t0 = now_ns ();
      int r = sd_bus_call_method (bus, DEST, OPATH, "org.freedesktop.DBus.Peer", "Ping", &err, &reply, "");
      if (r < 0)
        add_error (&res, err.name ? err.name : "error");
      else
        add_latency (&res, now_ns () - t0);
      sd_bus_message_unref (reply);
      sd_bus_error_free (&err);
      nanosleep (&pause, NULL);
    }
  write_results (out, &res, (now_ns () - start) / 1e9, cpu_seconds () - cpu0);
  sd_bus_flush_close_unref (bus);
  return 0;
}

/* ---- serve: the sd-bus peer ------------------------------------------------ */

typedef struct {
  const char *key;
  char        type;      /* s, o, x, b, or y for ay */
  const char *str;
  int64_t     x;
  int         b;
  const void *bytes;
  size_t      len;
} PeerField;

typedef struct {
  sd_bus_message *fetched;   /* owns the strings and bytes the fields point to */
  PeerField      *fields;
  size_t          n_fields;
  size_t         *cert_fields; /* fields per certificate */
  size_t          n_certs;
} Peer;

static void *
grow (void *p, size_t n, size_t size)
{
  p = realloc (p, n * size);
  if (p == NULL)
    die ("realloc", ENOMEM);
  return p;
}

/* Decode a ListCerts reply (aa{sv} with s, o, x, b and ay values). */
static int
peer_decode (Peer *p)
{
  sd_bus_message *m = p->fetched;
  int r;

  if ((r = sd_bus_message_enter_container (m, 'a', "a{sv}")) < 0)
    return r;
  while ((r = sd_bus_message_enter_container (m, 'a', "{sv}")) > 0)
    {
      p->cert_fields = grow (p->cert_fields, p->n_certs + 1, sizeof *p->cert_fields);
      p->cert_fields[p->n_certs] = 0;
      while ((r = sd_bus_message_enter_container (m, 'e', "sv")) > 0)
        {
          PeerField *f;
          const char *contents = NULL;
          char type;

          p->fields = grow (p->fields, p->n_fields + 1, sizeof *p->fields);
          f = memset (&p->fields[p->n_fields++], 0, sizeof (PeerField));
          if ((r = sd_bus_message_read_basic (m, 's', &f->key)) < 0
              || (r = sd_bus_message_peek_type (m, &type, &contents)) < 0
              || (r = sd_bus_message_enter_container (m, 'v', contents)) < 0)
            return r;
          f->type = strcmp (contents, "ay") == 0 ? 'y' : contents[0];
          switch (f->type)
            {
            case 's': case 'o': r = sd_bus_message_read_basic (m, f->type, &f->str); break;
            case 'x':           r = sd_bus_message_read_basic (m, 'x', &f->x); break;
            case 'b':           r = sd_bus_message_read_basic (m, 'b', &f->b); break;
            case 'y':           r = sd_bus_message_read_array (m, 'y', &f->bytes, &f->len); break;
            default:            return -EBADMSG;
            }
          if (r < 0 || (r = sd_bus_message_exit_container (m)) < 0 || (r = sd_bus_message_exit_container (m)) < 0)
            return r;
          p->cert_fields[p->n_certs]++;
        }
      if (r < 0 || (r = sd_bus_message_exit_container (m)) < 0)
        return r;
      p->n_certs++;
    }
  return r < 0 ? r : sd_bus_message_exit_container (m);
}

static int
peer_append (const Peer *p, sd_bus_message *m)
{
  const PeerField *f = p->fields;
  int r;

  if ((r = sd_bus_message_open_container (m, 'a', "a{sv}")) < 0)
    return r;
  for (size_t c = 0; c < p->n_certs; c++)
    {
      if ((r = sd_bus_message_open_container (m, 'a', "{sv}")) < 0)
        return r;
      for (size_t i = 0; i < p->cert_fields[c]; i++, f++)
        {
          char sig[3] = { f->type, 0, 0 };
          if (f->type == 'y')
            memcpy (sig, "ay", 3);
          if ((r = sd_bus_message_open_container (m, 'e', "sv")) < 0
              || (r = sd_bus_message_append_basic (m, 's', f->key)) < 0
              || (r = sd_bus_message_open_container (m, 'v', sig)) < 0)
            return r;
          switch (f->type)
            {
            case 's': case 'o': r = sd_bus_message_append_basic (m, f->type, f->str); break;
            case 'x':           r = sd_bus_message_append_basic (m, 'x', &f->x); break;
            case 'b':           r = sd_bus_message_append_basic (m, 'b', &f->b); break;
            default:            r = sd_bus_message_append_array (m, 'y', f->bytes, f->len); break;
            }
          if (r < 0 || (r = sd_bus_message_close_container (m)) < 0 || (r = sd_bus_message_close_container (m)) < 0)
            return r;
        }
      if ((r = sd_bus_message_close_container (m)) < 0)
        return r;
    }
  return sd_bus_message_close_container (m);
}

static int
on_peer_list (sd_bus_message *call, void *userdata, sd_bus_error *ret_error)
{
  const Peer *p = userdata;
  sd_bus_message *reply = NULL;
  int r;

  (void) ret_error;
  if ((r = sd_bus_message_new_method_return (call, &reply)) >= 0 && (r = peer_append (p, reply)) >= 0)
    r = sd_bus_send (NULL, reply, NULL);
  sd_bus_message_unref (reply);
  return r < 0 ? r : 1;
}

static const sd_bus_vtable peer_vtable[] = {
  SD_BUS_VTABLE_START (0),
  /* unprivileged: else sd-bus asks the bus for the caller's uid on every call */
  SD_BUS_METHOD ("ListCerts", "a{sv}", "aa{sv}", on_peer_list, SD_BUS_VTABLE_UNPRIVILEGED),
  SD_BUS_VTABLE_END
};

static int
cmd_serve (const char *address, const char *token)
{
  sd_bus *bus = connect_bus (address);
  sd_bus_error err = SD_BUS_ERROR_NULL;
  sd_bus_message *m = NULL;
  Peer p = { 0 };
  char line[64];
  int r;

  if ((r = new_list_call (bus, token, &m)) < 0)
    die ("message", r);
  if ((r = sd_bus_call (bus, m, CALL_TIMEOUT_US, &err, &p.fetched)) < 0)
    {
      fprintf (stderr, "p11c-bench: ListCerts: %s\n", err.message ? err.message : strerror (-r));
      return 1;
    }
  sd_bus_message_unref (m);
  if ((r = peer_decode (&p)) < 0)
    die ("decoding the ListCerts reply", r);
  if ((r = sd_bus_add_object_vtable (bus, NULL, OPATH, MANAGER, peer_vtable, &p)) < 0)
    die ("sd_bus_add_object_vtable", r);
  printf ("FETCHED %zu\n", p.n_certs);
  fflush (stdout);
  if (fgets (line, sizeof line, stdin) == NULL)
    return 1;
  if ((r = sd_bus_request_name (bus, DEST, 0)) < 0)
    die ("sd_bus_request_name", r);
  printf ("READY\n");
  fflush (stdout);
  for (;;)
    {
      if ((r = sd_bus_process (bus, NULL)) < 0)
        die ("sd_bus_process", r);
      if (r == 0 && (r = sd_bus_wait (bus, UINT64_MAX)) < 0)
        die ("sd_bus_wait", r);
    }
}

int
main (int argc, char **argv)
{
  if (argc == 4 && strcmp (argv[1], "serve") == 0)
    return cmd_serve (argv[2], argv[3]);
  if (argc == 5 && strcmp (argv[1], "rtt") == 0)
    return cmd_rtt (argv[2], argv[3], atol (argv[4]), 1);
  if (argc == 4 && strcmp (argv[1], "ping") == 0)
    return cmd_ping (argv[2], atol (argv[3]));
  if (argc == 5 && strcmp (argv[1], "calls") == 0)
    return cmd_rtt (argv[2], argv[3], atol (argv[4]), 0);
  if (argc == 8 && strcmp (argv[1], "load") == 0)
    return cmd_load (argv[2], argv[3], atoi (argv[4]), atof (argv[5]), atoi (argv[6]), argv[7]);
  if (argc == 6 && strcmp (argv[1], "probe") == 0)
    return cmd_probe (argv[2], atof (argv[3]), atol (argv[4]), argv[5]);
  fprintf (stderr, "usage: p11c-bench rtt|calls ADDRESS TOKEN N\n"
                   "       p11c-bench ping ADDRESS N\n"
                   "       p11c-bench load ADDRESS TOKEN CLIENTS SECONDS EXPECT OUT\n"
                   "       p11c-bench probe ADDRESS SECONDS INTERVAL_MS OUT\n"
                   "       p11c-bench serve ADDRESS TOKEN\n");
  return 2;
}
