/*
 * mb_request.c — the registry of open requests (request/reply and
 * scatter-gather): a request is a message flagged MB_MSG_REQUEST,
 * registered by its id until its first reply (or one answer per listener
 * group for request_all), a failure, or its timeout. Owns its requests and
 * the reply references they hold. Answers may come from any worker, under
 * rt->lock; the request's timer and its callback belong to the requester's
 * worker, where a finish task ends it. Sending one and replying are
 * mb_request_start and mb_reply_id in mb_send.c. Uses mb_msg.c,
 * mb_worker.c, mb_service.c, mb_observe.c and mb_dest.c (a reference).
 * Tests: spec/c/test_request.c, spec/api/bus_spec.lua.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_core.h"
#include "mb_dest.h"

enum { SLOT_WAITING = 1 };

static int req_eq(const void *v, const void *key) {
  return ((const mb_request *)v)->id == *(const uint64_t *)key;
}

static uint64_t id_hash(uint64_t id) { return id * 0x9E3779B97F4A7C15ull; }

mb_request *mb_request_find(mb_runtime *rt, uint64_t id) {
  return mb_map_get(&rt->requests, id_hash(id), req_eq, &id);
}

static void request_free(mb_request *r) {
  for (size_t i = 0; i < r->n; i++) {
    mb_msg_unref(r->slots[i].reply);
    free(r->slots[i].error);
  }
  if (r->slots != &r->one) free(r->slots);
  mb_dest_unref(r->dest);
  mb_runtime *rt = r->svc->rt;
  rt->counts.requests--;
  mb_service_unref(r->svc);
  if (rt->nfree_requests < 64) { /* one in flight per coroutine: reused at once */
    r->next = rt->free_requests;
    rt->free_requests = r;
    rt->nfree_requests++;
    return;
  }
  free(r);
}

static void request_release(mb_request *r) {
  if (--r->refs == 0) request_free(r);
}

static void unlink_request(mb_request *r) {
  mb_service *svc = r->svc;
  if (r->prev)
    r->prev->next = r->next;
  else
    svc->requests = r->next;
  if (r->next) r->next->prev = r->prev;
  r->next = r->prev = NULL;
}

/* Takes the request out of the runtime: no answer reaches it afterwards. */
static void detach(mb_request *r) {
  mb_runtime *rt = r->svc->rt;
  if (!r->finished && !r->held) rt->counts.unlimited--;
  r->finished = 1;
  mb_map_del(&rt->requests, id_hash(r->id), req_eq, &r->id);
  unlink_request(r);
}

/* On the requester's worker: stops the timer, tells the requester. */
static void finish_task(void *arg) {
  mb_request *r = arg;
  mb_runtime *rt = r->svc->rt;
  mb_answer stack[8], *a = stack;
  ev_timer_stop(r->svc->w->loop, &r->timer);
  mb_lock(rt);
  int tell = !r->cancelled && !atomic_load(&r->svc->own.dead);
  size_t n = r->n;
  mb_unlock(rt);
  /* the answers do not change once finished: read them unlocked */
  if (tell) {
    if (n > 8 && !(a = malloc(n * sizeof *a))) {
      a = stack; /* report what fits rather than nothing */
      n = 8;
    }
    for (size_t i = 0; i < n; i++) {
      a[i].status = r->slots[i].status;
      a[i].reply = r->slots[i].reply;
      a[i].error = r->slots[i].error;
    }
    r->fn(r->ud, a, n);
    if (a != stack) free(a);
  }
  mb_lock(rt);
  request_release(r);
  mb_unlock(rt);
}

static void complete(mb_request *r) {
  detach(r);
  if (mb_worker_post(r->svc->w, NULL, finish_task, r)) {
    /* out of memory: this may be any worker's thread, and the timer is the
     * requester's worker's. Its expiry (timeout_cb, there) finishes the
     * request instead, with the answers kept; the bus stays busy until. */
    r->finish_late = 1;
    mb_service *svc = r->svc; /* still its service's: mb_request_cancel_all ends it */
    r->next = svc->requests;
    if (svc->requests) svc->requests->prev = r;
    svc->requests = r;
    return;
  }
  if (r->held) mb_busy(r->svc->rt, -1); /* after the post: the bus never looks idle between */
}

