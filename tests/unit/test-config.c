#include "p11c-config.h"
#include "p11c-est.h"
#include "p11c-error.h"
#include "p11c-vardict.h"
#include <string.h>

/* every text in @bad is refused with an InvalidArgs error starting with @prefix */
static void
assert_all_bad (const char **bad, const char *prefix)
{
  for (const char **b = bad; *b; b++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(P11cConfig) c = p11c_config_parse (*b, -1, "bad.conf", &error);
      g_test_message ("%s → %s", *b, error ? error->message : "ok");
      g_assert_null (c);
      g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
      g_assert_true (g_str_has_prefix (error->message, prefix));
    }
}

static void
test_defaults (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cConfig) c = p11c_config_parse (NULL, 0, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (c->modules[0], ==, "p11-kit-proxy.so");
  g_assert_null (c->modules[1]);
  g_assert_cmpuint (c->pin_policy.min_length, ==, 8);
  g_assert_cmpuint (c->window_days, ==, 30);
}

static void
test_values (void)
{
  const char *text = "[modules]\nmodules=/a.so; /b.so\n[pin-policy]\nmin-length=10\nrequire-upper=false\n"
                     "[renewal]\nwindow-days=7\n";
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cConfig) c = p11c_config_parse (text, -1, "t.conf", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (c->modules[1], ==, "/b.so");
  g_assert_cmpuint (c->pin_policy.min_length, ==, 10);
  g_assert_false (c->pin_policy.require_upper);
  g_assert_cmpuint (c->window_days, ==, 7);
  g_assert_null (p11c_config_module_init_args (c, "/a.so"));
}

/* [module NAME] init-args: verbatim (quotes and backslashes are the
 * module's own syntax), only for listed modules */
static void
test_module_init_args (void)
{
  const char *text = "[modules]\nmodules=/a.so;libsoftokn3.so\n"
                     "[module libsoftokn3.so]\n"
                     "init-args= configdir='sql:/var/lib/x' certPrefix='' keyPrefix='' secmod='secmod.db' \n";
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cConfig) c = p11c_config_parse (text, -1, "t.conf", &error);
  const char *bad[] = {
    "[modules]\nmodules=/a.so\n[module /b.so]\ninit-args=x\n",
    "[modules]\nmodules=/a.so\n[module /a.so]\ninit-arg=x\n",
    NULL };

  g_assert_no_error (error);
  g_assert_cmpstr (p11c_config_module_init_args (c, "libsoftokn3.so"), ==,
                   "configdir='sql:/var/lib/x' certPrefix='' keyPrefix='' secmod='secmod.db'");
  g_assert_null (p11c_config_module_init_args (c, "/a.so"));
  assert_all_bad (bad, "bad.conf: [module /");
}

static void
test_bad_config (void)
{
  const char *bad[] = { "[pin-policy]\nmin-length=zero\n", "[pin-policy]\nmin-length=0\n",
                        "[pin-policy]\nrequire-digit=maybe\n", "not a key file", "[renewal]\nwindow-days=-1\n", NULL };
  assert_all_bad (bad, "bad.conf");
}

/* [daemon] default-ca: a bad name is a config error; a good name without
 * its profile is reported (the daemon warns and marks none) */
static void
test_default_ca (void)
{
  const char *bad[] = { "[daemon]\ndefault-ca=../agents\n", "[daemon]\ndefault-ca=.hidden\n",
                        "[daemon]\ndefault-ca=a b\n", NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cConfig) none = p11c_config_parse ("[daemon]\nca-dir=/etc/x/ca.d\n", -1, "t.conf", &error);
  g_autoptr(P11cConfig) c = p11c_config_parse ("[daemon]\nca-dir=/etc/x/ca.d\ndefault-ca= agents \n", -1,
                                               "t.conf", &error);
  g_autoptr(GPtrArray) cas = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_ca_profile_free);

  g_assert_no_error (error);
  g_assert_null (none->default_ca);
  g_assert_cmpstr (c->default_ca, ==, "agents");
  assert_all_bad (bad, "bad.conf: [daemon] default-ca=");

  g_ptr_array_add (cas, p11c_ca_profile_parse ("local", "[ca]\ntype=local\n", -1, NULL));
  g_assert_true (p11c_config_check_default_ca (none, cas, &error));
  g_assert_false (p11c_config_check_default_ca (c, cas, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND);
  g_assert_cmpstr (error->message, ==, "t.conf: [daemon] default-ca=agents names no CA profile "
                                       "(no usable /etc/x/ca.d/agents.conf); no profile is marked default");
  g_clear_error (&error);
  g_ptr_array_add (cas, p11c_ca_profile_parse ("agents", "[ca]\ntype=local\n", -1, NULL));
  g_assert_true (p11c_config_check_default_ca (c, cas, &error));
  g_assert_no_error (error);
}

