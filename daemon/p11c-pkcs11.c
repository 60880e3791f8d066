#define G_LOG_DOMAIN "p11c-pkcs11"
#include "p11c-pkcs11.h"
#include "p11c-error.h"
#include "p11c-pin-policy.h"
#include "p11c-uri.h"
#include <dlfcn.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/err.h>

struct _P11cModule {
  char             *name;
  char             *description;
  char             *init_args;
  void             *dl;
  CK_FUNCTION_LIST *f;
  gboolean          finalize;
  /* Reloading a module whose in-memory object table went wrong: every
   * session and every slot query holds @use as a reader; the reload takes
   * it as a writer, only when nothing holds it (writer_trylock), at the
   * next session start after @reload_pending was set. */
  GRWLock           use;
  gint              reload_pending;
  gboolean          keeps_objects;   /* tpm2-pkcs11, see module_keeps_objects */
};

/* tpm2-pkcs11 (every version up to 1.9.2 at least) reads its store into an
 * in-memory object list at C_Initialize and keeps it:
 *  - objects another process writes stay invisible to us;
 *  - it numbers a new object handle assuming the first object of that list
 *    has handle 1: once that object is destroyed, the second object created
 *    afterwards gets a handle another object already has, and both answer
 *    with one object's attributes (an enrolled certificate vanishes from
 *    the list).
 * The store on disk stays right, and C_Finalize + C_Initialize reads it
 * again: the daemon reloads the module after it destroyed objects, and at
 * a rescan (p11c_module_forget_objects). */
static gboolean
module_keeps_objects (const CK_INFO *info)
{
  g_autofree char *desc = p11c_padded_string (info->libraryDescription, sizeof info->libraryDescription);
  return g_str_equal (desc, "TPM2.0 Cryptoki");
}

static CK_RV
module_initialize (P11cModule *m)
{
  CK_C_INITIALIZE_ARGS args = { 0 };

  args.flags = CKF_OS_LOCKING_OK;
  args.pReserved = m->init_args;
  return m->f->C_Initialize (&args);
}

/* At a session start: reload the module if that is pending and nothing
 * else uses it now (otherwise at a later session start). */
static void
module_reload_if_pending (P11cModule *m)
{
  CK_RV rv;

  if (!g_atomic_int_get (&m->reload_pending) || !m->finalize || !g_rw_lock_writer_trylock (&m->use))
    return;
  if (g_atomic_int_compare_and_exchange (&m->reload_pending, TRUE, FALSE))
    {
      m->f->C_Finalize (NULL);
      rv = module_initialize (m);
      if (rv != CKR_OK)
        g_warning ("PKCS#11 module %s: reloading failed: C_Initialize returned %s (0x%08lx)",
                   m->name, p11c_ckr_name (rv), (unsigned long) rv);
      else
        g_message ("Reloaded PKCS#11 module %s (renumbers its object handles)", m->name);
    }
  g_rw_lock_writer_unlock (&m->use);
}

/* ---- CK_RV → error ------------------------------------------------------ */

