/*
 * mb_nats_ev.c — the libev adapter for nats.c (see mb_nats_ev.h for the
 * contract). Owns its watchers (one ev_io on the connection's socket, an
 * ev_async for requests from other threads, an ev_prepare that writes once per
 * loop turn) and the mutex that guards the wanted state. Uses libev and
 * libnats only. Tests: spec/c/test_nats_ev.c.
 *
 * The wanted state (fd and its generation, read/write interest, attached) is
 * written by nats.c's callbacks under `mu`; apply() makes the watchers match
 * it and runs only on the loop thread. nats.c calls its callbacks with its
 * connection lock held, so `mu` is a leaf: nothing is called under it but
 * libev. `busy` marks the loop thread inside nats.c's read/write processing;
 * a detach from another thread waits for it to clear (bounded by that call),
 * after which the loop thread never calls into that connection again.
 *
 * The ev_io watches a duplicate of nats.c's socket that the adapter owns and
 * closes on the loop thread. nats.c closes its socket from whichever thread
 * saw the error or closed the connection, right after asking to stop
 * polling; had the watcher been on that fd, a change of the watcher applied
 * just before (libev registers it with epoll_ctl at the start of its next
 * turn) would meet a closed fd, which libev treats as a fatal error (seen in
 * test_close_from_other_thread). The duplicate also keeps its number until
 * the loop is done with it, so a reconnect's new socket never shares it.
 */
#define _POSIX_C_SOURCE 200809L

#include "cluster/mb_nats_ev.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "mb.h"

struct mb_nats_ev {
  struct ev_loop *loop;
  pthread_t loop_thread;
  ev_io io;
  ev_async async;
  ev_prepare prepare;
  void (*read_hook)(void *ud);
  void *read_ud;

  pthread_mutex_t mu;
  pthread_cond_t idle;  /* signalled when busy drops to 0 */
  /* wanted, under mu */
  natsConnection *nc;
  int fd;               /* our duplicate of the wanted socket, -1: none */
  unsigned gen;         /* bumped by each attach: a new socket, maybe the same number */
  int attached;
  int want_read, want_write;
  int write_blocked;    /* the last optimistic write left data: wait for EV_WRITE */
  int busy;             /* the loop thread is inside nats.c's Process*Event */
  int waiters;          /* detaching threads waiting for busy == 0 */
  int holds_ref;        /* the loop is kept alive for the connection */
  mb_nats_ev_stats st;
  /* applied, loop thread only (io_fd also read under mu by the callbacks) */
  unsigned io_gen;
  int io_fd;            /* the duplicate the watcher is on; closed when replaced */
  int io_events;
  int weak; /* mb_nats_ev_weak: the connection keeps the loop from nothing */
};

static int on_loop_thread(mb_nats_ev *a) { return pthread_equal(pthread_self(), a->loop_thread); }

/* Makes the watchers match the wanted state. Loop thread, mu held. */
static void apply(mb_nats_ev *a) {
  int events = 0;
  if (a->attached) {
    if (a->want_read) events |= EV_READ;
    if (a->want_write && a->write_blocked) events |= EV_WRITE;
  }
  if (events != a->io_events || a->gen != a->io_gen || a->fd != a->io_fd) {
    if (ev_is_active(&a->io)) {
      if (a->weak) ev_ref(a->loop); /* undo the ev_unref after its start */
      ev_io_stop(a->loop, &a->io);
    }
    /* stopped, so libev registers nothing more on it: it may go */
    if (a->io_fd >= 0 && a->io_fd != a->fd) close(a->io_fd);
    a->io_fd = a->fd;
    if (events && a->fd >= 0) {
      /* ev_io_set also tells libev the fd may be a new file with an old
       * number, so it registers it again */
      ev_io_set(&a->io, a->fd, events);
      ev_io_start(a->loop, &a->io);
      if (a->weak) ev_unref(a->loop);
    }
    a->io_events = events;
    a->io_gen = a->gen;
  }
  if (a->attached && !a->holds_ref && !a->weak) {
    ev_ref(a->loop);
    a->holds_ref = 1;
  } else if (!a->attached && a->holds_ref) {
    ev_unref(a->loop);
    a->holds_ref = 0;
  }
}

/* After a change of the wanted state (mu held, released here): applied at
 * once on the loop thread, else handed to it. */
static void changed_unlock(mb_nats_ev *a) {
  if (on_loop_thread(a)) {
    apply(a);
    pthread_mutex_unlock(&a->mu);
    return;
  }
  a->st.remote++;
  pthread_mutex_unlock(&a->mu);
  ev_async_send(a->loop, &a->async);
}

/* Enters nats.c's processing on the loop thread: 0 when the connection is
 * gone (nothing may be called). Takes mu, leaves it released. */
