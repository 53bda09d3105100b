/*
 * mbrun_stats.h — what mbrun says at the end of a run: the --stats table
 * (destinations removed during the run too) and the summary of what went
 * wrong (failed, dropped, pending, still running, script errors).
 * Tests: spec/cli/mbrun_spec.lua, spec/cli/trace_spec.lua (--stats).
 */
#ifndef MBRUN_STATS_H
#define MBRUN_STATS_H

#include <stddef.h>

#include "mb.h"

/* Prints the --stats table when stats is set, then one line per kind of
 * trouble, on stderr; with repl set, the REPL's mb/repl is left out.
 * failures: the scripts' errors counted by the binding. Returns 1 when
 * anything went wrong (mbrun then exits 1), else 0. */
int mbrun_report(mb_runtime *rt, int stats, int repl, int failures);
/* A duration for people: 850ns, 12.5us, 3.20ms, 1.50s; "-" for none. */
const char *mbrun_duration(double s, char *buf, size_t cap);

#endif
