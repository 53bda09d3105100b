/*
 * mb_core.h — the core's internal structures, shared by mb_runtime.c,
 * mb_msg.c, mb_dest.c and mb_request.c. Not installed; users see mb.h.
 *
 * Threads: every worker is a thread with its own libev loop. All shared
 * state (destinations, groups, listeners, requests, services, statistics)
 * is guarded by the runtime's one lock, rt->lock. Nothing calls out of the
 * core with the lock held: every callback (a delivery to a listener, the end
 * of a send or request, an event) is posted as a task to the worker that
 * owns its service and runs there, unlocked. Message and destination
 * reference counts are atomic because they are dropped outside the lock.
 * Two things are read without it: a listener's `closed` flag (atomic, by
 * run_delivery) and rt->obs (relaxed, by mb_delivery_done_soon); and a
 * service's list of deliveries finished but not yet settled belongs to the
 * service's own worker thread.
 */
#ifndef MB_CORE_H
#define MB_CORE_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>

#include "mb.h"
#include "mb_map.h"

#define MB_MSG_REQUEST 1u
#define MB_MSG_FOLLOW_UP 2u /* mb_msg_follow_up */
#define MB_MSG_OBSERVED 4u  /* has an mb_msg_obs after its data */

typedef struct mb_dest mb_dest;

/* 40 bytes before the data: with a 64-byte payload a queued message is a
 * 112-byte malloc chunk (bench 9). */
struct mb_msg {
  atomic_int refs;
  uint16_t rlen; /* reply_to's length + its NUL; 0: no reply_to */
  uint8_t flags;
  uint8_t spare;
  uint32_t plen, vlen;
  uint64_t id;
  uint64_t response_id;
  mb_dest *dest; /* set when sent; holds a reference */
  uint8_t data[]; /* payload, values, reply_to + NUL, then (MB_MSG_OBSERVED)
                     an mb_msg_obs, unaligned: read and written by memcpy */
};

/* Only messages made while some runtime observes (trace, latency, graph)
 * carry this, so that a bus nobody watches keeps small messages. */
typedef struct mb_msg_obs {
  uint64_t from;   /* the sending service's id (0: none) */
  uint64_t t_sent; /* mb_now_ns() at the send; 0: not timed */
} mb_msg_obs;

/* How many runtimes observe now (mb_observe.c); mb_msg_new reads it. */
extern atomic_int mb_observers;

typedef struct mb_task {
  mb_task_fn fn;
  void *arg;
  mb_service *svc; /* holds a reference; the task is skipped once it died */
} mb_task;

/* A task that must run although posting it failed (out of memory): the
 * node lives in what the task carries (mb_worker_post_late). */
typedef struct mb_late {
  mb_task_fn fn;
  void *arg;
  struct mb_late *next;
} mb_late;

typedef struct mb_taskq {
  mb_task *v;
  size_t head, len, cap;
} mb_taskq;

typedef struct mb_worker {
  mb_runtime *rt;
  int index;
  struct ev_loop *loop;
  ev_idle idle;    /* active while local tasks wait */
  ev_async async;  /* another thread posted, or the runtime changed state */
  ev_prepare prepare; /* the loop may block next: spin briefly, then sleep */
  ev_check check;     /* the loop is awake again */
  mb_taskq local;  /* touched by this worker's thread only */
  int local_held;  /* this thread only: one unit of rt->busy covers local */
  int running;     /* this thread only: idle_cb is running tasks (nested
                      loops inside one may run idle_cb again) */
  pthread_mutex_t inbox_lock;
  mb_taskq inbox;  /* where other threads post */
  int quit;        /* under inbox_lock: finish the queue, then exit */
  mb_late *late;   /* under inbox_lock: mb_worker_post_late's, run by inbox_drain */
  /* the wake-up handshake (mb_runtime.c, header comment): */
  atomic_int pending;  /* inbox not empty, or kicked; cleared under inbox_lock */
  atomic_int sleeping; /* 1: the loop may block, posters must ev_async_send */
  unsigned long worked; /* tasks run; this worker's thread only */
  unsigned long worked_seen;
  uint64_t last_work;   /* mb_now_ns() when worked last changed, seen by prepare */
  pthread_t thread;
  int has_thread;
  size_t services; /* bound to it, for placement; under rt->lock */
} mb_worker;

