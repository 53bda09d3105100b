/*
 * mbrun_stats.c — what mbrun says at the end of a run (mbrun_stats.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbrun_stats.h"

/* The REPL's own destination, left out when the REPL ran. */
static int hide_repl;
static int hidden(const char *dest) { return hide_repl && !strcmp(dest, "mb/repl"); }

typedef struct summary {
  mb_runtime *rt;
  unsigned long long failed, dropped, pending, running;
  char failed_at[512], dropped_at[512], pending_at[512], running_at[512];
  int stats;
} summary;

static void note(char *buf, size_t cap, const char *name, unsigned long long n) {
  size_t len = strlen(buf);
  if (len + 1 >= cap) return;
  snprintf(buf + len, cap - len, "%s%s: %llu", len ? ", " : "", name, n);
}

const char *mbrun_duration(double s, char *buf, size_t cap) {
  if (s <= 0)
    snprintf(buf, cap, "-");
  else if (s < 1e-6)
    snprintf(buf, cap, "%.0fns", s * 1e9);
  else if (s < 1e-3)
    snprintf(buf, cap, "%.1fus", s * 1e6);
  else if (s < 1)
    snprintf(buf, cap, "%.2fms", s * 1e3);
  else
    snprintf(buf, cap, "%.2fs", s);
  return buf;
}

/* A row of the --stats table: name, then mark (" (removed)" or ""). */
static void print_stats_row(const char *name, const char *mark, const mb_stats *st) {
  static const char *const types[] = {"parallel", "serial", "synchronous"};
  char mean[16], p99[16], shown[512];
  snprintf(shown, sizeof shown, "%s%s", name, mark);
  fprintf(stderr,
          "%-28s %-11s %5zu %8llu %8llu %7llu %7llu %7llu %7zu %7llu %8llu %8s %8s\n", shown,
          types[st->type], st->listeners, (unsigned long long)st->sent,
          (unsigned long long)st->delivered, (unsigned long long)st->failed,
          (unsigned long long)st->dropped, (unsigned long long)st->rejected, st->largest_pending,
          (unsigned long long)st->replies, (unsigned long long)st->timeouts,
          mbrun_duration(st->latency_mean, mean, sizeof mean), mbrun_duration(st->latency_p99, p99, sizeof p99));
}

static void visit(void *ud, const char *name) {
  summary *s = ud;
  mb_stats st;
  if (hidden(name) || mb_dest_stats(s->rt, name, &st)) return;
  if (st.failed) note(s->failed_at, sizeof s->failed_at, name, st.failed);
  if (st.dropped) note(s->dropped_at, sizeof s->dropped_at, name, st.dropped);
  if (st.pending) note(s->pending_at, sizeof s->pending_at, name, st.pending);
  if (st.in_flight) note(s->running_at, sizeof s->running_at, name, st.in_flight);
  s->failed += st.failed;
  s->dropped += st.dropped;
  s->pending += st.pending;
  s->running += st.in_flight;
  if (s->stats) print_stats_row(name, "", &st);
}

/* The destinations removed during the run (MB_OBSERVE_REMOVED), copied
 * under the runtime's lock, printed after it in name order. */
typedef struct removed_row {
  char *name;
  mb_stats st;
} removed_row;

typedef struct removed_rows {
  removed_row *v;
  size_t n, cap;
} removed_rows;

static void copy_removed(void *ud, const char *name, const mb_stats *st) {
  removed_rows *r = ud;
  if (hidden(name)) return;
  if (r->n == r->cap) {
    size_t cap = r->cap ? 2 * r->cap : 16;
    removed_row *v = realloc(r->v, cap * sizeof *v);
    if (!v) return; /* the table misses a row */
    r->v = v;
    r->cap = cap;
  }
  if ((r->v[r->n].name = strdup(name))) r->v[r->n++].st = *st;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const removed_row *)a)->name, ((const removed_row *)b)->name);
}

static void print_removed(mb_runtime *rt) {
  removed_rows r = {0};
  mb_removed_each(rt, copy_removed, &r);
  if (r.n) qsort(r.v, r.n, sizeof *r.v, by_name);
  for (size_t i = 0; i < r.n; i++) {
    print_stats_row(r.v[i].name, " (removed)", &r.v[i].st);
    free(r.v[i].name);
  }
  free(r.v);
}

static void print_stats_header(void) {
  fprintf(stderr, "%-28s %-11s %5s %8s %8s %7s %7s %7s %7s %7s %8s %8s %8s\n", "destination",
          "type", "lsnrs", "sent", "deliv'd", "failed", "dropped", "reject", "max_pnd", "replies",
          "timeouts", "mean", "p99");
}

int mbrun_report(mb_runtime *rt, int stats, int repl, int failures) {
  summary s;
  memset(&s, 0, sizeof s);
  s.rt = rt;
  s.stats = stats;
  int bad = 0;
  hide_repl = repl;
  if (stats) print_stats_header();
  mb_dest_each(rt, visit, &s);
  if (stats) print_removed(rt);
  /* what removed destinations failed or dropped counts as well */
  mb_counts c;
  mb_runtime_counts(rt, &c);
  if (c.failed > s.failed) note(s.failed_at, sizeof s.failed_at, "removed destinations", c.failed - s.failed);
  if (c.dropped > s.dropped)
    note(s.dropped_at, sizeof s.dropped_at, "removed destinations", c.dropped - s.dropped);
  s.failed = c.failed;
  s.dropped = c.dropped;
  if (failures) {
    fprintf(stderr, "mbrun: %d script error%s (see above)\n", failures, failures > 1 ? "s" : "");
    bad = 1;
  }
  if (s.failed) {
    fprintf(stderr, "mbrun: %llu deliver%s failed (%s)\n", s.failed, s.failed > 1 ? "ies" : "y",
            s.failed_at);
    bad = 1;
  }
  if (s.dropped) {
    fprintf(stderr, "mbrun: %llu deliver%s dropped (%s)\n", s.dropped,
            s.dropped > 1 ? "ies" : "y", s.dropped_at);
    bad = 1;
  }
  if (s.pending) {
    fprintf(stderr, "mbrun: %llu message%s left pending, undelivered (%s)\n", s.pending,
            s.pending > 1 ? "s" : "", s.pending_at);
    bad = 1;
  }
  if (s.running) {
    fprintf(stderr, "mbrun: %llu deliver%s still running, cut short (%s)\n", s.running,
            s.running > 1 ? "ies were" : "y was", s.running_at);
    bad = 1;
  }
  return bad;
}
