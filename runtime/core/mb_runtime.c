/*
 * mb_runtime.c — the runtime and its workers: one thread and one libev loop
 * per worker (worker 0 is the thread that created the runtime and runs
 * mb_runtime_run), each with a local task queue drained in batches by an
 * idle watcher, and an inbox that other threads post to, signalled with
 * ev_async (several signals may fold into one callback: the inbox is the
 * real queue). Also services, destination events, run/stop and the busy
 * count that tells when the whole bus is idle. Owns the workers, every
 * service and (through mb_dest.c) every destination.
 *
 * Waking a worker: a sleeping loop costs the poster an eventfd write and
 * the receiver a kernel wake-up, ~60 us on a small VM, which dominated
 * request/reply across workers. So a worker that ran tasks within the last
 * SPIN_RECENT_NS spins before it sleeps, and posters skip ev_async_send
 * while it is awake:
 *  - w->pending (atomic) is set by a poster, under inbox_lock, when the
 *    inbox goes non-empty, and cleared, under inbox_lock, by inbox_drain
 *    (async_cb and the prepare watcher), which takes the whole inbox.
 *    worker_kick (stop, quit, the bus going idle, out of memory) sets it
 *    too and always calls ev_async_send.
 *  - An ev_prepare watcher runs when the loop may block next. Unless the
 *    idle watcher is active (local tasks: no block), and if tasks ran
 *    recently, it polls pending for up to SPIN_NS (at most one spinner per
 *    core, rt->max_spinners, so workers beyond the cores sleep as before).
 *    Then it stores sleeping = 1 and loads pending once more: if set, it
 *    drains the inbox, which starts the idle watcher, so the loop polls
 *    without blocking. An ev_check watcher (the loop polled) clears
 *    sleeping.
 *  - A poster pushes, sets pending (seq_cst), unlocks, loads sleeping
 *    (seq_cst) and calls ev_async_send only when it is set. Dekker: the
 *    receiver stores sleeping then loads pending, the poster stores pending
 *    then loads sleeping, so at least one sees the other and no wake-up is
 *    lost. A poster that finds pending already set does nothing more: the
 *    one that set it answers for the wake-up, and the drain that clears it
 *    takes both tasks. sleeping starts at 1, and any loop run, nested
 *    (mb_runtime_step from a Lua waiter) or worker 0's between steps,
 *    passes the prepare watcher before it can block.
 * Both watchers are unref'd: worker 0's ev_ref/ev_unref dance in
 * mb_runtime_step and its count of active watchers see only the async
 * watcher, as before. An idle bus spins at most once, SPIN_NS after its
 * last task. With spinning the two sides of a hand-off really run at once,
 * so rt->lock and the inboxes are adaptive mutexes (spin before futex).
 * Tests: spec/c/test_core.c, spec/workers_spec.lua.
 */
#define _GNU_SOURCE /* PTHREAD_MUTEX_ADAPTIVE_NP */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mb_core.h"

/* Spinning before sleep (see above): how long a worker polls its inbox
 * before it blocks, and how recently it must have run a task to spin. */
#ifndef SPIN_NS
#define SPIN_NS 50000u
#endif
#define SPIN_RECENT_NS 1000000u

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

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
  case MB_ESHUTDOWN: return "closed";
  }
  return "unknown";
}

uint64_t mb_hash_str(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h;
}

/* The runtime's locks guard short sections and, with workers spinning
 * rather than sleeping, are often taken on another core at the same time:
 * spin a little in pthread_mutex_lock before sleeping in the kernel
 * (glibc's adaptive mutex), where available. */
static void mb_mutex_init(pthread_mutex_t *m) {
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
  pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
#else
  pthread_mutex_init(m, NULL);
#endif
}

static _Thread_local mb_worker *self;

mb_worker *mb_self(void) { return self; }

/* ---- the busy count ------------------------------------------------------ */

