/*
 * mb_link_recv.c — the cluster link's receiving side: the drain that takes
 * what the subscriptions hold (synchronous ones: nats.c queues their
 * messages) on worker 0 after each read event, in batches (a batch cut
 * short goes on from a task), and hands each message to its
 * subscription's handler; the handlers of a destination's messages (from
 * nodes, with mb's headers, or from plain NATS clients, JSON), of the
 * replies that come home to a send's reply_to, and of the answers to this
 * node's requests. A message that does not check is counted and reported,
 * never delivered. A subscription that lost its interest was unsubscribed
 * at once (mb_cluster.c) and is freed here, so that a drain never holds a
 * freed one. Uses mb_link_acks.c, mb_link_pub.c, mb_durable.c and the
 * core's link calls (mb.h). Tests: the specs in spec/cluster.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/mb_link_private.h"

void mbc_sub_free(sub *e) {
  for (size_t i = 0; i < e->nleft; i++) natsMsg_Destroy(e->left[i]);
  free(e->left);
  if (e->ns) natsSubscription_Destroy(e->ns);
  free(e->dest);
  free(e->group);
  free(e);
}

/* ---- receiving ------------------------------------------------------------------------ */

/* A message taken by the drain and the subscription it came from. */
typedef struct item {
  natsMsg *m;
  sub *s;
} item;

/* The sending node of nm, the NODE of its Mb-Id ("NODE:hex"), into buf
 * (MB_NODE_ID_MAX bytes); NULL when it has none or not a valid name. With
 * hex, also where the hex part starts. */
static const char *id_node(natsMsg *nm, char *buf, const char **hex) {
  const char *id = mbc_header(nm, "Mb-Id"), *colon = id ? strchr(id, ':') : NULL;
  size_t n = colon ? (size_t)(colon - id) : 0;
  if (!n || n >= MB_NODE_ID_MAX) return NULL;
  memcpy(buf, id, n);
  buf[n] = 0;
  if (!mb_cluster_name_valid(buf)) return NULL;
  if (hex) *hex = colon + 1;
  return buf;
}

/* The body of nm as an mb message: the payload's encoding, then the
 * values' (each one whole value: the payload's end is found by reading
 * it); origin id and reply_to from its headers. NULL, with why, when it
 * does not check. */
mb_msg *mbc_decode(natsMsg *nm, int remote, const char **why) {
  const char *data = natsMsg_GetData(nm);
  size_t len = (size_t)natsMsg_GetDataLength(nm);
  mb_reader r = {(const uint8_t *)data, (const uint8_t *)data + len};
  size_t plen = 0;
  if (!data || mb_skip(&r) || !(plen = (size_t)(r.p - (const uint8_t *)data)) ||
      (len > plen && mb_value_check(data + plen, len - plen))) {
    *why = "its body is not a well-formed mb value (truncated or corrupt)";
    return NULL;
  }
  const char *id = mbc_header(nm, "Mb-Id");
  const char *rt = mbc_header(nm, "Mb-Reply-To");
  if (rt && !mb_dest_name_valid(rt, strlen(rt))) rt = NULL;
  mb_msg *m = remote ? mb_msg_new_remote(data, plen, data + plen, len - plen, rt,
                                         id && *id && strlen(id) < 200 ? id : "?")
                     : mb_msg_new(data, plen, data + plen, len - plen, NULL);
  if (!m) *why = "out of memory";
  return m;
}

void mbc_bad(mb_cluster *c, natsMsg *nm, const char *why) {
  char buf[MB_NODE_ID_MAX];
  mbc_count(c, &c->st.bad, 1);
  const char *node = id_node(nm, buf, NULL);
  mbc_report(c, "mb: cluster: a message on '%s'%s%s was not delivered: %s", natsMsg_GetSubject(nm),
             node ? " from node " : "", node ? node : "", why);
}

/* A message that expects no answer (from sender: "node N", or "a plain
 * NATS client") that dest here could not take (rc): counted as a dropped
 * delivery there, with a dead letter, as the core does for what it loses. */
