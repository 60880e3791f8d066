/* The wire codec (common/p11c-wire.c): every dictionary the D-Bus API
 * carries, typed → a{sv} → typed, through the serialized form (as on the
 * bus); validation of requests (unknown keys, wrong types, missing keys);
 * job properties split for other users. */
#include "p11c-wire.h"
#include "p11c-error.h"
#include <string.h>

/* What a peer receives: the bytes, read back untrusted */
static GVariant *
over_the_wire (GVariant *v)
{
  g_autoptr(GVariant) sunk = g_variant_ref_sink (v);
  g_autoptr(GBytes) bytes = g_variant_get_data_as_bytes (sunk);
  return g_variant_ref_sink (g_variant_new_from_bytes (g_variant_get_type (sunk), bytes, FALSE));
}

static void
test_enroll (void)
{
  P11cEnrollParams in = {
    .ca = "agents", .storage = "file", .token = "/org/p11certd/tokens/x", .login = "alice",
    .otp = "otp-1", .pin = "1234", .password = "Secret-42", .key_type = "rsa-2048",
    .subject = "CN=alice", .label = "mine", .name = "web", .has_fd = TRUE, .fd_index = 3,
    .allow_interaction = TRUE,
  };
  P11cEnrollParams out;
  g_autoptr(GVariant) dict = over_the_wire (p11c_wire_enroll_to_variant (&in));
  g_autoptr(GError) error = NULL;

  g_assert_true (p11c_wire_enroll_from_variant (dict, &out, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (out.ca, ==, in.ca);
  g_assert_cmpstr (out.storage, ==, in.storage);
  g_assert_cmpstr (out.token, ==, in.token);
  g_assert_cmpstr (out.login, ==, in.login);
  g_assert_cmpstr (out.otp, ==, in.otp);
  g_assert_cmpstr (out.pin, ==, in.pin);
  g_assert_cmpstr (out.password, ==, in.password);
  g_assert_cmpstr (out.key_type, ==, in.key_type);
  g_assert_cmpstr (out.subject, ==, in.subject);
  g_assert_cmpstr (out.label, ==, in.label);
  g_assert_cmpstr (out.name, ==, in.name);
  g_assert_true (out.has_fd);
  g_assert_cmpint (out.fd_index, ==, 3);
  g_assert_true (out.allow_interaction);
  g_assert_cmpstr (p11c_wire_enroll_peek_storage (dict), ==, "file");
  g_assert_cmpstr (p11c_wire_enroll_peek_ca (dict), ==, "agents");
  p11c_enroll_params_clear (&out);
  g_assert_null (out.pin);

  /* the minimum: absent keys stay NULL / FALSE */
  {
    P11cEnrollParams min = { .ca = "local" };
    g_autoptr(GVariant) d = over_the_wire (p11c_wire_enroll_to_variant (&min));
    g_assert_true (p11c_wire_enroll_from_variant (d, &out, NULL));
    g_assert_cmpstr (out.ca, ==, "local");
    g_assert_null (out.storage);
    g_assert_null (out.pin);
    g_assert_false (out.has_fd);
    g_assert_cmpstr (p11c_wire_enroll_peek_storage (d), ==, "token");
    p11c_enroll_params_clear (&out);
  }
}

static void
assert_refused (GVariant *dict, const char *mentions)
{
  g_autoptr(GVariant) d = g_variant_ref_sink (dict);
  g_autoptr(GError) error = NULL;
  P11cEnrollParams out;

  g_assert_false (p11c_wire_enroll_from_variant (d, &out, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);
  g_assert_nonnull (strstr (error->message, mentions));
  g_assert_null (out.ca);
}

static void
test_enroll_invalid (void)
{
  assert_refused (g_variant_new_parsed ("@a{sv} {'storage': <'token'>}"), "\"ca\"");
  assert_refused (g_variant_new_parsed ("{'ca': <'x'>, 'colour': <'red'>}"), "\"colour\"");
  assert_refused (g_variant_new_parsed ("{'ca': <'x'>, 'pin': <1234>}"), "\"pin\"");
  assert_refused (g_variant_new_parsed ("{'ca': <'x'>, 'fd': <'3'>}"), "\"fd\"");
  /* the polkit check reads an unvalidated dictionary without trusting it */
  {
    g_autoptr(GVariant) d = g_variant_ref_sink (g_variant_new_parsed ("{'ca': <7>, 'storage': <true>}"));
    g_assert_cmpstr (p11c_wire_enroll_peek_ca (d), ==, "");
    g_assert_cmpstr (p11c_wire_enroll_peek_storage (d), ==, "token");
  }
}

static void
test_renew_list_options (void)
{
  P11cRenewParams r = { .pin = "1234", .rekey = FALSE, .allow_interaction = TRUE }, r2;
  P11cListParams l = { .token = "pkcs11:token=agent", .storage = "token" }, l2;
  P11cOptions o = { .keep_key = TRUE, .allow_interaction = TRUE }, o2;
  g_autoptr(GVariant) rd = over_the_wire (p11c_wire_renew_to_variant (&r));
  g_autoptr(GVariant) ld = over_the_wire (p11c_wire_list_to_variant (&l));
  g_autoptr(GVariant) od = over_the_wire (p11c_wire_options_to_variant (&o, TRUE));
  g_autoptr(GVariant) empty = g_variant_ref_sink (g_variant_new_parsed ("@a{sv} {}"));
  g_autoptr(GError) error = NULL;

  g_assert_true (p11c_wire_renew_from_variant (rd, &r2, NULL));
  g_assert_cmpstr (r2.pin, ==, "1234");
  g_assert_false (r2.rekey);
  g_assert_true (r2.allow_interaction);
  p11c_renew_params_clear (&r2);
  g_assert_true (p11c_wire_renew_from_variant (empty, &r2, NULL));
  g_assert_true (r2.rekey);   /* the default */
  g_assert_null (r2.pin);
  p11c_renew_params_clear (&r2);

  g_assert_true (p11c_wire_list_from_variant (ld, &l2, NULL));
  g_assert_cmpstr (l2.token, ==, l.token);
  g_assert_cmpstr (l2.storage, ==, l.storage);
  p11c_list_params_clear (&l2);

  g_assert_true (p11c_wire_options_from_variant (od, TRUE, &o2, NULL));
  g_assert_true (o2.keep_key && o2.allow_interaction);
  /* keep_key belongs to DeleteCert only */
  g_assert_false (p11c_wire_options_from_variant (od, FALSE, &o2, &error));
  g_assert_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS);

  {
    g_autoptr(GVariant) params = g_variant_ref_sink (g_variant_new ("(s@a{sv})", "x", p11c_wire_options_to_variant (&o, FALSE)));
    g_autoptr(GVariant) none = g_variant_ref_sink (g_variant_new ("(s)", "x"));
    g_assert_true (p11c_wire_allow_interaction (params));
    g_assert_false (p11c_wire_allow_interaction (none));
  }
}

static void
test_cert (void)
{
  guint8 der[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
  g_autoptr(GBytes) bytes = g_bytes_new (der, sizeof der);
  P11cWireCert in = {
    .uri = "pkcs11:token=agent;id=%01;type=cert", .token = "/org/p11certd/tokens/t1", .storage = "token",
    .label = "agent", .id = "01", .der = bytes, .has_private_key = TRUE, .ca = "agents", .parsed = TRUE,
    .subject = "CN=agent", .issuer = "CN=CA", .serial = "01", .not_before = 1700000000,
    .not_after = 1800000000, .sha256 = "ab", .key_type = "ec-p256", .renewal_due = TRUE, .days_left = -3,
  };
  P11cWireCert out, bad_out;
  P11cWireCert bad = { .uri = "system:web", .storage = "system", .der = NULL, .error = "not PEM" };
  g_autoptr(GVariant) dict = over_the_wire (p11c_wire_cert_to_variant (&in));
  g_autoptr(GVariant) bad_dict = over_the_wire (p11c_wire_cert_to_variant (&bad));
  g_autoptr(GVariant) junk = g_variant_ref_sink (g_variant_new_parsed ("@a{sv} {'label': <'x'>}"));

  g_assert_true (p11c_wire_cert_from_variant (dict, &out, NULL));
  g_assert_cmpstr (out.uri, ==, in.uri);
  g_assert_cmpstr (out.token, ==, in.token);
  g_assert_cmpstr (out.storage, ==, in.storage);
  g_assert_cmpstr (out.label, ==, in.label);
  g_assert_cmpstr (out.id, ==, in.id);
  g_assert_true (g_bytes_equal (out.der, bytes));
  g_assert_true (out.has_private_key && out.parsed && out.renewal_due);
  g_assert_cmpstr (out.ca, ==, "agents");
  g_assert_cmpstr (out.subject, ==, in.subject);
  g_assert_cmpstr (out.issuer, ==, in.issuer);
  g_assert_cmpstr (out.serial, ==, in.serial);
  g_assert_cmpint (out.not_before, ==, in.not_before);
  g_assert_cmpint (out.not_after, ==, in.not_after);
  g_assert_cmpstr (out.sha256, ==, in.sha256);
  g_assert_cmpstr (out.key_type, ==, in.key_type);
  g_assert_cmpint (out.days_left, ==, -3);
  g_assert_null (out.error);
  p11c_wire_cert_clear (&out);

  /* one that does not parse: its error, no summary, no token ("/") */
  g_assert_true (p11c_wire_cert_from_variant (bad_dict, &bad_out, NULL));
  g_assert_false (bad_out.parsed);
  g_assert_cmpstr (bad_out.error, ==, "not PEM");
  g_assert_cmpstr (bad_out.token, ==, "/");
  g_assert_null (bad_out.subject);
  g_assert_cmpuint (g_bytes_get_size (bad_out.der), ==, 0);
  p11c_wire_cert_clear (&bad_out);

  g_assert_false (p11c_wire_cert_from_variant (junk, &out, NULL));
}

static void
test_token (void)
{
  P11cWireToken in = {
    .path = "/org/p11certd/tokens/t1", .label = "agent", .serial = "42", .manufacturer = "SoftHSM project",
    .model = "SoftHSM v2", .slot = "slot 0", .uri = "pkcs11:token=agent", .module = "softhsm2",
    .present = TRUE, .login_required = TRUE, .pin_final_try = TRUE,
  };
  P11cWireToken out;
  g_autoptr(GVariant) dict = over_the_wire (p11c_wire_token_to_variant (&in));
  g_autoptr(GVariant) props = g_variant_ref_sink (p11c_wire_token_props_to_variant (&in));
  const char *label = NULL;
  gboolean final_try = FALSE;

  p11c_wire_token_from_variant (dict, &out);
  g_assert_cmpstr (out.path, ==, in.path);
  g_assert_cmpstr (out.label, ==, in.label);
  g_assert_cmpstr (out.serial, ==, in.serial);
  g_assert_cmpstr (out.manufacturer, ==, in.manufacturer);
  g_assert_cmpstr (out.model, ==, in.model);
  g_assert_cmpstr (out.slot, ==, in.slot);
  g_assert_cmpstr (out.uri, ==, in.uri);
  g_assert_cmpstr (out.module, ==, in.module);
  g_assert_true (out.present && out.login_required && out.pin_final_try);
  g_assert_false (out.pin_count_low || out.pin_locked);
  p11c_wire_token_clear (&out);

  /* the same fields as D-Bus properties */
  g_assert_true (g_variant_lookup (props, "Label", "&s", &label));
  g_assert_cmpstr (label, ==, "agent");
  g_assert_true (g_variant_lookup (props, "PinFinalTry", "b", &final_try));
  g_assert_true (final_try);
  g_assert_null (g_variant_lookup_value (props, "path", NULL));
}

static void
test_job (void)
{
  g_autoptr(GVariant) details = g_variant_ref_sink (g_variant_new_parsed ("{'pin_locked': <true>}"));
  P11cWireJob in = {
    .operation = "enroll", .state = "failed", .progress = 0.5, .attempt = 2, .retry_at = 1800000000,
    .error = "org.p11certd.Error.PinLocked", .error_message = "locked", .error_details = details,
    .result = "", .owner = 1000,
  };
  P11cWireJob out;
  g_autoptr(GVariant) props = over_the_wire (p11c_wire_job_to_variant (&in));
  GVariant *pub = NULL, *priv = NULL;
  gboolean locked = FALSE;

  p11c_wire_job_from_variant (props, &out);
  g_assert_cmpstr (out.operation, ==, "enroll");
  g_assert_cmpstr (out.state, ==, "failed");
  g_assert_cmpfloat (out.progress, ==, 0.5);
  g_assert_cmpuint (out.attempt, ==, 2);
  g_assert_cmpint (out.retry_at, ==, 1800000000);
  g_assert_cmpstr (out.error, ==, in.error);
  g_assert_cmpstr (out.error_message, ==, "locked");
  g_assert_true (g_variant_lookup (out.error_details, "pin_locked", "b", &locked) && locked);
  g_assert_cmpuint (out.owner, ==, 1000);
  p11c_wire_job_clear (&out);

  /* another user sees what runs and how far, nothing of whose or why */
  p11c_wire_job_split_props (props, &pub, &priv);
  g_variant_ref_sink (pub);
  g_variant_ref_sink (priv);
  p11c_wire_job_from_variant (pub, &out);
  g_assert_cmpstr (out.state, ==, "failed");
  g_assert_cmpstr (out.error, ==, "");
  g_assert_cmpuint (out.owner, ==, 0);
  g_assert_cmpuint (g_variant_n_children (out.error_details), ==, 0);
  p11c_wire_job_clear (&out);
  g_assert_nonnull (g_variant_lookup_value (priv, "Owner", NULL));
  g_assert_null (g_variant_lookup_value (priv, "State", NULL));
  g_assert_true (p11c_wire_job_property_is_public ("Progress"));
  g_assert_false (p11c_wire_job_property_is_public ("Result"));
  g_variant_unref (pub);
  g_variant_unref (priv);
}

static void
test_deleted (void)
{
  char *removed[] = { "pkcs11:token=a;id=%01;type=cert", "pkcs11:token=a;id=%01;type=private", NULL };
  P11cWireDeleted in = { .removed = removed, .certificate = removed[0], .keys_removed = 1 };
  P11cWireDeleted kept = { .removed = removed, .certificate = removed[0], .keys_kept = "shared",
                           .keys_shared_with = 2 };
  g_autoptr(GVariant) dict = over_the_wire (p11c_wire_deleted_to_variant (&in));
  g_autoptr(GVariant) dict2 = over_the_wire (p11c_wire_deleted_to_variant (&kept));
  P11cWireDeleted out;

  p11c_wire_deleted_from_variant (dict, &out);
  g_assert_cmpstrv (out.removed, (const char *const *) removed);
  g_assert_cmpstr (out.certificate, ==, removed[0]);
  g_assert_cmpuint (out.keys_removed, ==, 1);
  g_assert_null (out.keys_kept);
  g_assert_cmpuint (out.keys_shared_with, ==, 0);
  g_assert_null (g_variant_lookup_value (dict, "keys_shared_with", NULL));   /* absent, as before */
  p11c_wire_deleted_clear (&out);
  p11c_wire_deleted_from_variant (dict2, &out);
  g_assert_cmpstr (out.keys_kept, ==, "shared");
  g_assert_cmpuint (out.keys_shared_with, ==, 2);
  p11c_wire_deleted_clear (&out);
}

static void
test_due (void)
{
  char *jobs[] = { "/org/p11certd/jobs/7", NULL };
  char *person[] = { "pkcs11:token=a;id=%01;type=cert", NULL };
  char *none[] = { NULL };
  g_autoptr(GHashTable) reasons = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr(GHashTable) codes = g_hash_table_new (g_str_hash, g_str_equal);
  P11cWireDue in = { .jobs = jobs, .needs_person = person, .not_renewable = none,
                     .reasons = reasons, .reason_codes = codes }, out;
  g_autoptr(GVariant) dict = NULL;

  g_hash_table_insert (reasons, person[0], "no PIN file");
  g_hash_table_insert (codes, person[0], "pin-needed");
  dict = over_the_wire (p11c_wire_due_to_variant (&in));
  p11c_wire_due_from_variant (dict, &out);
  g_assert_cmpstrv (out.jobs, (const char *const *) jobs);
  g_assert_cmpstrv (out.needs_person, (const char *const *) person);
  g_assert_cmpstrv (out.not_renewable, (const char *const *) none);
  g_assert_cmpstr (g_hash_table_lookup (out.reasons, person[0]), ==, "no PIN file");
  g_assert_cmpstr (g_hash_table_lookup (out.reason_codes, person[0]), ==, "pin-needed");
  p11c_wire_due_clear (&out);
}

static void
test_ca (void)
{
  P11cWireCa in = { .name = "agents", .type = "est", .url = "https://ca.example/", .label = "", .key_type = "ec-p256",
                    .needs_login = TRUE, .needs_otp = TRUE, .otp_name = "one-time password", .is_default = TRUE };
  g_autoptr(GVariant) dict = over_the_wire (p11c_wire_ca_to_variant (&in));
  P11cWireCa out;

  p11c_wire_ca_from_variant (dict, &out);
  g_assert_cmpstr (out.name, ==, "agents");
  g_assert_cmpstr (out.type, ==, "est");
  g_assert_cmpstr (out.url, ==, in.url);
  g_assert_cmpstr (out.label, ==, "");
  g_assert_cmpstr (out.key_type, ==, "ec-p256");
  g_assert_true (out.needs_login && out.needs_otp && out.is_default);
  g_assert_cmpstr (out.otp_name, ==, in.otp_name);
  p11c_wire_ca_clear (&out);
}

static void
test_signals (void)
{
  P11cWireTokenEvent te = { .token = "/org/p11certd1/tokens/t1", .label = "agent", .serial = "42",
                            .manufacturer = "SoftHSM", .uri = "pkcs11:token=agent", .reader = "vpcd 0",
                            .recognized = TRUE, .atr = "3B00" };
  P11cWireTokenEvent bare = { .reader = "vpcd 1" };
  P11cWireCardEvent ce = { .reader = "vpcd 0", .atr = "3BFF" };
  P11cWireRenewalNeeded rn = { .uri = "pkcs11:id=%01", .not_after = 1900000000, .subject = "CN=a",
                               .token = "/org/p11certd1/tokens/t1", .ca = "agents", .days_left = 3,
                               .reason = "needs its PIN", .reason_code = "pin-needed" };
  P11cWireExpiring ex = { .uri = "pkcs11:id=%02", .not_after = -5 };
  g_autoptr(GVariant) v = NULL;
  g_autoptr(GVariant) wrong = g_variant_ref_sink (g_variant_new ("(sx)", "x", (gint64) 1));
  P11cWireTokenEvent te2;
  P11cWireCardEvent ce2;
  P11cWireRenewalNeeded rn2;
  P11cWireExpiring ex2;

  v = over_the_wire (p11c_wire_token_event_to_variant (&te));
  g_assert_true (p11c_wire_token_event_from_variant (v, &te2));
  g_assert_cmpstr (te2.token, ==, te.token);
  g_assert_cmpstr (te2.label, ==, "agent");
  g_assert_cmpstr (te2.serial, ==, "42");
  g_assert_cmpstr (te2.manufacturer, ==, "SoftHSM");
  g_assert_cmpstr (te2.uri, ==, te.uri);
  g_assert_cmpstr (te2.reader, ==, "vpcd 0");
  g_assert_cmpstr (te2.atr, ==, "3B00");
  g_assert_true (te2.recognized);
  p11c_wire_token_event_clear (&te2);
  g_clear_pointer (&v, g_variant_unref);

  /* a card no module recognises: "/", no module fields, no atr key */
  v = over_the_wire (p11c_wire_token_event_to_variant (&bare));
  g_assert_cmpstr (g_variant_get_type_string (v), ==, "(oa{sv})");
  g_assert_true (p11c_wire_token_event_from_variant (v, &te2));
  g_assert_cmpstr (te2.token, ==, "/");
  g_assert_false (te2.recognized);
  g_assert_null (te2.label);
  g_assert_null (te2.atr);
  g_assert_cmpstr (te2.reader, ==, "vpcd 1");
  {
    g_autoptr(GVariant) info = g_variant_ref_sink (p11c_wire_token_event_info (&te2));
    g_assert_cmpuint (g_variant_n_children (info), ==, 2);   /* reader, recognized */
  }
  p11c_wire_token_event_clear (&te2);
  g_clear_pointer (&v, g_variant_unref);
  g_assert_false (p11c_wire_token_event_from_variant (wrong, &te2));

  v = over_the_wire (p11c_wire_card_event_to_variant (&ce));
  g_assert_true (p11c_wire_card_event_from_variant (v, &ce2));
  g_assert_cmpstr (ce2.reader, ==, "vpcd 0");
  g_assert_cmpstr (ce2.atr, ==, "3BFF");
  p11c_wire_card_event_clear (&ce2);
  g_clear_pointer (&v, g_variant_unref);
  ce.atr = NULL;   /* CardRemoved: empty info */
  v = over_the_wire (p11c_wire_card_event_to_variant (&ce));
  {
    g_autofree char *text = g_variant_print (v, FALSE);
    g_assert_cmpstr (text, ==, "('vpcd 0', {})");
  }
  g_assert_false (p11c_wire_card_event_from_variant (wrong, &ce2));
  g_clear_pointer (&v, g_variant_unref);

  v = over_the_wire (p11c_wire_renewal_needed_to_variant (&rn));
  g_assert_true (p11c_wire_renewal_needed_from_variant (v, &rn2));
  g_assert_cmpstr (rn2.uri, ==, rn.uri);
  g_assert_cmpint (rn2.not_after, ==, 1900000000);
  g_assert_cmpstr (rn2.subject, ==, "CN=a");
  g_assert_cmpstr (rn2.token, ==, rn.token);
  g_assert_cmpstr (rn2.ca, ==, "agents");
  g_assert_cmpint (rn2.days_left, ==, 3);
  g_assert_cmpstr (rn2.reason, ==, rn.reason);
  g_assert_cmpstr (rn2.reason_code, ==, "pin-needed");
  p11c_wire_renewal_needed_clear (&rn2);
  g_clear_pointer (&v, g_variant_unref);
  rn.token = NULL;   /* system store: no token key */
  v = over_the_wire (p11c_wire_renewal_needed_to_variant (&rn));
  g_assert_true (p11c_wire_renewal_needed_from_variant (v, &rn2));
  g_assert_null (rn2.token);
  p11c_wire_renewal_needed_clear (&rn2);
  g_assert_false (p11c_wire_renewal_needed_from_variant (wrong, &rn2));
  g_clear_pointer (&v, g_variant_unref);

  v = over_the_wire (p11c_wire_expiring_to_variant (&ex));
  g_assert_true (p11c_wire_expiring_from_variant (v, &ex2));
  g_assert_cmpstr (ex2.uri, ==, ex.uri);
  g_assert_cmpint (ex2.not_after, ==, -5);
  p11c_wire_expiring_clear (&ex2);
  {
    g_autoptr(GVariant) card = g_variant_ref_sink (p11c_wire_card_event_to_variant (&ce));
    g_assert_false (p11c_wire_expiring_from_variant (card, &ex2));
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/wire/enroll", test_enroll);
  g_test_add_func ("/wire/enroll-invalid", test_enroll_invalid);
  g_test_add_func ("/wire/renew-list-options", test_renew_list_options);
  g_test_add_func ("/wire/cert", test_cert);
  g_test_add_func ("/wire/token", test_token);
  g_test_add_func ("/wire/job", test_job);
  g_test_add_func ("/wire/deleted", test_deleted);
  g_test_add_func ("/wire/due", test_due);
  g_test_add_func ("/wire/ca", test_ca);
  g_test_add_func ("/wire/signals", test_signals);
  return g_test_run ();
}
