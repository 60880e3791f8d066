/* The daemon's bus connection: sd-bus on the GLib main loop, GVariant in
 * and out.  See p11c-bus.h. */
#define G_LOG_DOMAIN "p11c-bus"

#include "p11c-bus.h"
#include "p11c-error.h"
#include "p11c-secret.h"

#include <errno.h>
#include <string.h>
#include <systemd/sd-bus.h>

#define BUS_DBUS "org.freedesktop.DBus"
#define PATH_DBUS "/org/freedesktop/DBus"
#define IFACE_PROPERTIES "org.freedesktop.DBus.Properties"
#define IFACE_INTROSPECTABLE "org.freedesktop.DBus.Introspectable"
#define IFACE_PEER "org.freedesktop.DBus.Peer"
#define CALL_TIMEOUT_USEC (10 * G_USEC_PER_SEC)
#define MAX_PER_DISPATCH 64   /* messages handled before other sources get a turn */
#define INTROSPECT_DOCTYPE \
  "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n" \
  "\"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n"

typedef struct {
  guint                   id;
  char                   *path;
  GDBusInterfaceInfo     *iface;
  P11cBusMethodFunc       method;
  P11cBusGetPropertyFunc  get_property;
  gpointer                user_data;
} Reg;

typedef struct {
  GSource  source;
  P11cBus *bus;
  gpointer tag;
  int      events;   /* what the fd is polled for (changing it wakes the loop) */
} BusSource;

struct _P11cBus {
  sd_bus      *bus;
  GThread     *thread;      /* sd-bus is not thread-safe: this one only */
  sd_bus_slot *objects;     /* the fallback at "/" that dispatches every call */
  BusSource   *source;
  GHashTable  *regs;        /* id → Reg */
  guint        next_id;
  GHashTable  *watches;     /* id → sd_bus_slot */
  GCallback    closed;
  gpointer     closed_data;
  gboolean     is_closed;
};

struct _P11cInvocation {
  P11cBus        *bus;
  sd_bus_message *msg;
  GVariant       *params;
  GUnixFDList    *fds;
  GPtrArray      *strings;   /* the strings read, in the message's own buffer:
                              * wiped with it (they may be PINs) */
  const char     *iface;     /* the interface called (also when the message named none) */
};

static void
slot_unref (gpointer slot)
{
  sd_bus_slot_unref (slot);
}

static void
reg_free (Reg *r)
{
  g_free (r->path);
  g_dbus_interface_info_unref (r->iface);
  g_free (r);
}

/* ---- GVariant → message: a walk into operations, replayed -------------- */

typedef struct {
  char        kind;      /* 'o' open, 'c' close, 'v' basic value, 'y' byte array */
  char        type;      /* the D-Bus type: r e a v for 'o', the basic type for 'v' */
  const char *str;       /* 'o': the contents signature; 'v' of s, o, g: the string */
  const void *data;      /* 'y' */
  gsize       len;       /* 'y' */
  union {
    int      b;
    guint8   y;
    gint16   n;
    guint16  q;
    gint32   i;
    guint32  u;
    gint64   x;
    guint64  t;
    double   d;
  } v;
} Op;

struct _P11cBusReply {
  gint          ref;
  GVariant     *value;     /* what the operations point into */
  GArray       *ops;       /* Op */
  GStringChunk *sigs;      /* container contents signatures */
};

static void
walk (GArray *ops, GStringChunk *sigs, GVariant *v)
{
  const char *t = g_variant_get_type_string (v);
  Op op = { .kind = 'v', .type = t[0] };

  switch (t[0])
    {
    case 'b': op.v.b = g_variant_get_boolean (v); break;
    case 'y': op.v.y = g_variant_get_byte (v); break;
    case 'n': op.v.n = g_variant_get_int16 (v); break;
    case 'q': op.v.q = g_variant_get_uint16 (v); break;
    case 'i': op.v.i = g_variant_get_int32 (v); break;
    case 'u': op.v.u = g_variant_get_uint32 (v); break;
    case 'x': op.v.x = g_variant_get_int64 (v); break;
    case 't': op.v.t = g_variant_get_uint64 (v); break;
    case 'd': op.v.d = g_variant_get_double (v); break;
    case 'h': op.v.i = g_variant_get_handle (v); break;
    case 's': case 'o': case 'g': op.str = g_variant_get_string (v, NULL); break;
    case 'a':
      if (t[1] == 'y')
        {
          op.kind = 'y';
          op.data = g_variant_get_fixed_array (v, &op.len, 1);
          break;
        }
      G_GNUC_FALLTHROUGH;
    case 'v': case '(': case '{':
      {
        gsize n = g_variant_n_children (v);
        gsize tl = strlen (t);

        op.kind = 'o';
        if (t[0] == 'a')
          op.str = g_string_chunk_insert_const (sigs, t + 1);
        else if (t[0] == 'v')
          {
            g_autoptr(GVariant) child = g_variant_get_variant (v);
            op.str = g_string_chunk_insert_const (sigs, g_variant_get_type_string (child));
          }
        else
          {
            g_autofree char *inner = g_strndup (t + 1, tl - 2);
            op.str = g_string_chunk_insert_const (sigs, inner);
            op.type = t[0] == '(' ? 'r' : 'e';
          }
        g_array_append_val (ops, op);
        for (gsize i = 0; i < n; i++)
          {
            g_autoptr(GVariant) child = g_variant_get_child_value (v, i);
            walk (ops, sigs, child);
          }
        op = (Op) { .kind = 'c' };
        break;
      }
    default:
      g_assert_not_reached ();   /* maybe types: GVariant only, never on the bus */
    }
  g_array_append_val (ops, op);
}

