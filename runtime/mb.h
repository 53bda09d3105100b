/*
 * mb.h — the C API of the mb message bus core.
 *
 * The core moves messages between named destinations and the listeners
 * registered there. It knows nothing of Lua: payloads are carried in the
 * "mb value" encoding (see mb_value.h), built with the mb_enc_* writers or
 * converted from JSON. A service calls in from its own worker's thread;
 * callbacks come back on that thread, never with a lock held. The core
 * never prints and never aborts on bad input:
 * functions return MB_OK (0), a positive progress code, or a negative MB_E*.
 *
 * Ownership, in the words nats.c uses: a function that "takes" a message owns
 * it from then on (also when it fails); one that "borrows" leaves it to the
 * caller. Messages are reference counted (mb_msg_ref / mb_msg_unref).
 *
 * Tests: spec/c/test_*.c.
 */
#ifndef MB_H
#define MB_H

#include <stddef.h>
#include <stdint.h>

#include "mb_value.h"

#define MB_VERSION "0.1.0"

/* Return codes. The code word of each (mb_strerror) starts the error strings
 * the Lua API returns. */
enum {
  MB_OK = 0,
  MB_PENDING = 1, /* accepted; a callback will report the outcome */
  MB_ENODEST = -1,
  MB_ENOLISTENERS = -2,
  MB_EFULL = -3,
  MB_ETIMEOUT = -4,
  MB_EFAILED = -5,
  MB_ECLOSED = -6,
  MB_EEXISTS = -7,
  MB_EINVAL = -8,
  MB_ENOMEM = -9,
  MB_EDROPPED = -10, /* a delivery dropped: listener closed before it ran */
  MB_ESHUTDOWN = -11 /* "closed": the bus is shutting down (mb_runtime_drain) */
};

/* "no_destination", "queue_full", ... for a code above; "ok" for MB_OK. */
const char *mb_strerror(int code);

typedef struct mb_runtime mb_runtime;
typedef struct mb_service mb_service;
typedef struct mb_listener mb_listener;
typedef struct mb_delivery mb_delivery;
typedef struct mb_request mb_request;
typedef struct mb_msg mb_msg;
typedef struct mb_subscription mb_subscription;

/* ---- runtime ---------------------------------------------------------- */

typedef struct mb_config {
  int workers;             /* threads with a loop each; 0: 1 (the caller) */
  size_t max_message_size; /* bytes of encoded payload + values; 0: 64 MiB */
} mb_config;

/* The max_message_size a user may set (mb.setup, mbrun's configuration and
 * --max-message-size check it): 1 KiB (below it a count of MiB given as
 * bytes would pass unnoticed) to 1 GiB. */
#define MB_MESSAGE_SIZE_MIN 1024
#define MB_MESSAGE_SIZE_MAX (1024 * 1024 * 1024)

/* Creates a runtime; cfg may be NULL. Worker 0 is the calling thread (its
 * loop runs inside mb_runtime_run); workers 1..N-1 are threads started here.
 * Returns NULL when out of memory. The caller owns it: mb_runtime_free. */
mb_runtime *mb_runtime_new(const mb_config *cfg);

int mb_runtime_workers(const mb_runtime *rt);

/* The CPUs this process may run on (its CPU affinity, as nproc counts
 * them; the cores online when that cannot be read): mbrun's default number
 * of workers. */
int mb_cpu_count(void);

/* Lets worker threads 1..N-1 run what is queued, then joins them. Services
 * bound to them should be freed on their own threads first (post a task). */
void mb_runtime_join(mb_runtime *rt);

/* Joins the workers, frees every service left (dropping its undelivered
 * deliveries), then every destination. From worker 0's thread; close the
 * Lua states first. */
void mb_runtime_free(mb_runtime *rt);

/* The libev loop of worker 0; borrowed. */
struct ev_loop *mb_runtime_loop(mb_runtime *rt);
/* On worker 0's thread, from a callback of its loop (an I/O watcher that
 * handed work to the bus): what was posted to worker 0 runs in this loop
 * iteration, after the callbacks already pending, instead of after one
 * more poll. */
void mb_runtime_hurry(mb_runtime *rt);

size_t mb_runtime_max_message_size(const mb_runtime *rt);

/* 1 once a destination with share = 1 has been declared in rt (never 0
 * again): until then a binding need not track what it sends. Any thread. */
