/*
 * mb_observe.c — watching the bus work, for mbrun's --trace, --stats and
 * --graph and the REPL: the tracer hook called once per hop, per-destination
 * latency histograms, and the graph of which service sends to or listens at
 * which destination. Also the graceful shutdown's "drain" switch.
 *
 * Owns the edge set (rt->edges), the stats of removed destinations
 * (rt->removed) and each destination's histogram. Every
 * mb_obs_* function runs under rt->lock and returns at once unless rt->obs
 * asks for it, so a bus nobody watches pays one test per message.
 *
 * Uses mb_base.c and mb_map.c; reads destinations, services and requests
 * (their structs), calls none of them.
 * Tests: spec/c/test_observe.c (observe_*), spec/cli/trace_spec.lua.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mb_core.h"

/* Counts this runtime among the observers while anything is observed. */
static void count_observer(mb_runtime *rt, unsigned before) {
  if (!before && rt->obs) atomic_fetch_add(&mb_observers, 1);
  if (before && !rt->obs) atomic_fetch_sub(&mb_observers, 1);
}

/* The observation data after a message's data, if it has room for it. */
static int obs_get(const mb_msg *m, mb_msg_obs *o) {
  if (!(m->flags & MB_MSG_OBSERVED)) return 0;
  memcpy(o, m->data + m->plen + m->vlen + m->rlen, sizeof *o);
  return 1;
}

static void obs_put(mb_msg *m, const mb_msg_obs *o) {
  if (m->flags & MB_MSG_OBSERVED) memcpy(m->data + m->plen + m->vlen + m->rlen, o, sizeof *o);
}

void mb_runtime_trace(mb_runtime *rt, mb_trace_fn fn, void *ud) {
  mb_lock(rt);
  if (!rt->t0) rt->t0 = mb_now_ns();
  rt->trace_fn = fn;
  rt->trace_ud = ud;
  unsigned before = rt->obs;
  __atomic_store_n(&rt->obs, fn ? rt->obs | MB_OBS_TRACE : rt->obs & ~MB_OBS_TRACE,
                   __ATOMIC_RELAXED); /* mb_delivery_done_soon reads it unlocked */
  count_observer(rt, before);
  mb_unlock(rt);
}

void mb_runtime_observe(mb_runtime *rt, unsigned flags) {
  mb_lock(rt);
  if (!rt->t0) rt->t0 = mb_now_ns();
  unsigned before = rt->obs;
  __atomic_store_n(&rt->obs,
                   rt->obs | (flags & (MB_OBSERVE_LATENCY | MB_OBSERVE_GRAPH | MB_OBSERVE_REMOVED)),
                   __ATOMIC_RELAXED);
  count_observer(rt, before);
  mb_unlock(rt);
}

static int timed(const mb_runtime *rt) {
  return (rt->obs & (MB_OBS_TRACE | MB_OBSERVE_LATENCY)) != 0;
}

static double seconds_since(uint64_t t) {
  return t ? (double)(mb_now_ns() - t) / 1e9 : 0;
}

/* The name of a live service, by id (NULL when gone or 0). */
static const char *service_name(const mb_runtime *rt, uint64_t id) {
  for (const mb_service *s = rt->services; s && id; s = s->next)
    if (s->id == id) return s->name;
  return NULL;
}

static void hop(mb_runtime *rt, mb_hop *h) {
  h->at = (double)(mb_now_ns() - rt->t0) / 1e9;
  rt->trace_fn(rt->trace_ud, h);
}

/* ---- the graph ---------------------------------------------------------------- */

typedef struct mb_graph_edge {
  mb_edge e;
  char names[]; /* service, NUL, destination, NUL */
} mb_graph_edge;

typedef struct edge_key {
  int listens;
  const char *svc, *dest;
} edge_key;

static int edge_eq(const void *v, const void *key) {
  const mb_graph_edge *g = v;
  const edge_key *k = key;
  return g->e.listens == k->listens && !strcmp(g->e.service, k->svc) &&
         !strcmp(g->e.dest, k->dest);
}

static void note_edge(mb_runtime *rt, int listens, const mb_service *svc, const mb_dest *d) {
  if (!svc || !(rt->obs & MB_OBSERVE_GRAPH)) return;
  edge_key k = {listens, svc->name, d->name};
  uint64_t h = mb_hash_str(svc->name, strlen(svc->name)) * 31 + d->hash + (uint64_t)listens;
  if (mb_map_get(&rt->edges, h, edge_eq, &k)) return;
  size_t sl = strlen(svc->name);
  mb_graph_edge *g = malloc(sizeof *g + sl + d->namelen + 2);
  if (!g) return; /* the picture misses an edge; the bus goes on */
  memcpy(g->names, svc->name, sl + 1);
  memcpy(g->names + sl + 1, d->name, d->namelen + 1);
  g->e.listens = listens;
  g->e.service = g->names;
  g->e.dest = g->names + sl + 1;
  g->e.type = d->opts.type;
  if (mb_map_put(&rt->edges, h, g)) free(g);
}

