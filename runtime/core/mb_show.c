/*
 * mb_show.c — the one value printer: values shown to people the way Lua
 * writes table constructors, {id = 1, kind = "order", password = "********"},
 * with the one list of secret words (mb_key_is_secret) and the one key
 * order (mb_show_sort: the array part, then numbers, strings, the rest).
 * mb_value_show shows an encoded value on one line (mbrun's --trace; long
 * output is cut); the pieces (mb_show_str, mb_show_int, mb_show_float,
 * mb_show_is_name, mb_show_sort) serve the printer of Lua values the REPL
 * and `.listen` use (runtime/lua/mbl_show.c, mb._pretty), so that every
 * value looks the same wherever it is printed.
 *
 * Owns nothing; appends to the caller's mb_buf. Tests: spec/c/test_show.c
 * (show_*), spec/cli/trace_spec.lua.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_value.h"

#define MASK MB_SHOW_MASK

typedef struct shower {
  mb_reader r;
  mb_buf *out;
  size_t start, max;
  int cut; /* the output reached max: the rest is skipped */
  int oom;
} shower;

static int put(shower *s, const char *p, size_t n) {
  if (s->cut) return 0;
  if (s->out->len - s->start + n > s->max) {
    s->cut = 1;
    p = "...";
    n = 3;
  }
  if (mb_buf_add(s->out, p, n) == 0) return 0;
  s->oom = 1;
  return -1;
}

static int puts_(shower *s, const char *p) { return put(s, p, strlen(p)); }

/* Does a key name a secret? "password", "secret" or "token", in any case,
 * anywhere in it (user_password, apiToken, ...). */
int mb_key_is_secret(const char *k, size_t len) {
  static const char *const words[] = {"password", "secret", "token"};
  for (size_t w = 0; w < 3; w++) {
    size_t wl = strlen(words[w]);
    for (size_t i = 0; i + wl <= len; i++) {
      size_t j = 0;
      while (j < wl && tolower((unsigned char)k[i + j]) == words[w][j]) j++;
      if (j == wl) return 1;
    }
  }
  return 0;
}

/* The text of byte c inside a quoted Lua string: c itself, a backslash
 * escape for the quote, the backslash and a newline, and a three-digit
 * decimal escape for other control bytes (unambiguous before a digit).
 * Returns its length (1 to 4). */
static size_t esc_char(unsigned char c, char out[8]) {
  if (c == '"' || c == '\\') {
    out[0] = '\\';
    out[1] = (char)c;
    return 2;
  }
  if (c == '\n') {
    out[0] = '\\';
    out[1] = 'n';
    return 2;
  }
  if (c < 32 || c == 127) return (size_t)snprintf(out, 8, "\\%03d", c);
  out[0] = (char)c;
  return 1;
}

static int show_string(shower *s, const char *p, size_t len) {
  char esc[8];
  int rc = put(s, "\"", 1);
  for (size_t i = 0; i < len && !rc && !s->cut; i++) rc = put(s, esc, esc_char((unsigned char)p[i], esc));
  return rc || put(s, "\"", 1);
}

int mb_show_str(mb_buf *b, const char *p, size_t len) {
  char esc[8];
  if (mb_buf_add(b, "\"", 1)) return -1;
  for (size_t i = 0; i < len; i++)
    if (mb_buf_add(b, esc, esc_char((unsigned char)p[i], esc))) return -1;
  return mb_buf_add(b, "\"", 1);
}

/* v as Lua reads it back as the same float: a dot or exponent always
 * (3.0), math.huge, -math.huge, 0/0 for NaN. */
static void fmt_float(double v, char buf[40]) {
  if (v != v) {
    strcpy(buf, "0/0");
  } else if (isinf(v)) {
    strcpy(buf, v > 0 ? "math.huge" : "-math.huge");
  } else {
    snprintf(buf, 40, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, 40, "%.17g", v);
    if (!strpbrk(buf, ".en")) strcat(buf, ".0");
  }
}

static int show_float(shower *s, double v) {
  char buf[40];
  fmt_float(v, buf);
  return puts_(s, buf);
}

int mb_show_float(mb_buf *b, double v) {
  char buf[40];
  fmt_float(v, buf);
  return mb_buf_add(b, buf, strlen(buf));
}

