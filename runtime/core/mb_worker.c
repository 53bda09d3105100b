/*
 * mb_worker.c — the workers: one thread and one libev loop per worker
 * (worker 0 is the thread that created the runtime and runs
 * mb_runtime_run), each with a local task queue drained in batches by an
 * idle watcher, and an inbox that other threads post to, signalled with
 * ev_async (several signals may fold into one callback: the inbox is the
 * real queue). Also the busy count that tells when the whole bus is idle.
 * Owns the workers, their loops and queues. Knows nothing of destinations,
 * requests or services: a task may be bound to an mb_owner, which it holds
 * and which, once dead, skips the task. Uses mb_base.c only.
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
 * Batches: a task that posts to other workers (a pump delivering to a
 * listener elsewhere, a responder's replies, admitted senders) stages
 * those posts in its worker's out queues, one per target, and they leave
 * when the task ends (idle_cb) or when the loop may block (prepare_cb: a
 * task that waits drives a nested loop), a whole batch per target under
 * one inbox lock, with one add to the busy count and at most one wake-up;
 * an inbox found empty takes the batch's array as it is. Staged posts need
 * no unit of busy of their own: while a task runs, its worker's local hold
 * keeps the bus from looking idle, and local_release keeps it while any
 * are staged. Only a worker's own tasks stage; other posts (timers, the
 * main program between runs, threads that are no worker: the cluster's,
 * mbrun's) go straight to the inbox. Per target the order of posts is
 * kept: all of one task's posts stage, and a batch leaves before the next
 * task runs.
 * Both watchers are unref'd: worker 0's ev_ref/ev_unref dance in
 * mb_runtime_step and its count of active watchers see only the async
 * watcher, as before. An idle bus spins at most once, SPIN_NS after its
 * last task. With spinning the two sides of a hand-off really run at once,
 * so rt->lock and the inboxes are adaptive mutexes (spin before futex).
 * Tests: spec/c/test_*.c, spec/workers/workers_spec.lua.
 */
#define _GNU_SOURCE /* sched_getcpu */
#include <pthread.h>
#include <sched.h>
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


/* initial-exec: read on every post and send, a load instead of a call (see
 * mb_msg.c) */
static _Thread_local __attribute__((tls_model("initial-exec"))) mb_worker *self;

#ifdef MB_WSTATS /* measuring aid (bench/README.md, "Cross-worker"): not built by default */
#include <stdio.h>
#include <time.h>
static struct { uint64_t work_ns, work_cpu, spin_ns, spins, sleeps, drains, drained, flushes, flushed; } wst[64];
static uint64_t thread_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#define WST(w, f, v) (wst[(w)->index & 63].f += (v))
#else
#define WST(w, f, v) ((void)0)
#endif

mb_worker *mb_self(void) { return self; }

/* ---- the busy count ------------------------------------------------------ */

/* What can still produce work: queued tasks (a delivery, a pump, a reply
 * on its way), waiting requests, and the timers and waits that users hold.
 * Messages in a queue and deliveries in progress need not count: whatever
 * will move them on is one of those. When the count drops to zero, worker
 * 0 wakes up to see whether its mb_runtime_run is over. */

void mb_busy(mb_runtime *rt, long delta) {
  long now = atomic_fetch_add(&rt->busy, delta) + delta;
  if (now == 0) mb_worker_kick(&rt->workers[0]);
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
  if (w->local_held && !w->local.len && !w->running && !w->staged) {
    w->local_held = 0;
    mb_busy(w->rt, -1);
  }
}

/* Hands w's staged posts to their targets' inboxes (see the header). What
 * cannot be handed for want of memory stays staged for the next try. */
static void flush(mb_worker *w) {
  mb_runtime *rt = w->rt;
  for (int i = 0; i < rt->nworkers && w->staged; i++) {
    mb_taskq *q = &w->out[i];
    if (!q->len) continue;
    mb_worker *to = &rt->workers[i];
    size_t n = q->len, moved = 0;
    mb_busy(rt, (long)n); /* before the tasks can be seen there */
    pthread_mutex_lock(&to->inbox_lock);
    if (!to->inbox.len) { /* take it as it is: no copy, no allocation */
      mb_taskq empty = to->inbox;
      to->inbox = *q;
      *q = empty;
      q->head = q->len = 0;
      moved = n;
    } else {
      while (q->len && !q_push(&to->inbox, q->v[q->head])) {
        q->head = (q->head + 1) % q->cap;
        q->len--;
        moved++;
      }
    }
    int wake = 0;
    if (moved && !atomic_load_explicit(&to->pending, memory_order_relaxed)) {
      atomic_store(&to->pending, 1);
      wake = 1;
    }
    pthread_mutex_unlock(&to->inbox_lock);
    w->staged -= moved;
    WST(w, flushes, 1);
    WST(w, flushed, moved);
    if (moved < n) mb_busy(rt, -(long)(n - moved)); /* out of memory: kept */
    if (wake && atomic_load(&to->sleeping)) ev_async_send(to->loop, &to->async);
  }
}

