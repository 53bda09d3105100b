/*
 * mb_core.h — the core's internal structures and the calls its files make
 * to one another. Not installed; users see mb.h.
 *
 * The files, from the bottom floor up; each calls only files below it:
 *   mb_base.c     error words, hashing, the clock, mutexes
 *   mb_map.c      the hash table (destinations, requests, graph edges)
 *   mb_msg.c      messages and the reference-counted names they carry
 *   mb_worker.c   worker threads, task queues, hand-off, the busy count
 *   mb_service.c  services (owners of tasks) and destination events
 *   mb_observe.c  tracing, latency, the graph, draining
 *   mb_dest.c     destinations: names, declare, listeners, groups, removal
 *   mb_request.c  the registry of open requests and their answers
 *   mb_delivery.c deliveries, outcomes, dead letters, synchronous sends
 *   mb_dispatch.c queues, blocked senders, the pump, mb_send_msg
 *   mb_send.c     mb_send, mb_request_start, mb_reply: the sending calls
 *   mb_runtime.c  creating, running and freeing a runtime and a service
 * Two calls go up through a pointer, as a lower floor may not name a
 * higher one: a destination's pump (rt->pump = mb_dispatch_pump, installed
 * by mb_runtime_new, posted by mb_dest_ready) and a task owner's release
 * (mb_owner.release, set by mb_service_new, run by mb_worker.c).
 *
 * Threads: every worker is a thread with its own libev loop. All shared
 * state (destinations, groups, listeners, requests, services, statistics)
 * is guarded by the runtime's one lock, rt->lock. Nothing calls out of the
 * core with the lock held: every callback (a delivery to a listener, the end
 * of a send or request, an event) is posted as a task to the worker that
 * owns its service and runs there, unlocked. Message, name and destination
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
#include <stddef.h>
#include <string.h>

#include "mb.h"
#include "mb_map.h"

#define MB_MSG_REQUEST 1u
#define MB_MSG_FOLLOW_UP 2u /* mb_msg_follow_up */
#define MB_MSG_OBSERVED 4u  /* has an mb_msg_obs after its data */
#define MB_MSG_REMOTE 8u    /* came over the link: has an mb_msg_remote after that */
#define MB_MSG_SHARED 16u   /* sent to a destination with share = 1 (mb_msg_shared) */
#define MB_MSG_REDELIVERED 32u /* mb_msg_durable: delivered before */
#define MB_MSG_ALL 64u /* a request that waits for every group's answer (mb_msg_answers_all) */

typedef struct mb_dest mb_dest;

/* A destination's name, shared by the destination and every message sent
 * to it, so that a message never holds its destination (mb_msg.c). */
typedef struct mb_name {
  atomic_int refs;
  uint32_t len;
  char s[]; /* NUL-terminated */
} mb_name;

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
  mb_name *name; /* its destination's, set when sent; holds a reference */
  uint8_t data[]; /* payload, values, reply_to + NUL, then (MB_MSG_OBSERVED)
                     an mb_msg_obs, unaligned: read and written by memcpy */
};

/* Only messages made while some runtime observes (trace, latency, graph)
 * carry this, so that a bus nobody watches keeps small messages. */
typedef struct mb_msg_obs {
  uint64_t from;   /* the sending service's id (0: none) */
  uint64_t t_sent; /* mb_now_ns() at the send; 0: not timed */
} mb_msg_obs;

/* What a message from the link carries after its data (and mb_msg_obs):
 * the group it is for (0: the groups without a name), then its origin id,
 * NUL-terminated (its length, with the NUL, in mb_msg.spare). */
typedef struct mb_msg_remote {
  uint64_t target;
  void *tag; /* mb_msg_durable's; NULL: none */
  uint64_t takers; /* a tagged one: the groups that took it at mb_link_deliver */
  char origin[];
} mb_msg_remote;

