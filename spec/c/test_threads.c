/*
 * test_threads.c — the threaded hand-off with 2 and 4 workers: one service
 * on each worker (a node), messages between them through parallel, serial
 * and synchronous destinations, requests across workers, the busy count
 * returning to idle (mb_runtime_run returns 0) through chains of hand-offs
 * and a timer held on another worker, and a stop asked from another
 * worker; posts between workers (in order, none lost) and message ids made
 * on several threads at once (unique). Everything a node does runs in tasks posted to its service, on
 * its worker's thread; every callback checks that it runs there. Run clean
 * under ThreadSanitizer too (make tsan: build/tsan/test_core threads).
 */
#include "helpers.h"
#include "mb_core.h" /* the spinners count */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXW 4
#define N 200 /* messages each sender sends */

typedef struct world world;

/* One service on worker w; its fields are touched only on that worker's
 * thread, and read by the main thread once mb_runtime_run returned. */
typedef struct node {
  world *wd;
  int w;
  mb_service *svc;
  pthread_t thread; /* the worker's thread, seen by a task of the service */
  /* what listen_task registers */
  const char *dest;
  uint64_t group;
  mb_listener_fn fn;
  mb_listener *l;
  int listen_err;
  /* what its listener saw */
  long calls;
  long long sum;
  int64_t last_from[MAXW]; /* the last payload seen from each sender */
  int out_of_order;
  mb_delivery *held;
  mb_delivery *fifo[MAXW]; /* synchronous: one open delivery per sender at most */
  int fhead, nfifo;
  /* what it sent */
  int send_bad, sends_done, send_status_bad;
  int64_t next; /* synchronous chain: the next payload to send */
  /* requests */
  int answers, answer_bad, answers_n_bad;
} node;

struct world {
  mb_runtime *rt;
  int nw;
  node n[MAXW];
  atomic_int wrong_thread; /* callbacks that ran off their service's thread */
  atomic_int running, max_running; /* deliveries of a serial destination at once */
  atomic_long handled;             /* deliveries finished, over every node */
  atomic_int stop_now;
  pthread_mutex_t mu; /* guards seq */
  int nseq;
  int64_t seq[4 * MAXW * N]; /* a serial destination's deliveries in order: node*1e6 + payload */
};

static void on_thread(node *n) {
  if (!pthread_equal(pthread_self(), n->thread)) atomic_fetch_add(&n->wd->wrong_thread, 1);
}

static void whoami_task(void *arg) {
  node *n = arg;
  n->thread = pthread_self();
}

static void free_task(void *arg) {
  node *n = arg;
  on_thread(n);
  mb_service_free(n->svc);
  n->svc = NULL;
}

/* A runtime of nw workers with one service on each. */
static void world_new(world *wd, int nw) {
  memset(wd, 0, sizeof *wd);
  pthread_mutex_init(&wd->mu, NULL);
  mb_config cfg = {nw, 0};
  wd->rt = mb_runtime_new(&cfg);
  if (!CHECK(wd->rt != NULL)) abort();
  wd->nw = nw;
  CHECK_INT(mb_runtime_workers(wd->rt), nw);
  for (int w = 0; w < nw; w++) {
    char name[16];
    snprintf(name, sizeof name, "node%d", w);
    node *n = &wd->n[w];
    n->wd = wd;
    n->w = w;
    n->svc = mb_service_new(wd->rt, name, w);
    if (!CHECK(n->svc != NULL)) abort();
    CHECK_INT(mb_service_worker(n->svc), w);
    CHECK_INT(mb_service_post(n->svc, whoami_task, n), MB_OK);
  }
  CHECK_INT(run(wd->rt), 0);
  /* worker 0 is this thread; the others are threads of their own */
  CHECK(pthread_equal(wd->n[0].thread, pthread_self()));
  for (int w = 1; w < nw; w++) CHECK(!pthread_equal(wd->n[w].thread, pthread_self()));
}

