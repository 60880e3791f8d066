#define G_LOG_DOMAIN "p11c-engine"
#include "p11c-engine.h"
#include "p11c-error.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <sys/random.h>
#include <glib/gstdio.h>
#include "p11c-store.h"

struct _P11cToken {
  gint          ref;
  char         *id;          /* sanitised stable id, unique among the tokens */
  char         *uri;
  P11cModule   *module;
  char         *module_name;
  char         *pending_dir;  /* STATE/pending: keys of unfinished enrollments */
  CK_SLOT_ID    slot;
  /* ---- guarded by lock ---- */
  GMutex        lock;
  CK_SLOT_INFO  slot_info;
  CK_TOKEN_INFO info;
  GPtrArray    *certs;       /* cached P11cCertEntry list, NULL = stale */
  guint         generation;
  gboolean      present;
  gboolean      pin_rejected;     /* the token refused the PIN whose */
  guint8        rejected_pin[32]; /* keyed digest this is (see p11c_token_login) */
  /* ---- serialisation ---- */
  GMutex        op_lock;     /* one PKCS#11 session phase at a time */
  GCond         job_cond;    /* one job (enroll/renew) at a time: */
  gboolean      job_busy;    /* guarded by lock */
};

/* A PC/SC card event waiting for, or in, its rescan */
typedef struct {
  gboolean   inserted;
  char      *reader;
  GBytes    *atr;
  GPtrArray *tokens;   /* tokens that came / went in its rescan */
} CardEvent;

struct _P11cEngine {
  P11cConfig          *config;
  GPtrArray           *modules;   /* P11cModuleState */
  GPtrArray           *tokens;    /* P11cToken, main thread only */
  GPtrArray           *cas;       /* P11cCaProfile */
  P11cRecords         *records;   /* issuance records, refused PIN files */
  P11cEngineCallbacks  callbacks;
  gpointer             user_data;
  GMutex               scan_lock;
  /* hotplug (main thread): one rescan at a time, card events in order */
  gboolean             rescan_running, rescan_again;
  GQueue               card_events;
  CardEvent           *card_event;  /* the one being handled */
  /* worker threads inside the engine (see p11c_engine_wait_workers) */
  GMutex               workers_lock;
  GCond                workers_cond;
  guint                workers;
};

static void
card_event_free (CardEvent *ev)
{
  g_free (ev->reader);
  g_clear_pointer (&ev->atr, g_bytes_unref);
  g_ptr_array_unref (ev->tokens);
  g_free (ev);
}

/* ---- tokens and cert entries -------------------------------------------- */

P11cToken *
p11c_token_ref (P11cToken *t)
{
  g_atomic_int_inc (&t->ref);
  return t;
}

void
p11c_token_unref (P11cToken *t)
{
  if (t == NULL || !g_atomic_int_dec_and_test (&t->ref))
    return;
  g_free (t->id);
  g_free (t->uri);
  g_free (t->module_name);
  g_free (t->pending_dir);
  g_clear_pointer (&t->certs, g_ptr_array_unref);
  g_mutex_clear (&t->lock);
  g_mutex_clear (&t->op_lock);
  g_cond_clear (&t->job_cond);
  g_free (t);
}

void
p11c_token_get_info (P11cToken *t, CK_TOKEN_INFO *info, CK_SLOT_INFO *slot_info)
{
  g_mutex_lock (&t->lock);
  if (info)
    *info = t->info;
  if (slot_info)
    *slot_info = t->slot_info;
  g_mutex_unlock (&t->lock);
}

const char *
p11c_token_get_id (P11cToken *t)
{
  return t->id;
}

const char *
p11c_token_get_uri (P11cToken *t)
{
  return t->uri;
}

const char *
p11c_token_get_module_name (P11cToken *t)
{
  return t->module_name;
}

gboolean
p11c_token_is_present (P11cToken *t)
{
  gboolean present;
  g_mutex_lock (&t->lock);
  present = t->present;
  g_mutex_unlock (&t->lock);
  return present;
}

guint
p11c_token_get_generation (P11cToken *t)
{
  guint gen;
  g_mutex_lock (&t->lock);
  gen = t->generation;
  g_mutex_unlock (&t->lock);
  return gen;
}

void
p11c_token_lock_operations (P11cToken *t)
{
  g_mutex_lock (&t->op_lock);
}

void
p11c_token_unlock_operations (P11cToken *t)
{
  g_mutex_unlock (&t->op_lock);
}

static void
wake_job_waiters (GCancellable *cancel, gpointer data)
{
  P11cToken *t = data;
  g_mutex_lock (&t->lock);
  g_cond_broadcast (&t->job_cond);
  g_mutex_unlock (&t->lock);
}

gboolean
p11c_token_job_acquire (P11cToken *t, GCancellable *cancel)
{
  gulong id = cancel ? g_cancellable_connect (cancel, G_CALLBACK (wake_job_waiters), t, NULL) : 0;
  gboolean got;

  g_mutex_lock (&t->lock);
  while (t->job_busy && !g_cancellable_is_cancelled (cancel))
    g_cond_wait (&t->job_cond, &t->lock);
  got = !t->job_busy;
  if (got)
    t->job_busy = TRUE;
  g_mutex_unlock (&t->lock);
  if (cancel)
    g_cancellable_disconnect (cancel, id);
  return got;
}

void
p11c_token_job_release (P11cToken *t)
{
  g_mutex_lock (&t->lock);
  t->job_busy = FALSE;
  g_cond_broadcast (&t->job_cond);
  g_mutex_unlock (&t->lock);
}

void
p11c_token_invalidate (P11cToken *t)
{
  g_mutex_lock (&t->lock);
  g_clear_pointer (&t->certs, g_ptr_array_unref);
  t->generation++;
  g_mutex_unlock (&t->lock);
}

