/*
 * mb_json.c — JSON <-> mb value encoding. Decoding runs on yajl's streaming
 * parser (Debian libyajl-dev), which hands numbers over as raw text, so
 * integers that fit in 64 bits stay integers and everything else becomes a
 * float. Encoding writes the text itself, with the writers the Lua binding's
 * one-pass encoder (mbl_value.c) shares, byte for byte what yajl's generator
 * wrote before: floats with the fewest digits that read back exactly, always
 * with a '.' or an exponent. Owns only transient yajl parser handles.
 * Tests: spec/c/test_json.c, spec/api/json_spec.lua.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
  yajl_handle h;
  const char *text; /* the JSON text being parsed, len bytes */
  size_t len;
  const char *why; /* set when a callback stops the parse */
  long why_at;     /* where what why names starts, or -1: where yajl stopped */
  char whybuf[160];
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

/* Numbers: integers that fit in 64 bits stay integers, the rest become
 * doubles; one beyond the double range (1e400) is an error, not infinity,
 * which no encoder could write back (and a send would be accepted that no
 * format = "json" listener could receive). */
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
  double v = strtod(tmp, NULL);
  if (isinf(v)) {
    /* the token lies in the text, or (when it ends the text) in yajl's
     * buffer: then it is the text's last bytes */
    if (s >= d->text && s < d->text + d->len)
      d->why_at = (long)(s - d->text);
    else
      d->why_at = (long)(d->len >= len ? d->len - len : 0);
    snprintf(d->whybuf, sizeof d->whybuf,
             "number %.*s%s is out of range (a JSON number must be within +-1.8e308)",
             (int)(len > 40 ? 40 : len), s, len > 40 ? "..." : "");
    d->why = d->whybuf;
    return 0;
  }
  return value_done(d, mb_enc_float(d->out, v));
}

static int hex4(const char *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v = v * 16 + (c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c - 'A' + 10);
  }
  return v;
}

static size_t put_utf8(uint8_t *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (uint8_t)(0xC0 | cp >> 6);
    o[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (uint8_t)(0xE0 | cp >> 12);
    o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (uint8_t)(0xF0 | cp >> 18);
  o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

/* The escapes of a string token's raw text (yajl checked them), written to
 * o, which has room for n bytes (the text never grows). A \uD800-\uDBFF
 * escape followed by a \uDC00-\uDFFF one is that one code point; any other
 * surrogate escape is U+FFFD, and what follows it is kept (SPEC 7, JSON
 * text). yajl's own decoding swallowed the next character and wrote '?'.
 * Returns the length written. */
static size_t unescape(const char *r, size_t n, uint8_t *o) {
  size_t i = 0, w = 0;
  while (i < n) {
    if (r[i] != '\\' || i + 1 >= n) {
      o[w++] = (uint8_t)r[i++];
      continue;
    }
    char c = r[i + 1];
    i += 2;
    switch (c) {
    case 'b': o[w++] = '\b'; break;
    case 'f': o[w++] = '\f'; break;
    case 'n': o[w++] = '\n'; break;
    case 'r': o[w++] = '\r'; break;
    case 't': o[w++] = '\t'; break;
    case 'u': {
      if (i + 4 > n) return w; /* not after yajl's check */
      unsigned cp = (unsigned)hex4(r + i);
      i += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 <= n && r[i] == '\\' && r[i + 1] == 'u') {
        unsigned lo = (unsigned)hex4(r + i + 2);
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          i += 6;
        }
      }
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
      w += put_utf8(o + w, cp);
      break;
    }
    default: o[w++] = (uint8_t)c; /* '"', '\\', '/' */
    }
  }
  return w;
}

/* A string or key yajl has decoded to s/len. When the token has escapes,
 * it is decoded again from its raw text: the token ends just before where
 * yajl has read to, and starts at the first quote before that which no
 * backslash escapes. */
