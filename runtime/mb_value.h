/*
 * mb_value.h — the "mb value" encoding: how payloads and message values
 * travel through the core without belonging to any Lua state.
 *
 * A value is a tag byte followed by its data (little-endian host order; the
 * encoding never leaves the process):
 *   MB_V_NIL, MB_V_FALSE, MB_V_TRUE          no data
 *   MB_V_INT   int64                         MB_V_FLOAT  double
 *   MB_V_STR   u32 length, bytes             (binary-safe)
 *   MB_V_TABLE u32 narr, u32 nhash, narr values (keys 1..narr), then nhash
 *              key/value pairs
 * Tables nest up to MB_MAX_DEPTH levels (the outermost table is depth 1).
 *
 * Also here: mb_buf, the growable byte buffer the writers append to, and the
 * JSON conversions (mb_json.c): yajl's parser, and JSON text writers shared
 * with the Lua binding.
 *
 * Tests: spec/c/test_values.c, spec/c/test_json.c, spec/api/json_spec.lua, spec/api/values_spec.lua.
 */
#ifndef MB_VALUE_H
#define MB_VALUE_H

#include <stddef.h>
#include <stdint.h>

#define MB_MAX_DEPTH 64

enum { MB_V_NIL = 0, MB_V_FALSE, MB_V_TRUE, MB_V_INT, MB_V_FLOAT, MB_V_STR, MB_V_TABLE };

typedef struct mb_buf {
  uint8_t *p;
  size_t len, cap;
} mb_buf;

/* Buffers start zeroed ({0}); mb_buf_free releases the memory. */
void mb_buf_free(mb_buf *b);
/* Makes room for n more bytes; returns 0, or -1 when out of memory. */
int mb_buf_grow(mb_buf *b, size_t n);
int mb_buf_add(mb_buf *b, const void *p, size_t n);

static inline int mb_buf_reserve(mb_buf *b, size_t n) {
  return (b->cap - b->len >= n) ? 0 : mb_buf_grow(b, n);
}

/* Writers: append one value. Return 0, or -1 when out of memory. */
int mb_enc_nil(mb_buf *b);
int mb_enc_bool(mb_buf *b, int v);
int mb_enc_int(mb_buf *b, int64_t v);
int mb_enc_float(mb_buf *b, double v);
int mb_enc_str(mb_buf *b, const void *s, size_t len);
/* A table: mb_enc_table_begin, then narr values, then nhash key/value pairs,
 * then mb_enc_table_end with the counts and the offset begin returned. */
long mb_enc_table_begin(mb_buf *b);
void mb_enc_table_end(mb_buf *b, long at, uint32_t narr, uint32_t nhash);

/* One decoded item. For MB_V_STR, s/len point into the encoded bytes; for
 * MB_V_TABLE, narr/nhash give the counts of what follows. */
typedef struct mb_item {
  int tag;
  union {
    int64_t i;
    double f;
    struct {
      const char *s;
      size_t len;
    } str;
    struct {
      uint32_t narr, nhash;
    } t;
  } v;
} mb_item;

typedef struct mb_reader {
  const uint8_t *p, *end;
} mb_reader;

/* Reads the next item header; for a table, its contents follow. Returns 0,
 * or -1 on truncated or unknown data. */
int mb_read(mb_reader *r, mb_item *it);
/* Skips one whole value (a table with its contents). */
int mb_skip(mb_reader *r);

/* Checks that [p, p+len) holds exactly one well-formed value no deeper than
 * MB_MAX_DEPTH. Returns 0 or -1. */
int mb_value_check(const void *p, size_t len);

/* Error paths ("payload.items[3]"): a failing nested value writes its reason,
 * and each enclosing level prepends its key on the way out. */
typedef struct mb_path {
  char buf[512];
} mb_path;
void mb_path_init(mb_path *p);
void mb_path_prepend(mb_path *p, const char *seg, size_t len);
/* Prepends the segment for a string key (".name" or ["odd key"]). */
void mb_path_prepend_strkey(mb_path *p, const char *s, size_t len);
/* Prepends "[n]" for an integer key. */
void mb_path_prepend_intkey(mb_path *p, long long n);

