/*
 * test_core.c — tests of the mb core through its C API (mb.h, mb_value.h):
 * the value encoding, JSON, destinations, the three delivery types, groups,
 * error codes and back-pressure, requests, stats, dead letters, events,
 * object lifetimes, values shown to people (mb_value_show), and observing
 * the bus: the tracer, latency, the graph and the graceful drain. The loop
 * is driven with mb_runtime_run(rt, 0); each test runs in a process of its
 * own (check.h) and frees its runtime at the end.
 *
 *   make build/test_core && ./build/test_core
 *   make build/asan/test_core && ASAN_OPTIONS=detect_leaks=1 ./build/asan/test_core
 */
#include "check.h" /* first: it selects POSIX */

#include <ev.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mb.h"

/* ---- helpers: messages and values ------------------------------------- */

static mb_msg *msg_int_to(int64_t v, const char *reply_to) {
  mb_buf b = {0};
  mb_enc_int(&b, v);
  mb_msg *m = mb_msg_new(b.p, b.len, NULL, 0, reply_to);
  mb_buf_free(&b);
  return m;
}

static mb_msg *msg_int(int64_t v) { return msg_int_to(v, NULL); }

/* The payload of m as an integer; INT64_MIN when it is not one. */
static int64_t payload_int(const mb_msg *m) {
  size_t n;
  const uint8_t *p = mb_msg_payload(m, &n);
  mb_reader r = {p, p + n};
  mb_item it;
  if (mb_read(&r, &it) || it.tag != MB_V_INT) return INT64_MIN;
  return it.v.i;
}

/* Finds the string key `key` in the encoded table at r (not consumed): on
 * success *val is a reader positioned at its value. */
static int table_get(mb_reader r, const char *key, mb_reader *val) {
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
static const char *read_str(mb_reader r, char *buf, size_t cap) {
  mb_item it;
  buf[0] = 0;
  if (mb_read(&r, &it) || it.tag != MB_V_STR) return buf;
  snprintf(buf, cap, "%.*s", (int)it.v.str.len, it.v.str.s);
  return buf;
}

static int64_t read_int(mb_reader r) {
  mb_item it;
  if (mb_read(&r, &it) || it.tag != MB_V_INT) return INT64_MIN;
  return it.v.i;
}

/* ---- helpers: a log, listeners, callbacks ------------------------------ */

typedef struct tlog {
  char s[4096];
} tlog;

static void log_add(tlog *l, const char *fmt, ...) {
  size_t n = strlen(l->s);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(l->s + n, sizeof l->s - n, fmt, ap);
  va_end(ap);
}

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

static void lis_fn(void *ud, mb_delivery *d) {
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

static void lis_closed(void *ud) {
  lis *l = ud;
  l->closed_calls++;
  l->l = NULL; /* gone once this returns */
}

/* Sets l up and registers it; returns the mb_listen error (MB_OK on success). */
static int lis_listen(lis *l, mb_service *svc, const char *dest, uint64_t group, int mode,
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
static int lis_finish(lis *l, int status, const char *error) {
  if (!l->nheld) return 0;
  mb_delivery *d = l->held[l->hhead % MAXN];
  l->hhead = (l->hhead + 1) % MAXN;
  l->nheld--;
  if (l->log) log_add(l->log, "%s%lld> ", l->name, (long long)payload_int(mb_delivery_msg(d)));
  mb_delivery_done(d, status, error);
  return 1;
}

/* lis_finish with mb_delivery_done_soon. */
static int lis_finish_soon(lis *l, int status, const char *error) {
  if (!l->nheld) return 0;
  mb_delivery *d = l->held[l->hhead % MAXN];
  l->hhead = (l->hhead + 1) % MAXN;
  l->nheld--;
  mb_delivery_done_soon(d, status, error);
  return 1;
}

static void lis_release(lis *l) {
  for (int i = 0; i < MAXN; i++) free(l->cap[i]);
  memset(l->cap, 0, sizeof l->cap);
}

typedef struct sendres {
  int calls, status;
} sendres;

static void send_cb(void *ud, int status) {
  sendres *s = ud;
  s->calls++;
  s->status = status;
}

typedef struct reqres {
  int calls;
  size_t n;
  int status[8];
  int64_t reply[8];
  uint64_t resp[8];
  char error[8][160];
} reqres;

static void req_cb(void *ud, const mb_answer *a, size_t n) {
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
static void check_answer_codes(const reqres *rr) {
  for (size_t i = 0; i < rr->n && i < 8; i++) {
    if (rr->status[i] == MB_OK) continue;
    const char *code = mb_strerror(rr->status[i]);
    size_t n = strlen(code);
    if (!CHECK(strncmp(rr->error[i], code, n) == 0 && rr->error[i][n] == ':'))
      fprintf(stderr, "    answer %zu: status %s, error \"%s\"\n", i, code, rr->error[i]);
  }
}

static mb_stats stats_of(mb_runtime *rt, const char *name) {
  mb_stats st;
  memset(&st, 0xff, sizeof st);
  CHECK_INT(mb_dest_stats(rt, name, &st), MB_OK);
  return st;
}

/* Nothing in flight: no request or delivery left, and no message alive. */
static void check_quiet(mb_runtime *rt) {
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);
  CHECK_INT(c.deliveries, 0);
  CHECK_INT(c.messages, 0);
}

static int run(mb_runtime *rt) { return mb_runtime_run(rt, 0); }

/* Turns the loop without blocking until *flag is set (for waits that a
 * timer would otherwise keep running). */
static void run_until(mb_runtime *rt, const int *flag) {
  for (int i = 0; i < 1000 && !*flag; i++) ev_run(mb_runtime_loop(rt), EVRUN_NOWAIT);
}

static int declare(mb_runtime *rt, const char *name, mb_dest_type type, size_t max_queue,
                   mb_full_policy on_full, size_t concurrency) {
  mb_dest_opts o = {type, max_queue, on_full, concurrency};
  return mb_dest_declare(rt, name, &o);
}

/* ---- the value encoding ----------------------------------------------- */

static void test_value_roundtrip(void) {
  mb_buf b = {0};
  long t = mb_enc_table_begin(&b);
  CHECK(t == 0);
  mb_enc_nil(&b);
  mb_enc_bool(&b, 1);
  mb_enc_bool(&b, 0);
  mb_enc_int(&b, INT64_MIN);
  mb_enc_float(&b, -2.5);
  mb_enc_str(&b, "a\0b", 3);
  mb_enc_str(&b, "k", 1);
  long t2 = mb_enc_table_begin(&b);
  mb_enc_int(&b, 7);
  mb_enc_table_end(&b, t2, 1, 0);
  mb_enc_int(&b, 9);
  mb_enc_str(&b, "", 0);
  mb_enc_table_end(&b, t, 6, 2);
  CHECK_INT(mb_value_check(b.p, b.len), 0);

  mb_reader r = {b.p, b.p + b.len};
  mb_item it;
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_TABLE);
  CHECK_INT(it.v.t.narr, 6);
  CHECK_INT(it.v.t.nhash, 2);
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_NIL);
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_TRUE);
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_FALSE);
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_INT && it.v.i == INT64_MIN);
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_FLOAT && it.v.f == -2.5);
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_STR);
  CHECK_MEM(it.v.str.s, it.v.str.len, "a\0b", 3);
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_STR && it.v.str.len == 1);
  mb_reader nested = r;
  CHECK_INT(mb_skip(&r), 0); /* the whole nested table */
  CHECK(mb_read(&nested, &it) == 0 && it.tag == MB_V_TABLE && it.v.t.narr == 1);
  CHECK(mb_read(&nested, &it) == 0 && it.tag == MB_V_INT && it.v.i == 7);
  CHECK(nested.p == r.p);
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_INT && it.v.i == 9);
  CHECK(mb_read(&r, &it) == 0 && it.tag == MB_V_STR && it.v.str.len == 0);
  CHECK(r.p == r.end);
  CHECK_INT(mb_read(&r, &it), -1); /* nothing left */

  mb_reader whole = {b.p, b.p + b.len};
  CHECK_INT(mb_skip(&whole), 0);
  CHECK(whole.p == whole.end);

  /* a float keeps its bits; an integer stays an integer */
  mb_buf f = {0};
  mb_enc_float(&f, 3.0);
  mb_enc_int(&f, 3);
  mb_reader fr = {f.p, f.p + f.len};
  CHECK(mb_read(&fr, &it) == 0 && it.tag == MB_V_FLOAT && it.v.f == 3.0);
  CHECK(mb_read(&fr, &it) == 0 && it.tag == MB_V_INT && it.v.i == 3);
  mb_buf_free(&f);
  mb_buf_free(&b);
  CHECK(b.p == NULL && b.len == 0 && b.cap == 0);
}

static void test_value_check_rejects(void) {
  mb_buf b = {0};
  long t = mb_enc_table_begin(&b);
  mb_enc_int(&b, 1);
  mb_enc_str(&b, "hello", 5);
  mb_enc_float(&b, 0.5);
  mb_enc_str(&b, "key", 3);
  mb_enc_bool(&b, 1);
  mb_enc_table_end(&b, t, 3, 1);
  CHECK_INT(mb_value_check(b.p, b.len), 0);

  /* every truncation is refused */
  int accepted = 0;
  for (size_t n = 0; n < b.len; n++)
    if (mb_value_check(b.p, n) == 0) accepted++;
  CHECK_INT(accepted, 0);

  /* trailing bytes after the one value */
  mb_enc_nil(&b);
  CHECK_INT(mb_value_check(b.p, b.len), -1);
  mb_buf_free(&b);

  /* garbage */
  static const uint8_t unknown_tag[] = {7};
  static const uint8_t high_tag[] = {0xff, 0, 0, 0};
  static const uint8_t long_str[] = {MB_V_STR, 0xff, 0xff, 0xff, 0x7f, 'a'};
  static const uint8_t short_int[] = {MB_V_INT, 1, 2, 3};
  static const uint8_t huge_table[] = {MB_V_TABLE, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, MB_V_NIL};
  static const uint8_t table_key_missing[] = {MB_V_TABLE, 0, 0, 0, 0, 1, 0, 0, 0, MB_V_NIL};
  static const uint8_t bad_inside[] = {MB_V_TABLE, 1, 0, 0, 0, 0, 0, 0, 0, 9};
  CHECK_INT(mb_value_check(unknown_tag, sizeof unknown_tag), -1);
  CHECK_INT(mb_value_check(high_tag, sizeof high_tag), -1);
  CHECK_INT(mb_value_check(long_str, sizeof long_str), -1);
  CHECK_INT(mb_value_check(short_int, sizeof short_int), -1);
  CHECK_INT(mb_value_check(huge_table, sizeof huge_table), -1);
  CHECK_INT(mb_value_check(table_key_missing, sizeof table_key_missing), -1);
  CHECK_INT(mb_value_check(bad_inside, sizeof bad_inside), -1);
  CHECK_INT(mb_value_check("", 0), -1);
  mb_reader r = {short_int, short_int + sizeof short_int};
  mb_item it;
  CHECK_INT(mb_read(&r, &it), -1);
  mb_reader rs = {long_str, long_str + sizeof long_str};
  CHECK_INT(mb_read(&rs, &it), -1);
  mb_reader rh = {huge_table, huge_table + sizeof huge_table};
  CHECK_INT(mb_skip(&rh), -1);
}

/* depth nested one-element tables around an integer */
static void enc_nested(mb_buf *b, int depth) {
  long at[128];
  for (int i = 0; i < depth; i++) at[i] = mb_enc_table_begin(b);
  mb_enc_int(b, 1);
  for (int i = depth - 1; i >= 0; i--) mb_enc_table_end(b, at[i], 1, 0);
}

static void test_value_depth(void) {
  mb_buf b64 = {0}, b65 = {0};
  enc_nested(&b64, MB_MAX_DEPTH);
  enc_nested(&b65, MB_MAX_DEPTH + 1);
  CHECK_INT(MB_MAX_DEPTH, 64);
  CHECK_INT(mb_value_check(b64.p, b64.len), 0);
  CHECK_INT(mb_value_check(b65.p, b65.len), -1);
  mb_reader r64 = {b64.p, b64.p + b64.len}, r65 = {b65.p, b65.p + b65.len};
  CHECK_INT(mb_skip(&r64), 0);
  CHECK_INT(mb_skip(&r65), -1);

  /* the same bound on JSON input */
  char json[2 * 66 + 2];
  for (int depth = 64; depth <= 65; depth++) {
    size_t n = 0;
    for (int i = 0; i < depth; i++) json[n++] = '[';
    json[n++] = '1';
    for (int i = 0; i < depth; i++) json[n++] = ']';
    mb_buf out = {0};
    char err[256] = "";
    int rc = mb_json_decode(json, n, MB_MAX_DEPTH, &out, err, sizeof err);
    if (depth == 64) {
      CHECK_INT(rc, 0);
      CHECK_INT(mb_value_check(out.p, out.len), 0);
    } else {
      CHECK_INT(rc, -1);
      CHECK(strncmp(err, "invalid JSON at byte ", 21) == 0);
      CHECK(strstr(err, "nested too deep") != NULL);
      CHECK_INT(out.len, 0);
    }
    mb_buf_free(&out);
  }
  mb_buf_free(&b64);
  mb_buf_free(&b65);
}

static void test_value_paths(void) {
  mb_path p;
  mb_path_init(&p);
  CHECK_STR(p.buf, "");
  mb_path_prepend_intkey(&p, 3);
  mb_path_prepend_strkey(&p, "items", 5);
  mb_path_prepend(&p, "payload", 7);
  CHECK_STR(p.buf, "payload.items[3]");
  mb_path_init(&p);
  mb_path_prepend_strkey(&p, "odd key", 7);
  mb_path_prepend_strkey(&p, "9lives", 6);
  CHECK_STR(p.buf, "[\"9lives\"][\"odd key\"]");
  /* a NUL byte, quotes and control bytes are escaped, not the end of the
   * key or a broken quote (issue 12, item 10) */
  mb_path_init(&p);
  mb_path_prepend_strkey(&p, "a\0b\"c\\\n", 7);
  CHECK_STR(p.buf, "[\"a\\000b\\\"c\\\\\\010\"]");
  mb_path_init(&p);
  mb_path_prepend_strkey(&p, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 42);
  CHECK_INT((int)strlen(p.buf), 2 + 40 * 4 + 3 + 2);
}

/* ---- JSON --------------------------------------------------------------- */

/* Decodes s; returns the first item in *it (bytes kept in *b). */
static int json_item(const char *s, mb_buf *b, mb_item *it, char *err, size_t errlen) {
  if (mb_json_decode(s, strlen(s), MB_MAX_DEPTH, b, err, errlen)) return -1;
  mb_reader r = {b->p, b->p + b->len};
  return mb_read(&r, it);
}

/* JSON text -> value -> JSON text; "" when either step fails. */
static const char *json_rt(const char *in, char *out, size_t cap) {
  mb_buf v = {0}, j = {0};
  char err[256];
  out[0] = 0;
  if (mb_json_decode(in, strlen(in), MB_MAX_DEPTH, &v, err, sizeof err) == 0 &&
      mb_value_check(v.p, v.len) == 0 &&
      mb_json_encode(v.p, v.len, "payload", &j, err, sizeof err) == 0)
    snprintf(out, cap, "%.*s", (int)j.len, (const char *)j.p);
  mb_buf_free(&v);
  mb_buf_free(&j);
  return out;
}

/* Encodes the value in b as JSON; returns 0 or -1 with err set. */
static int to_json(const mb_buf *b, char *out, size_t cap, char *err, size_t errlen) {
  mb_buf j = {0};
  int rc = mb_json_encode(b->p, b->len, "payload", &j, err, errlen);
  out[0] = 0;
  if (rc == 0) snprintf(out, cap, "%.*s", (int)j.len, (const char *)j.p);
  if (rc != 0) CHECK_INT(j.len, 0); /* nothing written on error */
  mb_buf_free(&j);
  return rc;
}