void mb_graph_each(mb_runtime *rt, void (*fn)(void *ud, const mb_edge *e), void *ud) {
  mb_lock(rt);
  size_t at = 0;
  for (const mb_graph_edge *g; (g = mb_map_next(&rt->edges, &at));) fn(ud, &g->e);
  mb_unlock(rt);
}

/* ---- removed destinations ------------------------------------------------------ */

typedef struct mb_removed {
  mb_stats st;
  char name[];
} mb_removed;

static int removed_eq(const void *v, const void *key) {
  return !strcmp(((const mb_removed *)v)->name, key);
}

void mb_obs_removed(const mb_dest *d) {
  mb_runtime *rt = d->rt;
  if (!(rt->obs & MB_OBSERVE_REMOVED)) return;
  mb_stats st = d->st;
  st.listeners = 0;
  st.pending = 0;
  mb_obs_dest_stats(d, &st);
  mb_removed *r = mb_map_get(&rt->removed, d->hash, removed_eq, d->name);
  if (!r) {
    if (!(r = malloc(sizeof *r + d->namelen + 1))) return; /* the table misses a row */
    memcpy(r->name, d->name, d->namelen + 1);
    r->st = st;
    if (mb_map_put(&rt->removed, d->hash, r)) free(r);
    return;
  }
  mb_stats *a = &r->st; /* the same name removed before: added up */
  double n0 = (double)(a->delivered + a->failed), n1 = (double)(st.delivered + st.failed);
  if (n0 + n1 > 0) a->latency_mean = (a->latency_mean * n0 + st.latency_mean * n1) / (n0 + n1);
  if (st.latency_p99 > a->latency_p99) a->latency_p99 = st.latency_p99;
  if (st.largest_pending > a->largest_pending) a->largest_pending = st.largest_pending;
  a->type = st.type;
  a->sent += st.sent;
  a->rejected += st.rejected;
  a->deliveries += st.deliveries;
  a->delivered += st.delivered;
  a->failed += st.failed;
  a->dropped += st.dropped;
  a->in_flight += st.in_flight;
  a->replies += st.replies;
  a->timeouts += st.timeouts;
}

void mb_removed_each(mb_runtime *rt, void (*fn)(void *ud, const char *name, const mb_stats *st),
                     void *ud) {
  mb_lock(rt);
  size_t at = 0;
  for (const mb_removed *r; (r = mb_map_next(&rt->removed, &at));) fn(ud, r->name, &r->st);
  mb_unlock(rt);
}

/* ---- latency ------------------------------------------------------------------ */

/* Buckets of 1/16 of a power of two: values below 16 ns have one bucket
 * each, then 16 per octave up to 2^40 ns (about 18 minutes). */
#define LAT_SUB 16
#define LAT_MAX_BITS 40
#define LAT_BUCKETS ((LAT_MAX_BITS - 3) * LAT_SUB)

static size_t lat_bucket(uint64_t ns) {
  if (ns < LAT_SUB) return (size_t)ns;
  if (ns >= (1ull << LAT_MAX_BITS)) ns = (1ull << LAT_MAX_BITS) - 1;
  int msb = 63 - __builtin_clzll(ns);
  return (size_t)(msb - 3) * LAT_SUB + ((ns >> (msb - 4)) & (LAT_SUB - 1));
}

/* The top of a bucket, in ns. */
static double lat_top(size_t b) {
  if (b < LAT_SUB) return (double)b;
  int msb = (int)(b / LAT_SUB) + 3;
  double step = (double)(1ull << (msb - 4));
  return (double)(1ull << msb) + (double)(b % LAT_SUB + 1) * step - 1;
}

static void lat_record(mb_dest *d, uint64_t ns) {
  if (!d->lat_hist && !(d->lat_hist = calloc(LAT_BUCKETS, sizeof *d->lat_hist))) return;
  d->lat_hist[lat_bucket(ns)]++;
  d->lat_n++;
  d->lat_sum += (double)ns / 1e9;
  if (ns > d->lat_max) d->lat_max = ns;
}

void mb_obs_dest_stats(const mb_dest *d, mb_stats *out) {
  out->latency_mean = out->latency_p99 = 0;
  if (!d->lat_n || !d->lat_hist) return;
  out->latency_mean = d->lat_sum / (double)d->lat_n;
  uint64_t rank = (d->lat_n * 99 + 99) / 100, seen = 0; /* ceil(0.99 n) */
  for (size_t b = 0; b < LAT_BUCKETS; b++) {
    seen += d->lat_hist[b];
    if (seen >= rank) {
      /* its bucket's top, but never above the largest seen */
      double top = lat_top(b);
      out->latency_p99 = (top < (double)d->lat_max ? top : (double)d->lat_max) / 1e9;
      return;
    }
  }
}

/* ---- the hooks -------------------------------------------------------------------- */