static int ensure_slots(mb_request *r, size_t n) {
  if (r->slots) return 0;
  if (n == 0) n = 1;
  r->slots = n == 1 ? &r->one : calloc(n, sizeof *r->slots);
  if (!r->slots) return -1;
  if (n == 1) memset(&r->one, 0, sizeof r->one);
  r->n = n;
  for (size_t i = 0; i < n; i++) r->slots[i].status = SLOT_WAITING;
  return 0;
}

void mb_request_dispatched(mb_request *r, mb_dest *d, const mb_msg *m) {
  if (r->dispatched || r->finished) return;
  r->dispatched = 1;
  if (!r->all) return;
  if (ensure_slots(r, mb_dest_takers(d, m))) return;
  size_t k = 0;
  for (size_t i = 0; i < d->ngroups && k < r->n; i++)
    if (mb_group_takes(d->groups[i], m)) r->slots[k++].group = d->groups[i]->id;
}

void mb_request_expect(mb_request *r, uint64_t base, size_t k) {
  if (r->finished || !r->all || k == 0) return;
  struct mb_slot *v = r->slots == &r->one ? malloc((r->n + k) * sizeof *v)
                                            : realloc(r->slots, (r->n + k) * sizeof *v);
  if (!v) return; /* out of memory: those answers are not waited for */
  if (r->slots == &r->one) memcpy(v, &r->one, sizeof *v);
  r->slots = v;
  for (size_t i = 0; i < k; i++) {
    memset(&v[r->n + i], 0, sizeof *v);
    v[r->n + i].status = SLOT_WAITING;
    v[r->n + i].group = base + i;
  }
  r->n += k;
}

void mb_request_window_closed(mb_request *r) {
  if (!r->window) return;
  r->window = 0;
  /* no node acknowledged: the wait goes on to the timeout (someone listens:
   * the server would have said "no responders") */
  if (!r->finished && r->n && r->answered >= r->n) complete(r);
}

static char *error_copy(int status, const char *error) {
  char buf[64];
  if (!error) {
    snprintf(buf, sizeof buf, "%s", mb_strerror(status));
    error = buf;
  }
  return strdup(error);
}

/* The answer of listener group `group`, or, when the group is not known
 * (0: an explicit reply by message fields), of the group whose delivery went
 * to service `from`. Returns 0 when taken, -1 when nobody waits for it. */
static int answer(mb_request *r, uint64_t group, const mb_service *from, int status,
                  mb_msg *reply, const char *error) {
  if (r->finished || ensure_slots(r, 1)) return -1;
  struct mb_slot *s = NULL;
  if (!r->all)
    s = &r->slots[0];
  else {
    for (size_t i = 0; i < r->n && !s; i++) {
      struct mb_slot *c = &r->slots[i];
      if (c->status == SLOT_WAITING && (group ? c->group == group : c->svc == from)) s = c;
    }
    if (!s) return -1;
  }
  s->status = status;
  s->reply = reply ? mb_msg_ref(reply) : NULL;
  s->error = status == MB_OK ? NULL : error_copy(status, error);
  r->answered++;
  if (!r->all || (r->answered >= r->n && !r->window)) complete(r);
  return 0;
}

void mb_request_answer(mb_request *r, uint64_t group, int status, mb_msg *reply,
                       const char *error) {
  answer(r, group, NULL, status, reply, error);
}

int mb_request_reply(mb_request *r, uint64_t group, const mb_service *from, mb_msg *reply) {
  return answer(r, group, from, MB_OK, reply, NULL);
}

void mb_request_delivering(mb_request *r, uint64_t group, mb_service *svc) {
  if (!r->all || r->finished) return;
  for (size_t i = 0; i < r->n; i++)
    if (r->slots[i].group == group) r->slots[i].svc = svc;
}

