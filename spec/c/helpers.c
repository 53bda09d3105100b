/*
 * helpers.c — the shared helpers of the C tests (helpers.h) and the
 * harness's counters for the whole test program.
 */
#define CHECK_MAIN 1
#include "helpers.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers: messages and values ------------------------------------- */

mb_msg *msg_int_to(int64_t v, const char *reply_to) {
  mb_buf b = {0};
  mb_enc_int(&b, v);
  mb_msg *m = mb_msg_new(b.p, b.len, NULL, 0, reply_to);
  mb_buf_free(&b);
  return m;
}

mb_msg *msg_int(int64_t v) { return msg_int_to(v, NULL); }

/* The payload of m as an integer; INT64_MIN when it is not one. */
int64_t payload_int(const mb_msg *m) {
  size_t n;
  const uint8_t *p = mb_msg_payload(m, &n);
  mb_reader r = {p, p + n};
  mb_item it;
  if (mb_read(&r, &it) || it.tag != MB_V_INT) return INT64_MIN;
  return it.v.i;
}

/* Finds the string key `key` in the encoded table at r (not consumed): on
 * success *val is a reader positioned at its value. */
int table_get(mb_reader r, const char *key, mb_reader *val) {
  mb_item it;
  if (mb_read(&r, &it) || it.tag != MB_V_TABLE) return -1;
  for (uint32_t i = 0; i < it.v.t.narr; i++)
    if (mb_skip(&r)) return -1;
  for (uint32_t i = 0; i < it.v.t.nhash; i++) {
    mb_reader at = r;
    mb_item k;
    if (mb_read(&r, &k)) return -1;
    if (k.tag == MB_V_STR && k.v.str.len == strlen(key) &&
        memcmp(k.v.str.s, key, k.v.str.len) == 0) {
      *val = r;
      return 0;
    }
    r = at;
    if (mb_skip(&r) || mb_skip(&r)) return -1; /* the key, then the value */
  }
  return -1;
}

/* The string at r as a NUL-terminated copy in buf ("" when not a string). */
const char *read_str(mb_reader r, char *buf, size_t cap) {
  mb_item it;
  buf[0] = 0;
  if (mb_read(&r, &it) || it.tag != MB_V_STR) return buf;
  snprintf(buf, cap, "%.*s", (int)it.v.str.len, it.v.str.s);
  return buf;
}

int64_t read_int(mb_reader r) {
  mb_item it;
  if (mb_read(&r, &it) || it.tag != MB_V_INT) return INT64_MIN;
  return it.v.i;
}

/* ---- helpers: a log, listeners, callbacks ------------------------------ */

void log_add(tlog *l, const char *fmt, ...) {
  size_t n = strlen(l->s);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(l->s + n, sizeof l->s - n, fmt, ap);
  va_end(ap);
}

typedef struct later {
  ev_timer t;
  lis *owner;
  mb_delivery *d;
  int64_t n;
} later;

static void later_finish(later *lt) {
  if (lt->owner->log) log_add(lt->owner->log, "%s%lld> ", lt->owner->name, (long long)lt->n);
  mb_delivery_done(lt->d, MB_OK, NULL);
  free(lt);
}

static void later_timer_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  later_finish(t->data);
}

static void later_task(void *arg) { later_finish(arg); }