static void test_json_numbers(void) {
  char out[256], err[256];
  mb_item it;

  mb_buf b = {0};
  CHECK(json_item("3.0", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_FLOAT && it.v.f == 3.0);
  mb_buf_free(&b);
  CHECK_STR(json_rt("3.0", out, sizeof out), "3.0");
  CHECK(json_item("3", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_INT && it.v.i == 3);
  mb_buf_free(&b);
  CHECK_STR(json_rt("3", out, sizeof out), "3");
  CHECK_STR(json_rt("[1,1.0,-1,-1.0]", out, sizeof out), "[1,1.0,-1,-1.0]");

  /* integers that fit in 64 bits stay exact */
  CHECK(json_item("9007199254740993", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_INT &&
        it.v.i == 9007199254740993LL);
  mb_buf_free(&b);
  CHECK_STR(json_rt("9007199254740993", out, sizeof out), "9007199254740993");
  CHECK(json_item("-9223372036854775808", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_INT &&
        it.v.i == INT64_MIN);
  mb_buf_free(&b);
  CHECK_STR(json_rt("9223372036854775807", out, sizeof out), "9223372036854775807");

  /* others become floats */
  CHECK(json_item("9223372036854775808", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_FLOAT &&
        it.v.f == 9223372036854775808.0);
  mb_buf_free(&b);
  CHECK(json_item("123456789012345678901234", &b, &it, err, sizeof err) == 0 &&
        it.tag == MB_V_FLOAT && it.v.f == 123456789012345678901234.0);
  mb_buf_free(&b);
  /* beyond the double range: an error at the number, not an infinity no
   * encoder could write back (issue 12, item 7) */
  CHECK_INT(json_item("1e400", &b, &it, err, sizeof err), -1);
  CHECK_STR(err, "invalid JSON at byte 0: number 1e400 is out of range (a JSON number must be "
                 "within +-1.8e308)");
  CHECK_INT((int)b.len, 0);
  CHECK_INT(json_item("[1, {\"a\": -1E999}]", &b, &it, err, sizeof err), -1);
  CHECK(strncmp(err, "invalid JSON at byte 10: number -1E999 is out of range", 54) == 0);
  CHECK_INT(json_item("[1e309]", &b, &it, err, sizeof err), -1);
  CHECK(strncmp(err, "invalid JSON at byte 1: number 1e309 ", 37) == 0);
  mb_buf_free(&b);
  /* the largest double and an underflow to zero are fine */
  CHECK(json_item("1.7976931348623157e308", &b, &it, err, sizeof err) == 0 &&
        it.v.f == 1.7976931348623157e308);
  mb_buf_free(&b);
  CHECK(json_item("1e-400", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_FLOAT && it.v.f == 0);
  mb_buf_free(&b);
  CHECK(json_item("1e2", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_FLOAT && it.v.f == 100.0);
  mb_buf_free(&b);
  CHECK_STR(json_rt("1e2", out, sizeof out), "100.0");
  CHECK(json_item("-0.0", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_FLOAT && it.v.f == 0.0 &&
        signbit(it.v.f));
  mb_buf_free(&b);

  /* floats are written exactly, and always as floats */
  static const double fl[] = {0.1,  0.30000000000000004, 1e300, -1.5e-300, 123456789012.0,
                              1e16, 4.9e-324,            2.0,   1.7976931348623157e308};
  for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
    mb_buf v = {0}, back = {0};
    mb_enc_float(&v, fl[i]);
    CHECK_INT(to_json(&v, out, sizeof out, err, sizeof err), 0);
    CHECK(strpbrk(out, ".eE") != NULL);
    CHECK(json_item(out, &back, &it, err, sizeof err) == 0 && it.tag == MB_V_FLOAT &&
          it.v.f == fl[i]);
    mb_buf_free(&v);
    mb_buf_free(&back);
  }
  CHECK_STR(json_rt("0.1", out, sizeof out), "0.1");
  CHECK_STR(json_rt("-0.0", out, sizeof out), "-0.0");

  mb_buf nan = {0};
  mb_enc_float(&nan, NAN);
  CHECK_INT(to_json(&nan, out, sizeof out, err, sizeof err), -1);
  CHECK(strstr(err, "NaN") != NULL);
  mb_buf_free(&nan);
}

static void test_json_strings(void) {
  char out[256], err[256];
  mb_item it;
  mb_buf b = {0};

  CHECK(json_item("\"a\\u0000b\"", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_STR);
  CHECK_MEM(it.v.str.s, it.v.str.len, "a\0b", 3);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), 0);
  CHECK_STR(out, "\"a\\u0000b\"");
  mb_buf_free(&b);

  CHECK(json_item("\"\\ud83d\\ude00\"", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_STR);
  CHECK_MEM(it.v.str.s, it.v.str.len, "\xf0\x9f\x98\x80", 4);
  mb_buf_free(&b);

  CHECK(json_item("\"\\u00e9\\u20ac\"", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_STR);
  CHECK_MEM(it.v.str.s, it.v.str.len, "\xc3\xa9\xe2\x82\xac", 5);
  mb_buf_free(&b);

  CHECK(json_item("\"q\\\"b\\\\n\\nt\\t\\/\"", &b, &it, err, sizeof err) == 0 &&
        it.tag == MB_V_STR);
  CHECK_MEM(it.v.str.s, it.v.str.len, "q\"b\\n\nt\t/", 9);
  mb_buf_free(&b);

  /* control bytes are escaped; UTF-8 passes through */
  mb_enc_str(&b, "\x01\n\"\xf0\x9f\x98\x80", 7);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), 0);
  CHECK_STR(out, "\"\\u0001\\n\\\"\xf0\x9f\x98\x80\"");
  mb_buf_free(&b);

  CHECK_STR(json_rt("\"\"", out, sizeof out), "\"\"");
  CHECK_STR(json_rt("{\"a b\":\"\\u0000\"}", out, sizeof out), "{\"a b\":\"\\u0000\"}");

  /* surrogate escapes (SPEC 7, JSON text): a pair is one code point; any
   * other is U+FFFD and what follows is kept (issue 12, item 7) */
  static const struct {
    const char *json, *utf8;
  } sur[] = {
      {"\"\\ud800\\u0041\"", "\xef\xbf\xbd" "A"},
      {"\"\\udc00x\"", "\xef\xbf\xbdx"},
      {"\"a\\ud800\"", "a\xef\xbf\xbd"},
      {"\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf"},
      {"\"\\ud800\\ud800\\udc00\"", "\xef\xbf\xbd\xf0\x90\x80\x80"},
      {"\"\\ud800\\n\"", "\xef\xbf\xbd\n"},
      {"\"\\udc00\\ud800\"", "\xef\xbf\xbd\xef\xbf\xbd"},
      {"\"\\\\ud800\"", "\\ud800"}, /* an escaped backslash, no escape */
      {"\"\\\"\\ud83d\\ude00\\\"\"", "\"\xf0\x9f\x98\x80\""},
  };
  for (size_t i = 0; i < sizeof sur / sizeof sur[0]; i++) {
    if (!CHECK(json_item(sur[i].json, &b, &it, err, sizeof err) == 0 && it.tag == MB_V_STR))
      continue;
    if (!CHECK_MEM(it.v.str.s, it.v.str.len, sur[i].utf8, strlen(sur[i].utf8)))
      fprintf(stderr, "    (case %s)\n", sur[i].json);
    mb_buf_free(&b);
  }
  /* ... in object keys too */
  CHECK(json_item("{\"k\\ud800\\u0041\":1}", &b, &it, err, sizeof err) == 0 &&
        it.tag == MB_V_TABLE && it.v.t.nhash == 1);
  mb_reader kr = {b.p + 9, b.p + b.len};
  mb_item key;
  CHECK(mb_read(&kr, &key) == 0 && key.tag == MB_V_STR);
  CHECK_MEM(key.v.str.s, key.v.str.len, "k\xef\xbf\xbd" "A", 5);
  mb_buf_free(&b);
}

static void test_json_tables(void) {
  char out[512], err[256];
  mb_buf b = {0};

  long t = mb_enc_table_begin(&b);
  mb_enc_table_end(&b, t, 0, 0);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), 0);
  CHECK_STR(out, "{}");
  mb_buf_free(&b);

  CHECK_STR(json_rt("{}", out, sizeof out), "{}");
  CHECK_STR(json_rt("[1,2,3]", out, sizeof out), "[1,2,3]");
  CHECK_STR(json_rt("[1,null,3]", out, sizeof out), "[1,null,3]");
  CHECK_STR(json_rt("{\"a\":1,\"b\":null}", out, sizeof out), "{\"a\":1,\"b\":null}");
  CHECK_STR(json_rt("{\"a\":[1,{\"b\":[true,false]}],\"c\":\"x\"}", out, sizeof out),
            "{\"a\":[1,{\"b\":[true,false]}],\"c\":\"x\"}");
  CHECK_STR(json_rt("  [ 1 , { \"k\" : 2.5 } ]  ", out, sizeof out), "[1,{\"k\":2.5}]");

  /* an array decodes to keys 1..n, an object to string keys */
  mb_item it;
  CHECK(json_item("[\"x\",\"y\"]", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_TABLE &&
        it.v.t.narr == 2 && it.v.t.nhash == 0);
  mb_buf_free(&b);
  CHECK(json_item("{\"x\":1,\"y\":2}", &b, &it, err, sizeof err) == 0 && it.tag == MB_V_TABLE &&
        it.v.t.narr == 0 && it.v.t.nhash == 2);
  mb_reader r = {b.p, b.p + b.len}, v;
  CHECK(table_get(r, "y", &v) == 0 && read_int(v) == 2);
  mb_buf_free(&b);

  /* keys other than exactly 1..n: an object, integer keys as strings */
  t = mb_enc_table_begin(&b);
  mb_enc_int(&b, 10);
  mb_enc_int(&b, 20);
  mb_enc_str(&b, "x", 1);
  mb_enc_bool(&b, 1);
  mb_enc_int(&b, 5);
  mb_enc_str(&b, "five", 4);
  mb_enc_table_end(&b, t, 2, 2);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), 0);
  CHECK_STR(out, "{\"1\":10,\"2\":20,\"x\":true,\"5\":\"five\"}");
  mb_buf_free(&b);

  /* a float key: an error naming the path */
  t = mb_enc_table_begin(&b);
  mb_enc_float(&b, 1.5);
  mb_enc_int(&b, 1);
  mb_enc_table_end(&b, t, 0, 1);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), -1);
  CHECK(strncmp(err, "payload", 7) == 0);
  CHECK(strstr(err, "float key") != NULL);
  mb_buf_free(&b);

  /* a boolean key, nested: payload.items... */
  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "items", 5);
  long t2 = mb_enc_table_begin(&b);
  mb_enc_bool(&b, 1);
  mb_enc_int(&b, 1);
  mb_enc_table_end(&b, t2, 0, 1);
  mb_enc_table_end(&b, t, 0, 1);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), -1);
  CHECK(strncmp(err, "payload.items", 13) == 0);
  CHECK(strstr(err, "boolean key") != NULL);
  mb_buf_free(&b);

  /* ... and inside an array: payload[2] */
  t = mb_enc_table_begin(&b);
  mb_enc_int(&b, 1);
  t2 = mb_enc_table_begin(&b);
  mb_enc_bool(&b, 0);
  mb_enc_str(&b, "no", 2);
  mb_enc_table_end(&b, t2, 0, 1);
  mb_enc_table_end(&b, t, 2, 0);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), -1);
  CHECK(strncmp(err, "payload[2]", 10) == 0);
  CHECK(strstr(err, "boolean key") != NULL);
  mb_buf_free(&b);

  /* keys that would be one JSON object key: an error naming the path, also
   * when the integer key is in the array part or comes after the string
   * (issue 12, item 7; SPEC 7, JSON text) */
  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "a", 1);
  mb_enc_str(&b, "x", 1);
  t2 = mb_enc_table_begin(&b);
  mb_enc_str(&b, "-3", 2);
  mb_enc_int(&b, 1);
  mb_enc_int(&b, -3);
  mb_enc_int(&b, 2);
  mb_enc_table_end(&b, t2, 0, 2);
  mb_enc_table_end(&b, t, 1, 1);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), -1);
  CHECK_STR(err, "payload.x[\"-3\"]: cannot encode the keys -3 and \"-3\" in one JSON object "
                 "(both are written as \"-3\")");
  mb_buf_free(&b);
  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "a", 1);
  mb_enc_str(&b, "1", 1);
  mb_enc_str(&b, "b", 1);
  mb_enc_table_end(&b, t, 1, 1);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), -1);
  CHECK(strncmp(err, "payload[\"1\"]: cannot encode the keys 1 and \"1\"", 45) == 0);
  mb_buf_free(&b);
  /* no collision: "01", "+1", "1.0", " 1", a hole at 2, and other numbers */
  t = mb_enc_table_begin(&b);
  mb_enc_int(&b, 1);
  mb_enc_nil(&b);
  static const char *const fine[] = {"01", "+1", "1.0", " 1", "2", "-0", "9223372036854775808"};
  for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
    mb_enc_str(&b, fine[i], strlen(fine[i]));
    mb_enc_int(&b, (int64_t)i);
  }
  mb_enc_int(&b, 7);
  mb_enc_int(&b, 7);
  mb_enc_table_end(&b, t, 2, 8);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), 0);
  CHECK_STR(out, "{\"1\":1,\"01\":0,\"+1\":1,\"1.0\":2,\" 1\":3,\"2\":4,\"-0\":5,"
                 "\"9223372036854775808\":6,\"7\":7}");
  mb_buf_free(&b);
  /* a nil key (only the C API makes one) is named as such */
  t = mb_enc_table_begin(&b);
  mb_enc_nil(&b);
  mb_enc_int(&b, 1);
  mb_enc_table_end(&b, t, 0, 1);
  CHECK_INT(to_json(&b, out, sizeof out, err, sizeof err), -1);
  CHECK_STR(err, "payload[nil]: cannot encode a nil key in JSON");
  mb_buf_free(&b);
  int64_t n;
  CHECK(mb_json_int_key("-9223372036854775808", 20, &n) && n == INT64_MIN);
  CHECK(mb_json_int_key("9223372036854775807", 19, &n) && n == INT64_MAX);
  CHECK(!mb_json_int_key("-", 1, &n) && !mb_json_int_key("", 0, &n) &&
        !mb_json_int_key("99999999999999999999", 20, &n));
}

/* The N of "invalid JSON at byte N: ..."; -1 when err does not read so. */
static long json_error_at(const char *json, char *err, size_t errlen) {
  mb_buf b = {0};
  mb_enc_int(&b, 77); /* earlier content must survive a failed decode */
  size_t before = b.len;
  int rc = mb_json_decode(json, strlen(json), MB_MAX_DEPTH, &b, err, errlen);
  CHECK_INT(b.len, before);
  mb_buf_free(&b);
  if (rc != -1) return -1;
  unsigned long n;
  if (strncmp(err, "invalid JSON at byte ", 21) != 0 || sscanf(err + 21, "%lu", &n) != 1) return -1;
  return (long)n;
}

static void test_json_errors(void) {
  char err[256];
  static const struct {
    const char *json;
    long at; /* the offending byte (0-based); N may count it (at + 1) */
  } cases[] = {
      {"[1, 2, x]", 7}, {"{\"a\":1,}", 7},   {"{\"a\" 1}", 5}, {"[1,2", 4},
      {"", 0},          {"1 2", 2},          {"\"abc", 4},     {"[1,]", 3},
      {"tru", 3},       {"{\"a\":[1,2}", 9}, {"nul!", 3},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    long n = json_error_at(cases[i].json, err, sizeof err);
    if (!CHECK(n >= cases[i].at && n <= cases[i].at + 1))
      fprintf(stderr, "    input '%s' gave: %s\n", cases[i].json, err);
  }

  /* decoding appends to what the buffer holds */
  mb_buf b = {0};
  mb_enc_nil(&b);
  CHECK_INT(mb_json_decode("[5]", 3, MB_MAX_DEPTH, &b, err, sizeof err), 0);
  CHECK_INT(mb_value_check(b.p + 1, b.len - 1), 0);
  CHECK_INT(b.p[0], MB_V_NIL);
  mb_buf_free(&b);
}

/* ---- destinations ------------------------------------------------------ */

typedef struct names {
  char s[2048];
  int n;
} names;

static void collect_name(void *ud, const char *name) {
  names *ns = ud;
  size_t len = strlen(ns->s);
  snprintf(ns->s + len, sizeof ns->s - len, "%s%s", ns->n ? "," : "", name);
  ns->n++;
}

