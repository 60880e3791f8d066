/* org.p11certd1.Token: a token's properties as the wire shows them, its
 * signal info, and ChangePin. */
#define G_LOG_DOMAIN "p11c-dbus"
#include "p11c-dbus-private.h"

/* ---- properties --------------------------------------------------------- */

/* The token as the wire sees it (strings owned by @out) */
static void
token_to_wire (P11cToken *t, P11cWireToken *out)
{
  CK_TOKEN_INFO info;
  CK_SLOT_INFO slot;

  p11c_token_get_info (t, &info, &slot);
  memset (out, 0, sizeof *out);
  out->path = g_strdup (p11c_dbus_token_path (t));
  out->label = p11c_padded_string (info.label, sizeof info.label);
  out->serial = p11c_padded_string (info.serialNumber, sizeof info.serialNumber);
  out->manufacturer = p11c_padded_string (info.manufacturerID, sizeof info.manufacturerID);
  out->model = p11c_padded_string (info.model, sizeof info.model);
  out->slot = p11c_padded_string (slot.slotDescription, sizeof slot.slotDescription);
  out->uri = g_strdup (p11c_token_get_uri (t));
  out->module = g_strdup (p11c_token_get_module_name (t));
  out->present = p11c_token_is_present (t);
  out->login_required = !!(info.flags & CKF_LOGIN_REQUIRED);
  out->pin_count_low = !!(info.flags & CKF_USER_PIN_COUNT_LOW);
  out->pin_final_try = !!(info.flags & CKF_USER_PIN_FINAL_TRY);
  out->pin_locked = !!(info.flags & CKF_USER_PIN_LOCKED);
}

/* The Token properties (a new reference) */
GVariant *
p11c_dbus_token_props (P11cToken *t)
{
  P11cWireToken w;
  GVariant *v;

  token_to_wire (t, &w);
  v = g_variant_ref_sink (p11c_wire_token_props_to_variant (&w));
  p11c_wire_token_clear (&w);
  return v;
}

/* A ListTokens entry (floating) */
GVariant *
p11c_dbus_token_dict (P11cToken *t)
{
  P11cWireToken w;
  GVariant *v;

  token_to_wire (t, &w);
  v = p11c_wire_token_to_variant (&w);
  p11c_wire_token_clear (&w);
  return v;
}

void
p11c_dbus_emit_token_changes (P11cDaemon *d, P11cToken *t)
{
  if (!g_hash_table_contains (d->p11c_dbus_token_props, p11c_dbus_token_path (t)))
    return;   /* not exported (removed meanwhile) */
  g_autoptr(GVariant) now = p11c_dbus_token_props (t);
  p11c_dbus_emit_changed_props (d, d->p11c_dbus_token_props, p11c_dbus_token_path (t), P11C_DBUS_TOKEN_IFACE, now);
}

typedef struct {
  char *old_pin;   /* secrets */
  char *new_pin;
} ChangePinArgs;

static void
change_pin_args_free (ChangePinArgs *a)
{
  p11c_secret_free (a->old_pin);
  p11c_secret_free (a->new_pin);
  g_free (a);
}

static gpointer
change_pin_work (Call *c, GError **error)
{
  ChangePinArgs *a = c->args;

  if (!p11c_token_change_pin (c->token, a->old_pin, a->new_pin, error))
    return NULL;
  p11c_log_event (G_LOG_LEVEL_MESSAGE, P11C_MSGID_PIN_CHANGED, p11c_token_get_id (c->token), NULL, NULL, 0,
                  "Changed the user PIN of token %s (by uid %u)", p11c_token_get_id (c->token), c->uid);
  return p11c_dbus_reply_take (g_variant_new ("()"));
}

void
p11c_dbus_handle_change_pin (Call *c)
{
  g_autoptr(GVariant) options = NULL;
  const char *old_pin, *new_pin;
  GError *error = NULL;
  P11cToken *t = p11c_dbus_token_for_path (c->d, c->path);
  P11cOptions opts;
  ChangePinArgs *a = p11c_dbus_call_set_args (c, g_new0 (ChangePinArgs, 1), (GDestroyNotify) change_pin_args_free);

  g_variant_get (c->params, "(&s&s@a{sv})", &old_pin, &new_pin, &options);
  a->old_pin = g_strdup (old_pin);
  a->new_pin = g_strdup (new_pin);
  if (t == NULL)
    g_set_error (&error, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT, "The token was removed");
  /* every check before the token is touched; the policy names each broken rule */
  if (error != NULL
      || !p11c_wire_options_from_variant (options, FALSE, &opts, &error)
      || !p11c_secret_check (a->old_pin, "current PIN", &error)
      || !p11c_secret_check (a->new_pin, "new PIN", &error)
      || !p11c_pin_policy_check (&p11c_engine_get_config (c->d->engine)->pin_policy, a->new_pin, &error))
    {
      p11c_dbus_call_fail (c, error);
      return;
    }
  c->token = p11c_token_ref (t);
  p11c_dbus_call_in_thread (c, change_pin_work);
}

/* ---- tokens on the bus -------------------------------------------------- */

char *
p11c_dbus_atr_hex (GBytes *atr)
{
  gsize len;
  const guint8 *p;
  GString *s;

  if (atr == NULL)
    return NULL;
  p = g_bytes_get_data (atr, &len);
  s = g_string_new (NULL);
  for (gsize i = 0; i < len; i++)
    g_string_append_printf (s, "%02X", p[i]);
  return g_string_free (s, FALSE);
}

/* TokenInserted/TokenRemoved's parameters: @t, or the bare card ("/") */
GVariant *
p11c_dbus_token_event (P11cToken *t, const char *reader, GBytes *atr)
{
  P11cWireToken w = { 0 };
  g_autofree char *hex = p11c_dbus_atr_hex (atr);
  P11cWireTokenEvent ev = { .token = t ? (char *) p11c_dbus_token_path (t) : "/", .recognized = t != NULL, .atr = hex };
  GVariant *v;

  if (t != NULL)
    {
      token_to_wire (t, &w);
      ev.label = w.label;
      ev.serial = w.serial;
      ev.manufacturer = w.manufacturer;
      ev.uri = w.uri;
    }
  ev.reader = (char *) (reader ? reader : w.slot ? w.slot : "");
  v = p11c_wire_token_event_to_variant (&ev);
  p11c_wire_token_clear (&w);
  return v;
}