struct mb_runtime {
  pthread_mutex_t lock;
  mb_worker *workers;
  int nworkers;
  int max_spinners; /* workers that may spin at once (cores - 1, at least 1) */
  atomic_int spinners;
  atomic_long busy; /* tasks, pending messages, open deliveries, timers */
  atomic_long holds; /* the part of busy that is users' holds (timers...) */
  /* runs in progress (mb_runtime_run, mb_runtime_running) times 2, plus
   * RUN_STOP when mb_runtime_stop asked the current one to end */
  atomic_int run_state;
  size_t max_message_size;
  uint64_t next_group;
  uint64_t next_service;
  mb_map dests;    /* name -> mb_dest */
  mb_map requests; /* message id -> mb_request */
  mb_service *services;
  mb_subscription *subs;
  mb_counts counts;
  mb_delivery *free_deliveries;
  size_t nfree_deliveries;
  mb_request *free_requests; /* a short free list (nfree_requests) */
  size_t nfree_requests;
  ev_timer run_timer;
  /* observing (mb_observe.c), under lock (obs is also read unlocked by
   * mb_delivery_done_soon, and written with __atomic_store_n) */
  unsigned obs; /* MB_OBSERVE_* | MB_OBS_TRACE: 0 keeps the hot path bare */
  mb_trace_fn trace_fn;
  void *trace_ud;
  uint64_t t0; /* mb_now_ns() at creation */
  mb_map edges; /* MB_OBSERVE_GRAPH: hash -> struct mb_graph_edge */
  int draining; /* mb_runtime_drain: only sends made while handling go */
};

#define MB_OBS_TRACE 0x100u

struct mb_service {
  mb_runtime *rt;
  mb_worker *w;
  char *name;
  uint64_t id;
  atomic_int refs; /* its owner's, plus one per task posted for it */
  atomic_int dead;
  mb_listener *listeners;
  mb_request *requests;
  mb_delivery *open; /* deliveries given to its listeners, not yet done */
  /* deliveries its listeners finished well, to be settled in one locked
   * pass (mb_delivery_done_soon); touched by its own worker, or under
   * rt->lock once the service is being freed */
  mb_delivery *done_head, *done_tail;
  int done_posted; /* the settling task is queued */
  struct mb_sync *syncs; /* its synchronous sends still waiting */
  mb_service *next, *prev;
};

typedef struct mb_group {
  uint64_t id;
  uint64_t key;
  mb_service *svc;
  mb_listener **members;
  size_t n, cap, rr;
} mb_group;

struct mb_listener {
  mb_service *svc;
  mb_dest *dest;
  mb_group *group;
  mb_listener_fn fn;
  mb_closed_fn on_closed;
  void *ud;
  atomic_int closed; /* set under rt->lock; run_delivery reads it without */
  int owner_closed; /* its owner closed it: on_closed is not needed */
  int closed_lost;  /* on_closed could not be posted: the ref it held stays
                       until its owner closes it (mb_listener_close) */
  int refs; /* the registration + open deliveries + a pending on_closed */
  size_t inflight; /* its open deliveries: members with fewer go first */
  mb_listener *next, *prev; /* in svc->listeners */
};

typedef struct mb_sync {
  mb_late late;     /* when posting sync_done_task failed */
  mb_service *from; /* NULL once the sender is gone */
  struct mb_sync *next, *prev; /* in from->syncs while someone waits */
  size_t remaining;
  int status;
  int inline_call; /* mb_send still on the stack */
  mb_send_fn done;
  void *ud;
  char *error;
} mb_sync;

struct mb_delivery {
  mb_msg *msg;
  mb_listener *l;
  uint64_t group;
  mb_sync *sync;
  int inline_pending; /* in an mb_inline list: run_delivery will see to it */
  int fail;           /* mb_delivery_fail: it ends failed, with fail_error */
  char *fail_error;   /* NULL when the copy failed */
  mb_delivery *next, *prev; /* in svc->open, or the free list */
  mb_delivery *done_next;   /* in svc->done_head */
};

typedef struct mb_blocked {
  mb_late late; /* when posting blocked_done_task failed */
  mb_msg *m;
  mb_service *from;
  mb_send_fn done;
  void *ud;
  int status;
  struct mb_blocked *next;
} mb_blocked;

enum { MB_DEST_OPEN, MB_DEST_CLOSING, MB_DEST_REMOVED };

struct mb_dest {
  char *name;
  size_t namelen;
  uint64_t hash;
  mb_dest_opts opts;
  atomic_int refs;
  int state;
  mb_runtime *rt;
  mb_group **groups;
  size_t ngroups, capgroups;
  size_t nlisteners;
  mb_msg **q; /* ring of pending messages */
  size_t qhead, qlen, qcap;
  mb_blocked *bhead, *btail;
  /* serial: the message being delivered and the groups it goes to */
  mb_msg *cur;
  uint64_t *cur_groups;
  size_t cur_n, cur_step, cur_cap;
  int cur_running;
  int pumping; /* mb_dest_pump is on the stack */
  mb_stats st;
  int in_ready; /* a pump task is queued */
  uint64_t *lat_hist; /* MB_OBSERVE_LATENCY: deliveries per latency bucket */
  uint64_t lat_n, lat_max; /* lat_max in ns */
  double lat_sum; /* seconds */
};

struct mb_subscription {
  mb_runtime *rt;
  mb_service *svc;
  unsigned kinds;
  mb_event_fn fn;
  void *ud;
  int closed, refs;
  mb_subscription *next;
};

