/*
 * test_values.c — the value encoding (mb_value.h): writers, readers, mb_value_check, depth, paths.
 */
#include "helpers.h" /* first: it selects POSIX */

#include <stdint.h>
#include <string.h>

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

void values_tests(void) {
  RUN(test_value_roundtrip);
  RUN(test_value_check_rejects);
  RUN(test_value_depth);
  RUN(test_value_paths);
}
