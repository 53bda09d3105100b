/*
 * lmb.c — the `mb` Lua module: services (one Lua state each), the
 * coroutines every script body, handler, timer and event callback runs in,
 * waiting (request, sleep, full queues) by yielding or, where no coroutine of
 * ours can yield, by driving the loop; and the Lua API of SPEC section 2.
 *
 * Owns: per Lua state an mbL_state (its core service, its coroutines, the
 * waiters of its suspended coroutines, its timers), and per runtime an
 * mbL_runtime (the core runtime and the list of states). Registry refs are
 * taken and released through ref()/unref() so that mb._counts() can tell
 * tests what is left. Every call into Lua from the loop is a lua_resume, so a
 * Lua error never reaches ev_run.
 *
 * Tests: the busted specs in spec/, spec/mbrun_spec.lua for mbrun.
 */
#include "lmb.h"
#include "mb_alloc.h"

#include <errno.h>
#include <ev.h>
#include <lauxlib.h>
#include <pthread.h>
#include <lualib.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mbl_value.h"

typedef struct mbL_state mbL_state;
typedef struct mbL_task mbL_task;
typedef struct mbL_waiter mbL_waiter;
typedef struct mbL_timer mbL_timer;

struct mbL_runtime {
  mb_runtime *rt;
  mbL_output_fn out; /* set before any service runs, then only read */
  void *out_ud;
  pthread_mutex_t lock; /* guards states and next_load */
  mbL_state *states;
  atomic_int failures;
  atomic_int bodies; /* script bodies started and not yet ended */
  uint64_t next_load;
  /* mbL_runtime_abort: every call, running or to come, is aborted */
  _Atomic(const char *) abort_why;
  void (*on_stop)(void *ud); /* mb.stop() was called (mbrun) */
  void *on_stop_ud;
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
  mbL_answer *ans;
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
  uint64_t group_key; /* the instances of one mb.load share it */
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
  int stopping;
  size_t nrefs, ntasks, nwaiters, ntimers, nlisteners, nsubs;
  mb_buf buf, vbuf;
  int groups; /* weak table: message table of a request -> listener group */
  int body_ref; /* handler_body as a closure with the message keys (registry) */
  int starting; /* its body runs for the first time, for mb.load: a failure is its */
  char *start_error; /* what the body raised while starting (malloc'd) */
  mbL_end_fn on_end; /* mbL_runtime_boot: told how the body ended */
  void *end_ud;
  mbL_state *next, *prev;
};

#define POOL_MAX 64
static const char STATE_KEY = 'S';
static const char MODULE_KEY = 'M';
static const char MAIN_STATE_KEY = 'P'; /* a plain program's mbL_state */

/* ---- small helpers ------------------------------------------------------ */

static int ref(mbL_state *S, lua_State *L) {
  S->nrefs++;
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

static void unref(mbL_state *S, lua_State *L, int *r) {
  if (*r == LUA_NOREF) return;
  luaL_unref(L, LUA_REGISTRYINDEX, *r);
  *r = LUA_NOREF;
  S->nrefs--;
}

static mbL_state *state_of(lua_State *L) {
  mbL_state *S = lua_touserdata(L, lua_upvalueindex(1));
  if (!S->svc) luaL_error(L, "mb: this service has stopped"); /* e.g. from a __gc */
  return S;
}

static mb_runtime *core(mbL_state *S) { return S->R->rt; }

/* Raises "fn: bad destination name 'x'..." for a name that cannot be one. */
/* Pushes s as a quoted Lua string for an error message: its first 60
 * bytes, NUL and control bytes escaped, so nothing is cut or garbled. */
static void push_quoted(lua_State *L, const char *s, size_t len) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '"');
  size_t n = len > 60 ? 60 : len;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      luaL_addchar(&b, '\\');
      luaL_addchar(&b, (char)c);
    } else if (c == '\n') {
      luaL_addstring(&b, "\\n");
    } else if (c < 0x20 || c == 0x7f) {
      char e[8];
      snprintf(e, sizeof e, "\\%03u", c);
      luaL_addstring(&b, e);
    } else {
      luaL_addchar(&b, (char)c);
    }
  }
  if (n < len) {
    char more[48];
    snprintf(more, sizeof more, "...\" (%zu bytes)", len);
    luaL_addstring(&b, more);
  } else {
    luaL_addchar(&b, '"');
  }
  luaL_pushresult(&b);
}

static const char *check_dest(lua_State *L, int idx, const char *fn) {
  size_t len;
  const char *name = luaL_checklstring(L, idx, &len);
  if (!mb_dest_name_valid(name, len) || strlen(name) != len) {
    push_quoted(L, name, len);
    luaL_error(L,
               "%s: invalid destination name %s (use 1-255 characters of A-Z a-z 0-9 _ . / : -)",
               fn, lua_tostring(L, -1));
  }
  return name;
}

/* Pushes nil and "code: text" for a runtime condition; returns 2. */
static int fail_rc(lua_State *L, int rc, const char *dest, mbL_state *S) {
  lua_pushnil(L);
  switch (rc) {
  case MB_ENODEST:
    lua_pushfstring(L, "no_destination: no destination '%s'", dest);
    break;
  case MB_ENOLISTENERS:
    lua_pushfstring(L, "no_listeners: destination '%s' has no listeners", dest);
    break;
  case MB_EFULL: {
    mb_stats st;
    mb_dest_stats(core(S), dest, &st);
    lua_pushfstring(L, "queue_full: destination '%s' has %d pending messages (its max_queue)",
                    dest, (int)st.pending);
    break;
  }
  case MB_ECLOSED:
    lua_pushfstring(L, "closed: destination '%s' is being removed", dest);
    break;
  case MB_ESHUTDOWN:
    lua_pushfstring(L, "closed: shutting down, '%s' takes no new messages "
                       "(only what listeners send while handling)", dest);
    break;
  case MB_EEXISTS:
    lua_pushfstring(L, "exists: destination '%s' exists with other options", dest);
    break;
  default:
    lua_pushfstring(L, "%s: at destination '%s'", mb_strerror(rc), dest);
  }
  return 2;
}

/* ---- numbers of seconds ------------------------------------------------------ */

enum {
  SECS_ZERO = 1,    /* 0 is allowed (sleep, after) */
  SECS_NO_LIMIT = 2 /* math.huge means "no limit" (timeouts) */
};

/* The number of seconds at idx, for fn's `what` (SPEC section 7, "Numbers
 * of seconds"): raises for what is not a number, NaN, a negative number,
 * zero unless SECS_ZERO, and infinity unless SECS_NO_LIMIT (then returns
 * HUGE_VAL: callers start no timer). The one check every sleep, timer and
 * timeout goes through, so that no NaN or infinity reaches libev. */
static double check_seconds(lua_State *L, int idx, const char *fn, const char *what,
                            unsigned flags) {
  int isnum = 0;
  lua_Number s = lua_tonumberx(L, idx, &isnum);
  if (isnum && s == s && s < HUGE_VAL && (s > 0 || (s == 0 && (flags & SECS_ZERO))))
    return s;
  if (isnum && s == HUGE_VAL && (flags & SECS_NO_LIMIT)) return HUGE_VAL;
  char got[64];
  if (!isnum)
    snprintf(got, sizeof got, "a %s", luaL_typename(L, idx));
  else if (s != s)
    snprintf(got, sizeof got, "NaN");
  else if (s == HUGE_VAL || s == -HUGE_VAL)
    snprintf(got, sizeof got, "%smath.huge", s < 0 ? "-" : "");
  else
    snprintf(got, sizeof got, LUA_NUMBER_FMT, s);
  const char *want = (flags & SECS_NO_LIMIT)
                         ? "a positive number of seconds, or math.huge for no limit"
                     : (flags & SECS_ZERO) ? "a finite number, zero or more"
                                           : "a positive, finite number";
  return luaL_error(L, "%s: %s must be %s (not %s)", fn, what, want, got);
}

/* ---- coroutines ------------------------------------------------------------ */

/* A new coroutine, anchored in the registry: pushes it and its ref. */
static int new_thread_p(lua_State *L) {
  mbL_state *S = lua_touserdata(L, 1);
  lua_State *co = lua_newthread(L);
  int r = luaL_ref(L, LUA_REGISTRYINDEX);
  S->nrefs++;
  lua_pushlightuserdata(L, co);
  lua_pushinteger(L, r);
  return 2;
}

/* A task from the pool, or a new one. NULL when out of memory: the Lua
 * allocation is a protected call on S->L, so that running out of memory
 * returns NULL instead of raising (into the loop, or into S->L while one of
 * its coroutines runs, past that coroutine's own protection). */
static mbL_task *task_new(mbL_state *S, int kind) {
  mbL_task *t = S->pool;
  if (t) {
    S->pool = t->next;
    S->npool--;
  } else {
    lua_State *co;
    int r;
    { /* always protected: S->L may not be the running thread, whose error
       * handling an error raised in S->L would bypass */
      lua_pushcfunction(S->L, new_thread_p);
      lua_pushlightuserdata(S->L, S);
      if (lua_pcall(S->L, 1, 2, 0) != LUA_OK) {
        lua_pop(S->L, 1);
        return NULL;
      }
      co = lua_touserdata(S->L, -2);
      r = (int)lua_tointeger(S->L, -1);
      lua_pop(S->L, 2);
    }
    if (!(t = calloc(1, sizeof *t))) {
      unref(S, S->L, &r);
      return NULL;
    }
    t->S = S;
    t->co = co;
    t->ref = r;
  }
  t->kind = kind;
  if (kind == T_SCRIPT) atomic_fetch_add(&S->R->bodies, 1);
  t->waiting = 0;
  t->d = NULL;
  t->listener = NULL;
  t->prev = NULL;
  t->next = S->live;
  if (S->live) S->live->prev = t;
  S->live = t;
  S->ntasks++;
  return t;
}

static void task_unlink(mbL_task *t) {
  mbL_state *S = t->S;
  if (t->prev)
    t->prev->next = t->next;
  else
    S->live = t->next;
  if (t->next) t->next->prev = t->prev;
  S->ntasks--;
}

static void task_free(mbL_task *t, int reusable) {
  mbL_state *S = t->S;
  if (t->kind == T_SCRIPT) atomic_fetch_sub(&S->R->bodies, 1);
  task_unlink(t);
  if (reusable && S->npool < POOL_MAX) {
    lua_settop(t->co, 0);
    t->next = S->pool;
    S->pool = t;
    S->npool++;
    return;
  }
  unref(S, S->L, &t->ref);
  free(t);
}

static const char *task_what(mbL_task *t, char *buf, size_t n) {
  switch (t->kind) {
  case T_HANDLER:
    snprintf(buf, n, "listener at '%s'", t->listener->dest);
    break;
  case T_SCRIPT:
    snprintf(buf, n, "script %s", mb_service_name(t->S->svc));
    break;
  case T_TIMER:
    snprintf(buf, n, "timer callback");
    break;
  case T_EVENT:
    snprintf(buf, n, "event callback");
    break;
  default:
    snprintf(buf, n, "spawned function");
  }
  return buf;
}

static void task_run(mbL_task *t, int nargs);

/* ---- output: print and failure reports ------------------------------------- */