#define CKR(x) { x, #x }
static const struct { CK_RV rv; const char *name; } ckr_names[] = {
  CKR (CKR_OK), CKR (CKR_CANCEL), CKR (CKR_HOST_MEMORY), CKR (CKR_SLOT_ID_INVALID),
  CKR (CKR_GENERAL_ERROR), CKR (CKR_FUNCTION_FAILED), CKR (CKR_ARGUMENTS_BAD),
  CKR (CKR_NO_EVENT), CKR (CKR_NEED_TO_CREATE_THREADS), CKR (CKR_CANT_LOCK),
  CKR (CKR_ATTRIBUTE_READ_ONLY), CKR (CKR_ATTRIBUTE_SENSITIVE), CKR (CKR_ATTRIBUTE_TYPE_INVALID),
  CKR (CKR_ATTRIBUTE_VALUE_INVALID), CKR (CKR_DATA_INVALID), CKR (CKR_DATA_LEN_RANGE),
  CKR (CKR_DEVICE_ERROR), CKR (CKR_DEVICE_MEMORY), CKR (CKR_DEVICE_REMOVED),
  CKR (CKR_ENCRYPTED_DATA_INVALID), CKR (CKR_ENCRYPTED_DATA_LEN_RANGE), CKR (CKR_FUNCTION_CANCELED),
  CKR (CKR_FUNCTION_NOT_PARALLEL), CKR (CKR_FUNCTION_NOT_SUPPORTED), CKR (CKR_KEY_HANDLE_INVALID),
  CKR (CKR_KEY_SIZE_RANGE), CKR (CKR_KEY_TYPE_INCONSISTENT), CKR (CKR_KEY_FUNCTION_NOT_PERMITTED),
  CKR (CKR_MECHANISM_INVALID), CKR (CKR_MECHANISM_PARAM_INVALID), CKR (CKR_OBJECT_HANDLE_INVALID),
  CKR (CKR_OPERATION_ACTIVE), CKR (CKR_OPERATION_NOT_INITIALIZED), CKR (CKR_PIN_INCORRECT),
  CKR (CKR_PIN_INVALID), CKR (CKR_PIN_LEN_RANGE), CKR (CKR_PIN_EXPIRED), CKR (CKR_PIN_LOCKED),
  CKR (CKR_SESSION_CLOSED), CKR (CKR_SESSION_COUNT), CKR (CKR_SESSION_HANDLE_INVALID),
  CKR (CKR_SESSION_PARALLEL_NOT_SUPPORTED), CKR (CKR_SESSION_READ_ONLY), CKR (CKR_SESSION_EXISTS),
  CKR (CKR_SESSION_READ_ONLY_EXISTS), CKR (CKR_SESSION_READ_WRITE_SO_EXISTS),
  CKR (CKR_SIGNATURE_INVALID), CKR (CKR_SIGNATURE_LEN_RANGE), CKR (CKR_TEMPLATE_INCOMPLETE),
  CKR (CKR_TEMPLATE_INCONSISTENT), CKR (CKR_TOKEN_NOT_PRESENT), CKR (CKR_TOKEN_NOT_RECOGNIZED),
  CKR (CKR_TOKEN_WRITE_PROTECTED), CKR (CKR_USER_ALREADY_LOGGED_IN), CKR (CKR_USER_NOT_LOGGED_IN),
  CKR (CKR_USER_PIN_NOT_INITIALIZED), CKR (CKR_USER_TYPE_INVALID),
  CKR (CKR_USER_ANOTHER_ALREADY_LOGGED_IN), CKR (CKR_USER_TOO_MANY_TYPES),
  CKR (CKR_DOMAIN_PARAMS_INVALID), CKR (CKR_CURVE_NOT_SUPPORTED), CKR (CKR_BUFFER_TOO_SMALL),
  CKR (CKR_CRYPTOKI_NOT_INITIALIZED), CKR (CKR_CRYPTOKI_ALREADY_INITIALIZED),
  CKR (CKR_FUNCTION_REJECTED), CKR (CKR_RANDOM_NO_RNG), CKR (CKR_RANDOM_SEED_NOT_SUPPORTED),
  CKR (CKR_ACTION_PROHIBITED), CKR (CKR_EXCEEDED_MAX_ITERATIONS), CKR (CKR_FIPS_SELF_TEST_FAILED),
  CKR (CKR_INFORMATION_SENSITIVE), CKR (CKR_KEY_CHANGED), CKR (CKR_KEY_INDIGESTIBLE), CKR (CKR_KEY_NEEDED),
  CKR (CKR_KEY_NOT_NEEDED), CKR (CKR_KEY_NOT_WRAPPABLE), CKR (CKR_KEY_UNEXTRACTABLE),
  CKR (CKR_LIBRARY_LOAD_FAILED), CKR (CKR_MUTEX_BAD), CKR (CKR_MUTEX_NOT_LOCKED), CKR (CKR_NEW_PIN_MODE),
  CKR (CKR_NEXT_OTP), CKR (CKR_PIN_TOO_WEAK), CKR (CKR_PUBLIC_KEY_INVALID), CKR (CKR_SAVED_STATE_INVALID),
  CKR (CKR_STATE_UNSAVEABLE), CKR (CKR_UNWRAPPING_KEY_SIZE_RANGE), CKR (CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
  CKR (CKR_WRAPPED_KEY_INVALID), CKR (CKR_WRAPPED_KEY_LEN_RANGE), CKR (CKR_WRAPPING_KEY_HANDLE_INVALID),
  CKR (CKR_WRAPPING_KEY_SIZE_RANGE), CKR (CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
};
#undef CKR

const char *
p11c_ckr_name (CK_RV rv)
{
  for (gsize i = 0; i < G_N_ELEMENTS (ckr_names); i++)
    if (ckr_names[i].rv == rv)
      return ckr_names[i].name;
  return rv >= CKR_VENDOR_DEFINED ? "CKR_VENDOR_DEFINED" : "an unknown CKR code";
}

gboolean
p11c_check_reported (CK_ULONG reported, CK_ULONG room, const char *what, GError **error)
{
  if (reported <= room)
    return TRUE;
  g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR,
               "%s: the PKCS#11 module reported %lu where it was given room for %lu "
               "(a broken or hostile module; nothing it returned was used)",
               what, (unsigned long) reported, (unsigned long) room);
  return FALSE;
}

gboolean
p11c_ckr_check (CK_RV rv, const char *what, GError **error)
{
  P11cError code;
  const char *hint;
  const char *rule = NULL;   /* PinPolicy: which rule, for the "broken" detail */
  GError *e;

  if (rv == CKR_OK)
    return TRUE;

  switch (rv)
    {
    case CKR_PIN_INCORRECT:
      code = P11C_ERROR_PIN_INCORRECT;
      hint = "the token PIN is wrong";
      break;
    case CKR_PIN_LOCKED:
      code = P11C_ERROR_PIN_LOCKED;
      hint = "the token PIN is locked; unblock it with the SO PIN or ask your administrator";
      break;
    case CKR_PIN_EXPIRED:
      code = P11C_ERROR_PIN_POLICY;
      hint = "the token PIN has expired; change it first";
      rule = P11C_PIN_RULE_EXPIRED;
      break;
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_TOO_WEAK:
      code = P11C_ERROR_PIN_POLICY;
      hint = "the token does not accept a PIN of this form or length";
      rule = P11C_PIN_RULE_TOKEN;
      break;
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_DEVICE_REMOVED:
    case CKR_SLOT_ID_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_TOKEN_NOT_RECOGNIZED:
      code = P11C_ERROR_TOKEN_NOT_PRESENT;
      hint = "the token is not present (was it removed?); insert it and try again";
      break;
    case CKR_TOKEN_WRITE_PROTECTED:
    case CKR_SESSION_READ_ONLY:
      code = P11C_ERROR_TOKEN_ERROR;
      hint = "the token is write-protected";
      break;
    case CKR_USER_PIN_NOT_INITIALIZED:
      code = P11C_ERROR_TOKEN_ERROR;
      hint = "the token's user PIN is not initialized; initialize the token first";
      break;
    case CKR_DEVICE_MEMORY:
      code = P11C_ERROR_NO_SPACE;
      hint = "the token is full; delete unused objects";
      break;
    case CKR_HOST_MEMORY:
      code = P11C_ERROR_FAILED;
      hint = "out of memory";
      break;
    case CKR_DEVICE_ERROR:
    case CKR_GENERAL_ERROR:
    case CKR_FUNCTION_FAILED:
      code = P11C_ERROR_TOKEN_ERROR;
      hint = "the token reported an error; remove and re-insert it, then try again";
      break;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_KEY_SIZE_RANGE:
    case CKR_CURVE_NOT_SUPPORTED:
    case CKR_DOMAIN_PARAMS_INVALID:
    case CKR_FUNCTION_NOT_SUPPORTED:
    case CKR_ATTRIBUTE_TYPE_INVALID:
    case CKR_TEMPLATE_INCONSISTENT:
      code = P11C_ERROR_NOT_SUPPORTED;
      hint = "the token does not support this operation or key type";
      break;
    case CKR_FUNCTION_CANCELED:
    case CKR_CANCEL:
      code = P11C_ERROR_CANCELLED;
      hint = "the operation was cancelled";
      break;
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
      code = P11C_ERROR_NOT_FOUND;
      hint = "the object is gone from the token";
      break;
    case CKR_USER_NOT_LOGGED_IN:
      code = P11C_ERROR_FAILED;
      hint = "the token requires a login for this";
      break;
    case CKR_SESSION_COUNT:
    case CKR_OPERATION_ACTIVE:
    case CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
    case CKR_SESSION_READ_WRITE_SO_EXISTS:
      code = P11C_ERROR_BUSY;
      hint = "the token is busy with another application; try again later";
      break;
    default:
      code = P11C_ERROR_TOKEN_ERROR;
      hint = "the token module failed";
      break;
    }
  /* the number too: vendor codes and codes newer than this build say
   * nothing by name */
  e = g_error_new (P11C_ERROR, code, "%s: %s (%s, 0x%08lx)", what, hint, p11c_ckr_name (rv), (unsigned long) rv);
  p11c_error_set_detail_string (e, "ckr", p11c_ckr_name (rv));
  if (rule != NULL)
    {
      const char *broken[] = { rule, NULL };
      p11c_error_set_detail_strv (e, "broken", broken);
    }
  g_propagate_error (error, e);
  return FALSE;
}

/* ---- modules ------------------------------------------------------------ */

P11cModule *
p11c_module_load (const char *name_or_path, const char *init_args, GError **error)
{
  CK_C_GetFunctionList get_list;
  CK_INFO info;
  P11cModule *m;
  CK_RV rv;

  m = g_new0 (P11cModule, 1);
  m->name = g_strdup (name_or_path);
  m->init_args = g_strdup (init_args);
  g_rw_lock_init (&m->use);
  m->dl = dlopen (name_or_path, RTLD_NOW | RTLD_LOCAL);
  if (m->dl == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
                   "Cannot load PKCS#11 module %s: %s", name_or_path, dlerror ());
      p11c_module_unload (m);
      return NULL;
    }
  get_list = (CK_C_GetFunctionList) dlsym (m->dl, "C_GetFunctionList");
  if (get_list == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED,
                   "%s is not a PKCS#11 module (no C_GetFunctionList)", name_or_path);
      p11c_module_unload (m);
      return NULL;
    }
  rv = get_list (&m->f);
  if (rv != CKR_OK || m->f == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED,
                   "PKCS#11 module %s: C_GetFunctionList failed (%s)", name_or_path, p11c_ckr_name (rv));
      m->f = NULL;
      p11c_module_unload (m);
      return NULL;
    }
  rv = module_initialize (m);
  if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
    m->finalize = FALSE;    /* someone else owns initialisation */
  else if (rv != CKR_OK)
    {
      g_autofree char *what = g_strdup_printf ("PKCS#11 module %s: C_Initialize", name_or_path);
      p11c_ckr_check (rv, what, error);
      m->f = NULL;
      p11c_module_unload (m);
      return NULL;
    }
  else
    m->finalize = TRUE;

  if (m->f->C_GetInfo (&info) == CKR_OK)
    {
      g_autofree char *manu = p11c_padded_string (info.manufacturerID, sizeof info.manufacturerID);
      g_autofree char *desc = p11c_padded_string (info.libraryDescription, sizeof info.libraryDescription);
      m->description = g_strdup_printf ("%s (%s) %u.%u", desc, manu,
                                        info.libraryVersion.major, info.libraryVersion.minor);
      m->keeps_objects = module_keeps_objects (&info);
    }
  else
    m->description = g_strdup (name_or_path);
  return m;
}

