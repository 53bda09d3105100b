/*
 * mbrun.c — the mbrun program: runs a scenario script as the first service
 * of a fresh runtime, runs the bus until the scenario has returned and all
 * work is done (or mb.stop()), then says what went wrong, if anything, and
 * exits 0 (success), 1 (a script or delivery failed, messages left pending)
 * or 2 (usage). Tests: spec/cli/mbrun_spec.lua.
 */
#include <errno.h>
#include <fcntl.h>
#include <ev.h>
#include <lauxlib.h>
#include <limits.h>
#include <pthread.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lmb.h"
#include "mbrepl.h"
#include "mbrun_graph.h"
#include "mbrun_stats.h"
#include "mbrun_stop.h"
#include "mb_value.h"

/* The REPL, when one is open: trace lines go above its prompt. */
static mbrepl *repl;

/* The REPL's own traffic (mb/repl) is left out of what mbrun shows. */
static int hidden(const char *dest) { return repl && !strcmp(dest, "mb/repl"); }

static void usage(FILE *f) {
  fprintf(f,
          "usage: mbrun [options] SCENARIO.lua [ARGS...]\n"
          "       mbrun -c CONFIG.lua [options] [SCENARIO.lua [ARGS...]]\n"
          "       mbrun [options]           (the REPL)\n"
          "\n"
          "Runs SCENARIO.lua as the first service of a message bus, then runs the bus\n"
          "until the scenario has returned and every message has been delivered.\n"
          "The script gets ARGS as `...` and the bus as the global `mb`. Without a\n"
          "scenario or configuration, or with -i, it opens the REPL: Lua and\n"
          "commands (.help) typed while the bus runs.\n"
          "\n"
          "options:\n"
          "  -c FILE          a configuration file: workers, destinations, services and\n"
          "                   listener scripts (see README); without a scenario, the\n"
          "                   configured services run until SIGINT or SIGTERM\n"
          "  -i               open the REPL after starting the scenario/configuration\n"
          "  --watch          reload a service whose script file changes, as\n"
          "                   handle:reload() does (a failed reload is reported and the\n"
          "                   old instances keep running)\n"
          "  -w N             worker threads, each with its own event loop\n"
          "                   (default: the CPUs mbrun may use, as nproc counts them)\n"
          "  --trace          one line per hop on stderr: time, message id, destination,\n"
          "                   sender -> listener, outcome, duration, payload (secrets\n"
          "                   masked)\n"
          "  --stats          a table of destination statistics at exit, on stderr\n"
          "                   (destinations removed during the run too)\n"
          "  --graph[=FMT]    at exit, a Graphviz picture of services, destinations and\n"
          "                   listeners: FMT dot (default) or svg (needs `dot`)\n"
          "  --graph-out FILE write the picture to FILE instead of stdout (with --graph)\n"
          "  --nats URL       join the cluster of the NATS server at URL (secrets come\n"
          "                   from the configuration or MB_NATS_USER, MB_NATS_PASSWORD,\n"
          "                   MB_NATS_TOKEN, MB_NATS_CREDS; see doc/cluster.md)\n"
          "  --node NAME      this node's name in the cluster (default: HOST-PID)\n"
          "  --grace SECONDS  on SIGINT/SIGTERM or mb.stop(): no new messages, and what\n"
          "                   is in flight gets this long to be delivered (default 5)\n"
          "  --max-message-size BYTES\n"
          "                   the largest message (payload and values, encoded) a send\n"
          "                   accepts: bytes, or with K, M or G (KiB, MiB, GiB), from 1K\n"
          "                   to 1G (default 64M; overrides the configuration's)\n"
          "  -h, --help       show this help\n"
          "  --version        show the version\n"
          "  (an option's value may also follow it after '=': --grace=2, --node=n1)\n"
          "\n"
          "exit status: 0 success; 1 the scenario or a configured service raised, a\n"
          "delivery failed or was dropped, or messages were left pending; 2 usage or\n"
          "configuration error (also a configured listener script that fails to start).\n");
}

/* ---- --trace ------------------------------------------------------------------- */

/* One line per hop; called with the runtime's lock held, so one at a time,
 * and the line goes out in one write. */