static int
replay (sd_bus_message *m, GArray *ops)
{
  int r = 0;

  for (guint i = 0; i < ops->len && r >= 0; i++)
    {
      const Op *op = &g_array_index (ops, Op, i);
      switch (op->kind)
        {
        case 'o': r = sd_bus_message_open_container (m, op->type, op->str); break;
        case 'c': r = sd_bus_message_close_container (m); break;
        case 'y': r = sd_bus_message_append_array (m, 'y', op->data, op->len); break;
        default:
          r = sd_bus_message_append_basic (m, op->type, op->str != NULL ? (const void *) op->str : &op->v);
          break;
        }
    }
  return r;
}

P11cBusReply *
p11c_bus_reply_new (GVariant *tuple)
{
  P11cBusReply *reply;

  g_return_val_if_fail (g_variant_is_of_type (tuple, G_VARIANT_TYPE_TUPLE), NULL);
  reply = g_new0 (P11cBusReply, 1);
  reply->ref = 1;
  reply->value = g_variant_ref_sink (tuple);
  reply->ops = g_array_new (FALSE, FALSE, sizeof (Op));
  reply->sigs = g_string_chunk_new (64);
  for (gsize i = 0; i < g_variant_n_children (tuple); i++)
    {
      g_autoptr(GVariant) child = g_variant_get_child_value (tuple, i);
      walk (reply->ops, reply->sigs, child);
    }
  return reply;
}

P11cBusReply *
p11c_bus_reply_ref (P11cBusReply *reply)
{
  g_atomic_int_inc (&reply->ref);
  return reply;
}

void
p11c_bus_reply_unref (P11cBusReply *reply)
{
  if (reply == NULL || !g_atomic_int_dec_and_test (&reply->ref))
    return;
  g_array_unref (reply->ops);
  g_string_chunk_free (reply->sigs);
  g_variant_unref (reply->value);
  g_free (reply);
}

GVariant *
p11c_bus_reply_get_value (P11cBusReply *reply)
{
  return reply->value;
}

/* Append the values of @tuple (floating or not; NULL: none) */
static int
append_tuple (sd_bus_message *m, GVariant *tuple)
{
  P11cBusReply *walked;
  int r;

  if (tuple == NULL)
    return 0;
  walked = p11c_bus_reply_new (tuple);
  r = replay (m, walked->ops);
  p11c_bus_reply_unref (walked);
  return r;
}

/* ---- message → GVariant -------------------------------------------------- */

typedef struct {
  GUnixFDList **fds;
  GPtrArray    *strings;
} Reader;

static GVariant *read_value (sd_bus_message *m, Reader *rd, int *r);

/* The values up to the end of the current container, into @b */
static void
read_values (sd_bus_message *m, GVariantBuilder *b, Reader *rd, int *r)
{
  while (*r >= 0)
    {
      GVariant *v;
      int end = sd_bus_message_at_end (m, 0);
      if (end != 0)
        {
          if (end < 0)
            *r = end;
          return;
        }
      if ((v = read_value (m, rd, r)) == NULL)
        return;
      g_variant_builder_add_value (b, v);
    }
}

