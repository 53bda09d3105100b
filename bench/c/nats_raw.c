/*
 * nats_raw.c — the plain-libnats baselines for mb's cluster benchmarks
 * (issue 14): what nats.c alone does over the same nats-server, so that mb's
 * figures can be put beside them.
 *
 *   build/nats_raw [--url URL] --mode pubsub|rtt|inflight [-n N] [-k K]
 *                  [--size BYTES] [--design ev|ev-hop|threads|threads-asap]
 *                  [--adapter inline|mb] [--flush prepare|io] [--asap yes|no]
 *                  [--side both|client|server]
 *
 *   pubsub    N messages of BYTES (64) from a publisher connection to a
 *             subscriber connection, the publisher at most 100,000 ahead;
 *             msgs/s from the first publish to the last receipt
 *   rtt       request/reply, 1 in flight: mean, p50, p99 round trip
 *   inflight  request/reply with K (64) in flight: requests/s
 *
 * Each side has its own connection and thread: the client (publisher,
 * requester) on the main thread, the server side (subscriber, responder) on
 * a second one. Designs:
 *   ev            (the recommended one) each side a libev loop; nats.c on
 *                 it with SendAsap; the loop writes what a turn published
 *                 once, from an ev_prepare; sync subscriptions drained on the
 *                 loop thread after each read: no thread hop at all
 *   ev-hop        the same loops, but async subscriptions: each message
 *                 comes on nats.c's delivery thread and is handed to the
 *                 loop (mutex queue + ev_async), as a loop-bound service
 *                 would need
 *   threads       nats.c's own threads (read loop, 1 ms flusher), async
 *                 subscriptions; rtt uses natsConnection_Request
 *   threads-asap  the same with SendAsap (a send() per publish)
 * With ev/ev-hop, --adapter inline (default) is a minimal single-thread
 * integration written here (the floor: no lock, no ev_async), --adapter mb
 * is runtime/cluster/mb_nats_ev.c; --flush io makes the inline one wait for
 * EV_WRITE before writing (what nats.c's libevent/libuv adapters do);
 * --asap no (with --adapter mb) turns SendAsap off: nats.c's 1 ms flusher
 * thread then asks for write interest.
 * --side (rtt and inflight, ev designs) splits the two sides into two
 * processes, as mb's two nodes are: `--side server` answers N requests and
 * exits (it prints "ready" once its subscription is in place), `--side
 * client` is the requester alone; both need --url. The default `both` runs
 * them on two threads of one process (the benchmarks' baseline).
 * Without --url it starts a private nats-server (spec/c/nats_server.h).
 * Output: one JSON line on stdout (cpu_us_per_msg: this process's CPU, both
 * sides and nats.c's threads, per message or round trip; steadier than the
 * rates on a busy machine).
 */
#define _GNU_SOURCE
#include <ev.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../../spec/c/nats_server.h"
#include "cluster/mb_nats_ev.h"

enum { D_EV, D_EV_HOP, D_THREADS, D_THREADS_ASAP };
enum { M_PUBSUB, M_RTT, M_INFLIGHT };
enum { S_BOTH, S_CLIENT, S_SERVER };

static struct {
  const char *url;
  int mode, design, mb_adapter, flush_io, no_asap, side;
  long n;
  int k, size;
} cfg = {NULL, M_PUBSUB, D_EV, 0, 0, 0, S_BOTH, 1000000, 64, 64};
static double pub_secs; /* time spent inside natsConnection_Publish calls (pubsub) */

