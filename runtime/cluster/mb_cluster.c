/*
 * mb_cluster.c — the link between the core and a NATS server (see
 * mb_cluster.h for the contract, the subjects and the wire format). Owns the
 * connection, its adapter, the subscriptions and the link's own service.
 * Uses the core's C API (mb.h), the adapter (mb_nats_ev.c) and libnats.
 *
 * Subscriptions are synchronous ones (nats.c queues their messages) and are
 * drained on worker 0 after each read event (the adapter's read hook), in
 * batches; a batch cut short goes on from a task. `mu` guards the list of
 * subscriptions and the statistics; the link's interest calls come under
 * the runtime's lock from any thread and take `mu` after it, and nothing
 * here takes the runtime's lock while holding `mu` (the drain copies the
 * messages out first). A subscription that lost its interest is
 * unsubscribed at once and freed by the next drain, on worker 0, so that a
 * drain never holds a freed one.
 */
#define _POSIX_C_SOURCE 200809L

#include "cluster/mb_cluster.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <nats/nats.h>

#include "cluster/mb_durable.h"
#include "cluster/mb_nats_ev.h"

#define BATCH 256 /* messages handed to the core per drain */
#define SPENT 64 /* published messages handed to nats.c's collector together */
#define SPENT_SMALL 4096 /* ... when their body is at most this many bytes */

typedef struct sub {
  struct sub *next;
  natsSubscription *ns;
  char *dest;    /* NULL: the node's inbox */
  char *group;   /* NULL: the groups without a name */
  uint64_t key;  /* the named group's key */
  int dead;      /* unsubscribed: freed by the next drain */
  natsMsg **left; /* what it held when it went (reported by that drain) */
  size_t nleft;
  int home;      /* the node's t subject (on_home_msg) */
  int stats;     /* mb.NS.stats (on_stats_msg) */
  int durable;   /* a durable destination's consumer (mb_durable_receive) */
  uint64_t lost; /* nats.c's dropped count seen so far (slow consumer) */
} sub;

struct mb_cluster {
  mb_runtime *rt;
  mb_service *svc; /* on worker 0: the link's requests and tasks */
  struct ev_loop *loop;
  mb_nats_ev *ev;
  natsConnection *nc;
  pthread_mutex_t mu;
  sub *subs; /* under mu */
  natsSubscription *nr; /* the no-responders inbox (on_no_responders) */
  pthread_cond_t nr_cond; /* with mu: nr_done, its last callback has returned; */
  int nr_done;            /* closed, nats.c's closed callback (its last) ran */
  int closed;
  int probe; /* under mu, at start: 1 the node name is free, 2 it is taken */
  atomic_int closing; /* mb_cluster_stop has begun: callbacks do nothing */
  mb_cluster_stats st; /* under mu */
  atomic_int up;
  int drain_posted; /* worker 0 only */
  natsMsg *spent[SPENT]; /* published, to be destroyed (see spent); under mu */
  size_t nspent;
  /* sends not yet known to have reached a listening node (the server says
   * "no responders" for one that did not): a ring of the messages, oldest
   * at sq_base, released by markers this node sends itself (see mark_task);
   * under mu. While any wait, the bus is held busy. */
  mb_msg **sq;
  size_t sq_head, sq_len, sq_cap;
  uint64_t sq_base, marks_sent;
  uint64_t sq_hint; /* the ring index after the last send found "no responders" */
  uint64_t *mk; /* per marker in flight: the ring index it covers up to */
  size_t mk_head, mk_len, mk_cap;
  int mark_posted, held;
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
  mb_cluster_config cfg; /* report, state, ud */
};

/* ---- names and subjects --------------------------------------------------- */

/* ---- reports ------------------------------------------------------------------ */

static void report(mb_cluster *c, const char *fmt, ...) {
  char line[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (c->cfg.report) c->cfg.report(c->cfg.ud, line);
}

static void count(mb_cluster *c, uint64_t *field, uint64_t n) {
  pthread_mutex_lock(&c->mu);
  *field += n;
  pthread_mutex_unlock(&c->mu);
}

/* ---- acknowledgements: request_all and synchronous sends --------------------------- */

#define ACK_WAIT 0.25 /* seconds nodes have to acknowledge (doc/cluster.md) */
#define STATS_KEY "\1stats" /* the nodes known to answer statistics: all of them */
#define MISSES 2      /* windows a known node may miss before it is forgotten */

typedef struct win {
  struct win *next;
  uint64_t id;
  double deadline; /* ev_time() */
  char *dest;
  char **acked; /* node names */
  size_t nacked;
  char **expect; /* the nodes known at its destination when it opened */
  size_t nexpect;
} win;

typedef struct known {
  struct known *next;
  char *dest;
  char **nodes;
  int *missed;
  size_t n;
} known;

static known *known_of(mb_cluster *c, const char *dest, int make) {
  for (known *k = c->known; k; k = k->next)
    if (!strcmp(k->dest, dest)) return k;
  known *k = make ? calloc(1, sizeof *k) : NULL;
  if (k && !(k->dest = strdup(dest))) {
    free(k);
    k = NULL;
  }
  if (k) {
    k->next = c->known;
    c->known = k;
  }
  return k;
}

/* node acknowledged at dest: known from now on (under mu) */
static void known_add(mb_cluster *c, const char *dest, const char *node) {
  known *k = known_of(c, dest, 1);
  if (!k) return;
  for (size_t i = 0; i < k->n; i++)
    if (!strcmp(k->nodes[i], node)) {
      k->missed[i] = 0;
      return;
    }
  char **v = realloc(k->nodes, (k->n + 1) * sizeof *v);
  if (v) k->nodes = v;
  int *m = v ? realloc(k->missed, (k->n + 1) * sizeof *m) : NULL;
  if (m) k->missed = m;
  char *name = m ? strdup(node) : NULL;
  if (!name) return;
  k->nodes[k->n] = name;
  k->missed[k->n++] = 0;
}

static void known_free(mb_cluster *c) {
  while (c->known) {
    known *k = c->known;
    c->known = k->next;
    for (size_t i = 0; i < k->n; i++) free(k->nodes[i]);
    free(k->nodes);
    free(k->missed);
    free(k->dest);
    free(k);
  }
}

static void win_free(win *w) {
  for (size_t i = 0; i < w->nacked; i++) free(w->acked[i]);
  free(w->acked);
  for (size_t i = 0; i < w->nexpect; i++) free(w->expect[i]);
  free(w->expect);
  free(w->dest);
  free(w);
}

static int win_has(const win *w, const char *node) {
  for (size_t i = 0; i < w->nacked; i++)
    if (!strcmp(w->acked[i], node)) return 1;
  return 0;
}

/* Every node known at its destination when w opened has acknowledged it
 * (with none known, only its time ends it). */
static int win_full(const win *w) {
  if (!w->nexpect) return 0;
  for (size_t i = 0; i < w->nexpect; i++)
    if (!win_has(w, w->expect[i])) return 0;
  return 1;
}

/* Takes w out of the list (under mu); the caller closes and frees it. */
static void win_unlink(mb_cluster *c, win *w) {
  for (win **p = &c->wins; *p; p = &(*p)->next)
    if (*p == w) {
      *p = w->next;
      return;
    }
}

/* Worker 0: closes the windows whose time is over, forgetting the known
 * nodes that missed too many, and sets the timer for the next one. */
static void win_sweep(mb_cluster *c) {
  double now = ev_time(), next = 0;
  win *over = NULL;
  pthread_mutex_lock(&c->mu);
  for (win **p = &c->wins; *p;) {
    win *w = *p;
    if (w->deadline <= now) {
      *p = w->next;
      w->next = over;
      over = w;
      known *k = known_of(c, w->dest, 0);
      for (size_t i = 0; k && i < k->n;) {
        if (win_has(w, k->nodes[i]) || ++k->missed[i] < MISSES) {
          i++;
          continue;
        }
        free(k->nodes[i]);
        k->nodes[i] = k->nodes[k->n - 1];
        k->missed[i] = k->missed[k->n - 1];
        k->n--;
      }
    } else {
      if (!next || w->deadline < next) next = w->deadline;
      p = &w->next;
    }
  }
  pthread_mutex_unlock(&c->mu);
  while (over) {
    win *w = over;
    over = w->next;
    mb_link_window(c->rt, w->id);
    win_free(w);
  }
  ev_timer_stop(c->loop, &c->win_timer);
  if (next) {
    ev_timer_set(&c->win_timer, next - now > 0 ? next - now : 0, 0);
    ev_timer_start(c->loop, &c->win_timer);
  }
}

static void win_timer_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  win_sweep(t->data);
}

static void arm_task(void *arg) {
  mb_cluster *c = arg;
  pthread_mutex_lock(&c->mu);
  c->arm_posted = 0;
  pthread_mutex_unlock(&c->mu);
  win_sweep(c);
}