static GVariant *
read_value (sd_bus_message *m, Reader *rd, int *r)
{
  char type;
  const char *contents = NULL;
  union { int b; guint8 y; gint16 n; guint16 q; gint32 i; guint32 u; gint64 x; guint64 t; double d;
          const char *s; } v;

  if ((*r = sd_bus_message_peek_type (m, &type, &contents)) <= 0)
    {
      if (*r == 0)
        *r = -EBADMSG;
      return NULL;
    }
  switch (type)
    {
    case 'a': case 'v': case 'r': case 'e':
      {
        g_autofree char *vtype = NULL;
        GVariantBuilder b;
        GVariant *inner = NULL;

        if (type == 'a' && g_str_equal (contents, "y"))
          {
            const void *data = NULL;
            size_t len = 0;
            if ((*r = sd_bus_message_read_array (m, 'y', &data, &len)) < 0)
              return NULL;
            return g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, len ? data : "", len, 1);
          }
        if ((*r = sd_bus_message_enter_container (m, type, contents)) < 0)
          return NULL;
        if (type == 'v')
          inner = read_value (m, rd, r);
        else
          {
            vtype = g_strdup_printf (type == 'a' ? "a%s" : type == 'r' ? "(%s)" : "{%s}", contents);
            g_variant_builder_init (&b, G_VARIANT_TYPE (vtype));
            read_values (m, &b, rd, r);
            if (*r < 0)
              {
                g_variant_builder_clear (&b);
                return NULL;
              }
            inner = g_variant_builder_end (&b);
          }
        if (*r < 0 || (*r = sd_bus_message_exit_container (m)) < 0)
          {
            if (inner)
              g_variant_unref (g_variant_ref_sink (inner));
            return NULL;
          }
        return type == 'v' ? g_variant_new_variant (inner) : inner;
      }
    case 'h':
      {
        int fd = -1, idx;
        if ((*r = sd_bus_message_read_basic (m, 'h', &fd)) < 0)
          return NULL;
        if (*rd->fds == NULL)
          *rd->fds = g_unix_fd_list_new ();
        if ((idx = g_unix_fd_list_append (*rd->fds, fd, NULL)) < 0)   /* a dup: the message keeps its own */
          {
            *r = -EMFILE;
            return NULL;
          }
        return g_variant_new_handle (idx);
      }
    default:
      if ((*r = sd_bus_message_read_basic (m, type, &v)) < 0)
        return NULL;
      if (type == 's' || type == 'o' || type == 'g')
        g_ptr_array_add (rd->strings, (gpointer) v.s);
      switch (type)
        {
        case 'b': return g_variant_new_boolean (v.b);
        case 'y': return g_variant_new_byte (v.y);
        case 'n': return g_variant_new_int16 (v.n);
        case 'q': return g_variant_new_uint16 (v.q);
        case 'i': return g_variant_new_int32 (v.i);
        case 'u': return g_variant_new_uint32 (v.u);
        case 'x': return g_variant_new_int64 (v.x);
        case 't': return g_variant_new_uint64 (v.t);
        case 'd': return g_variant_new_double (v.d);
        case 's': return g_variant_new_string (v.s);
        case 'o': return g_variant_new_object_path (v.s);
        case 'g': return g_variant_new_signature (v.s);
        default:  *r = -EBADMSG; return NULL;
        }
    }
}

/* The body of @m as a tuple (not floating), or NULL with *r < 0 */
static GVariant *
read_body (sd_bus_message *m, Reader *rd, int *r)
{
  g_autofree char *type = g_strdup_printf ("(%s)", sd_bus_message_get_signature (m, TRUE));
  GVariantBuilder b;
  GVariant *body;

  *r = 0;
  g_variant_builder_init (&b, G_VARIANT_TYPE (type));
  read_values (m, &b, rd, r);
  if (*r < 0)
    {
      g_variant_builder_clear (&b);
      return NULL;
    }
  body = g_variant_ref_sink (g_variant_builder_end (&b));
  return body;
}

/* ---- the connection on the main loop ------------------------------------ */

static void
bus_closed (P11cBus *bus)
{
  if (bus->is_closed)
    return;
  bus->is_closed = TRUE;
  if (bus->closed)
    ((void (*) (gpointer)) bus->closed) (bus->closed_data);
}

static gboolean
source_prepare (GSource *source, gint *timeout)
{
  BusSource *s = (BusSource *) source;
  sd_bus *b = s->bus->bus;
  uint64_t at = UINT64_MAX;
  int events = sd_bus_get_events (b);

  if (events < 0)
    {
      *timeout = 0;   /* let dispatch see the error */
      return TRUE;
    }
  if (events != s->events)
    g_source_modify_unix_fd (source, s->tag, (GIOCondition) (s->events = events));
  if (sd_bus_get_timeout (b, &at) < 0 || at == UINT64_MAX)
    {
      *timeout = -1;
      return FALSE;
    }
  {
    gint64 now = g_get_monotonic_time ();
    if ((gint64) at <= now)
      {
        *timeout = 0;
        return TRUE;
      }
    *timeout = (gint) MIN ((at - now + 999) / 1000, G_MAXINT);
  }
  return FALSE;
}

static gboolean
source_check (GSource *source)
{
  BusSource *s = (BusSource *) source;
  uint64_t at = UINT64_MAX;

  if (g_source_query_unix_fd (source, s->tag) != 0)
    return TRUE;
  return sd_bus_get_timeout (s->bus->bus, &at) >= 0 && at != UINT64_MAX && (gint64) at <= g_get_monotonic_time ();
}

