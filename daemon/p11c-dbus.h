#pragma once
/* The D-Bus face of the engine: the Manager, Token and Job objects, the
 * ObjectManager, properties and signals, and the method → polkit table. */
#include <gio/gio.h>
#include "p11c-engine.h"
#include "p11c-bus.h"

G_BEGIN_DECLS

typedef struct _P11cDaemon P11cDaemon;

P11cDaemon *p11c_daemon_new (P11cBus *bus, P11cEngine *engine, GError **error);
void p11c_daemon_free (P11cDaemon *daemon);
/* Cancel the jobs and wait (bounded) for every worker thread. */
void p11c_daemon_shutdown (P11cDaemon *daemon);

/* Emit TokenInserted/TokenRemoved for a PC/SC event (reader, ATR) and
 * trigger a rescan; see p11c-main.c */
void p11c_daemon_card_event (P11cDaemon *daemon, gboolean inserted,
                             const char *reader, GBytes *atr);
void p11c_daemon_rescan (P11cDaemon *daemon);

G_END_DECLS
