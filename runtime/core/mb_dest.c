/*
 * mb_dest.c — destinations: declaration and removal, listener groups, the
 * queue of pending messages with its full-queue policies, dispatch for the
 * three types (parallel, serial, synchronous), delivery accounting and dead
 * letters. A destination is reference counted: the name map, a queued pump
 * task, messages sent to it and listeners registered at it each hold one.
 * Public functions take rt->lock; the others expect it held. Deliveries and
 * callbacks are posted to the workers of their services (mb_core.h).
 * Tests: spec/c/test_core.c, spec/destination_spec.lua.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_core.h"

#define DEAD_LETTERS "mb/dead-letters"

/* ---- names and lookup -------------------------------------------------- */

int mb_dest_name_valid(const char *name, size_t len) {
  if (!name || len == 0 || len > 255) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '.' || c == '/' || c == ':' || c == '-'))
      return 0;
  }
  return 1;
}

static int dest_eq(const void *v, const void *key) {
  return strcmp(((const mb_dest *)v)->name, key) == 0;
}

mb_dest *mb_dest_find(mb_runtime *rt, const char *name) {
  return mb_map_get(&rt->dests, mb_hash_str(name, strlen(name)), dest_eq, name);
}

static void dest_free(mb_dest *d) {
  while (d->qlen) {
    mb_msg *m = d->q[d->qhead];
    d->qhead = (d->qhead + 1) % d->qcap;
    d->qlen--;
    mb_msg_unref(m);
  }
  free(d->q);
  free(d->groups);
  free(d->cur_groups);
  free(d->lat_hist);
  free(d->name);
  free(d);
}

void mb_dest_unref(mb_dest *d) {
  if (atomic_fetch_sub(&d->refs, 1) == 1) dest_free(d);
}

static void dest_ref(mb_dest *d) { atomic_fetch_add(&d->refs, 1); }

/* Field by field: the struct has padding, which memcmp would compare. */
static int same_opts(const mb_dest_opts *a, const mb_dest_opts *b) {
  return a->type == b->type && a->max_queue == b->max_queue && a->on_full == b->on_full &&
         a->concurrency == b->concurrency;
}

static void normalize(mb_runtime *rt, mb_dest_opts *o) {
  if (!o->max_queue) o->max_queue = 65536;
  if (!o->concurrency) o->concurrency = 64 * (size_t)rt->nworkers;
  if (o->type != MB_PARALLEL) o->concurrency = o->type == MB_SERIAL ? 1 : o->concurrency;
}

int mb_dest_declare(mb_runtime *rt, const char *name, const mb_dest_opts *opts) {
  size_t len = strlen(name);
  if (!mb_dest_name_valid(name, len)) return MB_EINVAL;
  mb_dest_opts o = {0};
  if (opts) o = *opts;
  if (o.type > MB_SYNCHRONOUS || o.on_full > MB_FULL_BLOCK) return MB_EINVAL;
  normalize(rt, &o);
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  int rc = MB_OK;
  if (d) {
    rc = d->state != MB_DEST_OPEN                      ? MB_ECLOSED
         : same_opts(&d->opts, &o)             ? MB_OK
                                                       : MB_EEXISTS;
    mb_unlock(rt);
    return rc;
  }
  d = calloc(1, sizeof *d);
  if (!d || !(d->name = strdup(name))) {
    free(d);
    mb_unlock(rt);
    return MB_ENOMEM;
  }
  d->namelen = len;
  d->hash = mb_hash_str(name, len);
  d->opts = o;
  d->rt = rt;
  atomic_init(&d->refs, 1); /* the map's */
  d->st.type = o.type;
  if (mb_map_put(&rt->dests, d->hash, d)) {
    dest_free(d);
    rc = MB_ENOMEM;
  } else {
    mb_fire_event(rt, MB_EV_DEST_ADDED, d, NULL);
  }
  mb_unlock(rt);
  return rc;
}