/* JSON text -> encoded value appended to out. max_depth bounds nesting.
 * On error returns -1 and writes "invalid JSON at byte N: ..." into err. */
int mb_json_decode(const char *json, size_t len, int max_depth, mb_buf *out, char *err,
                   size_t errlen);

/* Encoded value -> JSON text appended to out. root names the value in error
 * messages ("payload[2]: cannot encode a boolean key in JSON"). Returns 0 or
 * -1 with err set. */
int mb_json_encode(const void *p, size_t len, const char *root, mb_buf *out, char *err,
                   size_t errlen);

/* The JSON text writers both encoders share (mb_json_encode here, and the
 * Lua binding's one-pass mbL_json_encode), so the two write the same text.
 * Each appends to b and returns 0, or -1 when out of memory.
 * mb_json_put_str: s quoted, with '"', '\\' and bytes below 0x20 escaped
 * (\n, \t... or \u00XX); other bytes as they are, valid UTF-8 or not.
 * mb_json_put_int: v in decimal, within quotes when quoted (an object key).
 * mb_json_put_float: a finite v with the fewest digits that read back
 * exactly, always with a '.' or an exponent ("3.0", "1e+300"). */
int mb_json_put_str(mb_buf *b, const char *s, size_t len);
int mb_json_put_int(mb_buf *b, int64_t v, int quoted);
int mb_json_put_float(mb_buf *b, double v);
/* 1 when the string key s would be written as the same JSON object key as
 * an integer key (the decimal form: "12", "-3"; not "012", "+1", "-0"),
 * that integer in *n. Such a key beside that integer key in one table
 * cannot be encoded: mb_json_collision writes the reason. */
int mb_json_int_key(const char *s, size_t len, int64_t *n);
void mb_json_collision(char *why, size_t cap, int64_t n);
/* Why v cannot be written as JSON ("cannot encode NaN in JSON"), or NULL
 * when it is finite. */
const char *mb_json_float_problem(double v);

/* mb_show.c, the one value printer: the value on one line for people, as
 * a Lua constructor ({id = 1, kind = "order"}), appended to out, keys in the
 * printers' one order (mb_show_sort, below). Values
 * under a key containing "password", "secret" or "token" (any case) show as
 * "********". Output past max bytes (0: no bound) is cut with "...". A
 * malformed value shows as <malformed value>. Returns 0, or -1 when out of
 * memory. */
int mb_value_show(const void *p, size_t len, mb_buf *out, size_t max);
/* 1 when a key names a secret, as above: the one list of secret words. */
int mb_key_is_secret(const char *k, size_t len);
/* The printer's pieces, for printers of other values (the REPL's): each
 * appends to b the text mb_value_show gives that scalar, and returns 0, or
 * -1 when out of memory. A string as a Lua literal on one line; an integer
 * (math.mininteger for the one without a numeral); a float that reads back
 * as the same float (3.0, math.huge, 0/0). */
int mb_show_str(mb_buf *b, const char *s, size_t len);
int mb_show_int(mb_buf *b, int64_t v);
int mb_show_float(mb_buf *b, double v);
/* 1 when a string key is shown bare (a Lua name, not a keyword). */
int mb_show_is_name(const char *k, size_t len);

/* The printers' one key order: the array part (keys 1..n) comes first, as it
 * is; mb_show_sort orders the other keys: numbers ascending (integers and
 * floats together, by value; an integer before an equal float, NaN last),
 * then strings bytewise, then any other key by its type name ("boolean",
 * "nil", "table", ...) and, within a type, by tie (false before true;
 * tables by where they are). */
typedef struct mb_show_key {
  mb_item k;        /* tag MB_V_INT, MB_V_FLOAT or MB_V_STR; any other tag: */
  const char *type; /* the key's type name, */
  uintptr_t tie;    /* and its place within the type */
  size_t at;        /* the caller's: where to find the key again */
} mb_show_key;
void mb_show_sort(mb_show_key *keys, size_t n);
/* What stands for a masked value, and between a key and its value. */
#define MB_SHOW_MASK "\"********\""
#define MB_SHOW_EQ " = "

#endif
