/*
 * helpers.h — what the C tests of the core (spec/c/test_*.c) share: the
 * harness (check.h, its counters kept in helpers.c for the whole program),
 * messages holding one integer, readers of encoded values, a text log, a
 * listener that finishes its deliveries in one of several ways (lis),
 * callbacks that record a send's or a request's outcome, and checks that a
 * runtime is quiet. Each area file ends with one NAME_tests(void) that RUNs
 * its tests; test_core.c runs the areas (all, or those named on its
 * command line).
 */
#ifndef MB_TEST_HELPERS_H
#define MB_TEST_HELPERS_H

#define CHECK_SHARED 1
#include "check.h" /* first: it selects POSIX */

#include <ev.h>
#include <stdint.h>

#include "mb.h"

/* ---- messages and values ---------------------------------------------- */

mb_msg *msg_int_to(int64_t v, const char *reply_to);
mb_msg *msg_int(int64_t v);
/* The payload of m as an integer; INT64_MIN when it is not one. */
int64_t payload_int(const mb_msg *m);
/* Finds the string key `key` in the encoded table at r (not consumed): on
 * success *val is a reader positioned at its value. */
int table_get(mb_reader r, const char *key, mb_reader *val);
/* The string at r as a NUL-terminated copy in buf ("" when not a string). */
const char *read_str(mb_reader r, char *buf, size_t cap);
int64_t read_int(mb_reader r);
/* depth nested one-element tables around an integer */
void enc_nested(mb_buf *b, int depth);

/* ---- a log, listeners, callbacks -------------------------------------- */

typedef struct tlog {
  char s[4096];
} tlog;

enum {
  L_OK,       /* finishes MB_OK inline */
  L_FAIL,     /* finishes MB_EFAILED "failed: boom" inline */
  L_FAIL_ODD, /* fails odd payloads, finishes the others MB_OK */
  L_HOLD,     /* keeps the delivery; the test finishes it (lis_finish) */
  L_TIMER,    /* finishes MB_OK from a 2 ms timer */
  L_POST,     /* finishes MB_OK from a task posted with mb_service_post */
  L_REPLY,    /* replies payload * 10 + reply_add, then finishes MB_OK */
  L_CAPTURE,  /* keeps a copy of the payload, finishes MB_OK */
  L_SOON      /* finishes with mb_delivery_done_soon(MB_OK) inline */
};

#define MAXN 64

typedef struct lis {
  const char *name;
  int mode;
  mb_runtime *rt;
  mb_service *svc;
  mb_listener *l;
  tlog *log;
  int calls;
  int64_t seen[MAXN];
  uint64_t ids[MAXN], resp[MAXN], groups[MAXN];
  int expects[MAXN];
  char dest[64];
  mb_delivery *held[MAXN];
  int hhead, nheld, maxheld;
  int closed_calls; /* the bus closed it (its destination was removed) */
  int64_t reply_add;
  int reply_rc[MAXN], nreplies;
  uint8_t *cap[MAXN];
  size_t caplen[MAXN];
} lis;

typedef struct sendres {
  int calls, status;
} sendres;

typedef struct reqres {
  int calls;
  size_t n;
  int status[8];
  int64_t reply[8];
  uint64_t resp[8];
  char error[8][160];
} reqres;

void log_add(tlog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The listener function lis_listen registers, and its closed callback. */
void lis_fn(void *ud, mb_delivery *d);
void lis_closed(void *ud);
/* Sets l up and registers it; returns the mb_listen error (MB_OK on success). */
int lis_listen(lis *l, mb_service *svc, const char *dest, uint64_t group, int mode,
               const char *name);
/* Finishes the oldest delivery l holds; 0 when it holds none. */
int lis_finish(lis *l, int status, const char *error);
/* lis_finish with mb_delivery_done_soon. */
int lis_finish_soon(lis *l, int status, const char *error);
/* Frees what an L_CAPTURE listener copied. */
void lis_release(lis *l);

void send_cb(void *ud, int status);
void req_cb(void *ud, const mb_answer *a, size_t n);
/* Every failed answer's error reads "code: text" with its status's code. */
void check_answer_codes(const reqres *rr);
/* An event subscriber logging "KIND:dest:type:listeners:service " (ud: tlog). */
void event_cb(void *ud, const mb_event *ev);

/* ---- a tracer that records the hops (mb_runtime_trace) ---------------- */

#define NONE "(none)" /* a NULL field of a hop */

typedef struct thop {
  mb_hop_kind kind;
  double at, duration;
  uint64_t id;
  char dest[64], from[32], to[32], error[200];
  int has_msg;
  int64_t val; /* the message's payload as an integer (INT64_MIN: none) */
} thop;

typedef struct tracer {
  int n;
  thop h[48];
} tracer;

void tracer_fn(void *ud, const mb_hop *h);
/* Hop i of t: kind, id, destination, from, to and error (NONE: NULL). */
void check_hop(int line, const tracer *t, int i, mb_hop_kind kind, uint64_t id, const char *dest,
               const char *from, const char *to, const char *error);
#define CHECK_HOP(t, i, kind, id, dest, from, to, error) \
  check_hop(__LINE__, t, i, kind, id, dest, from, to, error)

/* ---- the runtime ------------------------------------------------------ */

mb_stats stats_of(mb_runtime *rt, const char *name);
/* delivered + failed + dropped == deliveries, nothing in flight or pending */
void check_invariant(mb_runtime *rt, const char *name);
/* Nothing in flight: no request or delivery left, and no message alive. */
void check_quiet(mb_runtime *rt);
/* mb_runtime_run with no bound */
int run(mb_runtime *rt);
/* Turns the loop without blocking until *flag is set (for waits that a
 * timer would otherwise keep running). */
void run_until(mb_runtime *rt, const int *flag);
int declare(mb_runtime *rt, const char *name, mb_dest_type type, size_t max_queue,
            mb_full_policy on_full, size_t concurrency);

/* ---- the areas (test_AREA.c), run by test_core.c ---------------------- */

void values_tests(void);
void json_tests(void);
void show_tests(void);
void dest_tests(void);
void delivery_tests(void);
void request_tests(void);
void observe_tests(void);
void runtime_tests(void);
void threads_tests(void);

#endif