int mb_dest_exists(mb_runtime *rt, const char *name) {
  mb_lock(rt);
  int rc = mb_dest_find(rt, name) != NULL;
  mb_unlock(rt);
  return rc;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void mb_dest_each(mb_runtime *rt, void (*fn)(void *ud, const char *name), void *ud) {
  size_t n = 0;
  /* copied under the lock; fn runs without it */
  mb_lock(rt);
  char **names = malloc((rt->dests.len + 1) * sizeof *names);
  for (size_t i = 0; names && i < rt->dests.cap; i++)
    if (rt->dests.e[i].v && (names[n] = strdup(((mb_dest *)rt->dests.e[i].v)->name))) n++;
  mb_unlock(rt);
  if (!names) return;
  qsort(names, n, sizeof *names, cmp_names);
  for (size_t i = 0; i < n; i++) fn(ud, names[i]);
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

int mb_dest_stats(mb_runtime *rt, const char *name, mb_stats *out) {
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  if (d) {
    *out = d->st;
    out->listeners = d->nlisteners;
    out->pending = d->qlen;
    mb_obs_dest_stats(d, out);
  }
  mb_unlock(rt);
  return d ? MB_OK : MB_ENODEST;
}

/* ---- removal ------------------------------------------------------------ */

static int busy(const mb_dest *d) {
  return d->qlen || d->st.in_flight || d->cur || d->in_ready || d->bhead;
}

static void closed_task(void *arg);

static void finish_removal(mb_dest *d) {
  mb_runtime *rt = d->rt;
  d->state = MB_DEST_REMOVED;
  mb_map_del(&rt->dests, d->hash, dest_eq, d->name);
  dest_ref(d); /* closing its listeners must not free it under us */
  while (d->ngroups) {
    mb_group *g = d->groups[0];
    if (g->n) {
      mb_listener *l = g->members[0];
      /* its owner hears of it on its own thread; l lives until then */
      if (l->on_closed) {
        l->refs++;
        /* out of memory: the owner is not told, and its handle still
         * points at l; l stays until the owner closes it */
        if (mb_worker_post(l->svc->w, NULL, closed_task, l)) l->closed_lost = 1;
      }
      mb_listener_close_locked(l);
    } else { /* left empty by a failed registration */
      memmove(&d->groups[0], &d->groups[1], (d->ngroups - 1) * sizeof *d->groups);
      d->ngroups--;
      free(g->members);
      free(g);
    }
  }
  mb_fire_event(rt, MB_EV_DEST_REMOVED, d, NULL);
  mb_dest_unref(d); /* the map's */
  mb_dest_unref(d);
}

static void maybe_removed(mb_dest *d) {
  if (d->state == MB_DEST_CLOSING && !busy(d)) finish_removal(d);
}

static void admit_blocked(mb_dest *d, int status);

static void dest_ready(mb_dest *d);

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
  if (busy(d))
    dest_ready(d);
  else
    finish_removal(d);
  mb_unlock(rt);
  return MB_OK;
}

/* ---- listeners ----------------------------------------------------------- */

mb_listener *mb_listen(mb_service *svc, const char *name, uint64_t key, mb_listener_fn fn,
                       mb_closed_fn closed, void *ud, int *err) {
  mb_runtime *rt = svc->rt;
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  if (!d || d->state != MB_DEST_OPEN) {
    *err = d ? MB_ECLOSED : MB_ENODEST;
    mb_unlock(rt);
    return NULL;
  }
  mb_group *g = NULL, *fresh = NULL;
  if (key)
    for (size_t i = 0; i < d->ngroups; i++)
      if (d->groups[i]->key == key) g = d->groups[i];
  /* everything is allocated before anything is linked: a failure leaves no
   * empty group behind (dispatch would pick a member of it) */
  mb_listener *l = calloc(1, sizeof *l);
  if (!l) goto nomem;
  if (!g) {
    if (d->ngroups == d->capgroups) {
      size_t cap = d->capgroups ? d->capgroups * 2 : 4;
      mb_group **gs = realloc(d->groups, cap * sizeof *gs);
      if (!gs) goto nomem;
      d->groups = gs;
      d->capgroups = cap;
    }
    g = fresh = calloc(1, sizeof *g);
    if (!g) goto nomem;
  }
  if (g->n == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 2;
    mb_listener **ms = realloc(g->members, cap * sizeof *ms);
    if (!ms) goto nomem;
    g->members = ms;
    g->cap = cap;
  }
  if (fresh) {
    g->id = ++rt->next_group;
    g->key = key;
    g->svc = svc;
    d->groups[d->ngroups++] = g;
  }
  g->members[g->n++] = l;
  l->svc = svc;
  l->dest = d;
  l->group = g;
  l->fn = fn;
  l->on_closed = closed;
  l->ud = ud;
  l->refs = 1;
  dest_ref(d);
  atomic_fetch_add(&svc->refs, 1);
  d->nlisteners++;
  l->next = svc->listeners;
  if (svc->listeners) svc->listeners->prev = l;
  svc->listeners = l;
  rt->counts.listeners++;
  mb_fire_event(rt, MB_EV_LISTENER_ADDED, d, svc);
  mb_obs_listen(rt, svc, d);
  mb_unlock(rt);
  return l;
nomem:
  mb_unlock(rt);
  if (fresh) free(fresh->members);
  free(fresh);
  free(l);
  *err = MB_ENOMEM;
  return NULL;
}

static void listener_unref(mb_listener *l) {
  if (--l->refs > 0) return;
  mb_runtime *rt = l->svc->rt;
  rt->counts.listeners--;
  mb_dest_unref(l->dest);
  mb_service_unref(l->svc);
  free(l);
}

static void closed_task(void *arg) {
  mb_listener *l = arg;
  mb_runtime *rt = l->svc->rt;
  /* on the owner's thread, like mb_listener_close: no race on the flag */
  if (!atomic_load(&l->svc->dead) && !l->owner_closed) l->on_closed(l->ud);
  mb_lock(rt);
  listener_unref(l);
  mb_unlock(rt);
}

void mb_listener_close(mb_listener *l) {
  mb_runtime *rt = l->svc->rt;
  mb_lock(rt);
  int lost = l->closed_lost; /* then l is closed already, and alive by that ref */
  l->owner_closed = 1;
  mb_listener_close_locked(l); /* may free l */
  if (lost) {
    l->closed_lost = 0;
    listener_unref(l);
  }
  mb_unlock(rt);
}

void mb_listener_close_locked(mb_listener *l) {
  if (l->closed) return;
  l->closed = 1;
  mb_dest *d = l->dest;
  mb_group *g = l->group;
  for (size_t i = 0; i < g->n; i++)
    if (g->members[i] == l) {
      memmove(&g->members[i], &g->members[i + 1], (g->n - i - 1) * sizeof *g->members);
      g->n--;
      break;
    }
  if (g->n == 0) {
    for (size_t i = 0; i < d->ngroups; i++)
      if (d->groups[i] == g) {
        memmove(&d->groups[i], &d->groups[i + 1], (d->ngroups - i - 1) * sizeof *d->groups);
        d->ngroups--;
        break;
      }
    free(g->members);
    free(g);
  }
  d->nlisteners--;
  mb_service *svc = l->svc;
  if (l->prev)
    l->prev->next = l->next;
  else
    svc->listeners = l->next;
  if (l->next) l->next->prev = l->prev;
  mb_fire_event(svc->rt, MB_EV_LISTENER_REMOVED, d, svc);
  listener_unref(l);
}

/* ---- outcomes: stats, dead letters, waiting requesters -------------------- */

static void dead_letter(mb_dest *d, mb_msg *m, const char *error) {
  mb_runtime *rt = d->rt;
  mb_dest *dl = mb_dest_find(rt, DEAD_LETTERS);
  if (!dl || dl == d || dl->state != MB_DEST_OPEN || dl->ngroups == 0) return;
  mb_buf b = {0};
  long at = mb_enc_table_begin(&b);
  int rc = at < 0;
  if (!rc) {
    rc |= mb_enc_str(&b, "destination", 11) | mb_enc_str(&b, d->name, d->namelen);
    rc |= mb_enc_str(&b, "message", 7) | mb_msg_encode(m, &b);
    rc |= mb_enc_str(&b, "error", 5) | mb_enc_str(&b, error, strlen(error));
    mb_enc_table_end(&b, at, 0, 3);
  }
  mb_msg *r = rc ? NULL : mb_msg_new(b.p, b.len, NULL, 0, NULL);
  mb_buf_free(&b);
  if (r) mb_send_msg(NULL, dl, r, NULL, NULL, NULL);
}

/* A delivery ended (to: its listener's service, NULL when none was found). */
static void outcome(mb_dest *d, mb_msg *m, uint64_t group, const mb_service *to, int status,
                    const char *error) {
  char buf[64];
  mb_obs_outcome(d, m, to, status, error);
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
  dead_letter(d, m, error);
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
static void drop(mb_dest *d, mb_msg *m, uint64_t group, const char *why) {
  d->st.deliveries++;
  outcome(d, m, group, NULL, MB_EDROPPED, why);
}

/* ---- deliveries ------------------------------------------------------------ */

static mb_group *group_by_id(mb_dest *d, uint64_t id) {
  for (size_t i = 0; i < d->ngroups; i++)
    if (d->groups[i]->id == id) return d->groups[i];
  return NULL;
}

static void run_delivery(void *arg);

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
      if (mb_worker_post(dv->l->svc->w, dv->l->svc, run_delivery, dv))
        mb_delivery_finish(dv, MB_EFAILED, "failed: out of memory"); /* not lost */
      return;
    }
    inl->more = m;
    inl->cap = cap;
  }
  inl->more[inl->n++ - 16] = dv;
}

