#include "p11c-secret.h"
#include <gio/gio.h>
#include <string.h>

#define PIN "Zq7UnitPinSecret"

static gboolean
all_zero (const char *p, gsize n)
{
  for (gsize i = 0; i < n; i++)
    if (p[i] != '\0')
      return FALSE;
  return TRUE;
}

static gboolean
contains (const char *data, gsize size, const char *needle)
{
  gsize n = strlen (needle);
  for (gsize i = 0; i + n <= size; i++)
    if (memcmp (data + i, needle, n) == 0)
      return TRUE;
  return FALSE;
}

/* The "pin" string inside an a{sv} (the same object, not a copy) */
static GVariant *
pin_leaf (GVariant *dict)
{
  GVariant *v = g_variant_lookup_value (dict, "pin", G_VARIANT_TYPE_STRING);
  g_assert_nonnull (v);
  return v;
}

static GVariant *
request (void)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "token", g_variant_new_string ("pkcs11:token=agent"));
  g_variant_builder_add (&b, "{sv}", "pin", g_variant_new_string (PIN));
  g_variant_builder_add (&b, "{sv}", "rekey", g_variant_new_boolean (TRUE));
  return g_variant_ref_sink (g_variant_builder_end (&b));
}

/* Builder output is made of children: the PIN is in its string child,
 * which the wipe must reach (not a serialised copy of the whole). */
static void
test_built (void)
{
  g_autoptr(GVariant) dict = request ();
  g_autoptr(GVariant) leaf = pin_leaf (dict);
  gsize len;
  const char *pin = g_variant_get_string (leaf, &len);

  g_assert_cmpstr (pin, ==, PIN);
  p11c_variant_wipe (dict);
  g_assert_true (all_zero (pin, len));
}

/* A method call's body as GDBus hands it to a handler: parsed from the
 * wire, as a tuple holding the dict. */
static void
test_dbus_body (void)
{
  g_autoptr(GDBusMessage) out = g_dbus_message_new_method_call ("org.p11certd", "/org/p11certd",
                                                                 "org.p11certd1.Manager", "Renew");
  g_autoptr(GDBusMessage) in = NULL;
  g_autoptr(GVariant) dict = request ();
  g_autoptr(GVariant) inner = NULL;
  g_autoptr(GVariant) leaf = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree guchar *blob = NULL;
  GVariant *body;
  gsize size, len;
  const char *pin;

  g_dbus_message_set_body (out, g_variant_new ("(s@a{sv})", "pkcs11:token=agent;type=cert", dict));
  blob = g_dbus_message_to_blob (out, &size, G_DBUS_CAPABILITY_FLAGS_NONE, &error);
  g_assert_no_error (error);
  in = g_dbus_message_new_from_blob (blob, size, G_DBUS_CAPABILITY_FLAGS_NONE, &error);
  g_assert_no_error (error);
  body = g_dbus_message_get_body (in);
  inner = g_variant_get_child_value (body, 1);
  leaf = pin_leaf (inner);
  pin = g_variant_get_string (leaf, &len);
  g_assert_cmpstr (pin, ==, PIN);

  {
    g_autoptr(GVariant) first = g_variant_get_child_value (body, 0);
    gsize ulen;
    const char *uri = g_variant_get_string (first, &ulen);

    p11c_variant_wipe (body);
    g_assert_true (all_zero (pin, len));
    g_assert_true (all_zero (uri, ulen));   /* every string, not only "pin" */
  }
}

/* A serialised value (one buffer): wiped in place */
static void
test_serialised (void)
{
  g_autoptr(GVariant) built = request ();
  g_autoptr(GBytes) bytes = g_variant_get_data_as_bytes (built);
  g_autoptr(GVariant) dict = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE_VARDICT, bytes, TRUE));
  gsize size;
  const char *data = g_bytes_get_data (bytes, &size);

  g_assert_true (contains (data, size, PIN));
  p11c_variant_wipe (dict);
  g_assert_false (contains (data, size, PIN));
  g_assert_false (contains (data, size, "token=agent"));
  p11c_variant_wipe (NULL);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/secret/variant-wipe/built", test_built);
  g_test_add_func ("/secret/variant-wipe/dbus-body", test_dbus_body);
  g_test_add_func ("/secret/variant-wipe/serialised", test_serialised);
  return g_test_run ();
}
