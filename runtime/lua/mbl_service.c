/*
 * mbl_service.c — services in the `mb` module: a Lua state per service
 * (created, released, stopped on its own worker), loading scripts, mb.load
 * (instances started on their workers), stopping and draining instances
 * and handle:stop(). Reloading, handle:reload(), is mbl_reload.c (built on
 * the instance helpers here); listing them, mb.services(), is mbl_svclist.c.
 *
 * Owns: the mbL_state of each service and its Lua state, the service
 * handles (userdata "mb.Service"). Uses tasks and waiters (mbl_task.c),
 * the core's services. Tests: the busted specs in spec/ (load, stop),
 * spec/cli/mbrun_spec.lua.
 */
#include "mbl_private.h"

#include <stdio.h>

const char mbL_state_key = 'S';

/* ---- services ------------------------------------------------------------------------------ */


void mbL_state_link(mbL_runtime *R, mbL_state *S) {
  pthread_mutex_lock(&R->lock);
  S->next = R->states;
  if (R->states) R->states->prev = S;
  R->states = S;
  pthread_mutex_unlock(&R->lock);
}

int mbL_state_describe(mbL_state *S, uint64_t load_id, const char *path) {
  char *copy = path ? strdup(path) : NULL;
  if (path && !copy) return -1;
  pthread_mutex_lock(&S->R->lock);
  S->load_id = load_id;
  if (copy) {
    free(S->path);
    S->path = copy;
  }
  pthread_mutex_unlock(&S->R->lock);
  return 0;
}

static void state_unlink(mbL_runtime *R, mbL_state *S) {
  pthread_mutex_lock(&R->lock);
  if (S->prev)
    S->prev->next = S->next;
  else
    R->states = S->next;
  if (S->next) S->next->prev = S->prev;
  pthread_mutex_unlock(&R->lock);
}

/* S stops: new deliveries are dropped, and a reload or stop on another
 * worker no longer takes it (mbL_instance_of reads this under R->lock). */
static void set_stopping(mbL_state *S) {
  pthread_mutex_lock(&S->R->lock);
  S->stopping = 1;
  pthread_mutex_unlock(&S->R->lock);
}

/* Releases what S holds in the core and the loop, on S's worker. Its Lua
 * state is left to the caller: closed for services, being closed for a
 * program's own state. */
void mbL_state_release(mbL_state *S) {
  mb_runtime *rt = core(S);
  set_stopping(S);
  state_unlink(S->R, S);
  struct ev_loop *loop = mb_service_loop(S->svc);
  if (ev_is_active(&S->drain_wait)) {
    ev_timer_stop(loop, &S->drain_wait);
    mb_runtime_hold(rt, -1);
  }
  if (ev_is_active(&S->retry.timer)) {
    ev_timer_stop(loop, &S->retry.timer);
    mb_runtime_hold(rt, -1);
  }
  /* handles outlive S (finalizers may still close them while the Lua state
   * closes): detached here, each becomes a no-op */
  while (S->timers) {
    mbL_timer *tm = S->timers;
    S->timers = tm->next;
    ev_timer_stop(loop, &tm->w);
    mb_runtime_hold(rt, -1);
    if (tm->call) tm->call->timer = NULL;
    tm->call = NULL;
    tm->S = NULL;
  }
  atomic_fetch_sub(&S->R->timers, (long)S->ntimers);
  S->ntimers = 0;
  while (S->waiters) {
    mbL_waiter *w = S->waiters;
    S->waiters = w->next;
    if (ev_is_active(&w->timer)) {
      ev_timer_stop(loop, &w->timer);
      mb_runtime_hold(rt, -1);
    }
    for (size_t i = 0; i < w->n; i++) {
      mb_msg_unref(w->ans[i].reply);
      free(w->ans[i].error);
    }
    if (w->ans != &w->one) free(w->ans);
    free(w->error);
    free(w);
  }
  /* its handles' owner closes them (also one whose destination's removal
   * could not tell it); the registry goes with the Lua state */
  while (S->listeners) mbL_listener_release(S->listeners, 1, NULL);
  while (S->subs) mbL_sub_release(S->subs, 1, NULL);
  /* drops open deliveries, cancels requests; no callbacks after this */
  mb_service_free(S->svc);
  S->svc = NULL;
  while (S->spare) {
    mbL_waiter *w = S->spare;
    S->spare = w->next;
    free(w);
  }
  while (S->live) {
    mbL_task *t = S->live;
    S->live = t->next;
    /* a body stopped while it waited has not ended: it ends here */
    if (t->kind == T_SCRIPT) atomic_fetch_sub(&S->R->bodies, 1);
    free(t);
  }
  while (S->pool) {
    mbL_task *t = S->pool;
    S->pool = t->next;
    free(t);
  }
  mbL_share_release(S);
  mb_buf_free(&S->buf);
  mb_buf_free(&S->vbuf);
  free(S->start_error);
  S->start_error = NULL;
  free(S->path); /* unlinked: mb.services() no longer reads it */
  S->path = NULL;
}