static void test_dest_declare(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  if (!CHECK(rt != NULL)) return;

  CHECK_INT(mb_dest_exists(rt, "shop/orders"), 0);
  CHECK_INT(mb_dest_declare(rt, "shop/orders", NULL), MB_OK);
  CHECK_INT(mb_dest_exists(rt, "shop/orders"), 1);
  CHECK_INT(mb_dest_declare(rt, "shop/orders", NULL), MB_OK);
  /* the defaults spelled out are the same options */
  CHECK_INT(declare(rt, "shop/orders", MB_PARALLEL, 65536, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(declare(rt, "shop/orders", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_EEXISTS);
  CHECK_INT(declare(rt, "shop/orders", MB_PARALLEL, 10, MB_FULL_REJECT, 0), MB_EEXISTS);
  CHECK_INT(declare(rt, "shop/orders", MB_PARALLEL, 0, MB_FULL_BLOCK, 0), MB_EEXISTS);
  CHECK_INT(declare(rt, "shop/orders", MB_PARALLEL, 0, MB_FULL_REJECT, 3), MB_EEXISTS);
  CHECK_INT(declare(rt, "s", MB_SERIAL, 5, MB_FULL_BLOCK, 0), MB_OK);
  CHECK_INT(declare(rt, "s", MB_SERIAL, 5, MB_FULL_BLOCK, 0), MB_OK);
  CHECK_INT(declare(rt, "s", MB_SYNCHRONOUS, 5, MB_FULL_BLOCK, 0), MB_EEXISTS);

  mb_stats st = stats_of(rt, "s");
  CHECK_INT(st.type, MB_SERIAL);
  CHECK_INT(st.listeners, 0);
  CHECK_INT(st.sent + st.rejected + st.deliveries + st.delivered + st.failed + st.dropped, 0);
  CHECK_INT(st.pending + st.largest_pending + st.in_flight, 0);
  CHECK_INT(st.replies + st.timeouts, 0);
  CHECK_INT(mb_dest_stats(rt, "nope", &st), MB_ENODEST);

  /* names: 1-255 bytes of [A-Za-z0-9_./:-] */
  char n255[256], n256[257];
  memset(n255, 'a', 255);
  n255[255] = 0;
  memset(n256, 'a', 256);
  n256[256] = 0;
  CHECK_INT(mb_dest_declare(rt, "", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, n256, NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, "a b", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, "tab\there", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, "caf\xc3\xa9", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, "a*b", NULL), MB_EINVAL);
  CHECK_INT(mb_dest_declare(rt, n255, NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "Az09_./:-", NULL), MB_OK);
  CHECK_INT(mb_dest_exists(rt, n256), 0);
  CHECK_INT(mb_dest_name_valid("x", 1), 1);
  CHECK_INT(mb_dest_name_valid("x", 0), 0);
  CHECK_INT(mb_dest_name_valid(n255, 255), 1);
  CHECK_INT(mb_dest_name_valid(n256, 256), 0);
  CHECK_INT(mb_dest_name_valid("a\0b", 3), 0);

  /* bad options */
  CHECK_INT(declare(rt, "bad/type", (mb_dest_type)3, 0, MB_FULL_REJECT, 0), MB_EINVAL);
  CHECK_INT(declare(rt, "bad/full", MB_PARALLEL, 0, (mb_full_policy)2, 0), MB_EINVAL);
  CHECK_INT(mb_dest_exists(rt, "bad/type") + mb_dest_exists(rt, "bad/full"), 0);

  /* removal of an idle destination is immediate */
  CHECK_INT(mb_dest_remove(rt, "nope"), MB_ENODEST);
  CHECK_INT(mb_dest_remove(rt, "s"), MB_OK);
  CHECK_INT(mb_dest_exists(rt, "s"), 0);
  CHECK_INT(mb_dest_stats(rt, "s", &st), MB_ENODEST);
  CHECK_INT(mb_dest_remove(rt, "s"), MB_ENODEST);
  CHECK_INT(declare(rt, "s", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(stats_of(rt, "s").type, MB_SYNCHRONOUS);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_dest_each_sorted(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  static const char *const in[] = {"b", "a", "c/x", "A", "a/b", "a:1", "B-2", "_z"};
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
    CHECK_INT(mb_dest_declare(rt, in[i], NULL), MB_OK);
  names ns = {"", 0};
  mb_dest_each(rt, collect_name, &ns);
  CHECK_STR(ns.s, "A,B-2,_z,a,a/b,a:1,b,c/x");
  CHECK_INT(ns.n, 8);

  CHECK_INT(mb_dest_remove(rt, "a/b"), MB_OK);
  names ns2 = {"", 0};
  mb_dest_each(rt, collect_name, &ns2);
  CHECK_STR(ns2.s, "A,B-2,_z,a,a:1,b,c/x");

  names none = {"", 0};
  mb_runtime *empty = mb_runtime_new(NULL);
  mb_dest_each(empty, collect_name, &none);
  CHECK_INT(none.n, 0);
  mb_runtime_free(empty);
  mb_runtime_free(rt);
}

/* Many names: the name table grows, and removals keep the others findable. */
static void test_dest_many(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  char name[32];
  for (int i = 0; i < 500; i++) {
    snprintf(name, sizeof name, "d/%d", i);
    CHECK_INT(mb_dest_declare(rt, name, NULL), MB_OK);
  }
  for (int i = 0; i < 500; i += 3) {
    snprintf(name, sizeof name, "d/%d", i);
    CHECK_INT(mb_dest_remove(rt, name), MB_OK);
  }
  int wrong = 0;
  for (int i = 0; i < 500; i++) {
    snprintf(name, sizeof name, "d/%d", i);
    if (mb_dest_exists(rt, name) != (i % 3 != 0)) wrong++;
  }
  CHECK_INT(wrong, 0);
  names ns = {"", 0};
  mb_dest_each(rt, collect_name, &ns);
  CHECK_INT(ns.n, 333);
  mb_runtime_free(rt);
}

/* ---- delivery: parallel, serial, synchronous, groups ------------------- */

static void test_parallel(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "par", 0);
  CHECK_INT(mb_dest_declare(rt, "par", NULL), MB_OK);
  lis a, b;
  CHECK_INT(lis_listen(&a, svc, "par", 0, L_OK, "A"), MB_OK);
  CHECK_INT(lis_listen(&b, svc, "par", 0, L_OK, "B"), MB_OK);
  CHECK_INT(stats_of(rt, "par").listeners, 2);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "par", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 3);
  CHECK_INT(b.calls, 3);
  int64_t sa = 0, sb = 0;
  for (int i = 0; i < 3; i++) {
    sa += a.seen[i];
    sb += b.seen[i];
  }
  CHECK_INT(sa, 6);
  CHECK_INT(sb, 6);
  CHECK_STR(a.dest, "par");
  CHECK(a.ids[0] != a.ids[1] && a.ids[1] != a.ids[2] && a.ids[0] != a.ids[2]);
  CHECK_INT(a.expects[0], 0);
  mb_stats st = stats_of(rt, "par");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.deliveries, 6);
  CHECK_INT(st.delivered, 6);
  CHECK_INT(st.failed + st.dropped + st.rejected, 0);
  CHECK_INT(st.pending + st.in_flight, 0);

  /* deliveries overlap: a listener holding them all still gets them all */
  CHECK_INT(mb_dest_declare(rt, "par2", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "par2", 0, L_HOLD, "H"), MB_OK);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "par2", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 3);
  st = stats_of(rt, "par2");
  CHECK_INT(st.in_flight, 3);
  CHECK_INT(st.pending, 0);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.deliveries, 3);
  while (lis_finish(&h, MB_OK, NULL)) continue;
  st = stats_of(rt, "par2");
  CHECK_INT(st.delivered, 3);
  CHECK_INT(st.in_flight, 0);

  /* a listener closed while it holds a delivery still finishes it */
  CHECK_INT(mb_send(svc, "par2", msg_int(4), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 1);
  mb_listener_close(h.l);
  CHECK_INT(stats_of(rt, "par2").listeners, 0);
  CHECK_INT(mb_send(svc, "par2", msg_int(5), NULL, NULL), MB_ENOLISTENERS);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  st = stats_of(rt, "par2");
  CHECK_INT(st.delivered, 4);
  CHECK_INT(st.dropped, 0);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.listeners, 2); /* a and b */
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_parallel_concurrency(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "conc", 0);
  CHECK_INT(declare(rt, "conc", MB_PARALLEL, 0, MB_FULL_REJECT, 2), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "conc", 0, L_HOLD, "H"), MB_OK);
  for (int i = 1; i <= 5; i++) CHECK_INT(mb_send(svc, "conc", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(stats_of(rt, "conc").largest_pending, 5);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 2);
  mb_stats st = stats_of(rt, "conc");
  CHECK_INT(st.in_flight, 2);
  CHECK_INT(st.pending, 3);
  int rounds = 0;
  while (lis_finish(&h, MB_OK, NULL) && rounds++ < 20) run(rt);
  CHECK_INT(h.calls, 5);
  CHECK_INT(h.maxheld, 2);
  st = stats_of(rt, "conc");
  CHECK_INT(st.delivered, 5);
  CHECK_INT(st.pending, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_serial_order(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "ser", 0);
  CHECK_INT(declare(rt, "ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  tlog log = {""};
  lis a, b;
  /* A finishes from a timer, B from a posted task: both later */
  CHECK_INT(lis_listen(&a, svc, "ser", 0, L_TIMER, "A"), MB_OK);
  a.rt = rt;
  a.log = &log;
  CHECK_INT(lis_listen(&b, svc, "ser", 0, L_POST, "B"), MB_OK);
  b.log = &log;
  for (int i = 1; i <= 4; i++) CHECK_INT(mb_send(svc, "ser", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "A1< A1> B1< B1> A2< A2> B2< B2> A3< A3> B3< B3> A4< A4> B4< B4> ");
  mb_stats st = stats_of(rt, "ser");
  CHECK_INT(st.sent, 4);
  CHECK_INT(st.deliveries, 8);
  CHECK_INT(st.delivered, 8);
  CHECK_INT(st.in_flight + st.pending, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_serial_step_by_step(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "ser2", 0);
  CHECK_INT(declare(rt, "ser2", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  tlog log = {""};
  lis h, b;
  CHECK_INT(lis_listen(&h, svc, "ser2", 0, L_HOLD, "H"), MB_OK);
  h.log = &log;
  CHECK_INT(lis_listen(&b, svc, "ser2", 0, L_OK, "B"), MB_OK);
  b.log = &log;
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "ser2", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "H1< ");
  CHECK_INT(b.calls, 0);
  mb_stats st = stats_of(rt, "ser2");
  CHECK_INT(st.in_flight, 1);
  CHECK_INT(st.pending, 2);
  /* nothing moves while H holds message 1, however long the loop runs */
  CHECK_INT(run(rt), 0);
  CHECK_INT(b.calls, 0);
  CHECK_INT(h.calls, 1);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "H1< H1> B1 H2< ");
  lis_finish(&h, MB_EFAILED, "failed: two"); /* a failure does not stop the order */
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "H1< H1> B1 H2< H2> B2 H3< ");
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "H1< H1> B1 H2< H2> B2 H3< H3> B3 ");
  st = stats_of(rt, "ser2");
  CHECK_INT(st.deliveries, 6);
  CHECK_INT(st.delivered, 5);
  CHECK_INT(st.failed, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_synchronous(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "syn", 0);
  CHECK_INT(declare(rt, "sync", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "sync", 0, L_OK, "A"), MB_OK);
  sendres sr = {0, -100};
  /* listeners that finish inline: MB_OK once they ran */
  CHECK_INT(mb_send(svc, "sync", msg_int(1), send_cb, &sr), MB_OK);
  CHECK_INT(a.calls, 1);
  CHECK_INT(mb_send(svc, "sync", msg_int(2), NULL, NULL), MB_OK);
  CHECK_INT(a.calls, 2);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr.calls, 0); /* no callback after MB_OK */
  mb_stats st = stats_of(rt, "sync");
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.delivered, 2);

  /* a listener that finishes later: MB_PENDING, then the callback */
  CHECK_INT(declare(rt, "sync2", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis b, t;
  CHECK_INT(lis_listen(&b, svc, "sync2", 0, L_OK, "B"), MB_OK);
  CHECK_INT(lis_listen(&t, svc, "sync2", 0, L_TIMER, "T"), MB_OK);
  t.rt = rt;
  CHECK_INT(mb_send(svc, "sync2", msg_int(3), send_cb, &sr), MB_PENDING);
  CHECK_INT(b.calls, 1);
  CHECK_INT(t.calls, 1);
  CHECK_INT(sr.calls, 0);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr.calls, 1);
  CHECK_INT(sr.status, MB_OK);
  st = stats_of(rt, "sync2");
  CHECK_INT(st.deliveries, 2);
  CHECK_INT(st.delivered, 2);

  /* the callback waits for the last listener */
  CHECK_INT(declare(rt, "sync3", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis h1, h2;
  CHECK_INT(lis_listen(&h1, svc, "sync3", 0, L_HOLD, "H1"), MB_OK);
  CHECK_INT(lis_listen(&h2, svc, "sync3", 0, L_HOLD, "H2"), MB_OK);
  sendres sr3 = {0, -100};
  CHECK_INT(mb_send(svc, "sync3", msg_int(4), send_cb, &sr3), MB_PENDING);
  CHECK_INT(h1.nheld + h2.nheld, 2);
  lis_finish(&h2, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr3.calls, 0);
  lis_finish(&h1, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr3.calls, 1);
  CHECK_INT(sr3.status, MB_OK);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_groups(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *s1 = mb_service_new(rt, "inst1", 0), *s2 = mb_service_new(rt, "inst2", 0);
  CHECK_INT(mb_dest_declare(rt, "grp", NULL), MB_OK);
  lis g1, g2, solo;
  CHECK_INT(lis_listen(&g1, s1, "grp", 42, L_OK, "G1"), MB_OK);
  CHECK_INT(lis_listen(&g2, s2, "grp", 42, L_OK, "G2"), MB_OK);
  CHECK_INT(lis_listen(&solo, s1, "grp", 0, L_OK, "S"), MB_OK);
  CHECK_INT(stats_of(rt, "grp").listeners, 3);
  for (int i = 1; i <= 10; i++) CHECK_INT(mb_send(s1, "grp", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(g1.calls + g2.calls, 10);
  CHECK(g1.calls > 0 && g2.calls > 0); /* the group shares the work */
  CHECK_INT(solo.calls, 10);
  int count[11] = {0};
  for (int i = 0; i < g1.calls && i < MAXN; i++)
    if (g1.seen[i] >= 1 && g1.seen[i] <= 10) count[g1.seen[i]]++;
  for (int i = 0; i < g2.calls && i < MAXN; i++)
    if (g2.seen[i] >= 1 && g2.seen[i] <= 10) count[g2.seen[i]]++;
  int once = 0;
  for (int i = 1; i <= 10; i++) once += count[i] == 1;
  CHECK_INT(once, 10);
  CHECK(g1.groups[0] != 0 && g1.groups[0] == g2.groups[0]);
  CHECK(solo.groups[0] != g1.groups[0]);
  mb_stats st = stats_of(rt, "grp");
  CHECK_INT(st.deliveries, 20);
  CHECK_INT(st.delivered, 20);

  /* the same key at another destination is another group */
  CHECK_INT(mb_dest_declare(rt, "grp2", NULL), MB_OK);
  lis o;
  CHECK_INT(lis_listen(&o, s1, "grp2", 42, L_OK, "O"), MB_OK);
  CHECK_INT(mb_send(s1, "grp2", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(o.calls, 1);
  CHECK(o.groups[0] != g1.groups[0]);

  /* one member left: it gets every message */
  mb_listener_close(g1.l);
  for (int i = 1; i <= 4; i++) CHECK_INT(mb_send(s1, "grp", msg_int(i), NULL, NULL), MB_OK);
  int before = g2.calls;
  CHECK_INT(run(rt), 0);
  CHECK_INT(g2.calls - before, 4);
  CHECK_INT(stats_of(rt, "grp").listeners, 2);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- errors and back-pressure ------------------------------------------ */

static void test_send_errors(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "err", 0);
  CHECK_INT(mb_send(svc, "missing", msg_int(1), NULL, NULL), MB_ENODEST);
  CHECK_INT(mb_dest_declare(rt, "empty", NULL), MB_OK);
  CHECK_INT(mb_send(svc, "empty", msg_int(1), NULL, NULL), MB_ENOLISTENERS);
  mb_stats st = stats_of(rt, "empty");
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.sent, 0);

  CHECK_INT(declare(rt, "small", MB_PARALLEL, 2, MB_FULL_REJECT, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "small", 0, L_OK, "A"), MB_OK);
  CHECK_INT(mb_send(svc, "small", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "small", msg_int(2), NULL, NULL), MB_OK);
  sendres sr = {0, -100};
  CHECK_INT(mb_send(svc, "small", msg_int(3), send_cb, &sr), MB_EFULL);
  st = stats_of(rt, "small");
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.pending, 2);
  CHECK_INT(st.largest_pending, 2);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr.calls, 0);
  CHECK_INT(a.calls, 2);
  CHECK_INT(mb_send(svc, "small", msg_int(4), NULL, NULL), MB_OK); /* room again */
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 3);

  /* the only listener closed between send and dispatch: one delivery,
   * dropped, so that the message is accounted for */
  CHECK_INT(mb_dest_declare(rt, "gone", NULL), MB_OK);
  lis g;
  CHECK_INT(lis_listen(&g, svc, "gone", 0, L_OK, "G"), MB_OK);
  CHECK_INT(mb_send(svc, "gone", msg_int(1), NULL, NULL), MB_OK);
  mb_listener_close(g.l);
  CHECK_INT(run(rt), 0);
  CHECK_INT(g.calls, 0);
  st = stats_of(rt, "gone");
  CHECK_INT(st.sent, 1);
  CHECK_INT(st.deliveries, 1);
  CHECK_INT(st.dropped, 1);

  /* no listener left */
  mb_listener_close(a.l);
  CHECK_INT(mb_send(svc, "small", msg_int(5), NULL, NULL), MB_ENOLISTENERS);
  st = stats_of(rt, "small");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.rejected, 2);
  CHECK_INT(st.listeners, 0);
  CHECK_INT(st.delivered, 3);

  /* the code words of the Lua errors */
  CHECK_STR(mb_strerror(MB_OK), "ok");
  CHECK_STR(mb_strerror(MB_ENODEST), "no_destination");
  CHECK_STR(mb_strerror(MB_ENOLISTENERS), "no_listeners");
  CHECK_STR(mb_strerror(MB_EFULL), "queue_full");
  CHECK_STR(mb_strerror(MB_ETIMEOUT), "timeout");
  CHECK_STR(mb_strerror(MB_EFAILED), "failed");
  CHECK_STR(mb_strerror(MB_ECLOSED), "closed");
  CHECK_STR(mb_strerror(MB_EEXISTS), "exists");
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_block(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "blk", 0);
  CHECK_INT(declare(rt, "blk", MB_PARALLEL, 2, MB_FULL_BLOCK, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "blk", 0, L_OK, "A"), MB_OK);
  sendres sr = {0, -100};
  CHECK_INT(mb_send(svc, "blk", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "blk", msg_int(2), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "blk", msg_int(3), send_cb, &sr), MB_PENDING);
  CHECK_INT(sr.calls, 0);
  CHECK_INT(mb_send(svc, "blk", msg_int(4), NULL, NULL), MB_EFULL); /* nobody to wait */
  mb_stats st = stats_of(rt, "blk");
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.pending, 2);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr.calls, 1);
  CHECK_INT(sr.status, MB_OK);
  CHECK_INT(a.calls, 3);
  CHECK(a.seen[0] == 1 && a.seen[1] == 2 && a.seen[2] == 3);
  st = stats_of(rt, "blk");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.delivered, 3);
  CHECK(st.largest_pending <= 2);

  /* a blocked sender of a destination being removed gets MB_ECLOSED */
  CHECK_INT(declare(rt, "blk2", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "blk2", 0, L_HOLD, "H"), MB_OK);
  sendres sr2 = {0, -100};
  CHECK_INT(mb_send(svc, "blk2", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "blk2", msg_int(2), send_cb, &sr2), MB_PENDING);
  CHECK_INT(mb_dest_remove(rt, "blk2"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(sr2.calls, 1);
  CHECK_INT(sr2.status, MB_ECLOSED);
  CHECK_INT(h.nheld, 1); /* the accepted message is still delivered */
  st = stats_of(rt, "blk2");
  CHECK_INT(st.sent, 1);
  CHECK_INT(st.rejected, 1);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_exists(rt, "blk2"), 0);
  CHECK_INT(h.calls, 1);

  /* blocked senders are admitted in order */
  CHECK_INT(declare(rt, "blk3", MB_SERIAL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis o;
  CHECK_INT(lis_listen(&o, svc, "blk3", 0, L_OK, "O"), MB_OK);
  sendres b2 = {0, -100}, b3 = {0, -100};
  CHECK_INT(mb_send(svc, "blk3", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "blk3", msg_int(2), send_cb, &b2), MB_PENDING);
  CHECK_INT(mb_send(svc, "blk3", msg_int(3), send_cb, &b3), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK(b2.calls == 1 && b2.status == MB_OK && b3.calls == 1 && b3.status == MB_OK);
  CHECK_INT(o.calls, 3);
  CHECK(o.seen[0] == 1 && o.seen[1] == 2 && o.seen[2] == 3);
  st = stats_of(rt, "blk3");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.largest_pending, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_remove_drains(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rm", 0);
  CHECK_INT(mb_dest_declare(rt, "mb/dead-letters", NULL), MB_OK);
  lis dl, a;
  CHECK_INT(lis_listen(&dl, svc, "mb/dead-letters", 0, L_CAPTURE, "DL"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "rm", NULL), MB_OK);
  CHECK_INT(lis_listen(&a, svc, "rm", 0, L_OK, "A"), MB_OK);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "rm", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "rm"), MB_OK);
  CHECK_INT(mb_send(svc, "rm", msg_int(4), NULL, NULL), MB_ECLOSED);
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 3);
  CHECK(a.seen[0] + a.seen[1] + a.seen[2] == 6);
  CHECK_INT(mb_dest_exists(rt, "rm"), 0);
  CHECK_INT(mb_send(svc, "rm", msg_int(5), NULL, NULL), MB_ENODEST);
  CHECK_INT(dl.calls, 0); /* removal drops nothing */
  int err = 0;
  CHECK(mb_listen(svc, "rm", 0, lis_fn, lis_closed, &a, &err) == NULL && err == MB_ENODEST);

  /* while a delivery runs the destination is closing: no sends, no listeners */
  CHECK_INT(mb_dest_declare(rt, "rm2", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "rm2", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(mb_send(svc, "rm2", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 1);
  CHECK_INT(mb_dest_remove(rt, "rm2"), MB_OK);
  CHECK_INT(mb_send(svc, "rm2", msg_int(2), NULL, NULL), MB_ECLOSED);
  err = 0;
  CHECK(mb_listen(svc, "rm2", 0, lis_fn, lis_closed, &a, &err) == NULL && err == MB_ECLOSED);
  CHECK_INT(mb_dest_remove(rt, "rm2"), MB_ENODEST); /* already going */
  CHECK_INT(run(rt), 0);
  mb_stats st = stats_of(rt, "rm2");
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.in_flight, 1);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_exists(rt, "rm2"), 0);
  CHECK_INT(mb_send(svc, "rm2", msg_int(3), NULL, NULL), MB_ENODEST);
  CHECK_INT(dl.calls, 0);

  /* serial: the queue is drained in order */
  CHECK_INT(declare(rt, "rm3", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  tlog log = {""};
  lis t;
  CHECK_INT(lis_listen(&t, svc, "rm3", 0, L_TIMER, "T"), MB_OK);
  t.rt = rt;
  t.log = &log;
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "rm3", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "rm3"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "T1< T1> T2< T2> T3< T3> ");
  CHECK_INT(mb_dest_exists(rt, "rm3"), 0);
  CHECK_INT(dl.calls, 0);

  /* a name freed by removal can be declared again */
  CHECK_INT(declare(rt, "rm", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(stats_of(rt, "rm").sent, 0);
  lis_release(&dl);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Removal closes the listeners still registered, telling each once through
 * its closed callback; the others are not told. */
static void test_listener_closed_by_removal(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "lc", 0);
  CHECK_INT(mb_dest_declare(rt, "lc", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "lc/other", NULL), MB_OK);
  lis a, b, c, o;
  CHECK_INT(lis_listen(&a, svc, "lc", 0, L_OK, "A"), MB_OK);
  CHECK_INT(lis_listen(&b, svc, "lc", 7, L_OK, "B"), MB_OK);
  CHECK_INT(lis_listen(&c, svc, "lc", 0, L_OK, "C"), MB_OK);
  CHECK_INT(lis_listen(&o, svc, "lc/other", 0, L_OK, "O"), MB_OK);
  mb_listener_close(c.l); /* closed by its owner: not told */
  CHECK_INT(mb_send(svc, "lc", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "lc"), MB_OK);
  CHECK_INT(a.closed_calls + b.closed_calls, 0); /* pending first */
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.calls, 1);
  CHECK_INT(b.calls, 1);
  CHECK_INT(mb_dest_exists(rt, "lc"), 0);
  CHECK_INT(a.closed_calls, 1);
  CHECK_INT(b.closed_calls, 1);
  CHECK_INT(c.closed_calls, 0);
  CHECK_INT(o.closed_calls, 0);
  mb_counts cn;
  mb_runtime_counts(rt, &cn);
  CHECK_INT(cn.listeners, 1); /* o */
  CHECK_INT(stats_of(rt, "lc/other").listeners, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
  CHECK_INT(o.closed_calls, 0); /* freeing the runtime is not the bus closing it */
}

/* ---- requests ----------------------------------------------------------- */

static void test_request_reply(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "req", 0);
  CHECK_INT(mb_dest_declare(rt, "calc", NULL), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "calc", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  reqres rr = {0};
  mb_request *r = NULL;
  mb_msg *m = msg_int(4);
  uint64_t id = mb_msg_id(m);
  CHECK_INT(mb_request_start(svc, "calc", m, 1.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK(r != NULL);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 1);
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 0.5); /* the answer ends the wait, not the timeout */
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK_INT(rr.status[0], MB_OK);
  CHECK_INT(rr.reply[0], 41);
  CHECK(rr.resp[0] == id);
  CHECK_INT(a.expects[0], 1);
  CHECK_INT(a.nreplies, 1);
  CHECK_INT(a.reply_rc[0], MB_OK);
  mb_stats st = stats_of(rt, "calc");
  CHECK_INT(st.replies, 1);
  CHECK_INT(st.timeouts, 0);
  CHECK_INT(st.delivered, 1);

  /* refused at once, without the callback */
  reqres none = {0};
  r = (mb_request *)&none;
  CHECK_INT(mb_request_start(svc, "missing", msg_int(1), 1.0, 0, req_cb, &none, &r), MB_ENODEST);
  CHECK(r == NULL);
  CHECK_INT(mb_dest_declare(rt, "nobody", NULL), MB_OK);
  t0 = ev_time();
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), 1.0, 0, req_cb, &none, &r),
            MB_ENOLISTENERS);
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), 1.0, 1, req_cb, &none, &r),
            MB_ENOLISTENERS);
  /* a timeout that is no number of seconds: refused, never given to libev */
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), NAN, 0, req_cb, &none, &r), MB_EINVAL);
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), 0, 0, req_cb, &none, &r), MB_EINVAL);
  CHECK_INT(mb_request_start(svc, "nobody", msg_int(1), -1, 1, req_cb, &none, &r), MB_EINVAL);
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 0.5);
  CHECK_INT(none.calls, 0);
  CHECK_INT(stats_of(rt, "nobody").rejected, 2);

  /* cancelled: no callback */
  CHECK_INT(mb_dest_declare(rt, "hold", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "hold", 0, L_HOLD, "H"), MB_OK);
  reqres rc = {0};
  CHECK_INT(mb_request_start(svc, "hold", msg_int(1), 5.0, 0, req_cb, &rc, &r), MB_PENDING);
  run_until(rt, &h.nheld);
  CHECK_INT(h.nheld, 1);
  mb_request_cancel(r);
  t0 = ev_time();
  CHECK_INT(run(rt), 0); /* its timer is gone too */
  CHECK(ev_time() - t0 < 0.5);
  CHECK_INT(rc.calls, 0);
  lis_finish(&h, MB_OK, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_timeout(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rt", 0);
  CHECK_INT(mb_dest_declare(rt, "slow", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "slow", 0, L_HOLD, "H"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  ev_now_update(mb_runtime_loop(rt)); /* timers count from the loop's now */
  double t0 = ev_time();
  CHECK_INT(mb_request_start(svc, "slow", msg_int(1), 0.05, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  double took = ev_time() - t0;
  CHECK(took >= 0.04 && took < 1.0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK_INT(rr.status[0], MB_ETIMEOUT);
  CHECK(strncmp(rr.error[0], "timeout", 7) == 0);
  check_answer_codes(&rr);
  mb_stats st = stats_of(rt, "slow");
  CHECK_INT(st.timeouts, 1);
  CHECK_INT(st.replies, 0);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);

  /* the late reply is refused, and counted */
  CHECK_INT(h.nheld, 1);
  mb_delivery *d = h.held[h.hhead];
  CHECK_INT(mb_reply(svc, mb_delivery_msg(d), mb_delivery_group(d), msg_int(99)), MB_ECLOSED);
  st = stats_of(rt, "slow");
  CHECK_INT(st.replies, 1);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  st = stats_of(rt, "slow");
  CHECK_INT(st.delivered, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* A request (all = 0) answers once, with one answer, whatever the number of
 * listener groups; also when it times out. */
static void test_request_timeout_two_groups(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rt2", 0);
  CHECK_INT(mb_dest_declare(rt, "slow2", NULL), MB_OK);
  lis h1, h2;
  CHECK_INT(lis_listen(&h1, svc, "slow2", 0, L_HOLD, "H1"), MB_OK);
  CHECK_INT(lis_listen(&h2, svc, "slow2", 0, L_HOLD, "H2"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "slow2", msg_int(1), 0.02, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK_INT(rr.status[0], MB_ETIMEOUT);
  CHECK_INT(stats_of(rt, "slow2").timeouts, 1);
  while (lis_finish(&h1, MB_OK, NULL)) continue;
  while (lis_finish(&h2, MB_OK, NULL)) continue;
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_failed(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rf", 0);
  CHECK_INT(mb_dest_declare(rt, "bad", NULL), MB_OK);
  lis f;
  CHECK_INT(lis_listen(&f, svc, "bad", 0, L_FAIL, "F"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  double t0 = ev_time();
  CHECK_INT(mb_request_start(svc, "bad", msg_int(1), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 1.0); /* at once, not after the 5 s timeout */
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK_INT(rr.status[0], MB_EFAILED);
  CHECK(strncmp(rr.error[0], "failed", 6) == 0);
  CHECK(strstr(rr.error[0], "boom") != NULL);
  check_answer_codes(&rr);
  mb_stats st = stats_of(rt, "bad");
  CHECK_INT(st.failed, 1);
  CHECK_INT(st.timeouts, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* A task that finishes, from the loop, the oldest delivery a lis holds. */
typedef struct fin_task {
  lis *l;
  int status;
  const char *error;
} fin_task;

static void fin_task_fn(void *arg) {
  fin_task *ft = arg;
  lis_finish(ft->l, ft->status, ft->error);
}

static void test_request_failed_later(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rfl", 0);
  CHECK_INT(declare(rt, "bad2", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "bad2", 0, L_HOLD, "H"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "bad2", msg_int(1), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  /* run the loop until the delivery is held, then fail it from a task */
  fin_task ft = {&h, MB_EFAILED, "failed: later"};
  run_until(rt, &h.nheld);
  CHECK_INT(h.nheld, 1);
  CHECK_INT(mb_service_post(svc, fin_task_fn, &ft), MB_OK);
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 1.0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_EFAILED);
  CHECK(strstr(rr.error[0], "later") != NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_all(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "ra", 0);
  CHECK_INT(mb_dest_declare(rt, "ra", NULL), MB_OK);
  lis a, b;
  CHECK_INT(lis_listen(&a, svc, "ra", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  CHECK_INT(lis_listen(&b, svc, "ra", 0, L_REPLY, "B"), MB_OK);
  b.reply_add = 2;
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "ra", msg_int(5), 1.0, 1, req_cb, &rr, &r), MB_PENDING);
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 0.5);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 2);
  CHECK_INT(rr.status[0], MB_OK);
  CHECK_INT(rr.status[1], MB_OK);
  CHECK((rr.reply[0] == 51 && rr.reply[1] == 52) || (rr.reply[0] == 52 && rr.reply[1] == 51));
  CHECK_INT(stats_of(rt, "ra").replies, 2);

  /* a group of two instances answers once */
  CHECK_INT(mb_dest_declare(rt, "ra2", NULL), MB_OK);
  lis g1, g2, s;
  CHECK_INT(lis_listen(&g1, svc, "ra2", 9, L_REPLY, "G1"), MB_OK);
  CHECK_INT(lis_listen(&g2, svc, "ra2", 9, L_REPLY, "G2"), MB_OK);
  CHECK_INT(lis_listen(&s, svc, "ra2", 0, L_REPLY, "S"), MB_OK);
  s.reply_add = 3;
  reqres r2 = {0};
  CHECK_INT(mb_request_start(svc, "ra2", msg_int(1), 1.0, 1, req_cb, &r2, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r2.calls, 1);
  CHECK_INT(r2.n, 2);
  CHECK_INT(g1.calls + g2.calls, 1);
  CHECK((r2.reply[0] == 10 && r2.reply[1] == 13) || (r2.reply[0] == 13 && r2.reply[1] == 10));

  /* one group fails, one answers */
  CHECK_INT(mb_dest_declare(rt, "ra3", NULL), MB_OK);
  lis ok3, bad3;
  CHECK_INT(lis_listen(&ok3, svc, "ra3", 0, L_REPLY, "OK"), MB_OK);
  CHECK_INT(lis_listen(&bad3, svc, "ra3", 0, L_FAIL, "BAD"), MB_OK);
  reqres r3 = {0};
  CHECK_INT(mb_request_start(svc, "ra3", msg_int(2), 1.0, 1, req_cb, &r3, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r3.calls, 1);
  CHECK_INT(r3.n, 2);
  int ok = 0, failed = 0;
  for (size_t i = 0; i < r3.n && i < 8; i++) {
    ok += r3.status[i] == MB_OK && r3.reply[i] == 20;
    failed += r3.status[i] == MB_EFAILED && strstr(r3.error[i], "boom") != NULL;
  }
  CHECK_INT(ok, 1);
  CHECK_INT(failed, 1);
  check_answer_codes(&r3);

  /* one group silent: its answer is a timeout */
  CHECK_INT(mb_dest_declare(rt, "ra4", NULL), MB_OK);
  lis ok4, h4;
  CHECK_INT(lis_listen(&ok4, svc, "ra4", 0, L_REPLY, "OK"), MB_OK);
  CHECK_INT(lis_listen(&h4, svc, "ra4", 0, L_HOLD, "H"), MB_OK);
  reqres r4 = {0};
  CHECK_INT(mb_request_start(svc, "ra4", msg_int(3), 0.03, 1, req_cb, &r4, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r4.calls, 1);
  CHECK_INT(r4.n, 2);
  ok = 0;
  int timedout = 0;
  for (size_t i = 0; i < r4.n && i < 8; i++) {
    ok += r4.status[i] == MB_OK && r4.reply[i] == 30;
    timedout += r4.status[i] == MB_ETIMEOUT && strncmp(r4.error[i], "timeout", 7) == 0;
  }
  CHECK_INT(ok, 1);
  CHECK_INT(timedout, 1);
  check_answer_codes(&r4);
  CHECK_INT(stats_of(rt, "ra4").timeouts, 1);
  lis_finish(&h4, MB_OK, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_first_reply_wins(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "fw", 0);
  CHECK_INT(mb_dest_declare(rt, "two", NULL), MB_OK);
  lis a, b;
  CHECK_INT(lis_listen(&a, svc, "two", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  CHECK_INT(lis_listen(&b, svc, "two", 0, L_REPLY, "B"), MB_OK);
  b.reply_add = 2;
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "two", msg_int(5), 1.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK(rr.reply[0] == 51 || rr.reply[0] == 52);
  CHECK_INT(a.nreplies + b.nreplies, 2);
  int okc = 0, closed = 0;
  if (a.nreplies) okc += a.reply_rc[0] == MB_OK, closed += a.reply_rc[0] == MB_ECLOSED;
  if (b.nreplies) okc += b.reply_rc[0] == MB_OK, closed += b.reply_rc[0] == MB_ECLOSED;
  CHECK_INT(okc, 1);
  CHECK_INT(closed, 1);
  CHECK_INT(stats_of(rt, "two").replies, 2);

  /* replying to a plain message with nobody waiting: closed, counted */
  CHECK_INT(mb_dest_declare(rt, "plain", NULL), MB_OK);
  lis p;
  CHECK_INT(lis_listen(&p, svc, "plain", 0, L_REPLY, "P"), MB_OK);
  CHECK_INT(mb_send(svc, "plain", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(p.nreplies, 1);
  CHECK_INT(p.reply_rc[0], MB_ECLOSED);
  CHECK_INT(stats_of(rt, "plain").replies, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_reply_to(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "cb", 0);
  CHECK_INT(mb_dest_declare(rt, "svc/in", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "my/replies", NULL), MB_OK);
  lis in, back;
  CHECK_INT(lis_listen(&in, svc, "svc/in", 0, L_REPLY, "IN"), MB_OK);
  in.reply_add = 1;
  CHECK_INT(lis_listen(&back, svc, "my/replies", 0, L_OK, "BACK"), MB_OK);
  mb_msg *m = msg_int_to(7, "my/replies");
  uint64_t id = mb_msg_id(m);
  CHECK_STR(mb_msg_reply_to(m), "my/replies");
  CHECK_INT(mb_msg_expects_reply(m), 1);
  CHECK_INT(mb_send(svc, "svc/in", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(in.calls, 1);
  CHECK_INT(in.expects[0], 1);
  CHECK_INT(in.reply_rc[0], MB_OK);
  CHECK_INT(back.calls, 1);
  CHECK_INT(back.seen[0], 71);
  CHECK(back.resp[0] == id);
  CHECK_STR(back.dest, "my/replies");
  CHECK_INT(stats_of(rt, "svc/in").replies, 1);
  CHECK_INT(stats_of(rt, "my/replies").sent, 1);

  /* reply_to a destination that does not exist: the error of that send */
  mb_msg *m2 = msg_int_to(8, "nowhere");
  CHECK_INT(mb_send(svc, "svc/in", m2, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(in.nreplies, 2);
  CHECK_INT(in.reply_rc[1], MB_ENODEST);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_request_synchronous(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rs", 0);
  CHECK_INT(declare(rt, "syncq", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "syncq", 0, L_REPLY, "A"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  int rc = mb_request_start(svc, "syncq", msg_int(6), 1.0, 0, req_cb, &rr, &r);
  CHECK_INT(rc, MB_PENDING);
  CHECK_INT(rr.calls, 0); /* the answer comes from the loop, never inline */
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_OK);
  CHECK_INT(rr.reply[0], 60);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- stats ------------------------------------------------------------- */

static void check_invariant(mb_runtime *rt, const char *name) {
  mb_stats st = stats_of(rt, name);
  if (!CHECK_INT(st.delivered + st.failed + st.dropped, st.deliveries))
    fprintf(stderr, "    at %s: delivered %llu failed %llu dropped %llu deliveries %llu\n", name,
            (unsigned long long)st.delivered, (unsigned long long)st.failed,
            (unsigned long long)st.dropped, (unsigned long long)st.deliveries);
  CHECK_INT(st.in_flight, 0);
  CHECK_INT(st.pending, 0);
}

/* A request whose delivery is dropped (the listener's service stopped)
 * fails at once, with an error that starts with its status's code word. */
static void test_request_dropped(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "asker", 0), *other = mb_service_new(rt, "other", 0);
  CHECK_INT(mb_dest_declare(rt, "dq", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, other, "dq", 0, L_HOLD, "H"), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "dq", msg_int(1), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  run_until(rt, &h.nheld);
  CHECK_INT(h.nheld, 1);
  mb_service_free(other);
  h.nheld = 0;
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 1.0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 1);
  CHECK(rr.status[0] == MB_ECLOSED || rr.status[0] == MB_EDROPPED);
  check_answer_codes(&rr);
  CHECK_INT(stats_of(rt, "dq").dropped, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* request_all on a serial destination; one group closes before its turn. */
static void test_request_all_serial(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "ras", 0);
  CHECK_INT(declare(rt, "ras", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis a, b;
  CHECK_INT(lis_listen(&a, svc, "ras", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  CHECK_INT(lis_listen(&b, svc, "ras", 0, L_REPLY, "B"), MB_OK);
  b.reply_add = 2;
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "ras", msg_int(4), 1.0, 1, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.n, 2);
  CHECK(rr.status[0] == MB_OK && rr.status[1] == MB_OK);
  CHECK((rr.reply[0] == 41 && rr.reply[1] == 42) || (rr.reply[0] == 42 && rr.reply[1] == 41));

  CHECK_INT(declare(rt, "ras2", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis h, c;
  CHECK_INT(lis_listen(&h, svc, "ras2", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(lis_listen(&c, svc, "ras2", 0, L_REPLY, "C"), MB_OK);
  reqres r2 = {0};
  CHECK_INT(mb_request_start(svc, "ras2", msg_int(5), 5.0, 1, req_cb, &r2, &r), MB_PENDING);
  run_until(rt, &h.nheld);
  CHECK_INT(h.nheld, 1);
  mb_delivery *d = h.held[h.hhead];
  CHECK_INT(mb_reply(svc, mb_delivery_msg(d), mb_delivery_group(d), msg_int(7)), MB_OK);
  CHECK_INT(r2.calls, 0); /* one group still to answer */
  mb_listener_close(c.l);
  lis_finish(&h, MB_OK, NULL);
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 1.0); /* the dropped group answers at once */
  CHECK_INT(r2.calls, 1);
  CHECK_INT(r2.n, 2);
  int ok = 0, closed = 0;
  for (size_t i = 0; i < r2.n && i < 8; i++) {
    ok += r2.status[i] == MB_OK && r2.reply[i] == 7;
    closed += r2.status[i] == MB_ECLOSED || r2.status[i] == MB_EDROPPED;
  }
  CHECK_INT(ok, 1);
  CHECK_INT(closed, 1);
  check_answer_codes(&r2);
  mb_stats st = stats_of(rt, "ras2");
  CHECK_INT(st.dropped, 1);
  check_invariant(rt, "ras2");
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Requests and full queues: "block" waits for room, "reject" refuses at
 * once, a closing destination refuses at once. */
static void test_request_queues(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rq", 0);
  CHECK_INT(declare(rt, "bq", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "bq", 0, L_REPLY, "A"), MB_OK);
  CHECK_INT(mb_send(svc, "bq", msg_int(1), NULL, NULL), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "bq", msg_int(2), 1.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(stats_of(rt, "bq").sent, 1);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_OK);
  CHECK_INT(rr.reply[0], 20);
  CHECK_INT(stats_of(rt, "bq").sent, 2);

  CHECK_INT(declare(rt, "rq", MB_PARALLEL, 1, MB_FULL_REJECT, 0), MB_OK);
  lis b;
  CHECK_INT(lis_listen(&b, svc, "rq", 0, L_REPLY, "B"), MB_OK);
  CHECK_INT(mb_send(svc, "rq", msg_int(1), NULL, NULL), MB_OK);
  reqres none = {0};
  CHECK_INT(mb_request_start(svc, "rq", msg_int(2), 1.0, 0, req_cb, &none, &r), MB_EFULL);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);

  CHECK_INT(mb_dest_declare(rt, "cq", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "cq", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(mb_send(svc, "cq", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_remove(rt, "cq"), MB_OK);
  CHECK_INT(mb_request_start(svc, "cq", msg_int(2), 1.0, 0, req_cb, &none, &r), MB_ECLOSED);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);
  CHECK_INT(run(rt), 0);
  CHECK_INT(none.calls, 0);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Stopping a service cancels its request even while it waits for room in
 * a "block" queue: nothing of it is left. */
static void test_service_free_blocked_request(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *asker = mb_service_new(rt, "asker", 0), *svc = mb_service_new(rt, "svc", 0);
  CHECK_INT(declare(rt, "bq", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "bq", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(mb_send(svc, "bq", msg_int(1), NULL, NULL), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(asker, "bq", msg_int(2), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 1);
  mb_service_free(asker);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.requests, 0);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 0);
  while (lis_finish(&h, MB_OK, NULL)) run(rt);
  CHECK_INT(h.calls, 1); /* the request's message was never accepted */
  mb_stats st = stats_of(rt, "bq");
  CHECK_INT(st.sent, 1);
  check_invariant(rt, "bq");
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Stopping a service that waits in a synchronous send: like its blocked
 * sends and its requests, the send's callback is not called any more. */
static void test_service_free_pending_sync_send(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *sender = mb_service_new(rt, "sender", 0), *svc = mb_service_new(rt, "svc", 0);
  CHECK_INT(declare(rt, "ys", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "ys", 0, L_HOLD, "H"), MB_OK);
  sendres sr = {0, -100};
  CHECK_INT(mb_send(sender, "ys", msg_int(1), send_cb, &sr), MB_PENDING);
  CHECK_INT(h.nheld, 1);

  /* for comparison: a blocked send of a stopped service is dropped silently */
  CHECK_INT(declare(rt, "bq", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis h2;
  CHECK_INT(lis_listen(&h2, svc, "bq", 0, L_HOLD, "H2"), MB_OK);
  sendres sb = {0, -100};
  CHECK_INT(mb_send(svc, "bq", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(sender, "bq", msg_int(2), send_cb, &sb), MB_PENDING);

  mb_service_free(sender);
  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  while (lis_finish(&h2, MB_OK, NULL)) run(rt);
  CHECK_INT(sb.calls, 0);
  CHECK_INT(sr.calls, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void test_stats_invariant(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *sa = mb_service_new(rt, "A", 0), *sb = mb_service_new(rt, "B", 0);

  /* parallel: one OK, one failing odd payloads, one holding (its service
   * will be stopped) */
  CHECK_INT(mb_dest_declare(rt, "mix/par", NULL), MB_OK);
  lis l1, l2, l3;
  CHECK_INT(lis_listen(&l1, sa, "mix/par", 0, L_OK, "L1"), MB_OK);
  CHECK_INT(lis_listen(&l2, sa, "mix/par", 0, L_FAIL_ODD, "L2"), MB_OK);
  CHECK_INT(lis_listen(&l3, sb, "mix/par", 0, L_HOLD, "L3"), MB_OK);
  for (int i = 1; i <= 5; i++) CHECK_INT(mb_send(sa, "mix/par", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(l1.calls, 5);
  CHECK_INT(l2.calls, 5);
  CHECK_INT(l3.nheld, 5);

  /* serial: a listener closed while a message is half delivered */
  CHECK_INT(declare(rt, "mix/ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis l4, l5;
  CHECK_INT(lis_listen(&l4, sa, "mix/ser", 0, L_HOLD, "L4"), MB_OK);
  CHECK_INT(lis_listen(&l5, sa, "mix/ser", 0, L_OK, "L5"), MB_OK);
  for (int i = 1; i <= 4; i++) CHECK_INT(mb_send(sa, "mix/ser", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(l4.nheld, 1);
  mb_listener_close(l5.l);
  for (int i = 0; i < 10 && lis_finish(&l4, MB_OK, NULL); i++) run(rt);
  CHECK_INT(l4.calls, 4);
  CHECK_INT(l5.calls, 0);

  /* a destination removed with messages pending */
  CHECK_INT(mb_dest_declare(rt, "mix/rm", NULL), MB_OK);
  lis l6;
  CHECK_INT(lis_listen(&l6, sa, "mix/rm", 0, L_HOLD, "L6"), MB_OK);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(sa, "mix/rm", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "mix/rm"), MB_OK);
  CHECK_INT(mb_send(sa, "mix/rm", msg_int(4), NULL, NULL), MB_ECLOSED);
  CHECK_INT(run(rt), 0);
  CHECK_INT(l6.nheld, 3);
  mb_stats st = stats_of(rt, "mix/rm");
  CHECK_INT(st.sent, 3);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.deliveries, 3);
  CHECK_INT(st.in_flight, 3);
  CHECK_INT(st.delivered + st.failed + st.dropped + st.in_flight, st.deliveries);
  lis_finish(&l6, MB_OK, NULL);
  lis_finish(&l6, MB_EFAILED, "failed: six");
  st = stats_of(rt, "mix/rm");
  CHECK_INT(st.delivered, 1);
  CHECK_INT(st.failed, 1);
  lis_finish(&l6, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_exists(rt, "mix/rm"), 0);
  CHECK_INT(l6.calls, 3);

  /* stopping service B drops what its listener held */
  mb_service_free(sb);
  l3.nheld = 0; /* those deliveries are gone with the service */
  mb_listener_close(l1.l);
  mb_listener_close(l2.l);
  CHECK_INT(mb_send(sa, "mix/par", msg_int(6), NULL, NULL), MB_ENOLISTENERS);
  CHECK_INT(run(rt), 0);

  st = stats_of(rt, "mix/par");
  CHECK_INT(st.sent, 5);
  CHECK_INT(st.rejected, 1);
  CHECK_INT(st.deliveries, 15);
  CHECK_INT(st.delivered, 7);
  CHECK_INT(st.failed, 3);
  CHECK_INT(st.dropped, 5);
  CHECK_INT(st.listeners, 0);
  check_invariant(rt, "mix/par");

  st = stats_of(rt, "mix/ser");
  CHECK_INT(st.sent, 4);
  CHECK_INT(st.rejected, 0);
  CHECK_INT(st.deliveries, 5);
  CHECK_INT(st.delivered, 4);
  CHECK_INT(st.dropped, 1);
  CHECK_INT(st.failed, 0);
  CHECK_INT(st.listeners, 1);
  check_invariant(rt, "mix/ser");

  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.listeners, 1); /* l4 */
  CHECK_INT(c.services, 1);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- dead letters ------------------------------------------------------- */

static void test_dead_letters(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "dl", 0), *other = mb_service_new(rt, "other", 0);
  CHECK_INT(mb_dest_declare(rt, "mb/dead-letters", NULL), MB_OK);
  lis dl;
  CHECK_INT(lis_listen(&dl, svc, "mb/dead-letters", 0, L_CAPTURE, "DL"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "work", NULL), MB_OK);
  lis f;
  CHECK_INT(lis_listen(&f, svc, "work", 0, L_FAIL, "F"), MB_OK);

  /* values {k = "v"} */
  mb_buf pb = {0}, vb = {0};
  mb_enc_int(&pb, 42);
  long t = mb_enc_table_begin(&vb);
  mb_enc_str(&vb, "k", 1);
  mb_enc_str(&vb, "v", 1);
  mb_enc_table_end(&vb, t, 0, 1);
  mb_msg *m = mb_msg_new(pb.p, pb.len, vb.p, vb.len, NULL);
  mb_buf_free(&pb);
  mb_buf_free(&vb);
  uint64_t id = mb_msg_id(m);
  char idstr[17];
  mb_id_format(id, idstr);
  CHECK_INT(mb_send(svc, "work", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(dl.calls, 1);
  if (dl.calls >= 1 && dl.cap[0]) {
    CHECK_INT(mb_value_check(dl.cap[0], dl.caplen[0]), 0);
    mb_reader r = {dl.cap[0], dl.cap[0] + dl.caplen[0]}, v, mv, vv;
    mb_item it;
    mb_reader top = r;
    CHECK(mb_read(&top, &it) == 0 && it.tag == MB_V_TABLE && it.v.t.nhash == 3);
    char s[128];
    CHECK(table_get(r, "destination", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "work");
    CHECK(table_get(r, "error", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "failed: boom");
    CHECK(table_get(r, "message", &mv) == 0);
    CHECK(table_get(mv, "payload", &v) == 0 && read_int(v) == 42);
    CHECK(table_get(mv, "id", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), idstr);
    CHECK(table_get(mv, "destination", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "work");
    CHECK(table_get(mv, "values", &vv) == 0);
    CHECK(table_get(vv, "k", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "v");
  }
  mb_stats st = stats_of(rt, "mb/dead-letters");
  CHECK_INT(st.sent, 1);
  CHECK_INT(st.delivered, 1);

  /* a delivery that succeeds: no report */
  CHECK_INT(mb_dest_declare(rt, "fine", NULL), MB_OK);
  lis ok;
  CHECK_INT(lis_listen(&ok, svc, "fine", 0, L_OK, "OK"), MB_OK);
  CHECK_INT(mb_send(svc, "fine", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(dl.calls, 1);

  /* a dropped delivery (its service stopped) is reported too */
  CHECK_INT(mb_dest_declare(rt, "work2", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, other, "work2", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(mb_send(svc, "work2", msg_int(2), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 1);
  mb_service_free(other);
  CHECK_INT(run(rt), 0);
  CHECK_INT(dl.calls, 2);
  if (dl.calls >= 2 && dl.cap[1]) {
    mb_reader r = {dl.cap[1], dl.cap[1] + dl.caplen[1]}, v;
    char s[128];
    CHECK(table_get(r, "destination", &v) == 0);
    CHECK_STR(read_str(v, s, sizeof s), "work2");
    CHECK(table_get(r, "error", &v) == 0);
    CHECK(strncmp(read_str(v, s, sizeof s), "dropped", 7) == 0);
  }
  st = stats_of(rt, "work2");
  CHECK_INT(st.dropped, 1);
  check_invariant(rt, "work2");

  /* no listener at mb/dead-letters: nothing is sent there */
  mb_listener_close(dl.l);
  CHECK_INT(mb_send(svc, "work", msg_int(3), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  st = stats_of(rt, "mb/dead-letters");
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.rejected, 0);
  lis_release(&dl);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* A dead-letter listener that fails produces no further report. */
static void test_dead_letters_no_loop(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "dl", 0);
  CHECK_INT(mb_dest_declare(rt, "mb/dead-letters", NULL), MB_OK);
  lis dl, f;
  CHECK_INT(lis_listen(&dl, svc, "mb/dead-letters", 0, L_FAIL, "DL"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "work", NULL), MB_OK);
  CHECK_INT(lis_listen(&f, svc, "work", 0, L_FAIL, "F"), MB_OK);
  CHECK_INT(mb_send(svc, "work", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(dl.calls, 1);
  mb_stats st = stats_of(rt, "mb/dead-letters");
  CHECK_INT(st.sent, 1);
  CHECK_INT(st.failed, 1);
  check_invariant(rt, "mb/dead-letters");
  check_invariant(rt, "work");
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- events ------------------------------------------------------------- */

static void event_cb(void *ud, const mb_event *ev) {
  tlog *log = ud;
  const char *k = ev->kind == MB_EV_DEST_ADDED         ? "DA"
                  : ev->kind == MB_EV_DEST_REMOVED     ? "DR"
                  : ev->kind == MB_EV_LISTENER_ADDED   ? "LA"
                  : ev->kind == MB_EV_LISTENER_REMOVED ? "LR"
                                                       : "??";
  log_add(log, "%s:%s:%d:%zu:%s ", k, ev->destination, (int)ev->type, ev->listeners,
          ev->service ? ev->service : "-");
}

static void test_events(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "evsvc", 0);
  tlog all = {""}, added = {""};
  mb_subscription *s1 = mb_subscribe(
      svc, MB_EV_DEST_ADDED | MB_EV_DEST_REMOVED | MB_EV_LISTENER_ADDED | MB_EV_LISTENER_REMOVED,
      event_cb, &all);
  mb_subscription *s2 = mb_subscribe(svc, MB_EV_DEST_ADDED, event_cb, &added);
  CHECK(s1 != NULL && s2 != NULL);
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.subscriptions, 2);

  CHECK_INT(declare(rt, "ev/a", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_STR(all.s, ""); /* never inline */
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/a:1:0:- ");
  CHECK_STR(added.s, "DA:ev/a:1:0:- ");

  lis a;
  CHECK_INT(lis_listen(&a, svc, "ev/a", 0, L_OK, "A"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/a:1:0:- LA:ev/a:1:1:evsvc ");
  mb_listener_close(a.l);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/a:1:0:- LA:ev/a:1:1:evsvc LR:ev/a:1:0:evsvc ");
  CHECK_INT(mb_dest_remove(rt, "ev/a"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/a:1:0:- LA:ev/a:1:1:evsvc LR:ev/a:1:0:evsvc DR:ev/a:1:0:- ");
  CHECK_STR(added.s, "DA:ev/a:1:0:- "); /* only what it asked for */

  /* removal of a destination with a listener: listener removed, then dest */
  all.s[0] = 0;
  CHECK_INT(mb_dest_declare(rt, "ev/b", NULL), MB_OK);
  lis b;
  CHECK_INT(lis_listen(&b, svc, "ev/b", 0, L_OK, "B"), MB_OK);
  CHECK_INT(mb_dest_remove(rt, "ev/b"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "DA:ev/b:0:0:- LA:ev/b:0:1:evsvc LR:ev/b:0:0:evsvc DR:ev/b:0:0:- ");

  /* an event fired and then unsubscribed before the loop ran: not delivered */
  all.s[0] = 0;
  CHECK_INT(mb_dest_declare(rt, "ev/c", NULL), MB_OK);
  mb_unsubscribe(s1);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "");
  CHECK_INT(mb_dest_declare(rt, "ev/d", NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(all.s, "");
  CHECK_STR(added.s, "DA:ev/a:1:0:- DA:ev/b:0:0:- DA:ev/c:0:0:- DA:ev/d:0:0:- ");
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.subscriptions, 1);
  mb_unsubscribe(s2);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.subscriptions, 0);

  /* events from another service's actions reach a subscriber too */
  mb_service *other = mb_service_new(rt, "other", 0);
  tlog o = {""};
  mb_subscribe(svc, MB_EV_LISTENER_ADDED, event_cb, &o);
  lis x;
  CHECK_INT(lis_listen(&x, other, "ev/c", 0, L_OK, "X"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(o.s, "LA:ev/c:0:1:other ");
  check_quiet(rt);
  mb_runtime_free(rt); /* frees the live subscription with its service */
}

/* ---- messages, ids, runtime, services ----------------------------------- */

static void test_messages(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_buf pb = {0}, vb = {0};
  mb_enc_str(&pb, "hi", 2);
  long t = mb_enc_table_begin(&vb);
  mb_enc_str(&vb, "k", 1);
  mb_enc_int(&vb, 1);
  mb_enc_table_end(&vb, t, 0, 1);
  mb_msg *m = mb_msg_new(pb.p, pb.len, vb.p, vb.len, "r/x");
  if (!CHECK(m != NULL)) return;
  size_t n;
  const uint8_t *p = mb_msg_payload(m, &n);
  CHECK_MEM(p, n, pb.p, pb.len);
  p = mb_msg_values(m, &n);
  CHECK_MEM(p, n, vb.p, vb.len);
  CHECK_STR(mb_msg_reply_to(m), "r/x");
  CHECK(mb_msg_destination(m) == NULL);
  CHECK_INT(mb_msg_response_id(m), 0);
  CHECK_INT(mb_msg_expects_reply(m), 1);
  char id[17], json[256], err[128], want[256];
  mb_id_format(mb_msg_id(m), id);
  mb_buf j = {0};
  CHECK_INT(mb_msg_to_json(m, &j, err, sizeof err), 0);
  snprintf(json, sizeof json, "%.*s", (int)j.len, (const char *)j.p);
  snprintf(want, sizeof want,
           "{\"destination\":null,\"payload\":\"hi\",\"values\":{\"k\":1},\"id\":\"%s\","
           "\"reply_to\":\"r/x\"}",
           id);
  CHECK_STR(json, want);
  mb_buf_free(&j);

  mb_msg *m2 = mb_msg_new(pb.p, pb.len, NULL, 0, NULL);
  CHECK(mb_msg_id(m2) != mb_msg_id(m));
  CHECK(mb_msg_reply_to(m2) == NULL);
  CHECK_INT(mb_msg_expects_reply(m2), 0);
  p = mb_msg_values(m2, &n);
  CHECK_INT(n, 0);
  CHECK_INT(mb_msg_to_json(m2, &j, err, sizeof err), 0);
  mb_id_format(mb_msg_id(m2), id);
  snprintf(json, sizeof json, "%.*s", (int)j.len, (const char *)j.p);
  snprintf(want, sizeof want,
           "{\"destination\":null,\"payload\":\"hi\",\"values\":{},\"id\":\"%s\"}", id);
  CHECK_STR(json, want);
  mb_buf_free(&j);

  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.messages, 2);
  CHECK(mb_msg_ref(m) == m);
  mb_msg_unref(m);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.messages, 2);
  mb_msg_unref(m);
  mb_msg_unref(m2);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.messages, 0);
  mb_buf_free(&pb);
  mb_buf_free(&vb);

  /* ids as users see them */
  uint64_t v = 0;
  CHECK_INT(mb_id_format(255, id), 2);
  CHECK_STR(id, "ff");
  CHECK_INT(mb_id_format(UINT64_MAX, id), 16);
  CHECK_STR(id, "ffffffffffffffff");
  CHECK(mb_id_parse("ff", 2, &v) == 0 && v == 255);
  CHECK(mb_id_parse("ffffffffffffffff", 16, &v) == 0 && v == UINT64_MAX);
  CHECK_INT(mb_id_parse("", 0, &v), -1);
  CHECK_INT(mb_id_parse("xyz", 3, &v), -1);
  CHECK_INT(mb_id_parse("10000000000000000", 17, &v), -1);
  mb_runtime_free(rt);
}

/* A listener that sends the message on to another destination as JSON. */
static void json_fn(void *ud, mb_delivery *d) {
  char *out = ud;
  mb_buf b = {0};
  char err[128];
  if (mb_msg_to_json(mb_delivery_msg(d), &b, err, sizeof err) == 0)
    snprintf(out, 256, "%.*s", (int)b.len, (const char *)b.p);
  else
    snprintf(out, 256, "error: %s", err);
  mb_buf_free(&b);
  mb_delivery_done(d, MB_OK, NULL);
}

static void test_message_json_in_listener(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "j", 0);
  CHECK_INT(mb_dest_declare(rt, "j/in", NULL), MB_OK);
  char got[256] = "", want[256], id[17];
  int err = 0;
  CHECK(mb_listen(svc, "j/in", 0, json_fn, NULL, got, &err) != NULL);
  mb_msg *m = msg_int(3);
  mb_id_format(mb_msg_id(m), id);
  CHECK_INT(mb_send(svc, "j/in", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  snprintf(want, sizeof want,
           "{\"destination\":\"j/in\",\"payload\":3,\"values\":{},\"id\":\"%s\"}", id);
  CHECK_STR(got, want);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void count_task(void *arg) {
  tlog *log = arg;
  log_add(log, "t ");
}

static void stop_task(void *arg) { mb_runtime_stop(arg); }

static void never_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)t;
  (void)revents;
}

static void test_runtime_and_services(void) {
  mb_config cfg = {1, 1000};
  mb_runtime *rt = mb_runtime_new(&cfg);
  CHECK_INT(mb_runtime_max_message_size(rt), 1000);
  mb_runtime *rt2 = mb_runtime_new(NULL);
  CHECK_INT(mb_runtime_max_message_size(rt2), 64u << 20);
  CHECK(mb_runtime_loop(rt2) != NULL && mb_runtime_loop(rt2) != mb_runtime_loop(rt));
  mb_runtime_free(rt2);

  mb_service *s1 = mb_service_new(rt, "one", 0), *s2 = mb_service_new(rt, "two", 0);
  CHECK_STR(mb_service_name(s1), "one");
  CHECK_STR(mb_service_name(s2), "two");
  CHECK(mb_service_id(s1) != mb_service_id(s2));
  mb_counts c;
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.services, 2);

  /* nothing to do: run returns at once, idle */
  double t0 = ev_time();
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 0.5);

  /* posted tasks run from the loop, in order, never inline */
  tlog log = {""};
  CHECK_INT(mb_service_post(s1, count_task, &log), MB_OK);
  CHECK_INT(mb_service_post(s1, count_task, &log), MB_OK);
  CHECK_STR(log.s, "");
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "t t ");

  /* a stopped service's tasks do not run */
  tlog dead = {""};
  CHECK_INT(mb_service_post(s2, count_task, &dead), MB_OK);
  mb_service_free(s2);
  mb_runtime_counts(rt, &c);
  CHECK_INT(c.services, 1);
  CHECK_INT(run(rt), 0);
  CHECK_STR(dead.s, "");

  /* the timeout bounds a run that would not end */
  ev_timer never;
  ev_timer_init(&never, never_cb, 30.0, 0);
  ev_timer_start(mb_runtime_loop(rt), &never);
  ev_now_update(mb_runtime_loop(rt));
  t0 = ev_time();
  CHECK_INT(mb_runtime_run(rt, 0.05), 1);
  double took = ev_time() - t0;
  CHECK(took >= 0.04 && took < 1.0);

  /* mb_runtime_stop from inside the loop */
  CHECK_INT(mb_service_post(s1, stop_task, rt), MB_OK);
  t0 = ev_time();
  CHECK_INT(run(rt), 1);
  CHECK(ev_time() - t0 < 1.0);
  ev_timer_stop(mb_runtime_loop(rt), &never);
  CHECK_INT(run(rt), 0);

  /* a stop with no run in progress is dropped, not kept for the next run */
  mb_runtime_stop(rt);
  CHECK_INT(mb_service_post(s1, count_task, &log), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(log.s, "t t t ");
  /* ...unless a run is marked as in progress across runs (mbrun) */
  mb_runtime_running(rt, 1);
  mb_runtime_stop(rt);
  CHECK_INT(run(rt), 1); /* it ends at once, and takes the stop with it */
  CHECK_INT(run(rt), 0);
  mb_runtime_running(rt, -1);
  mb_runtime_stop(rt);
  CHECK_INT(run(rt), 0);

  /* a bound that is not reached: idle, 0 */
  CHECK_INT(mb_service_post(s1, count_task, &log), MB_OK);
  t0 = ev_time();
  CHECK_INT(mb_runtime_run(rt, 5.0), 0);
  CHECK_STR(log.s, "t t t t ");
  /* and the loop is balanced afterwards: an empty run still ends at once */
  CHECK_INT(mb_runtime_run(rt, 0.05), 0);
  CHECK_INT(run(rt), 0);
  CHECK(ev_time() - t0 < 1.0);
  mb_runtime_free(rt);
}

/* ---- lifetimes ---------------------------------------------------------- */

/* Freeing a runtime in the middle of everything releases everything (the
 * sanitizer build checks the memory; the global message count here). */
static void test_free_busy_runtime(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "busy", 0), *s2 = mb_service_new(rt, "busy2", 0);
  tlog log = {""};
  mb_subscribe(svc, MB_EV_DEST_ADDED | MB_EV_LISTENER_REMOVED, event_cb, &log);
  CHECK_INT(mb_dest_declare(rt, "q", NULL), MB_OK);
  CHECK_INT(declare(rt, "s", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(declare(rt, "b", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  CHECK_INT(declare(rt, "y", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis hq, hs, hb, hy;
  CHECK_INT(lis_listen(&hq, svc, "q", 0, L_HOLD, "HQ"), MB_OK);
  CHECK_INT(lis_listen(&hs, s2, "s", 0, L_HOLD, "HS"), MB_OK);
  CHECK_INT(lis_listen(&hb, svc, "b", 0, L_HOLD, "HB"), MB_OK);
  CHECK_INT(lis_listen(&hy, s2, "y", 0, L_HOLD, "HY"), MB_OK);
  for (int i = 0; i < 5; i++) {
    mb_send(svc, "q", msg_int(i), NULL, NULL);
    mb_send(svc, "s", msg_int(i), NULL, NULL);
  }
  CHECK_INT(run(rt), 0);
  for (int i = 0; i < 3; i++) mb_send(svc, "q", msg_int(i), NULL, NULL); /* queued */
  sendres sr = {0, -100};
  CHECK_INT(mb_send(svc, "b", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "b", msg_int(2), send_cb, &sr), MB_PENDING);
  CHECK_INT(mb_send(svc, "y", msg_int(1), send_cb, &sr), MB_PENDING);
  reqres rr = {0};
  mb_request *r;
  CHECK_INT(mb_request_start(svc, "q", msg_int(9), 10.0, 1, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(mb_request_start(s2, "s", msg_int(9), 10.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(mb_dest_remove(rt, "s"), MB_OK);
  mb_runtime_free(rt);
  CHECK_INT(rr.calls, 0); /* cancelled requests do not call back */

  /* every message was released: a new runtime sees none alive */
  mb_runtime *fresh = mb_runtime_new(NULL);
  mb_counts c;
  mb_runtime_counts(fresh, &c);
  CHECK_INT(c.messages, 0);
  mb_runtime_free(fresh);
}

/* ---- showing values (mb_show.c) ------------------------------------------ */

/* mb_value_show of what b holds (b is emptied for the next value), as a C
 * string; "<rc N>" in front when it did not return 0. */
static const char *show_max(mb_buf *b, size_t max) {
  static char s[2048];
  mb_buf o = {0};
  int rc = mb_value_show(b->p, b->len, &o, max);
  int n = snprintf(s, sizeof s, "%s%.*s", rc ? "<rc -1>" : "", (int)o.len,
                   o.p ? (const char *)o.p : "");
  if (n >= 0 && (size_t)n < sizeof s && strlen(s) != (size_t)n)
    snprintf(s, sizeof s, "<NUL inside>");
  mb_buf_free(&o);
  b->len = 0;
  return s;
}

static const char *show(mb_buf *b) { return show_max(b, 0); }

static const char *show_float_(double v) {
  mb_buf b = {0};
  mb_enc_float(&b, v);
  const char *s = show(&b);
  mb_buf_free(&b);
  return s;
}

static const char *show_str_(const char *p, size_t len) {
  mb_buf b = {0};
  mb_enc_str(&b, p, len);
  const char *s = show(&b);
  mb_buf_free(&b);
  return s;
}

/* Reads a Lua short string literal as mb_value_show writes it ("...", with
 * \" \\ \n and \ddd escapes) into out. 0, or -1 when it is not one. */
static int lua_unquote(const char *s, char *out, size_t cap, size_t *len) {
  size_t n = 0;
  if (*s++ != '"') return -1;
  for (; *s && *s != '"'; s++) {
    char c = *s;
    if (c == '\\') {
      c = *++s;
      if (c == 'n')
        c = '\n';
      else if (c >= '0' && c <= '9') {
        int v = 0;
        for (int k = 0; k < 3 && *s >= '0' && *s <= '9'; k++) v = v * 10 + (*s++ - '0');
        s--;
        if (v > 255) return -1;
        c = (char)v;
      } else if (c != '"' && c != '\\')
        return -1;
    }
    if (n == cap) return -1;
    out[n++] = c;
  }
  if (*s != '"' || s[1]) return -1;
  *len = n;
  return 0;
}

static void test_show_scalars(void) {
  mb_buf b = {0};
  mb_enc_nil(&b);
  CHECK_STR(show(&b), "nil");
  mb_enc_bool(&b, 1);
  CHECK_STR(show(&b), "true");
  mb_enc_bool(&b, 0);
  CHECK_STR(show(&b), "false");
  mb_enc_int(&b, 0);
  CHECK_STR(show(&b), "0");
  mb_enc_int(&b, -42);
  CHECK_STR(show(&b), "-42");
  mb_enc_int(&b, INT64_MAX);
  CHECK_STR(show(&b), "9223372036854775807");
  /* -9223372036854775808 would read back as a float (issue 12, item 10) */
  mb_enc_int(&b, INT64_MIN);
  CHECK_STR(show(&b), "math.mininteger");
  mb_enc_int(&b, INT64_MIN + 1);
  CHECK_STR(show(&b), "-9223372036854775807");

  /* a float always reads as one: 3.0 is not the integer 3 */
  CHECK_STR(show_float_(3.0), "3.0");
  CHECK_STR(show_float_(-3.0), "-3.0");
  CHECK_STR(show_float_(0.0), "0.0");
  CHECK_STR(show_float_(-0.0), "-0.0");
  CHECK_STR(show_float_(0.1), "0.1");
  CHECK_STR(show_float_(-2.5), "-2.5");
  CHECK_STR(show_float_(123456789012.0), "123456789012.0");
  CHECK_STR(show_float_(1e100), "1e+100");
  CHECK_STR(show_float_(1.5e-7), "1.5e-07");
  CHECK_STR(show_float_(HUGE_VAL), "math.huge");
  CHECK_STR(show_float_(-HUGE_VAL), "-math.huge");
  CHECK_STR(show_float_(NAN), "0/0");
  /* what %.15g would round is shown with every digit it needs */
  const char *third = show_float_(1.0 / 3);
  CHECK(strtod(third, NULL) == 1.0 / 3);
  CHECK(strchr(third, '.') != NULL);
  CHECK(strtod(show_float_(0.1 + 0.2), NULL) == 0.1 + 0.2);
  CHECK(strcmp(show_float_(0.1 + 0.2), "0.3") != 0);
  CHECK(strtod(show_float_(1e300), NULL) == 1e300);

  /* strings: quoted, with quotes, backslashes and control bytes escaped */
  CHECK_STR(show_str_("", 0), "\"\"");
  CHECK_STR(show_str_("plain text", 10), "\"plain text\"");
  CHECK_STR(show_str_("say \"hi\"", 8), "\"say \\\"hi\\\"\"");
  CHECK_STR(show_str_("a\\b", 3), "\"a\\\\b\"");
  CHECK_STR(show_str_("line1\nline2", 11), "\"line1\\nline2\"");
  CHECK_STR(show_str_("caf\xc3\xa9", 5), "\"caf\xc3\xa9\""); /* UTF-8 passes */
  /* other control bytes as decimal escapes ("\9" or "\009"): no raw control
   * byte is left, and Lua would read the same bytes back */
  static const struct {
    const char *s;
    size_t len;
  } ctl[] = {{"a\tb\rc", 5}, {"nul\0end", 7}, {"\x1b[0m\x7f", 5}, {"\x01", 1},
             {"a\nb\r\nc", 6}, {"\x1f\"\\x", 4}};
  for (size_t i = 0; i < sizeof ctl / sizeof *ctl; i++) {
    const char *shown = show_str_(ctl[i].s, ctl[i].len);
    char back[64];
    size_t n = 0;
    int ok = CHECK(lua_unquote(shown, back, sizeof back, &n) == 0);
    ok &= CHECK_MEM(back, n, ctl[i].s, ctl[i].len);
    for (const char *c = shown; *c; c++) ok &= CHECK((unsigned char)*c >= 32 && *c != 127);
    if (!ok) fprintf(stderr, "    case %zu shown as %s\n", i, shown);
  }
  const char *tab = show_str_("\t", 1);
  CHECK(strcmp(tab, "\"\\9\"") == 0 || strcmp(tab, "\"\\009\"") == 0);
  mb_buf_free(&b);
}

static void test_show_tables(void) {
  mb_buf b = {0};
  long t = mb_enc_table_begin(&b);
  mb_enc_table_end(&b, t, 0, 0);
  CHECK_STR(show(&b), "{}");

  t = mb_enc_table_begin(&b);
  mb_enc_int(&b, 1);
  mb_enc_str(&b, "two", 3);
  mb_enc_bool(&b, 1);
  mb_enc_float(&b, 4.0);
  mb_enc_table_end(&b, t, 4, 0);
  CHECK_STR(show(&b), "{1, \"two\", true, 4.0}");

  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "id", 2);
  mb_enc_int(&b, 1);
  mb_enc_str(&b, "kind", 4);
  mb_enc_str(&b, "order", 5);
  mb_enc_table_end(&b, t, 0, 2);
  CHECK_STR(show(&b), "{id = 1, kind = \"order\"}");

  /* the array part first, then the pairs */
  t = mb_enc_table_begin(&b);
  mb_enc_int(&b, 10);
  mb_enc_int(&b, 20);
  mb_enc_str(&b, "n", 1);
  mb_enc_int(&b, 2);
  mb_enc_table_end(&b, t, 2, 1);
  CHECK_STR(show(&b), "{10, 20, n = 2}");

  /* nested */
  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "a", 1);
  long ta = mb_enc_table_begin(&b);
  mb_enc_str(&b, "b", 1);
  long tb = mb_enc_table_begin(&b);
  mb_enc_int(&b, 1);
  mb_enc_int(&b, 2);
  mb_enc_table_end(&b, tb, 2, 0);
  mb_enc_table_end(&b, ta, 0, 1);
  mb_enc_str(&b, "c", 1);
  long tc = mb_enc_table_begin(&b);
  mb_enc_table_end(&b, tc, 0, 0);
  mb_enc_str(&b, "d", 1);
  long td = mb_enc_table_begin(&b);
  long te = mb_enc_table_begin(&b);
  mb_enc_str(&b, "x", 1);
  mb_enc_table_end(&b, te, 1, 0);
  mb_enc_nil(&b);
  mb_enc_table_end(&b, td, 2, 0);
  mb_enc_table_end(&b, t, 0, 3);
  CHECK_STR(show(&b), "{a = {b = {1, 2}}, c = {}, d = {{\"x\"}, nil}}");

  /* keys that are not names go in brackets */
  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "a b", 3);
  mb_enc_int(&b, 1);
  mb_enc_int(&b, 3);
  mb_enc_str(&b, "x", 1);
  mb_enc_str(&b, "1x", 2);
  mb_enc_int(&b, 2);
  mb_enc_str(&b, "", 0);
  mb_enc_int(&b, 3);
  mb_enc_str(&b, "k\"q", 3);
  mb_enc_int(&b, 4);
  mb_enc_int(&b, -7);
  mb_enc_bool(&b, 0);
  mb_enc_float(&b, 1.5);
  mb_enc_bool(&b, 1);
  mb_enc_bool(&b, 1);
  mb_enc_int(&b, 5);
  mb_enc_str(&b, "_ok9", 4);
  mb_enc_int(&b, 6);
  mb_enc_str(&b, "dotted.key", 10);
  mb_enc_int(&b, 7);
  mb_enc_table_end(&b, t, 0, 10);
  CHECK_STR(show(&b), "{[\"a b\"] = 1, [3] = \"x\", [\"1x\"] = 2, [\"\"] = 3, [\"k\\\"q\"] = 4, [-7] = false, "
                      "[1.5] = true, [true] = 5, _ok9 = 6, [\"dotted.key\"] = 7}");
  mb_buf_free(&b);

  /* keys the C API can build and Lua cannot read as names: a table key is
   * shown in full and what follows it is still read right; a nil key as
   * [nil] (issue 12, item 10) */
  t = mb_enc_table_begin(&b);
  tb = mb_enc_table_begin(&b); /* key {1, x="y"} */
  mb_enc_int(&b, 1);
  mb_enc_str(&b, "x", 1);
  mb_enc_str(&b, "y", 1);
  mb_enc_table_end(&b, tb, 1, 1);
  mb_enc_str(&b, "v", 1);
  mb_enc_nil(&b); /* key nil */
  mb_enc_int(&b, 2);
  mb_enc_bool(&b, 0); /* key false */
  mb_enc_int(&b, 3);
  mb_enc_str(&b, "after", 5);
  mb_enc_int(&b, 4);
  mb_enc_table_end(&b, t, 0, 4);
  CHECK_STR(show(&b), "{[{1, x = \"y\"}] = \"v\", [nil] = 2, [false] = 3, after = 4}");
  /* integer and float keys, math.mininteger among them */
  t = mb_enc_table_begin(&b);
  mb_enc_int(&b, INT64_MIN);
  mb_enc_int(&b, 1);
  mb_enc_float(&b, 1.5);
  mb_enc_int(&b, 2);
  mb_enc_table_end(&b, t, 0, 2);
  CHECK_STR(show(&b), "{[math.mininteger] = 1, [1.5] = 2}");
  mb_buf_free(&b);
}

static void test_show_secrets(void) {
  mb_buf b = {0};
  long t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "user", 4);
  mb_enc_str(&b, "ann", 3);
  mb_enc_str(&b, "password", 8);
  mb_enc_str(&b, "hunter2", 7);
  mb_enc_str(&b, "apiToken", 8);
  mb_enc_str(&b, "tk-123", 6);
  mb_enc_str(&b, "Client_SECRET", 13);
  mb_enc_int(&b, 987654);
  mb_enc_str(&b, "tokens", 6); /* a whole subtable under a secret key */
  long ts = mb_enc_table_begin(&b);
  mb_enc_str(&b, "t-one", 5);
  mb_enc_str(&b, "t-two", 5);
  mb_enc_str(&b, "inner", 5);
  mb_enc_str(&b, "t-three", 7);
  mb_enc_table_end(&b, ts, 2, 1);
  mb_enc_str(&b, "nested", 6);
  long tn = mb_enc_table_begin(&b);
  mb_enc_str(&b, "PassWord", 8);
  long tp = mb_enc_table_begin(&b);
  mb_enc_str(&b, "deep", 4);
  mb_enc_str(&b, "d-val", 5);
  mb_enc_table_end(&b, tp, 0, 1);
  mb_enc_str(&b, "host", 4);
  mb_enc_str(&b, "db1", 3);
  mb_enc_table_end(&b, tn, 0, 2);
  mb_enc_str(&b, "my token", 8);
  mb_enc_str(&b, "spaced", 6);
  mb_enc_str(&b, "count", 5);
  mb_enc_int(&b, 3);
  mb_enc_table_end(&b, t, 0, 8);
  const char *s = show(&b);
  CHECK_STR(s, "{user = \"ann\", password = \"********\", apiToken = \"********\", "
               "Client_SECRET = \"********\", tokens = \"********\", "
               "nested = {PassWord = \"********\", host = \"db1\"}, [\"my token\"] = \"********\", "
               "count = 3}");
  const char *leaks[] = {"hunter2", "tk-123", "987654", "t-one", "t-two", "t-three", "d-val",
                         "deep", "spaced"};
  for (size_t i = 0; i < sizeof leaks / sizeof *leaks; i++)
    if (!CHECK(strstr(s, leaks[i]) == NULL)) fprintf(stderr, "    \"%s\" shown\n", leaks[i]);

  /* in an array a secret-looking string is only a value */
  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "password", 8);
  mb_enc_table_end(&b, t, 1, 0);
  CHECK_STR(show(&b), "{\"password\"}");
  /* the value is checked although it is masked: a broken one is malformed */
  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "secret", 6);
  uint8_t bad[] = {MB_V_STR, 50, 0, 0, 0, 'x'};
  mb_buf_add(&b, bad, sizeof bad);
  mb_enc_table_end(&b, t, 0, 1);
  CHECK_STR(show(&b), "<malformed value>");

  const char *yes[] = {"password", "PASSWORD", "user_password", "apiToken", "TOKEN", "token",
                       "x-secret-y", "SeCrEt", "db.Password.old", "refresh_token", "secrets"};
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
    if (!CHECK_INT(mb_key_is_secret(yes[i], strlen(yes[i])), 1))
      fprintf(stderr, "    %s\n", yes[i]);
  const char *no[] = {"", "passwd", "pass", "pwd", "tok", "toke", "secre", "user", "tokn",
                      "id", "se cret", "pass_word"};
  for (size_t i = 0; i < sizeof no / sizeof *no; i++)
    if (!CHECK_INT(mb_key_is_secret(no[i], strlen(no[i])), 0)) fprintf(stderr, "    %s\n", no[i]);
  /* only len bytes count */
  CHECK_INT(mb_key_is_secret("passwordX", 7), 0);
  CHECK_INT(mb_key_is_secret("tokenizer", 5), 1);
  CHECK_INT(mb_key_is_secret("my_token", 7), 0);
  CHECK_INT(mb_key_is_secret("xx\0token", 8), 1);
  mb_buf_free(&b);
}

static void enc_ints(mb_buf *b, int n) {
  long t = mb_enc_table_begin(b);
  for (int i = 0; i < n; i++) mb_enc_int(b, i);
  mb_enc_table_end(b, t, (uint32_t)n, 0);
}

static void test_show_max(void) {
  mb_buf b = {0};
  enc_ints(&b, 10);
  CHECK_STR(show_max(&b, 0), "{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}");
  enc_ints(&b, 10);
  CHECK_STR(show_max(&b, 30), "{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}"); /* exactly fits */
  enc_ints(&b, 10);
  CHECK_STR(show_max(&b, 29), "{0, 1, 2, 3, 4, 5, 6, 7, 8, 9...");
  enc_ints(&b, 10);
  CHECK_STR(show_max(&b, 10), "{0, 1, 2, ...");
  enc_ints(&b, 10);
  CHECK_STR(show_max(&b, 1), "{...");
  char x[100];
  memset(x, 'x', sizeof x);
  mb_enc_str(&b, x, sizeof x);
  CHECK_STR(show_max(&b, 20), "\"xxxxxxxxxxxxxxxxxxx...");
  /* never more than max plus the "..." */
  for (size_t max = 1; max < 40; max++) {
    enc_ints(&b, 10);
    const char *s = show_max(&b, max);
    size_t n = strlen(s);
    if (!CHECK(n <= max + 3 && (n == 30 || (n >= 3 && strcmp(s + n - 3, "...") == 0))))
      fprintf(stderr, "    max %zu: %s\n", max, s);
  }
  /* a cut value is still read to its end: malformed after the cut shows */
  long t = mb_enc_table_begin(&b);
  for (int i = 0; i < 5; i++) mb_enc_int(&b, i);
  mb_enc_table_end(&b, t, 6, 0); /* says 6, holds 5 */
  CHECK_STR(show_max(&b, 5), "<malformed value>");

  /* it appends: max counts what it adds, not what was there */
  mb_buf out = {0};
  mb_buf_add(&out, "msg: ", 5);
  enc_ints(&b, 10);
  CHECK_INT(mb_value_show(b.p, b.len, &out, 10), 0);
  CHECK_MEM(out.p, out.len, "msg: {0, 1, 2, ...", 18);
  b.len = 0;
  mb_buf_free(&out);
  mb_buf_free(&b);
}

static void check_malformed(const uint8_t *p, size_t len, int line) {
  mb_buf out = {0};
  mb_buf_add(&out, "before|", 7);
  int rc = mb_value_show(p, len, &out, 0);
  int ok = CHECK_INT(rc, 0);
  ok &= CHECK_MEM(out.p, out.len, "before|<malformed value>", 24);
  if (!ok) fprintf(stderr, "    (case at line %d: %.*s)\n", line, (int)out.len, (char *)out.p);
  mb_buf_free(&out);
}

static void test_show_malformed(void) {
  uint8_t trunc_int[] = {MB_V_INT, 1, 2, 3};
  check_malformed(trunc_int, sizeof trunc_int, __LINE__);
  uint8_t trunc_float[] = {MB_V_FLOAT, 0, 0};
  check_malformed(trunc_float, sizeof trunc_float, __LINE__);
  uint8_t bad_tag[] = {99};
  check_malformed(bad_tag, sizeof bad_tag, __LINE__);
  check_malformed(bad_tag, 0, __LINE__); /* nothing at all */
  uint8_t long_str[] = {MB_V_STR, 9, 0, 0, 0, 'a', 'b'};
  check_malformed(long_str, sizeof long_str, __LINE__);
  uint8_t short_len[] = {MB_V_STR, 9, 0};
  check_malformed(short_len, sizeof short_len, __LINE__);
  uint8_t short_table[] = {MB_V_TABLE, 1, 0, 0, 0, 0};
  check_malformed(short_table, sizeof short_table, __LINE__);

  /* shown in part before the fault: the part is taken back */
  mb_buf b = {0};
  long t = mb_enc_table_begin(&b);
  mb_enc_int(&b, 1);
  mb_enc_str(&b, "two", 3);
  mb_enc_str(&b, "k", 1);
  mb_enc_table_end(&b, t, 2, 1); /* the value of k is missing */
  check_malformed(b.p, b.len, __LINE__);
  b.len = 0;
  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "k", 1);
  mb_enc_int(&b, 1);
  mb_buf_add(&b, bad_tag, 1);
  mb_enc_int(&b, 2);
  mb_enc_table_end(&b, t, 0, 2); /* a key with an unknown tag */
  check_malformed(b.p, b.len, __LINE__);
  b.len = 0;
  /* nested deeper than MB_MAX_DEPTH */
  enc_nested(&b, MB_MAX_DEPTH + 1);
  check_malformed(b.p, b.len, __LINE__);
  b.len = 0;
  enc_nested(&b, MB_MAX_DEPTH - 1);
  const char *s = show(&b);
  CHECK(strncmp(s, "{{{{", 4) == 0 && strstr(s, "{1}") != NULL);
  /* a good value after a bad one shows in full again */
  mb_enc_int(&b, 5);
  CHECK_STR(show(&b), "5");
  mb_buf_free(&b);
}

/* ---- observing: the tracer (mb_observe.c) ------------------------------- */

#define NONE "(none)"

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

static void tracer_fn(void *ud, const mb_hop *h) {
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
static void check_hop(int line, const tracer *t, int i, mb_hop_kind kind, uint64_t id,
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
#define CHECK_HOP(t, i, kind, id, dest, from, to, error) \
  check_hop(__LINE__, t, i, kind, id, dest, from, to, error)

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* at: since the runtime was made, never decreasing; durations not negative */
static void check_times(const tracer *t, double t_before_new) {
  double limit = mono_now() - t_before_new;
  int n = t->n < 48 ? t->n : 48;
  for (int i = 0; i < n; i++) {
    int ok = CHECK(t->h[i].at >= 0 && t->h[i].at <= limit);
    ok &= CHECK(t->h[i].duration >= 0 && t->h[i].duration <= limit);
    if (i) ok &= CHECK(t->h[i].at >= t->h[i - 1].at);
    if (!ok)
      fprintf(stderr, "    hop %d: at %.9f (before: %.9f), duration %.9f, limit %.9f\n", i,
              t->h[i].at, i ? t->h[i - 1].at : 0.0, t->h[i].duration, limit);
  }
  if (n > 1) CHECK(t->h[n - 1].at > t->h[0].at);
}

/* Only messages made while the bus is observed carry their sender and send
 * time (16 bytes more; the others do without): one made before tracing starts
 * shows neither; one made after shows both. */
static void test_trace_message_made_before(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *snd = mb_service_new(rt, "sender", 0), *wrk = mb_service_new(rt, "worker", 0);
  CHECK_INT(mb_dest_declare(rt, "t/x", NULL), MB_OK);
  lis l;
  CHECK_INT(lis_listen(&l, wrk, "t/x", 0, L_OK, "X"), MB_OK);
  mb_msg *early = msg_int(1);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  mb_msg *late = msg_int(2);
  CHECK_INT(mb_send(snd, "t/x", early, NULL, NULL), MB_OK);
  CHECK_INT(mb_send(snd, "t/x", late, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 2);
  int e = tr.h[0].val == 1 ? 0 : 1;
  CHECK_STR(tr.h[e].from, NONE);
  CHECK(tr.h[e].duration == 0);
  CHECK_STR(tr.h[e].to, "worker");
  CHECK_STR(tr.h[1 - e].from, "sender");
  CHECK(tr.h[1 - e].duration > 0);
  /* latency: only timed deliveries count */
  mb_runtime_observe(rt, MB_OBSERVE_LATENCY);
  CHECK_INT(mb_send(snd, "t/x", msg_int(3), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK(stats_of(rt, "t/x").latency_mean > 0);
  mb_runtime_trace(rt, NULL, NULL);
  mb_service_free(snd);
  mb_service_free(wrk);
  mb_runtime_free(rt);
}

static void test_trace_hops(void) {
  double t_new = mono_now();
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *snd = mb_service_new(rt, "sender", 0), *wrk = mb_service_new(rt, "worker", 0);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  CHECK_INT(mb_dest_declare(rt, "t/ok", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "t/fail", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "t/drop", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "t/none", NULL), MB_OK);
  CHECK_INT(declare(rt, "t/full", MB_PARALLEL, 1, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(declare(rt, "t/sync", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  lis ok, fail, drop, full, sync;
  CHECK_INT(lis_listen(&ok, wrk, "t/ok", 0, L_OK, "OK"), MB_OK);
  CHECK_INT(lis_listen(&fail, wrk, "t/fail", 0, L_FAIL, "F"), MB_OK);
  CHECK_INT(lis_listen(&drop, wrk, "t/drop", 0, L_OK, "D"), MB_OK);
  CHECK_INT(lis_listen(&full, wrk, "t/full", 0, L_OK, "Q"), MB_OK);
  CHECK_INT(lis_listen(&sync, wrk, "t/sync", 0, L_OK, "S"), MB_OK);
  CHECK_INT(tr.n, 0); /* declaring and listening are not hops */

  /* ok */
  mb_msg *m = msg_int(1);
  uint64_t id1 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/ok", m, NULL, NULL), MB_OK);
  CHECK_INT(tr.n, 0); /* queued: no hop yet */
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 1);
  CHECK_HOP(&tr, 0, MB_HOP_OK, id1, "t/ok", "sender", "worker", NONE);
  CHECK(tr.h[0].has_msg && tr.h[0].val == 1);

  /* failed */
  m = msg_int(2);
  uint64_t id2 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/fail", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 2);
  CHECK_HOP(&tr, 1, MB_HOP_FAILED, id2, "t/fail", "sender", "worker", "failed: boom");
  CHECK(tr.h[1].has_msg && tr.h[1].val == 2);

  /* dropped: the only listener closed between send and dispatch */
  m = msg_int(3);
  uint64_t id3 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/drop", m, NULL, NULL), MB_OK);
  mb_listener_close(drop.l);
  CHECK_INT(run(rt), 0);
  CHECK_INT(drop.calls, 0);
  CHECK_INT(tr.n, 3);
  CHECK_INT(tr.h[2].kind, MB_HOP_DROPPED);
  CHECK(tr.h[2].id == id3);
  CHECK_STR(tr.h[2].dest, "t/drop");
  CHECK_STR(tr.h[2].from, "sender");
  CHECK_STR(tr.h[2].to, NONE); /* no listener took it */
  CHECK(strncmp(tr.h[2].error, "dropped: ", 9) == 0);
  CHECK_INT(stats_of(rt, "t/drop").dropped, 1);

  /* rejected: nobody listens; the hop comes with the refusal */
  m = msg_int(4);
  uint64_t id4 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/none", m, NULL, NULL), MB_ENOLISTENERS);
  CHECK_INT(tr.n, 4);
  CHECK_HOP(&tr, 3, MB_HOP_REJECTED, id4, "t/none", "sender", NONE,
            "no_listeners: nobody listens there");
  CHECK(tr.h[3].has_msg && tr.h[3].val == 4);
  CHECK(tr.h[3].duration == 0);

  /* rejected: queue_full (max_queue 1, reject) */
  m = msg_int(5);
  uint64_t id5 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/full", m, NULL, NULL), MB_OK);
  m = msg_int(6);
  uint64_t id6 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/full", m, NULL, NULL), MB_EFULL);
  CHECK_INT(tr.n, 5);
  CHECK_HOP(&tr, 4, MB_HOP_REJECTED, id6, "t/full", "sender", NONE,
            "queue_full: its queue is full (max_queue)");
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 6);
  CHECK_HOP(&tr, 5, MB_HOP_OK, id5, "t/full", "sender", "worker", NONE);

  /* rejected: no such destination (send and request) */
  m = msg_int(7);
  uint64_t id7 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/missing", m, NULL, NULL), MB_ENODEST);
  CHECK_INT(tr.n, 7);
  CHECK_HOP(&tr, 6, MB_HOP_REJECTED, id7, "t/missing", "sender", NONE,
            "no_destination: no such destination");
  reqres rr = {0};
  mb_request *r = NULL;
  m = msg_int(8);
  uint64_t id8 = mb_msg_id(m);
  CHECK_INT(mb_request_start(snd, "t/nowhere", m, 1.0, 0, req_cb, &rr, &r), MB_ENODEST);
  CHECK_INT(tr.n, 8);
  CHECK_HOP(&tr, 7, MB_HOP_REJECTED, id8, "t/nowhere", "sender", NONE,
            "no_destination: no such destination");
  m = msg_int(9);
  uint64_t id9 = mb_msg_id(m);
  CHECK_INT(mb_request_start(snd, "t/none", m, 1.0, 0, req_cb, &rr, &r), MB_ENOLISTENERS);
  CHECK_INT(tr.n, 9);
  CHECK_HOP(&tr, 8, MB_HOP_REJECTED, id9, "t/none", "sender", NONE,
            "no_listeners: nobody listens there");

  /* a synchronous destination: the hop before mb_send returns */
  m = msg_int(10);
  uint64_t id10 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/sync", m, NULL, NULL), MB_OK);
  CHECK_INT(tr.n, 10);
  CHECK_HOP(&tr, 9, MB_HOP_OK, id10, "t/sync", "sender", "worker", NONE);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 10);
  CHECK_INT(rr.calls, 0);
  check_times(&tr, t_new);

  /* tracing off: no more hops, of any kind */
  mb_runtime_trace(rt, NULL, NULL);
  CHECK_INT(mb_send(snd, "t/ok", msg_int(11), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(snd, "t/fail", msg_int(12), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(snd, "t/none", msg_int(13), NULL, NULL), MB_ENOLISTENERS);
  CHECK_INT(mb_send(snd, "t/missing", msg_int(14), NULL, NULL), MB_ENODEST);
  CHECK_INT(mb_send(snd, "t/sync", msg_int(15), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(ok.calls, 2);
  CHECK_INT(fail.calls, 2);
  CHECK_INT(tr.n, 10);

  /* and on again, with another tracer */
  tracer tr2 = {0};
  mb_runtime_trace(rt, tracer_fn, &tr2);
  m = msg_int(16);
  uint64_t id16 = mb_msg_id(m);
  CHECK_INT(mb_send(snd, "t/ok", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 10);
  CHECK_INT(tr2.n, 1);
  CHECK_HOP(&tr2, 0, MB_HOP_OK, id16, "t/ok", "sender", "worker", NONE);
  CHECK(tr2.h[0].at >= tr.h[9].at);
  mb_runtime_trace(rt, NULL, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* A request that gets no reply in time: a timeout hop from the requester,
 * then the late delivery's own hop. */
static void test_trace_timeout(void) {
  double t_new = mono_now();
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *asker = mb_service_new(rt, "asker", 0), *slow = mb_service_new(rt, "slowpoke", 0);
  CHECK_INT(mb_dest_declare(rt, "slow", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, slow, "slow", 0, L_HOLD, "H"), MB_OK);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  reqres rr = {0};
  mb_request *r = NULL;
  mb_msg *m = msg_int(1);
  uint64_t id = mb_msg_id(m);
  double t0 = mono_now();
  CHECK_INT(mb_request_start(asker, "slow", m, 0.05, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  double took = mono_now() - t0;
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_ETIMEOUT);
  CHECK_INT(h.nheld, 1);
  CHECK_INT(tr.n, 1);
  CHECK_HOP(&tr, 0, MB_HOP_TIMEOUT, id, "slow", "asker", NONE,
            "timeout: no reply from slow within 0.05 s");
  CHECK_STR(tr.h[0].error, rr.error[0]); /* what the requester got */
  CHECK_INT(tr.h[0].has_msg, 0);
  CHECK(tr.h[0].duration >= 0.05 - 1e-6 && tr.h[0].duration <= took);

  lis_finish(&h, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 2);
  CHECK_HOP(&tr, 1, MB_HOP_OK, id, "slow", "asker", "slowpoke", NONE);
  CHECK(tr.h[1].duration >= tr.h[0].duration);

  /* request_all: one timeout hop for the request */
  CHECK_INT(mb_dest_declare(rt, "slow2", NULL), MB_OK);
  lis h2, h3;
  CHECK_INT(lis_listen(&h2, slow, "slow2", 0, L_HOLD, "H2"), MB_OK);
  CHECK_INT(lis_listen(&h3, slow, "slow2", 0, L_REPLY, "H3"), MB_OK);
  reqres ra = {0};
  m = msg_int(2);
  uint64_t id2 = mb_msg_id(m);
  CHECK_INT(mb_request_start(asker, "slow2", m, 0.03, 1, req_cb, &ra, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(ra.calls, 1);
  CHECK_INT(ra.n, 2);
  /* a reply (H3), its delivery's ok, then the timeout for H2's group */
  CHECK_INT(tr.n, 5);
  CHECK_HOP(&tr, 2, MB_HOP_REPLY, id2, "slow2", "slowpoke", "asker", NONE);
  CHECK_HOP(&tr, 3, MB_HOP_OK, id2, "slow2", "asker", "slowpoke", NONE);
  CHECK_HOP(&tr, 4, MB_HOP_TIMEOUT, id2, "slow2", "asker", NONE,
            "timeout: no answer from slow2 within 0.03 s");
  lis_finish(&h2, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 6);
  CHECK_HOP(&tr, 5, MB_HOP_OK, id2, "slow2", "asker", "slowpoke", NONE);
  check_times(&tr, t_new);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Replies: a reply hop from the replier to the requester, before the
 * request's delivery ends; with reply_to, the reply's own delivery. */
static void test_trace_reply(void) {
  double t_new = mono_now();
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *asker = mb_service_new(rt, "asker", 0), *calc = mb_service_new(rt, "calculator", 0);
  CHECK_INT(mb_dest_declare(rt, "calc", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "answers", NULL), MB_OK);
  lis a, back;
  CHECK_INT(lis_listen(&a, calc, "calc", 0, L_REPLY, "A"), MB_OK);
  a.reply_add = 1;
  CHECK_INT(lis_listen(&back, asker, "answers", 0, L_OK, "BACK"), MB_OK);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);

  reqres rr = {0};
  mb_request *r = NULL;
  mb_msg *m = msg_int(4);
  uint64_t id = mb_msg_id(m);
  CHECK_INT(mb_request_start(asker, "calc", m, 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.reply[0], 41);
  CHECK_INT(tr.n, 2);
  CHECK_HOP(&tr, 0, MB_HOP_REPLY, id, "calc", "calculator", "asker", NONE);
  CHECK(tr.h[0].has_msg && tr.h[0].val == 41); /* the reply, not the request */
  CHECK_HOP(&tr, 1, MB_HOP_OK, id, "calc", "asker", "calculator", NONE);
  CHECK(tr.h[1].val == 4);

  /* reply_to: the reply hop names that destination; nobody waits */
  m = msg_int_to(5, "answers");
  uint64_t id5 = mb_msg_id(m);
  CHECK_INT(mb_send(asker, "calc", m, NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(back.calls, 1);
  CHECK_INT(back.seen[0], 51);
  CHECK_INT(tr.n, 5);
  CHECK_HOP(&tr, 2, MB_HOP_REPLY, id5, "answers", "calculator", NONE, NONE);
  CHECK(tr.h[2].val == 51);
  CHECK_HOP(&tr, 3, MB_HOP_OK, id5, "calc", "asker", "calculator", NONE);
  CHECK_HOP(&tr, 4, MB_HOP_OK, back.ids[0], "answers", "calculator", "asker", NONE);
  CHECK(back.ids[0] != id5);
  CHECK(tr.h[4].val == 51);
  check_times(&tr, t_new);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- observing: latency ----------------------------------------------------- */

/* A listener that finishes payloads divisible by slow_every after `delay`
 * seconds (an ev timer), the others at once; it notes when each finished. */
#define LATN 200

typedef struct lat_lis {
  mb_runtime *rt;
  double delay;
  int slow_every;
  int calls;
  double done_at[LATN];
} lat_lis;

typedef struct lat_one {
  ev_timer t;
  lat_lis *owner;
  mb_delivery *d;
  int64_t v;
} lat_one;

static void lat_finish(lat_lis *l, mb_delivery *d, int64_t v) {
  mb_delivery_done(d, MB_OK, NULL);
  if (v >= 0 && v < LATN) l->done_at[v] = mono_now(); /* after: an upper bound */
}

static void lat_timer_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  lat_one *o = t->data;
  lat_finish(o->owner, o->d, o->v);
  free(o);
}

static void lat_fn(void *ud, mb_delivery *d) {
  lat_lis *l = ud;
  int64_t v = payload_int(mb_delivery_msg(d));
  l->calls++;
  if (v % l->slow_every) {
    lat_finish(l, d, v);
    return;
  }
  lat_one *o = calloc(1, sizeof *o);
  if (!o) abort();
  o->owner = l;
  o->d = d;
  o->v = v;
  struct ev_loop *loop = mb_runtime_loop(l->rt);
  ev_now_update(loop); /* the delay counts from now, not from the loop's last turn */
  ev_timer_init(&o->t, lat_timer_cb, l->delay, 0);
  o->t.data = o;
  ev_timer_start(loop, &o->t);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Sends 0..LATN-1 to dest (each timed from just before the send) and runs;
 * checks mb_stats' latency against the bounds the test can know: every
 * delivery took at least 0 (delay for the slow ones) and at most what the
 * test measured around it; p99 is the 99th percentile within 1/16. */
static void lat_round(mb_runtime *rt, mb_service *svc, const char *dest, double delay,
                      int slow_every, mb_stats *st_out) {
  lat_lis l = {rt, delay, slow_every, 0, {0}};
  int err = MB_OK;
  mb_listener *li = mb_listen(svc, dest, 0, lat_fn, NULL, &l, &err);
  if (!CHECK(li != NULL)) return;
  static double sent_at[LATN], lat[LATN];
  for (int v = 0; v < LATN; v++) {
    sent_at[v] = mono_now();
    CHECK_INT(mb_send(svc, dest, msg_int(v), NULL, NULL), MB_OK);
  }
  CHECK_INT(run(rt), 0);
  CHECK_INT(l.calls, LATN);
  double sum = 0, lo_sum = 0;
  int nslow = 0;
  for (int v = 0; v < LATN; v++) {
    lat[v] = l.done_at[v] - sent_at[v];
    sum += lat[v];
    if (v % slow_every == 0) {
      nslow++;
      lo_sum += delay;
    }
  }
  qsort(lat, LATN, sizeof *lat, cmp_double);
  size_t rank = (LATN * 99 + 99) / 100; /* the 198th of 200 */
  mb_stats st = stats_of(rt, dest);
  CHECK_INT(st.delivered, LATN);
  /* the mean: between the known lower bound and what was measured */
  CHECK(st.latency_mean > 0);
  CHECK(st.latency_mean >= lo_sum / LATN);
  CHECK(st.latency_mean <= sum / LATN + 1e-9);
  /* p99: the 198th latency, rounded up by at most 1/16; never above the max */
  if (nslow >= LATN - (int)rank + 1) CHECK(st.latency_p99 >= delay);
  if (!CHECK(st.latency_p99 <= lat[rank - 1] * 17 / 16 + 1e-9))
    fprintf(stderr, "    p99 %.9f, measured 198th %.9f\n", st.latency_p99, lat[rank - 1]);
  CHECK(st.latency_p99 <= lat[LATN - 1] + 1e-9);
  CHECK(st.latency_p99 > 0);
  mb_listener_close(li);
  *st_out = st;
}

static void test_latency(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "lat", 0);
  CHECK_INT(mb_dest_declare(rt, "lat/a", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "lat/b", NULL), MB_OK);
  mb_runtime_observe(rt, MB_OBSERVE_LATENCY);
  mb_stats st = stats_of(rt, "lat/a");
  CHECK(st.latency_mean == 0 && st.latency_p99 == 0); /* none timed yet */

  /* 4 of 200 take 20 ms: the 198th is one of them */
  lat_round(rt, svc, "lat/a", 0.02, 50, &st);
  CHECK(st.latency_p99 >= 0.02);
  CHECK(st.latency_mean >= 4 * 0.02 / LATN);
  /* 1 of 200 takes 100 ms: the 198th is a quick one, p99 is far below */
  lat_round(rt, svc, "lat/b", 0.1, LATN, &st);
  CHECK(st.latency_p99 < 0.05);
  CHECK(st.latency_mean >= 0.1 / LATN);

  /* failed deliveries are timed too; dropped ones are not */
  CHECK_INT(mb_dest_declare(rt, "lat/f", NULL), MB_OK);
  lis f;
  CHECK_INT(lis_listen(&f, svc, "lat/f", 0, L_FAIL, "F"), MB_OK);
  for (int i = 0; i < 3; i++) CHECK_INT(mb_send(svc, "lat/f", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  st = stats_of(rt, "lat/f");
  CHECK_INT(st.failed, 3);
  CHECK(st.latency_mean > 0 && st.latency_p99 > 0);
  CHECK_INT(mb_dest_declare(rt, "lat/d", NULL), MB_OK);
  lis d;
  CHECK_INT(lis_listen(&d, svc, "lat/d", 0, L_OK, "D"), MB_OK);
  CHECK_INT(mb_send(svc, "lat/d", msg_int(1), NULL, NULL), MB_OK);
  mb_listener_close(d.l);
  CHECK_INT(run(rt), 0);
  st = stats_of(rt, "lat/d");
  CHECK_INT(st.dropped, 1);
  CHECK(st.latency_mean == 0 && st.latency_p99 == 0);
  check_quiet(rt);
  mb_runtime_free(rt);

  /* not observed: both stay 0 */
  rt = mb_runtime_new(NULL);
  svc = mb_service_new(rt, "lat", 0);
  CHECK_INT(mb_dest_declare(rt, "lat/off", NULL), MB_OK);
  lat_lis l = {rt, 0.005, 2, 0, {0}};
  int err = MB_OK;
  CHECK(mb_listen(svc, "lat/off", 0, lat_fn, NULL, &l, &err) != NULL);
  for (int v = 0; v < 10; v++) CHECK_INT(mb_send(svc, "lat/off", msg_int(v), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(l.calls, 10);
  st = stats_of(rt, "lat/off");
  CHECK_INT(st.delivered, 10);
  CHECK(st.latency_mean == 0);
  CHECK(st.latency_p99 == 0);
  /* the graph or a tracer alone does not time deliveries into the stats */
  mb_runtime_observe(rt, MB_OBSERVE_GRAPH);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  for (int v = 1; v < 4; v += 2) CHECK_INT(mb_send(svc, "lat/off", msg_int(v), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(tr.n, 2);
  st = stats_of(rt, "lat/off");
  CHECK_INT(st.delivered, 12);
  CHECK(st.latency_mean == 0 && st.latency_p99 == 0);
  mb_runtime_trace(rt, NULL, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* ---- observing: the graph ------------------------------------------------------ */

typedef struct edges {
  int n;
  char e[32][96];
} edges;

static void edge_fn(void *ud, const mb_edge *e) {
  edges *g = ud;
  if (g->n < 32)
    snprintf(g->e[g->n], sizeof g->e[0], "%s %s %s type=%d", e->service,
             e->listens ? "listens at" : "sends to", e->dest, (int)e->type);
  g->n++;
}

static edges graph_of(mb_runtime *rt) {
  edges g;
  memset(&g, 0, sizeof g);
  mb_graph_each(rt, edge_fn, &g);
  return g;
}

/* g holds exactly the edges in want (each once). */
static void check_edges(int line, const edges *g, const char *const *want, int n) {
  int ok = CHECK_INT(g->n, n);
  for (int i = 0; i < n; i++) {
    int seen = 0;
    for (int j = 0; j < g->n && j < 32; j++) seen += strcmp(g->e[j], want[i]) == 0;
    if (!CHECK_INT(seen, 1)) {
      ok = 0;
      fprintf(stderr, "    edge \"%s\"\n", want[i]);
    }
  }
  if (!ok) {
    fprintf(stderr, "    (checked at line %d) the graph:\n", line);
    for (int j = 0; j < g->n && j < 32; j++) fprintf(stderr, "      %s\n", g->e[j]);
  }
}

static void test_graph(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_runtime_observe(rt, MB_OBSERVE_GRAPH);
  mb_service *alpha = mb_service_new(rt, "alpha", 0), *beta = mb_service_new(rt, "beta", 0);
  CHECK_INT(declare(rt, "g/par", MB_PARALLEL, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(declare(rt, "g/ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  CHECK_INT(declare(rt, "g/sync", MB_SYNCHRONOUS, 0, MB_FULL_REJECT, 0), MB_OK);
  edges g = graph_of(rt);
  CHECK_INT(g.n, 0);
  lis b1, b2, b3, a1;
  CHECK_INT(lis_listen(&b1, beta, "g/par", 0, L_OK, "B1"), MB_OK);
  CHECK_INT(lis_listen(&b2, beta, "g/par", 5, L_OK, "B2"), MB_OK); /* same pair: one edge */
  CHECK_INT(lis_listen(&b3, beta, "g/ser", 0, L_OK, "B3"), MB_OK);
  CHECK_INT(lis_listen(&a1, alpha, "g/sync", 0, L_OK, "A1"), MB_OK);
  g = graph_of(rt);
  const char *listens[] = {"beta listens at g/par type=0", "beta listens at g/ser type=1",
                           "alpha listens at g/sync type=2"};
  check_edges(__LINE__, &g, listens, 3);

  for (int i = 0; i < 10; i++) CHECK_INT(mb_send(alpha, "g/par", msg_int(i), NULL, NULL), MB_OK);
  for (int i = 0; i < 3; i++) CHECK_INT(mb_send(alpha, "g/ser", msg_int(i), NULL, NULL), MB_OK);
  for (int i = 0; i < 5; i++) CHECK_INT(mb_send(beta, "g/sync", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(b1.calls + b2.calls, 20);
  for (int i = 0; i < 10; i++) CHECK_INT(mb_send(alpha, "g/par", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  const char *all[] = {"beta listens at g/par type=0",  "beta listens at g/ser type=1",
                       "alpha listens at g/sync type=2", "alpha sends to g/par type=0",
                       "alpha sends to g/ser type=1",    "beta sends to g/sync type=2"};
  g = graph_of(rt);
  check_edges(__LINE__, &g, all, 6);

  /* a destination removed since keeps its edges */
  CHECK_INT(mb_dest_remove(rt, "g/ser"), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_dest_exists(rt, "g/ser"), 0);
  CHECK_INT(b3.closed_calls, 1);
  g = graph_of(rt);
  check_edges(__LINE__, &g, all, 6);

  /* a new pair adds one edge; a service gone keeps its edges */
  lis a2;
  CHECK_INT(lis_listen(&a2, alpha, "g/par", 0, L_OK, "A2"), MB_OK);
  CHECK_INT(mb_send(beta, "g/par", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  mb_service_free(beta);
  CHECK_INT(mb_send(alpha, "g/par", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  const char *more[] = {"beta listens at g/par type=0",  "beta listens at g/ser type=1",
                        "alpha listens at g/sync type=2", "alpha sends to g/par type=0",
                        "alpha sends to g/ser type=1",    "beta sends to g/sync type=2",
                        "alpha listens at g/par type=0",  "beta sends to g/par type=0"};
  g = graph_of(rt);
  check_edges(__LINE__, &g, more, 8);
  check_quiet(rt);
  mb_runtime_free(rt);

  /* without MB_OBSERVE_GRAPH (latency alone, or nothing): no edges */
  for (int round = 0; round < 2; round++) {
    rt = mb_runtime_new(NULL);
    if (round) mb_runtime_observe(rt, MB_OBSERVE_LATENCY);
    mb_service *s = mb_service_new(rt, "solo", 0);
    CHECK_INT(mb_dest_declare(rt, "g/x", NULL), MB_OK);
    lis x;
    CHECK_INT(lis_listen(&x, s, "g/x", 0, L_OK, "X"), MB_OK);
    CHECK_INT(mb_send(s, "g/x", msg_int(1), NULL, NULL), MB_OK);
    CHECK_INT(run(rt), 0);
    CHECK_INT(x.calls, 1);
    g = graph_of(rt);
    CHECK_INT(g.n, 0);
    check_quiet(rt);
    mb_runtime_free(rt);
  }
}

/* ---- graceful shutdown: mb_runtime_drain, mb_runtime_in_flight ---------------- */

/* Turns the loop without blocking until *count reaches n. */
static void run_until_n(mb_runtime *rt, const int *count, int n) {
  for (int i = 0; i < 1000 && *count < n; i++) ev_run(mb_runtime_loop(rt), EVRUN_NOWAIT);
}

static mb_delivery *held_with(lis *l, int64_t v) {
  for (int i = 0; i < l->nheld; i++) {
    mb_delivery *d = l->held[(l->hhead + i) % MAXN];
    if (payload_int(mb_delivery_msg(d)) == v) return d;
  }
  return NULL;
}

static void test_drain(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *app = mb_service_new(rt, "app", 0), *wrk = mb_service_new(rt, "wrk", 0);
  CHECK_INT(mb_dest_declare(rt, "job", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "answers", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "mb/dead-letters", NULL), MB_OK);
  lis h, back, dl;
  CHECK_INT(lis_listen(&h, wrk, "job", 0, L_HOLD, "H"), MB_OK);
  CHECK_INT(lis_listen(&back, app, "answers", 0, L_OK, "BACK"), MB_OK);
  CHECK_INT(lis_listen(&dl, app, "mb/dead-letters", 0, L_OK, "DL"), MB_OK);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  CHECK_INT(mb_runtime_in_flight(rt), 0);

  /* before the drain: two plain messages, one with reply_to, a request */
  CHECK_INT(mb_send(app, "job", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(app, "job", msg_int(2), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(app, "job", msg_int_to(3, "answers"), NULL, NULL), MB_OK);
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(app, "job", msg_int(4), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  run_until_n(rt, &h.nheld, 4); /* run() would wait for the request */
  CHECK_INT(h.nheld, 4);
  CHECK_INT(mb_runtime_in_flight(rt), 5); /* 4 deliveries running + 1 request */

  mb_runtime_drain(rt);
  CHECK_INT(mb_runtime_in_flight(rt), 5);
  mb_stats before = stats_of(rt, "job");
  int nhops = tr.n;

  /* a plain send is refused, counted, traced */
  mb_msg *m = msg_int(5);
  uint64_t id5 = mb_msg_id(m);
  CHECK_INT(mb_send(app, "job", m, NULL, NULL), MB_ESHUTDOWN);
  CHECK_STR(mb_strerror(MB_ESHUTDOWN), "closed");
  mb_stats st = stats_of(rt, "job");
  CHECK_INT(st.rejected, before.rejected + 1);
  CHECK_INT(st.sent, before.sent);
  CHECK_INT(tr.n, nhops + 1);
  CHECK_HOP(&tr, nhops, MB_HOP_REJECTED, id5, "job", "app", NONE,
            "closed: shutting down, no new messages");
  /* so is a new request, without its callback */
  reqres rr2 = {0};
  mb_request *r2 = (mb_request *)&rr2;
  CHECK_INT(mb_request_start(app, "job", msg_int(6), 5.0, 0, req_cb, &rr2, &r2), MB_ESHUTDOWN);
  CHECK(r2 == NULL);
  CHECK_INT(stats_of(rt, "job").rejected, before.rejected + 2);
  /* and a send to another destination, from any service */
  CHECK_INT(mb_send(wrk, "answers", msg_int(7), NULL, NULL), MB_ESHUTDOWN);
  CHECK_INT(stats_of(rt, "answers").rejected, 1);
  /* the codes that came before still win */
  CHECK_INT(mb_send(app, "nowhere", msg_int(8), NULL, NULL), MB_ENODEST);
  CHECK_INT(mb_runtime_in_flight(rt), 5);

  /* a follow-up (sent while handling a delivery) is taken */
  m = msg_int(9);
  mb_msg_follow_up(m);
  CHECK_INT(mb_send(wrk, "job", m, NULL, NULL), MB_OK);
  CHECK_INT(stats_of(rt, "job").sent, before.sent + 1);
  CHECK(mb_runtime_in_flight(rt) >= 6);
  run_until_n(rt, &h.nheld, 5);
  CHECK_INT(h.nheld, 5);
  CHECK_INT(mb_runtime_in_flight(rt), 6);

  /* replies still go: to the waiting requester, and to a reply_to */
  mb_delivery *d4 = held_with(&h, 4), *d3 = held_with(&h, 3);
  CHECK(d4 != NULL && d3 != NULL);
  if (d4) CHECK_INT(mb_reply(wrk, mb_delivery_msg(d4), mb_delivery_group(d4), msg_int(40)), MB_OK);
  if (d3) CHECK_INT(mb_reply(wrk, mb_delivery_msg(d3), mb_delivery_group(d3), msg_int(30)), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_OK);
  CHECK_INT(rr.reply[0], 40);
  CHECK_INT(back.calls, 1);
  CHECK_INT(back.seen[0], 30);
  CHECK_INT(mb_runtime_in_flight(rt), 5); /* the request is over */

  /* the others finish one by one; the last fails: a dead letter still goes */
  mb_delivery *d1 = held_with(&h, 1), *rest[5];
  int nrest = 0;
  for (int i = 0; i < h.nheld; i++) {
    mb_delivery *d = h.held[(h.hhead + i) % MAXN];
    if (d != d1 && nrest < 5) rest[nrest++] = d;
  }
  h.nheld = 0;
  CHECK(d1 != NULL);
  CHECK_INT(nrest, 4);
  for (int i = 0; i < nrest; i++) {
    mb_delivery_done(rest[i], MB_OK, NULL);
    CHECK_INT(mb_runtime_in_flight(rt), (size_t)(4 - i));
  }
  if (d1) mb_delivery_done(d1, MB_EFAILED, "failed: late");
  CHECK(mb_runtime_in_flight(rt) >= 1); /* the dead letter */
  CHECK_INT(run(rt), 0);
  CHECK_INT(dl.calls, 1);
  CHECK_INT(mb_runtime_in_flight(rt), 0);
  st = stats_of(rt, "job");
  CHECK_INT(st.delivered, 4);
  CHECK_INT(st.failed, 1);
  CHECK_INT(st.sent, 5);
  CHECK_INT(rr2.calls, 0);

  /* still draining: nothing new */
  CHECK_INT(mb_send(app, "job", msg_int(10), NULL, NULL), MB_ESHUTDOWN);
  CHECK_INT(mb_runtime_in_flight(rt), 0);
  mb_runtime_trace(rt, NULL, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* mb_delivery_done_soon: a delivery that ended well is settled by a task
 * of its service (or mb_service_settle, or the service's end), in order;
 * failures and synchronous sends are settled at once. */
static void test_done_soon(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "soon", 0);
  tlog lg = {""};
  CHECK_INT(declare(rt, "soon/ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "soon/ser", 0, L_SOON, "A"), MB_OK);
  a.log = &lg;
  for (int i = 1; i <= 5; i++) CHECK_INT(mb_send(svc, "soon/ser", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_STR(lg.s, "A1 A2 A3 A4 A5 ");
  mb_stats st = stats_of(rt, "soon/ser");
  CHECK_INT(st.delivered, 5);
  CHECK_INT(st.in_flight + st.pending, 0);

  /* finished from the loop's thread outside a task: in flight until settled */
  CHECK_INT(mb_dest_declare(rt, "soon/par", NULL), MB_OK);
  lis h;
  CHECK_INT(lis_listen(&h, svc, "soon/par", 0, L_HOLD, "H"), MB_OK);
  for (int i = 1; i <= 4; i++) CHECK_INT(mb_send(svc, "soon/par", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(h.nheld, 4);
  CHECK(lis_finish_soon(&h, MB_OK, NULL));
  CHECK(lis_finish_soon(&h, MB_OK, NULL));
  st = stats_of(rt, "soon/par");
  CHECK_INT(st.in_flight, 4);
  CHECK_INT(st.delivered, 0);
  mb_service_settle(svc);
  st = stats_of(rt, "soon/par");
  CHECK_INT(st.in_flight, 2);
  CHECK_INT(st.delivered, 2);
  /* a failure is settled at once, and after what was left before it */
  CHECK(lis_finish_soon(&h, MB_OK, NULL));
  CHECK(lis_finish_soon(&h, MB_EFAILED, "failed: late"));
  st = stats_of(rt, "soon/par");
  CHECK_INT(st.delivered, 3);
  CHECK_INT(st.failed, 1);
  CHECK_INT(st.in_flight, 0);

  /* settled by the task the loop runs */
  CHECK_INT(mb_send(svc, "soon/par", msg_int(5), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK(lis_finish_soon(&h, MB_OK, NULL));
  CHECK_INT(stats_of(rt, "soon/par").in_flight, 1);
  CHECK_INT(run(rt), 0);
  st = stats_of(rt, "soon/par");
  CHECK_INT(st.delivered, 4);
  CHECK_INT(st.in_flight, 0);
  CHECK_INT(mb_runtime_in_flight(rt), 0);

  /* the service ends with one left unsettled: delivered, not dropped */
  CHECK_INT(mb_send(svc, "soon/par", msg_int(6), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK(lis_finish_soon(&h, MB_OK, NULL));
  mb_service_free(svc);
  st = stats_of(rt, "soon/par");
  CHECK_INT(st.delivered, 5);
  CHECK_INT(st.dropped, 0);
  CHECK_INT(st.in_flight, 0);
  CHECK_INT(run(rt), 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

static void nop_send_cb(void *ud, int status) {
  (void)ud;
  (void)status;
}

/* mb_runtime_in_flight: nonzero while anything is queued, blocked, running
 * or waiting; exact for running deliveries and waiting requests; 0 once
 * all is done. (Exact counts of queued work: see the report of the
 * in_flight overcount; they are not asserted here.) */
static void test_in_flight(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "if", 0);
  CHECK_INT(mb_dest_declare(rt, "if/par", NULL), MB_OK);
  lis p;
  CHECK_INT(lis_listen(&p, svc, "if/par", 0, L_HOLD, "P"), MB_OK);
  CHECK_INT(mb_runtime_in_flight(rt), 0);
  CHECK_INT(mb_send(svc, "if/par", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "if/par", msg_int(2), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "if/par", msg_int(3), NULL, NULL), MB_OK);
  CHECK_INT(stats_of(rt, "if/par").pending, 3);
  CHECK(mb_runtime_in_flight(rt) >= 3); /* queued */
  CHECK_INT(run(rt), 0);
  CHECK_INT(p.nheld, 3);
  CHECK_INT(mb_runtime_in_flight(rt), 3); /* running */
  for (int left = 2; lis_finish(&p, MB_OK, NULL); left--) CHECK_INT(mb_runtime_in_flight(rt), left);
  CHECK_INT(mb_runtime_in_flight(rt), 0);

  /* serial: one running, one queued */
  CHECK_INT(declare(rt, "if/ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis s;
  CHECK_INT(lis_listen(&s, svc, "if/ser", 0, L_HOLD, "S"), MB_OK);
  CHECK_INT(mb_send(svc, "if/ser", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "if/ser", msg_int(2), NULL, NULL), MB_OK);
  CHECK(mb_runtime_in_flight(rt) >= 2);
  CHECK_INT(run(rt), 0);
  CHECK_INT(s.nheld, 1);
  CHECK(mb_runtime_in_flight(rt) >= 2);
  lis_finish(&s, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(s.nheld, 1);
  CHECK(mb_runtime_in_flight(rt) >= 1);
  lis_finish(&s, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_runtime_in_flight(rt), 0);

  /* a blocked sender (max_queue 1, block) */
  CHECK_INT(declare(rt, "if/blk", MB_PARALLEL, 1, MB_FULL_BLOCK, 0), MB_OK);
  lis b;
  CHECK_INT(lis_listen(&b, svc, "if/blk", 0, L_OK, "B"), MB_OK);
  CHECK_INT(mb_send(svc, "if/blk", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "if/blk", msg_int(2), nop_send_cb, NULL), MB_PENDING);
  CHECK(mb_runtime_in_flight(rt) >= 2);
  CHECK_INT(run(rt), 0);
  CHECK_INT(b.calls, 2);
  CHECK_INT(mb_runtime_in_flight(rt), 0);

  /* a request: its delivery and the wait, then only the wait */
  reqres rr = {0};
  mb_request *r = NULL;
  CHECK_INT(mb_request_start(svc, "if/par", msg_int(7), 5.0, 0, req_cb, &rr, &r), MB_PENDING);
  CHECK(mb_runtime_in_flight(rt) >= 2);
  run_until(rt, &p.nheld);
  CHECK_INT(p.nheld, 1);
  CHECK_INT(mb_runtime_in_flight(rt), 2);
  lis_finish(&p, MB_OK, NULL);
  CHECK_INT(mb_runtime_in_flight(rt), 1);
  mb_request_cancel(r);
  CHECK_INT(mb_runtime_in_flight(rt), 0);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}


/* ==== Regressions: bugs a review found in mb_show.c, mb_request.c and mb_observe.c ==== */

/* Regression 1 (mb_show.c): a value mb_value_check accepts, 64 tables deep with a
 * scalar inside, shows as "<malformed value>": show_value() counts the depth
 * of every item, scalars included, so the innermost table's contents are
 * at depth 65. */
static void test_bug_show_depth_64(void) {
  mb_buf b = {0};
  enc_nested(&b, MB_MAX_DEPTH);
  CHECK_INT(mb_value_check(b.p, b.len), 0);
  const char *s = show(&b);
  CHECK(strcmp(s, "<malformed value>") != 0);
  CHECK(strstr(s, "{1}") != NULL);
  mb_buf_free(&b);
}

/* Regression 2 (mb_show.c): finite floats above 1e308 (up to DBL_MAX, 1.797e308)
 * show as math.huge: show_float tests v > 1e308 instead of isinf(v). */
static void test_bug_show_big_finite_float(void) {
  CHECK_STR(show_float_(1.5e308), "1.5e+308");
  CHECK(strtod(show_float_(1.7976931348623157e308), NULL) == 1.7976931348623157e308);
}

/* Regression 3 (mb_show.c): a control byte followed by a digit reads back as
 * another byte: "\x01" "2" shows as "\12" (a form feed in Lua). Lua's %q
 * writes "\0012" there. */
static void test_bug_show_escape_before_digit(void) {
  CHECK_STR(show_str_("\x01" "2", 2), "\"\\0012\"");
  CHECK_STR(show_str_("\t9", 2), "\"\\0099\"");
}

/* Regression 4 (mb_show.c): a key that is a Lua reserved word is shown bare
 * ({end=1}), which is not a Lua table constructor; it needs ["end"]=1. */
static void test_bug_show_reserved_word_key(void) {
  mb_buf b = {0};
  long t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "end", 3);
  mb_enc_int(&b, 1);
  mb_enc_str(&b, "nil", 3);
  mb_enc_int(&b, 2);
  mb_enc_table_end(&b, t, 0, 2);
  CHECK_STR(show(&b), "{[\"end\"] = 1, [\"nil\"] = 2}");
  mb_buf_free(&b);
}

/* Regression 5 (mb_request.c): a reply to a reply_to destination that does not
 * exist gives no rejected hop (mb_send and mb_request_start do give one):
 * mb_reply_id's "to ? mb_send_msg(...) : MB_ENODEST" misses
 * mb_obs_rejected. */
static void test_bug_trace_reply_to_missing(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "calc", 0);
  CHECK_INT(mb_dest_declare(rt, "calc", NULL), MB_OK);
  lis a;
  CHECK_INT(lis_listen(&a, svc, "calc", 0, L_REPLY, "A"), MB_OK);
  tracer tr = {0};
  mb_runtime_trace(rt, tracer_fn, &tr);
  CHECK_INT(mb_send(svc, "calc", msg_int_to(1, "nowhere"), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(a.reply_rc[0], MB_ENODEST);
  int rejected = 0;
  for (int i = 0; i < tr.n && i < 48; i++)
    if (tr.h[i].kind == MB_HOP_REJECTED && !strcmp(tr.h[i].dest, "nowhere") &&
        !strcmp(tr.h[i].error, "no_destination: no such destination"))
      rejected++;
  CHECK_INT(rejected, 1);
  mb_runtime_trace(rt, NULL, NULL);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Regression 6 (mb_observe.c): mb_runtime_in_flight overcounts. It adds
 * d->in_ready (a pump task queued: not a message) and, on a serial
 * destination, d->cur as well as its running delivery (one message, counted
 * twice). 3 queued messages count 4; one running + one queued on a serial
 * destination count 3. mbrun prints this number ("finishing the N in
 * flight"). */
static void test_bug_in_flight_exact(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "if", 0);
  CHECK_INT(mb_dest_declare(rt, "if/par", NULL), MB_OK);
  lis p;
  CHECK_INT(lis_listen(&p, svc, "if/par", 0, L_HOLD, "P"), MB_OK);
  for (int i = 1; i <= 3; i++) CHECK_INT(mb_send(svc, "if/par", msg_int(i), NULL, NULL), MB_OK);
  CHECK_INT(mb_runtime_in_flight(rt), 3); /* 3 queued; returns 4 */
  CHECK_INT(run(rt), 0);
  while (lis_finish(&p, MB_OK, NULL)) continue;
  CHECK_INT(declare(rt, "if/ser", MB_SERIAL, 0, MB_FULL_REJECT, 0), MB_OK);
  lis s;
  CHECK_INT(lis_listen(&s, svc, "if/ser", 0, L_HOLD, "S"), MB_OK);
  CHECK_INT(mb_send(svc, "if/ser", msg_int(1), NULL, NULL), MB_OK);
  CHECK_INT(mb_send(svc, "if/ser", msg_int(2), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(s.nheld, 1);
  CHECK_INT(mb_runtime_in_flight(rt), 2); /* 1 running + 1 queued; returns 3 */
  lis_finish(&s, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_runtime_in_flight(rt), 1); /* 1 running; returns 2 */
  lis_finish(&s, MB_OK, NULL);
  CHECK_INT(run(rt), 0);
  CHECK_INT(mb_runtime_in_flight(rt), 0);
  check_quiet(rt);
  mb_runtime_free(rt);
}

/* Issue 12, item 3 (SPEC 7, "a reply that cannot be delivered"): a
 * listener's reply to a message whose reply_to does not exist or has no
 * listeners used to vanish: the delivery counted `delivered`, no dead
 * letter. With mb_delivery_reply the delivery ends failed, with the reason
 * in the dead letter, whatever the listener then says. */
typedef struct dreply {
  mb_service *svc;
  int rc[8], n;
} dreply;

static void dreply_fn(void *ud, mb_delivery *d) {
  dreply *r = ud;
  int rc = mb_delivery_reply(d, msg_int(payload_int(mb_delivery_msg(d)) * 10), NULL, NULL);
  if (r->n < 8) r->rc[r->n++] = rc;
  mb_delivery_done(d, MB_OK, NULL);
}

static void dfail_fn(void *ud, mb_delivery *d) {
  (void)ud;
  mb_delivery_fail(d, "failed: learnt later");
  mb_delivery_fail(d, "failed: the second mark does not count");
  mb_delivery_done(d, MB_OK, NULL);
}

static int dl_has(const lis *dl, int i, const char *text) {
  size_t n = strlen(text);
  if (i >= dl->calls || !dl->cap[i]) return 0;
  for (size_t at = 0; at + n <= dl->caplen[i]; at++)
    if (memcmp(dl->cap[i] + at, text, n) == 0) return 1;
  return 0;
}

static void test_bug_reply_to_undeliverable(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  mb_service *svc = mb_service_new(rt, "rt", 0);
  CHECK_INT(mb_dest_declare(rt, "mb/dead-letters", NULL), MB_OK);
  lis dl, sink;
  CHECK_INT(lis_listen(&dl, svc, "mb/dead-letters", 0, L_CAPTURE, "DL"), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "calc", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "empty", NULL), MB_OK);
  CHECK_INT(mb_dest_declare(rt, "sink", NULL), MB_OK);
  CHECK_INT(lis_listen(&sink, svc, "sink", 0, L_CAPTURE, "S"), MB_OK);
  dreply r = {svc, {0}, 0};
  int err = 0;
  mb_listener *l = mb_listen(svc, "calc", 0, dreply_fn, NULL, &r, &err);
  CHECK(l != NULL);
  CHECK_INT(mb_send(svc, "calc", msg_int_to(1, "nowhere"), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r.rc[0], MB_ENODEST);
  mb_stats st = stats_of(rt, "calc");
  CHECK_INT(st.failed, 1); /* was delivered */
  CHECK_INT(st.delivered, 0);
  CHECK_INT(dl.calls, 1); /* was none */
  CHECK(dl_has(&dl, 0, "failed: reply to 'nowhere' not delivered: no_destination"));
  CHECK_INT(mb_send(svc, "calc", msg_int_to(2, "empty"), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r.rc[1], MB_ENOLISTENERS);
  CHECK_INT(stats_of(rt, "calc").failed, 2);
  CHECK(dl_has(&dl, 1, "failed: reply to 'empty' not delivered: no_listeners"));
  /* a reply_to that takes it: delivered, as before */
  CHECK_INT(mb_send(svc, "calc", msg_int_to(3, "sink"), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r.rc[2], MB_OK);
  CHECK_INT(sink.calls, 1);
  CHECK_INT(stats_of(rt, "calc").delivered, 1);
  /* no reply_to and nobody waiting: nothing to deliver, nothing failed */
  CHECK_INT(mb_send(svc, "calc", msg_int(4), NULL, NULL), MB_OK);
  CHECK_INT(run(rt), 0);
  CHECK_INT(r.rc[3], MB_ECLOSED);
  st = stats_of(rt, "calc");
  CHECK_INT(st.delivered, 2);
  CHECK_INT(st.failed, 2);
  CHECK_INT(st.deliveries, st.delivered + st.failed + st.dropped);
  CHECK_INT(dl.calls, 2);
  mb_listener_close(l);

  /* mb_delivery_fail: the first mark is the error; a waiting requester
   * gets it */
  CHECK_INT(mb_dest_declare(rt, "later", NULL), MB_OK);
  l = mb_listen(svc, "later", 0, dfail_fn, NULL, NULL, &err);
  CHECK(l != NULL);
  reqres rr = {0};
  mb_request *req;
  CHECK_INT(mb_request_start(svc, "later", msg_int(5), 5, 0, req_cb, &rr, &req), MB_PENDING);
  CHECK_INT(run(rt), 0);
  CHECK_INT(rr.calls, 1);
  CHECK_INT(rr.status[0], MB_EFAILED);
  CHECK_STR(rr.error[0], "failed: learnt later");
  CHECK_INT(stats_of(rt, "later").failed, 1);
  CHECK(dl_has(&dl, 2, "failed: learnt later"));
  mb_listener_close(l);
  lis_release(&dl);
  lis_release(&sink);
  check_quiet(rt);
  mb_runtime_free(rt);
}

int main(void) {
  RUN(test_value_roundtrip);
  RUN(test_done_soon);
  RUN(test_value_check_rejects);
  RUN(test_value_depth);
  RUN(test_value_paths);
  RUN(test_json_numbers);
  RUN(test_json_strings);
  RUN(test_json_tables);
  RUN(test_json_errors);
  RUN(test_dest_declare);
  RUN(test_dest_each_sorted);
  RUN(test_dest_many);
  RUN(test_parallel);
  RUN(test_parallel_concurrency);
  RUN(test_serial_order);
  RUN(test_serial_step_by_step);
  RUN(test_synchronous);
  RUN(test_groups);
  RUN(test_send_errors);
  RUN(test_block);
  RUN(test_remove_drains);
  RUN(test_listener_closed_by_removal);
  RUN(test_request_reply);
  RUN(test_request_timeout);
  RUN(test_request_timeout_two_groups);
  RUN(test_request_failed);
  RUN(test_request_failed_later);
  RUN(test_request_all);
  RUN(test_request_first_reply_wins);
  RUN(test_reply_to);
  RUN(test_request_synchronous);
  RUN(test_request_dropped);
  RUN(test_request_all_serial);
  RUN(test_request_queues);
  RUN(test_service_free_blocked_request);
  RUN(test_service_free_pending_sync_send);
  RUN(test_stats_invariant);
  RUN(test_dead_letters);
  RUN(test_dead_letters_no_loop);
  RUN(test_events);
  RUN(test_messages);
  RUN(test_message_json_in_listener);
  RUN(test_runtime_and_services);
  RUN(test_free_busy_runtime);
  RUN(test_show_scalars);
  RUN(test_show_tables);
  RUN(test_show_secrets);
  RUN(test_show_max);
  RUN(test_show_malformed);
  RUN(test_trace_hops);
  RUN(test_trace_message_made_before);
  RUN(test_trace_timeout);
  RUN(test_trace_reply);
  RUN(test_latency);
  RUN(test_graph);
  RUN(test_drain);
  RUN(test_in_flight);
  RUN(test_bug_show_depth_64);
  RUN(test_bug_show_big_finite_float);
  RUN(test_bug_show_escape_before_digit);
  RUN(test_bug_show_reserved_word_key);
  RUN(test_bug_trace_reply_to_missing);
  RUN(test_bug_in_flight_exact);
  RUN(test_bug_reply_to_undeliverable);
  return check_summary();
}
