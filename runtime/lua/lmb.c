/*
 * lmb.c — the `mb` Lua module's table (luaopen_mb, mb.setup, mb.run,
 * mb.stop, mb.worker, mb._counts) and the runtime's face for mbrun
 * (lmb.h). The module's other functions live by concept beside it:
 * mbl_task.c (coroutines, resume, post, waiting), mbl_time.c, mbl_dest.c
 * (destinations, events), mbl_msg.c (send, request, reply, listen),
 * mbl_service.c (services, mb.load), mbl_reload.c (handle:reload());
 * mbl_private.h is what they share.
 *
 * Owns: per runtime an mbL_runtime (the core runtime and the list of
 * states). Registry refs are taken and released through ref()/unref() so
 * that mb._counts() can tell tests what is left. Every call into Lua from
 * the loop is a lua_resume, so a Lua error never reaches ev_run.
 *
 * Tests: the busted specs in spec/, spec/cli/mbrun_spec.lua for mbrun.
 */
#include "mbl_private.h"

static const char MODULE_KEY = 'M';
static const char MAIN_STATE_KEY = 'P'; /* a plain program's mbL_state */

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

/* When deliveries are in flight, messages pending or requests waiting,
 * pushes "stuck: N deliveries in flight, M pending ... (at 'a', 'b'; ...)"
 * and returns 1; else pushes nothing and returns 0. Called once the bus is
 * idle: a request still open then has no time limit (one with a timer
 * keeps the bus busy), and nothing is left that could answer it. */
static int push_stuck(lua_State *L, mbL_state *S) {
  luaL_Buffer where;
  stuck_sum s = {core(S), 0, 0, &where, 0};
  mb_counts c;
  mb_runtime_counts(core(S), &c);
  luaL_buffinit(L, &where);
  mb_dest_each(core(S), add_stuck, &s);
  luaL_pushresult(&where);
  if (!s.in_flight && !s.pending && !c.unlimited) {
    lua_pop(L, 1);
    return 0;
  }
  if (c.unlimited)
    lua_pushfstring(L, ", %d request%s waiting with no time limit", (int)c.unlimited,
                    c.unlimited == 1 ? "" : "s");
  else
    lua_pushliteral(L, "");
  lua_pushfstring(L, "stuck: %d deliver%s in flight, %d pending%s, and nothing can move them on "
                     "(%s%s%s%s?)",
                  (int)s.in_flight, s.in_flight == 1 ? "y" : "ies", (int)s.pending,
                  lua_tostring(L, -1), s.n ? "at " : "", lua_tostring(L, -2), s.n ? "; " : "",
                  c.unlimited ? "a request with timeout = math.huge that nothing will answer"
                             : "a listener waiting for room in its own full queue");
  lua_replace(L, -3);
  lua_pop(L, 1);
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
    mbL_check_keys(L, 1, keys, "mb.run");
    if (lua_getfield(L, 1, "timeout") != LUA_TNIL)
      timeout = mbL_check_seconds(L, -1, "mb.run", "option 'timeout'", SECS_NO_LIMIT);
  }
  int stopped = mb_runtime_run(core(S), timeout); /* HUGE_VAL: unbounded */
  mbL_share_sweep(S, L, 1); /* what it sent with share = true and is done with */
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

/* mb.setup{workers = N, max_message_size = BYTES, cluster = {...}}: workers
 * and max_message_size before any other call (a fresh runtime replaces the
 * one `require` made); cluster (SPEC §6) from worker 0, before any cluster
 * destination, once. */