/* Posts fn to node w's service. */
static void on(world *wd, int w, mb_task_fn fn) {
  CHECK_INT(mb_service_post(wd->n[w].svc, fn, &wd->n[w]), MB_OK);
}

/* Each service freed on its own worker, then the runtime. */
static void world_free(world *wd) {
  CHECK_INT(atomic_load(&wd->wrong_thread), 0);
  for (int w = 0; w < wd->nw; w++) on(wd, w, free_task);
  CHECK_INT(run(wd->rt), 0);
  CHECK_INT(mb_runtime_busy(wd->rt), 0);
  mb_counts c;
  mb_runtime_counts(wd->rt, &c);
  CHECK_INT(c.services, 0);
  CHECK_INT(c.listeners, 0);
  check_quiet(wd->rt);
  /* a worker counts itself among the spinners only while it spins: the
   * count is never below 0 (a worker that did not spin once took one off) */
  CHECK(atomic_load(&wd->rt->spinners) >= 0);
  mb_runtime_free(wd->rt);
  pthread_mutex_destroy(&wd->mu);
}

static void listen_task(void *arg) {
  node *n = arg;
  on_thread(n);
  n->listen_err = MB_OK;
  n->l = mb_listen(n->svc, n->dest, n->group, n->fn, NULL, n, &n->listen_err);
}

/* Registers fn at dest on node w (group 0: a listener of its own), and
 * waits until it is registered (so that the order of registration is the
 * order of the calls). */
static void listen_on(world *wd, int w, const char *dest, uint64_t group, mb_listener_fn fn) {
  node *n = &wd->n[w];
  n->dest = dest;
  n->group = group;
  n->fn = fn;
  on(wd, w, listen_task);
  CHECK_INT(run(wd->rt), 0);
  CHECK(n->l != NULL);
  CHECK_INT(n->listen_err, MB_OK);
}

/* payloads: sender * 1e6 + i */
static int64_t pay(int w, int i) { return (int64_t)w * 1000000 + i; }

/* Notes what a listener saw: the sum, and whether each sender's payloads
 * come in the order they were sent. */
static void saw(node *n, int64_t v) {
  on_thread(n);
  n->calls++;
  n->sum += v;
  int from = (int)(v / 1000000);
  if (from < 0 || from >= MAXW) {
    n->out_of_order++;
    return;
  }
  if (n->calls > 1 && v <= n->last_from[from] && n->last_from[from] != INT64_MIN)
    n->out_of_order++;
  n->last_from[from] = v;
}

static void reset_seen(world *wd) {
  for (int w = 0; w < wd->nw; w++) {
    node *n = &wd->n[w];
    n->calls = 0;
    n->sum = 0;
    n->out_of_order = 0;
    for (int k = 0; k < MAXW; k++) n->last_from[k] = INT64_MIN;
  }
}

static long long sum_sent(int senders) {
  long long s = 0;
  for (int w = 0; w < senders; w++)
    for (int i = 0; i < N; i++) s += pay(w, i);
  return s;
}

/* ---- parallel: every node sends to every node --------------------------- */

static void ok_listener(void *ud, mb_delivery *d) {
  node *n = ud;
  saw(n, payload_int(mb_delivery_msg(d)));
  atomic_fetch_add(&n->wd->handled, 1);
  mb_delivery_done(d, MB_OK, NULL);
}

static const char *send_dest;

static void send_task(void *arg) {
  node *n = arg;
  on_thread(n);
  for (int i = 0; i < N; i++)
    if (mb_send(n->svc, send_dest, msg_int(pay(n->w, i)), NULL, NULL) != MB_OK) n->send_bad++;
}

