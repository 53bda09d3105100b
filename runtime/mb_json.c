/*
 * mb_json.c — JSON <-> mb value encoding, on yajl's streaming parser and
 * generator (Debian libyajl-dev). The parser hands numbers over as raw text,
 * so integers that fit in 64 bits stay integers and everything else becomes a
 * float; floats are written with the fewest digits that read back exactly,
 * always with a '.' or an exponent. Owns only transient yajl handles.
 * Tests: spec/c/test_core.c, spec/json_spec.lua.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "mb_value.h"

/* ---- decoding --------------------------------------------------------- */

typedef struct open_container {
  long at;
  uint32_t count;
  int is_object;
} open_container;

typedef struct decoder {
  mb_buf *out;
  int max_depth, depth;
  open_container stack[1024];
  const char *why; /* set when a callback stops the parse */
} decoder;

static void count_value(decoder *d) {
  if (d->depth > 0) d->stack[d->depth - 1].count++;
}

/* In an object the key was already written; count the pair on its value. */
static int value_done(decoder *d, int failed) {
  if (failed) {
    d->why = "out of memory";
    return 0;
  }
  count_value(d);
  return 1;
}

static int on_null(void *ctx) {
  decoder *d = ctx;
  return value_done(d, mb_enc_nil(d->out));
}

static int on_bool(void *ctx, int v) {
  decoder *d = ctx;
  return value_done(d, mb_enc_bool(d->out, v));
}

static int on_number(void *ctx, const char *s, size_t len) {
  decoder *d = ctx;
  char tmp[512];
  if (len >= sizeof tmp) {
    d->why = "number too long";
    return 0;
  }
  memcpy(tmp, s, len);
  tmp[len] = 0;
  if (!memchr(s, '.', len) && !memchr(s, 'e', len) && !memchr(s, 'E', len)) {
    errno = 0;
    char *end;
    long long v = strtoll(tmp, &end, 10);
    if (errno == 0 && *end == 0) return value_done(d, mb_enc_int(d->out, v));
  }
  return value_done(d, mb_enc_float(d->out, strtod(tmp, NULL)));
}

static int on_string(void *ctx, const unsigned char *s, size_t len) {
  decoder *d = ctx;
  return value_done(d, mb_enc_str(d->out, s, len));
}

static int open_table(decoder *d, int is_object) {
  if (d->depth >= d->max_depth) {
    d->why = "nested too deep";
    return 0;
  }
  long at = mb_enc_table_begin(d->out);
  if (at < 0) {
    d->why = "out of memory";
    return 0;
  }
  d->stack[d->depth].at = at;
  d->stack[d->depth].count = 0;
  d->stack[d->depth].is_object = is_object;
  d->depth++;
  return 1;
}

static int close_table(decoder *d) {
  open_container *c = &d->stack[--d->depth];
  if (c->is_object)
    mb_enc_table_end(d->out, c->at, 0, c->count);
  else
    mb_enc_table_end(d->out, c->at, c->count, 0);
  count_value(d);
  return 1;
}

static int on_start_map(void *ctx) { return open_table(ctx, 1); }
static int on_end_map(void *ctx) { return close_table(ctx); }
static int on_start_array(void *ctx) { return open_table(ctx, 0); }
static int on_end_array(void *ctx) { return close_table(ctx); }

static int on_map_key(void *ctx, const unsigned char *s, size_t len) {
  decoder *d = ctx;
  if (mb_enc_str(d->out, s, len)) {
    d->why = "out of memory";
    return 0;
  }
  return 1;
}

static const yajl_callbacks decode_callbacks = {
    on_null,      on_bool,    NULL,       NULL,           on_number,    on_string,
    on_start_map, on_map_key, on_end_map, on_start_array, on_end_array,
};

int mb_json_decode(const char *json, size_t len, int max_depth, mb_buf *out, char *err,
                   size_t errlen) {
  decoder d;
  d.out = out;
  d.depth = 0;
  d.why = NULL;
  d.max_depth = max_depth > 1024 ? 1024 : max_depth;
  size_t start = out->len;
  yajl_handle h = yajl_alloc(&decode_callbacks, NULL, &d);
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  yajl_config(h, yajl_dont_validate_strings, 1);
  yajl_status st = yajl_parse(h, (const unsigned char *)json, len);
  size_t at = yajl_get_bytes_consumed(h);
  if (st == yajl_status_ok) {
    st = yajl_complete_parse(h);
    if (st != yajl_status_ok) at = len;
  }
  if (st != yajl_status_ok) {
    if (d.why) {
      snprintf(err, errlen, "invalid JSON at byte %zu: %s", at, d.why);
    } else {
      unsigned char *msg = yajl_get_error(h, 0, (const unsigned char *)json, len);
      /* yajl's text reads "parse error: ..." or "lexical error: ...\n" */
      char *text = (char *)msg;
      size_t n = strcspn(text, "\n");
      while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\n')) n--;
      snprintf(err, errlen, "invalid JSON at byte %zu: %.*s", at, (int)n, text);
      yajl_free_error(h, msg);
    }
    yajl_free(h);
    out->len = start;
    return -1;
  }
  yajl_free(h);
  return 0;
}

/* ---- encoding --------------------------------------------------------- */

typedef struct encoder {
  yajl_gen g;
  mb_reader r;
  mb_path path;
  const char *why;
} encoder;