void lis_fn(void *ud, mb_delivery *d) {
  lis *l = ud;
  const mb_msg *m = mb_delivery_msg(d);
  int64_t v = payload_int(m);
  int i = l->calls++;
  if (i < MAXN) {
    l->seen[i] = v;
    l->ids[i] = mb_msg_id(m);
    l->resp[i] = mb_msg_response_id(m);
    l->groups[i] = mb_delivery_group(d);
    l->expects[i] = mb_msg_expects_reply(m);
  }
  snprintf(l->dest, sizeof l->dest, "%s", mb_msg_destination(m) ? mb_msg_destination(m) : "(null)");
  switch (l->mode) {
  case L_OK:
    if (l->log) log_add(l->log, "%s%lld ", l->name, (long long)v);
    mb_delivery_done(d, MB_OK, NULL);
    break;
  case L_SOON:
    if (l->log) log_add(l->log, "%s%lld ", l->name, (long long)v);
    mb_delivery_done_soon(d, MB_OK, NULL);
    break;
  case L_FAIL:
    mb_delivery_done(d, MB_EFAILED, "failed: boom");
    break;
  case L_FAIL_ODD:
    if (v % 2)
      mb_delivery_done(d, MB_EFAILED, "failed: odd");
    else
      mb_delivery_done(d, MB_OK, NULL);
    break;
  case L_HOLD:
    if (l->log) log_add(l->log, "%s%lld< ", l->name, (long long)v);
    if (l->nheld < MAXN) {
      l->held[(l->hhead + l->nheld) % MAXN] = d;
      l->nheld++;
      if (l->nheld > l->maxheld) l->maxheld = l->nheld;
    }
    break;
  case L_TIMER:
  case L_POST: {
    later *lt = calloc(1, sizeof *lt);
    if (!lt) abort();
    lt->owner = l;
    lt->d = d;
    lt->n = v;
    if (l->log) log_add(l->log, "%s%lld< ", l->name, (long long)v);
    if (l->mode == L_TIMER) {
      ev_timer_init(&lt->t, later_timer_cb, 0.002, 0);
      lt->t.data = lt;
      ev_timer_start(mb_runtime_loop(l->rt), &lt->t);
    } else if (mb_service_post(l->svc, later_task, lt) != MB_OK) {
      abort();
    }
    break;
  }
  case L_REPLY: {
    mb_msg *r = msg_int(v * 10 + l->reply_add);
    int rc = mb_reply(l->svc, m, mb_delivery_group(d), r);
    if (l->nreplies < MAXN) l->reply_rc[l->nreplies++] = rc;
    mb_delivery_done(d, MB_OK, NULL);
    break;
  }
  case L_CAPTURE: {
    size_t n;
    const uint8_t *p = mb_msg_payload(m, &n);
    if (i < MAXN) {
      l->cap[i] = malloc(n);
      if (!l->cap[i]) abort();
      memcpy(l->cap[i], p, n);
      l->caplen[i] = n;
    }
    mb_delivery_done(d, MB_OK, NULL);
    break;
  }
  }
}

void lis_closed(void *ud) {
  lis *l = ud;
  l->closed_calls++;
  l->l = NULL; /* gone once this returns */
}

/* Sets l up and registers it; returns the mb_listen error (MB_OK on success). */
int lis_listen(lis *l, mb_service *svc, const char *dest, uint64_t group, int mode,
                      const char *name) {
  memset(l, 0, sizeof *l);
  l->name = name;
  l->mode = mode;
  l->svc = svc;
  /* the runtime of a service is not in the API: tests set l->rt for timers */
  int err = MB_OK;
  l->l = mb_listen(svc, dest, group, lis_fn, lis_closed, l, &err);
  if (!l->l && err == MB_OK) err = MB_ENOMEM;
  return err;
}

/* Finishes the oldest delivery l holds; 0 when it holds none. */
int lis_finish(lis *l, int status, const char *error) {
  if (!l->nheld) return 0;
  mb_delivery *d = l->held[l->hhead % MAXN];
  l->hhead = (l->hhead + 1) % MAXN;
  l->nheld--;
  if (l->log) log_add(l->log, "%s%lld> ", l->name, (long long)payload_int(mb_delivery_msg(d)));
  mb_delivery_done(d, status, error);
  return 1;
}

/* lis_finish with mb_delivery_done_soon. */
int lis_finish_soon(lis *l, int status, const char *error) {
  if (!l->nheld) return 0;
  mb_delivery *d = l->held[l->hhead % MAXN];
  l->hhead = (l->hhead + 1) % MAXN;
  l->nheld--;
  mb_delivery_done_soon(d, status, error);
  return 1;
}

void lis_release(lis *l) {
  for (int i = 0; i < MAXN; i++) free(l->cap[i]);
  memset(l->cap, 0, sizeof l->cap);
}

void send_cb(void *ud, int status) {
  sendres *s = ud;
  s->calls++;
  s->status = status;
}

void req_cb(void *ud, const mb_answer *a, size_t n) {
  reqres *r = ud;
  r->calls++;
  r->n = n;
  for (size_t i = 0; i < n && i < 8; i++) {
    r->status[i] = a[i].status;
    r->reply[i] = a[i].reply ? payload_int(a[i].reply) : INT64_MIN;
    r->resp[i] = a[i].reply ? mb_msg_response_id(a[i].reply) : 0;
    snprintf(r->error[i], sizeof r->error[i], "%s", a[i].error ? a[i].error : "");
  }
}

/* Every failed answer's error reads "code: text" with its status's code. */
void check_answer_codes(const reqres *rr) {
  for (size_t i = 0; i < rr->n && i < 8; i++) {
    if (rr->status[i] == MB_OK) continue;
    const char *code = mb_strerror(rr->status[i]);
    size_t n = strlen(code);
    if (!CHECK(strncmp(rr->error[i], code, n) == 0 && rr->error[i][n] == ':'))
      fprintf(stderr, "    answer %zu: status %s, error \"%s\"\n", i, code, rr->error[i]);
  }
}

