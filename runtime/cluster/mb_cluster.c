/*
 * mb_cluster.c — the link between the core and a NATS server (see
 * mb_cluster.h for the contract, the subjects and the wire format): the
 * connection (start, stop, its outage events), the subscriptions made and
 * ended as interest comes and goes, and the link's calls from the core
 * (mb_link in mb.h: send, interest, outcome). Owns the connection, its
 * adapter, the subscriptions and the link's own service. Receiving is
 * mb_link_recv.c, the statistics probes mb_link_stats.c, the bookkeeping
 * of acknowledgements and answers mb_link_acks.c, publishing
 * mb_link_pub.c (mb_link_private.h: what they share, and the locking).
 * Uses the core's C API (mb.h), the adapter (mb_nats_ev.c), durable
 * destinations (mb_durable.c) and libnats.
 *
 * A subscription that lost its interest is unsubscribed at once and freed
 * by the next drain, on worker 0, so that a drain never holds a freed one.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/mb_cluster.h"
#include "cluster/mb_link_private.h"

/* ---- the link's calls from the core ------------------------------------------------- */

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
     * x.ID only hears the server's "no responders" (see mbc_on_no_responders) */
    mbc_join(reply, sizeof reply, c->inbox, "x.", hex);
    mbc_join(answer, sizeof answer, c->inbox, "r.", hex);
    /* the listening nodes bound their wait for the listeners' answers by it */
    char tmo[32];
    double secs = req ? mb_link_timeout(c->rt, mb_msg_id(m)) : 0;
    if (secs > 0) mb_cluster_secs_format(secs, tmo, sizeof tmo);
    /* (the answers' subject is not sent: the listening node makes it from
     * the Mb-Id, one header less per request) */
    const char *extra[] = {"Mb-Timeout", secs > 0 ? tmo : NULL, NULL};
    if (kind == MB_LINK_REQUEST_ALL || kind == MB_LINK_SYNC)
      mbc_win_open(c, mb_msg_id(m), dest, c->ack_wait);
    natsStatus s;
    if (kind == MB_LINK_STATS || kind == MB_LINK_PROBE) { /* every node answers at mb.NS.stats */
      s = mbc_stats_send(c, dest, m, kind, id, reply, answer);
    } else {
      s = mbc_publish(c, subject, reply, m, kinds[kind], id, extra);
    }
    rc = s == NATS_OK ? MB_OK : s == NATS_NO_MEMORY ? MB_ENOMEM : MB_ECLOSED;
    if (rc == MB_OK && !req) mbc_keep_sent(c, m);
  }
  mb_msg_unref(m);
  return rc;
}

/* Under c->mu: e ends; what waits in it would go with the subscription:
 * kept to be reported, or handed back (a durable one's), by the next drain
 * (what the server sends before it takes the unsubscription is lost
 * unseen; a durable destination's comes again after ack_wait). */
static void sub_end(sub *e) {
  int msgs = 0, bytes = 0;
  if (natsSubscription_GetPending(e->ns, &msgs, &bytes) == NATS_OK && msgs > 0 &&
      (e->left = calloc((size_t)msgs, sizeof *e->left)))
    for (natsMsg *m = NULL; e->nleft < (size_t)msgs &&
                            natsSubscription_NextMsg(&m, e->ns, 0) == NATS_OK && m;
         m = NULL)
      e->left[e->nleft++] = m;
  natsSubscription_Unsubscribe(e->ns);
  e->dead = 1;
}

static void link_interest(void *ud, const char *dest, const char *group, uint64_t key, int on) {
  mb_cluster *c = ud;
  char subject[1024];
  pthread_mutex_lock(&c->mu);
  if (!on) {
    for (sub *e = c->subs; e; e = e->next)
      if (!e->dead && e->dest && !strcmp(e->dest, dest) &&
          (group ? e->group && !strcmp(e->group, group) : !e->group)) {
        sub_end(e);
        if (e->durable) mb_durable_interest(c->durable, dest, group, 0, subject, sizeof subject);
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
    e->on = mbc_on_dest_msg;
    e->key = group ? key : 0;
    e->next = c->subs;
    c->subs = e;
  } else if (e) {
    mbc_sub_free(e);
  }
  pthread_mutex_unlock(&c->mu);
  if (s != NATS_OK)
    mbc_report(c, "mb: cluster: cannot listen at '%s'%s%s%s: %s", dest, group ? " (group '" : "",
           group ? group : "", group ? "')" : "", natsStatus_GetText(s));
}

static int link_outcome(void *ud, void *tag, int status) {
  return mb_durable_outcome(((mb_cluster *)ud)->durable, tag, status);
}

/* The bus drains: a durable destination's consumers are left, so that the
 * server gives their messages to other members (or keeps them) instead of
 * this node, which would take them in while it stops and never be done. */
static void link_drain(void *ud) {
  mb_cluster *c = ud;
  pthread_mutex_lock(&c->mu);
  for (sub *e = c->subs; e; e = e->next)
    if (e->durable && !e->dead) sub_end(e);
  pthread_mutex_unlock(&c->mu);
}

/* ---- the connection's state --------------------------------------------------------- */

static void down_task(void *arg) {
  mb_cluster *c = arg;
  mb_link_close_requests(c->rt, "closed: the cluster connection is down");
  /* sends not confirmed yet may or may not have reached a listener: each
   * is counted dropped and reported, never left unsaid */
  mbc_sent_lost(c);
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
    mbc_count(c, &c->st.down, 1);
    mb_service_post(c->svc, down_task, c);
  }
}