P11cCertEntry *
p11c_cert_entry_ref (P11cCertEntry *e)
{
  g_atomic_int_inc (&e->ref);
  return e;
}

void
p11c_cert_entry_unref (P11cCertEntry *e)
{
  if (e == NULL || !g_atomic_int_dec_and_test (&e->ref))
    return;
  g_free (e->uri);
  g_free (e->storage);
  g_free (e->token_id);
  g_free (e->label);
  g_clear_pointer (&e->id, g_bytes_unref);
  g_clear_pointer (&e->der, g_bytes_unref);
  p11c_cert_summary_free (e->summary);
  g_free (e->error);
  g_free (e);
}

/* ---- engine ------------------------------------------------------------- */

static void
module_state_free (P11cModuleState *m)
{
  p11c_module_unload (m->module);
  g_free (m->name);
  g_free (m->description);
  g_free (m->error);
  g_free (m);
}

P11cEngine *
p11c_engine_new (P11cConfig *config)
{
  P11cEngine *e = g_new0 (P11cEngine, 1);
  g_autoptr(GError) error = NULL;

  e->config = config;
  e->modules = g_ptr_array_new_with_free_func ((GDestroyNotify) module_state_free);
  e->tokens = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_token_unref);
  e->cas = p11c_ca_profiles_load (config->ca_dir);
  if (!p11c_config_check_default_ca (config, e->cas, &error))
    g_warning ("%s", error->message);
  e->records = p11c_records_new (config->state_dir);
  g_mutex_init (&e->scan_lock);
  g_mutex_init (&e->workers_lock);
  g_cond_init (&e->workers_cond);
  return e;
}

P11cRecords *
p11c_engine_get_records (P11cEngine *e)
{
  return e->records;
}

void
p11c_engine_set_callbacks (P11cEngine *e, const P11cEngineCallbacks *callbacks, gpointer user_data)
{
  e->callbacks = callbacks ? *callbacks : (P11cEngineCallbacks) { 0 };
  e->user_data = callbacks ? user_data : NULL;
}

const P11cConfig *
p11c_engine_get_config (P11cEngine *e)
{
  return e->config;
}

GPtrArray *
p11c_engine_get_tokens (P11cEngine *e)
{
  return e->tokens;
}

GPtrArray *
p11c_engine_tokens_snapshot (P11cEngine *e)
{
  GPtrArray *a = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_token_unref);
  for (guint i = 0; i < e->tokens->len; i++)
    g_ptr_array_add (a, p11c_token_ref (e->tokens->pdata[i]));
  return a;
}

GPtrArray *
p11c_engine_get_modules (P11cEngine *e)
{
  return e->modules;
}

GPtrArray *
p11c_engine_get_cas (P11cEngine *e)
{
  return e->cas;
}

GPtrArray *
p11c_engine_list_system_certs (P11cEngine *e)
{
  return p11c_system_store_list (e->config->state_dir);
}

void
p11c_delete_result_free (P11cDeleteResult *r)
{
  if (r == NULL)
    return;
  g_strfreev (r->removed);
  g_free (r->keys_kept);
  g_free (r);
}

P11cDeleteResult *
p11c_engine_delete_system_cert (P11cEngine *e, const char *name, GError **error)
{
  P11cDeleteResult *r;

  if (!p11c_system_store_delete (e->config->state_dir, name, error))
    return NULL;
  r = g_new0 (P11cDeleteResult, 1);
  r->removed = g_new0 (char *, 2);
  r->removed[0] = g_strconcat ("system:", name, NULL);
  r->keys_removed = 1;
  return r;
}

void
p11c_engine_worker_enter (P11cEngine *e)
{
  g_mutex_lock (&e->workers_lock);
  e->workers++;
  g_mutex_unlock (&e->workers_lock);
}

void
p11c_engine_worker_leave (P11cEngine *e)
{
  g_mutex_lock (&e->workers_lock);
  e->workers--;
  g_cond_broadcast (&e->workers_cond);
  g_mutex_unlock (&e->workers_lock);
}

static void
worker_trampoline (GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
  GTaskThreadFunc func = g_object_get_data (G_OBJECT (task), "p11c-worker-func");
  P11cEngine *e = g_object_get_data (G_OBJECT (task), "p11c-worker-engine");

  func (task, source, data, cancel);
  p11c_engine_worker_leave (e);
}

void
p11c_engine_run_worker (P11cEngine *e, GTask *task, GTaskThreadFunc func)
{
  p11c_engine_worker_enter (e);
  g_object_set_data (G_OBJECT (task), "p11c-worker-func", func);
  g_object_set_data (G_OBJECT (task), "p11c-worker-engine", e);
  g_task_run_in_thread (task, worker_trampoline);
}

gboolean
p11c_engine_wait_workers (P11cEngine *e, gint64 timeout_usec)
{
  gint64 end = g_get_monotonic_time () + timeout_usec;
  gboolean idle;

  g_mutex_lock (&e->workers_lock);
  while (e->workers > 0)
    if (!g_cond_wait_until (&e->workers_cond, &e->workers_lock, end))
      break;
  idle = e->workers == 0;
  g_mutex_unlock (&e->workers_lock);
  return idle;
}

void
p11c_engine_free (P11cEngine *e)
{
  if (e == NULL)
    return;
  /* Workers still running (shutdown gave up waiting for them) use the
   * modules, tokens, CA profiles, config and e->workers_lock: free none of
   * it.  This is process exit, so the engine is leaked on purpose. */
  if (!p11c_engine_wait_workers (e, 0))
    {
      g_warning ("Workers still busy at exit: leaving the engine and its PKCS#11 modules in place");
      return;
    }
  g_ptr_array_unref (e->tokens);
  g_ptr_array_unref (e->modules);
  g_ptr_array_unref (e->cas);
  p11c_records_free (e->records);
  p11c_config_free (e->config);
  g_queue_clear_full (&e->card_events, (GDestroyNotify) card_event_free);
  g_clear_pointer (&e->card_event, card_event_free);
  g_mutex_clear (&e->scan_lock);
  g_free (e);
}

