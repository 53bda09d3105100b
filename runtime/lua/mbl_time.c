/*
 * mbl_time.c — time in the `mb` module: the one check of a number of
 * seconds (mbL_check_seconds), timers (mb.after, mb.every), mb.sleep,
 * mb.spawn and mb.now.
 *
 * Owns: the timer handles (userdata "mb.Timer", one release path,
 * timer_release). Uses tasks and waiters (mbl_task.c) and the service's
 * loop. Tests: the busted specs in spec/ (timers, sleep, seconds).
 */
#include "mbl_private.h"

#include <math.h>
#include <time.h>

/* ---- numbers of seconds ------------------------------------------------------ */

/* The number of seconds at idx, for fn's `what` (SPEC section 7, "Numbers
 * of seconds"): raises for what is not a number, NaN, a negative number,
 * zero unless SECS_ZERO, and infinity unless SECS_NO_LIMIT (then returns
 * HUGE_VAL: callers start no timer). The one check every sleep, timer and
 * timeout goes through, so that no NaN or infinity reaches libev. */
double mbL_check_seconds(lua_State *L, int idx, const char *fn, const char *what,
                            unsigned flags) {
  int isnum = 0;
  lua_Number s = lua_tonumberx(L, idx, &isnum);
  if (isnum && s == s && s < HUGE_VAL && (s > 0 || (s == 0 && (flags & SECS_ZERO))))
    return s;
  if (isnum && s == HUGE_VAL && (flags & SECS_NO_LIMIT)) return HUGE_VAL;
  char got[64];
  if (lua_isnone(L, idx)) /* "a no value" */
    snprintf(got, sizeof got, "given");
  else if (!isnum)
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

/* ---- timers, spawn ------------------------------------------------------------ */

static void timer_release(mbL_timer *tm, lua_State *L) {
  mbL_state *S = tm->S;
  if (!S) return; /* its state went away first (mbL_state_release) */
  ev_timer_stop(mb_service_loop(S->svc), &tm->w);
  if (tm->call) { /* a call still running outlives its timer */
    tm->call->timer = NULL;
    tm->call = NULL;
  }
  if (tm->self_ref == LUA_NOREF) return;
  mb_runtime_hold(core(S), -1);
  if (tm->prev)
    tm->prev->next = tm->next;
  else
    S->timers = tm->next;
  if (tm->next) tm->next->prev = tm->prev;
  S->ntimers--;
  atomic_fetch_sub(&S->R->timers, 1);
  unref(S, L, &tm->fn_ref);
  unref(S, L, &tm->self_ref);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  mbL_timer *tm = w->data;
  mbL_state *S = tm->S;
  mb_runtime *rt = core(S);
  /* mb.every: no second call while one still runs (it waits in a request,
   * say): that tick is skipped, so a slow callback cannot pile up calls */
  if (tm->call) return;
  /* held for the whole call: the callback may stop its own timer and go on */
  mb_runtime_hold(rt, 1);
  mbL_task *t = mbL_task_new(S, T_TIMER);
  if (t) {
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, tm->fn_ref);
    if (ev_is_active(&tm->w)) { /* a repeating timer's */
      t->timer = tm;
      tm->call = t;
    }
  } else {
    mbL_failed(S->R, "mb: timer callback not run: out of memory\n");
  }
  if (!ev_is_active(&tm->w)) timer_release(tm, S->L); /* a one-shot timer is done */
  if (t) mbL_task_run(t, 0);
  mb_runtime_hold(rt, -1);
}

static int timer_start(lua_State *L, int repeat) {
  mbL_state *S = state_of(L);
  double s = mbL_check_seconds(L, 1, repeat ? "mb.every" : "mb.after", "seconds",
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
  atomic_fetch_add(&S->R->timers, 1);
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
  mbL_task *t = mbL_task_new(S, T_SPAWN);
  if (!t) return luaL_error(L, "mb.spawn: out of memory");
  if (mbL_task_take(t, L, n)) {
    mbL_task_free(t, 1);
    return luaL_error(L, "mb.spawn: out of memory (no room for %d arguments)", n - 1);
  }
  mbL_task_run(t, n - 1);
  return 0;
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  mbL_waiter_free((mbL_waiter *)ctx);
  return 0;
}

static void sleep_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  mbL_waiter *w = t->data;
  mb_runtime *rt = core(w->S);
  mbL_waiter_wake(w); /* posts the resume first: the bus never looks idle between */
  mb_runtime_hold(rt, -1);
}

static int l_sleep(lua_State *L) {
  mbL_state *S = state_of(L);
  double s = mbL_check_seconds(L, 1, "mb.sleep", "seconds", SECS_ZERO);
  mbL_waiter *w = mbL_waiter_new(S);
  if (!w) return luaL_error(L, "mb.sleep: out of memory");
  ev_timer_init(&w->timer, sleep_cb, s, 0);
  w->timer.data = w;
  /* the loop's clock may be stale when it has not run for a while */
  ev_now_update(mb_service_loop(S->svc));
  ev_timer_start(mb_service_loop(S->svc), &w->timer);
  mb_runtime_hold(core(S), 1);
  return mbL_wait_for(L, w, sleep_k);
}

/* Monotonic seconds: immune to changes of the wall clock. */
static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}


const luaL_Reg mbL_time_funcs[] = {
    {"spawn", l_spawn}, {"sleep", l_sleep}, {"after", l_after},
    {"every", l_every}, {"now", l_now},     {NULL, NULL},
};

const luaL_Reg mbL_timer_methods[] = {{"stop", timer_stop}, {NULL, NULL}};
