/*
 * mbrun.c — the mbrun program: runs a scenario script as the first service
 * of a fresh runtime, runs the bus until the scenario has returned and all
 * work is done (or mb.stop()), then says what went wrong, if anything, and
 * exits 0 (success), 1 (a script or delivery failed, messages left pending)
 * or 2 (usage). Tests: spec/mbrun_spec.lua.
 */
#include <ev.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmb.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: mbrun [options] SCENARIO.lua [ARGS...]\n"
          "       mbrun -c CONFIG.lua [options] [SCENARIO.lua [ARGS...]]\n"
          "\n"
          "Runs SCENARIO.lua as the first service of a message bus, then runs the bus\n"
          "until the scenario has returned and every message has been delivered.\n"
          "The script gets ARGS as `...` and the bus as the global `mb`.\n"
          "\n"
          "options:\n"
          "  -c FILE       a configuration file: workers, destinations, services and\n"
          "                listener scripts (see README); without a scenario, the\n"
          "                configured services run until SIGINT or SIGTERM\n"
          "  -w N          worker threads, each with its own event loop\n"
          "                (default: the number of cores)\n"
          "  --stats       print a table of destination statistics at exit\n"
          "  -h, --help    show this help\n"
          "  --version     show the version\n"
          "\n"
          "exit status: 0 success; 1 the scenario raised, a delivery failed or was\n"
          "dropped, or messages were left pending; 2 usage or configuration error.\n");
}

typedef struct summary {
  mb_runtime *rt;
  unsigned long long failed, dropped, pending;
  char failed_at[512], dropped_at[512], pending_at[512];
  int stats;
} summary;

static void note(char *buf, size_t cap, const char *name, unsigned long long n) {
  size_t len = strlen(buf);
  if (len + 1 >= cap) return;
  snprintf(buf + len, cap - len, "%s%s: %llu", len ? ", " : "", name, n);
}

static void visit(void *ud, const char *name) {
  summary *s = ud;
  mb_stats st;
  if (mb_dest_stats(s->rt, name, &st)) return;
  if (st.failed) note(s->failed_at, sizeof s->failed_at, name, st.failed);
  if (st.dropped) note(s->dropped_at, sizeof s->dropped_at, name, st.dropped);
  if (st.pending) note(s->pending_at, sizeof s->pending_at, name, st.pending);
  s->failed += st.failed;
  s->dropped += st.dropped;
  s->pending += st.pending;
  if (s->stats) {
    static const char *const types[] = {"parallel", "serial", "synchronous"};
    fprintf(stderr, "%-28s %-11s %5zu %8llu %8llu %8llu %6llu %7llu %8llu %7zu %7llu %8llu\n",
            name, types[st.type], st.listeners, (unsigned long long)st.sent,
            (unsigned long long)st.delivered, (unsigned long long)st.failed,
            (unsigned long long)st.dropped, (unsigned long long)st.rejected,
            (unsigned long long)st.deliveries, st.largest_pending,
            (unsigned long long)st.replies, (unsigned long long)st.timeouts);
  }
}

/* The folder of the Lua modules mbrun uses (lua/ of the source tree):
 * $MB_LUA_DIR, else ../lua or ../../lua from the executable's folder
 * (build/mbrun, build/asan/mbrun). */
static int find_lua_dir(char *out, size_t cap) {
  const char *env = getenv("MB_LUA_DIR");
  char exe[PATH_MAX], probe[PATH_MAX + 32];
  if (env && *env) {
    snprintf(out, cap, "%s", env);
    snprintf(probe, sizeof probe, "%s/mb/config.lua", out);
    return access(probe, R_OK);
  }
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return -1;
  exe[n] = 0;
  char *slash = strrchr(exe, '/');
  if (slash) *slash = 0;
  static const char *const up[] = {"/../lua", "/../../lua"};
  for (size_t i = 0; i < sizeof up / sizeof *up; i++) {
    if (strlen(exe) + strlen(up[i]) + 1 > cap) return -1;
    strcpy(out, exe);
    strcat(out, up[i]);
    snprintf(probe, sizeof probe, "%s/mb/config.lua", out);
    if (access(probe, R_OK) == 0) return 0;
  }
  return -1;
}