static void trace_hop(void *ud, const mb_hop *h) {
  static const char *const kinds[] = {"ok", "failed", "dropped", "timeout", "reply", "rejected"};
  mb_buf *b = ud;
  if (hidden(h->dest)) return;
  char id[24], from[64], to[64], dur[16], head[512];
  mb_id_format(h->id, id);
  mbrun_short_name(h->from, from, sizeof from);
  mbrun_short_name(h->to, to, sizeof to);
  int n = snprintf(head, sizeof head, "trace %10.6f  %s  %s  %s -> %s  %s  %s", h->at, id, h->dest,
                   from, to, kinds[h->kind], mbrun_duration(h->duration, dur, sizeof dur));
  b->len = 0;
  if (mb_buf_add(b, head, n < (int)sizeof head ? (size_t)n : sizeof head - 1)) return;
  if (h->msg) {
    size_t len;
    const uint8_t *p = mb_msg_payload(h->msg, &len);
    mb_buf_add(b, "  ", 2);
    mb_value_show(p, len, b, 240);
    p = mb_msg_values(h->msg, &len);
    if (len) {
      mb_buf_add(b, "  values=", 9);
      mb_value_show(p, len, b, 120);
    }
  }
  if (h->error) {
    mb_buf_add(b, "  (", 3);
    mb_buf_add(b, h->error, strlen(h->error));
    mb_buf_add(b, ")", 1);
  }
  if (mb_buf_add(b, "\n", 1)) return;
  if (repl)
    mbrepl_write(repl, 2, (const char *)b->p, b->len);
  else
    fwrite(b->p, 1, b->len, stderr);
}

/* The folder of the Lua modules mbrun uses (mb/config.lua and its
 * siblings): $MB_LUA_DIR, else ../share/lua/5.4 from the executable's folder
 * (an installed PREFIX/bin/mbrun, also under a DESTDIR), else ../lua or
 * ../../lua (build/mbrun, build/asan/mbrun in the source tree). */
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
  static const char *const up[] = {"/../share/lua/5.4", "/../lua", "/../../lua"};
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
 * starts: its keys and values (mb.config). Listener scripts are not run
 * here: boot.lua runs each once, when it starts it, and stops mbrun with
 * exit code 2 if one fails. Returns its `workers` (0 when absent) and sets
 * *max to its max_message_size (0 when absent), or returns -1 with the
 * message in err. */
static const char CHECK_CONFIG[] =
    "local path, luadir = ...\n"
    "package.path = luadir .. '/?.lua;' .. package.path\n"
    "local cfg, err = require('mb.config').load(path)\n"
    "if not cfg then error(err, 0) end\n"
    "return cfg.workers or 0, cfg.max_message_size or 0, cfg.cluster, cfg.cluster_dest\n";

/* What joining a cluster takes: --nats and --node, over the configuration's
 * cluster table (copied out of the checking state). */
typedef struct cluster_opts {
  char *s[10]; /* url namespace node user password token creds ca cert key */
  char *cluster_dest; /* the key path of the configuration's first cluster destination */
} cluster_opts;
static const char *const CLUSTER_FIELDS[] = {"url", "namespace", "node", "user", "password",
                                             "token", "creds", "ca", "cert", "key"};

static void cluster_opts_read(lua_State *L, int t, cluster_opts *co) {
  for (int k = 0; k < 10; k++) {
    if (k == 7) {
      if (lua_getfield(L, t, "tls") != LUA_TTABLE) {
        lua_pop(L, 1);
        break;
      }
      t = lua_gettop(L);
    }
    if (lua_getfield(L, t, CLUSTER_FIELDS[k]) == LUA_TSTRING) co->s[k] = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

static void cluster_opts_free(cluster_opts *co) {
  for (int k = 0; k < 10; k++) free(co->s[k]);
  free(co->cluster_dest);
  memset(co, 0, sizeof *co);
}

/* require "mb" as a protected call: luaopen_mb raises when out of memory */
static int require_mb_p(lua_State *L) {
  luaL_requiref(L, "mb", luaopen_mb, 1);
  return 0;
}

/* A configuration file is data, yet it is Lua: one that never returns, or
 * that builds tables for ever, must not hang mbrun or take the machine's
 * memory before anything starts. The check runs it with a bound on time
 * (a count hook reads the clock) and on the memory of its Lua state. */
#define CHECK_SECONDS 5
#define CHECK_MEMORY (256u << 20)

typedef struct check_bounds {
  size_t used;
  int out_of_memory; /* an allocation was refused */
  int out_of_time;
  struct timespec t0;
} check_bounds;

static void *check_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  check_bounds *b = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    b->used -= old;
    return NULL;
  }
  if (nsize > old && nsize - old > CHECK_MEMORY - b->used) {
    b->out_of_memory = 1;
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (!p) {
    b->out_of_memory = 1;
    return NULL;
  }
  b->used = b->used - old + nsize;
  return p;
}

static void check_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  check_bounds *b;
  lua_getallocf(L, (void **)&b);
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (!b->out_of_time && now.tv_sec - b->t0.tv_sec + (now.tv_nsec - b->t0.tv_nsec) / 1e9 < CHECK_SECONDS)
    return;
  /* from now on every instruction raises: a pcall in the file cannot hold it */
  b->out_of_time = 1;
  lua_sethook(L, check_hook, LUA_MASKCOUNT, 1);
  luaL_error(L, "still running after %d s", CHECK_SECONDS);
}