static gboolean
source_dispatch (GSource *source, GSourceFunc cb, gpointer data)
{
  BusSource *s = (BusSource *) source;

  for (int i = 0; i < MAX_PER_DISPATCH; i++)
    {
      int r = sd_bus_process (s->bus->bus, NULL);
      if (r < 0)
        {
          if (r != -ECONNRESET && r != -ENOTCONN)
            g_warning ("The bus connection failed: %s", g_strerror (-r));
          bus_closed (s->bus);
          return G_SOURCE_REMOVE;
        }
      if (r == 0)
        break;
    }
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs source_funcs = { source_prepare, source_check, source_dispatch, NULL, NULL, NULL };

static int dispatch (sd_bus_message *m, void *userdata, sd_bus_error *ret_error);
static void invocation_free (P11cInvocation *inv);

P11cBus *
p11c_bus_new (const char *address, gboolean session, GCallback closed, gpointer closed_data, GError **error)
{
  P11cBus *bus = g_new0 (P11cBus, 1);
  int r;

  bus->regs = g_hash_table_new_full (NULL, NULL, NULL, (GDestroyNotify) reg_free);
  bus->watches = g_hash_table_new_full (NULL, NULL, NULL, slot_unref);
  bus->closed = closed;
  bus->closed_data = closed_data;
  bus->thread = g_thread_self ();
  if (address != NULL)
    {
      if ((r = sd_bus_new (&bus->bus)) >= 0 && (r = sd_bus_set_address (bus->bus, address)) >= 0
          && (r = sd_bus_set_bus_client (bus->bus, 1)) >= 0)
        r = sd_bus_start (bus->bus);
    }
  else
    r = session ? sd_bus_open_user (&bus->bus) : sd_bus_open_system (&bus->bus);
  if (r >= 0)
    r = sd_bus_add_fallback (bus->bus, &bus->objects, "/", dispatch, bus);
  if (r < 0)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (-r), "%s", g_strerror (-r));
      p11c_bus_free (bus);
      return NULL;
    }
  bus->source = (BusSource *) g_source_new (&source_funcs, sizeof (BusSource));
  bus->source->bus = bus;
  bus->source->events = G_IO_IN;
  bus->source->tag = g_source_add_unix_fd ((GSource *) bus->source, sd_bus_get_fd (bus->bus), G_IO_IN);
  g_source_set_name ((GSource *) bus->source, "p11c-bus");
  g_source_attach ((GSource *) bus->source, g_main_context_get_thread_default ());
  return bus;
}

void
p11c_bus_free (P11cBus *bus)
{
  if (bus == NULL)
    return;
  if (bus->source)
    {
      g_source_destroy ((GSource *) bus->source);
      g_source_unref ((GSource *) bus->source);
    }
  g_hash_table_unref (bus->watches);
  bus->objects = sd_bus_slot_unref (bus->objects);
  g_hash_table_unref (bus->regs);
  if (bus->bus)
    sd_bus_flush_close_unref (bus->bus);
  g_free (bus);
}

gboolean
p11c_bus_request_name (P11cBus *bus, const char *name, GError **error)
{
  int r = sd_bus_request_name (bus->bus, name, 0);
  if (r < 0)
    {
      g_set_error (error, G_IO_ERROR, r == -EEXIST ? G_IO_ERROR_EXISTS : g_io_error_from_errno (-r),
                   "Cannot own %s: %s", name, r == -EEXIST ? "another connection owns it" : g_strerror (-r));
      return FALSE;
    }
  return TRUE;
}

/* ---- objects ----------------------------------------------------------- */

/* The object at @path with interface @iface; with @iface NULL, the one that
 * has method @member (a call that names no interface), or any one */
static Reg *
find_reg (P11cBus *bus, const char *path, const char *iface, const char *member)
{
  GHashTableIter iter;
  Reg *r;

  g_hash_table_iter_init (&iter, bus->regs);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *) &r))
    if (g_str_equal (r->path, path)
        && (iface != NULL ? g_str_equal (r->iface->name, iface)
                          : member == NULL || g_dbus_interface_info_lookup_method (r->iface, member) != NULL))
      return r;
  return NULL;
}

guint
p11c_bus_register_object (P11cBus *bus, const char *path, GDBusInterfaceInfo *iface,
                          P11cBusMethodFunc method, P11cBusGetPropertyFunc get_property,
                          gpointer user_data, GError **error)
{
  Reg *r;

  if (find_reg (bus, path, iface->name, NULL) != NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS, "%s already has %s", path, iface->name);
      return 0;
    }
  r = g_new0 (Reg, 1);
  r->id = ++bus->next_id;
  r->path = g_strdup (path);
  r->iface = g_dbus_interface_info_ref (iface);
  r->method = method;
  r->get_property = get_property;
  r->user_data = user_data;
  g_hash_table_insert (bus->regs, GUINT_TO_POINTER (r->id), r);
  return r->id;
}

void
p11c_bus_unregister_object (P11cBus *bus, guint id)
{
  g_hash_table_remove (bus->regs, GUINT_TO_POINTER (id));
}

static int
reply_error (sd_bus_message *m, const char *name, const char *format, ...) G_GNUC_PRINTF (3, 4);