static inline uint8_t *mb_msg_trailer(const mb_msg *m) {
  return (uint8_t *)m->data + m->plen + m->vlen + m->rlen +
         ((m->flags & MB_MSG_OBSERVED) ? sizeof(mb_msg_obs) : 0);
}
static inline void *mb_msg_tag(const mb_msg *m) {
  void *t = NULL;
  if (m->flags & MB_MSG_REMOTE)
    memcpy(&t, mb_msg_trailer(m) + offsetof(mb_msg_remote, tag), sizeof t);
  return t;
}
static inline uint64_t mb_msg_takers(const mb_msg *m) {
  uint64_t n;
  memcpy(&n, mb_msg_trailer(m) + offsetof(mb_msg_remote, takers), sizeof n);
  return n;
}
static inline void mb_msg_set_takers(mb_msg *m, uint64_t n) {
  memcpy(mb_msg_trailer(m) + offsetof(mb_msg_remote, takers), &n, sizeof n);
}
static inline uint64_t mb_msg_target(const mb_msg *m) {
  uint64_t t;
  memcpy(&t, mb_msg_trailer(m), sizeof t);
  return t;
}

/* How many runtimes observe now: mb_observe.c counts, mb_msg_new reads. */
extern atomic_int mb_observers;

/* What a task may be bound to (a service: mb_service.c): the worker layer
 * holds a reference per task and skips the task once `dead` is set. */
typedef struct mb_owner {
  atomic_int refs;
  atomic_int dead;
  void (*release)(struct mb_owner *); /* the last reference went */
} mb_owner;

static inline void mb_owner_ref(mb_owner *o) { atomic_fetch_add(&o->refs, 1); }
static inline void mb_owner_unref(mb_owner *o) {
  if (atomic_fetch_sub(&o->refs, 1) == 1) o->release(o);
}

typedef struct mb_task {
  mb_task_fn fn;
  void *arg;
  mb_owner *own; /* holds a reference; the task is skipped once it died */
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
  /* this worker's thread only (and read-mostly fields) */
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
  /* posts to the other workers made by the task running here, by target
   * index; they leave in one batch per target when it ends (mb_worker.c,
   * header); staged counts them all */
  mb_taskq *out;
  size_t staged;
  unsigned long worked; /* tasks run; this worker's thread only */
  unsigned long worked_seen;
  uint64_t last_work;   /* mb_now_ns() when worked last changed, seen by prepare */
  pthread_t thread;
  int has_thread;
  size_t services; /* bound to it, for placement; under rt->lock */
  /* what other threads write, on cache lines of its own: */
  _Alignas(64) pthread_mutex_t inbox_lock;
  mb_taskq inbox;  /* where other threads post */
  int quit;        /* under inbox_lock: finish the queue, then exit */
  mb_late *late;   /* under inbox_lock: mb_worker_post_late's, run by inbox_drain */
  /* the wake-up handshake (mb_worker.c, header comment): */
  atomic_int pending;  /* inbox not empty, or kicked; cleared under inbox_lock */
  _Alignas(64) atomic_int sleeping; /* 1: the loop may block, posters must ev_async_send */
  atomic_int cpu; /* the CPU it last ran tasks on (sched_getcpu), for spinners */
  char pad_[60];
} mb_worker;

struct mb_runtime {
  /* read-mostly: */
  mb_worker *workers;
  int nworkers;
  int max_spinners; /* workers that may spin at once (the cores; 0 with one worker) */
  size_t max_message_size;
  /* what every worker writes, each on cache lines of its own (the runtime
   * is allocated aligned: mb_runtime_new) */
  _Alignas(64) pthread_mutex_t lock;
  _Alignas(64) atomic_long busy; /* tasks, pending messages, open deliveries, timers */
  atomic_long holds; /* the part of busy that is users' holds (timers...) */
  _Alignas(64) atomic_int spinners;
  /* runs in progress (mb_runtime_run, mb_runtime_running) times 2, plus
   * RUN_STOP when mb_runtime_stop asked the current one to end */
  _Alignas(64) atomic_int run_state;
  atomic_int shares; /* mb_runtime_shares */
  uint64_t next_group;
  uint64_t next_service;
  mb_map dests;    /* name -> mb_dest */
  uint64_t dests_gen; /* changes with dests: the services' cached lookups */
  mb_map requests; /* message id -> mb_request */
  mb_service *services;
  mb_subscription *subs;
  mb_counts counts;
  mb_delivery *free_deliveries;
  size_t nfree_deliveries;
  mb_request *free_requests; /* a short free list (nfree_requests) */
  size_t nfree_requests;
  ev_timer run_timer;
  /* the dispatcher's pump (mb_dispatch.c, installed by mb_runtime_new):
   * dispatches up to budget messages of d; 1 while more could go now */
  int (*pump)(mb_dest *d, size_t budget);
  /* dead letters waiting for the pump of "mb/dead-letters" (mb_delivery.c
   * queues them, mb_dispatch.c sends them), under lock */
  struct mb_dead_letter *dl_head, *dl_tail;
  /* observing (mb_observe.c), under lock (obs is also read unlocked by
   * mb_delivery_done_soon, and written with __atomic_store_n) */
  unsigned obs; /* MB_OBSERVE_* | MB_OBS_TRACE: 0 keeps the hot path bare */
  mb_trace_fn trace_fn;
  void *trace_ud;
  uint64_t t0; /* mb_now_ns() at creation */
  mb_map edges; /* MB_OBSERVE_GRAPH: hash -> struct mb_graph_edge */
  mb_map removed; /* MB_OBSERVE_REMOVED: name hash -> struct mb_removed */
  int draining; /* mb_runtime_drain: only sends made while handling go */
  mb_link link; /* link.send NULL: none (mb_runtime_link) */
  struct mb_group_name *group_names; /* mb_group_named's registry */
};