/* The shortest "%.Ng" that reads back as the same double. */
static int format_float(double v, char *buf, size_t cap) {
  int n = 0;
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(buf, cap, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  if (!strpbrk(buf, ".eEni")) {
    memcpy(buf + n, ".0", 3);
    n += 2;
  }
  return n;
}

static int encode_value(encoder *e, int depth);

static int gen_ok(encoder *e, yajl_gen_status st) {
  if (st == yajl_gen_status_ok) return 0;
  e->why = "cannot generate JSON";
  return -1;
}

static int encode_key(encoder *e, const mb_item *k) {
  char buf[64];
  int n;
  switch (k->tag) {
  case MB_V_STR:
    return gen_ok(e, yajl_gen_string(e->g, (const unsigned char *)k->v.str.s, k->v.str.len));
  case MB_V_INT:
    n = snprintf(buf, sizeof buf, "%lld", (long long)k->v.i);
    return gen_ok(e, yajl_gen_string(e->g, (const unsigned char *)buf, (size_t)n));
  case MB_V_FLOAT:
    e->why = "cannot encode a float key in JSON";
    return -1;
  case MB_V_TRUE:
  case MB_V_FALSE:
    e->why = "cannot encode a boolean key in JSON";
    return -1;
  default:
    e->why = "cannot encode this key in JSON";
    return -1;
  }
}

static void prepend_key(encoder *e, const mb_item *k) {
  if (k->tag == MB_V_STR)
    mb_path_prepend_strkey(&e->path, k->v.str.s, k->v.str.len);
  else if (k->tag == MB_V_INT)
    mb_path_prepend_intkey(&e->path, (long long)k->v.i);
  else if (k->tag == MB_V_FLOAT) {
    char seg[48];
    int n = snprintf(seg, sizeof seg, "[%.14g]", k->v.f);
    mb_path_prepend(&e->path, seg, (size_t)n);
  } else
    mb_path_prepend(&e->path, k->tag == MB_V_TRUE ? "[true]" : "[false]",
                    k->tag == MB_V_TRUE ? 6 : 7);
}

static int encode_table(encoder *e, const mb_item *t, int depth) {
  uint32_t narr = t->v.t.narr, nhash = t->v.t.nhash;
  if (depth >= 1024) {
    e->why = "nested too deep";
    return -1;
  }
  if (nhash == 0 && narr > 0) {
    if (gen_ok(e, yajl_gen_array_open(e->g))) return -1;
    for (uint32_t i = 0; i < narr; i++) {
      if (encode_value(e, depth + 1)) {
        mb_path_prepend_intkey(&e->path, (long long)i + 1);
        return -1;
      }
    }
    return gen_ok(e, yajl_gen_array_close(e->g));
  }
  if (gen_ok(e, yajl_gen_map_open(e->g))) return -1;
  for (uint32_t i = 0; i < narr; i++) {
    char buf[16];
    int n = snprintf(buf, sizeof buf, "%u", i + 1);
    const uint8_t *at = e->r.p;
    mb_item v;
    if (mb_read(&e->r, &v)) {
      e->why = "corrupt value";
      return -1;
    }
    if (v.tag == MB_V_NIL) continue; /* a hole: no key */
    e->r.p = at;
    if (gen_ok(e, yajl_gen_string(e->g, (const unsigned char *)buf, (size_t)n)) ||
        encode_value(e, depth + 1)) {
      mb_path_prepend_intkey(&e->path, (long long)i + 1);
      return -1;
    }
  }
  for (uint32_t i = 0; i < nhash; i++) {
    mb_item k;
    if (mb_read(&e->r, &k)) {
      e->why = "corrupt value";
      return -1;
    }
    if (k.tag == MB_V_TABLE) {
      e->why = "cannot encode a table key in JSON";
      return -1;
    }
    if (encode_key(e, &k) || encode_value(e, depth + 1)) {
      prepend_key(e, &k);
      return -1;
    }
  }
  return gen_ok(e, yajl_gen_map_close(e->g));
}

static int encode_value(encoder *e, int depth) {
  mb_item it;
  char buf[64];
  if (mb_read(&e->r, &it)) {
    e->why = "corrupt value";
    return -1;
  }
  switch (it.tag) {
  case MB_V_NIL:
    return gen_ok(e, yajl_gen_null(e->g));
  case MB_V_FALSE:
  case MB_V_TRUE:
    return gen_ok(e, yajl_gen_bool(e->g, it.tag == MB_V_TRUE));
  case MB_V_INT: {
    int n = snprintf(buf, sizeof buf, "%lld", (long long)it.v.i);
    return gen_ok(e, yajl_gen_number(e->g, buf, (size_t)n));
  }
  case MB_V_FLOAT: {
    if (!isfinite(it.v.f)) {
      e->why = isnan(it.v.f) ? "cannot encode NaN in JSON" : "cannot encode infinity in JSON";
      return -1;
    }
    int n = format_float(it.v.f, buf, sizeof buf);
    return gen_ok(e, yajl_gen_number(e->g, buf, (size_t)n));
  }
  case MB_V_STR:
    return gen_ok(e, yajl_gen_string(e->g, (const unsigned char *)it.v.str.s, it.v.str.len));
  case MB_V_TABLE:
    return encode_table(e, &it, depth);
  }
  e->why = "corrupt value";
  return -1;
}

int mb_json_encode(const void *p, size_t len, const char *root, mb_buf *out, char *err,
                   size_t errlen) {
  encoder e;
  e.r.p = p;
  e.r.end = (const uint8_t *)p + len;
  e.why = NULL;
  mb_path_init(&e.path);
  e.g = yajl_gen_alloc(NULL);
  if (!e.g) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  int rc = encode_value(&e, 0);
  if (rc == 0) {
    const unsigned char *text;
    size_t n;
    yajl_gen_get_buf(e.g, &text, &n);
    if (mb_buf_add(out, text, n)) {
      e.why = "out of memory";
      rc = -1;
    }
  }
  if (rc) snprintf(err, errlen, "%s%s: %s", root, e.path.buf, e.why ? e.why : "error");
  yajl_gen_free(e.g);
  return rc;
}
