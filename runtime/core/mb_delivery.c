/*
 * mb_delivery.c — deliveries: handing a message to one member of a
 * listener group on its service's worker, running synchronous deliveries
 * inline, finishing a delivery (statistics, the outcome for a waiting
 * requester, a dead letter, the next dispatch) and settling the ones
 * finished well in batches. Also synchronous sends, which deliver to every
 * listener at once and tell the sender when all are done. A failed
 * delivery's dead letter is queued on rt->dl_head and sent later by the
 * pump of "mb/dead-letters" (mb_dispatch.c), never from here under the
 * lock. Owns deliveries (and their free list) and synchronous sends.
 * Uses mb_request.c, mb_dest.c, mb_observe.c, mb_service.c, mb_worker.c,
 * mb_msg.c. Tests: spec/c/test_*.c, spec/api/bus_spec.lua.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_core.h"
#include "mb_dest.h"

/* ---- outcomes: stats, dead letters, waiting requesters -------------------- */

/* Queues a dead letter for "mb/dead-letters" and wakes its pump, which
 * sends it (mb_dispatch_pump): a failure never re-enters the send path. */
static void dead_letter(mb_dest *d, mb_msg *m, const char *error) {
  mb_runtime *rt = d->rt;
  mb_dest *dl = mb_dest_find(rt, MB_DEAD_LETTERS);
  if (!dl || dl == d || dl->state != MB_DEST_OPEN || dl->ngroups == 0) return;
  mb_buf b = {0};
  long at = mb_enc_table_begin(&b);
  int rc = at < 0;
  if (!rc) {
    rc |= mb_enc_str(&b, "destination", 11) | mb_enc_str(&b, d->name, d->namelen);
    rc |= mb_enc_str(&b, "message", 7) | mb_msg_encode(m, rt->link.node, &b);
    rc |= mb_enc_str(&b, "error", 5) | mb_enc_str(&b, error, strlen(error));
    const char *node = rt->link.node;
    if (node) rc |= mb_enc_str(&b, "node", 4) | mb_enc_str(&b, node, strlen(node));
    mb_enc_table_end(&b, at, 0, node ? 4 : 3);
  }
  mb_msg *r = rc ? NULL : mb_msg_new(b.p, b.len, NULL, 0, NULL);
  mb_buf_free(&b);
  mb_dead_letter *q = r ? malloc(sizeof *q) : NULL;
  if (!q) { /* out of memory: lost, as when the message could not be made */
    mb_msg_unref(r);
    return;
  }
  q->m = r;
  q->next = NULL;
  if (rt->dl_tail)
    rt->dl_tail->next = q;
  else
    rt->dl_head = q;
  rt->dl_tail = q;
  mb_dest_ready(dl);
}

mb_msg *mb_dead_letter_take(mb_runtime *rt) {
  mb_dead_letter *q = rt->dl_head;
  if (!q) return NULL;
  rt->dl_head = q->next;
  if (!rt->dl_head) rt->dl_tail = NULL;
  mb_msg *m = q->m;
  free(q);
  return m;
}

/* A durable destination's message (tagged by the link): its link hears of
 * each delivery's end; 1 when it will be delivered again. Out of line: the
 * local path only tests the link's hook. */
static __attribute__((noinline)) int link_outcome(mb_dest *d, mb_msg *m, int status) {
  void *tag = mb_msg_tag(m);
  return tag ? d->rt->link.outcome(d->rt->link.ud, tag, status) : 0;
}

/* A delivery ended (to: its listener's service, NULL when none was found).
 * Inlined: mb_delivery_finish runs it for every message (a call cost 1%
 * of bench 1's instructions). */