/* A name of mb_group_named, kept for the runtime's life. */
typedef struct mb_group_name {
  uint64_t key;
  struct mb_group_name *next;
  char name[];
} mb_group_name;

#define MB_OBS_TRACE 0x100u

struct mb_service {
  mb_owner own; /* first: its owner's reference, plus one per task posted */
  mb_runtime *rt;
  mb_worker *w;
  char *name;
  uint64_t id;
  mb_listener *listeners;
  mb_request *requests;
  mb_delivery *open; /* deliveries given to its listeners, not yet done */
  /* deliveries its listeners finished well, to be settled in one locked
   * pass (mb_delivery_done_soon); touched by its own worker, or under
   * rt->lock once the service is being freed */
  mb_delivery *done_head, *done_tail;
  int done_posted; /* the settling task is queued */
  struct mb_sync *syncs; /* its synchronous sends still waiting */
  /* the destination it sent to last (mb_dest_find_from), valid while
   * rt->dests_gen is dcache_gen; under rt->lock */
  mb_dest *dcache;
  uint64_t dcache_gen;
  mb_service *next, *prev;
};

typedef struct mb_group {
  uint64_t id;
  uint64_t key;
  const char *name; /* a named group's (mb_group_named), else NULL */
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
  int started;        /* handed to its listener (its service's thread only) */
  int fail;           /* mb_delivery_fail: it ends failed, with fail_error */
  char *fail_error;   /* NULL when the copy failed */
  mb_delivery *next, *prev; /* in svc->open, or the free list */
  mb_delivery *done_next;   /* in svc->done_head */
};

typedef struct mb_blocked {
  mb_late late; /* when posting blocked_done_task failed */
  mb_msg *m;
  mb_service *from;
  mb_request *req; /* a request's send: mb_request_admitted, no task */
  mb_send_fn done;
  void *ud;
  int status;
  struct mb_blocked *next;
} mb_blocked;

enum { MB_DEST_OPEN, MB_DEST_CLOSING, MB_DEST_REMOVED };

struct mb_dest {
  mb_name *nm;
  char *name; /* nm->s */
  size_t namelen;
  uint64_t hash;
  mb_dest_opts opts;
  atomic_int refs;
  int state;
  mb_runtime *rt;
  mb_group **groups;
  size_t ngroups, capgroups;
  size_t nlisteners;
  size_t nplain; /* groups without a name (a cluster destination's link is told) */
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
  int dead_letters; /* it is "mb/dead-letters" */
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
  int remote; /* sent over the link: answers come by mb_link_answer */
  int window; /* remote, all: nodes may still acknowledge (mb_link_expect); it
                 does not complete until the link says (mb_link_window) */
  int proxy;  /* made by mb_link_deliver for a remote requester */
  int refs; /* its own until its finish ran, and a blocked send's */
  int held; /* it counts in rt->busy (see mb_request_open) */
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
  struct mb_slot one; /* slots of a request with one answer (no allocation) */
  ev_timer timer;
  mb_request *next, *prev; /* in svc->requests */
};

typedef struct mb_dead_letter {
  mb_msg *m;
  struct mb_dead_letter *next;
} mb_dead_letter;

#define MB_DEAD_LETTERS "mb/dead-letters"

typedef struct mb_inline {
  mb_delivery *v[16];
  mb_delivery **more;
  size_t n, cap;
  struct mb_sync *sync;
} mb_inline;

