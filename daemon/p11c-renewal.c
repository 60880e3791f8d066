#define G_LOG_DOMAIN "p11c-renewal"
#include "p11c-renewal.h"
#include "p11c-cert.h"
#include "p11c-error.h"
#include "p11c-secret.h"
#include "p11c-store.h"
#include <string.h>

static void
found_free (P11cFoundCert *f)
{
  p11c_cert_entry_unref (f->entry);
  g_clear_pointer (&f->token, p11c_token_unref);
  g_free (f);
}

static void
add_found (GPtrArray *out, P11cCertEntry *e, P11cToken *t)
{
  P11cFoundCert *f = g_new0 (P11cFoundCert, 1);
  f->entry = p11c_cert_entry_ref (e);
  f->token = t ? p11c_token_ref (t) : NULL;
  g_ptr_array_add (out, f);
}

GPtrArray *
p11c_renewal_collect (P11cEngine *engine, GPtrArray *tokens, GPtrArray **listed)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) found_free);
  g_autoptr(GPtrArray) sys = p11c_system_store_list (p11c_engine_get_config (engine)->state_dir);

  if (listed != NULL)
    *listed = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_token_unref);
  for (guint i = 0; tokens && i < tokens->len; i++)
    {
      P11cToken *t = tokens->pdata[i];
      g_autoptr(GError) local = NULL;
      g_autoptr(GPtrArray) certs = p11c_token_list_certs (t, &local);
      if (certs == NULL)
        {
          g_message ("Listing certificates on %s failed: %s", p11c_token_get_id (t), local ? local->message : "unknown error");
          continue;
        }
      if (listed != NULL)
        g_ptr_array_add (*listed, p11c_token_ref (t));
      for (guint j = 0; j < certs->len; j++)
        add_found (out, certs->pdata[j], t);
    }
  for (guint j = 0; j < sys->len; j++)
    add_found (out, sys->pdata[j], NULL);
  return out;
}

/* ---- the renewal window ------------------------------------------------- */

gboolean
p11c_renewal_due (gint64 not_before, gint64 not_after, gint64 now,
                  guint window_days, gint64 *days_left)
{
  gint64 lifetime = not_after - not_before;
  gint64 left = not_after - now;
  gint64 two_thirds = not_before + (lifetime > 0 ? lifetime * 2 / 3 : 0);

  if (days_left)
    *days_left = left >= 0 ? left / 86400 : -((-left + 86399) / 86400);
  if (now >= two_thirds)
    return TRUE;
  return left < (gint64) window_days * 86400;
}

/* Is @f the certificate @rec was written as — on the token it names, or
 * the system store entry it names?  When not, @why says where it belongs. */
static gboolean
found_in_place (const P11cFoundCert *f, const P11cIssued *rec, GError **why)
{
  g_autofree char *recorded = NULL;

  if (f->token != NULL)
    {
      CK_TOKEN_INFO info;
      p11c_token_get_info (f->token, &info, NULL);
      if (p11c_issued_is_on_token (rec, &info))
        return TRUE;
      if (g_str_equal (rec->storage, "token"))
        recorded = p11c_issued_describe_token (rec);
      else
        recorded = g_strdup_printf ("the system store as %s", rec->uri ? rec->uri : "?");
    }
  else
    {
      if (g_str_equal (rec->storage, "system") && g_strcmp0 (rec->uri, f->entry->uri) == 0)
        return TRUE;
      recorded = g_str_equal (rec->storage, "token") ? p11c_issued_describe_token (rec)
                                                     : g_strdup (rec->uri ? rec->uri : "another place");
    }
  g_set_error (why, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED,
               "The certificate %s is a copy: p11certd issued it into %s, and only that one can be renewed. "
               "Nothing was renewed", f->entry->uri, recorded);
  return FALSE;
}