void
p11c_module_unload (P11cModule *m)
{
  if (m == NULL)
    return;
  if (m->f != NULL && m->finalize)
    m->f->C_Finalize (NULL);
  /* The library stays mapped: modules commonly leave threads or atexit
   * handlers behind, and unloading only happens when the daemon exits. */
  g_rw_lock_clear (&m->use);
  g_free (m->name);
  g_free (m->description);
  g_free (m->init_args);
  g_free (m);
}

const char *p11c_module_get_name (P11cModule *m) { return m->name; }

void
p11c_module_forget_objects (P11cModule *m)
{
  if (m->keeps_objects)
    g_atomic_int_set (&m->reload_pending, TRUE);
}
const char *p11c_module_get_description (P11cModule *m) { return m->description; }
CK_FUNCTION_LIST *p11c_module_get_functions (P11cModule *m) { return m->f; }

gboolean
p11c_module_get_token_info (P11cModule *m, CK_SLOT_ID slot, CK_TOKEN_INFO *info, GError **error)
{
  gboolean ok;

  g_rw_lock_reader_lock (&m->use);
  ok = p11c_ckr_check (m->f->C_GetTokenInfo (slot, info), "Reading the token information", error);
  g_rw_lock_reader_unlock (&m->use);
  return ok;
}

