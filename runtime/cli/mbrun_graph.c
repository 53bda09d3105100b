/*
 * mbrun_graph.c — mbrun --graph (see mbrun_graph.h): copies the edges the
 * core observed, sorts them so every run of the same system gives the same
 * text, writes DOT, and for SVG pipes it through `dot` started with
 * posix_spawnp.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mbrun_graph.h"

extern char **environ;

/* The REPL's own destination, left out of the picture when the REPL ran. */
static int hide_repl;
static int hidden(const char *dest) { return hide_repl && !strcmp(dest, "mb/repl"); }

/* A service as people call it: its script's name without folder and .lua
 * ("examples/jungle-gyms/sales.lua" -> "sales"); "-" for none. */
void mbrun_short_name(const char *name, char *out, size_t cap) {
  if (!name) name = "-";
  const char *slash = strrchr(name, '/');
  if (slash && slash[1]) name = slash + 1;
  size_t n = strlen(name);
  if (n > 4 && !strcmp(name + n - 4, ".lua")) n -= 4;
  if (n >= cap) n = cap - 1;
  memcpy(out, name, n);
  out[n] = 0;
  /* a name is any string (mb.load's name): a newline or an escape would
   * break a --trace line, or the terminal's state */
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f) out[i] = '?';
}


/* ---- --graph ------------------------------------------------------------------- */

typedef struct graph {
  FILE *out;
  mb_runtime *rt;
  mb_edge *v; /* a copy of the edges, names included, taken under the lock */
  size_t n, cap;
  int oom;
} graph;

static const char *const DEST_TYPES[] = {"parallel", "serial", "synchronous"};

static void dot_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static void dot_dest(FILE *f, const char *name, mb_dest_type type) {
  static const char *const colors[] = {"#dbe9f6", "#fde7c8", "#e3f1df"};
  fputs("  ", f);
  dot_string(f, name);
  fprintf(f, " [shape=cds, style=filled, fillcolor=\"%s\", label=\"%s\\n(%s)\"];\n",
          colors[type], name, DEST_TYPES[type]); /* names are [A-Za-z0-9_./:-] */
}

/* A service's node: "svc:NAME", apart from destinations of the same name. */
static void dot_svc(FILE *f, const char *service) {
  char name[64], id[80];
  mbrun_short_name(service, name, sizeof name);
  snprintf(id, sizeof id, "svc:%s", name);
  dot_string(f, id);
}

static void graph_dest(void *ud, const char *name) {
  graph *g = ud;
  mb_stats st;
  if (!hidden(name) && mb_dest_stats(g->rt, name, &st) == MB_OK) dot_dest(g->out, name, st.type);
}

/* Under the runtime's lock: copy, call nothing. */
static void graph_copy(void *ud, const mb_edge *e) {
  graph *g = ud;
  if (hidden(e->dest)) return;
  if (g->n == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 32;
    mb_edge *v = realloc(g->v, cap * sizeof *v);
    if (!v) {
      g->oom = 1;
      return;
    }
    g->v = v;
    g->cap = cap;
  }
  mb_edge c = *e;
  c.service = strdup(e->service);
  c.dest = strdup(e->dest);
  if (!c.service || !c.dest) {
    free((char *)c.service);
    free((char *)c.dest);
    g->oom = 1;
    return;
  }
  g->v[g->n++] = c;
}

static int edge_cmp(const void *a, const void *b) {
  const mb_edge *x = a, *y = b;
  int c = strcmp(x->service, y->service);
  if (!c) c = strcmp(x->dest, y->dest);
  return c ? c : x->listens - y->listens;
}

/* Writes the DOT text (a node may be written twice: Graphviz merges them). */
static int write_dot(FILE *f, mb_runtime *rt) {
  graph g = {f, rt, NULL, 0, 0, 0};
  mb_graph_each(rt, graph_copy, &g);
  if (g.n) qsort(g.v, g.n, sizeof *g.v, edge_cmp); /* the same picture every run */
  fputs("digraph mb {\n"
        "  rankdir=LR;\n"
        "  node [fontname=\"Helvetica\", fontsize=11];\n"
        "  edge [color=\"#555555\"];\n",
        f);
  mb_dest_each(rt, graph_dest, &g);
  for (size_t i = 0; i < g.n; i++) {
    const mb_edge *e = &g.v[i];
    char name[64];
    mbrun_short_name(e->service, name, sizeof name);
    if (!mb_dest_exists(rt, e->dest)) dot_dest(f, e->dest, e->type); /* removed since */
    size_t seen = 0;
    while (seen < i && strcmp(g.v[seen].service, e->service)) seen++;
    if (seen < i) continue; /* written already */
    fputs("  ", f);
    dot_svc(f, e->service);
    fputs(" [shape=box, style=\"rounded,filled\", fillcolor=\"#f2f2f2\", label=", f);
    dot_string(f, name);
    fputs("];\n", f);
  }
  for (size_t i = 0; i < g.n; i++) {
    const mb_edge *e = &g.v[i];
    fputs("  ", f);
    if (e->listens) {
      dot_string(f, e->dest);
      fputs(" -> ", f);
      dot_svc(f, e->service);
      fputs(";\n", f);
    } else {
      dot_svc(f, e->service);
      fputs(" -> ", f);
      dot_string(f, e->dest);
      fputs(" [style=bold];\n", f);
    }
  }
  fputs("}\n", f);
  for (size_t i = 0; i < g.n; i++) {
    free((char *)g.v[i].service);
    free((char *)g.v[i].dest);
  }
  free(g.v);
  if (g.oom) fprintf(stderr, "mbrun: out of memory: the graph misses some edges\n");
  return g.oom;
}

/* --graph: DOT, or SVG through Graphviz's dot; to out_path or stdout. */
int mbrun_emit_graph(mb_runtime *rt, int svg, const char *out_path, int repl) {
  hide_repl = repl;
  if (!svg) {
    FILE *f = out_path ? fopen(out_path, "w") : stdout;
    if (!f) {
      fprintf(stderr, "mbrun: cannot write the graph to %s: %s\n", out_path, strerror(errno));
      return 1;
    }
    int rc = write_dot(f, rt);
    int bad = ferror(f);
    if ((out_path ? fclose(f) : fflush(f)) || bad) { /* a full disk: say so */
      fprintf(stderr, "mbrun: cannot write the graph to %s: %s\n", out_path ? out_path : "stdout",
              strerror(errno ? errno : EIO));
      return 1;
    }
    return rc ? 1 : 0;
  }
  /* dot reads the DOT text from a pipe; no shell, so any file name works */
  int fds[2];
  if (pipe(fds)) {
    fprintf(stderr, "mbrun: cannot run dot: %s\n", strerror(errno));
    return 1;
  }
  fflush(stdout);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[0], 0);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  char *args[] = {"dot", "-Tsvg", out_path ? "-o" : NULL, (char *)out_path, NULL};
  pid_t pid;
  int err = posix_spawnp(&pid, "dot", &fa, NULL, args, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[0]);
  if (err) {
    close(fds[1]);
    fprintf(stderr, "mbrun: cannot run dot: %s\n", strerror(err));
    return 1;
  }
  FILE *p = fdopen(fds[1], "w");
  int bad = p ? write_dot(p, rt) : 1;
  if (p)
    bad |= fclose(p) != 0;
  else
    close(fds[1]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st)) {
    fprintf(stderr, "mbrun: dot -Tsvg failed (status %d)\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 1;
  }
  return bad;
}

int mbrun_have_dot(void) { return system("command -v dot >/dev/null 2>&1") == 0; }

