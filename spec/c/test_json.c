/*
 * test_json.c — JSON in and out: numbers, strings, tables, error positions.
 */
#include "helpers.h" /* first: it selects POSIX */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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

void json_tests(void) {
  RUN(test_json_numbers);
  RUN(test_json_strings);
  RUN(test_json_tables);
  RUN(test_json_errors);
}
