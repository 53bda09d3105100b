/*
 * mbl_private.h — what the files of the `mb` module (runtime/lua) share,
 * as luv's private.h: the binding's structures (a runtime, a state per
 * service, tasks, waiters, timers, handles) and the helpers each concept
 * file offers the others. Not installed; lmb.h is the module's face.
 */
#ifndef MBL_PRIVATE_H
#define MBL_PRIVATE_H

#include <ev.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/mb_cluster.h"
#include "lmb.h"
#include "mb_alloc.h"
#include "mbl_value.h"

typedef struct mbL_state mbL_state;
typedef struct mbL_task mbL_task;
typedef struct mbL_waiter mbL_waiter;
typedef struct mbL_timer mbL_timer;

struct mbL_runtime {
  mb_runtime *rt;
  mbL_output_fn out; /* set before any service runs, then only read */
  void *out_ud;
  pthread_mutex_t lock; /* guards states, next_load and loads */
  mbL_state *states;
  struct mbL_load *loads; /* what each mb.load started, for handle:reload() */
  atomic_int failures;
  atomic_int bodies; /* script bodies started and not yet ended */
  atomic_long timers; /* mb.after and mb.every timers set, over every state */
  uint64_t next_load;
  /* mbL_runtime_abort: every call, running or to come, is aborted */
  _Atomic(const char *) abort_why;
  void (*on_stop)(void *ud); /* mb.stop() was called (mbrun) */
  void *on_stop_ud;
  void (*on_missed)(void *ud); /* an interrupt missed its code (mbrun's REPL) */
  void *on_missed_ud;
  /* builds a state's module table (lmb.c's, which sits above the states) */
  void (*open_module)(lua_State *L, mbL_state *S);
  mb_cluster *cluster; /* NULL: not in a cluster (mbl_cluster.c); worker 0 sets it */
};

enum { T_HANDLER = 1, T_SCRIPT, T_TIMER, T_SPAWN, T_EVENT };

struct mbL_task {
  mbL_state *S;
  lua_State *co;
  int ref;
  int kind;
  int waiting; /* a waiter will resume it */
  mb_delivery *d;
  struct mbL_listener *listener;
  mbL_timer *timer; /* mb.every's timer whose call this is (T_TIMER), or NULL */
  mbL_task *next, *prev;
};

typedef struct mbL_answer {
  int status;
  mb_msg *reply;
  char *error;
} mbL_answer;

struct mbL_waiter {
  mbL_state *S;
  mbL_task *task;
  int done, suspended, status;
  ev_timer timer;
  mb_request *req;
  size_t n;
  mbL_answer *ans; /* &one for a single answer (mbL_request_done), else malloc'd */
  mbL_answer one;
  int failed;  /* mb.load: an instance failed to start */
  char *error; /* why (malloc'd; NULL when out of memory) */
  mb_delivery *dv;      /* a reply: the delivery it answers, if still open */
  const char *reply_to; /* a reply: where it goes (NULL: nowhere) */
  mbL_waiter *next, *prev;
};

struct mbL_timer {
  mbL_state *S;
  ev_timer w;
  int fn_ref, self_ref;
  mbL_task *call; /* mb.every: its callback's call, still running (waiting), or NULL */
  mbL_timer *next, *prev;
};

/* A listener handle (userdata "mb.Listener"; user values: 1 the handler,
 * 2 the destination's name as a Lua string). One owner: while registered
 * (l != NULL) its self_ref anchors it and it is in S->listeners; one release
 * path, listener_release, whoever ends it (l:close(), the destination's
 * removal, the state going away). */
typedef struct mbL_listener {
  mbL_state *S;
  mb_listener *l;
  int self_ref;
  int json;
  /* which mb.listen at dest of this instance of a load it is (its group
   * key: mbl_msg.c listen_key); 0: a named group's or none */
  unsigned slot;
  struct mbL_listener *next, *prev; /* in S->listeners */
  char dest[256];
} mbL_listener;

/* An event subscription (userdata "mb.Subscription"; user value 1: the
 * callback), owned as a listener handle is (sub_release). */
typedef struct mbL_sub {
  mbL_state *S;
  mb_subscription *sub;
  int self_ref;
  struct mbL_sub *next, *prev; /* in S->subs */
} mbL_sub;

/* A task to run again later on this thread, because posting it failed
 * (post()); the timer is libev's memory, none of ours. */