/* Checks the configuration file in a Lua state of its own, before anything
 * starts: its keys and values, and what each listener script returns.
 * Returns its `workers` (0 when absent), or -1 with the message in err. */
static const char CHECK_CONFIG[] =
    "local path, luadir = ...\n"
    "package.path = luadir .. '/?.lua;' .. package.path\n"
    "local config = require 'mb.config'\n"
    "local cfg, err = config.load(path)\n"
    "if not cfg then error(err, 0) end\n"
    "for _, d in ipairs(cfg.destinations) do mb.destination(d.name, d.opts) end\n"
    "for _, l in ipairs(cfg.listeners) do\n"
    "  local ok, result = pcall(dofile, l.script)\n"
    "  if not ok then error(path .. ': listener ' .. tostring(result), 0) end\n"
    "  for _, d in ipairs(l.destinations) do\n"
    "    local h, why = config.handler_for(result, l.script, d)\n"
    "    if not h then error(path .. ': listener ' .. why, 0) end\n"
    "  end\n"
    "end\n"
    "return cfg.workers or 0\n";

static long check_config(const char *path, const char *luadir, char *err, size_t errlen) {
  lua_State *L = luaL_newstate();
  if (!L) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  luaL_openlibs(L);
  luaL_requiref(L, "mb", luaopen_mb, 1); /* a bus of its own, thrown away */
  lua_pop(L, 1);
  long workers = -1;
  if (luaL_loadbuffer(L, CHECK_CONFIG, sizeof CHECK_CONFIG - 1, "=config check") == LUA_OK) {
    lua_pushstring(L, path);
    lua_pushstring(L, luadir);
    if (lua_pcall(L, 2, 1, 0) == LUA_OK)
      workers = (long)lua_tointeger(L, -1);
    else
      snprintf(err, errlen, "%s", lua_tostring(L, -1));
  } else {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
  }
  lua_close(L);
  return workers;
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)loop;
  (void)revents;
  mb_runtime_stop(w->data);
}