/* What the hook cannot reach — a __gc (Lua runs no hook in finalizers),
 * one long C call (a string pattern) — is bounded by a thread that ends
 * mbrun, exit 2, when the check is still not over a little after its
 * bound. */
typedef struct check_watch {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  const char *path;
} check_watch;

static void *check_watchdog(void *arg) {
  check_watch *cw = arg;
  struct timespec end;
  clock_gettime(CLOCK_MONOTONIC, &end);
  end.tv_sec += CHECK_SECONDS + 2;
  pthread_mutex_lock(&cw->mu);
  while (!cw->done && pthread_cond_timedwait(&cw->cv, &cw->mu, &end) != ETIMEDOUT) {
  }
  int done = cw->done;
  pthread_mutex_unlock(&cw->mu);
  if (done) return NULL;
  fprintf(stderr, "mbrun: %s: still running after %d s (an endless loop, in a __gc or one long C "
                  "call?); a configuration file must return its table\n", cw->path, CHECK_SECONDS);
  _exit(2);
}

static long check_config_bounded(const char *path, const char *luadir, size_t *max,
                                 cluster_opts *co, char *err, size_t errlen);

static long check_config(const char *path, const char *luadir, size_t *max, cluster_opts *co,
                         char *err, size_t errlen) {
  check_watch cw = {.done = 0, .path = path};
  pthread_condattr_t ca;
  pthread_t th;
  pthread_mutex_init(&cw.mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&cw.cv, &ca);
  pthread_condattr_destroy(&ca);
  int watched = pthread_create(&th, NULL, check_watchdog, &cw) == 0;
  long workers = check_config_bounded(path, luadir, max, co, err, errlen);
  if (watched) {
    pthread_mutex_lock(&cw.mu);
    cw.done = 1;
    pthread_cond_signal(&cw.cv);
    pthread_mutex_unlock(&cw.mu);
    pthread_join(th, NULL);
  }
  pthread_cond_destroy(&cw.cv);
  pthread_mutex_destroy(&cw.mu);
  return workers;
}

static long check_config_bounded(const char *path, const char *luadir, size_t *max,
                                 cluster_opts *co, char *err, size_t errlen) {
  check_bounds bounds = {0};
  clock_gettime(CLOCK_MONOTONIC, &bounds.t0);
  lua_State *L = lua_newstate(check_alloc, &bounds);
  if (!L) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  lua_sethook(L, check_hook, LUA_MASKCOUNT, 10000); /* coroutines made in L inherit it */
  luaL_openlibs(L);
  long workers = -1;
  lua_pushcfunction(L, require_mb_p); /* a bus of its own, thrown away */
  if (lua_pcall(L, 0, 0, 0) != LUA_OK)
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
  else if (luaL_loadbuffer(L, CHECK_CONFIG, sizeof CHECK_CONFIG - 1, "=config check") == LUA_OK) {
    lua_pushstring(L, path);
    lua_pushstring(L, luadir);
    if (lua_pcall(L, 2, 4, 0) == LUA_OK) {
      workers = (long)lua_tointeger(L, -4);
      *max = (size_t)lua_tointeger(L, -3);
      if (lua_istable(L, -2)) cluster_opts_read(L, lua_gettop(L) - 1, co);
      if (lua_isstring(L, -1)) co->cluster_dest = strdup(lua_tostring(L, -1));
    } else
      snprintf(err, errlen, "%s", lua_tostring(L, -1));
  } else {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
  }
  if (workers < 0 && bounds.out_of_time)
    snprintf(err, errlen, "%s: still running after %d s (an endless loop?); a configuration file "
                          "must return its table", path, CHECK_SECONDS);
  else if (workers < 0 && bounds.out_of_memory && strstr(err, "not enough memory"))
    /* the failure is the refused allocation's (one the file caught is not) */
    snprintf(err, errlen, "%s: needs more than %u MiB of memory to run (a configuration file is "
                          "data)", path, CHECK_MEMORY >> 20);
  lua_sethook(L, NULL, 0, 0); /* the finalizers run when it closes: let them */
  lua_close(L);
  return workers;
}