static int l_setup(lua_State *L) {
  static const char *const keys[] = {"workers", "max_message_size", "cluster", NULL};
  mbL_state *S = state_of(L);
  mbL_runtime *R = S->R;
  luaL_checktype(L, 1, LUA_TTABLE);
  mbL_check_keys(L, 1, keys, "mb.setup");
  lua_Integer w = mbL_opt_positive(L, 1, "workers", "mb.setup");
  int ty = lua_getfield(L, 1, "cluster");
  if (ty != LUA_TNIL && ty != LUA_TTABLE)
    return luaL_error(L, "mb.setup: option 'cluster' must be a table {url = ..., node = ...}");
  lua_pop(L, 1);
  if (ty == LUA_TTABLE && mb_service_worker(S->svc) != 0)
    return luaL_error(L, "mb.setup: cluster: only from a service on worker 0");
  if (w > 256) return luaL_error(L, "mb.setup: at most 256 workers");
  lua_Integer max = mbL_opt_positive(L, 1, "max_message_size", "mb.setup");
  if (max && (max < MB_MESSAGE_SIZE_MIN || max > MB_MESSAGE_SIZE_MAX))
    return luaL_error(L, "mb.setup: option 'max_message_size' must be a number of bytes from %d "
                         "(1 KiB) to %d (1 GiB), not %I",
                      MB_MESSAGE_SIZE_MIN, MB_MESSAGE_SIZE_MAX, max);
  if (!w) w = mb_runtime_workers(core(S));
  if (!max) max = (lua_Integer)mb_runtime_max_message_size(core(S));
  if (w != mb_runtime_workers(core(S)) || (size_t)max != mb_runtime_max_message_size(core(S))) {
    if (S->owns_L) /* a service's state: mbrun's, or one mb.load started */
      return luaL_error(L, "mb.setup: only a plain Lua program sets up the bus, before any other "
                           "use of it; under mbrun, -w and --max-message-size (or the "
                           "configuration's workers and max_message_size) decide");
    mb_counts c;
    int ndest = 0;
    mb_runtime_counts(core(S), &c);
    mb_dest_each(core(S), count_name, &ndest);
    if (S->current || ndest || c.services > 1 || c.listeners || c.requests || S->ntimers ||
        S->ntasks || S->nsubs || R->cluster)
      return luaL_error(L, "mb.setup: must come before any other use of the bus");
    mb_config cfg = {(int)w, (size_t)max};
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
  }
  if (ty == LUA_TTABLE) {
    lua_getfield(L, 1, "cluster");
    mbL_cluster_setup(L, -1, R, "mb.setup");
  }
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

/* the module's functions, by the file that holds them (upvalues: the state
 * and the message keys) */
static const luaL_Reg funcs[] = {
    {"setup", l_setup}, {"run", l_run}, {"stop", l_stop}, {"worker", l_worker},
    {"_counts", l_counts}, {NULL, NULL},
};
static const luaL_Reg *const all_funcs[] = {funcs, mbL_dest_funcs, mbL_msg_funcs,
                                            mbL_time_funcs, mbL_service_funcs, mbL_svclist_funcs,
                                            mbL_show_funcs, mbL_watch_funcs, NULL};

/* more: methods another file holds (NULL: none) */
static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      const luaL_Reg *more) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  if (more) luaL_setfuncs(L, more, 0);
  lua_setfield(L, -2, "__index");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}

/* Builds the module table for S in L and leaves it on the stack (every
 * state's, through R->open_module: mbl_service.c creates the states). */
static void open_module(lua_State *L, mbL_state *S) {
  new_class(L, "mb.Listener", mbL_listener_methods, NULL);
  new_class(L, "mb.Timer", mbL_timer_methods, NULL);
  new_class(L, "mb.Subscription", mbL_sub_methods, NULL);
  new_class(L, "mb.Service", mbL_service_methods, mbL_reload_methods);
  lua_pushlightuserdata(L, S);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &mbL_state_key);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  S->groups = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_pushlightuserdata(L, S);
  mbL_push_keys(L);
  lua_pushcclosure(L, mbL_handler_body, 1 + MBL_NUPS);
  S->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_newtable(L);
  for (int i = 0; all_funcs[i]; i++) {
    lua_pushlightuserdata(L, S);
    mbL_push_keys(L);
    luaL_setfuncs(L, all_funcs[i], 1 + MBL_NUPS);
  }
  lua_newtable(L);
  lua_pushlightuserdata(L, S);
  luaL_setfuncs(L, mbL_json_funcs, 1);
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
  mb_config cfg = {workers, 0};
  return mbL_runtime_new_config(&cfg);
}

mbL_runtime *mbL_runtime_new_config(const mb_config *cfg) {
  mbL_runtime *R = calloc(1, sizeof *R);
  if (!R) return NULL;
  R->rt = mb_runtime_new(cfg);
  if (!R->rt) {
    free(R);
    return NULL;
  }
  pthread_mutex_init(&R->lock, NULL);
  R->open_module = open_module;
  return R;
}