static int enter(mb_nats_ev *a, natsConnection **nc) {
  pthread_mutex_lock(&a->mu);
  apply(a);
  if (!a->attached) {
    pthread_mutex_unlock(&a->mu);
    return 0;
  }
  a->busy = 1;
  *nc = a->nc;
  pthread_mutex_unlock(&a->mu);
  return 1;
}

/* mu held */
static void leave_locked(mb_nats_ev *a) {
  a->busy = 0;
  if (a->waiters) pthread_cond_broadcast(&a->idle);
}

/* ---- nats.c's callbacks (any thread) -------------------------------------- */

/* Forgets the wanted duplicate: closed now if the watcher never used it,
 * else by apply() on the loop thread. mu held. */
static void drop_fd(mb_nats_ev *a) {
  if (a->fd >= 0 && a->fd != a->io_fd) close(a->fd);
  a->fd = -1;
}

static natsStatus cb_attach(void **userData, void *loop, natsConnection *nc, natsSock fd) {
  mb_nats_ev *a = loop;
  int mine = fcntl((int)fd, F_DUPFD_CLOEXEC, 0);
  if (mine < 0) return NATS_SYS_ERROR;
  /* nats.c's socket too: a child a listener starts (os.execute) would keep
   * the connection open after this process died, and the server would go
   * on giving it a durable group's messages until their ack_wait */
  int flags = fcntl((int)fd, F_GETFD);
  if (flags >= 0) fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
  pthread_mutex_lock(&a->mu);
  if (a->nc != NULL && a->nc != nc) { /* one connection per adapter */
    pthread_mutex_unlock(&a->mu);
    close(mine);
    return NATS_ILLEGAL_STATE;
  }
  a->nc = nc;
  drop_fd(a);
  a->fd = mine;
  a->gen++;
  a->attached = 1;
  a->want_read = 1; /* attaching means polling for reads (nats.c never asks) */
  a->want_write = 0;
  a->write_blocked = 0;
  a->st.attaches++;
  *userData = a;
  changed_unlock(a);
  return NATS_OK;
}

static natsStatus cb_read(void *userData, bool add) {
  mb_nats_ev *a = userData;
  pthread_mutex_lock(&a->mu);
  a->want_read = add;
  changed_unlock(a);
  return NATS_OK;
}

static natsStatus cb_write(void *userData, bool add) {
  mb_nats_ev *a = userData;
  pthread_mutex_lock(&a->mu);
  a->want_write = add;
  if (!add) a->write_blocked = 0;
  /* an add from the loop thread changes no watcher: the prepare watcher
   * writes before the loop blocks */
  changed_unlock(a);
  return NATS_OK;
}

static natsStatus cb_detach(void *userData) {
  mb_nats_ev *a = userData;
  pthread_mutex_lock(&a->mu);
  a->attached = 0;
  a->want_read = a->want_write = a->write_blocked = 0;
  drop_fd(a);
  a->st.detaches++;
  if (!on_loop_thread(a)) {
    /* nats.c may free the connection once we return: let the loop thread
     * finish the call it is in; from now on enter() refuses */
    a->waiters++;
    while (a->busy) pthread_cond_wait(&a->idle, &a->mu);
    a->waiters--;
  }
  a->nc = NULL;
  changed_unlock(a);
  return NATS_OK;
}

/* ---- the watchers (loop thread) --------------------------------------------- */

static void io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  mb_nats_ev *a = w->data;
  natsConnection *nc;
  if (revents & EV_ERROR) {
    /* libev stopped the watcher (a socket closed under it): re-apply */
    pthread_mutex_lock(&a->mu);
    a->io_events = 0;
    apply(a);
    pthread_mutex_unlock(&a->mu);
    return;
  }
  if (!enter(a, &nc)) return;
  if (revents & EV_READ) natsConnection_ProcessReadEvent(nc);
  pthread_mutex_lock(&a->mu);
  if (revents & EV_READ) a->st.reads++;
  /* the read may have closed the connection (a detach on this thread); and
   * nats.c takes a write of an empty buffer (send() == 0) for a closed
   * socket, so only while it wants to write */
  if ((revents & EV_WRITE) && a->attached && a->want_write) {
    pthread_mutex_unlock(&a->mu);
    natsConnection_ProcessWriteEvent(nc);
    pthread_mutex_lock(&a->mu);
  }
  leave_locked(a);
  pthread_mutex_unlock(&a->mu);
  if ((revents & EV_READ) && a->read_hook) a->read_hook(a->read_ud);
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents) {
  mb_nats_ev *a = w->data;
  pthread_mutex_lock(&a->mu);
  a->st.wakeups++;
  apply(a);
  pthread_mutex_unlock(&a->mu);
}