/* Does group g take message m? A message from the link goes to the groups
 * without a name, or to the one named group it is for. */
static inline int mb_group_takes(const mb_group *g, const mb_msg *m) {
  if (!(m->flags & MB_MSG_REMOTE)) return 1;
  uint64_t t = mb_msg_target(m);
  return t ? g->key == t : g->name == NULL;
}

/* mb_base.c */
uint64_t mb_hash_str(const char *s, size_t len);
uint64_t mb_now_ns(void);
/* An adaptive mutex where the C library has one (mb_worker.c, header). */
void mb_mutex_init(pthread_mutex_t *m);
static inline void mb_lock(mb_runtime *rt) { pthread_mutex_lock(&rt->lock); }
static inline void mb_unlock(mb_runtime *rt) { pthread_mutex_unlock(&rt->lock); }

/* mb_msg.c */
/* A new name with one reference, or NULL when out of memory. */
mb_name *mb_name_new(const char *s, size_t len);
static inline mb_name *mb_name_ref(mb_name *n) {
  atomic_fetch_add_explicit(&n->refs, 1, memory_order_relaxed);
  return n;
}
void mb_name_unref(mb_name *n);
mb_msg *mb_msg_copy(const mb_msg *m);
/* Appends the message as an encoded table {destination, payload, values, id,
 * reply_to?, response_id?}; ids as "NODE:hex" when node is given. */
int mb_msg_encode(const mb_msg *m, const char *node, mb_buf *b);
/* Messages alive now, in all runtimes (mb_runtime_counts). */
long mb_msg_live(void);

/* mb_worker.c */
/* The worker of the calling thread (NULL on a thread that is none). */
mb_worker *mb_self(void);
/* Posts fn(arg) to run on w (under no lock; own may be NULL: the task
 * always runs). Callable with or without rt->lock held. */
int mb_worker_post(mb_worker *w, mb_owner *own, mb_task_fn fn, void *arg);
/* For a task that carries memory and must not be lost when mb_worker_post
 * failed: node (inside what arg points to) links it to w's late list, which
 * w runs on its own thread at its next wake-up. Never fails. */
void mb_worker_post_late(mb_worker *w, mb_late *node, mb_task_fn fn, void *arg);
/* Wakes w whatever it is doing. */
void mb_worker_kick(mb_worker *w);
/* On w's thread, from a callback of its loop: its local tasks run in this
 * loop iteration, after the callbacks already pending, instead of after one
 * more poll. */
void mb_worker_hurry(mb_worker *w);
void mb_busy(mb_runtime *rt, long delta);
/* Makes rt->workers: n loops, threads for all but worker 0 (the caller's).
 * Returns 0, or -1 (mb_workers_destroy frees what was made). */
int mb_workers_start(mb_runtime *rt, int n);
/* Teardown, after mb_runtime_join: runs what is still queued (unbound tasks
 * only: they free what they carry), then frees the loops and queues. */
void mb_workers_drain(mb_runtime *rt);
void mb_workers_destroy(mb_runtime *rt);

/* mb_service.c — under rt->lock unless said */
void mb_service_unref(mb_service *svc); /* any lock or none */
/* Takes svc out of the runtime's list (mb_service_free, at the top). */
void mb_service_unlink(mb_service *svc);
/* Events: tells every subscriber to kind about destination `dest`. */
void mb_fire_event(mb_runtime *rt, mb_event_kind kind, const char *dest, size_t destlen,
                   mb_dest_type type, size_t listeners, const mb_service *svc);
/* Closes the subscriptions of svc. */
void mb_events_close(mb_service *svc);
/* Teardown: frees every subscription (no lock). */
void mb_events_free(mb_runtime *rt);

/* mb_observe.c — under rt->lock; each does nothing unless rt->obs asks */
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
/* d is being removed: with MB_OBSERVE_REMOVED, its stats are kept. */
void mb_obs_removed(const mb_dest *d);
void mb_obs_free(mb_runtime *rt);

/* mb_dest.c: mb_dest.h */

/* mb_request.c — under rt->lock too */
mb_request *mb_request_find(mb_runtime *rt, uint64_t id);
/* Registers a request for m (not sent yet) to d; NULL when out of memory. */
mb_request *mb_request_open(mb_service *from, mb_dest *d, const mb_msg *m, double timeout,
                            int all, mb_request_fn fn, void *ud);