static inline __attribute__((always_inline)) void outcome(mb_dest *d, mb_msg *m, uint64_t group, const mb_service *to, int status,
                    const char *error) {
  char buf[64];
  mb_obs_outcome(d, m, to, status, error);
  /* a durable destination's message: the link acknowledges it once all its
   * deliveries here ended, or has it delivered again (no dead letter yet) */
  int retry = __builtin_expect(d->rt->link.outcome != NULL, 0) && (m->flags & MB_MSG_REMOTE)
                  ? link_outcome(d, m, status)
                  : 0;
  if (status == MB_OK) {
    d->st.delivered++;
    return;
  }
  if (status == MB_EDROPPED) {
    d->st.dropped++;
    d->rt->counts.dropped++;
  } else {
    d->st.failed++;
    d->rt->counts.failed++;
  }
  if (!error) {
    snprintf(buf, sizeof buf, "%s: delivery %s", mb_strerror(status),
             status == MB_EDROPPED ? "dropped" : "failed");
    error = buf;
  }
  if (!retry) dead_letter(d, m, error);
  if (m->flags & MB_MSG_REQUEST) {
    mb_request *r = mb_request_find(d->rt, m->id);
    if (r && status == MB_EDROPPED) {
      /* the requester sees code words of the API: "closed: ..." */
      char closed[600];
      const char *text = strncmp(error, "dropped: ", 9) == 0 ? error + 9 : error;
      snprintf(closed, sizeof closed, "closed: %s", text);
      mb_request_answer(r, group, MB_ECLOSED, NULL, closed);
    } else if (r) {
      mb_request_answer(r, group, status, NULL, error);
    }
  }
}

/* A delivery that was scheduled but cannot be made: no listener left. */
void mb_delivery_drop(mb_dest *d, mb_msg *m, uint64_t group, const char *why) {
  d->st.deliveries++;
  outcome(d, m, group, NULL, MB_EDROPPED, why);
}


/* ---- deliveries ------------------------------------------------------------ */

mb_group *mb_group_by_id(mb_dest *d, uint64_t id) {
  for (size_t i = 0; i < d->ngroups; i++)
    if (d->groups[i]->id == id) return d->groups[i];
  return NULL;
}

static void run_delivery(void *arg);
static void give(mb_delivery *dv, mb_listener *l);

/* The member with the fewest deliveries open, taking turns among equals. */
static mb_listener *pick(mb_group *g) {
  mb_listener *best = NULL;
  for (size_t i = 0; i < g->n; i++) {
    mb_listener *l = g->members[(g->rr + i) % g->n];
    if (!best || l->inflight < best->inflight) best = l;
  }
  g->rr++;
  return best;
}

static void inline_add(mb_inline *inl, mb_delivery *dv) {
  dv->inline_pending = 1;
  if (inl->n < 16) {
    inl->v[inl->n++] = dv;
    return;
  }
  if (inl->n - 16 == inl->cap) {
    size_t cap = inl->cap ? inl->cap * 2 : 16;
    mb_delivery **m = realloc(inl->more, cap * sizeof *m);
    if (!m) { /* out of memory: run it from the queue instead */
      dv->inline_pending = 0;
      if (mb_worker_post(dv->l->svc->w, &dv->l->svc->own, run_delivery, dv))
        mb_delivery_finish(dv, MB_EFAILED, "failed: out of memory"); /* not lost */
      return;
    }
    inl->more = m;
    inl->cap = cap;
  }
  inl->more[inl->n++ - 16] = dv;
}

void mb_deliver(mb_dest *d, mb_msg *m, mb_group *g, mb_sync *sync, mb_inline *inl) {
  mb_runtime *rt = d->rt;
  d->st.deliveries++;
  if (m->flags & MB_MSG_REDELIVERED) d->st.redelivered++;
  mb_listener *l = pick(g);
  mb_delivery *dv = rt->free_deliveries;
  if (dv) {
    rt->free_deliveries = dv->next;
    rt->nfree_deliveries--;
  } else if (!(dv = malloc(sizeof *dv))) {
    outcome(d, m, g->id, l->svc, MB_EFAILED, "failed: out of memory");
    return;
  }
  dv->msg = mb_msg_ref(m);
  dv->group = g->id;
  if (m->flags & MB_MSG_REQUEST) { /* so that mb.reply by fields finds its slot */
    mb_request *r = mb_request_find(rt, m->id);
    if (r) mb_request_delivering(r, g->id, l->svc);
  }
  dv->sync = sync;
  dv->inline_pending = 0;
  dv->started = 0;
  dv->fail = 0;
  dv->fail_error = NULL;
  if (sync) sync->remaining++;
  mb_service *svc = l->svc;
  give(dv, l);
  d->st.in_flight++;
  rt->counts.deliveries++;
  if (inl && svc->w == mb_self())
    inline_add(inl, dv);
  else if (mb_worker_post(svc->w, &svc->own, run_delivery, dv))
    mb_delivery_finish(dv, MB_EFAILED, "failed: out of memory");
}

