/*
 * mbl_svclist.c — seeing the services that run: mb.services() (one entry
 * per load, with a handle), mb._service_info (mbrun's own scripts mark
 * themselves) and the names the REPL completes. Reads the states under
 * R->lock; owns nothing past a call. Tests: spec/api/services_spec.lua,
 * spec/repl.
 */
#include "mbl_private.h"

/* ---- mb.services() ---------------------------------------------------------------------- */

/* What mb.services() shows of one instance, copied under R->lock. */
typedef struct svc_row {
  uint64_t load_id, id;
  int worker;
  uint64_t deliveries, failures;
  char *name, *path;
} svc_row;

/* The rows, boxed in a userdata whose __gc frees them: a Lua error (out
 * of memory) while the result is built leaks nothing. */
typedef struct svc_rows {
  svc_row *v;
  size_t n;
} svc_rows;

static void rows_free(svc_rows *r) {
  for (size_t i = 0; i < r->n; i++) {
    free(r->v[i].name);
    free(r->v[i].path);
  }
  free(r->v);
  r->v = NULL;
  r->n = 0;
}

static int rows_gc(lua_State *L) {
  rows_free(lua_touserdata(L, 1));
  return 0;
}

/* A reload's old instances (draining) are no longer listed. */
static int listed(const mbL_state *S) {
  return S->load_id && !S->hidden && S->svc && !S->draining;
}

static int row_order(const void *a, const void *b) {
  const svc_row *x = a, *y = b;
  if (x->load_id != y->load_id) return x->load_id < y->load_id ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

/* Fills r with the listed states, sorted by load, then instance. Under the
 * lock only C memory is taken (no Lua call, nothing that raises). Returns
 * -1 when out of memory. */
static int rows_collect(mbL_runtime *R, svc_rows *r) {
  int oom = 0;
  pthread_mutex_lock(&R->lock);
  size_t n = 0;
  for (mbL_state *S = R->states; S; S = S->next) n += listed(S);
  r->v = calloc(n ? n : 1, sizeof *r->v);
  for (mbL_state *S = R->states; S && r->v && !oom; S = S->next) {
    if (!listed(S)) continue;
    svc_row *w = &r->v[r->n++];
    const char *name = mb_service_name(S->svc);
    w->load_id = S->load_id;
    w->id = mb_service_id(S->svc);
    w->worker = mb_service_worker(S->svc);
    w->deliveries = atomic_load_explicit(&S->deliveries, memory_order_relaxed);
    w->failures = atomic_load_explicit(&S->failures, memory_order_relaxed);
    w->name = strdup(name);
    w->path = strdup(S->path ? S->path : name);
    oom = !w->name || !w->path;
  }
  pthread_mutex_unlock(&R->lock);
  if (!r->v || oom) return -1;
  qsort(r->v, r->n, sizeof *r->v, row_order);
  return 0;
}

/* mb.services() -> a list, in the order they were loaded, of the services
 * running now, one entry per mb.load (or configured service, listener
 * script, scenario): {name, path, instances, worker (the first instance's),
 * workers (each instance's), deliveries (handler calls ended), failures
 * (calls that raised: handlers, timers, spawned functions, the body),
 * handle (as mb.load's: handle:stop())}. mbrun's own services (its boot
 * script, the REPL) and a plain program's own state are not listed. */
static int l_services(lua_State *L) {
  mbL_state *S = state_of(L);
  svc_rows *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  if (luaL_newmetatable(L, "mb.ServiceRows")) {
    lua_pushcfunction(L, rows_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (rows_collect(S->R, r)) {
    rows_free(r);
    return luaL_error(L, "mb.services: out of memory");
  }
  lua_newtable(L);
  int k = 0;
  for (size_t i = 0; i < r->n;) {
    size_t j = i;
    uint64_t deliveries = 0, failures = 0;
    while (j < r->n && r->v[j].load_id == r->v[i].load_id) {
      deliveries += r->v[j].deliveries;
      failures += r->v[j].failures;
      j++;
    }
    lua_createtable(L, 0, 8);
    lua_pushstring(L, r->v[i].name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, r->v[i].path);
    lua_setfield(L, -2, "path");
    lua_pushinteger(L, (lua_Integer)(j - i));
    lua_setfield(L, -2, "instances");
    lua_pushinteger(L, r->v[i].worker);
    lua_setfield(L, -2, "worker");
    lua_createtable(L, (int)(j - i), 0);
    for (size_t x = i; x < j; x++) {
      lua_pushinteger(L, r->v[x].worker);
      lua_rawseti(L, -2, (lua_Integer)(x - i + 1));
    }
    lua_setfield(L, -2, "workers");
    lua_pushinteger(L, (lua_Integer)deliveries);
    lua_setfield(L, -2, "deliveries");
    lua_pushinteger(L, (lua_Integer)failures);
    lua_setfield(L, -2, "failures");
    mbL_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->R = S->R;
    h->load_id = r->v[i].load_id;
    luaL_setmetatable(L, "mb.Service");
    lua_setfield(L, -2, "handle");
    lua_rawseti(L, -2, ++k);
    i = j;
  }
  rows_free(r);
  return 1;
}

/* mb._service_info{hidden = true, path = "..."}: for mbrun's own scripts.
 * hidden: this service is mbrun's machinery (boot.lua, the REPL), which
 * mb.services() leaves out; path: the script it stands for (listener_host.lua
 * runs a configured listener script). */
static int l_service_info(lua_State *L) {
  static const char *const keys[] = {"hidden", "path", NULL};
  mbL_state *S = state_of(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  mbL_check_keys(L, 1, keys, "mb._service_info");
  int hidden = lua_getfield(L, 1, "hidden") != LUA_TNIL && lua_toboolean(L, -1);
  const char *path = NULL;
  if (lua_getfield(L, 1, "path") != LUA_TNIL) path = luaL_checkstring(L, -1);
  if (mbL_state_describe(S, S->load_id, path)) return luaL_error(L, "mb._service_info: out of memory");
  pthread_mutex_lock(&S->R->lock);
  if (hidden) S->hidden = 1;
  pthread_mutex_unlock(&S->R->lock);
  return 0;
}

void mbL_runtime_each_service(mbL_runtime *R, void (*fn)(void *ud, const char *name), void *ud) {
  pthread_mutex_lock(&R->lock);
  for (mbL_state *S = R->states; S; S = S->next)
    if (listed(S)) fn(ud, mb_service_name(S->svc));
  pthread_mutex_unlock(&R->lock);
}

const luaL_Reg mbL_svclist_funcs[] = {
    {"services", l_services}, {"_service_info", l_service_info}, {NULL, NULL}};