/* CPU seconds (user + system) of this process, every thread */
static double cpu_secs(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static nats_srv own; /* the private server, when no --url */

static void die(const char *what, natsStatus s) {
  fprintf(stderr, "nats_raw: %s: %s\n", what, natsStatus_GetText(s));
  if (own.pid) nats_srv_cleanup(&own);
  exit(1);
}

/* ---- the inline adapter: one thread, no lock --------------------------------- */

typedef struct inl {
  struct ev_loop *loop;
  natsConnection *nc;
  ev_io io;
  ev_prepare prepare;
  int fd, want_read, want_write, blocked, io_events;
  atomic_int foreign; /* callbacks from another thread: this adapter cannot serve them */
  pthread_t thread;
  void (*hook)(void *);
  void *ud;
} inl;

static void inl_apply(inl *a, int new_fd) {
  int ev = a->fd < 0 ? 0 : (a->want_read ? EV_READ : 0) | (a->want_write && (a->blocked || cfg.flush_io) ? EV_WRITE : 0);
  if (!new_fd && ev == a->io_events) return; /* touching it would re-register the fd */
  if (ev_is_active(&a->io)) ev_io_stop(a->loop, &a->io);
  if (ev) {
    ev_io_set(&a->io, a->fd, ev);
    ev_io_start(a->loop, &a->io);
  }
  a->io_events = ev;
}

static void inl_check(inl *a) {
  if (!pthread_equal(pthread_self(), a->thread)) atomic_fetch_add(&a->foreign, 1);
}

static natsStatus inl_attach(void **ud, void *loop, natsConnection *nc, natsSock fd) {
  inl *a = loop;
  inl_check(a);
  a->nc = nc;
  a->fd = (int)fd;
  a->want_read = 1;
  a->want_write = a->blocked = 0;
  *ud = a;
  inl_apply(a, 1);
  return NATS_OK;
}

static natsStatus inl_read(void *ud, bool add) {
  inl *a = ud;
  inl_check(a);
  a->want_read = add;
  inl_apply(a, 0);
  return NATS_OK;
}

static natsStatus inl_write(void *ud, bool add) {
  inl *a = ud;
  inl_check(a);
  a->want_write = add;
  if (!add) a->blocked = 0;
  if (!add || cfg.flush_io) inl_apply(a, 0);
  return NATS_OK;
}

static natsStatus inl_detach(void *ud) {
  inl *a = ud;
  inl_check(a);
  a->want_read = a->want_write = 0;
  a->fd = -1;
  inl_apply(a, 0);
  return NATS_OK;
}

static void inl_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  inl *a = w->data;
  if (revents & EV_READ) natsConnection_ProcessReadEvent(a->nc);
  if ((revents & EV_WRITE) && a->fd >= 0) natsConnection_ProcessWriteEvent(a->nc);
  if ((revents & EV_READ) && a->hook) a->hook(a->ud);
}

static void inl_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  inl *a = w->data;
  if (cfg.flush_io || !a->want_write || a->blocked || a->fd < 0) return;
  natsConnection_ProcessWriteEvent(a->nc);
  if (a->want_write) {
    a->blocked = 1;
    inl_apply(a, 0);
  }
}

/* ---- one side: a connection, on a loop or on nats.c's threads ----------------- */

typedef struct hopq { /* ev-hop: messages handed from delivery threads to the loop */
  pthread_mutex_t mu;
  natsMsg **items;
  size_t n, cap;
  ev_async async;
} hopq;

typedef struct side {
  struct ev_loop *loop;
  inl inl;
  mb_nats_ev *ev;
  natsConnection *nc;
  natsSubscription *sub;
  hopq q;
  void (*on_msg)(struct side *, natsMsg *); /* on the loop (ev designs) or a delivery thread */
  /* client side state */
  atomic_long received;
  long sent;
  double *t_sent;  /* rtt: per request */
  double *rtts;
  _Atomic double t_first, t_last; /* t_last may be set on another thread */
  char payload[65536];
  char inbox[64];
} side;

static void drain_sync(void *ud) {
  side *s = ud;
  int pending = 0, bytes = 0;
  if (natsSubscription_GetPending(s->sub, &pending, &bytes) != NATS_OK) return;
  while (pending-- > 0) {
    natsMsg *m = NULL;
    if (natsSubscription_NextMsg(&m, s->sub, 0) != NATS_OK) break;
    s->on_msg(s, m);
  }
}