/* Links dv (its msg, group set) to listener l: l's service's open list,
 * the counts. */
static void give(mb_delivery *dv, mb_listener *l) {
  mb_service *svc = l->svc;
  dv->l = l;
  dv->prev = NULL;
  dv->next = svc->open;
  if (svc->open) svc->open->prev = dv;
  svc->open = dv;
  l->refs++;
  l->inflight++;
}

int mb_delivery_handover(mb_delivery *dv) {
  mb_listener *l = dv->l;
  mb_dest *d = l->dest;
  mb_group *g = d->state == MB_DEST_OPEN ? mb_group_by_id(d, dv->group) : NULL;
  if (!g || !g->n || dv->started) return 0;
  mb_service *svc = l->svc;
  if (dv->prev)
    dv->prev->next = dv->next;
  else
    svc->open = dv->next;
  if (dv->next) dv->next->prev = dv->prev;
  l->inflight--;
  mb_listener *to = pick(g);
  give(dv, to);
  dv->inline_pending = 0;
  if (dv->msg->flags & MB_MSG_REQUEST) {
    mb_request *r = mb_request_find(d->rt, dv->msg->id);
    if (r) mb_request_delivering(r, g->id, to->svc);
  }
  mb_listener_unref(l); /* the dest stays: `to` holds it too */
  if (mb_worker_post(to->svc->w, &to->svc->own, run_delivery, dv))
    mb_delivery_finish(dv, MB_EFAILED, "failed: out of memory");
  return 1;
}

/* On the listener's worker: hands the delivery to the listener, unless it
 * was closed since: then another member of its group takes it, if one is
 * left (mb_delivery_handover), else it is dropped. */
static void run_delivery(void *arg) {
  mb_delivery *dv = arg;
  mb_listener *l = dv->l;
  mb_runtime *rt = l->svc->rt;
  /* posted and still open: no lock (a close racing with this is the same
   * race as a close just after the handler started) */
  if (!dv->inline_pending && !atomic_load_explicit(&l->closed, memory_order_acquire)) {
    dv->started = 1;
    l->fn(l->ud, dv);
    return;
  }
  mb_lock(rt);
  dv->inline_pending = 0;
  if (l->closed) {
    if (!mb_delivery_handover(dv))
      mb_delivery_finish(dv, MB_EDROPPED, "dropped: listener closed before delivery");
    mb_unlock(rt);
    return;
  }
  dv->started = 1;
  mb_unlock(rt);
  l->fn(l->ud, dv);
}

void mb_run_inline(mb_inline *inl) {
  for (size_t i = 0; i < inl->n; i++) run_delivery(i < 16 ? inl->v[i] : inl->more[i - 16]);
  free(inl->more);
  inl->more = NULL;
  inl->n = inl->cap = 0;
}

const mb_msg *mb_delivery_msg(const mb_delivery *d) { return d->msg; }
uint64_t mb_delivery_group(const mb_delivery *d) { return d->group; }

static void sync_unlink(mb_sync *s) {
  if (!s->from) return;
  if (s->prev)
    s->prev->next = s->next;
  else
    s->from->syncs = s->next;
  if (s->next) s->next->prev = s->prev;
  s->from = NULL;
}

/* Core tasks that carry memory are posted unbound (they always run, also
 * at teardown) and check themselves whether their service still lives. */
static void sync_done_task(void *arg) {
  mb_sync *s = arg;
  if (!atomic_load(&s->from->own.dead)) s->done(s->ud, s->status);
  mb_service_unref(s->from);
  free(s);
}