static void parallel_all_to_all(int nw) {
  world wd;
  world_new(&wd, nw);
  CHECK_INT(mb_dest_declare(wd.rt, "par", NULL), MB_OK);
  for (int w = 0; w < nw; w++) listen_on(&wd, w, "par", 0, ok_listener);
  reset_seen(&wd);
  send_dest = "par";
  for (int w = 0; w < nw; w++) on(&wd, w, send_task);
  CHECK_INT(run(wd.rt), 0); /* idle: every delivery on every worker ended */
  CHECK_INT(mb_runtime_busy(wd.rt), 0);
  CHECK_INT(mb_runtime_in_flight(wd.rt), 0);
  for (int w = 0; w < nw; w++) {
    CHECK_INT(wd.n[w].send_bad, 0);
    CHECK_INT(wd.n[w].calls, (long)nw * N); /* each listener: every message */
    CHECK_INT(wd.n[w].sum, sum_sent(nw));
    /* a parallel destination keeps no order across messages: not checked */
  }
  CHECK_INT(atomic_load(&wd.handled), (long)nw * nw * N);
  mb_stats st = stats_of(wd.rt, "par");
  CHECK_INT(st.sent, (uint64_t)nw * N);
  CHECK_INT(st.deliveries, (uint64_t)nw * nw * N);
  CHECK_INT(st.delivered, (uint64_t)nw * nw * N);
  check_invariant(wd.rt, "par");
  world_free(&wd);
}

static void test_threads_parallel_2(void) { parallel_all_to_all(2); }
static void test_threads_parallel_4(void) { parallel_all_to_all(4); }

/* A group across workers: each message goes to one of its members. */
static void parallel_group(int nw) {
  world wd;
  world_new(&wd, nw);
  CHECK_INT(mb_dest_declare(wd.rt, "grp", NULL), MB_OK);
  for (int w = 1; w < nw; w++) listen_on(&wd, w, "grp", 42, ok_listener);
  reset_seen(&wd);
  send_dest = "grp";
  on(&wd, 0, send_task);
  CHECK_INT(run(wd.rt), 0);
  long calls = 0;
  long long sum = 0;
  for (int w = 1; w < nw; w++) {
    calls += wd.n[w].calls;
    sum += wd.n[w].sum;
  }
  CHECK_INT(calls, N); /* once per message, over the group */
  CHECK_INT(sum, sum_sent(1));
  check_invariant(wd.rt, "grp");
  world_free(&wd);
}

static void test_threads_group_2(void) { parallel_group(2); }
static void test_threads_group_4(void) { parallel_group(4); }

/* ---- serial: one at a time, in send order, every listener in turn ------- */

static void seq_note(node *n, int64_t v) {
  world *wd = n->wd;
  pthread_mutex_lock(&wd->mu);
  if (wd->nseq < (int)(sizeof wd->seq / sizeof wd->seq[0]))
    wd->seq[wd->nseq++] = (int64_t)n->w * 100000000 + v;
  pthread_mutex_unlock(&wd->mu);
}

static void serial_finish_task(void *arg) {
  node *n = arg;
  on_thread(n);
  mb_delivery *d = n->held;
  n->held = NULL;
  atomic_fetch_sub(&n->wd->running, 1);
  mb_delivery_done(d, MB_OK, NULL);
}

/* Holds the delivery and finishes it from a task of its own (later, on
 * its thread): the next delivery must not start meanwhile. */
static void serial_listener(void *ud, mb_delivery *d) {
  node *n = ud;
  int64_t v = payload_int(mb_delivery_msg(d));
  saw(n, v);
  seq_note(n, v);
  int now = atomic_fetch_add(&n->wd->running, 1) + 1;
  int max = atomic_load(&n->wd->max_running);
  while (now > max && !atomic_compare_exchange_weak(&n->wd->max_running, &max, now)) continue;
  if (n->held) n->out_of_order++; /* two at once on this node */
  n->held = d;
  if (mb_service_post(n->svc, serial_finish_task, n) != MB_OK) abort();
}

/* Listeners on workers 1..nw-1 (registered in that order), senders on
 * every worker at once. */