mb_stats stats_of(mb_runtime *rt, const char *name) {
  mb_stats st;
  memset(&st, 0xff, sizeof st);
  CHECK_INT(mb_dest_stats(rt, name, &st), MB_OK);
  return st;
}

/* Nothing in flight: no request or delivery left, and no message alive. */
void check_quiet(mb_runtime *rt) {
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);
  CHECK_INT(c.deliveries, 0);
  CHECK_INT(c.messages, 0);
}

int run(mb_runtime *rt) { return mb_runtime_run(rt, 0); }

/* Turns the loop without blocking until *flag is set (for waits that a
 * timer would otherwise keep running). */
void run_until(mb_runtime *rt, const int *flag) {
  for (int i = 0; i < 1000 && !*flag; i++) ev_run(mb_runtime_loop(rt), EVRUN_NOWAIT);
}

int declare(mb_runtime *rt, const char *name, mb_dest_type type, size_t max_queue,
                   mb_full_policy on_full, size_t concurrency) {
  mb_dest_opts o = {.type = type, .max_queue = max_queue, .on_full = on_full,
                    .concurrency = concurrency};
  return mb_dest_declare(rt, name, &o);
}

/* depth nested one-element tables around an integer */
void enc_nested(mb_buf *b, int depth) {
  long at[128];
  for (int i = 0; i < depth; i++) at[i] = mb_enc_table_begin(b);
  mb_enc_int(b, 1);
  for (int i = depth - 1; i >= 0; i--) mb_enc_table_end(b, at[i], 1, 0);
}

void check_invariant(mb_runtime *rt, const char *name) {
  mb_stats st = stats_of(rt, name);
  if (!CHECK_INT(st.delivered + st.failed + st.dropped, st.deliveries))
    fprintf(stderr, "    at %s: delivered %llu failed %llu dropped %llu deliveries %llu\n", name,
            (unsigned long long)st.delivered, (unsigned long long)st.failed,
            (unsigned long long)st.dropped, (unsigned long long)st.deliveries);
  CHECK_INT(st.in_flight, 0);
  CHECK_INT(st.pending, 0);
}

void event_cb(void *ud, const mb_event *ev) {
  tlog *log = ud;
  const char *k = ev->kind == MB_EV_DEST_ADDED         ? "DA"
                  : ev->kind == MB_EV_DEST_REMOVED     ? "DR"
                  : ev->kind == MB_EV_LISTENER_ADDED   ? "LA"
                  : ev->kind == MB_EV_LISTENER_REMOVED ? "LR"
                                                       : "??";
  log_add(log, "%s:%s:%d:%zu:%s ", k, ev->destination, (int)ev->type, ev->listeners,
          ev->service ? ev->service : "-");
}

void tracer_fn(void *ud, const mb_hop *h) {
  tracer *t = ud;
  if (t->n >= 48) {
    t->n++;
    return;
  }
  thop *o = &t->h[t->n++];
  o->kind = h->kind;
  o->at = h->at;
  o->duration = h->duration;
  o->id = h->id;
  snprintf(o->dest, sizeof o->dest, "%s", h->dest ? h->dest : NONE);
  snprintf(o->from, sizeof o->from, "%s", h->from ? h->from : NONE);
  snprintf(o->to, sizeof o->to, "%s", h->to ? h->to : NONE);
  snprintf(o->error, sizeof o->error, "%s", h->error ? h->error : NONE);
  o->has_msg = h->msg != NULL;
  o->val = h->msg ? payload_int(h->msg) : INT64_MIN;
}

/* Hop i of t: kind, id, destination, from, to and error (NONE: NULL). */
void check_hop(int line, const tracer *t, int i, mb_hop_kind kind, uint64_t id,
                      const char *dest, const char *from, const char *to, const char *error) {
  if (!CHECK(i < t->n && i < 48)) {
    fprintf(stderr, "    (no hop %d: %d hops; checked at line %d)\n", i, t->n, line);
    return;
  }
  const thop *h = &t->h[i];
  int ok = CHECK_INT(h->kind, kind);
  ok &= CHECK(h->id == id);
  ok &= CHECK_STR(h->dest, dest);
  ok &= CHECK_STR(h->from, from);
  ok &= CHECK_STR(h->to, to);
  ok &= CHECK_STR(h->error, error);
  ok &= CHECK(h->duration >= 0);
  if (!ok) fprintf(stderr, "    (hop %d, checked at line %d)\n", i, line);
}