void mbL_runtime_output(mbL_runtime *R, mbL_output_fn fn, void *ud) {
  R->out = fn;
  R->out_ud = ud;
}

static void output(mbL_runtime *R, int stream, const char *text, size_t len) {
  if (R->out) {
    R->out(R->out_ud, stream, text, len);
    return;
  }
  FILE *f = stream == 2 ? stderr : stdout;
  fwrite(text, 1, len, f);
  fflush(f);
}

/* Writes a report of something that failed, as one line on stream 2. */
static void report(mbL_runtime *R, const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof buf) { /* cut: still one whole line */
    memcpy(buf + sizeof buf - 5, "...\n", 5);
    n = (int)sizeof buf - 1;
  }
  output(R, 2, buf, (size_t)n);
}

/* ---- posting: the one way the binding posts a task -------------------------- */

static void retry_cb(struct ev_loop *loop, ev_timer *tm, int revents) {
  (void)loop;
  (void)revents;
  mbL_retry *r = tm->data;
  mb_runtime_hold(r->rt, -1);
  r->fn(r->arg);
}

enum {
  POST_ALWAYS = 1, /* run also once the service died (mb_service_post_always) */
  POST_HERE = 2,   /* this thread is the service's worker */
  POST_NOW = 4     /* here, fn may run at once instead */
};

/* Posts fn(arg) to svc's worker. Posting fails only when a task queue
 * cannot grow, for want of memory; then the work is not lost:
 *  - here (POST_HERE), fn runs at once (POST_NOW), or from `later`'s timer
 *    on this loop in 1 ms (holding the bus busy meanwhile);
 *  - on another worker's thread, the post is tried again while that worker
 *    drains its queue (draining needs no memory), for up to 2 s.
 * Returns MB_OK, or MB_ENOMEM (reported on stderr) when nothing worked: the
 * caller then undoes what the task would have finished. fn never runs on
 * the wrong worker's thread. */
static int post(mbL_runtime *R, mb_service *svc, int flags, mb_task_fn fn, void *arg,
                mbL_retry *later) {
  for (int tries = 0;; tries++) {
    int rc = flags & POST_ALWAYS ? mb_service_post_always(svc, fn, arg)
                                 : mb_service_post(svc, fn, arg);
    if (rc == MB_OK) return MB_OK;
    if (flags & POST_HERE) break;
    if (tries == 2000) {
      report(R, "mb: out of memory: a task for service %s could not be queued\n",
             mb_service_name(svc));
      atomic_fetch_add(&R->failures, 1);
      return MB_ENOMEM;
    }
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  if (flags & POST_NOW) {
    fn(arg);
    return MB_OK;
  }
  if (later && !ev_is_active(&later->timer)) {
    later->rt = R->rt;
    later->fn = fn;
    later->arg = arg;
    ev_timer_init(&later->timer, retry_cb, 0.001, 0);
    later->timer.data = later;
    ev_timer_start(mb_service_loop(svc), &later->timer);
    mb_runtime_hold(R->rt, 1);
    return MB_OK;
  }
  report(R, "mb: out of memory: a task for service %s could not be queued\n",
         mb_service_name(svc));
  atomic_fetch_add(&R->failures, 1);
  return MB_ENOMEM;
}

/* luaL_tolstring as a protected call: a __tostring may raise. */
static int tostring_p(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* Pushes onto L the text of the error object at the top of co (a dead
 * coroutine: calls are made on L, the state's main thread) and returns it:
 * a string or a number as it is, an object through its __tostring, anything
 * else as "(error object is a T value)" (SPEC section 7, as lua.c). */
static const char *error_text(lua_State *L, lua_State *co) {
  int type = lua_type(co, -1);
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);
  if (type == LUA_TSTRING || type == LUA_TNUMBER) return lua_tostring(L, -1);
  if (luaL_getmetafield(L, -1, "__tostring") != LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushcfunction(L, tostring_p);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) return lua_tostring(L, -1);
    lua_pop(L, 1);
    return lua_pushfstring(L, "(error object is a %s value; its __tostring raised)",
                           lua_typename(L, type));
  }
  lua_pop(L, 1);
  return lua_pushfstring(L, "(error object is a %s value)", lua_typename(L, type));
}

/* Pushes onto L the traceback of t's coroutine as it was when it raised.
 * A handler's coroutine starts in mb's own C function (handler_body): its
 * "[C]: in ?" frame is left out, and when the error came from that function
 * itself (the message could not be given to the handler as JSON, or what
 * the handler returned could not be sent as the reply) the handler's own
 * file:line stands in, so that the report always names the script. */
static void push_traceback(lua_State *L, mbL_task *t) {
  static const char bottom[] = "\n\t[C]: in ?";
  lua_State *co = t->co;
  luaL_traceback(L, co, NULL, 0);
  if (t->kind != T_HANDLER) return;
  size_t len, blen = sizeof bottom - 1;
  const char *tb = lua_tolstring(L, -1, &len);
  if (len >= blen && !memcmp(tb + len - blen, bottom, blen)) len -= blen;
  lua_pushlstring(L, tb, len);
  lua_remove(L, -2);
  lua_Debug ar;
  if (lua_getstack(co, 1, &ar)) return; /* the handler ran and raised */
  /* the handler: user value 1 of the listener handle, anchored by its
   * self_ref while registered (nil once closed) */
  if (t->listener->self_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->listener->self_ref);
    lua_getiuservalue(L, -1, 1);
    lua_remove(L, -2);
  } else {
    lua_pushnil(L);
  }
  if (lua_isfunction(L, -1) && lua_getinfo(L, ">S", &ar) && ar.linedefined > 0) {
    lua_pushfstring(L, "\n\t%s:%d: in the listener's handler", ar.short_src, ar.linedefined);
    lua_concat(L, 2);
  } else if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
  }
}

/* A task's coroutine returned (status LUA_OK) or raised. This is the one
 * place where every task ends: deliveries are finished, failures reported
 * and counted, and a failed coroutine's pending to-be-closed variables are
 * closed (lua_resetthread: Debian's Lua is 5.4.4). */
static void task_end(mbL_task *t, int status) {
  mbL_state *S = t->S;
  lua_State *co = t->co, *L = S->L;
  mbL_end_fn end = t->kind == T_SCRIPT ? S->on_end : NULL;
  char what[300], said[1024] = "";
  int code = 0;
  if (end) S->on_end = NULL; /* once */
  if (status == LUA_OK) {
    if (t->d) mb_delivery_done_soon(t->d, MB_OK, NULL);
    /* mbrun's boot script returns nothing, or an exit code and why */
    if (end && lua_gettop(co) >= 1 && lua_isinteger(co, 1)) {
      code = (int)lua_tointeger(co, 1);
      if (lua_type(co, 2) == LUA_TSTRING) snprintf(said, sizeof said, "%s", lua_tostring(co, 2));
    }
    task_free(t, 1);
    if (end) end(S->end_ud, code, said);
    return;
  }
  int top = lua_gettop(L), room = lua_checkstack(L, 10) && lua_checkstack(co, 2);
  const char *msg = "(no memory left to tell the error)", *tb = NULL;
  if (room) {
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1); /* the error object, at top + 1 */
    msg = error_text(L, co);
    push_traceback(L, t);
    tb = lua_tostring(L, -1);
  }
  task_what(t, what, sizeof what);
  /* closed before anyone learns of the failure, as an unwinding call would;
   * the error object is then another one if a __close raised */
  if (lua_resetthread(co) != LUA_OK && room) {
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1);
    if (!lua_rawequal(L, -1, top + 1))
      report(S->R, "mb: %s: closing a to-be-closed variable raised: %s\n", what,
             error_text(L, co));
  }
  if (t->kind == T_SCRIPT && S->starting) {
    /* mb.load tells its caller instead */
    free(S->start_error);
    S->start_error = strdup(msg); /* NULL when out of memory */
    S->starting = 2;
  } else {
    report(S->R, "mb: %s failed: %s%s%s\n", what, msg, tb ? "\n" : "", tb ? tb : "");
    if (t->d) {
      char err[1024];
      snprintf(err, sizeof err, "failed: %s", msg);
      mb_delivery_done(t->d, MB_EFAILED, err);
    } else {
      atomic_fetch_add(&S->R->failures, 1);
    }
  }
  lua_settop(L, top);
  task_free(t, 0);
  if (end) end(S->end_ud, 1, NULL);
}

static void task_again(void *arg) { task_run(arg, 0); }

/* ---- aborting code that does not return ------------------------------------------
 *
 * A call (a handler, a timer callback, a script body's stretch between two
 * waits, with whatever it runs inline) is aborted by a hook that raises
 * "reason" at the next Lua instruction, so that it fails as if it had
 * raised that error. A hook may only be set from the thread that runs the
 * coroutine, or from a signal handler on that thread (as lua.c's Ctrl-C
 * does): so the aborter records what to abort and sends the worker's thread
 * ABORT_SIGNAL, whose handler sets the hook on the coroutine running there.
 * When that call returns into another one of the same thread (an inline
 * delivery, a spawned function), the hook is set there too, until the
 * outermost call is over. Lua code that runs in C (a blocking read, a
 * coroutine of the script's own) is not reached: the caller needs a bound
 * of its own (mbrun exits without joining that worker). Used by mbrun after
 * the grace period (mbL_runtime_abort); made for a per-service cpu limit
 * too (mbL_state_abort from a watchdog). */

#define ABORT_SIGNAL SIGURG /* ignored by default: harmless if it arrives late */

static _Thread_local mbL_state *tl_running; /* innermost state running on this thread */

/* Why the call running in S must be aborted; NULL when it need not be. On
 * S's thread. */
static const char *abort_reason(mbL_state *S) {
  const char *why = atomic_load(&S->R->abort_why);
  if (why) return why;
  uint_fast64_t c = atomic_load(&S->abort_call);
  if (c && S->depth > 0 && c == atomic_load(&S->calls)) return atomic_load(&S->abort_why);
  return NULL;
}

static void abort_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  mbL_state *S = tl_running;
  const char *why = S ? abort_reason(S) : NULL;
  if (!why) { /* the call it was meant for is over */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  /* the hook stays: a pcall in the aborted code does not swallow it for good */
  lua_pushstring(L, why);
  lua_error(L);
}

static void arm_abort(lua_State *co) {
  lua_sethook(co, abort_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* ABORT_SIGNAL, on the thread to abort: only atomics and lua_sethook. */
static void abort_signal(int sig) {
  (void)sig;
  int saved = errno;
  mbL_state *S = tl_running;
  if (S && abort_reason(S)) {
    lua_State *co = atomic_load(&S->running_co);
    if (co) arm_abort(co);
  }
  errno = saved;
}

static void abort_signal_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = abort_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(ABORT_SIGNAL, &sa, NULL);
}

/* Aborts the call running in S now, if any (not one that starts later),
 * with the error reason (a string that outlives S). From any thread.
 * Returns 1 when a call was running, else 0. */
static int mbL_state_abort(mbL_state *S, const char *reason) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  if (!atomic_load(&S->active)) return 0;
  pthread_once(&once, abort_signal_install);
  atomic_store(&S->abort_why, reason);
  atomic_store(&S->abort_call, atomic_load(&S->calls));
  if (tl_running == S) { /* from inside the call itself (C it called) */
    lua_State *co = atomic_load(&S->running_co);
    if (co) arm_abort(co);
  } else {
    mb_service_signal(S->svc, ABORT_SIGNAL);
  }
  return 1;
}