int mb_runtime_shares(const mb_runtime *rt);

/* Runs worker 0's loop until the whole bus is idle (no task queued, no
 * waiting request with a time limit or to a cluster destination, no held
 * timer on any worker), mb_runtime_stop or timeout seconds (0, NaN or
 * infinity: no bound). Returns 1 when stopped, 0 when idle. Idle is not
 * empty: pending messages and open deliveries may be left that only their
 * listeners can move on (a C listener finishing later, or none: a Lua
 * listener waiting for room in its own full queue), and requests with no
 * time limit to a local destination (mb_counts' unlimited) that only they
 * could answer. From worker 0's thread. */
int mb_runtime_run(mb_runtime *rt, double timeout);
/* From any thread: makes the run in progress return MB_RUN_STOPPED. With
 * no run in progress it does nothing (a later run is not affected). */
void mb_runtime_stop(mb_runtime *rt);
/* Marks a run as in progress (+1) or over (-1) across several
 * mb_runtime_run calls, for a program whose whole life is one run (mbrun):
 * a stop made while marked, even between two mb_runtime_run calls, makes
 * the next one return at once. */
void mb_runtime_running(mb_runtime *rt, int delta);

/* For a caller that waits for *done to become nonzero: runs what is ready
 * on the calling worker's loop, then, unless *done, waits for the next
 * event. Returns 0 when nothing could happen any more (the bus is idle and
 * the loop has no watcher of its own), else 1. done may be NULL. */
int mb_runtime_step(mb_runtime *rt, const int *done);

/* Timers and other waits of users keep the bus busy: +1 when one starts,
 * -1 when it ends. mb_runtime_busy reads the count (0: idle). */
void mb_runtime_hold(mb_runtime *rt, int delta);
long mb_runtime_busy(mb_runtime *rt);

/* Counts of live core objects, for leak checks in tests. */
typedef struct mb_counts {
  size_t messages, deliveries, requests, listeners, services, subscriptions;
  uint64_t failed, dropped; /* deliveries so far, removed destinations too */
  /* of requests, those still waiting with no time limit for a local
   * destination: they do not keep the bus busy (mb_runtime_run), so when it
   * is idle these can never be answered (a request that timed out while its
   * send still waits in a full queue is in requests, not here) */
  size_t unlimited;
} mb_counts;
void mb_runtime_counts(const mb_runtime *rt, mb_counts *out);

/* ---- services --------------------------------------------------------- */

/* A service is the owner of listeners and requests: one Lua state, or one C
 * component, bound to one worker (worker < 0: the one with the fewest
 * services). Everything it does — its calls into the core, its callbacks —
 * happens on that worker's thread. name is copied. NULL when out of memory. */
mb_service *mb_service_new(mb_runtime *rt, const char *name, int worker);
/* From its worker's thread: closes its listeners (their undelivered
 * deliveries are dropped) and cancels its requests and waiting sends
 * without calling their callbacks; tasks posted for it are skipped. */
void mb_service_free(mb_service *svc);
const char *mb_service_name(const mb_service *svc);
uint64_t mb_service_id(const mb_service *svc);
int mb_service_worker(const mb_service *svc);
/* Sends signal sig to the thread of svc's worker (for interrupting code
 * that does not return: lmb.c's abort). From any thread, while the runtime
 * lives. MB_OK, or MB_EINVAL. */
int mb_service_signal(const mb_service *svc, int sig);
struct ev_loop *mb_service_loop(const mb_service *svc);
/* The live service with this id, with a reference the caller drops with
 * mb_service_unref (the memory stays valid; it may die meanwhile); NULL. */
mb_service *mb_service_find(mb_runtime *rt, uint64_t id);
void mb_service_unref(mb_service *svc);

/* Runs fn(arg) on the service's worker soon (never inline), unless the
 * service has been freed by then. From any thread. */
typedef void (*mb_task_fn)(void *arg);
int mb_service_post(mb_service *svc, mb_task_fn fn, void *arg);
/* The same, but fn runs even if the service has died by then (it must
 * cope, e.g. free what arg carries). */
int mb_service_post_always(mb_service *svc, mb_task_fn fn, void *arg);
void mb_service_ref(mb_service *svc);
/* 0 once mb_service_free ran (its memory lives while references do). */
int mb_service_alive(const mb_service *svc);