/* A request_all or synchronous send went out (any worker): its window. */
static void win_open(mb_cluster *c, uint64_t id, const char *dest, double secs) {
  win *w = calloc(1, sizeof *w);
  if (w && !(w->dest = strdup(dest))) {
    free(w);
    w = NULL;
  }
  if (!w) { /* out of memory: it waits for answers without a window */
    mb_link_window(c->rt, id);
    return;
  }
  w->id = id;
  w->deadline = ev_time() + secs;
  pthread_mutex_lock(&c->mu);
  known *k = known_of(c, dest, 0);
  if (k && k->n && (w->expect = calloc(k->n, sizeof *w->expect)))
    for (size_t i = 0; i < k->n; i++)
      if ((w->expect[w->nexpect] = strdup(k->nodes[i]))) w->nexpect++;
  w->next = c->wins;
  c->wins = w;
  int post = !c->arm_posted;
  c->arm_posted = 1;
  pthread_mutex_unlock(&c->mu);
  if (post && mb_service_post(c->svc, arm_task, c)) {
    pthread_mutex_lock(&c->mu);
    c->arm_posted = 0;
    pthread_mutex_unlock(&c->mu);
  }
}

/* The number a node's group i answers as: unique per node and group, never 0. */
static uint64_t group_number(const char *node, unsigned i) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)node; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return ((h | 1) << 16) + i + 1;
}

/* Worker 0: node acknowledged request id with k groups (for = its kind). */
static void on_ack(mb_cluster *c, uint64_t id, const char *node, const char *for_kind, size_t k) {
  if (for_kind && !strcmp(for_kind, "confirm")) {
    if (k && mb_link_answer(c->rt, id, 0, MB_OK, NULL, NULL)) count(c, &c->st.late, 1);
    return;
  }
  if (mb_link_expect(c->rt, id, group_number(node, 0), k)) count(c, &c->st.late, 1);
  /* (a node with nothing to say still counts as one that acknowledged) */
  win *done = NULL;
  pthread_mutex_lock(&c->mu);
  win *w = c->wins;
  while (w && w->id != id) w = w->next;
  const char *dest = w ? w->dest : NULL;
  if (w && !win_has(w, node)) {
    char **v = realloc(w->acked, (w->nacked + 1) * sizeof *v);
    if (v) w->acked = v;
    char *name = v ? strdup(node) : NULL;
    if (name) w->acked[w->nacked++] = name;
  }
  if (dest) known_add(c, dest, node);
  if (w && win_full(w)) {
    win_unlink(c, w);
    done = w;
  }
  pthread_mutex_unlock(&c->mu);
  if (done) {
    mb_link_window(c->rt, id);
    win_free(done);
  }
}

/* ---- sends that wait for their "no responders" ----------------------------------- */

static void mark_task(void *arg);

/* Keeps m until a marker shows no "no responders" came for it. */
static void keep_sent(mb_cluster *c, mb_msg *m) {
  pthread_mutex_lock(&c->mu);
  if (c->sq_len == c->sq_cap) {
    size_t cap = c->sq_cap ? c->sq_cap * 2 : 64;
    mb_msg **v = malloc(cap * sizeof *v);
    if (!v) { /* out of memory: it is not watched (a drop would go uncounted) */
      pthread_mutex_unlock(&c->mu);
      return;
    }
    for (size_t i = 0; i < c->sq_len; i++) v[i] = c->sq[(c->sq_head + i) % c->sq_cap];
    free(c->sq);
    c->sq = v;
    c->sq_cap = cap;
    c->sq_head = 0;
  }
  c->sq[(c->sq_head + c->sq_len++) % c->sq_cap] = mb_msg_ref(m);
  int hold = !c->held, post = !c->mark_posted;
  c->held = 1;
  c->mark_posted = 1;
  pthread_mutex_unlock(&c->mu);
  if (hold) mb_runtime_hold(c->rt, 1);
  if (post && mb_service_post(c->svc, mark_task, c)) {
    pthread_mutex_lock(&c->mu);
    c->mark_posted = 0; /* the next send posts it */
    pthread_mutex_unlock(&c->mu);
  }
}

/* Releases the kept sends below ring index upto (all: UINT64_MAX), and the
 * hold when none is left. Worker 0. */
static void release_sent(mb_cluster *c, uint64_t upto) {
  int unhold = 0;
  pthread_mutex_lock(&c->mu);
  while (c->sq_len && c->sq_base < upto) {
    mb_msg_unref(c->sq[c->sq_head]);
    c->sq_head = (c->sq_head + 1) % c->sq_cap;
    c->sq_len--;
    c->sq_base++;
  }
  if (upto == UINT64_MAX) c->mk_len = 0;
  if (!c->sq_len && c->held && !c->mk_len) {
    c->held = 0;
    unhold = 1;
  }
  pthread_mutex_unlock(&c->mu);
  if (unhold) mb_runtime_hold(c->rt, -1);
}

/* Worker 0, soon after sends: a marker to this node's own x.m<SEQ>. The
 * server answers a connection's messages in order, and "no responders" and
 * this marker come to the same subscription, so when it arrives every
 * "no responders" for the sends before it has come. */
static void mark_task(void *arg) {
  mb_cluster *c = arg;
  char subj[200];
  pthread_mutex_lock(&c->mu);
  c->mark_posted = 0;
  if (c->mk_len == c->mk_cap) {
    size_t cap = c->mk_cap ? c->mk_cap * 2 : 16;
    uint64_t *v = malloc(cap * sizeof *v);
    if (!v) {
      pthread_mutex_unlock(&c->mu);
      return; /* the next send tries again */
    }
    for (size_t i = 0; i < c->mk_len; i++) v[i] = c->mk[(c->mk_head + i) % c->mk_cap];
    free(c->mk);
    c->mk = v;
    c->mk_cap = cap;
    c->mk_head = 0;
  }
  c->mk[(c->mk_head + c->mk_len++) % c->mk_cap] = c->sq_base + c->sq_len;
  uint64_t seq = c->marks_sent++;
  pthread_mutex_unlock(&c->mu);
  snprintf(subj, sizeof subj, "%sx.m%" PRIu64, c->inbox, seq);
  if (natsConnection_Publish(c->nc, subj, NULL, 0) != NATS_OK)
    release_sent(c, UINT64_MAX); /* no marker: what it covered is not watched */
}

/* What the no-responders subscription heard, for worker 0. */
typedef struct heard {
  mb_cluster *c;
  int marker;
  uint64_t id;
} heard;

static void heard_task(void *arg) {
  heard *h = arg;
  mb_cluster *c = h->c;
  if (h->marker) {
    pthread_mutex_lock(&c->mu);
    uint64_t upto = c->mk_len ? c->mk[c->mk_head] : 0;
    if (c->mk_len) {
      c->mk_head = (c->mk_head + 1) % c->mk_cap;
      c->mk_len--;
    }
    pthread_mutex_unlock(&c->mu);
    release_sent(c, upto);
  } else {
    mb_msg *m = NULL;
    pthread_mutex_lock(&c->mu);
    /* "no responders" come in send order: the search starts after the last
     * one found (from the oldest, a burst of N sends cost N*N/2 steps) */
    size_t from = c->sq_hint > c->sq_base && c->sq_hint - c->sq_base < c->sq_len
                      ? (size_t)(c->sq_hint - c->sq_base)
                      : 0;
    for (size_t j = 0; j < c->sq_len && !m; j++) {
      size_t i = (from + j) % c->sq_len;
      mb_msg **slot = &c->sq[(c->sq_head + i) % c->sq_cap];
      if (*slot && mb_msg_id(*slot) == h->id) {
        m = *slot;
        *slot = mb_msg_ref(m); /* stays until its marker; the drop is counted now */
        c->sq_hint = c->sq_base + i + 1;
      }
    }
    pthread_mutex_unlock(&c->mu);
    if (m) {
      char why[400];
      snprintf(why, sizeof why, "dropped: no node of the cluster listens at '%s'",
               mb_msg_destination(m));
      mb_link_dropped(c->rt, mb_msg_destination(m), m, why);
      count(c, &c->st.dropped, 1);
      mb_msg_unref(m);
    } else {
      count(c, &c->st.late, 1);
    }
  }
  free(h);
}

/* ---- sending -------------------------------------------------------------------- */

/* a, b and c (c may be NULL) one after the other in buf, cut to fit as
 * snprintf would: the subjects and ids of every message, without printf's
 * cost (about 900 instructions a call) */
static void join(char *buf, size_t cap, const char *a, const char *b, const char *c) {
  const char *parts[3] = {a, b, c};
  size_t at = 0;
  for (int i = 0; i < 3 && parts[i]; i++) {
    size_t n = strlen(parts[i]);
    if (n > cap - 1 - at) n = cap - 1 - at;
    memcpy(buf + at, parts[i], n);
    at += n;
  }
  buf[at] = 0;
}

/* nats.c destroys a message on its collector thread, woken for each one
 * (a futex call and a thread switch per message). Small published ones are
 * handed over SPENT at a time instead (at most SPENT - 1 wait, freed at the
 * latest by cluster_free); published: count one publish. Any thread. */
static void spent(mb_cluster *c, natsMsg *nm, int published) {
  natsMsg *batch[SPENT];
  size_t n = 0;
  int keep = nm && natsMsg_GetDataLength(nm) <= SPENT_SMALL;
  pthread_mutex_lock(&c->mu);
  if (published) c->st.published++;
  if (keep) {
    c->spent[c->nspent++] = nm;
    if (c->nspent == SPENT) {
      memcpy(batch, c->spent, sizeof batch);
      n = SPENT;
      c->nspent = 0;
    }
  }
  pthread_mutex_unlock(&c->mu);
  if (!keep) natsMsg_Destroy(nm);
  for (size_t i = 0; i < n; i++) natsMsg_Destroy(batch[i]);
}

