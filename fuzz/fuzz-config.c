/* fuzz-config: the daemon configuration and CA profile files (GKeyFile).
 * p11c_config_parse and p11c_ca_profile_parse ("x", …) on the raw bytes;
 * whatever parses must satisfy the ranges the parser promises. */
#include "fuzz-common.h"
#include "p11c-config.h"
#include "p11c-names.h"

P11C_FUZZ_INITIALIZE

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(P11cConfig) config = NULL;
  g_autoptr(P11cCaProfile) profile = NULL;

  if (size > 1024 * 1024)
    return 0;

  config = p11c_config_parse ((const char *) data, size, "fuzz.conf", &error);
  if (config == NULL)
    P11C_FUZZ_ASSERT (error != NULL);
  else
    {
      P11C_FUZZ_ASSERT (error == NULL);
      P11C_FUZZ_ASSERT (config->state_dir && config->ca_dir);
      P11C_FUZZ_ASSERT (config->modules && config->modules[0]);
      P11C_FUZZ_ASSERT (config->job_linger <= 86400);
      P11C_FUZZ_ASSERT (config->pin_policy.min_length >= 1
                        && config->pin_policy.min_length <= P11C_SECRET_MAX);
      P11C_FUZZ_ASSERT (config->window_days <= 3650 && config->warn_days <= 3650);
      /* the policy of a parsed config is usable */
      {
        g_autofree char *desc = p11c_pin_policy_describe (&config->pin_policy);
        g_autoptr(GVariant) v = g_variant_ref_sink (p11c_pin_policy_to_variant (&config->pin_policy));
        P11C_FUZZ_ASSERT (desc != NULL && v != NULL);
      }
    }
  g_clear_error (&error);

  profile = p11c_ca_profile_parse ("x", (const char *) data, size, &error);
  if (profile == NULL)
    P11C_FUZZ_ASSERT (error != NULL);
  else
    {
      P11C_FUZZ_ASSERT (error == NULL);
      P11C_FUZZ_ASSERT (g_str_equal (profile->name, "x"));
      P11C_FUZZ_ASSERT (profile->subject != NULL);
      P11C_FUZZ_ASSERT (profile->connect_timeout >= 1 && profile->connect_timeout <= 600);
      P11C_FUZZ_ASSERT (profile->timeout >= 1 && profile->timeout <= 3600);
      P11C_FUZZ_ASSERT (profile->max_attempts >= 1 && profile->max_attempts <= 10);
      P11C_FUZZ_ASSERT (profile->validity_days >= 1 && profile->validity_days <= 3650);
      if (profile->type == P11C_CA_EST)
        {
          P11C_FUZZ_ASSERT (profile->url && g_str_has_prefix (profile->url, "https://"));
          P11C_FUZZ_ASSERT (profile->trust_anchor != NULL);
          P11C_FUZZ_ASSERT (profile->label == NULL || p11c_name_is_valid (profile->label));
        }
    }
  return 0;
}