static GArray *
list_tokens (P11cModule *m, GError **error)
{
  g_autoptr(GArray) out = g_array_new (FALSE, TRUE, sizeof (P11cSlotToken));
  g_autofree CK_SLOT_ID *slots = NULL;
  CK_ULONG n = 0, room = 0;
  CK_RV rv;

  /* Some modules only notice new slots on a C_GetSlotList(FALSE). */
  (void) m->f->C_GetSlotList (CK_FALSE, NULL, &n);
  for (int tries = 0; tries < 5; tries++)
    {
      rv = m->f->C_GetSlotList (CK_TRUE, NULL, &n);
      if (rv != CKR_OK)
        break;
      g_free (slots);
      room = n + 1;
      slots = g_new0 (CK_SLOT_ID, room);
      n = room;
      rv = m->f->C_GetSlotList (CK_TRUE, slots, &n);
      if (rv != CKR_BUFFER_TOO_SMALL)
        break;
    }
  if (!p11c_ckr_check (rv, "Listing the token slots", error)
      || !p11c_check_reported (n, room, "Listing the token slots (their number)", error))
    return NULL;

  for (CK_ULONG i = 0; i < n; i++)
    {
      P11cSlotToken st = { .slot = slots[i] };
      if (m->f->C_GetSlotInfo (slots[i], &st.slot_info) != CKR_OK)
        continue;
      if (!(st.slot_info.flags & CKF_TOKEN_PRESENT))
        continue;
      rv = m->f->C_GetTokenInfo (slots[i], &st.token_info);
      if (rv != CKR_OK)
        {
          g_debug ("slot %lu: no usable token (%s)", (unsigned long) slots[i], p11c_ckr_name (rv));
          continue;
        }
      if (!(st.token_info.flags & CKF_TOKEN_INITIALIZED))
        {
          g_debug ("slot %lu: token not initialized, skipped", (unsigned long) slots[i]);
          continue;
        }
      g_array_append_val (out, st);
    }
  return g_steal_pointer (&out);
}

GArray *
p11c_module_list_tokens (P11cModule *m, GError **error)
{
  GArray *out;

  g_rw_lock_reader_lock (&m->use);
  out = list_tokens (m, error);
  g_rw_lock_reader_unlock (&m->use);
  return out;
}

/* ---- sessions ----------------------------------------------------------- */

P11cSession *
p11c_session_open (P11cModule *m, CK_SLOT_ID slot, gboolean rw, GError **error)
{
  P11cSession *s = g_new0 (P11cSession, 1);
  CK_FLAGS flags = CKF_SERIAL_SESSION | (rw ? CKF_RW_SESSION : 0);

  module_reload_if_pending (m);
  s->module = m;
  s->f = m->f;
  s->slot = slot;
  g_rw_lock_reader_lock (&m->use);   /* until p11c_session_close */
  if (!p11c_ckr_check (m->f->C_OpenSession (slot, flags, NULL, NULL, &s->handle),
                       "Opening a session on the token", error))
    {
      g_rw_lock_reader_unlock (&m->use);
      g_free (s);
      return NULL;
    }
  return s;
}

gboolean
p11c_session_login (P11cSession *s, const char *pin, GError **error)
{
  CK_RV rv = s->f->C_Login (s->handle, CKU_USER, (CK_UTF8CHAR *) pin, strlen (pin));

  if (rv == CKR_USER_ALREADY_LOGGED_IN)
    {
      /* A login left over from elsewhere: the PIN was not checked.  Log out
       * and check it; this is the first real attempt, not a retry. */
      s->f->C_Logout (s->handle);
      rv = s->f->C_Login (s->handle, CKU_USER, (CK_UTF8CHAR *) pin, strlen (pin));
    }
  if (!p11c_ckr_check (rv, "Logging in to the token", error))
    return FALSE;
  s->logged_in = TRUE;
  return TRUE;
}

void
p11c_session_close (P11cSession *s)
{
  if (s == NULL)
    return;
  if (s->logged_in)
    s->f->C_Logout (s->handle);
  s->f->C_CloseSession (s->handle);
  g_rw_lock_reader_unlock (&s->module->use);
  g_free (s);
}

