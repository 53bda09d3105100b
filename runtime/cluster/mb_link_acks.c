/*
 * mb_link_acks.c — the cluster link's bookkeeping of acknowledgements and
 * answers (see mb_link_private.h):
 *   - windows: a request_all, synchronous send or statistics probe waits
 *     ACK_WAIT for the nodes to acknowledge it (mb_link_window ends it),
 *     sooner once every node known at its destination has;
 *   - sends kept until the server's "no responders" for them could have
 *     come (a marker to this node's own x subject), so that a send nobody
 *     receives is dropped and counted;
 *   - proxies: another node's (or a plain NATS client's) request delivered
 *     here, answered back when its listeners have;
 *   - acknowledgements this node sends.
 * Owns c->wins, c->known, the ring of kept sends and markers, c->proxies
 * and c->syncs. Uses mb_link_pub.c and the core's link calls (mb.h).
 * Tests: the specs in spec/cluster.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/mb_link_private.h"

/* ---- acknowledgements: request_all and synchronous sends --------------------------- */

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
void mbc_win_open(mb_cluster *c, uint64_t id, const char *dest, double secs) {
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
uint64_t mbc_group_number(const char *node, unsigned i) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)node; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return ((h | 1) << 16) + i + 1;
}

/* Worker 0: node acknowledged request id with k groups (for = its kind). */
void mbc_on_ack(mb_cluster *c, uint64_t id, const char *node, const char *for_kind, size_t k) {
  if (for_kind && !strcmp(for_kind, "confirm")) {
    if (k && mb_link_answer(c->rt, id, 0, MB_OK, NULL, NULL)) mbc_count(c, &c->st.late, 1);
    return;
  }
  if (mb_link_expect(c->rt, id, mbc_group_number(node, 0), k)) mbc_count(c, &c->st.late, 1);
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

void mbc_acks_init(mb_cluster *c) {
  c->heard_tail = &c->heard;
  c->ack_wait = ACK_WAIT;
  ev_timer_init(&c->win_timer, win_timer_cb, 0, 0);
  c->win_timer.data = c;
}

/* ---- sends that wait for their "no responders" ----------------------------------- */

static void mark_task(void *arg);

/* Keeps m until a marker shows no "no responders" came for it. */
void mbc_keep_sent(mb_cluster *c, mb_msg *m) {
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

/* A marker in flight: its sequence number (x.m<SEQ>) and the ring index of
 * the kept sends it covers up to. */
typedef struct mark {
  uint64_t seq, upto;
} mark;

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
    mark *v = malloc(cap * sizeof *v);
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
  uint64_t seq = c->marks_sent++;
  c->mk[(c->mk_head + c->mk_len++) % c->mk_cap] = (mark){seq, c->sq_base + c->sq_len};
  pthread_mutex_unlock(&c->mu);
  snprintf(subj, sizeof subj, "%sx.m%" PRIu64, c->inbox, seq);
  if (natsConnection_Publish(c->nc, subj, NULL, 0) != NATS_OK)
    release_sent(c, UINT64_MAX); /* no marker: what it covered is not watched */
}

/* What the no-responders subscription heard: a marker (its sequence
 * number) or the "no responders" of a send (its id). */
typedef struct heard {
  struct heard *next;
  int marker;
  uint64_t n;
} heard;

/* Worker 0: marker seq came. It covers the markers before it too (the
 * server answers in order: one that never came, dropped on the way, is
 * over as well); a marker of no send in flight (one from before the
 * connection went down, or not this node's) changes nothing. */
static void heard_marker(mb_cluster *c, uint64_t seq) {
  uint64_t upto = 0;
  pthread_mutex_lock(&c->mu);
  while (seq < c->marks_sent && c->mk_len && c->mk[c->mk_head].seq <= seq) {
    upto = c->mk[c->mk_head].upto;
    c->mk_head = (c->mk_head + 1) % c->mk_cap;
    c->mk_len--;
  }
  pthread_mutex_unlock(&c->mu);
  release_sent(c, upto);
}

/* Worker 0: the server's "no responders" for send id. */
static void heard_dropped(mb_cluster *c, uint64_t id) {
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
    if (*slot && mb_msg_id(*slot) == id) {
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
    mbc_count(c, &c->st.dropped, 1);
    mb_msg_unref(m);
  } else {
    mbc_count(c, &c->st.late, 1);
  }
}

/* Worker 0: sees to what was heard, in order. */
static void heard_task(void *arg) {
  mb_cluster *c = arg;
  pthread_mutex_lock(&c->mu);
  heard *h = c->heard;
  c->heard = NULL;
  c->heard_tail = &c->heard;
  c->heard_posted = 0;
  pthread_mutex_unlock(&c->mu);
  while (h) {
    heard *next = h->next;
    if (h->marker)
      heard_marker(c, h->n);
    else
      heard_dropped(c, h->n);
    free(h);
    h = next;
  }
}

void mbc_heard_free(mb_cluster *c) {
  while (c->heard) {
    heard *h = c->heard;
    c->heard = h->next;
    free(h);
  }
  c->heard_tail = &c->heard;
}

/* nats.c's delivery thread: the server's "no responders" for a request of
 * this node (mb.NS.n.NODE.x.ID). A synchronous subscription would not do:
 * nats.c's NextMsg turns such a message into an error without its subject. */
void mbc_on_no_responders(natsConnection *nc, natsSubscription *s, natsMsg *nm, void *ud) {
  mb_cluster *c = ud;
  (void)nc;
  (void)s;
  const char *subj = natsMsg_GetSubject(nm);
  size_t il = strlen(c->inbox);
  uint64_t n = 0;
  int marker = 0;
  if (!atomic_load(&c->closing) && !strncmp(subj, c->inbox, il) && !strncmp(subj + il, "x.", 2)) {
    const char *tok = subj + il + 2;
    if (!strcmp(tok, "probe")) { /* the answer to this node's name probe (start) */
      pthread_mutex_lock(&c->mu);
      if (!c->probe) c->probe = natsMsg_IsNoResponders(nm) ? 1 : 2;
      pthread_cond_broadcast(&c->nr_cond);
      pthread_mutex_unlock(&c->mu);
    } else if (tok[0] == 'm' && !natsMsg_IsNoResponders(nm)) {
      const char *q = tok + 1;
      while (*q >= '0' && *q <= '9' && q - tok <= 19) n = n * 10 + (uint64_t)(*q++ - '0');
      marker = q > tok + 1 && !*q; /* else not one of this node's markers */
    } else if (!natsMsg_IsNoResponders(nm) || mb_id_parse(tok, strlen(tok), &n) ||
               !mb_link_answer(c->rt, n, 0, MB_ENOLISTENERS, NULL, NULL)) {
      n = 0; /* not ours, or a request's: answered */
    }
    /* a marker, or a send nobody took: worker 0 sees to it, in this order
     * (queued here, so that what a task never ran for is freed at stop) */
    heard *h = marker || n ? malloc(sizeof *h) : NULL;
    if (h) {
      h->next = NULL;
      h->marker = marker;
      h->n = n;
      pthread_mutex_lock(&c->mu);
      *c->heard_tail = h;
      c->heard_tail = &h->next;
      int post = !c->heard_posted;
      c->heard_posted = 1;
      pthread_mutex_unlock(&c->mu);
      if (post && mb_service_post(c->svc, heard_task, c)) {
        pthread_mutex_lock(&c->mu);
        c->heard_posted = 0; /* the next one posts it */
        pthread_mutex_unlock(&c->mu);
      }
    }
  }
  natsMsg_Destroy(nm);
}

void mbc_nr_complete(void *ud) {
  mb_cluster *c = ud;
  pthread_mutex_lock(&c->mu);
  c->nr_done = 1;
  pthread_cond_signal(&c->nr_cond);
  pthread_mutex_unlock(&c->mu);
}

void mbc_sent_lost(mb_cluster *c) {
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
    mbc_count(c, &c->st.dropped, 1);
    mb_msg_unref(m);
  }
  release_sent(c, UINT64_MAX); /* their markers will not come */
}