void
p11c_engine_load_modules (P11cEngine *e)
{
  for (char **name = e->config->modules; name && *name; name++)
    {
      P11cModuleState *m = g_new0 (P11cModuleState, 1);
      g_autoptr(GError) error = NULL;

      m->name = g_strdup (*name);
      m->module = p11c_module_load (*name, p11c_config_module_init_args (e->config, *name), &error);
      if (m->module == NULL)
        {
          m->error = g_strdup (error->message);
          g_warning ("PKCS#11 module %s not loaded: %s", *name, error->message);
        }
      else
        {
          m->description = g_strdup (p11c_module_get_description (m->module));
          g_message ("Loaded PKCS#11 module %s: %s", *name, m->description);
        }
      g_ptr_array_add (e->modules, m);
    }
}

typedef struct {
  P11cModuleState *module;
  GArray          *tokens;   /* P11cSlotToken */
  char            *error;
} ScanResult;

static void
scan_result_free (ScanResult *r)
{
  g_clear_pointer (&r->tokens, g_array_unref);
  g_free (r->error);
  g_free (r);
}

GPtrArray *
p11c_engine_scan (P11cEngine *e)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) scan_result_free);

  g_mutex_lock (&e->scan_lock);
  for (guint i = 0; i < e->modules->len; i++)
    {
      P11cModuleState *m = e->modules->pdata[i];
      ScanResult *r = g_new0 (ScanResult, 1);
      g_autoptr(GError) error = NULL;

      r->module = m;
      if (m->module != NULL)
        {
          r->tokens = p11c_module_list_tokens (m->module, &error);
          if (r->tokens == NULL)
            r->error = g_strdup (error->message);
        }
      g_ptr_array_add (out, r);
    }
  g_mutex_unlock (&e->scan_lock);
  return out;
}

static P11cToken *
find_token (P11cEngine *e, P11cModule *module, CK_SLOT_ID slot, const CK_TOKEN_INFO *info)
{
  for (guint i = 0; i < e->tokens->len; i++)
    {
      P11cToken *t = e->tokens->pdata[i];
      if (t->module == module && t->slot == slot && p11c_token_info_same (&t->info, info))
        return t;
    }
  return NULL;
}

static gboolean
id_in_use (P11cEngine *e, const char *id)
{
  return p11c_engine_find_token_by_id (e, id) != NULL;
}

static P11cToken *
token_new (P11cEngine *e, P11cModuleState *m, const P11cSlotToken *st)
{
  P11cToken *t = g_new0 (P11cToken, 1);
  g_autofree char *base = p11c_token_identity_id (&st->token_info);

  t->ref = 1;
  g_mutex_init (&t->lock);
  g_mutex_init (&t->op_lock);
  g_cond_init (&t->job_cond);
  t->module = m->module;
  t->module_name = g_strdup (m->name);
  t->pending_dir = g_build_filename (e->config->state_dir, "pending", NULL);
  t->slot = st->slot;
  t->slot_info = st->slot_info;
  t->info = st->token_info;
  t->present = TRUE;
  t->uri = p11c_uri_for_token (&st->token_info);
  t->id = g_strdup (base);
  for (guint n = 2; id_in_use (e, t->id); n++)
    {
      g_free (t->id);
      t->id = g_strdup_printf ("%s_%u", base, n);
    }
  return t;
}

void
p11c_engine_apply_scan (P11cEngine *e, GPtrArray *scan)
{
  g_autoptr(GPtrArray) seen = g_ptr_array_new ();

  for (guint i = 0; i < scan->len; i++)
    {
      ScanResult *r = scan->pdata[i];

      if (r->error != NULL)
        {
          /* Keep what we know from a module that failed to answer. */
          g_warning ("PKCS#11 module %s: %s", r->module->name, r->error);
          for (guint j = 0; j < e->tokens->len; j++)
            if (((P11cToken *) e->tokens->pdata[j])->module == r->module->module)
              g_ptr_array_add (seen, e->tokens->pdata[j]);
          continue;
        }
      for (guint j = 0; r->tokens && j < r->tokens->len; j++)
        {
          P11cSlotToken *st = &g_array_index (r->tokens, P11cSlotToken, j);
          P11cToken *t = find_token (e, r->module->module, st->slot, &st->token_info);

          if (t != NULL)
            {
              gboolean changed;
              g_mutex_lock (&t->lock);
              changed = memcmp (&t->info, &st->token_info, sizeof t->info) != 0;
              t->info = st->token_info;
              t->slot_info = st->slot_info;
              g_mutex_unlock (&t->lock);
              g_ptr_array_add (seen, t);
              if (changed && e->callbacks.token_changed)
                e->callbacks.token_changed (e, t, e->user_data);
              continue;
            }
          t = token_new (e, r->module, st);
          g_ptr_array_add (e->tokens, t);
          g_ptr_array_add (seen, t);
          g_message ("Token %s appeared (%s)", t->id, t->uri);
          if (e->card_event != NULL && e->card_event->inserted)
            g_ptr_array_add (e->card_event->tokens, p11c_token_ref (t));
          if (e->callbacks.token_added)
            e->callbacks.token_added (e, t, e->card_event == NULL || !e->card_event->inserted, e->user_data);
        }
    }

  for (guint i = e->tokens->len; i > 0; i--)
    {
      P11cToken *t = e->tokens->pdata[i - 1];
      if (g_ptr_array_find (seen, t, NULL))
        continue;
      p11c_token_ref (t);
      g_mutex_lock (&t->lock);
      t->present = FALSE;
      t->pin_rejected = FALSE;   /* a token put back may have another PIN */
      g_mutex_unlock (&t->lock);
      p11c_token_invalidate (t);
      g_ptr_array_remove_index (e->tokens, i - 1);
      g_message ("Token %s went away", t->id);
      if (e->card_event != NULL && !e->card_event->inserted)
        g_ptr_array_add (e->card_event->tokens, p11c_token_ref (t));
      if (e->callbacks.token_removed)
        e->callbacks.token_removed (e, t, e->card_event == NULL || e->card_event->inserted, e->user_data);
      p11c_token_unref (t);
    }
}

