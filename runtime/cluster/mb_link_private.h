/*
 * mb_link_private.h — what the files of the cluster link share, and only
 * they (mb_cluster.h is the link's face):
 *   mb_cluster.c     the connection, its outage events, subscribing, the
 *                    link's calls from the core (mb_link in mb.h)
 *   mb_link_recv.c   receiving: the drain of the subscriptions, decoding,
 *                    messages from nodes and from plain NATS clients
 *   mb_link_stats.c  the statistics probes (mb.NS.stats)
 *   mb_link_acks.c   the bookkeeping of acknowledgements and answers:
 *                    windows of request_all and synchronous sends, the
 *                    proxies of other nodes' requests, the sends waiting
 *                    for their "no responders" markers
 *   mb_link_pub.c    publishing with mb's headers
 * Each calls only those below it in this list; what a lower one must reach
 * above goes through a callback (a subscription's handler).
 *
 * `mu` guards the list of subscriptions, the statistics, the windows, the
 * ring of kept sends and the published messages not yet freed; the link's
 * interest calls come under the runtime's lock from any thread and take
 * `mu` after it, and nothing here takes the runtime's lock while holding
 * `mu`. Fields marked "worker 0" are touched on worker 0's thread only.
 */
#ifndef MB_LINK_PRIVATE_H
#define MB_LINK_PRIVATE_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include <ev.h>
#include "mb_nats_lib.h"

#include "mb.h"
#include "cluster/mb_durable.h"
#include "cluster/mb_nats_ev.h"

#define BATCH 256 /* messages handed to the core per drain */
#define SPENT 64 /* published messages handed to nats.c's collector together */
#define SPENT_SMALL 4096 /* ... when their body is at most this many bytes */
#define ACK_WAIT 0.25 /* seconds nodes have to acknowledge (doc/cluster.md) */
#define STATS_KEY "\1stats" /* the nodes known to answer statistics: all of them */

/* (mb_cluster.h, the face, declares it too; not included here, so that
 * the files below mb_cluster.c do not depend on it) */
typedef struct mb_cluster mb_cluster;

/* The link's counts (mb_cluster_stats, field by field). */
typedef struct mbc_counts {
  uint64_t published, received, replies, bad, late, dropped, down, up;
} mbc_counts;

typedef struct sub sub;
/* What a subscription does with each message the drain takes from it. */
typedef void (*sub_fn)(mb_cluster *c, sub *e, natsMsg *nm);

struct sub {
  sub *next;
  natsSubscription *ns;
  sub_fn on;     /* its messages go here (worker 0) */
  char *dest;    /* NULL: one of the node's own subjects */
  char *group;   /* NULL: the groups without a name */
  uint64_t key;  /* the named group's key */
  int dead;      /* unsubscribed: freed by the next drain */
  natsMsg **left; /* what it held when it went (reported by that drain) */
  size_t nleft;
  int durable;   /* a durable destination's consumer (mb_durable_receive) */
  uint64_t lost; /* nats.c's dropped count seen so far (slow consumer) */
};