void mbL_state_stop(mbL_state *S) {
  lua_State *L = S->L;
  int owns = S->owns_L;
  mbL_state_release(S);
  if (owns) lua_close(L); /* finalizers still find S (and that it stopped) */
  free(S);
}

/* The allocator of a service's state: counts what the state holds, and
 * past mb.load's `memory` refuses to grow (Lua raises "not enough memory"
 * in that service alone, after a full collection). */
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  mbL_state *S = ud;
  size_t old = ptr ? osize : 0; /* without ptr, osize is the object's type */
  if (nsize == 0) {
    mb_free(ptr);
    S->mem_used -= old;
    return NULL;
  }
  if (ptr && nsize <= osize) { /* must not fail */
    S->mem_used -= osize - nsize;
    return mb_realloc_shrink(ptr, nsize);
  }
  if (S->mem_limit && S->mem_used - old + nsize > S->mem_limit) return NULL;
  /* a new object (most calls): mimalloc's malloc, not its realloc's longer way there */
  void *p = ptr ? mb_realloc(ptr, nsize) : mb_malloc(nsize);
  if (p) S->mem_used += nsize - old;
  return p;
}

static int l_panic(lua_State *L) {
  fprintf(stderr, "mb: unprotected Lua error: %s\n", lua_tostring(L, -1));
  return 0;
}

/* A new Lua state for the core service svc (whose worker runs this), running
 * nothing yet; NULL when out of memory. */
/* print for service states: Lua's own, except that the line goes out in
 * one write, so that lines printed by services on different workers at the
 * same moment never run into each other. */
static int l_print(lua_State *L) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *line = lua_tolstring(L, -1, &len);
  mbL_output(lua_touserdata(L, lua_upvalueindex(1)), 1, line, len);
  return 0;
}

static int state_init_p(lua_State *L) {
  mbL_state *S = lua_touserdata(L, 1);
  luaL_openlibs(L);
  lua_pushlightuserdata(L, S->R); /* outlives every state */
  lua_pushcclosure(L, l_print, 1);
  lua_setglobal(L, "print");
  S->R->open_module(L, S);
  return 0;
}

mbL_state *mbL_state_new(mbL_runtime *R, mb_service *svc, uint64_t group_key) {
  mbL_state *S = calloc(1, sizeof *S);
  if (!S) return NULL;
  S->L = lua_newstate(l_alloc, S);
  if (!S->L) {
    free(S);
    return NULL;
  }
  lua_atpanic(S->L, l_panic);
  S->svc = svc;
  S->R = R;
  S->owns_L = 1;
  S->group_key = group_key;
  /* the libraries, print and the module allocate: a protected call */
  lua_pushcfunction(S->L, state_init_p);
  lua_pushlightuserdata(S->L, S);
  if (lua_pcall(S->L, 1, 0, 0) != LUA_OK) {
    S->svc = NULL; /* the caller's: finalizers see a stopped service */
    lua_close(S->L);
    free(S);
    return NULL;
  }
  mbL_state_link(R, S);
  return S;
}

static int load_script_p(lua_State *L) {
  lua_pushinteger(L, luaL_loadfilex(L, lua_touserdata(L, 1), "t"));
  return 2;
}

/* Pushes the function that runs path; the error message on failure (a
 * protected call: luaL_loadfilex raises when out of memory). Returns
 * luaL_loadfilex's code. */
int mbL_load_script(lua_State *L, const char *path) {
  lua_pushcfunction(L, load_script_p);
  lua_pushlightuserdata(L, (void *)path);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) return LUA_ERRMEM;
  int rc = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return rc;
}

/* Starts S's script body: the chunk is at the top of S->L, nargs values
 * above it. Returns 0 once the body has run until it first waited or ended,
 * -1 when out of memory (nothing ran). */
int mbL_start_body(mbL_state *S, int nargs) {
  mbL_task *t = mbL_task_new(S, T_SCRIPT);
  /* (S->L held the chunk and its arguments: only memory can be short) */
  if (t && mbL_task_push(t, S->L, nargs)) {
    mbL_task_free(t, 0);
    t = NULL;
  }
  if (!t) {
    lua_pop(S->L, nargs + 1);
    return -1;
  }
  mbL_task_run(t, nargs);
  return 0;
}