static void lost_here(mb_cluster *c, const char *dest, mb_msg *m, int rc, const char *sender) {
  char lost[400];
  if (rc == MB_EFULL)
    snprintf(lost, sizeof lost, "dropped: this node cannot keep up at '%s' (its queue is "
                                "full, max_queue) and lost a message from %s",
             dest, sender);
  else
    snprintf(lost, sizeof lost, "dropped: a message from %s came to '%s' after its "
                                "last listener here had left (%s)",
             sender, dest, mb_strerror(rc));
  mb_link_dropped(c->rt, dest, m, lost);
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
    mbc_bad(c, nm, why);
    mb_buf_free(&b);
    /* a request gets told, in JSON, instead of waiting for nothing */
    proxy *p = reply && *reply ? calloc(1, sizeof *p + strlen(reply) + 1) : NULL;
    if (p) {
      char err[500];
      snprintf(err, sizeof err, "invalid: the body is not JSON: %s", why);
      mbc_proxy_watch(c, p);
      p->json = 1;
      strcpy(p->reply, reply);
      mb_answer a = {MB_EINVAL, NULL, err};
      mbc_proxy_done(p, &a, 1);
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
    mbc_bad(c, nm, "out of memory");
    return;
  }
  int rc;
  proxy *p = reply && *reply ? calloc(1, sizeof *p + strlen(reply) + 1) : NULL;
  if (p) {
    mbc_proxy_watch(c, p);
    p->json = 1;
    strcpy(p->reply, reply);
    mb_request *r;
    rc = mb_link_deliver(c->svc, e->dest, e->key, m, 0, mbc_proxy_done, p, &r, NULL);
    if (rc >= 0) mbc_proxy_bound(nm, r);
    if (rc < 0) {
      char err[400];
      snprintf(err, sizeof err, "%s: no listener of '%s' took it", mb_strerror(rc), e->dest);
      mb_answer a = {rc, NULL, err};
      mbc_proxy_done(p, &a, 1);
    }
  } else {
    mb_msg_ref(m); /* for the dead letter of a message this node cannot take */
    rc = mb_link_deliver(c->svc, e->dest, e->key, m, 0, NULL, NULL, NULL, NULL);
    if (rc < 0) lost_here(c, e->dest, m, rc, "a plain NATS client");
    mb_msg_unref(m);
  }
  if (rc < 0) mbc_count(c, &c->st.dropped, 1);
}