static gint
handle_cmp (gconstpointer a, gconstpointer b)
{
  CK_OBJECT_HANDLE x = *(const CK_OBJECT_HANDLE *) a, y = *(const CK_OBJECT_HANDLE *) b;
  return x < y ? -1 : x > y;
}

static gboolean
has_duplicate_handle (GArray *handles)
{
  g_autoptr(GArray) sorted = g_array_copy (handles);

  g_array_sort (sorted, handle_cmp);
  for (guint i = 1; i < sorted->len; i++)
    if (g_array_index (sorted, CK_OBJECT_HANDLE, i) == g_array_index (sorted, CK_OBJECT_HANDLE, i - 1))
      return TRUE;
  return FALSE;
}

GArray *
p11c_session_find (P11cSession *s, CK_OBJECT_CLASS klass, GBytes *id,
                   const char *label, GError **error)
{
  g_autoptr(GArray) out = g_array_new (FALSE, FALSE, sizeof (CK_OBJECT_HANDLE));
  CK_ATTRIBUTE tmpl[3];
  CK_ULONG n = 0;
  CK_OBJECT_HANDLE batch[64];
  CK_ULONG got;
  gboolean ok;

  if (klass != (CK_OBJECT_CLASS) CK_UNAVAILABLE_INFORMATION)
    tmpl[n++] = (CK_ATTRIBUTE) { CKA_CLASS, &klass, sizeof klass };
  if (id != NULL)
    {
      gsize len;
      const void *p = g_bytes_get_data (id, &len);
      tmpl[n++] = (CK_ATTRIBUTE) { CKA_ID, (void *) p, len };
    }
  if (label != NULL)
    tmpl[n++] = (CK_ATTRIBUTE) { CKA_LABEL, (void *) label, strlen (label) };

  if (!p11c_ckr_check (s->f->C_FindObjectsInit (s->handle, tmpl, n), "Searching the token", error))
    return NULL;
  do
    {
      ok = p11c_session_find_next (s, batch, G_N_ELEMENTS (batch), &got, error);
      if (!ok)
        break;
      g_array_append_vals (out, batch, got);
    }
  while (got == G_N_ELEMENTS (batch));
  s->f->C_FindObjectsFinal (s->handle);
  if (!ok)
    return NULL;
  /* one handle twice: the module's object table is broken (see
   * module_keeps_objects); what it says about objects is wrong */
  if (has_duplicate_handle (out))
    {
      g_atomic_int_set (&s->module->reload_pending, TRUE);
      g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR,
                   "Searching the token: the PKCS#11 module %s gave one object handle to two objects "
                   "(a module bug); it is reloaded before the next operation: try again", s->module->name);
      return NULL;
    }
  return g_steal_pointer (&out);
}

gboolean
p11c_session_find_next (P11cSession *s, CK_OBJECT_HANDLE *batch, CK_ULONG room, CK_ULONG *got, GError **error)
{
  *got = 0;
  if (!p11c_ckr_check (s->f->C_FindObjects (s->handle, batch, room, got), "Searching the token", error))
    return FALSE;
  if (!p11c_check_reported (*got, room, "Searching the token (objects found)", error))
    {
      *got = 0;
      return FALSE;
    }
  return TRUE;
}

GBytes *
p11c_session_get_bytes (P11cSession *s, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type, GError **error)
{
  CK_ATTRIBUTE a = { type, NULL, 0 };
  g_autofree guint8 *buf = NULL;
  CK_ULONG room;

  if (!p11c_ckr_check (s->f->C_GetAttributeValue (s->handle, obj, &a, 1),
                       "Reading an object attribute", error))
    return NULL;
  if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "The attribute is not available");
      return NULL;
    }
  if (a.ulValueLen > 16 * 1024 * 1024)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "The attribute is too large");
      return NULL;
    }
  room = a.ulValueLen;
  buf = g_malloc0 (room + 1);
  a.pValue = buf;
  if (!p11c_ckr_check (s->f->C_GetAttributeValue (s->handle, obj, &a, 1),
                       "Reading an object attribute", error)
      || !p11c_check_reported (a.ulValueLen, room, "Reading an object attribute (its length)", error))
    return NULL;
  return g_bytes_new_take (g_steal_pointer (&buf), a.ulValueLen);
}

gboolean
p11c_session_destroy (P11cSession *s, CK_OBJECT_HANDLE obj, GError **error)
{
  if (!p11c_ckr_check (s->f->C_DestroyObject (s->handle, obj), "Deleting an object from the token", error))
    return FALSE;
  if (s->module->keeps_objects)
    g_atomic_int_set (&s->module->reload_pending, TRUE);
  return TRUE;
}

gboolean
p11c_session_set_pin (P11cSession *s, const char *old_pin, const char *new_pin, GError **error)
{
  return p11c_ckr_check (s->f->C_SetPIN (s->handle,
                                         (CK_UTF8CHAR *) old_pin, strlen (old_pin),
                                         (CK_UTF8CHAR *) new_pin, strlen (new_pin)),
                         "Changing the token PIN", error);
}

/* ---- keys --------------------------------------------------------------- */

static const struct {
  P11cKeyType type;
  const char *name;
} key_types[] = {
  { P11C_KEY_EC_P256, "ec-p256" },
  { P11C_KEY_EC_P384, "ec-p384" },
  { P11C_KEY_RSA_2048, "rsa-2048" },
  { P11C_KEY_RSA_3072, "rsa-3072" },
};