static void
rescan_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
  g_task_return_pointer (task, p11c_engine_scan (data), (GDestroyNotify) g_ptr_array_unref);
}

static void
engine_rescan_async (P11cEngine *e, GCancellable *cancel, GAsyncReadyCallback cb, gpointer user_data)
{
  g_autoptr(GTask) task = g_task_new (NULL, cancel, cb, user_data);
  g_task_set_task_data (task, e, NULL);
  p11c_engine_run_worker (e, task, rescan_thread);
}

static gboolean
engine_rescan_finish (P11cEngine *e, GAsyncResult *res, GError **error)
{
  g_autoptr(GPtrArray) scan = g_task_propagate_pointer (G_TASK (res), error);
  if (scan == NULL)
    return FALSE;
  p11c_engine_apply_scan (e, scan);
  /* A rescan is also "forget what you know": another application may have
   * changed a token behind our back (a module that keeps its own copy of
   * the objects is reloaded for it). */
  for (guint i = 0; i < e->modules->len; i++)
    if (((P11cModuleState *) e->modules->pdata[i])->module != NULL)
      p11c_module_forget_objects (((P11cModuleState *) e->modules->pdata[i])->module);
  for (guint i = 0; i < e->tokens->len; i++)
    p11c_token_invalidate (e->tokens->pdata[i]);
  return TRUE;
}

/* ---- hotplug: rescans never overlap, card events one at a time -------- */

static void card_event_next (P11cEngine *e);

typedef struct {
  P11cEngine     *engine;
  P11cRescanDone  done;
  gpointer        data;
} Rescan;

static void
rescan_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Rescan *r = user_data;
  P11cEngine *e = r->engine;
  g_autoptr(GError) error = NULL;

  e->rescan_running = FALSE;
  if (!engine_rescan_finish (e, res, &error))
    g_warning ("Rescanning the tokens failed: %s", error->message);
  if (e->callbacks.rescanned)
    e->callbacks.rescanned (e, e->user_data);
  if (r->done)
    r->done (e, r->data);
  g_free (r);
  if (e->rescan_again)
    {
      e->rescan_again = FALSE;
      p11c_engine_rescan (e, NULL, NULL);
    }
  else
    card_event_next (e);
}

gboolean
p11c_engine_rescan (P11cEngine *e, P11cRescanDone done, gpointer data)
{
  Rescan *r;

  if (e->rescan_running || e->card_event != NULL)
    {
      e->rescan_again = TRUE;
      return FALSE;
    }
  r = g_new0 (Rescan, 1);
  r->engine = e;
  r->done = done;
  r->data = data;
  e->rescan_running = TRUE;
  engine_rescan_async (e, NULL, rescan_done, r);
  return TRUE;
}

/* Which token did the card bring (or take)?  The only one that came in the
 * rescan, or the one in a slot the reader's name matches. */
static P11cToken *
card_event_token (CardEvent *ev)
{
  for (guint i = 0; i < ev->tokens->len; i++)
    {
      P11cToken *cand = ev->tokens->pdata[i];
      CK_SLOT_INFO slot;
      g_autofree char *desc = NULL;
      p11c_token_get_info (cand, NULL, &slot);
      desc = p11c_padded_string (slot.slotDescription, sizeof slot.slotDescription);
      if (ev->tokens->len == 1 || g_str_has_prefix (ev->reader, desc) || g_str_has_prefix (desc, ev->reader))
        return cand;
    }
  return NULL;
}

static void
card_rescan_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  P11cEngine *e = user_data;
  g_autoptr(GError) error = NULL;
  CardEvent *ev = e->card_event;
  g_autoptr(GPtrArray) others = g_ptr_array_new ();
  P11cCardEvent out = { 0 };

  if (!engine_rescan_finish (e, res, &error))
    g_warning ("Rescanning the tokens after a card event failed: %s", error->message);
  out.inserted = ev->inserted;
  out.reader = ev->reader;
  out.atr = ev->atr;
  out.token = card_event_token (ev);
  for (guint i = 0; i < ev->tokens->len; i++)
    if (ev->tokens->pdata[i] != out.token)
      g_ptr_array_add (others, ev->tokens->pdata[i]);
  out.others = others;
  if (e->callbacks.card_event)
    e->callbacks.card_event (e, &out, e->user_data);
  if (e->callbacks.rescanned)
    e->callbacks.rescanned (e, e->user_data);
  card_event_free (g_steal_pointer (&e->card_event));
  card_event_next (e);
}

static void
card_event_next (P11cEngine *e)
{
  if (e->card_event != NULL || e->rescan_running)
    return;
  e->card_event = g_queue_pop_head (&e->card_events);
  if (e->card_event != NULL)
    engine_rescan_async (e, NULL, card_rescan_done, e);
}

void
p11c_engine_card_event (P11cEngine *e, gboolean inserted, const char *reader, GBytes *atr)
{
  CardEvent *ev = g_new0 (CardEvent, 1);

  g_message ("Card %s reader \"%s\"", inserted ? "inserted into" : "removed from", reader);
  ev->inserted = inserted;
  ev->reader = g_strdup (reader);
  ev->atr = atr ? g_bytes_ref (atr) : NULL;
  ev->tokens = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_token_unref);
  g_queue_push_tail (&e->card_events, ev);
  card_event_next (e);
}