static void hop_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
  side *s = ud;
  pthread_mutex_lock(&s->q.mu);
  if (s->q.n == s->q.cap) {
    s->q.cap = s->q.cap ? s->q.cap * 2 : 1024;
    s->q.items = realloc(s->q.items, s->q.cap * sizeof *s->q.items);
  }
  s->q.items[s->q.n++] = m;
  pthread_mutex_unlock(&s->q.mu);
  ev_async_send(s->loop, &s->q.async);
}

static void hop_drain(struct ev_loop *loop, ev_async *w, int revents) {
  side *s = w->data;
  static __thread natsMsg **mine;
  static __thread size_t mine_cap;
  pthread_mutex_lock(&s->q.mu);
  size_t n = s->q.n;
  if (n > mine_cap) {
    mine_cap = s->q.cap;
    mine = realloc(mine, mine_cap * sizeof *mine);
  }
  memcpy(mine, s->q.items, n * sizeof *mine);
  s->q.n = 0;
  pthread_mutex_unlock(&s->q.mu);
  for (size_t i = 0; i < n; i++) s->on_msg(s, mine[i]);
}

static void direct_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
  side *s = ud;
  s->on_msg(s, m);
}

static void side_connect(side *s) {
  natsOptions *o = NULL;
  natsStatus st = natsOptions_Create(&o);
  if (st == NATS_OK) st = natsOptions_SetURL(o, cfg.url);
  if (st == NATS_OK) st = natsOptions_SetPingInterval(o, 0); /* no timer thread writing */
  if (st == NATS_OK && cfg.design == D_THREADS_ASAP) st = natsOptions_SetSendAsap(o, true);
  if (st == NATS_OK && (cfg.design == D_EV || cfg.design == D_EV_HOP)) {
    s->loop = ev_loop_new(0);
    if (cfg.mb_adapter) {
      s->ev = mb_nats_ev_new(s->loop);
      st = mb_nats_ev_setup(s->ev, o);
    } else {
      s->inl.loop = s->loop;
      s->inl.thread = pthread_self();
      s->inl.fd = -1;
      ev_io_init(&s->inl.io, inl_io_cb, -1, 0);
      s->inl.io.data = &s->inl;
      ev_prepare_init(&s->inl.prepare, inl_prepare_cb);
      s->inl.prepare.data = &s->inl;
      ev_prepare_start(s->loop, &s->inl.prepare);
      st = natsOptions_SetEventLoop(o, &s->inl, inl_attach, inl_read, inl_write, inl_detach);
      if (st == NATS_OK) st = natsOptions_SetSendAsap(o, true);
    }
    /* nats.c's 1 ms flusher thread instead: it asks for write interest
     * from its own thread (needs --adapter mb) */
    if (st == NATS_OK && cfg.no_asap) st = natsOptions_SetSendAsap(o, false);
    if (cfg.design == D_EV_HOP) {
      pthread_mutex_init(&s->q.mu, NULL);
      ev_async_init(&s->q.async, hop_drain);
      s->q.async.data = s;
      ev_async_start(s->loop, &s->q.async);
    }
  }
  if (st == NATS_OK) st = natsConnection_Connect(&s->nc, o);
  natsOptions_Destroy(o);
  if (st != NATS_OK) die("connect", st);
}

/* Subscribes in the way of the design: sync and drained on the loop (ev),
 * async and handed to the loop (ev-hop), async (threads). */
static void side_subscribe(side *s, const char *subject) {
  natsStatus st;
  if (cfg.design == D_EV) {
    st = natsConnection_SubscribeSync(&s->sub, s->nc, subject);
    if (cfg.mb_adapter)
      mb_nats_ev_set_read_hook(s->ev, drain_sync, s);
    else {
      s->inl.hook = drain_sync;
      s->inl.ud = s;
    }
  } else if (cfg.design == D_EV_HOP) {
    st = natsConnection_Subscribe(&s->sub, s->nc, subject, hop_cb, s);
  } else {
    st = natsConnection_Subscribe(&s->sub, s->nc, subject, direct_cb, s);
  }
  if (st == NATS_OK) st = natsSubscription_SetPendingLimits(s->sub, 1 << 22, 1 << 30);
  if (st != NATS_OK) {
    nats_PrintLastErrorStack(stderr);
    die("subscribe", st);
  }
}