/* A file mbrun is given (the scenario, the configuration) must be one it
 * can read: else a usage error, before anything starts. */
static int check_file(const char *path, const char *what) {
  struct stat st;
  if (stat(path, &st) || access(path, R_OK)) {
    fprintf(stderr, "mbrun: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  if (S_ISDIR(st.st_mode)) {
    fprintf(stderr, "mbrun: %s is a folder; give the path of %s\n", path, what);
    return -1;
  }
  return 0;
}

/* --graph-out's file must be one mbrun can write, said before anything
 * runs rather than after the whole run. Nothing is created here (the
 * picture is written at exit): an existing file must be writable and not a
 * folder, a new one's folder must be writable. */
static int check_graph_out(const char *path) {
  struct stat st;
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      fprintf(stderr, "mbrun: --graph-out %s: is a folder; give the name of a file\n", path);
      return -1;
    }
    if (access(path, W_OK) == 0) return 0;
  } else if (errno == ENOENT) {
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
      snprintf(dir, sizeof dir, ".");
    else
      snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (access(dir, W_OK | X_OK) == 0) return 0;
  }
  fprintf(stderr, "mbrun: --graph-out %s: cannot write there: %s\n", path, strerror(errno));
  return -1;
}

/* ---- starting: the configuration, then the scenario ------------------------------- */

typedef struct starting {
  mbL_runtime *R;
  const char *scenario; /* NULL: none */
  int nargs;
  char **args;
  int running; /* mb_runtime_run has begun */
  int code;    /* the exit code when starting failed; 0: it did not */
  char why[1024]; /* what to say then ("": said already) */
} starting;

/* Loads the scenario, if any; on failure sets the exit code by the kind of
 * failure: a file that cannot be read is a usage error. */
static void start_scenario(starting *s) {
  if (!s->scenario) return;
  int rc = mbL_runtime_load(s->R, s->scenario, s->nargs, s->args, s->why, sizeof s->why);
  if (rc) s->code = rc == MBL_LOAD_FILE ? 2 : 1;
}

/* boot.lua has ended (worker 0): it returned nothing when the configuration
 * started, then the scenario starts; else its exit code and why, and the
 * run, if it has begun, stops. */
static void booted(void *ud, int code, const char *message) {
  starting *s = ud;
  if (code) {
    s->code = code;
    snprintf(s->why, sizeof s->why, "%s", message ? message : "");
  } else {
    start_scenario(s);
  }
  if (s->code && s->running) mb_runtime_stop(mbL_runtime_core(s->R));
}

typedef struct tracing {
  mb_runtime *rt;
  mb_buf buf;
} tracing;

/* .trace on|off in the REPL */
static void set_trace(void *ud, int on) {
  tracing *t = ud;
  mb_runtime_trace(t->rt, on ? trace_hop : NULL, &t->buf);
}

/* A number of bytes for --max-message-size: digits, then nothing or one of
 * K, KiB, M, MiB, G, GiB (powers of 1024), within the range mb.h gives. */