P11cToken *
p11c_engine_find_token_by_id (P11cEngine *e, const char *id)
{
  for (guint i = 0; i < e->tokens->len; i++)
    if (g_strcmp0 (((P11cToken *) e->tokens->pdata[i])->id, id) == 0)
      return e->tokens->pdata[i];
  return NULL;
}

P11cToken *
p11c_engine_resolve_token_uri (P11cEngine *e, const P11cUri *uri, const char *spec, P11cError absent,
                               GError **error)
{
  P11cToken *found = NULL;
  guint matches = 0;

  for (guint i = 0; i < e->tokens->len; i++)
    {
      P11cToken *t = e->tokens->pdata[i];
      CK_TOKEN_INFO info;
      p11c_token_get_info (t, &info, NULL);
      if (p11c_uri_matches_token (uri, &info))
        {
          found = t;
          matches++;
        }
    }
  if (matches == 0)
    {
      g_set_error (error, P11C_ERROR, absent,
                   "No present token matches %s; insert the token or check the URI", spec);
      return NULL;
    }
  if (matches > 1)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "%u tokens match %s; add the token's serial to the URI", matches, spec);
      return NULL;
    }
  return found;
}

P11cToken *
p11c_engine_resolve_token (P11cEngine *e, const char *spec, GError **error)
{
  g_autoptr(P11cUri) uri = NULL;
  if (spec == NULL || spec[0] == '\0')
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS, "No token given");
      return NULL;
    }
  if (spec[0] == '/')
    {
      /* a name the caller's face did not resolve (an object path of a
       * token that is gone) */
      g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT,
                   "No token %s is present; insert it or check the token list", spec);
      return NULL;
    }
  uri = p11c_uri_parse (spec, error);
  if (uri == NULL)
    return NULL;
  return p11c_engine_resolve_token_uri (e, uri, spec, P11C_ERROR_TOKEN_NOT_PRESENT, error);
}

const P11cCaProfile *
p11c_engine_find_ca (P11cEngine *e, const char *name)
{
  for (guint i = 0; i < e->cas->len; i++)
    if (g_strcmp0 (((P11cCaProfile *) e->cas->pdata[i])->name, name) == 0)
      return e->cas->pdata[i];
  return NULL;
}

/* ---- token operations --------------------------------------------------- */

/* Some modules report CKR_TOKEN_NOT_PRESENT only on the next call: make a
 * removed token an explicit error before touching it. */
static gboolean
token_check_present (P11cToken *t, GError **error)
{
  gboolean present = p11c_token_is_present (t);
  if (!present)
    g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT,
                 "The token %s was removed; insert it and try again", t->id);
  return present;
}

gboolean
p11c_token_update_info (P11cToken *t)
{
  CK_TOKEN_INFO info;
  gboolean changed = FALSE;

  if (p11c_module_get_token_info (t->module, t->slot, &info, NULL))
    {
      g_mutex_lock (&t->lock);
      changed = memcmp (&info, &t->info, sizeof info) != 0;
      t->info = info;
      g_mutex_unlock (&t->lock);
    }
  return changed;
}

/* Keys recorded in STATE/pending by an enrollment that died (another
 * process) or that could not clean up after itself: remove them now that
 * we are logged in — unless a certificate with that CKA_ID exists, in which
 * case the enrollment did finish and only the record is stale. */
static void
clean_orphans (P11cToken *t, P11cSession *s)
{
  g_autoptr(GDir) d = g_dir_open (t->pending_dir, 0, NULL);
  const char *name;
  CK_TOKEN_INFO info;

  if (d == NULL || !s->logged_in)
    return;
  p11c_token_get_info (t, &info, NULL);
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (t->pending_dir, name, NULL);
      g_autoptr(GKeyFile) kf = g_key_file_new ();
      g_autofree char *rec_uri = NULL, *id_hex = NULL;
      g_autoptr(P11cUri) rec_token = NULL;
      g_autoptr(GBytes) id = NULL;
      g_autoptr(GArray) certs = NULL;
      g_autoptr(GArray) objs = NULL;
      guint removed = 0;

      if (!g_str_has_suffix (name, ".ini") || !g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, NULL))
        continue;
      /* the record's token URI names label, manufacturer, model and serial:
       * the whole identity (p11c_token_info_same), not the serial alone.
       * Records written before URIs dropped NUL padding may not parse:
       * those are matched by their serial, as when they were written. */
      rec_uri = g_key_file_get_string (kf, "pending", "token-uri", NULL);
      id_hex = g_key_file_get_string (kf, "pending", "id", NULL);
      rec_token = rec_uri ? p11c_uri_parse (rec_uri, NULL) : NULL;
      if (rec_token == NULL)
        {
          g_autofree char *rec_serial = g_key_file_get_string (kf, "pending", "token-serial", NULL);
          g_autofree char *serial = p11c_padded_string (info.serialNumber, sizeof info.serialNumber);
          if (rec_serial == NULL || !g_str_equal (rec_serial, serial))
            continue;
        }
      else if (!p11c_uri_matches_token (rec_token, &info))
        continue;
      if (id_hex == NULL)
        continue;
      if (g_key_file_get_int64 (kf, "pending", "pid", NULL) == getpid ()
          && !g_key_file_get_boolean (kf, "pending", "abandoned", NULL))
        continue;   /* a job of ours still running */
      id = p11c_id_from_hex (id_hex);
      if (id == NULL)
        continue;
      certs = p11c_session_find (s, CKO_CERTIFICATE, id, NULL, NULL);
      if (certs == NULL)
        continue;
      if (certs->len == 0)
        {
          objs = p11c_session_find (s, CK_UNAVAILABLE_INFORMATION, id, NULL, NULL);
          for (guint i = 0; objs && i < objs->len; i++)
            if (p11c_session_destroy (s, g_array_index (objs, CK_OBJECT_HANDLE, i), NULL))
              removed++;
          if (objs == NULL || removed < objs->len)
            continue;   /* try again at the next login */
        }
      g_unlink (path);
      g_log_structured (G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE,
                        "MESSAGE_ID", P11C_MSGID_RECOVERED, "P11C_TOKEN", t->id,
                        "MESSAGE", "Removed %u object(s) left on token %s by an interrupted enrollment (id %s)%s",
                        removed, t->id, id_hex, certs->len ? "; it had completed, kept" : "");
      p11c_token_invalidate (t);
    }
}