static void serial_across(int nw) {
  world wd;
  world_new(&wd, nw);
  CHECK_INT(declare(wd.rt, "ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  for (int w = 1; w < nw; w++) listen_on(&wd, w, "ser", 0, serial_listener);
  reset_seen(&wd);
  send_dest = "ser";
  for (int w = 0; w < nw; w++) on(&wd, w, send_task);
  CHECK_INT(run(wd.rt), 0);
  CHECK_INT(atomic_load(&wd.max_running), 1);
  CHECK_INT(atomic_load(&wd.running), 0);
  int nl = nw - 1;
  for (int w = 1; w < nw; w++) {
    CHECK_INT(wd.n[w].calls, (long)nw * N);
    CHECK_INT(wd.n[w].sum, sum_sent(nw));
    CHECK_INT(wd.n[w].out_of_order, 0); /* each sender's messages in order */
  }
  /* each message goes to listener 1, 2, ... in turn before the next starts */
  if (CHECK_INT(wd.nseq, nl * nw * N)) {
    int bad = 0;
    for (int i = 0; i < wd.nseq; i += nl)
      for (int k = 0; k < nl; k++) {
        int64_t e = wd.seq[i + k];
        if (e / 100000000 != k + 1 || e % 100000000 != wd.seq[i] % 100000000) bad++;
      }
    CHECK_INT(bad, 0);
  }
  check_invariant(wd.rt, "ser");
  world_free(&wd);
}

static void test_threads_serial_2(void) { serial_across(2); }
static void test_threads_serial_4(void) { serial_across(4); }

/* ---- synchronous: the send completes once every listener has run --------- */

static void sync_done(void *ud, int status);

/* Sends the next message of the chain; the next one goes from its
 * completion. */
static void sync_next(node *n) {
  for (;;) {
    if (n->next >= N) return;
    int64_t v = pay(n->w, (int)n->next++);
    int rc = mb_send(n->svc, "sync", msg_int(v), sync_done, n);
    if (rc == MB_PENDING) return;
    /* done inline: every listener already ran (only when all are here) */
    if (rc != MB_OK) n->send_bad++;
    n->sends_done++;
  }
}

static void sync_done(void *ud, int status) {
  node *n = ud;
  on_thread(n);
  if (status != MB_OK) n->send_status_bad++;
  n->sends_done++;
  sync_next(n);
}

static void sync_task(void *arg) {
  node *n = arg;
  on_thread(n);
  sync_next(n);
}

/* holds the delivery until a task of its own finishes it; deliveries of
 * several senders may be open at once (one each: they wait for it) */
static void sync_finish_task(void *arg) {
  node *n = arg;
  on_thread(n);
  if (!n->nfifo) abort();
  mb_delivery *d = n->fifo[n->fhead];
  n->fhead = (n->fhead + 1) % MAXW;
  n->nfifo--;
  atomic_fetch_add(&n->wd->handled, 1);
  mb_delivery_done(d, MB_OK, NULL);
}

static void sync_listener(void *ud, mb_delivery *d) {
  node *n = ud;
  saw(n, payload_int(mb_delivery_msg(d)));
  if (n->nfifo == MAXW) abort(); /* more open than there are senders */
  n->fifo[(n->fhead + n->nfifo++) % MAXW] = d;
  if (mb_service_post(n->svc, sync_finish_task, n) != MB_OK) abort();
}

/* Listeners on workers 1..nw-1; senders on every worker, each sending its
 * next message only when the last one completed. */
static void synchronous_across(int nw) {
  world wd;
  world_new(&wd, nw);
  CHECK_INT(declare(wd.rt, "sync", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  for (int w = 1; w < nw; w++) listen_on(&wd, w, "sync", 0, sync_listener);
  reset_seen(&wd);
  for (int w = 0; w < nw; w++) on(&wd, w, sync_task);
  CHECK_INT(run(wd.rt), 0);
  for (int w = 0; w < nw; w++) {
    CHECK_INT(wd.n[w].sends_done, N);
    CHECK_INT(wd.n[w].send_bad, 0);
    CHECK_INT(wd.n[w].send_status_bad, 0);
  }
  for (int w = 1; w < nw; w++) {
    CHECK_INT(wd.n[w].calls, (long)nw * N);
    CHECK_INT(wd.n[w].sum, sum_sent(nw));
    CHECK_INT(wd.n[w].out_of_order, 0);
  }
  CHECK_INT(atomic_load(&wd.handled), (long)(nw - 1) * nw * N);
  mb_stats st = stats_of(wd.rt, "sync");
  CHECK_INT(st.sent, (uint64_t)nw * N);
  CHECK_INT(st.delivered, (uint64_t)(nw - 1) * nw * N);
  check_invariant(wd.rt, "sync");
  world_free(&wd);
}

static void test_threads_synchronous_2(void) { synchronous_across(2); }
static void test_threads_synchronous_4(void) { synchronous_across(4); }

/* ---- requests across workers -------------------------------------------- */

static void reply_listener(void *ud, mb_delivery *d) {
  node *n = ud;
  const mb_msg *m = mb_delivery_msg(d);
  int64_t v = payload_int(m);
  saw(n, v);
  if (mb_reply(n->svc, m, mb_delivery_group(d), msg_int(v * 10 + n->w)) != MB_OK) n->send_bad++;
  mb_delivery_done(d, MB_OK, NULL);
}

static int request_all_flag;

typedef struct ask {
  node *n;
  int64_t v;
} ask;

static void answer_cb(void *ud, const mb_answer *a, size_t k) {
  ask *q = ud;
  node *n = q->n;
  on_thread(n);
  n->answers++;
  size_t want = request_all_flag ? (size_t)n->wd->nw - 1 : 1;
  if (k != want) n->answers_n_bad++;
  int seen = 0;
  for (size_t i = 0; i < k; i++) {
    if (a[i].status != MB_OK || !a[i].reply) {
      n->answer_bad++;
      continue;
    }
    int64_t r = payload_int(a[i].reply);
    int from = (int)(r - q->v * 10);
    /* the reply came from a listener on a worker 1..nw-1, each once */
    if (from < 1 || from >= n->wd->nw || (seen & (1 << from))) n->answer_bad++;
    seen |= 1 << from;
  }
  free(q);
}

static void request_task(void *arg) {
  node *n = arg;
  on_thread(n);
  for (int i = 0; i < N; i++) {
    ask *q = malloc(sizeof *q);
    if (!q) abort();
    q->n = n;
    q->v = pay(n->w, i);
    mb_request *r = NULL;
    if (mb_request_start(n->svc, "calc", msg_int(q->v), 10.0, request_all_flag, answer_cb, q,
                         &r) != MB_PENDING) {
      n->send_bad++;
      free(q);
    }
  }
}

/* Repliers on workers 1..nw-1: one group across them (first reply wins),
 * or a listener of their own each (request_all: one answer from each);
 * requesters on every worker. */
static void requests_across(int nw, int all) {
  world wd;
  world_new(&wd, nw);
  CHECK_INT(mb_dest_declare(wd.rt, "calc", NULL), MB_OK);
  for (int w = 1; w < nw; w++) listen_on(&wd, w, "calc", all ? 0 : 9, reply_listener);
  reset_seen(&wd);
  request_all_flag = all;
  for (int w = 0; w < nw; w++) on(&wd, w, request_task);
  CHECK_INT(run(wd.rt), 0); /* idle: every request answered */
  long calls = 0;
  for (int w = 0; w < nw; w++) {
    CHECK_INT(wd.n[w].send_bad, 0);
    CHECK_INT(wd.n[w].answers, N);
    CHECK_INT(wd.n[w].answer_bad, 0);
    CHECK_INT(wd.n[w].answers_n_bad, 0);
    if (w) calls += wd.n[w].calls;
  }
  CHECK_INT(calls, all ? (long)(nw - 1) * nw * N : (long)nw * N);
  mb_stats st = stats_of(wd.rt, "calc");
  CHECK_INT(st.sent, (uint64_t)nw * N);
  CHECK_INT(st.replies, (uint64_t)calls);
  CHECK_INT(st.timeouts, 0);
  check_invariant(wd.rt, "calc");
  world_free(&wd);
}

static void test_threads_request_2(void) { requests_across(2, 0); }
static void test_threads_request_4(void) { requests_across(4, 0); }
static void test_threads_request_all_4(void) { requests_across(4, 1); }

/* ---- the busy count: a relay across workers, a timer on another one ------ */

#define HOPS 1000

/* "hop/W" on each node: forwards the count to the next worker's node until
 * it reaches HOPS. */
static void relay_listener(void *ud, mb_delivery *d) {
  node *n = ud;
  int64_t v = payload_int(mb_delivery_msg(d));
  on_thread(n);
  n->calls++;
  atomic_fetch_add(&n->wd->handled, 1);
  if (v < HOPS) {
    char to[16];
    snprintf(to, sizeof to, "hop/%d", (n->w + 1) % n->wd->nw);
    mb_msg *m = msg_int(v + 1);
    mb_msg_follow_up(m);
    if (mb_send(n->svc, to, m, NULL, NULL) != MB_OK) n->send_bad++;
  }
  mb_delivery_done(d, MB_OK, NULL);
}

static void relay_start(void *arg) {
  node *n = arg;
  on_thread(n);
  if (mb_send(n->svc, "hop/1", msg_int(1), NULL, NULL) != MB_OK) n->send_bad++;
}

static const char *hop_names[MAXW] = {"hop/0", "hop/1", "hop/2", "hop/3"};

static void relay(int nw) {
  world wd;
  world_new(&wd, nw);
  for (int w = 0; w < nw; w++) {
    CHECK_INT(mb_dest_declare(wd.rt, hop_names[w], NULL), MB_OK);
    listen_on(&wd, w, hop_names[w], 0, relay_listener);
  }
  reset_seen(&wd);
  on(&wd, 0, relay_start);
  /* the bus is busy all along: each hop is a task posted to another
   * worker; run returns only after the last one */
  CHECK_INT(run(wd.rt), 0);
  CHECK_INT(atomic_load(&wd.handled), HOPS);
  CHECK_INT(mb_runtime_busy(wd.rt), 0);
  CHECK_INT(mb_runtime_in_flight(wd.rt), 0);
  for (int w = 0; w < nw; w++) {
    CHECK_INT(wd.n[w].send_bad, 0);
    /* hop v runs on worker v % nw */
    long want = 0;
    for (int v = 1; v <= HOPS; v++) want += v % nw == w;
    CHECK_INT(wd.n[w].calls, want);
  }
  world_free(&wd);
}

static void test_threads_relay_2(void) { relay(2); }
static void test_threads_relay_4(void) { relay(4); }

typedef struct held_timer {
  ev_timer t;
  node *n;
  int fired;
} held_timer;

static held_timer timers[MAXW];

static void held_timer_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  held_timer *h = t->data;
  on_thread(h->n);
  h->fired++;
  /* the timer's work: a message to worker 0, then the hold ends */
  if (mb_send(h->n->svc, "hop/0", msg_int(HOPS), NULL, NULL) != MB_OK) h->n->send_bad++;
  mb_runtime_hold(h->n->wd->rt, -1);
}

static void timer_task(void *arg) {
  node *n = arg;
  on_thread(n);
  held_timer *h = &timers[n->w];
  h->n = n;
  ev_timer_init(&h->t, held_timer_cb, 0.02 * n->w, 0);
  h->t.data = h;
  mb_runtime_hold(n->wd->rt, 1);
  ev_timer_start(mb_service_loop(n->svc), &h->t);
}

/* A timer held on each other worker keeps mb_runtime_run from returning
 * until it fired and what it sent was handled. */
static void held_timers(int nw) {
  world wd;
  world_new(&wd, nw);
  CHECK_INT(mb_dest_declare(wd.rt, "hop/0", NULL), MB_OK);
  listen_on(&wd, 0, "hop/0", 0, relay_listener);
  reset_seen(&wd);
  memset(timers, 0, sizeof timers);
  for (int w = 1; w < nw; w++) on(&wd, w, timer_task);
  CHECK_INT(run(wd.rt), 0);
  for (int w = 1; w < nw; w++) {
    CHECK_INT(timers[w].fired, 1);
    CHECK_INT(wd.n[w].send_bad, 0);
  }
  CHECK_INT(wd.n[0].calls, nw - 1);
  CHECK_INT(mb_runtime_busy(wd.rt), 0);
  world_free(&wd);
}

static void test_threads_held_timers_2(void) { held_timers(2); }
static void test_threads_held_timers_4(void) { held_timers(4); }

/* ---- a stop from another worker ------------------------------------------ */

/* "spin" on the last worker: resends to itself until told to stop, and
 * after 20 rounds asks the run to stop (from its own thread). Few rounds:
 * under valgrind each cross-thread hand-off takes milliseconds. */
static void spin_listener(void *ud, mb_delivery *d) {
  node *n = ud;
  on_thread(n);
  n->calls++;
  if (n->calls == 20) mb_runtime_stop(n->wd->rt);
  if (!atomic_load(&n->wd->stop_now)) {
    mb_msg *m = msg_int(n->calls);
    mb_msg_follow_up(m);
    if (mb_send(n->svc, "spin", m, NULL, NULL) != MB_OK) n->send_bad++;
  }
  mb_delivery_done(d, MB_OK, NULL);
}

static void spin_start(void *arg) {
  node *n = arg;
  on_thread(n);
  if (mb_send(n->svc, "spin", msg_int(0), NULL, NULL) != MB_OK) n->send_bad++;
}

static void stop_from_another_worker(int nw) {
  world wd;
  world_new(&wd, nw);
  int last = nw - 1;
  CHECK_INT(mb_dest_declare(wd.rt, "spin", NULL), MB_OK);
  listen_on(&wd, last, "spin", 0, spin_listener);
  reset_seen(&wd);
  on(&wd, 0, spin_start);
  /* never idle on its own: the stop ends the run, before the bound (25 s,
   * under check.h's 30 s alarm), which would end it the same way; 100
   * rounds took 10-20 s under valgrind on a loaded machine */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK_INT(mb_runtime_run(wd.rt, 25.0), 1);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  CHECK((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9 < 20.0);
  /* the stop was for that run only: told to end, the bus goes idle */
  atomic_store(&wd.stop_now, 1);
  CHECK_INT(run(wd.rt), 0);
  CHECK(wd.n[last].calls >= 20);
  CHECK_INT(wd.n[last].send_bad, 0);
  CHECK_INT(wd.n[0].send_bad, 0);
  mb_stats st = stats_of(wd.rt, "spin");
  CHECK_INT(st.delivered, (uint64_t)wd.n[last].calls);
  check_invariant(wd.rt, "spin");
  world_free(&wd);
}

static void test_threads_stop_2(void) { stop_from_another_worker(2); }
static void test_threads_stop_4(void) { stop_from_another_worker(4); }

/* ---- posts between workers: in order, on their thread, none lost -------- */

#define POSTS 300

/* One post from node `from` to node `to`, number `seq` in from's series. */
typedef struct post {
  node *to;
  int from, seq;
} post;

static post posts[MAXW][MAXW][POSTS];
static int post_last[MAXW][MAXW]; /* [to][from]: the last seq seen, -1: none */
static atomic_int post_bad, post_seen;

static void post_arrived(void *arg) {
  post *p = arg;
  on_thread(p->to);
  /* on the receiver's thread only: no lock */
  if (p->seq != post_last[p->to->w][p->from] + 1) atomic_fetch_add(&post_bad, 1);
  post_last[p->to->w][p->from] = p->seq;
  atomic_fetch_add(&post_seen, 1);
}

/* One task posts POSTS tasks to every other node's service: a batch per
 * target that leaves when the task ends (mb_worker.c). */
static void post_all_task(void *arg) {
  node *n = arg;
  on_thread(n);
  world *wd = n->wd;
  for (int i = 0; i < POSTS; i++)
    for (int t = 0; t < wd->nw; t++) {
      if (t == n->w) continue;
      post *p = &posts[n->w][t][i];
      p->to = &wd->n[t];
      p->from = n->w;
      p->seq = i;
      if (mb_service_post(wd->n[t].svc, post_arrived, p) != MB_OK) atomic_fetch_add(&post_bad, 1);
    }
}

static void posts_in_order(int nw) {
  world wd;
  world_new(&wd, nw);
  memset(post_last, 0xff, sizeof post_last);
  atomic_store(&post_bad, 0);
  atomic_store(&post_seen, 0);
  for (int w = 0; w < nw; w++) on(&wd, w, post_all_task);
  CHECK_INT(run(wd.rt), 0); /* the busy count saw the batches through */
  CHECK_INT(atomic_load(&post_bad), 0);
  CHECK_INT(atomic_load(&post_seen), nw * (nw - 1) * POSTS);
  for (int t = 0; t < nw; t++)
    for (int f = 0; f < nw; f++)
      if (f != t) CHECK_INT(post_last[t][f], POSTS - 1);
  world_free(&wd);
}

static void test_threads_posts_2(void) { posts_in_order(2); }
static void test_threads_posts_4(void) { posts_in_order(4); }

/* ---- message ids: unique over threads that make messages at once -------- */

#define IDS 2000
static uint64_t ids_made[MAXW][IDS];

static void make_ids_task(void *arg) {
  node *n = arg;
  on_thread(n);
  for (int i = 0; i < IDS; i++) {
    mb_msg *m = mb_msg_new("x", 1, NULL, 0, NULL);
    if (!m) abort();
    ids_made[n->w][i] = mb_msg_id(m);
    if (i > 0 && ids_made[n->w][i] <= ids_made[n->w][i - 1]) n->out_of_order++;
    mb_msg_unref(m);
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void test_threads_ids_4(void) {
  world wd;
  world_new(&wd, 4);
  for (int w = 0; w < 4; w++) on(&wd, w, make_ids_task);
  CHECK_INT(run(wd.rt), 0);
  static uint64_t all[MAXW * IDS];
  memcpy(all, ids_made, sizeof all);
  qsort(all, MAXW * IDS, sizeof all[0], cmp_u64);
  int dup = 0;
  for (int i = 1; i < MAXW * IDS; i++) dup += all[i] == all[i - 1];
  CHECK_INT(dup, 0);
  for (int w = 0; w < 4; w++) CHECK_INT(wd.n[w].out_of_order, 0); /* increasing per thread */
  world_free(&wd); /* and none left alive (check_quiet: the live count) */
}

void threads_tests(void) {
  RUN(test_threads_parallel_2);
  RUN(test_threads_parallel_4);
  RUN(test_threads_group_2);
  RUN(test_threads_group_4);
  RUN(test_threads_serial_2);
  RUN(test_threads_serial_4);
  RUN(test_threads_synchronous_2);
  RUN(test_threads_synchronous_4);
  RUN(test_threads_request_2);
  RUN(test_threads_request_4);
  RUN(test_threads_request_all_4);
  RUN(test_threads_relay_2);
  RUN(test_threads_relay_4);
  RUN(test_threads_held_timers_2);
  RUN(test_threads_held_timers_4);
  RUN(test_threads_stop_2);
  RUN(test_threads_stop_4);
  RUN(test_threads_posts_2);
  RUN(test_threads_posts_4);
  RUN(test_threads_ids_4);
}