/* ---- destinations ----------------------------------------------------- */

typedef enum { MB_PARALLEL = 0, MB_SERIAL = 1, MB_SYNCHRONOUS = 2 } mb_dest_type;
typedef enum { MB_FULL_REJECT = 0, MB_FULL_BLOCK = 1 } mb_full_policy;

typedef struct mb_dest_opts {
  mb_dest_type type;
  size_t max_queue; /* 0: 65536 */
  mb_full_policy on_full;
  size_t concurrency; /* parallel only; 0: workers x 64 */
  int cluster; /* 1: shared with the other nodes over the runtime's link; 2: the same,
                * durable (the link stores its messages: SPEC 6, Durable) */
  /* 1: messages sent to it are marked (mb_msg_shared), so that a binding
   * may hand listeners in the sender's own state the sender's value
   * itself (SPEC section 2, share = true); the core copies as always */
  int share;
} mb_dest_opts;

/* 1 when name is 1-255 bytes of [A-Za-z0-9_./:-]. */
int mb_dest_name_valid(const char *name, size_t len);

/* Declares a destination (opts may be NULL: defaults). MB_OK when created or
 * already there with identical options; MB_EEXISTS with different ones;
 * MB_EINVAL for a bad name or option. */
int mb_dest_declare(mb_runtime *rt, const char *name, const mb_dest_opts *opts);

/* Stops accepting sends, delivers what is pending, then removes it. MB_OK
 * (removed now or once drained) or MB_ENODEST. */
int mb_dest_remove(mb_runtime *rt, const char *name);

int mb_dest_exists(mb_runtime *rt, const char *name);

/* 0 for a destination of this process alone, 1 for a cluster destination
 * (mb_dest_opts.cluster) that is not synchronous, 2 for a synchronous one,
 * 3 for a durable one (cluster = 2); -1 when there is none of that name. */
int mb_dest_cluster(mb_runtime *rt, const char *name);

/* Calls fn for every destination name in sorted order. */
void mb_dest_each(mb_runtime *rt, void (*fn)(void *ud, const char *name), void *ud);

typedef struct mb_stats {
  mb_dest_type type;
  size_t listeners;
  uint64_t sent, rejected, deliveries, delivered, failed, dropped;
  size_t pending, largest_pending, in_flight;
  uint64_t replies, timeouts;
  uint64_t redelivered; /* deliveries of messages the link marked redelivered */
  /* seconds from the send to the end of a delivery (ok or failed), over
   * the deliveries timed since mb_runtime_observe(MB_OBSERVE_LATENCY);
   * p99 is within 1/16 of the true figure. 0 when none were timed. */
  double latency_mean, latency_p99;
} mb_stats;

int mb_dest_stats(mb_runtime *rt, const char *name, mb_stats *out);

/* ---- observing: trace, latency, graph (mb_observe.c) ------------------- */

typedef enum {
  MB_HOP_OK,       /* a listener handled the message */
  MB_HOP_FAILED,   /* the listener raised or returned an error */
  MB_HOP_DROPPED,  /* the delivery could not be made (listener closed, ...) */
  MB_HOP_TIMEOUT,  /* a request ended without (all) its replies */
  MB_HOP_REPLY,    /* a listener replied to a request */
  MB_HOP_REJECTED  /* a send was refused: no_listeners, queue_full, closed... */
} mb_hop_kind;

/* One hop of a message, as the tracer sees it. Strings are borrowed for the
 * call. */
typedef struct mb_hop {
  mb_hop_kind kind;
  double at;        /* seconds since the runtime was created */
  double duration;  /* seconds since the send (request, for a reply/timeout) */
  uint64_t id;      /* the message's id; for a reply, the request's */
  const char *dest; /* destination name */
  const char *from; /* the sending (replying) service, NULL: none or gone */
  const char *to;   /* the listener's (requester's) service, NULL: none */
  const mb_msg *msg; /* the message (the reply), NULL when there is none */
  const char *error; /* "code: text" for failed, dropped, timeout, rejected */
} mb_hop;

typedef void (*mb_trace_fn)(void *ud, const mb_hop *hop);

/* Calls fn for every hop from now on (NULL: stop tracing), from whichever
 * thread the hop happens on, with the runtime's lock held: fn must not call
 * into the runtime, and should be quick (it holds up the whole bus). */