struct mb_request {
  uint64_t id;
  mb_service *svc;
  mb_dest *dest;
  mb_request_fn fn;
  void *ud;
  int all, dispatched, finished, cancelled;
  int finish_late; /* its finish task could not be posted: timeout_cb runs it */
  int refs; /* its own until its finish ran, and a blocked send's */
  double timeout;
  uint64_t t_start; /* mb_now_ns() at the start, when observed */
  size_t n, answered;
  struct mb_slot {
    uint64_t group;
    const mb_service *svc; /* where its delivery went (compared only) */
    int status;
    mb_msg *reply;
    char *error;
  } *slots;
  ev_timer timer;
  mb_request *next, *prev; /* in svc->requests */
};

typedef struct mb_inline {
  mb_delivery *v[16];
  mb_delivery **more;
  size_t n, cap;
  struct mb_sync *sync;
} mb_inline;

/* mb_runtime.c */
/* The worker of the calling thread (NULL on a thread that is none). */
mb_worker *mb_self(void);
/* Posts fn(arg) to run on w (under no lock; svc may be NULL). Callable with
 * or without rt->lock held. */
int mb_worker_post(mb_worker *w, mb_service *svc, mb_task_fn fn, void *arg);
/* For a task that carries memory and must not be lost when mb_worker_post
 * failed: node (inside what arg points to) links it to w's late list, which
 * w runs on its own thread at its next wake-up. Never fails. */
void mb_worker_post_late(mb_worker *w, mb_late *node, mb_task_fn fn, void *arg);
void mb_busy(mb_runtime *rt, long delta);
void mb_fire_event(mb_runtime *rt, mb_event_kind kind, mb_dest *d, mb_service *svc);
uint64_t mb_hash_str(const char *s, size_t len);
void mb_service_unref(mb_service *svc);
static inline void mb_lock(mb_runtime *rt) { pthread_mutex_lock(&rt->lock); }
static inline void mb_unlock(mb_runtime *rt) { pthread_mutex_unlock(&rt->lock); }

/* mb_dest.c — the functions below expect rt->lock held */
mb_dest *mb_dest_find(mb_runtime *rt, const char *name);
void mb_dest_unref(mb_dest *d);
void mb_dest_free_all(mb_runtime *rt);
void mb_dest_cancel_blocked(mb_runtime *rt, mb_service *svc);
void mb_dest_forget_syncs(mb_service *svc);
void mb_delivery_finish(mb_delivery *dv, int status, const char *error);
/* Settles what mb_delivery_done_soon left for svc. */
void mb_delivery_settle_locked(mb_service *svc);
void mb_listener_close_locked(mb_listener *l);
/* Sends m (takes it) to d. For a synchronous destination, deliveries to
 * listeners of the calling thread's worker are left in *inl (run them after
 * unlocking with mb_run_inline) when inl is given, else posted. */
int mb_send_msg(mb_service *from, mb_dest *d, mb_msg *m, mb_send_fn done, void *ud,
                mb_inline *inl);

void mb_run_inline(mb_inline *inl);
/* Takes the lock itself: settles a synchronous send after its inline
 * deliveries ran; returns rc, or MB_PENDING when done will be told. */
int mb_sync_settle(mb_runtime *rt, mb_service *from, mb_inline *inl, int rc);

/* mb_request.c — under rt->lock too */
void mb_request_sent_cb(void *ud, int status);
mb_request *mb_request_find(mb_runtime *rt, uint64_t id);
void mb_request_dispatched(mb_request *r, mb_dest *d);
void mb_request_answer(mb_request *r, uint64_t group, int status, mb_msg *reply,
                       const char *error);
void mb_request_cancel_all(mb_service *svc);
/* request_all: the delivery for `group` went to a listener of svc. */
void mb_request_delivering(mb_request *r, uint64_t group, mb_service *svc);

/* mb_observe.c — under rt->lock; each does nothing unless rt->obs asks */
uint64_t mb_now_ns(void);
void mb_obs_sent(mb_runtime *rt, const mb_service *from, mb_dest *d, mb_msg *m);
void mb_obs_listen(mb_runtime *rt, const mb_service *svc, const mb_dest *d);
/* A delivery ended: latency, and a hop (to: the listener's service). */
void mb_obs_outcome(mb_dest *d, const mb_msg *m, const mb_service *to, int status,
                    const char *error);
/* why: NULL for the usual reason of code. */
void mb_obs_rejected(mb_runtime *rt, const char *dest, const mb_service *from, const mb_msg *m,
                     int code, const char *why);
void mb_obs_timeout(mb_request *r, const char *error);
void mb_obs_reply(mb_runtime *rt, const char *dest, const mb_service *from,
                  const mb_request *r, const mb_msg *reply, uint64_t request_id);
void mb_obs_dest_stats(const mb_dest *d, mb_stats *out);
void mb_obs_free(mb_runtime *rt);

/* mb_msg.c */
mb_msg *mb_msg_copy(const mb_msg *m);
/* Appends the message as an encoded table {destination, payload, values, id,
 * reply_to?, response_id?}. */
int mb_msg_encode(const mb_msg *m, mb_buf *b);
extern atomic_uint_fast64_t mb_next_msg_id;
extern atomic_long mb_live_msgs;

#endif
