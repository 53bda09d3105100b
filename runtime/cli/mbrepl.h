/*
 * mbrepl.h — mbrun's REPL front end (mbrepl.c): reads what the user types
 * and hands each line to the REPL service (lua/mb/repl.lua), while the bus
 * keeps running on the same loop.
 */
#ifndef MBREPL_H
#define MBREPL_H

#include <stddef.h>

#include "lmb.h"

typedef struct mbrepl mbrepl;

/* Turns tracing on or off for `.trace on|off`. */
typedef void (*mbrepl_trace_fn)(void *ud, int on);

/* Before any service is loaded: routes the services' output (print, failure
 * reports) through the REPL, so that it appears above the prompt. tty: use
 * the line editor (stdin and stdout are terminals); else read stdin line by
 * line, no prompt. NULL when out of memory. */
mbrepl *mbrepl_new(mbL_runtime *R, int tty, mbrepl_trace_fn trace, void *trace_ud);

/* Opens the REPL on worker 0's loop: declares mb/repl, loads luadir's
 * mb/repl.lua as a service, loads the history, and starts reading once that
 * service listens. The bus is held busy until the user leaves (Ctrl-D,
 * .quit, end of piped input); then mb_runtime_stop ends mbrun's run.
 * Returns 0, or -1 with a message in err. */
int mbrepl_start(mbrepl *r, const char *luadir, char *err, size_t errlen);

/* SIGINT while the REPL reads a terminal: cancels the line being edited
 * (or stops waiting for the line that runs). Returns 1 when it took the
 * signal, 0 when mbrun should handle it (piped input, REPL closed). */
int mbrepl_interrupt(mbrepl *r);
/* 1 when r reads a terminal: only then is SIGINT its Ctrl-C (piped, SIGINT
 * stops mbrun as SIGTERM does). 0 for NULL. Async-signal-safe. */
int mbrepl_tty(const mbrepl *r);
/* From any thread but the loop's (mbrun's interrupter, on Ctrl-C): aborts
 * the Lua code of the line running in the REPL service, as lua's prompt
 * does ("interrupted"). 1 when there was code running to abort. */
int mbrepl_abort_line(mbrepl *r);


/* Writes text (stream 1 stdout, 2 stderr) above the prompt; any thread. */
void mbrepl_write(mbrepl *r, int stream, const char *text, size_t len);

/* After the run, before mbL_runtime_free: stops its watchers, writes the
 * history, gives the terminal back; output goes straight out from now on. */
void mbrepl_close(mbrepl *r);
/* After mbL_runtime_free (the services' output goes through r until then). */
void mbrepl_free(mbrepl *r);

#endif
