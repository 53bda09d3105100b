/*
 * mb_runtime.c — the top floor of the core: creating and freeing a
 * runtime, running and stopping it, and freeing a service. These are the
 * calls that reach every floor below (workers, services, destinations,
 * requests, deliveries, dispatch, observing), so they live here, and no
 * file below calls up into this one. Owns the runtime struct; what it holds
 * belongs to the floors that fill it. Installs the dispatcher's pump
 * (rt->pump) for mb_dest.c.
 * Tests: spec/c/test_runtime.c and test_threads.c, spec/workers/workers_spec.lua.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mb_core.h"
#include "mb_dest.h"

mb_runtime *mb_runtime_new(const mb_config *cfg) {
  /* aligned: what every worker writes sits on cache lines of its own */
  size_t size = (sizeof(mb_runtime) + 63) / 64 * 64;
  mb_runtime *rt = aligned_alloc(64, size);
  if (!rt) return NULL;
  memset(rt, 0, size);
  int n = (cfg && cfg->workers > 0) ? cfg->workers : 1;
  if (n > 256) n = 256;
  rt->max_message_size = (cfg && cfg->max_message_size) ? cfg->max_message_size : 64u << 20;
  mb_mutex_init(&rt->lock);
  rt->t0 = mb_now_ns();
  rt->pump = mb_dispatch_pump;
  if (mb_workers_start(rt, n)) {
    mb_runtime_free(rt);
    return NULL;
  }
  return rt;
}

void mb_runtime_free(mb_runtime *rt) {
  if (!rt) return;
  mb_runtime_join(rt);
  /* services of worker 0, and any a caller left behind */
  while (rt->services) mb_service_free(rt->services);
  mb_workers_drain(rt);
  mb_lock(rt);
  rt->link.send = NULL;
  rt->link.interest = NULL;
  mb_dest_free_all(rt);
  mb_obs_free(rt);
  mb_group_names_free(rt);
  mb_unlock(rt);
  mb_request_free_cache(rt);
  mb_delivery_free_cache(rt);
  mb_map_free(&rt->dests);
  mb_map_free(&rt->requests);
  mb_events_free(rt);
  mb_workers_destroy(rt);
  pthread_mutex_destroy(&rt->lock);
  free(rt);
}

struct ev_loop *mb_runtime_loop(mb_runtime *rt) { return rt->workers[0].loop; }

void mb_runtime_hurry(mb_runtime *rt) { mb_worker_hurry(&rt->workers[0]); }

void mb_runtime_link(mb_runtime *rt, const mb_link *link) {
  mb_lock(rt);
  if (link)
    rt->link = *link;
  else
    memset(&rt->link, 0, sizeof rt->link);
  mb_unlock(rt);
}
size_t mb_runtime_max_message_size(const mb_runtime *rt) { return rt->max_message_size; }

int mb_runtime_shares(const mb_runtime *rt) {
  return atomic_load_explicit(&rt->shares, memory_order_relaxed);
}

static void run_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)revents;
  ev_ref(loop); /* expiring stopped it: undo our ev_unref as libev asks */
  mb_runtime_stop(t->data);
}

/* rt->run_state: the runs in progress count in steps of RUN_ONE, and
 * RUN_STOP asks them to end. One atomic word, so that a stop is either
 * seen by the run in progress or, when none is, dropped: never left over
 * for the next run. */
#define RUN_STOP 1
#define RUN_ONE 2

static int stop_asked(mb_runtime *rt) { return atomic_load(&rt->run_state) & RUN_STOP; }

int mb_runtime_step(mb_runtime *rt, const int *done) {
  mb_worker *w = mb_self();
  if (!w || w->rt != rt) w = &rt->workers[0];
  struct ev_loop *loop = w->loop;
  if (w->index == 0) ev_ref(loop); /* wait for other threads' posts too */
  /* what is ready runs now; and the loop tells what it has of its own
   * (timers of C users count) besides the async watcher */
  int active = ev_run(loop, EVRUN_NOWAIT) - 1;
  int more = atomic_load(&rt->busy) > 0 || active > 0;
  if (more && !stop_asked(rt) && !(done && *done)) ev_run(loop, EVRUN_ONCE);
  if (w->index == 0) ev_unref(loop);
  return more;
}

void mb_runtime_running(mb_runtime *rt, int delta) {
  int v = atomic_load(&rt->run_state), next;
  do {
    next = v + delta * RUN_ONE;
    if (next < RUN_ONE) next = 0; /* the last run is over: so is its stop */
  } while (!atomic_compare_exchange_weak(&rt->run_state, &v, next));
}

int mb_runtime_run(mb_runtime *rt, double timeout) {
  struct ev_loop *loop = rt->workers[0].loop;
  int bounded = timeout > 0 && isfinite(timeout); /* NaN, 0 and infinity: unbounded */
  mb_runtime_running(rt, 1);
  if (bounded) {
    /* from now, not from when the loop last looked at the clock: a caller
     * that spent longer than the bound away from the loop would have its
     * run end before it started */
    ev_now_update(loop);
    ev_timer_init(&rt->run_timer, run_timeout_cb, timeout, 0);
    rt->run_timer.data = rt;
    ev_timer_start(loop, &rt->run_timer);
    ev_unref(loop); /* the bound alone does not keep the bus running */
  }
  while (!stop_asked(rt) && mb_runtime_step(rt, NULL)) {
  }
  /* the stop (if any) was for this run: taken with it, in one step */
  int v = atomic_load(&rt->run_state), next;
  do {
    next = (v - RUN_ONE) & ~RUN_STOP;
    if (next < RUN_ONE) next = 0;
  } while (!atomic_compare_exchange_weak(&rt->run_state, &v, next));
  int stopped = (v & RUN_STOP) != 0;
  if (bounded && ev_is_active(&rt->run_timer)) {
    ev_ref(loop);
    ev_timer_stop(loop, &rt->run_timer);
  }
  return stopped;
}

void mb_runtime_stop(mb_runtime *rt) {
  int v = atomic_load(&rt->run_state);
  while (v >= RUN_ONE && !(v & RUN_STOP))
    if (atomic_compare_exchange_weak(&rt->run_state, &v, v | RUN_STOP)) {
      mb_worker_kick(&rt->workers[0]);
      return;
    }
}

void mb_runtime_counts(const mb_runtime *rt, mb_counts *out) {
  mb_lock((mb_runtime *)rt);
  *out = rt->counts;
  mb_unlock((mb_runtime *)rt);
  out->messages = (size_t)mb_msg_live();
}

/* ---- a service ends ---------------------------------------------------- */

void mb_service_free(mb_service *svc) {
  mb_runtime *rt = svc->rt;
  mb_lock(rt);
  atomic_store(&svc->own.dead, 1);
  mb_delivery_forget_syncs(svc); /* first: dropping deliveries may end them */
  mb_request_cancel_all(svc);
  mb_dest_cancel_blocked(rt, svc);
  mb_delivery_settle_locked(svc); /* its listeners finished these well */
  while (svc->listeners) mb_listener_close_locked(svc->listeners);
  /* those not started go to another member of their group, if one is
   * left; those an mb_send still holds to run inline are handed over or
   * dropped when it runs them (their listener is closed now) */
  for (mb_delivery *dv = svc->open, *next; dv; dv = next) {
    next = dv->next;
    if (!dv->inline_pending && !mb_delivery_handover(dv))
      mb_delivery_finish(dv, MB_EDROPPED, "dropped: service stopped");
  }
  mb_events_close(svc);
  mb_service_unlink(svc);
  mb_unlock(rt);
  mb_service_unref(svc);
}

