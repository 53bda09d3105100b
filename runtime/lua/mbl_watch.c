/*
 * mbl_watch.c — what `mbrun --watch` stands on: mb._watch(fn) makes the
 * calling state watch the script of every service listed by mb.services()
 * (a loaded script, or the listener script a configured listener runs)
 * with libev's ev_stat, on its own loop. When a file's content changes —
 * its modification time, size or inode, so that an editor's write to a
 * temporary file and rename counts too, while a mere read (atime) does
 * not — and the file has then been quiet for QUIET seconds, fn(path) runs
 * in a task of this state (lua/mb/watch.lua reloads the services of that
 * path). Services started later are found by a scan every SCAN seconds and
 * at each change. None of these watchers keeps the bus running (ev_unref).
 * Owns the watch (a userdata in the state's registry, freed by its __gc
 * with the state). Tests: spec/cli/watch_spec.lua.
 */
#include <sys/stat.h>

#include "mbl_private.h"

#define QUIET 0.1 /* seconds without another change before fn runs */
#define SCAN 0.5  /* seconds between looks for new services */
#define POLL 0.5  /* ev_stat's interval where inotify does not serve */

typedef struct watch watch;

typedef struct watch_file {
  ev_stat st;
  ev_timer quiet;
  watch *wt;
  struct watch_file *next;
  char path[];
} watch_file;

struct watch {
  mbL_state *S;
  struct ev_loop *loop;
  int fn_ref; /* fn, in the registry */
  ev_timer scan;
  watch_file *files;
};

/* A watcher that does not keep the loop running: started, then unref'd
 * (and ref'd again before it is stopped, as libev asks). */
#define START_WEAK(kind, loop, w) (ev_##kind##_start((loop), (w)), ev_unref(loop))
#define STOP_WEAK(kind, loop, w)                                                                  \
  do {                                                                                            \
    if (ev_is_active(w)) {                                                                        \
      ev_ref(loop);                                                                               \
      ev_##kind##_stop((loop), (w));                                                              \
    }                                                                                             \
  } while (0)

static void scan(watch *wt);

/* The file has been quiet since its last change: fn(path). */
static void quiet_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  watch_file *f = w->data;
  watch *wt = f->wt;
  mbL_state *S = wt->S;
  ev_ref(loop); /* a one-shot timer has stopped itself: undo our unref */
  scan(wt); /* what started meanwhile is watched from now on */
  mbL_task *t = mbL_task_new(S, T_EVENT);
  if (!t) {
    mbL_failed(S->R, "mb: --watch: %s changed, but there is no memory to reload it\n", f->path);
    return;
  }
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, wt->fn_ref);
  lua_pushstring(t->co, f->path); /* short: fits the room a new coroutine has */
  mbL_task_run(t, 1);
}

static void stat_cb(struct ev_loop *loop, ev_stat *w, int revents) {
  (void)revents;
  watch_file *f = w->data;
  const struct stat *a = &w->attr, *p = &w->prev;
  if (a->st_nlink == 0) return; /* gone (a rename under way): wait for it */
  if (a->st_mtime == p->st_mtime && a->st_size == p->st_size && a->st_ino == p->st_ino &&
      a->st_dev == p->st_dev)
    return; /* read, or its metadata changed: the content did not */
  STOP_WEAK(timer, loop, &f->quiet);
  ev_timer_set(&f->quiet, QUIET, 0);
  START_WEAK(timer, loop, &f->quiet);
}

static void add_file(watch *wt, const char *path) {
  for (watch_file *f = wt->files; f; f = f->next)
    if (!strcmp(f->path, path)) return;
  size_t len = strlen(path);
  watch_file *f = calloc(1, sizeof *f + len + 1);
  if (!f) {
    mbL_failed(wt->S->R, "mb: --watch: no memory to watch %s\n", path);
    return;
  }
  memcpy(f->path, path, len + 1);
  f->wt = wt;
  ev_stat_init(&f->st, stat_cb, f->path, POLL);
  f->st.data = f;
  ev_timer_init(&f->quiet, quiet_cb, QUIET, 0);
  f->quiet.data = f;
  START_WEAK(stat, wt->loop, &f->st);
  f->next = wt->files;
  wt->files = f;
}

/* The paths of the listed services, copied under R->lock, then watched. */
static void scan(watch *wt) {
  mbL_runtime *R = wt->S->R;
  size_t n = 0, cap = 0;
  char **paths = NULL;
  pthread_mutex_lock(&R->lock);
  for (mbL_state *S = R->states; S; S = S->next) cap += S->path != NULL;
  paths = cap ? calloc(cap, sizeof *paths) : NULL;
  for (mbL_state *S = R->states; S && paths; S = S->next)
    if (S->path && S->load_id && !S->hidden && S->svc && n < cap && (paths[n] = strdup(S->path)))
      n++;
  pthread_mutex_unlock(&R->lock);
  for (size_t i = 0; i < n; i++) {
    add_file(wt, paths[i]);
    free(paths[i]);
  }
  free(paths);
}

static void scan_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  scan(w->data);
}

static int watch_gc(lua_State *L) {
  watch *wt = lua_touserdata(L, 1);
  if (!wt->loop) return 0;
  STOP_WEAK(timer, wt->loop, &wt->scan);
  while (wt->files) {
    watch_file *f = wt->files;
    wt->files = f->next;
    STOP_WEAK(stat, wt->loop, &f->st);
    STOP_WEAK(timer, wt->loop, &f->quiet);
    free(f);
  }
  wt->loop = NULL;
  return 0;
}

/* mb._watch(fn): for mbrun --watch (lua/mb/watch.lua); once per state. */
static int l_watch(lua_State *L) {
  static const char key = 0;
  mbL_state *S = state_of(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (!S->owns_L) return luaL_error(L, "mb._watch: only in a service of its own (mbrun --watch)");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key) != LUA_TNIL)
    return luaL_error(L, "mb._watch: this service watches already");
  watch *wt = lua_newuserdatauv(L, sizeof *wt, 0);
  memset(wt, 0, sizeof *wt);
  wt->fn_ref = LUA_NOREF;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, watch_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key); /* lives with the state */
  lua_pushvalue(L, 1);
  wt->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* goes with the registry */
  wt->S = S;
  wt->loop = mb_service_loop(S->svc);
  ev_timer_init(&wt->scan, scan_cb, SCAN, SCAN);
  wt->scan.data = wt;
  START_WEAK(timer, wt->loop, &wt->scan);
  scan(wt);
  return 0;
}

const luaL_Reg mbL_watch_funcs[] = {{"_watch", l_watch}, {NULL, NULL}};