static void run_task(mb_task t) {
  if (!t.own || !atomic_load(&t.own->dead)) t.fn(t.arg);
  if (t.own) mb_owner_unref(t.own);
}

static void idle_cb(struct ev_loop *loop, ev_idle *iw, int revents) {
  (void)revents;
  mb_worker *w = iw->data;
  int cpu = sched_getcpu();
  if (cpu != atomic_load_explicit(&w->cpu, memory_order_relaxed))
    atomic_store_explicit(&w->cpu, cpu, memory_order_relaxed);
  w->worked++;
  w->running++;
#ifdef MB_WSTATS
  uint64_t t0 = mb_now_ns(), c0 = thread_cpu();
#endif
  if (w->staged) flush(w); /* what an earlier try could not hand over */
  for (size_t n = 0; n < BATCH && w->local.len; n++) {
    run_task(q_pop(&w->local));
    if (w->staged) flush(w);
  }
  w->running--;
  WST(w, work_ns, mb_now_ns() - t0);
  WST(w, work_cpu, thread_cpu() - c0);
  if (w->local.len || w->staged) return; /* staged: out of memory, try again */
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
  WST(w, drains, 1);
  WST(w, drained, (uint64_t)moved);
  local_release(w);                  /* nothing moved and nothing local */
  if (w->local.len && !ev_is_active(&w->idle)) ev_idle_start(loop, &w->idle);
  if (failed) mb_worker_kick(w);
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
void mb_worker_kick(mb_worker *w) {
  atomic_store(&w->pending, 1);
  ev_async_send(w->loop, &w->async);
}

void mb_worker_hurry(mb_worker *w) {
  /* libev runs an event fed now in the same ev_invoke_pending pass */
  if (w == self && w->local.len && ev_is_active(&w->idle))
    ev_feed_event(w->loop, &w->idle, EV_IDLE);
}

/* Whether another worker is awake on another CPU: only such a one can post
 * while this one spins. One awake on this CPU (more threads than the
 * process gets cores: a loaded machine) is kept from running by the spin,
 * and the two would take turns at the spin's pace; all asleep, nothing of
 * the bus will post soon. */
static int peer_elsewhere(mb_worker *w) {
  mb_runtime *rt = w->rt;
  int me = sched_getcpu();
  for (int i = 0; i < rt->nworkers; i++) {
    mb_worker *o = &rt->workers[i];
    if (o != w && !atomic_load_explicit(&o->sleeping, memory_order_relaxed) &&
        atomic_load_explicit(&o->cpu, memory_order_relaxed) != me)
      return 1;
  }
  return 0;
}

/* The loop is about to block (ev_prepare). Unless local tasks wait (then it
 * will not block), and if this worker ran tasks within SPIN_RECENT_NS,
 * poll the pending flag for up to SPIN_NS; then announce the sleep and look
 * once more. Whatever arrived is drained here, which starts the idle
 * watcher, so the loop polls without blocking and runs it. */
static void prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents) {
  (void)revents;
  mb_worker *w = p->data;
  if (w->staged) flush(w); /* a task waits in a nested loop: its posts go */
  if (ev_is_active(&w->idle)) return;
  if (SPIN_NS > 0 && !atomic_load_explicit(&w->pending, memory_order_relaxed)) {
    uint64_t now = mb_now_ns();
    if (w->worked != w->worked_seen) {
      w->worked_seen = w->worked;
      w->last_work = now;
    }
    mb_runtime *rt = w->rt;
    /* the add is undone whether or not there was room: only a worker that
     * added may take one off (spinners never drifts below 0) */
    if (rt->max_spinners && now - w->last_work < SPIN_RECENT_NS && peer_elsewhere(w)) {
      if (atomic_fetch_add_explicit(&rt->spinners, 1, memory_order_relaxed) < rt->max_spinners) {
        uint64_t end = now + SPIN_NS;
        WST(w, spins, 1);
        for (unsigned i = 1; !atomic_load_explicit(&w->pending, memory_order_relaxed); i++) {
          cpu_relax();
          if (!(i & 15) && mb_now_ns() >= end) break;
        }
        WST(w, spin_ns, mb_now_ns() - now);
      }
      atomic_fetch_sub_explicit(&rt->spinners, 1, memory_order_relaxed);
    }
  }
  /* Dekker with mb_worker_post: store sleeping, then load pending; the
   * poster stores pending, then loads sleeping. One of us sees the other. */
  atomic_store(&w->sleeping, 1);
  if (atomic_load(&w->pending))
    inbox_drain(loop, w);
  else
    WST(w, sleeps, 1);
}

/* The loop polled (ev_check): posters need not wake it until it next
 * announces a sleep. */
static void check_cb(struct ev_loop *loop, ev_check *c, int revents) {
  (void)loop, (void)revents;
  mb_worker *w = c->data;
  atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
}