void mb_runtime_trace(mb_runtime *rt, mb_trace_fn fn, void *ud);

enum {
  MB_OBSERVE_LATENCY = 1, /* time deliveries: latency_mean/p99 in mb_stats */
  MB_OBSERVE_GRAPH = 2,   /* note who sends to and listens at what */
  MB_OBSERVE_REMOVED = 4  /* keep the stats of destinations removed (mb_removed_each) */
};
/* Turns the observations on (they cost a little per message, so they are
 * off by default). From any thread. */
void mb_runtime_observe(mb_runtime *rt, unsigned flags);

/* What MB_OBSERVE_GRAPH noted since: one edge per (service name,
 * destination, direction), destinations removed since included. fn gets
 * them under the runtime's lock: it must not call into the runtime. */
typedef struct mb_edge {
  int listens;          /* 1: service listens at dest; 0: service sends to dest */
  const char *service;  /* the service's name */
  const char *dest;
  mb_dest_type type;    /* the destination's type */
} mb_edge;
void mb_graph_each(mb_runtime *rt, void (*fn)(void *ud, const mb_edge *e), void *ud);

/* What MB_OBSERVE_REMOVED kept: the stats of each destination removed
 * since, as they were at its removal (listeners and pending 0), one entry
 * per name (a name removed again adds its counts; largest_pending and
 * latency_p99 are the largest, latency_mean is weighted by the deliveries
 * that ended, type is the last one's), in no order. fn gets them under the
 * runtime's lock: it must not call into the runtime. */
void mb_removed_each(mb_runtime *rt, void (*fn)(void *ud, const char *name, const mb_stats *st),
                     void *ud);

/* Shutting down gracefully: from now on a send (or request) is refused
 * with MB_ESHUTDOWN, so no new work comes in while what is queued and
 * running is finished. Replies, dead letters and messages marked with
 * mb_msg_follow_up (sent while handling a delivery) still go. */
void mb_runtime_drain(mb_runtime *rt);
/* Messages queued, blocked senders, deliveries running and requests
 * waiting, over every destination; when there are none, a count that is
 * not 0 while tasks that finish such work (a reply on its way, a send's
 * completion) are queued or running: one per task posted across workers,
 * one per worker for all of its own. 0 when nothing is left to finish;
 * users' holds (timers) do not count. */
size_t mb_runtime_in_flight(mb_runtime *rt);

/* ---- events (Liferay's destination event listeners) ------------------- */

typedef enum {
  MB_EV_DEST_ADDED = 1,
  MB_EV_DEST_REMOVED = 2,
  MB_EV_LISTENER_ADDED = 4,
  MB_EV_LISTENER_REMOVED = 8,
  MB_EV_CLUSTER_DOWN = 16, /* the link lost its connection (destination "") */
  MB_EV_CLUSTER_UP = 32    /* ... and has it again */
} mb_event_kind;

typedef struct mb_event {
  mb_event_kind kind;
  const char *destination;
  mb_dest_type type;
  size_t listeners; /* registrations at the destination after the event */
  const char *service; /* the listener's service, for listener events */
} mb_event;

/* fn runs from the subscriber's loop after the event (never inline). */
typedef void (*mb_event_fn)(void *ud, const mb_event *ev);
mb_subscription *mb_subscribe(mb_service *svc, unsigned kinds, mb_event_fn fn, void *ud);
void mb_unsubscribe(mb_subscription *sub);

/* ---- messages --------------------------------------------------------- */

/* Builds a message from encoded payload and values (values: an encoded
 * table with string keys, or NULL/0 for none) and an optional reply_to
 * destination. Copies everything into one allocation. Returns NULL when out
 * of memory; the caller owns one reference. Does not validate: use
 * mb_value_check on input that did not come from an mb_enc_* writer. */
mb_msg *mb_msg_new(const void *payload, size_t plen, const void *values, size_t vlen,
                   const char *reply_to);
mb_msg *mb_msg_ref(mb_msg *m);
void mb_msg_unref(mb_msg *m);

