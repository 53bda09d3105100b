/*
 * mbl_show.c — the one value printer, for Lua values: mb._pretty lays out
 * any Lua value as Lua-like text for the REPL, its `.listen` and
 * lua/mb/pretty.lua, with mb_show.c's pieces (scalars, bare or bracketed
 * keys, the one list of secret words, the one key order), so that a value
 * prints as `mbrun --trace` shows it. What only Lua values have is added
 * here: cycles, width, depth, functions and userdata.
 *
 *   mb._pretty({b = 2, a = {1, 2.0}, password = "x"})
 *   --> {a = {1, 2.0}, b = 2, password = "********"}
 *
 * Scalars print as Lua literals: strings quoted on one line (control bytes
 * escaped: \n, else three decimal digits, NUL too), integers and floats
 * apart (3 and 3.0; math.mininteger, which has no numeral, as
 * `math.mininteger`; math.huge, 0/0). Keys are in the one order of both
 * printers (mb_show_sort): the list part 1..n first, then the other numbers
 * ascending, then strings bytewise, then any other key by type name (and
 * within a type: false before true, tables and functions by address). A
 * table prints on one line when that fits in `width` columns (72), else one
 * key per line, indented by two spaces. A table met again inside itself
 * prints as <cycle>; below `depth` levels (10, at most MB_MAX_DEPTH) a
 * table prints as {...}. A value under a string key that contains
 * "password", "secret" or "token", in any case, prints as "********"
 * (SPEC section 3), whatever it is. Functions, userdata and threads print
 * as <function>, <userdata> (or the __name of their metatable, e.g.
 * <mb.Listener>) and <thread>. No metamethod runs.
 *
 * For data (tables of booleans, numbers and strings, no deeper than
 * `depth`, no key that is masked) the text is a Lua expression that `load`
 * reads back as an equal value, integers and floats apart (with `math` in
 * scope); on one line it is the very text mb_value_show gives the value
 * sent. fuzz/fuzz_pretty.c checks both on random values.
 *
 * Owns nothing past a call (the text is built in a buffer boxed in a
 * userdata, freed by its __gc if a memory error comes first). Tests:
 * spec/repl/repl_lua_spec.lua, spec/cli/trace_spec.lua, fuzz/fuzz_pretty.c.
 */
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mbl_value.h"

typedef struct printer {
  lua_State *L;
  mb_buf *out;
  size_t width; /* SIZE_MAX: always one line */
  int depth;
  int nopen;
  const void *open[MB_MAX_DEPTH + 2]; /* the tables on the way down */
} printer;

static void add(printer *P, const char *s, size_t len) {
  if (mb_buf_add(P->out, s, len)) luaL_error(P->L, "out of memory");
}

static void adds(printer *P, const char *s) { add(P, s, strlen(s)); }

/* <function>, <thread>, <userdata> or <the __name of its metatable>. */
static void opaque(printer *P, int idx) {
  lua_State *L = P->L;
  adds(P, "<");
  if (lua_type(L, idx) == LUA_TUSERDATA && luaL_getmetafield(L, idx, "__name") != LUA_TNIL) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      add(P, s, len);
    } else {
      adds(P, "userdata");
    }
    lua_pop(L, 1);
  } else {
    adds(P, luaL_typename(L, idx));
  }
  adds(P, ">");
}

/* Any value but a table, as the trace shows a scalar. */
static void scalar(printer *P, int idx) {
  lua_State *L = P->L;
  int rc = 0;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: adds(P, "nil"); return;
  case LUA_TBOOLEAN: adds(P, lua_toboolean(L, idx) ? "true" : "false"); return;
  case LUA_TNUMBER:
    rc = lua_isinteger(L, idx) ? mb_show_int(P->out, (int64_t)lua_tointeger(L, idx))
                               : mb_show_float(P->out, (double)lua_tonumber(L, idx));
    break;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    rc = mb_show_str(P->out, s, len);
    break;
  }
  default: opaque(P, idx); return;
  }
  if (rc) luaL_error(L, "out of memory");
}

/* ---- a table's items in the one order ------------------------------------ */

/* A table's items: the list part t[1..n], then the m other keys, kept in
 * the table at keys (from 1) and ordered by order[] (mb_show_sort). */
typedef struct items {
  int t, keys;
  lua_Integer n;
  size_t m;
  mb_show_key *order;
} items;

/* Describes the key at idx for mb_show_sort. */
static void describe(lua_State *L, int idx, mb_show_key *k) {
  memset(k, 0, sizeof *k);
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      k->k.tag = MB_V_INT;
      k->k.v.i = (int64_t)lua_tointeger(L, idx);
    } else {
      k->k.tag = MB_V_FLOAT;
      k->k.v.f = (double)lua_tonumber(L, idx);
    }
    return;
  case LUA_TSTRING:
    /* the string stays in the keys table: the pointer stays good */
    k->k.tag = MB_V_STR;
    k->k.v.str.s = lua_tolstring(L, idx, &k->k.v.str.len);
    return;
  default:
    k->k.tag = MB_V_TABLE; /* by type, then tie */
    k->type = luaL_typename(L, idx);
    k->tie = lua_type(L, idx) == LUA_TBOOLEAN ? (uintptr_t)lua_toboolean(L, idx)
                                              : (uintptr_t)lua_topointer(L, idx);
  }
}