void mb_obs_sent(mb_runtime *rt, const mb_service *from, mb_dest *d, mb_msg *m) {
  if (!rt->obs) return;
  mb_msg_obs o = {from ? from->id : 0, timed(rt) ? mb_now_ns() : 0};
  obs_put(m, &o);
  note_edge(rt, 0, from, d);
}

void mb_obs_listen(mb_runtime *rt, const mb_service *svc, const mb_dest *d) {
  if (rt->obs) note_edge(rt, 1, svc, d);
}

void mb_obs_outcome(mb_dest *d, const mb_msg *m, const mb_service *to, int status,
                    const char *error) {
  mb_runtime *rt = d->rt;
  if (!rt->obs) return;
  mb_msg_obs o = {0, 0};
  obs_get(m, &o);
  uint64_t ns = o.t_sent ? mb_now_ns() - o.t_sent : 0;
  if ((rt->obs & MB_OBSERVE_LATENCY) && o.t_sent && status != MB_EDROPPED) lat_record(d, ns);
  if (!(rt->obs & MB_OBS_TRACE)) return;
  mb_hop h = {status == MB_OK ? MB_HOP_OK : status == MB_EDROPPED ? MB_HOP_DROPPED : MB_HOP_FAILED,
              0, (double)ns / 1e9, m->id, d->name, service_name(rt, o.from),
              to ? to->name : NULL, m, status == MB_OK ? NULL : error};
  hop(rt, &h);
}

void mb_obs_rejected(mb_runtime *rt, const char *dest, const mb_service *from, const mb_msg *m,
                     int code, const char *why) {
  if (!(rt->obs & MB_OBS_TRACE)) return;
  if (!why) why = code == MB_ENODEST        ? "no such destination"
                    : code == MB_ENOLISTENERS ? "nobody listens there"
                    : code == MB_EFULL        ? "its queue is full (max_queue)"
                    : code == MB_ESHUTDOWN    ? "shutting down, no new messages"
                    : code == MB_ECLOSED      ? "the destination is being removed"
                                              : "refused";
  char err[320];
  snprintf(err, sizeof err, "%s: %s", mb_strerror(code), why);
  mb_hop h = {MB_HOP_REJECTED, 0, 0, m ? m->id : 0, dest, from ? from->name : NULL, NULL, m, err};
  hop(rt, &h);
}

void mb_obs_timeout(mb_request *r, const char *error) {
  mb_runtime *rt = r->svc->rt;
  if (!(rt->obs & MB_OBS_TRACE)) return;
  mb_hop h = {MB_HOP_TIMEOUT, 0, seconds_since(r->t_start), r->id, r->dest->name, r->svc->name,
              NULL, NULL, error};
  hop(rt, &h);
}

void mb_obs_reply(mb_runtime *rt, const char *dest, const mb_service *from,
                  const mb_request *r, const mb_msg *reply, uint64_t request_id) {
  if (!(rt->obs & MB_OBS_TRACE)) return;
  mb_hop h = {MB_HOP_REPLY, 0, r ? seconds_since(r->t_start) : 0, request_id, dest ? dest : "-",
              from ? from->name : NULL, r ? r->svc->name : NULL, reply, NULL};
  hop(rt, &h);
}

void mb_obs_free(mb_runtime *rt) {
  if (rt->obs) atomic_fetch_sub(&mb_observers, 1);
  __atomic_store_n(&rt->obs, 0u, __ATOMIC_RELAXED);
  size_t at = 0;
  for (void *g; (g = mb_map_next(&rt->edges, &at));) free(g);
  mb_map_free(&rt->edges);
  at = 0;
  for (void *r; (r = mb_map_next(&rt->removed, &at));) free(r);
  mb_map_free(&rt->removed);
}

/* ---- draining ------------------------------------------------------------------ */

void mb_runtime_drain(mb_runtime *rt) {
  mb_lock(rt);
  int first = !rt->draining;
  rt->draining = 1;
  mb_link link = rt->link;
  mb_unlock(rt);
  if (first && link.drain) link.drain(link.ud);
}

size_t mb_runtime_in_flight(mb_runtime *rt) {
  size_t n = 0;
  mb_lock(rt);
  size_t at = 0;
  for (const mb_dest *d; (d = mb_map_next(&rt->dests, &at));) {
    n += d->qlen + d->st.in_flight;
    for (const mb_blocked *b = d->bhead; b; b = b->next) n++;
  }
  n += rt->requests.len;
  mb_unlock(rt);
  if (n) return n;
  /* Nothing at the destinations; but tasks may be queued that finish work
   * (a reply on its way to a waiting script, a send's completion): they
   * count in busy, and so do users' holds (timers), which are not work.
   * Read holds around busy until they agree (see mb_runtime_hold). */
  for (;;) {
    long h1 = atomic_load(&rt->holds);
    long b = atomic_load(&rt->busy);
    long h2 = atomic_load(&rt->holds);
    if (h1 == h2) return b > h1 ? (size_t)(b - h1) : 0;
  }
}
