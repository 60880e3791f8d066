#define G_LOG_DOMAIN "p11c-auth"
#include "p11c-auth.h"
#include "p11c-names.h"
#include "p11c-error.h"
#include "p11c-bus.h"
#include <polkit/polkit.h>

static PolkitAuthority *authority;

/* The uid behind each unique bus name that called (main thread; the lock
 * keeps p11c_auth_cached_uid safe from any thread).  A unique
 * name is never reused on a bus and a connection's credentials never
 * change, so the entry is good until the name goes away: NameOwnerChanged
 * drops it (an entry that slips in after its name went — the reply handled
 * after the signal — is only memory, bounded by UID_CACHE_MAX).  Saves a
 * GetConnectionUnixUser round trip per call. */
static GMutex      uid_lock;    /* uid_cache */
static GHashTable *uid_cache;
static P11cBus    *uid_bus;
static guint       uid_watch;
#define UID_CACHE_MAX 4096

typedef struct {
  char     *sender;
  char     *action;
  gboolean  interactive;
  guint     uid;
  guint     owner_uid;
} AuthData;

static void
auth_data_free (AuthData *d)
{
  g_free (d->sender);
  g_free (d->action);
  g_free (d);
}

void
p11c_auth_shutdown (void)
{
  g_clear_object (&authority);
  if (uid_watch)
    p11c_bus_unwatch (uid_bus, uid_watch);
  uid_watch = 0;
  uid_bus = NULL;
  g_mutex_lock (&uid_lock);
  g_clear_pointer (&uid_cache, g_hash_table_unref);
  g_mutex_unlock (&uid_lock);
}

gboolean
p11c_auth_cached_uid (const char *sender, guint *uid)
{
  gpointer value = NULL;
  gboolean found;

  g_mutex_lock (&uid_lock);
  found = uid_cache != NULL && g_hash_table_lookup_extended (uid_cache, sender, NULL, &value);
  g_mutex_unlock (&uid_lock);
  *uid = GPOINTER_TO_UINT (value);
  return found;
}

static void
name_owner_changed (const char *name, const char *old_owner, const char *new_owner, gpointer user_data)
{
  g_mutex_lock (&uid_lock);
  if (*new_owner == '\0' && uid_cache != NULL)
    g_hash_table_remove (uid_cache, name);
  g_mutex_unlock (&uid_lock);
}

/* Start caching for @bus.  The match rule is sent before any
 * GetConnectionUnixUser whose answer is cached, and the bus handles a
 * connection's messages in order: a name that goes after its uid was asked
 * is always announced. */
static void
uid_cache_watch (P11cBus *bus)
{
  if (uid_bus == bus)
    return;
  if (uid_watch)
    p11c_bus_unwatch (uid_bus, uid_watch);
  uid_bus = bus;
  g_mutex_lock (&uid_lock);
  g_clear_pointer (&uid_cache, g_hash_table_unref);
  uid_cache = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_mutex_unlock (&uid_lock);
  uid_watch = p11c_bus_watch_name_owners (bus, name_owner_changed, NULL);
}

static void
check_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr(GTask) task = user_data;
  AuthData *d = g_task_get_task_data (task);
  g_autoptr(GError) error = NULL;
  g_autoptr(PolkitAuthorizationResult) result = NULL;

  result = polkit_authority_check_authorization_finish (POLKIT_AUTHORITY (source), res, &error);
  if (result == NULL)
    {
      g_warning ("polkit check for %s failed: %s", d->action, error->message);
      g_task_return_new_error (task, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED,
                               "Not authorized: the authorization service (polkit) could not decide (%s)",
                               error->message);
      return;
    }
  if (polkit_authorization_result_get_is_authorized (result))
    {
      g_task_return_boolean (task, TRUE);
      return;
    }
  if (polkit_authorization_result_get_is_challenge (result))
    g_task_return_new_error (task, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED,
                             "Not authorized to %s without authentication; retry with allow_interaction "
                             "so an authentication agent can ask for a password", d->action);
  else
    g_task_return_new_error (task, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED,
                             "Not authorized: the system policy does not allow %s for this user", d->action);
}