/* What can still produce work: queued tasks (a delivery, a pump, a reply
 * on its way), waiting requests, and the timers and waits that users hold.
 * Messages in a queue and deliveries in progress need not count: whatever
 * will move them on is one of those. When the count drops to zero, worker
 * 0 wakes up to see whether its mb_runtime_run is over. */
static void worker_kick(mb_worker *w);

void mb_busy(mb_runtime *rt, long delta) {
  long now = atomic_fetch_add(&rt->busy, delta) + delta;
  if (now == 0) worker_kick(&rt->workers[0]);
}

/* Holds count in busy and in holds: busy first when one starts, holds first
 * when one ends, so that mb_runtime_in_flight's busy - holds never reads
 * less than the work truly in flight. */
void mb_runtime_hold(mb_runtime *rt, int delta) {
  if (delta > 0) {
    mb_busy(rt, delta);
    atomic_fetch_add(&rt->holds, delta);
  } else {
    atomic_fetch_add(&rt->holds, delta);
    mb_busy(rt, delta);
  }
}
long mb_runtime_busy(mb_runtime *rt) { return atomic_load(&rt->busy); }

/* ---- task queues ----------------------------------------------------------- */

static int q_push(mb_taskq *q, mb_task t) {
  if (q->len == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 256;
    mb_task *v = malloc(cap * sizeof *v);
    if (!v) return -1;
    for (size_t i = 0; i < q->len; i++) v[i] = q->v[(q->head + i) % q->cap];
    free(q->v);
    q->v = v;
    q->cap = cap;
    q->head = 0;
  }
  q->v[(q->head + q->len) % q->cap] = t;
  q->len++;
  return 0;
}

static mb_task q_pop(mb_taskq *q) {
  mb_task t = q->v[q->head];
  q->head = (q->head + 1) % q->cap;
  q->len--;
  return t;
}

/* Tasks handled per idle callback before the loop gets a turn for timers
 * and I/O. */
#define BATCH 1024

/* The local queue holds one unit of busy however long it is (taken by
 * the first task in, given back when it is empty and no task of it is
 * running), so a worker running its own tasks does not touch the shared
 * counter per task. A running task is still work: it may send more. One
 * that waits where it cannot yield drives a nested loop (mb_runtime_step),
 * whose idle_cb empties the queue under it; the hold stays until the
 * outermost idle_cb is done. */
static void local_hold(mb_worker *w) {
  if (!w->local_held) {
    w->local_held = 1;
    mb_busy(w->rt, 1);
  }
}

static void local_release(mb_worker *w) {
  if (w->local_held && !w->local.len && !w->running) {
    w->local_held = 0;
    mb_busy(w->rt, -1);
  }
}

static void run_task(mb_task t) {
  if (!t.svc || !atomic_load(&t.svc->dead)) t.fn(t.arg);
  if (t.svc) mb_service_unref(t.svc);
}

static void idle_cb(struct ev_loop *loop, ev_idle *iw, int revents) {
  (void)revents;
  mb_worker *w = iw->data;
  w->worked++;
  w->running++;
  for (size_t n = 0; n < BATCH && w->local.len; n++) run_task(q_pop(&w->local));
  w->running--;
  if (w->local.len) return;
  local_release(w);
  ev_idle_stop(loop, &w->idle);
  if (w->index == 0) return;
  pthread_mutex_lock(&w->inbox_lock);
  int quit = w->quit && !w->inbox.len;
  pthread_mutex_unlock(&w->inbox_lock);
  if (quit) ev_break(loop, EVBREAK_ALL); /* asked to finish: finished */
}

/* Moves the inbox to the local queue (starting the idle watcher); returns
 * quit. */