typedef struct mbL_retry {
  ev_timer timer;
  mb_runtime *rt;
  mb_task_fn fn;
  void *arg;
} mbL_retry;

struct mbL_state {
  mbL_runtime *R;
  mbL_retry retry; /* deferred_stop's, when its post failed */
  mb_service *svc;
  lua_State *L;
  int owns_L;
  /* the instances of one mb.load share it: a named group's key (every
   * mb.listen joins it), or the base of the keys of their listeners (the
   * k-th mb.listen at a destination of each instance, and of the instances
   * a reload starts, form one group: mbl_msg.c); 0: none */
  uint64_t group_key;
  /* the Lua state's memory (its allocator's count) and mb.load's `memory`
   * limit (0: none); this state's thread only */
  size_t mem_used, mem_limit;
  /* for mb.services(), written under R->lock (mbL_state_describe): */
  uint64_t load_id; /* the mb.load (or mbrun start) it is an instance of; 0: none */
  uint64_t gen;     /* which reload of it started this instance (0: the mb.load) */
  char *path;       /* the script it runs, as mb.services() shows it (malloc'd) */
  int hidden;       /* mbrun's own (its boot script, the REPL): not listed */
  atomic_uint_fast64_t deliveries; /* handler calls ended, by this state's thread */
  atomic_uint_fast64_t failures;   /* calls that raised: handlers, timers, bodies */
  mbL_task *current;
  mbL_task *pool;
  int npool;
  mbL_task *live;
  mbL_waiter *waiters, *spare; /* spare: a short free list (nspare) */
  int nspare;
  mbL_timer *timers;
  mbL_listener *listeners;
  mbL_sub *subs;
  int depth; /* resumes of this state on the C stack */
  /* aborting (mbL_state_abort); read by other threads and by the abort
   * signal's handler on this state's own thread */
  atomic_int active;                 /* depth, for other threads to read */
  atomic_uint_fast64_t calls;        /* outermost calls started so far */
  atomic_uint_fast64_t abort_call;   /* the call to abort (0: none) */
  _Atomic(const char *) abort_why;   /* ...and why */
  _Atomic(lua_State *) running_co;   /* the coroutine running now, if any */
  _Atomic(const char *) interrupt_why; /* mbL_state_interrupt's, until raised */
  /* mb.load's `cpu` (seconds; 0: none): the thread CPU time at the start
   * of the outermost call running, and the error that aborts it */
  double cpu_limit, cpu_start;
  char cpu_why[48];
  int stopping; /* written on S's worker under R->lock (other workers'
                   reloads read it there: mbL_instance_of) */
  int draining; /* a reload replaced it: its listeners are closed, it stops
                   once its handlers have ended (nhandlers: those running),
                   when mbL_task_free calls drained (mbl_service.c's) */
  size_t nhandlers;
  void (*drained)(mbL_state *S);
  ev_timer drain_wait; /* draining: its listeners wait for new members */
  double drain_t0;
  size_t nrefs, ntasks, nwaiters, ntimers, nlisteners, nsubs;
  mb_buf buf, vbuf;
  int groups; /* weak table: message table of a request -> listener group */
  /* share = true (mbl_share.c): the sends under way (a chain on the C
   * stack), and what this state sent to share destinations while the core
   * still holds the message: a ring of references sq (sq_cap slots, sq_n
   * in use from sq_head, oldest first) whose slot i has its payload table
   * at shared[i + 1] (shared: a registry ref, 0 until first needed; not
   * counted in nrefs: it lives as long as the state); sq_live: the slots
   * in use after the last full sweep; sq_hint: where to look first */
  struct mbL_sending *sending;
  const char *dest_seen; /* mbl_msg.c: the destination name checked last */
  int shared;
  mb_msg **sq;
  size_t sq_head, sq_n, sq_cap, sq_live, sq_hint;
  int body_ref; /* handler_body as a closure with the message keys (registry) */
  int starting; /* its body runs for the first time, for mb.load: a failure is its */
  char *start_error; /* what the body raised while starting (malloc'd) */
  mbL_end_fn on_end; /* mbL_runtime_boot: told how the body ended */
  void *end_ud;
  mbL_state *next, *prev;
};

#define POOL_MAX 64
/* the registry key of a state's mbL_state (light userdata; mbl_service.c) */
extern const char mbL_state_key;

/* ---- small helpers ------------------------------------------------------ */

