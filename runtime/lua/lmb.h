/*
 * lmb.h — the `mb` Lua module (runtime/lua: lmb.c and the mbl_*.c files it
 * gathers) as seen by the mbrun program: a Lua runtime is the core runtime
 * plus the Lua states of its services.
 */
#ifndef LMB_H
#define LMB_H

#include <lua.h>

#include "cluster/mb_cluster.h"
#include "mb.h"

typedef struct mbL_runtime mbL_runtime;

/* luaopen_mb: `require "mb"` in a plain Lua program creates a runtime owned
 * by that Lua state; in states the runtime creates, it binds to it. */
int luaopen_mb(lua_State *L);

/* A runtime for a program that has no Lua state of its own (mbrun). NULL
 * when out of memory. */
mbL_runtime *mbL_runtime_new(int workers);
/* The same with the core's configuration (workers, max_message_size). */
mbL_runtime *mbL_runtime_new_config(const mb_config *cfg);
/* Stops every service (closing its Lua state) and frees the runtime. */
void mbL_runtime_free(mbL_runtime *R);
mb_runtime *mbL_runtime_core(mbL_runtime *R);

/* Joins the cluster of cfg (SPEC §6; runtime/cluster/mb_cluster.h), from
 * worker 0's thread before the bus runs (mbrun's --nats, the
 * configuration's cluster): 0, or -1 with why in err (never a secret). The
 * runtime leaves it when freed. */
/* Interrupts the Lua code running now in the services called name: the
 * error why (a string that outlives them) is raised once where it runs, so
 * a pcall may catch it (lua.c's Ctrl-C). From any thread. Returns how many
 * were running code. */
int mbL_runtime_interrupt_service(mbL_runtime *R, const char *name, const char *why);

/* Calls fn(ud), on the thread of the service, when an interrupt found its
 * code running but the code stopped running before the interrupt reached
 * it (it went into a wait: mb.sleep, a request) and it was not raised
 * (mbrun's REPL then stops waiting for the line). Set it before loading
 * any service. */
void mbL_runtime_on_interrupt_missed(mbL_runtime *R, void (*fn)(void *ud), void *ud);

int mbL_cluster_join(mbL_runtime *R, const mb_cluster_config *cfg, char *err, size_t errlen);

/* What mbL_runtime_load returns when it cannot start the script: */
enum {
  MBL_LOAD_FILE = -2, /* the file cannot be opened or read (mbrun: a usage error) */
  MBL_LOAD_FAILED = -1 /* a syntax error, or out of memory */
};

/* Loads the script at path as a new service (its own Lua state) on worker
 * 0 and starts its body with the strings args as `...`. Returns 0, or
 * MBL_LOAD_FILE or MBL_LOAD_FAILED with a message in err. What the body
 * raises is reported as for any script (stream 2, counted in
 * mbL_runtime_failures). */
int mbL_runtime_load(mbL_runtime *R, const char *path, int argc, char **argv, char *err,
                     size_t errlen);

/* mbL_runtime_load, and once the body has ended (maybe before this
 * returns, maybe later from the loop, on worker 0) done(ud, code, message)
 * is called once: code 0 and "" when the body returned nothing, code N and
 * its message when it returned N and a message (mbrun's boot script), 1 and
 * NULL when it raised (reported already). Not called when this fails. */
typedef void (*mbL_end_fn)(void *ud, int code, const char *message);
int mbL_runtime_boot(mbL_runtime *R, const char *path, int argc, char **argv, mbL_end_fn done,
                     void *ud, char *err, size_t errlen);

/* Script bodies (scenario, services) that started and have not ended. */
int mbL_runtime_bodies(mbL_runtime *R);

/* Timers (mb.after, mb.every) set in any service and not yet over. */
long mbL_runtime_timers(mbL_runtime *R);

/* Scripts, timers, spawned tasks or event callbacks that raised so far. */
int mbL_runtime_failures(const mbL_runtime *R);

/* Calls fn(ud), on the caller's thread, whenever a script calls mb.stop()
 * (mbrun: the grace period starts even if worker 0 is busy). Set it before
 * loading any service. */
void mbL_runtime_on_stop(mbL_runtime *R, void (*fn)(void *ud), void *ud);

/* From any thread: aborts the Lua calls running now in every service (a
 * handler, a timer callback, a script body), which fail with the error
 * reason (a string that outlives R), and every call that would start from
 * now on: deliveries are dropped, other calls fail at their first
 * instruction. Code stuck in C (a blocking read) is not reached. Returns
 * the number of services that were running a call. For shutting down. */
int mbL_runtime_abort(mbL_runtime *R, const char *reason);

/* Calls fn(ud, name) for each service instance mb.services() lists (a
 * name once per instance), with the runtime's lock held: fn may copy the
 * name, and must call nothing of the bus. Any thread. */
void mbL_runtime_each_service(mbL_runtime *R, void (*fn)(void *ud, const char *name), void *ud);

/* Services running a Lua call now (any thread). */
int mbL_runtime_busy(mbL_runtime *R);

/* Where the services' output goes: print (stream 1) and the reports of
 * scripts and listeners that failed (stream 2). fn gets one whole line (or
 * report) per call, from any worker's thread. Set it before loading any
 * service; NULL (the default) writes to stdout and stderr. */
typedef void (*mbL_output_fn)(void *ud, int stream, const char *text, size_t len);
void mbL_runtime_output(mbL_runtime *R, mbL_output_fn fn, void *ud);

#endif