uint64_t mb_msg_id(const mb_msg *m);
uint64_t mb_msg_response_id(const mb_msg *m); /* 0: not a reply */
const char *mb_msg_destination(const mb_msg *m); /* NULL before sending */
const char *mb_msg_reply_to(const mb_msg *m);    /* NULL when unset */
const uint8_t *mb_msg_payload(const mb_msg *m, size_t *len);
const uint8_t *mb_msg_values(const mb_msg *m, size_t *len); /* len 0: none */
int mb_msg_expects_reply(const mb_msg *m);
int mb_msg_is_request(const mb_msg *m); /* sent by mb_request_start */
/* 1 when m is a request that waits for every group's answer (all = 1), the
 * only kind whose reply must say which group answers (the group of
 * mb_reply); the other requests take the first reply, whoever gives it. */
int mb_msg_answers_all(const mb_msg *m);
/* 1 when m was sent to a destination with share = 1 (set by the sending
 * call, before any delivery of m can start). */
int mb_msg_shared(const mb_msg *m);
/* 1 when the caller's reference is the only one left: nothing in the core
 * holds m any more (no queue, delivery, request or report), and nothing
 * can take it again. */
int mb_msg_sole(const mb_msg *m);
/* Marks m, before sending it, as sent while handling a delivery: part of
 * the work in flight, which a draining bus (mb_runtime_drain) still takes. */
void mb_msg_follow_up(mb_msg *m);
/* The message as the JSON object a format = "json" listener receives; ids
 * as "NODE:hex" when node (this node's name in a cluster) is given. */
int mb_msg_to_json(const mb_msg *m, const char *node, mb_buf *out, char *err, size_t errlen);
/* Formats an id as the string users see (lower-case hex). buf >= 17 bytes. */
size_t mb_id_format(uint64_t id, char *buf);
int mb_id_parse(const char *s, size_t len, uint64_t *out);
/* The same as a node of a cluster shows it: "NODE:hex" (node NULL: "hex";
 * node cut at 64 bytes). buf >= MB_NODE_ID_MAX bytes; returns the length. */
#define MB_NODE_ID_MAX 96
size_t mb_node_id_format(const char *node, uint64_t id, char *buf);

/* ---- listening -------------------------------------------------------- */

/* Called on the listener's worker for every delivery. The listener finishes
 * the delivery with mb_delivery_done, inline or later. */
typedef void (*mb_listener_fn)(void *ud, mb_delivery *d);
/* Called when the bus closes a listener on its own (its destination was
 * removed); the listener is gone once it returns. */
typedef void (*mb_closed_fn)(void *ud);

/* Registers fn at dest for svc. group: 0 for a listener of its own; the
 * listeners that share a nonzero key at a destination form one group (each
 * message goes to one of them): the instances of one loaded script. Returns NULL and sets
 * *err (MB_ENODEST, MB_ECLOSED, MB_ENOMEM). */
mb_listener *mb_listen(mb_service *svc, const char *dest, uint64_t group, mb_listener_fn fn,
                       mb_closed_fn closed, void *ud, int *err);

/* Unregisters: fn is not called again; deliveries already given to it stay
 * its to finish; those scheduled but not yet given are dropped. */
void mb_listener_close(mb_listener *l);
/* 1 when l is the only member of its group here (or is closed): a
 * reload's old listener stays until a new one has joined its group. */
int mb_listener_alone(mb_listener *l);

/* The message of a delivery; borrowed for as long as the delivery is open. */
const mb_msg *mb_delivery_msg(const mb_delivery *d);
uint64_t mb_delivery_group(const mb_delivery *d);
/* Ends a delivery: status MB_OK, MB_EFAILED (error: what went wrong) or
 * MB_EDROPPED. Frees d; do not touch it afterwards. */
void mb_delivery_done(mb_delivery *d, int status, const char *error);
/* The same, but a delivery that ended well (MB_OK, not of a synchronous
 * send, nothing observing) is settled a little later, with the others of
 * this turn of the loop, by a task of the listener's service: a listener on
 * another worker than its senders then takes the runtime's lock once per
 * batch. Statistics and counts show it in flight until then. Call it on the
 * service's worker, from the loop; elsewhere it is mb_delivery_done. */
void mb_delivery_done_soon(mb_delivery *d, int status, const char *error);
/* Settles the deliveries mb_delivery_done_soon left (on svc's worker). */
void mb_service_settle(mb_service *svc);
/* Marks the open delivery d to end as failed with error (copied; the first
 * mark counts), whatever status mb_delivery_done later gives (a drop stays a
 * drop). For an outcome of the listener's work that it learns of before it
 * ends the delivery, such as its reply that could not be delivered. */
