/*
 * test_dest.c — destinations: declare, names, many of them; send errors, back-pressure
 * (full queues, blocked senders), removal.
 */
#include "helpers.h" /* first: it selects POSIX */

#include <stdio.h>
#include <string.h>

/* ---- destinations ------------------------------------------------------ */

typedef struct names {
  char s[2048];
  int n;
} names;

static void collect_name(void *ud, const char *name) {
  names *ns = ud;
  size_t len = strlen(ns->s);
  snprintf(ns->s + len, sizeof ns->s - len, "%s%s", ns->n ? "," : "", name);
  ns->n++;
}

static void test_dest_declare(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  if (!CHECK(rt != NULL)) return;

  CHECK_INT(mb_dest_exists(rt, "shop/orders"), 0);
  CHECK_INT(mb_dest_declare(rt, "shop/orders", NULL), MB_OK);
  CHECK_INT(mb_dest_exists(rt, "shop/orders"), 1);
  CHECK_INT(mb_dest_declare(rt, "shop/orders", NULL), MB_OK);
  /* the defaults spelled out are the same options */
  CHECK_INT(declare(rt, "shop/orders", MB_PARALLEL, 65536, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(declare(rt, "shop/orders", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_EEXISTS);
  CHECK_INT(declare(rt, "shop/orders", MB_PARALLEL, 10, MB_FULL_REJECT, 0), MB_EEXISTS);
  CHECK_INT(declare(rt, "shop/orders", MB_PARALLEL, 0, MB_FULL_BLOCK, 0), MB_EEXISTS);
  CHECK_INT(declare(rt, "shop/orders", MB_PARALLEL, 0, MB_FULL_REJECT, 3), MB_EEXISTS);
  CHECK_INT(declare(rt, "s", MB_SERIAL, 5, MB_FULL_BLOCK, 0), MB_OK);
  CHECK_INT(declare(rt, "s", MB_SERIAL, 5, MB_FULL_BLOCK, 0), MB_OK);
  CHECK_INT(declare(rt, "s", MB_SYNCHRONOUS, 5, MB_FULL_BLOCK, 0), MB_EEXISTS);

  mb_stats st = stats_of(rt, "s");
  CHECK_INT(st.type, MB_SERIAL);
  CHECK_INT(st.listeners, 0);
  CHECK_INT(st.sent + st.rejected + st.deliveries + st.delivered + st.failed + st.dropped, 0);
  CHECK_INT(st.pending + st.largest_pending + st.in_flight, 0);
  CHECK_INT(st.replies + st.timeouts, 0);
  CHECK_INT(mb_dest_stats(rt, "nope", &st), MB_ENODEST);

  /* names: 1-255 bytes of [A-Za-z0-9_./:-] */
  char n255[256], n256[257];
  memset(n255, 'a', 255);
  n255[255] = 0;
  memset(n256, 'a', 256);
  n256[256] = 0;
  CHECK_INT(mb_dest_declare(rt, "", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, n256, NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, "a b", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, "tab\there", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, "caf\xc3\xa9", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, "a*b", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, n255, NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "Az09_./:-", NULL), MB_OK);
  CHECK_INT(mb_dest_exists(rt, n256), 0);
  CHECK_INT(mb_dest_name_valid("x", 1), 1);
  CHECK_INT(mb_dest_name_valid("x", 0), 0);
  CHECK_INT(mb_dest_name_valid(n255, 255), 1);
  CHECK_INT(mb_dest_name_valid(n256, 256), 0);
  CHECK_INT(mb_dest_name_valid("a\0b", 3), 0);

  /* bad options */
  CHECK_INT(declare(rt, "bad/type", (mb_dest_type)3, 0, MB_FULL_REJECT, 0), MB_EINVAL);
  CHECK_INT(declare(rt, "bad/full", MB_PARALLEL, 0, (mb_full_policy)2, 0), MB_EINVAL);
  CHECK_INT(mb_dest_exists(rt, "bad/type") + mb_dest_exists(rt, "bad/full"), 0);

  /* removal of an idle destination is immediate */
  CHECK_INT(mb_dest_remove(rt, "nope"), MB_ENODEST);
  CHECK_INT(mb_dest_remove(rt, "s"), MB_OK);
  CHECK_INT(mb_dest_exists(rt, "s"), 0);
  CHECK_INT(mb_dest_stats(rt, "s", &st), MB_ENODEST);
  CHECK_INT(mb_dest_remove(rt, "s"), MB_ENODEST);
  CHECK_INT(declare(rt, "s", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(stats_of(rt, "s").type, MB_SYNCHRONOUS);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_dest_each_sorted(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  static const char *const in[] = {"b", "a", "c/x", "A", "a/b", "a:1", "B-2", "_z"};
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
    CHECK_INT(mb_dest_declare(rt, in[i], NULL), MB_OK);
  names ns = {"", 0};
  mb_dest_each(rt, collect_name, &ns);
  CHECK_STR(ns.s, "A,B-2,_z,a,a/b,a:1,b,c/x");
  CHECK_INT(ns.n, 8);

  CHECK_INT(mb_dest_remove(rt, "a/b"), MB_OK);
  names ns2 = {"", 0};
  mb_dest_each(rt, collect_name, &ns2);
  CHECK_STR(ns2.s, "A,B-2,_z,a,a:1,b,c/x");

  names none = {"", 0};
  mb_runtime *empty = mb_runtime_new(NULL);
  mb_dest_each(empty, collect_name, &none);
  CHECK_INT(none.n, 0);
  mb_runtime_free(empty);
  mb_runtime_free(rt);
}

/* Many names: the name table grows, and removals keep the others findable. */
static void test_dest_many(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  char name[32];
  for (int i = 0; i < 500; i++) {
    snprintf(name, sizeof name, "d/%d", i);
    CHECK_INT(mb_dest_declare(rt, name, NULL), MB_OK);
  }
  for (int i = 0; i < 500; i += 3) {
    snprintf(name, sizeof name, "d/%d", i);
    CHECK_INT(mb_dest_remove(rt, name), MB_OK);
  }
  int wrong = 0;
  for (int i = 0; i < 500; i++) {
    snprintf(name, sizeof name, "d/%d", i);
    if (mb_dest_exists(rt, name) != (i % 3 != 0)) wrong++;
  }
  CHECK_INT(wrong, 0);
  names ns = {"", 0};
  mb_dest_each(rt, collect_name, &ns);
  CHECK_INT(ns.n, 333);
  mb_runtime_free(rt);
}

/* ---- errors and back-pressure ------------------------------------------ */

static void test_send_errors(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "err", 0);
  CHECK_INT(mb_send(svc, "missing", msg_int(1), NULL, NULL), MB_ENODEST);
  CHECK_INT(mb_dest_declare(rt, "empty", NULL), MB_OK);
  CHECK_INT(mb_send(svc, "empty", msg_int(1), NULL, NULL), MB_ENOLISTENERS);
  mb_stats st = stats_of(rt, "empty");
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.sent, 0);

  CHECK_INT(declare(rt, "small", MB_PARALLEL, 2, MB_FULL_REJECT, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "small", 0, L_OK, "A"), MB_OK);
  CHECK_INT(mb_send(svc, "small", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "small", msg_int(2), NULL, NULL), MB_OK);
  sendres sr = {0, -100};
  CHECK_INT(mb_send(svc, "small", msg_int(3), send_cb, &sr), MB_EFULL);
  st = stats_of(rt, "small");
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.pending, 2);
  CHECK_INT(st.largest_pending, 2);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr.calls, 0);
  CHECK_INT(a.calls, 2);
  CHECK_INT(mb_send(svc, "small", msg_int(4), NULL, NULL), MB_OK); /* room again */
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 3);

  /* the only listener closed between send and dispatch: one delivery,
   * dropped, so that the message is accounted for */
  CHECK_INT(mb_dest_declare(rt, "gone", NULL), MB_OK);
  lis g;
  CHECK_INT(lis_listen(&g, svc, "gone", 0, L_OK, "G"), MB_OK);
  CHECK_INT(mb_send(svc, "gone", msg_int(1), NULL, NULL), MB_OK);
  mb_listener_close(g.l);
  CHECK_INT(run(rt), 0);
  CHECK_INT(g.calls, 0);
  st = stats_of(rt, "gone");
  CHECK_INT(st.sent, 1);
  CHECK_INT(st.deliveries, 1);
  CHECK_INT(st.dropped, 1);

  /* no listener left */
  mb_listener_close(a.l);
  CHECK_INT(mb_send(svc, "small", msg_int(5), NULL, NULL), MB_ENOLISTENERS);
  st = stats_of(rt, "small");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.rejected, 2);
  CHECK_INT(st.listeners, 0);
  CHECK_INT(st.delivered, 3);

  /* the code words of the Lua errors */
  CHECK_STR(mb_strerror(MB_OK), "ok");
  CHECK_STR(mb_strerror(MB_ENODEST), "no_destination");
  CHECK_STR(mb_strerror(MB_ENOLISTENERS), "no_listeners");
  CHECK_STR(mb_strerror(MB_EFULL), "queue_full");
  CHECK_STR(mb_strerror(MB_ETIMEOUT), "timeout");
  CHECK_STR(mb_strerror(MB_EFAILED), "failed");
  CHECK_STR(mb_strerror(MB_ECLOSED), "closed");
  CHECK_STR(mb_strerror(MB_EEXISTS), "exists");
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_block(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "blk", 0);
  CHECK_INT(declare(rt, "blk", MB_PARALLEL, 2, MB_FULL_BLOCK, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "blk", 0, L_OK, "A"), MB_OK);
  sendres sr = {0, -100};
  CHECK_INT(mb_send(svc, "blk", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "blk", msg_int(2), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "blk", msg_int(3), send_cb, &sr), MB_PENDING);
  CHECK_INT(sr.calls, 0);
  CHECK_INT(mb_send(svc, "blk", msg_int(4), NULL, NULL), MB_EFULL); /* nobody to wait */
  mb_stats st = stats_of(rt, "blk");
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.pending, 2);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr.calls, 1);
  CHECK_INT(sr.status, MB_OK);
  CHECK_INT(a.calls, 3);
  CHECK(a.seen[0] == 1 && a.seen[1] == 2 && a.seen[2] == 3);
  st = stats_of(rt, "blk");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.delivered, 3);
  CHECK(st.largest_pending <= 2);

  /* a blocked sender of a destination being removed gets MB_ECLOSED */
  CHECK_INT(declare(rt, "blk2", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "blk2", 0, L_HOLD, "H"), MB_OK);
  sendres sr2 = {0, -100};
  CHECK_INT(mb_send(svc, "blk2", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "blk2", msg_int(2), send_cb, &sr2), MB_PENDING);
  CHECK_INT(mb_dest_remove(rt, "blk2"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr2.calls, 1);
  CHECK_INT(sr2.status, MB_ECLOSED);
  CHECK_INT(h.nheld, 1); /* the accepted message is still delivered */
  st = stats_of(rt, "blk2");
  CHECK_INT(st.sent, 1);
  CHECK_INT(st.rejected, 1);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_exists(rt, "blk2"), 0);
  CHECK_INT(h.calls, 1);

  /* blocked senders are admitted in order */
  CHECK_INT(declare(rt, "blk3", MB_SERIAL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis o;
  CHECK_INT(lis_listen(&o, svc, "blk3", 0, L_OK, "O"), MB_OK);
  sendres b2 = {0, -100}, b3 = {0, -100};
  CHECK_INT(mb_send(svc, "blk3", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "blk3", msg_int(2), send_cb, &b2), MB_PENDING);
  CHECK_INT(mb_send(svc, "blk3", msg_int(3), send_cb, &b3), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK(b2.calls == 1 && b2.status == MB_OK && b3.calls == 1 && b3.status == MB_OK);
  CHECK_INT(o.calls, 3);
  CHECK(o.seen[0] == 1 && o.seen[1] == 2 && o.seen[2] == 3);
  st = stats_of(rt, "blk3");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.largest_pending, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_remove_drains(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rm", 0);
  CHECK_INT(mb_dest_declare(rt, "mb/dead-letters", NULL), MB_OK);
  lis dl, a;
  CHECK_INT(lis_listen(&dl, svc, "mb/dead-letters", 0, L_CAPTURE, "DL"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "rm", NULL), MB_OK);
  CHECK_INT(lis_listen(&a, svc, "rm", 0, L_OK, "A"), MB_OK);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "rm", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "rm"), MB_OK);
  CHECK_INT(mb_send(svc, "rm", msg_int(4), NULL, NULL), MB_ECLOSED);
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 3);
  CHECK(a.seen[0] + a.seen[1] + a.seen[2] == 6);
  CHECK_INT(mb_dest_exists(rt, "rm"), 0);
  CHECK_INT(mb_send(svc, "rm", msg_int(5), NULL, NULL), MB_ENODEST);
  CHECK_INT(dl.calls, 0); /* removal drops nothing */
  int err = 0;
  CHECK(mb_listen(svc, "rm", 0, lis_fn, lis_closed, &a, &err) == NULL && err == MB_ENODEST);

  /* while a delivery runs the destination is closing: no sends, no listeners */
  CHECK_INT(mb_dest_declare(rt, "rm2", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "rm2", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(mb_send(svc, "rm2", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 1);
  CHECK_INT(mb_dest_remove(rt, "rm2"), MB_OK);
  CHECK_INT(mb_send(svc, "rm2", msg_int(2), NULL, NULL), MB_ECLOSED);
  err = 0;
  CHECK(mb_listen(svc, "rm2", 0, lis_fn, lis_closed, &a, &err) == NULL && err == MB_ECLOSED);
  CHECK_INT(mb_dest_remove(rt, "rm2"), MB_ENODEST); /* already going */
  CHECK_INT(run(rt), 0);
  mb_stats st = stats_of(rt, "rm2");
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.in_flight, 1);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_exists(rt, "rm2"), 0);
  CHECK_INT(mb_send(svc, "rm2", msg_int(3), NULL, NULL), MB_ENODEST);
  CHECK_INT(dl.calls, 0);

  /* serial: the queue is drained in order */
  CHECK_INT(declare(rt, "rm3", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  tlog log = {""};
  lis t;
  CHECK_INT(lis_listen(&t, svc, "rm3", 0, L_TIMER, "T"), MB_OK);
  t.rt = rt;
  t.log = &log;
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "rm3", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "rm3"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "T1< T1> T2< T2> T3< T3> ");
  CHECK_INT(mb_dest_exists(rt, "rm3"), 0);
  CHECK_INT(dl.calls, 0);

  /* a name freed by removal can be declared again */
  CHECK_INT(declare(rt, "rm", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(stats_of(rt, "rm").sent, 0);
  lis_release(&dl);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Removal closes the listeners still registered, telling each once through
 * its closed callback; the others are not told. */
static void test_listener_closed_by_removal(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "lc", 0);
  CHECK_INT(mb_dest_declare(rt, "lc", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "lc/other", NULL), MB_OK);
  lis a, b, c, o;
  CHECK_INT(lis_listen(&a, svc, "lc", 0, L_OK, "A"), MB_OK);
  CHECK_INT(lis_listen(&b, svc, "lc", 7, L_OK, "B"), MB_OK);
  CHECK_INT(lis_listen(&c, svc, "lc", 0, L_OK, "C"), MB_OK);
  CHECK_INT(lis_listen(&o, svc, "lc/other", 0, L_OK, "O"), MB_OK);
  mb_listener_close(c.l); /* closed by its owner: not told */
  CHECK_INT(mb_send(svc, "lc", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "lc"), MB_OK);
  CHECK_INT(a.closed_calls + b.closed_calls, 0); /* pending first */
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 1);
  CHECK_INT(b.calls, 1);
  CHECK_INT(mb_dest_exists(rt, "lc"), 0);
  CHECK_INT(a.closed_calls, 1);
  CHECK_INT(b.closed_calls, 1);
  CHECK_INT(c.closed_calls, 0);
  CHECK_INT(o.closed_calls, 0);
  mb_counts cn;
  mb_runtime_counts(rt, &cn);
  CHECK_INT(cn.listeners, 1); /* o */
  CHECK_INT(stats_of(rt, "lc/other").listeners, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
  CHECK_INT(o.closed_calls, 0); /* freeing the runtime is not the bus closing it */
}

/* share = 1 (issue 17): the core copies as always, and marks what it sends
 * there for the binding (mb_msg_shared); mb_msg_sole tells the binding when
 * the core is done with a message it holds. */
static void test_share(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "sh", 0);
  CHECK_INT(mb_runtime_shares(rt), 0);
  mb_dest_opts o = {.type = MB_PARALLEL, .share = 1};
  CHECK_INT(mb_dest_declare(rt, "plain", NULL), MB_OK);
  CHECK_INT(mb_runtime_shares(rt), 0);
  CHECK_INT(mb_dest_declare(rt, "shared", &o), MB_OK);
  CHECK_INT(mb_runtime_shares(rt), 1);
  CHECK_INT(mb_dest_declare(rt, "shared", &o), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "shared", NULL), MB_EEXISTS);
  CHECK_INT(mb_dest_declare(rt, "plain", &o), MB_EEXISTS);
  lis a, b;
  CHECK_INT(lis_listen(&a, svc, "shared", 0, L_HOLD, "A"), MB_OK);
  CHECK_INT(lis_listen(&b, svc, "plain", 0, L_OK, "B"), MB_OK);
  mb_msg *m = msg_int(7), *p = msg_int(8);
  CHECK_INT(mb_msg_shared(m), 0);
  mb_msg_ref(m);
  mb_msg_ref(p);
  CHECK_INT(mb_msg_sole(m), 0);
  CHECK_INT(mb_send(svc, "shared", m, NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "plain", p, NULL, NULL), MB_OK);
  CHECK_INT(mb_msg_shared(m), 1);
  CHECK_INT(mb_msg_shared(p), 0);
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 1);
  CHECK_INT(a.seen[0], 7); /* its own copy of the bytes, as ever */
  CHECK_INT(mb_msg_sole(m), 0); /* a delivery holds it */
  CHECK_INT(mb_msg_sole(p), 1);
  CHECK_INT(lis_finish(&a, MB_OK, NULL), 1);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_msg_sole(m), 1);
  mb_msg_unref(m);
  mb_msg_unref(p);
  /* a request is marked too; the statistics are those of any destination */
  mb_msg *r = msg_int(9);
  mb_msg_ref(r);
  reqres rr = {0};
  mb_request *req;
  CHECK_INT(mb_request_start(svc, "shared", r, 5, 0, req_cb, &rr, &req), MB_PENDING);
  CHECK_INT(mb_msg_shared(r), 1);
  CHECK_INT(run(rt), 0);
  CHECK_INT(lis_finish(&a, MB_OK, NULL), 1);
  CHECK_INT(run(rt), 0);
  mb_msg_unref(r);
  mb_stats st = stats_of(rt, "shared");
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.delivered, 2);
  check_invariant(rt, "shared");
  mb_listener_close(a.l);
  mb_listener_close(b.l);
  check_quiet(rt);
  mb_runtime_free(rt);
}

void dest_tests(void) {
  RUN(test_dest_declare);
  RUN(test_share);
  RUN(test_dest_each_sorted);
  RUN(test_dest_many);
  RUN(test_send_errors);
  RUN(test_block);
  RUN(test_remove_drains);
  RUN(test_listener_closed_by_removal);
}