static int parse_bytes(const char *s, size_t *out) {
  static const struct { const char *suffix; unsigned long long unit; } units[] = {
      {"", 1},           {"K", 1ULL << 10}, {"KiB", 1ULL << 10}, {"M", 1ULL << 20},
      {"MiB", 1ULL << 20}, {"G", 1ULL << 30}, {"GiB", 1ULL << 30}};
  if (!s || *s < '0' || *s > '9') return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno) return -1;
  for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
    if (strcmp(end, units[i].suffix)) continue;
    if (v > MB_MESSAGE_SIZE_MAX / units[i].unit) return -1;
    v *= units[i].unit;
    if (v < MB_MESSAGE_SIZE_MIN) return -1;
    *out = (size_t)v;
    return 0;
  }
  return -1;
}

/* Numbers on the command line are taken as written: a digit first, or a
 * point and a digit (.5, as Lua writes it) — no blank or sign that strtod
 * and strtol would skip — and no hexadecimal. */
static int plain_number(const char *s, const char *allowed) {
  if (!s) return 0;
  const char *d = s[0] == '.' && strchr(allowed, '.') ? s + 1 : s;
  return d[0] >= '0' && d[0] <= '9' && strspn(s, allowed) == strlen(s);
}

static int parse_seconds(const char *s, double *out) {
  char *end;
  if (!plain_number(s, "0123456789.eE+-")) return -1;
  double v = strtod(s, &end);
  if (end == s || *end || !(v >= 0) || v > 1e6) return -1;
  *out = v;
  return 0;
}

/* The options that take a value may be written --NAME=VALUE too, as GNU
 * programs take them (--graph=FMT is an option of its own): a copy of argv
 * with each such word split in two, or NULL when out of memory. The
 * options end at "--" or the script's name. */
static char **split_argv; /* main's argv for the whole run; freed at exit */

static void free_split_argv(void) { free(split_argv); }

static char **split_long_values(int *argc, char **argv) {
  static const char *const names[] = {"--grace", "--graph-out", "--nats", "--node",
                                      "--max-message-size", NULL};
  char **out = split_argv = calloc((size_t)*argc * 2 + 1, sizeof *out);
  if (!out || atexit(free_split_argv)) return NULL;
  int n = 0, i = 0, options = 1;
  out[n++] = argv[i++];
  for (; i < *argc; i++) {
    const char *a = argv[i], *eq = options && a[0] == '-' ? strchr(a, '=') : NULL;
    if (options && (a[0] != '-' || !strcmp(a, "--"))) options = 0;
    const char *split = NULL; /* the option's name, one of names */
    for (int k = 0; eq && names[k] && !split; k++)
      if (strlen(names[k]) == (size_t)(eq - a) && !strncmp(a, names[k], (size_t)(eq - a)))
        split = names[k];
    if (split) {
      out[n++] = (char *)split; /* never written to */
      out[n++] = (char *)eq + 1;
    } else {
      /* a value that follows an option is not an option itself */
      out[n++] = argv[i];
      for (int k = 0; options && names[k]; k++)
        if (!strcmp(a, names[k]) && i + 1 < *argc) out[n++] = argv[++i];
      if (options && (!strcmp(a, "-c") || !strcmp(a, "-w")) && i + 1 < *argc)
        out[n++] = argv[++i];
    }
  }
  out[n] = NULL;
  *argc = n;
  return out;
}