void mb_delivery_fail(mb_delivery *d, const char *error);

/* ---- sending ---------------------------------------------------------- */

/* Completion of a send that returned MB_PENDING. */
typedef void (*mb_send_fn)(void *ud, int status);

/* Sends m (takes it) to dest. Returns MB_OK once accepted (on a synchronous
 * destination: once every listener finished), MB_PENDING when done will be
 * called exactly once later (a synchronous destination whose listeners wait,
 * or a full "block" queue), or a negative code: MB_ENODEST, MB_ENOLISTENERS,
 * MB_EFULL (also for a full "block" queue when done is NULL), MB_ECLOSED.
 * To a durable cluster destination use mb_send_confirmed: a plain send
 * made while its stream is still being made is dropped (known, left). */
int mb_send(mb_service *from, const char *dest, mb_msg *m, mb_send_fn done, void *ud);

/* One answer of a request. */
typedef struct mb_answer {
  int status;          /* MB_OK, MB_EFAILED, MB_ETIMEOUT, MB_EDROPPED, ... */
  const mb_msg *reply; /* borrowed; NULL unless status is MB_OK */
  const char *error;   /* "code: text" unless status is MB_OK */
} mb_answer;

/* Called once per request, on the requester's worker: n == 1 for a
 * request, one answer per listener group for a request_all. answers are
 * borrowed for the call. */
typedef void (*mb_request_fn)(void *ud, const mb_answer *answers, size_t n);

/* Sends m (takes it) as a request to dest and waits up to timeout seconds
 * (> 0; infinity: no limit; NaN, 0 or less: MB_EINVAL) for the first reply
 * (all = 0) or one answer per listener group (all = 1).
 * Returns MB_PENDING (fn will be called from the loop, never inline; *out is
 * set so the request can be cancelled until then), or a negative code at
 * once (fn is not called). */
int mb_request_start(mb_service *from, const char *dest, mb_msg *m, double timeout, int all,
               mb_request_fn fn, void *ud, mb_request **out);

/* Cancels a request; fn is not called. */
void mb_request_cancel(mb_request *r);

/* Replies to orig (borrowed) with reply (taken), on behalf of listener group
 * `group` (mb_delivery_group; 0 when unknown). The reply goes to the waiting
 * requester and, when orig has reply_to, to that destination with its
 * response_id set. Returns MB_OK, MB_ECLOSED (nobody waits any more and no
 * reply_to), or the error of the reply_to send. Counted in orig's
 * destination's `replies`. */
int mb_reply(mb_service *from, const mb_msg *orig, uint64_t group, mb_msg *reply);

/* The same for a message known by its fields (a Lua message table): its id,
 * the destination it was sent to and its reply_to (either may be NULL).
 * When the reply_to send has to wait (a synchronous destination, a full
 * "block" queue) and done is given, returns MB_PENDING and calls done once. */
int mb_reply_id(mb_service *from, const char *dest, uint64_t id, const char *reply_to,
                uint64_t group, mb_msg *reply, mb_send_fn done, void *ud);

/* The listener's reply (taken) to the message of its open delivery d, as
 * mb_reply_id (SPEC 7, "a reply that cannot be delivered"): when the
 * message has a reply_to and the reply cannot be sent there (no such
 * destination, no listeners, closed, full, out of memory), d is marked
 * failed (mb_delivery_fail) with "failed: reply to 'X' not delivered: ...".
 * A send that returns MB_PENDING and later fails is the caller's to mark. */
int mb_delivery_reply(mb_delivery *d, mb_msg *reply, mb_send_fn done, void *ud);

/* ---- the link: how a cluster joins the core (runtime/cluster/) -------- */

/* What a send over the link is: a send, a request (first reply), a
 * request_all (an answer per group of every node that acknowledges), a send
 * to a synchronous destination (done once every group that acknowledged ran
 * it), a send with confirm (done once a node acknowledged it). All but
 * MB_LINK_SEND are core requests, answered through mb_link_answer. */