/* Writes what nats.c buffered, once, optimistically; 1 while data is left. */
static int write_now(mb_nats_ev *a) {
  natsConnection *nc;
  pthread_mutex_lock(&a->mu);
  int go = a->attached && a->want_write && !a->write_blocked;
  pthread_mutex_unlock(&a->mu);
  if (!go || !enter(a, &nc)) return 0;
  natsConnection_ProcessWriteEvent(nc); /* on a full write, nats.c removes write interest */
  pthread_mutex_lock(&a->mu);
  a->st.flushes++;
  leave_locked(a);
  int left = a->attached && a->want_write;
  if (left) {
    a->write_blocked = 1;
    a->st.blocked++;
  }
  apply(a);
  pthread_mutex_unlock(&a->mu);
  return left;
}

/* Once per loop turn, before the loop blocks: write what nats.c buffered. */
static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  (void)loop;
  (void)revents;
  write_now(w->data);
}

int mb_nats_ev_flush(mb_nats_ev *a, double timeout) {
  for (double waited = 0;; waited += 0.002) {
    pthread_mutex_lock(&a->mu);
    a->write_blocked = 0; /* try again whatever EV_WRITE said */
    pthread_mutex_unlock(&a->mu);
    if (!write_now(a)) return 0;
    if (waited >= timeout) return -1;
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
}

int mb_nats_ev_poll(mb_nats_ev *a) {
  natsConnection *nc;
  pthread_mutex_lock(&a->mu);
  struct pollfd p = {a->attached ? a->fd : -1, POLLIN, 0};
  pthread_mutex_unlock(&a->mu);
  if (p.fd < 0 || poll(&p, 1, 0) != 1 || !(p.revents & POLLIN) || !enter(a, &nc)) return 0;
  natsConnection_ProcessReadEvent(nc);
  pthread_mutex_lock(&a->mu);
  a->st.reads++;
  leave_locked(a);
  pthread_mutex_unlock(&a->mu);
  return 1;
}

/* ---- the API ------------------------------------------------------------------- */

mb_nats_ev *mb_nats_ev_new(struct ev_loop *loop) {
  mb_nats_ev *a = calloc(1, sizeof *a);
  if (a == NULL) return NULL;
  if (pthread_mutex_init(&a->mu, NULL) != 0) {
    free(a);
    return NULL;
  }
  if (pthread_cond_init(&a->idle, NULL) != 0) {
    pthread_mutex_destroy(&a->mu);
    free(a);
    return NULL;
  }
  a->loop = loop;
  a->loop_thread = pthread_self();
  a->fd = a->io_fd = -1;
  ev_io_init(&a->io, io_cb, -1, 0);
  a->io.data = a;
  ev_async_init(&a->async, async_cb);
  a->async.data = a;
  ev_prepare_init(&a->prepare, prepare_cb);
  a->prepare.data = a;
  /* neither keeps the loop alive; an attached connection does (apply) */
  ev_async_start(loop, &a->async);
  ev_unref(loop);
  ev_prepare_start(loop, &a->prepare);
  ev_unref(loop);
  return a;
}

natsStatus mb_nats_ev_setup(mb_nats_ev *a, natsOptions *opts) {
  natsStatus s = natsOptions_SetEventLoop(opts, a, cb_attach, cb_read, cb_write, cb_detach);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
  return s;
}

void mb_nats_ev_weak(mb_nats_ev *a) { a->weak = 1; }

void mb_nats_ev_set_read_hook(mb_nats_ev *a, void (*fn)(void *ud), void *ud) {
  a->read_hook = fn;
  a->read_ud = ud;
}

int mb_nats_ev_attached(mb_nats_ev *a) {
  pthread_mutex_lock(&a->mu);
  int r = a->attached;
  pthread_mutex_unlock(&a->mu);
  return r;
}

void mb_nats_ev_get_stats(mb_nats_ev *a, mb_nats_ev_stats *st) {
  pthread_mutex_lock(&a->mu);
  *st = a->st;
  st->want_read = a->want_read;
  st->want_write = a->want_write;
  st->write_blocked = a->write_blocked;
  st->io_events = a->io_events;
  pthread_mutex_unlock(&a->mu);
}

int mb_nats_ev_free(mb_nats_ev *a) {
  if (a == NULL) return MB_OK;
  pthread_mutex_lock(&a->mu);
  int attached = a->attached;
  if (!attached) apply(a); /* stops the io watcher, drops the loop's ref */
  pthread_mutex_unlock(&a->mu);
  if (attached) return MB_EINVAL;
  /* a pending ev_async_send dies with the watcher: libev drops it on stop */
  ev_ref(a->loop);
  ev_async_stop(a->loop, &a->async);
  ev_ref(a->loop);
  ev_prepare_stop(a->loop, &a->prepare);
  pthread_cond_destroy(&a->idle);
  pthread_mutex_destroy(&a->mu);
  free(a);
  return MB_OK;
}