/* Its message could not be sent: undoes mb_request_open. */
void mb_request_abort(mb_request *r);
/* The message m of request r is being delivered at d: a request_all
 * expects an answer from each group that takes it. */
void mb_request_dispatched(mb_request *r, mb_dest *d, const mb_msg *m);
/* The link (mb_send.c): k more answers to wait for, from groups
 * base..base+k-1; and the end of the time nodes have to acknowledge. */
void mb_request_expect(mb_request *r, uint64_t base, size_t k);
void mb_request_window_closed(mb_request *r);
void mb_request_answer(mb_request *r, uint64_t group, int status, mb_msg *reply,
                       const char *error);
/* A reply from service `from` (group 0: the group whose delivery went to
 * from). Returns 0 when taken, -1 when nobody waits for it. */
int mb_request_reply(mb_request *r, uint64_t group, const mb_service *from, mb_msg *reply);
void mb_request_cancel_all(mb_service *svc);
/* request_all: the delivery for `group` went to a listener of svc. */
void mb_request_delivering(mb_request *r, uint64_t group, mb_service *svc);
/* A "block" queue admitted (status MB_OK) or refused the request's message;
 * drops the reference the blocked send held. */
void mb_request_admitted(mb_request *r, int status);
/* Teardown: frees the cache of request structs. */
void mb_request_free_cache(mb_runtime *rt);

/* mb_delivery.c — under rt->lock too */
/* One delivery of m to a member of g. */
void mb_deliver(mb_dest *d, mb_msg *m, mb_group *g, mb_sync *sync, mb_inline *inl);
/* A delivery that was scheduled but cannot be made: no listener left. */
void mb_delivery_drop(mb_dest *d, mb_msg *m, uint64_t group, const char *why);
/* Delivers m to each of the groups ids (dropping where one is gone). */
void mb_deliver_all(mb_dest *d, mb_msg *m, uint64_t *ids, size_t n, mb_sync *sync,
                    mb_inline *inl);
mb_group *mb_group_by_id(mb_dest *d, uint64_t id);
void mb_delivery_finish(mb_delivery *dv, int status, const char *error);
/* dv's listener is closed and it has not started: another member of its
 * group takes it (posted to that member's worker), so that a member
 * leaving — a reload's old instance, one of several stopped — loses
 * nothing it was given. 0 when none is left (the caller drops it). Under
 * rt->lock, on dv's service's worker (dv->started is that thread's). */
int mb_delivery_handover(mb_delivery *dv);
/* Settles what mb_delivery_done_soon left for svc. */
void mb_delivery_settle_locked(mb_service *svc);
/* Sends m (takes it) to every listener of the synchronous d now. */
int mb_send_sync(mb_dest *d, mb_msg *m, mb_send_fn done, void *ud, mb_inline *inl);
void mb_run_inline(mb_inline *inl);
/* Takes the lock itself: settles a synchronous send after its inline
 * deliveries ran; returns rc, or MB_PENDING when done will be told. */
int mb_sync_settle(mb_runtime *rt, mb_service *from, mb_inline *inl, int rc);
/* The sender is going away: its synchronous sends end without telling it. */
void mb_delivery_forget_syncs(mb_service *svc);
/* Takes the next queued dead letter, or NULL. */
mb_msg *mb_dead_letter_take(mb_runtime *rt);
/* Teardown: frees the cache of delivery structs and unsent dead letters. */
void mb_delivery_free_cache(mb_runtime *rt);

/* mb_dispatch.c — under rt->lock too */
/* Sends m (takes it) to d. For a synchronous destination, deliveries to
 * listeners of the calling thread's worker are left in *inl (run them after
 * unlocking with mb_run_inline) when inl is given, else posted. A request's
 * send passes req, which a full "block" queue tells with
 * mb_request_admitted, instead of done. */
int mb_send_msg(mb_service *from, mb_dest *d, mb_msg *m, mb_send_fn done, void *ud,
                mb_request *req, mb_inline *inl);
/* rt->pump. */
int mb_dispatch_pump(mb_dest *d, size_t budget);
/* Blocked sends of svc end, telling nobody (its requests are cancelled). */
void mb_dest_cancel_blocked(mb_runtime *rt, mb_service *svc);
/* Teardown: every destination goes. */
void mb_dest_free_all(mb_runtime *rt);

#endif
