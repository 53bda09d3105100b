/*
 * mbl_reload.c — reloading a service, handle:reload(): its script again as
 * new instances, which join the old ones' groups; once they have started
 * the old ones drain (SPEC section 2). Overlapping reloads and a stop
 * begun meanwhile are settled here, by the load's generations.
 *
 * Owns nothing of its own: the load records (mbL_load), starting, stopping
 * and draining instances are mbl_service.c's. Tests: spec/api/reload_spec.lua,
 * spec/workers/workers_spec.lua (across workers), spec/cli/watch_spec.lua
 * (mbrun --watch), spec/failalloc/reload.lua.
 */
#include "mbl_private.h"

/* ---- handle:reload() ------------------------------------------------------ */

/* The stack of a reload: the handle, the old instances' ids, the new
 * ones', how many, its generation, and then what it returns. */
enum { RL_HANDLE = 1, RL_OLD, RL_NEW, RL_NNEW, RL_GEN, RL_WHY };

static int reloaded_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (ctx) mbL_waiter_free((mbL_waiter *)ctx);
  if (lua_gettop(L) >= RL_WHY) { /* stopped meanwhile */
    lua_pushnil(L);
    lua_pushvalue(L, RL_WHY);
    return 2;
  }
  lua_settop(L, RL_HANDLE);
  return 1;
}

static int reload_failed_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (ctx) mbL_waiter_free((mbL_waiter *)ctx);
  lua_pushnil(L);
  lua_pushvalue(L, RL_WHY);
  return 2;
}

/* Every new instance has started (or one failed): the old ones drain and
 * the handle is returned; or the new ones drain (what they were given goes
 * back to the old ones) and nil, "failed: ..." is. Takes error. Of
 * reloads that overlap, the one that began last wins whichever ends
 * first; a stop begun meanwhile stops the new ones too. */
static int reload_finish(lua_State *L, int failed, char *error) {
  mbL_handle *h = lua_touserdata(L, RL_HANDLE);
  mbL_state *me = mbL_caller_state(L);
  lua_settop(L, RL_GEN);
  if (!failed) {
    free(error);
    /* the instances of every older reload (and the mb.load's) drain,
     * unless a newer reload or a stop has ended first: then these do */
    mbL_load *ld = mbL_load_find(h->R, h->load_id);
    uint64_t gen = (uint64_t)lua_tointeger(L, RL_GEN);
    pthread_mutex_lock(&h->R->lock);
    int newest = gen > ld->live, stopped = ld->stopped > gen;
    if (newest) ld->live = gen;
    pthread_mutex_unlock(&h->R->lock);
    if (!newest) {
      if (stopped)
        lua_pushfstring(L, "closed: service '%s' was stopped while it reloaded", ld->name);
      mbL_waiter *w = mbL_end_instances(L, h->R, lua_touserdata(L, RL_NEW),
                                        (size_t)lua_tointeger(L, RL_NNEW), me, !stopped);
      if (w) return mbL_wait_for(L, w, reloaded_k);
      return reloaded_k(L, LUA_OK, 0);
    }
    size_t n;
    uint64_t *old = mbL_push_instances(L, h->R, h->load_id, INST_BEFORE, gen, &n);
    lua_replace(L, RL_OLD);
    mbL_waiter *w = mbL_end_instances(L, h->R, old, n, me, 1);
    if (w) return mbL_wait_for(L, w, reloaded_k);
    return reloaded_k(L, LUA_OK, 0);
  }
  mbL_load *ld = mbL_load_find(h->R, h->load_id);
  pthread_mutex_lock(&h->R->lock);
  int stopped = ld && ld->stopped > (uint64_t)lua_tointeger(L, RL_GEN);
  pthread_mutex_unlock(&h->R->lock);
  if (stopped) /* a stop overtook it (new instances not yet listed then refused to start) */
    lua_pushfstring(L, "closed: service '%s' was stopped while it reloaded", ld->name);
  else
    lua_pushfstring(L, "failed: %s", error ? error : "not enough memory");
  free(error);
  mbL_waiter *w = mbL_end_instances(L, h->R, lua_touserdata(L, RL_NEW),
                                    (size_t)lua_tointeger(L, RL_NNEW), me, 1);
  if (w) return mbL_wait_for(L, w, reload_failed_k);
  return reload_failed_k(L, LUA_OK, 0);
}

static int reload_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  int failed;
  char *error;
  mbL_waiter_outcome((mbL_waiter *)ctx, &failed, &error);
  return reload_finish(L, failed, error);
}

/* handle:reload(): the script again as new instances that join the same
 * groups; once they have started, the old ones take no new deliveries,
 * finish the ones running and close (SPEC section 2). Returns the handle,
 * or nil, "failed: ..." with the old instances still running. */
static int service_reload(lua_State *L) {
  mbL_handle *h = luaL_checkudata(L, 1, "mb.Service");
  mbL_state *S = mbL_caller_state(L);
  if (!S || !S->svc) return luaL_error(L, "mb: this service has stopped");
  lua_settop(L, RL_HANDLE);
  mbL_load *ld = mbL_load_find(h->R, h->load_id);
  size_t nold;
  mbL_push_instances(L, h->R, h->load_id, INST_RUNNING, 0, &nold); /* RL_OLD */
  if (!ld && nold) { /* mbrun's scenario: started from its command line */
    char name[256] = "?";
    pthread_mutex_lock(&h->R->lock);
    for (mbL_state *x = h->R->states; x; x = x->next)
      if (mbL_instance_of(x, h->load_id))
        snprintf(name, sizeof name, "%s", mb_service_name(x->svc));
    pthread_mutex_unlock(&h->R->lock);
    lua_pushnil(L);
    lua_pushfstring(L, "failed: service '%s' cannot be reloaded: it is the scenario mbrun "
                       "runs (what mb.load, .load or a configuration started can be)", name);
    return 2;
  }
  /* a stop is final: one already asked for, whose instances may not all
   * have stopped yet (on their own workers), leaves nothing to reload */
  int stopped = 0;
  if (ld) {
    pthread_mutex_lock(&h->R->lock);
    stopped = ld->stopped != 0;
    pthread_mutex_unlock(&h->R->lock);
  }
  if (!ld || !nold || stopped) {
    lua_pushnil(L);
    lua_pushfstring(L, "closed: service '%s' is not running (nothing to reload)",
                    ld ? ld->name : "?");
    return 2;
  }
  if (mbL_load_script(L, ld->path) != LUA_OK) { /* a syntax error: the old ones go on */
    lua_pushnil(L);
    lua_pushfstring(L, "failed: %s", lua_tostring(L, -2));
    return 2;
  }
  lua_pop(L, 1);
  uint64_t *ids = lua_newuserdatauv(L, ld->instances * sizeof *ids, 0); /* RL_NEW */
  pthread_mutex_lock(&h->R->lock);
  uint64_t gen = ++ld->gen;
  pthread_mutex_unlock(&h->R->lock);
  size_t n;
  int failed;
  char *error;
  mbL_waiter *w = mbL_start_all(L, S, ld, gen, ids, &n, &failed, &error);
  lua_pushinteger(L, (lua_Integer)n); /* RL_NNEW */
  lua_pushinteger(L, (lua_Integer)gen); /* RL_GEN */
  if (!w) return reload_finish(L, failed, error);
  return mbL_wait_for(L, w, reload_k);
}

const luaL_Reg mbL_reload_methods[] = {{"reload", service_reload}, {NULL, NULL}};