static int inbox_drain(struct ev_loop *loop, mb_worker *w) {
  pthread_mutex_lock(&w->inbox_lock);
  int failed = 0;
  long moved = 0;
  if (w->inbox.len) local_hold(w); /* before the posters' units go */
  while (w->inbox.len && !failed) {
    mb_task t = w->inbox.v[w->inbox.head];
    if (q_push(&w->local, t)) {
      failed = 1; /* out of memory: leave the rest for the next wake-up */
      break;
    }
    q_pop(&w->inbox);
    moved++;
  }
  int quit = w->quit;
  mb_late *late = w->late;
  w->late = NULL;
  /* all that was posted before this point is ours now (a kick's own
   * ev_async_send still wakes us for it) */
  atomic_store_explicit(&w->pending, w->inbox.len != 0, memory_order_relaxed);
  pthread_mutex_unlock(&w->inbox_lock);
  if (moved) mb_busy(w->rt, -moved); /* the local hold covers them now */
  local_release(w);                  /* nothing moved and nothing local */
  if (w->local.len && !ev_is_active(&w->idle)) ev_idle_start(loop, &w->idle);
  if (failed) worker_kick(w);
  while (late) { /* tasks whose post failed: here, on their thread */
    mb_late *n = late;
    late = n->next;
    n->fn(n->arg);
    mb_busy(w->rt, -1);
  }
  return quit;
}

static void async_cb(struct ev_loop *loop, ev_async *a, int revents) {
  (void)revents;
  mb_worker *w = a->data;
  int quit = inbox_drain(loop, w);
  if (quit && !w->local.len && w->index != 0) ev_break(loop, EVBREAK_ALL);
}

/* Wakes w whatever it is doing (stop, quit, idle bus, out of memory): the
 * flag cuts a spin short, ev_async_send wakes a sleeper. */
static void worker_kick(mb_worker *w) {
  atomic_store(&w->pending, 1);
  ev_async_send(w->loop, &w->async);
}

/* The loop is about to block (ev_prepare). Unless local tasks wait (then it
 * will not block), and if this worker ran tasks within SPIN_RECENT_NS,
 * poll the pending flag for up to SPIN_NS; then announce the sleep and look
 * once more. Whatever arrived is drained here, which starts the idle
 * watcher, so the loop polls without blocking and runs it. */
static void prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents) {
  (void)revents;
  mb_worker *w = p->data;
  if (ev_is_active(&w->idle)) return;
  if (SPIN_NS > 0 && !atomic_load_explicit(&w->pending, memory_order_relaxed)) {
    uint64_t now = mb_now_ns();
    if (w->worked != w->worked_seen) {
      w->worked_seen = w->worked;
      w->last_work = now;
    }
    mb_runtime *rt = w->rt;
    if (now - w->last_work < SPIN_RECENT_NS &&
        atomic_fetch_add_explicit(&rt->spinners, 1, memory_order_relaxed) < rt->max_spinners) {
      uint64_t end = now + SPIN_NS;
      for (unsigned i = 1; !atomic_load_explicit(&w->pending, memory_order_relaxed); i++) {
        cpu_relax();
        if (!(i & 15) && mb_now_ns() >= end) break;
      }
      atomic_fetch_sub_explicit(&rt->spinners, 1, memory_order_relaxed);
    } else if (now - w->last_work < SPIN_RECENT_NS) {
      atomic_fetch_sub_explicit(&rt->spinners, 1, memory_order_relaxed);
    }
  }
  /* Dekker with mb_worker_post: store sleeping, then load pending; the
   * poster stores pending, then loads sleeping. One of us sees the other. */
  atomic_store(&w->sleeping, 1);
  if (atomic_load(&w->pending)) inbox_drain(loop, w);
}

/* The loop polled (ev_check): posters need not wake it until it next
 * announces a sleep. */
static void check_cb(struct ev_loop *loop, ev_check *c, int revents) {
  (void)loop, (void)revents;
  mb_worker *w = c->data;
  atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
}

