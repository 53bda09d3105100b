/*
 * mb_send.c — the calls that send: mb_send, mb_request_start, mb_reply_id
 * and mb_reply, and a listener's mb_delivery_reply. Each takes rt->lock,
 * hands the message to the dispatcher (mb_send_msg), and after unlocking
 * runs the deliveries a synchronous destination left for this thread.
 * Owns nothing; uses mb_dispatch.c, mb_delivery.c, mb_request.c,
 * mb_dest.c and mb_observe.c. Tests: spec/c/test_*.c, spec/api/bus_spec.lua,
 * spec/api/reply_to_spec.lua.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_core.h"
#include "mb_dest.h"

/* ---- over the link ------------------------------------------------------------ */

/* Whether m may go to the cluster destination d, as mb_send_msg decides for
 * a local one; counts it sent (the link's refusal is counted by
 * link_refused). Under the lock. */
static int link_admit(mb_service *from, mb_dest *d, mb_msg *m, int count) {
  int refused = m->name                         ? MB_EINVAL
                : d->state != MB_DEST_OPEN      ? MB_ECLOSED
                : d->rt->draining && !(m->flags & MB_MSG_FOLLOW_UP) && !m->response_id
                    ? MB_ESHUTDOWN
                    : MB_OK;
  if (refused) {
    d->st.rejected++;
    mb_obs_rejected(d->rt, d->name, from, m, refused, NULL);
    return refused;
  }
  m->name = mb_name_ref(d->nm);
  if (count) {
    d->st.sent++;
    mb_obs_sent(d->rt, from, d, m);
  }
  return MB_OK;
}

/* The link refused what link_admit let through. Takes the lock; drops the
 * reference to d the caller held across the link's call. */
static void link_refused(mb_dest *d, int rc, int counted) {
  mb_lock(d->rt);
  if (counted) d->st.sent--;
  d->st.rejected++;
  mb_unlock(d->rt);
  (void)rc;
  mb_dest_unref(d);
}

/* mb_send to a cluster destination: under the lock, which it releases. */
static int link_send(mb_service *from, mb_dest *d, mb_msg *m) {
  mb_runtime *rt = from->rt;
  mb_link link = rt->link;
  int rc = link_admit(from, d, m, 1);
  if (rc) {
    mb_unlock(rt);
    mb_msg_unref(m);
    return rc;
  }
  mb_dest_ref(d);
  mb_unlock(rt);
  rc = link.send(link.ud, from, d->name, d->opts.type, m, MB_LINK_SEND);
  if (rc < 0)
    link_refused(d, rc, 1);
  else
    mb_dest_unref(d);
  return rc;
}

static int link_deliver(mb_service *from, const char *name, uint64_t group, mb_msg *m, int all,
                        mb_request_fn fn, void *ud, mb_request **out, size_t *takers,
                        mb_send_fn done, void *dud);

int mb_link_deliver(mb_service *from, const char *name, uint64_t group, mb_msg *m, int all,
                    mb_request_fn fn, void *ud, mb_request **out, size_t *takers) {
  return link_deliver(from, name, group, m, all, fn, ud, out, takers, NULL, NULL);
}

int mb_link_deliver_sync(mb_service *from, const char *name, uint64_t group, mb_msg *m,
                         mb_send_fn done, void *ud, size_t *takers) {
  return link_deliver(from, name, group, m, 0, NULL, NULL, NULL, takers, done, ud);
}