/* From worker 0's thread: every state is closed on its own worker. */
void mbL_runtime_free(mbL_runtime *R) {
  pthread_mutex_lock(&R->lock);
  for (mbL_state *S = R->states; S; S = S->next)
    if (mb_service_worker(S->svc) != 0) /* skipped if it stops by itself first */
      mbL_post(R, S->svc, 0, mbL_deferred_stop, S, NULL); /* failed: stopped below */
  pthread_mutex_unlock(&R->lock);
  mb_runtime_join(R->rt); /* they run those stops, then exit */
  while (R->states) {
    mbL_state *S = R->states;
    if (S->owns_L)
      mbL_state_stop(S);
    else /* a plain program's: Lua memory, its Lua state is closing */
      mbL_state_release(S);
  }
  mbL_cluster_leave(R); /* its listeners are closed: what they sent leaves now */
  mb_runtime_free(R->rt);
  mbL_loads_free(R);
  pthread_mutex_destroy(&R->lock);
  free(R);
}

mb_runtime *mbL_runtime_core(mbL_runtime *R) { return R->rt; }

void mbL_runtime_on_stop(mbL_runtime *R, void (*fn)(void *ud), void *ud) {
  R->on_stop = fn;
  R->on_stop_ud = ud;
}

void mbL_runtime_on_interrupt_missed(mbL_runtime *R, void (*fn)(void *ud), void *ud) {
  R->on_missed = fn;
  R->on_missed_ud = ud;
}

int mbL_runtime_abort(mbL_runtime *R, const char *reason) {
  atomic_store(&R->abort_why, reason); /* first: a call starting now sees it */
  int n = 0;
  pthread_mutex_lock(&R->lock); /* no state is freed meanwhile */
  for (mbL_state *S = R->states; S; S = S->next) n += mbL_state_abort(S, reason);
  pthread_mutex_unlock(&R->lock);
  return n;
}

int mbL_runtime_interrupt_service(mbL_runtime *R, const char *name, const char *why) {
  int n = 0;
  pthread_mutex_lock(&R->lock); /* no state is freed meanwhile */
  for (mbL_state *S = R->states; S; S = S->next)
    if (S->svc && strcmp(mb_service_name(S->svc), name) == 0) n += mbL_state_interrupt(S, why);
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
long mbL_runtime_timers(mbL_runtime *R) { return atomic_load(&R->timers); }

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
  mbL_state *S = svc ? mbL_state_new(R, svc, 0) : NULL;
  if (!S) {
    if (svc) mb_service_free(svc);
    snprintf(err, errlen, "out of memory");
    return MBL_LOAD_FAILED;
  }
  pthread_mutex_lock(&R->lock);
  uint64_t load_id = ++R->next_load;
  pthread_mutex_unlock(&R->lock);
  mbL_state_describe(S, load_id, path); /* out of memory: listed by its name */
  int st = mbL_load_script(S->L, path);
  if (st != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(S->L, -1));
    mbL_state_stop(S);
    return st == LUA_ERRFILE ? MBL_LOAD_FILE : MBL_LOAD_FAILED;
  }
  /* the arguments allocate: a protected call, with room for them and for
   * what mbL_start_body pushes above them */
  if (!lua_checkstack(S->L, argc + LUA_MINSTACK)) {
    snprintf(err, errlen, "cannot start %s: too many arguments (%d)", path, argc);
    mbL_state_stop(S);
    return MBL_LOAD_FAILED;
  }
  lua_pushcfunction(S->L, push_argv_p);
  lua_pushlightuserdata(S->L, argv);
  lua_pushinteger(S->L, argc);
  /* LUA_MULTRET: Lua keeps a fixed count of results in a short (at most
   * 32767); push_argv_p returns exactly argc */
  if (lua_pcall(S->L, 2, LUA_MULTRET, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(S->L, -1));
    mbL_state_stop(S);
    return MBL_LOAD_FAILED;
  }
  S->on_end = done;
  S->end_ud = ud;
  if (mbL_start_body(S, argc)) {
    snprintf(err, errlen, "cannot start %s: out of memory", path);
    mbL_state_stop(S);
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
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &mbL_state_key) == LUA_TLIGHTUSERDATA) {
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
  mbL_state_link(R, S);
  lua_pop(L, 1); /* p */
  open_module(L, S);
  return 1;
}