int main(int argc, char **argv) {
  /* a closed stdin/stdout/stderr would be taken by the next file opened
   * (libev's own): keep them taken, by /dev/null */
  for (int fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", fd ? O_WRONLY : O_RDONLY) != fd) return 2;
  int i = 1, stats = 0, trace = 0, graph_fmt = 0, interactive = 0; /* graph: 1 dot, 2 svg */
  int watch = 0;
  long workers = 0;
  size_t max_message = 0; /* 0: the configuration's, else 64 MiB */
  double grace = 5;
  const char *config = NULL, *graph_out = NULL, *nats_url = NULL, *node = NULL;
  cluster_opts co;
  memset(&co, 0, sizeof co);
  if (!(argv = split_long_values(&argc, argv))) {
    fprintf(stderr, "mbrun: out of memory\n");
    return 2;
  }
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
    } else if (!strcmp(a, "--trace")) {
      trace = 1;
    } else if (!strcmp(a, "-i")) {
      interactive = 1;
    } else if (!strcmp(a, "--watch")) {
      watch = 1;
    } else if (!strcmp(a, "--graph") || !strcmp(a, "--graph=dot")) {
      graph_fmt = 1;
    } else if (!strcmp(a, "--graph=svg")) {
      graph_fmt = 2;
    } else if (!strncmp(a, "--graph=", 8)) {
      fprintf(stderr, "mbrun: unknown graph format '%s' (dot or svg)\n", a + 8);
      return 2;
    } else if (!strcmp(a, "--graph-out")) {
      if (i + 1 >= argc || !argv[i + 1][0]) {
        fprintf(stderr, "mbrun: --graph-out needs a file name\n");
        return 2;
      }
      graph_out = argv[++i];
    } else if (!strcmp(a, "--grace")) {
      if (parse_seconds(i + 1 < argc ? argv[i + 1] : NULL, &grace)) {
        fprintf(stderr, "mbrun: --grace needs a number of seconds, 0 or more (at most 1000000; "
                        "not NaN or infinity)%s%s%s\n", i + 1 < argc ? " (not '" : "",
                i + 1 < argc ? argv[i + 1] : "", i + 1 < argc ? "')" : "");
        return 2;
      }
      i++;
    } else if (!strcmp(a, "--nats") || !strcmp(a, "--node")) {
      if (i + 1 >= argc || !argv[i + 1][0]) {
        fprintf(stderr, "mbrun: %s needs %s\n", a,
                a[3] == 'a' ? "the NATS server's URL (e.g. nats://127.0.0.1:4222)"
                            : "this node's name (1-64 characters of A-Z a-z 0-9 _ -)");
        return 2;
      }
      if (a[3] == 'a') {
        nats_url = argv[++i];
        /* nats://USER:PASSWORD@host or nats://TOKEN@host: a secret that
         * `ps` shows to everyone (said without repeating it) */
        const char *sch = strstr(nats_url, "://");
        const char *auth = sch ? sch + 3 : nats_url, *at = strchr(auth, '@');
        if (at) {
          int pw = memchr(auth, ':', (size_t)(at - auth)) != NULL;
          fprintf(stderr, "mbrun: --nats: the URL carries %s, which the command line shows to "
                          "everyone (ps): give %s, or in the configuration's cluster table\n",
                  pw ? "a user and password" : "a token (or a user name)",
                  pw ? "them in MB_NATS_USER and MB_NATS_PASSWORD"
                     : "it in MB_NATS_TOKEN (a user: MB_NATS_USER and MB_NATS_PASSWORD)");
          return 2;
        }
      } else {
        node = argv[++i];
      }
    } else if (!strcmp(a, "--max-message-size")) {
      if (parse_bytes(i + 1 < argc ? argv[i + 1] : NULL, &max_message)) {
        fprintf(stderr, "mbrun: --max-message-size needs a number of bytes from 1024 to "
                        "1073741824, or with K, M or G (KiB, MiB, GiB) from 1K to 1G, e.g. 16M%s%s%s\n",
                i + 1 < argc ? "; not '" : "", i + 1 < argc ? argv[i + 1] : "", i + 1 < argc ? "'" : "");
        return 2;
      }
      i++;
    } else if (!strcmp(a, "-c")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "mbrun: -c needs a configuration file\n");
        return 2;
      }
      if (config) { /* not merged: the first would be left out without a word */
        fprintf(stderr, "mbrun: -c given twice (%s, then %s): mbrun takes one configuration file\n",
                config, argv[i + 1]);
        return 2;
      }
      config = argv[++i];
    } else if (!strcmp(a, "-w")) {
      char *end;
      long n = i + 1 < argc && plain_number(argv[i + 1], "0123456789")
                   ? strtol(argv[i + 1], &end, 10) : 0;
      if (i + 1 >= argc || n < 1 || n > 256) {
        fprintf(stderr, "mbrun: -w needs a number of workers from 1 to 256%s%s%s\n",
                i + 1 < argc ? " (not '" : "", i + 1 < argc ? argv[i + 1] : "",
                i + 1 < argc ? "')" : "");
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
  if (i >= argc && !config) interactive = 1; /* nothing to run: the REPL */
  if (graph_out && !graph_fmt) {
    fprintf(stderr, "mbrun: --graph-out %s: there is no picture to write without --graph; "
                    "add --graph (DOT) or --graph=svg\n", graph_out);
    return 2;
  }
  if (graph_out && check_graph_out(graph_out)) return 2;
  if (graph_fmt == 2 && !mbrun_have_dot()) {
    fprintf(stderr, "mbrun: --graph=svg needs Graphviz's dot program (Debian package graphviz); "
                    "--graph writes the DOT text without it\n");
    return 2;
  }
  char err[1024], luadir[PATH_MAX];
  if ((config || interactive || watch) && find_lua_dir(luadir, sizeof luadir)) {
    fprintf(stderr, "mbrun: cannot find mb/config.lua (set MB_LUA_DIR to the lua/ folder)\n");
    return 2;
  }
  /* the modules this run needs, all there before anything starts (not found
   * out once the scenario runs) */
  const char *needed[] = {config ? "boot.lua" : NULL, config ? "listener_host.lua" : NULL,
                          interactive ? "repl.lua" : NULL, interactive ? "pretty.lua" : NULL,
                          watch ? "watch.lua" : NULL};
  for (size_t k = 0; k < sizeof needed / sizeof *needed; k++) {
    char probe[PATH_MAX + 64];
    if (!needed[k]) continue;
    snprintf(probe, sizeof probe, "%s/mb/%s", luadir, needed[k]);
    if (access(probe, R_OK)) {
      fprintf(stderr, "mbrun: cannot find mb/%s in %s (MB_LUA_DIR: set it to the lua/ folder)\n",
              needed[k], luadir);
      return 2;
    }
  }
  if (i < argc && check_file(argv[i], "a Lua script")) return 2;
  if (config) {
    if (check_file(config, "a configuration file (Lua returning a table)")) return 2;
    struct stat cst;
    if (stat(config, &cst) == 0 && !S_ISREG(cst.st_mode)) {
      /* boot.lua reads it again: a pipe would give it nothing the second time */
      fprintf(stderr, "mbrun: %s: not a regular file (a pipe?): mbrun reads the configuration "
                      "twice, to check it and to start it; give the path of a file\n", config);
      return 2;
    }
    size_t max = 0;
    long w = check_config(config, luadir, &max, &co, err, sizeof err);
    if (w < 0) {
      fprintf(stderr, "mbrun: %s\n", err);
      cluster_opts_free(&co);
      return 2;
    }
    if (!workers) workers = w; /* -w overrides the configuration */
    if (!max_message) max_message = max; /* as does --max-message-size */
  }
  if (!workers) workers = mb_cpu_count(); /* the CPUs it may use, as nproc counts them */
  if (workers < 1) workers = 1;
  /* the command line over the configuration; secrets only from there or
   * the environment (SPEC section 6) */
  if (nats_url) {
    free(co.s[0]);
    co.s[0] = strdup(nats_url);
  }
  if (node) {
    free(co.s[2]);
    co.s[2] = strdup(node);
  }
  if (node && !co.s[0]) {
    fprintf(stderr, "mbrun: --node names this node in a cluster: give the server too (--nats URL, "
                    "or cluster = {url = ...} in the configuration)\n");
    cluster_opts_free(&co);
    return 2;
  }
  if (co.cluster_dest && !co.s[0]) {
    fprintf(stderr, "mbrun: %s: %s is a cluster destination, but no cluster is configured "
                    "(give --nats URL, or cluster = {url = ...} in the configuration)\n",
            config, co.cluster_dest);
    cluster_opts_free(&co);
    return 2;
  }

  shutdown_ctl ctl;
  memset(&ctl, 0, sizeof ctl);
  mb_config core_cfg = {(int)workers, max_message};
  mbL_runtime *R = mbL_runtime_new_config(&core_cfg);
  if (!R) {
    fprintf(stderr, "mbrun: out of memory\n");
    return 1;
  }
  mb_runtime *rt = mbL_runtime_core(R);
  if (co.s[0]) {
    mb_cluster_config cc = {.url = co.s[0], .ns = co.s[1], .node = co.s[2], .user = co.s[3],
                            .password = co.s[4], .token = co.s[5], .creds = co.s[6],
                            .tls_ca = co.s[7], .tls_cert = co.s[8], .tls_key = co.s[9]};
    int bad = mbL_cluster_join(R, &cc, err, sizeof err);
    cluster_opts_free(&co);
    if (bad) {
      fprintf(stderr, "mbrun: cluster: %s\n", err);
      mbL_runtime_free(R);
      return 2;
    }
  }
  cluster_opts_free(&co);
  /* the whole program is one run: an mb.stop() in the scenario's body, before
   * the loop starts, still ends it */
  mb_runtime_running(rt, 1);
  tracing tr = {rt, {0}};
  if (trace) set_trace(&tr, 1);
  if (interactive && !(repl = mbrepl_new(R, isatty(0) && isatty(1), set_trace, &tr))) {
    fprintf(stderr, "mbrun: out of memory\n");
    mbL_runtime_free(R);
    return 1;
  }
  mb_runtime_observe(rt, (stats ? MB_OBSERVE_LATENCY | MB_OBSERVE_REMOVED : 0) |
                             (graph_fmt ? MB_OBSERVE_GRAPH : 0));
  mbrun_signals_start(&ctl, rt, R, grace, repl);

  starting st = {R, NULL, 0, NULL, 0, 0, ""};
  if (i < argc) {
    st.scenario = argv[i];
    st.nargs = argc - i - 1;
    st.args = argv + i + 1;
  }
  if (config) {
    /* boot.lua: config path, lua dir; the scenario once it has returned */
    char boot[PATH_MAX + 32];
    snprintf(boot, sizeof boot, "%s/mb/boot.lua", luadir);
    char *args[] = {(char *)config, luadir};
    if (mbL_runtime_boot(R, boot, 2, args, booted, &st, st.why, sizeof st.why)) st.code = 1;
  } else {
    start_scenario(&st);
  }
  if (!st.code && watch) { /* reloads what changes (lua/mb/watch.lua) */
    char wpath[PATH_MAX + 32];
    snprintf(wpath, sizeof wpath, "%s/mb/watch.lua", luadir);
    if (mbL_runtime_load(R, wpath, 0, NULL, st.why, sizeof st.why)) st.code = 1;
  }
  if (!st.code && repl && mbrepl_start(repl, luadir, st.why, sizeof st.why)) st.code = 1;
  int rc = 0;
  size_t unanswered = 0; /* requests with no time limit left waiting */
  if (!st.code) {
    /* without a scenario the configured services run until a signal */
    int serve = config && i >= argc;
    if (serve) mb_runtime_hold(rt, 1);
    st.running = 1;
    int stopped = mb_runtime_run(rt, 0);
    st.running = 0;
    if (serve) mb_runtime_hold(rt, -1);
    mbrepl_close(repl); /* whoever ended the run, the REPL is over */
    if (stopped) {
      mbrun_drain(&ctl, grace);
    } else { /* idle: a request still open has no timer, and nothing can answer it */
      mb_counts c;
      mb_runtime_counts(rt, &c);
      unanswered = c.unlimited;
    }
  }
  int stuck = mbrun_loop_over(&ctl, R); /* from here on main bounds the rest */
  if (st.code) {
    if (st.why[0]) fprintf(stderr, "mbrun: %s\n", st.why);
    rc = st.code;
  }
  mbrepl_close(repl);
  mbrun_signals_stop(&ctl);

  if (mbrun_report(rt, stats, repl != NULL, mbL_runtime_failures(R))) rc = rc ? rc : 1;
  if (unanswered) {
    fprintf(stderr, "mbrun: %zu request%s with timeout = math.huge still wait%s for a reply that "
                    "nothing left can send\n", unanswered, unanswered > 1 ? "s" : "",
            unanswered > 1 ? "" : "s");
    rc = rc ? rc : 1;
  }
  if (graph_fmt && mbrun_emit_graph(rt, graph_fmt == 2, graph_out, repl != NULL)) rc = rc ? rc : 1;
  if (stuck) {
    fprintf(stderr, "mbrun: %d handler%s did not stop when aborted (blocked in C, or running in "
                    "a coroutine of its own?): exiting without waiting for %s\n",
            stuck, stuck > 1 ? "s" : "", stuck > 1 ? "them" : "it");
    fflush(stdout);
    _exit(rc ? rc : 1);
  }
  mbrun_interrupter_stop(); /* before the runtime goes: it aborts in it */
  mbL_runtime_free(R);
  mbrepl_free(repl);
  repl = NULL;
  mb_buf_free(&tr.buf);
  return rc;
}