/* One of several things a waiter counts down in w->status has happened. */
static void stop_done(void *arg) {
  mbL_waiter *w = arg;
  if (--w->status == 0) mbL_waiter_wake(w);
}

/* The stack of mb.load: path, options, args, the handle, then why it failed. */
enum { LOAD_HANDLE = 4, LOAD_WHY = 5 };

/* What a new instance needs to start on its worker, and how it went. */
typedef struct start_req {
  mbL_runtime *R;
  mb_service *svc;
  mb_service *asker; /* told when the body has started (NULL: inline) */
  mbL_waiter *w;
  uint64_t group_key, load_id, gen;
  size_t memory; /* mb.load's limit, bytes (0: none) */
  double cpu;    /* ... and seconds per call (0: none) */
  int nargs;
  int failed;  /* it did not start: error says why (NULL: out of memory) */
  char *error; /* malloc'd */
  size_t alen;
  char *args; /* encoded list, alen bytes */
  char path[];
} start_req;

static int push_args_p(lua_State *L) {
  start_req *q = lua_touserdata(L, 1);
  luaL_checkstack(L, q->nargs + 2, "too many arguments for the script's `...`");
  mbL_decode(L, (const uint8_t *)q->args, q->alen);
  for (int a = 1; a <= q->nargs; a++) lua_rawgeti(L, 2, a);
  return q->nargs;
}

/* Pushes the script's arguments (decoding allocates: a protected call),
 * with room for them and for what mbL_start_body pushes above them; on an
 * error, leaves its message on the stack; -1 (nothing pushed) when the
 * stack cannot grow that far. */
static int push_args(lua_State *L, start_req *q) {
  if (!lua_checkstack(L, q->nargs + LUA_MINSTACK)) return -1;
  lua_pushcfunction(L, push_args_p);
  lua_pushlightuserdata(L, q);
  /* LUA_MULTRET: Lua keeps a fixed count of results in a short (at most
   * 32767); push_args_p returns exactly q->nargs */
  return lua_pcall(L, 1, LUA_MULTRET, 0);
}

static void start_req_free(start_req *q) {
  if (q->asker) mb_service_unref(q->asker);
  mb_service_unref(q->svc); /* the request's reference */
  free(q->error);
  free(q->args);
  free(q);
}

static void start_failed(start_req *q, const char *why) {
  q->failed = 1;
  q->error = why ? strdup(why) : NULL;
}

/* Starts one instance of an mb.load, on the instance's worker: a new Lua
 * state runs the body until it first waits or ends. When the instance
 * cannot start, or its body raised before that, it is stopped at once —
 * what it registered goes with it — and q->failed says so. */
static void start_instance(start_req *q) {
  if (!mb_service_alive(q->svc)) { /* the runtime went away first */
    start_failed(q, "the runtime is closing");
    return;
  }
  mbL_state *S = mbL_state_new(q->R, q->svc, q->group_key);
  if (S) {
    S->mem_limit = q->memory; /* from here on: the libraries are in */
    mbL_state_cpu_limit(S, q->cpu);
  }
  if (!S) {
    mb_service_free(q->svc);
    start_failed(q, NULL);
    return;
  }
  /* one step with a stop's (under R->lock): an instance of a reload that a
   * stop overtook before it was listed here does not start (the stop
   * could not take it, and the reload's caller, stopped with the service,
   * may never end it); listed, the stop takes it */
  pthread_mutex_lock(&q->R->lock);
  const mbL_load *ld = q->R->loads;
  while (ld && ld->id != q->load_id) ld = ld->next;
  int overtaken = ld && q->gen && ld->stopped > q->gen;
  S->gen = q->gen; /* before its load_id makes it an instance */
  if (!overtaken) S->load_id = q->load_id;
  pthread_mutex_unlock(&q->R->lock);
  if (overtaken) {
    start_failed(q, "the service was stopped while it reloaded");
    mbL_state_stop(S);
    return;
  }
  mbL_state_describe(S, q->load_id, q->path); /* out of memory: listed by its name */
  if (mbL_load_script(S->L, q->path) != LUA_OK) { /* the file changed since mb.load read it */
    start_failed(q, lua_tostring(S->L, -1));
    mbL_state_stop(S);
    return;
  }
  int prc = q->nargs ? push_args(S->L, q) : LUA_OK;
  if (prc != LUA_OK) { /* a string, no room (Lua's stack holds about a million), or NULL */
    char why[160];
    snprintf(why, sizeof why, "too many arguments for the script's `...` (%d: with the script's "
                              "own values, more than Lua's stack holds, or out of memory)",
             q->nargs);
    start_failed(q, prc < 0 ? why
                    : lua_type(S->L, -1) == LUA_TSTRING ? lua_tostring(S->L, -1) : NULL);
    mbL_state_stop(S);
    return;
  }
  S->starting = 1;
  if (mbL_start_body(S, q->nargs)) {
    start_failed(q, NULL);
  } else if (S->starting == 2) { /* the body raised: task_end kept the message */
    q->failed = 1;
    q->error = S->start_error;
    S->start_error = NULL;
  }
  S->starting = 0;
  if (q->failed) mbL_state_stop(S); /* its body is off the stack: depth 0 */
}