enum {
  MB_LINK_SEND = 0,
  MB_LINK_REQUEST = 1,
  MB_LINK_REQUEST_ALL = 2,
  MB_LINK_SYNC = 3,
  MB_LINK_CONFIRM = 4,
  MB_LINK_STATS = 5, /* mb_link_stats: each node answers with its statistics of dest */
  MB_LINK_PROBE = 6  /* the same, waiting for nodes only as long as MB_LINK_REQUEST_ALL */
};

/* A link carries the messages of cluster destinations (mb_dest_opts.cluster)
 * to other nodes and back. The core calls it; it calls the core only through
 * mb_link_deliver and mb_link_answer, and through the C API from its own
 * service. */
typedef struct mb_link {
  void *ud;
  const char *node; /* this node's name (dead-letter reports carry it); the link's */
  /* A send of kind MB_LINK_* from service from, on from's worker, to the
   * cluster destination dest; takes m (the answers of all kinds but
   * MB_LINK_SEND come back through mb_link_answer with mb_msg_id(m)).
   * Returns MB_OK or a negative code (MB_ECLOSED while the link is down).
   * Called without the runtime's lock. */
  int (*send)(void *ud, mb_service *from, const char *dest, mb_dest_type type, mb_msg *m,
              int kind);
  /* Interest at a cluster destination changed: group NULL stands for the
   * groups without a name (on: the first came, off: the last went), else the
   * named group `group` with key `key` (on: its first member, off: its
   * last). Called with the runtime's lock held, from any thread: it must
   * not call the core. */
  void (*interest)(void *ud, const char *dest, const char *group, uint64_t key, int on);
  /* A delivery of a message the link tagged (mb_msg_durable) ended with
   * status (MB_OK, MB_EFAILED, MB_EDROPPED): how a durable destination
   * acknowledges a message once its handlers returned. Returns 1 when the
   * link will deliver it again (a failure then goes to no dead letter), else
   * 0. Called with the runtime's lock held, from any thread: it must not
   * call the core. May be NULL. */
  int (*outcome)(void *ud, void *tag, int status);
  /* The bus drains (mb_runtime_drain): the link takes no new messages
   * that its server would give to another member or keep (a durable
   * destination's), and hands back what it holds of them undelivered.
   * Called without the runtime's lock, once. May be NULL. */
  void (*drain)(void *ud);
} mb_link;

/* Installs the link (copied; NULL: none) before any cluster destination is
 * declared; without one, declaring a cluster destination is MB_EINVAL. */
void mb_runtime_link(mb_runtime *rt, const mb_link *link);

/* The key of the group called name (1-255 bytes, copied): the same key for
 * every call with that name on this runtime, for mb_listen. Listeners with it
 * form one group; at a cluster destination, one group across every node.
 * 0 when out of memory or name is invalid. Such keys have MB_GROUP_NAMED
 * set; the keys a caller picks for groups of its own must not. */
#define MB_GROUP_NAMED (UINT64_C(1) << 63)
uint64_t mb_group_named(mb_runtime *rt, const char *name);

/* A message that came over the link from another node (or this one):
 * origin is its id there ("NODE:hex", copied). NULL when out of memory. */
mb_msg *mb_msg_new_remote(const void *payload, size_t plen, const void *values, size_t vlen,
                          const char *reply_to, const char *origin);
/* The origin id of a message made by mb_msg_new_remote, else NULL. */
const char *mb_msg_origin(const mb_msg *m);
/* Tags m (made by mb_msg_new_remote, before mb_link_deliver): the outcome
 * of each of its deliveries goes to the link's outcome call with tag;
 * redelivered: it was delivered before (msg.redelivered, counted in the
 * destination's `redelivered`). */
void mb_msg_durable(mb_msg *m, void *tag, int redelivered);
/* 1 when m was marked redelivered by mb_msg_durable, else 0. */
int mb_msg_redelivered(const mb_msg *m);

/* Delivers m (taken), made by mb_msg_new_remote, to the cluster destination
 * dest on this node: to its groups without a name (group 0) or to the named
 * group with key `group` only. from is the link's own service. With fn, m
 * is delivered as a request (all: a request_all) on behalf of its remote
 * requester: fn gets the answers (no timeout; *out set as by
 * mb_request_start). *takers (may be NULL) gets the number of groups here
 * it goes to. Returns MB_OK (MB_PENDING with fn) or a negative code:
 * nothing here takes it (MB_ENODEST, MB_ENOLISTENERS, MB_ECLOSED,
 * MB_EFULL, MB_ENOMEM). */