static int link_deliver(mb_service *from, const char *name, uint64_t group, mb_msg *m, int all,
                        mb_request_fn fn, void *ud, mb_request **out, size_t *takers,
                        mb_send_fn done, void *dud) {
  mb_runtime *rt = from->rt;
  mb_inline inl = {0};
  if (out) *out = NULL;
  if (takers) *takers = 0;
  if (!(m->flags & MB_MSG_REMOTE) || m->name) {
    mb_msg_unref(m);
    return MB_EINVAL;
  }
  memcpy(mb_msg_trailer(m), &group, sizeof group);
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  if (!d || !d->opts.cluster) {
    mb_obs_rejected(rt, name, from, m, MB_ENODEST, NULL);
    mb_unlock(rt);
    mb_msg_unref(m);
    return MB_ENODEST;
  }
  size_t n = mb_dest_takers(d, m);
  if (takers) *takers = n;
  /* its link acknowledges it after that many deliveries (mb_dispatch.c) */
  if (mb_msg_tag(m)) mb_msg_set_takers(m, n);
  mb_request *r = NULL;
  if (fn) {
    r = mb_request_open(from, d, m, INFINITY, all, fn, ud);
    if (!r) {
      mb_unlock(rt);
      mb_msg_unref(m);
      return MB_ENOMEM;
    }
    r->proxy = 1;
    m->flags |= MB_MSG_REQUEST | (all ? MB_MSG_ALL : 0);
    r->refs++; /* while the send may wait in a full queue */
  }
  m->flags |= MB_MSG_FOLLOW_UP; /* taken in while draining: it was sent before */
  int rc = mb_send_msg(from, d, m, done, dud, r, &inl);
  if (r && rc != MB_PENDING) r->refs--;
  if (r && rc < 0) mb_request_abort(r);
  if (r && rc >= 0) {
    if (out) *out = r;
    rc = MB_PENDING;
  }
  mb_unlock(rt);
  mb_run_inline(&inl);
  int s = mb_sync_settle(rt, from, &inl, rc);
  return r ? rc : s;
}

int mb_link_answer(mb_runtime *rt, uint64_t id, uint64_t group, int status, mb_msg *reply,
                   const char *error) {
  mb_lock(rt);
  mb_request *r = mb_request_find(rt, id);
  int rc = -1;
  char why[400];
  if (r && !error && status == MB_ENOLISTENERS) {
    snprintf(why, sizeof why, "no_listeners: no node of the cluster listens at '%s'",
             r->dest->name);
    error = why;
  }
  if (r && r->remote && !r->finished) {
    if (reply) {
      reply->response_id = id;
      if (!reply->name) reply->name = mb_name_ref(r->dest->nm);
    }
    if (r->all && status == MB_ENOLISTENERS) { /* nobody at all: one answer says so */
      r->window = 0;
      mb_request_expect(r, 0, r->n ? 0 : 1);
      group = 0;
    }
    mb_request_answer(r, group, status, status == MB_OK ? reply : NULL, error);
    rc = 0;
  }
  mb_unlock(rt);
  mb_msg_unref(reply);
  return rc;
}

int mb_link_expect(mb_runtime *rt, uint64_t id, uint64_t base, size_t k) {
  mb_lock(rt);
  mb_request *r = mb_request_find(rt, id);
  int rc = r && r->remote && !r->finished ? 0 : -1;
  if (!rc) mb_request_expect(r, base, k);
  mb_unlock(rt);
  return rc;
}

double mb_link_timeout(mb_runtime *rt, uint64_t id) {
  mb_lock(rt);
  mb_request *r = mb_request_find(rt, id);
  double t = r && r->remote && !r->finished ? r->timeout : 0;
  mb_unlock(rt);
  return t;
}

void mb_link_expire(mb_request *r, double secs) {
  mb_runtime *rt = r->svc->rt;
  mb_lock(rt);
  if (r->proxy && !r->finished && secs > 0 && isfinite(secs) && !ev_is_active(&r->timer)) {
    struct ev_loop *loop = r->svc->w->loop;
    r->timeout = secs;
    ev_now_update(loop);
    ev_timer_set(&r->timer, secs, 0);
    ev_timer_start(loop, &r->timer);
  }
  mb_unlock(rt);
}

void mb_link_window(mb_runtime *rt, uint64_t id) {
  mb_lock(rt);
  mb_request *r = mb_request_find(rt, id);
  if (r && r->remote) mb_request_window_closed(r);
  mb_unlock(rt);
}

int mb_link_reply_home(mb_service *from, const char *reply_to, uint64_t id, mb_msg *reply) {
  reply->response_id = id;
  return mb_send(from, reply_to, reply, NULL, NULL);
}

void mb_link_dropped(mb_runtime *rt, const char *dest, mb_msg *m, const char *why) {
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, dest);
  if (d) mb_delivery_drop(d, m, 0, why);
  mb_unlock(rt);
}

void mb_link_close_requests(mb_runtime *rt, const char *error) {
  size_t at = 0;
  mb_lock(rt);
  /* answering only posts the finish: the map does not change meanwhile */
  for (mb_request *r; (r = mb_map_next(&rt->requests, &at));)
    if (r->remote && !r->finished) mb_request_answer(r, 0, MB_ECLOSED, NULL, error);
  mb_unlock(rt);
}