static void timeout_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  mb_request *r = t->data;
  mb_runtime *rt = r->svc->rt;
  char err[320];
  mb_lock(rt);
  if (r->finished) { /* answered meanwhile: its finish task is queued */
    int late = r->finish_late;
    if (late) unlink_request(r);
    r->finish_late = 0;
    mb_unlock(rt);
    if (late) { /* or it could not be queued: finish it here */
      int held = r->held; /* r may be gone once finished */
      finish_task(r);
      if (held) mb_busy(rt, -1);
    }
    return;
  }
  snprintf(err, sizeof err, "timeout: no %s from %s within %g s", r->all ? "answer" : "reply",
           r->dest->name, r->timeout);
  if (!r->proxy) r->dest->st.timeouts++; /* a proxy's requester, on another node, counts its own */
  mb_obs_timeout(r, err);
  if (r->remote && r->all && r->n == 0) { /* no node acknowledged in time */
    snprintf(err, sizeof err, "timeout: no node acknowledged the message at %s within %g s",
             r->dest->name, r->timeout);
  }
  if (ensure_slots(r, r->all && !r->remote ? r->dest->ngroups : 1) == 0)
    for (size_t i = 0; i < r->n; i++)
      if (r->slots[i].status == SLOT_WAITING) {
        r->slots[i].status = MB_ETIMEOUT;
        r->slots[i].error = strdup(err);
      }
  complete(r); /* with no answers when out of memory: still the wait ends */
  int late = r->finish_late; /* the timer has fired: finish it here, now */
  if (late) unlink_request(r);
  r->finish_late = 0;
  mb_unlock(rt);
  if (late) {
    int held = r->held; /* r may be gone once finished */
    finish_task(r);
    if (held) mb_busy(rt, -1);
  }
}

void mb_request_admitted(mb_request *r, int status) {
  if (status < 0 && !r->finished) {
    char err[320];
    snprintf(err, sizeof err, "%s: %s was removed while the request waited for room",
             mb_strerror(status), r->dest->name);
    answer(r, 0, NULL, status, NULL, err);
  }
  request_release(r);
}

mb_request *mb_request_open(mb_service *from, mb_dest *d, const mb_msg *m, double timeout,
                            int all, mb_request_fn fn, void *ud) {
  mb_runtime *rt = from->rt;
  mb_request *r = rt->free_requests;
  if (r) {
    rt->free_requests = r->next;
    rt->nfree_requests--;
    memset(r, 0, sizeof *r);
  } else if (!(r = calloc(1, sizeof *r))) {
    return NULL;
  }
  if (mb_map_put(&rt->requests, id_hash(m->id), r)) {
    free(r);
    return NULL;
  }
  r->id = m->id;
  r->svc = from;
  mb_service_ref(from);
  r->dest = d;
  mb_dest_ref(d);
  r->fn = fn;
  r->ud = ud;
  r->all = all;
  r->timeout = timeout;
  if (rt->obs) r->t_start = mb_now_ns();
  r->refs = 1;
  rt->counts.requests++;
  /* A waiting request keeps the bus busy when its timer will end it, or
   * when its answer may come from another node: it goes to a cluster
   * destination, or this node is in a cluster at all (a local handler may
   * relay the request through other nodes, whose messages back keep
   * nothing busy here). Otherwise one with no time limit can only be
   * answered by code that runs here, and whatever would run it (a queued
   * task, a timer, a wait, a handler running) keeps the bus busy itself:
   * when nothing does, the request can never end, and mb.run (mbrun) must
   * see the bus stuck, not wait forever. */
  r->held = isfinite(timeout) || d->opts.cluster || rt->link.send;
  if (r->held)
    mb_busy(rt, 1);
  else
    rt->counts.unlimited++;
  r->next = from->requests;
  if (from->requests) from->requests->prev = r;
  from->requests = r;
  ev_timer_init(&r->timer, timeout_cb, timeout, 0);
  r->timer.data = r;
  ev_now_update(from->w->loop); /* a stale loop clock would cut the timeout short */
  if (isfinite(timeout)) ev_timer_start(from->w->loop, &r->timer); /* infinity: no limit */
  return r;
}

void mb_request_abort(mb_request *r) {
  detach(r);
  ev_timer_stop(r->svc->w->loop, &r->timer);
  if (r->held) mb_busy(r->svc->rt, -1);
  request_release(r);
}

void mb_request_cancel(mb_request *r) {
  mb_runtime *rt = r->svc->rt;
  mb_lock(rt);
  r->cancelled = 1;
  if (!r->finished) {
    detach(r);
    ev_timer_stop(r->svc->w->loop, &r->timer);
    if (r->held) mb_busy(rt, -1);
    request_release(r);
  }
  mb_unlock(rt);
}

/* Under rt->lock, on the service's worker. */
void mb_request_cancel_all(mb_service *svc) {
  while (svc->requests) {
    mb_request *r = svc->requests;
    r->cancelled = 1;
    detach(r);
    ev_timer_stop(svc->w->loop, &r->timer);
    if (r->held) mb_busy(svc->rt, -1);
    request_release(r);
  }
}

void mb_request_free_cache(mb_runtime *rt) {
  while (rt->free_requests) {
    mb_request *r = rt->free_requests;
    rt->free_requests = r->next;
    free(r);
  }
}