static void task_run(mbL_task *t, int nargs) {
  mbL_state *S = t->S;
  mbL_task *prev = S->current;
  mbL_state *outer = tl_running;
  int nres;
  S->current = t;
  if (S->depth++ == 0) atomic_fetch_add(&S->calls, 1);
  atomic_store(&S->active, S->depth);
  atomic_store(&S->running_co, t->co);
  tl_running = S; /* after running_co: the signal's handler reads both */
  atomic_signal_fence(memory_order_seq_cst);
  if (abort_reason(S)) arm_abort(t->co); /* mbL_runtime_abort: at once */
  int st = lua_resume(t->co, prev ? prev->co : S->L, nargs, &nres);
  atomic_store(&S->running_co, prev ? prev->co : NULL);
  tl_running = outer;
  atomic_signal_fence(memory_order_seq_cst);
  if (lua_gethook(t->co) == abort_hook) lua_sethook(t->co, NULL, 0, 0); /* pooled for reuse */
  S->depth--;
  S->current = prev;
  if (st == LUA_YIELD) {
    lua_pop(t->co, nres);
    /* a bare coroutine.yield(): let the others run, then go on */
    if (!t->waiting) post(S->R, S->svc, POST_HERE | POST_NOW, task_again, t, NULL);
  } else {
    task_end(t, st);
  }
  atomic_store(&S->active, S->depth); /* after task_end: its outcome is counted */
  /* an abort goes on in the call this one returns to */
  if (outer && abort_reason(outer)) {
    lua_State *co = atomic_load(&outer->running_co);
    if (co) arm_abort(co);
  }
}

/* ---- waiting ---------------------------------------------------------------- */

static mbL_waiter *waiter_new(mbL_state *S) {
  mbL_waiter *w = S->spare;
  if (w) {
    S->spare = w->next;
    S->nspare--;
  } else if (!(w = calloc(1, sizeof *w)))
    return NULL;
  memset(w, 0, sizeof *w);
  w->S = S;
  w->next = S->waiters;
  if (S->waiters) S->waiters->prev = w;
  S->waiters = w;
  S->nwaiters++;
  return w;
}

static void waiter_free(mbL_waiter *w) {
  mbL_state *S = w->S;
  if (w->prev)
    w->prev->next = w->next;
  else
    S->waiters = w->next;
  if (w->next) w->next->prev = w->prev;
  S->nwaiters--;
  for (size_t i = 0; i < w->n; i++) {
    mb_msg_unref(w->ans[i].reply);
    free(w->ans[i].error);
  }
  free(w->ans);
  free(w->error);
  if (ev_is_active(&w->timer)) {
    ev_timer_stop(mb_service_loop(S->svc), &w->timer);
    mb_runtime_hold(core(S), -1);
  }
  if (S->nspare < 8) { /* a request and the reply its handler sends: two at once */
    w->next = S->spare;
    S->spare = w;
    S->nspare++;
    return;
  }
  free(w);
}

static void waiter_resume(void *arg) {
  mbL_waiter *w = arg;
  mbL_task *t = w->task;
  t->waiting = 0;
  task_run(t, 0);
}

static void waiter_wake(mbL_waiter *w) {
  w->done = 1;
  /* on S's worker: send, request and stop completions run there */
  if (w->suspended) post(w->S->R, w->S->svc, POST_HERE | POST_NOW, waiter_resume, w, NULL);
}

/* Waits until w is done: yields when running in one of our coroutines,
 * otherwise runs the loop. Then finishes with k. */
static int wait_for(lua_State *L, mbL_waiter *w, lua_KFunction k) {
  mbL_state *S = w->S;
  if (!w->done) {
    mbL_task *t = S->current;
    if (t && t->co == L && lua_isyieldable(L)) {
      w->task = t;
      w->suspended = 1;
      t->waiting = 1;
      return lua_yieldk(L, 0, (lua_KContext)w, k);
    }
    while (!w->done) {
      const char *why = abort_reason(S); /* the signal cut the loop's wait short */
      if (why || (!mb_runtime_step(core(S), &w->done) && !w->done)) {
        if (w->req) mb_request_cancel(w->req);
        waiter_free(w);
        if (why) return luaL_error(L, "%s", why);
        return luaL_error(L, "mb: this wait can never end (nothing left that could end it)");
      }
    }
  }
  return k(L, LUA_OK, (lua_KContext)w);
}

/* ---- timers, spawn ------------------------------------------------------------ */

static void timer_release(mbL_timer *tm, lua_State *L) {
  mbL_state *S = tm->S;
  if (!S) return; /* its state went away first (state_release) */
  ev_timer_stop(mb_service_loop(S->svc), &tm->w);
  if (tm->self_ref == LUA_NOREF) return;
  mb_runtime_hold(core(S), -1);
  if (tm->prev)
    tm->prev->next = tm->next;
  else
    S->timers = tm->next;
  if (tm->next) tm->next->prev = tm->prev;
  S->ntimers--;
  unref(S, L, &tm->fn_ref);
  unref(S, L, &tm->self_ref);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  mbL_timer *tm = w->data;
  mbL_state *S = tm->S;
  mb_runtime *rt = core(S);
  /* held for the whole call: the callback may stop its own timer and go on */
  mb_runtime_hold(rt, 1);
  mbL_task *t = task_new(S, T_TIMER);
  if (t) {
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, tm->fn_ref);
  } else {
    report(S->R, "mb: timer callback not run: out of memory\n");
    atomic_fetch_add(&S->R->failures, 1);
  }
  if (!ev_is_active(&tm->w)) timer_release(tm, S->L); /* a one-shot timer is done */
  if (t) task_run(t, 0);
  mb_runtime_hold(rt, -1);
}

static int timer_start(lua_State *L, int repeat) {
  mbL_state *S = state_of(L);
  double s = check_seconds(L, 1, repeat ? "mb.every" : "mb.after", "seconds",
                           repeat ? 0 : SECS_ZERO);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  mbL_timer *tm = lua_newuserdatauv(L, sizeof *tm, 0);
  memset(tm, 0, sizeof *tm);
  luaL_setmetatable(L, "mb.Timer");
  tm->S = S;
  lua_pushvalue(L, 2);
  tm->fn_ref = ref(S, L);
  lua_pushvalue(L, -1);
  tm->self_ref = ref(S, L);
  ev_timer_init(&tm->w, timer_cb, s, repeat ? s : 0);
  tm->w.data = tm;
  ev_now_update(mb_service_loop(S->svc));
  ev_timer_start(mb_service_loop(S->svc), &tm->w);
  mb_runtime_hold(core(S), 1);
  tm->next = S->timers;
  if (S->timers) S->timers->prev = tm;
  S->timers = tm;
  S->ntimers++;
  return 1;
}

static int l_after(lua_State *L) { return timer_start(L, 0); }
static int l_every(lua_State *L) { return timer_start(L, 1); }

static int timer_stop(lua_State *L) {
  mbL_timer *tm = luaL_checkudata(L, 1, "mb.Timer");
  timer_release(tm, L);
  return 0;
}

static int l_spawn(lua_State *L) {
  mbL_state *S = state_of(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int n = lua_gettop(L);
  mbL_task *t = task_new(S, T_SPAWN);
  if (!t) return luaL_error(L, "mb.spawn: out of memory");
  lua_xmove(L, t->co, n);
  task_run(t, n - 1);
  return 0;
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  waiter_free((mbL_waiter *)ctx);
  return 0;
}

static void sleep_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  mbL_waiter *w = t->data;
  mb_runtime *rt = core(w->S);
  waiter_wake(w); /* posts the resume first: the bus never looks idle between */
  mb_runtime_hold(rt, -1);
}

static int l_sleep(lua_State *L) {
  mbL_state *S = state_of(L);
  double s = check_seconds(L, 1, "mb.sleep", "seconds", SECS_ZERO);
  mbL_waiter *w = waiter_new(S);
  if (!w) return luaL_error(L, "mb.sleep: out of memory");
  ev_timer_init(&w->timer, sleep_cb, s, 0);
  w->timer.data = w;
  /* the loop's clock may be stale when it has not run for a while */
  ev_now_update(mb_service_loop(S->svc));
  ev_timer_start(mb_service_loop(S->svc), &w->timer);
  mb_runtime_hold(core(S), 1);
  return wait_for(L, w, sleep_k);
}

/* Monotonic seconds: immune to changes of the wall clock. */
static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

/* ---- destinations ------------------------------------------------------------- */

static const char *const TYPES[] = {"parallel", "serial", "synchronous", NULL};
static const char *const ON_FULL[] = {"reject", "block", NULL};

static lua_Integer opt_positive(lua_State *L, int t, const char *key, const char *fn) {
  lua_getfield(L, t, key);
  lua_Integer v = 0;
  if (!lua_isnil(L, -1)) {
    if (!lua_isinteger(L, -1) || (v = lua_tointeger(L, -1)) <= 0)
      luaL_error(L, "%s: option '%s' must be a positive integer", fn, key);
  }
  lua_pop(L, 1);
  return v;
}

static int opt_enum(lua_State *L, int t, const char *key, const char *const *names, int def,
                    const char *fn) {
  lua_getfield(L, t, key);
  int v = def;
  if (!lua_isnil(L, -1)) {
    const char *s = lua_tostring(L, -1);
    v = -1;
    for (int i = 0; s && lua_type(L, -1) == LUA_TSTRING && names[i]; i++)
      if (strcmp(s, names[i]) == 0) v = i;
    if (v < 0) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (int i = 0; names[i]; i++) {
        if (i) luaL_addstring(&b, ", ");
        luaL_addchar(&b, '"');
        luaL_addstring(&b, names[i]);
        luaL_addchar(&b, '"');
      }
      luaL_pushresult(&b);
      luaL_error(L, "%s: option '%s' must be one of %s", fn, key, lua_tostring(L, -1));
    }
  }
  lua_pop(L, 1);
  return v;
}

/* Raises for keys of table t that are not in allowed. */
static void check_keys(lua_State *L, int t, const char *const *allowed, const char *fn) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(lua_tostring(L, -1), allowed[i]) == 0;
    if (!ok)
      luaL_error(L, "%s: unknown option '%s'", fn, luaL_tolstring(L, -1, NULL));
  }
}