static inline int ref(mbL_state *S, lua_State *L) {
  S->nrefs++;
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

static inline void unref(mbL_state *S, lua_State *L, int *r) {
  if (*r == LUA_NOREF) return;
  luaL_unref(L, LUA_REGISTRYINDEX, *r);
  *r = LUA_NOREF;
  S->nrefs--;
}

/* The state of the module function running (upvalue 1); raises once the
 * service has stopped. */
static inline mbL_state *state_of(lua_State *L) {
  mbL_state *S = lua_touserdata(L, lua_upvalueindex(1));
  if (!S->svc) luaL_error(L, "mb: this service has stopped"); /* e.g. from a __gc */
  return S;
}

static inline mb_runtime *core(mbL_state *S) { return S->R->rt; }
/* This node's name in a cluster, for ids ("NODE:hex"); NULL: none. */
static inline const char *mbL_node(const mbL_state *S) {
  return S->R->cluster ? mb_cluster_node(S->R->cluster) : NULL;
}

/* ---- mbl_task.c: tasks, the one resume, the one post, waiting ------------ */

/* A task of kind T_* from the pool, or a new one; NULL when out of memory
 * (never raises). */
mbL_task *mbL_task_new(mbL_state *S, int kind);
/* Back to the pool (reusable) or freed. */
void mbL_task_free(mbL_task *t, int reusable);
/* Moves a function and its nargs arguments (the top nargs + 1 values of
 * from) onto t's coroutine, growing its stack first: lua_xmove does not, and
 * a new coroutine has room for about 40. Returns 0, or -1 (nothing moved)
 * when the stack cannot grow that far (out of memory, or Lua's limit of
 * about a million). Never raises. */
int mbL_task_push(mbL_task *t, lua_State *from, int nargs);
/* Resumes t's coroutine with nargs values on it: the one resume. When it
 * returns or raises, ends the task (reports, counts, finishes its
 * delivery); a bare yield runs it again later. Never raises. */
void mbL_task_run(mbL_task *t, int nargs);

/* Writes text to the runtime's output (stream 1: print, 2: reports). */
void mbL_output(mbL_runtime *R, int stream, const char *text, size_t len);
/* Writes a report of something that failed, as one line on stream 2. */
void mbL_report(mbL_runtime *R, const char *fmt, ...);

/* mbl_msg.c: an mb_request_fn whose ud is an mbL_waiter: copies the
 * answers into it and wakes it. */
void mbL_request_done(void *ud, const mb_answer *a, size_t n);

/* mbl_task.c: sets the cpu limit of S (seconds, 0: none), on S's thread
 * before it runs; coroutines its code creates are watched too. */
void mbL_state_cpu_limit(mbL_state *S, double secs);
/* Raises why (once: a pcall may catch it) in the call running in S now, if
 * any, as lua.c's Ctrl-C does. From any thread. 1 when a call was running. */
int mbL_state_interrupt(mbL_state *S, const char *why);

/* mbl_cluster.c */
void mbL_cluster_leave(mbL_runtime *R);
/* mb.setup's `cluster` table at index t: joins, or raises "fn: cluster: ...". */
int mbL_cluster_setup(lua_State *L, int t, mbL_runtime *R, const char *fn);
/* Message ids as users see them: "hex", or "NODE:hex" on a node of a
 * cluster (inline: mb.send returns one per message). */
static inline void mbL_push_id(lua_State *L, const mbL_runtime *R, uint64_t id) {
  char buf[MB_NODE_ID_MAX];
  lua_pushlstring(L, buf, R->cluster ? mb_node_id_format(mb_cluster_node(R->cluster), id, buf)
                                     : mb_id_format(id, buf));
}
int mbL_parse_id(const mbL_runtime *R, const char *s, size_t len, uint64_t *id);
/* 1 when s is the id of a message of another node of the cluster
 * ("NODE:hex", NODE not this node's name), else 0. */
int mbL_foreign_id(const mbL_runtime *R, const char *s, size_t len);
/* The key of the named group under option `group` of table t (0: none);
 * raises "fn: ..." for a bad name. */
uint64_t mbL_opt_group(lua_State *L, int t, mbL_state *S, const char *fn);
/* mbL_report, and counted in mbL_runtime_failures: a failure that no
 * delivery carries (a delivery's failure is counted by the core). */
void mbL_failed(mbL_runtime *R, const char *fmt, ...);

enum {
  POST_ALWAYS = 1, /* run also once the service died (mb_service_post_always) */
  POST_HERE = 2,   /* this thread is the service's worker */
  POST_NOW = 4     /* here, fn may run at once instead */
};
/* Posts fn(arg) to svc's worker: the one post (mbl_task.c says what it
 * does when posting fails). MB_OK or MB_ENOMEM (reported and counted). */
int mbL_post(mbL_runtime *R, mb_service *svc, int flags, mb_task_fn fn, void *arg,
             mbL_retry *later);

/* Aborts the call running in S now (any thread); 1 when one was running. */
int mbL_state_abort(mbL_state *S, const char *reason);

/* A waiter of S; NULL when out of memory. */
mbL_waiter *mbL_waiter_new(mbL_state *S);
void mbL_waiter_free(mbL_waiter *w);
/* w is done: its coroutine, if suspended, resumes (posted on S's worker). */
void mbL_waiter_wake(mbL_waiter *w);
/* Waits until w is done (yields, or runs the loop), then returns k(...).
 * Raises when the wait can never end or the call is aborted. */
int mbL_wait_for(lua_State *L, mbL_waiter *w, lua_KFunction k);

/* ---- mbl_time.c ---------------------------------------------------------- */

enum {
  SECS_ZERO = 1,    /* 0 is allowed (sleep, after) */
  SECS_NO_LIMIT = 2 /* math.huge means "no limit" (timeouts) */
};
/* The number of seconds at idx for fn's `what`; raises when it is not one
 * (SPEC section 7). HUGE_VAL for math.huge with SECS_NO_LIMIT. */
double mbL_check_seconds(lua_State *L, int idx, const char *fn, const char *what,
                         unsigned flags);
extern const luaL_Reg mbL_time_funcs[], mbL_timer_methods[];

/* ---- mbl_dest.c ---------------------------------------------------------- */

/* The destination name at idx; raises "fn: invalid destination name ...". */
const char *mbL_check_dest(lua_State *L, int idx, const char *fn);
/* Pushes nil and "code: text" for the MB_* code rc at dest; returns 2. */
int mbL_fail_rc(lua_State *L, int rc, const char *dest, mbL_state *S);
/* Option tables: raise "fn: unknown option" / "fn: option 'key' must ...". */
void mbL_check_keys(lua_State *L, int t, const char *const *allowed, const char *fn);
int mbL_opt_enum(lua_State *L, int t, const char *key, const char *const *names, int def,
                 const char *fn);
lua_Integer mbL_opt_positive(lua_State *L, int t, const char *key, const char *fn);
/* The one release path of a subscription handle (L NULL: the registry goes
 * with the state). */
void mbL_sub_release(mbL_sub *s, int unsubscribe, lua_State *L);
extern const luaL_Reg mbL_dest_funcs[], mbL_sub_methods[];

/* ---- mbl_msg.c ----------------------------------------------------------- */

/* The one release path of a listener handle. */
void mbL_listener_release(mbL_listener *ls, int close, lua_State *L);
/* The body of every handler's coroutine (a C closure with the message keys). */
int mbL_handler_body(lua_State *L);
/* share = true (mbl_share.c): a send under way of S's, whose payload
 * table a handler of S may take. */
typedef struct mbL_sending {
  mb_msg *m;
  lua_State *L; /* the sender's thread, its payload at idx */
  int idx;
  struct mbL_sending *prev;
} mbL_sending;
/* Before the send of m with the payload at pidx (json: the payload is
 * JSON text): 1 when a listener of S may have to get that table, m then
 * held by s and S->sending; mbL_share_after follows the send. */
int mbL_share_before(lua_State *L, mbL_state *S, mb_msg *m, int pidx, int json,
                     mbL_sending *s);
void mbL_share_after(lua_State *L, mbL_state *S, mbL_sending *s);
/* For a handler of S (on its coroutine L): pushes the payload table S sent
 * as m and returns 1, or pushes nothing and returns 0. */
int mbL_share_push(lua_State *L, mbL_state *S, const mb_msg *m);
/* Drops what S keeps of its share = true sends that the core no longer
 * holds: the oldest ones (all = 0), or every one (all = 1); L is S's state
 * or one of its threads. Never raises. */
void mbL_share_sweep(mbL_state *S, lua_State *L, int all);
/* Drops everything S keeps of its share = true sends (S going away). */
void mbL_share_release(mbL_state *S);
extern const luaL_Reg mbL_msg_funcs[], mbL_listener_methods[], mbL_json_funcs[];

/* ---- mbl_service.c ------------------------------------------------------- */

/* A new state for the core service svc with its own Lua state; NULL when
 * out of memory. */
mbL_state *mbL_state_new(mbL_runtime *R, mb_service *svc, uint64_t group_key);
void mbL_state_link(mbL_runtime *R, mbL_state *S);
/* What mb.services() shows of S: the load it belongs to and its script's
 * path (copied; NULL keeps the one it has). Takes R->lock. Returns -1 when
 * out of memory (nothing changed). */
int mbL_state_describe(mbL_state *S, uint64_t load_id, const char *path);
/* Releases what S holds in the core and the loop (not its Lua state). */
void mbL_state_release(mbL_state *S);
/* Releases S, closes its Lua state (if its own) and frees it. */
void mbL_state_stop(mbL_state *S);
/* Stops S once it is off the stack (a task for S's worker). */
void mbL_deferred_stop(void *arg);
/* Frees the runtime's records of loads (at its end). */
void mbL_loads_free(mbL_runtime *R);
/* Pushes the function that runs path (or the error); luaL_loadfilex's code. */
int mbL_load_script(lua_State *L, const char *path);
/* Starts S's body (chunk and nargs values on S->L); -1 when out of memory. */
int mbL_start_body(mbL_state *S, int nargs);
extern const luaL_Reg mbL_service_funcs[], mbL_service_methods[], mbL_svclist_funcs[];

/* What one mb.load started — the script, its options and arguments — kept
 * for handle:reload(), which starts the same again. Linked under R->lock,
 * never changed but for gen, live and stopped (under R->lock), freed with the
 * runtime (mbL_loads_free). */
typedef struct mbL_load {
  uint64_t id, key;
  /* gen: the last reload begun (or stop); live: the newest one that has
   * finished, whose instances run — a reload finishing after a newer one
   * (or a stop) began and ended drains its own new instances instead;
   * stopped: the gen of the last handle:stop() */
  uint64_t gen, live, stopped;
  size_t memory, instances;
  double cpu;
  int nargs;
  size_t alen;
  char *args; /* encoded list, alen bytes */
  char *name;
  struct mbL_load *next;
  char path[];
} mbL_load;

/* What mbl_service.c offers mbl_reload.c: the load records, its instances
 * and starting and ending them. */
mbL_load *mbL_load_find(mbL_runtime *R, uint64_t id); /* NULL: none; takes R->lock */
/* Is S a running instance of load id (not a reload's old one)? Under R->lock. */
int mbL_instance_of(const mbL_state *S, uint64_t id);
/* Which of a load's instances mbL_push_instances takes: all of them, the
 * running ones, or the running ones started before a reload (gen). */
enum { INST_ALL, INST_RUNNING, INST_BEFORE };
/* Pushes a userdata with the ids of load id's instances that `which`
 * takes; *n counts them. Raises when out of memory. */
uint64_t *mbL_push_instances(lua_State *L, mbL_runtime *R, uint64_t id, int which,
                             uint64_t gen, size_t *n);
/* Stops (drain: drains) the instances ids[0..n) for me; a waiter for those
 * on other workers (NULL: none). Raises when out of memory. */
mbL_waiter *mbL_end_instances(lua_State *L, mbL_runtime *R, uint64_t *ids, size_t n,
                              mbL_state *me, int drain);
/* Starts ld's instances (generation gen) from S, their ids into ids; a
 * waiter for those on other workers (NULL: none), *failed and *error
 * (malloc'd) for the ones here. Raises when out of memory. */
mbL_waiter *mbL_start_all(lua_State *L, mbL_state *S, const mbL_load *ld, uint64_t gen,
                          uint64_t *ids, size_t *n, int *failed, char **error);
/* Takes the waiter's outcome and frees it. */
void mbL_waiter_outcome(mbL_waiter *w, int *failed, char **error);
/* The state whose Lua code runs in L (NULL: none). */
mbL_state *mbL_caller_state(lua_State *L);

/* ---- mbl_reload.c -------------------------------------------------------- */

/* handle:reload(), added to mbL_service_methods by lmb.c */
extern const luaL_Reg mbL_reload_methods[];

/* mbl_watch.c: mb._watch, for mbrun --watch */
extern const luaL_Reg mbL_watch_funcs[];

/* A service handle (userdata "mb.Service"): a load, whose instances are
 * the states with its load_id (a reload's new ones too). */
typedef struct mbL_handle {
  mbL_runtime *R;
  uint64_t load_id;
} mbL_handle;

#endif