/* Runs the side's loop until the server has processed everything this
 * connection sent so far (e.g. that its SUB is in place before traffic):
 * a message to a private subject of its own, sent and received on the loop
 * thread (a blocking Flush must not run there, and the inline adapter takes
 * calls from its loop thread only). Bounded: 5 s. */
typedef struct sync_job {
  natsSubscription *sub;
  int got;
} sync_job;

static void sync_poll_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  sync_job *j = w->data;
  int msgs = 0, bytes = 0;
  if (natsSubscription_GetPending(j->sub, &msgs, &bytes) == NATS_OK && msgs > 0) {
    j->got = 1;
    ev_break(loop, EVBREAK_ONE);
  }
}

static void sync_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents) { ev_break(loop, EVBREAK_ONE); }

static void side_sync(side *s) {
  if (!s->loop) {
    natsStatus st = natsConnection_FlushTimeout(s->nc, 5000);
    if (st != NATS_OK) die("flush", st);
    return;
  }
  char subj[64];
  natsInbox *inbox = NULL;
  natsInbox_Create(&inbox);
  snprintf(subj, sizeof subj, "%s", (const char *)inbox);
  natsInbox_Destroy(inbox);
  sync_job j = {NULL, 0};
  natsStatus st = natsConnection_SubscribeSync(&j.sub, s->nc, subj);
  if (st == NATS_OK) st = natsConnection_PublishString(s->nc, subj, "sync");
  if (st != NATS_OK) die("sync", st);
  ev_timer poll, deadline;
  ev_timer_init(&poll, sync_poll_cb, 0.0005, 0.0005);
  poll.data = &j;
  ev_timer_init(&deadline, sync_deadline_cb, 5.0, 0);
  ev_timer_start(s->loop, &poll);
  ev_timer_start(s->loop, &deadline);
  ev_run(s->loop, 0);
  ev_timer_stop(s->loop, &poll);
  ev_timer_stop(s->loop, &deadline);
  natsSubscription_Destroy(j.sub);
  if (!j.got) die("sync", NATS_TIMEOUT);
}

static void side_close(side *s) {
  natsSubscription_Destroy(s->sub);
  natsConnection_Close(s->nc);
  natsConnection_Destroy(s->nc);
  if (s->loop) {
    if (s->ev) mb_nats_ev_free(s->ev);
    if (!cfg.mb_adapter && atomic_load(&s->inl.foreign))
      fprintf(stderr, "nats_raw: the inline adapter got %d callbacks from other threads\n",
              atomic_load(&s->inl.foreign));
    ev_loop_destroy(s->loop);
  }
}

/* ---- the server side (second thread) -------------------------------------------- */

static side srv_side, cli_side;
static atomic_int srv_ready, stop_srv;
static ev_async srv_stop_async, cli_done_async;

static void on_sub_msg(side *s, natsMsg *m) { /* pubsub: count */
  long got = atomic_fetch_add(&s->received, 1) + 1;
  natsMsg_Destroy(m);
  if (got == cfg.n) {
    cli_side.t_last = now();
    if (cli_side.loop) ev_async_send(cli_side.loop, &cli_done_async);
  }
}

static void on_request(side *s, natsMsg *m) { /* responder: echo */
  natsConnection_Publish(s->nc, natsMsg_GetReply(m), natsMsg_GetData(m), natsMsg_GetDataLength(m));
  natsMsg_Destroy(m);
  /* --side server: done after N (the loop writes the last reply as it ends) */
  if (atomic_fetch_add(&s->received, 1) + 1 == cfg.n && cfg.side == S_SERVER) ev_break(s->loop, EVBREAK_ALL);
}