static int l_destination(lua_State *L) {
  static const char *const keys[] = {"type", "max_queue", "on_full", "concurrency", NULL};
  mbL_state *S = state_of(L);
  const char *name = check_dest(L, 1, "mb.destination");
  mb_dest_opts o = {0};
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    check_keys(L, 2, keys, "mb.destination");
    o.type = (mb_dest_type)opt_enum(L, 2, "type", TYPES, 0, "mb.destination");
    o.on_full = (mb_full_policy)opt_enum(L, 2, "on_full", ON_FULL, 0, "mb.destination");
    o.max_queue = (size_t)opt_positive(L, 2, "max_queue", "mb.destination");
    o.concurrency = (size_t)opt_positive(L, 2, "concurrency", "mb.destination");
    if (o.concurrency && o.type != MB_PARALLEL)
      return luaL_error(L, "mb.destination: option 'concurrency' is for parallel destinations");
  }
  int rc = mb_dest_declare(core(S), name, &o);
  if (rc == MB_ECLOSED) {
    lua_pushnil(L);
    lua_pushfstring(L, "closed: destination '%s' is being removed", name);
    return 2;
  }
  if (rc < 0) return fail_rc(L, rc, name, S);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_remove_destination(lua_State *L) {
  mbL_state *S = state_of(L);
  const char *name = check_dest(L, 1, "mb.remove_destination");
  int rc = mb_dest_remove(core(S), name);
  if (rc < 0) return fail_rc(L, rc, name, S);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_has_destination(lua_State *L) {
  mbL_state *S = state_of(L);
  const char *name = check_dest(L, 1, "mb.has_destination");
  lua_pushboolean(L, mb_dest_exists(core(S), name));
  return 1;
}

static void add_name(void *ud, const char *name) {
  lua_State *L = ud;
  lua_pushstring(L, name);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

static int l_destinations(lua_State *L) {
  mbL_state *S = state_of(L);
  lua_newtable(L);
  mb_dest_each(core(S), add_name, L);
  return 1;
}

static void push_stats(lua_State *L, const mb_stats *st) {
  lua_createtable(L, 0, 14);
  lua_pushstring(L, TYPES[st->type]);
  lua_setfield(L, -2, "type");
#define F(name)                              \
  lua_pushinteger(L, (lua_Integer)st->name); \
  lua_setfield(L, -2, #name)
  F(listeners);
  F(sent);
  F(rejected);
  F(deliveries);
  F(delivered);
  F(failed);
  F(dropped);
  F(pending);
  F(largest_pending);
  F(in_flight);
  F(replies);
  F(timeouts);
#undef F
}

static void add_stats(void *ud, const char *name) {
  lua_State *L = ud;
  mbL_state *S = state_of(L);
  mb_stats st;
  if (mb_dest_stats(core(S), name, &st) == MB_OK) {
    push_stats(L, &st);
    lua_setfield(L, -2, name);
  }
}

static int l_stats(lua_State *L) {
  mbL_state *S = state_of(L);
  mb_service_settle(S->svc); /* this service's finished deliveries count */
  if (lua_isnoneornil(L, 1)) {
    lua_newtable(L);
    mb_dest_each(core(S), add_stats, L);
    return 1;
  }
  const char *name = check_dest(L, 1, "mb.stats");
  mb_stats st;
  int rc = mb_dest_stats(core(S), name, &st);
  if (rc < 0) return fail_rc(L, rc, name, S);
  push_stats(L, &st);
  return 1;
}

/* ---- events ------------------------------------------------------------------- */

static const char *const EVENTS[] = {"destination_added", "destination_removed",
                                     "listener_added", "listener_removed", NULL};

/* Pushes an event's callback arguments: the destination and the info table
 * (a protected call: it allocates). */
static int event_args_p(lua_State *L) {
  const mb_event *ev = lua_touserdata(L, 1);
  lua_pushstring(L, ev->destination);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, TYPES[ev->type]);
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)ev->listeners);
  lua_setfield(L, -2, "listeners");
  int k = 0;
  while (!(ev->kind & (1u << k))) k++;
  lua_pushstring(L, EVENTS[k]);
  lua_setfield(L, -2, "event");
  if (ev->service) {
    lua_pushstring(L, ev->service);
    lua_setfield(L, -2, "service");
  }
  return 2;
}

static void on_event(void *ud, const mb_event *ev) {
  mbL_sub *s = ud;
  mbL_state *S = s->S;
  mbL_task *t = task_new(S, T_EVENT);
  if (!t) {
    report(S->R, "mb: event callback for '%s' not run: out of memory\n", ev->destination);
    atomic_fetch_add(&S->R->failures, 1);
    return;
  }
  lua_State *co = t->co;
  lua_pushcfunction(co, event_args_p);
  lua_pushlightuserdata(co, (void *)ev);
  if (lua_pcall(co, 1, 2, 0) != LUA_OK) {
    report(S->R, "mb: event callback for '%s' not run: out of memory\n", ev->destination);
    atomic_fetch_add(&S->R->failures, 1);
    lua_settop(co, 0);
    task_free(t, 1);
    return;
  }
  lua_rawgeti(co, LUA_REGISTRYINDEX, s->self_ref);
  lua_getiuservalue(co, -1, 1);
  lua_remove(co, -2);
  lua_insert(co, -3); /* fn, destination, info */
  task_run(t, 2);
}

static int l_on(lua_State *L) {
  mbL_state *S = state_of(L);
  int kind = luaL_checkoption(L, 1, NULL, EVENTS);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  mbL_sub *s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  s->self_ref = LUA_NOREF;
  luaL_setmetatable(L, "mb.Subscription");
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  /* anchored before the core knows it (luaL_ref may raise) */
  lua_pushvalue(L, -1);
  s->self_ref = ref(S, L);
  s->sub = mb_subscribe(S->svc, 1u << kind, on_event, s);
  if (!s->sub) {
    unref(S, L, &s->self_ref);
    return luaL_error(L, "mb.on: out of memory");
  }
  s->S = S;
  s->next = S->subs;
  if (S->subs) S->subs->prev = s;
  S->subs = s;
  S->nsubs++;
  return 1;
}

/* The one release path of a subscription handle. unsubscribe: tell the
 * core (not when the state goes away: freeing the service ends it there);
 * L: where to drop the anchor (NULL: the registry goes with the state). */
static void sub_release(mbL_sub *s, int unsubscribe, lua_State *L) {
  mbL_state *S = s->S;
  if (!S) return;
  if (unsubscribe) mb_unsubscribe(s->sub);
  s->sub = NULL;
  s->S = NULL;
  if (s->prev)
    s->prev->next = s->next;
  else
    S->subs = s->next;
  if (s->next) s->next->prev = s->prev;
  S->nsubs--;
  if (L) unref(S, L, &s->self_ref);
}

static int sub_close_l(lua_State *L) {
  sub_release(luaL_checkudata(L, 1, "mb.Subscription"), 1, L);
  return 0;
}

/* ---- messages out: payload, values, options -------------------------------------- */

typedef struct send_opts {
  int json;
  const char *reply_to;
  double timeout;
  int has_values;
} send_opts;

static void read_send_opts(lua_State *L, int idx, send_opts *o, int request, const char *fn) {
  static const char *const send_keys[] = {"values", "reply_to", "format", NULL};
  static const char *const req_keys[] = {"values", "reply_to", "format", "timeout", NULL};
  static const char *const formats[] = {"table", "json", NULL};
  memset(o, 0, sizeof *o);
  o->timeout = 10;
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  check_keys(L, idx, request ? req_keys : send_keys, fn);
  o->json = opt_enum(L, idx, "format", formats, 0, fn);
  if (lua_getfield(L, idx, "reply_to") != LUA_TNIL) {
    o->reply_to = check_dest(L, lua_gettop(L), fn);
  }
  lua_pop(L, 1); /* the string stays alive in the options table */
  int t = lua_getfield(L, idx, "values");
  if (t != LUA_TNIL && t != LUA_TTABLE) luaL_error(L, "%s: option 'values' must be a table", fn);
  if (t == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "%s: values keys must be strings (found a %s key)", fn,
                   luaL_typename(L, -2));
      lua_pop(L, 1);
    }
    o->has_values = 1;
  }
  lua_pop(L, 1);
  if (request && lua_getfield(L, idx, "timeout") != LUA_TNIL)
    o->timeout = check_seconds(L, -1, fn, "option 'timeout'", SECS_NO_LIMIT);
  if (request) lua_pop(L, 1);
}

/* Builds the message for payload at pidx with options at oidx; raises on a
 * payload that cannot be sent. */
static mb_msg *build_msg(lua_State *L, mbL_state *S, int pidx, int oidx, const send_opts *o,
                         const char *fn) {
  char err[700];
  size_t max = mb_runtime_max_message_size(core(S));
  S->buf.len = 0;
  S->vbuf.len = 0;
  if (o->json) {
    size_t len;
    if (lua_type(L, pidx) != LUA_TSTRING)
      luaL_error(L, "%s: a format = \"json\" payload must be a JSON string, not a %s", fn,
                 luaL_typename(L, pidx));
    const char *text = lua_tolstring(L, pidx, &len);
    if (mb_json_decode(text, len, MB_MAX_DEPTH, &S->buf, err, sizeof err))
      luaL_error(L, "%s: payload: %s", fn, err);
  } else if (mbL_encode(L, pidx, &S->buf, max, "payload", err, sizeof err)) {
    luaL_error(L, "%s: %s", fn, err);
  }
  if (o->has_values) {
    lua_getfield(L, oidx, "values");
    if (mbL_encode(L, -1, &S->vbuf, max, "values", err, sizeof err))
      luaL_error(L, "%s: %s", fn, err);
    lua_pop(L, 1);
  }
  if (S->buf.len + S->vbuf.len > max)
    luaL_error(L, "%s: message too large (over %d bytes, the max_message_size)", fn, (int)max);
  mb_msg *m = mb_msg_new(S->buf.p, S->buf.len, o->has_values ? S->vbuf.p : NULL, S->vbuf.len,
                         o->reply_to);
  if (!m) luaL_error(L, "%s: out of memory", fn);
  return m;
}

static void push_id(lua_State *L, uint64_t id) {
  char buf[17];
  lua_pushlstring(L, buf, mb_id_format(id, buf));
}

/* ---- send -------------------------------------------------------------------------- */

/* Is S running a listener's handler? What it sends then is part of the work
 * in flight (mb_msg_follow_up). */
static int in_handler(const mbL_state *S) { return S->current && S->current->kind == T_HANDLER; }

static void send_done(void *ud, int status) {
  mbL_waiter *w = ud;
  w->status = status;
  waiter_wake(w);
}

static int send_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  int rc = w->status;
  waiter_free(w);
  /* stack: dest, payload, opts, id */
  if (rc < 0) return fail_rc(L, rc, lua_tostring(L, 1), state_of(L));
  lua_settop(L, 4);
  return 1;
}

static int l_send(lua_State *L) {
  mbL_state *S = state_of(L);
  const char *dest = check_dest(L, 1, "mb.send");
  send_opts o;
  lua_settop(L, 3);
  read_send_opts(L, 3, &o, 0, "mb.send");
  mb_msg *m = build_msg(L, S, 2, 3, &o, "mb.send");
  uint64_t id = mb_msg_id(m);
  mbL_waiter *w = waiter_new(S);
  if (!w) {
    mb_msg_unref(m);
    return luaL_error(L, "mb.send: out of memory");
  }
  if (in_handler(S)) mb_msg_follow_up(m);
  int rc = mb_send(S->svc, dest, m, send_done, w);
  if (rc == MB_PENDING) {
    push_id(L, id);
    return wait_for(L, w, send_k);
  }
  waiter_free(w);
  if (rc < 0) return fail_rc(L, rc, dest, S);
  push_id(L, id);
  return 1;
}

