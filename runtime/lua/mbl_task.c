/*
 * mbl_task.c — the coroutines every script body, handler, timer and event
 * callback runs in (tasks), and what goes with running them: the one resume
 * (mbL_task_run: abort hooks, depth, calls), the one end (task_end:
 * deliveries finished, the error's text through __tostring, the traceback,
 * a failed coroutine's to-be-closed variables closed, failures reported and
 * counted), the one post (mbL_post: what happens when posting fails),
 * aborting calls that do not return, output, and waiting (by yielding, or
 * by driving the loop where no coroutine of ours can yield).
 *
 * Owns: per state its tasks (live and pooled) and waiters. Uses the core's
 * services and the loop. Tests: the busted specs in spec/ (failures,
 * aborts, waits), spec/failalloc for the out-of-memory paths.
 */
#include "mbl_private.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <time.h>

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
mbL_task *mbL_task_new(mbL_state *S, int kind) {
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
  if (kind == T_HANDLER) S->nhandlers++;
  t->waiting = 0;
  t->d = NULL;
  t->listener = NULL;
  t->timer = NULL;
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

int mbL_task_take(mbL_task *t, lua_State *from, int n) {
  if (!lua_checkstack(t->co, n)) return -1; /* lua_xmove itself makes no room */
  lua_xmove(from, t->co, n);
  return 0;
}

void mbL_task_free(mbL_task *t, int reusable) {
  mbL_state *S = t->S;
  if (t->kind == T_SCRIPT) atomic_fetch_sub(&S->R->bodies, 1);
  /* a reload's old instance closes once its last handler has ended */
  if (t->kind == T_HANDLER && --S->nhandlers == 0 && S->drained && !S->stopping) S->drained(S);
  if (t->timer) { /* mb.every's next tick may call again */
    t->timer->call = NULL;
    t->timer = NULL;
  }
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


/* ---- output: print and failure reports ------------------------------------- */

void mbL_runtime_output(mbL_runtime *R, mbL_output_fn fn, void *ud) {
  R->out = fn;
  R->out_ud = ud;
}

void mbL_output(mbL_runtime *R, int stream, const char *text, size_t len) {
  if (R->out) {
    R->out(R->out_ud, stream, text, len);
    return;
  }
  FILE *f = stream == 2 ? stderr : stdout;
  fwrite(text, 1, len, f);
  fflush(f);
}

static void vreport(mbL_runtime *R, const char *fmt, va_list ap) {
  char buf[4096];
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof buf) { /* cut: still one whole line */
    memcpy(buf + sizeof buf - 5, "...\n", 5);
    n = (int)sizeof buf - 1;
  }
  mbL_output(R, 2, buf, (size_t)n);
}

/* Writes a report of something that failed, as one line on stream 2. */
void mbL_report(mbL_runtime *R, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(R, fmt, ap);
  va_end(ap);
}

/* A failure that no delivery carries: reported and counted, in one place. */
void mbL_failed(mbL_runtime *R, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(R, fmt, ap);
  va_end(ap);
  atomic_fetch_add(&R->failures, 1);
}

/* ---- posting: the one way the binding posts a task -------------------------- */

static void retry_cb(struct ev_loop *loop, ev_timer *tm, int revents) {
  (void)loop;
  (void)revents;
  mbL_retry *r = tm->data;
  mb_runtime_hold(r->rt, -1);
  r->fn(r->arg);
}

/* Posts fn(arg) to svc's worker. Posting fails only when a task queue
 * cannot grow, for want of memory; then the work is not lost:
 *  - here (POST_HERE), fn runs at once (POST_NOW), or from `later`'s timer
 *    on this loop in 1 ms (holding the bus busy meanwhile);
 *  - on another worker's thread, the post is tried again while that worker
 *    drains its queue (draining needs no memory), for up to 2 s.
 * Returns MB_OK, or MB_ENOMEM (reported on stderr) when nothing worked: the
 * caller then undoes what the task would have finished. fn never runs on
 * the wrong worker's thread. */
int mbL_post(mbL_runtime *R, mb_service *svc, int flags, mb_task_fn fn, void *arg,
                mbL_retry *later) {
  for (int tries = 0;; tries++) {
    int rc = flags & POST_ALWAYS ? mb_service_post_always(svc, fn, arg)
                                 : mb_service_post(svc, fn, arg);
    if (rc == MB_OK) return MB_OK;
    if (flags & POST_HERE) break;
    if (tries == 2000) {
      mbL_failed(R, "mb: out of memory: a task for service %s could not be queued\n",
                 mb_service_name(svc));
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
  mbL_failed(R, "mb: out of memory: a task for service %s could not be queued\n",
             mb_service_name(svc));
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
 * A handler's coroutine starts in mb's own C function (mbL_handler_body): its
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

/* What a failed call left on its state's main thread (task_unwind): the
 * stack's height before, whether there was room, the error's text and the
 * traceback (NULL when there was no room). */
typedef struct unwound {
  int top, room;
  const char *msg, *tb;
} unwound;

/* A task's coroutine returned (status LUA_OK) or raised (then u is what
 * task_unwind made of it). This is the one place where every task ends:
 * deliveries are finished, failures reported and counted. */
static void task_end(mbL_task *t, int status, const unwound *u) {
  mbL_state *S = t->S;
  lua_State *co = t->co, *L = S->L;
  mbL_end_fn end = t->kind == T_SCRIPT ? S->on_end : NULL;
  char what[300], said[1024];
  said[0] = 0; /* not "" in the declaration: that would clear all 1024 bytes per task */
  int code = 0;
  if (end) S->on_end = NULL; /* once */
  /* mb.services() counts; read by other threads */
  if (t->kind == T_HANDLER) atomic_fetch_add_explicit(&S->deliveries, 1, memory_order_relaxed);
  if (status != LUA_OK && !(t->kind == T_SCRIPT && S->starting))
    atomic_fetch_add_explicit(&S->failures, 1, memory_order_relaxed);
  if (status == LUA_OK) {
    if (t->d) mb_delivery_done_soon(t->d, MB_OK, NULL);
    /* mbrun's boot script returns nothing, or an exit code and why */
    if (end && lua_gettop(co) >= 1 && lua_isinteger(co, 1)) {
      code = (int)lua_tointeger(co, 1);
      if (lua_type(co, 2) == LUA_TSTRING) snprintf(said, sizeof said, "%s", lua_tostring(co, 2));
    }
    mbL_task_free(t, 1);
    if (end) end(S->end_ud, code, said);
    return;
  }
  const char *msg = u->msg, *tb = u->tb;
  task_what(t, what, sizeof what);
  if (t->kind == T_SCRIPT && S->starting) {
    /* mb.load tells its caller instead; but when the runtime aborts what
     * runs (the grace period is over), that caller may never run again (on
     * another worker, whose loop is over): said and counted here too */
    if (atomic_load(&S->R->abort_why)) {
      mbL_report(S->R, "mb: %s failed: %s%s%s\n", what, msg, tb ? "\n" : "", tb ? tb : "");
      atomic_fetch_add(&S->R->failures, 1);
    }
    free(S->start_error);
    S->start_error = strdup(msg); /* NULL when out of memory */
    S->starting = 2;
  } else {
    mbL_report(S->R, "mb: %s failed: %s%s%s\n", what, msg, tb ? "\n" : "", tb ? tb : "");
    if (t->d) {
      char err[1024];
      snprintf(err, sizeof err, "failed: %s", msg);
      mb_delivery_done(t->d, MB_EFAILED, err);
    } else {
      atomic_fetch_add(&S->R->failures, 1);
    }
  }
  lua_settop(L, u->top);
  mbL_task_free(t, 0);
  if (end) end(S->end_ud, 1, NULL);
}

static void task_again(void *arg) { mbL_task_run(arg, 0); }

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

/* An interrupt (mbL_state_interrupt): one error, where the code runs now,
 * that a pcall may catch, as lua.c's Ctrl-C. */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  mbL_state *S = tl_running;
  const char *why = S ? atomic_exchange(&S->interrupt_why, NULL) : NULL;
  if (why) luaL_error(L, "%s", why);
}

/* ABORT_SIGNAL, on the thread to abort: only atomics and lua_sethook. */
static void abort_signal(int sig) {
  (void)sig;
  int saved = errno;
  mbL_state *S = tl_running;
  if (S && abort_reason(S)) {
    lua_State *co = atomic_load(&S->running_co);
    if (co) arm_abort(co);
  } else if (S && atomic_load(&S->interrupt_why)) {
    lua_State *co = atomic_load(&S->running_co);
    if (co) lua_sethook(co, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
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
int mbL_state_abort(mbL_state *S, const char *reason) {
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

/* ---- the cpu limit (mb.load's `cpu`) -------------------------------------------------
 *
 * A service with a limit runs its calls under a count hook that looks at
 * the thread's CPU time every CPU_HOOK_COUNT instructions; past the limit it
 * aborts the call as mbL_state_abort does (the error: "cpu limit (N s)").
 * Coroutines the service's code creates get the hook too (coroutine.create
 * and coroutine.wrap are wrapped), so that a loop in one of them is
 * stopped as well. */

#define CPU_HOOK_COUNT 20000

static double thread_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void cpu_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  mbL_state *S = tl_running;
  if (!S || !(S->cpu_limit > 0) || S->depth == 0) return;
  if (thread_cpu() - S->cpu_start <= S->cpu_limit) return;
  mbL_state_abort(S, S->cpu_why); /* arms the abort hook where the call runs */
  lua_pushstring(L, S->cpu_why);  /* and this coroutine fails now */
  lua_error(L);
}

static void cpu_watch(lua_State *co) { lua_sethook(co, cpu_hook, LUA_MASKCOUNT, CPU_HOOK_COUNT); }

/* coroutine.create / coroutine.wrap of a service with a cpu limit:
 * upvalue 1 the library's function; the new coroutine is watched. */
static int cpu_create(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  if (lua_type(L, 1) == LUA_TTHREAD) cpu_watch(lua_tothread(L, 1));
  return lua_gettop(L);
}

/* What coroutine.wrap returns, for a watched coroutine (upvalue 1): resumes
 * it, and passes its error on with the caller's position, as Lua's does. */
static int wrap_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int n = lua_gettop(L), nres;
  if (!lua_checkstack(co, n)) return luaL_error(L, "too many arguments to resume");
  lua_xmove(L, co, n);
  int st = lua_resume(co, L, n, &nres);
  if (st == LUA_OK || st == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) return luaL_error(L, "too many results to resume");
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1); /* the error */
  lua_resetthread(co); /* its to-be-closed variables are closed */
  mbL_state *S = tl_running;
  if (lua_type(L, -1) == LUA_TSTRING && !(S && S->cpu_limit > 0 &&
                                          strcmp(lua_tostring(L, -1), S->cpu_why) == 0)) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

static int cpu_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  cpu_watch(co);
  lua_pushcclosure(L, wrap_resume, 1);
  return 1;
}

void mbL_state_cpu_limit(mbL_state *S, double secs) {
  S->cpu_limit = secs > 0 ? secs : 0;
  if (!(secs > 0)) return;
  snprintf(S->cpu_why, sizeof S->cpu_why, "cpu limit (%g s)", secs);
  lua_State *L = S->L;
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    lua_getfield(L, -1, "create");
    lua_pushcclosure(L, cpu_create, 1);
    lua_setfield(L, -2, "create");
    lua_pushcfunction(L, cpu_wrap);
    lua_setfield(L, -2, "wrap");
  }
  lua_pop(L, 1);
}

int mbL_state_interrupt(mbL_state *S, const char *why) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  if (!atomic_load(&S->active)) return 0;
  pthread_once(&once, abort_signal_install);
  atomic_store(&S->interrupt_why, why);
  /* The call may have ended meanwhile. Its end stores active, then looks
   * at interrupt_why; this stores interrupt_why, then loads active (all
   * seq_cst): one of the two sees the other. If this one does, it takes
   * the interrupt back unless the end took it first (and said so). */
  if (!atomic_load(&S->active)) return atomic_exchange(&S->interrupt_why, NULL) == NULL;
  mb_service_signal(S->svc, ABORT_SIGNAL);
  return 1;
}

/* The end of S's outermost call found an interrupt not raised: it landed
 * while the code ran C on its way into a wait (a hook set in C fires only
 * when Lua code runs again), or just as it ended. A call that ended needs
 * nothing; code that waits is told to whoever interrupted (the REPL then
 * stops waiting for the line, as when the Ctrl-C finds the line waiting). */
static void interrupt_missed(mbL_state *S, int waits) {
  if (!atomic_exchange(&S->interrupt_why, NULL)) return; /* taken back */
  if (waits && S->R->on_missed) S->R->on_missed(S->R->on_missed_ud);
}

/* How deep a state's calls must be nested for a stack overflow to be
 * said to come from that nesting. */
#define NESTED_HINT 16

/* Lua code that a failed call still runs — its error object's __tostring,
 * its pending to-be-closed variables' __close — runs as part of that call
 * (called with the call still counted in S->depth and tl_running == S):
 * an abort (mbrun's grace period) reaches it, and so does the cpu limit;
 * a call the cpu limit aborted has its clean-up watched with a fresh
 * budget of the same size, so that its __close still runs but cannot hang
 * the worker. th is the thread the code runs on; the abort signal finds
 * it as running_co. */
typedef struct watch_save {
  lua_State *th;
  lua_Hook hook;
  int mask, count;
  uint_fast64_t abort_call;
  double cpu_start;
} watch_save;

static void watch_begin(mbL_state *S, lua_State *th, watch_save *w) {
  w->th = th;
  w->hook = lua_gethook(th);
  w->mask = lua_gethookmask(th);
  w->count = lua_gethookcount(th);
  w->abort_call = atomic_load(&S->abort_call);
  w->cpu_start = S->cpu_start;
  if (S->cpu_limit > 0 && w->abort_call && atomic_load(&S->abort_why) == S->cpu_why) {
    atomic_store(&S->abort_call, 0); /* the cpu limit's abort: a fresh budget */
    S->cpu_start = thread_cpu();
  }
  atomic_store_explicit(&S->running_co, th, memory_order_relaxed);
  atomic_signal_fence(memory_order_seq_cst);
  if (abort_reason(S))
    arm_abort(th);
  else if (S->cpu_limit > 0)
    cpu_watch(th);
  else
    lua_sethook(th, NULL, 0, 0);
}

static void watch_end(mbL_state *S, lua_State *running, watch_save *w) {
  atomic_store_explicit(&S->running_co, running, memory_order_relaxed);
  atomic_signal_fence(memory_order_seq_cst);
  lua_sethook(w->th, w->hook, w->mask, w->count);
  S->cpu_start = w->cpu_start;
  /* the call's own abort goes on where it returns to (unless a newer one came) */
  uint_fast64_t none = 0;
  if (w->abort_call) atomic_compare_exchange_strong(&S->abort_call, &none, w->abort_call);
}

/* error_text of the error object at the top of L, as part of the call
 * (its __tostring watched: see watch_begin); co is the failed coroutine. */
static const char *watched_text(mbL_state *S, lua_State *L, lua_State *co) {
  watch_save w;
  watch_begin(S, L, &w);
  const char *text = error_text(L, co);
  watch_end(S, co, &w);
  return text;
}

/* A task's coroutine raised: pushes onto L (the state's main thread) the
 * error object, its text and the coroutine's traceback, then closes the
 * coroutine's pending to-be-closed variables (lua_resetthread: Debian's Lua
 * is 5.4.4), as an unwinding call would, before anyone learns of the
 * failure. Called from mbL_task_run while the call still runs (see
 * watch_begin), with prev the task current before it (current again for
 * what this runs: t's coroutine is dead). Fills u for task_end. */
static void task_unwind(mbL_task *t, mbL_task *prev, unwound *u) {
  mbL_state *S = t->S;
  lua_State *co = t->co, *L = S->L;
  watch_save w;
  S->current = prev;
  u->top = lua_gettop(L);
  u->room = lua_checkstack(L, 10) && lua_checkstack(co, 2);
  u->msg = "(no memory left to tell the error)";
  u->tb = NULL;
  if (u->room) {
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1); /* the error object, at top + 1 */
    u->msg = watched_text(S, L, co);
    push_traceback(L, t);
    u->tb = lua_tostring(L, -1);
  }
  /* the error object is then another one if a __close raised */
  watch_begin(S, co, &w);
  int closed = lua_resetthread(co);
  watch_end(S, co, &w);
  if (closed != LUA_OK && u->room) {
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1);
    if (!lua_rawequal(L, -1, u->top + 1)) {
      char what[300];
      task_what(t, what, sizeof what);
      mbL_report(S->R, "mb: %s: closing a to-be-closed variable raised: %s\n", what,
                 watched_text(S, L, co));
    }
  }
  /* Lua's "C stack overflow" names no cause: here it is calls of this
   * state nested inside each other */
  if (u->room && S->depth >= NESTED_HINT && strstr(u->msg, "C stack overflow"))
    u->msg = lua_pushfstring(L, "%s (calls nested %d deep in this service: a listener of a "
                                "synchronous destination that sends to it again, or waits where "
                                "no coroutine can yield, one inside another?)",
                             u->msg, S->depth);
  S->current = t;
}