int mb_worker_post(mb_worker *w, mb_service *svc, mb_task_fn fn, void *arg) {
  mb_task t = {fn, arg, svc};
  if (svc) atomic_fetch_add(&svc->refs, 1);
  if (w == self) {
    local_hold(w);
    if (q_push(&w->local, t)) {
      local_release(w);
      if (svc) mb_service_unref(svc);
      return MB_ENOMEM;
    }
    if (!ev_is_active(&w->idle)) ev_idle_start(w->loop, &w->idle);
    return MB_OK;
  }
  mb_busy(w->rt, 1);
  pthread_mutex_lock(&w->inbox_lock);
  int rc = q_push(&w->inbox, t), wake = 0;
  /* pending already set: whoever set it answers for the wake-up, and the
   * drain that clears it (under this lock) takes our task too */
  if (!rc && !atomic_load_explicit(&w->pending, memory_order_relaxed)) {
    atomic_store(&w->pending, 1);
    wake = 1;
  }
  pthread_mutex_unlock(&w->inbox_lock);
  if (rc) goto fail;
  if (wake && atomic_load(&w->sleeping)) ev_async_send(w->loop, &w->async);
  return MB_OK;
fail:
  if (svc) mb_service_unref(svc);
  mb_busy(w->rt, -1);
  return MB_ENOMEM;
}

void mb_worker_post_late(mb_worker *w, mb_late *node, mb_task_fn fn, void *arg) {
  node->fn = fn;
  node->arg = arg;
  mb_busy(w->rt, 1);
  pthread_mutex_lock(&w->inbox_lock);
  node->next = w->late;
  w->late = node;
  pthread_mutex_unlock(&w->inbox_lock);
  worker_kick(w);
}

/* ---- workers --------------------------------------------------------------- */

static int worker_init(mb_runtime *rt, mb_worker *w, int index) {
  w->rt = rt;
  w->index = index;
  w->loop = ev_loop_new(EVFLAG_AUTO);
  if (!w->loop) return -1;
  mb_mutex_init(&w->inbox_lock);
  ev_idle_init(&w->idle, idle_cb);
  w->idle.data = w;
  ev_async_init(&w->async, async_cb);
  w->async.data = w;
  ev_async_start(w->loop, &w->async);
  atomic_init(&w->pending, 0);
  atomic_init(&w->sleeping, 1);
  ev_prepare_init(&w->prepare, prepare_cb);
  w->prepare.data = w;
  ev_prepare_start(w->loop, &w->prepare);
  ev_check_init(&w->check, check_cb);
  w->check.data = w;
  ev_check_start(w->loop, &w->check);
  ev_unref(w->loop); /* neither keeps the loop alive */
  ev_unref(w->loop);
  /* worker 0's loop belongs to the caller between runs: our watcher must
   * not keep it alive (mb_runtime_step takes the reference back) */
  if (index == 0) ev_unref(w->loop);
  return 0;
}

static void *worker_main(void *arg) {
  mb_worker *w = arg;
  self = w;
  for (;;) {
    ev_run(w->loop, 0);
    pthread_mutex_lock(&w->inbox_lock);
    int done = w->quit && !w->inbox.len;
    pthread_mutex_unlock(&w->inbox_lock);
    if (done && !w->local.len) break;
  }
  self = NULL;
  return NULL;
}

