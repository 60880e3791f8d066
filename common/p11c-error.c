#define G_LOG_DOMAIN "p11c-error"
#include "p11c-error.h"
#include "p11c-names.h"
#include <gio/gio.h>
#include <string.h>

static const GDBusErrorEntry entries[] = {
  { P11C_ERROR_FAILED,            P11C_DBUS_ERROR_PREFIX "Failed" },
  { P11C_ERROR_INVALID_ARGS,      P11C_DBUS_ERROR_PREFIX "InvalidArgs" },
  { P11C_ERROR_NOT_FOUND,         P11C_DBUS_ERROR_PREFIX "NotFound" },
  { P11C_ERROR_NOT_SUPPORTED,     P11C_DBUS_ERROR_PREFIX "NotSupported" },
  { P11C_ERROR_NOT_AUTHORIZED,    P11C_DBUS_ERROR_PREFIX "NotAuthorized" },
  { P11C_ERROR_PIN_INCORRECT,     P11C_DBUS_ERROR_PREFIX "PinIncorrect" },
  { P11C_ERROR_PIN_LOCKED,        P11C_DBUS_ERROR_PREFIX "PinLocked" },
  { P11C_ERROR_PIN_POLICY,        P11C_DBUS_ERROR_PREFIX "PinPolicy" },
  { P11C_ERROR_TOKEN_NOT_PRESENT, P11C_DBUS_ERROR_PREFIX "TokenNotPresent" },
  { P11C_ERROR_CA_UNREACHABLE,    P11C_DBUS_ERROR_PREFIX "CaUnreachable" },
  { P11C_ERROR_CA_REJECTED,       P11C_DBUS_ERROR_PREFIX "CaRejected" },
  { P11C_ERROR_CANCELLED,         P11C_DBUS_ERROR_PREFIX "Cancelled" },
  { P11C_ERROR_BUSY,              P11C_DBUS_ERROR_PREFIX "Busy" },
  { P11C_ERROR_CA_BAD_REPLY,      P11C_DBUS_ERROR_PREFIX "CaBadReply" },
  { P11C_ERROR_TOKEN_ERROR,       P11C_DBUS_ERROR_PREFIX "TokenError" },
  { P11C_ERROR_NO_SPACE,          P11C_DBUS_ERROR_PREFIX "NoSpace" },
};

/* An extended error domain: every P11C_ERROR has room for its details. */
typedef struct {
  GHashTable *details;   /* key → GVariant, or NULL */
} P11cErrorPrivate;

/* where GLib puts the private data: before the GError, size aligned to two
 * words (as G_DEFINE_EXTENDED_ERROR computes it) */
#define PRIVATE_OFFSET ((sizeof (P11cErrorPrivate) + 2 * sizeof (gsize) - 1) & ~(2 * sizeof (gsize) - 1))
#define PRIVATE(e) ((P11cErrorPrivate *) ((char *) (e) - PRIVATE_OFFSET))

static void
private_init (GError *error)
{
}

static void
private_copy (const GError *src, GError *dest)
{
  const P11cErrorPrivate *from = PRIVATE (src);
  P11cErrorPrivate *to = PRIVATE (dest);
  to->details = from->details ? g_hash_table_ref (from->details) : NULL;
}

static void
private_clear (GError *error)
{
  P11cErrorPrivate *priv = PRIVATE (error);
  g_clear_pointer (&priv->details, g_hash_table_unref);
}

GQuark
p11c_error_quark (void)
{
  static gsize quark = 0;
  static gsize dbus_quark = 0;

  if (g_once_init_enter (&quark))
    {
      GQuark q = g_error_domain_register_static ("p11c-error-quark", sizeof (P11cErrorPrivate),
                                                 private_init, private_copy, private_clear);
      g_dbus_error_register_error_domain ("p11c-error-quark", &dbus_quark,
                                          entries, G_N_ELEMENTS (entries));
      g_once_init_leave (&quark, q);
    }
  return (GQuark) quark;
}