gboolean
p11c_key_type_from_string (const char *name, P11cKeyType *out)
{
  for (gsize i = 0; i < G_N_ELEMENTS (key_types); i++)
    if (g_strcmp0 (key_types[i].name, name) == 0)
      {
        *out = key_types[i].type;
        return TRUE;
      }
  return FALSE;
}

const char *
p11c_key_type_to_string (P11cKeyType type)
{
  for (gsize i = 0; i < G_N_ELEMENTS (key_types); i++)
    if (key_types[i].type == type)
      return key_types[i].name;
  return "unknown";
}

static gboolean
key_type_is_ec (P11cKeyType t)
{
  return t == P11C_KEY_EC_P256 || t == P11C_KEY_EC_P384;
}

/* DER OIDs for CKA_EC_PARAMS */
static const guint8 oid_p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const guint8 oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };

gboolean
p11c_session_generate_key_pair (P11cSession *s, P11cKeyType type, gboolean decrypt, GBytes *id,
                                const char *label, CK_OBJECT_HANDLE *pub_out,
                                CK_OBJECT_HANDLE *priv_out, GError **error)
{
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ULONG bits = type == P11C_KEY_RSA_3072 ? 3072 : 2048;
  CK_BYTE exponent[] = { 0x01, 0x00, 0x01 };
  CK_MECHANISM mech = { key_type_is_ec (type) ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
  gsize id_len;
  const void *id_data = g_bytes_get_data (id, &id_len);
  CK_ATTRIBUTE pub[9], priv[9];
  CK_ULONG np = 0, nq = 0;

  if (label == NULL)
    label = "";
  pub[np++] = (CK_ATTRIBUTE) { CKA_TOKEN, &yes, sizeof yes };
  pub[np++] = (CK_ATTRIBUTE) { CKA_PRIVATE, &no, sizeof no };
  pub[np++] = (CK_ATTRIBUTE) { CKA_VERIFY, &yes, sizeof yes };
  pub[np++] = (CK_ATTRIBUTE) { CKA_ID, (void *) id_data, id_len };
  pub[np++] = (CK_ATTRIBUTE) { CKA_LABEL, (void *) label, strlen (label) };
  if (type == P11C_KEY_EC_P256)
    pub[np++] = (CK_ATTRIBUTE) { CKA_EC_PARAMS, (void *) oid_p256, sizeof oid_p256 };
  else if (type == P11C_KEY_EC_P384)
    pub[np++] = (CK_ATTRIBUTE) { CKA_EC_PARAMS, (void *) oid_p384, sizeof oid_p384 };
  else
    {
      pub[np++] = (CK_ATTRIBUTE) { CKA_MODULUS_BITS, &bits, sizeof bits };
      pub[np++] = (CK_ATTRIBUTE) { CKA_PUBLIC_EXPONENT, exponent, sizeof exponent };
    }

  priv[nq++] = (CK_ATTRIBUTE) { CKA_TOKEN, &yes, sizeof yes };
  priv[nq++] = (CK_ATTRIBUTE) { CKA_PRIVATE, &yes, sizeof yes };
  priv[nq++] = (CK_ATTRIBUTE) { CKA_SENSITIVE, &yes, sizeof yes };
  priv[nq++] = (CK_ATTRIBUTE) { CKA_EXTRACTABLE, &no, sizeof no };
  priv[nq++] = (CK_ATTRIBUTE) { CKA_SIGN, &yes, sizeof yes };
  priv[nq++] = (CK_ATTRIBUTE) { CKA_ID, (void *) id_data, id_len };
  priv[nq++] = (CK_ATTRIBUTE) { CKA_LABEL, (void *) label, strlen (label) };
  if (decrypt && !key_type_is_ec (type))
    {
      priv[nq++] = (CK_ATTRIBUTE) { CKA_DECRYPT, &yes, sizeof yes };
      pub[np++] = (CK_ATTRIBUTE) { CKA_ENCRYPT, &yes, sizeof yes };
    }

  return p11c_ckr_check (s->f->C_GenerateKeyPair (s->handle, &mech, pub, np, priv, nq,
                                                  pub_out, priv_out),
                         "Generating the key pair on the token", error);
}

static EVP_PKEY *
pkey_from_params (const char *keytype, OSSL_PARAM_BLD *bld, GError **error)
{
  OSSL_PARAM *params = OSSL_PARAM_BLD_to_param (bld);
  g_autoptr(EVP_PKEY_CTX) ctx = EVP_PKEY_CTX_new_from_name (NULL, keytype, NULL);
  EVP_PKEY *pkey = NULL;

  if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init (ctx) <= 0
      || EVP_PKEY_fromdata (ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
    {
      g_autofree char *why = p11c_openssl_error_string ();
      g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR,
                   "The token returned a public key OpenSSL cannot use: %s", why);
      pkey = NULL;
    }
  OSSL_PARAM_free (params);
  return pkey;
}

/* CKA_EC_POINT → the bare X9.62 point, for a curve whose field elements are
 * @field_len bytes.  PKCS#11 says a DER OCTET STRING wrapping the point; some
 * tokens return the raw point.  The two are told apart by exact length and
 * shape, never by trying a DER parse first: a raw uncompressed point is
 * 04|X|Y (1 + 2·field_len bytes), and when X[0] happens to equal the length
 * a DER wrapper would carry, a DER parser "succeeds" on it.  Lengths:
 *   raw uncompressed 1+2f, raw compressed 1+f (02/03 prefix),
 *   DER 04 L point with L = 1+2f or 1+f (L < 128 for P-256/P-384).
 * These never collide for a given curve.  Returns a pointer into @q. */

static gboolean
ec_point_shape_ok (const guint8 *p, gsize len, gsize field_len)
{
  if (len == 1 + 2 * field_len)
    return p[0] == 0x04;
  if (len == 1 + field_len)
    return p[0] == 0x02 || p[0] == 0x03;
  return FALSE;
}

const guint8 *
p11c_ec_point_unwrap (const guint8 *q, gsize qlen, gsize field_len,
                      gsize *point_len, GError **error)
{
  if (q != NULL && ec_point_shape_ok (q, qlen, field_len))
    {
      *point_len = qlen;
      return q;
    }
  if (q != NULL && qlen >= 2 && q[0] == 0x04 && q[1] < 0x80 && q[1] == qlen - 2
      && ec_point_shape_ok (q + 2, qlen - 2, field_len))
    {
      *point_len = qlen - 2;
      return q + 2;
    }
  g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR,
               "The token returned an EC point (%" G_GSIZE_FORMAT " bytes) that does not fit its curve",
               qlen);
  return NULL;
}