/* ---- request ----------------------------------------------------------------------- */

static void request_done(void *ud, const mb_answer *a, size_t n) {
  mbL_waiter *w = ud;
  w->req = NULL;
  w->ans = n ? calloc(n, sizeof *w->ans) : NULL;
  if (w->ans) {
    w->n = n;
    for (size_t i = 0; i < n; i++) {
      w->ans[i].status = a[i].status;
      w->ans[i].reply = a[i].reply ? mb_msg_ref((mb_msg *)a[i].reply) : NULL;
      w->ans[i].error = a[i].error ? strdup(a[i].error) : NULL;
    }
  }
  waiter_wake(w);
}

static void push_payload(lua_State *L, const mb_msg *m) {
  size_t len;
  const uint8_t *p = mb_msg_payload(m, &len);
  mbL_decode(L, p, len);
}

static int request_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  if (w->n == 0) {
    waiter_free(w);
    lua_pushnil(L);
    lua_pushstring(L, "failed: out of memory");
    return 2;
  }
  if (w->ans[0].status == MB_OK) {
    /* decoded once: the reply payload is also the reply message's */
    push_payload(L, w->ans[0].reply);
    mbL_push_msg(L, w->ans[0].reply, 0, -1);
  } else {
    lua_pushnil(L);
    lua_pushstring(L, w->ans[0].error ? w->ans[0].error : "failed");
  }
  waiter_free(w);
  return 2;
}

static int request_all_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  lua_createtable(L, (int)w->n, 0);
  for (size_t i = 0; i < w->n; i++) {
    lua_createtable(L, 0, 2);
    if (w->ans[i].status == MB_OK) {
      push_payload(L, w->ans[i].reply);
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, "payload");
      mbL_push_msg(L, w->ans[i].reply, 0, -1); /* the same payload table */
      lua_setfield(L, -3, "msg");
      lua_pop(L, 1);
    } else {
      lua_pushstring(L, w->ans[i].error ? w->ans[i].error : "failed");
      lua_setfield(L, -2, "error");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  waiter_free(w);
  return 1;
}

static int do_request(lua_State *L, int all) {
  const char *fn = all ? "mb.request_all" : "mb.request";
  mbL_state *S = state_of(L);
  const char *dest = check_dest(L, 1, fn);
  send_opts o;
  lua_settop(L, 3);
  read_send_opts(L, 3, &o, 1, fn);
  mb_msg *m = build_msg(L, S, 2, 3, &o, fn);
  mbL_waiter *w = waiter_new(S);
  if (!w) {
    mb_msg_unref(m);
    return luaL_error(L, "%s: out of memory", fn);
  }
  if (in_handler(S)) mb_msg_follow_up(m);
  int rc = mb_request_start(S->svc, dest, m, o.timeout, all, request_done, w, &w->req);
  if (rc < 0) {
    waiter_free(w);
    return fail_rc(L, rc, dest, S);
  }
  return wait_for(L, w, all ? request_all_k : request_k);
}

static int l_request(lua_State *L) { return do_request(L, 0); }
static int l_request_all(lua_State *L) { return do_request(L, 1); }

/* Decodes the JSON text at 1 through buffer b and pushes the value. */
static int json_decode_into(lua_State *L, mb_buf *b) {
  char err[700];
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  b->len = 0;
  if (mb_json_decode(s, len, 1000, b, err, sizeof err))
    return luaL_error(L, "mb.json.decode: %s", err);
  mbL_decode(L, b->p, b->len);
  return 1;
}

/* json_decode_into for a protected call: (text, buffer). */
static int json_decode_raw(lua_State *L) { return json_decode_into(L, lua_touserdata(L, 2)); }

/* ---- listening ------------------------------------------------------------------------ */

/* SPEC 7, "a reply that cannot be delivered": the reason goes to stderr,
 * and the delivery being answered, while still open, ends failed (the core
 * marked it already when the send failed at once; this marks it when a
 * send that waited failed). */
static void reply_undelivered(mbL_waiter *w, int rc) {
  char err[400];
  snprintf(err, sizeof err, "failed: reply to '%s' not delivered: %s", w->reply_to,
           rc == MB_ENODEST        ? "no_destination: no such destination"
           : rc == MB_ENOLISTENERS ? "no_listeners: it has no listeners"
           : rc == MB_EFULL        ? "queue_full: its queue is full"
           : rc == MB_ENOMEM       ? "out of memory"
                                   : "closed: it takes no messages");
  if (w->dv) {
    mb_delivery_fail(w->dv, err);
    const mb_msg *m = mb_delivery_msg(w->dv);
    char id[17];
    mb_id_format(mb_msg_id(m), id);
    report(w->S->R, "mb: listener at '%s': %s; delivery of message %s counted as failed\n",
           mb_msg_destination(m), err + 8, id);
  } else {
    report(w->S->R, "mb: %s\n", err + 8);
  }
}

static int reply_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  int rc = w->status;
  if (rc < 0 && w->reply_to) reply_undelivered(w, rc);
  waiter_free(w);
  lua_pushinteger(L, rc);
  return 1;
}

/* The open delivery of message id that the running handler of S answers,
 * or NULL. */
static mb_delivery *answering(mbL_state *S, uint64_t id) {
  mbL_task *t = S->current;
  return t && t->kind == T_HANDLER && t->d && mb_msg_id(mb_delivery_msg(t->d)) == id ? t->d
                                                                                      : NULL;
}

/* Replies with the payload at pidx (values table at vidx, or 0) to the
 * message id sent to dest with reply_to; waits while the reply_to send
 * waits. Leaves the MB_* result code on the stack; raises on a payload that
 * cannot be sent. A reply that cannot be delivered to reply_to fails the
 * delivery being answered (reply_undelivered). */
static int reply_with(lua_State *L, mbL_state *S, const char *dest, uint64_t id,
                      const char *reply_to, uint64_t group, int pidx, int vidx,
                      const char *fn, lua_KFunction k) {
  send_opts o;
  memset(&o, 0, sizeof o);
  int oidx = 0;
  if (vidx && !lua_isnoneornil(L, vidx)) {
    luaL_checktype(L, vidx, LUA_TTABLE);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, vidx);
    lua_setfield(L, -2, "values");
    oidx = lua_gettop(L);
    o.has_values = 1;
  }
  mb_msg *reply = build_msg(L, S, pidx, oidx, &o, fn);
  mbL_waiter *w = waiter_new(S);
  if (!w) {
    mb_msg_unref(reply);
    return luaL_error(L, "%s: out of memory", fn);
  }
  w->dv = answering(S, id);
  w->reply_to = reply_to;
  int rc = w->dv ? mb_delivery_reply(w->dv, reply, send_done, w)
                 : mb_reply_id(S->svc, dest, id, reply_to, group, reply, send_done, w);
  if (rc == MB_PENDING) return wait_for(L, w, k);
  w->status = rc;
  return k(L, LUA_OK, (lua_KContext)w);
}

static int handler_done_k(lua_State *L, int status, lua_KContext ctx) {
  reply_k(L, status, ctx);
  return 0;
}

static int handler_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_task *t = (mbL_task *)ctx;
  const mb_msg *m = mb_delivery_msg(t->d);
  if (lua_isnil(L, -1) || !mb_msg_expects_reply(m)) return 0;
  return reply_with(L, t->S, mb_msg_destination(m), mb_msg_id(m), mb_msg_reply_to(m),
                    mb_delivery_group(t->d), lua_gettop(L), 0, "reply", handler_done_k);
}

/* The body of a handler's coroutine: fn, task. Builds the message inside
 * the coroutine so that every error is caught by its resume. */
static int handler_body(lua_State *L) {
  /* 1: the handler, 2: the task, 3: the listener handle, kept */
  mbL_task *t = lua_touserdata(L, 2);
  const mb_msg *m = mb_delivery_msg(t->d);
  if (t->listener->json) {
    char err[700];
    mbL_state *S = t->S;
    S->buf.len = 0;
    if (mb_msg_to_json(m, &S->buf, err, sizeof err))
      return luaL_error(L, "cannot give the message as JSON: %s", err);
    lua_pushvalue(L, 1);
    lua_pushlstring(L, (const char *)S->buf.p, S->buf.len);
  } else {
    lua_getiuservalue(L, 3, 2); /* 4: the destination's name */
    lua_pushvalue(L, 1);
    mbL_push_msg(L, m, 4, 0);
    if (mb_msg_is_request(m)) { /* mb.reply(msg) answers for this group */
      lua_rawgeti(L, LUA_REGISTRYINDEX, t->S->groups);
      lua_pushvalue(L, -2);
      lua_pushinteger(L, (lua_Integer)mb_delivery_group(t->d));
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
  }
  /* handler, message */
  lua_callk(L, 1, 1, (lua_KContext)t, handler_k);
  return handler_k(L, LUA_OK, (lua_KContext)t);
}

static void on_delivery(void *ud, mb_delivery *d) {
  mbL_listener *ls = ud;
  mbL_state *S = ls->S;
  const char *aborted = atomic_load(&S->R->abort_why); /* shutting down: none starts */
  mbL_task *t = S->stopping || aborted ? NULL : task_new(S, T_HANDLER);
  if (!t) {
    mb_delivery_done(d, S->stopping || aborted ? MB_EDROPPED : MB_EFAILED,
                     aborted     ? "dropped: shutting down"
                     : S->stopping ? "dropped: service stopping"
                                   : "failed: out of memory");
    return;
  }
  t->d = d;
  t->listener = ls;
  lua_State *co = t->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, S->body_ref);
  lua_rawgeti(co, LUA_REGISTRYINDEX, ls->self_ref); /* ls lives while the handler runs */
  lua_getiuservalue(co, -1, 1);
  lua_pushlightuserdata(co, t);
  lua_rotate(co, -3, -1); /* body, handler, task, handle */
  task_run(t, 3);
}

static void on_listener_closed(void *ud);

static int l_listen(lua_State *L) {
  static const char *const keys[] = {"format", NULL};
  static const char *const formats[] = {"table", "json", NULL};
  mbL_state *S = state_of(L);
  const char *dest = check_dest(L, 1, "mb.listen");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int json = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    check_keys(L, 3, keys, "mb.listen");
    json = opt_enum(L, 3, "format", formats, 0, "mb.listen");
  }
  mbL_listener *ls = lua_newuserdatauv(L, sizeof *ls, 2);
  memset(ls, 0, sizeof *ls);
  ls->self_ref = LUA_NOREF;
  luaL_setmetatable(L, "mb.Listener");
  ls->json = json;
  snprintf(ls->dest, sizeof ls->dest, "%s", dest);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2);
  /* anchored before the core knows it (luaL_ref may raise) */
  lua_pushvalue(L, -1);
  ls->self_ref = ref(S, L);
  int err = 0;
  ls->l = mb_listen(S->svc, dest, S->group_key, on_delivery, on_listener_closed, ls, &err);
  if (!ls->l) {
    unref(S, L, &ls->self_ref);
    return fail_rc(L, err, dest, S);
  }
  ls->S = S;
  ls->next = S->listeners;
  if (S->listeners) S->listeners->prev = ls;
  S->listeners = ls;
  S->nlisteners++;
  return 1;
}