void mbc_on_dest_msg(mb_cluster *c, sub *e, natsMsg *nm) {
  const char *why = NULL;
  const char *kind = mbc_header(nm, "Mb-Kind");
  if (!kind && !mbc_header(nm, "Mb-Id")) {
    on_plain_msg(c, e, nm);
    return;
  }
  mb_msg *m = mbc_decode(nm, 1, &why);
  if (!m) {
    mbc_bad(c, nm, why);
    return;
  }
  mbc_count(c, &c->st.received, 1);
  /* a request's answers go to the requesting node's r subject
   * (mb.NS.n.NODE.r.HEX, from its Mb-Id "NODE:HEX"); a send's reply to
   * its reply_to goes home, to the sending node's t subject */
  char home[300], node[MB_NODE_ID_MAX];
  const char *reply = NULL, *reply_to = NULL, *hex = NULL, *from = id_node(nm, node, &hex);
  int request = kind && !strcmp(kind, "request");
  int all = kind && !strcmp(kind, "all");
  int sync = kind && !strcmp(kind, "sync");
  int confirm = kind && !strcmp(kind, "confirm");
  uint64_t rid;
  if ((request || all || confirm || sync) && from && !mb_id_parse(hex, strlen(hex), &rid)) {
    mbc_join(home, sizeof home, "mb.", c->ns, ".n.");
    size_t at = strlen(home);
    mbc_join(home + at, sizeof home - at, from, ".r.", hex);
    reply = home;
  } else if (!request && !all && !confirm && !sync && (reply_to = mb_msg_reply_to(m)) && from) {
    mbc_join(home, sizeof home, "mb.", c->ns, ".n.");
    size_t at = strlen(home);
    mbc_join(home + at, sizeof home - at, from, ".t", NULL);
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
      rc = mb_link_deliver_sync(c->svc, e->dest, e->key, m, mbc_sync_done, x, &takers);
      x->k = rc < 0 ? 0 : takers;
    }
    mbc_ack(c, reply, kind, rc < 0 ? 0 : takers); /* first: the answers follow */
    if (rc == MB_OK) mbc_sync_done(x, MB_OK);
    if (rc < 0 && x) {
      mbc_sync_unlink(x);
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
        mbc_proxy_free(p);
        p = NULL;
      }
    }
    if (!p) {
      mb_msg_unref(m);
      mbc_count(c, &c->st.dropped, 1);
      mbc_report(c, "mb: cluster: a message at '%s' from node %s was not delivered: out of memory",
             e->dest, from ? from : "?");
      return;
    }
    mbc_proxy_watch(c, p);
    p->all = all;
    memcpy(p->reply, reply, rl + 1);
    mb_request *r;
    rc = mb_link_deliver(c->svc, e->dest, e->key, m, all, mbc_proxy_done, p, &r, &takers);
    p->k = takers;
    if (rc >= 0) mbc_proxy_bound(nm, r);
    /* the answers come later, from a task: the acknowledgement goes first */
    if (all) mbc_ack(c, reply, kind, rc < 0 ? 0 : takers);
    if (rc < 0 && all) {
      mbc_proxy_free(p);
    } else if (rc < 0) { /* nothing here takes it now: the requester hears why */
      mb_answer a = {rc, NULL, NULL};
      char err[400];
      snprintf(err, sizeof err, "%s: no listener of '%s' took it", mb_strerror(rc), e->dest);
      a.error = err;
      mbc_proxy_done(p, &a, 1);
    }
  } else {
    mb_msg_ref(m); /* for the dead letter of a message this node cannot take */
    rc = mb_link_deliver(c->svc, e->dest, e->key, m, 0, NULL, NULL, NULL, &takers);
    if (confirm && reply) mbc_ack(c, reply, "confirm", rc < 0 ? 0 : takers);
    if (rc < 0) { /* lost here: said so (and counted) */
      char sender[MB_NODE_ID_MAX + 8];
      snprintf(sender, sizeof sender, "node %s", from ? from : "?");
      lost_here(c, e->dest, m, rc, sender);
    }
    mb_msg_unref(m);
  }
  if (rc < 0) mbc_count(c, &c->st.dropped, 1);
}

/* A reply from another node to a send of this node with reply_to:
 * mb.NS.n.NODE.t, headers Mb-Dest (the reply_to) and Mb-Response (the
 * send's id here). Sent on to that destination as mb_reply would. */
void mbc_on_home_msg(mb_cluster *c, sub *e, natsMsg *nm) {
  (void)e;
  const char *dest = mbc_header(nm, "Mb-Dest"), *resp = mbc_header(nm, "Mb-Response");
  const char *why = "no valid Mb-Dest and Mb-Response headers";
  char node[MB_NODE_ID_MAX];
  size_t nl = strlen(c->node);
  uint64_t id;
  if (!dest || !mb_dest_name_valid(dest, strlen(dest)) || !resp || strncmp(resp, c->node, nl) ||
      resp[nl] != ':' || mb_id_parse(resp + nl + 1, strlen(resp + nl + 1), &id)) {
    mbc_bad(c, nm, why);
    return;
  }
  mb_msg *m = mbc_decode(nm, 0, &why);
  if (!m) {
    mbc_bad(c, nm, why);
    return;
  }
  /* to the destination only: a request of this node is never answered here */
  int rc = mb_link_reply_home(c->svc, dest, id, m);
  if (rc < 0 && rc != MB_PENDING)
    mbc_report(c, "mb: cluster: a reply from node %s to '%s' was not delivered: %s",
           id_node(nm, node, NULL) ? node : "?", dest, mb_strerror(rc));
}

