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

int mb_send(mb_service *from, const char *name, mb_msg *m, mb_send_fn done, void *ud) {
  mb_runtime *rt = from->rt;
  mb_inline inl = {0};
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  int rc = d ? mb_send_msg(from, d, m, done, ud, NULL, &inl) : MB_ENODEST;
  if (!d) mb_obs_rejected(rt, name, from, m, MB_ENODEST, NULL);
  mb_unlock(rt);
  if (!d) mb_msg_unref(m);
  mb_run_inline(&inl);
  return mb_sync_settle(rt, from, &inl, rc);
}

int mb_request_start(mb_service *from, const char *name, mb_msg *m, double timeout, int all,
                     mb_request_fn fn, void *ud, mb_request **out) {
  mb_runtime *rt = from->rt;
  mb_inline inl = {0};
  *out = NULL;
  if (!(timeout > 0)) { /* NaN, 0 or negative: it would never (or at once) expire */
    mb_msg_unref(m);
    return MB_EINVAL;
  }
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  mb_request *r = d ? mb_request_open(from, d, m, timeout, all, fn, ud) : NULL;
  if (!r) {
    if (!d) mb_obs_rejected(rt, name, from, m, MB_ENODEST, NULL);
    mb_unlock(rt);
    mb_msg_unref(m);
    return d ? MB_ENOMEM : MB_ENODEST;
  }
  m->flags |= MB_MSG_REQUEST;
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

int mb_reply_id(mb_service *from, const char *dest, uint64_t id, const char *reply_to,
                uint64_t group, mb_msg *reply, mb_send_fn done, void *ud) {
  mb_runtime *rt = from->rt;
  mb_inline inl = {0};
  mb_lock(rt);
  mb_request *r = mb_request_find(rt, id);
  mb_dest *d = r ? r->dest : dest ? mb_dest_find(rt, dest) : NULL;
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
  const char *reply_to = mb_msg_reply_to(m);
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