void mb_link_state(mb_runtime *rt, int up) {
  mb_lock(rt);
  mb_fire_event(rt, up ? MB_EV_CLUSTER_UP : MB_EV_CLUSTER_DOWN, "", 0, MB_PARALLEL, 0, NULL);
  mb_unlock(rt);
}

/* ---- the sending calls ------------------------------------------------------------ */

int mb_send(mb_service *from, const char *name, mb_msg *m, mb_send_fn done, void *ud) {
  mb_runtime *rt = from->rt;
  mb_inline inl = {0};
  mb_lock(rt);
  mb_dest *d = mb_dest_find_from(from, name);
  if (d && d->opts.share) m->flags |= MB_MSG_SHARED;
  if (d && d->opts.cluster && rt->link.send) return link_send(from, d, m);
  int rc = d ? mb_send_msg(from, d, m, done, ud, NULL, &inl) : MB_ENODEST;
  if (!d) mb_obs_rejected(rt, name, from, m, MB_ENODEST, NULL);
  mb_unlock(rt);
  if (!d) mb_msg_unref(m);
  mb_run_inline(&inl);
  return mb_sync_settle(rt, from, &inl, rc);
}

/* mb_request_start and mb_send_confirmed: kind is what goes over the link
 * to a cluster destination (MB_LINK_REQUEST for a local one). */
static int request_start(mb_service *from, const char *name, mb_msg *m, double timeout, int all,
                         int kind, mb_request_fn fn, void *ud, mb_request **out) {
  mb_runtime *rt = from->rt;
  mb_inline inl = {0};
  *out = NULL;
  if (!(timeout > 0)) { /* NaN, 0 or negative: it would never (or at once) expire */
    mb_msg_unref(m);
    return MB_EINVAL;
  }
  mb_lock(rt);
  mb_dest *d = mb_dest_find_from(from, name);
  int cluster = d && d->opts.cluster && rt->link.send;
  if (d && !cluster && kind != MB_LINK_REQUEST && kind != MB_LINK_REQUEST_ALL) {
    mb_unlock(rt); /* mb_send_confirmed: cluster destinations only */
    mb_msg_unref(m);
    return MB_EINVAL;
  }
  mb_request *r = d ? mb_request_open(from, d, m, timeout, all, fn, ud) : NULL;
  if (!r) {
    if (!d) mb_obs_rejected(rt, name, from, m, MB_ENODEST, NULL);
    mb_unlock(rt);
    mb_msg_unref(m);
    return d ? MB_ENOMEM : MB_ENODEST;
  }
  m->flags |= MB_MSG_REQUEST | (all ? MB_MSG_ALL : 0);
  if (d->opts.share) m->flags |= MB_MSG_SHARED;
  if (cluster) {
    mb_link link = rt->link;
    /* asking for statistics sends nothing */
    int counted = kind != MB_LINK_STATS && kind != MB_LINK_PROBE;
    int rc = link_admit(from, d, m, counted);
    if (rc) {
      mb_request_abort(r);
      mb_unlock(rt);
      mb_msg_unref(m);
      return rc;
    }
    r->remote = 1;
    r->dispatched = 1;
    r->window = all; /* answers per group: nodes acknowledge first */
    mb_dest_ref(d);
    mb_unlock(rt);
    rc = link.send(link.ud, from, d->name, d->opts.type, m, kind);
    if (rc < 0) {
      mb_lock(rt);
      mb_request_abort(r);
      mb_unlock(rt);
      link_refused(d, rc, counted);
      return rc;
    }
    mb_dest_unref(d);
    *out = r;
    return MB_PENDING;
  }
  int block = d->opts.type != MB_SYNCHRONOUS;
  if (block) r->refs++; /* while the send may wait in a full queue */
  int rc = mb_send_msg(from, d, m, NULL, NULL, block ? r : NULL, &inl);
  if (block && rc != MB_PENDING) r->refs--;
  if (rc < 0) {
    mb_request_abort(r);
    mb_unlock(rt);
    return rc;
  }
  *out = r;
  mb_unlock(rt);
  mb_run_inline(&inl);
  mb_sync_settle(rt, from, &inl, MB_OK);
  return MB_PENDING;
}

int mb_request_start(mb_service *from, const char *name, mb_msg *m, double timeout, int all,
                     mb_request_fn fn, void *ud, mb_request **out) {
  return request_start(from, name, m, timeout, all, all ? MB_LINK_REQUEST_ALL : MB_LINK_REQUEST,
                       fn, ud, out);
}