void mbc_acks_free(mb_cluster *c) {
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
  c->sq = NULL;
  c->mk = NULL;
}

/* ---- answering the requests of other nodes -------------------------------------------- */

/* Unlinks p (a request of another node that this node runs) and frees it. */
void mbc_proxy_free(proxy *p) {
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
  int64_t max = natsConnection_GetMaxPayload(c->nc);
  if (s == NATS_MAX_PAYLOAD)
    snprintf(err, sizeof err, "failed: the reply is too large for the cluster (over the NATS "
                              "server's max_payload of %zu bytes) (node %s)",
             max > 0 ? (size_t)max : 0, c->node);
  else
    snprintf(err, sizeof err, "failed: the reply was not sent: %s (node %s)",
             natsStatus_GetText(s), c->node);
  mbc_report(c, "mb: cluster: a reply to a request of another node was not sent: %s", err + 8);
  mb_msg *none = mb_msg_new(&nil, 1, NULL, 0, NULL);
  if (!none) return NATS_NO_MEMORY;
  mb_id_format(mb_msg_id(none), hex);
  snprintf(id, sizeof id, "%s:%s", c->node, hex);
  const char *extra[] = {"Mb-Error", err, "Mb-Group", group, NULL};
  s = mbc_publish(c, to, NULL, none, "fail", id, extra);
  mb_msg_unref(none);
  return s;
}

