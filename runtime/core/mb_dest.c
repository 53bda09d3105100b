/*
 * mb_dest.c — destinations: names, declaration and lookup, listeners and
 * their groups, statistics, and the end of a removal. A destination is
 * reference counted: the name map, a queued pump task, listeners
 * registered at it and requests sent to it each hold one (messages hold
 * only its name, an mb_name). Public functions take rt->lock; the others
 * expect it held. Its queue and blocked senders are filled and emptied by
 * mb_dispatch.c; mb_dest_ready posts the dispatcher's pump (rt->pump).
 * Uses mb_msg.c, mb_worker.c, mb_service.c (events), mb_observe.c.
 * Tests: spec/c/test_dest.c, spec/api/bus_spec.lua.
 */
#include <stdlib.h>
#include <string.h>

#include "mb_core.h"
#include "mb_dest.h"

/* ---- names and lookup -------------------------------------------------- */

static void fire(mb_runtime *rt, mb_event_kind kind, const mb_dest *d, const mb_service *svc) {
  mb_fire_event(rt, kind, d->name, d->namelen, d->opts.type, d->nlisteners, svc);
}

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

mb_dest *mb_dest_find_from(mb_service *from, const char *name) {
  mb_runtime *rt = from->rt;
  mb_dest *d = from->dcache;
  if (d && from->dcache_gen == rt->dests_gen && !strcmp(d->name, name)) return d;
  d = mb_dest_find(rt, name);
  from->dcache = d;
  from->dcache_gen = rt->dests_gen;
  return d;
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
  mb_name_unref(d->nm);
  free(d);
}

void mb_dest_unref(mb_dest *d) {
  if (atomic_fetch_sub(&d->refs, 1) == 1) dest_free(d);
}