P11cSession *
p11c_token_open_session (P11cToken *t, gboolean rw, GError **error)
{
  CK_TOKEN_INFO known, now;
  gboolean present;

  g_mutex_lock (&t->lock);
  present = t->present;
  known = t->info;
  g_mutex_unlock (&t->lock);
  if (present && !p11c_module_get_token_info (t->module, t->slot, &now, error))
    return NULL;
  if (!present || !p11c_token_info_same (&now, &known))
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_NOT_PRESENT,
                   "The token was removed (its reader is empty or holds another token); "
                   "insert it and try again");
      return NULL;
    }
  return p11c_session_open (t->module, t->slot, rw, error);
}

/* HMAC-SHA256 of @pin under a random key made once per process: the token
 * remembers which PIN it refused without keeping the PIN itself. */
static void
pin_digest (const char *pin, guint8 out[32])
{
  static guint8 key[32];
  static gsize once = 0;
  g_autoptr(GHmac) h = NULL;
  gsize len = 32;

  if (g_once_init_enter (&once))
    {
      if (getrandom (key, sizeof key, 0) != (ssize_t) sizeof key)
        g_error ("getrandom: %s", g_strerror (errno));
      g_once_init_leave (&once, 1);
    }
  h = g_hmac_new (G_CHECKSUM_SHA256, key, sizeof key);
  g_hmac_update (h, (const guchar *) pin, -1);
  g_hmac_get_digest (h, out, &len);
}

/* The token's PIN state as error details (Job.ErrorDetails), so a client
 * can say it in its own words: token o, pin_count_low b, pin_final_try b,
 * pin_locked b. */
static void
set_pin_state_details (P11cToken *t, GError *error)
{
  CK_FLAGS flags;

  g_mutex_lock (&t->lock);
  flags = t->info.flags;
  g_mutex_unlock (&t->lock);
  p11c_error_set_detail_token (error, t->id);
  p11c_error_set_detail_bool (error, "pin_count_low", !!(flags & CKF_USER_PIN_COUNT_LOW));
  p11c_error_set_detail_bool (error, "pin_final_try", !!(flags & CKF_USER_PIN_FINAL_TRY));
  p11c_error_set_detail_bool (error, "pin_locked", !!(flags & CKF_USER_PIN_LOCKED));
}

static gboolean
is_pin_error (const GError *error)
{
  return g_error_matches (error, P11C_ERROR, P11C_ERROR_PIN_INCORRECT)
         || g_error_matches (error, P11C_ERROR, P11C_ERROR_PIN_LOCKED);
}

gboolean
p11c_token_login (P11cToken *t, P11cSession *s, const char *pin, P11cLoginKind kind, GError **error)
{
  CK_FLAGS flags;
  guint8 digest[32];
  gboolean refused_before;

  pin_digest (pin, digest);
  g_mutex_lock (&t->lock);
  refused_before = kind == P11C_LOGIN_AUTOMATIC && t->pin_rejected && memcmp (t->rejected_pin, digest, sizeof digest) == 0;
  g_mutex_unlock (&t->lock);
  if (refused_before)
    {
      p11c_memwipe (digest, sizeof digest);
      g_set_error (error, P11C_ERROR, P11C_ERROR_PIN_INCORRECT,
                   "The token already refused this PIN; it was not sent again "
                   "(the daemon never retries a wrong PIN). Enter the correct PIN");
      if (error != NULL)
        {
          p11c_error_set_detail_bool (*error, "pin_not_sent", TRUE);
          set_pin_state_details (t, *error);
        }
      return FALSE;
    }
  if (p11c_session_login (s, pin, error))
    {
      p11c_memwipe (digest, sizeof digest);
      g_mutex_lock (&t->lock);
      t->pin_rejected = FALSE;
      g_mutex_unlock (&t->lock);
      p11c_token_update_info (t);
      clean_orphans (t, s);
      return TRUE;
    }
  /* Never retried: remember the refused PIN, report the token's own counter
   * state and stop. */
  p11c_token_update_info (t);
  g_mutex_lock (&t->lock);
  if (is_pin_error (*error))
    {
      memcpy (t->rejected_pin, digest, sizeof digest);
      t->pin_rejected = TRUE;
    }
  flags = t->info.flags;
  g_mutex_unlock (&t->lock);
  p11c_memwipe (digest, sizeof digest);
  if (flags & CKF_USER_PIN_LOCKED)
    {
      if (g_error_matches (*error, P11C_ERROR, P11C_ERROR_PIN_INCORRECT))
        (*error)->code = P11C_ERROR_PIN_LOCKED;
      g_prefix_error (error, "The token PIN is now locked (no tries left). ");
    }
  else if (flags & CKF_USER_PIN_FINAL_TRY)
    g_prefix_error (error, "Only one PIN try is left before the token locks. ");
  else if (flags & CKF_USER_PIN_COUNT_LOW)
    g_prefix_error (error, "Few PIN tries are left (the token reports the count is low). ");
  if (error != NULL && is_pin_error (*error))
    set_pin_state_details (t, *error);
  return FALSE;
}