int main(int argc, char **argv) {
  int i = 1, stats = 0;
  long workers = 0;
  const char *config = NULL;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--version")) {
      printf("mbrun %s (Lua 5.4, libev, yajl)\n", MB_VERSION);
      return 0;
    } else if (!strcmp(a, "--stats")) {
      stats = 1;
    } else if (!strcmp(a, "-c")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "mbrun: -c needs a configuration file\n");
        return 2;
      }
      config = argv[++i];
    } else if (!strcmp(a, "-w")) {
      char *end;
      long n = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
      if (i + 1 >= argc || *end || n < 1 || n > 256) {
        fprintf(stderr, "mbrun: -w needs a number of workers from 1 to 256\n");
        return 2;
      }
      workers = n;
      i++;
    } else if (!strcmp(a, "--")) {
      i++;
      break;
    } else {
      fprintf(stderr, "mbrun: unknown option '%s' (see mbrun --help)\n", a);
      return 2;
    }
  }
  if (i >= argc && !config) {
    fprintf(stderr, "mbrun: no scenario given (see mbrun --help)\n");
    return 2;
  }
  char err[1024], luadir[PATH_MAX];
  if (config) {
    if (find_lua_dir(luadir, sizeof luadir)) {
      fprintf(stderr, "mbrun: cannot find mb/config.lua (set MB_LUA_DIR to the lua/ folder)\n");
      return 2;
    }
    if (access(config, R_OK)) {
      fprintf(stderr, "mbrun: cannot open %s\n", config);
      return 2;
    }
    long w = check_config(config, luadir, err, sizeof err);
    if (w < 0) {
      fprintf(stderr, "mbrun: %s\n", err);
      return 2;
    }
    if (!workers) workers = w; /* -w overrides the configuration */
  }
  if (!workers) workers = sysconf(_SC_NPROCESSORS_ONLN);
  if (workers < 1) workers = 1;
  mbL_runtime *R = mbL_runtime_new((int)workers);
  if (!R) {
    fprintf(stderr, "mbrun: out of memory\n");
    return 1;
  }
  mb_runtime *rt = mbL_runtime_core(R);
  int rc_load;
  if (config) {
    /* boot.lua: config path, lua dir, scenario or "", the scenario's args */
    char boot[PATH_MAX + 32];
    snprintf(boot, sizeof boot, "%s/mb/boot.lua", luadir);
    int n = argc - i;
    char **args = calloc((size_t)(n + 3), sizeof *args);
    if (!args) {
      mbL_runtime_free(R);
      return 1;
    }
    args[0] = (char *)config;
    args[1] = luadir;
    args[2] = i < argc ? argv[i] : "";
    for (int k = 1; k < n; k++) args[2 + k] = argv[i + k];
    rc_load = mbL_runtime_load(R, boot, n > 0 ? n + 2 : 3, args, err, sizeof err);
    free(args);
  } else {
    rc_load = mbL_runtime_load(R, argv[i], argc - i - 1, argv + i + 1, err, sizeof err);
  }
  if (rc_load) {
    fprintf(stderr, "mbrun: %s\n", err);
    mbL_runtime_free(R);
    return strncmp(err, "cannot open", 11) == 0 ? 2 : 1;
  }
  /* without a scenario the configured services run until a signal */
  ev_signal sigint, sigterm;
  int serve = config && i >= argc;
  if (serve) {
    struct ev_loop *loop = mb_runtime_loop(rt);
    ev_signal_init(&sigint, on_signal, SIGINT);
    ev_signal_init(&sigterm, on_signal, SIGTERM);
    sigint.data = sigterm.data = rt;
    ev_signal_start(loop, &sigint);
    ev_signal_start(loop, &sigterm);
    mb_runtime_hold(rt, 1);
  }
  mb_runtime_run(rt, 0);
  if (serve) {
    mb_runtime_hold(rt, -1);
    ev_signal_stop(mb_runtime_loop(rt), &sigint);
    ev_signal_stop(mb_runtime_loop(rt), &sigterm);
  }

  summary s;
  memset(&s, 0, sizeof s);
  s.rt = mbL_runtime_core(R);
  s.stats = stats;
  if (stats)
    fprintf(stderr, "%-28s %-11s %5s %8s %8s %8s %6s %7s %8s %7s %7s %8s\n", "destination", "type",
            "lsnrs", "sent", "deliv'd", "failed", "drop", "reject", "deliv's", "max_pnd",
            "replies", "timeouts");
  mb_dest_each(s.rt, visit, &s);
  /* what removed destinations failed or dropped counts as well */
  mb_counts c;
  mb_runtime_counts(s.rt, &c);
  if (c.failed > s.failed) note(s.failed_at, sizeof s.failed_at, "removed destinations", c.failed - s.failed);
  if (c.dropped > s.dropped)
    note(s.dropped_at, sizeof s.dropped_at, "removed destinations", c.dropped - s.dropped);
  s.failed = c.failed;
  s.dropped = c.dropped;
  int failures = mbL_runtime_failures(R), rc = 0;
  if (failures) {
    fprintf(stderr, "mbrun: %d script error%s (see above)\n", failures, failures > 1 ? "s" : "");
    rc = 1;
  }
  if (s.failed) {
    fprintf(stderr, "mbrun: %llu deliver%s failed (%s)\n", s.failed, s.failed > 1 ? "ies" : "y",
            s.failed_at);
    rc = 1;
  }
  if (s.dropped) {
    fprintf(stderr, "mbrun: %llu deliver%s dropped (%s)\n", s.dropped,
            s.dropped > 1 ? "ies" : "y", s.dropped_at);
    rc = 1;
  }
  if (s.pending) {
    fprintf(stderr, "mbrun: %llu message%s left pending, undelivered (%s)\n", s.pending,
            s.pending > 1 ? "s" : "", s.pending_at);
    rc = 1;
  }
  mbL_runtime_free(R);
  return rc;
}