/* On the loader's worker: an instance started elsewhere has started (or
 * failed to). The loader's waiter went with its state if that stopped. */
static void load_done(void *arg) {
  start_req *q = arg;
  mbL_waiter *w = q->w;
  if (mb_service_alive(q->asker)) {
    if (q->failed && !w->failed) {
      w->failed = 1;
      w->error = q->error;
      q->error = NULL;
    }
    stop_done(w);
  }
  start_req_free(q);
}

/* Posted to the instance's worker. */
static void start_task(void *arg) {
  start_req *q = arg;
  start_instance(q);
  /* the body ran until it first waited or ended: the loader goes on */
  if (mbL_post(q->R, q->asker, POST_ALWAYS, load_done, q, NULL) != MB_OK) start_req_free(q);
}

/* The state of a core service, if it has one yet (any thread). */
static mbL_state *find_state(mbL_runtime *R, mb_service *svc) {
  pthread_mutex_lock(&R->lock);
  mbL_state *S = R->states;
  while (S && S->svc != svc) S = S->next;
  pthread_mutex_unlock(&R->lock);
  return S;
}

void mbL_deferred_stop(void *arg) {
  mbL_state *S = arg;
  if (S->depth > 0) { /* still on the stack: try again later */
    mbL_post(S->R, S->svc, POST_HERE, mbL_deferred_stop, S, &S->retry);
    return;
  }
  mbL_state_stop(S);
}

/* ---- the loads: what handle:reload() starts again ------------------------ */

void mbL_loads_free(mbL_runtime *R) {
  for (mbL_load *ld = R->loads, *next; ld; ld = next) {
    next = ld->next;
    free(ld->args);
    free(ld->name);
    free(ld);
  }
  R->loads = NULL;
}

mbL_load *mbL_load_find(mbL_runtime *R, uint64_t id) {
  pthread_mutex_lock(&R->lock);
  mbL_load *ld = R->loads;
  while (ld && ld->id != id) ld = ld->next;
  pthread_mutex_unlock(&R->lock);
  return ld;
}

/* Is S a running instance of load id (not a reload's old one)? Under R->lock. */
int mbL_instance_of(const mbL_state *S, uint64_t id) {
  return S->load_id == id && S->svc && !S->draining && !S->stopping;
}

/* Which of load id's instances mbL_push_instances takes (INST_* in
 * mbl_private.h): INST_ALL, also a reload's old ones (draining);
 * INST_RUNNING, not those; or INST_BEFORE, the running ones a reload older
 * than gen (or the mb.load) started. */
static int taken(const mbL_state *S, uint64_t id, int which, uint64_t gen) {
  if (which == INST_ALL) return S->load_id == id && S->svc;
  return mbL_instance_of(S, id) && (which == INST_RUNNING || S->gen < gen);
}

/* Pushes a userdata holding the ids of load id's instances that `which`
 * takes; *n counts them. Raises when out of memory. */
uint64_t *mbL_push_instances(lua_State *L, mbL_runtime *R, uint64_t id, int which,
                             uint64_t gen, size_t *n) {
  size_t cap = 0;
  pthread_mutex_lock(&R->lock);
  for (mbL_state *S = R->states; S; S = S->next) cap += taken(S, id, which, gen);
  pthread_mutex_unlock(&R->lock);
  uint64_t *ids = lua_newuserdatauv(L, (cap ? cap : 1) * sizeof *ids, 0);
  memset(ids, 0, (cap ? cap : 1) * sizeof *ids); /* 0: none (skipped) */
  *n = 0; /* the count may have changed meanwhile: at most cap */
  pthread_mutex_lock(&R->lock);
  for (mbL_state *S = R->states; S && *n < cap; S = S->next)
    if (taken(S, id, which, gen)) ids[(*n)++] = mb_service_id(S->svc);
  pthread_mutex_unlock(&R->lock);
  return ids;
}