static int
reply_error (sd_bus_message *m, const char *name, const char *format, ...)
{
  g_autofree char *text = NULL;
  sd_bus_error e = SD_BUS_ERROR_NULL;
  va_list ap;
  int r;

  va_start (ap, format);
  text = g_strdup_vprintf (format, ap);
  va_end (ap);
  sd_bus_error_set (&e, name, text);
  r = sd_bus_reply_method_error (m, &e);
  sd_bus_error_free (&e);
  return r < 0 ? r : 1;
}

/* A method return carrying @ops (a walked reply) to @call */
static int
reply_ops (sd_bus_message *call, GArray *ops)
{
  sd_bus_message *out = NULL;
  int r;

  if ((r = sd_bus_message_new_method_return (call, &out)) >= 0 && (r = replay (out, ops)) >= 0)
    r = sd_bus_send (NULL, out, NULL);
  sd_bus_message_unref (out);
  return r < 0 ? r : 1;
}

/* A method return with the values of @tuple (taken if floating) */
static int
reply_tuple (sd_bus_message *call, GVariant *tuple)
{
  P11cBusReply *walked = p11c_bus_reply_new (tuple);
  int r = reply_ops (call, walked->ops);

  p11c_bus_reply_unref (walked);
  return r;
}

static char *
args_signature (GDBusArgInfo **args)
{
  GString *s = g_string_new ("(");
  for (guint i = 0; args != NULL && args[i] != NULL; i++)
    g_string_append (s, args[i]->signature);
  g_string_append_c (s, ')');
  return g_string_free (s, FALSE);
}

static int
introspect (P11cBus *bus, sd_bus_message *m, const char *path)
{
  GString *xml = g_string_new (INTROSPECT_DOCTYPE);
  g_autoptr(GHashTable) children = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_autofree char *prefix = g_str_equal (path, "/") ? g_strdup ("/") : g_strconcat (path, "/", NULL);
  gsize plen = strlen (prefix);
  GHashTableIter iter;
  gpointer key;
  Reg *r;
  int ret;

  g_string_append (xml, "<node>\n");
  if (find_reg (bus, path, NULL, NULL) != NULL)
    g_string_append (xml,
                     "  <interface name=\"" IFACE_PEER "\">\n"
                     "    <method name=\"Ping\"/>\n"
                     "    <method name=\"GetMachineId\"><arg type=\"s\" name=\"machine_uuid\" direction=\"out\"/></method>\n"
                     "  </interface>\n"
                     "  <interface name=\"" IFACE_INTROSPECTABLE "\">\n"
                     "    <method name=\"Introspect\"><arg type=\"s\" name=\"xml_data\" direction=\"out\"/></method>\n"
                     "  </interface>\n"
                     "  <interface name=\"" IFACE_PROPERTIES "\">\n"
                     "    <method name=\"Get\"><arg type=\"s\" name=\"interface_name\" direction=\"in\"/>"
                     "<arg type=\"s\" name=\"property_name\" direction=\"in\"/><arg type=\"v\" name=\"value\" direction=\"out\"/></method>\n"
                     "    <method name=\"GetAll\"><arg type=\"s\" name=\"interface_name\" direction=\"in\"/>"
                     "<arg type=\"a{sv}\" name=\"properties\" direction=\"out\"/></method>\n"
                     "    <method name=\"Set\"><arg type=\"s\" name=\"interface_name\" direction=\"in\"/>"
                     "<arg type=\"s\" name=\"property_name\" direction=\"in\"/><arg type=\"v\" name=\"value\" direction=\"in\"/></method>\n"
                     "    <signal name=\"PropertiesChanged\"><arg type=\"s\" name=\"interface_name\"/>"
                     "<arg type=\"a{sv}\" name=\"changed_properties\"/><arg type=\"as\" name=\"invalidated_properties\"/></signal>\n"
                     "  </interface>\n");
  g_hash_table_iter_init (&iter, bus->regs);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *) &r))
    {
      if (g_str_equal (r->path, path))
        g_dbus_interface_info_generate_xml (r->iface, 2, xml);
      else if (strncmp (r->path, prefix, plen) == 0)
        {
          const char *rest = r->path + plen;
          const char *slash = strchr (rest, '/');
          g_hash_table_add (children, slash ? g_strndup (rest, slash - rest) : g_strdup (rest));
        }
    }
  g_hash_table_iter_init (&iter, children);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    g_string_append_printf (xml, "  <node name=\"%s\"/>\n", (const char *) key);
  g_string_append (xml, "</node>\n");
  ret = sd_bus_reply_method_return (m, "s", xml->str);
  g_string_free (xml, TRUE);
  return ret < 0 ? ret : 1;
}