/* A key that can be written bare (key=...): a Lua name, not a keyword. */
int mb_show_is_name(const char *p, size_t len) {
  static const char *const keywords[] = {
      "and",  "break", "do",  "else", "elseif", "end",    "false", "for",  "function", "goto", "if",
      "in",   "local", "nil", "not",  "or",     "repeat", "return", "then", "true",     "until",
      "while", NULL};
  if (!len || isdigit((unsigned char)p[0])) return 0;
  for (size_t i = 0; i < len; i++)
    if (!isalnum((unsigned char)p[i]) && p[i] != '_') return 0;
  for (size_t k = 0; keywords[k]; k++)
    if (strlen(keywords[k]) == len && !memcmp(keywords[k], p, len)) return 0;
  return 1;
}

/* An integer as Lua reads it back as one: math.mininteger has no numeral
 * (-9223372036854775808 reads as a float). */
static void fmt_int(int64_t v, char buf[24]) {
  if (v == INT64_MIN)
    strcpy(buf, "math.mininteger");
  else
    snprintf(buf, 24, "%lld", (long long)v);
}

static int show_int(shower *s, int64_t v) {
  char buf[24];
  fmt_int(v, buf);
  return puts_(s, buf);
}

int mb_show_int(mb_buf *b, int64_t v) {
  char buf[24];
  fmt_int(v, buf);
  return mb_buf_add(b, buf, strlen(buf));
}

/* ---- the key order ------------------------------------------------------ */

static int rank(const mb_item *k) {
  return k->tag == MB_V_INT || k->tag == MB_V_FLOAT ? 0 : k->tag == MB_V_STR ? 1 : 2;
}

/* An integer against a float, exactly (as Lua's `<` does): -1, 0 or 1; a
 * NaN is above every number. */
static int cmp_int_float(int64_t i, double f) {
  if (f != f || f >= 0x1p63) return -1;
  if (f < -0x1p63) return 1;
  double fl = floor(f); /* within int64 now */
  int64_t fi = (int64_t)fl;
  if (i != fi) return i < fi ? -1 : 1;
  return f > fl ? -1 : 0;
}

static int cmp_num(const mb_item *a, const mb_item *b) {
  if (a->tag == MB_V_INT && b->tag == MB_V_INT) return (a->v.i > b->v.i) - (a->v.i < b->v.i);
  if (a->tag == MB_V_FLOAT && b->tag == MB_V_FLOAT) {
    double x = a->v.f, y = b->v.f;
    if (x != x || y != y) return (x != x) - (y != y);
    return (x > y) - (x < y);
  }
  /* an integer before an equal float (two such keys: the C API only) */
  int c = a->tag == MB_V_INT ? cmp_int_float(a->v.i, b->v.f) : -cmp_int_float(b->v.i, a->v.f);
  return c ? c : a->tag == MB_V_INT ? -1 : 1;
}

static int cmp_key(const void *pa, const void *pb) {
  const mb_show_key *a = pa, *b = pb;
  int ra = rank(&a->k), rb = rank(&b->k);
  if (ra != rb) return ra < rb ? -1 : 1;
  if (ra == 0) return cmp_num(&a->k, &b->k);
  if (ra == 1) {
    size_t la = a->k.v.str.len, lb = b->k.v.str.len;
    int c = memcmp(a->k.v.str.s, b->k.v.str.s, la < lb ? la : lb);
    return c ? c : (la > lb) - (la < lb);
  }
  int c = strcmp(a->type, b->type);
  return c ? c : (a->tie > b->tie) - (a->tie < b->tie);
}

void mb_show_sort(mb_show_key *keys, size_t n) {
  if (n > 1) qsort(keys, n, sizeof *keys, cmp_key);
}

/* ---- encoded values ----------------------------------------------------- */

static int show_item(shower *s, const mb_item *it, int depth);

static int show_value(shower *s, int depth) {
  mb_item it;
  if (mb_read(&s->r, &it)) return -1;
  return show_item(s, &it, depth);
}

/* The nhash pairs at s->r, as mb_show_sort orders their keys: where each key
 * starts (at, from base), its value right after it. The reader ends past
 * the last pair. NULL with s->oom set when out of memory, or NULL when the
 * pairs are malformed. */