void mbc_proxy_done(void *ud, const mb_answer *answers, size_t n) {
  proxy *p = ud;
  mb_cluster *c = p->c;
  for (size_t i = 0; i < n; i++)
    if (answers[i].status == MB_ETIMEOUT) { /* its requester has given up too (mbc_proxy_bound) */
      mbc_proxy_free(p);
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
      mbc_report(c, "mb: cluster: a reply to a plain NATS client was not sent: %s (%zu bytes)",
             natsStatus_GetText(s), b.len);
    mb_buf_free(&b);
    mb_buf_free(&v);
  } else if (p->home) { /* the reply goes home to reply_to; a failure was reported here */
    s = NATS_OK;
    if (a && a->status == MB_OK && a->reply) {
      mb_node_id_format(c->node, mb_msg_id(a->reply), id);
      const char *extra[] = {"Mb-Dest", p->home, "Mb-Response", p->response, NULL};
      s = mbc_publish(c, p->reply, NULL, a->reply, "reply", id, extra);
      if (s != NATS_OK)
        mbc_report(c, "mb: cluster: a reply to '%s' on another node was not sent: %s", p->home,
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
      s = body ? mbc_publish(c, p->reply, NULL, body, ok ? "reply" : "fail", id, extra)
               : NATS_NO_MEMORY;
      if (s != NATS_OK && s != NATS_CONNECTION_CLOSED) s = reply_unsent(c, p->reply, num, s);
      mb_msg_unref(none);
    }
  } else if (a && a->status == MB_OK && a->reply) {
    mb_node_id_format(c->node, mb_msg_id(a->reply), id);
    s = mbc_publish(c, p->reply, NULL, a->reply, "reply", id, NULL);
    if (s != NATS_OK && s != NATS_CONNECTION_CLOSED) s = reply_unsent(c, p->reply, NULL, s);
  } else {
    mb_msg *none = mb_msg_new(&nil, 1, NULL, 0, NULL);
    const char *e = a && a->error ? a->error : "failed: no answer";
    snprintf(err, sizeof err, "%s (node %s)", e, c->node);
    mb_node_id_format(c->node, none ? mb_msg_id(none) : 0, id);
    const char *extra[] = {"Mb-Error", a && a->status == MB_OK ? NULL : err, NULL};
    s = none ? mbc_publish(c, p->reply, NULL, none, a && a->status == MB_OK ? "reply" : "fail", id,
                       extra)
             : NATS_NO_MEMORY;
    mb_msg_unref(none);
  }
  if (s == NATS_OK) mbc_count(c, &c->st.replies, 1);
  mbc_proxy_free(p);
}

#define PROXY_WAIT 60.0 /* seconds a request without Mb-Timeout (a plain NATS client's, a
                          * send's reply_to) waits for its listeners' answers here */

/* Worker 0: the request r that mb_link_deliver opened for the message nm
 * ends (said nothing) when its requester gives up: after its Mb-Timeout
 * (a little later, as it started later), else PROXY_WAIT. */
void mbc_proxy_bound(natsMsg *nm, mb_request *r) {
  const char *t = mbc_header(nm, "Mb-Timeout");
  double secs = 0;
  if (!t || mb_cluster_secs_parse(t, &secs) || !(secs > 0)) secs = PROXY_WAIT;
  if (r && secs < 1e9) mb_link_expire(r, secs + 0.5); /* "inf": it waits as long */
}

/* Worker 0: p is answered through proxy_done (or freed) before the link stops. */
void mbc_proxy_watch(mb_cluster *c, proxy *p) {
  p->c = c;
  p->prev = NULL;
  p->next = c->proxies;
  if (c->proxies) c->proxies->prev = p;
  c->proxies = p;
}

/* Tells the requester at subject `to` that this node took its message to k
 * groups (what = the kind acknowledged). */
void mbc_ack(mb_cluster *c, const char *to, const char *what, size_t k) {
  static const uint8_t nil = MB_V_NIL;
  char num[24], id[MB_NODE_ID_MAX];
  mb_msg *none = mb_msg_new(&nil, 1, NULL, 0, NULL);
  if (!none) return;
  snprintf(num, sizeof num, "%zu", k);
  mb_node_id_format(c->node, mb_msg_id(none), id);
  const char *extra[] = {"Mb-Groups", num, "Mb-For", what, NULL};
  mbc_publish(c, to, NULL, none, "ack", id, extra);
  mb_msg_unref(none);
}

void mbc_sync_unlink(sync_ctx *x) {
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
void mbc_sync_done(void *ud, int status) {
  sync_ctx *x = ud;
  static const uint8_t nil = MB_V_NIL;
  char num[24], id[MB_NODE_ID_MAX], err[200];
  int stopped = status == MB_ECLOSED;
  snprintf(err, sizeof err, "failed: the node stopped before its listener answered (node %s)",
           x->c->node);
  mbc_sync_unlink(x);
  mb_msg *none = mb_msg_new(&nil, 1, NULL, 0, NULL);
  for (size_t i = 0; none && i < x->k; i++) {
    snprintf(num, sizeof num, "%zu", i);
    mb_node_id_format(x->c->node, mb_msg_id(none), id);
    const char *extra[] = {"Mb-Group", num, "Mb-Error", stopped ? err : NULL, NULL};
    mbc_publish(x->c, x->reply, NULL, none, stopped ? "fail" : "reply", id, extra);
  }
  mb_msg_unref(none);
  free(x);
}

/* Worker 0, stopping: the requests and synchronous sends of other nodes
 * still unanswered here (their listeners were cut short) fail now, rather
 * than leaving their requesters to wait for their timeouts. */
void mbc_proxies_fail(mb_cluster *c) {
  static const char why[] = "failed: the node stopped before its listener answered";
  while (c->proxies) {
    proxy *p = c->proxies;
    mb_answer one = {MB_EFAILED, NULL, why}, *a = &one;
    size_t n = p->all && p->k > 1 ? p->k : 1;
    if (n > 1 && (a = malloc(n * sizeof *a)))
      for (size_t i = 0; i < n; i++) a[i] = one;
    else
      a = &one, n = 1;
    mbc_proxy_done(p, a, n); /* frees p */
    if (a != &one) free(a);
  }
  while (c->syncs) mbc_sync_done(c->syncs, MB_ECLOSED); /* frees it */
}