static void
ask_polkit (GTask *task)
{
  AuthData *d = g_task_get_task_data (task);
  g_autoptr(PolkitSubject) subject = polkit_system_bus_name_new (d->sender);
  g_autoptr(PolkitDetails) details = polkit_details_new ();

  polkit_authority_check_authorization (authority, subject, d->action, details,
                                        d->interactive ? POLKIT_CHECK_AUTHORIZATION_FLAGS_ALLOW_USER_INTERACTION
                                                       : POLKIT_CHECK_AUTHORIZATION_FLAGS_NONE,
                                        g_task_get_cancellable (task), check_done, task);
}

static void
authority_ready (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr(GTask) task = user_data;
  g_autoptr(GError) error = NULL;
  PolkitAuthority *a = polkit_authority_get_finish (res, &error);

  if (a == NULL)
    {
      g_task_return_new_error (task, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED,
                               "Not authorized: the authorization service (polkit) is not available (%s)",
                               error->message);
      return;
    }
  if (authority == NULL)
    authority = a;
  else
    g_object_unref (a);
  ask_polkit (g_steal_pointer (&task));
}

/* d->uid is known: root and the job owner pass, everybody else asks polkit */
static void
uid_known (GTask *task)
{
  AuthData *d = g_task_get_task_data (task);

  if (d->uid == 0 || d->uid == d->owner_uid)
    {
      g_task_return_boolean (task, TRUE);
      g_object_unref (task);
      return;
    }
  if (authority == NULL)
    {
      GCancellable *cancel = g_task_get_cancellable (task);
      polkit_authority_get_async (cancel, authority_ready, task);
    }
  else
    ask_polkit (task);
}

static void
uid_ready (P11cBus *bus, const char *name, guint uid, const GError *error, gpointer user_data)
{
  GTask *task = user_data;
  AuthData *d = g_task_get_task_data (task);

  if (error != NULL)
    {
      g_task_return_new_error (task, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED,
                               "Not authorized: cannot identify the caller (%s)", error->message);
      g_object_unref (task);
      return;
    }
  d->uid = uid;
  g_mutex_lock (&uid_lock);
  if (uid_cache != NULL && bus == uid_bus)
    {
      if (g_hash_table_size (uid_cache) >= UID_CACHE_MAX)
        g_hash_table_remove_all (uid_cache);
      g_hash_table_insert (uid_cache, g_strdup (d->sender), GUINT_TO_POINTER (d->uid));
    }
  g_mutex_unlock (&uid_lock);
  uid_known (task);
}

void
p11c_auth_check_async (P11cInvocation *invocation, const char *action,
                       gboolean allow_interaction, guint owner_uid, GCancellable *cancel,
                       GAsyncReadyCallback cb, gpointer user_data)
{
  GTask *task = g_task_new (NULL, cancel, cb, user_data);
  AuthData *d = g_new0 (AuthData, 1);
  P11cBus *bus = p11c_invocation_get_bus (invocation);

  d->sender = g_strdup (p11c_invocation_get_sender (invocation));
  d->action = g_strdup (action);
  d->interactive = allow_interaction;
  d->uid = G_MAXUINT;
  d->owner_uid = owner_uid;
  g_task_set_task_data (task, d, (GDestroyNotify) auth_data_free);

  if (d->sender == NULL)
    {
      /* a message bus always names the sender */
      g_task_return_new_error (task, P11C_ERROR, P11C_ERROR_NOT_AUTHORIZED, "Not authorized: unidentified caller");
      g_object_unref (task);
      return;
    }
  uid_cache_watch (bus);
  if (p11c_auth_cached_uid (d->sender, &d->uid))
    {
      uid_known (task);
      return;
    }
  p11c_bus_get_unix_user_async (bus, d->sender, uid_ready, task);
}

gboolean
p11c_auth_check_finish (GAsyncResult *res, guint *uid, GError **error)
{
  AuthData *d = g_task_get_task_data (G_TASK (res));
  if (uid)
    *uid = d->uid;
  return g_task_propagate_boolean (G_TASK (res), error);
}

void
p11c_auth_enroll_actions (const char *storage, gboolean ca_is_local, const char *actions[4])
{
  guint n = 0;

  actions[n++] = g_strcmp0 (storage, "system") == 0 ? P11C_ACTION_SYSTEM : P11C_ACTION_ENROLL;
  /* by the profile's type, not its name: every profile that signs with the
   * local CA's key (an admin's "lab" as much as the built-in "local") */
  if (ca_is_local)
    actions[n++] = P11C_ACTION_LOCAL_CA;
  actions[n] = NULL;
}
