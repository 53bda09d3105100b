/*
 * mb_nats_ev.h — runs a nats.c connection (libnats) on a libev loop.
 *
 * nats.c drives its socket through four callbacks (natsOptions_SetEventLoop)
 * and calls them from its own threads too: the connecting thread, the
 * reconnect thread, publishers on any thread, its timers. libev watchers
 * belong to the loop's thread, so this adapter keeps the wanted state (socket,
 * read and write interest, attached or not) under a mutex and brings the
 * watchers to it on the loop thread: at once when the call comes from the loop
 * thread, else after an ev_async_send (several sends fold into one callback;
 * the state, not a queue of events, is what is applied, so folding loses
 * nothing).
 *
 * Writing: the adapter turns nats.c's SendAsap on. With an event loop that
 * option does not write per publish: nats.c appends to its buffer and asks
 * once for write interest; the adapter then writes the whole buffer from an
 * ev_prepare watcher, once per loop turn (optimistically, without waiting for
 * EV_WRITE), and only when the socket is full does it wait for EV_WRITE. So
 * what a loop turn publishes leaves in one send(), with no 1 ms flusher
 * thread and no extra loop turn.
 *
 * Reading: an ev_io (on a duplicate of the socket that the adapter owns and
 * closes on the loop thread, so that nats.c closing its fd from another
 * thread never leaves libev with a closed fd) calls
 * natsConnection_ProcessReadEvent on the loop thread;
 * messages of async subscriptions still go to nats.c's delivery threads, those
 * of sync subscriptions wait in the subscription: the read hook (set with
 * mb_nats_ev_set_read_hook) runs on the loop thread after every read and may
 * poll them (natsSubscription_GetPending, then natsSubscription_NextMsg with
 * timeout 0) with no thread hop.
 *
 * Blocking calls (natsConnection_Flush, _Request, _Drain, JetStream
 * management) must not run on the loop thread: what they wait for only
 * leaves when the loop turns (natsConnection_FlushTimeout there times out).
 *
 * Ownership: the caller owns the adapter and creates and frees it on the
 * loop's thread; one adapter serves one connection. Free it only after that
 * connection was closed (natsConnection_Close or _Destroy returned): nats.c
 * calls no callback after its detach. A detach from another thread waits
 * until the loop thread is out of nats.c's read/write processing, so the
 * connection may be destroyed from any thread once Close returned. No Lua
 * here; the core never prints. Tests: spec/c/test_nats_ev.c (make nats-tests).
 */
#ifndef MB_NATS_EV_H
#define MB_NATS_EV_H

#include <stdint.h>

#include <ev.h>
#include "mb_nats_lib.h"

typedef struct mb_nats_ev mb_nats_ev;

/* Counters for tests and benchmarks (a consistent snapshot). */
typedef struct mb_nats_ev_stats {
  uint64_t attaches;  /* nats.c attached a socket: the connect and each reconnect */
  uint64_t detaches;  /* nats.c detached (the connection closed) */
  uint64_t wakeups;   /* ev_async callbacks run (requests from other threads) */
  uint64_t remote;    /* callbacks nats.c made from other threads */
  uint64_t flushes;   /* optimistic writes from the prepare watcher */
  uint64_t blocked;   /* of them, how many left data behind (waited for EV_WRITE) */
  uint64_t reads;     /* read events processed */
  /* the state now (for diagnosis) */
  int want_read, want_write, write_blocked, io_events;
} mb_nats_ev_stats;

/* Creates an adapter on `loop`. Call it on the thread that runs the loop (it
 * is remembered as the loop thread). NULL when out of memory. */
mb_nats_ev *mb_nats_ev_new(struct ev_loop *loop);

/* Installs the adapter in `opts` (natsOptions_SetEventLoop) and turns
 * SendAsap on (see above). Returns nats.c's status. The adapter must outlive
 * every connection made with these options (one at a time). */
natsStatus mb_nats_ev_setup(mb_nats_ev *a, natsOptions *opts);

/* Makes the connection's watchers keep the loop alive no more (libev's
 * ev_unref): for a loop whose life something else decides (mb's workers,
 * which run until the bus is idle). Call before the connection attaches. */
void mb_nats_ev_weak(mb_nats_ev *a);

/* Sets the function the loop thread calls after each read event (NULL: none).
 * It runs outside the adapter's lock and may publish, poll subscriptions or
 * close the connection. Call on the loop thread. */
void mb_nats_ev_set_read_hook(mb_nats_ev *a, void (*fn)(void *ud), void *ud);

/* Writes what nats.c has buffered now, on the loop thread (before closing
 * the connection from it, so that nothing published is left behind: nats.c's
 * own flush there could only time out), trying for up to timeout seconds
 * while the socket is full. 0 when all went, else -1. */
int mb_nats_ev_flush(mb_nats_ev *a, double timeout);

/* Reads what the socket holds now (nats.c's read processing, as the
 * watcher would), without running the loop: for a caller on the loop thread
 * that waits for an answer while the loop is not to run (other watchers'
 * callbacks must not re-enter it). The read hook is not called. Returns 1
 * when something was read. */
int mb_nats_ev_poll(mb_nats_ev *a);

/* 1 between nats.c's attach and detach (also while reconnecting), else 0. */
int mb_nats_ev_attached(mb_nats_ev *a);

/* Copies the counters into *st. Any thread. */
void mb_nats_ev_get_stats(mb_nats_ev *a, mb_nats_ev_stats *st);

/* Stops the watchers and frees the adapter; call on the loop thread, after
 * the connection closed (NULL is ignored). Returns 0, or -1 (and frees
 * nothing) while a connection is still attached. */
int mb_nats_ev_free(mb_nats_ev *a);

#endif