/* The renewal request of @f (recorded as @rec, issued by @profile). */
static P11cEnrollRequest *
request_for (P11cEngine *engine, const P11cFoundCert *f, const P11cIssued *rec, const P11cCaProfile *profile,
             const char *pin, const char *pin_file, gboolean rekey, GError **error)
{
  const guint8 *der;
  gsize len;
  g_autoptr(X509) cert = NULL;
  g_autoptr(X509) current = NULL;
  g_autoptr(EVP_PKEY) key = NULL;
  g_autofree char *kt = NULL;
  P11cRenewSpec spec = { 0 };

  der = g_bytes_get_data (f->entry->der, &len);
  cert = d2i_X509 (NULL, &der, len);
  if (cert == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "The certificate to renew is unreadable");
      return NULL;
    }
  spec.ca = profile;
  spec.old_cert = cert;
  spec.rekey = rekey;
  spec.enrolled_by = rec->enrolled_by;
  spec.key_type = profile->key_type;
  kt = p11c_pkey_type_name (X509_get0_pubkey (cert));
  p11c_key_type_from_string (kt, &spec.key_type);   /* keep the key type */
  if (f->token != NULL)
    {
      if (pin == NULL)
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                       "Missing required key \"pin\" (the token PIN) to renew a token certificate");
          return NULL;
        }
      if (!p11c_secret_check (pin, "PIN", error))
        return NULL;
      spec.token = f->token;
      spec.old_id = f->entry->id;
      spec.label = f->entry->label;
      spec.pin = pin;
      spec.pin_file = pin_file;
    }
  else
    {
      spec.name = f->entry->label;
      if (!p11c_system_store_load (p11c_engine_get_config (engine)->state_dir, spec.name, &current, &key, error))
        return NULL;
      spec.old_key = key;
    }
  return p11c_enroll_request_new_renewal (engine, &spec);
}

P11cEnrollRequest *
p11c_renewal_resolve (P11cEngine *engine, GPtrArray *tokens, const char *uri, const char *pin,
                      gboolean rekey, GError **error)
{
  g_autoptr(GPtrArray) all = p11c_renewal_collect (engine, tokens, NULL);
  g_autoptr(P11cIssued) rec = NULL;
  const P11cFoundCert *found = NULL;
  const P11cCaProfile *profile;

  for (guint i = 0; i < all->len && found == NULL; i++)
    if (g_str_equal (((P11cFoundCert *) all->pdata[i])->entry->uri, uri))
      found = all->pdata[i];
  if (found == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
                   "No certificate %s (is the token inserted?)", uri);
      return NULL;
    }
  if (found->entry->summary != NULL)
    rec = p11c_records_lookup (p11c_engine_get_records (engine), found->entry->summary->sha256);
  if (rec == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
                   "The certificate %s was not issued through a CA profile of p11certd, so it cannot be renewed "
                   "here; enroll a new one instead", uri);
      return NULL;
    }
  if (!found_in_place (found, rec, error))
    return NULL;
  profile = p11c_engine_find_ca (engine, rec->ca);
  if (profile == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
                   "The certificate was issued through CA profile \"%s\", which is not configured any more", rec->ca);
      return NULL;
    }
  return request_for (engine, found, rec, profile, pin, NULL, rekey, error);
}

/* ---- RenewDue ----------------------------------------------------------- */

void
p11c_due_plan_drop_system (P11cDuePlan *plan, const char *why)
{
  for (guint i = 0; i < plan->system_uris->len; i++)
    {
      const char *uri = plan->system_uris->pdata[i];
      g_ptr_array_add (plan->not_renewable, g_strdup (uri));
      g_hash_table_replace (plan->why_not, g_strdup (uri), g_strdup (why));
      g_hash_table_replace (plan->why_not_code, g_strdup (uri), g_strdup ("not-authorized"));
    }
  g_ptr_array_set_size (plan->system_requests, 0);
  g_ptr_array_set_size (plan->system_uris, 0);
}

static void
needs_person_free (P11cNeedsPerson *n)
{
  g_free (n->uri);
  g_free (n->subject);
  g_free (n->ca);
  g_free (n->reason);
  g_free (n->reason_code);
  g_clear_pointer (&n->token, p11c_token_unref);
  g_free (n);
}

void
p11c_due_plan_free (P11cDuePlan *p)
{
  if (p == NULL)
    return;
  g_ptr_array_unref (p->requests);
  g_ptr_array_unref (p->system_requests);
  g_ptr_array_unref (p->system_uris);
  g_ptr_array_unref (p->needs_person);
  g_ptr_array_unref (p->not_renewable);
  g_hash_table_unref (p->why_not);
  g_hash_table_unref (p->why_not_code);
  g_free (p);
}

static void
not_renewable (P11cDuePlan *plan, const P11cFoundCert *f, const char *code, const char *why)
{
  g_ptr_array_add (plan->not_renewable, g_strdup (f->entry->uri));
  g_hash_table_replace (plan->why_not, g_strdup (f->entry->uri), g_strdup (why));
  g_hash_table_replace (plan->why_not_code, g_strdup (f->entry->uri), g_strdup (code));
}

