#pragma once
#include <gio/gio.h>
#include "p11c-bus.h"

G_BEGIN_DECLS

/* Ask polkit whether the sender of @invocation may do @action (async, the
 * main loop never blocks).  Root (uid 0) is always allowed.  Anything polkit
 * does not positively allow is refused with org.p11certd.Error.NotAuthorized.
 * A caller whose uid is @owner_uid (G_MAXUINT: nobody) is allowed too: the
 * owner of a job may cancel it. */
void p11c_auth_check_async (P11cInvocation *invocation, const char *action,
                            gboolean allow_interaction, guint owner_uid, GCancellable *cancel,
                            GAsyncReadyCallback cb, gpointer user_data);
/* Returns TRUE when allowed; *uid is the caller's Unix uid. */
gboolean p11c_auth_check_finish (GAsyncResult *res, guint *uid, GError **error);

/* The uid behind unique bus name @sender when a call of it was checked
 * before (cached until the name goes away); FALSE when not known.  Any
 * thread. */
gboolean p11c_auth_cached_uid (const char *sender, guint *uid);

void p11c_auth_shutdown (void);

/* The polkit actions an Enroll needs (NULL-terminated, static strings):
 * token.enroll, or system.manage for @storage "system"; and local-ca.issue
 * when the CA profile is of type local, whatever its name (@ca_is_local). */
void p11c_auth_enroll_actions (const char *storage, gboolean ca_is_local, const char *actions[4]);

G_END_DECLS
