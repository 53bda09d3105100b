/*
 * mb_core.h — the core's internal structures, shared by mb_runtime.c,
 * mb_msg.c, mb_dest.c and mb_request.c. Not installed; users see mb.h.
 */
#ifndef MB_CORE_H
#define MB_CORE_H

#include <ev.h>

#include "mb.h"
#include "mb_map.h"

#define MB_MSG_REQUEST 1u

typedef struct mb_dest mb_dest;

struct mb_msg {
  int refs;
  uint32_t flags;
  uint64_t id;
  uint64_t response_id;
  mb_dest *dest; /* set when sent; holds a reference */
  uint32_t plen, vlen, rlen;
  uint8_t data[]; /* payload, values, reply_to + NUL */
};

typedef struct mb_task {
  mb_task_fn fn;
  void *arg;
  mb_service *svc; /* cleared tasks (fn NULL) are skipped */
} mb_task;

typedef struct mb_worker {
  mb_runtime *rt;
  struct ev_loop *loop;
  ev_idle idle; /* active while tasks or ready destinations wait */
  mb_task *tasks;
  size_t thead, tlen, tcap;
  mb_dest *ready_head, *ready_tail;
  mb_delivery *free_deliveries;
  size_t nfree_deliveries;
} mb_worker;

struct mb_runtime {
  mb_worker worker;
  size_t max_message_size;
  uint64_t next_group;
  uint64_t next_service;
  mb_map dests;    /* name -> mb_dest */
  mb_map requests; /* message id -> mb_request */
  mb_service *services;
  mb_subscription *subs;
  mb_counts counts;
  ev_timer run_timer;
  int stopping;
};

struct mb_service {
  mb_runtime *rt;
  mb_worker *w;
  char *name;
  uint64_t id;
  mb_listener *listeners;
  mb_request *requests;
  mb_delivery *open; /* deliveries given to its listeners, not yet done */
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
  int closed;
  int refs; /* the registration + open deliveries */
  mb_listener *next, *prev; /* in svc->listeners */
};

typedef struct mb_sync {
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
  mb_delivery *next, *prev; /* in svc->open, or the free list */
};

typedef struct mb_blocked {
  mb_msg *m;
  mb_service *from;
  mb_send_fn done;
  void *ud;
  struct mb_blocked *next;
} mb_blocked;

enum { MB_DEST_OPEN, MB_DEST_CLOSING, MB_DEST_REMOVED };

struct mb_dest {
  char *name;
  size_t namelen;
  uint64_t hash;
  mb_dest_opts opts;
  int refs;
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
  mb_dest *ready_next;
  int in_ready;
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
  int all, dispatched, finished;
  int refs; /* its own until finished, plus a blocked send's */
  double timeout;
  size_t n, answered;
  struct mb_slot {
    uint64_t group;
    int status;
    mb_msg *reply;
    char *error;
  } *slots;
  ev_timer timer;
  mb_request *next, *prev; /* in svc->requests */
};

/* mb_runtime.c */
void mb_worker_kick(mb_worker *w);
void mb_worker_ready(mb_worker *w, mb_dest *d);
int mb_worker_post(mb_worker *w, mb_service *svc, mb_task_fn fn, void *arg);
void mb_fire_event(mb_runtime *rt, mb_event_kind kind, mb_dest *d, mb_service *svc);
uint64_t mb_hash_str(const char *s, size_t len);

/* mb_dest.c */
mb_dest *mb_dest_find(mb_runtime *rt, const char *name);
void mb_dest_unref(mb_dest *d);
int mb_dest_pump(mb_dest *d, size_t budget); /* 1 while more work is ready */
void mb_dest_free_all(mb_runtime *rt);
void mb_dest_cancel_blocked(mb_runtime *rt, mb_service *svc);
void mb_dest_forget_syncs(mb_service *svc);
/* An internal send; `flags` are added to the message. */
int mb_send_msg(mb_service *from, mb_dest *d, mb_msg *m, mb_send_fn done, void *ud);

/* mb_request.c */
void mb_request_sent_cb(void *ud, int status);
mb_request *mb_request_find(mb_runtime *rt, uint64_t id);
void mb_request_dispatched(mb_request *r, mb_dest *d);
void mb_request_answer(mb_request *r, uint64_t group, int status, mb_msg *reply,
                       const char *error);
void mb_request_cancel_all(mb_service *svc);

/* mb_msg.c */
mb_msg *mb_msg_copy(const mb_msg *m);
/* Appends the message as an encoded table {destination, payload, values, id,
 * reply_to?, response_id?}. */
int mb_msg_encode(const mb_msg *m, mb_buf *b);
extern uint64_t mb_next_msg_id;
extern size_t mb_live_msgs;

#endif