/* The one release path of a listener handle. close: close the core
 * listener (l:close(); not when the core closed it, nor when freeing the
 * service closes it); L: where to drop the anchor (NULL: the registry goes
 * with the state). */
static void listener_release(mbL_listener *ls, int close, lua_State *L) {
  mbL_state *S = ls->S;
  if (!S) return;
  if (close) mb_listener_close(ls->l);
  ls->l = NULL;
  ls->S = NULL;
  if (ls->prev)
    ls->prev->next = ls->next;
  else
    S->listeners = ls->next;
  if (ls->next) ls->next->prev = ls->prev;
  S->nlisteners--;
  if (L) unref(S, L, &ls->self_ref);
}

/* The destination was removed: the core closes the listener itself. */
static void on_listener_closed(void *ud) {
  mbL_listener *ls = ud;
  listener_release(ls, 0, ls->S->L);
}

static int listener_close_l(lua_State *L) {
  listener_release(luaL_checkudata(L, 1, "mb.Listener"), 1, L);
  return 0;
}

static int l_reply_k(lua_State *L, int status, lua_KContext ctx) {
  reply_k(L, status, ctx);
  int rc = (int)lua_tointeger(L, -1);
  if (rc == MB_ECLOSED && lua_type(L, 5) != LUA_TSTRING) {
    lua_pushnil(L);
    lua_pushstring(L, "closed: nobody waits for a reply to this message (it has no reply_to, "
                      "and no requester is waiting for it any more)");
    return 2;
  }
  if (rc < 0) return fail_rc(L, rc, lua_tostring(L, 5), state_of(L));
  lua_pushboolean(L, 1);
  return 1;
}

/* mb.reply(msg, payload [, values]): msg is a message table or the JSON
 * text a format = "json" listener received. */
static int l_reply(lua_State *L) {
  mbL_state *S = state_of(L);
  lua_settop(L, 3);
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_pushcfunction(L, json_decode_raw);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, &S->vbuf);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK || !lua_istable(L, -1))
      return luaL_error(L, "mb.reply: argument 1 is not the JSON text of a message");
  } else {
    if (!lua_istable(L, 1))
      return luaL_error(L, "mb.reply: argument 1 must be the message being answered");
    lua_pushvalue(L, 1);
  }
  /* 4: the message table; 5: reply_to; 6: destination; 7: id */
  lua_getfield(L, 4, "reply_to");
  lua_getfield(L, 4, "destination");
  lua_getfield(L, 4, "id");
  size_t idlen;
  const char *ids = lua_tolstring(L, 7, &idlen);
  uint64_t id;
  if (!ids || lua_type(L, 7) != LUA_TSTRING || mb_id_parse(ids, idlen, &id))
    return luaL_error(L, "mb.reply: argument 1 must be a message (it has no valid id)");
  const char *reply_to = lua_type(L, 5) == LUA_TSTRING ? lua_tostring(L, 5) : NULL;
  const char *dest = lua_type(L, 6) == LUA_TSTRING ? lua_tostring(L, 6) : NULL;
  if (reply_to && !mb_dest_name_valid(reply_to, strlen(reply_to))) {
    reply_to = NULL;
    lua_pushnil(L);
    lua_replace(L, 5);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->groups);
  lua_pushvalue(L, 1);
  lua_Integer group = lua_tointeger(L, (lua_rawget(L, -2), -1)); /* 0 when unknown */
  lua_pop(L, 2);
  return reply_with(L, S, dest, id, reply_to, (uint64_t)group, 2, 3, "mb.reply", l_reply_k);
}

/* ---- JSON ------------------------------------------------------------------------------- */

static int l_json_encode(lua_State *L) {
  mbL_state *S = state_of(L);
  char err[700];
  luaL_checkany(L, 1);
  S->buf.len = 0;
  if (mbL_json_encode(L, 1, &S->buf, "value", err, sizeof err))
    return luaL_error(L, "mb.json.encode: %s", err);
  lua_pushlstring(L, (const char *)S->buf.p, S->buf.len);
  return 1;
}

static int l_json_decode(lua_State *L) { return json_decode_into(L, &state_of(L)->buf); }

/* ---- services ------------------------------------------------------------------------------ */

static void open_module(lua_State *L, mbL_state *S);

static void state_link(mbL_runtime *R, mbL_state *S) {
  pthread_mutex_lock(&R->lock);
  S->next = R->states;
  if (R->states) R->states->prev = S;
  R->states = S;
  pthread_mutex_unlock(&R->lock);
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

/* Releases what S holds in the core and the loop, on S's worker. Its Lua
 * state is left to the caller: closed for services, being closed for a
 * program's own state. */
static void state_release(mbL_state *S) {
  mb_runtime *rt = core(S);
  S->stopping = 1;
  state_unlink(S->R, S);
  struct ev_loop *loop = mb_service_loop(S->svc);
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
    tm->S = NULL;
  }
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
    free(w->ans);
    free(w->error);
    free(w);
  }
  /* its handles' owner closes them (also one whose destination's removal
   * could not tell it); the registry goes with the Lua state */
  while (S->listeners) listener_release(S->listeners, 1, NULL);
  while (S->subs) sub_release(S->subs, 1, NULL);
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
    free(t);
  }
  while (S->pool) {
    mbL_task *t = S->pool;
    S->pool = t->next;
    free(t);
  }
  mb_buf_free(&S->buf);
  mb_buf_free(&S->vbuf);
  free(S->start_error);
  S->start_error = NULL;
}

static void state_stop(mbL_state *S) {
  lua_State *L = S->L;
  int owns = S->owns_L;
  state_release(S);
  if (owns) lua_close(L); /* finalizers still find S (and that it stopped) */
  free(S);
}

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    mb_free(ptr);
    return NULL;
  }
  if (ptr && nsize <= osize) return mb_realloc_shrink(ptr, nsize); /* must not fail */
  return mb_realloc(ptr, nsize);
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
  output(lua_touserdata(L, lua_upvalueindex(1)), 1, line, len);
  return 0;
}

static int state_init_p(lua_State *L) {
  mbL_state *S = lua_touserdata(L, 1);
  luaL_openlibs(L);
  lua_pushlightuserdata(L, S->R); /* outlives every state */
  lua_pushcclosure(L, l_print, 1);
  lua_setglobal(L, "print");
  open_module(L, S);
  return 0;
}

static mbL_state *state_new(mbL_runtime *R, mb_service *svc, uint64_t group_key) {
  mbL_state *S = calloc(1, sizeof *S);
  if (!S) return NULL;
  S->L = lua_newstate(l_alloc, NULL);
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
  state_link(R, S);
  return S;
}

static int load_script_p(lua_State *L) {
  lua_pushinteger(L, luaL_loadfilex(L, lua_touserdata(L, 1), "t"));
  return 2;
}

/* Pushes the function that runs path; the error message on failure (a
 * protected call: luaL_loadfilex raises when out of memory). Returns
 * luaL_loadfilex's code. */
static int load_script(lua_State *L, const char *path) {
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
static int start_body(mbL_state *S, int nargs) {
  mbL_task *t = task_new(S, T_SCRIPT);
  if (!t) {
    lua_pop(S->L, nargs + 1);
    return -1;
  }
  lua_xmove(S->L, t->co, nargs + 1);
  task_run(t, nargs);
  return 0;
}

/* One of several things a waiter counts down in w->status has happened. */
static void stop_done(void *arg) {
  mbL_waiter *w = arg;
  if (--w->status == 0) waiter_wake(w);
}

static int countdown_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  waiter_free((mbL_waiter *)ctx);
  lua_settop(L, 4); /* the handle */
  return 1;
}

/* What a new instance needs to start on its worker, and how it went. */
typedef struct start_req {
  mbL_runtime *R;
  mb_service *svc;
  mb_service *asker; /* told when the body has started (NULL: inline) */
  mbL_waiter *w;
  uint64_t group_key;
  int nargs;
  int failed;  /* it did not start: error says why (NULL: out of memory) */
  char *error; /* malloc'd */
  size_t alen;
  char *args; /* encoded list, alen bytes */
  char path[];
} start_req;

static int push_args_p(lua_State *L) {
  start_req *q = lua_touserdata(L, 1);
  mbL_decode(L, (const uint8_t *)q->args, q->alen);
  for (int a = 1; a <= q->nargs; a++) lua_rawgeti(L, 2, a);
  return q->nargs;
}

/* Pushes the script's arguments (decoding allocates: a protected call). */
static int push_args(lua_State *L, start_req *q) {
  lua_pushcfunction(L, push_args_p);
  lua_pushlightuserdata(L, q);
  int rc = lua_pcall(L, 1, q->nargs, 0);
  if (rc != LUA_OK) lua_pop(L, 1);
  return rc;
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
  mbL_state *S = state_new(q->R, q->svc, q->group_key);
  if (!S) {
    mb_service_free(q->svc);
    start_failed(q, NULL);
    return;
  }
  if (load_script(S->L, q->path) != LUA_OK) { /* the file changed since mb.load read it */
    start_failed(q, lua_tostring(S->L, -1));
    state_stop(S);
    return;
  }
  if (q->nargs && push_args(S->L, q) != LUA_OK) {
    start_failed(q, NULL);
    state_stop(S);
    return;
  }
  S->starting = 1;
  if (start_body(S, q->nargs)) {
    start_failed(q, NULL);
  } else if (S->starting == 2) { /* the body raised: task_end kept the message */
    q->failed = 1;
    q->error = S->start_error;
    S->start_error = NULL;
  }
  S->starting = 0;
  if (q->failed) state_stop(S); /* its body is off the stack: depth 0 */
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
  if (post(q->R, q->asker, POST_ALWAYS, load_done, q, NULL) != MB_OK) start_req_free(q);
}

typedef struct mbL_handle {
  mbL_runtime *R;
  size_t n;
  uint64_t ids[];
} mbL_handle;

/* The state of a core service, if it has one yet (any thread). */
static mbL_state *find_state(mbL_runtime *R, mb_service *svc) {
  pthread_mutex_lock(&R->lock);
  mbL_state *S = R->states;
  while (S && S->svc != svc) S = S->next;
  pthread_mutex_unlock(&R->lock);
  return S;
}

static void deferred_stop(void *arg) {
  mbL_state *S = arg;
  if (S->depth > 0) { /* still on the stack: try again later */
    post(S->R, S->svc, POST_HERE, deferred_stop, S, &S->retry);
    return;
  }
  state_stop(S);
}

/* A stop asked from another worker: done there, then the asker is told. */
typedef struct stop_req {
  mbL_runtime *R;
  mb_service *svc, *asker;
  mbL_waiter *w;
  mbL_retry retry;
} stop_req;

static void stop_task(void *arg) {
  stop_req *q = arg;
  mbL_state *S = find_state(q->R, q->svc);
  if (S && S->depth > 0) { /* on the stack: again later */
    post(q->R, q->svc, POST_ALWAYS | POST_HERE, stop_task, q, &q->retry);
    return;
  }
  if (S && !S->stopping) state_stop(S);
  post(q->R, q->asker, 0, stop_done, q->w, NULL);
  mb_service_unref(q->svc);
  mb_service_unref(q->asker);
  free(q);
}