mb_runtime *mb_runtime_new(const mb_config *cfg) {
  mb_runtime *rt = calloc(1, sizeof *rt);
  if (!rt) return NULL;
  int n = (cfg && cfg->workers > 0) ? cfg->workers : 1;
  if (n > 256) n = 256;
  rt->max_message_size = (cfg && cfg->max_message_size) ? cfg->max_message_size : 64u << 20;
  rt->workers = calloc((size_t)n, sizeof *rt->workers);
  if (!rt->workers) {
    free(rt);
    return NULL;
  }
  mb_mutex_init(&rt->lock);
  rt->t0 = mb_now_ns();
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  rt->max_spinners = cores > 1 ? (int)cores : 1;
  atomic_init(&rt->spinners, 0);
  for (int i = 0; i < n; i++) {
    if (worker_init(rt, &rt->workers[i], i)) break;
    rt->nworkers = i + 1;
  }
  if (rt->nworkers != n) {
    mb_runtime_free(rt);
    return NULL;
  }
  self = &rt->workers[0];
  rt->workers[0].thread = pthread_self(); /* not ours to join: has_thread stays 0 */
  for (int i = 1; i < n; i++) {
    mb_worker *w = &rt->workers[i];
    if (pthread_create(&w->thread, NULL, worker_main, w) == 0) w->has_thread = 1;
  }
  for (int i = 1; i < n; i++)
    if (!rt->workers[i].has_thread) {
      mb_runtime_free(rt);
      return NULL;
    }
  return rt;
}

int mb_runtime_workers(const mb_runtime *rt) { return rt->nworkers; }

/* Lets the worker threads finish what is queued and exit; joins them. */
void mb_runtime_join(mb_runtime *rt) {
  /* all are told first, so that none exits while another still posts to it
   * in answer to what it was told before */
  for (int i = 1; i < rt->nworkers; i++) {
    mb_worker *w = &rt->workers[i];
    if (!w->has_thread) continue;
    pthread_mutex_lock(&w->inbox_lock);
    w->quit = 1;
    pthread_mutex_unlock(&w->inbox_lock);
    worker_kick(w);
  }
  for (int i = 1; i < rt->nworkers; i++) {
    mb_worker *w = &rt->workers[i];
    if (!w->has_thread) continue;
    pthread_join(w->thread, NULL);
    w->has_thread = 0;
  }
}

void mb_runtime_free(mb_runtime *rt) {
  if (!rt) return;
  mb_runtime_join(rt);
  /* services of worker 0, and any a caller left behind */
  while (rt->services) mb_service_free(rt->services);
  /* what is still queued only holds references and memory: core tasks
   * free what they carry (and may post more: drain until all are empty) */
  for (int again = 1; again;) {
    again = 0;
    for (int i = 0; i < rt->nworkers; i++) {
      mb_worker *w = &rt->workers[i];
      while (w->inbox.len) q_push(&w->local, q_pop(&w->inbox));
      while (w->late) {
        mb_late *n = w->late;
        w->late = n->next;
        n->fn(n->arg);
        mb_busy(rt, -1);
        again = 1;
      }
      while (w->local.len) {
        mb_task t = q_pop(&w->local);
        if (!t.svc) t.fn(t.arg);
        if (t.svc) mb_service_unref(t.svc);
        again = 1;
      }
    }
  }
  mb_lock(rt);
  mb_dest_free_all(rt);
  mb_obs_free(rt);
  mb_unlock(rt);
  while (rt->free_requests) {
    mb_request *r = rt->free_requests;
    rt->free_requests = r->next;
    free(r);
  }
  while (rt->free_deliveries) {
    mb_delivery *d = rt->free_deliveries;
    rt->free_deliveries = d->next;
    free(d);
  }
  mb_map_free(&rt->dests);
  mb_map_free(&rt->requests);
  while (rt->subs) {
    mb_subscription *s = rt->subs;
    rt->subs = s->next;
    free(s);
  }
  for (int i = 0; i < rt->nworkers; i++) {
    mb_worker *w = &rt->workers[i];
    ev_idle_stop(w->loop, &w->idle);
    if (i == 0) ev_ref(w->loop); /* libev: ref before stopping an unref'd watcher */
    ev_async_stop(w->loop, &w->async);
    ev_ref(w->loop);
    ev_prepare_stop(w->loop, &w->prepare);
    ev_ref(w->loop);
    ev_check_stop(w->loop, &w->check);
    ev_loop_destroy(w->loop);
    free(w->local.v);
    free(w->inbox.v);
    pthread_mutex_destroy(&w->inbox_lock);
  }
  if (self && self->rt == rt) self = NULL;
  free(rt->workers);
  pthread_mutex_destroy(&rt->lock);
  free(rt);
}