/* An answer to one of this node's requests: mb.NS.n.NODE.r.HEX */
void mbc_on_inbox_msg(mb_cluster *c, sub *e, natsMsg *nm) {
  (void)e;
  const char *subj = natsMsg_GetSubject(nm);
  size_t il = strlen(c->inbox);
  uint64_t id;
  if (strncmp(subj, c->inbox, il) || strncmp(subj + il, "r.", 2) ||
      mb_id_parse(subj + il + 2, strlen(subj + il + 2), &id)) {
    mbc_bad(c, nm, "not an answer this node knows");
    return;
  }
  if (id == 0) { /* a node starting with this node's name asks whether it is taken */
    const char *reply = natsMsg_GetReply(nm);
    if (reply && *reply) natsConnection_Publish(c->nc, reply, "here", 4);
    return;
  }
  int rc;
  {
    char buf[MB_NODE_ID_MAX];
    const char *kind = mbc_header(nm, "Mb-Kind"), *node = id_node(nm, buf, NULL);
    const char *gs = mbc_header(nm, "Mb-Group");
    char *end = NULL;
    unsigned long gi = gs ? strtoul(gs, &end, 10) : 0;
    if (gs && (end == gs || *end || gi > 65000 || !node)) {
      mbc_bad(c, nm, "no valid Mb-Group and Mb-Id headers");
      return;
    }
    uint64_t group = gs ? mbc_group_number(node, (unsigned)gi) : 0;
    if (kind && !strcmp(kind, "ack")) {
      const char *k = mbc_header(nm, "Mb-Groups");
      unsigned long n = k ? strtoul(k, &end, 10) : 0;
      if (!k || end == k || *end || n > 65000 || !node) {
        mbc_bad(c, nm, "no valid Mb-Groups and Mb-Id headers");
        return;
      }
      mbc_on_ack(c, id, node, mbc_header(nm, "Mb-For"), (size_t)n);
      return;
    }
    if (kind && !strcmp(kind, "fail")) {
      const char *err = mbc_header(nm, "Mb-Error");
      rc = mb_link_answer(c->rt, id, group, MB_EFAILED, NULL,
                          err ? err : "failed: (no reason given)");
    } else {
      const char *why = NULL;
      mb_msg *m = mbc_decode(nm, 1, &why);
      if (!m) {
        mbc_bad(c, nm, why);
        return;
      }
      rc = mb_link_answer(c->rt, id, group, MB_OK, m, NULL);
    }
  }
  if (rc) mbc_count(c, &c->st.late, 1);
}

static void drain_task(void *arg);

/* Worker 0: hands what the subscriptions hold to the core. */
void mbc_drain(void *ud) {
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
      char buf[MB_NODE_ID_MAX];
      const char *why = NULL, *from = id_node(e->left[i], buf, NULL);
      mb_msg *m = mbc_decode(e->left[i], 1, &why);
      if (m) {
        char lost[400];
        snprintf(lost, sizeof lost, "dropped: a message from node %s came to '%s' after its "
                                    "last listener here had left",
                 from ? from : "?", e->dest);
        mb_link_dropped(c->rt, e->dest, m, lost);
        mb_msg_unref(m);
      }
      mbc_count(c, &c->st.dropped, 1);
    }
    mbc_sub_free(e);
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
      mbc_report(c, "mb: cluster: this node could not keep up at '%s': %" PRIu64
                " message(s) lost (NATS slow consumer), counted as dropped",
             e->dest ? e->dest : "(its inbox)", d);
      pthread_mutex_lock(&c->mu);
    }
  }
  pthread_mutex_unlock(&c->mu);
  for (size_t i = 0; i < n; i++) {
    if (items[i].s->durable)
      mb_durable_receive(c->durable, items[i].s->dest, items[i].s->key, items[i].m);
    else
      items[i].s->on(c, items[i].s, items[i].m);
  }
  /* after the batch, with others: nats.c's collector is woken once for many */
  for (size_t i = 0; i < n; i++) mbc_spent(c, items[i].m, 0);
  /* what was delivered runs in this loop turn, not after one more poll */
  if (n) mb_runtime_hurry(c->rt);
  if (more && !c->drain_posted) {
    c->drain_posted = 1;
    mb_service_post(c->svc, drain_task, c);
  }
}

static void drain_task(void *arg) {
  mb_cluster *c = arg;
  c->drain_posted = 0;
  mbc_drain(c);
}