/* ---- stopping and draining instances ------------------------------------- */

/* A draining S (a reload's old instance) has no handler running: it stops
 * once off the stack. */
static void drain_done(mbL_state *S) {
  set_stopping(S); /* no other stop is asked for it */
  mbL_post(S->R, S->svc, POST_HERE, mbL_deferred_stop, S, &S->retry);
}

/* How long a reload's old listener waits for a new member of its group
 * (the new script's body may wait before it listens; a new script that no
 * longer listens there gives none). */
#define DRAIN_WAIT 2.0

/* Closes S's listeners whose group has another member (a new instance's,
 * or an old one still waiting); all of them when all. 1 when none is left. */
static int close_covered(mbL_state *S, int all) {
  for (mbL_listener *ls = S->listeners, *next; ls; ls = next) {
    next = ls->next;
    if (all && !mb_listener_alone(ls->l))
      mbL_report(S->R, "mb: %s: reloaded, and no new listener came to '%s' within %g s: "
                       "the old one closes\n", mb_service_name(S->svc), ls->dest, DRAIN_WAIT);
    if (all || !mb_listener_alone(ls->l)) mbL_listener_release(ls, 1, S->L);
  }
  return S->listeners == NULL;
}

static void drain_listeners_done(mbL_state *S) {
  S->drained = drain_done; /* called when its last handler ends */
  if (S->nhandlers == 0) drain_done(S);
}

static void drain_wait_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  mbL_state *S = w->data;
  int late = ev_now(loop) - S->drain_t0 >= DRAIN_WAIT;
  if (!close_covered(S, late)) return;
  ev_timer_stop(loop, w);
  mb_runtime_hold(core(S), -1);
  drain_listeners_done(S);
}

/* A reload's old instance, on its own worker: each of its listeners closes
 * once a new instance's has joined its group (at most DRAIN_WAIT later) —
 * what was given to it and has not started goes to the group's other
 * members —, and it stops once its running handlers have ended. */
static void drain_state(mbL_state *S) {
  if (S->stopping || S->draining) return;
  pthread_mutex_lock(&S->R->lock); /* mb.services() reads it */
  S->draining = 1;
  pthread_mutex_unlock(&S->R->lock);
  if (close_covered(S, 0)) {
    drain_listeners_done(S);
    return;
  }
  struct ev_loop *loop = mb_service_loop(S->svc);
  S->drain_t0 = ev_now(loop);
  ev_timer_init(&S->drain_wait, drain_wait_cb, 0.01, 0.01);
  S->drain_wait.data = S;
  ev_timer_start(loop, &S->drain_wait);
  mb_runtime_hold(core(S), 1); /* the bus runs until it has closed them */
}

/* A stop (or drain) asked from another worker: done there, then the asker
 * is told. */
typedef struct stop_req {
  mbL_runtime *R;
  mb_service *svc, *asker;
  mbL_waiter *w;
  int drain;
  mbL_retry retry;
} stop_req;

static void stop_task(void *arg) {
  stop_req *q = arg;
  mbL_state *S = find_state(q->R, q->svc);
  if (S && q->drain) {
    drain_state(S);
  } else if (S && S->depth > 0) { /* on the stack: again later */
    mbL_post(q->R, q->svc, POST_ALWAYS | POST_HERE, stop_task, q, &q->retry);
    return;
  } else if (S && !S->stopping) {
    mbL_state_stop(S);
  }
  mbL_post(q->R, q->asker, 0, stop_done, q->w, NULL);
  mb_service_unref(q->svc);
  mb_service_unref(q->asker);
  free(q);
}

/* The state whose Lua code runs in L, from its registry (NULL: none). */
mbL_state *mbL_caller_state(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mbL_state_key);
  mbL_state *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return S;
}

/* Stops (drain: drains) the instances ids[0..n), for `me`: those on me's
 * worker at once (a stop, when on the stack, as soon as their current
 * work is done), the others on their workers. Returns a waiter that counts
 * those down, or NULL when there are none. Raises when out of memory. */