/* The atomics of a run, and why each is as strong as it is (two locked
 * instructions an outermost run, one a nested run, instead of six):
 * - calls is written only here, on S's thread: a plain increment. Other
 *   threads read it (mbL_state_abort) after a load of active that sees
 *   this run's store, which is sequenced after the increment.
 * - running_co is read only on S's thread: by the abort signal's handler
 *   (ordered by the signal fences) and by mbL_state_abort from inside the
 *   call (tl_running == S): relaxed.
 * - active at the start stays sequentially consistent: mbL_runtime_abort
 *   stores R->abort_why, then loads active; this stores active, then loads
 *   R->abort_why (abort_reason). Either the aborter sees the call or the
 *   call sees the abort; that needs both sides seq_cst (Dekker).
 * - active at the end of a nested call is a release store: whoever reads
 *   it sees the run's outcome counted (task_end); missing a call that is
 *   ending is harmless to an abort.
 * - active at the end of the outermost call stays seq_cst, as does the
 *   load of interrupt_why after it: against mbL_state_interrupt, which
 *   stores interrupt_why and then loads active (Dekker again), so an
 *   interrupt that did not reach the code is never silently left behind
 *   (interrupt_missed). */
void mbL_task_run(mbL_task *t, int nargs) {
  mbL_state *S = t->S;
  mbL_task *prev = S->current;
  mbL_state *outer = tl_running;
  /* the thread running S's code now, if any: prev's coroutine, or, when a
   * failed call's clean-up runs (task_unwind), the thread that runs it */
  lua_State *prev_co = atomic_load_explicit(&S->running_co, memory_order_relaxed);
  int nres;
  S->current = t;
  if (S->depth++ == 0)
    atomic_store_explicit(&S->calls, atomic_load_explicit(&S->calls, memory_order_relaxed) + 1,
                          memory_order_relaxed);
  atomic_store(&S->active, S->depth);
  atomic_store_explicit(&S->running_co, t->co, memory_order_relaxed);
  atomic_signal_fence(memory_order_seq_cst); /* running_co, then tl_running */
  tl_running = S; /* after running_co: the signal's handler reads both */
  atomic_signal_fence(memory_order_seq_cst);
  if (abort_reason(S))
    arm_abort(t->co); /* mbL_runtime_abort: at once */
  else if (S->cpu_limit > 0) {
    if (S->depth == 1) S->cpu_start = thread_cpu(); /* a stretch starts */
    cpu_watch(t->co);
  }
  int st = lua_resume(t->co, prev_co ? prev_co : S->L, nargs, &nres);
  unwound u;
  if (st != LUA_OK && st != LUA_YIELD) task_unwind(t, prev, &u); /* still part of the call */
  atomic_store_explicit(&S->running_co, prev_co, memory_order_relaxed);
  tl_running = outer;
  atomic_signal_fence(memory_order_seq_cst);
  lua_Hook h = lua_gethook(t->co);
  if (h == abort_hook || h == cpu_hook || h == interrupt_hook)
    lua_sethook(t->co, NULL, 0, 0); /* pooled for reuse */
  S->depth--;
  S->current = prev;
  if (st == LUA_YIELD) {
    lua_pop(t->co, nres);
    /* a bare coroutine.yield(): let the others run, then go on */
    if (!t->waiting) mbL_post(S->R, S->svc, POST_HERE | POST_NOW, task_again, t, NULL);
  } else {
    task_end(t, st, &u);
  }
  /* after task_end: its outcome is counted */
  if (S->depth > 0) {
    atomic_store_explicit(&S->active, S->depth, memory_order_release);
  } else {
    atomic_store(&S->active, 0);
    if (atomic_load(&S->interrupt_why)) interrupt_missed(S, st == LUA_YIELD);
  }
  /* an abort goes on in the call this one returns to */
  if (outer && abort_reason(outer)) {
    lua_State *co = atomic_load(&outer->running_co);
    if (co) arm_abort(co);
  }
}

/* ---- waiting ---------------------------------------------------------------- */

mbL_waiter *mbL_waiter_new(mbL_state *S) {
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

void mbL_waiter_free(mbL_waiter *w) {
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
  if (w->ans != &w->one) free(w->ans);
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
  mbL_task_run(t, 0);
}

void mbL_waiter_wake(mbL_waiter *w) {
  w->done = 1;
  /* on S's worker: send, request and stop completions run there */
  if (w->suspended) mbL_post(w->S->R, w->S->svc, POST_HERE | POST_NOW, waiter_resume, w, NULL);
}

/* Waits until w is done: yields when running in one of our coroutines,
 * otherwise runs the loop. Then finishes with k. */
int mbL_wait_for(lua_State *L, mbL_waiter *w, lua_KFunction k) {
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
        mbL_waiter_free(w);
        if (why) return luaL_error(L, "%s", why);
        return luaL_error(L, "mb: this wait can never end (nothing left that could end it)");
      }
    }
  }
  return k(L, LUA_OK, (lua_KContext)w);
}
