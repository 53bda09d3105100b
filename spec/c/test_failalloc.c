/*
 * test_failalloc.c — the core under allocation failure: C tests built only
 * in the build/failalloc test build (runtime/core/mb_failalloc.c), which arm the
 * Nth allocation from a point of the test to fail and walk N over every
 * allocation of one operation. Each run must end with the accounting
 * invariant kept, nothing in flight, and (the ASan+LeakSanitizer build)
 * nothing leaked. Issue 12, item 14. Run by `make failalloc`.
 */
#include "check.h" /* first: it selects POSIX */

#include <stdint.h>

#include "mb.h"
#include "mb_core.h" /* mb_worker_post: the hand-off between workers */

void mb_failalloc_arm(long nth, long n);
long mb_failalloc_count(void);

static mb_msg *msg_int(int64_t v) {
  mb_buf b = {0};
  mb_enc_int(&b, v);
  mb_msg *m = mb_msg_new(b.p, b.len, NULL, 0, NULL);
  mb_buf_free(&b);
  return m;
}

static void ok_fn(void *ud, mb_delivery *d) {
  (*(int *)ud)++;
  mb_delivery_done(d, MB_OK, NULL);
}

static void check_invariant(mb_runtime *rt, const char *name, long k) {
  mb_stats st;
  if (!CHECK_INT(mb_dest_stats(rt, name, &st), MB_OK)) return;
  if (!CHECK_INT(st.deliveries, st.delivered + st.failed + st.dropped) ||
      !CHECK_INT(st.in_flight, 0) || !CHECK_INT(st.pending, 0))
    fprintf(stderr, "    with allocation %ld failing\n", k);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.deliveries, 0);
}

/* A registration that runs out of memory half-way used to leave an empty
 * listener group at the destination; the next dispatch picked a member of
 * it: a NULL dereference. */
static void test_listen_out_of_memory(void) {
  for (long k = 1; k <= 6; k++) {
    mb_runtime *rt = mb_runtime_new(NULL);
    mb_service *svc = mb_service_new(rt, "s", 0);
    CHECK_INT(mb_dest_declare(rt, "d", NULL), MB_OK);
    int calls = 0, err = 0;
    mb_failalloc_arm(k, 1);
    mb_listener *a = mb_listen(svc, "d", 0, ok_fn, NULL, &calls, &err);
    mb_failalloc_arm(0, 0);
    if (!a) CHECK_INT(err, MB_ENOMEM);
    mb_listener *b = mb_listen(svc, "d", 0, ok_fn, NULL, &calls, &err);
    CHECK(b != NULL);
    CHECK_INT(mb_send(svc, "d", msg_int(1), NULL, NULL), MB_OK);
    CHECK_INT(mb_runtime_run(rt, 2), 0);
    CHECK_INT(calls, a ? 2 : 1);
    check_invariant(rt, "d", k);
    if (a) mb_listener_close(a);
    mb_listener_close(b);
    mb_service_free(svc);
    mb_runtime_free(rt);
  }
}

/* A synchronous send to more listeners of the sending worker than fit the
 * inline list: when growing the list failed, the delivery was posted, and
 * when that failed too it was lost (in_flight never back to 0). Every
 * allocation of the send fails in turn, two at a time. */
static void test_sync_send_out_of_memory(void) {
  enum { N = 20 };
  for (long k = 1; k <= 40; k++) {
    mb_runtime *rt = mb_runtime_new(NULL);
    mb_service *svc = mb_service_new(rt, "s", 0);
    mb_dest_opts o = {0};
    o.type = MB_SYNCHRONOUS;
    CHECK_INT(mb_dest_declare(rt, "sync", &o), MB_OK);
    int calls = 0, err = 0;
    mb_listener *l[N];
    for (int i = 0; i < N; i++) CHECK((l[i] = mb_listen(svc, "sync", 0, ok_fn, NULL, &calls, &err)));
    mb_msg *m = msg_int(k);
    mb_failalloc_arm(k, 2);
    int rc = mb_send(svc, "sync", m, NULL, NULL);
    mb_failalloc_arm(0, 0);
    CHECK(rc == MB_OK || rc == MB_ENOMEM || rc == MB_PENDING);
    CHECK_INT(mb_runtime_run(rt, 2), 0); /* 1: still busy after 2 s */
    check_invariant(rt, "sync", k);
    for (int i = 0; i < N; i++) mb_listener_close(l[i]);
    mb_service_free(svc);
    mb_runtime_free(rt);
  }
}

typedef struct replier {
  mb_service *svc;
} replier;

static void reply_fn(void *ud, mb_delivery *d) {
  replier *r = ud;
  mb_msg *reply = msg_int(42);
  if (reply) mb_reply(r->svc, mb_delivery_msg(d), mb_delivery_group(d), reply);
  mb_delivery_done(d, MB_OK, NULL);
}