struct ev_loop *mb_runtime_loop(mb_runtime *rt) { return rt->workers[0].loop; }
size_t mb_runtime_max_message_size(const mb_runtime *rt) { return rt->max_message_size; }

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
  mb_worker *w = self;
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
      worker_kick(&rt->workers[0]);
      return;
    }
}

void mb_runtime_counts(const mb_runtime *rt, mb_counts *out) {
  mb_lock((mb_runtime *)rt);
  *out = rt->counts;
  mb_unlock((mb_runtime *)rt);
  out->messages = (size_t)atomic_load(&mb_live_msgs);
}

static void sub_release(mb_runtime *rt, mb_subscription *s);

/* ---- services ------------------------------------------------------------- */

mb_service *mb_service_new(mb_runtime *rt, const char *name, int worker) {
  mb_service *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->name = strdup(name ? name : "?");
  if (!s->name) {
    free(s);
    return NULL;
  }
  atomic_init(&s->refs, 1);
  atomic_init(&s->dead, 0);
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

void mb_service_unref(mb_service *svc) {
  if (atomic_fetch_sub(&svc->refs, 1) != 1) return;
  free(svc->name);
  free(svc);
}

void mb_service_free(mb_service *svc) {
  mb_runtime *rt = svc->rt;
  mb_lock(rt);
  atomic_store(&svc->dead, 1);
  mb_dest_forget_syncs(svc); /* first: dropping deliveries may end them */
  mb_request_cancel_all(svc);
  mb_dest_cancel_blocked(rt, svc);
  mb_delivery_settle_locked(svc); /* its listeners finished these well */
  while (svc->listeners) mb_listener_close_locked(svc->listeners);
  /* those an mb_send still holds to run inline are dropped when it runs
   * them (their listener is closed now) */
  for (mb_delivery *dv = svc->open, *next; dv; dv = next) {
    next = dv->next;
    if (!dv->inline_pending) mb_delivery_finish(dv, MB_EDROPPED, "dropped: service stopped");
  }
  for (mb_subscription *s = rt->subs, *next; s; s = next) {
    next = s->next;
    if (s->svc == svc && !s->closed) {
      s->closed = 1;
      sub_release(rt, s);
    }
  }
  if (svc->prev)
    svc->prev->next = svc->next;
  else
    rt->services = svc->next;
  if (svc->next) svc->next->prev = svc->prev;
  svc->w->services--;
  rt->counts.services--;
  mb_unlock(rt);
  mb_service_unref(svc);
}

const char *mb_service_name(const mb_service *svc) { return svc->name; }
uint64_t mb_service_id(const mb_service *svc) { return svc->id; }
struct ev_loop *mb_service_loop(const mb_service *svc) { return svc->w->loop; }
int mb_service_worker(const mb_service *svc) { return svc->w->index; }

int mb_service_signal(const mb_service *svc, int sig) {
  return pthread_kill(svc->w->thread, sig) ? MB_EINVAL : MB_OK;
}

int mb_service_post(mb_service *svc, mb_task_fn fn, void *arg) {
  return mb_worker_post(svc->w, svc, fn, arg);
}

int mb_service_post_always(mb_service *svc, mb_task_fn fn, void *arg) {
  return mb_worker_post(svc->w, NULL, fn, arg);
}

void mb_service_ref(mb_service *svc) { atomic_fetch_add(&svc->refs, 1); }
int mb_service_alive(const mb_service *svc) { return !atomic_load(&svc->dead); }

mb_service *mb_service_find(mb_runtime *rt, uint64_t id) {
  mb_lock(rt);
  mb_service *s = rt->services;
  while (s && s->id != id) s = s->next;
  if (s) atomic_fetch_add(&s->refs, 1);
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