struct mb_cluster {
  mb_runtime *rt;
  mb_service *svc; /* on worker 0: the link's requests and tasks */
  struct ev_loop *loop;
  mb_nats_ev *ev;
  natsConnection *nc;
  pthread_mutex_t mu;
  sub *subs; /* under mu */
  natsSubscription *nr; /* the no-responders inbox (mbc_on_no_responders) */
  pthread_cond_t nr_cond; /* with mu: nr_done, its last callback has returned; */
  int nr_done;            /* closed, nats.c's closed callback (its last) ran */
  int closed;
  int probe; /* under mu, at start: 1 the node name is free, 2 it is taken */
  atomic_int closing; /* mb_cluster_stop has begun: callbacks do nothing */
  mbc_counts st; /* under mu */
  atomic_int up;
  int drain_posted; /* worker 0 only */
  natsMsg *spent[SPENT]; /* done with, to be destroyed (mbc_spent); under mu */
  size_t nspent;
  /* sends not yet known to have reached a listening node (the server says
   * "no responders" for one that did not): a ring of the messages, oldest
   * at sq_base, released by markers this node sends itself (see
   * mb_link_acks.c); under mu. While any wait, the bus is held busy. */
  mb_msg **sq;
  size_t sq_head, sq_len, sq_cap;
  uint64_t sq_base, marks_sent;
  uint64_t sq_hint; /* the ring index after the last send found "no responders" */
  struct mark *mk; /* the markers in flight, oldest first (a ring) */
  size_t mk_head, mk_len, mk_cap;
  int mark_posted, held;
  /* what the no-responders subscription heard (nats.c's thread), in order,
   * for worker 0's heard_task; under mu. Freed by mbc_heard_free. */
  struct heard *heard, **heard_tail;
  int heard_posted;
  int lib; /* counted in lib_users */
  /* request_all and synchronous sends waiting for nodes to acknowledge
   * (under mu; the timer is worker 0's) and, per destination, the nodes that
   * acknowledged lately: once all of those have, the wait is over early */
  struct win *wins;
  struct known *known;
  struct proxy *proxies; /* worker 0: requests of other nodes not answered yet */
  struct sync_ctx *syncs; /* worker 0: synchronous sends of other nodes still running */
  ev_timer win_timer;
  int arm_posted;
  double ack_wait;
  char *ns, *node, *url;
  char inbox[160]; /* "mb.NS.n.NODE." */
  mb_durable *durable; /* durable destinations (mb_durable.c) */
  struct { /* mb_cluster_config's callbacks */
    void (*report)(void *ud, const char *line);
    void (*state)(void *ud, int up);
    void *ud;
  } cfg;
};

/* What a request from another node needs for its answer (worker 0). */
typedef struct proxy {
  mb_cluster *c;
  struct proxy *prev, *next; /* in c->proxies until freed */
  size_t k; /* with all: the groups here that took it */
  int all;  /* a request_all or synchronous send: an answer per group */
  int json; /* from a plain NATS client: the answer is JSON text, no headers */
  char *home;     /* a send with reply_to: its destination on the sending node */
  char *response; /* ... and the message's id there; NULL for a request */
  char reply[];   /* where the answer goes (a NATS subject) */
} proxy;

/* A synchronous send from another node: its groups here have run it. */
typedef struct sync_ctx {
  mb_cluster *c;
  struct sync_ctx *prev, *next; /* in c->syncs while its groups run it */
  size_t k;
  char reply[];
} sync_ctx;

/* ---- small helpers, any thread ---------------------------------------------------- */

