/*
 * test_observe.c — observing the bus: events, the tracer, latency, the graph.
 */
#include "helpers.h" /* first: it selects POSIX */

#include <ev.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- events ------------------------------------------------------------- */


static void test_events(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "evsvc", 0);
  tlog all = {""}, added = {""};
  mb_subscription *s1 = mb_subscribe(
      svc, MB_EV_DEST_ADDED | MB_EV_DEST_REMOVED | MB_EV_LISTENER_ADDED | MB_EV_LISTENER_REMOVED,
      event_cb, &all);
  mb_subscription *s2 = mb_subscribe(svc, MB_EV_DEST_ADDED, event_cb, &added);
  CHECK(s1 != NULL && s2 != NULL);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.subscriptions, 2);

  CHECK_INT(declare(rt, "ev/a", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_STR(all.s, ""); /* never inline */
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/a:1:0:- ");
  CHECK_STR(added.s, "DA:ev/a:1:0:- ");

  lis a;
  CHECK_INT(lis_listen(&a, svc, "ev/a", 0, L_OK, "A"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/a:1:0:- LA:ev/a:1:1:evsvc ");
  mb_listener_close(a.l);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/a:1:0:- LA:ev/a:1:1:evsvc LR:ev/a:1:0:evsvc ");
  CHECK_INT(mb_dest_remove(rt, "ev/a"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/a:1:0:- LA:ev/a:1:1:evsvc LR:ev/a:1:0:evsvc DR:ev/a:1:0:- ");
  CHECK_STR(added.s, "DA:ev/a:1:0:- "); /* only what it asked for */

  /* removal of a destination with a listener: listener removed, then dest */
  all.s[0] = 0;
  CHECK_INT(mb_dest_declare(rt, "ev/b", NULL), MB_OK);
  lis b;
  CHECK_INT(lis_listen(&b, svc, "ev/b", 0, L_OK, "B"), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "ev/b"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/b:0:0:- LA:ev/b:0:1:evsvc LR:ev/b:0:0:evsvc DR:ev/b:0:0:- ");

  /* an event fired and then unsubscribed before the loop ran: not delivered */
  all.s[0] = 0;
  CHECK_INT(mb_dest_declare(rt, "ev/c", NULL), MB_OK);
  mb_unsubscribe(s1);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "");
  CHECK_INT(mb_dest_declare(rt, "ev/d", NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "");
  CHECK_STR(added.s, "DA:ev/a:1:0:- DA:ev/b:0:0:- DA:ev/c:0:0:- DA:ev/d:0:0:- ");
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.subscriptions, 1);
  mb_unsubscribe(s2);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.subscriptions, 0);

  /* events from another service's actions reach a subscriber too */
  mb_service *other = mb_service_new(rt, "other", 0);
  tlog o = {""};
  mb_subscribe(svc, MB_EV_LISTENER_ADDED, event_cb, &o);
  lis x;
  CHECK_INT(lis_listen(&x, other, "ev/c", 0, L_OK, "X"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(o.s, "LA:ev/c:0:1:other ");
  check_quiet(rt);
  mb_runtime_free(rt); /* frees the live subscription with its service */
}

/* ---- observing: the tracer (mb_observe.c) ------------------------------- */

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* at: since the runtime was made, never decreasing; durations not negative */
static void check_times(const tracer *t, double t_before_new) {
  double limit = mono_now() - t_before_new;
  int n = t->n < 48 ? t->n : 48;
  for (int i = 0; i < n; i++) {
    int ok = CHECK(t->h[i].at >= 0 && t->h[i].at <= limit);
    ok &= CHECK(t->h[i].duration >= 0 && t->h[i].duration <= limit);
    if (i) ok &= CHECK(t->h[i].at >= t->h[i - 1].at);
    if (!ok)
      fprintf(stderr, "    hop %d: at %.9f (before: %.9f), duration %.9f, limit %.9f\n", i,
              t->h[i].at, i ? t->h[i - 1].at : 0.0, t->h[i].duration, limit);
  }
  if (n > 1) CHECK(t->h[n - 1].at > t->h[0].at);
}

/* Only messages made while the bus is observed carry their sender and send
 * time (16 bytes more; the others do without): one made before tracing starts
 * shows neither; one made after shows both. */
static void test_trace_message_made_before(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *snd = mb_service_new(rt, "sender", 0), *wrk = mb_service_new(rt, "worker", 0);
  CHECK_INT(mb_dest_declare(rt, "t/x", NULL), MB_OK);
  lis l;
  CHECK_INT(lis_listen(&l, wrk, "t/x", 0, L_OK, "X"), MB_OK);
  mb_msg *early = msg_int(1);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  mb_msg *late = msg_int(2);
  CHECK_INT(mb_send(snd, "t/x", early, NULL, NULL), MB_OK);
  CHECK_INT(mb_send(snd, "t/x", late, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 2);
  int e = tr.h[0].val == 1 ? 0 : 1;
  CHECK_STR(tr.h[e].from, NONE);
  CHECK(tr.h[e].duration == 0);
  CHECK_STR(tr.h[e].to, "worker");
  CHECK_STR(tr.h[1 - e].from, "sender");
  CHECK(tr.h[1 - e].duration > 0);
  /* latency: only timed deliveries count */
  mb_runtime_observe(rt, MB_OBSERVE_LATENCY);
  CHECK_INT(mb_send(snd, "t/x", msg_int(3), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK(stats_of(rt, "t/x").latency_mean > 0);
  mb_runtime_trace(rt, NULL, NULL);
  mb_service_free(snd);
  mb_service_free(wrk);
  mb_runtime_free(rt);
}

static void test_trace_hops(void) {
  double t_new = mono_now();
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *snd = mb_service_new(rt, "sender", 0), *wrk = mb_service_new(rt, "worker", 0);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  CHECK_INT(mb_dest_declare(rt, "t/ok", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "t/fail", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "t/drop", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "t/none", NULL), MB_OK);
  CHECK_INT(declare(rt, "t/full", MB_PARALLEL, 1, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(declare(rt, "t/sync", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis ok, fail, drop, full, sync;
  CHECK_INT(lis_listen(&ok, wrk, "t/ok", 0, L_OK, "OK"), MB_OK);
  CHECK_INT(lis_listen(&fail, wrk, "t/fail", 0, L_FAIL, "F"), MB_OK);
  CHECK_INT(lis_listen(&drop, wrk, "t/drop", 0, L_OK, "D"), MB_OK);
  CHECK_INT(lis_listen(&full, wrk, "t/full", 0, L_OK, "Q"), MB_OK);
  CHECK_INT(lis_listen(&sync, wrk, "t/sync", 0, L_OK, "S"), MB_OK);
  CHECK_INT(tr.n, 0); /* declaring and listening are not hops */

  /* ok */
  mb_msg *m = msg_int(1);
  uint64_t id1 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/ok", m, NULL, NULL), MB_OK);
  CHECK_INT(tr.n, 0); /* queued: no hop yet */
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 1);
  CHECK_HOP(&tr, 0, MB_HOP_OK, id1, "t/ok", "sender", "worker", NONE);
  CHECK(tr.h[0].has_msg && tr.h[0].val == 1);

  /* failed */
  m = msg_int(2);
  uint64_t id2 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/fail", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 2);
  CHECK_HOP(&tr, 1, MB_HOP_FAILED, id2, "t/fail", "sender", "worker", "failed: boom");
  CHECK(tr.h[1].has_msg && tr.h[1].val == 2);

  /* dropped: the only listener closed between send and dispatch */
  m = msg_int(3);
  uint64_t id3 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/drop", m, NULL, NULL), MB_OK);
  mb_listener_close(drop.l);
  CHECK_INT(run(rt), 0);
  CHECK_INT(drop.calls, 0);
  CHECK_INT(tr.n, 3);
  CHECK_INT(tr.h[2].kind, MB_HOP_DROPPED);
  CHECK(tr.h[2].id == id3);
  CHECK_STR(tr.h[2].dest, "t/drop");
  CHECK_STR(tr.h[2].from, "sender");
  CHECK_STR(tr.h[2].to, NONE); /* no listener took it */
  CHECK(strncmp(tr.h[2].error, "dropped: ", 9) == 0);
  CHECK_INT(stats_of(rt, "t/drop").dropped, 1);

  /* rejected: nobody listens; the hop comes with the refusal */
  m = msg_int(4);
  uint64_t id4 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/none", m, NULL, NULL), MB_ENOLISTENERS);
  CHECK_INT(tr.n, 4);
  CHECK_HOP(&tr, 3, MB_HOP_REJECTED, id4, "t/none", "sender", NONE,
            "no_listeners: nobody listens there");
  CHECK(tr.h[3].has_msg && tr.h[3].val == 4);
  CHECK(tr.h[3].duration == 0);

  /* rejected: queue_full (max_queue 1, reject) */
  m = msg_int(5);
  uint64_t id5 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/full", m, NULL, NULL), MB_OK);
  m = msg_int(6);
  uint64_t id6 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/full", m, NULL, NULL), MB_EFULL);
  CHECK_INT(tr.n, 5);
  CHECK_HOP(&tr, 4, MB_HOP_REJECTED, id6, "t/full", "sender", NONE,
            "queue_full: its queue is full (max_queue)");
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 6);
  CHECK_HOP(&tr, 5, MB_HOP_OK, id5, "t/full", "sender", "worker", NONE);

  /* rejected: no such destination (send and request) */
  m = msg_int(7);
  uint64_t id7 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/missing", m, NULL, NULL), MB_ENODEST);
  CHECK_INT(tr.n, 7);
  CHECK_HOP(&tr, 6, MB_HOP_REJECTED, id7, "t/missing", "sender", NONE,
            "no_destination: no such destination");
  reqres rr = {0};
  mb_request *r = NULL;
  m = msg_int(8);
  uint64_t id8 = mb_msg_id(m);
  CHECK_INT(mb_request_start(snd, "t/nowhere", m, 1.0, 0, req_cb, &rr, &r), MB_ENODEST);
  CHECK_INT(tr.n, 8);
  CHECK_HOP(&tr, 7, MB_HOP_REJECTED, id8, "t/nowhere", "sender", NONE,
            "no_destination: no such destination");
  m = msg_int(9);
  uint64_t id9 = mb_msg_id(m);
  CHECK_INT(mb_request_start(snd, "t/none", m, 1.0, 0, req_cb, &rr, &r), MB_ENOLISTENERS);
  CHECK_INT(tr.n, 9);
  CHECK_HOP(&tr, 8, MB_HOP_REJECTED, id9, "t/none", "sender", NONE,
            "no_listeners: nobody listens there");

  /* a synchronous destination: the hop before mb_send returns */
  m = msg_int(10);
  uint64_t id10 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/sync", m, NULL, NULL), MB_OK);
  CHECK_INT(tr.n, 10);
  CHECK_HOP(&tr, 9, MB_HOP_OK, id10, "t/sync", "sender", "worker", NONE);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 10);
  CHECK_INT(rr.calls, 0);
  check_times(&tr, t_new);

  /* tracing off: no more hops, of any kind */
  mb_runtime_trace(rt, NULL, NULL);
  CHECK_INT(mb_send(snd, "t/ok", msg_int(11), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(snd, "t/fail", msg_int(12), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(snd, "t/none", msg_int(13), NULL, NULL), MB_ENOLISTENERS);
  CHECK_INT(mb_send(snd, "t/missing", msg_int(14), NULL, NULL), MB_ENODEST);
  CHECK_INT(mb_send(snd, "t/sync", msg_int(15), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(ok.calls, 2);
  CHECK_INT(fail.calls, 2);
  CHECK_INT(tr.n, 10);

  /* and on again, with another tracer */
  tracer tr2 = {0};
  mb_runtime_trace(rt, tracer_fn, &tr2);
  m = msg_int(16);
  uint64_t id16 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/ok", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 10);
  CHECK_INT(tr2.n, 1);
  CHECK_HOP(&tr2, 0, MB_HOP_OK, id16, "t/ok", "sender", "worker", NONE);
  CHECK(tr2.h[0].at >= tr.h[9].at);
  mb_runtime_trace(rt, NULL, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* A request that gets no reply in time: a timeout hop from the requester,
 * then the late delivery's own hop. */
static void test_trace_timeout(void) {
  double t_new = mono_now();
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *asker = mb_service_new(rt, "asker", 0), *slow = mb_service_new(rt, "slowpoke", 0);
  CHECK_INT(mb_dest_declare(rt, "slow", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, slow, "slow", 0, L_HOLD, "H"), MB_OK);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  reqres rr = {0};
  mb_request *r = NULL;
  mb_msg *m = msg_int(1);
  uint64_t id = mb_msg_id(m);
  double t0 = mono_now();
  CHECK_INT(mb_request_start(asker, "slow", m, 0.05, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  double took = mono_now() - t0;
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_ETIMEOUT);
  CHECK_INT(h.nheld, 1);
  CHECK_INT(tr.n, 1);
  CHECK_HOP(&tr, 0, MB_HOP_TIMEOUT, id, "slow", "asker", NONE,
            "timeout: no reply from slow within 0.05 s");
  CHECK_STR(tr.h[0].error, rr.error[0]); /* what the requester got */
  CHECK_INT(tr.h[0].has_msg, 0);
  CHECK(tr.h[0].duration >= 0.05 - 1e-6 && tr.h[0].duration <= took);

  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 2);
  CHECK_HOP(&tr, 1, MB_HOP_OK, id, "slow", "asker", "slowpoke", NONE);
  CHECK(tr.h[1].duration >= tr.h[0].duration);

  /* request_all: one timeout hop for the request */
  CHECK_INT(mb_dest_declare(rt, "slow2", NULL), MB_OK);
  lis h2, h3;
  CHECK_INT(lis_listen(&h2, slow, "slow2", 0, L_HOLD, "H2"), MB_OK);
  CHECK_INT(lis_listen(&h3, slow, "slow2", 0, L_REPLY, "H3"), MB_OK);
  reqres ra = {0};
  m = msg_int(2);
  uint64_t id2 = mb_msg_id(m);
  CHECK_INT(mb_request_start(asker, "slow2", m, 0.03, 1, req_cb, &ra, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(ra.calls, 1);
  CHECK_INT(ra.n, 2);
  /* a reply (H3), its delivery's ok, then the timeout for H2's group */
  CHECK_INT(tr.n, 5);
  CHECK_HOP(&tr, 2, MB_HOP_REPLY, id2, "slow2", "slowpoke", "asker", NONE);
  CHECK_HOP(&tr, 3, MB_HOP_OK, id2, "slow2", "asker", "slowpoke", NONE);
  CHECK_HOP(&tr, 4, MB_HOP_TIMEOUT, id2, "slow2", "asker", NONE,
            "timeout: no answer from slow2 within 0.03 s");
  lis_finish(&h2, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 6);
  CHECK_HOP(&tr, 5, MB_HOP_OK, id2, "slow2", "asker", "slowpoke", NONE);
  check_times(&tr, t_new);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Replies: a reply hop from the replier to the requester, before the
 * request's delivery ends; with reply_to, the reply's own delivery. */
static void test_trace_reply(void) {
  double t_new = mono_now();
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *asker = mb_service_new(rt, "asker", 0), *calc = mb_service_new(rt, "calculator", 0);
  CHECK_INT(mb_dest_declare(rt, "calc", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "answers", NULL), MB_OK);
  lis a, back;
  CHECK_INT(lis_listen(&a, calc, "calc", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  CHECK_INT(lis_listen(&back, asker, "answers", 0, L_OK, "BACK"), MB_OK);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);

  reqres rr = {0};
  mb_request *r = NULL;
  mb_msg *m = msg_int(4);
  uint64_t id = mb_msg_id(m);
  CHECK_INT(mb_request_start(asker, "calc", m, 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.reply[0], 41);
  CHECK_INT(tr.n, 2);
  CHECK_HOP(&tr, 0, MB_HOP_REPLY, id, "calc", "calculator", "asker", NONE);
  CHECK(tr.h[0].has_msg && tr.h[0].val == 41); /* the reply, not the request */
  CHECK_HOP(&tr, 1, MB_HOP_OK, id, "calc", "asker", "calculator", NONE);
  CHECK(tr.h[1].val == 4);

  /* reply_to: the reply hop names that destination; nobody waits */
  m = msg_int_to(5, "answers");
  uint64_t id5 = mb_msg_id(m);
  CHECK_INT(mb_send(asker, "calc", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(back.calls, 1);
  CHECK_INT(back.seen[0], 51);
  CHECK_INT(tr.n, 5);
  CHECK_HOP(&tr, 2, MB_HOP_REPLY, id5, "answers", "calculator", NONE, NONE);
  CHECK(tr.h[2].val == 51);
  CHECK_HOP(&tr, 3, MB_HOP_OK, id5, "calc", "asker", "calculator", NONE);
  CHECK_HOP(&tr, 4, MB_HOP_OK, back.ids[0], "answers", "calculator", "asker", NONE);
  CHECK(back.ids[0] != id5);
  CHECK(tr.h[4].val == 51);
  check_times(&tr, t_new);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- observing: latency ----------------------------------------------------- */

/* A listener that finishes payloads divisible by slow_every after `delay`
 * seconds (an ev timer), the others at once; it notes when each finished. */
#define LATN 200

typedef struct lat_lis {
  mb_runtime *rt;
  double delay;
  int slow_every;
  int calls;
  double done_at[LATN];
} lat_lis;

typedef struct lat_one {
  ev_timer t;
  lat_lis *owner;
  mb_delivery *d;
  int64_t v;
} lat_one;

static void lat_finish(lat_lis *l, mb_delivery *d, int64_t v) {
  mb_delivery_done(d, MB_OK, NULL);
  if (v >= 0 && v < LATN) l->done_at[v] = mono_now(); /* after: an upper bound */
}

static void lat_timer_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  lat_one *o = t->data;
  lat_finish(o->owner, o->d, o->v);
  free(o);
}

static void lat_fn(void *ud, mb_delivery *d) {
  lat_lis *l = ud;
  int64_t v = payload_int(mb_delivery_msg(d));
  l->calls++;
  if (v % l->slow_every) {
    lat_finish(l, d, v);
    return;
  }
  lat_one *o = calloc(1, sizeof *o);
  if (!o) abort();
  o->owner = l;
  o->d = d;
  o->v = v;
  struct ev_loop *loop = mb_runtime_loop(l->rt);
  ev_now_update(loop); /* the delay counts from now, not from the loop's last turn */
  ev_timer_init(&o->t, lat_timer_cb, l->delay, 0);
  o->t.data = o;
  ev_timer_start(loop, &o->t);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Sends 0..LATN-1 to dest (each timed from just before the send) and runs;
 * checks mb_stats' latency against the bounds the test can know: every
 * delivery took at least 0 (delay for the slow ones) and at most what the
 * test measured around it; p99 is the 99th percentile within 1/16. */
static void lat_round(mb_runtime *rt, mb_service *svc, const char *dest, double delay,
                      int slow_every, mb_stats *st_out) {
  lat_lis l = {rt, delay, slow_every, 0, {0}};
  int err = MB_OK;
  mb_listener *li = mb_listen(svc, dest, 0, lat_fn, NULL, &l, &err);
  if (!CHECK(li != NULL)) return;
  static double sent_at[LATN], lat[LATN];
  for (int v = 0; v < LATN; v++) {
    sent_at[v] = mono_now();
    CHECK_INT(mb_send(svc, dest, msg_int(v), NULL, NULL), MB_OK);
  }
  CHECK_INT(run(rt), 0);
  CHECK_INT(l.calls, LATN);
  double sum = 0, lo_sum = 0;
  int nslow = 0;
  for (int v = 0; v < LATN; v++) {
    lat[v] = l.done_at[v] - sent_at[v];
    sum += lat[v];
    if (v % slow_every == 0) {
      nslow++;
      lo_sum += delay;
    }
  }
  qsort(lat, LATN, sizeof *lat, cmp_double);
  size_t rank = (LATN * 99 + 99) / 100; /* the 198th of 200 */
  mb_stats st = stats_of(rt, dest);
  CHECK_INT(st.delivered, LATN);
  /* the mean: between the known lower bound and what was measured */
  CHECK(st.latency_mean > 0);
  CHECK(st.latency_mean >= lo_sum / LATN);
  CHECK(st.latency_mean <= sum / LATN + 1e-9);
  /* p99: the 198th latency, rounded up by at most 1/16; never above the max */
  if (nslow >= LATN - (int)rank + 1) CHECK(st.latency_p99 >= delay);
  if (!CHECK(st.latency_p99 <= lat[rank - 1] * 17 / 16 + 1e-9))
    fprintf(stderr, "    p99 %.9f, measured 198th %.9f\n", st.latency_p99, lat[rank - 1]);
  CHECK(st.latency_p99 <= lat[LATN - 1] + 1e-9);
  CHECK(st.latency_p99 > 0);
  mb_listener_close(li);
  *st_out = st;
}

static void test_latency(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "lat", 0);
  CHECK_INT(mb_dest_declare(rt, "lat/a", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "lat/b", NULL), MB_OK);
  mb_runtime_observe(rt, MB_OBSERVE_LATENCY);
  mb_stats st = stats_of(rt, "lat/a");
  CHECK(st.latency_mean == 0 && st.latency_p99 == 0); /* none timed yet */

  /* 4 of 200 take 20 ms: the 198th is one of them */
  lat_round(rt, svc, "lat/a", 0.02, 50, &st);
  CHECK(st.latency_p99 >= 0.02);
  CHECK(st.latency_mean >= 4 * 0.02 / LATN);
  /* 1 of 200 takes 100 ms: the 198th is a quick one, p99 is far below */
  lat_round(rt, svc, "lat/b", 0.1, LATN, &st);
  CHECK(st.latency_p99 < 0.05);
  CHECK(st.latency_mean >= 0.1 / LATN);

  /* failed deliveries are timed too; dropped ones are not */
  CHECK_INT(mb_dest_declare(rt, "lat/f", NULL), MB_OK);
  lis f;
  CHECK_INT(lis_listen(&f, svc, "lat/f", 0, L_FAIL, "F"), MB_OK);
  for (int i = 0; i < 3; i++) CHECK_INT(mb_send(svc, "lat/f", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  st = stats_of(rt, "lat/f");
  CHECK_INT(st.failed, 3);
  CHECK(st.latency_mean > 0 && st.latency_p99 > 0);
  CHECK_INT(mb_dest_declare(rt, "lat/d", NULL), MB_OK);
  lis d;
  CHECK_INT(lis_listen(&d, svc, "lat/d", 0, L_OK, "D"), MB_OK);
  CHECK_INT(mb_send(svc, "lat/d", msg_int(1), NULL, NULL), MB_OK);
  mb_listener_close(d.l);
  CHECK_INT(run(rt), 0);
  st = stats_of(rt, "lat/d");
  CHECK_INT(st.dropped, 1);
  CHECK(st.latency_mean == 0 && st.latency_p99 == 0);
  check_quiet(rt);
  mb_runtime_free(rt);

  /* not observed: both stay 0 */
  rt = mb_runtime_new(NULL);
  svc = mb_service_new(rt, "lat", 0);
  CHECK_INT(mb_dest_declare(rt, "lat/off", NULL), MB_OK);
  lat_lis l = {rt, 0.005, 2, 0, {0}};
  int err = MB_OK;
  CHECK(mb_listen(svc, "lat/off", 0, lat_fn, NULL, &l, &err) != NULL);
  for (int v = 0; v < 10; v++) CHECK_INT(mb_send(svc, "lat/off", msg_int(v), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(l.calls, 10);
  st = stats_of(rt, "lat/off");
  CHECK_INT(st.delivered, 10);
  CHECK(st.latency_mean == 0);
  CHECK(st.latency_p99 == 0);
  /* the graph or a tracer alone does not time deliveries into the stats */
  mb_runtime_observe(rt, MB_OBSERVE_GRAPH);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  for (int v = 1; v < 4; v += 2) CHECK_INT(mb_send(svc, "lat/off", msg_int(v), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 2);
  st = stats_of(rt, "lat/off");
  CHECK_INT(st.delivered, 12);
  CHECK(st.latency_mean == 0 && st.latency_p99 == 0);
  mb_runtime_trace(rt, NULL, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- observing: the graph ------------------------------------------------------ */

typedef struct edges {
  int n;
  char e[32][96];
} edges;

static void edge_fn(void *ud, const mb_edge *e) {
  edges *g = ud;
  if (g->n < 32)
    snprintf(g->e[g->n], sizeof g->e[0], "%s %s %s type=%d", e->service,
             e->listens ? "listens at" : "sends to", e->dest, (int)e->type);
  g->n++;
}

static edges graph_of(mb_runtime *rt) {
  edges g;
  memset(&g, 0, sizeof g);
  mb_graph_each(rt, edge_fn, &g);
  return g;
}

/* g holds exactly the edges in want (each once). */
static void check_edges(int line, const edges *g, const char *const *want, int n) {
  int ok = CHECK_INT(g->n, n);
  for (int i = 0; i < n; i++) {
    int seen = 0;
    for (int j = 0; j < g->n && j < 32; j++) seen += strcmp(g->e[j], want[i]) == 0;
    if (!CHECK_INT(seen, 1)) {
      ok = 0;
      fprintf(stderr, "    edge \"%s\"\n", want[i]);
    }
  }
  if (!ok) {
    fprintf(stderr, "    (checked at line %d) the graph:\n", line);
    for (int j = 0; j < g->n && j < 32; j++) fprintf(stderr, "      %s\n", g->e[j]);
  }
}

static void test_graph(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_runtime_observe(rt, MB_OBSERVE_GRAPH);
  mb_service *alpha = mb_service_new(rt, "alpha", 0), *beta = mb_service_new(rt, "beta", 0);
  CHECK_INT(declare(rt, "g/par", MB_PARALLEL, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(declare(rt, "g/ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(declare(rt, "g/sync", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  edges g = graph_of(rt);
  CHECK_INT(g.n, 0);
  lis b1, b2, b3, a1;
  CHECK_INT(lis_listen(&b1, beta, "g/par", 0, L_OK, "B1"), MB_OK);
  CHECK_INT(lis_listen(&b2, beta, "g/par", 5, L_OK, "B2"), MB_OK); /* same pair: one edge */
  CHECK_INT(lis_listen(&b3, beta, "g/ser", 0, L_OK, "B3"), MB_OK);
  CHECK_INT(lis_listen(&a1, alpha, "g/sync", 0, L_OK, "A1"), MB_OK);
  g = graph_of(rt);
  const char *listens[] = {"beta listens at g/par type=0", "beta listens at g/ser type=1",
                           "alpha listens at g/sync type=2"};
  check_edges(__LINE__, &g, listens, 3);

  for (int i = 0; i < 10; i++) CHECK_INT(mb_send(alpha, "g/par", msg_int(i), NULL, NULL), MB_OK);
  for (int i = 0; i < 3; i++) CHECK_INT(mb_send(alpha, "g/ser", msg_int(i), NULL, NULL), MB_OK);
  for (int i = 0; i < 5; i++) CHECK_INT(mb_send(beta, "g/sync", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(b1.calls + b2.calls, 20);
  for (int i = 0; i < 10; i++) CHECK_INT(mb_send(alpha, "g/par", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  const char *all[] = {"beta listens at g/par type=0",  "beta listens at g/ser type=1",
                       "alpha listens at g/sync type=2", "alpha sends to g/par type=0",
                       "alpha sends to g/ser type=1",    "beta sends to g/sync type=2"};
  g = graph_of(rt);
  check_edges(__LINE__, &g, all, 6);

  /* a destination removed since keeps its edges */
  CHECK_INT(mb_dest_remove(rt, "g/ser"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_exists(rt, "g/ser"), 0);
  CHECK_INT(b3.closed_calls, 1);
  g = graph_of(rt);
  check_edges(__LINE__, &g, all, 6);

  /* a new pair adds one edge; a service gone keeps its edges */
  lis a2;
  CHECK_INT(lis_listen(&a2, alpha, "g/par", 0, L_OK, "A2"), MB_OK);
  CHECK_INT(mb_send(beta, "g/par", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  mb_service_free(beta);
  CHECK_INT(mb_send(alpha, "g/par", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  const char *more[] = {"beta listens at g/par type=0",  "beta listens at g/ser type=1",
                        "alpha listens at g/sync type=2", "alpha sends to g/par type=0",
                        "alpha sends to g/ser type=1",    "beta sends to g/sync type=2",
                        "alpha listens at g/par type=0",  "beta sends to g/par type=0"};
  g = graph_of(rt);
  check_edges(__LINE__, &g, more, 8);
  check_quiet(rt);
  mb_runtime_free(rt);

  /* without MB_OBSERVE_GRAPH (latency alone, or nothing): no edges */
  for (int round = 0; round < 2; round++) {
    rt = mb_runtime_new(NULL);
    if (round) mb_runtime_observe(rt, MB_OBSERVE_LATENCY);
    mb_service *s = mb_service_new(rt, "solo", 0);
    CHECK_INT(mb_dest_declare(rt, "g/x", NULL), MB_OK);
    lis x;
    CHECK_INT(lis_listen(&x, s, "g/x", 0, L_OK, "X"), MB_OK);
    CHECK_INT(mb_send(s, "g/x", msg_int(1), NULL, NULL), MB_OK);
    CHECK_INT(run(rt), 0);
    CHECK_INT(x.calls, 1);
    g = graph_of(rt);
    CHECK_INT(g.n, 0);
    check_quiet(rt);
    mb_runtime_free(rt);
  }
}

/* Regression 5 (mb_request.c): a reply to a reply_to destination that does not
 * exist gives no rejected hop (mb_send and mb_request_start do give one):
 * mb_reply_id's "to ? mb_send_msg(...) : MB_ENODEST" misses
 * mb_obs_rejected. */
static void test_bug_trace_reply_to_missing(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "calc", 0);
  CHECK_INT(mb_dest_declare(rt, "calc", NULL), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "calc", 0, L_REPLY, "A"), MB_OK);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  CHECK_INT(mb_send(svc, "calc", msg_int_to(1, "nowhere"), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.reply_rc[0], MB_ENODEST);
  int rejected = 0;
  for (int i = 0; i < tr.n && i < 48; i++)
    if (tr.h[i].kind == MB_HOP_REJECTED && !strcmp(tr.h[i].dest, "nowhere") &&
        !strcmp(tr.h[i].error, "no_destination: no such destination"))
      rejected++;
  CHECK_INT(rejected, 1);
  mb_runtime_trace(rt, NULL, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

typedef struct removed_seen {
  int n;
  char names[4][16];
  mb_stats st[4];
} removed_seen;

static void removed_fn(void *ud, const char *name, const mb_stats *st) {
  removed_seen *r = ud;
  if (r->n < 4) {
    snprintf(r->names[r->n], sizeof r->names[0], "%s", name);
    r->st[r->n++] = *st;
  }
}

/* MB_OBSERVE_REMOVED keeps what removed destinations did (mbrun --stats),
 * one entry per name, added up when a name is removed again. */
static void test_removed_stats(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rm", 0);
  removed_seen r = {0};
  /* not observed: nothing kept */
  CHECK_INT(mb_dest_declare(rt, "rm/a", NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "rm/a"), MB_OK);
  mb_removed_each(rt, removed_fn, &r);
  CHECK_INT(r.n, 0);

  mb_runtime_observe(rt, MB_OBSERVE_REMOVED);
  mb_dest_opts serial = {.type = MB_SERIAL, .on_full = MB_FULL_REJECT};
  CHECK_INT(mb_dest_declare(rt, "rm/a", &serial), MB_OK);
  lis a, f;
  CHECK_INT(lis_listen(&a, svc, "rm/a", 0, L_OK, "A"), MB_OK);
  for (int i = 0; i < 3; i++) CHECK_INT(mb_send(svc, "rm/a", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "rm/a"), MB_OK); /* pending ones are still delivered */
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_declare(rt, "rm/a", NULL), MB_OK);
  CHECK_INT(lis_listen(&a, svc, "rm/a", 0, L_OK, "A"), MB_OK);
  CHECK_INT(mb_send(svc, "rm/a", msg_int(9), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_remove(rt, "rm/a"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "rm/f", NULL), MB_OK);
  CHECK_INT(lis_listen(&f, svc, "rm/f", 0, L_FAIL, "F"), MB_OK);
  CHECK_INT(mb_send(svc, "rm/f", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_remove(rt, "rm/f"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "rm/live", NULL), MB_OK); /* not removed: not there */
  mb_removed_each(rt, removed_fn, &r);
  CHECK_INT(r.n, 2);
  int ia = strcmp(r.names[0], "rm/a") == 0 ? 0 : 1, iff = 1 - ia;
  CHECK_STR(r.names[ia], "rm/a");
  CHECK_STR(r.names[iff], "rm/f");
  CHECK_INT(r.st[ia].sent, 4);
  CHECK_INT(r.st[ia].deliveries, 4);
  CHECK_INT(r.st[ia].delivered, 4);
  CHECK_INT(r.st[ia].listeners, 0);
  CHECK_INT(r.st[ia].pending, 0);
  CHECK_INT(r.st[ia].type, MB_PARALLEL); /* the last one's */
  CHECK_INT(r.st[iff].failed, 1);
  CHECK_INT(r.st[iff].delivered, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

void observe_tests(void) {
  RUN(test_events);
  RUN(test_trace_hops);
  RUN(test_trace_message_made_before);
  RUN(test_trace_timeout);
  RUN(test_trace_reply);
  RUN(test_latency);
  RUN(test_graph);
  RUN(test_bug_trace_reply_to_missing);
  RUN(test_removed_stats);
}