static void deliver(mb_dest *d, mb_msg *m, mb_group *g, mb_sync *sync, mb_inline *inl) {
  mb_runtime *rt = d->rt;
  d->st.deliveries++;
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
  dv->l = l;
  dv->group = g->id;
  if (m->flags & MB_MSG_REQUEST) { /* so that mb.reply by fields finds its slot */
    mb_request *r = mb_request_find(rt, m->id);
    if (r) mb_request_delivering(r, g->id, l->svc);
  }
  dv->sync = sync;
  dv->inline_pending = 0;
  dv->fail = 0;
  dv->fail_error = NULL;
  if (sync) sync->remaining++;
  mb_service *svc = l->svc;
  dv->prev = NULL;
  dv->next = svc->open;
  if (svc->open) svc->open->prev = dv;
  svc->open = dv;
  l->refs++;
  l->inflight++;
  d->st.in_flight++;
  rt->counts.deliveries++;
  if (inl && svc->w == mb_self())
    inline_add(inl, dv);
  else if (mb_worker_post(svc->w, svc, run_delivery, dv))
    mb_delivery_finish(dv, MB_EFAILED, "failed: out of memory");
}

/* On the listener's worker: hands the delivery to the listener, unless it
 * was closed since. */
static void run_delivery(void *arg) {
  mb_delivery *dv = arg;
  mb_listener *l = dv->l;
  mb_runtime *rt = l->svc->rt;
  /* posted and still open: no lock (a close racing with this is the same
   * race as a close just after the handler started) */
  if (!dv->inline_pending && !atomic_load_explicit(&l->closed, memory_order_acquire)) {
    l->fn(l->ud, dv);
    return;
  }
  mb_lock(rt);
  dv->inline_pending = 0;
  if (l->closed) {
    mb_delivery_finish(dv, MB_EDROPPED, "dropped: listener closed before delivery");
    mb_unlock(rt);
    return;
  }
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
  if (!atomic_load(&s->from->dead)) s->done(s->ud, s->status);
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
void mb_dest_forget_syncs(mb_service *svc) {
  while (svc->syncs) {
    mb_sync *s = svc->syncs;
    s->done = NULL;
    sync_unlink(s);
  }
}

static void dest_ready(mb_dest *d);
static void maybe_removed(mb_dest *d);

void mb_delivery_fail(mb_delivery *dv, const char *error) {
  mb_runtime *rt = dv->l->svc->rt;
  mb_lock(rt);
  if (!dv->fail) {
    dv->fail = 1;
    dv->fail_error = error ? strdup(error) : NULL;
  }
  mb_unlock(rt);
}

int mb_delivery_reply(mb_delivery *dv, mb_msg *reply, mb_send_fn done, void *ud) {
  const mb_msg *m = dv->msg;
  const char *reply_to = mb_msg_reply_to(m);
  int rc = mb_reply_id(dv->l->svc, m->dest->name, m->id, reply_to, dv->group, reply, done, ud);
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

void mb_delivery_finish(mb_delivery *dv, int status, const char *error) {
  mb_msg *m = dv->msg;
  mb_dest *d = m->dest;
  mb_listener *l = dv->l;
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
  dest_ref(d); /* outcome() may close listeners or remove destinations */
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
    dest_ready(d);
  } else if (d->opts.type == MB_PARALLEL && d->qlen) {
    dest_ready(d);
  }
  maybe_removed(d);
  listener_unref(l);
  mb_msg_unref(m);
  dv->next = rt->free_deliveries;
  rt->free_deliveries = dv;
  rt->nfree_deliveries++;
  mb_dest_unref(d);
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
  if (mb_worker_post(svc->w, svc, settle_task, svc) == MB_OK)
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

/* Admits blocked senders while there is room (status MB_OK), or refuses
 * them all (status < 0). */
static void blocked_done_task(void *arg) {
  mb_blocked *b = arg;
  if (!atomic_load(&b->from->dead)) b->done(b->ud, b->status);
  mb_service_unref(b->from);
  free(b);
}

/* Ends a blocked send with status: tells its sender on the sender's thread
 * (a request's own callback runs here, it only releases the request). */
static void blocked_end(mb_dest *d, mb_blocked *b, int status) {
  b->status = status;
  if (b->done == mb_request_sent_cb)
    b->done(b->ud, status);
  else if (b->done && b->from) {
    mb_service_ref(b->from);
    /* out of memory for the task: the sender is told all the same */
    if (mb_worker_post(b->from->w, NULL, blocked_done_task, b))
      mb_worker_post_late(b->from->w, &b->late, blocked_done_task, b);
    return;
  }
  free(b);
}

static void admit_blocked(mb_dest *d, int status) {
  while (d->bhead && (status < 0 || d->qlen < d->opts.max_queue)) {
    mb_blocked *b = d->bhead;
    d->bhead = b->next;
    if (!d->bhead) d->btail = NULL;
    int rc = status;
    if (rc == MB_OK && push(d, b->m)) rc = MB_ENOMEM;
    if (rc == MB_OK)
      d->st.sent++;
    else {
      d->st.rejected++;
      mb_obs_rejected(d->rt, d->name, b->from, b->m, rc, NULL);
      mb_msg_unref(b->m);
    }
    blocked_end(d, b, rc);
  }
}

void mb_dest_cancel_blocked(mb_runtime *rt, mb_service *svc) {
  for (size_t i = 0; i < rt->dests.cap; i++) {
    mb_dest *d = rt->dests.e[i].v;
    if (!d) continue;
    mb_blocked **p = &d->bhead, *last = NULL;
    while (*p) {
      mb_blocked *b = *p;
      if (b->from == svc) {
        *p = b->next;
        mb_msg_unref(b->m);
        /* a request's own callback only releases it: it must still run */
        if (b->done == mb_request_sent_cb) b->done(b->ud, MB_ECLOSED);
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
static int snapshot(mb_dest *d) {
  if (d->ngroups > d->cur_cap) {
    uint64_t *ids = realloc(d->cur_groups, d->ngroups * sizeof *ids);
    if (!ids) return -1;
    d->cur_groups = ids;
    d->cur_cap = d->ngroups;
  }
  for (size_t i = 0; i < d->ngroups; i++) d->cur_groups[i] = d->groups[i]->id;
  d->cur_n = d->ngroups;
  return 0;
}

static void deliver_all(mb_dest *d, mb_msg *m, uint64_t *ids, size_t n, mb_sync *sync,
                        mb_inline *inl) {
  for (size_t i = 0; i < n; i++) {
    mb_group *g = group_by_id(d, ids[i]);
    if (g)
      deliver(d, m, g, sync, inl);
    else
      drop(d, m, ids[i], "dropped: listener closed before delivery");
  }
}

/* A synchronous destination: every listener gets the message now. With
 * inl, the caller runs the deliveries of its own worker after unlocking and
 * then settles the send with mb_sync_settle. */
static int send_sync(mb_dest *d, mb_msg *m, mb_send_fn done, void *ud, mb_inline *inl) {
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
  for (size_t i = 0; i < n; i++) ids[i] = d->groups[i]->id;
  d->st.sent++;
  if (m->flags & MB_MSG_REQUEST) {
    mb_request *r = mb_request_find(d->rt, m->id);
    if (r) mb_request_dispatched(r, d);
  }
  s->remaining = 1; /* ours, until the inline deliveries have run */
  s->inline_call = 1;
  s->done = done;
  s->ud = ud;
  deliver_all(d, m, ids, n, s, inl);
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

int mb_send_msg(mb_service *from, mb_dest *d, mb_msg *m, mb_send_fn done, void *ud,
                mb_inline *inl) {
  if (m->dest) { /* a message is sent once */
    mb_msg_unref(m);
    return MB_EINVAL;
  }
  int refused = d->state != MB_DEST_OPEN ? MB_ECLOSED
                : d->ngroups == 0      ? MB_ENOLISTENERS
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
  m->dest = d;
  dest_ref(d);
  mb_obs_sent(d->rt, from, d, m);
  if (d->opts.type == MB_SYNCHRONOUS) return send_sync(d, m, done, ud, inl);
  if (d->qlen >= d->opts.max_queue || d->bhead) {
    if (d->opts.on_full == MB_FULL_BLOCK && done) {
      mb_blocked *b = malloc(sizeof *b);
      if (!b) {
        mb_msg_unref(m);
        return MB_ENOMEM;
      }
      b->m = m;
      b->from = from;
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
  d->st.sent++;
  dest_ready(d);
  return MB_OK;
}

int mb_send(mb_service *from, const char *name, mb_msg *m, mb_send_fn done, void *ud) {
  mb_runtime *rt = from->rt;
  mb_inline inl = {0};
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  int rc = d ? mb_send_msg(from, d, m, done, ud, &inl) : MB_ENODEST;
  if (!d) mb_obs_rejected(rt, name, from, m, MB_ENODEST, NULL);
  mb_unlock(rt);
  if (!d) mb_msg_unref(m);
  mb_run_inline(&inl);
  return mb_sync_settle(rt, from, &inl, rc);
}

/* ---- dispatch -------------------------------------------------------------- */

static void dispatch_parallel(mb_dest *d, mb_msg *m) {
  if (m->flags & MB_MSG_REQUEST) {
    mb_request *r = mb_request_find(d->rt, m->id);
    if (r) mb_request_dispatched(r, d);
  }
  if (d->ngroups == 0)
    drop(d, m, 0, "dropped: no listener left at delivery");
  else if (d->ngroups == 1)
    deliver(d, m, d->groups[0], NULL, NULL);
  else if (snapshot(d) == 0)
    deliver_all(d, m, d->cur_groups, d->cur_n, NULL, NULL);
  else
    drop(d, m, 0, "dropped: out of memory");
}

/* Dispatches up to budget messages; returns 1 while more could go now. */
static int pump(mb_dest *d, size_t budget) {
  if (d->state == MB_DEST_REMOVED) return 0;
  while (budget-- > 0) {
    if (d->opts.type == MB_SERIAL) {
      if (d->cur) {
        if (d->cur_running) break;
        if (d->cur_step < d->cur_n) {
          mb_group *g = group_by_id(d, d->cur_groups[d->cur_step]);
          if (!g) {
            drop(d, d->cur, d->cur_groups[d->cur_step],
                 "dropped: listener closed before delivery");
            d->cur_step++;
          } else {
            d->cur_running = 1;
            deliver(d, d->cur, g, NULL, NULL);
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
        if (r) mb_request_dispatched(r, d);
      }
      if (d->ngroups == 0 || snapshot(d)) {
        drop(d, m, 0, "dropped: no listener left at delivery");
        mb_msg_unref(m);
        continue;
      }
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

static void pump_task(void *arg) {
  mb_dest *d = arg;
  mb_runtime *rt = d->rt;
  mb_lock(rt);
  d->in_ready = 0;
  d->pumping = 1;
  int more = pump(d, 64);
  d->pumping = 0;
  if (more) dest_ready(d);
  maybe_removed(d);
  mb_unlock(rt);
  mb_dest_unref(d); /* the task's */
}

/* Queues a pump of d on this thread's worker (any worker may pump: the lock
 * makes it one at a time). */
static void dest_ready(mb_dest *d) {
  if (d->in_ready || d->state == MB_DEST_REMOVED) return;
  mb_worker *w = mb_self();
  if (!w || w->rt != d->rt) w = &d->rt->workers[0];
  d->in_ready = 1;
  dest_ref(d);
  if (mb_worker_post(w, NULL, pump_task, d)) {
    /* out of memory for the task: pump here, under the lock as pump_task
     * would, so that no message waits for a pump that never comes (not when
     * a pump is on the stack: it goes on by itself) */
    d->in_ready = 0;
    if (!d->pumping) {
      d->pumping = 1;
      while (pump(d, 64)) continue;
      d->pumping = 0;
    }
    mb_dest_unref(d);
  }
}

void mb_dest_free_all(mb_runtime *rt) {
  for (size_t i = 0; i < rt->dests.cap; i++) {
    mb_dest *d = rt->dests.e[i].v;
    if (!d) continue;
    rt->dests.e[i].v = NULL;
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
  rt->dests.len = 0;
}
