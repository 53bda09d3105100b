/*
 * test_request.c — requests: replies, timeouts, failures, request_all, reply_to; the stats
 * invariant; replies that cannot be delivered.
 */
#include "helpers.h" /* first: it selects POSIX */

#include <ev.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- requests ----------------------------------------------------------- */

static void test_request_reply(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "req", 0);
  CHECK_INT(mb_dest_declare(rt, "calc", NULL), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "calc", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  reqres rr = {0};
  mb_request *r = NULL;
  mb_msg *m = msg_int(4);
  uint64_t id = mb_msg_id(m);
  CHECK_INT(mb_request_start(svc, "calc", m, 1.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK(r != NULL);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 1);
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 0.5); /* the answer ends the wait, not the timeout */
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK_INT(rr.status[0], MB_OK);
  CHECK_INT(rr.reply[0], 41);
  CHECK(rr.resp[0] == id);
  CHECK_INT(a.expects[0], 1);
  CHECK_INT(a.nreplies, 1);
  CHECK_INT(a.reply_rc[0], MB_OK);
  mb_stats st = stats_of(rt, "calc");
  CHECK_INT(st.replies, 1);
  CHECK_INT(st.timeouts, 0);
  CHECK_INT(st.delivered, 1);

  /* refused at once, without the callback */
  reqres none = {0};
  r = (mb_request *)&none;
  CHECK_INT(mb_request_start(svc, "missing", msg_int(1), 1.0, 0, req_cb, &none, &r), MB_ENODEST);
  CHECK(r == NULL);
  CHECK_INT(mb_dest_declare(rt, "nobody", NULL), MB_OK);
  t0 = ev_time();
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), 1.0, 0, req_cb, &none, &r),
            MB_ENOLISTENERS);
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), 1.0, 1, req_cb, &none, &r),
            MB_ENOLISTENERS);
  /* a timeout that is no number of seconds: refused, never given to libev */
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), NAN, 0, req_cb, &none, &r), MB_EINVAL);
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), 0, 0, req_cb, &none, &r), MB_EINVAL);
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), -1, 1, req_cb, &none, &r), MB_EINVAL);
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 0.5);
  CHECK_INT(none.calls, 0);
  CHECK_INT(stats_of(rt, "nobody").rejected, 2);

  /* cancelled: no callback */
  CHECK_INT(mb_dest_declare(rt, "hold", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "hold", 0, L_HOLD, "H"), MB_OK);
  reqres rc = {0};
  CHECK_INT(mb_request_start(svc, "hold", msg_int(1), 5.0, 0, req_cb, &rc, &r), MB_PENDING);
  run_until(rt, &h.nheld);
  CHECK_INT(h.nheld, 1);
  mb_request_cancel(r);
  t0 = ev_time();
  CHECK_INT(run(rt), 0); /* its timer is gone too */
  CHECK(ev_time() - t0 < 0.5);
  CHECK_INT(rc.calls, 0);
  lis_finish(&h, MB_OK, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_timeout(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rt", 0);
  CHECK_INT(mb_dest_declare(rt, "slow", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "slow", 0, L_HOLD, "H"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  ev_now_update(mb_runtime_loop(rt)); /* timers count from the loop's now */
  double t0 = ev_time();
  CHECK_INT(mb_request_start(svc, "slow", msg_int(1), 0.05, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  double took = ev_time() - t0;
  CHECK(took >= 0.04 && took < 1.0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK_INT(rr.status[0], MB_ETIMEOUT);
  CHECK(strncmp(rr.error[0], "timeout", 7) == 0);
  check_answer_codes(&rr);
  mb_stats st = stats_of(rt, "slow");
  CHECK_INT(st.timeouts, 1);
  CHECK_INT(st.replies, 0);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);

  /* the late reply is refused, and counted */
  CHECK_INT(h.nheld, 1);
  mb_delivery *d = h.held[h.hhead];
  CHECK_INT(mb_reply(svc, mb_delivery_msg(d), mb_delivery_group(d), msg_int(99)), MB_ECLOSED);
  st = stats_of(rt, "slow");
  CHECK_INT(st.replies, 1);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  st = stats_of(rt, "slow");
  CHECK_INT(st.delivered, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* A request (all = 0) answers once, with one answer, whatever the number of
 * listener groups; also when it times out. */
static void test_request_timeout_two_groups(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rt2", 0);
  CHECK_INT(mb_dest_declare(rt, "slow2", NULL), MB_OK);
  lis h1, h2;
  CHECK_INT(lis_listen(&h1, svc, "slow2", 0, L_HOLD, "H1"), MB_OK);
  CHECK_INT(lis_listen(&h2, svc, "slow2", 0, L_HOLD, "H2"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "slow2", msg_int(1), 0.02, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK_INT(rr.status[0], MB_ETIMEOUT);
  CHECK_INT(stats_of(rt, "slow2").timeouts, 1);
  while (lis_finish(&h1, MB_OK, NULL)) continue;
  while (lis_finish(&h2, MB_OK, NULL)) continue;
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_failed(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rf", 0);
  CHECK_INT(mb_dest_declare(rt, "bad", NULL), MB_OK);
  lis f;
  CHECK_INT(lis_listen(&f, svc, "bad", 0, L_FAIL, "F"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  double t0 = ev_time();
  CHECK_INT(mb_request_start(svc, "bad", msg_int(1), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 1.0); /* at once, not after the 5 s timeout */
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK_INT(rr.status[0], MB_EFAILED);
  CHECK(strncmp(rr.error[0], "failed", 6) == 0);
  CHECK(strstr(rr.error[0], "boom") != NULL);
  check_answer_codes(&rr);
  mb_stats st = stats_of(rt, "bad");
  CHECK_INT(st.failed, 1);
  CHECK_INT(st.timeouts, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* A task that finishes, from the loop, the oldest delivery a lis holds. */
typedef struct fin_task {
  lis *l;
  int status;
  const char *error;
} fin_task;

static void fin_task_fn(void *arg) {
  fin_task *ft = arg;
  lis_finish(ft->l, ft->status, ft->error);
}

static void test_request_failed_later(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rfl", 0);
  CHECK_INT(declare(rt, "bad2", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "bad2", 0, L_HOLD, "H"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "bad2", msg_int(1), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  /* run the loop until the delivery is held, then fail it from a task */
  fin_task ft = {&h, MB_EFAILED, "failed: later"};
  run_until(rt, &h.nheld);
  CHECK_INT(h.nheld, 1);
  CHECK_INT(mb_service_post(svc, fin_task_fn, &ft), MB_OK);
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 1.0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_EFAILED);
  CHECK(strstr(rr.error[0], "later") != NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_all(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "ra", 0);
  CHECK_INT(mb_dest_declare(rt, "ra", NULL), MB_OK);
  lis a, b;
  CHECK_INT(lis_listen(&a, svc, "ra", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  CHECK_INT(lis_listen(&b, svc, "ra", 0, L_REPLY, "B"), MB_OK);
  b.reply_add = 2;
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "ra", msg_int(5), 1.0, 1, req_cb, &rr, &r), MB_PENDING);
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 0.5);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 2);
  CHECK_INT(rr.status[0], MB_OK);
  CHECK_INT(rr.status[1], MB_OK);
  CHECK((rr.reply[0] == 51 && rr.reply[1] == 52) || (rr.reply[0] == 52 && rr.reply[1] == 51));
  CHECK_INT(stats_of(rt, "ra").replies, 2);

  /* a group of two instances answers once */
  CHECK_INT(mb_dest_declare(rt, "ra2", NULL), MB_OK);
  lis g1, g2, s;
  CHECK_INT(lis_listen(&g1, svc, "ra2", 9, L_REPLY, "G1"), MB_OK);
  CHECK_INT(lis_listen(&g2, svc, "ra2", 9, L_REPLY, "G2"), MB_OK);
  CHECK_INT(lis_listen(&s, svc, "ra2", 0, L_REPLY, "S"), MB_OK);
  s.reply_add = 3;
  reqres r2 = {0};
  CHECK_INT(mb_request_start(svc, "ra2", msg_int(1), 1.0, 1, req_cb, &r2, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r2.calls, 1);
  CHECK_INT(r2.n, 2);
  CHECK_INT(g1.calls + g2.calls, 1);
  CHECK((r2.reply[0] == 10 && r2.reply[1] == 13) || (r2.reply[0] == 13 && r2.reply[1] == 10));

  /* one group fails, one answers */
  CHECK_INT(mb_dest_declare(rt, "ra3", NULL), MB_OK);
  lis ok3, bad3;
  CHECK_INT(lis_listen(&ok3, svc, "ra3", 0, L_REPLY, "OK"), MB_OK);
  CHECK_INT(lis_listen(&bad3, svc, "ra3", 0, L_FAIL, "BAD"), MB_OK);
  reqres r3 = {0};
  CHECK_INT(mb_request_start(svc, "ra3", msg_int(2), 1.0, 1, req_cb, &r3, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r3.calls, 1);
  CHECK_INT(r3.n, 2);
  int ok = 0, failed = 0;
  for (size_t i = 0; i < r3.n && i < 8; i++) {
    ok += r3.status[i] == MB_OK && r3.reply[i] == 20;
    failed += r3.status[i] == MB_EFAILED && strstr(r3.error[i], "boom") != NULL;
  }
  CHECK_INT(ok, 1);
  CHECK_INT(failed, 1);
  check_answer_codes(&r3);

  /* one group silent: its answer is a timeout */
  CHECK_INT(mb_dest_declare(rt, "ra4", NULL), MB_OK);
  lis ok4, h4;
  CHECK_INT(lis_listen(&ok4, svc, "ra4", 0, L_REPLY, "OK"), MB_OK);
  CHECK_INT(lis_listen(&h4, svc, "ra4", 0, L_HOLD, "H"), MB_OK);
  reqres r4 = {0};
  CHECK_INT(mb_request_start(svc, "ra4", msg_int(3), 0.03, 1, req_cb, &r4, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r4.calls, 1);
  CHECK_INT(r4.n, 2);
  ok = 0;
  int timedout = 0;
  for (size_t i = 0; i < r4.n && i < 8; i++) {
    ok += r4.status[i] == MB_OK && r4.reply[i] == 30;
    timedout += r4.status[i] == MB_ETIMEOUT && strncmp(r4.error[i], "timeout", 7) == 0;
  }
  CHECK_INT(ok, 1);
  CHECK_INT(timedout, 1);
  check_answer_codes(&r4);
  CHECK_INT(stats_of(rt, "ra4").timeouts, 1);
  lis_finish(&h4, MB_OK, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_first_reply_wins(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "fw", 0);
  CHECK_INT(mb_dest_declare(rt, "two", NULL), MB_OK);
  lis a, b;
  CHECK_INT(lis_listen(&a, svc, "two", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  CHECK_INT(lis_listen(&b, svc, "two", 0, L_REPLY, "B"), MB_OK);
  b.reply_add = 2;
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "two", msg_int(5), 1.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK(rr.reply[0] == 51 || rr.reply[0] == 52);
  CHECK_INT(a.nreplies + b.nreplies, 2);
  int okc = 0, closed = 0;
  if (a.nreplies) okc += a.reply_rc[0] == MB_OK, closed += a.reply_rc[0] == MB_ECLOSED;
  if (b.nreplies) okc += b.reply_rc[0] == MB_OK, closed += b.reply_rc[0] == MB_ECLOSED;
  CHECK_INT(okc, 1);
  CHECK_INT(closed, 1);
  CHECK_INT(stats_of(rt, "two").replies, 2);

  /* replying to a plain message with nobody waiting: closed, counted */
  CHECK_INT(mb_dest_declare(rt, "plain", NULL), MB_OK);
  lis p;
  CHECK_INT(lis_listen(&p, svc, "plain", 0, L_REPLY, "P"), MB_OK);
  CHECK_INT(mb_send(svc, "plain", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(p.nreplies, 1);
  CHECK_INT(p.reply_rc[0], MB_ECLOSED);
  CHECK_INT(stats_of(rt, "plain").replies, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_reply_to(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "cb", 0);
  CHECK_INT(mb_dest_declare(rt, "svc/in", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "my/replies", NULL), MB_OK);
  lis in, back;
  CHECK_INT(lis_listen(&in, svc, "svc/in", 0, L_REPLY, "IN"), MB_OK);
  in.reply_add = 1;
  CHECK_INT(lis_listen(&back, svc, "my/replies", 0, L_OK, "BACK"), MB_OK);
  mb_msg *m = msg_int_to(7, "my/replies");
  uint64_t id = mb_msg_id(m);
  CHECK_STR(mb_msg_reply_to(m), "my/replies");
  CHECK_INT(mb_msg_expects_reply(m), 1);
  CHECK_INT(mb_send(svc, "svc/in", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(in.calls, 1);
  CHECK_INT(in.expects[0], 1);
  CHECK_INT(in.reply_rc[0], MB_OK);
  CHECK_INT(back.calls, 1);
  CHECK_INT(back.seen[0], 71);
  CHECK(back.resp[0] == id);
  CHECK_STR(back.dest, "my/replies");
  CHECK_INT(stats_of(rt, "svc/in").replies, 1);
  CHECK_INT(stats_of(rt, "my/replies").sent, 1);

  /* reply_to a destination that does not exist: the error of that send */
  mb_msg *m2 = msg_int_to(8, "nowhere");
  CHECK_INT(mb_send(svc, "svc/in", m2, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(in.nreplies, 2);
  CHECK_INT(in.reply_rc[1], MB_ENODEST);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_synchronous(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rs", 0);
  CHECK_INT(declare(rt, "syncq", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "syncq", 0, L_REPLY, "A"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  int rc = mb_request_start(svc, "syncq", msg_int(6), 1.0, 0, req_cb, &rr, &r);
  CHECK_INT(rc, MB_PENDING);
  CHECK_INT(rr.calls, 0); /* the answer comes from the loop, never inline */
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_OK);
  CHECK_INT(rr.reply[0], 60);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- stats ------------------------------------------------------------- */

/* A request whose delivery is dropped (the listener's service stopped)
 * fails at once, with an error that starts with its status's code word. */
static void test_request_dropped(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "asker", 0), *other = mb_service_new(rt, "other", 0);
  CHECK_INT(mb_dest_declare(rt, "dq", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, other, "dq", 0, L_HOLD, "H"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "dq", msg_int(1), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  run_until(rt, &h.nheld);
  CHECK_INT(h.nheld, 1);
  mb_service_free(other);
  h.nheld = 0;
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 1.0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK(rr.status[0] == MB_ECLOSED || rr.status[0] == MB_EDROPPED);
  check_answer_codes(&rr);
  CHECK_INT(stats_of(rt, "dq").dropped, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* request_all on a serial destination; one group closes before its turn. */
static void test_request_all_serial(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "ras", 0);
  CHECK_INT(declare(rt, "ras", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis a, b;
  CHECK_INT(lis_listen(&a, svc, "ras", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  CHECK_INT(lis_listen(&b, svc, "ras", 0, L_REPLY, "B"), MB_OK);
  b.reply_add = 2;
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "ras", msg_int(4), 1.0, 1, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 2);
  CHECK(rr.status[0] == MB_OK && rr.status[1] == MB_OK);
  CHECK((rr.reply[0] == 41 && rr.reply[1] == 42) || (rr.reply[0] == 42 && rr.reply[1] == 41));

  CHECK_INT(declare(rt, "ras2", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis h, c;
  CHECK_INT(lis_listen(&h, svc, "ras2", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(lis_listen(&c, svc, "ras2", 0, L_REPLY, "C"), MB_OK);
  reqres r2 = {0};
  CHECK_INT(mb_request_start(svc, "ras2", msg_int(5), 5.0, 1, req_cb, &r2, &r), MB_PENDING);
  run_until(rt, &h.nheld);
  CHECK_INT(h.nheld, 1);
  mb_delivery *d = h.held[h.hhead];
  CHECK_INT(mb_reply(svc, mb_delivery_msg(d), mb_delivery_group(d), msg_int(7)), MB_OK);
  CHECK_INT(r2.calls, 0); /* one group still to answer */
  mb_listener_close(c.l);
  lis_finish(&h, MB_OK, NULL);
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 1.0); /* the dropped group answers at once */
  CHECK_INT(r2.calls, 1);
  CHECK_INT(r2.n, 2);
  int ok = 0, closed = 0;
  for (size_t i = 0; i < r2.n && i < 8; i++) {
    ok += r2.status[i] == MB_OK && r2.reply[i] == 7;
    closed += r2.status[i] == MB_ECLOSED || r2.status[i] == MB_EDROPPED;
  }
  CHECK_INT(ok, 1);
  CHECK_INT(closed, 1);
  check_answer_codes(&r2);
  mb_stats st = stats_of(rt, "ras2");
  CHECK_INT(st.dropped, 1);
  check_invariant(rt, "ras2");
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Requests and full queues: "block" waits for room, "reject" refuses at
 * once, a closing destination refuses at once. */
static void test_request_queues(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rq", 0);
  CHECK_INT(declare(rt, "bq", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "bq", 0, L_REPLY, "A"), MB_OK);
  CHECK_INT(mb_send(svc, "bq", msg_int(1), NULL, NULL), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "bq", msg_int(2), 1.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(stats_of(rt, "bq").sent, 1);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_OK);
  CHECK_INT(rr.reply[0], 20);
  CHECK_INT(stats_of(rt, "bq").sent, 2);

  CHECK_INT(declare(rt, "rq", MB_PARALLEL, 1, MB_FULL_REJECT, 0), MB_OK);
  lis b;
  CHECK_INT(lis_listen(&b, svc, "rq", 0, L_REPLY, "B"), MB_OK);
  CHECK_INT(mb_send(svc, "rq", msg_int(1), NULL, NULL), MB_OK);
  reqres none = {0};
  CHECK_INT(mb_request_start(svc, "rq", msg_int(2), 1.0, 0, req_cb, &none, &r), MB_EFULL);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);

  CHECK_INT(mb_dest_declare(rt, "cq", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "cq", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(mb_send(svc, "cq", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_remove(rt, "cq"), MB_OK);
  CHECK_INT(mb_request_start(svc, "cq", msg_int(2), 1.0, 0, req_cb, &none, &r), MB_ECLOSED);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);
  CHECK_INT(run(rt), 0);
  CHECK_INT(none.calls, 0);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Stopping a service cancels its request even while it waits for room in
 * a "block" queue: nothing of it is left. */
static void test_service_free_blocked_request(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *asker = mb_service_new(rt, "asker", 0), *svc = mb_service_new(rt, "svc", 0);
  CHECK_INT(declare(rt, "bq", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "bq", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(mb_send(svc, "bq", msg_int(1), NULL, NULL), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(asker, "bq", msg_int(2), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 1);
  mb_service_free(asker);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 0);
  while (lis_finish(&h, MB_OK, NULL)) run(rt);
  CHECK_INT(h.calls, 1); /* the request's message was never accepted */
  mb_stats st = stats_of(rt, "bq");
  CHECK_INT(st.sent, 1);
  check_invariant(rt, "bq");
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Stopping a service that waits in a synchronous send: like its blocked
 * sends and its requests, the send's callback is not called any more. */
static void test_service_free_pending_sync_send(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *sender = mb_service_new(rt, "sender", 0), *svc = mb_service_new(rt, "svc", 0);
  CHECK_INT(declare(rt, "ys", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "ys", 0, L_HOLD, "H"), MB_OK);
  sendres sr = {0, -100};
  CHECK_INT(mb_send(sender, "ys", msg_int(1), send_cb, &sr), MB_PENDING);
  CHECK_INT(h.nheld, 1);

  /* for comparison: a blocked send of a stopped service is dropped silently */
  CHECK_INT(declare(rt, "bq", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis h2;
  CHECK_INT(lis_listen(&h2, svc, "bq", 0, L_HOLD, "H2"), MB_OK);
  sendres sb = {0, -100};
  CHECK_INT(mb_send(svc, "bq", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(sender, "bq", msg_int(2), send_cb, &sb), MB_PENDING);

  mb_service_free(sender);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  while (lis_finish(&h2, MB_OK, NULL)) run(rt);
  CHECK_INT(sb.calls, 0);
  CHECK_INT(sr.calls, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_stats_invariant(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *sa = mb_service_new(rt, "A", 0), *sb = mb_service_new(rt, "B", 0);

  /* parallel: one OK, one failing odd payloads, one holding (its service
   * will be stopped) */
  CHECK_INT(mb_dest_declare(rt, "mix/par", NULL), MB_OK);
  lis l1, l2, l3;
  CHECK_INT(lis_listen(&l1, sa, "mix/par", 0, L_OK, "L1"), MB_OK);
  CHECK_INT(lis_listen(&l2, sa, "mix/par", 0, L_FAIL_ODD, "L2"), MB_OK);
  CHECK_INT(lis_listen(&l3, sb, "mix/par", 0, L_HOLD, "L3"), MB_OK);
  for (int i = 1; i <= 5; i++) CHECK_INT(mb_send(sa, "mix/par", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(l1.calls, 5);
  CHECK_INT(l2.calls, 5);
  CHECK_INT(l3.nheld, 5);

  /* serial: a listener closed while a message is half delivered */
  CHECK_INT(declare(rt, "mix/ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis l4, l5;
  CHECK_INT(lis_listen(&l4, sa, "mix/ser", 0, L_HOLD, "L4"), MB_OK);
  CHECK_INT(lis_listen(&l5, sa, "mix/ser", 0, L_OK, "L5"), MB_OK);
  for (int i = 1; i <= 4; i++) CHECK_INT(mb_send(sa, "mix/ser", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(l4.nheld, 1);
  mb_listener_close(l5.l);
  for (int i = 0; i < 10 && lis_finish(&l4, MB_OK, NULL); i++) run(rt);
  CHECK_INT(l4.calls, 4);
  CHECK_INT(l5.calls, 0);

  /* a destination removed with messages pending */
  CHECK_INT(mb_dest_declare(rt, "mix/rm", NULL), MB_OK);
  lis l6;
  CHECK_INT(lis_listen(&l6, sa, "mix/rm", 0, L_HOLD, "L6"), MB_OK);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(sa, "mix/rm", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "mix/rm"), MB_OK);
  CHECK_INT(mb_send(sa, "mix/rm", msg_int(4), NULL, NULL), MB_ECLOSED);
  CHECK_INT(run(rt), 0);
  CHECK_INT(l6.nheld, 3);
  mb_stats st = stats_of(rt, "mix/rm");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.deliveries, 3);
  CHECK_INT(st.in_flight, 3);
  CHECK_INT(st.delivered + st.failed + st.dropped + st.in_flight, st.deliveries);
  lis_finish(&l6, MB_OK, NULL);
  lis_finish(&l6, MB_EFAILED, "failed: six");
  st = stats_of(rt, "mix/rm");
  CHECK_INT(st.delivered, 1);
  CHECK_INT(st.failed, 1);
  lis_finish(&l6, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_exists(rt, "mix/rm"), 0);
  CHECK_INT(l6.calls, 3);

  /* stopping service B drops what its listener held */
  mb_service_free(sb);
  l3.nheld = 0; /* those deliveries are gone with the service */
  mb_listener_close(l1.l);
  mb_listener_close(l2.l);
  CHECK_INT(mb_send(sa, "mix/par", msg_int(6), NULL, NULL), MB_ENOLISTENERS);
  CHECK_INT(run(rt), 0);

  st = stats_of(rt, "mix/par");
  CHECK_INT(st.sent, 5);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.deliveries, 15);
  CHECK_INT(st.delivered, 7);
  CHECK_INT(st.failed, 3);
  CHECK_INT(st.dropped, 5);
  CHECK_INT(st.listeners, 0);
  check_invariant(rt, "mix/par");

  st = stats_of(rt, "mix/ser");
  CHECK_INT(st.sent, 4);
  CHECK_INT(st.rejected, 0);
  CHECK_INT(st.deliveries, 5);
  CHECK_INT(st.delivered, 4);
  CHECK_INT(st.dropped, 1);
  CHECK_INT(st.failed, 0);
  CHECK_INT(st.listeners, 1);
  check_invariant(rt, "mix/ser");

  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.listeners, 1); /* l4 */
  CHECK_INT(c.services, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Issue 12, item 3 (SPEC 7, "a reply that cannot be delivered"): a
 * listener's reply to a message whose reply_to does not exist or has no
 * listeners used to vanish: the delivery counted `delivered`, no dead
 * letter. With mb_delivery_reply the delivery ends failed, with the reason
 * in the dead letter, whatever the listener then says. */
typedef struct dreply {
  mb_service *svc;
  int rc[8], n;
} dreply;

static void dreply_fn(void *ud, mb_delivery *d) {
  dreply *r = ud;
  int rc = mb_delivery_reply(d, msg_int(payload_int(mb_delivery_msg(d)) * 10), NULL, NULL);
  if (r->n < 8) r->rc[r->n++] = rc;
  mb_delivery_done(d, MB_OK, NULL);
}

static void dfail_fn(void *ud, mb_delivery *d) {
  (void)ud;
  mb_delivery_fail(d, "failed: learnt later");
  mb_delivery_fail(d, "failed: the second mark does not count");
  mb_delivery_done(d, MB_OK, NULL);
}

static int dl_has(const lis *dl, int i, const char *text) {
  size_t n = strlen(text);
  if (i >= dl->calls || !dl->cap[i]) return 0;
  for (size_t at = 0; at + n <= dl->caplen[i]; at++)
    if (memcmp(dl->cap[i] + at, text, n) == 0) return 1;
  return 0;
}

static void test_bug_reply_to_undeliverable(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rt", 0);
  CHECK_INT(mb_dest_declare(rt, "mb/dead-letters", NULL), MB_OK);
  lis dl, sink;
  CHECK_INT(lis_listen(&dl, svc, "mb/dead-letters", 0, L_CAPTURE, "DL"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "calc", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "empty", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "sink", NULL), MB_OK);
  CHECK_INT(lis_listen(&sink, svc, "sink", 0, L_CAPTURE, "S"), MB_OK);
  dreply r = {svc, {0}, 0};
  int err = 0;
  mb_listener *l = mb_listen(svc, "calc", 0, dreply_fn, NULL, &r, &err);
  CHECK(l != NULL);
  CHECK_INT(mb_send(svc, "calc", msg_int_to(1, "nowhere"), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r.rc[0], MB_ENODEST);
  mb_stats st = stats_of(rt, "calc");
  CHECK_INT(st.failed, 1); /* was delivered */
  CHECK_INT(st.delivered, 0);
  CHECK_INT(dl.calls, 1); /* was none */
  CHECK(dl_has(&dl, 0, "failed: reply to 'nowhere' not delivered: no_destination"));
  CHECK_INT(mb_send(svc, "calc", msg_int_to(2, "empty"), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r.rc[1], MB_ENOLISTENERS);
  CHECK_INT(stats_of(rt, "calc").failed, 2);
  CHECK(dl_has(&dl, 1, "failed: reply to 'empty' not delivered: no_listeners"));
  /* a reply_to that takes it: delivered, as before */
  CHECK_INT(mb_send(svc, "calc", msg_int_to(3, "sink"), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r.rc[2], MB_OK);
  CHECK_INT(sink.calls, 1);
  CHECK_INT(stats_of(rt, "calc").delivered, 1);
  /* no reply_to and nobody waiting: nothing to deliver, nothing failed */
  CHECK_INT(mb_send(svc, "calc", msg_int(4), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r.rc[3], MB_ECLOSED);
  st = stats_of(rt, "calc");
  CHECK_INT(st.delivered, 2);
  CHECK_INT(st.failed, 2);
  CHECK_INT(st.deliveries, st.delivered + st.failed + st.dropped);
  CHECK_INT(dl.calls, 2);
  mb_listener_close(l);

  /* mb_delivery_fail: the first mark is the error; a waiting requester
   * gets it */
  CHECK_INT(mb_dest_declare(rt, "later", NULL), MB_OK);
  l = mb_listen(svc, "later", 0, dfail_fn, NULL, NULL, &err);
  CHECK(l != NULL);
  reqres rr = {0};
  mb_request *req;
  CHECK_INT(mb_request_start(svc, "later", msg_int(5), 5, 0, req_cb, &rr, &req), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_EFAILED);
  CHECK_STR(rr.error[0], "failed: learnt later");
  CHECK_INT(stats_of(rt, "later").failed, 1);
  CHECK(dl_has(&dl, 2, "failed: learnt later"));
  mb_listener_close(l);
  lis_release(&dl);
  lis_release(&sink);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- a request's answer slots over a stand-in link (issue 17) ------------
 * A request with one answer keeps it inside the request (no allocation);
 * request_all's slots grow as nodes acknowledge (mb_link_expect). These
 * take the ways between the two: ASan/valgrind see a free of the inner slot
 * or a lost error string. */

static uint64_t fake_sent[8];
static int fake_nsent;

static int fake_send(void *ud, mb_service *from, const char *dest, mb_dest_type type, mb_msg *m,
                     int kind) {
  (void)ud, (void)from, (void)dest, (void)type, (void)kind;
  if (fake_nsent < 8) fake_sent[fake_nsent++] = mb_msg_id(m);
  mb_msg_unref(m);
  return MB_OK;
}

static void test_request_slots_over_link(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_link link = {0};
  link.send = fake_send;
  mb_runtime_link(rt, &link);
  mb_service *svc = mb_service_new(rt, "sl", 0);
  mb_dest_opts o = {0};
  o.cluster = 1;
  CHECK_INT(mb_dest_declare(rt, "far", &o), MB_OK);
  fake_nsent = 0;
  mb_request *r;

  /* a request: its one answer in the request itself; a second is late */
  reqres r1 = {0};
  CHECK_INT(mb_request_start(svc, "far", msg_int(1), 5.0, 0, req_cb, &r1, &r), MB_PENDING);
  CHECK_INT(fake_nsent, 1);
  CHECK_INT(mb_link_answer(rt, fake_sent[0], 0, MB_OK, msg_int(11), NULL), 0);
  CHECK_INT(mb_link_answer(rt, fake_sent[0], 0, MB_OK, msg_int(12), NULL), -1);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r1.calls, 1);
  CHECK_INT(r1.n, 1);
  CHECK_INT(r1.status[0], MB_OK);
  CHECK_INT(r1.reply[0], 11);

  /* request_all: a failure for the whole request before any node
   * acknowledged (one inner slot, with its error), then a node with two
   * groups: the slots move out of the request, the error with them */
  reqres r2 = {0};
  CHECK_INT(mb_request_start(svc, "far", msg_int(2), 5.0, 1, req_cb, &r2, &r), MB_PENDING);
  CHECK_INT(fake_nsent, 2);
  uint64_t id = fake_sent[1];
  CHECK_INT(mb_link_answer(rt, id, 0, MB_EFAILED, NULL, "failed: first"), 0);
  CHECK_INT(mb_link_expect(rt, id, 100, 2), 0);
  CHECK_INT(mb_link_answer(rt, id, 101, MB_OK, msg_int(21), NULL), 0);
  CHECK_INT(mb_link_expect(rt, id, 200, 1), 0); /* grows again: realloc of the array */
  CHECK_INT(mb_link_answer(rt, id, 100, MB_OK, msg_int(20), NULL), 0);
  CHECK_INT(mb_link_answer(rt, id, 200, MB_EFAILED, NULL, "failed: third"), 0);
  mb_link_window(rt, id);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r2.calls, 1);
  CHECK_INT(r2.n, 4);
  CHECK_INT(r2.status[0], MB_EFAILED);
  CHECK_STR(r2.error[0], "failed: first");
  CHECK_INT(r2.reply[1], 20);
  CHECK_INT(r2.reply[2], 21);
  CHECK_INT(r2.status[3], MB_EFAILED);
  CHECK_STR(r2.error[3], "failed: third");

  /* request_all that nobody acknowledges: its one timeout answer, inside */
  reqres r3 = {0};
  CHECK_INT(mb_request_start(svc, "far", msg_int(3), 0.02, 1, req_cb, &r3, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r3.calls, 1);
  CHECK_INT(r3.n, 1);
  CHECK_INT(r3.status[0], MB_ETIMEOUT);
  CHECK(strstr(r3.error[0], "no node acknowledged") != NULL);

  /* reused requests (the free list) after each kind: one inner, one grown */
  for (int i = 0; i < 4; i++) {
    reqres rr = {0};
    CHECK_INT(mb_request_start(svc, "far", msg_int(4), 5.0, i & 1, req_cb, &rr, &r), MB_PENDING);
    id = fake_sent[fake_nsent - 1];
    if (i & 1) CHECK_INT(mb_link_expect(rt, id, 300, 3), 0);
    CHECK_INT(mb_link_answer(rt, id, i & 1 ? 301 : 0, MB_OK, msg_int(40 + i), NULL), 0);
    if (i & 1) mb_request_cancel(r); /* the requester gives up: its slots go */
    CHECK_INT(run(rt), 0);
    CHECK_INT(rr.calls, i & 1 ? 0 : 1);
    fake_nsent = 4; /* keep room */
  }
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* A request with no time limit to a local destination does not keep the
 * bus busy: the run is idle with it open, and counts.unlimited says so
 * until it is answered, cancelled, or its service freed; one with a limit
 * never counts there (the review of session 12). */
static void test_request_unlimited(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "ru", 0);
  CHECK_INT(mb_dest_declare(rt, "later", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "later", 0, L_HOLD, "H"), MB_OK);
  reqres rr = {0}, rc = {0}, rf = {0};
  mb_request *r = NULL;
  mb_counts c;
  CHECK_INT(mb_request_start(svc, "later", msg_int(1), INFINITY, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(mb_request_start(svc, "later", msg_int(2), INFINITY, 0, req_cb, &rc, &r), MB_PENDING);
  CHECK_INT(mb_request_start(svc, "later", msg_int(3), 5.0, 0, req_cb, &rf, &r),
            MB_PENDING);
  mb_request *finite = r;
  run_until(rt, &h.nheld);
  while (h.nheld < 3) mb_runtime_step(rt, NULL);
  mb_request_cancel(finite);
  double t0 = ev_time();
  CHECK_INT(run(rt), 0); /* idle at once: nothing keeps the two busy */
  CHECK(ev_time() - t0 < 0.5);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 2);
  CHECK_INT(c.unlimited, 2);
  /* answered later: it ends as any request */
  mb_delivery *d = h.held[h.hhead];
  CHECK_INT(mb_reply(svc, mb_delivery_msg(d), mb_delivery_group(d), msg_int(10)), MB_OK);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.unlimited, 1);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.reply[0], 10);
  while (h.nheld) lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  mb_service_free(svc); /* cancels the other */
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.unlimited, 0);
  CHECK_INT(rc.calls, 0);
  CHECK_INT(rf.calls, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

void request_tests(void) {
  RUN(test_request_reply);
  RUN(test_request_timeout);
  RUN(test_request_timeout_two_groups);
  RUN(test_request_failed);
  RUN(test_request_failed_later);
  RUN(test_request_all);
  RUN(test_request_first_reply_wins);
  RUN(test_reply_to);
  RUN(test_request_synchronous);
  RUN(test_request_dropped);
  RUN(test_request_all_serial);
  RUN(test_request_queues);
  RUN(test_service_free_blocked_request);
  RUN(test_service_free_pending_sync_send);
  RUN(test_stats_invariant);
  RUN(test_bug_reply_to_undeliverable);
  RUN(test_request_slots_over_link);
  RUN(test_request_unlimited);
}
