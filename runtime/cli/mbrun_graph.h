/*
 * mbrun_graph.h — mbrun --graph: the services, destinations and listener
 * mappings a run used (MB_OBSERVE_GRAPH), as Graphviz DOT or, through
 * `dot`, SVG. Tests: spec/cli/trace_spec.lua (graph cases).
 */
#ifndef MBRUN_GRAPH_H
#define MBRUN_GRAPH_H

#include "mb.h"

/* Writes the picture of rt's run to out_path (NULL: stdout), as SVG when
 * svg is set (runs `dot`, no shell); with repl set, the REPL's own
 * destination mb/repl is left out. Returns 0, or 1 after saying why on
 * stderr. */
int mbrun_emit_graph(mb_runtime *rt, int svg, const char *out_path, int repl);
/* A service as the trace and the graph show it: its file name without
 * folder and ".lua" ("examples/jungle-gyms/sales.lua" -> "sales"); "-" for
 * none (NULL). */
void mbrun_short_name(const char *name, char *out, size_t cap);
/* Whether `dot` (Debian graphviz) is on the PATH. */
int mbrun_have_dot(void);

#endif
