/*
 * fuzz_json.c — JSON decode (mb_json.c): any text either fails with
 * "invalid JSON at byte N: ..." or decodes to a well-formed value that
 * encodes to JSON which decodes to the same bytes (type-exact: integers stay
 * integers, floats floats) and encodes to the same text again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_value.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[2048]; /* a path is up to 512 bytes */
  mb_buf v1 = {0}, t1 = {0}, v2 = {0}, t2 = {0};
  /* the depth a message payload may have, and mb.json.decode's */
  int depth = size && (data[0] & 1) ? 1000 : MB_MAX_DEPTH;
  if (mb_json_decode((const char *)data, size, depth, &v1, err, sizeof err)) {
    if (strncmp(err, "invalid JSON at byte ", 21) && strcmp(err, "out of memory")) {
      fprintf(stderr, "unexpected decode error: %s\n", err);
      abort();
    }
    if (v1.len) abort(); /* the buffer is left as it was */
    goto done;
  }
  if (depth == MB_MAX_DEPTH && mb_value_check(v1.p, v1.len)) {
    fprintf(stderr, "decoded value fails mb_value_check\n");
    abort();
  }
  if (mb_json_encode(v1.p, v1.len, "value", &t1, err, sizeof err)) {
    /* only what yajl's generator once refused: nesting past 127 */
    if (!strstr(err, "cannot generate JSON")) {
      fprintf(stderr, "decoded value does not encode: %s\n", err);
      abort();
    }
    goto done;
  }
  if (mb_json_decode((const char *)t1.p, t1.len, 1000, &v2, err, sizeof err)) {
    fprintf(stderr, "encoded text does not decode: %s\n%.*s\n", err, (int)t1.len, t1.p);
    abort();
  }
  if (v1.len != v2.len || memcmp(v1.p, v2.p, v1.len)) {
    fprintf(stderr, "round trip changed the value: %.*s\n", (int)t1.len, t1.p);
    abort();
  }
  if (mb_json_encode(v2.p, v2.len, "value", &t2, err, sizeof err) || t1.len != t2.len ||
      memcmp(t1.p, t2.p, t1.len)) {
    fprintf(stderr, "second encoding differs\n");
    abort();
  }
done:
  mb_buf_free(&v1);
  mb_buf_free(&t1);
  mb_buf_free(&v2);
  mb_buf_free(&t2);
  return 0;
}