static int
properties (P11cBus *bus, sd_bus_message *m, const char *path, const char *member)
{
  const char *sender = sd_bus_message_get_sender (m);
  const char *iface_name = NULL, *name = NULL;
  GDBusPropertyInfo *prop;
  Reg *reg;
  int r;

  if (g_str_equal (member, "GetAll"))
    {
      GVariantBuilder b;

      if (!sd_bus_message_has_signature (m, "s") || sd_bus_message_read (m, "s", &iface_name) < 0)
        return reply_error (m, SD_BUS_ERROR_INVALID_ARGS, "Type of message, “(%s)”, does not match expected type “(s)”",
                            sd_bus_message_get_signature (m, TRUE));
      if ((reg = find_reg (bus, path, iface_name, NULL)) == NULL)
        return reply_error (m, SD_BUS_ERROR_INVALID_ARGS, "No such interface “%s”", iface_name);
      g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
      for (guint i = 0; reg->iface->properties && reg->iface->properties[i]; i++)
        {
          g_autoptr(GError) error = NULL;
          GVariant *v;
          prop = reg->iface->properties[i];
          if (!(prop->flags & G_DBUS_PROPERTY_INFO_FLAGS_READABLE) || reg->get_property == NULL)
            continue;
          /* a property its getter refuses this caller is left out */
          v = reg->get_property (bus, sender, path, iface_name, prop->name, &error, reg->user_data);
          if (v != NULL)
            {
              g_variant_ref_sink (v);
              g_variant_builder_add (&b, "{sv}", prop->name, v);
              g_variant_unref (v);
            }
        }
      return reply_tuple (m, g_variant_new ("(a{sv})", &b));
    }
  if (g_str_equal (member, "Get") || g_str_equal (member, "Set"))
    {
      gboolean get = g_str_equal (member, "Get");
      const char *want = get ? "ss" : "ssv";

      if (!sd_bus_message_has_signature (m, want) || sd_bus_message_read (m, "ss", &iface_name, &name) < 0)
        return reply_error (m, SD_BUS_ERROR_INVALID_ARGS, "Type of message, “(%s)”, does not match expected type “(%s)”",
                            sd_bus_message_get_signature (m, TRUE), want);
      if ((reg = find_reg (bus, path, iface_name, NULL)) == NULL)
        return reply_error (m, SD_BUS_ERROR_INVALID_ARGS, "No such interface “%s”", iface_name);
      if ((prop = g_dbus_interface_info_lookup_property (reg->iface, name)) == NULL)
        return reply_error (m, SD_BUS_ERROR_INVALID_ARGS, "No such property “%s”", name);
      if (!get)
        return reply_error (m, SD_BUS_ERROR_INVALID_ARGS, "Property “%s” is not writable", name);
      {
        g_autoptr(GError) error = NULL;
        GVariant *v = reg->get_property ? reg->get_property (bus, sender, path, iface_name, name, &error,
                                                             reg->user_data) : NULL;

        if (v == NULL)
          {
            g_autofree char *ename = error ? g_dbus_error_encode_gerror (error) : g_strdup (SD_BUS_ERROR_FAILED);
            return reply_error (m, ename, "%s", error ? error->message : "Cannot read the property");
          }
        g_variant_ref_sink (v);
        r = reply_tuple (m, g_variant_new ("(v)", v));
        g_variant_unref (v);
        return r;
      }
    }
  return reply_error (m, SD_BUS_ERROR_UNKNOWN_METHOD, "No such method “%s”", member);
}

static int
dispatch (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  P11cBus *bus = userdata;
  const char *path = sd_bus_message_get_path (m);
  const char *iface = sd_bus_message_get_interface (m);
  const char *member = sd_bus_message_get_member (m);
  GDBusMethodInfo *info;
  g_autofree char *expected = NULL;
  g_autofree char *got = NULL;
  P11cInvocation *inv;
  Reg *reg;
  int r = 0;

  if (sd_bus_message_is_method_call (m, NULL, NULL) <= 0 || path == NULL || member == NULL)
    return 0;
  if (g_strcmp0 (iface, IFACE_INTROSPECTABLE) == 0 || (iface == NULL && g_str_equal (member, "Introspect")))
    return introspect (bus, m, path);
  if (g_strcmp0 (iface, IFACE_PROPERTIES) == 0)
    return properties (bus, m, path, member);
  if (g_strcmp0 (iface, IFACE_PEER) == 0)
    return 0;   /* sd-bus's own */
  reg = find_reg (bus, path, iface, member);
  if (reg == NULL)
    return reply_error (m, SD_BUS_ERROR_UNKNOWN_METHOD, "No such interface “%s” on object at path %s",
                        iface ? iface : "", path);
  if ((info = g_dbus_interface_info_lookup_method (reg->iface, member)) == NULL)
    return reply_error (m, SD_BUS_ERROR_UNKNOWN_METHOD, "No such method “%s”", member);
  expected = args_signature (info->in_args);
  got = g_strdup_printf ("(%s)", sd_bus_message_get_signature (m, TRUE));
  if (!g_str_equal (expected, got))
    return reply_error (m, SD_BUS_ERROR_INVALID_ARGS, "Type of message, “%s”, does not match expected type “%s”",
                        got, expected);
  inv = g_new0 (P11cInvocation, 1);
  inv->bus = bus;
  inv->msg = sd_bus_message_ref (m);
  inv->iface = g_intern_string (reg->iface->name);
  inv->strings = g_ptr_array_new ();
  {
    Reader rd = { &inv->fds, inv->strings };
    inv->params = read_body (m, &rd, &r);
  }
  if (inv->params == NULL)
    {
      /* sd-bus checks what it received, except that a handle (h) names a
       * descriptor the message carries: reading one past them fails.  The
       * API's only handle is Enroll's "fd". */
      g_autoptr(GError) error = g_error_new (P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                                             "The arguments cannot be read (%s): a file descriptor they name "
                                             "(\"fd\") is not attached to the message", g_strerror (-r));
      g_autofree char *name = g_dbus_error_encode_gerror (error);
      r = reply_error (m, name, "%s", error->message);
      invocation_free (inv);
      return r;
    }
  reg->method (bus, inv, reg->user_data);
  return 1;
}