/* A line for people, through cfg.report. */
static inline void mbc_report(mb_cluster *c, const char *fmt, ...) {
  char line[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (c->cfg.report) c->cfg.report(c->cfg.ud, line);
}

/* Adds n to one of c->st's counts (under mu). */
static inline void mbc_count(mb_cluster *c, uint64_t *field, uint64_t n) {
  pthread_mutex_lock(&c->mu);
  *field += n;
  pthread_mutex_unlock(&c->mu);
}

/* The value of a header of m, or NULL. */
static inline const char *mbc_header(natsMsg *m, const char *key) {
  const char *v = NULL;
  return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

/* ---- mb_link_pub.c: publishing ------------------------------------------------------ */

/* a, b and c (c may be NULL) one after the other in buf, cut to fit. */
void mbc_join(char *buf, size_t cap, const char *a, const char *b, const char *c);

/* Publishes the payload and values of m as kind to subject (reply: the
 * NATS reply subject, or NULL); id is the Mb-Id; extra: more headers, name
 * and value pairs, NULL-terminated (or NULL; a NULL value leaves its
 * header out). Any thread. */
natsStatus mbc_publish(mb_cluster *c, const char *subject, const char *reply, const mb_msg *m,
                       const char *kind, const char *id, const char *const *extra);

/* nm (published, or received and handled) is done with: nats.c destroys a
 * message on its collector thread, woken for each one (a futex call and a
 * thread switch per message, both ways), so small ones are handed over
 * SPENT at a time instead (at most SPENT - 1 wait, freed at the latest by
 * mbc_pub_free); published: count one publish. Any thread. */
void mbc_spent(mb_cluster *c, natsMsg *nm, int published);
/* Destroys the messages not handed to nats.c yet (stopping). */
void mbc_pub_free(mb_cluster *c);

/* ---- mb_link_acks.c: acknowledgements and answers ----------------------------------- */

/* The window timer's set-up (start). */
void mbc_acks_init(mb_cluster *c);
/* Stopping (worker 0): the windows, known nodes and kept sends go. */
void mbc_acks_free(mb_cluster *c);
/* Stopped, nats.c's callbacks over: what they heard and worker 0 did not
 * see to goes. */
void mbc_heard_free(mb_cluster *c);

/* A request_all, synchronous send or statistics probe went out (any
 * worker): nodes have secs to acknowledge it. */
void mbc_win_open(mb_cluster *c, uint64_t id, const char *dest, double secs);
/* Worker 0: node acknowledged request id with k groups (for_kind: its kind). */
void mbc_on_ack(mb_cluster *c, uint64_t id, const char *node, const char *for_kind, size_t k);
/* The number a node's group i answers as: unique per node and group, never 0. */
uint64_t mbc_group_number(const char *node, unsigned i);

/* A send went out (any worker): kept until a marker shows that no "no
 * responders" came for it. */
void mbc_keep_sent(mb_cluster *c, mb_msg *m);
/* Worker 0, the connection went down: the kept sends are counted dropped
 * and reported (they may or may not have reached a listener). */
void mbc_sent_lost(mb_cluster *c);
/* nats.c's callbacks of the no-responders subscription (mb.NS.n.NODE.x.*). */
void mbc_on_no_responders(natsConnection *nc, natsSubscription *s, natsMsg *nm, void *ud);
void mbc_nr_complete(void *ud);

/* Worker 0: p is answered through mbc_proxy_done (or freed) before the link stops. */
void mbc_proxy_watch(mb_cluster *c, proxy *p);
/* Worker 0: the end of r, opened by mb_link_deliver for nm, per its Mb-Timeout. */
void mbc_proxy_bound(natsMsg *nm, mb_request *r);
/* mb_link_deliver's done callback: sends the answers of p and frees it. */
void mbc_proxy_done(void *ud, const mb_answer *answers, size_t n);
void mbc_proxy_free(proxy *p);
/* Tells the requester at `to` that this node took its message to k groups. */
void mbc_ack(mb_cluster *c, const char *to, const char *what, size_t k);
/* mb_link_deliver_sync's done callback: answers for x's groups, frees x. */
void mbc_sync_done(void *ud, int status);
void mbc_sync_unlink(sync_ctx *x);
/* Worker 0, stopping: the other nodes' requests still unanswered fail now. */
void mbc_proxies_fail(mb_cluster *c);

/* ---- mb_link_recv.c: receiving --------------------------------------------------------- */

/* The body of nm as an mb message (remote: with the origin id and reply_to
 * of its headers). NULL, with why, when it does not check. */
mb_msg *mbc_decode(natsMsg *nm, int remote, const char **why);
/* nm was not delivered: counted and reported. */
void mbc_bad(mb_cluster *c, natsMsg *nm, const char *why);
/* The handlers of the destinations' and the node's own subscriptions. */
void mbc_on_dest_msg(mb_cluster *c, sub *e, natsMsg *nm);
void mbc_on_home_msg(mb_cluster *c, sub *e, natsMsg *nm);
void mbc_on_inbox_msg(mb_cluster *c, sub *e, natsMsg *nm);
/* Worker 0, after each read: hands what the subscriptions hold to their handlers. */
void mbc_drain(void *ud);
void mbc_sub_free(sub *e);

/* ---- mb_link_stats.c: the statistics probes ------------------------------------------- */

/* The link's send of a statistics probe (MB_LINK_STATS, MB_LINK_PROBE) of
 * dest, as message m with id; answers go to `answer`, "no responders" to
 * `reply`. */
natsStatus mbc_stats_send(mb_cluster *c, const char *dest, mb_msg *m, int kind, const char *id,
                          const char *reply, const char *answer);
/* The handler of mb.NS.stats: another node asks for this node's figures. */
void mbc_on_stats_msg(mb_cluster *c, sub *e, natsMsg *nm);

#endif
