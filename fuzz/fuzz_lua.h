/*
 * fuzz_lua.h — what the harnesses that embed Lua 5.4 share: a reader over
 * the fuzz input, a random Lua value built from it, and a type-exact deep
 * comparison. Header-only; each harness is one program (fuzz/README.md).
 */
#ifndef FUZZ_LUA_H
#define FUZZ_LUA_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mb_value.h"

typedef struct input {
  const uint8_t *p, *end;
} input;

static uint8_t in_byte(input *in) { return in->p < in->end ? *in->p++ : 0; }

static void in_bytes(input *in, void *out, size_t n) {
  memset(out, 0, n);
  size_t have = (size_t)(in->end - in->p);
  if (n > have) n = have;
  memcpy(out, in->p, n);
  in->p += n;
}

/* What a generated value holds, for the checks that depend on it. */
typedef struct gen_info {
  int depth;    /* table levels, the value itself being 1 when a table */
  int nan;      /* a NaN somewhere (NaN ~= NaN: no equality to check) */
  int secret;   /* a string key the printers mask */
  int strkeys;  /* a string key (the printers sort or bare-name them) */
  int tables;   /* tables built */
} gen_info;

/* A string from the input: mostly short, sometimes a Lua name or a number's
 * decimal form (to reach key collisions and bare names). */
static void gen_string(lua_State *L, input *in) {
  uint8_t how = in_byte(in);
  char buf[64];
  switch (how % 4) {
  case 0: { /* an integer's decimal form: "1", "-3" */
    int8_t v = (int8_t)in_byte(in);
    snprintf(buf, sizeof buf, "%d", v % 8);
    lua_pushstring(L, buf);
    return;
  }
  case 1: { /* a name */
    static const char *const names[] = {"a", "b", "id", "end", "_x1", "kind", "token", "é"};
    lua_pushstring(L, names[in_byte(in) % 8]);
    return;
  }
  default: {
    size_t n = in_byte(in) % 24;
    in_bytes(in, buf, n);
    lua_pushlstring(L, buf, n);
  }
  }
}

static void gen_number(lua_State *L, input *in) {
  uint8_t how = in_byte(in);
  switch (how % 6) {
  case 0: lua_pushinteger(L, (int8_t)in_byte(in)); return;
  case 1: lua_pushinteger(L, (lua_Integer)INT64_MIN + (in_byte(in) % 3)); return;
  case 2: lua_pushinteger(L, (lua_Integer)INT64_MAX - (in_byte(in) % 3)); return;
  case 3: {
    int64_t v;
    in_bytes(in, &v, 8);
    lua_pushinteger(L, (lua_Integer)v);
    return;
  }
  case 4: {
    static const double some[] = {0.0, -0.0, 1.0, -1.5, 0.1, 1e300, 5e-324, 1e15, 9007199254740993.0,
                                  1.0 / 0.0, -1.0 / 0.0, 2e-308};
    lua_pushnumber(L, some[in_byte(in) % 12]);
    return;
  }
  default: {
    double v;
    in_bytes(in, &v, 8);
    lua_pushnumber(L, v);
  }
  }
}

/* Pushes a random value, tables at most max_depth deep (and at least one
 * level more now and then, when max_depth allows it). */
static void gen_value(lua_State *L, input *in, int depth, int max_depth, gen_info *g);

static void gen_table(lua_State *L, input *in, int depth, int max_depth, gen_info *g) {
  luaL_checkstack(L, 8, "fuzz");
  lua_newtable(L);
  g->tables++;
  if (depth > g->depth) g->depth = depth;
  int n = in_byte(in) % 9;
  lua_Integer next = 1;
  for (int i = 0; i < n && in->p < in->end; i++) {
    uint8_t kind = in_byte(in) % 6;
    switch (kind) {
    case 0:
    case 1: lua_pushinteger(L, next++); break; /* the list part */
    case 2: lua_pushinteger(L, (int8_t)in_byte(in) % 8); break;
    case 3: gen_string(L, in); break;
    case 4: lua_pushboolean(L, in_byte(in) & 1); break;
    default: gen_number(L, in); break;
    }
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) &&
        lua_tonumber(L, -1) != lua_tonumber(L, -1)) {
      lua_pop(L, 1); /* a NaN key cannot be set */
      continue;
    }
    int keyt = lua_type(L, -1);
    if (keyt == LUA_TSTRING) {
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      g->strkeys = 1;
      if (mb_key_is_secret(s, len)) g->secret = 1;
    }
    /* tables go deeper more often than not, so the limit is reached */
    if ((in_byte(in) & 3) == 0 && depth < max_depth)
      gen_table(L, in, depth + 1, max_depth, g);
    else
      gen_value(L, in, depth, max_depth, g);
    lua_rawset(L, -3);
  }
}

static void gen_value(lua_State *L, input *in, int depth, int max_depth, gen_info *g) {
  luaL_checkstack(L, 8, "fuzz");
  uint8_t t = in_byte(in);
  switch (t % 6) {
  case 0: lua_pushboolean(L, t & 8); return;
  case 1:
  case 2:
    gen_number(L, in);
    if (!lua_isinteger(L, -1) && lua_tonumber(L, -1) != lua_tonumber(L, -1)) g->nan = 1;
    return;
  case 3: gen_string(L, in); return;
  default:
    if (depth < max_depth)
      gen_table(L, in, depth + 1, max_depth, g);
    else
      lua_pushinteger(L, depth);
  }
}

/* The table levels of the value at idx that are really there (a table put
 * under a key and then replaced is gone). */
static int value_depth(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 4, "fuzz");
  int d = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int c = value_depth(L, -1);
    if (c > d) d = c;
    lua_pop(L, 1);
  }
  return d + 1;
}

/* Type-exact equality of two acyclic values with scalar keys: integers and
 * floats apart, floats bit for bit (so -0.0 and 0.0 differ). */
static int same(lua_State *L, int a, int b) {
  a = lua_absindex(L, a);
  b = lua_absindex(L, b);
  int t = lua_type(L, a);
  if (t != lua_type(L, b)) return 0;
  switch (t) {
  case LUA_TNIL: return 1;
  case LUA_TBOOLEAN: return lua_toboolean(L, a) == lua_toboolean(L, b);
  case LUA_TNUMBER:
    if (lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
    if (lua_isinteger(L, a)) return lua_tointeger(L, a) == lua_tointeger(L, b);
    {
      double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
      if (x != x) return y != y;
      return memcmp(&x, &y, sizeof x) == 0;
    }
  case LUA_TSTRING: {
    size_t la, lb;
    const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
    return la == lb && memcmp(sa, sb, la) == 0;
  }
  case LUA_TTABLE: {
    luaL_checkstack(L, 6, "fuzz");
    size_t na = 0, nb = 0;
    lua_pushnil(L);
    while (lua_next(L, a)) {
      na++;
      lua_pushvalue(L, -2);
      lua_rawget(L, b);
      int ok = same(L, -2, -1);
      lua_pop(L, 2);
      if (!ok) {
        lua_pop(L, 1);
        return 0;
      }
    }
    lua_pushnil(L);
    while (lua_next(L, b)) {
      nb++;
      lua_pop(L, 1);
    }
    return na == nb;
  }
  default: return lua_rawequal(L, a, b);
  }
}

#endif