/* ---- signals, calls, watches -------------------------------------------- */

void
p11c_bus_emit_signal (P11cBus *bus, const char *dest, const char *path, const char *iface,
                      const char *name, GVariant *params)
{
  sd_bus_message *m = NULL;
  int r;

  g_return_if_fail (g_thread_self () == bus->thread);
  if (params != NULL)
    g_variant_ref_sink (params);
  if (!bus->is_closed
      && (r = sd_bus_message_new_signal (bus->bus, &m, path, iface, name)) >= 0
      && (dest == NULL || (r = sd_bus_message_set_destination (m, dest)) >= 0)
      && (r = append_tuple (m, params)) >= 0)
    r = sd_bus_send (bus->bus, m, NULL);
  else
    r = bus->is_closed ? 0 : r;
  if (r < 0)
    g_warning ("Cannot emit %s.%s: %s", iface, name, g_strerror (-r));
  sd_bus_message_unref (m);
  if (params != NULL)
    g_variant_unref (params);
}

typedef struct {
  P11cBus        *bus;
  char           *name;
  P11cBusUidFunc  cb;
  gpointer        user_data;
} UidCall;

static int
uid_reply (sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
  UidCall *c = userdata;
  const sd_bus_error *e = sd_bus_message_get_error (reply);
  guint32 uid = G_MAXUINT32;

  if (e != NULL)
    {
      g_autoptr(GError) error = g_dbus_error_new_for_dbus_error (e->name, e->message ? e->message : e->name);
      c->cb (c->bus, c->name, G_MAXUINT, error, c->user_data);
    }
  else if (sd_bus_message_read (reply, "u", &uid) < 0)
    {
      g_autoptr(GError) error = g_error_new (G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "A bad reply from the bus");
      c->cb (c->bus, c->name, G_MAXUINT, error, c->user_data);
    }
  else
    c->cb (c->bus, c->name, uid, NULL, c->user_data);
  g_free (c->name);
  g_free (c);
  return 1;
}

void
p11c_bus_get_unix_user_async (P11cBus *bus, const char *name, P11cBusUidFunc cb, gpointer user_data)
{
  UidCall *c = g_new0 (UidCall, 1);
  sd_bus_message *m = NULL;
  int r;

  c->bus = bus;
  c->name = g_strdup (name);
  c->cb = cb;
  c->user_data = user_data;
  if ((r = sd_bus_message_new_method_call (bus->bus, &m, BUS_DBUS, PATH_DBUS, BUS_DBUS, "GetConnectionUnixUser")) >= 0
      && (r = sd_bus_message_append_basic (m, 's', name)) >= 0)
    r = sd_bus_call_async (bus->bus, NULL, m, uid_reply, c, CALL_TIMEOUT_USEC);
  sd_bus_message_unref (m);
  if (r < 0)
    {
      g_autoptr(GError) error = g_error_new (G_IO_ERROR, g_io_error_from_errno (-r),
                                             "Cannot ask the bus who is calling: %s", g_strerror (-r));
      cb (bus, c->name, G_MAXUINT, error, user_data);
      g_free (c->name);
      g_free (c);
    }
}

gboolean
p11c_bus_get_unix_user_sync (P11cBus *bus, const char *name, guint *uid)
{
  sd_bus_error e = SD_BUS_ERROR_NULL;
  sd_bus_message *reply = NULL;
  guint32 u = 0;
  gboolean ok;

  ok = sd_bus_call_method (bus->bus, BUS_DBUS, PATH_DBUS, BUS_DBUS, "GetConnectionUnixUser", &e, &reply, "s", name) >= 0
       && sd_bus_message_read (reply, "u", &u) >= 0;
  sd_bus_error_free (&e);
  sd_bus_message_unref (reply);
  *uid = u;
  return ok;
}