static void sync_release(mb_sync *s) {
  if (--s->remaining > 0 || s->inline_call) return;
  mb_service *from = s->from;
  sync_unlink(s);
  if (s->done && from) {
    s->from = from;
    mb_service_ref(from);
    /* out of memory for the task: the sender is told all the same */
    if (mb_worker_post(from->w, NULL, sync_done_task, s))
      mb_worker_post_late(from->w, &s->late, sync_done_task, s);
    return;
  }
  free(s);
}

/* The sender is going away: its waiting synchronous sends complete
 * without telling it. */
void mb_delivery_forget_syncs(mb_service *svc) {
  while (svc->syncs) {
    mb_sync *s = svc->syncs;
    s->done = NULL;
    sync_unlink(s);
  }
}

void mb_delivery_fail(mb_delivery *dv, const char *error) {
  mb_runtime *rt = dv->l->svc->rt;
  mb_lock(rt);
  if (!dv->fail) {
    dv->fail = 1;
    dv->fail_error = error ? strdup(error) : NULL;
  }
  mb_unlock(rt);
}


void mb_delivery_finish(mb_delivery *dv, int status, const char *error) {
  mb_msg *m = dv->msg;
  mb_listener *l = dv->l;
  mb_dest *d = l->dest; /* the message's: l holds it */
  mb_service *svc = l->svc;
  mb_runtime *rt = svc->rt;
  if (dv->prev)
    dv->prev->next = dv->next;
  else
    svc->open = dv->next;
  if (dv->next) dv->next->prev = dv->prev;
  d->st.in_flight--;
  l->inflight--;
  rt->counts.deliveries--;
  /* a failure's outcome() may close listeners or remove destinations (a
   * dead letter, a requester told), and so may the link's hook: hold d.
   * A delivery that went well only counts, and below nothing touches d
   * after l, which holds it, is released: two atomics fewer on a line the
   * sending worker uses too. */
  int hold = status != MB_OK || dv->fail || (m->flags & MB_MSG_REMOTE);
  if (hold) mb_dest_ref(d);
  if (dv->fail && status != MB_EDROPPED) {
    status = MB_EFAILED;
    error = dv->fail_error ? dv->fail_error : "failed: out of memory";
  }
  outcome(d, m, dv->group, svc, status, error);
  free(dv->fail_error);
  dv->fail_error = NULL;
  dv->fail = 0;
  if (dv->sync) sync_release(dv->sync);
  if (d->opts.type == MB_SERIAL && d->cur == m && d->cur_running) {
    d->cur_running = 0;
    d->cur_step++;
    mb_dest_ready(d);
  } else if (d->opts.type == MB_PARALLEL && d->qlen) {
    mb_dest_ready(d);
  }
  mb_dest_maybe_removed(d);
  mb_listener_unref(l);
  mb_msg_unref(m);
  dv->next = rt->free_deliveries;
  rt->free_deliveries = dv;
  rt->nfree_deliveries++;
  if (hold) mb_dest_unref(d);
}

void mb_delivery_settle_locked(mb_service *svc) {
  mb_delivery *dv = svc->done_head;
  svc->done_head = svc->done_tail = NULL;
  while (dv) {
    mb_delivery *next = dv->done_next;
    mb_delivery_finish(dv, MB_OK, NULL);
    dv = next;
  }
}

static void settle_task(void *arg) {
  mb_service *svc = arg;
  mb_runtime *rt = svc->rt;
  mb_lock(rt);
  svc->done_posted = 0;
  mb_delivery_settle_locked(svc);
  mb_unlock(rt);
}

void mb_delivery_done_soon(mb_delivery *dv, int status, const char *error) {
  mb_service *svc = dv->l->svc;
  if (status != MB_OK || dv->sync || svc->w != mb_self() ||
      __atomic_load_n(&svc->rt->obs, __ATOMIC_RELAXED)) {
    mb_delivery_done(dv, status, error);
    return;
  }
  dv->done_next = NULL;
  if (svc->done_tail)
    svc->done_tail->done_next = dv;
  else
    svc->done_head = dv;
  svc->done_tail = dv;
  if (svc->done_posted) return;
  if (mb_worker_post(svc->w, &svc->own, settle_task, svc) == MB_OK)
    svc->done_posted = 1;
  else /* out of memory for the task: settle now */
    mb_service_settle(svc);
}