typedef struct answer {
  int calls, status;
} answer;

static void answer_fn(void *ud, const mb_answer *a, size_t n) {
  answer *an = ud;
  an->calls++;
  an->status = n ? a[0].status : -999;
}

/* A request answered on another worker: when the task that tells the
 * requester could not be posted (out of memory), the request was marked
 * cancelled and its timer stopped from the answering thread (another
 * loop's watcher), and the requester was never told. Now its own timer
 * finishes it on its own worker, with the answer (the late path of
 * timeout_cb in mb_request.c). One failed allocation never reaches it (a
 * post that cannot be staged goes to the inbox), two in a row do: the
 * answer is MB_OK but comes with the timer, and the request's busy hold
 * ends after it (it used to be read from the freed request: ASan). */
static void test_request_out_of_memory(void) {
  int late = 0;
  for (long fails = 1; fails <= 2; fails++)
    for (long k = 1; k <= 30; k++) {
      mb_config cfg = {2, 0};
      mb_runtime *rt = mb_runtime_new(&cfg);
      mb_service *me = mb_service_new(rt, "me", 0), *other = mb_service_new(rt, "other", 1);
      CHECK_INT(mb_dest_declare(rt, "calc", NULL), MB_OK);
      replier rp = {other};
      int err = 0;
      mb_listener *l = mb_listen(other, "calc", 0, reply_fn, NULL, &rp, &err);
      CHECK(l != NULL);
      answer an = {0, 0};
      mb_request *req = NULL;
      mb_msg *m = msg_int(k);
      uint64_t t0 = mb_now_ns();
      mb_failalloc_arm(k, fails);
      int rc = mb_request_start(me, "calc", m, 0.3, 0, answer_fn, &an, &req);
      CHECK_INT(mb_runtime_run(rt, 5), 0);
      mb_failalloc_arm(0, 0);
      if (rc == MB_PENDING) {
        if (!CHECK_INT(an.calls, 1)) fprintf(stderr, "    with allocation %ld failing\n", k);
        if (an.status == MB_OK && mb_now_ns() - t0 >= 250000000) late++;
      } else {
        CHECK_INT(rc, MB_ENOMEM);
      }
      check_invariant(rt, "calc", k);
      mb_counts c;
      mb_runtime_counts(rt, &c);
      CHECK_INT(c.requests, 0);
      mb_service_free(me);
      mb_service_free(other);
      mb_runtime_free(rt);
    }
  CHECK(late > 0); /* the late path ran at least once */
}

typedef struct counts2 {
  int calls, closed; /* calls first: ok_fn counts it */
} counts2;

static void closed_fn(void *ud) { ((counts2 *)ud)->closed++; }

/* Removing a destination tells each listener's owner on its own thread;
 * when that task could not be posted, the listener was freed all the same
 * while its owner still held it: the owner's close read freed memory. */
static void test_remove_destination_out_of_memory(void) {
  for (long k = 1; k <= 6; k++) {
    mb_runtime *rt = mb_runtime_new(NULL);
    mb_service *svc = mb_service_new(rt, "s", 0);
    CHECK_INT(mb_dest_declare(rt, "d", NULL), MB_OK);
    counts2 n = {0, 0};
    int err = 0;
    mb_listener *l = mb_listen(svc, "d", 0, ok_fn, closed_fn, &n, &err);
    CHECK(l != NULL);
    mb_failalloc_arm(k, 1);
    CHECK_INT(mb_dest_remove(rt, "d"), MB_OK);
    mb_failalloc_arm(0, 0);
    CHECK_INT(mb_runtime_run(rt, 2), 0);
    if (!n.closed) mb_listener_close(l); /* not told: still its owner's */
    CHECK_INT(mb_dest_exists(rt, "d"), 0);
    mb_service_free(svc);
    mb_runtime_free(rt);
  }
}

typedef struct holder {
  mb_delivery *held[8];
  int n;
} holder;

static void hold_fn(void *ud, mb_delivery *d) {
  holder *h = ud;
  if (h->n < 8)
    h->held[h->n++] = d;
  else
    mb_delivery_done(d, MB_OK, NULL);
}

static void noop(void *arg) { (void)arg; }

typedef struct sent {
  int calls, status;
} sent;

static void sent_fn(void *ud, int status) {
  sent *s = ud;
  s->calls++;
  s->status = status;
}

/* A send that waited for room in a full "block" queue: when the task that
 * tells its sender it was admitted could not be posted, the sender was
 * never told (its coroutine waited for ever). The worker's task queue is
 * filled first, so that the next post needs memory. */
