/*
 * mb_dispatch.c — the way in: mb_send_msg takes a message for a
 * destination, refuses it, queues it (with the full-queue policies: reject,
 * or block the sender until there is room) or, for a synchronous one, hands
 * it to mb_send_sync. The pump (rt->pump, posted by mb_dest_ready) takes
 * queued messages to mb_deliver: parallel ones up to the concurrency,
 * serial ones one listener group after the other; the pump of
 * "mb/dead-letters" first sends the dead letters mb_delivery.c queued.
 * Also removing a destination and freeing them all at teardown. Owns the
 * queues and the blocked senders. Uses mb_delivery.c, mb_request.c,
 * mb_dest.c, mb_observe.c, mb_worker.c, mb_msg.c.
 * Tests: spec/c/test_*.c, spec/api/bus_spec.lua.
 */
#include <stdlib.h>
#include <string.h>

#include "mb_core.h"
#include "mb_dest.h"

static void admit_blocked(mb_dest *d, int status);
static void dispatch_parallel(mb_dest *d, mb_msg *m);

/* ---- the queue ------------------------------------------------------------- */

static int push(mb_dest *d, mb_msg *m) {
  if (d->qlen == d->qcap) {
    size_t cap = d->qcap ? d->qcap * 2 : 16;
    mb_msg **q = malloc(cap * sizeof *q);
    if (!q) return -1;
    for (size_t i = 0; i < d->qlen; i++) q[i] = d->q[(d->qhead + i) % d->qcap];
    free(d->q);
    d->q = q;
    d->qcap = cap;
    d->qhead = 0;
  }
  d->q[(d->qhead + d->qlen) % d->qcap] = m;
  d->qlen++;
  if (d->qlen > d->st.largest_pending) d->st.largest_pending = d->qlen;
  return 0;
}

static mb_msg *pop(mb_dest *d) {
  mb_msg *m = d->q[d->qhead];
  d->qhead = (d->qhead + 1) % d->qcap;
  d->qlen--;
  if (d->bhead && d->state == MB_DEST_OPEN) admit_blocked(d, MB_OK);
  return m;
}

static void blocked_done_task(void *arg) {
  mb_blocked *b = arg;
  if (!atomic_load(&b->from->own.dead)) b->done(b->ud, b->status);
  mb_service_unref(b->from);
  free(b);
}

/* Ends a blocked send with status: tells its sender on the sender's thread
 * (a request's own callback runs here, it only releases the request). */
static void blocked_end(mb_dest *d, mb_blocked *b, int status) {
  b->status = status;
  if (b->req)
    mb_request_admitted(b->req, status);
  else if (b->done && b->from) {
    mb_service_ref(b->from);
    /* out of memory for the task: the sender is told all the same */
    if (mb_worker_post(b->from->w, NULL, blocked_done_task, b))
      mb_worker_post_late(b->from->w, &b->late, blocked_done_task, b);
    return;
  }
  free(b);
}

/* Admits blocked senders while there is room (status MB_OK), or refuses
 * them all (status < 0). */
static void admit_blocked(mb_dest *d, int status) {
  while (d->bhead && (status < 0 || d->qlen < d->opts.max_queue)) {
    mb_blocked *b = d->bhead;
    d->bhead = b->next;
    if (!d->bhead) d->btail = NULL;
    int rc = status;
    if (rc == MB_OK && push(d, b->m)) rc = MB_ENOMEM;
    if (rc == MB_OK) {
      if (!(b->m->flags & MB_MSG_REMOTE)) d->st.sent++; /* its sender counted it */
    } else {
      d->st.rejected++;
      mb_obs_rejected(d->rt, d->name, b->from, b->m, rc, NULL);
      mb_msg_unref(b->m);
    }
    blocked_end(d, b, rc);
  }
}

void mb_dest_cancel_blocked(mb_runtime *rt, mb_service *svc) {
  size_t at = 0;
  for (mb_dest *d; (d = mb_map_next(&rt->dests, &at));) {
    mb_blocked **p = &d->bhead, *last = NULL;
    while (*p) {
      mb_blocked *b = *p;
      if (b->from == svc) {
        *p = b->next;
        /* never accepted: refused, as every send is one or the other */
        d->st.rejected++;
        mb_obs_rejected(rt, d->name, svc, b->m, MB_ECLOSED, NULL);
        mb_msg_unref(b->m);
        /* a request's own callback only releases it: it must still run */
        if (b->req) mb_request_admitted(b->req, MB_ECLOSED);
        free(b);
      } else {
        last = b;
        p = &b->next;
      }
    }
    d->btail = last;
  }
}

/* ---- sending --------------------------------------------------------------- */

/* Group ids of the moment, so that listeners closing or registering while a
 * message is being delivered change nothing for it. */