static GPtrArray *
read_certs (P11cToken *t, GError **error)
{
  g_autoptr(P11cSession) s = NULL;
  g_autoptr(GArray) certs = NULL;
  g_autoptr(GArray) privs = NULL;
  g_autoptr(GArray) pubs = NULL;
  g_autoptr(GHashTable) key_ids = g_hash_table_new_full (g_bytes_hash, g_bytes_equal,
                                                         (GDestroyNotify) g_bytes_unref, NULL);
  g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func ((GDestroyNotify) p11c_cert_entry_unref);
  CK_TOKEN_INFO info;

  p11c_token_get_info (t, &info, NULL);
  s = p11c_session_open (t->module, t->slot, FALSE, error);
  if (s == NULL)
    return NULL;
  certs = p11c_session_find (s, CKO_CERTIFICATE, NULL, NULL, error);
  if (certs == NULL)
    return NULL;
  /* Without a login most tokens hide private keys; the public half of a
   * pair generated on the token is visible and has the same CKA_ID. */
  privs = p11c_session_find (s, CKO_PRIVATE_KEY, NULL, NULL, NULL);
  pubs = p11c_session_find (s, CKO_PUBLIC_KEY, NULL, NULL, NULL);
  for (int k = 0; k < 2; k++)
    {
      GArray *keys = k == 0 ? privs : pubs;
      for (guint i = 0; keys && i < keys->len; i++)
        {
          GBytes *id = p11c_session_get_bytes (s, g_array_index (keys, CK_OBJECT_HANDLE, i), CKA_ID, NULL);
          if (id != NULL)
            g_hash_table_add (key_ids, id);
        }
    }

  for (guint i = 0; i < certs->len; i++)
    {
      CK_OBJECT_HANDLE h = g_array_index (certs, CK_OBJECT_HANDLE, i);
      P11cCertEntry *e = g_new0 (P11cCertEntry, 1);
      g_autoptr(GBytes) label = p11c_session_get_bytes (s, h, CKA_LABEL, NULL);
      g_autoptr(GError) local = NULL;
      gsize id_len = 0;
      const guint8 *id_data;

      e->ref = 1;
      e->storage = g_strdup ("token");
      e->token_id = g_strdup (t->id);
      e->id = p11c_session_get_bytes (s, h, CKA_ID, NULL);
      if (e->id == NULL)
        e->id = g_bytes_new (NULL, 0);
      e->label = label ? g_utf8_make_valid (g_bytes_get_data (label, NULL), g_bytes_get_size (label))
                       : g_strdup ("");
      e->der = p11c_session_get_bytes (s, h, CKA_VALUE, &local);
      if (e->der != NULL)
        {
          gsize len;
          const guint8 *der = g_bytes_get_data (e->der, &len);
          e->summary = p11c_cert_summary_from_der (der, len, &local);
        }
      else
        e->der = g_bytes_new (NULL, 0);
      if (e->summary == NULL)
        e->error = g_strdup (local ? local->message : "unreadable certificate");
      id_data = g_bytes_get_data (e->id, &id_len);
      e->has_private_key = id_len > 0 && g_hash_table_contains (key_ids, e->id);
      e->uri = p11c_uri_for_object (&info, P11C_OBJECT_CERT, id_data, id_len, e->label);
      g_ptr_array_add (out, e);
    }
  return g_steal_pointer (&out);
}

GPtrArray *
p11c_token_list_certs (P11cToken *t, GError **error)
{
  GPtrArray *certs;
  guint generation;

  g_mutex_lock (&t->lock);
  if (t->certs != NULL)
    {
      certs = g_ptr_array_ref (t->certs);
      g_mutex_unlock (&t->lock);
      return certs;
    }
  generation = t->generation;
  g_mutex_unlock (&t->lock);

  if (!token_check_present (t, error))
    return NULL;
  g_mutex_lock (&t->op_lock);
  certs = read_certs (t, error);
  g_mutex_unlock (&t->op_lock);
  if (certs == NULL)
    return NULL;

  g_mutex_lock (&t->lock);
  if (t->generation == generation && t->certs == NULL)
    t->certs = g_ptr_array_ref (certs);
  g_mutex_unlock (&t->lock);
  return certs;
}

static char *
object_uri (const CK_TOKEN_INFO *info, P11cObjectType type, GBytes *id, const char *label)
{
  gsize len = 0;
  const guint8 *data = id ? g_bytes_get_data (id, &len) : NULL;
  return p11c_uri_for_object (info, type, data, len, label);
}