int mb_link_deliver(mb_service *from, const char *dest, uint64_t group, mb_msg *m, int all,
                    mb_request_fn fn, void *ud, mb_request **out, size_t *takers);
/* The same for a send to a synchronous cluster destination: done (on
 * from's worker) once every group here has run it, unless it returns MB_OK
 * (all ran at once) or a negative code. */
int mb_link_deliver_sync(mb_service *from, const char *dest, uint64_t group, mb_msg *m,
                         mb_send_fn done, void *ud, size_t *takers);

/* An answer, from another node, to the request with id `id` sent over the
 * link: status MB_OK with reply (taken; NULL for none), or an error status
 * with error ("code: text"; NULL: the usual text for status). group: for
 * the kinds with an answer per group, the group's number given to
 * mb_link_expect; else 0. Returns 0, or -1 when nobody waits for it any
 * more (a late answer: counted as such). Any thread. */
int mb_link_answer(mb_runtime *rt, uint64_t id, uint64_t group, int status, mb_msg *reply,
                   const char *error);

/* A node acknowledged the request_all or synchronous send `id`: k more
 * answers to wait for, from groups base..base+k-1 (numbers the link picks,
 * unique per node and group). Returns 0, or -1 when it has ended. */
int mb_link_expect(mb_runtime *rt, uint64_t id, uint64_t base, size_t k);

/* The timeout in seconds of the request `id` sent over the link (0: none
 * open; may be infinite), for the link to tell the listening nodes. Any
 * thread. */
double mb_link_timeout(mb_runtime *rt, uint64_t id);
/* Bounds the request r that mb_link_deliver opened (no timeout of its own)
 * to secs from now: then it ends with MB_ETIMEOUT answers for what did not
 * answer, not counted as a timeout here (its requester counts its own). On
 * the link's service's worker, before r's callback ran; secs > 0, finite. */
void mb_link_expire(mb_request *r, double secs);
/* The time for nodes to acknowledge `id` is over: it ends once the
 * acknowledged groups have answered. Any thread. */
void mb_link_window(mb_runtime *rt, uint64_t id);

/* Asks every node of the cluster for its statistics of the cluster
 * destination dest (SPEC §6, mb.stats with cluster = true): fn gets one
 * answer per node that answered within `window` seconds (under 1: as long
 * as the link waits for acknowledgements), each reply's payload a table of
 * mb_stats's counts by name and its `type`. MB_PENDING or a negative code
 * at once. */
int mb_link_stats(mb_service *from, const char *dest, double window, mb_request_fn fn, void *ud,
                  mb_request **out);

/* A send that waits for the cluster (SPEC §6): to a synchronous cluster
 * destination (done when every group that acknowledged it has run it), or
 * with confirm (done when a node acknowledged it) — takes m, fn gets the
 * outcome as for mb_request_start (one answer: MB_OK or why not; for a
 * synchronous destination one per group). MB_PENDING, or a negative code
 * at once (MB_EINVAL: dest is not a cluster destination). */
int mb_send_confirmed(mb_service *from, const char *dest, mb_msg *m, double timeout,
                      mb_request_fn fn, void *ud, mb_request **out);

/* Another node's reply to a send of this node with reply_to: sent to that
 * destination here with response_id id, as mb_reply does, but never taken
 * as the answer of a request of this node (the id comes from the network).
 * Takes reply; returns as mb_send. */
int mb_link_reply_home(mb_service *from, const char *reply_to, uint64_t id, mb_msg *reply);

/* A message of the link (borrowed) that no node took (sent from here), or
 * that this node could not take (its queue full): counted as a dropped
 * delivery of the destination dest here, with a dead letter (why: "code:
 * text"). Any thread. */
void mb_link_dropped(mb_runtime *rt, const char *dest, mb_msg *m, const char *why);

/* The link went down: every request waiting for answers over it ends with
 * MB_ECLOSED and error. Any thread. */
void mb_link_close_requests(mb_runtime *rt, const char *error);

/* The link's connection went down (up = 0) or came back (up = 1): fires
 * MB_EV_CLUSTER_DOWN or MB_EV_CLUSTER_UP. Any thread. */
void mb_link_state(mb_runtime *rt, int up);

#endif
