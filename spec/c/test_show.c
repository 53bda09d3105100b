/*
 * test_show.c — values shown to people (mb_value_show, mb_show.c): scalars, tables, secret
 * words, the length bound, malformed input.
 */
#include "helpers.h" /* first: it selects POSIX */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
  /* ... in the one key order (numbers, strings bytewise, the rest) */
  CHECK_STR(show(&b), "{[-7] = false, [1.5] = true, [3] = \"x\", [\"\"] = 3, [\"1x\"] = 2, _ok9 = 6, "
                      "[\"a b\"] = 1, [\"dotted.key\"] = 7, [\"k\\\"q\"] = 4, [true] = 5}");
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
  CHECK_STR(show(&b), "{after = 4, [false] = 3, [nil] = 2, [{1, x = \"y\"}] = \"v\"}");
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
  CHECK_STR(s, "{Client_SECRET = \"********\", apiToken = \"********\", count = 3, "
               "[\"my token\"] = \"********\", nested = {PassWord = \"********\", host = \"db1\"}, "
               "password = \"********\", tokens = \"********\", user = \"ann\"}");
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

/* The one key order (mb_show_sort), the REPL's too (issue 13): the array
 * part as it is, then numbers by value (integers and floats together),
 * strings bytewise, the rest by type name; at every level, cut or not. */
static void test_show_key_order(void) {
  mb_buf b = {0};
  long t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "first", 5);
  mb_enc_str(&b, "b", 1); /* keys, each with its place as its value */
  mb_enc_int(&b, 9);
  mb_enc_str(&b, "ab", 2);
  mb_enc_int(&b, 8);
  mb_enc_str(&b, "a", 1);
  mb_enc_int(&b, 7);
  mb_enc_str(&b, "B", 1);
  mb_enc_int(&b, 6);
  mb_enc_float(&b, 2.5);
  mb_enc_int(&b, 5);
  mb_enc_int(&b, 2);
  mb_enc_int(&b, 4);
  mb_enc_float(&b, -1e300); /* below every integer */
  mb_enc_int(&b, 1);
  mb_enc_int(&b, INT64_MAX);
  mb_enc_int(&b, 10);
  mb_enc_float(&b, 0x1p63); /* above every integer */
  mb_enc_int(&b, 11);
  mb_enc_int(&b, INT64_MIN);
  mb_enc_int(&b, 2);
  mb_enc_float(&b, 1.5);
  mb_enc_int(&b, 3);
  mb_enc_bool(&b, 1);
  mb_enc_int(&b, 13);
  mb_enc_bool(&b, 0);
  mb_enc_int(&b, 12);
  mb_enc_table_end(&b, t, 1, 13);
  CHECK_STR(show(&b), "{\"first\", [-1e+300] = 1, [math.mininteger] = 2, [1.5] = 3, [2] = 4, [2.5] = 5, "
                      "[9223372036854775807] = 10, [9.2233720368547758e+18] = 11, B = 6, a = 7, ab = 8, "
                      "b = 9, [false] = 12, [true] = 13}");

  /* nested tables are ordered too, also once the output is cut */
  t = mb_enc_table_begin(&b);
  mb_enc_str(&b, "z", 1);
  long in = mb_enc_table_begin(&b);
  mb_enc_str(&b, "y", 1);
  mb_enc_int(&b, 2);
  mb_enc_str(&b, "x", 1);
  mb_enc_int(&b, 1);
  mb_enc_table_end(&b, in, 0, 2);
  mb_enc_str(&b, "a", 1);
  mb_enc_int(&b, 0);
  mb_enc_table_end(&b, t, 0, 2);
  mb_buf keep = {0};
  mb_buf_add(&keep, b.p, b.len);
  CHECK_STR(show(&b), "{a = 0, z = {x = 1, y = 2}}");
  mb_buf_add(&b, keep.p, keep.len);
  CHECK_STR(show_max(&b, 14), "{a = 0, z = {x...");
  mb_buf_free(&keep);

  /* what only the C API builds: a NaN key after the numbers, an integer
   * before an equal float */
  t = mb_enc_table_begin(&b);
  mb_enc_float(&b, NAN);
  mb_enc_int(&b, 3);
  mb_enc_float(&b, 1.0);
  mb_enc_int(&b, 2);
  mb_enc_int(&b, 1);
  mb_enc_int(&b, 1);
  mb_enc_str(&b, "s", 1);
  mb_enc_int(&b, 4);
  mb_enc_table_end(&b, t, 0, 4);
  CHECK_STR(show(&b), "{[1] = 1, [1.0] = 2, [0/0] = 3, s = 4}");

  /* mb_show_sort on its own: ties within a type, the caller's places kept */
  mb_show_key k[4] = {{.k = {.tag = MB_V_TABLE}, .type = "table", .tie = 2, .at = 0},
                      {.k = {.tag = MB_V_TABLE}, .type = "function", .tie = 9, .at = 1},
                      {.k = {.tag = MB_V_TABLE}, .type = "table", .tie = 1, .at = 2},
                      {.k = {.tag = MB_V_STR, .v.str = {"\0", 1}}, .at = 3}};
  mb_show_sort(k, 4);
  CHECK(k[0].at == 3 && k[1].at == 1 && k[2].at == 2 && k[3].at == 0);

  /* a count of pairs beyond what the bytes can hold is malformed, not an
   * allocation of that many */
  uint8_t huge[] = {MB_V_TABLE, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, MB_V_NIL, MB_V_NIL};
  check_malformed(huge, sizeof huge, __LINE__);
  mb_buf_free(&b);
}

/* ---- regressions: bugs a review found in mb_show.c ------------------------ */

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

void show_tests(void) {
  RUN(test_show_scalars);
  RUN(test_show_tables);
  RUN(test_show_secrets);
  RUN(test_show_max);
  RUN(test_show_malformed);
  RUN(test_show_key_order);
  RUN(test_bug_show_depth_64);
  RUN(test_bug_show_big_finite_float);
  RUN(test_bug_show_escape_before_digit);
  RUN(test_bug_show_reserved_word_key);
}