static natsStatus set_header(natsMsg *nm, const char *key, const char *value) {
  return natsMsgHeader_Set(nm, key, value);
}

/* Publishes the payload and values of m as kind to subject (reply: the
 * NATS reply subject, or NULL); id is the Mb-Id; extra: more headers, name
 * and value pairs, NULL-terminated (or NULL). */
static natsStatus publish(mb_cluster *c, const char *subject, const char *reply, const mb_msg *m,
                          const char *kind, const char *id, const char *const *extra) {
  size_t plen, vlen;
  const uint8_t *p = mb_msg_payload(m, &plen);
  mb_msg_values(m, &vlen); /* right after the payload */
  natsMsg *nm = NULL;
  char num[24], tmp[24];
  size_t nd = 0, v = plen;
  do tmp[nd++] = (char)('0' + v % 10);
  while ((v /= 10));
  for (size_t i = 0; i < nd; i++) num[i] = tmp[nd - 1 - i];
  num[nd] = 0;
  natsStatus s = natsMsg_Create(&nm, subject, reply, (const char *)p, (int)(plen + vlen));
  if (s == NATS_OK) s = set_header(nm, "Mb-Id", id);
  if (s == NATS_OK) s = set_header(nm, "Mb-Kind", kind);
  if (s == NATS_OK) s = set_header(nm, "Mb-Plen", num);
  if (s == NATS_OK) s = set_header(nm, "Mb-Node", c->node);
  const char *rt = mb_msg_origin(m) ? NULL : mb_msg_reply_to(m);
  if (s == NATS_OK && rt) s = set_header(nm, "Mb-Reply-To", rt);
  for (; s == NATS_OK && extra && extra[0]; extra += 2)
    if (extra[1]) s = set_header(nm, extra[0], extra[1]);
  if (s == NATS_OK) s = natsConnection_PublishMsg(c->nc, nm);
  spent(c, nm, s == NATS_OK);
  return s;
}

static int link_send(void *ud, mb_service *from, const char *dest, mb_dest_type type, mb_msg *m,
                     int kind) {
  mb_cluster *c = ud;
  (void)from;
  (void)type;
  char subject[1024], reply[200], answer[200], id[MB_NODE_ID_MAX], hex[17];
  int rc = MB_OK;
  if (atomic_load(&c->up) && kind != MB_LINK_STATS && kind != MB_LINK_PROBE &&
      mb_durable_has(c->durable, dest))
    return mb_durable_send(c->durable, dest, m, kind);
  if (!atomic_load(&c->up))
    rc = MB_ECLOSED;
  else if (mb_cluster_subject(c->ns, dest, subject, sizeof subject))
    rc = MB_EINVAL;
  if (rc == MB_OK) {
    mb_id_format(mb_msg_id(m), hex);
    mb_node_id_format(c->node, mb_msg_id(m), id);
    static const char *const kinds[] = {"send",    "request", "all",  "sync",
                                        "confirm", "stats",   "stats"};
    int req = kind != MB_LINK_SEND;
    /* the answers go to r.ID (drained on the loop); the NATS reply subject
     * x.ID only hears the server's "no responders" (see on_no_responders) */
    join(reply, sizeof reply, c->inbox, "x.", hex);
    join(answer, sizeof answer, c->inbox, "r.", hex);
    /* the listening nodes bound their wait for the listeners' answers by it */
    char tmo[32];
    double secs = req ? mb_link_timeout(c->rt, mb_msg_id(m)) : 0;
    if (secs > 0) snprintf(tmo, sizeof tmo, "%.3f", secs);
    const char *extra[] = {"Mb-Reply", req ? answer : NULL, "Mb-Timeout", secs > 0 ? tmo : NULL,
                           NULL};
    if (kind == MB_LINK_REQUEST_ALL || kind == MB_LINK_SYNC)
      win_open(c, mb_msg_id(m), dest, c->ack_wait);
    natsStatus s;
    if (kind == MB_LINK_STATS || kind == MB_LINK_PROBE) { /* every node answers at mb.NS.stats */
      win_open(c, mb_msg_id(m), STATS_KEY, kind == MB_LINK_STATS ? 1.0 : c->ack_wait);
      snprintf(subject, sizeof subject, "mb.%s.stats", c->ns);
      const char *more[] = {"Mb-Reply", answer, "Mb-Dest", dest, NULL};
      s = publish(c, subject, reply, m, "stats", id, more);
    } else {
      s = publish(c, subject, reply, m, kinds[kind], id, extra);
    }
    rc = s == NATS_OK ? MB_OK : s == NATS_NO_MEMORY ? MB_ENOMEM : MB_ECLOSED;
    if (rc == MB_OK && !req) keep_sent(c, m);
  }
  mb_msg_unref(m);
  return rc;
}

/* ---- interest: subscribing ------------------------------------------------------ */

static void sub_free(sub *e) {
  for (size_t i = 0; i < e->nleft; i++) natsMsg_Destroy(e->left[i]);
  free(e->left);
  if (e->ns) natsSubscription_Destroy(e->ns);
  free(e->dest);
  free(e->group);
  free(e);
}

static void link_interest(void *ud, const char *dest, const char *group, uint64_t key, int on) {
  mb_cluster *c = ud;
  char subject[1024];
  pthread_mutex_lock(&c->mu);
  if (!on) {
    for (sub *e = c->subs; e; e = e->next)
      if (!e->dead && e->dest && !strcmp(e->dest, dest) &&
          (group ? e->group && !strcmp(e->group, group) : !e->group)) {
        /* what waits in it would go with the subscription: kept to be
         * reported (what the server sends before it takes the
         * unsubscription is lost unseen) */
        int msgs = 0, bytes = 0;
        if (natsSubscription_GetPending(e->ns, &msgs, &bytes) == NATS_OK && msgs > 0 &&
            (e->left = calloc((size_t)msgs, sizeof *e->left)))
          for (natsMsg *m = NULL; e->nleft < (size_t)msgs &&
                                  natsSubscription_NextMsg(&m, e->ns, 0) == NATS_OK && m;
               m = NULL)
            e->left[e->nleft++] = m;
        natsSubscription_Unsubscribe(e->ns);
        e->dead = 1;
        break;
      }
    pthread_mutex_unlock(&c->mu);
    return;
  }
  sub *e = calloc(1, sizeof *e);
  natsStatus s = NATS_NO_MEMORY;
  if (e && (e->dest = strdup(dest)) && (!group || (e->group = strdup(group)))) {
    /* a durable destination's group listens at its consumer's subject */
    if (!mb_durable_interest(c->durable, dest, group, 1, subject, sizeof subject))
      e->durable = 1;
    if (e->durable)
      s = group ? natsConnection_QueueSubscribeSync(&e->ns, c->nc, subject, group)
                : natsConnection_SubscribeSync(&e->ns, c->nc, subject);
    else if (mb_cluster_subject(c->ns, dest, subject, sizeof subject))
      s = NATS_INVALID_SUBJECT;
    else if (group)
      s = natsConnection_QueueSubscribeSync(&e->ns, c->nc, subject, group);
    else
      s = natsConnection_SubscribeSync(&e->ns, c->nc, subject);
  }
  if (s == NATS_OK) {
    e->key = group ? key : 0;
    e->next = c->subs;
    c->subs = e;
  } else if (e) {
    sub_free(e);
  }
  pthread_mutex_unlock(&c->mu);
  if (s != NATS_OK)
    report(c, "mb: cluster: cannot listen at '%s'%s%s%s: %s", dest, group ? " (group '" : "",
           group ? group : "", group ? "')" : "", natsStatus_GetText(s));
}

/* ---- receiving ------------------------------------------------------------------------ */

typedef struct item {
  natsMsg *m;
  sub *s;
} item;

/* What a request from another node needs for its answer. */
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