static mbL_state *caller_state(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
  mbL_state *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return S;
}

/* Stops every instance of h, for `me`: those on me's worker at once (or,
 * when on the stack, as soon as their current work is done), the others on
 * their workers. Returns a waiter that counts those down, or NULL when
 * there are none. Raises when out of memory. */
static mbL_waiter *stop_instances(lua_State *L, mbL_handle *h, mbL_state *me) {
  mbL_waiter *w = NULL;
  if (!me || !me->svc) { /* a __gc after its service stopped */
    luaL_error(L, "mb: this service has stopped");
    return NULL;
  }
  for (size_t i = 0; i < h->n; i++) {
    mb_service *svc = h->ids[i] ? mb_service_find(core(me), h->ids[i]) : NULL;
    h->ids[i] = 0;
    if (!svc) continue;
    if (mb_service_worker(svc) != mb_service_worker(me->svc)) {
      stop_req *q = malloc(sizeof *q);
      if (!w) w = waiter_new(me);
      if (!q || !w) {
        free(q);
        mb_service_unref(svc);
        if (w && !w->status) waiter_free(w);
        luaL_error(L, "stop: out of memory");
        return NULL;
      }
      memset(q, 0, sizeof *q);
      q->R = h->R;
      q->svc = svc; /* keeps the reference */
      q->asker = me->svc;
      mb_service_ref(me->svc);
      q->w = w;
      w->status++;
      if (post(h->R, svc, POST_ALWAYS, stop_task, q, NULL) != MB_OK) {
        w->status--; /* reported: that instance goes on */
        mb_service_unref(q->asker);
        mb_service_unref(svc);
        free(q);
      }
      continue;
    }
    mbL_state *S = find_state(h->R, svc);
    mb_service_unref(svc);
    if (!S || S->stopping) continue;
    if (S->depth > 0 || S == me) {
      S->stopping = 1; /* new deliveries are dropped from now on */
      post(S->R, S->svc, POST_HERE, deferred_stop, S, &S->retry);
    } else {
      state_stop(S);
    }
  }
  return w;
}

/* handle:stop(): returns once every instance has stopped (one that is the
 * caller itself stops when the caller's current work is done). */
static int service_stop(lua_State *L) {
  mbL_handle *h = luaL_checkudata(L, 1, "mb.Service");
  mbL_waiter *w = stop_instances(L, h, caller_state(L));
  if (!w) return 0;
  lua_settop(L, 4);
  return wait_for(L, w, countdown_k);
}

static int load_failed_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (ctx) waiter_free((mbL_waiter *)ctx);
  lua_settop(L, 5); /* "failed: ..." */
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

/* The end of mb.load, the handle at 4: returned, or when an instance
 * failed to start, the others stopped and nil, "failed: <error>" (SPEC
 * section 2). Takes error (malloc'd). */
static int load_finish(lua_State *L, int failed, char *error) {
  lua_settop(L, 4);
  if (!failed) return 1;
  lua_pushfstring(L, "failed: %s", error ? error : "not enough memory");
  free(error);
  mbL_waiter *w = stop_instances(L, lua_touserdata(L, 4), state_of(L));
  if (w) return wait_for(L, w, load_failed_k);
  return load_failed_k(L, LUA_OK, 0);
}

static int load_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  int failed = w->failed;
  char *error = w->error;
  w->error = NULL;
  waiter_free(w);
  return load_finish(L, failed, error);
}

static int l_load(lua_State *L) {
  static const char *const keys[] = {"instances", "args", "name", NULL};
  mbL_state *S = state_of(L);
  mbL_runtime *R = S->R;
  const char *path = luaL_checkstring(L, 1), *name = path;
  lua_Integer instances = 1;
  lua_settop(L, 2);
  if (!lua_isnil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    check_keys(L, 2, keys, "mb.load");
    int nt = lua_getfield(L, 2, "name");
    if (nt != LUA_TNIL && (nt != LUA_TSTRING || lua_rawlen(L, -1) == 0))
      return luaL_error(L, "mb.load: option 'name' must be a non-empty string");
    if (nt == LUA_TSTRING) name = lua_tostring(L, -1);
    /* kept alive by the registry until the next load, whatever the table's
     * metamethods do meanwhile (the stack slots below are spoken for) */
    lua_setfield(L, LUA_REGISTRYINDEX, "mb.load name");
    instances = opt_positive(L, 2, "instances", "mb.load");
    if (!instances) instances = 1;
    if (instances > 4096) return luaL_error(L, "mb.load: at most 4096 instances");
    int t = lua_getfield(L, 2, "args");
    if (t != LUA_TNIL && t != LUA_TTABLE) return luaL_error(L, "mb.load: option 'args' must be a list");
  } else {
    lua_pushnil(L);
  }
  /* a missing file or a syntax error is the caller's: raise here */
  if (load_script(L, path) != LUA_OK)
    return luaL_error(L, "mb.load: %s", lua_tostring(L, -1));
  lua_pop(L, 1);
  /* args cross into the new states as encoded values */
  char err[700];
  S->vbuf.len = 0;
  int nargs = 0;
  if (!lua_isnil(L, 3)) {
    nargs = (int)lua_rawlen(L, 3);
    if (mbL_encode(L, 3, &S->vbuf, mb_runtime_max_message_size(core(S)), "args", err, sizeof err))
      return luaL_error(L, "mb.load: %s", err);
  }
  mbL_handle *h = lua_newuserdatauv(L, sizeof *h + (size_t)instances * sizeof(uint64_t), 0);
  h->R = R;
  h->n = 0;
  luaL_setmetatable(L, "mb.Service");
  uint64_t key = 0;
  if (instances > 1) {
    pthread_mutex_lock(&R->lock);
    key = ++R->next_load;
    pthread_mutex_unlock(&R->lock);
  }
  size_t plen = strlen(path);
  int failed = 0; /* an instance started here failed: start no more */
  char *error = NULL;
  /* taken first: without it an instance on another worker could not be
   * waited for (and must not start on this thread instead) */
  mbL_waiter *w = mb_runtime_workers(core(S)) > 1 ? waiter_new(S) : NULL;
  if (!w && mb_runtime_workers(core(S)) > 1) return luaL_error(L, "mb.load: out of memory");
  /* a copy of its own: an instance started inline may reuse S->vbuf */
  size_t alen = S->vbuf.len;
  char *encoded = nargs ? lua_newuserdatauv(L, alen, 0) : NULL;
  if (encoded) memcpy(encoded, S->vbuf.p, alen); /* at 5, above the handle at 4 */
  for (lua_Integer i = 0; i < instances && !failed; i++) {
    start_req *q = calloc(1, sizeof *q + plen + 1);
    char *args = nargs ? malloc(alen) : NULL;
    mb_service *svc = q && (args || !nargs) ? mb_service_new(core(S), name, -1) : NULL;
    if (!svc) {
      free(q);
      free(args);
      if (w && w->status) { /* some are starting elsewhere: they are stopped once started */
        failed = 1;
        break;
      }
      if (w) waiter_free(w);
      free(error);
      return luaL_error(L, "mb.load: out of memory");
    }
    q->R = R;
    q->svc = svc;
    mb_service_ref(svc); /* held by the request until it ran */
    q->group_key = key;
    q->nargs = nargs;
    q->alen = alen;
    q->args = args;
    if (args) memcpy(args, encoded, alen);
    memcpy(q->path, path, plen + 1);
    h->ids[h->n++] = mb_service_id(svc);
    /* on this worker it starts now, as a call; elsewhere on its own thread,
     * and mb.load returns once it has started there too */
    if (mb_service_worker(svc) == mb_service_worker(S->svc)) {
      start_instance(q);
      failed = q->failed;
      error = q->error;
      q->error = NULL;
      start_req_free(q);
      continue;
    }
    q->asker = S->svc;
    q->w = w;
    mb_service_ref(S->svc);
    w->status++;
    if (post(R, svc, POST_ALWAYS, start_task, q, NULL) != MB_OK) {
      w->status--; /* reported; this instance never starts */
      failed = 1;
      mb_service_unref(S->svc);
      mb_service_unref(svc);
      mb_service_free(svc); /* new, nothing of it runs anywhere yet */
      free(args);
      free(q);
    }
  }
  if (w && !w->status) {
    waiter_free(w);
    w = NULL;
  }
  if (!w) return load_finish(L, failed, error);
  if (failed && !w->failed) {
    w->failed = 1;
    w->error = error;
  } else {
    free(error);
  }
  return wait_for(L, w, load_k);
}

/* ---- the loop ------------------------------------------------------------------------- */

typedef struct stuck_sum {
  mb_runtime *rt;
  size_t in_flight, pending;
  luaL_Buffer *where;
  int n;
} stuck_sum;

static void add_stuck(void *ud, const char *name) {
  stuck_sum *s = ud;
  mb_stats st;
  if (mb_dest_stats(s->rt, name, &st) || !(st.in_flight || st.pending)) return;
  s->in_flight += st.in_flight;
  s->pending += st.pending;
  if (s->n++ < 8) {
    luaL_addstring(s->where, s->n > 1 ? ", '" : "'");
    luaL_addstring(s->where, name);
    luaL_addchar(s->where, '\'');
  } else if (s->n == 9) {
    luaL_addstring(s->where, ", ...");
  }
}

/* When deliveries are in flight or messages pending, pushes "stuck: N
 * deliveries in flight, M pending ... (at 'a', 'b'; ...)" and returns 1;
 * else pushes nothing and returns 0. */
static int push_stuck(lua_State *L, mbL_state *S) {
  luaL_Buffer where;
  stuck_sum s = {core(S), 0, 0, &where, 0};
  luaL_buffinit(L, &where);
  mb_dest_each(core(S), add_stuck, &s);
  luaL_pushresult(&where);
  if (!s.in_flight && !s.pending) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushfstring(L, "stuck: %d deliver%s in flight, %d pending, and nothing can move them on "
                     "(at %s; a listener waiting for room in its own full queue?)",
                  (int)s.in_flight, s.in_flight == 1 ? "y" : "ies", (int)s.pending,
                  lua_tostring(L, -1));
  lua_remove(L, -2);
  return 1;
}

static int l_run(lua_State *L) {
  static const char *const keys[] = {"timeout", NULL};
  mbL_state *S = state_of(L);
  double timeout = 0;
  if (S->current || mb_service_worker(S->svc) != 0)
    return luaL_error(L, "mb.run: called from a running script, handler or timer; the bus is "
                         "already running here (use mb.sleep or mb.spawn instead)");
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    check_keys(L, 1, keys, "mb.run");
    if (lua_getfield(L, 1, "timeout") != LUA_TNIL)
      timeout = check_seconds(L, -1, "mb.run", "option 'timeout'", SECS_NO_LIMIT);
  }
  int stopped = mb_runtime_run(core(S), timeout); /* HUGE_VAL: unbounded */
  lua_pushboolean(L, 0);
  if (stopped) return 1;
  /* idle: nothing can happen any more; every delivery here is a Lua
   * handler's, so one still in flight (or a message still pending) is
   * stuck for good */
  if (push_stuck(L, S)) return 2;
  lua_pushboolean(L, 1);
  return 1;
}