static void
needs_person (P11cDuePlan *plan, const P11cFoundCert *f, const char *ca, gint64 days_left, const char *code,
              const char *reason)
{
  P11cNeedsPerson *n = g_new0 (P11cNeedsPerson, 1);
  n->uri = g_strdup (f->entry->uri);
  n->subject = g_strdup (f->entry->summary->subject);
  n->ca = g_strdup (ca);
  n->not_after = f->entry->summary->not_after;
  n->days_left = days_left;
  n->reason = g_strdup (reason);
  n->reason_code = g_strdup (code);
  n->token = f->token ? p11c_token_ref (f->token) : NULL;
  g_ptr_array_add (plan->needs_person, n);
}

/* A due token certificate: renewed with the profile's PIN file when one is
 * configured, may be used for this token, and was not refused by it. */
static void
plan_token (P11cEngine *engine, P11cDuePlan *plan, const P11cFoundCert *f, const P11cIssued *rec,
            const P11cCaProfile *profile, gint64 days_left)
{
  g_autoptr(GError) local = NULL;
  p11c_autosecret pin = NULL;
  g_autofree char *reason = NULL;
  CK_TOKEN_INFO info;
  P11cEnrollRequest *req;

  p11c_token_get_info (f->token, &info, NULL);
  if (profile->pin_file == NULL)
    {
      needs_person (plan, f, rec->ca, days_left, "pin-needed", "the token PIN is needed");
      return;
    }
  if (profile->pin_file_token != NULL)
    {
      g_autoptr(P11cUri) bound = p11c_uri_parse (profile->pin_file_token, NULL);
      if (bound == NULL || !p11c_uri_matches_token (bound, &info))
        {
          reason = g_strdup_printf ("the token PIN is needed: the PIN file of CA profile %s is only for %s",
                                    profile->name, profile->pin_file_token);
          needs_person (plan, f, rec->ca, days_left, "pin-file-other-token", reason);
          return;
        }
    }
  pin = p11c_pin_file_read (profile->pin_file, profile->name, &local);
  if (pin == NULL)
    {
      g_warning ("%s", local->message);
      reason = g_strdup_printf ("the token PIN is needed: %s", local->message);
      needs_person (plan, f, rec->ca, days_left, "pin-file-unusable", reason);
      return;
    }
  if (p11c_records_pin_refused (p11c_engine_get_records (engine), &info, profile->pin_file, pin))
    {
      reason = g_strdup_printf ("the token refused the PIN in %s (CA profile %s); it is not sent again "
                                "until the file changes", profile->pin_file, profile->name);
      needs_person (plan, f, rec->ca, days_left, "pin-refused", reason);
      return;
    }
  req = request_for (engine, f, rec, profile, pin, profile->pin_file, TRUE, &local);
  if (req != NULL)
    g_ptr_array_add (plan->requests, req);
  else
    {
      g_message ("Cannot renew %s: %s", f->entry->uri, local->message);
      not_renewable (plan, f, "request-failed", local->message);
    }
}

static gboolean
recorded_token_listed (const P11cIssued *rec, GPtrArray *listed)
{
  for (guint i = 0; listed && i < listed->len; i++)
    {
      CK_TOKEN_INFO info;
      p11c_token_get_info (listed->pdata[i], &info, NULL);
      if (p11c_issued_is_on_token (rec, &info))
        return TRUE;
    }
  return FALSE;
}

/* Forget the records of certificates that are gone: from the system store,
 * or from their token when it was listed just now.  Other tokens keep
 * theirs: not present (they may come back), or present but failing to list
 * (what is on them is unknown).  PKCS#12 files are the callers': kept. */
static void
prune (P11cRecords *records, GHashTable *in_place, GPtrArray *listed)
{
  g_autoptr(GPtrArray) all = p11c_records_list (records);
  g_autoptr(GPtrArray) gone = g_ptr_array_new ();

  for (guint i = 0; i < all->len; i++)
    {
      P11cIssued *rec = all->pdata[i];
      if (g_hash_table_contains (in_place, rec->sha256))
        continue;
      if (g_str_equal (rec->storage, "system")
          || (g_str_equal (rec->storage, "token") && recorded_token_listed (rec, listed)))
        g_ptr_array_add (gone, rec->sha256);
    }
  if (gone->len > 0)
    g_message ("Forgot the issuance records of %u certificate(s) that are gone", p11c_records_forget (records, gone));
}