static void test_blocked_send_out_of_memory(void) {
  for (long k = 1; k <= 6; k++) {
    mb_runtime *rt = mb_runtime_new(NULL);
    mb_service *svc = mb_service_new(rt, "s", 0);
    mb_dest_opts o = {0};
    o.max_queue = 2;
    o.on_full = MB_FULL_BLOCK;
    o.concurrency = 1;
    CHECK_INT(mb_dest_declare(rt, "q", &o), MB_OK);
    holder h = {{0}, 0};
    int err = 0;
    mb_listener *l = mb_listen(svc, "q", 0, hold_fn, NULL, &h, &err);
    CHECK(l != NULL);
    sent s = {0, 0};
    CHECK_INT(mb_send(svc, "q", msg_int(1), sent_fn, &s), MB_OK);
    CHECK_INT(mb_send(svc, "q", msg_int(2), sent_fn, &s), MB_OK);
    CHECK_INT(mb_runtime_run(rt, 2), 0); /* 1 is held, 2 waits (concurrency 1) */
    CHECK_INT(h.n, 1);
    CHECK_INT(mb_send(svc, "q", msg_int(3), sent_fn, &s), MB_OK);
    CHECK_INT(mb_send(svc, "q", msg_int(4), sent_fn, &s), MB_PENDING);
    int once = 1;
    mb_runtime_step(rt, &once); /* the pump task 3 queued runs: the queue is empty */
    /* fill the worker's (empty) task queue, so that the next post needs
     * memory: the post that made it grow left `posted` tasks in
     * 2 * (posted - 1) places */
    long before = mb_failalloc_count();
    int posted = 0;
    while (mb_failalloc_count() == before && posted < 100000) {
      mb_service_post(svc, noop, NULL);
      posted++;
    }
    for (int i = 0; i < posted - 2; i++) mb_service_post(svc, noop, NULL);
    mb_failalloc_arm(k, 3);
    mb_delivery_done(h.held[0], MB_OK, NULL); /* 2 goes, 4 is admitted */
    mb_failalloc_arm(0, 0);
    CHECK_INT(mb_runtime_run(rt, 2), 0);
    if (!CHECK_INT(s.calls, 1)) fprintf(stderr, "    with allocation %ld failing\n", k);
    for (int from = 1, rounds = 0; h.n > from && rounds < 10; from = 0, rounds++) {
      int n = h.n;
      h.n = 0;
      for (int i = from; i < n; i++) mb_delivery_done(h.held[i], MB_OK, NULL);
      CHECK_INT(mb_runtime_run(rt, 2), 0);
    }
    check_invariant(rt, "q", k);
    mb_listener_close(l);
    mb_service_free(svc);
    mb_runtime_free(rt);
  }
}

/* Posts from a worker's task to another worker are staged and leave in one
 * batch when the task ends. A post that found no memory to stage went
 * straight to the target's inbox, ahead of the ones staged before it: the
 * target ran them out of order. */
#define NPOSTS 257 /* one past the staged queue's first array (256) */
static int seen[NPOSTS], nseen;
static mb_runtime *order_rt;
static void record(void *arg) { seen[nseen++] = (int)(intptr_t)arg; }
static void post_many(void *arg) {
  (void)arg;
  mb_worker *to = &order_rt->workers[0];
  for (intptr_t i = 0; i < NPOSTS - 1; i++) CHECK_INT(mb_worker_post(to, NULL, record, (void *)i), MB_OK);
  mb_failalloc_arm(1, 1); /* the stage's array cannot grow */
  int rc = mb_worker_post(to, NULL, record, (void *)(intptr_t)(NPOSTS - 1));
  mb_failalloc_arm(0, 0);
  if (rc != MB_OK) { /* refused is fine (the caller is told); overtaking is not */
    CHECK_INT(rc, MB_ENOMEM);
    CHECK_INT(mb_worker_post(to, NULL, record, (void *)(intptr_t)(NPOSTS - 1)), MB_OK);
  }
}

static void test_staged_posts_keep_order_out_of_memory(void) {
  mb_config cfg = {.workers = 2};
  order_rt = mb_runtime_new(&cfg);
  if (!CHECK(order_rt != NULL)) return;
  nseen = 0;
  CHECK_INT(mb_worker_post(&order_rt->workers[1], NULL, post_many, NULL), MB_OK);
  mb_runtime_run(order_rt, 5.0);
  CHECK_INT(nseen, NPOSTS);
  int in_order = 1;
  for (int i = 0; i < nseen; i++)
    if (seen[i] != i) in_order = 0;
  if (!CHECK(in_order)) fprintf(stderr, "    first ran: %d\n", seen[0]);
  mb_runtime_free(order_rt);
}

int main(void) {
  RUN(test_listen_out_of_memory);
  RUN(test_sync_send_out_of_memory);
  RUN(test_request_out_of_memory);
  RUN(test_remove_destination_out_of_memory);
  RUN(test_blocked_send_out_of_memory);
  RUN(test_staged_posts_keep_order_out_of_memory);
  return check_summary();
}