static int l_stop(lua_State *L) {
  mbL_state *S = state_of(L);
  mb_runtime_stop(core(S));
  if (S->R->on_stop) S->R->on_stop(S->R->on_stop_ud);
  return 0;
}

static void count_name(void *ud, const char *name) {
  (void)name;
  (*(int *)ud)++;
}

/* mb.setup{workers = N}: before any other call (a fresh runtime replaces
 * the one `require` made). */
static int l_setup(lua_State *L) {
  static const char *const keys[] = {"workers", NULL};
  mbL_state *S = state_of(L);
  mbL_runtime *R = S->R;
  luaL_checktype(L, 1, LUA_TTABLE);
  check_keys(L, 1, keys, "mb.setup");
  lua_Integer w = opt_positive(L, 1, "workers", "mb.setup");
  if (w > 256) return luaL_error(L, "mb.setup: at most 256 workers");
  if (!w || w == mb_runtime_workers(core(S))) return 0;
  mb_counts c;
  int ndest = 0;
  mb_runtime_counts(core(S), &c);
  mb_dest_each(core(S), count_name, &ndest);
  if (S->owns_L || S->current || ndest || c.services > 1 || c.listeners || c.requests ||
      S->ntimers || S->ntasks || S->nsubs)
    return luaL_error(L, "mb.setup: must come before any other use of the bus");
  mb_config cfg = {(int)w, 0};
  mb_runtime *rt = mb_runtime_new(&cfg);
  mb_service *svc = rt ? mb_service_new(rt, "main", 0) : NULL;
  if (!svc) {
    mb_runtime_free(rt);
    return luaL_error(L, "mb.setup: cannot start %d workers", (int)w);
  }
  mb_service_free(S->svc);
  mb_runtime_free(R->rt);
  R->rt = rt;
  S->svc = svc;
  return 0;
}

/* mb.worker() -> the index (from 0) of the worker running this service, and
 * the number of workers. */
static int l_worker(lua_State *L) {
  mbL_state *S = state_of(L);
  lua_pushinteger(L, mb_service_worker(S->svc));
  lua_pushinteger(L, mb_runtime_workers(core(S)));
  return 2;
}

static int l_counts(lua_State *L) {
  mbL_state *S = state_of(L);
  mb_counts c;
  mb_service_settle(S->svc);
  mb_runtime_counts(core(S), &c);
  lua_createtable(L, 0, 12);
#define F(name, v)                      \
  lua_pushinteger(L, (lua_Integer)(v)); \
  lua_setfield(L, -2, name)
  F("refs", S->nrefs - (size_t)S->npool);
  F("coroutines", S->ntasks);
  F("pooled", S->npool);
  F("waiters", S->nwaiters);
  F("timers", S->ntimers);
  F("listeners", S->nlisteners);
  F("subscriptions", S->nsubs);
  F("messages", c.messages);
  F("deliveries", c.deliveries);
  F("requests", c.requests);
  F("services", c.services);
#undef F
  return 1;
}

/* ---- the module ---------------------------------------------------------------------------- */

static const luaL_Reg funcs[] = {
    {"setup", l_setup},
    {"destination", l_destination},
    {"remove_destination", l_remove_destination},
    {"has_destination", l_has_destination},
    {"destinations", l_destinations},
    {"stats", l_stats},
    {"on", l_on},
    {"listen", l_listen},
    {"send", l_send},
    {"request", l_request},
    {"request_all", l_request_all},
    {"reply", l_reply},
    {"spawn", l_spawn},
    {"sleep", l_sleep},
    {"after", l_after},
    {"every", l_every},
    {"now", l_now},
    {"load", l_load},
    {"run", l_run},
    {"stop", l_stop},
    {"worker", l_worker},
    {"_counts", l_counts},
    {NULL, NULL},
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}

/* Builds the module table for S in L and leaves it on the stack. */
static void open_module(lua_State *L, mbL_state *S) {
  static const luaL_Reg listener_m[] = {{"close", listener_close_l}, {NULL, NULL}};
  static const luaL_Reg timer_m[] = {{"stop", timer_stop}, {NULL, NULL}};
  static const luaL_Reg sub_m[] = {{"close", sub_close_l}, {NULL, NULL}};
  static const luaL_Reg service_m[] = {{"stop", service_stop}, {NULL, NULL}};
  static const luaL_Reg json_f[] = {
      {"encode", l_json_encode}, {"decode", l_json_decode}, {NULL, NULL}};
  new_class(L, "mb.Listener", listener_m);
  new_class(L, "mb.Timer", timer_m);
  new_class(L, "mb.Subscription", sub_m);
  new_class(L, "mb.Service", service_m);
  lua_pushlightuserdata(L, S);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  S->groups = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_pushlightuserdata(L, S);
  mbL_push_keys(L);
  lua_pushcclosure(L, handler_body, 1 + MBL_NKEYS);
  S->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_newtable(L);
  lua_pushlightuserdata(L, S);
  mbL_push_keys(L);
  luaL_setfuncs(L, funcs, 1 + MBL_NKEYS);
  lua_newtable(L);
  lua_pushlightuserdata(L, S);
  luaL_setfuncs(L, json_f, 1);
  lua_setfield(L, -2, "json");
  lua_pushliteral(L, MB_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &MODULE_KEY);
  /* `mb` is a global in every state the runtime runs, and require finds it */
  lua_pushvalue(L, -1);
  lua_setglobal(L, "mb");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "mb");
  lua_pop(L, 1);
}

mbL_runtime *mbL_runtime_new(int workers) {
  mbL_runtime *R = calloc(1, sizeof *R);
  if (!R) return NULL;
  mb_config cfg = {workers, 0};
  R->rt = mb_runtime_new(&cfg);
  if (!R->rt) {
    free(R);
    return NULL;
  }
  pthread_mutex_init(&R->lock, NULL);
  return R;
}


/* From worker 0's thread: every state is closed on its own worker. */
void mbL_runtime_free(mbL_runtime *R) {
  pthread_mutex_lock(&R->lock);
  for (mbL_state *S = R->states; S; S = S->next)
    if (mb_service_worker(S->svc) != 0) /* skipped if it stops by itself first */
      post(R, S->svc, 0, deferred_stop, S, NULL); /* failed: stopped below */
  pthread_mutex_unlock(&R->lock);
  mb_runtime_join(R->rt); /* they run those stops, then exit */
  while (R->states) {
    mbL_state *S = R->states;
    if (S->owns_L)
      state_stop(S);
    else /* a plain program's: Lua memory, its Lua state is closing */
      state_release(S);
  }
  mb_runtime_free(R->rt);
  pthread_mutex_destroy(&R->lock);
  free(R);
}

mb_runtime *mbL_runtime_core(mbL_runtime *R) { return R->rt; }

void mbL_runtime_on_stop(mbL_runtime *R, void (*fn)(void *ud), void *ud) {
  R->on_stop = fn;
  R->on_stop_ud = ud;
}

int mbL_runtime_abort(mbL_runtime *R, const char *reason) {
  atomic_store(&R->abort_why, reason); /* first: a call starting now sees it */
  int n = 0;
  pthread_mutex_lock(&R->lock); /* no state is freed meanwhile */
  for (mbL_state *S = R->states; S; S = S->next) n += mbL_state_abort(S, reason);
  pthread_mutex_unlock(&R->lock);
  return n;
}

int mbL_runtime_busy(mbL_runtime *R) {
  int n = 0;
  pthread_mutex_lock(&R->lock);
  for (mbL_state *S = R->states; S; S = S->next) n += atomic_load(&S->active) > 0;
  pthread_mutex_unlock(&R->lock);
  return n;
}
int mbL_runtime_bodies(mbL_runtime *R) { return atomic_load(&R->bodies); }

int mbL_runtime_failures(const mbL_runtime *R) { return atomic_load(&((mbL_runtime *)R)->failures); }

static int push_argv_p(lua_State *L) {
  char **argv = lua_touserdata(L, 1);
  int argc = (int)lua_tointeger(L, 2);
  luaL_checkstack(L, argc, "too many arguments");
  for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  return argc;
}

int mbL_runtime_boot(mbL_runtime *R, const char *path, int argc, char **argv, mbL_end_fn done,
                     void *ud, char *err, size_t errlen) {
  mb_service *svc = mb_service_new(R->rt, path, 0);
  mbL_state *S = svc ? state_new(R, svc, 0) : NULL;
  if (!S) {
    if (svc) mb_service_free(svc);
    snprintf(err, errlen, "out of memory");
    return MBL_LOAD_FAILED;
  }
  int st = load_script(S->L, path);
  if (st != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(S->L, -1));
    state_stop(S);
    return st == LUA_ERRFILE ? MBL_LOAD_FILE : MBL_LOAD_FAILED;
  }
  /* the arguments allocate: a protected call */
  lua_pushcfunction(S->L, push_argv_p);
  lua_pushlightuserdata(S->L, argv);
  lua_pushinteger(S->L, argc);
  if (lua_pcall(S->L, 2, argc, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(S->L, -1));
    state_stop(S);
    return MBL_LOAD_FAILED;
  }
  S->on_end = done;
  S->end_ud = ud;
  if (start_body(S, argc)) {
    snprintf(err, errlen, "cannot start %s: out of memory", path);
    state_stop(S);
    return MBL_LOAD_FAILED;
  }
  return 0;
}

int mbL_runtime_load(mbL_runtime *R, const char *path, int argc, char **argv, char *err,
                     size_t errlen) {
  return mbL_runtime_boot(R, path, argc, argv, NULL, NULL, err, errlen);
}

/* The runtime of a plain Lua program goes when its Lua state closes. */
static int runtime_gc(lua_State *L) {
  mbL_runtime **p = lua_touserdata(L, 1);
  if (*p) mbL_runtime_free(*p);
  *p = NULL;
  return 0;
}

int luaopen_mb(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY) == LUA_TLIGHTUSERDATA) {
    lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &MODULE_KEY); /* also after package.loaded.mb = nil */
    return 1;
  }
  lua_pop(L, 1);
  /* the main thread: `require` may run in a coroutine, which can be
   * collected while the module lives (issue 12, item 11) */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lua_State *main = lua_tothread(L, -1);
  lua_pop(L, 1);
  mbL_runtime **p = lua_newuserdatauv(L, sizeof *p, 0);
  *p = NULL;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, runtime_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &runtime_gc); /* lives as long as L */
  /* from here on what fails (raises) leaves R to runtime_gc */
  if (!(*p = mbL_runtime_new(1))) return luaL_error(L, "mb: out of memory");
  mbL_runtime *R = *p;
  /* S is Lua memory, anchored until L closes: a finalizer that runs after
   * runtime_gc still finds it, and that it stopped (S->svc is NULL) */
  mbL_state *S = lua_newuserdatauv(L, sizeof *S, 0);
  memset(S, 0, sizeof *S);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &MAIN_STATE_KEY);
  S->R = R;
  S->L = main;
  if (!(S->svc = mb_service_new(R->rt, "main", 0))) return luaL_error(L, "mb: out of memory");
  state_link(R, S);
  lua_pop(L, 1); /* p */
  open_module(L, S);
  return 1;
}