static void
test_profiles (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cCaProfile) p = p11c_ca_profile_parse ("corp",
      "[ca]\nurl=https://ca.example:8443\ntrust-anchor=/etc/x.pem\nlabel=agents\nkey-type=rsa-3072\n", -1, &error);
  g_assert_no_error (error);
  g_assert_cmpint (p->type, ==, P11C_CA_EST);
  g_assert_cmpint (p->key_type, ==, P11C_KEY_RSA_3072);
  g_assert_cmpuint (p->max_attempts, ==, 3);
  g_assert_cmpstr (p->subject, ==, "CN=${login}");
  g_assert_cmpint (p->http_auth, ==, P11C_EST_AUTH_AUTO);
  {
    g_autoptr(P11cCaProfile) d = p11c_ca_profile_parse ("d",
        "[ca]\nurl=https://a\ntrust-anchor=/x\nhttp-auth=digest\n", -1, &error);
    g_assert_no_error (error);
    g_assert_cmpint (d->http_auth, ==, P11C_EST_AUTH_DIGEST);
  }
  {
    g_autoptr(P11cCaProfile) s = p11c_ca_profile_parse ("s",
        "[ca]\ntype=scep\nurl=http://ca.example/scep\n"
        "ca-fingerprint=3F:0A:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE\n",
        -1, &error);
    g_assert_no_error (error);
    g_assert_cmpint (s->type, ==, P11C_CA_SCEP);
    g_assert_cmpint (s->key_type, ==, P11C_KEY_RSA_2048);   /* SCEP's default */
    g_assert_cmpuint (s->poll_interval, ==, 60);
    g_assert_cmpstr (p11c_ca_type_to_string (s->type), ==, "scep");
  }
  {
    const char *bad[][2] = {
      { "x", "[ca]\nurl=http://plain\ntrust-anchor=/x\n" },
      { "x", "[ca]\nurl=https://a\n" },
      { "x", "[ca]\ntype=magic\n" },
      { "x", "[ca]\nurl=https://a\ntrust-anchor=/x\nkey-type=dsa\n" },
      { "x", "[ca]\nurl=https://a\ntrust-anchor=/x\nhttp-auth=ntlm\n" },
      /* scep: no way to trust the CA, a bad fingerprint, EC, not http(s), a query */
      { "x", "[ca]\ntype=scep\nurl=http://a/scep\n" },
      { "x", "[ca]\ntype=scep\nurl=http://a/scep\nca-fingerprint=abcd\n" },
      { "x", "[ca]\ntype=scep\nurl=http://a/scep\ntrust-anchor=/x\nkey-type=ec-p256\n" },
      { "x", "[ca]\ntype=scep\nurl=ftp://a/scep\ntrust-anchor=/x\n" },
      { "x", "[ca]\ntype=scep\nurl=http://a/scep?x=1\ntrust-anchor=/x\n" },
      { "x", "[ca]\nurl=https://a\ntrust-anchor=/x\nlabel=../x\n" },
      { "x", "[ca]\nurl=https://a\ntrust-anchor=/x\nmax-attempts=0\n" },
      { "../evil", "[ca]\ntype=local\n" },
    };
    for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
      {
        g_autoptr(GError) e = NULL;
        g_autoptr(P11cCaProfile) q = p11c_ca_profile_parse (bad[i][0], bad[i][1], -1, &e);
        g_assert_null (q);
        g_assert_error (e, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
      }
  }
}

static void
test_names (void)
{
  g_assert_true (p11c_name_is_valid ("nginx-01.example_a"));
  g_assert_false (p11c_name_is_valid (""));
  g_assert_false (p11c_name_is_valid (".."));
  g_assert_false (p11c_name_is_valid ("a/b"));
  g_assert_false (p11c_name_is_valid (".hidden"));
  g_assert_false (p11c_name_is_valid ("ä"));
  g_assert_false (p11c_name_is_valid ("01234567890123456789012345678901234567890123456789012345678901234"));
}

static void
test_vardict (void)
{
  static const P11cKeySpec spec[] = { { "name", "s", TRUE }, { "flag", "b", FALSE }, { NULL } };
  g_autoptr(GVariant) ok = g_variant_ref_sink (g_variant_new_parsed ("{'name': <'x'>, 'flag': <true>}"));
  g_autoptr(GVariant) missing = g_variant_ref_sink (g_variant_new_parsed ("{'flag': <true>}"));
  g_autoptr(GVariant) wrong = g_variant_ref_sink (g_variant_new_parsed ("{'name': <5>}"));
  g_autoptr(GVariant) unknown = g_variant_ref_sink (g_variant_new_parsed ("{'name': <'x'>, 'nmae': <'y'>}"));
  g_autoptr(GError) e1 = NULL, e2 = NULL, e3 = NULL;

  g_assert_true (p11c_vardict_validate (ok, spec, NULL));
  g_assert_false (p11c_vardict_validate (missing, spec, &e1));
  g_assert_nonnull (strstr (e1->message, "\"name\""));
  g_assert_false (p11c_vardict_validate (wrong, spec, &e2));
  g_assert_nonnull (strstr (e2->message, "\"name\""));
  g_assert_false (p11c_vardict_validate (unknown, spec, &e3));
  g_assert_nonnull (strstr (e3->message, "nmae"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/config/defaults", test_defaults);
  g_test_add_func ("/config/values", test_values);
  g_test_add_func ("/config/module-init-args", test_module_init_args);
  g_test_add_func ("/config/bad", test_bad_config);
  g_test_add_func ("/config/profiles", test_profiles);
  g_test_add_func ("/config/default-ca", test_default_ca);
  g_test_add_func ("/config/names", test_names);
  g_test_add_func ("/config/vardict", test_vardict);
  return g_test_run ();
}