mbL_waiter *mbL_end_instances(lua_State *L, mbL_runtime *R, uint64_t *ids, size_t n,
                              mbL_state *me, int drain) {
  mbL_waiter *w = NULL;
  if (!me || !me->svc) { /* a __gc after its service stopped */
    luaL_error(L, "mb: this service has stopped");
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    mb_service *svc = ids[i] ? mb_service_find(core(me), ids[i]) : NULL;
    ids[i] = 0;
    if (!svc) continue;
    if (mb_service_worker(svc) != mb_service_worker(me->svc)) {
      stop_req *q = malloc(sizeof *q);
      if (!w) w = mbL_waiter_new(me);
      if (!q || !w) {
        free(q);
        mb_service_unref(svc);
        if (w && !w->status) mbL_waiter_free(w);
        luaL_error(L, "stop: out of memory");
        return NULL;
      }
      memset(q, 0, sizeof *q);
      q->R = R;
      q->svc = svc; /* keeps the reference */
      q->asker = me->svc;
      q->drain = drain;
      mb_service_ref(me->svc);
      q->w = w;
      w->status++;
      if (mbL_post(R, svc, POST_ALWAYS, stop_task, q, NULL) != MB_OK) {
        w->status--; /* reported: that instance goes on */
        mb_service_unref(q->asker);
        mb_service_unref(svc);
        free(q);
      }
      continue;
    }
    mbL_state *S = find_state(R, svc);
    mb_service_unref(svc);
    if (!S || S->stopping) continue;
    if (drain) {
      drain_state(S);
    } else if (S->depth > 0 || S == me) {
      set_stopping(S); /* new deliveries are dropped from now on */
      mbL_post(S->R, S->svc, POST_HERE, mbL_deferred_stop, S, &S->retry);
    } else {
      mbL_state_stop(S);
    }
  }
  if (w && !w->status) {
    mbL_waiter_free(w);
    w = NULL;
  }
  return w;
}

static int stopped_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  mbL_waiter_free((mbL_waiter *)ctx);
  return 0;
}

/* handle:stop(): returns once every instance has stopped (one that is the
 * caller itself stops when the caller's current work is done). */
static int service_stop(lua_State *L) {
  mbL_handle *h = luaL_checkudata(L, 1, "mb.Service");
  mbL_state *me = mbL_caller_state(L);
  mbL_load *ld = mbL_load_find(h->R, h->load_id);
  if (ld) { /* a reload under way: it stops its new instances when it ends */
    pthread_mutex_lock(&h->R->lock);
    ld->stopped = ld->live = ++ld->gen;
    pthread_mutex_unlock(&h->R->lock);
  }
  size_t n;
  uint64_t *ids = mbL_push_instances(L, h->R, h->load_id, INST_ALL, 0, &n);
  mbL_waiter *w = mbL_end_instances(L, h->R, ids, n, me, 0);
  if (!w) return 0;
  /* the caller is one of them: waiting would yield, and its instance,
   * off the stack, would stop under the waiting handler. It returns now
   * (the others are told), as with all of them on its worker; the waiter
   * goes with its state (a count-down posted later finds it stopped). */
  if (me && me->stopping) return 0;
  return mbL_wait_for(L, w, stopped_k);
}

/* ---- starting instances: mb.load and handle:reload() ---------------------- */

/* Starts ld's instances, their ids into ids (*n counts them): on S's
 * worker now, as calls, elsewhere on their own threads. Returns the waiter
 * for those (NULL: none started elsewhere); *failed and *error (malloc'd)
 * say how the ones here went. Raises when out of memory before any
 * started. */
