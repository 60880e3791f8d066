/* CKA_EC_POINT decoding: DER OCTET STRING (the standard) and the raw point
 * (what some tokens return), told apart by length and shape. */
#include "p11c-pkcs11.h"
#include "p11c-error.h"
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <string.h>


typedef struct {
  const char *group;
  gsize       field_len;
} Curve;

static const Curve p256 = { "P-256", 32 };
static const Curve p384 = { "P-384", 48 };

/* A key whose uncompressed point is 04|X|Y; with @x0 >= 0, one whose X[0]
 * equals @x0 (keys are generated until one fits: 1 in 256). */
static EVP_PKEY *
make_key (const Curve *c, int x0, guint8 *point, gsize *len)
{
  for (int i = 0; i < 100000; i++)
    {
      EVP_PKEY *key = EVP_PKEY_Q_keygen (NULL, NULL, "EC", c->group);

      g_assert_nonnull (key);
      g_assert_true (EVP_PKEY_set_utf8_string_param (key, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                                     OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED));
      g_assert_true (EVP_PKEY_get_octet_string_param (key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                                      point, 1 + 2 * c->field_len, len));
      g_assert_cmpuint (*len, ==, 1 + 2 * c->field_len);
      g_assert_cmpuint (point[0], ==, 0x04);
      if (x0 < 0 || point[1] == x0)
        return key;
      EVP_PKEY_free (key);
    }
  g_assert_not_reached ();
}

/* The decoded point must give back the very same public key. */
static void
assert_same_key (const Curve *c, EVP_PKEY *key, const guint8 *xy, gsize xy_len)
{
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new ();
  OSSL_PARAM *params;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name (NULL, "EC", NULL);
  EVP_PKEY *back = NULL;

  OSSL_PARAM_BLD_push_utf8_string (bld, OSSL_PKEY_PARAM_GROUP_NAME, c->group, 0);
  OSSL_PARAM_BLD_push_octet_string (bld, OSSL_PKEY_PARAM_PUB_KEY, xy, xy_len);
  params = OSSL_PARAM_BLD_to_param (bld);
  g_assert_cmpint (EVP_PKEY_fromdata_init (ctx), >, 0);
  g_assert_cmpint (EVP_PKEY_fromdata (ctx, &back, EVP_PKEY_PUBLIC_KEY, params), >, 0);
  g_assert_cmpint (EVP_PKEY_eq (key, back), ==, 1);
  EVP_PKEY_free (back);
  EVP_PKEY_CTX_free (ctx);
  OSSL_PARAM_free (params);
  OSSL_PARAM_BLD_free (bld);
}

static void
check_both_encodings (const Curve *c, int x0)
{
  guint8 point[97], der[99];
  gsize len, out_len = 0;
  g_autoptr(EVP_PKEY) key = make_key (c, x0, point, &len);
  const guint8 *out;
  GError *error = NULL;

  /* raw 04|X|Y: taken as is, even when X[0] makes it look like DER */
  out = p11c_ec_point_unwrap (point, len, c->field_len, &out_len, &error);
  g_assert_no_error (error);
  g_assert_true (out == point);
  g_assert_cmpuint (out_len, ==, len);
  assert_same_key (c, key, out, out_len);

  /* DER OCTET STRING 04 L 04|X|Y */
  der[0] = 0x04;
  der[1] = len;
  memcpy (der + 2, point, len);
  out = p11c_ec_point_unwrap (der, len + 2, c->field_len, &out_len, &error);
  g_assert_no_error (error);
  g_assert_true (out == der + 2);
  g_assert_cmpuint (out_len, ==, len);
  assert_same_key (c, key, out, out_len);
}

static void
test_p256_raw_and_der (void)
{
  for (int i = 0; i < 16; i++)
    check_both_encodings (&p256, -1);
}

static void
test_p384_raw_and_der (void)
{
  for (int i = 0; i < 16; i++)
    check_both_encodings (&p384, -1);
}

/* X[0] == 63: 04 3f … parses as a complete 63-byte DER OCTET STRING */
static void
test_p256_raw_looks_like_der (void)
{
  check_both_encodings (&p256, 63);
}

/* X[0] == 95 for P-384 likewise */
static void
test_p384_raw_looks_like_der (void)
{
  check_both_encodings (&p384, 95);
}

static void
test_compressed (void)
{
  guint8 raw[33] = { 0x03 }, der[35] = { 0x04, 33, 0x02 };
  gsize out_len = 0;
  GError *error = NULL;

  g_assert_true (p11c_ec_point_unwrap (raw, sizeof raw, 32, &out_len, &error) == raw);
  g_assert_no_error (error);
  g_assert_cmpuint (out_len, ==, 33);
  g_assert_true (p11c_ec_point_unwrap (der, sizeof der, 32, &out_len, &error) == der + 2);
  g_assert_no_error (error);
  g_assert_cmpuint (out_len, ==, 33);
}

static void
test_malformed (void)
{
  guint8 point[97];
  guint8 der[99];
  gsize len, out_len = 0;
  g_autoptr(EVP_PKEY) key = make_key (&p384, -1, point, &len);   /* fills point */
  struct { const guint8 *q; gsize len; gsize field_len; } bad[] = {
    { point, 97, 32 },          /* P-384 point on a P-256 key */
    { point, 64, 32 },          /* truncated */
    { point, 96, 48 },
    { point, 1, 48 },
    { point, 0, 48 },
    { der, 99, 32 },            /* DER P-384 point on a P-256 key */
    { der, 98, 48 },            /* DER length disagrees with the data */
  };

  g_assert_nonnull (key);
  der[0] = 0x04;
  der[1] = 97;
  memcpy (der + 2, point, 97);
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      GError *error = NULL;

      g_assert_null (p11c_ec_point_unwrap (bad[i].q, bad[i].len, bad[i].field_len, &out_len, &error));
      g_assert_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR);
      g_clear_error (&error);
    }
  /* wrong prefix inside a well-sized DER wrapper */
  der[2] = 0x05;
  {
    GError *error = NULL;
    g_assert_null (p11c_ec_point_unwrap (der, 99, 48, &out_len, &error));
    g_assert_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR);
    g_clear_error (&error);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/ec-point/p256/raw-and-der", test_p256_raw_and_der);
  g_test_add_func ("/ec-point/p384/raw-and-der", test_p384_raw_and_der);
  g_test_add_func ("/ec-point/p256/raw-x0-63", test_p256_raw_looks_like_der);
  g_test_add_func ("/ec-point/p384/raw-x0-95", test_p384_raw_looks_like_der);
  g_test_add_func ("/ec-point/compressed", test_compressed);
  g_test_add_func ("/ec-point/malformed", test_malformed);
  return g_test_run ();
}
