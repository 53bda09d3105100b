/*
 * mb_runtime.c — the runtime and its worker: the libev loop, the task queue
 * and the ready list of destinations that an idle watcher drains in batches,
 * services, destination events, run/stop. Owns the loop, every service and
 * (through mb_dest.c) every destination. Tests: spec/c/test_core.c.
 */
#include <stdlib.h>
#include <string.h>

#include "mb_core.h"

const char *mb_strerror(int code) {
  switch (code) {
  case MB_OK: return "ok";
  case MB_PENDING: return "pending";
  case MB_ENODEST: return "no_destination";
  case MB_ENOLISTENERS: return "no_listeners";
  case MB_EFULL: return "queue_full";
  case MB_ETIMEOUT: return "timeout";
  case MB_EFAILED: return "failed";
  case MB_ECLOSED: return "closed";
  case MB_EEXISTS: return "exists";
  case MB_EINVAL: return "invalid";
  case MB_ENOMEM: return "out_of_memory";
  case MB_EDROPPED: return "dropped";
  }
  return "unknown";
}

uint64_t mb_hash_str(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h;
}

/* ---- the worker's queue and idle watcher ------------------------------ */

/* Tasks and ready destinations handled per idle callback before the loop
 * gets a turn for timers and I/O. */
#define BATCH 4096

static mb_dest *ready_pop(mb_worker *w) {
  mb_dest *d = w->ready_head;
  if (!d) return NULL;
  w->ready_head = d->ready_next;
  if (!w->ready_head) w->ready_tail = NULL;
  d->ready_next = NULL;
  d->in_ready = 0;
  return d;
}

static void idle_cb(struct ev_loop *loop, ev_idle *iw, int revents) {
  (void)loop;
  (void)revents;
  mb_worker *w = iw->data;
  size_t budget = BATCH;
  while (budget > 0 && (w->tlen || w->ready_head)) {
    size_t n = w->tlen;
    while (n-- > 0 && budget > 0) {
      mb_task t = w->tasks[w->thead];
      w->thead = (w->thead + 1) % w->tcap;
      w->tlen--;
      budget--;
      if (t.fn) t.fn(t.arg);
    }
    /* one round over the destinations that were ready when it started */
    mb_dest *last = w->ready_tail;
    while (budget > 0 && w->ready_head) {
      mb_dest *d = ready_pop(w);
      int more = mb_dest_pump(d, budget < 256 ? budget : 256);
      budget = budget > 256 ? budget - 256 : 0;
      if (more) mb_worker_ready(w, d);
      mb_dest_unref(d); /* the ready list's reference */
      if (d == last) break;
    }
  }
  if (!w->tlen && !w->ready_head) ev_idle_stop(w->loop, &w->idle);
}

void mb_worker_kick(mb_worker *w) {
  if (!ev_is_active(&w->idle)) ev_idle_start(w->loop, &w->idle);
}

void mb_worker_ready(mb_worker *w, mb_dest *d) {
  if (d->in_ready) return;
  d->in_ready = 1;
  d->refs++;
  d->ready_next = NULL;
  if (w->ready_tail)
    w->ready_tail->ready_next = d;
  else
    w->ready_head = d;
  w->ready_tail = d;
  mb_worker_kick(w);
}

int mb_worker_post(mb_worker *w, mb_service *svc, mb_task_fn fn, void *arg) {
  if (w->tlen == w->tcap) {
    size_t cap = w->tcap ? w->tcap * 2 : 256;
    mb_task *t = malloc(cap * sizeof *t);
    if (!t) return MB_ENOMEM;
    for (size_t i = 0; i < w->tlen; i++) t[i] = w->tasks[(w->thead + i) % w->tcap];
    free(w->tasks);
    w->tasks = t;
    w->tcap = cap;
    w->thead = 0;
  }
  mb_task *t = &w->tasks[(w->thead + w->tlen) % w->tcap];
  t->fn = fn;
  t->arg = arg;
  t->svc = svc;
  w->tlen++;
  mb_worker_kick(w);
  return MB_OK;
}

/* ---- runtime ---------------------------------------------------------- */

mb_runtime *mb_runtime_new(const mb_config *cfg) {
  mb_runtime *rt = calloc(1, sizeof *rt);
  if (!rt) return NULL;
  rt->max_message_size = (cfg && cfg->max_message_size) ? cfg->max_message_size : 64u << 20;
  rt->worker.rt = rt;
  rt->worker.loop = ev_loop_new(EVFLAG_AUTO);
  if (!rt->worker.loop) {
    free(rt);
    return NULL;
  }
  ev_idle_init(&rt->worker.idle, idle_cb);
  rt->worker.idle.data = &rt->worker;
  return rt;
}

void mb_runtime_free(mb_runtime *rt) {
  if (!rt) return;
  while (rt->services) mb_service_free(rt->services);
  mb_worker *w = &rt->worker;
  /* what is still queued only holds references: release them */
  while (w->ready_head) mb_dest_unref(ready_pop(w));
  for (size_t i = 0; i < w->tlen; i++) {
    mb_task *t = &w->tasks[(w->thead + i) % w->tcap];
    if (t->fn && !t->svc) t->fn(t->arg); /* core tasks free what they carry */
  }
  free(w->tasks);
  mb_dest_free_all(rt);
  while (w->free_deliveries) {
    mb_delivery *d = w->free_deliveries;
    w->free_deliveries = d->next;
    free(d);
  }
  mb_map_free(&rt->dests);
  mb_map_free(&rt->requests);
  while (rt->subs) {
    mb_subscription *s = rt->subs;
    rt->subs = s->next;
    free(s);
  }
  ev_idle_stop(w->loop, &w->idle);
  ev_loop_destroy(w->loop);
  free(rt);
}