mbL_waiter *mbL_start_all(lua_State *L, mbL_state *S, const mbL_load *ld, uint64_t gen,
                          uint64_t *ids, size_t *n, int *failed, char **error) {
  mbL_runtime *R = S->R;
  size_t plen = strlen(ld->path);
  *failed = 0; /* an instance started here failed: start no more */
  *error = NULL;
  *n = 0;
  /* taken first: without it an instance on another worker could not be
   * waited for (and must not start on this thread instead) */
  mbL_waiter *w = mb_runtime_workers(core(S)) > 1 ? mbL_waiter_new(S) : NULL;
  if (!w && mb_runtime_workers(core(S)) > 1) {
    luaL_error(L, "mb.load: out of memory");
    return NULL;
  }
  for (size_t i = 0; i < ld->instances && !*failed; i++) {
    start_req *q = calloc(1, sizeof *q + plen + 1);
    char *args = ld->nargs ? malloc(ld->alen) : NULL;
    mb_service *svc = q && (args || !ld->nargs) ? mb_service_new(core(S), ld->name, -1) : NULL;
    if (!svc) {
      free(q);
      free(args);
      if (w && w->status) { /* some are starting elsewhere: they are stopped once started */
        *failed = 1;
        break;
      }
      if (w) mbL_waiter_free(w);
      free(*error);
      luaL_error(L, "mb.load: out of memory");
      return NULL;
    }
    q->R = R;
    q->svc = svc;
    mb_service_ref(svc); /* held by the request until it ran */
    q->group_key = ld->key;
    q->load_id = ld->id;
    q->gen = gen;
    q->memory = ld->memory;
    q->cpu = ld->cpu;
    q->nargs = ld->nargs;
    q->alen = ld->alen;
    q->args = args;
    if (args) memcpy(args, ld->args, ld->alen);
    memcpy(q->path, ld->path, plen + 1);
    ids[(*n)++] = mb_service_id(svc);
    if (mb_service_worker(svc) == mb_service_worker(S->svc)) {
      start_instance(q);
      *failed = q->failed;
      *error = q->error;
      q->error = NULL;
      start_req_free(q);
      continue;
    }
    q->asker = S->svc;
    q->w = w;
    mb_service_ref(S->svc);
    w->status++;
    if (mbL_post(R, svc, POST_ALWAYS, start_task, q, NULL) != MB_OK) {
      w->status--; /* reported; this instance never starts */
      *failed = 1;
      mb_service_unref(S->svc);
      mb_service_unref(svc);
      mb_service_free(svc); /* new, nothing of it runs anywhere yet */
      free(args);
      free(q);
    }
  }
  if (w && !w->status) {
    mbL_waiter_free(w);
    w = NULL;
  }
  if (w) {
    if (*failed && !w->failed) {
      w->failed = 1;
      w->error = *error;
    } else {
      free(*error);
    }
    *error = NULL;
  }
  return w;
}

/* The waiter's outcome, taken (it is freed). */
void mbL_waiter_outcome(mbL_waiter *w, int *failed, char **error) {
  *failed = w->failed;
  *error = w->error;
  w->error = NULL;
  mbL_waiter_free(w);
}

static int load_failed_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (ctx) mbL_waiter_free((mbL_waiter *)ctx);
  lua_pushnil(L);
  lua_pushvalue(L, LOAD_WHY);
  return 2;
}

/* The end of mb.load, the handle at LOAD_HANDLE: returned, or when an
 * instance failed to start, the others stopped and nil, "failed: <error>"
 * (SPEC section 2). Takes error (malloc'd). */
static int load_finish(lua_State *L, int failed, char *error) {
  lua_settop(L, LOAD_HANDLE);
  if (!failed) return 1;
  lua_pushfstring(L, "failed: %s", error ? error : "not enough memory");
  free(error);
  mbL_handle *h = lua_touserdata(L, LOAD_HANDLE);
  size_t n;
  uint64_t *ids = mbL_push_instances(L, h->R, h->load_id, INST_ALL, 0, &n);
  mbL_waiter *w = mbL_end_instances(L, h->R, ids, n, state_of(L), 0);
  if (w) return mbL_wait_for(L, w, load_failed_k);
  return load_failed_k(L, LUA_OK, 0);
}

static int load_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  int failed;
  char *error;
  mbL_waiter_outcome((mbL_waiter *)ctx, &failed, &error);
  return load_finish(L, failed, error);
}

/* A new record of a load (not linked yet); raises when out of memory. */
/* Lua's own bound on a function's arguments (LUAI_MAXSTACK) */
#define MBL_MAX_ARGS 1000000

/* The number of values mb.load's args list at idx gives the script as
 * `...`: its largest key, a hole passing as nil (#t is any border of a list
 * with holes). Raises for a key that is not a position in a list, which the
 * script would never see, and for more entries than a script can take. */
static int args_count(lua_State *L, int idx) {
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    lua_Integer k = 0;
    if (!lua_isinteger(L, -1) || (k = lua_tointeger(L, -1)) < 1)
      luaL_error(L, "mb.load: option 'args' must be a list (found key '%s'); the script gets its "
                    "entries as `...`", luaL_tolstring(L, -1, NULL));
    if (k > n) n = k;
  }
  if (n > MBL_MAX_ARGS)
    luaL_error(L, "mb.load: option 'args' has %I entries (counting holes): a script takes at most "
                  "%d", n, MBL_MAX_ARGS);
  return (int)n;
}