static P11cErrorPrivate *
error_private (const GError *error)
{
  if (error == NULL || error->domain != P11C_ERROR)
    return NULL;
  return PRIVATE (error);
}

void
p11c_error_set_detail (GError *error, const char *key, GVariant *value)
{
  P11cErrorPrivate *priv = error_private (error);
  GHashTable *copy;

  if (priv == NULL)
    {
      g_variant_unref (g_variant_ref_sink (value));
      return;
    }
  /* copies share the table: copy on write */
  copy = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_variant_unref);
  if (priv->details != NULL)
    {
      GHashTableIter it;
      gpointer k, v;
      g_hash_table_iter_init (&it, priv->details);
      while (g_hash_table_iter_next (&it, &k, &v))
        g_hash_table_insert (copy, g_strdup (k), g_variant_ref (v));
      g_hash_table_unref (priv->details);
    }
  g_hash_table_insert (copy, g_strdup (key), g_variant_ref_sink (value));
  priv->details = copy;
}

void
p11c_error_set_detail_string (GError *error, const char *key, const char *value)
{
  p11c_error_set_detail (error, key, g_variant_new_string (value ? value : ""));
}

void
p11c_error_set_detail_uint (GError *error, const char *key, guint32 value)
{
  p11c_error_set_detail (error, key, g_variant_new_uint32 (value));
}

void
p11c_error_set_detail_bool (GError *error, const char *key, gboolean value)
{
  p11c_error_set_detail (error, key, g_variant_new_boolean (value));
}

void
p11c_error_set_detail_strv (GError *error, const char *key, const char *const *value)
{
  p11c_error_set_detail (error, key, g_variant_new_strv (value, -1));
}

void
p11c_error_set_detail_token (GError *error, const char *token_id)
{
  if (token_id != NULL)
    p11c_error_set_detail_string (error, "token", token_id);
}

GVariant *
p11c_error_get_details (const GError *error)
{
  P11cErrorPrivate *priv = error_private (error);
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  if (priv != NULL && priv->details != NULL)
    {
      g_autoptr(GList) keys = g_hash_table_get_keys (priv->details);
      keys = g_list_sort (keys, (GCompareFunc) strcmp);
      for (GList *l = keys; l; l = l->next)
        g_variant_builder_add (&b, "{sv}", (const char *) l->data, g_hash_table_lookup (priv->details, l->data));
    }
  return g_variant_builder_end (&b);
}

const char *
p11c_error_to_name (P11cError code)
{
  for (gsize i = 0; i < G_N_ELEMENTS (entries); i++)
    if (entries[i].error_code == (gint) code)
      return entries[i].dbus_error_name + strlen (P11C_DBUS_ERROR_PREFIX);
  return NULL;
}

int
p11c_error_from_name (const char *name)
{
  if (name == NULL)
    return -1;
  if (g_str_has_prefix (name, P11C_DBUS_ERROR_PREFIX))
    name += strlen (P11C_DBUS_ERROR_PREFIX);
  for (gsize i = 0; i < G_N_ELEMENTS (entries); i++)
    if (g_str_equal (entries[i].dbus_error_name + strlen (P11C_DBUS_ERROR_PREFIX), name))
      return entries[i].error_code;
  return -1;
}

void
p11c_error_convert (GError **error)
{
  GError *e;
  P11cError code;

  if (error == NULL || *error == NULL)
    return;
  e = *error;
  if (e->domain == P11C_ERROR)
    return;
  if (g_error_matches (e, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    code = P11C_ERROR_CANCELLED;
  else if (g_error_matches (e, G_IO_ERROR, G_IO_ERROR_NO_SPACE))
    code = P11C_ERROR_NO_SPACE;
  else if (g_error_matches (e, G_IO_ERROR, G_IO_ERROR_NOT_FOUND))
    code = P11C_ERROR_NOT_FOUND;
  else if (g_error_matches (e, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED))
    code = P11C_ERROR_NOT_AUTHORIZED;
  else
    code = P11C_ERROR_FAILED;
  *error = g_error_new_literal (P11C_ERROR, code, e->message);
  g_error_free (e);
}