EVP_PKEY *
p11c_session_public_key (P11cSession *s, CK_OBJECT_HANDLE pub, GError **error)
{
  g_autoptr(GBytes) params = p11c_session_get_bytes (s, pub, CKA_EC_PARAMS, NULL);
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new ();
  EVP_PKEY *pkey = NULL;

  if (params != NULL)
    {
      gsize plen, qlen, field_len, xy_len;
      const guint8 *p = g_bytes_get_data (params, &plen);
      g_autoptr(GBytes) point = p11c_session_get_bytes (s, pub, CKA_EC_POINT, error);
      const char *group;
      const guint8 *q, *xy;

      if (point == NULL)
        goto out;
      if (plen == sizeof oid_p256 && memcmp (p, oid_p256, plen) == 0)
        group = "P-256", field_len = 32;
      else if (plen == sizeof oid_p384 && memcmp (p, oid_p384, plen) == 0)
        group = "P-384", field_len = 48;
      else
        {
          g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_SUPPORTED, "Unsupported EC curve on the token");
          goto out;
        }
      q = g_bytes_get_data (point, &qlen);
      xy = p11c_ec_point_unwrap (q, qlen, field_len, &xy_len, error);
      if (xy == NULL)
        goto out;
      OSSL_PARAM_BLD_push_utf8_string (bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
      OSSL_PARAM_BLD_push_octet_string (bld, OSSL_PKEY_PARAM_PUB_KEY, xy, xy_len);
      /* the builder keeps pointers: @point must outlive the build */
      pkey = pkey_from_params ("EC", bld, error);
    }
  else
    {
      g_autoptr(GBytes) mod = p11c_session_get_bytes (s, pub, CKA_MODULUS, error);
      g_autoptr(GBytes) exp = mod ? p11c_session_get_bytes (s, pub, CKA_PUBLIC_EXPONENT, error) : NULL;
      g_autoptr(BIGNUM) n = NULL;
      g_autoptr(BIGNUM) e = NULL;
      gsize nl, el;
      const guint8 *np, *ep;

      if (exp == NULL)
        goto out;
      np = g_bytes_get_data (mod, &nl);
      ep = g_bytes_get_data (exp, &el);
      n = BN_bin2bn (np, nl, NULL);
      e = BN_bin2bn (ep, el, NULL);
      OSSL_PARAM_BLD_push_BN (bld, OSSL_PKEY_PARAM_RSA_N, n);
      OSSL_PARAM_BLD_push_BN (bld, OSSL_PKEY_PARAM_RSA_E, e);
      pkey = pkey_from_params ("RSA", bld, error);
    }
out:
  OSSL_PARAM_BLD_free (bld);
  return pkey;
}

/* ---- signing ------------------------------------------------------------ */

static GBytes *
ecdsa_raw_to_der (const guint8 *raw, gsize len, GError **error)
{
  g_autoptr(ECDSA_SIG) sig = ECDSA_SIG_new ();
  BIGNUM *r, *s;
  unsigned char *der = NULL;
  int dlen;

  if (len == 0 || len % 2 != 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR, "The token returned a malformed ECDSA signature");
      return NULL;
    }
  r = BN_bin2bn (raw, len / 2, NULL);
  s = BN_bin2bn (raw + len / 2, len / 2, NULL);
  ECDSA_SIG_set0 (sig, r, s);
  dlen = i2d_ECDSA_SIG (sig, &der);
  if (dlen <= 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot encode the ECDSA signature");
      return NULL;
    }
  {
    GBytes *b = g_bytes_new (der, dlen);
    OPENSSL_free (der);
    return b;
  }
}