/* Field by field: the struct has padding, which memcmp would compare. */
static int same_opts(const mb_dest_opts *a, const mb_dest_opts *b) {
  return a->type == b->type && a->max_queue == b->max_queue && a->on_full == b->on_full &&
         a->concurrency == b->concurrency && a->cluster == b->cluster &&
         !a->share == !b->share;
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
  o.share = o.share != 0;
  if (o.cluster < 0 || o.cluster > 2 || (o.cluster == 2 && o.type == MB_SYNCHRONOUS))
    return MB_EINVAL; /* durable: parallel or serial */
  mb_lock(rt);
  if (o.cluster && !rt->link.send) {
    mb_unlock(rt);
    return MB_EINVAL;
  }
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
  if (!d || !(d->nm = mb_name_new(name, len))) {
    free(d);
    mb_unlock(rt);
    return MB_ENOMEM;
  }
  d->name = d->nm->s;
  d->namelen = len;
  d->dead_letters = strcmp(name, MB_DEAD_LETTERS) == 0;
  d->hash = mb_hash_str(name, len);
  d->opts = o;
  d->rt = rt;
  if (o.share) atomic_store(&rt->shares, 1);
  atomic_init(&d->refs, 1); /* the map's */
  d->st.type = o.type;
  if (mb_map_put(&rt->dests, d->hash, d)) {
    dest_free(d);
    rc = MB_ENOMEM;
  } else {
    rt->dests_gen++;
    fire(rt, MB_EV_DEST_ADDED, d, NULL);
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

int mb_dest_cluster(mb_runtime *rt, const char *name) {
  mb_lock(rt);
  mb_dest *d = mb_dest_find(rt, name);
  int rc = !d                      ? -1
           : !d->opts.cluster        ? 0
           : d->opts.cluster == 2    ? 3
           : d->opts.type == MB_SYNCHRONOUS ? 2
                                     : 1;
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
  size_t at = 0;
  for (mb_dest *d; names && (d = mb_map_next(&rt->dests, &at));)
    if ((names[n] = strdup(d->name))) n++;
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

static void closed_task(void *arg);

void mb_dest_finish_removal(mb_dest *d) {
  mb_runtime *rt = d->rt;
  d->state = MB_DEST_REMOVED;
  mb_obs_removed(d);
  mb_map_del(&rt->dests, d->hash, dest_eq, d->name);
  rt->dests_gen++;
  mb_dest_ref(d); /* closing its listeners must not free it under us */
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
  fire(rt, MB_EV_DEST_REMOVED, d, NULL);
  mb_dest_unref(d); /* the map's */
  mb_dest_unref(d);
}


/* ---- listeners ----------------------------------------------------------- */

/* ---- named groups, and what the link hears of groups ------------------------ */


uint64_t mb_group_named(mb_runtime *rt, const char *name) {
  size_t len = name ? strlen(name) : 0;
  if (len == 0 || len > 255) return 0;
  mb_lock(rt);
  uint64_t key = 0;
  size_t n = 0;
  for (mb_group_name *g = rt->group_names; g; g = g->next, n++)
    if (strcmp(g->name, name) == 0) key = g->key;
  if (!key) {
    mb_group_name *g = malloc(sizeof *g + len + 1);
    if (g) {
      g->key = key = MB_GROUP_NAMED | (n + 1);
      memcpy(g->name, name, len + 1);
      g->next = rt->group_names;
      rt->group_names = g;
    }
  }
  mb_unlock(rt);
  return key;
}

static const char *group_name(mb_runtime *rt, uint64_t key) {
  if (!(key & MB_GROUP_NAMED)) return NULL;
  for (mb_group_name *g = rt->group_names; g; g = g->next)
    if (g->key == key) return g->name;
  return NULL;
}

void mb_group_names_free(mb_runtime *rt) {
  for (mb_group_name *g = rt->group_names, *next; g; g = next) {
    next = g->next;
    free(g);
  }
  rt->group_names = NULL;
}

/* Group g came (on) or went: a cluster destination's link hears of the
 * first and last group without a name, and of each named one. */
static void interest(mb_dest *d, const mb_group *g, int on) {
  if (!g->name) {
    d->nplain += on ? 1 : -1;
    if (d->nplain != (size_t)on) return; /* not the first (on: 1) or last (off: 0) */
  }
  if (d->opts.cluster && d->rt->link.interest)
    d->rt->link.interest(d->rt->link.ud, d->name, g->name, g->key, on);
}

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
    g->name = group_name(rt, key);
    g->svc = svc;
    d->groups[d->ngroups++] = g;
    interest(d, g, 1);
  }
  g->members[g->n++] = l;
  l->svc = svc;
  l->dest = d;
  l->group = g;
  l->fn = fn;
  l->on_closed = closed;
  l->ud = ud;
  l->refs = 1;
  mb_dest_ref(d);
  mb_service_ref(svc);
  d->nlisteners++;
  l->next = svc->listeners;
  if (svc->listeners) svc->listeners->prev = l;
  svc->listeners = l;
  rt->counts.listeners++;
  fire(rt, MB_EV_LISTENER_ADDED, d, svc);
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

void mb_listener_free(mb_listener *l) {
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
  if (!atomic_load(&l->svc->own.dead) && !l->owner_closed) l->on_closed(l->ud);
  mb_lock(rt);
  mb_listener_unref(l);
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
    mb_listener_unref(l);
  }
  mb_unlock(rt);
}

int mb_listener_alone(mb_listener *l) {
  mb_runtime *rt = l->svc->rt;
  mb_lock(rt);
  int alone = l->closed || l->group->n <= 1;
  mb_unlock(rt);
  return alone;
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
    interest(d, g, 0);
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
  fire(svc->rt, MB_EV_LISTENER_REMOVED, d, svc);
  mb_listener_unref(l);
}


/* ---- the pump --------------------------------------------------------- */

static void pump_task(void *arg) {
  mb_dest *d = arg;
  mb_runtime *rt = d->rt;
  mb_lock(rt);
  d->in_ready = 0;
  d->pumping = 1;
  int more = rt->pump(d, 64);
  d->pumping = 0;
  if (more) mb_dest_ready(d);
  mb_dest_maybe_removed(d);
  mb_unlock(rt);
  mb_dest_unref(d); /* the task's */
}

/* Any worker may pump: the lock makes it one at a time. The worker that
 * asks does. (Not the worker of d's last sender: a handler running long
 * there, CPU bound or stuck, held up every delivery of d, those between
 * services on free workers too, and the pump queued there kept in_ready
 * set, so no other sender's send could start one: spec/workers/hostage.lua.) */
void mb_dest_post_pump(mb_dest *d) {
  mb_worker *w = mb_self();
  if (!w || w->rt != d->rt) w = &d->rt->workers[0];
  d->in_ready = 1;
  mb_dest_ref(d);
  if (mb_worker_post(w, NULL, pump_task, d)) {
    /* out of memory for the task: pump here, under the lock as pump_task
     * would, so that no message waits for a pump that never comes (not when
     * a pump is on the stack: it goes on by itself) */
    d->in_ready = 0;
    if (!d->pumping) {
      d->pumping = 1;
      while (d->rt->pump(d, 64)) continue;
      d->pumping = 0;
    }
    mb_dest_unref(d);
  }
}