static mb_show_key *pairs_in_order(shower *s, uint32_t nhash, const uint8_t *base) {
  /* every pair takes at least two bytes: a count beyond that is bad */
  if ((uint64_t)nhash * 2 > (uint64_t)(s->r.end - s->r.p)) return NULL;
  mb_show_key *keys = malloc((size_t)nhash * sizeof *keys);
  if (!keys) {
    s->oom = 1;
    return NULL;
  }
  for (uint32_t i = 0; i < nhash; i++) {
    mb_show_key *k = &keys[i];
    const uint8_t *at = s->r.p;
    mb_reader kr = s->r;
    if (mb_read(&kr, &k->k) || mb_skip(&s->r) || mb_skip(&s->r)) {
      free(keys);
      return NULL;
    }
    k->at = (size_t)(at - base);
    k->type = k->k.tag == MB_V_NIL ? "nil" : k->k.tag == MB_V_TABLE ? "table" : "boolean";
    k->tie = k->k.tag == MB_V_TABLE ? k->at : k->k.tag == MB_V_TRUE;
  }
  /* once the output is cut, the order no longer shows */
  if (!s->cut) mb_show_sort(keys, nhash);
  return keys;
}

static int show_pair(shower *s, int depth) {
  mb_item k;
  if (mb_read(&s->r, &k)) return -1;
  int rc;
  if (k.tag == MB_V_STR && mb_show_is_name(k.v.str.s, k.v.str.len)) {
    rc = put(s, k.v.str.s, k.v.str.len);
  } else {
    /* any key as Lua would write it: [1], ["a b"], [true], [{1, 2}];
     * a nil key (possible only through the C API) as [nil] */
    rc = put(s, "[", 1) || show_item(s, &k, depth + 1) || put(s, "]", 1);
  }
  rc = rc || put(s, MB_SHOW_EQ, strlen(MB_SHOW_EQ));
  if (k.tag == MB_V_STR && mb_key_is_secret(k.v.str.s, k.v.str.len))
    return rc || puts_(s, MASK) || mb_skip(&s->r);
  return rc || show_value(s, depth + 1);
}

static int show_table(shower *s, const mb_item *t, int depth) {
  int rc = put(s, "{", 1);
  for (uint32_t i = 0; i < t->v.t.narr && !rc; i++) {
    if (i) rc = put(s, ", ", 2);
    rc = rc || show_value(s, depth + 1);
  }
  if (rc || !t->v.t.nhash) return rc || put(s, "}", 1);
  const uint8_t *base = s->r.p;
  mb_show_key *keys = pairs_in_order(s, t->v.t.nhash, base);
  if (!keys) return -1;
  const uint8_t *end = s->r.p;
  for (uint32_t i = 0; i < t->v.t.nhash && !rc; i++) {
    if (i || t->v.t.narr) rc = put(s, ", ", 2);
    s->r.p = base + keys[i].at;
    rc = rc || show_pair(s, depth);
  }
  free(keys);
  s->r.p = end;
  return rc || put(s, "}", 1);
}

static int show_item(shower *s, const mb_item *it, int depth) {
  /* the 64th table's items sit at level 65: only tables count */
  if (it->tag == MB_V_TABLE && depth > MB_MAX_DEPTH) return -1;
  switch (it->tag) {
  case MB_V_NIL: return puts_(s, "nil");
  case MB_V_FALSE: return puts_(s, "false");
  case MB_V_TRUE: return puts_(s, "true");
  case MB_V_INT: return show_int(s, it->v.i);
  case MB_V_FLOAT: return show_float(s, it->v.f);
  case MB_V_STR: return show_string(s, it->v.str.s, it->v.str.len);
  case MB_V_TABLE: return show_table(s, it, depth);
  }
  return -1;
}

int mb_value_show(const void *p, size_t len, mb_buf *out, size_t max) {
  shower s = {{p, (const uint8_t *)p + len}, out, out->len, max ? max : (size_t)-1, 0, 0};
  size_t at = out->len;
  if (show_value(&s, 1) == 0) return 0;
  out->len = at;
  if (s.oom) return -1;
  /* malformed: say so rather than show half of it */
  return mb_buf_add(out, "<malformed value>", 17) ? -1 : 0;
}