P11cDuePlan *
p11c_renewal_plan_due (P11cEngine *engine, GPtrArray *tokens, gint64 now)
{
  const P11cConfig *config = p11c_engine_get_config (engine);
  P11cRecords *records = p11c_engine_get_records (engine);
  g_autoptr(GPtrArray) listed = NULL;
  g_autoptr(GPtrArray) all = p11c_renewal_collect (engine, tokens, &listed);
  g_autoptr(GHashTable) in_place = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  P11cDuePlan *plan = g_new0 (P11cDuePlan, 1);

  plan->requests = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_enroll_request_free);
  plan->system_requests = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_enroll_request_free);
  plan->system_uris = g_ptr_array_new_with_free_func (g_free);
  plan->needs_person = g_ptr_array_new_with_free_func ((GDestroyNotify) needs_person_free);
  plan->not_renewable = g_ptr_array_new_with_free_func (g_free);
  plan->why_not = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  plan->why_not_code = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  for (guint i = 0; i < all->len; i++)
    {
      P11cFoundCert *f = all->pdata[i];
      P11cCertSummary *sum = f->entry->summary;
      g_autoptr(P11cIssued) rec = NULL;
      g_autoptr(GError) why = NULL;
      const P11cCaProfile *profile;
      gint64 days_left;

      if (sum == NULL || (rec = p11c_records_lookup (records, sum->sha256)) == NULL)
        continue;
      if (!found_in_place (f, rec, &why))
        {
          if (p11c_renewal_due (sum->not_before, sum->not_after, now, config->window_days, &days_left))
            {
              g_message ("Not renewing %s: %s", f->entry->uri, why->message);
              not_renewable (plan, f, "not-in-place", why->message);
            }
          continue;
        }
      g_hash_table_add (in_place, g_strdup (sum->sha256));
      if (!p11c_renewal_due (sum->not_before, sum->not_after, now, config->window_days, &days_left))
        continue;
      profile = p11c_engine_find_ca (engine, rec->ca);
      if (profile == NULL)
        {
          g_autofree char *msg = g_strdup_printf ("it was issued through CA profile \"%s\", which is not "
                                                  "configured any more; enroll a new certificate", rec->ca);
          not_renewable (plan, f, "profile-gone", msg);
        }
      else if (f->token != NULL)
        plan_token (engine, plan, f, rec, profile, days_left);
      else
        {
          g_autoptr(GError) local = NULL;
          P11cEnrollRequest *req = request_for (engine, f, rec, profile, NULL, NULL, TRUE, &local);
          if (req != NULL)
            {
              g_ptr_array_add (plan->system_requests, req);
              g_ptr_array_add (plan->system_uris, g_strdup (f->entry->uri));
            }
          else
            not_renewable (plan, f, "request-failed", local->message);
        }
    }
  prune (records, in_place, listed);
  return plan;
}

/* ---- one renewal per certificate ---------------------------------------- */

/* sha256 → path of the job renewing it (one daemon per process) */
static GMutex claims_lock;
static GHashTable *claims;

char *
p11c_renewal_running (const char *sha256)
{
  char *job;
  g_mutex_lock (&claims_lock);
  job = claims ? g_strdup (g_hash_table_lookup (claims, sha256)) : NULL;
  g_mutex_unlock (&claims_lock);
  return job;
}

void
p11c_renewal_claim (const char *sha256, const char *job)
{
  g_mutex_lock (&claims_lock);
  if (claims == NULL)
    claims = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_hash_table_replace (claims, g_strdup (sha256), g_strdup (job));
  g_mutex_unlock (&claims_lock);
}

void
p11c_renewal_release (const char *sha256)
{
  g_mutex_lock (&claims_lock);
  if (claims != NULL)
    g_hash_table_remove (claims, sha256);
  g_mutex_unlock (&claims_lock);
}

/* ---- CertificateExpiring ------------------------------------------------ */

gint64
p11c_renewal_expiry_scan (GPtrArray *found, gint64 now, gint64 warn_seconds, GHashTable *announced,
                          GPtrArray *crossing)
{
  gint64 next = G_MAXINT64;

  for (guint i = 0; found && i < found->len; i++)
    {
      P11cCertEntry *e = ((P11cFoundCert *) found->pdata[i])->entry;
      gint64 threshold;
      if (e->summary == NULL)
        continue;
      threshold = e->summary->not_after - warn_seconds;
      if (now < threshold)
        next = MIN (next, threshold);
      else if (g_hash_table_add (announced, g_strdup (e->summary->sha256)))
        g_ptr_array_add (crossing, p11c_cert_entry_ref (e));
    }
  return next;
}