struct ev_loop *mb_runtime_loop(mb_runtime *rt) { return rt->worker.loop; }
size_t mb_runtime_max_message_size(const mb_runtime *rt) { return rt->max_message_size; }

static void run_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)revents;
  ev_ref(loop); /* expiring stopped it: undo our ev_unref as libev asks */
  mb_runtime_stop(t->data);
}

int mb_runtime_run(mb_runtime *rt, double timeout) {
  struct ev_loop *loop = rt->worker.loop;
  if (timeout > 0) {
    ev_timer_init(&rt->run_timer, run_timeout_cb, timeout, 0);
    rt->run_timer.data = rt;
    ev_timer_start(loop, &rt->run_timer);
    ev_unref(loop); /* the bound alone does not keep the loop alive */
  }
  int stopped = 0;
  for (;;) {
    int active = ev_run(loop, 0);
    if (rt->stopping) {
      stopped = 1;
      break;
    }
    if (!active || (timeout > 0 && active == 1 && ev_is_active(&rt->run_timer))) break;
  }
  rt->stopping = 0;
  if (timeout > 0 && ev_is_active(&rt->run_timer)) {
    ev_ref(loop);
    ev_timer_stop(loop, &rt->run_timer);
  }
  return stopped;
}

void mb_runtime_stop(mb_runtime *rt) {
  rt->stopping = 1;
  ev_break(rt->worker.loop, EVBREAK_ALL);
}

void mb_runtime_counts(const mb_runtime *rt, mb_counts *out) {
  *out = rt->counts;
  out->messages = mb_live_msgs;
}

/* ---- services --------------------------------------------------------- */

mb_service *mb_service_new(mb_runtime *rt, const char *name) {
  mb_service *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->name = strdup(name ? name : "?");
  if (!s->name) {
    free(s);
    return NULL;
  }
  s->rt = rt;
  s->w = &rt->worker;
  s->id = ++rt->next_service;
  s->next = rt->services;
  if (rt->services) rt->services->prev = s;
  rt->services = s;
  rt->counts.services++;
  return s;
}

void mb_service_free(mb_service *svc) {
  mb_runtime *rt = svc->rt;
  mb_worker *w = svc->w;
  while (svc->listeners) mb_listener_close(svc->listeners);
  while (svc->open) mb_delivery_done(svc->open, MB_EDROPPED, "dropped: service stopped");
  mb_request_cancel_all(svc);
  mb_dest_cancel_blocked(rt, svc);
  mb_dest_forget_syncs(svc);
  for (mb_subscription *s = rt->subs, *next; s; s = next) {
    next = s->next;
    if (s->svc == svc) mb_unsubscribe(s);
  }
  for (size_t i = 0; i < w->tlen; i++) {
    mb_task *t = &w->tasks[(w->thead + i) % w->tcap];
    if (t->svc == svc) t->fn = NULL;
  }
  if (svc->prev)
    svc->prev->next = svc->next;
  else
    rt->services = svc->next;
  if (svc->next) svc->next->prev = svc->prev;
  rt->counts.services--;
  free(svc->name);
  free(svc);
}

const char *mb_service_name(const mb_service *svc) { return svc->name; }
uint64_t mb_service_id(const mb_service *svc) { return svc->id; }

int mb_service_post(mb_service *svc, mb_task_fn fn, void *arg) {
  return mb_worker_post(svc->w, svc, fn, arg);
}

/* ---- events ----------------------------------------------------------- */

typedef struct pending_event {
  mb_subscription *sub;
  mb_event ev;
  char strings[]; /* destination, service */
} pending_event;

static void sub_release(mb_runtime *rt, mb_subscription *s) {
  if (--s->refs > 0 || !s->closed) return;
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
  if (!s->closed) s->fn(s->ud, &pe->ev);
  sub_release(s->rt, s);
  free(pe);
}

void mb_fire_event(mb_runtime *rt, mb_event_kind kind, mb_dest *d, mb_service *svc) {
  for (mb_subscription *s = rt->subs; s; s = s->next) {
    if (s->closed || !(s->kinds & kind)) continue;
    size_t dl = d->namelen + 1, sl = svc ? strlen(svc->name) + 1 : 0;
    pending_event *pe = malloc(sizeof *pe + dl + sl);
    if (!pe) continue;
    pe->sub = s;
    pe->ev.kind = kind;
    pe->ev.type = d->opts.type;
    pe->ev.listeners = d->nlisteners;
    memcpy(pe->strings, d->name, dl);
    pe->ev.destination = pe->strings;
    pe->ev.service = NULL;
    if (svc) {
      memcpy(pe->strings + dl, svc->name, sl);
      pe->ev.service = pe->strings + dl;
    }
    s->refs++;
    /* posted without a service so that stopping the subscriber's service
     * does not lose the free; run_event checks `closed` */
    if (mb_worker_post(&rt->worker, NULL, run_event, pe)) {
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
  s->next = svc->rt->subs;
  svc->rt->subs = s;
  svc->rt->counts.subscriptions++;
  return s;
}

void mb_unsubscribe(mb_subscription *s) {
  if (s->closed) return;
  s->closed = 1;
  sub_release(s->rt, s);
}
