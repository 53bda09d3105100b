/*
 * fuzz_pretty.c — the one value printer on random Lua values (fuzz_lua.h):
 * as the REPL uses it (lua/mb/pretty.lua, a thin name for the C printer
 * mb._pretty of runtime/lua/mbl_show.c), and as the trace uses it
 * (mb_show.c on the value as mbL_encode writes it). Neither may raise or
 * crash. Where they promise to print data as Lua reads it back (pretty:
 * tables of booleans, numbers and strings no deeper than its depth, 10;
 * show: any sendable value, printed without a bound; both: no key naming a
 * secret, which they mask), `load` of the text, with `math` in scope,
 * gives an equal value, type-exact. And they are one printer: on one line,
 * a sendable value no deeper than 10 levels prints as the very text
 * mb_value_show gives it (the same keys in the same order, the same
 * masks).
 */
#include <math.h>
#include <stdio.h>

#include "fuzz_lua.h"
#include "mbl_value.h"

#ifndef MB_SRCDIR
#define MB_SRCDIR "."
#endif

static lua_State *L;

/* The part of the `mb` module pretty.lua uses: the printer's functions. */
static int open_mb_show(lua_State *S) {
  lua_newtable(S);
  luaL_setfuncs(S, mbL_show_funcs, 0);
  return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open_mb_show);
  lua_setfield(L, -2, "mb");
  lua_pop(L, 1);
  if (luaL_dofile(L, MB_SRCDIR "/lua/mb/pretty.lua")) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
  lua_getfield(L, -1, "pretty");
  lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.pretty");
  lua_settop(L, 0);
  return 0;
}

/* Loads text as an expression with only math in scope; pushes its value. */
static void read_back(const char *what, const char *s, size_t len) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "return ");
  luaL_addlstring(&b, s, len);
  luaL_pushresult(&b);
  size_t n;
  const char *chunk = lua_tolstring(L, -1, &n);
  if (luaL_loadbufferx(L, chunk, n, "=printed", "t")) {
    fprintf(stderr, "%s printed what Lua cannot read: %s\n%.*s\n", what, lua_tostring(L, -1),
            (int)len, s);
    abort();
  }
  lua_newtable(L);
  lua_getglobal(L, "math");
  lua_setfield(L, -2, "math");
  lua_setupvalue(L, -2, 1);
  if (lua_pcall(L, 0, 1, 0)) {
    fprintf(stderr, "%s: reading back raised %s\n%.*s\n", what, lua_tostring(L, -1), (int)len, s);
    abort();
  }
  lua_remove(L, -2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  input in = {data + 1, data + size};
  gen_info g = {0};
  int max_depth = data[0] & 1 ? 12 : MB_MAX_DEPTH;
  gen_value(L, &in, 0, max_depth, &g);
  int v = lua_gettop(L);
  int depth = value_depth(L, v);

  /* pretty, on one line or one item a line */
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.pretty");
  lua_pushvalue(L, v);
  lua_createtable(L, 0, 1);
  if (data[0] & 2) {
    lua_pushnumber(L, HUGE_VAL);
    lua_setfield(L, -2, "width");
  }
  if (lua_pcall(L, 2, 1, 0)) {
    fprintf(stderr, "pretty raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  int pretty_at = lua_gettop(L), one_line = (data[0] & 2) != 0;
  if (!g.secret && depth <= 10) {
    read_back("pretty", s, len);
    if (!same(L, v, -1)) {
      fprintf(stderr, "pretty's text reads back as another value:\n%.*s\n", (int)len, s);
      abort();
    }
    lua_pop(L, 1);
  }

  /* the trace printer, on the value as it travels */
  char err[2048];
  mb_buf b = {0}, out = {0};
  if (mbL_encode(L, v, &b, (size_t)-1 / 2, "payload", err, sizeof err) == 0) {
    if (mb_value_show(b.p, b.len, &out, 0)) abort();
    if (!g.secret) {
      read_back("mb_value_show", (const char *)out.p, out.len);
      if (!same(L, v, -1)) {
        fprintf(stderr, "mb_value_show's text reads back as another value:\n%.*s\n", (int)out.len,
                out.p);
        abort();
      }
    }
    if (one_line && depth <= 10) {
      s = lua_tolstring(L, pretty_at, &len);
      if (len != out.len || memcmp(s, out.p, len)) {
        fprintf(stderr, "the two printers differ:\npretty: %.*s\nshow:   %.*s\n", (int)len, s,
                (int)out.len, out.p);
        abort();
      }
    }
  } else if (depth <= MB_MAX_DEPTH) {
    fprintf(stderr, "a sendable value was refused: %s\n", err);
    abort();
  }
  mb_buf_free(&b);
  mb_buf_free(&out);
  lua_settop(L, 0);
  static unsigned runs;
  if (++runs % 256 == 0) lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