/* DigestInfo prefixes (RFC 8017 9.2 note 1) */
static const guint8 di_sha256[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
static const guint8 di_sha384[] = { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30 };

gboolean
p11c_session_sign_init (P11cSession *s, CK_MECHANISM *mech, CK_OBJECT_HANDLE key,
                        const char *pin, GError **error)
{
  CK_BBOOL always = CK_FALSE;
  CK_ATTRIBUTE a = { CKA_ALWAYS_AUTHENTICATE, &always, sizeof always };
  CK_RV rv;

  if (!p11c_ckr_check (s->f->C_SignInit (s->handle, mech, key), "Starting the signature on the token", error))
    return FALSE;
  /* any error (CKR_ATTRIBUTE_TYPE_INVALID from NSS, _SENSITIVE, …) means
   * the module does not ask for it */
  rv = s->f->C_GetAttributeValue (s->handle, key, &a, 1);
  if (rv != CKR_OK || a.ulValueLen != sizeof always || always != CK_TRUE)
    return TRUE;
  if (pin == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_SUPPORTED,
                   "The key asks for the PIN before every signature (CKA_ALWAYS_AUTHENTICATE) and no PIN is at hand");
      return FALSE;
    }
  /* exactly one attempt: a refused PIN is reported, never retried */
  return p11c_ckr_check (s->f->C_Login (s->handle, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR *) pin, strlen (pin)),
                         "Authenticating to the key for this signature", error);
}

GBytes *
p11c_session_sign (P11cSession *s, CK_OBJECT_HANDLE priv, P11cKeyType type,
                   const EVP_MD *md, const guint8 *data, gsize len, const char *pin, GError **error)
{
  guint8 input[128];
  gsize in_len = 0;
  unsigned int hlen = 0;
  guint8 hash[EVP_MAX_MD_SIZE];
  CK_MECHANISM mech = { key_type_is_ec (type) ? CKM_ECDSA : CKM_RSA_PKCS, NULL, 0 };
  g_autofree guint8 *sig = NULL;
  CK_ULONG sig_len = 0, room;

  if (!EVP_Digest (data, len, hash, &hlen, md, NULL))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot hash the data to sign");
      return NULL;
    }
  if (!key_type_is_ec (type))
    {
      const guint8 *prefix = EVP_MD_get_type (md) == NID_sha384 ? di_sha384 : di_sha256;
      gsize plen = EVP_MD_get_type (md) == NID_sha384 ? sizeof di_sha384 : sizeof di_sha256;
      memcpy (input, prefix, plen);
      in_len = plen;
    }
  memcpy (input + in_len, hash, hlen);
  in_len += hlen;

  if (!p11c_session_sign_init (s, &mech, priv, pin, error))
    return NULL;
  if (!p11c_ckr_check (s->f->C_Sign (s->handle, input, in_len, NULL, &sig_len), "Signing on the token", error))
    return NULL;
  if (sig_len == 0 || sig_len > 4096)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR, "The token reported an invalid signature length");
      return NULL;
    }
  sig = g_malloc0 (room = sig_len);
  if (!p11c_ckr_check (s->f->C_Sign (s->handle, input, in_len, sig, &sig_len), "Signing on the token", error)
      || !p11c_check_reported (sig_len, room, "Signing on the token (the signature's length)", error))
    return NULL;
  if (key_type_is_ec (type))
    return ecdsa_raw_to_der (sig, sig_len, error);
  return g_bytes_new (sig, sig_len);
}

gboolean
p11c_session_store_cert (P11cSession *s, X509 *cert, GBytes *id, const char *label,
                         CK_OBJECT_HANDLE *out, GError **error)
{
  CK_OBJECT_CLASS klass = CKO_CERTIFICATE;
  CK_CERTIFICATE_TYPE ctype = CKC_X_509;
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  unsigned char *value = NULL, *subject = NULL, *issuer = NULL, *serial = NULL;
  int vlen, slen, ilen, snlen;
  gsize id_len;
  const void *id_data = g_bytes_get_data (id, &id_len);
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  gboolean ok;

  vlen = i2d_X509 (cert, &value);
  slen = i2d_X509_NAME (X509_get_subject_name (cert), &subject);
  ilen = i2d_X509_NAME (X509_get_issuer_name (cert), &issuer);
  snlen = i2d_ASN1_INTEGER (X509_get0_serialNumber (cert), &serial);
  if (vlen <= 0 || slen <= 0 || ilen <= 0 || snlen <= 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_FAILED, "Cannot encode the certificate");
      ok = FALSE;
    }
  else
    {
      CK_ATTRIBUTE t[] = {
        { CKA_CLASS, &klass, sizeof klass },
        { CKA_CERTIFICATE_TYPE, &ctype, sizeof ctype },
        { CKA_TOKEN, &yes, sizeof yes },
        { CKA_PRIVATE, &no, sizeof no },
        { CKA_ID, (void *) id_data, id_len },
        { CKA_LABEL, (void *) label, strlen (label) },
        { CKA_SUBJECT, subject, slen },
        { CKA_ISSUER, issuer, ilen },
        { CKA_SERIAL_NUMBER, serial, snlen },
        { CKA_VALUE, value, vlen },
      };
      ok = p11c_ckr_check (s->f->C_CreateObject (s->handle, t, G_N_ELEMENTS (t), &handle),
                           "Writing the certificate to the token", error);
    }
  OPENSSL_free (value);
  OPENSSL_free (subject);
  OPENSSL_free (issuer);
  OPENSSL_free (serial);
  if (ok && out)
    *out = handle;
  return ok;
}