/* Pushes what it needs (2 slots) and fills it for the table at t. */
static void items_of(printer *P, int t, items *it) {
  lua_State *L = P->L;
  luaL_checkstack(L, 8, "mb.pretty: too deep");
  it->t = t;
  it->n = 0;
  while (lua_rawgeti(L, t, it->n + 1) != LUA_TNIL) {
    lua_pop(L, 1);
    it->n++;
  }
  lua_pop(L, 1);
  lua_newtable(L);
  it->keys = lua_gettop(L);
  it->m = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    if (lua_isinteger(L, -1)) {
      lua_Integer i = lua_tointeger(L, -1);
      if (i >= 1 && i <= it->n) continue;
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, it->keys, (lua_Integer)++it->m);
  }
  it->order = lua_newuserdatauv(L, it->m ? it->m * sizeof *it->order : 1, 0);
  for (size_t j = 0; j < it->m; j++) {
    lua_rawgeti(L, it->keys, (lua_Integer)j + 1);
    describe(L, -1, &it->order[j]);
    it->order[j].at = j + 1;
    lua_pop(L, 1);
  }
  mb_show_sort(it->order, it->m);
}

/* Pushes item i's key (nil in the list part) and value. */
static void item(printer *P, const items *it, size_t i) {
  lua_State *L = P->L;
  if ((lua_Integer)i < it->n) {
    lua_pushnil(L);
    lua_rawgeti(L, it->t, (lua_Integer)i + 1);
    return;
  }
  lua_rawgeti(L, it->keys, (lua_Integer)it->order[i - (size_t)it->n].at);
  lua_pushvalue(L, -1);
  lua_rawget(L, it->t);
}

static int is_open(printer *P, const void *t) {
  for (int i = 0; i < P->nopen; i++)
    if (P->open[i] == t) return 1;
  return 0;
}

static int is_empty(lua_State *L, int t) {
  lua_pushnil(L);
  if (!lua_next(L, t)) return 1;
  lua_pop(L, 2);
  return 0;
}

static int flat(printer *P, int v, int level, size_t lim);

/* Writes the key at k (nil: an item of the list part, nothing) as it
 * stands before its value, "name = " or "[text] = ". 1 when the value
 * under it is masked. */
static int key_text(printer *P, int k, int level) {
  lua_State *L = P->L;
  int t = lua_type(L, k);
  if (t == LUA_TNIL) return 0;
  size_t len = 0;
  const char *s = t == LUA_TSTRING ? lua_tolstring(L, k, &len) : NULL;
  if (s && mb_show_is_name(s, len)) {
    add(P, s, len);
  } else {
    adds(P, "[");
    if (t == LUA_TTABLE)
      flat(P, k, level + 1, SIZE_MAX);
    else
      scalar(P, k);
    adds(P, "]");
  }
  adds(P, MB_SHOW_EQ);
  return s && mb_key_is_secret(s, len);
}

/* Writes what stands for the table v when its items are not shown: <cycle>
 * (met again inside itself), {} (empty) or {...} (below the depth). 1 when
 * it wrote one. */
static int marker(printer *P, int v, int level) {
  if (is_open(P, lua_topointer(P->L, v)))
    adds(P, "<cycle>");
  else if (is_empty(P->L, v))
    adds(P, "{}");
  else if (level >= P->depth)
    adds(P, "{...}");
  else
    return 0;
  return 1;
}

/* Enters the table v: its items (2 slots pushed above top) and its mark
 * as open. Returns top, for leave. */
static int enter(printer *P, int v, items *it) {
  int top = lua_gettop(P->L);
  items_of(P, v, it);
  P->open[P->nopen++] = lua_topointer(P->L, v);
  return top;
}

static void leave(printer *P, int top) {
  P->nopen--;
  lua_settop(P->L, top);
}

/* Pushes item i of the table entered at top (its key at top + 3, its
 * value at top + 4) and writes its key text. 1 when the value is masked:
 * its mask is written too. */
static int item_key(printer *P, const items *it, size_t i, int top, int level) {
  item(P, it, i);
  if (!key_text(P, top + 3, level)) return 0;
  adds(P, MB_SHOW_MASK);
  return 1;
}

/* Writes v (a table at level, or a scalar) on one line. Returns 0 when the
 * output is then no longer than lim (a length of P->out), else 1, having
 * stopped early (the caller takes the text back). */
static int flat(printer *P, int v, int level, size_t lim) {
  mb_buf *b = P->out;
  if (lua_type(P->L, v) != LUA_TTABLE) {
    scalar(P, v);
  } else if (!marker(P, v, level)) {
    items it;
    int top = enter(P, v, &it);
    adds(P, "{");
    for (size_t i = 0; i < (size_t)it.n + it.m && b->len <= lim; i++) {
      if (i) adds(P, ", ");
      if (!item_key(P, &it, i, top, level)) flat(P, top + 4, level + 1, lim);
      lua_settop(P->L, top + 2);
    }
    adds(P, "}");
    leave(P, top);
  }
  return b->len > lim;
}