void mb_service_settle(mb_service *svc) {
  if (svc->w != mb_self() || !svc->done_head) return;
  mb_lock(svc->rt);
  mb_delivery_settle_locked(svc);
  mb_unlock(svc->rt);
}

void mb_delivery_done(mb_delivery *dv, int status, const char *error) {
  mb_service *svc = dv->l->svc;
  mb_runtime *rt = svc->rt;
  int own = svc->w == mb_self();
  mb_lock(rt);
  if (own && svc->done_head) mb_delivery_settle_locked(svc); /* in order */
  mb_delivery_finish(dv, status, error);
  mb_unlock(rt);
}


/* ---- synchronous sends ------------------------------------------------------ */

void mb_deliver_all(mb_dest *d, mb_msg *m, uint64_t *ids, size_t n, mb_sync *sync,
                        mb_inline *inl) {
  for (size_t i = 0; i < n; i++) {
    mb_group *g = mb_group_by_id(d, ids[i]);
    if (g)
      mb_deliver(d, m, g, sync, inl);
    else
      mb_delivery_drop(d, m, ids[i], "dropped: listener closed before delivery");
  }
}

/* A synchronous destination: every listener gets the message now. With
 * inl, the caller runs the deliveries of its own worker after unlocking and
 * then settles the send with mb_sync_settle. */
int mb_send_sync(mb_dest *d, mb_msg *m, mb_send_fn done, void *ud, mb_inline *inl) {
  uint64_t stack_ids[16], *ids = stack_ids;
  size_t n = d->ngroups;
  mb_sync *s = calloc(1, sizeof *s);
  if (n > 16) ids = malloc(n * sizeof *ids);
  if (!s || !ids) {
    free(s);
    if (ids != stack_ids) free(ids);
    mb_msg_unref(m);
    return MB_ENOMEM;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (mb_group_takes(d->groups[i], m)) ids[k++] = d->groups[i]->id;
  n = k;
  if (!(m->flags & MB_MSG_REMOTE)) d->st.sent++; /* a remote one: its sender counted it */
  if (m->flags & MB_MSG_REQUEST) {
    mb_request *r = mb_request_find(d->rt, m->id);
    if (r) mb_request_dispatched(r, d, m);
  }
  s->remaining = 1; /* ours, until the inline deliveries have run */
  s->inline_call = 1;
  s->done = done;
  s->ud = ud;
  mb_deliver_all(d, m, ids, n, s, inl);
  if (ids != stack_ids) free(ids);
  mb_msg_unref(m);
  if (inl) {
    inl->sync = s;
    return MB_OK;
  }
  s->done = NULL; /* nobody can wait: the last delivery frees it */
  s->inline_call = 0;
  if (--s->remaining == 0) free(s);
  return MB_OK;
}

/* After mb_run_inline: MB_OK when every listener finished, MB_PENDING when
 * done will be told later. Takes the lock. */
int mb_sync_settle(mb_runtime *rt, mb_service *from, mb_inline *inl, int rc) {
  mb_sync *s = inl->sync;
  if (!s) return rc;
  inl->sync = NULL;
  mb_lock(rt);
  s->inline_call = 0;
  if (--s->remaining == 0) {
    free(s);
  } else if (!s->done || !from) {
    s->done = NULL; /* nobody waits: the last delivery frees it */
  } else {
    s->from = from;
    s->prev = NULL;
    s->next = from->syncs;
    if (from->syncs) from->syncs->prev = s;
    from->syncs = s;
    rc = MB_PENDING;
  }
  mb_unlock(rt);
  return rc;
}


void mb_delivery_free_cache(mb_runtime *rt) {
  while (rt->free_deliveries) {
    mb_delivery *d = rt->free_deliveries;
    rt->free_deliveries = d->next;
    free(d);
  }
  for (mb_msg *m; (m = mb_dead_letter_take(rt));) mb_msg_unref(m);
}
