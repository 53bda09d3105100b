/*
 * mb_show.c — encoded values shown to people on one line, the way Lua
 * writes table constructors: {id=1, kind="order", password="********"}.
 * Used by mbrun's --trace; secrets are masked, long output is cut.
 *
 * Owns nothing; appends to the caller's mb_buf. Tests: spec/c/test_core.c
 * (show_*), spec/trace_spec.lua.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_value.h"

#define MASK "\"********\""

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

static int show_string(shower *s, const char *p, size_t len) {
  char esc[8];
  int rc = put(s, "\"", 1);
  for (size_t i = 0; i < len && !rc && !s->cut; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      rc = put(s, esc, 2);
    } else if (c == '\n') {
      rc = put(s, "\\n", 2);
    } else if (c < 32 || c == 127) {
      snprintf(esc, sizeof esc, "\\%03d", c); /* unambiguous before a digit */
      rc = puts_(s, esc);
    } else {
      rc = put(s, (const char *)&p[i], 1);
    }
  }
  return rc || put(s, "\"", 1);
}

static int show_float(shower *s, double v) {
  char buf[40];
  if (v != v) return puts_(s, "0/0");
  if (isinf(v)) return puts_(s, v > 0 ? "math.huge" : "-math.huge");
  snprintf(buf, sizeof buf, "%.15g", v);
  if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
  if (!strpbrk(buf, ".en")) strcat(buf, ".0");
  return puts_(s, buf);
}

/* A key that can be written bare (key=...): a Lua name, not a keyword. */
static int is_name(const char *p, size_t len) {
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
static int show_int(shower *s, int64_t v) {
  char buf[24];
  if (v == INT64_MIN) return puts_(s, "math.mininteger");
  snprintf(buf, sizeof buf, "%lld", (long long)v);
  return puts_(s, buf);
}

static int show_item(shower *s, const mb_item *it, int depth);

static int show_value(shower *s, int depth) {
  mb_item it;
  if (mb_read(&s->r, &it)) return -1;
  return show_item(s, &it, depth);
}

static int show_table(shower *s, const mb_item *t, int depth) {
  int rc = put(s, "{", 1);
  for (uint32_t i = 0; i < t->v.t.narr && !rc; i++) {
    if (i) rc = put(s, ", ", 2);
    rc = rc || show_value(s, depth + 1);
  }
  for (uint32_t i = 0; i < t->v.t.nhash && !rc; i++) {
    mb_item k;
    if (i || t->v.t.narr) rc = put(s, ", ", 2);
    if (rc || mb_read(&s->r, &k)) return -1;
    if (k.tag == MB_V_STR && is_name(k.v.str.s, k.v.str.len)) {
      rc = put(s, k.v.str.s, k.v.str.len);
    } else {
      /* any key as Lua would write it: [1], ["a b"], [true], [{1, 2}];
       * a nil key (possible only through the C API) as [nil] */
      rc = put(s, "[", 1) || show_item(s, &k, depth + 1) || put(s, "]", 1);
    }
    rc = rc || put(s, "=", 1);
    if (k.tag == MB_V_STR && mb_key_is_secret(k.v.str.s, k.v.str.len))
      rc = rc || puts_(s, MASK) || mb_skip(&s->r);
    else
      rc = rc || show_value(s, depth + 1);
  }
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
