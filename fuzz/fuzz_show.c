/*
 * fuzz_show.c — the trace printer (mb_show.c) on arbitrary bytes: never
 * reads out of bounds, never recurses without bound, bounds its output
 * (max bytes plus the "..." that ends a cut), and shows exactly the values
 * mb_value_check accepts (any other as "<malformed value>"). The JSON
 * encoder (mb_json_encode) gets the same bytes and must fail cleanly on
 * malformed ones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_value.h"

#define MALFORMED "<malformed value>"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t max = data[0] < 128 ? 0 : (size_t)(data[0] - 127); /* 0: no bound */
  data++, size--;
  mb_buf out = {0};
  if (mb_value_show(data, size, &out, max)) abort(); /* only out of memory */
  int malformed = out.len == strlen(MALFORMED) && !memcmp(out.p, MALFORMED, out.len);
  int checked = mb_value_check(data, size) == 0;
  if (checked && malformed) {
    fprintf(stderr, "a well-formed value shows as malformed\n");
    abort();
  }
  /* the printer reads one value; bytes after it are not its concern */
  if (max && !malformed && out.len > max + 3) {
    fprintf(stderr, "output %zu bytes over the bound %zu\n", out.len, max);
    abort();
  }
  if (memchr(out.p, '\n', out.len) || memchr(out.p, 0, out.len)) {
    fprintf(stderr, "output is not one printable line\n");
    abort();
  }
  mb_buf json = {0};
  char err[2048]; /* a path is up to 512 bytes */
  if (mb_json_encode(data, size, "payload", &json, err, sizeof err) && json.len) abort();
  mb_buf_free(&json);
  mb_buf_free(&out);
  return 0;
}
