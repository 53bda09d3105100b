/*
 * mb_service.c — services and destination events. A service is where
 * listeners, requests and scripts live: bound to one worker, it owns the
 * tasks posted for it (its mb_owner: once it is dead they are skipped) and
 * is reference counted by them. Events (a destination or a listener added
 * or removed) are posted to each subscriber's worker. Owns every service
 * struct and every subscription; uses mb_worker.c. Freeing a service, which
 * ends its listeners, requests and deliveries, is mb_service_free in
 * mb_runtime.c, above the floors it tears down.
 * Tests: spec/c/test_*.c, spec/workers/workers_spec.lua.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "mb_core.h"

static void service_release(mb_owner *o) {
  mb_service *svc = (mb_service *)o; /* own is its first member */
  free(svc->name);
  free(svc);
}

/* ---- services ------------------------------------------------------------- */

mb_service *mb_service_new(mb_runtime *rt, const char *name, int worker) {
  mb_service *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->name = strdup(name ? name : "?");
  if (!s->name) {
    free(s);
    return NULL;
  }
  atomic_init(&s->own.refs, 1);
  atomic_init(&s->own.dead, 0);
  s->own.release = service_release;
  s->rt = rt;
  mb_lock(rt);
  if (worker < 0 || worker >= rt->nworkers) { /* the least loaded */
    worker = 0;
    for (int i = 1; i < rt->nworkers; i++)
      if (rt->workers[i].services < rt->workers[worker].services) worker = i;
  }
  s->w = &rt->workers[worker];
  s->w->services++;
  s->id = ++rt->next_service;
  s->next = rt->services;
  if (rt->services) rt->services->prev = s;
  rt->services = s;
  rt->counts.services++;
  mb_unlock(rt);
  return s;
}

void mb_service_unref(mb_service *svc) { mb_owner_unref(&svc->own); }

void mb_service_unlink(mb_service *svc) {
  mb_runtime *rt = svc->rt;
  if (svc->prev)
    svc->prev->next = svc->next;
  else
    rt->services = svc->next;
  if (svc->next) svc->next->prev = svc->prev;
  svc->w->services--;
  rt->counts.services--;
}

const char *mb_service_name(const mb_service *svc) { return svc->name; }
uint64_t mb_service_id(const mb_service *svc) { return svc->id; }
struct ev_loop *mb_service_loop(const mb_service *svc) { return svc->w->loop; }
int mb_service_worker(const mb_service *svc) { return svc->w->index; }

int mb_service_signal(const mb_service *svc, int sig) {
  return pthread_kill(svc->w->thread, sig) ? MB_EINVAL : MB_OK;
}

int mb_service_post(mb_service *svc, mb_task_fn fn, void *arg) {
  return mb_worker_post(svc->w, &svc->own, fn, arg);
}

int mb_service_post_always(mb_service *svc, mb_task_fn fn, void *arg) {
  return mb_worker_post(svc->w, NULL, fn, arg);
}

void mb_service_ref(mb_service *svc) { mb_owner_ref(&svc->own); }
int mb_service_alive(const mb_service *svc) { return !atomic_load(&svc->own.dead); }

mb_service *mb_service_find(mb_runtime *rt, uint64_t id) {
  mb_lock(rt);
  mb_service *s = rt->services;
  while (s && s->id != id) s = s->next;
  if (s) mb_owner_ref(&s->own);
  mb_unlock(rt);
  return s;
}

/* ---- events ----------------------------------------------------------------- */

typedef struct pending_event {
  mb_subscription *sub;
  mb_event ev;
  char strings[]; /* destination, service */
} pending_event;

/* Under rt->lock. */
static void sub_release(mb_runtime *rt, mb_subscription *s) {
  if (--s->refs > 0) return;
  for (mb_subscription **p = &rt->subs; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      break;
    }
  rt->counts.subscriptions--;
  free(s);
}

static void run_event(void *arg) {
  pending_event *pe = arg;
  mb_subscription *s = pe->sub;
  mb_runtime *rt = s->rt;
  mb_lock(rt);
  int closed = s->closed;
  mb_unlock(rt);
  /* the subscriber's own thread: it cannot close s while fn runs */
  if (!closed) s->fn(s->ud, &pe->ev);
  mb_lock(rt);
  sub_release(rt, s);
  mb_unlock(rt);
  free(pe);
}

/* Under rt->lock. */
void mb_fire_event(mb_runtime *rt, mb_event_kind kind, const char *dest, size_t destlen,
                   mb_dest_type type, size_t listeners, const mb_service *svc) {
  for (mb_subscription *s = rt->subs; s; s = s->next) {
    if (s->closed || !(s->kinds & kind)) continue;
    size_t dl = destlen + 1, sl = svc ? strlen(svc->name) + 1 : 0;
    pending_event *pe = malloc(sizeof *pe + dl + sl);
    if (!pe) continue;
    pe->sub = s;
    pe->ev.kind = kind;
    pe->ev.type = type;
    pe->ev.listeners = listeners;
    memcpy(pe->strings, dest, dl);
    pe->ev.destination = pe->strings;
    pe->ev.service = NULL;
    if (svc) {
      memcpy(pe->strings + dl, svc->name, sl);
      pe->ev.service = pe->strings + dl;
    }
    s->refs++;
    /* posted without a service so that the free always happens; run_event
     * checks `closed` */
    if (mb_worker_post(s->svc->w, NULL, run_event, pe)) {
      s->refs--;
      free(pe);
    }
  }
}

mb_subscription *mb_subscribe(mb_service *svc, unsigned kinds, mb_event_fn fn, void *ud) {
  mb_subscription *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->svc = svc;
  s->rt = svc->rt;
  s->kinds = kinds;
  s->fn = fn;
  s->ud = ud;
  s->refs = 1;
  mb_lock(s->rt);
  s->next = svc->rt->subs;
  svc->rt->subs = s;
  svc->rt->counts.subscriptions++;
  mb_unlock(s->rt);
  return s;
}

void mb_unsubscribe(mb_subscription *s) {
  mb_runtime *rt = s->rt;
  mb_lock(rt);
  if (!s->closed) {
    s->closed = 1;
    sub_release(rt, s);
  }
  mb_unlock(rt);
}

void mb_events_close(mb_service *svc) {
  mb_runtime *rt = svc->rt;
  for (mb_subscription *s = rt->subs, *next; s; s = next) {
    next = s->next;
    if (s->svc == svc && !s->closed) {
      s->closed = 1;
      sub_release(rt, s);
    }
  }
}

void mb_events_free(mb_runtime *rt) {
  while (rt->subs) {
    mb_subscription *s = rt->subs;
    rt->subs = s->next;
    free(s);
  }
}