typedef struct {
  P11cBusNameOwnerFunc cb;
  gpointer             user_data;
} Watch;

static int
name_owner_changed (sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
  Watch *w = userdata;
  const char *name = NULL, *old_owner = NULL, *new_owner = NULL;

  if (sd_bus_message_read (m, "sss", &name, &old_owner, &new_owner) >= 0)
    w->cb (name, old_owner, new_owner, w->user_data);
  return 0;
}

guint
p11c_bus_watch_name_owners (P11cBus *bus, P11cBusNameOwnerFunc cb, gpointer user_data)
{
  Watch *w = g_new0 (Watch, 1);
  sd_bus_slot *slot = NULL;
  int r;

  w->cb = cb;
  w->user_data = user_data;
  /* AddMatch goes out now, ahead of any call sent after it */
  r = sd_bus_match_signal_async (bus->bus, &slot, BUS_DBUS, PATH_DBUS, BUS_DBUS, "NameOwnerChanged",
                                 name_owner_changed, NULL, w);
  if (r < 0)
    {
      g_warning ("Cannot watch bus names: %s", g_strerror (-r));
      g_free (w);
      return 0;
    }
  sd_bus_slot_set_destroy_callback (slot, g_free);
  g_hash_table_insert (bus->watches, GUINT_TO_POINTER (++bus->next_id), slot);
  return bus->next_id;
}

void
p11c_bus_unwatch (P11cBus *bus, guint id)
{
  g_hash_table_remove (bus->watches, GUINT_TO_POINTER (id));
}

/* ---- invocations -------------------------------------------------------- */

const char *
p11c_invocation_get_sender (P11cInvocation *inv)
{
  return sd_bus_message_get_sender (inv->msg);
}

const char *
p11c_invocation_get_object_path (P11cInvocation *inv)
{
  return sd_bus_message_get_path (inv->msg);
}

const char *
p11c_invocation_get_interface_name (P11cInvocation *inv)
{
  return inv->iface;
}

const char *
p11c_invocation_get_method_name (P11cInvocation *inv)
{
  return sd_bus_message_get_member (inv->msg);
}

GVariant *
p11c_invocation_get_parameters (P11cInvocation *inv)
{
  return inv->params;
}

GUnixFDList *
p11c_invocation_get_fd_list (P11cInvocation *inv)
{
  return inv->fds;
}

P11cBus *
p11c_invocation_get_bus (P11cInvocation *inv)
{
  return inv->bus;
}

static void
invocation_free (P11cInvocation *inv)
{
  g_clear_object (&inv->fds);
  g_clear_pointer (&inv->params, g_variant_unref);
  /* the call is answered: wipe its strings where sd-bus received them */
  for (guint i = 0; i < inv->strings->len; i++)
    p11c_memwipe (inv->strings->pdata[i], strlen (inv->strings->pdata[i]));
  g_ptr_array_unref (inv->strings);
  sd_bus_message_unref (inv->msg);
  g_free (inv);
}

/* The caller wants an answer (no NO_REPLY_EXPECTED) and the bus is there */
static gboolean
wants_reply (P11cInvocation *inv)
{
  g_return_val_if_fail (g_thread_self () == inv->bus->thread, FALSE);
  return sd_bus_message_get_expect_reply (inv->msg) && !inv->bus->is_closed;
}

static void
check_sent (P11cInvocation *inv, int r)
{
  if (r < 0 && !inv->bus->is_closed)
    g_warning ("Cannot reply to %s.%s: %s", p11c_invocation_get_interface_name (inv),
               p11c_invocation_get_method_name (inv), g_strerror (-r));
}

void
p11c_invocation_return_value (P11cInvocation *inv, GVariant *value)
{
  g_autoptr(GVariant) empty = NULL;

  if (value == NULL)
    value = empty = g_variant_ref_sink (g_variant_new ("()"));
  g_variant_ref_sink (value);
  if (wants_reply (inv))
    check_sent (inv, reply_tuple (inv->msg, value));
  g_variant_unref (value);
  invocation_free (inv);
}

void
p11c_invocation_return_reply (P11cInvocation *inv, P11cBusReply *value)
{
  if (wants_reply (inv))
    check_sent (inv, reply_ops (inv->msg, value->ops));
  invocation_free (inv);
}

void
p11c_invocation_return_gerror (P11cInvocation *inv, const GError *error)
{
  if (wants_reply (inv))
    {
      g_autofree char *name = g_dbus_error_encode_gerror (error);
      check_sent (inv, reply_error (inv->msg, name, "%s", error->message));
    }
  invocation_free (inv);
}

void
p11c_invocation_return_error (P11cInvocation *inv, GQuark domain, gint code, const char *format, ...)
{
  g_autoptr(GError) error = NULL;
  va_list ap;

  va_start (ap, format);
  error = g_error_new_valist (domain, code, format, ap);
  va_end (ap);
  p11c_invocation_return_gerror (inv, error);
}