static int snapshot(mb_dest *d, const mb_msg *m) {
  if (d->ngroups > d->cur_cap) {
    uint64_t *ids = realloc(d->cur_groups, d->ngroups * sizeof *ids);
    if (!ids) return -1;
    d->cur_groups = ids;
    d->cur_cap = d->ngroups;
  }
  size_t n = 0;
  for (size_t i = 0; i < d->ngroups; i++)
    if (mb_group_takes(d->groups[i], m)) d->cur_groups[n++] = d->groups[i]->id;
  d->cur_n = n;
  return 0;
}

/* Whether the message just queued at d may be dispatched by its sender at
 * once: a parallel destination with room, nothing queued before it, no
 * pump on its way, and one group whose members all run on other workers
 * (a pump task would only make the listener wait for the rest of the
 * sender's batch: with requests in flight the two workers would take turns
 * instead of working at once). Same-worker listeners keep the pump. */
static int dispatch_now(const mb_dest *d) {
  if (d->opts.type != MB_PARALLEL || d->qlen != 1 || d->in_ready || d->pumping ||
      d->ngroups != 1 || d->st.in_flight >= d->opts.concurrency || d->dead_letters)
    return 0;
  mb_worker *me = mb_self();
  if (!me || me->rt != d->rt) return 0;
  const mb_group *g = d->groups[0];
  for (size_t i = 0; i < g->n; i++)
    if (g->members[i]->svc->w == me) return 0;
  return g->n > 0;
}

int mb_send_msg(mb_service *from, mb_dest *d, mb_msg *m, mb_send_fn done, void *ud,
                mb_request *req, mb_inline *inl) {
  if (m->name) { /* a message is sent once */
    mb_msg_unref(m);
    return MB_EINVAL;
  }
  int refused = d->state != MB_DEST_OPEN ? MB_ECLOSED
                : mb_dest_takers(d, m) == 0 ? MB_ENOLISTENERS
                /* draining: only what handling a delivery sends, and replies */
                : d->rt->draining && from && !(m->flags & MB_MSG_FOLLOW_UP) && !m->response_id
                    ? MB_ESHUTDOWN
                    : MB_OK;
  if (refused) {
    d->st.rejected++;
    mb_obs_rejected(d->rt, d->name, from, m, refused, NULL);
    mb_msg_unref(m);
    return refused;
  }
  m->name = mb_name_ref(d->nm);
  mb_obs_sent(d->rt, from, d, m);
  if (d->opts.type == MB_SYNCHRONOUS) return mb_send_sync(d, m, done, ud, inl);
  if (d->qlen >= d->opts.max_queue || d->bhead) {
    if (d->opts.on_full == MB_FULL_BLOCK && (done || req)) {
      mb_blocked *b = malloc(sizeof *b);
      if (!b) {
        mb_msg_unref(m);
        return MB_ENOMEM;
      }
      b->m = m;
      b->from = from;
      b->req = req;
      b->done = done;
      b->ud = ud;
      b->next = NULL;
      if (d->btail)
        d->btail->next = b;
      else
        d->bhead = b;
      d->btail = b;
      return MB_PENDING;
    }
    if (d->qlen >= d->opts.max_queue) {
      d->st.rejected++;
      mb_obs_rejected(d->rt, d->name, from, m, MB_EFULL, NULL);
      mb_msg_unref(m);
      return MB_EFULL;
    }
  }
  if (push(d, m)) {
    mb_msg_unref(m);
    return MB_ENOMEM;
  }
  if (!(m->flags & MB_MSG_REMOTE)) d->st.sent++; /* a remote one: its sender counted it */
  if (dispatch_now(d)) {
    mb_msg *first = pop(d);
    dispatch_parallel(d, first);
    mb_msg_unref(first);
    return MB_OK;
  }
  mb_dest_ready(d);
  return MB_OK;
}


/* ---- the pump --------------------------------------------------------------- */

/* ---- dispatch -------------------------------------------------------------- */

/* A durable message (tagged by its link) is acknowledged once as many of
 * its deliveries have ended as groups took it at mb_link_deliver
 * (mb_msg_takers): dispatched to n groups (0: dropped, one delivery
 * ended), it goes to no group that came since (the first of the n keep
 * it: new groups come last), and each group that closed since ends at
 * once, as done, without a count, as a local message is given to the
 * groups there at its dispatch. Returns how many groups get it. */
static size_t link_dispatch(mb_dest *d, mb_msg *m, size_t n) {
  void *tag = mb_msg_tag(m);
  if (!tag || !d->rt->link.outcome) return n;
  uint64_t want = mb_msg_takers(m), made = n ? n : 1;
  if (made > want) return want > 0 ? (size_t)want : n;
  for (; made < want; made++) d->rt->link.outcome(d->rt->link.ud, tag, MB_OK);
  return n;
}