static const char *header(natsMsg *m, const char *key) {
  const char *v = NULL;
  return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

/* The body of nm as an mb message: origin id and reply_to from its
 * headers. NULL, with why, when it does not check. */
static mb_msg *decode(natsMsg *nm, int remote, const char **why) {
  const char *data = natsMsg_GetData(nm);
  size_t len = (size_t)natsMsg_GetDataLength(nm);
  const char *pl = header(nm, "Mb-Plen");
  char *end = NULL;
  unsigned long long plen = pl ? strtoull(pl, &end, 10) : 0;
  if (!pl || end == pl || *end || plen == 0 || plen > len) {
    *why = "no valid Mb-Plen header";
    return NULL;
  }
  if (mb_value_check(data, (size_t)plen) ||
      (len > plen && mb_value_check(data + plen, len - (size_t)plen))) {
    *why = "its body is not a well-formed mb value (truncated or corrupt)";
    return NULL;
  }
  const char *id = header(nm, "Mb-Id");
  const char *rt = header(nm, "Mb-Reply-To");
  if (rt && !mb_dest_name_valid(rt, strlen(rt))) rt = NULL;
  mb_msg *m = remote ? mb_msg_new_remote(data, (size_t)plen, data + plen, len - (size_t)plen, rt,
                                         id && *id && strlen(id) < 200 ? id : "?")
                     : mb_msg_new(data, (size_t)plen, data + plen, len - (size_t)plen, NULL);
  if (!m) *why = "out of memory";
  return m;
}

static void bad(mb_cluster *c, natsMsg *nm, const char *why) {
  count(c, &c->st.bad, 1);
  const char *node = header(nm, "Mb-Node");
  report(c, "mb: cluster: a message on '%s'%s%s was not delivered: %s", natsMsg_GetSubject(nm),
         node ? " from node " : "", node ? node : "", why);
}

/* The answer of a request from another node: sent back to its inbox. */
static void proxy_free(proxy *p) {
  if (p->prev)
    p->prev->next = p->next;
  else if (p->c->proxies == p)
    p->c->proxies = p->next;
  if (p->next) p->next->prev = p->prev;
  free(p->home);
  free(p->response);
  free(p);
}

/* A listener's reply to a request of another node could not be published
 * (status s; most often over the server's max_payload): reported here, and
 * the requester hears it failed (group: its Mb-Group, or NULL), at once
 * rather than at its timeout. */
static natsStatus reply_unsent(mb_cluster *c, const char *to, const char *group, natsStatus s) {
  static const uint8_t nil = MB_V_NIL;
  char err[300], id[120], hex[17];
  if (s == NATS_MAX_PAYLOAD)
    snprintf(err, sizeof err, "failed: the reply is too large for the cluster (over the NATS "
                              "server's max_payload of %zu bytes) (node %s)",
             mb_cluster_max_payload(c), c->node);
  else
    snprintf(err, sizeof err, "failed: the reply was not sent: %s (node %s)",
             natsStatus_GetText(s), c->node);
  report(c, "mb: cluster: a reply to a request of another node was not sent: %s", err + 8);
  mb_msg *none = mb_msg_new(&nil, 1, NULL, 0, NULL);
  if (!none) return NATS_NO_MEMORY;
  mb_id_format(mb_msg_id(none), hex);
  snprintf(id, sizeof id, "%s:%s", c->node, hex);
  const char *extra[] = {"Mb-Error", err, "Mb-Group", group, NULL};
  s = publish(c, to, NULL, none, "fail", id, extra);
  mb_msg_unref(none);
  return s;
}

static void proxy_done(void *ud, const mb_answer *answers, size_t n) {
  proxy *p = ud;
  mb_cluster *c = p->c;
  for (size_t i = 0; i < n; i++)
    if (answers[i].status == MB_ETIMEOUT) { /* its requester has given up too (proxy_bound) */
      proxy_free(p);
      return;
    }
  static const uint8_t nil = MB_V_NIL;
  char err[700], id[MB_NODE_ID_MAX];
  const mb_answer *a = n ? &answers[0] : NULL;
  natsStatus s;
  if (p->json) { /* a plain NATS client: the reply's payload, or {"error": why}, as JSON */
    mb_buf b = {0}, v = {0};
    char jerr[300];
    int bad_json = 0;
    if (a && a->status == MB_OK && a->reply) {
      size_t plen;
      const uint8_t *pl = mb_msg_payload(a->reply, &plen);
      bad_json = mb_json_encode(pl, plen, "reply", &b, jerr, sizeof jerr) != 0;
    }
    if (!(a && a->status == MB_OK && a->reply) || bad_json) {
      snprintf(err, sizeof err, "%s (node %s)",
               bad_json ? jerr : a && a->error ? a->error : "failed: no answer", c->node);
      long at = mb_enc_table_begin(&v);
      b.len = 0;
      if (at >= 0 && !mb_enc_str(&v, "error", 5) && !mb_enc_str(&v, err, strlen(err))) {
        mb_enc_table_end(&v, at, 0, 1);
        mb_json_encode(v.p, v.len, "reply", &b, jerr, sizeof jerr);
      }
    }
    s = natsConnection_Publish(c->nc, p->reply, b.p, (int)b.len);
    if (s != NATS_OK)
      report(c, "mb: cluster: a reply to a plain NATS client was not sent: %s (%zu bytes)",
             natsStatus_GetText(s), b.len);
    mb_buf_free(&b);
    mb_buf_free(&v);
  } else if (p->home) { /* the reply goes home to reply_to; a failure was reported here */
    s = NATS_OK;
    if (a && a->status == MB_OK && a->reply) {
      mb_node_id_format(c->node, mb_msg_id(a->reply), id);
      const char *extra[] = {"Mb-Dest", p->home, "Mb-Response", p->response, NULL};
      s = publish(c, p->reply, NULL, a->reply, "reply", id, extra);
      if (s != NATS_OK)
        report(c, "mb: cluster: a reply to '%s' on another node was not sent: %s", p->home,
               natsStatus_GetText(s));
    }
  } else if (p->all) { /* one answer per group here, numbered as acknowledged */
    s = NATS_OK;
    for (size_t i = 0; i < n && s == NATS_OK; i++) {
      char num[24];
      snprintf(num, sizeof num, "%zu", i);
      mb_msg *none = answers[i].reply ? NULL : mb_msg_new(&nil, 1, NULL, 0, NULL);
      const mb_msg *body = answers[i].reply ? answers[i].reply : none;
      int ok = answers[i].status == MB_OK;
      snprintf(err, sizeof err, "%s (node %s)", answers[i].error ? answers[i].error : "failed",
               c->node);
      mb_node_id_format(c->node, body ? mb_msg_id(body) : 0, id);
      const char *extra[] = {"Mb-Group", num, "Mb-Error", ok ? NULL : err, NULL};
      s = body ? publish(c, p->reply, NULL, body, ok ? "reply" : "fail", id, extra)
               : NATS_NO_MEMORY;
      if (s != NATS_OK && s != NATS_CONNECTION_CLOSED) s = reply_unsent(c, p->reply, num, s);
      mb_msg_unref(none);
    }
  } else if (a && a->status == MB_OK && a->reply) {
    mb_node_id_format(c->node, mb_msg_id(a->reply), id);
    s = publish(c, p->reply, NULL, a->reply, "reply", id, NULL);
    if (s != NATS_OK && s != NATS_CONNECTION_CLOSED) s = reply_unsent(c, p->reply, NULL, s);
  } else {
    mb_msg *none = mb_msg_new(&nil, 1, NULL, 0, NULL);
    const char *e = a && a->error ? a->error : "failed: no answer";
    snprintf(err, sizeof err, "%s (node %s)", e, c->node);
    mb_node_id_format(c->node, none ? mb_msg_id(none) : 0, id);
    const char *extra[] = {"Mb-Error", a && a->status == MB_OK ? NULL : err, NULL};
    s = none ? publish(c, p->reply, NULL, none, a && a->status == MB_OK ? "reply" : "fail", id,
                       extra)
             : NATS_NO_MEMORY;
    mb_msg_unref(none);
  }
  if (s == NATS_OK) count(c, &c->st.replies, 1);
  proxy_free(p);
}

#define PROXY_WAIT 60.0 /* seconds a request without Mb-Timeout (a plain NATS client's, a
                          * send's reply_to) waits for its listeners' answers here */

/* Worker 0: the request r that mb_link_deliver opened for the message nm
 * ends (said nothing) when its requester gives up: after its Mb-Timeout
 * (a little later, as it started later), else PROXY_WAIT. */
static void proxy_bound(natsMsg *nm, mb_request *r) {
  const char *t = header(nm, "Mb-Timeout");
  char *end = NULL;
  double secs = t ? strtod(t, &end) : 0;
  if (!t || end == t || *end || !(secs > 0)) secs = PROXY_WAIT;
  if (r && secs < 1e9) mb_link_expire(r, secs + 0.5); /* "inf": it waits as long */
}

/* Worker 0: p is answered through proxy_done (or freed) before the link stops. */
static void proxy_watch(mb_cluster *c, proxy *p) {
  p->c = c;
  p->prev = NULL;
  p->next = c->proxies;
  if (c->proxies) c->proxies->prev = p;
  c->proxies = p;
}

/* Tells the requester at subject `to` that this node took its message to k
 * groups (what = the kind acknowledged). */
static void ack(mb_cluster *c, const char *to, const char *what, size_t k) {
  static const uint8_t nil = MB_V_NIL;
  char num[24], id[MB_NODE_ID_MAX];
  mb_msg *none = mb_msg_new(&nil, 1, NULL, 0, NULL);
  if (!none) return;
  snprintf(num, sizeof num, "%zu", k);
  mb_node_id_format(c->node, mb_msg_id(none), id);
  const char *extra[] = {"Mb-Groups", num, "Mb-For", what, NULL};
  publish(c, to, NULL, none, "ack", id, extra);
  mb_msg_unref(none);
}

/* A synchronous send from another node: its groups here have run it. */
typedef struct sync_ctx {
  mb_cluster *c;
  struct sync_ctx *prev, *next; /* in c->syncs while its groups run it */
  size_t k;
  char reply[];
} sync_ctx;

static void sync_unlink(sync_ctx *x) {
  if (x->prev)
    x->prev->next = x->next;
  else if (x->c->syncs == x)
    x->c->syncs = x->next;
  if (x->next) x->next->prev = x->prev;
  x->prev = x->next = NULL;
}

/* status MB_ECLOSED: this node stopped before its groups had run it (they
 * answer failed); else they ran it (a group that failed has run it too,
 * and was counted here). */
static void sync_done(void *ud, int status) {
  sync_ctx *x = ud;
  static const uint8_t nil = MB_V_NIL;
  char num[24], id[MB_NODE_ID_MAX], err[200];
  int stopped = status == MB_ECLOSED;
  snprintf(err, sizeof err, "failed: the node stopped before its listener answered (node %s)",
           x->c->node);
  sync_unlink(x);
  mb_msg *none = mb_msg_new(&nil, 1, NULL, 0, NULL);
  for (size_t i = 0; none && i < x->k; i++) {
    snprintf(num, sizeof num, "%zu", i);
    mb_node_id_format(x->c->node, mb_msg_id(none), id);
    const char *extra[] = {"Mb-Group", num, "Mb-Error", stopped ? err : NULL, NULL};
    publish(x->c, x->reply, NULL, none, stopped ? "fail" : "reply", id, extra);
  }
  mb_msg_unref(none);
  free(x);
}

/* Worker 0, stopping: the requests and synchronous sends of other nodes
 * still unanswered here (their listeners were cut short) fail now, rather
 * than leaving their requesters to wait for their timeouts. */
static void proxies_fail(mb_cluster *c) {
  static const char why[] = "failed: the node stopped before its listener answered";
  while (c->proxies) {
    proxy *p = c->proxies;
    mb_answer one = {MB_EFAILED, NULL, why}, *a = &one;
    size_t n = p->all && p->k > 1 ? p->k : 1;
    if (n > 1 && (a = malloc(n * sizeof *a)))
      for (size_t i = 0; i < n; i++) a[i] = one;
    else
      a = &one, n = 1;
    proxy_done(p, a, n); /* frees p */
    if (a != &one) free(a);
  }
  while (c->syncs) sync_done(c->syncs, MB_ECLOSED); /* frees it */
}

/* A message from a plain NATS client (no Mb- headers): its body is the
 * payload as JSON text (empty: nil); with a reply subject it is a request
 * whose answer goes back as JSON. */
static void on_plain_msg(mb_cluster *c, sub *e, natsMsg *nm) {
  const char *data = natsMsg_GetData(nm), *reply = natsMsg_GetReply(nm);
  int len = natsMsg_GetDataLength(nm);
  char why[400], origin[120];
  mb_buf b = {0};
  if (len > 0 && mb_json_decode(data, (size_t)len, MB_MAX_DEPTH, &b, why, sizeof why)) {
    bad(c, nm, why);
    mb_buf_free(&b);
    /* a request gets told, in JSON, instead of waiting for nothing */
    proxy *p = reply && *reply ? calloc(1, sizeof *p + strlen(reply) + 1) : NULL;
    if (p) {
      char err[500];
      snprintf(err, sizeof err, "invalid: the body is not JSON: %s", why);
      proxy_watch(c, p);
      p->json = 1;
      strcpy(p->reply, reply);
      mb_answer a = {MB_EINVAL, NULL, err};
      proxy_done(p, &a, 1);
    }
    return;
  }
  pthread_mutex_lock(&c->mu);
  uint64_t n = ++c->st.received;
  pthread_mutex_unlock(&c->mu);
  snprintf(origin, sizeof origin, "nats:%" PRIu64, n);
  mb_msg *m = mb_msg_new_remote(b.p, b.len, NULL, 0, NULL, origin);
  mb_buf_free(&b);
  if (!m) {
    bad(c, nm, "out of memory");
    return;
  }
  int rc;
  proxy *p = reply && *reply ? calloc(1, sizeof *p + strlen(reply) + 1) : NULL;
  if (p) {
    proxy_watch(c, p);
    p->json = 1;
    strcpy(p->reply, reply);
    mb_request *r;
    rc = mb_link_deliver(c->svc, e->dest, e->key, m, 0, proxy_done, p, &r, NULL);
    if (rc >= 0) proxy_bound(nm, r);
    if (rc < 0) {
      char err[400];
      snprintf(err, sizeof err, "%s: no listener of '%s' took it", mb_strerror(rc), e->dest);
      mb_answer a = {rc, NULL, err};
      proxy_done(p, &a, 1);
    }
  } else {
    rc = mb_link_deliver(c->svc, e->dest, e->key, m, 0, NULL, NULL, NULL, NULL);
  }
  if (rc < 0) count(c, &c->st.dropped, 1);
}

static void on_dest_msg(mb_cluster *c, sub *e, natsMsg *nm) {
  const char *why = NULL;
  const char *kind = header(nm, "Mb-Kind");
  if (!kind && !header(nm, "Mb-Id")) {
    on_plain_msg(c, e, nm);
    return;
  }
  mb_msg *m = decode(nm, 1, &why);
  if (!m) {
    bad(c, nm, why);
    return;
  }
  count(c, &c->st.received, 1);
  /* a request's answer goes where it says (mb's requests: Mb-Reply; plain
   * NATS clients: their reply subject); a send's reply to its reply_to goes
   * home, to the sending node's t subject */
  char home[200];
  const char *reply = NULL, *reply_to = NULL, *from = header(nm, "Mb-Node");
  int request = kind && !strcmp(kind, "request");
  int all = kind && !strcmp(kind, "all");
  int sync = kind && !strcmp(kind, "sync");
  int confirm = kind && !strcmp(kind, "confirm");
  if (request || all || confirm || sync) {
    reply = header(nm, "Mb-Reply");
    if (!reply) reply = natsMsg_GetReply(nm);
    if (reply && !*reply) reply = NULL;
  } else if ((reply_to = mb_msg_reply_to(m)) && from && mb_cluster_name_valid(from)) {
    snprintf(home, sizeof home, "mb.%s.n.%s.t", c->ns, from);
    reply = home;
  }
  int rc;
  size_t takers = 0;
  if (reply && sync) {
    size_t rl = strlen(reply);
    sync_ctx *x = malloc(sizeof *x + rl + 1);
    if (!x) {
      mb_msg_unref(m);
      rc = MB_ENOMEM;
    } else {
      x->c = c;
      memcpy(x->reply, reply, rl + 1);
      x->prev = NULL;
      x->next = c->syncs;
      if (c->syncs) c->syncs->prev = x;
      c->syncs = x;
      rc = mb_link_deliver_sync(c->svc, e->dest, e->key, m, sync_done, x, &takers);
      x->k = rc < 0 ? 0 : takers;
    }
    ack(c, reply, kind, rc < 0 ? 0 : takers); /* first: the answers follow */
    if (rc == MB_OK) sync_done(x, MB_OK);
    if (rc < 0 && x) {
      sync_unlink(x);
      free(x);
    }
  } else if (reply && !confirm) {
    size_t rl = strlen(reply);
    proxy *p = calloc(1, sizeof *p + rl + 1);
    if (p) p->c = c;
    if (p && !request && !all) {
      p->home = strdup(reply_to);
      p->response = strdup(mb_msg_origin(m));
      if (!p->home || !p->response) {
        proxy_free(p);
        p = NULL;
      }
    }
    if (!p) {
      mb_msg_unref(m);
      count(c, &c->st.dropped, 1);
      report(c, "mb: cluster: a message at '%s' from node %s was not delivered: out of memory",
             e->dest, from ? from : "?");
      return;
    }
    proxy_watch(c, p);
    p->all = all;
    memcpy(p->reply, reply, rl + 1);
    mb_request *r;
    rc = mb_link_deliver(c->svc, e->dest, e->key, m, all, proxy_done, p, &r, &takers);
    p->k = takers;
    if (rc >= 0) proxy_bound(nm, r);
    /* the answers come later, from a task: the acknowledgement goes first */
    if (all) ack(c, reply, kind, rc < 0 ? 0 : takers);
    if (rc < 0 && all) {
      proxy_free(p);
    } else if (rc < 0) { /* nothing here takes it now: the requester hears why */
      mb_answer a = {rc, NULL, NULL};
      char err[400];
      snprintf(err, sizeof err, "%s: no listener of '%s' took it", mb_strerror(rc), e->dest);
      a.error = err;
      proxy_done(p, &a, 1);
    }
  } else {
    mb_msg_ref(m); /* for the dead letter of a message this node cannot take */
    rc = mb_link_deliver(c->svc, e->dest, e->key, m, 0, NULL, NULL, NULL, &takers);
    if (confirm && reply) ack(c, reply, "confirm", rc < 0 ? 0 : takers);
    if (rc < 0) { /* lost here: said so (and counted) */
      char lost[400];
      if (rc == MB_EFULL)
        snprintf(lost, sizeof lost, "dropped: this node cannot keep up at '%s' (its queue is "
                                    "full, max_queue) and lost a message from node %s",
                 e->dest, from ? from : "?");
      else
        snprintf(lost, sizeof lost, "dropped: a message from node %s came to '%s' after its "
                                    "last listener here had left (%s)",
                 from ? from : "?", e->dest, mb_strerror(rc));
      mb_link_dropped(c->rt, e->dest, m, lost);
    }
    mb_msg_unref(m);
  }
  if (rc < 0) count(c, &c->st.dropped, 1);
}

/* A node asks for this node's statistics of a destination (mb.NS.stats,
 * header Mb-Dest): an acknowledgement with 1 group (0: none here), then
 * the counts as a table. */
static void on_stats_msg(mb_cluster *c, natsMsg *nm) {
  const char *dest = header(nm, "Mb-Dest"), *to = header(nm, "Mb-Reply");
  mb_stats st;
  if (!dest || !to || !*to) {
    bad(c, nm, "no Mb-Dest and Mb-Reply headers");
    return;
  }
  int have = mb_dest_stats(c->rt, dest, &st) == MB_OK;
  ack(c, to, "stats", have);
  if (!have) return;
  mb_buf b = {0};
  long at = mb_enc_table_begin(&b);
  int rc = at < 0;
  uint32_t n = 0;
#define F(f)                                                                         \
  if (!rc) {                                                                         \
    rc |= mb_enc_str(&b, #f, strlen(#f)) | mb_enc_int(&b, (int64_t)st.f);            \
    n++;                                                                             \
  }
  F(listeners) F(sent) F(rejected) F(deliveries) F(delivered) F(failed) F(dropped)
  F(pending) F(largest_pending) F(in_flight) F(replies) F(timeouts) F(redelivered)
#undef F
  static const char *const types[] = {"parallel", "serial", "synchronous"};
  const char *type = types[st.type <= MB_SYNCHRONOUS ? st.type : 0];
  if (!rc) {
    rc |= mb_enc_str(&b, "type", 4) | mb_enc_str(&b, type, strlen(type));
    n++;
  }
  if (!rc && mb_dest_cluster(c->rt, dest) == 3) { /* the other nodes compare it (probe_k) */
    rc |= mb_enc_str(&b, "durable", 7) | mb_enc_bool(&b, 1);
    n++;
  }
  mb_msg *m = NULL;
  if (!rc) {
    mb_enc_table_end(&b, at, 0, n);
    m = mb_msg_new(b.p, b.len, NULL, 0, NULL);
  }
  mb_buf_free(&b);
  if (!m) return;
  char id[MB_NODE_ID_MAX];
  mb_node_id_format(c->node, mb_msg_id(m), id);
  const char *extra[] = {"Mb-Group", "0", NULL};
  publish(c, to, NULL, m, "reply", id, extra);
  mb_msg_unref(m);
}

/* A reply from another node to a send of this node with reply_to:
 * mb.NS.n.NODE.t, headers Mb-Dest (the reply_to) and Mb-Response (the
 * send's id here). Sent on to that destination as mb_reply would. */
static void on_home_msg(mb_cluster *c, natsMsg *nm) {
  const char *dest = header(nm, "Mb-Dest"), *resp = header(nm, "Mb-Response");
  const char *why = "no valid Mb-Dest and Mb-Response headers";
  size_t nl = strlen(c->node);
  uint64_t id;
  if (!dest || !mb_dest_name_valid(dest, strlen(dest)) || !resp || strncmp(resp, c->node, nl) ||
      resp[nl] != ':' || mb_id_parse(resp + nl + 1, strlen(resp + nl + 1), &id)) {
    bad(c, nm, why);
    return;
  }
  mb_msg *m = decode(nm, 0, &why);
  if (!m) {
    bad(c, nm, why);
    return;
  }
  /* to the destination only: a request of this node is never answered here */
  int rc = mb_link_reply_home(c->svc, dest, id, m);
  if (rc < 0 && rc != MB_PENDING)
    report(c, "mb: cluster: a reply from node %s to '%s' was not delivered: %s",
           header(nm, "Mb-Node") ? header(nm, "Mb-Node") : "?", dest, mb_strerror(rc));
}

/* An answer to one of this node's requests: mb.NS.n.NODE.r.HEX */
static void on_inbox_msg(mb_cluster *c, natsMsg *nm) {
  const char *subj = natsMsg_GetSubject(nm);
  size_t il = strlen(c->inbox);
  uint64_t id;
  if (strncmp(subj, c->inbox, il) || strncmp(subj + il, "r.", 2) ||
      mb_id_parse(subj + il + 2, strlen(subj + il + 2), &id)) {
    bad(c, nm, "not an answer this node knows");
    return;
  }
  if (id == 0) { /* a node starting with this node's name asks whether it is taken */
    const char *reply = natsMsg_GetReply(nm);
    if (reply && *reply) natsConnection_Publish(c->nc, reply, "here", 4);
    return;
  }
  int rc;
  {
    const char *kind = header(nm, "Mb-Kind"), *node = header(nm, "Mb-Node");
    const char *gs = header(nm, "Mb-Group");
    char *end = NULL;
    unsigned long gi = gs ? strtoul(gs, &end, 10) : 0;
    if (gs && (end == gs || *end || gi > 65000 || !node)) {
      bad(c, nm, "no valid Mb-Group and Mb-Node headers");
      return;
    }
    uint64_t group = gs ? group_number(node, (unsigned)gi) : 0;
    if (kind && !strcmp(kind, "ack")) {
      const char *k = header(nm, "Mb-Groups");
      unsigned long n = k ? strtoul(k, &end, 10) : 0;
      if (!k || end == k || *end || n > 65000 || !node || !mb_cluster_name_valid(node)) {
        bad(c, nm, "no valid Mb-Groups and Mb-Node headers");
        return;
      }
      on_ack(c, id, node, header(nm, "Mb-For"), (size_t)n);
      return;
    }
    if (kind && !strcmp(kind, "fail")) {
      const char *e = header(nm, "Mb-Error");
      rc = mb_link_answer(c->rt, id, group, MB_EFAILED, NULL, e ? e : "failed: (no reason given)");
    } else {
      const char *why = NULL;
      mb_msg *m = decode(nm, 1, &why);
      if (!m) {
        bad(c, nm, why);
        return;
      }
      rc = mb_link_answer(c->rt, id, group, MB_OK, m, NULL);
    }
  }
  if (rc) count(c, &c->st.late, 1);
}

/* nats.c's delivery thread: the server's "no responders" for a request of
 * this node (mb.NS.n.NODE.x.ID). A synchronous subscription would not do:
 * nats.c's NextMsg turns such a message into an error without its subject. */
static void on_no_responders(natsConnection *nc, natsSubscription *s, natsMsg *nm, void *ud) {
  mb_cluster *c = ud;
  (void)nc;
  (void)s;
  const char *subj = natsMsg_GetSubject(nm);
  size_t il = strlen(c->inbox);
  uint64_t id = 0;
  int marker = 0;
  if (!atomic_load(&c->closing) && !strncmp(subj, c->inbox, il) && !strncmp(subj + il, "x.", 2)) {
    const char *tok = subj + il + 2;
    if (!strcmp(tok, "probe")) { /* the answer to this node's name probe (start) */
      pthread_mutex_lock(&c->mu);
      if (!c->probe) c->probe = natsMsg_IsNoResponders(nm) ? 1 : 2;
      pthread_cond_broadcast(&c->nr_cond);
      pthread_mutex_unlock(&c->mu);
    } else if (tok[0] == 'm' && !natsMsg_IsNoResponders(nm))
      marker = 1;
    else if (!natsMsg_IsNoResponders(nm) || mb_id_parse(tok, strlen(tok), &id) ||
             !mb_link_answer(c->rt, id, 0, MB_ENOLISTENERS, NULL, NULL))
      id = 0; /* not ours, or a request's: answered */
    /* a marker, or a send nobody took: worker 0 sees to it, in this order */
    heard *h = (marker || id) ? malloc(sizeof *h) : NULL;
    if (h) {
      h->c = c;
      h->marker = marker;
      h->id = id;
      if (mb_service_post(c->svc, heard_task, h)) free(h);
    }
  }
  natsMsg_Destroy(nm);
}

static void nr_complete(void *ud) {
  mb_cluster *c = ud;
  pthread_mutex_lock(&c->mu);
  c->nr_done = 1;
  pthread_cond_signal(&c->nr_cond);
  pthread_mutex_unlock(&c->mu);
}

static void drain_task(void *arg);

/* Worker 0: hands what the subscriptions hold to the core. */
static void drain(void *ud) {
  mb_cluster *c = ud;
  item items[BATCH];
  size_t n = 0;
  int more = 0;
  sub *gone = NULL;
  pthread_mutex_lock(&c->mu);
  for (sub **pp = &c->subs; *pp;) { /* the previous batch is done: take the dead */
    sub *e = *pp;
    if (e->dead) {
      *pp = e->next;
      e->next = gone;
      gone = e;
    } else
      pp = &e->next;
  }
  pthread_mutex_unlock(&c->mu);
  while (gone) { /* what reached them before they went is lost here: said so */
    sub *e = gone;
    gone = e->next;
    for (size_t i = 0; i < e->nleft && e->durable; i++) /* stored: delivered elsewhere */
      mb_durable_unreceived(c->durable, e->left[i]);
    for (size_t i = 0; i < e->nleft && !e->durable; i++) {
      const char *why = NULL, *from = header(e->left[i], "Mb-Node");
      mb_msg *m = decode(e->left[i], 1, &why);
      if (m) {
        char lost[400];
        snprintf(lost, sizeof lost, "dropped: a message from node %s came to '%s' after its "
                                    "last listener here had left",
                 from ? from : "?", e->dest);
        mb_link_dropped(c->rt, e->dest, m, lost);
        mb_msg_unref(m);
      }
      count(c, &c->st.dropped, 1);
    }
    sub_free(e);
  }
  pthread_mutex_lock(&c->mu);
  for (sub *e = c->subs; e; e = e->next) {
    int msgs = 0, bytes = 0;
    if (natsSubscription_GetPending(e->ns, &msgs, &bytes) != NATS_OK) continue;
    for (; msgs > 0; msgs--) {
      if (n == BATCH) {
        more = 1;
        break;
      }
      natsMsg *m = NULL;
      if (natsSubscription_NextMsg(&m, e->ns, 0) != NATS_OK || !m) break;
      items[n].m = m;
      items[n++].s = e;
    }
    int64_t dropped = 0;
    if (natsSubscription_GetDropped(e->ns, &dropped) == NATS_OK && (uint64_t)dropped > e->lost) {
      uint64_t d = (uint64_t)dropped - e->lost;
      e->lost = (uint64_t)dropped;
      c->st.dropped += d;
      pthread_mutex_unlock(&c->mu);
      report(c, "mb: cluster: this node could not keep up at '%s': %" PRIu64
                " message(s) lost (NATS slow consumer), counted as dropped",
             e->dest ? e->dest : "(its inbox)", d);
      pthread_mutex_lock(&c->mu);
    }
  }
  pthread_mutex_unlock(&c->mu);
  for (size_t i = 0; i < n; i++) {
    if (items[i].s->durable)
      mb_durable_receive(c->durable, items[i].s->dest, items[i].s->key, items[i].m);
    else if (items[i].s->dest)
      on_dest_msg(c, items[i].s, items[i].m);
    else if (items[i].s->home)
      on_home_msg(c, items[i].m);
    else if (items[i].s->stats)
      on_stats_msg(c, items[i].m);
    else
      on_inbox_msg(c, items[i].m);
  }
  /* together, after the batch: nats.c's collector is woken once for them */
  for (size_t i = 0; i < n; i++) natsMsg_Destroy(items[i].m);
  if (more && !c->drain_posted) {
    c->drain_posted = 1;
    mb_service_post(c->svc, drain_task, c);
  }
}

static void drain_task(void *arg) {
  mb_cluster *c = arg;
  c->drain_posted = 0;
  drain(c);
}

/* ---- the connection's state --------------------------------------------------------- */

static void down_task(void *arg) {
  mb_cluster *c = arg;
  mb_link_close_requests(c->rt, "closed: the cluster connection is down");
  /* sends not confirmed yet may or may not have reached a listener: each
   * is counted dropped and reported, never left unsaid */
  for (;;) {
    mb_msg *m = NULL;
    pthread_mutex_lock(&c->mu);
    while (c->sq_len && !m) {
      m = c->sq[c->sq_head];
      c->sq_head = (c->sq_head + 1) % c->sq_cap;
      c->sq_len--;
      c->sq_base++;
    }
    pthread_mutex_unlock(&c->mu);
    if (!m) break;
    mb_link_dropped(c->rt, mb_msg_destination(m), m,
                    "dropped: not yet confirmed when the connection to the cluster was lost "
                    "(it may have reached listeners)");
    count(c, &c->st.dropped, 1);
    mb_msg_unref(m);
  }
  release_sent(c, UINT64_MAX); /* their markers will not come */
  mb_link_state(c->rt, 0);
  if (c->cfg.state) c->cfg.state(c->cfg.ud, 0);
}

static void up_task(void *arg) {
  mb_cluster *c = arg;
  mb_link_state(c->rt, 1);
  if (c->cfg.state) c->cfg.state(c->cfg.ud, 1);
}

static void on_disconnected(natsConnection *nc, void *ud) {
  mb_cluster *c = ud;
  (void)nc;
  if (atomic_load(&c->closing)) return;
  if (atomic_exchange(&c->up, 0)) {
    count(c, &c->st.down, 1);
    mb_service_post(c->svc, down_task, c);
  }
}

static void on_reconnected(natsConnection *nc, void *ud) {
  mb_cluster *c = ud;
  (void)nc;
  if (atomic_load(&c->closing)) return;
  if (!atomic_exchange(&c->up, 1)) {
    count(c, &c->st.up, 1);
    mb_service_post(c->svc, up_task, c);
  }
}

/* nats.c's last callback for the connection: c may go after it. */
static void on_closed(natsConnection *nc, void *ud) {
  mb_cluster *c = ud;
  (void)nc;
  pthread_mutex_lock(&c->mu);
  c->closed = 1;
  pthread_cond_broadcast(&c->nr_cond);
  pthread_mutex_unlock(&c->mu);
}

static void on_error(natsConnection *nc, natsSubscription *s, natsStatus err, void *ud) {
  (void)nc;
  (void)s;
  if (atomic_load(&((mb_cluster *)ud)->closing)) return;
  if (err != NATS_SLOW_CONSUMER) /* counted by the drain, per subscription */
    report(ud, "mb: cluster: %s", natsStatus_GetText(err));
}

/* ---- durable destinations (mb_durable.c) ------------------------------------------- */

static void durable_report(void *c, const char *line) { report(c, "%s", line); }

static natsStatus durable_publish(void *c, const char *subject, const char *reply, const mb_msg *m,
                                  const char *id) {
  return publish(c, subject, reply, m, "send", id, NULL);
}

static mb_msg *durable_decode(natsMsg *nm, const char **why) { return decode(nm, 1, why); }

static int link_outcome(void *ud, void *tag, int status) {
  return mb_durable_outcome(((mb_cluster *)ud)->durable, tag, status);
}

int mb_cluster_durable(mb_cluster *c, const char *name, mb_dest_type type,
                       const mb_durable_opts *o, char *err, size_t errlen) {
  return mb_durable_declare(c->durable, name, type, o, err, errlen);
}

/* ---- start and stop ---------------------------------------------------------------- */

/* The URL as people may see it: user:password@ becomes user:***@, and a
 * token (TOKEN@, no colon) becomes ***@; each URL of a list on its own. */
static char *shown_url(const char *url) {
  size_t len = strlen(url);
  char *s = malloc(len + len / 3 * 4 + 5); /* each "://" (3 bytes) may grow by 4 */
  if (!s) return NULL;
  size_t at = 0;
  for (const char *p = url; *p;) {
    const char *scheme = strstr(p, "://");
    if (!scheme) {
      memcpy(s + at, p, strlen(p));
      at += strlen(p);
      break;
    }
    const char *host = scheme + 3, *end = strchr(host, ',');
    if (!end) end = host + strlen(host);
    memcpy(s + at, p, (size_t)(host - p));
    at += (size_t)(host - p);
    const char *mark = NULL; /* the last '@' of this URL: the password may hold one */
    for (const char *q = host; q < end; q++)
      if (*q == '@') mark = q;
    if (mark) {
      const char *colon = memchr(host, ':', (size_t)(mark - host));
      if (colon) {
        memcpy(s + at, host, (size_t)(colon - host) + 1);
        at += (size_t)(colon - host) + 1;
      }
      memcpy(s + at, "***", 3);
      at += 3;
      host = mark;
    }
    memcpy(s + at, host, (size_t)(end - host));
    at += (size_t)(end - host);
    p = end;
  }
  s[at] = 0;
  return s;
}

/* nats.c's library (its timer, callback and cleanup threads): opened by
 * the first cluster of the process and closed, its threads gone, when the
 * last one stops, so that a stopped node leaves nothing running (valgrind:
 * their stacks were "possibly lost" at exit). lib_mu also keeps nats_Open
 * and nats_Close apart, as nats.c requires. */
static pthread_mutex_t lib_mu = PTHREAD_MUTEX_INITIALIZER;
static int lib_users;

static natsStatus lib_open(mb_cluster *c) {
  pthread_mutex_lock(&lib_mu);
  natsStatus s = nats_Open(-1);
  if (s == NATS_OK) {
    lib_users++;
    c->lib = 1;
  }
  pthread_mutex_unlock(&lib_mu);
  return s;
}

static void lib_close(mb_cluster *c) {
  if (!c->lib) return;
  pthread_mutex_lock(&lib_mu);
  if (--lib_users == 0) nats_CloseAndWait(1000);
  pthread_mutex_unlock(&lib_mu);
}

static void cluster_free(mb_cluster *c) {
  mb_durable_stop(c->durable); /* its thread and subscription, before the connection */
  if (c->loop) ev_timer_stop(c->loop, &c->win_timer);
  while (c->wins) {
    win *w = c->wins;
    c->wins = w->next;
    win_free(w);
  }
  known_free(c);
  if (c->sq) release_sent(c, UINT64_MAX);
  free(c->sq);
  free(c->mk);
  while (c->subs) {
    sub *e = c->subs;
    c->subs = e->next;
    sub_free(e);
  }
  atomic_store(&c->closing, 1);
  /* nats.c's threads may be in a callback of c: wait (bounded) for the
   * last of the subscription's and of the connection's */
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 2;
  if (c->nr) {
    natsSubscription_Unsubscribe(c->nr);
    pthread_mutex_lock(&c->mu);
    while (!c->nr_done && pthread_cond_timedwait(&c->nr_cond, &c->mu, &until) == 0) continue;
    pthread_mutex_unlock(&c->mu);
    natsSubscription_Destroy(c->nr);
  }
  if (c->nc) {
    /* the unsubscriptions leave now: with nothing buffered, Close does not
     * wait for a flush that only the loop could make */
    if (c->ev) mb_nats_ev_flush(c->ev, 0.5); /* (on worker 0, as start and stop are) */
    natsConnection_Close(c->nc);
    pthread_mutex_lock(&c->mu);
    while (!c->closed && pthread_cond_timedwait(&c->nr_cond, &c->mu, &until) == 0) continue;
    pthread_mutex_unlock(&c->mu);
    natsConnection_Destroy(c->nc);
  }
  if (c->ev) mb_nats_ev_free(c->ev);
  mb_durable_free(c->durable);
  if (c->svc) mb_service_free(c->svc);
  for (size_t i = 0; i < c->nspent; i++) natsMsg_Destroy(c->spent[i]); /* (see spent) */
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->nr_cond);
  lib_close(c);
  free(c->ns);
  free(c->node);
  free(c->url);
  free(c);
}

/* At start, before this node listens at its own subjects: does a node of
 * this name answer at them? Publishes to mb.NS.n.NODE.r.0 (a live node
 * answers "here"; with none, the server says "no responders") and reads
 * the socket by hand for at most 2 s: not by turning worker 0's loop, which
 * may be running (mb.setup from a service), and whose other callbacks
 * (timers, tasks, Lua) would run inside this call. */
static int name_taken(mb_cluster *c) {
  char subj[200], reply[200];
  snprintf(subj, sizeof subj, "%sr.0", c->inbox);
  snprintf(reply, sizeof reply, "%sx.probe", c->inbox);
  if (natsConnection_PublishRequest(c->nc, subj, reply, NULL, 0) != NATS_OK) return 0;
  int got = 0;
  for (int i = 0; i < 1000 && !got; i++) {
    mb_nats_ev_flush(c->ev, 0.1);
    mb_nats_ev_poll(c->ev);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 2000000;
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&c->mu);
    if (!c->probe) pthread_cond_timedwait(&c->nr_cond, &c->mu, &until);
    got = c->probe;
    pthread_mutex_unlock(&c->mu);
  }
  return got == 2;
}