static int put_string(decoder *d, const unsigned char *s, size_t len) {
  size_t end = yajl_get_bytes_consumed(d->h);
  const char *t = d->text;
  if (end >= 2 && end <= d->len && t[end - 1] == '"' &&
      !((const char *)s >= t && (const char *)s < t + d->len)) {
    size_t q = end - 1;
    while (q > 0) {
      q--;
      if (t[q] != '"') continue;
      size_t bs = 0;
      while (bs < q && t[q - 1 - bs] == '\\') bs++;
      if (bs % 2 == 0) break;
    }
    if (t[q] == '"' && q < end - 1) {
      const char *raw = t + q + 1;
      size_t n = end - 1 - (q + 1);
      mb_buf *b = d->out;
      if (n > UINT32_MAX || mb_buf_reserve(b, 5 + n)) return -1;
      uint8_t *p = b->p + b->len;
      uint32_t w = (uint32_t)unescape(raw, n, p + 5);
      p[0] = MB_V_STR;
      memcpy(p + 1, &w, 4);
      b->len += 5 + w;
      return 0;
    }
  }
  return mb_enc_str(d->out, s, len);
}

static int on_string(void *ctx, const unsigned char *s, size_t len) {
  decoder *d = ctx;
  return value_done(d, put_string(d, s, len));
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
  if (put_string(d, s, len)) {
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
  d.why_at = -1;
  d.text = json;
  d.len = len;
  d.max_depth = max_depth > 1024 ? 1024 : max_depth;
  size_t start = out->len;
  yajl_handle h = yajl_alloc(&decode_callbacks, NULL, &d);
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  d.h = h;
  yajl_config(h, yajl_dont_validate_strings, 1);
  yajl_status st = yajl_parse(h, (const unsigned char *)json, len);
  size_t at = yajl_get_bytes_consumed(h);
  if (st == yajl_status_ok) {
    st = yajl_complete_parse(h);
    if (st != yajl_status_ok) at = len;
  }
  if (st != yajl_status_ok) {
    if (d.why) {
      snprintf(err, errlen, "invalid JSON at byte %zu: %s", d.why_at >= 0 ? (size_t)d.why_at : at,
               d.why);
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

/* ---- text writers ------------------------------------------------------- */

/* What yajl's generator wrote for each byte of a string (yajl_string_encode,
 * solidus not escaped): 0 as is, 'u' as \u00XX, else a backslash and that
 * letter. Bytes from 0x7f up, UTF-8 or not, go out as they are. */
static const char str_escape[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    0,   0,   '"', 0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   '\\',
};

int mb_json_put_str(mb_buf *b, const char *s, size_t len) {
  /* room for the plain case; each escape makes room for the rest again */
  if (mb_buf_reserve(b, len + 2)) return -1;
  uint8_t *p = b->p + b->len;
  *p++ = '"';
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    size_t run = i;
    while (run < len && !str_escape[u[run]]) run++;
    memcpy(p, u + i, run - i);
    p += run - i;
    if (run == len) break;
    b->len = (size_t)(p - b->p);
    if (mb_buf_reserve(b, 6 + (len - run - 1) + 1)) return -1;
    p = b->p + b->len;
    char c = str_escape[u[run]];
    *p++ = '\\';
    if (c == 'u') {
      static const char hex[] = "0123456789ABCDEF";
      *p++ = 'u';
      *p++ = '0';
      *p++ = '0';
      *p++ = hex[u[run] >> 4];
      *p++ = hex[u[run] & 15];
    } else {
      *p++ = c;
    }
    i = run + 1;
  }
  *p++ = '"';
  b->len = (size_t)(p - b->p);
  return 0;
}

/* The decimal digits of v, written backwards ending at end; returns the start. */
static char *int_digits(int64_t v, char *end) {
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    *--end = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--end = '-';
  return end;
}

int mb_json_put_int(mb_buf *b, int64_t v, int quoted) {
  char tmp[24];
  char *s = int_digits(v, tmp + sizeof tmp);
  size_t n = (size_t)(tmp + sizeof tmp - s);
  if (mb_buf_reserve(b, n + 2)) return -1;
  uint8_t *p = b->p + b->len;
  if (quoted) *p++ = '"';
  memcpy(p, s, n);
  p += n;
  if (quoted) *p++ = '"';
  b->len = (size_t)(p - b->p);
  return 0;
}

static const double tens[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,
                              1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19};

/* The common case of format_float without printf: v > 0 that reads back
 * from m / 10^d for an integer m < 10^15 and v in [1e-4, 1e15). Such a
 * decimal is within half an ulp of v, closer than the step between 15-digit
 * decimals there, so it is what "%.15g" prints (fixed notation in that
 * range, trailing zeros dropped), and it reads back. The division checks it:
 * m and 10^d are exact doubles, and the quotient is rounded once, as strtod
 * rounds. Returns the length written to buf, or 0 when v is not such a case. */
static int short_decimal(double v, char *buf) {
  if (!(v >= 1e-4 && v < 1e15)) return 0;
  for (int d = 0; d < (int)(sizeof tens / sizeof tens[0]); d++) {
    double scaled = v * tens[d];
    if (scaled >= 1e15) return 0;
    uint64_t m = (uint64_t)(scaled + 0.5);
    if ((double)m / tens[d] != v) continue;
    char tmp[24], *end = tmp + sizeof tmp;
    for (; d > 0 && m % 10 == 0; d--) m /= 10;
    const char *p = int_digits((int64_t)m, end);
    int digits = (int)(end - p), n = 0;
    if (d == 0) {
      memcpy(buf, p, (size_t)digits);
      memcpy(buf + digits, ".0", 2);
      return digits + 2;
    }
    if (digits > d) { /* 12.75 */
      memcpy(buf, p, (size_t)(digits - d));
      n = digits - d;
      buf[n++] = '.';
      memcpy(buf + n, p + digits - d, (size_t)d);
      return n + d;
    }
    buf[n++] = '0'; /* 0.0125 */
    buf[n++] = '.';
    for (int z = digits; z < d; z++) buf[n++] = '0';
    memcpy(buf + n, p, (size_t)digits);
    return n + digits;
  }
  return 0;
}

/* The shortest "%.Ng" that reads back as the same double. */
static int format_float(double v, char *buf, size_t cap) {
  if (v == 0) {
    int neg = signbit(v) != 0;
    memcpy(buf, &"-0.0"[!neg], 4);
    return 3 + neg;
  }
  int n = short_decimal(v < 0 ? -v : v, buf + (v < 0));
  if (n) {
    if (v < 0) buf[0] = '-';
    return n + (v < 0);
  }
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

int mb_json_put_float(mb_buf *b, double v) {
  char buf[64];
  int n = format_float(v, buf, sizeof buf);
  return mb_buf_add(b, buf, (size_t)n);
}

/* ---- encoding --------------------------------------------------------- */

typedef struct encoder {
  mb_buf *out;
  mb_reader r;
  mb_path path;
  const char *why;
  char whybuf[192];
} encoder;

static int encode_value(encoder *e, int depth);

static int put(encoder *e, const char *s, size_t n) {
  if (mb_buf_add(e->out, s, n) == 0) return 0;
  e->why = "out of memory";
  return -1;
}

static int put_ok(encoder *e, int rc) {
  if (rc == 0) return 0;
  e->why = "out of memory";
  return -1;
}

static int encode_key(encoder *e, const mb_item *k) {
  switch (k->tag) {
  case MB_V_STR:
    return put_ok(e, mb_json_put_str(e->out, k->v.str.s, k->v.str.len));
  case MB_V_INT:
    return put_ok(e, mb_json_put_int(e->out, k->v.i, 1));
  case MB_V_FLOAT:
    e->why = "cannot encode a float key in JSON";
    return -1;
  case MB_V_TRUE:
  case MB_V_FALSE:
    e->why = "cannot encode a boolean key in JSON";
    return -1;
  case MB_V_NIL:
    e->why = "cannot encode a nil key in JSON";
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
  } else if (k->tag == MB_V_NIL) /* only through the C API */
    mb_path_prepend(&e->path, "[nil]", 5);
  else
    mb_path_prepend(&e->path, k->tag == MB_V_TRUE ? "[true]" : "[false]",
                    k->tag == MB_V_TRUE ? 6 : 7);
}

int mb_json_int_key(const char *s, size_t len, int64_t *n) {
  size_t i = len && s[0] == '-';
  if (len == i || len - i > 19 || s[i] < '0' || s[i] > '9' || (s[i] == '0' && (len > i + 1 || i)))
    return 0;
  uint64_t u = 0;
  for (size_t j = i; j < len; j++) {
    if (s[j] < '0' || s[j] > '9') return 0;
    u = u * 10 + (uint64_t)(s[j] - '0'); /* at most 19 digits: no overflow */
  }
  if (u > (uint64_t)INT64_MAX + (i ? 1 : 0)) return 0;
  *n = i ? (int64_t)(0 - u) : (int64_t)u;
  return 1;
}

void mb_json_collision(char *why, size_t cap, int64_t n) {
  snprintf(why, cap,
           "cannot encode the keys %lld and \"%lld\" in one JSON object (both are written as "
           "\"%lld\")",
           (long long)n, (long long)n, (long long)n);
}

/* A growable list of integers, on the stack while it is short. */
typedef struct ints {
  int64_t *p;
  size_t n, cap;
  int64_t local[16];
} ints;

static void ints_init(ints *v) {
  v->p = v->local;
  v->n = 0;
  v->cap = sizeof v->local / sizeof v->local[0];
}

static void ints_free(ints *v) {
  if (v->p != v->local) free(v->p);
}

static int ints_push(ints *v, int64_t x) {
  if (v->n == v->cap) {
    size_t cap = v->cap * 2;
    int64_t *p = malloc(cap * sizeof *p);
    if (!p) return -1;
    memcpy(p, v->p, v->n * sizeof *p);
    ints_free(v);
    v->p = p;
    v->cap = cap;
  }
  v->p[v->n++] = x;
  return 0;
}

static int cmp_int64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int ints_has(const ints *v, int64_t x) {
  return v->n && bsearch(&x, v->p, v->n, sizeof x, cmp_int64) != NULL;
}

/* The keys of one object being written, to find a string key that reads as
 * an integer key of the same object: the holes of its array part and its
 * other integer keys, and the string keys that read as integers. */
typedef struct keyset {
  uint32_t narr;
  ints holes, ikeys, skeys;
} keyset;

/* 0, or -1 with e->why and the path set when two keys collide. */
static int check_keys(encoder *e, keyset *ks) {
  if (!ks->skeys.n) return 0;
  qsort(ks->ikeys.p, ks->ikeys.n, sizeof(int64_t), cmp_int64); /* holes come sorted */
  for (size_t i = 0; i < ks->skeys.n; i++) {
    int64_t n = ks->skeys.p[i];
    if ((n >= 1 && n <= (int64_t)ks->narr && !ints_has(&ks->holes, n)) || ints_has(&ks->ikeys, n)) {
      char seg[32];
      mb_json_collision(e->whybuf, sizeof e->whybuf, n);
      e->why = e->whybuf;
      int len = snprintf(seg, sizeof seg, "[\"%lld\"]", (long long)n);
      mb_path_prepend(&e->path, seg, (size_t)len);
      return -1;
    }
  }
  return 0;
}

static int encode_object(encoder *e, const mb_item *t, int depth, keyset *ks) {
  uint32_t narr = t->v.t.narr, nhash = t->v.t.nhash;
  if (put(e, "{", 1)) return -1;
  int first = 1;
  for (uint32_t i = 0; i < narr; i++) {
    const uint8_t *at = e->r.p;
    mb_item v;
    if (mb_read(&e->r, &v)) {
      e->why = "corrupt value";
      return -1;
    }
    if (v.tag == MB_V_NIL) { /* a hole: no key */
      if (ints_push(&ks->holes, (int64_t)i + 1)) return put_ok(e, -1);
      continue;
    }
    e->r.p = at;
    if ((!first && put(e, ",", 1)) || put_ok(e, mb_json_put_int(e->out, (int64_t)i + 1, 1)) ||
        put(e, ":", 1) || encode_value(e, depth + 1)) {
      mb_path_prepend_intkey(&e->path, (long long)i + 1);
      return -1;
    }
    first = 0;
  }
  for (uint32_t i = 0; i < nhash; i++) {
    mb_item k;
    int64_t n;
    if (mb_read(&e->r, &k)) {
      e->why = "corrupt value";
      return -1;
    }
    if (k.tag == MB_V_TABLE) {
      e->why = "cannot encode a table key in JSON";
      return -1;
    }
    if ((k.tag == MB_V_INT && ints_push(&ks->ikeys, k.v.i)) ||
        (k.tag == MB_V_STR && mb_json_int_key(k.v.str.s, k.v.str.len, &n) &&
         ints_push(&ks->skeys, n)))
      return put_ok(e, -1);
    if ((!first && put(e, ",", 1)) || encode_key(e, &k) || put(e, ":", 1) ||
        encode_value(e, depth + 1)) {
      prepend_key(e, &k);
      return -1;
    }
    first = 0;
  }
  return check_keys(e, ks) || put(e, "}", 1);
}

static int encode_table(encoder *e, const mb_item *t, int depth) {
  uint32_t narr = t->v.t.narr, nhash = t->v.t.nhash;
  /* the limit of the yajl generator this once was (its 128th open container
   * failed); values from Lua never come near it (MB_MAX_DEPTH) */
  if (depth >= 127) {
    e->why = "cannot generate JSON";
    return -1;
  }
  if (nhash == 0 && narr > 0) {
    if (put(e, "[", 1)) return -1;
    for (uint32_t i = 0; i < narr; i++) {
      if ((i && put(e, ",", 1)) || encode_value(e, depth + 1)) {
        mb_path_prepend_intkey(&e->path, (long long)i + 1);
        return -1;
      }
    }
    return put(e, "]", 1);
  }
  keyset ks;
  ks.narr = narr;
  ints_init(&ks.holes);
  ints_init(&ks.ikeys);
  ints_init(&ks.skeys);
  int rc = encode_object(e, t, depth, &ks);
  ints_free(&ks.holes);
  ints_free(&ks.ikeys);
  ints_free(&ks.skeys);
  return rc;
}

static int encode_value(encoder *e, int depth) {
  mb_item it;
  if (mb_read(&e->r, &it)) {
    e->why = "corrupt value";
    return -1;
  }
  switch (it.tag) {
  case MB_V_NIL:
    return put(e, "null", 4);
  case MB_V_FALSE:
    return put(e, "false", 5);
  case MB_V_TRUE:
    return put(e, "true", 4);
  case MB_V_INT:
    return put_ok(e, mb_json_put_int(e->out, it.v.i, 0));
  case MB_V_FLOAT:
    if (!isfinite(it.v.f)) {
      e->why = mb_json_float_problem(it.v.f);
      return -1;
    }
    return put_ok(e, mb_json_put_float(e->out, it.v.f));
  case MB_V_STR:
    return put_ok(e, mb_json_put_str(e->out, it.v.str.s, it.v.str.len));
  case MB_V_TABLE:
    return encode_table(e, &it, depth);
  }
  e->why = "corrupt value";
  return -1;
}

const char *mb_json_float_problem(double v) {
  if (isnan(v)) return "cannot encode NaN in JSON";
  if (isinf(v)) return "cannot encode infinity in JSON";
  return NULL;
}

int mb_json_encode(const void *p, size_t len, const char *root, mb_buf *out, char *err,
                   size_t errlen) {
  encoder e;
  e.out = out;
  e.r.p = p;
  e.r.end = (const uint8_t *)p + len;
  e.why = NULL;
  mb_path_init(&e.path);
  size_t start = out->len;
  if (encode_value(&e, 0) == 0) return 0;
  out->len = start;
  snprintf(err, errlen, "%s%s: %s", root, e.path.buf, e.why ? e.why : "error");
  return -1;
}