static P11cDeleteResult *
delete_locked (P11cToken *t, P11cSession *s, const P11cUri *uri, gboolean keep_key, GError **error)
{
  g_autoptr(GArray) certs = NULL;
  g_autoptr(GPtrArray) removed = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GBytes) cert_id = NULL;
  g_autofree char *cert_label = NULL;
  g_autofree char *kept_reason = NULL;
  guint shared_with = 0;   /* other certificates using the key (kept) */
  P11cDeleteResult *result;
  CK_TOKEN_INFO info;
  CK_OBJECT_HANDLE cert;

  p11c_token_get_info (t, &info, NULL);
  certs = p11c_session_find (s, CKO_CERTIFICATE, uri->id, uri->object, error);
  if (certs == NULL)
    return NULL;
  if (certs->len == 0)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_NOT_FOUND,
                   "No certificate on token %s matches the URI", t->id);
      return NULL;
    }
  if (certs->len > 1)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "%u certificates match the URI; name one by its full URI", certs->len);
      return NULL;
    }
  cert = g_array_index (certs, CK_OBJECT_HANDLE, 0);
  cert_id = p11c_session_get_bytes (s, cert, CKA_ID, NULL);
  {
    g_autoptr(GBytes) l = p11c_session_get_bytes (s, cert, CKA_LABEL, NULL);
    cert_label = l ? g_strndup (g_bytes_get_data (l, NULL), g_bytes_get_size (l)) : NULL;
  }

  if (!p11c_session_destroy (s, cert, error))
    return NULL;
  g_ptr_array_add (removed, object_uri (&info, P11C_OBJECT_CERT, cert_id, cert_label));

  if (!keep_key && cert_id != NULL && g_bytes_get_size (cert_id) > 0)
    {
      g_autoptr(GArray) others = p11c_session_find (s, CKO_CERTIFICATE, cert_id, NULL, error);
      if (others == NULL)
        goto partial;
      if (others->len > 0)
        {
          kept_reason = g_strdup_printf ("%u other certificate(s) use the same key", others->len);
          shared_with = others->len;
        }
      else
        {
          static const CK_OBJECT_CLASS classes[] = { CKO_PRIVATE_KEY, CKO_PUBLIC_KEY };
          for (gsize c = 0; c < G_N_ELEMENTS (classes); c++)
            {
              g_autoptr(GArray) keys = p11c_session_find (s, classes[c], cert_id, NULL, error);
              if (keys == NULL)
                goto partial;
              for (guint i = 0; i < keys->len; i++)
                {
                  CK_OBJECT_HANDLE h = g_array_index (keys, CK_OBJECT_HANDLE, i);
                  g_autoptr(GBytes) l = p11c_session_get_bytes (s, h, CKA_LABEL, NULL);
                  g_autofree char *label = l ? g_strndup (g_bytes_get_data (l, NULL), g_bytes_get_size (l)) : NULL;
                  if (!p11c_session_destroy (s, h, error))
                    goto partial;
                  g_ptr_array_add (removed, object_uri (&info,
                                                        classes[c] == CKO_PRIVATE_KEY ? P11C_OBJECT_PRIVATE : P11C_OBJECT_PUBLIC,
                                                        cert_id, label));
                }
            }
        }
    }

  /* Verify: search again, the certificate (and keys) must be gone. */
  {
    g_autoptr(GArray) again = p11c_session_find (s, CKO_CERTIFICATE, cert_id, cert_label, error);
    guint left = 0;
    if (again == NULL)
      goto partial;
    left += again->len;
    if (!keep_key && kept_reason == NULL && cert_id != NULL && g_bytes_get_size (cert_id) > 0)
      {
        g_autoptr(GArray) k1 = p11c_session_find (s, CKO_PRIVATE_KEY, cert_id, NULL, NULL);
        g_autoptr(GArray) k2 = p11c_session_find (s, CKO_PUBLIC_KEY, cert_id, NULL, NULL);
        left += (k1 ? k1->len : 0) + (k2 ? k2->len : 0);
      }
    if (left > 0)
      {
        g_set_error (error, P11C_ERROR, P11C_ERROR_TOKEN_ERROR,
                     "The token still shows %u of the deleted objects after deletion", left);
        goto partial;
      }
  }

  result = g_new0 (P11cDeleteResult, 1);
  result->keys_removed = removed->len - 1;
  result->keys_kept = g_steal_pointer (&kept_reason);
  result->keys_shared_with = shared_with;
  g_ptr_array_add (removed, NULL);
  result->removed = (GStrv) g_ptr_array_free (g_steal_pointer (&removed), FALSE);
  return result;

partial:
  if (removed->len > 0)
    {
      g_ptr_array_add (removed, NULL);
      g_autofree char *list = g_strjoinv (", ", (char **) removed->pdata);
      g_prefix_error (error, "Deletion incomplete: removed %s, then: ", list);
    }
  return NULL;
}

P11cDeleteResult *
p11c_token_delete_cert (P11cToken *t, const P11cUri *uri, const char *pin,
                        gboolean keep_key, GError **error)
{
  g_autoptr(P11cSession) s = NULL;
  P11cDeleteResult *result = NULL;

  if (uri->id == NULL && uri->object == NULL)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The URI does not name a certificate (it needs id= or object=)");
      return NULL;
    }
  if (uri->type != P11C_OBJECT_ANY && uri->type != P11C_OBJECT_CERT)
    {
      g_set_error (error, P11C_ERROR, P11C_ERROR_INVALID_ARGS,
                   "The URI names a key, not a certificate (type=cert)");
      return NULL;
    }
  if (!p11c_secret_check (pin, "PIN", error) || !token_check_present (t, error))
    return NULL;

  g_mutex_lock (&t->op_lock);
  s = p11c_token_open_session (t, TRUE, error);
  if (s != NULL && p11c_token_login (t, s, pin, P11C_LOGIN_PERSON, error))
    result = delete_locked (t, s, uri, keep_key, error);
  g_clear_pointer (&s, p11c_session_close);
  g_mutex_unlock (&t->op_lock);
  p11c_token_invalidate (t);
  return result;
}

gboolean
p11c_token_change_pin (P11cToken *t, const char *old_pin, const char *new_pin, GError **error)
{
  g_autoptr(P11cSession) s = NULL;
  gboolean ok = FALSE;

  if (!token_check_present (t, error))
    return FALSE;
  g_mutex_lock (&t->op_lock);
  s = p11c_token_open_session (t, TRUE, error);
  /* Log in first so a wrong old PIN is reported exactly like elsewhere (and
   * counted once by the token), then C_SetPIN in the user's session. */
  if (s != NULL && p11c_token_login (t, s, old_pin, P11C_LOGIN_PERSON, error))
    ok = p11c_session_set_pin (s, old_pin, new_pin, error);
  g_clear_pointer (&s, p11c_session_close);
  g_mutex_unlock (&t->op_lock);
  p11c_token_update_info (t);
  return ok;
}
