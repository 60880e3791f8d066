/* fuzz-vardict: a{sv} requests from D-Bus callers, and the secrets in them.
 *
 *  - the bytes as a serialized a{sv} (g_variant_new_from_data, untrusted),
 *    and as GVariant text (g_variant_parse);
 *  - each dictionary: p11c_auth_enroll_actions (the real code the polkit
 *    check runs on an unvalidated request; local-ca.issue exactly for the
 *    profiles of type local, "local" and an admin's "lab"), then the wire
 *    codecs the daemon decodes Enroll / Renew / ListCerts / options with
 *    (common/p11c-wire.c; no copied key table), and their round trips;
 *  - the bytes as a C string: p11c_pin_policy_check (default and a loose
 *    policy) and p11c_secret_check. */
#include "fuzz-common.h"
#include "p11c-auth.h"
#include "p11c-config.h"
#include "p11c-error.h"
#include "p11c-names.h"
#include "p11c-pin-policy.h"
#include "p11c-secret.h"
#include "p11c-vardict.h"
#include "p11c-wire.h"

P11C_FUZZ_INITIALIZE

static void
check_secret_string (const char *s)
{
  P11cPinPolicy def, loose = { 1, 0, FALSE, FALSE, FALSE };
  g_autoptr(GError) e1 = NULL;
  g_autoptr(GError) e2 = NULL;
  g_autoptr(GError) e3 = NULL;
  gboolean ok;

  p11c_pin_policy_init_default (&def);
  ok = p11c_pin_policy_check (&def, s, &e1);
  P11C_FUZZ_ASSERT (ok == (e1 == NULL));
  P11C_FUZZ_ASSERT (ok || g_error_matches (e1, P11C_ERROR, P11C_ERROR_PIN_POLICY));
  if (e1)
    P11C_FUZZ_ASSERT (g_utf8_validate (e1->message, -1, NULL));   /* goes out on D-Bus */
  ok = p11c_pin_policy_check (&loose, s, &e2);
  P11C_FUZZ_ASSERT (ok == (e2 == NULL));
  ok = p11c_secret_check (s, "PIN", &e3);
  P11C_FUZZ_ASSERT (ok == (e3 == NULL));
  if (ok)   /* what p11c_secret_check accepts is small, UTF-8 and one line */
    P11C_FUZZ_ASSERT (s[0] && strlen (s) <= P11C_SECRET_MAX && g_utf8_validate (s, -1, NULL)
                      && !strpbrk (s, "\r\n"));
}

static void
check_error (gboolean ok, GError *error)
{
  P11C_FUZZ_ASSERT (ok == (error == NULL));
  if (!ok)
    {
      P11C_FUZZ_ASSERT (g_error_matches (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS));
      /* the message becomes a D-Bus error string */
      P11C_FUZZ_ASSERT (g_utf8_validate (error->message, -1, NULL));
    }
}

static void
check_string (const char *v, gboolean secret)
{
  if (v == NULL)
    return;
  P11C_FUZZ_ASSERT (strlen (v) <= P11C_VARDICT_STRING_MAX);
  if (secret)
    check_secret_string (v);
}

/* The wire codecs the daemon decodes requests with (common/p11c-wire.c):
 * each accepts or refuses with InvalidArgs, what it accepts round-trips. */