static void dispatch_parallel(mb_dest *d, mb_msg *m) {
  if (m->flags & MB_MSG_REQUEST) {
    mb_request *r = mb_request_find(d->rt, m->id);
    if (r) mb_request_dispatched(r, d, m);
  }
  size_t n = link_dispatch(d, m, mb_dest_takers(d, m));
  if (n == 0)
    mb_delivery_drop(d, m, 0, "dropped: no listener left at delivery");
  else if (d->ngroups == 1)
    mb_deliver(d, m, d->groups[0], NULL, NULL);
  else if (snapshot(d, m) == 0)
    mb_deliver_all(d, m, d->cur_groups, n < d->cur_n ? n : d->cur_n, NULL, NULL);
  else /* (each of the n deliveries a link counts on ends) */
    for (size_t i = 0; i < (mb_msg_tag(m) ? n : 1); i++)
      mb_delivery_drop(d, m, 0, "dropped: out of memory");
}

/* Sends the dead letters waiting for dl, as a sender outside any service
 * would; those that find it closed or without listeners are lost, as they
 * were when nobody listened at the failure. */
static void send_dead_letters(mb_dest *dl) {
  for (mb_msg *m; (m = mb_dead_letter_take(dl->rt));) {
    if (dl->state != MB_DEST_OPEN || dl->ngroups == 0)
      mb_msg_unref(m);
    else
      mb_send_msg(NULL, dl, m, NULL, NULL, NULL, NULL);
  }
}

/* Dispatches up to budget messages; returns 1 while more could go now. */
int mb_dispatch_pump(mb_dest *d, size_t budget) {
  if (d->dead_letters) send_dead_letters(d); /* removed: they are lost */
  if (d->state == MB_DEST_REMOVED) return 0;
  while (budget-- > 0) {
    if (d->opts.type == MB_SERIAL) {
      if (d->cur) {
        if (d->cur_running) break;
        if (d->cur_step < d->cur_n) {
          mb_group *g = mb_group_by_id(d, d->cur_groups[d->cur_step]);
          if (!g) {
            mb_delivery_drop(d, d->cur, d->cur_groups[d->cur_step],
                 "dropped: listener closed before delivery");
            d->cur_step++;
          } else {
            d->cur_running = 1;
            mb_deliver(d, d->cur, g, NULL, NULL);
          }
          continue;
        }
        mb_msg *done = d->cur;
        d->cur = NULL;
        mb_msg_unref(done);
        continue;
      }
      if (!d->qlen) break;
      mb_msg *m = pop(d);
      if (m->flags & MB_MSG_REQUEST) {
        mb_request *r = mb_request_find(d->rt, m->id);
        if (r) mb_request_dispatched(r, d, m);
      }
      if (snapshot(d, m) || d->cur_n == 0) {
        link_dispatch(d, m, 0);
        mb_delivery_drop(d, m, 0, "dropped: no listener left at delivery");
        mb_msg_unref(m);
        continue;
      }
      d->cur_n = link_dispatch(d, m, d->cur_n);
      d->cur = m;
      d->cur_step = 0;
      d->cur_running = 0;
    } else {
      if (!d->qlen || d->st.in_flight >= d->opts.concurrency) break;
      mb_msg *m = pop(d);
      dispatch_parallel(d, m);
      mb_msg_unref(m);
    }
  }
  if (d->opts.type == MB_SERIAL) return d->cur ? !d->cur_running : d->qlen > 0;
  return d->qlen > 0 && d->st.in_flight < d->opts.concurrency;
}


/* ---- removal ---------------------------------------------------------------- */

int mb_dest_remove(mb_runtime *rt, const char *name) {
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  if (!d || d->state != MB_DEST_OPEN) {
    mb_unlock(rt);
    return MB_ENODEST;
  }
  d->state = MB_DEST_CLOSING;
  /* blocked senders were never accepted: they get `closed` */
  admit_blocked(d, MB_ECLOSED);
  if (mb_dest_busy(d))
    mb_dest_ready(d); /* the pump removes it once it is empty */
  else
    mb_dest_finish_removal(d);
  mb_unlock(rt);
  return MB_OK;
}


void mb_dest_free_all(mb_runtime *rt) {
  /* no lookup runs meanwhile: the map is emptied at the end, and a value
   * freed in the walk is not read again */
  size_t at = 0;
  for (mb_dest *d; (d = mb_map_next(&rt->dests, &at));) {
    d->state = MB_DEST_REMOVED;
    admit_blocked(d, MB_ECLOSED);
    while (d->ngroups) { /* only where a C user left listeners open */
      mb_group *g = d->groups[0];
      if (g->n)
        mb_listener_close_locked(g->members[0]);
      else {
        d->ngroups--;
        memmove(&d->groups[0], &d->groups[1], d->ngroups * sizeof *d->groups);
        free(g->members);
        free(g);
      }
    }
    if (d->cur) {
      mb_msg *m = d->cur;
      d->cur = NULL;
      mb_msg_unref(m);
    }
    while (d->qlen) mb_msg_unref(pop(d));
    mb_dest_unref(d);
  }
  mb_map_free(&rt->dests);
  rt->dests_gen++; /* the services' cached lookups with it */
  for (mb_msg *m; (m = mb_dead_letter_take(rt));) mb_msg_unref(m);
}