static void srv_stop_cb(struct ev_loop *loop, ev_async *w, int revents) { ev_break(loop, EVBREAK_ALL); }

static void *server_thread(void *ud) {
  side *s = &srv_side;
  side_connect(s);
  s->on_msg = cfg.mode == M_PUBSUB ? on_sub_msg : on_request;
  side_subscribe(s, cfg.mode == M_PUBSUB ? "bench.data" : "bench.svc");
  if (s->loop) {
    ev_async_init(&srv_stop_async, srv_stop_cb);
    ev_async_start(s->loop, &srv_stop_async);
    side_sync(s); /* the SUB is in place */
    atomic_store(&srv_ready, 1);
    if (cfg.side == S_SERVER) {
      printf("ready\n");
      fflush(stdout);
    }
    ev_run(s->loop, 0);
    if (cfg.side == S_SERVER) mb_nats_ev_flush(s->ev, 1.0); /* the last reply */
    ev_async_stop(s->loop, &srv_stop_async);
  } else {
    side_sync(s);
    atomic_store(&srv_ready, 1);
    while (!atomic_load(&stop_srv)) nats_srv_sleep_ms(5);
  }
  if (s->q.async.data) ev_async_stop(s->loop, &s->q.async);
  side_close(s);
  return NULL;
}

/* ---- the client side (main thread) ------------------------------------------------- */

static void client_done(side *c) {
  if (c->loop) ev_break(c->loop, EVBREAK_ALL);
}

/* pubsub: publish in chunks of 1000, one per loop turn, at most 100,000
 * ahead of the subscriber (else a 0.2 ms pause); the subscriber's last
 * receipt ends the loop (cli_done_async) */
static ev_idle pub_idle;
static ev_timer pub_pause;

static void pub_resume_cb(struct ev_loop *loop, ev_timer *w, int revents) { ev_idle_start(loop, &pub_idle); }

static void done_cb(struct ev_loop *loop, ev_async *w, int revents) { ev_break(loop, EVBREAK_ALL); }

static void pub_idle_cb(struct ev_loop *loop, ev_idle *w, int revents) {
  side *c = w->data;
  long window = 100000, ahead = c->sent - atomic_load(&srv_side.received);
  if (c->sent >= cfg.n) {
    ev_idle_stop(loop, w);
    return;
  }
  if (ahead >= window) {
    ev_idle_stop(loop, w);
    ev_timer_set(&pub_pause, 0.0002, 0);
    ev_timer_start(loop, &pub_pause);
    return;
  }
  if (c->sent == 0) c->t_first = now();
  double t0 = now();
  for (int i = 0; i < 1000 && c->sent < cfg.n; i++, c->sent++)
    natsConnection_Publish(c->nc, "bench.data", c->payload, cfg.size);
  pub_secs += now() - t0;
}

static void send_request(side *c) {
  char reply[96];
  snprintf(reply, sizeof reply, "%s.%ld", c->inbox, c->sent);
  if (c->t_sent) c->t_sent[c->sent] = now();
  natsConnection_PublishRequest(c->nc, "bench.svc", reply, c->payload, cfg.size);
  c->sent++;
}