int mb_link_stats(mb_service *from, const char *name, double window, mb_request_fn fn, void *ud,
                  mb_request **out) {
  static const uint8_t nil = MB_V_NIL;
  mb_msg *m = mb_msg_new(&nil, 1, NULL, 0, NULL);
  if (!m) return MB_ENOMEM;
  /* the window ends it; the timeout only bounds a node that acknowledged
   * and then went silent */
  return request_start(from, name, m, window + 1, 1, window < 1 ? MB_LINK_PROBE : MB_LINK_STATS, fn,
                       ud, out);
}

int mb_send_confirmed(mb_service *from, const char *name, mb_msg *m, double timeout,
                      mb_request_fn fn, void *ud, mb_request **out) {
  mb_runtime *rt = from->rt;
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  int sync = d && d->opts.type == MB_SYNCHRONOUS;
  mb_unlock(rt);
  return request_start(from, name, m, timeout, sync, sync ? MB_LINK_SYNC : MB_LINK_CONFIRM, fn,
                       ud, out);
}

int mb_reply_id(mb_service *from, const char *dest, uint64_t id, const char *reply_to,
                uint64_t group, mb_msg *reply, mb_send_fn done, void *ud) {
  mb_runtime *rt = from->rt;
  mb_inline inl = {0};
  mb_lock(rt);
  mb_request *r = mb_request_find(rt, id);
  mb_dest *d = r ? r->dest : dest ? mb_dest_find(rt, dest) : NULL;
  if (r && r->proxy) reply_to = NULL; /* the link takes the reply home */
  int answered = 0, rc;
  if (d) d->st.replies++;
  reply->response_id = id;
  if (r && !reply->name) {
    reply->name = mb_name_ref(d->nm);
    answered = mb_request_reply(r, group, from, reply) == 0;
  }
  if (answered || reply_to)
    mb_obs_reply(rt, reply_to ? reply_to : d ? d->name : dest, from, r, reply, id);
  else /* too late, or nobody asked: the reply goes nowhere */
    mb_obs_rejected(rt, d ? d->name : dest ? dest : "-", from, reply, MB_ECLOSED,
                    "nobody waits for this reply (no request open for it, no reply_to)");
  if (reply_to) {
    mb_msg *c = mb_msg_copy(reply);
    mb_dest *to = mb_dest_find(rt, reply_to);
    rc = !c ? MB_ENOMEM : to ? mb_send_msg(from, to, c, done, ud, NULL, &inl) : MB_ENODEST;
    if (c && !to) {
      mb_obs_rejected(rt, reply_to, from, c, MB_ENODEST, NULL);
      mb_msg_unref(c);
    }
  } else {
    rc = answered ? MB_OK : MB_ECLOSED;
  }
  mb_unlock(rt);
  mb_msg_unref(reply);
  mb_run_inline(&inl);
  rc = mb_sync_settle(rt, from, &inl, rc);
  if (rc < 0 && answered) rc = MB_OK;
  return rc;
}

int mb_reply(mb_service *from, const mb_msg *orig, uint64_t group, mb_msg *reply) {
  return mb_reply_id(from, mb_msg_destination(orig), orig->id,
                     mb_msg_reply_to(orig), group, reply, NULL, NULL);
}

int mb_delivery_reply(mb_delivery *dv, mb_msg *reply, mb_send_fn done, void *ud) {
  const mb_msg *m = dv->msg;
  /* a message from the link: its reply_to is a destination of its node,
   * where the link takes the reply */
  const char *reply_to = (m->flags & MB_MSG_REMOTE) ? NULL : mb_msg_reply_to(m);
  int rc = mb_reply_id(dv->l->svc, mb_msg_destination(m), m->id, reply_to, dv->group, reply,
                       done, ud);
  if (rc < 0 && rc != MB_PENDING && reply_to) {
    char err[400];
    snprintf(err, sizeof err, "failed: reply to '%s' not delivered: %s", reply_to,
             rc == MB_ENODEST        ? "no_destination: no such destination"
             : rc == MB_ENOLISTENERS ? "no_listeners: it has no listeners"
             : rc == MB_EFULL        ? "queue_full: its queue is full"
             : rc == MB_ENOMEM       ? "out of memory"
                                     : "closed: it takes no messages");
    mb_delivery_fail(dv, err);
  }
  return rc;
}
