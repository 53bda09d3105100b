/*
 * fuzz_value.c — the mb value encoding (mb_value.c, mbl_value.c), from the
 * first input byte:
 *  even: random Lua values built from the input (fuzz_lua.h), up to two
 *        levels past MB_MAX_DEPTH: mbL_encode accepts exactly those no
 *        deeper than MB_MAX_DEPTH, what it writes passes mb_value_check and
 *        decodes to an equal value, type-exact; the one-pass JSON encoder
 *        (mbL_json_encode) writes the same text and the same error as
 *        mb_json_encode of the encoded bytes, and that text decodes;
 *  odd:  the rest of the input as encoded bytes: mb_value_check and
 *        mbL_decode (in a protected call) never crash, and what decodes and
 *        encodes again decodes to the same value.
 * Both decode also through the string cache of a message's closure
 * (mbL_decode_cached, the listeners' decoder), which must give the same.
 */
#include <stdio.h>

#include "fuzz_lua.h"
#include "mbl_value.h"

static lua_State *L;

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "%s: %s\n", what, detail ? detail : "");
  abort();
}
static int cached_ref; /* decode_cached_raw with the upvalues of a message's closure */

static int decode_cached_raw(lua_State *L1) {
  mbL_decode_cached(L1, lua_touserdata(L1, 1), (size_t)lua_tointeger(L1, 2));
  return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushnil(L); /* upvalue 1, the module's state: not used by the decoder */
  mbL_push_keys(L);
  lua_pushcclosure(L, decode_cached_raw, 1 + MBL_NUPS);
  cached_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int decode_raw(lua_State *L1) {
  mbL_decode(L1, lua_touserdata(L1, 1), (size_t)lua_tointeger(L1, 2));
  return 1;
}

/* Pushes the value encoded in b (a protected call), decoded through the
 * string cache when cached; 0, or -1 with the error message pushed. */
static int decode_with(const uint8_t *p, size_t len, int cached) {
  if (cached)
    lua_rawgeti(L, LUA_REGISTRYINDEX, cached_ref);
  else
    lua_pushcfunction(L, decode_raw);
  lua_pushlightuserdata(L, (void *)p);
  lua_pushinteger(L, (lua_Integer)len);
  return lua_pcall(L, 2, 1, 0) == LUA_OK ? 0 : -1;
}

/* decode_with both ways: the same outcome, and the same error or an equal
 * value (pushed once; compared when it can be sent: a table key in
 * arbitrary bytes is a new table each time). */
static int decode(const uint8_t *p, size_t len) {
  int rc = decode_with(p, len, 0);
  int rc2 = decode_with(p, len, 1);
  if (rc != rc2) fail("the cached decoder disagrees", lua_tostring(L, rc ? -2 : -1));
  if (rc && strcmp(lua_tostring(L, -2), lua_tostring(L, -1)))
    fail("the cached decoder gives another error", lua_tostring(L, -1));
  if (!rc) {
    char err[2048];
    mb_buf b = {0};
    if (mbL_encode(L, -2, &b, (size_t)-1 / 2, "payload", err, sizeof err) == 0 &&
        !same(L, -2, -1))
      fail("the cached decoder gives another value", NULL);
    mb_buf_free(&b);
  }
  lua_pop(L, 1);
  return rc;
}


static void lua_values(input *in) {
  gen_info g = {0};
  gen_value(L, in, 0, MB_MAX_DEPTH + 2, &g);
  int v = lua_gettop(L);
  int depth = value_depth(L, v);
  char err[2048], jerr1[2048], jerr2[2048]; /* a path is up to 512 bytes */
  mb_buf b = {0}, j1 = {0}, j2 = {0};
  int rc = mbL_encode(L, v, &b, (size_t)-1 / 2, "payload", err, sizeof err);
  if (depth > MB_MAX_DEPTH) {
    if (!rc || !strstr(err, "nested deeper than")) fail("a too deep value was accepted", err);
    goto done;
  }
  if (rc) fail("a sendable value was refused", err);
  if (mb_value_check(b.p, b.len)) fail("mbL_encode wrote a value mb_value_check refuses", NULL);
  if (decode(b.p, b.len)) fail("decoding failed", lua_tostring(L, -1));
  if (!same(L, v, -1)) fail("the round trip changed the value", NULL);
  lua_pop(L, 1);
  int r1 = mbL_json_encode(L, v, &j1, "payload", jerr1, sizeof jerr1);
  int r2 = mb_json_encode(b.p, b.len, "payload", &j2, jerr2, sizeof jerr2);
  if (r1 != r2) fail("the JSON encoders disagree", r1 ? jerr1 : jerr2);
  if (r1) {
    if (strcmp(jerr1, jerr2)) {
      fprintf(stderr, "one-pass: %s\nfrom bytes: %s\n", jerr1, jerr2);
      abort();
    }
  } else {
    if (j1.len != j2.len || memcmp(j1.p, j2.p, j1.len)) {
      fprintf(stderr, "one-pass: %.*s\nfrom bytes: %.*s\n", (int)j1.len, j1.p, (int)j2.len, j2.p);
      abort();
    }
    mb_buf back = {0};
    if (mb_json_decode((const char *)j1.p, j1.len, MB_MAX_DEPTH, &back, err, sizeof err))
      fail("encoded JSON does not decode", err);
    mb_buf_free(&back);
  }
done:
  mb_buf_free(&b);
  mb_buf_free(&j1);
  mb_buf_free(&j2);
}

static void raw_bytes(const uint8_t *p, size_t len) {
  int checked = mb_value_check(p, len) == 0;
  mb_reader r = {p, p + len};
  (void)mb_skip(&r);
  if (decode(p, len)) {
    /* only a NaN key can fail a well-formed value (Lua cannot index it) */
    if (checked && !strstr(lua_tostring(L, -1), "NaN")) fail("a checked value fails", lua_tostring(L, -1));
    return;
  }
  if (!checked) return;
  char err[2048];
  mb_buf b = {0};
  if (mbL_encode(L, -1, &b, (size_t)-1 / 2, "payload", err, sizeof err) == 0) {
    if (decode(b.p, b.len)) fail("re-encoded value does not decode", lua_tostring(L, -1));
    if (!same(L, -2, -1)) fail("decode, encode, decode changed the value", NULL);
  }
  mb_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  input in = {data + 1, data + size};
  if (data[0] & 1)
    raw_bytes(data + 1, size - 1);
  else
    lua_values(&in);
  lua_settop(L, 0);
  static unsigned runs;
  if (++runs % 256 == 0) lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