mb_cluster *mb_cluster_start(mb_runtime *rt, const mb_cluster_config *cfg, char *err,
                             size_t errlen) {
  char host[64] = "node", node[96];
  const char *ns = cfg->ns ? cfg->ns : "default";
  if (!cfg->url || !*cfg->url) {
    snprintf(err, errlen, "no server URL");
    return NULL;
  }
  if (!mb_cluster_name_valid(ns)) {
    snprintf(err, errlen, "the namespace must be 1-64 characters of A-Z a-z 0-9 _ -");
    return NULL;
  }
  if (cfg->node) {
    if (!mb_cluster_name_valid(cfg->node)) {
      snprintf(err, errlen, "the node name must be 1-64 characters of A-Z a-z 0-9 _ -");
      return NULL;
    }
    snprintf(node, sizeof node, "%s", cfg->node);
  } else {
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    for (char *p = host; *p; p++)
      if (!mb_cluster_name_byte((unsigned char)*p)) *p = '-';
    snprintf(node, sizeof node, "%.40s-%ld", host, (long)getpid());
  }
  /* secrets the configuration leaves out come from the environment */
  mb_cluster_config with = *cfg;
  if (!with.user) with.user = getenv("MB_NATS_USER");
  if (!with.password) with.password = getenv("MB_NATS_PASSWORD");
  if (!with.token) with.token = getenv("MB_NATS_TOKEN");
  if (!with.creds) with.creds = getenv("MB_NATS_CREDS");
  cfg = &with;
  mb_cluster *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->nr_cond, NULL);
  c->rt = rt;
  c->cfg = (mb_cluster_config){.report = cfg->report, .state = cfg->state, .ud = cfg->ud};
  c->loop = mb_runtime_loop(rt);
  c->ack_wait = ACK_WAIT;
  ev_timer_init(&c->win_timer, win_timer_cb, 0, 0);
  c->win_timer.data = c;
  c->ns = strdup(ns);
  c->node = strdup(node);
  c->url = shown_url(cfg->url);
  c->svc = mb_service_new(rt, "mb/cluster", 0);
  c->ev = mb_nats_ev_new(c->loop);
  snprintf(c->inbox, sizeof c->inbox, "mb.%s.n.%s.", ns, node);
  natsOptions *o = NULL;
  natsStatus s = c->ns && c->node && c->url && c->svc && c->ev ? lib_open(c) : NATS_NO_MEMORY;
  if (s == NATS_OK) s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetURL(o, cfg->url);
  if (s == NATS_OK) s = natsOptions_SetName(o, node);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 200);
  if (s == NATS_OK && (cfg->user || cfg->password))
    s = natsOptions_SetUserInfo(o, cfg->user, cfg->password);
  if (s == NATS_OK && cfg->token) s = natsOptions_SetToken(o, cfg->token);
  if (s == NATS_OK && cfg->creds) s = natsOptions_SetUserCredentialsFromFiles(o, cfg->creds, NULL);
  if (s == NATS_OK && (cfg->tls_ca || cfg->tls_cert)) s = natsOptions_SetSecure(o, true);
  if (s == NATS_OK && cfg->tls_ca) s = natsOptions_LoadCATrustedCertificates(o, cfg->tls_ca);
  if (s == NATS_OK && cfg->tls_cert)
    s = natsOptions_LoadCertificatesChain(o, cfg->tls_cert, cfg->tls_key);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, c);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_reconnected, c);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_error, c);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(o, on_closed, c);
  if (s == NATS_OK) s = mb_nats_ev_setup(c->ev, o);
  if (s == NATS_OK) mb_nats_ev_weak(c->ev); /* the bus runs while it has work, not while connected */
  if (s == NATS_OK) s = natsConnection_Connect(&c->nc, o);
  char inbox_all[200];
  snprintf(inbox_all, sizeof inbox_all, "%sx.*", c->inbox);
  if (s == NATS_OK) s = natsConnection_Subscribe(&c->nr, c->nc, inbox_all, on_no_responders, c);
  if (s == NATS_OK) s = natsSubscription_SetOnCompleteCB(c->nr, nr_complete, c);
  int taken = s == NATS_OK && name_taken(c);
  snprintf(inbox_all, sizeof inbox_all, "%sr.*", c->inbox);
  sub *in = s == NATS_OK && !taken ? calloc(1, sizeof *in) : NULL;
  sub *home = s == NATS_OK && !taken ? calloc(1, sizeof *home) : NULL;
  if (s == NATS_OK && !taken && (!in || !home)) s = NATS_NO_MEMORY;
  if (s == NATS_OK && !taken) s = natsConnection_SubscribeSync(&in->ns, c->nc, inbox_all);
  snprintf(inbox_all, sizeof inbox_all, "%st", c->inbox);
  if (s == NATS_OK && !taken) s = natsConnection_SubscribeSync(&home->ns, c->nc, inbox_all);
  if (home) home->home = 1;
  sub *st = s == NATS_OK && !taken ? calloc(1, sizeof *st) : NULL;
  if (s == NATS_OK && !taken && !st) s = NATS_NO_MEMORY;
  snprintf(inbox_all, sizeof inbox_all, "mb.%s.stats", c->ns);
  if (s == NATS_OK && !taken) s = natsConnection_SubscribeSync(&st->ns, c->nc, inbox_all);
  if (st) st->stats = 1;
  natsOptions_Destroy(o);
  if (taken) {
    snprintf(err, errlen, "the node name '%s' is in use in namespace '%s' (another node has it): "
                          "give this one another (--node NAME, or cluster.node)", c->node, c->ns);
    cluster_free(c);
    return NULL;
  }
  if (s != NATS_OK) {
    natsStatus ls;
    const char *last = nats_GetLastError(&ls);
    snprintf(err, errlen, "cannot connect to %s: %s", c->url ? c->url : "the server",
             last && *last ? last : natsStatus_GetText(s));
    if (in) sub_free(in);
    if (home) sub_free(home);
    if (st) sub_free(st);
    cluster_free(c);
    return NULL;
  }
  mb_durable_host dh = {.rt = rt, .svc = c->svc, .nc = c->nc, .ns = c->ns, .node = c->node,
                        .c = c, .report_fn = durable_report, .publish_fn = durable_publish,
                        .decode_fn = durable_decode};
  if (!(c->durable = mb_durable_new(&dh, err, errlen))) {
    sub_free(in);
    sub_free(home);
    sub_free(st);
    cluster_free(c);
    return NULL;
  }
  in->next = home;
  home->next = st;
  c->subs = in;
  atomic_store(&c->up, 1);
  mb_nats_ev_set_read_hook(c->ev, drain, c);
  mb_link link = {.ud = c, .node = c->node, .send = link_send, .interest = link_interest,
                  .outcome = link_outcome};
  mb_runtime_link(rt, &link);
  return c;
}

void mb_cluster_stop(mb_cluster *c) {
  if (!c) return;
  mb_runtime_link(c->rt, NULL);
  proxies_fail(c);
  /* what the last turn published leaves before the connection closes
   * (else natsConnection_Close would wait for a flush that needs the loop) */
  mb_nats_ev_flush(c->ev, 1.0);
  cluster_free(c);
}

const char *mb_cluster_node(const mb_cluster *c) { return c->node; }
const char *mb_cluster_namespace(const mb_cluster *c) { return c->ns; }
const char *mb_cluster_url(const mb_cluster *c) { return c->url; }
size_t mb_cluster_max_payload(const mb_cluster *c) {
  int64_t n = natsConnection_GetMaxPayload(c->nc);
  return n > 0 ? (size_t)n : 0;
}

int mb_cluster_up(const mb_cluster *c) { return atomic_load(&((mb_cluster *)c)->up); }

void mb_cluster_get_stats(mb_cluster *c, mb_cluster_stats *st) {
  pthread_mutex_lock(&c->mu);
  *st = c->st;
  pthread_mutex_unlock(&c->mu);
}