static void on_reconnected(natsConnection *nc, void *ud) {
  mb_cluster *c = ud;
  (void)nc;
  if (atomic_load(&c->closing)) return;
  if (!atomic_exchange(&c->up, 1)) {
    mbc_count(c, &c->st.up, 1);
    mb_service_post(c->svc, up_task, c);
  }
  mb_durable_check(c->durable, 1); /* the server may have come back without them */
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
    mbc_report(ud, "mb: cluster: %s", natsStatus_GetText(err));
}

/* ---- durable destinations (mb_durable.c) ------------------------------------------- */

static void durable_report(void *c, const char *line) { mbc_report(c, "%s", line); }

static natsStatus durable_publish(void *c, const char *subject, const char *reply, const mb_msg *m,
                                  const char *id) {
  return mbc_publish(c, subject, reply, m, "send", id, NULL);
}

static mb_msg *durable_decode(natsMsg *nm, const char **why) { return mbc_decode(nm, 1, why); }

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
  mb_durable_halt(c->durable); /* no new job; its subscription ends */
  mbc_acks_free(c);
  while (c->subs) {
    sub *e = c->subs;
    c->subs = e->next;
    mbc_sub_free(e);
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
    /* (the close failed any management request waiting for its answer) */
    mb_durable_join(c->durable);
    pthread_mutex_lock(&c->mu);
    while (!c->closed && pthread_cond_timedwait(&c->nr_cond, &c->mu, &until) == 0) continue;
    pthread_mutex_unlock(&c->mu);
    natsConnection_Destroy(c->nc);
  }
  mbc_heard_free(c); /* (nats.c's callbacks are over) */
  if (c->ev) mb_nats_ev_free(c->ev);
  mb_durable_free(c->durable);
  if (c->svc) mb_service_free(c->svc);
  mbc_pub_free(c);
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
  if (mb_nats_load(err, errlen)) return NULL;
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
  c->cfg.report = cfg->report;
  c->cfg.state = cfg->state;
  c->cfg.ud = cfg->ud;
  c->loop = mb_runtime_loop(rt);
  mbc_acks_init(c);
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
  if (s == NATS_OK) s = natsConnection_Subscribe(&c->nr, c->nc, inbox_all, mbc_on_no_responders, c);
  if (s == NATS_OK) s = natsSubscription_SetOnCompleteCB(c->nr, mbc_nr_complete, c);
  /* no limit: a marker nats.c dropped as a slow consumer's would leave the
   * sends it covers kept, and the bus busy (the "no responders" come no
   * faster than this node sends) */
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(c->nr, -1, -1);
  int taken = s == NATS_OK && name_taken(c);
  snprintf(inbox_all, sizeof inbox_all, "%sr.*", c->inbox);
  sub *in = s == NATS_OK && !taken ? calloc(1, sizeof *in) : NULL;
  sub *home = s == NATS_OK && !taken ? calloc(1, sizeof *home) : NULL;
  if (s == NATS_OK && !taken && (!in || !home)) s = NATS_NO_MEMORY;
  if (s == NATS_OK && !taken) s = natsConnection_SubscribeSync(&in->ns, c->nc, inbox_all);
  snprintf(inbox_all, sizeof inbox_all, "%st", c->inbox);
  if (s == NATS_OK && !taken) s = natsConnection_SubscribeSync(&home->ns, c->nc, inbox_all);
  if (in) in->on = mbc_on_inbox_msg;
  if (home) home->on = mbc_on_home_msg;
  sub *st = s == NATS_OK && !taken ? calloc(1, sizeof *st) : NULL;
  if (s == NATS_OK && !taken && !st) s = NATS_NO_MEMORY;
  snprintf(inbox_all, sizeof inbox_all, "mb.%s.stats", c->ns);
  if (s == NATS_OK && !taken) s = natsConnection_SubscribeSync(&st->ns, c->nc, inbox_all);
  if (st) st->on = mbc_on_stats_msg;
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
    if (in) mbc_sub_free(in);
    if (home) mbc_sub_free(home);
    if (st) mbc_sub_free(st);
    cluster_free(c);
    return NULL;
  }
  mb_durable_host dh = {.rt = rt, .svc = c->svc, .nc = c->nc, .ns = c->ns, .node = c->node,
                        .c = c, .report_fn = durable_report, .publish_fn = durable_publish,
                        .decode_fn = durable_decode};
  if (!(c->durable = mb_durable_new(&dh, err, errlen))) {
    mbc_sub_free(in);
    mbc_sub_free(home);
    mbc_sub_free(st);
    cluster_free(c);
    return NULL;
  }
  in->next = home;
  home->next = st;
  c->subs = in;
  atomic_store(&c->up, 1);
  mb_nats_ev_set_read_hook(c->ev, mbc_drain, c);
  mb_link link = {.ud = c, .node = c->node, .send = link_send, .interest = link_interest,
                  .outcome = link_outcome, .drain = link_drain};
  mb_runtime_link(rt, &link);
  return c;
}

void mb_cluster_stop(mb_cluster *c) {
  if (!c) return;
  mb_runtime_link(c->rt, NULL);
  mbc_proxies_fail(c);
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
  mbc_counts n = c->st;
  pthread_mutex_unlock(&c->mu);
  *st = (mb_cluster_stats){.published = n.published, .received = n.received,
                           .replies = n.replies, .bad = n.bad, .late = n.late,
                           .dropped = n.dropped, .down = n.down, .up = n.up};
}
