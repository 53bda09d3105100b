/*
 * test_delivery.c — delivery: parallel, serial and synchronous destinations, groups, dead
 * letters.
 */
#include "helpers.h" /* first: it selects POSIX */

#include <stdint.h>
#include <string.h>

/* ---- delivery: parallel, serial, synchronous, groups ------------------- */

static void test_parallel(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "par", 0);
  CHECK_INT(mb_dest_declare(rt, "par", NULL), MB_OK);
  lis a, b;
  CHECK_INT(lis_listen(&a, svc, "par", 0, L_OK, "A"), MB_OK);
  CHECK_INT(lis_listen(&b, svc, "par", 0, L_OK, "B"), MB_OK);
  CHECK_INT(stats_of(rt, "par").listeners, 2);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "par", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 3);
  CHECK_INT(b.calls, 3);
  int64_t sa = 0, sb = 0;
  for (int i = 0; i < 3; i++) {
    sa += a.seen[i];
    sb += b.seen[i];
  }
  CHECK_INT(sa, 6);
  CHECK_INT(sb, 6);
  CHECK_STR(a.dest, "par");
  CHECK(a.ids[0] != a.ids[1] && a.ids[1] != a.ids[2] && a.ids[0] != a.ids[2]);
  CHECK_INT(a.expects[0], 0);
  mb_stats st = stats_of(rt, "par");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.deliveries, 6);
  CHECK_INT(st.delivered, 6);
  CHECK_INT(st.failed + st.dropped + st.rejected, 0);
  CHECK_INT(st.pending + st.in_flight, 0);

  /* deliveries overlap: a listener holding them all still gets them all */
  CHECK_INT(mb_dest_declare(rt, "par2", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "par2", 0, L_HOLD, "H"), MB_OK);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "par2", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 3);
  st = stats_of(rt, "par2");
  CHECK_INT(st.in_flight, 3);
  CHECK_INT(st.pending, 0);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.deliveries, 3);
  while (lis_finish(&h, MB_OK, NULL)) continue;
  st = stats_of(rt, "par2");
  CHECK_INT(st.delivered, 3);
  CHECK_INT(st.in_flight, 0);

  /* a listener closed while it holds a delivery still finishes it */
  CHECK_INT(mb_send(svc, "par2", msg_int(4), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 1);
  mb_listener_close(h.l);
  CHECK_INT(stats_of(rt, "par2").listeners, 0);
  CHECK_INT(mb_send(svc, "par2", msg_int(5), NULL, NULL), MB_ENOLISTENERS);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  st = stats_of(rt, "par2");
  CHECK_INT(st.delivered, 4);
  CHECK_INT(st.dropped, 0);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.listeners, 2); /* a and b */
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_parallel_concurrency(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "conc", 0);
  CHECK_INT(declare(rt, "conc", MB_PARALLEL, 0, MB_FULL_REJECT, 2), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "conc", 0, L_HOLD, "H"), MB_OK);
  for (int i = 1; i <= 5; i++) CHECK_INT(mb_send(svc, "conc", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(stats_of(rt, "conc").largest_pending, 5);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 2);
  mb_stats st = stats_of(rt, "conc");
  CHECK_INT(st.in_flight, 2);
  CHECK_INT(st.pending, 3);
  int rounds = 0;
  while (lis_finish(&h, MB_OK, NULL) && rounds++ < 20) run(rt);
  CHECK_INT(h.calls, 5);
  CHECK_INT(h.maxheld, 2);
  st = stats_of(rt, "conc");
  CHECK_INT(st.delivered, 5);
  CHECK_INT(st.pending, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_serial_order(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "ser", 0);
  CHECK_INT(declare(rt, "ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  tlog log = {""};
  lis a, b;
  /* A finishes from a timer, B from a posted task: both later */
  CHECK_INT(lis_listen(&a, svc, "ser", 0, L_TIMER, "A"), MB_OK);
  a.rt = rt;
  a.log = &log;
  CHECK_INT(lis_listen(&b, svc, "ser", 0, L_POST, "B"), MB_OK);
  b.log = &log;
  for (int i = 1; i <= 4; i++) CHECK_INT(mb_send(svc, "ser", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "A1< A1> B1< B1> A2< A2> B2< B2> A3< A3> B3< B3> A4< A4> B4< B4> ");
  mb_stats st = stats_of(rt, "ser");
  CHECK_INT(st.sent, 4);
  CHECK_INT(st.deliveries, 8);
  CHECK_INT(st.delivered, 8);
  CHECK_INT(st.in_flight + st.pending, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_serial_step_by_step(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "ser2", 0);
  CHECK_INT(declare(rt, "ser2", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  tlog log = {""};
  lis h, b;
  CHECK_INT(lis_listen(&h, svc, "ser2", 0, L_HOLD, "H"), MB_OK);
  h.log = &log;
  CHECK_INT(lis_listen(&b, svc, "ser2", 0, L_OK, "B"), MB_OK);
  b.log = &log;
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "ser2", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "H1< ");
  CHECK_INT(b.calls, 0);
  mb_stats st = stats_of(rt, "ser2");
  CHECK_INT(st.in_flight, 1);
  CHECK_INT(st.pending, 2);
  /* nothing moves while H holds message 1, however long the loop runs */
  CHECK_INT(run(rt), 0);
  CHECK_INT(b.calls, 0);
  CHECK_INT(h.calls, 1);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "H1< H1> B1 H2< ");
  lis_finish(&h, MB_EFAILED, "failed: two"); /* a failure does not stop the order */
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "H1< H1> B1 H2< H2> B2 H3< ");
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "H1< H1> B1 H2< H2> B2 H3< H3> B3 ");
  st = stats_of(rt, "ser2");
  CHECK_INT(st.deliveries, 6);
  CHECK_INT(st.delivered, 5);
  CHECK_INT(st.failed, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_synchronous(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "syn", 0);
  CHECK_INT(declare(rt, "sync", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "sync", 0, L_OK, "A"), MB_OK);
  sendres sr = {0, -100};
  /* listeners that finish inline: MB_OK once they ran */
  CHECK_INT(mb_send(svc, "sync", msg_int(1), send_cb, &sr), MB_OK);
  CHECK_INT(a.calls, 1);
  CHECK_INT(mb_send(svc, "sync", msg_int(2), NULL, NULL), MB_OK);
  CHECK_INT(a.calls, 2);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr.calls, 0); /* no callback after MB_OK */
  mb_stats st = stats_of(rt, "sync");
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.delivered, 2);

  /* a listener that finishes later: MB_PENDING, then the callback */
  CHECK_INT(declare(rt, "sync2", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis b, t;
  CHECK_INT(lis_listen(&b, svc, "sync2", 0, L_OK, "B"), MB_OK);
  CHECK_INT(lis_listen(&t, svc, "sync2", 0, L_TIMER, "T"), MB_OK);
  t.rt = rt;
  CHECK_INT(mb_send(svc, "sync2", msg_int(3), send_cb, &sr), MB_PENDING);
  CHECK_INT(b.calls, 1);
  CHECK_INT(t.calls, 1);
  CHECK_INT(sr.calls, 0);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr.calls, 1);
  CHECK_INT(sr.status, MB_OK);
  st = stats_of(rt, "sync2");
  CHECK_INT(st.deliveries, 2);
  CHECK_INT(st.delivered, 2);

  /* the callback waits for the last listener */
  CHECK_INT(declare(rt, "sync3", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis h1, h2;
  CHECK_INT(lis_listen(&h1, svc, "sync3", 0, L_HOLD, "H1"), MB_OK);
  CHECK_INT(lis_listen(&h2, svc, "sync3", 0, L_HOLD, "H2"), MB_OK);
  sendres sr3 = {0, -100};
  CHECK_INT(mb_send(svc, "sync3", msg_int(4), send_cb, &sr3), MB_PENDING);
  CHECK_INT(h1.nheld + h2.nheld, 2);
  lis_finish(&h2, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr3.calls, 0);
  lis_finish(&h1, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr3.calls, 1);
  CHECK_INT(sr3.status, MB_OK);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_groups(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *s1 = mb_service_new(rt, "inst1", 0), *s2 = mb_service_new(rt, "inst2", 0);
  CHECK_INT(mb_dest_declare(rt, "grp", NULL), MB_OK);
  lis g1, g2, solo;
  CHECK_INT(lis_listen(&g1, s1, "grp", 42, L_OK, "G1"), MB_OK);
  CHECK_INT(lis_listen(&g2, s2, "grp", 42, L_OK, "G2"), MB_OK);
  CHECK_INT(lis_listen(&solo, s1, "grp", 0, L_OK, "S"), MB_OK);
  CHECK_INT(stats_of(rt, "grp").listeners, 3);
  for (int i = 1; i <= 10; i++) CHECK_INT(mb_send(s1, "grp", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(g1.calls + g2.calls, 10);
  CHECK(g1.calls > 0 && g2.calls > 0); /* the group shares the work */
  CHECK_INT(solo.calls, 10);
  int count[11] = {0};
  for (int i = 0; i < g1.calls && i < MAXN; i++)
    if (g1.seen[i] >= 1 && g1.seen[i] <= 10) count[g1.seen[i]]++;
  for (int i = 0; i < g2.calls && i < MAXN; i++)
    if (g2.seen[i] >= 1 && g2.seen[i] <= 10) count[g2.seen[i]]++;
  int once = 0;
  for (int i = 1; i <= 10; i++) once += count[i] == 1;
  CHECK_INT(once, 10);
  CHECK(g1.groups[0] != 0 && g1.groups[0] == g2.groups[0]);
  CHECK(solo.groups[0] != g1.groups[0]);
  mb_stats st = stats_of(rt, "grp");
  CHECK_INT(st.deliveries, 20);
  CHECK_INT(st.delivered, 20);

  /* the same key at another destination is another group */
  CHECK_INT(mb_dest_declare(rt, "grp2", NULL), MB_OK);
  lis o;
  CHECK_INT(lis_listen(&o, s1, "grp2", 42, L_OK, "O"), MB_OK);
  CHECK_INT(mb_send(s1, "grp2", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(o.calls, 1);
  CHECK(o.groups[0] != g1.groups[0]);

  /* one member left: it gets every message */
  mb_listener_close(g1.l);
  for (int i = 1; i <= 4; i++) CHECK_INT(mb_send(s1, "grp", msg_int(i), NULL, NULL), MB_OK);
  int before = g2.calls;
  CHECK_INT(run(rt), 0);
  CHECK_INT(g2.calls - before, 4);
  CHECK_INT(stats_of(rt, "grp").listeners, 2);
  check_quiet(rt);
  mb_runtime_free(rt);
}


/* A listener at "act" that, when its message comes, closes a listener
 * (close) or frees a service (svc): between a delivery's dispatch and its
 * run, on the same loop. */
typedef struct actor {
  mb_listener *close;
  mb_service *svc;
} actor;

static void act(void *ud, mb_delivery *d) {
  actor *a = ud;
  if (a->close) mb_listener_close(a->close);
  if (a->svc) mb_service_free(a->svc);
  a->close = NULL;
  a->svc = NULL;
  mb_delivery_done(d, MB_OK, NULL);
}

/* A member that leaves its group hands on what it was given and had not
 * started: the group's other members get it (a reload's handover), while
 * what it had started is not delivered twice. */
static void test_group_handover(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *s1 = mb_service_new(rt, "old", 0), *s2 = mb_service_new(rt, "new", 0);
  mb_service *s3 = mb_service_new(rt, "older", 0);
  CHECK_INT(mb_dest_declare(rt, "ho", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "act", NULL), MB_OK);
  CHECK_INT(declare(rt, "hos", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  actor ac = {0};
  int err = 0;
  mb_listener *al = mb_listen(s2, "act", 0, act, NULL, &ac, &err);
  CHECK(al != NULL);
  lis a, b;
  CHECK_INT(lis_listen(&a, s1, "ho", 7, L_OK, "A"), MB_OK);
  /* the actor's message is dispatched first, then the three go to A and
   * B in turn; the actor closes A before they run */
  CHECK_INT(mb_send(s2, "act", msg_int(0), NULL, NULL), MB_OK);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(s2, "ho", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(lis_listen(&b, s2, "ho", 7, L_OK, "B"), MB_OK);
  ac.close = a.l;
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 0);
  CHECK_INT(b.calls, 3);
  mb_stats st = stats_of(rt, "ho");
  CHECK_INT(st.delivered, 3);
  CHECK_INT(st.dropped, 0);
  CHECK_INT(st.in_flight + st.pending, 0);

  /* the same when the member's service is freed */
  mb_service *s4 = mb_service_new(rt, "old2", 0);
  CHECK_INT(mb_dest_declare(rt, "ho2", NULL), MB_OK);
  lis d, e;
  CHECK_INT(lis_listen(&d, s4, "ho2", 8, L_OK, "D"), MB_OK);
  CHECK_INT(mb_send(s2, "act", msg_int(0), NULL, NULL), MB_OK);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(s2, "ho2", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(lis_listen(&e, s2, "ho2", 8, L_OK, "E"), MB_OK);
  ac.svc = s4;
  CHECK_INT(run(rt), 0);
  CHECK_INT(d.calls, 0);
  CHECK_INT(e.calls, 3);
  st = stats_of(rt, "ho2");
  CHECK_INT(st.delivered, 3);
  CHECK_INT(st.dropped, 0);

  /* a started delivery is ended by its service's end (dropped), never run
   * again by another member */
  lis h, c;
  CHECK_INT(lis_listen(&h, s3, "hos", 9, L_HOLD, "H"), MB_OK);
  CHECK_INT(mb_send(s2, "hos", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 1);
  CHECK_INT(lis_listen(&c, s2, "hos", 9, L_OK, "C"), MB_OK);
  mb_service_free(s3);
  CHECK_INT(run(rt), 0);
  CHECK_INT(c.calls, 0);
  st = stats_of(rt, "hos");
  CHECK_INT(st.dropped, 1);
  CHECK_INT(st.delivered, 0);
  mb_listener_close(al);
  mb_service_free(s1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- dead letters ------------------------------------------------------- */

static void test_dead_letters(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "dl", 0), *other = mb_service_new(rt, "other", 0);
  CHECK_INT(mb_dest_declare(rt, "mb/dead-letters", NULL), MB_OK);
  lis dl;
  CHECK_INT(lis_listen(&dl, svc, "mb/dead-letters", 0, L_CAPTURE, "DL"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "work", NULL), MB_OK);
  lis f;
  CHECK_INT(lis_listen(&f, svc, "work", 0, L_FAIL, "F"), MB_OK);

  /* values {k = "v"} */
  mb_buf pb = {0}, vb = {0};
  mb_enc_int(&pb, 42);
  long t = mb_enc_table_begin(&vb);
  mb_enc_str(&vb, "k", 1);
  mb_enc_str(&vb, "v", 1);
  mb_enc_table_end(&vb, t, 0, 1);
  mb_msg *m = mb_msg_new(pb.p, pb.len, vb.p, vb.len, NULL);
  mb_buf_free(&pb);
  mb_buf_free(&vb);
  uint64_t id = mb_msg_id(m);
  char idstr[17];
  mb_id_format(id, idstr);
  CHECK_INT(mb_send(svc, "work", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(dl.calls, 1);
  if (dl.calls >= 1 && dl.cap[0]) {
    CHECK_INT(mb_value_check(dl.cap[0], dl.caplen[0]), 0);
    mb_reader r = {dl.cap[0], dl.cap[0] + dl.caplen[0]}, v, mv, vv;
    mb_item it;
    mb_reader top = r;
    CHECK(mb_read(&top, &it) == 0 && it.tag == MB_V_TABLE && it.v.t.nhash == 3);
    char s[128];
    CHECK(table_get(r, "destination", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "work");
    CHECK(table_get(r, "error", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "failed: boom");
    CHECK(table_get(r, "message", &mv) == 0);
    CHECK(table_get(mv, "payload", &v) == 0 && read_int(v) == 42);
    CHECK(table_get(mv, "id", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), idstr);
    CHECK(table_get(mv, "destination", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "work");
    CHECK(table_get(mv, "values", &vv) == 0);
    CHECK(table_get(vv, "k", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "v");
  }
  mb_stats st = stats_of(rt, "mb/dead-letters");
  CHECK_INT(st.sent, 1);
  CHECK_INT(st.delivered, 1);

  /* a delivery that succeeds: no report */
  CHECK_INT(mb_dest_declare(rt, "fine", NULL), MB_OK);
  lis ok;
  CHECK_INT(lis_listen(&ok, svc, "fine", 0, L_OK, "OK"), MB_OK);
  CHECK_INT(mb_send(svc, "fine", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(dl.calls, 1);

  /* a dropped delivery (its service stopped) is reported too */
  CHECK_INT(mb_dest_declare(rt, "work2", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, other, "work2", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(mb_send(svc, "work2", msg_int(2), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 1);
  mb_service_free(other);
  CHECK_INT(run(rt), 0);
  CHECK_INT(dl.calls, 2);
  if (dl.calls >= 2 && dl.cap[1]) {
    mb_reader r = {dl.cap[1], dl.cap[1] + dl.caplen[1]}, v;
    char s[128];
    CHECK(table_get(r, "destination", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "work2");
    CHECK(table_get(r, "error", &v) == 0);
    CHECK(strncmp(read_str(v, s, sizeof s), "dropped", 7) == 0);
  }
  st = stats_of(rt, "work2");
  CHECK_INT(st.dropped, 1);
  check_invariant(rt, "work2");

  /* no listener at mb/dead-letters: nothing is sent there */
  mb_listener_close(dl.l);
  CHECK_INT(mb_send(svc, "work", msg_int(3), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  st = stats_of(rt, "mb/dead-letters");
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.rejected, 0);
  lis_release(&dl);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* A dead-letter listener that fails produces no further report. */
static void test_dead_letters_no_loop(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "dl", 0);
  CHECK_INT(mb_dest_declare(rt, "mb/dead-letters", NULL), MB_OK);
  lis dl, f;
  CHECK_INT(lis_listen(&dl, svc, "mb/dead-letters", 0, L_FAIL, "DL"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "work", NULL), MB_OK);
  CHECK_INT(lis_listen(&f, svc, "work", 0, L_FAIL, "F"), MB_OK);
  CHECK_INT(mb_send(svc, "work", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(dl.calls, 1);
  mb_stats st = stats_of(rt, "mb/dead-letters");
  CHECK_INT(st.sent, 1);
  CHECK_INT(st.failed, 1);
  check_invariant(rt, "mb/dead-letters");
  check_invariant(rt, "work");
  check_quiet(rt);
  mb_runtime_free(rt);
}

void delivery_tests(void) {
  RUN(test_parallel);
  RUN(test_parallel_concurrency);
  RUN(test_serial_order);
  RUN(test_serial_step_by_step);
  RUN(test_synchronous);
  RUN(test_groups);
  RUN(test_group_handover);
  RUN(test_dead_letters);
  RUN(test_dead_letters_no_loop);
}
