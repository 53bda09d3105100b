/*
 * mb_value.c — mb_buf and the writers and reader of the mb value encoding
 * (format in mb_value.h). Owns nothing beyond the buffers it is given.
 * Tests: spec/c/test_values.c.
 */
#include "mb_value.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

void mb_buf_free(mb_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

int mb_buf_grow(mb_buf *b, size_t n) {
  if (b->cap - b->len >= n) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < n) {
    if (cap > SIZE_MAX / 2) return -1;
    cap *= 2;
  }
  uint8_t *p = realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

int mb_buf_add(mb_buf *b, const void *p, size_t n) {
  if (mb_buf_reserve(b, n)) return -1;
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
  return 0;
}

static inline int put_tag(mb_buf *b, int tag) {
  if (mb_buf_reserve(b, 1)) return -1;
  b->p[b->len++] = (uint8_t)tag;
  return 0;
}

int mb_enc_nil(mb_buf *b) { return put_tag(b, MB_V_NIL); }
int mb_enc_bool(mb_buf *b, int v) { return put_tag(b, v ? MB_V_TRUE : MB_V_FALSE); }

int mb_enc_int(mb_buf *b, int64_t v) {
  if (mb_buf_reserve(b, 9)) return -1;
  b->p[b->len] = MB_V_INT;
  memcpy(b->p + b->len + 1, &v, 8);
  b->len += 9;
  return 0;
}

int mb_enc_float(mb_buf *b, double v) {
  if (mb_buf_reserve(b, 9)) return -1;
  b->p[b->len] = MB_V_FLOAT;
  memcpy(b->p + b->len + 1, &v, 8);
  b->len += 9;
  return 0;
}

int mb_enc_str(mb_buf *b, const void *s, size_t len) {
  if (len > UINT32_MAX || mb_buf_reserve(b, 5 + len)) return -1;
  uint32_t n = (uint32_t)len;
  b->p[b->len] = MB_V_STR;
  memcpy(b->p + b->len + 1, &n, 4);
  if (len) memcpy(b->p + b->len + 5, s, len);
  b->len += 5 + len;
  return 0;
}

long mb_enc_table_begin(mb_buf *b) {
  if (mb_buf_reserve(b, 9)) return -1;
  long at = (long)b->len;
  b->p[b->len] = MB_V_TABLE;
  memset(b->p + b->len + 1, 0, 8);
  b->len += 9;
  return at;
}

void mb_enc_table_end(mb_buf *b, long at, uint32_t narr, uint32_t nhash) {
  memcpy(b->p + at + 1, &narr, 4);
  memcpy(b->p + at + 5, &nhash, 4);
}

int mb_read(mb_reader *r, mb_item *it) {
  if (r->p >= r->end) return -1;
  it->tag = *r->p++;
  size_t left = (size_t)(r->end - r->p);
  switch (it->tag) {
  case MB_V_NIL:
  case MB_V_FALSE:
  case MB_V_TRUE:
    return 0;
  case MB_V_INT:
    if (left < 8) return -1;
    memcpy(&it->v.i, r->p, 8);
    r->p += 8;
    return 0;
  case MB_V_FLOAT:
    if (left < 8) return -1;
    memcpy(&it->v.f, r->p, 8);
    r->p += 8;
    return 0;
  case MB_V_STR: {
    uint32_t n;
    if (left < 4) return -1;
    memcpy(&n, r->p, 4);
    if (left - 4 < n) return -1;
    it->v.str.s = (const char *)r->p + 4;
    it->v.str.len = n;
    r->p += 4 + (size_t)n;
    return 0;
  }
  case MB_V_TABLE:
    if (left < 8) return -1;
    memcpy(&it->v.t.narr, r->p, 4);
    memcpy(&it->v.t.nhash, r->p + 4, 4);
    r->p += 8;
    return 0;
  default:
    return -1;
  }
}

static int skip_depth(mb_reader *r, int depth) {
  mb_item it;
  if (mb_read(r, &it)) return -1;
  if (it.tag != MB_V_TABLE) return 0;
  if (depth >= MB_MAX_DEPTH) return -1;
  uint64_t n = (uint64_t)it.v.t.narr + 2 * (uint64_t)it.v.t.nhash;
  /* every value takes at least one byte: a count beyond what is left is bad */
  if (n > (uint64_t)(r->end - r->p)) return -1;
  for (uint64_t i = 0; i < n; i++)
    if (skip_depth(r, depth + 1)) return -1;
  return 0;
}

int mb_skip(mb_reader *r) { return skip_depth(r, 0); }

int mb_value_check(const void *p, size_t len) {
  mb_reader r = {p, (const uint8_t *)p + len};
  if (skip_depth(&r, 0)) return -1;
  return r.p == r.end ? 0 : -1;
}

void mb_path_init(mb_path *p) { p->buf[0] = 0; }

void mb_path_prepend(mb_path *p, const char *seg, size_t len) {
  size_t old = strlen(p->buf);
  if (len + old + 1 > sizeof p->buf) return; /* too long: keep the inner part */
  memmove(p->buf + len, p->buf, old + 1);
  memcpy(p->buf, seg, len);
}

static int is_ident(const char *s, size_t len) {
  if (len == 0 || len > 64 || (s[0] >= '0' && s[0] <= '9')) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  return 1;
}

/* ["odd key"]: the first 40 bytes, with '"', '\\' and control bytes
 * escaped as Lua writes them (a NUL byte as \0, not the end of the key). */
void mb_path_prepend_strkey(mb_path *p, const char *s, size_t len) {
  char seg[8 + 40 * 4];
  size_t n = 0;
  if (is_ident(s, len)) {
    seg[n++] = '.';
    memcpy(seg + n, s, len);
    mb_path_prepend(p, seg, n + len);
    return;
  }
  seg[n++] = '[';
  seg[n++] = '"';
  for (size_t i = 0; i < len && i < 40; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      seg[n++] = '\\';
      seg[n++] = (char)c;
    } else if (c < 32 || c == 127) {
      /* three digits: a digit after it cannot join the escape */
      n += (size_t)snprintf(seg + n, 5, "\\%03u", c);
    } else {
      seg[n++] = (char)c;
    }
  }
  if (len > 40) {
    memcpy(seg + n, "...", 3);
    n += 3;
  }
  seg[n++] = '"';
  seg[n++] = ']';
  mb_path_prepend(p, seg, n);
}

void mb_path_prepend_intkey(mb_path *p, long long v) {
  char seg[32];
  int n = snprintf(seg, sizeof seg, "[%lld]", v);
  mb_path_prepend(p, seg, (size_t)n);
}