static void
check_codecs (GVariant *dict)
{
  {
    g_autoptr(GError) error = NULL;
    P11cEnrollParams p, again;
    gboolean ok = p11c_wire_enroll_from_variant (dict, &p, &error);
    check_error (ok, error);
    if (ok)
      {
        g_autoptr(GVariant) back = g_variant_ref_sink (p11c_wire_enroll_to_variant (&p));
        P11C_FUZZ_ASSERT (p.ca != NULL);
        check_string (p.pin, TRUE);
        check_string (p.otp, TRUE);
        check_string (p.password, TRUE);
        check_string (p.subject, FALSE);
        P11C_FUZZ_ASSERT (p11c_wire_enroll_from_variant (back, &again, NULL));
        P11C_FUZZ_ASSERT (g_strcmp0 (again.pin, p.pin) == 0 && g_strcmp0 (again.token, p.token) == 0
                          && again.has_fd == p.has_fd && (!p.has_fd || again.fd_index == p.fd_index));
        p11c_enroll_params_clear (&again);
      }
    p11c_enroll_params_clear (&p);
  }
  {
    g_autoptr(GError) error = NULL;
    P11cRenewParams p;
    gboolean ok = p11c_wire_renew_from_variant (dict, &p, &error);
    check_error (ok, error);
    if (ok)
      check_string (p.pin, TRUE);
    p11c_renew_params_clear (&p);
  }
  {
    g_autoptr(GError) error = NULL;
    P11cListParams p;
    gboolean ok = p11c_wire_list_from_variant (dict, &p, &error);
    check_error (ok, error);
    check_string (p.token, FALSE);
    p11c_list_params_clear (&p);
  }
  for (int keep = 0; keep < 2; keep++)
    {
      g_autoptr(GError) error = NULL;
      P11cOptions o;
      gboolean ok = p11c_wire_options_from_variant (dict, keep, &o, &error);
      check_error (ok, error);
    }
}

/* CA profiles: the built-in "local" and a type=local profile under another name. */
static const P11cCaProfile *
fuzz_find_ca (const char *name)
{
  static GPtrArray *cas;

  if (cas == NULL)
    {
      cas = g_ptr_array_new ();
      g_ptr_array_add (cas, p11c_ca_profile_parse ("local", "[ca]\ntype=local\n", -1, NULL));
      g_ptr_array_add (cas, p11c_ca_profile_parse ("lab", "[ca]\ntype=local\n", -1, NULL));
    }
  for (guint i = 0; i < cas->len; i++)
    if (g_strcmp0 (((P11cCaProfile *) cas->pdata[i])->name, name) == 0)
      return cas->pdata[i];
  return NULL;
}

static void
check_dict (GVariant *dict)
{
  const char *actions[4] = { NULL, NULL, NULL, NULL };
  const char *ca = p11c_wire_enroll_peek_ca (dict);
  gboolean local_ca = FALSE;
  guint n = 0;

  /* the polkit check runs before validation, on whatever the caller sent */
  const P11cCaProfile *p = fuzz_find_ca (ca);
  p11c_auth_enroll_actions (p11c_wire_enroll_peek_storage (dict), p != NULL && p->type == P11C_CA_LOCAL, actions);
  while (n < 4 && actions[n])
    local_ca |= g_str_equal (actions[n++], P11C_ACTION_LOCAL_CA);
  P11C_FUZZ_ASSERT (n >= 1 && n < 4);
  P11C_FUZZ_ASSERT (local_ca == (g_str_equal (ca, "local") || g_str_equal (ca, "lab")));

  check_codecs (dict);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *text = NULL;

  if (size > 64 * 1024)
    return 0;

  /* serialized a{sv}, untrusted */
  {
    g_autoptr(GBytes) bytes = g_bytes_new (data, size);
    g_autoptr(GVariant) dict = g_variant_ref_sink (
        g_variant_new_from_bytes (G_VARIANT_TYPE_VARDICT, bytes, FALSE));
    check_dict (dict);
  }

  text = p11c_fuzz_strndup (data, size);

  /* GVariant text form (what gdbus call / busctl users type).  GLib wants
   * UTF-8 text here: g_variant_parse itself hits a critical
   * (g_variant_new_string) on invalid UTF-8 inside a string literal
   * (regression input crash-glib-variant-parse-invalid-utf8), so like any
   * caller we validate first.  p11certd never parses GVariant text. */
  if (g_utf8_validate (text, size, NULL))
  {
    g_autoptr(GVariant) dict = g_variant_parse (G_VARIANT_TYPE_VARDICT, text, NULL, NULL, NULL);
    if (dict)
      {
        g_variant_take_ref (dict);   /* documented non-floating; be sure */
        check_dict (dict);
      }
  }

  check_secret_string (text);
  return 0;
}