int mb_worker_post(mb_worker *w, mb_owner *own, mb_task_fn fn, void *arg) {
  mb_task t = {fn, arg, own};
  if (own) mb_owner_ref(own);
  if (w == self) {
    local_hold(w);
    if (q_push(&w->local, t)) {
      local_release(w);
      if (own) mb_owner_unref(own);
      return MB_ENOMEM;
    }
    if (!ev_is_active(&w->idle)) ev_idle_start(w->loop, &w->idle);
    return MB_OK;
  }
  mb_worker *me = self;
  /* staged while a task runs, and while earlier posts to w wait staged (a
   * flush that ran out of memory): none may pass those */
  if (me && me->rt == w->rt && (me->running || me->out[w->index].len)) {
    if (!q_push(&me->out[w->index], t)) {
      me->staged++;
      return MB_OK;
    }
    /* no memory to stage it: the staged ones leave first; straight to the
     * inbox only once none waits for w */
    flush(me);
    if (me->out[w->index].len) {
      if (own) mb_owner_unref(own);
      return MB_ENOMEM;
    }
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
  if (own) mb_owner_unref(own);
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
  mb_worker_kick(w);
}

/* ---- workers --------------------------------------------------------------- */

static int worker_init(mb_runtime *rt, mb_worker *w, int index, int n) {
  w->rt = rt;
  w->index = index;
  w->out = calloc((size_t)n, sizeof *w->out);
  if (!w->out) return -1;
  w->loop = ev_loop_new(EVFLAG_AUTO);
  if (!w->loop) {
    free(w->out);
    w->out = NULL;
    return -1;
  }
  mb_mutex_init(&w->inbox_lock);
  ev_idle_init(&w->idle, idle_cb);
  w->idle.data = w;
  ev_async_init(&w->async, async_cb);
  w->async.data = w;
  ev_async_start(w->loop, &w->async);
  atomic_init(&w->pending, 0);
  atomic_init(&w->sleeping, 1);
  atomic_init(&w->cpu, -1);

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


int mb_workers_start(mb_runtime *rt, int n) {
  /* aligned: what other threads write sits on lines of its own */
  size_t size = ((size_t)n * sizeof *rt->workers + 63) / 64 * 64;
  rt->workers = aligned_alloc(64, size);
  if (!rt->workers) return -1;
  memset(rt->workers, 0, size);
  long cores = mb_cpu_count();
  /* a lone worker: nothing but threads outside the bus (the cluster's,
   * mbrun's) posts to it, and a spin would only take a core from them and
   * from the other processes of a cluster (bench/README.md, Cluster) */
  rt->max_spinners = n == 1 ? 0 : cores > 1 ? (int)cores : 1;
  atomic_init(&rt->spinners, 0);
  for (int i = 0; i < n; i++) {
    if (worker_init(rt, &rt->workers[i], i, n)) break;
    rt->nworkers = i + 1;
  }
  if (rt->nworkers != n) return -1;
  self = &rt->workers[0];
  rt->workers[0].thread = pthread_self(); /* not ours to join: has_thread stays 0 */
  for (int i = 1; i < n; i++) {
    mb_worker *w = &rt->workers[i];
    if (pthread_create(&w->thread, NULL, worker_main, w) == 0) w->has_thread = 1;
  }
  for (int i = 1; i < n; i++)
    if (!rt->workers[i].has_thread) return -1;
  return 0;
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
    mb_worker_kick(w);
  }
  for (int i = 1; i < rt->nworkers; i++) {
    mb_worker *w = &rt->workers[i];
    if (!w->has_thread) continue;
    pthread_join(w->thread, NULL);
    w->has_thread = 0;
  }
}

void mb_workers_drain(mb_runtime *rt) {
  /* what is still queued only holds references and memory: core tasks
   * free what they carry (and may post more: drain until all are empty) */
  for (int again = 1; again;) {
    again = 0;
    for (int i = 0; i < rt->nworkers; i++) { /* staged: only where a task died */
      mb_worker *w = &rt->workers[i];
      for (int j = 0; j < rt->nworkers; j++) {
        mb_taskq *q = &w->out[j];
        while (q->len) {
          q_push(&rt->workers[j].local, q_pop(q));
          w->staged--;
          again = 1;
        }
      }
    }
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
        if (!t.own) t.fn(t.arg);
        if (t.own) mb_owner_unref(t.own);
        again = 1;
      }
    }
  }
}

void mb_workers_destroy(mb_runtime *rt) {
#ifdef MB_WSTATS
  for (int i = 0; i < rt->nworkers && i < 64; i++)
    fprintf(stderr, "worker %d: work %.3f s (cpu %.3f s), spin %.3f s in %llu, sleeps %llu, drains %llu (%llu tasks), flushes %llu (%llu tasks)\n", i,
            wst[i].work_ns / 1e9, wst[i].work_cpu / 1e9, wst[i].spin_ns / 1e9, (unsigned long long)wst[i].spins,
            (unsigned long long)wst[i].sleeps, (unsigned long long)wst[i].drains,
            (unsigned long long)wst[i].drained, (unsigned long long)wst[i].flushes,
            (unsigned long long)wst[i].flushed);
#endif
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
    for (int j = 0; j < rt->nworkers; j++) free(w->out[j].v);
    free(w->out);
    pthread_mutex_destroy(&w->inbox_lock);
  }
  if (self && self->rt == rt) self = NULL;
  free(rt->workers);
  rt->workers = NULL;
  rt->nworkers = 0;
}