static void pad(printer *P, int level) {
  for (int i = 0; i < level; i++) adds(P, "  ");
}

/* Writes v starting at column col: on one line when it fits in the width,
 * else one item a line. */
static void render(printer *P, int v, int level, size_t col) {
  mb_buf *b = P->out;
  if (lua_type(P->L, v) != LUA_TTABLE) {
    scalar(P, v);
    return;
  }
  size_t start = b->len, budget = P->width > col ? P->width - col : 0;
  if (!flat(P, v, level, budget > SIZE_MAX - start ? SIZE_MAX : start + budget)) return;
  b->len = start;
  if (marker(P, v, level)) return;
  items it;
  int top = enter(P, v, &it);
  adds(P, "{\n");
  for (size_t i = 0; i < (size_t)it.n + it.m; i++) {
    if (i) adds(P, ",\n");
    size_t line = b->len;
    pad(P, level + 1);
    if (!item_key(P, &it, i, top, level)) render(P, top + 4, level + 1, b->len - line);
    lua_settop(P->L, top + 2);
  }
  adds(P, "\n");
  pad(P, level);
  adds(P, "}");
  leave(P, top);
}

/* ---- mb._pretty and mb._masks -------------------------------------------- */

/* A buffer boxed in a userdata: freed by its __gc if a Lua error (out of
 * memory) comes between filling it and pushing its text. */
static int box_gc(lua_State *L) {
  mb_buf_free(lua_touserdata(L, 1));
  return 0;
}

static mb_buf *box_new(lua_State *L) {
  mb_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, "mb.ShowBuffer")) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

/* opts.name: a number not below 0 (math.huge allowed), or def when absent. */
static double opt_count(lua_State *L, const char *name, double def) {
  if (lua_isnoneornil(L, 2)) return def;
  int t = lua_getfield(L, 2, name);
  double v = def;
  if (t != LUA_TNIL) {
    int ok;
    v = (double)lua_tonumberx(L, -1, &ok);
    if (!ok || !(v >= 0))
      luaL_error(L, "mb.pretty: opts.%s must be a number of at least 0, not %s", name,
                 luaL_tolstring(L, -1, NULL));
  }
  lua_pop(L, 1);
  return v;
}

/* mb._pretty(v [, opts]) -> text. opts: width (columns for one line,
 * default 72; math.huge: always one line), depth (table levels shown,
 * default 10, at most MB_MAX_DEPTH). Raises on bad options. */
static int l_pretty(lua_State *L) {
  luaL_checkany(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  double width = opt_count(L, "width", 72), depth = opt_count(L, "depth", 10);
  lua_settop(L, 2);
  printer P = {L, box_new(L), width >= (double)SIZE_MAX ? SIZE_MAX : (size_t)width,
               depth >= MB_MAX_DEPTH ? MB_MAX_DEPTH : (int)depth, 0, {0}};
  render(&P, 1, 0, 0);
  lua_pushlstring(L, (const char *)P.out->p, P.out->len);
  return 1;
}

/* mb._masks(k) -> whether the printers hide the value under key k (a
 * string naming a secret). */
static int l_masks(lua_State *L) {
  size_t len;
  const char *k = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
  lua_pushboolean(L, k && mb_key_is_secret(k, len));
  return 1;
}

/* mb._line(v, max) -> v on one line as --trace shows a payload, cut with
 * "..." past max bytes (the REPL's .listen); a value that cannot be sent
 * (a function...) as mb._pretty shows it on one line, cut the same way. */
static int l_line(lua_State *L) {
  luaL_checkany(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  if (max < 1) return luaL_error(L, "mb._line: max must be at least 1");
  lua_settop(L, 2);
  char err[300];
  mb_buf *enc = box_new(L), *out = box_new(L);
  if (mbL_encode(L, 1, enc, (size_t)-1, "value", err, sizeof err) == 0) {
    if (mb_value_show(enc->p, enc->len, out, (size_t)max)) return luaL_error(L, "out of memory");
    lua_pushlstring(L, (const char *)out->p, out->len);
    return 1;
  }
  lua_settop(L, 1);
  printer P = {L, box_new(L), SIZE_MAX, 10, 0, {0}};
  render(&P, 1, 0, 0);
  if (P.out->len > (size_t)max) { /* cut as mb_value_show does */
    P.out->len = (size_t)max;
    if (mb_buf_add(P.out, "...", 3)) return luaL_error(L, "out of memory");
  }
  lua_pushlstring(L, (const char *)P.out->p, P.out->len);
  return 1;
}

const luaL_Reg mbL_show_funcs[] = {
    {"_pretty", l_pretty}, {"_masks", l_masks}, {"_line", l_line}, {NULL, NULL}};
