/*
 * mbrun.c — the mbrun program: runs a scenario script as the first service
 * of a fresh runtime, runs the bus until the scenario has returned and all
 * work is done (or mb.stop()), then says what went wrong, if anything, and
 * exits 0 (success), 1 (a script or delivery failed, messages left pending)
 * or 2 (usage). Tests: spec/mbrun_spec.lua.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmb.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: mbrun [options] SCENARIO.lua [ARGS...]\n"
          "\n"
          "Runs SCENARIO.lua as the first service of a message bus, then runs the bus\n"
          "until the scenario has returned and every message has been delivered.\n"
          "The script gets ARGS as `...` and the bus as the global `mb`.\n"
          "\n"
          "options:\n"
          "  -w N          worker threads, each with its own event loop\n"
          "                (default: the number of cores)\n"
          "  --stats       print a table of destination statistics at exit\n"
          "  -h, --help    show this help\n"
          "  --version     show the version\n"
          "\n"
          "exit status: 0 success; 1 the scenario raised, a delivery failed or was\n"
          "dropped, or messages were left pending; 2 usage error.\n");
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

int main(int argc, char **argv) {
  int i = 1, stats = 0;
  long workers = sysconf(_SC_NPROCESSORS_ONLN);
  if (workers < 1) workers = 1;
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
  if (i >= argc) {
    fprintf(stderr, "mbrun: no scenario given (see mbrun --help)\n");
    return 2;
  }
  mbL_runtime *R = mbL_runtime_new((int)workers);
  if (!R) {
    fprintf(stderr, "mbrun: out of memory\n");
    return 1;
  }
  char err[1024];
  if (mbL_runtime_load(R, argv[i], argc - i - 1, argv + i + 1, err, sizeof err)) {
    fprintf(stderr, "mbrun: %s\n", err);
    mbL_runtime_free(R);
    return strncmp(err, "cannot open", 11) == 0 ? 2 : 1;
  }
  mb_runtime_run(mbL_runtime_core(R), 0);

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