static mbL_load *load_new(lua_State *L, const char *path, const char *name, const void *args,
                          size_t alen) {
  size_t plen = strlen(path);
  mbL_load *ld = calloc(1, sizeof *ld + plen + 1);
  if (ld) {
    ld->name = strdup(name);
    ld->args = alen ? malloc(alen) : NULL;
  }
  if (!ld || !ld->name || (alen && !ld->args)) {
    if (ld) {
      free(ld->name);
      free(ld->args);
    }
    free(ld);
    luaL_error(L, "mb.load: out of memory");
    return NULL;
  }
  memcpy(ld->path, path, plen + 1);
  if (alen) memcpy(ld->args, args, alen);
  ld->alen = alen;
  return ld;
}

static int l_load(lua_State *L) {
  static const char *const keys[] = {"instances", "args", "name", "group", "memory", "cpu", NULL};
  mbL_state *S = state_of(L);
  mbL_runtime *R = S->R;
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen), *name = path;
  if (strlen(path) != plen) /* the file system would see only what comes before it */
    return luaL_error(L, "mb.load: the path has a NUL byte (at byte %d)", (int)strlen(path) + 1);
  lua_Integer instances = 1;
  uint64_t named = 0;
  lua_Integer memory = 0; /* bytes, 0: no limit */
  double cpu = 0;          /* seconds, 0: no limit */
  lua_settop(L, 2);
  if (!lua_isnil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    mbL_check_keys(L, 2, keys, "mb.load");
    int nt = lua_getfield(L, 2, "name");
    if (nt != LUA_TNIL && (nt != LUA_TSTRING || lua_rawlen(L, -1) == 0))
      return luaL_error(L, "mb.load: option 'name' must be a non-empty string");
    if (nt == LUA_TSTRING) name = lua_tostring(L, -1);
    /* kept alive by the registry until the next load, whatever the table's
     * metamethods do meanwhile (the stack slots below are spoken for) */
    lua_setfield(L, LUA_REGISTRYINDEX, "mb.load name");
    named = mbL_opt_group(L, 2, S, "mb.load");
    memory = mbL_opt_positive(L, 2, "memory", "mb.load");
    if (lua_getfield(L, 2, "cpu") != LUA_TNIL)
      cpu = mbL_check_seconds(L, -1, "mb.load", "option 'cpu'", 0);
    lua_pop(L, 1);
    instances = mbL_opt_positive(L, 2, "instances", "mb.load");
    if (!instances) instances = 1;
    if (instances > 4096) return luaL_error(L, "mb.load: at most 4096 instances");
    int t = lua_getfield(L, 2, "args");
    if (t != LUA_TNIL && t != LUA_TTABLE) return luaL_error(L, "mb.load: option 'args' must be a list");
  } else {
    lua_pushnil(L);
  }
  /* a missing file or a syntax error is the caller's: raise here */
  if (mbL_load_script(L, path) != LUA_OK)
    return luaL_error(L, "mb.load: %s", lua_tostring(L, -1));
  lua_pop(L, 1);
  /* args cross into the new states as encoded values */
  char err[700];
  S->vbuf.len = 0;
  int nargs = 0;
  if (!lua_isnil(L, 3)) {
    nargs = args_count(L, 3);
    if (mbL_encode(L, 3, &S->vbuf, mb_runtime_max_message_size(core(S)), "args", err, sizeof err))
      return luaL_error(L, "mb.load: %s", err);
  }
  mbL_load *ld = load_new(L, path, name, S->vbuf.p, S->vbuf.len);
  ld->nargs = nargs;
  ld->instances = (size_t)instances;
  ld->memory = (size_t)memory;
  ld->cpu = cpu;
  /* one number per load: it tells mb.services() which instances go
   * together, and is the base of their listeners' group keys (unless a
   * named group's) */
  pthread_mutex_lock(&R->lock);
  ld->id = ++R->next_load;
  ld->key = named ? named : ld->id;
  ld->next = R->loads;
  R->loads = ld;
  pthread_mutex_unlock(&R->lock);
  mbL_handle *h = lua_newuserdatauv(L, sizeof *h, 0); /* at LOAD_HANDLE */
  h->R = R;
  h->load_id = ld->id;
  luaL_setmetatable(L, "mb.Service");
  uint64_t *ids = lua_newuserdatauv(L, ld->instances * sizeof *ids, 0);
  size_t n;
  int failed;
  char *error;
  mbL_waiter *w = mbL_start_all(L, S, ld, 0, ids, &n, &failed, &error);
  if (!w) return load_finish(L, failed, error);
  return mbL_wait_for(L, w, load_k);
}

const luaL_Reg mbL_service_funcs[] = {{"load", l_load}, {NULL, NULL}};

/* handle:reload() is mbl_reload.c's (mbL_reload_methods) */
const luaL_Reg mbL_service_methods[] = {{"stop", service_stop}, {NULL, NULL}};