static void on_reply(side *c, natsMsg *m) {
  const char *subj = natsMsg_GetSubject(m);
  long id = atol(strrchr(subj, '.') + 1);
  natsMsg_Destroy(m);
  if (c->rtts) c->rtts[id] = now() - c->t_sent[id];
  long got = atomic_fetch_add(&c->received, 1) + 1;
  if (c->sent < cfg.n) send_request(c);
  if (got == cfg.n) {
    c->t_last = now();
    client_done(c);
  }
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static const char *design_name(void) {
  static const char *names[] = {"ev", "ev-hop", "threads", "threads-asap"};
  return names[cfg.design];
}

/* A run that has not ended after 60 s says where it stands and fails. */
static void *watchdog(void *ud) {
  for (int i = 0; i < 600; i++) {
    nats_srv_sleep_ms(100);
    if (atomic_load(&stop_srv)) return NULL;
  }
  fprintf(stderr, "nats_raw: no end after 60 s: sent %ld, subscriber got %ld, client got %ld\n",
          cli_side.sent, atomic_load(&srv_side.received), atomic_load(&cli_side.received));
  side *sides[2] = {&cli_side, &srv_side};
  for (int i = 0; i < 2; i++) {
    natsStatistics *ns = NULL;
    uint64_t im = 0, ib = 0, om = 0, ob = 0, rc = 0;
    if (natsStatistics_Create(&ns) == NATS_OK && natsConnection_GetStats(sides[i]->nc, ns) == NATS_OK)
      natsStatistics_GetCounts(ns, &im, &ib, &om, &ob, &rc);
    natsStatistics_Destroy(ns);
    int64_t dropped = 0;
    int pending = 0, pbytes = 0;
    if (sides[i]->sub) {
      natsSubscription_GetDropped(sides[i]->sub, &dropped);
      natsSubscription_GetPending(sides[i]->sub, &pending, &pbytes);
    }
    fprintf(stderr, "  %s: status %d, in %llu msgs, out %llu msgs, reconnects %llu, dropped %lld,"
            " pending in the subscription %d, buffered to send %d bytes\n",
            i ? "server side" : "client side", (int)natsConnection_Status(sides[i]->nc),
            (unsigned long long)im, (unsigned long long)om, (unsigned long long)rc, (long long)dropped,
            pending, natsConnection_Buffered(sides[i]->nc));
    if (sides[i]->ev) {
      mb_nats_ev_stats st;
      mb_nats_ev_get_stats(sides[i]->ev, &st);
      fprintf(stderr, "    adapter: attaches %llu wakeups %llu remote %llu flushes %llu blocked %llu reads %llu;"
              " want read %d write %d, write blocked %d, io events %d\n",
              (unsigned long long)st.attaches, (unsigned long long)st.wakeups, (unsigned long long)st.remote,
              (unsigned long long)st.flushes, (unsigned long long)st.blocked, (unsigned long long)st.reads,
              st.want_read, st.want_write, st.write_blocked, st.io_events);
    }
  }
  if (own.pid) nats_srv_cleanup(&own);
  _exit(1);
}

static void usage(void) {
  fprintf(stderr, "usage: nats_raw [--url URL] --mode pubsub|rtt|inflight [-n N] [-k K] [--size B]\n"
                  "                [--design ev|ev-hop|threads|threads-asap] [--adapter inline|mb]\n"
                  "                [--flush prepare|io] [--asap yes|no] [--side both|client|server]\n");
  exit(2);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage();
    if (!v) usage();
    i++;
    if (!strcmp(a, "--url")) cfg.url = v;
    else if (!strcmp(a, "--mode"))
      cfg.mode = !strcmp(v, "pubsub") ? M_PUBSUB : !strcmp(v, "rtt") ? M_RTT : !strcmp(v, "inflight") ? M_INFLIGHT : (usage(), 0);
    else if (!strcmp(a, "-n")) cfg.n = atol(v);
    else if (!strcmp(a, "-k")) cfg.k = atoi(v);
    else if (!strcmp(a, "--size")) cfg.size = atoi(v);
    else if (!strcmp(a, "--design"))
      cfg.design = !strcmp(v, "ev") ? D_EV : !strcmp(v, "ev-hop") ? D_EV_HOP : !strcmp(v, "threads") ? D_THREADS
                 : !strcmp(v, "threads-asap") ? D_THREADS_ASAP : (usage(), 0);
    else if (!strcmp(a, "--adapter")) cfg.mb_adapter = !strcmp(v, "mb");
    else if (!strcmp(a, "--flush")) cfg.flush_io = !strcmp(v, "io");
    else if (!strcmp(a, "--asap")) cfg.no_asap = !strcmp(v, "no");
    else if (!strcmp(a, "--side"))
      cfg.side = !strcmp(v, "both") ? S_BOTH : !strcmp(v, "client") ? S_CLIENT : !strcmp(v, "server") ? S_SERVER : (usage(), 0);
    else usage();
  }
  if (cfg.n <= 0 || cfg.k <= 0 || cfg.size < 0 || cfg.size > 65536) usage();
  if (cfg.no_asap && (cfg.design == D_THREADS || cfg.design == D_THREADS_ASAP || !cfg.mb_adapter)) {
    fprintf(stderr, "nats_raw: --asap no is for --design ev/ev-hop with --adapter mb\n");
    return 2;
  }
  if (cfg.side != S_BOTH && (cfg.mode == M_PUBSUB || !cfg.url || !cfg.mb_adapter
                             || (cfg.design != D_EV && cfg.design != D_EV_HOP))) {
    fprintf(stderr, "nats_raw: --side client|server is for --mode rtt|inflight, --design ev|ev-hop,"
                    " --adapter mb and needs --url\n");
    return 2;
  }
  if (cfg.mode == M_RTT) cfg.k = 1;
  if (cfg.mode != M_PUBSUB && cfg.k > cfg.n) cfg.k = (int)cfg.n;
  if (!cfg.url) {
    if (nats_srv_find(&own) != 0 || nats_srv_start(&own, -1) != 0) {
      fprintf(stderr, "nats_raw: no nats-server to start (give --url)\n");
      return 1;
    }
    cfg.url = own.url;
  }

  pthread_t st, wd;
  pthread_create(&wd, NULL, watchdog, NULL);
  pthread_detach(wd);
  if (cfg.side == S_SERVER) { /* the responder alone, on this thread */
    double cpu_s = cpu_secs();
    server_thread(NULL);
    atomic_store(&stop_srv, 1);
    long got = atomic_load(&srv_side.received);
    printf("{\"side\":\"server\",\"n\":%ld,\"done\":%ld,\"cpu_us_per_msg\":%.3f}\n", cfg.n, got,
           (cpu_secs() - cpu_s) / (got ? got : 1) * 1e6);
    nats_CloseAndWait(2000);
    return got == cfg.n ? 0 : 1;
  }
  if (cfg.side == S_BOTH) {
    pthread_create(&st, NULL, server_thread, NULL);
    while (!atomic_load(&srv_ready)) nats_srv_sleep_ms(1);
  }

  side *c = &cli_side;
  memset(c->payload, 'x', sizeof c->payload);
  side_connect(c);
  double cpu0 = cpu_secs();
  if (cfg.mode == M_PUBSUB) {
    if (c->loop) {
      ev_async_init(&cli_done_async, done_cb);
      ev_async_start(c->loop, &cli_done_async);
      ev_idle_init(&pub_idle, pub_idle_cb);
      pub_idle.data = c;
      ev_timer_init(&pub_pause, pub_resume_cb, 0.0002, 0);
      ev_idle_start(c->loop, &pub_idle);
      ev_run(c->loop, 0);
      ev_idle_stop(c->loop, &pub_idle);
      ev_timer_stop(c->loop, &pub_pause);
      ev_async_stop(c->loop, &cli_done_async);
    } else {
      c->t_first = now();
      for (c->sent = 0; c->sent < cfg.n;) {
        while (c->sent - atomic_load(&srv_side.received) >= 100000) nats_srv_sleep_ms(0);
        double t0 = now();
        for (int i = 0; i < 1000 && c->sent < cfg.n; i++, c->sent++)
          natsConnection_Publish(c->nc, "bench.data", c->payload, cfg.size);
        pub_secs += now() - t0;
      }
      natsConnection_FlushTimeout(c->nc, 10000);
      while (atomic_load(&srv_side.received) < cfg.n) nats_srv_sleep_ms(1);
    }
  } else {
    natsInbox *inbox = NULL;
    natsInbox_Create(&inbox);
    snprintf(c->inbox, sizeof c->inbox, "%s", (const char *)inbox);
    natsInbox_Destroy(inbox);
    if (cfg.mode == M_RTT) {
      c->t_sent = calloc(cfg.n, sizeof(double));
      c->rtts = calloc(cfg.n, sizeof(double));
    }
    c->on_msg = on_reply;
    if (cfg.design == D_THREADS || cfg.design == D_THREADS_ASAP) {
      if (cfg.mode == M_RTT) { /* nats.c's own request: a mux inbox, a blocking wait */
        c->t_first = now();
        for (long i = 0; i < cfg.n; i++) {
          natsMsg *m = NULL;
          double t0 = now();
          natsStatus s = natsConnection_Request(&m, c->nc, "bench.svc", c->payload, cfg.size, 5000);
          if (s != NATS_OK) die("request", s);
          c->rtts[i] = now() - t0;
          natsMsg_Destroy(m);
          atomic_fetch_add(&c->received, 1);
        }
        c->t_last = now();
      } else {
        char wild[80];
        snprintf(wild, sizeof wild, "%s.*", c->inbox);
        side_subscribe(c, wild);
        side_sync(c);
        c->t_first = now();
        for (int i = 0; i < cfg.k; i++) send_request(c); /* the callbacks send the rest */
        while (atomic_load(&c->received) < cfg.n) nats_srv_sleep_ms(1);
      }
    } else {
      char wild[80];
      snprintf(wild, sizeof wild, "%s.*", c->inbox);
      side_subscribe(c, wild);
      side_sync(c);
      c->t_first = now();
      for (int i = 0; i < cfg.k; i++) send_request(c);
      ev_run(c->loop, 0);
    }
  }
  if (srv_side.loop) ev_async_send(srv_side.loop, &srv_stop_async);
  atomic_store(&stop_srv, 1);
  if (cfg.side == S_BOTH) pthread_join(st, NULL);
  double cpu = cpu_secs() - cpu0;
  double secs = c->t_last - c->t_first;
  long done = cfg.mode == M_PUBSUB ? atomic_load(&srv_side.received) : atomic_load(&c->received);
  if (c->q.async.data) ev_async_stop(c->loop, &c->q.async);
  side_close(c);

  printf("{\"mode\":\"%s\",\"design\":\"%s\",\"adapter\":\"%s\",\"flush\":\"%s\",\"n\":%ld,\"k\":%d,"
         "\"size\":%d,\"asap\":%s,\"done\":%ld,\"secs\":%.4f,\"rate\":%.0f",
         cfg.mode == M_PUBSUB ? "pubsub" : cfg.mode == M_RTT ? "rtt" : "inflight", design_name(),
         c->loop ? (cfg.mb_adapter ? "mb" : "inline") : "none", cfg.flush_io ? "io" : "prepare",
         cfg.n, cfg.k, cfg.size,
         cfg.design == D_THREADS ? "false" : cfg.no_asap ? "false" : "true", done, secs, done / secs);
  printf(",\"cpu_us_per_msg\":%.3f", cpu / (done ? done : 1) * 1e6);
  if (cfg.mode == M_PUBSUB) printf(",\"publish_ns\":%.1f", pub_secs / cfg.n * 1e9);
  if (c->rtts) {
    qsort(c->rtts, cfg.n, sizeof(double), cmp_d);
    printf(",\"rtt_ms_mean\":%.4f,\"rtt_ms_p50\":%.4f,\"rtt_ms_p99\":%.4f", secs / cfg.n * 1e3,
           c->rtts[cfg.n / 2] * 1e3, c->rtts[(long)(cfg.n * 0.99)] * 1e3);
  }
  printf("}\n");
  free(c->t_sent);
  free(c->rtts);
  if (own.pid) nats_srv_cleanup(&own);
  nats_CloseAndWait(2000);
  return done == cfg.n ? 0 : 1;
}
