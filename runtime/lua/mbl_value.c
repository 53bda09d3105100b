/*
 * mbl_value.c — Lua values <-> mb value encoding. The encoder walks a Lua
 * value once, writing straight into the caller's buffer; tables are written
 * as an array part (keys 1..n while they are all present) and a hash part.
 * mb.json.encode's encoder walks a Lua value the same way but writes JSON
 * text straight away, with mb_json.c's writers (one pass instead of encoding
 * first and converting the bytes).
 * Tests: spec/api/values_spec.lua, spec/api/json_spec.lua.
 */
#include "mbl_value.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct encoder {
  lua_State *L;
  mb_buf *b;
  size_t max;
  mb_path path;
  const char *why;
  int json_only; /* why is a JSON limit, not something mbL_encode refuses */
  int json;      /* for mb.json.encode: its errors say "encode ... in JSON", not "send" */
  char whybuf[192];
  const void *open[MB_MAX_DEPTH + 1]; /* the tables being written */
} encoder;

static int fail(encoder *e, const char *why) {
  e->why = why;
  return -1;
}

/* "cannot send a <what>", or for JSON "cannot encode a <what> in JSON",
 * then tail: what cannot be sent cannot be made JSON either, and the
 * message says which of the two the caller was doing. */
static int refuse(encoder *e, const char *what, const char *tail) {
  snprintf(e->whybuf, sizeof e->whybuf, "cannot %s a %s%s%s", e->json ? "encode" : "send", what,
           e->json ? " in JSON" : "", tail);
  return fail(e, e->whybuf);
}

static int too_big(encoder *e) {
  snprintf(e->whybuf, sizeof e->whybuf,
           "message too large (over %zu bytes, the max_message_size)", e->max);
  return fail(e, e->whybuf);
}

static void prepend_key(encoder *e, int kidx) {
  lua_State *L = e->L;
  switch (lua_type(L, kidx)) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, kidx, &len);
    mb_path_prepend_strkey(&e->path, s, len);
    break;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, kidx))
      mb_path_prepend_intkey(&e->path, (long long)lua_tointeger(L, kidx));
    else {
      char seg[48];
      int n = snprintf(seg, sizeof seg, "[%.14g]", lua_tonumber(L, kidx));
      mb_path_prepend(&e->path, seg, (size_t)n);
    }
    break;
  case LUA_TBOOLEAN:
    mb_path_prepend(&e->path, lua_toboolean(L, kidx) ? "[true]" : "[false]",
                    lua_toboolean(L, kidx) ? 6 : 7);
    break;
  default: {
    char seg[48];
    int n = snprintf(seg, sizeof seg, "[<%s>]", luaL_typename(L, kidx));
    mb_path_prepend(&e->path, seg, (size_t)n);
  }
  }
}

/* Enters the table at idx, at depth: not too deep, not one being written. */
static int open_table(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  const void *self = lua_topointer(L, idx);
  if (depth >= MB_MAX_DEPTH) {
    char what[64];
    snprintf(what, sizeof what, "table nested deeper than %d levels", MB_MAX_DEPTH);
    return refuse(e, what, "");
  }
  for (int i = 0; i < depth; i++)
    if (e->open[i] == self) return refuse(e, "cyclic table", " (it contains itself)");
  if (!lua_checkstack(L, 4)) return fail(e, "out of Lua stack");
  e->open[depth] = self;
  return 0;
}

static int bad_key(encoder *e, int kidx) {
  char what[64];
  snprintf(what, sizeof what, "table with a %s key", luaL_typename(e->L, kidx));
  return refuse(e, what, "");
}

static int bad_value(encoder *e, int idx, int t) {
  return refuse(e, t == LUA_TTHREAD ? "coroutine" : luaL_typename(e->L, idx), "");
}

/* Whether the key at k (of type kt) is one of 1..narr, the array part
 * already written: both encoders skip those keys in their second pass. */
static inline int in_array_part(lua_State *L, int k, int kt, lua_Integer narr) {
  if (kt != LUA_TNUMBER || !narr || !lua_isinteger(L, k)) return 0;
  lua_Integer ik = lua_tointeger(L, k);
  return ik >= 1 && ik <= narr;
}

static int encode_t(encoder *e, int idx, int t, int depth);

/* Writes a number (integer or float) at idx; the buffer has room. */
static inline void put_number(lua_State *L, mb_buf *b, int idx) {
  uint8_t *p = b->p + b->len;
  if (lua_isinteger(L, idx)) {
    int64_t v = (int64_t)lua_tointeger(L, idx);
    p[0] = MB_V_INT;
    memcpy(p + 1, &v, 8);
  } else {
    double v = (double)lua_tonumber(L, idx);
    p[0] = MB_V_FLOAT;
    memcpy(p + 1, &v, 8);
  }
  b->len += 9;
}

static inline int put_str(mb_buf *b, const char *s, size_t len) {
  if (len > UINT32_MAX || mb_buf_reserve(b, 5 + len)) return -1;
  uint8_t *p = b->p + b->len;
  uint32_t n = (uint32_t)len;
  p[0] = MB_V_STR;
  memcpy(p + 1, &n, 4);
  memcpy(p + 5, s, len);
  b->len += 5 + len;
  return 0;
}

/* The key at kidx, of Lua type t. */
static int encode_key(encoder *e, int kidx, int t) {
  lua_State *L = e->L;
  mb_buf *b = e->b;
  switch (t) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, kidx, &len);
    return put_str(b, s, len) ? fail(e, "out of memory") : 0;
  }
  case LUA_TNUMBER:
    if (mb_buf_reserve(b, 9)) return -1;
    put_number(L, b, kidx);
    return 0;
  case LUA_TBOOLEAN:
    return mb_enc_bool(b, lua_toboolean(L, kidx));
  default:
    return bad_key(e, kidx);
  }
}

static int encode_table(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  if (open_table(e, idx, depth)) return -1;
  long at = mb_enc_table_begin(e->b);
  if (at < 0) return fail(e, "out of memory");
  int top = lua_gettop(L); /* the key goes at top + 1, its value at top + 2 */
  /* the array part: 1..n while every key is present (no lua_rawlen: the
   * first nil ends it, and a border is never below the first nil) */
  lua_Integer narr = 0;
  for (lua_Integer i = 1;; i++) {
    int t = lua_rawgeti(L, idx, i);
    if (t == LUA_TNIL) {
      lua_settop(L, top);
      break;
    }
    if (encode_t(e, top + 1, t, depth + 1)) {
      mb_path_prepend_intkey(&e->path, (long long)i);
      lua_settop(L, top);
      return -1;
    }
    lua_settop(L, top);
    narr = i;
  }
  uint32_t nhash = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = top + 1;
    int kt = lua_type(L, k);
    if (in_array_part(L, k, kt, narr)) {
      lua_settop(L, k);
      continue;
    }
    if (encode_key(e, k, kt) || encode_t(e, k + 1, lua_type(L, k + 1), depth + 1)) {
      prepend_key(e, k);
      lua_settop(L, top);
      return -1;
    }
    nhash++;
    lua_settop(L, k);
  }
  mb_enc_table_end(e->b, at, (uint32_t)narr, nhash);
  return 0;
}

/* The value at idx, of Lua type t. */
static int encode_t(encoder *e, int idx, int t, int depth) {
  lua_State *L = e->L;
  mb_buf *b = e->b;
  switch (t) {
  case LUA_TNIL:
  case LUA_TBOOLEAN:
    if (mb_buf_reserve(b, 1)) return fail(e, "out of memory");
    b->p[b->len++] = t == LUA_TNIL ? MB_V_NIL : lua_toboolean(L, idx) ? MB_V_TRUE : MB_V_FALSE;
    break;
  case LUA_TNUMBER:
    if (mb_buf_reserve(b, 9)) return fail(e, "out of memory");
    put_number(L, b, idx);
    break;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (len > e->max) return too_big(e);
    if (put_str(b, s, len)) return fail(e, "out of memory");
    break;
  }
  case LUA_TTABLE:
    if (encode_table(e, idx, depth)) return -1;
    break;
  default:
    return bad_value(e, idx, t);
  }
  if (b->len > e->max) return too_big(e);
  return 0;
}

static int encode(encoder *e, int idx, int depth) {
  return encode_t(e, idx, lua_type(e->L, idx), depth);
}

/* mbL_encode; json: its errors are mb.json.encode's ("cannot encode"). */
static int encode_as(lua_State *L, int idx, mb_buf *b, size_t max, const char *root, char *err,
                     size_t errlen, int json) {
  encoder e;
  e.L = L;
  e.b = b;
  e.max = max;
  e.why = NULL;
  e.json_only = 0;
  e.json = json;
  mb_path_init(&e.path);
  size_t start = b->len;
  idx = lua_absindex(L, idx);
  if (encode(&e, idx, 0) == 0) return 0;
  b->len = start;
  snprintf(err, errlen, "%s%s: %s", root, e.path.buf, e.why);
  return -1;
}

int mbL_encode(lua_State *L, int idx, mb_buf *b, size_t max, const char *root, char *err,
               size_t errlen) {
  return encode_as(L, idx, b, max, root, err, errlen, 0);
}

/* ---- JSON in one pass --------------------------------------------------- */

/* The text is what mb_json_encode makes of mbL_encode's bytes: the same
 * walk (the array part 1..n while present, then lua_next for the rest), the
 * same checks, and the writers of mb_json.c. */

static int json_value(encoder *e, int idx, int t, int depth);

static int json_limit(encoder *e, const char *why) {
  e->json_only = 1;
  return fail(e, why);
}

static inline int put_byte(encoder *e, char c) {
  mb_buf *b = e->b;
  if (mb_buf_reserve(b, 1)) return fail(e, "out of memory");
  b->p[b->len++] = (uint8_t)c;
  return 0;
}

static inline int put_text(encoder *e, const char *s, size_t n) {
  return mb_buf_add(e->b, s, n) ? fail(e, "out of memory") : 0;
}

static inline int put_int(encoder *e, int64_t v, int quoted) {
  return mb_json_put_int(e->b, v, quoted) ? fail(e, "out of memory") : 0;
}

/* An object key: a string, or an integer written as one. */
static int json_key(encoder *e, int kidx, int t) {
  lua_State *L = e->L;
  switch (t) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, kidx, &len);
    return mb_json_put_str(e->b, s, len) ? fail(e, "out of memory") : 0;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, kidx)) return put_int(e, (int64_t)lua_tointeger(L, kidx), 1);
    return json_limit(e, "cannot encode a float key in JSON");
  case LUA_TBOOLEAN:
    return json_limit(e, "cannot encode a boolean key in JSON");
  default:
    return bad_key(e, kidx);
  }
}

/* A string key at kidx of the table at idx that reads as an integer key the
 * table also has: the two would be one JSON object key. Returns 1 and sets
 * *n to that integer then. */
static int json_collides(encoder *e, int idx, int kidx, int64_t *n) {
  lua_State *L = e->L;
  size_t len;
  const char *s = lua_tolstring(L, kidx, &len);
  if (!mb_json_int_key(s, len, n)) return 0;
  int present = lua_rawgeti(L, idx, (lua_Integer)*n) != LUA_TNIL;
  lua_pop(L, 1);
  return present;
}

/* Linear: whether the table is an array is known before anything of it is
 * written (its keys are exactly 1..n), so no part is written twice. */
static int json_table(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  if (open_table(e, idx, depth)) return -1;
  int top = lua_gettop(L); /* the key goes at top + 1, its value at top + 2 */
  /* the array part: 1..narr while present */
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx), narr = 0;
  while (narr < n) {
    int t = lua_rawgeti(L, idx, narr + 1);
    lua_pop(L, 1);
    if (t == LUA_TNIL) break;
    narr++;
  }
  /* any other key makes it an object */
  int object = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (!(narr && lua_isinteger(L, top + 1) && lua_tointeger(L, top + 1) >= 1 &&
          lua_tointeger(L, top + 1) <= narr)) {
      object = 1;
      lua_settop(L, top);
      break;
    }
    lua_settop(L, top + 1);
  }
  if (!object && !narr) return put_text(e, "{}", 2);
  if (put_byte(e, object ? '{' : '[')) return -1;
  for (lua_Integer i = 1; i <= narr; i++) {
    int t = lua_rawgeti(L, idx, i);
    if ((i > 1 && put_byte(e, ',')) || (object && (put_int(e, (int64_t)i, 1) || put_byte(e, ':'))) ||
        json_value(e, top + 1, t, depth + 1)) {
      mb_path_prepend_intkey(&e->path, (long long)i);
      lua_settop(L, top);
      return -1;
    }
    lua_settop(L, top);
  }
  if (!object) return put_byte(e, ']');
  int first = narr == 0, collided = 0;
  int64_t collision = 0, ik64;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = top + 1;
    int kt = lua_type(L, k);
    if (in_array_part(L, k, kt, narr)) {
      lua_settop(L, k);
      continue;
    }
    /* a collision is reported once the table is written, as mb_json_encode
     * does (so another fault under a later key is named first, by both) */
    if (!collided && kt == LUA_TSTRING && json_collides(e, idx, k, &ik64)) {
      collided = 1;
      collision = ik64;
    }
    if ((!first && put_byte(e, ',')) || json_key(e, k, kt) || put_byte(e, ':') ||
        json_value(e, k + 1, lua_type(L, k + 1), depth + 1)) {
      prepend_key(e, k);
      lua_settop(L, top);
      return -1;
    }
    first = 0;
    lua_settop(L, k);
  }
  if (collided) {
    char seg[32];
    int len = snprintf(seg, sizeof seg, "[\"%lld\"]", (long long)collision);
    mb_path_prepend(&e->path, seg, (size_t)len);
    mb_json_collision(e->whybuf, sizeof e->whybuf, collision);
    return json_limit(e, e->whybuf);
  }
  return put_byte(e, '}');
}

/* The value at idx, of Lua type t. */
static int json_value(encoder *e, int idx, int t, int depth) {
  lua_State *L = e->L;
  switch (t) {
  case LUA_TNIL:
    return put_text(e, "null", 4);
  case LUA_TBOOLEAN:
    return lua_toboolean(L, idx) ? put_text(e, "true", 4) : put_text(e, "false", 5);
  case LUA_TNUMBER: {
    int rc;
    if (lua_isinteger(L, idx)) {
      rc = mb_json_put_int(e->b, (int64_t)lua_tointeger(L, idx), 0);
    } else {
      double v = (double)lua_tonumber(L, idx);
      const char *why = mb_json_float_problem(v);
      if (why) return json_limit(e, why);
      rc = mb_json_put_float(e->b, v);
    }
    return rc ? fail(e, "out of memory") : 0;
  }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return mb_json_put_str(e->b, s, len) ? fail(e, "out of memory") : 0;
  }
  case LUA_TTABLE:
    return json_table(e, idx, depth);
  default:
    return bad_value(e, idx, t);
  }
}

int mbL_json_encode(lua_State *L, int idx, mb_buf *b, const char *root, char *err,
                    size_t errlen) {
  encoder e;
  e.L = L;
  e.b = b;
  e.max = (size_t)-1 / 2;
  e.why = NULL;
  e.json_only = 0;
  e.json = 1;
  mb_path_init(&e.path);
  size_t start = b->len;
  idx = lua_absindex(L, idx);
  if (json_value(&e, idx, lua_type(L, idx), 0) == 0) return 0;
  b->len = start;
  if (e.json_only) {
    /* what cannot be sent at all is reported first, wherever it is, as
     * when the text was made from the encoded value */
    mb_buf tmp = {0};
    int unsendable = encode_as(L, idx, &tmp, e.max, root, err, errlen, 1);
    mb_buf_free(&tmp);
    if (unsendable) return -1;
  }
  snprintf(err, errlen, "%s%s: %s", root, e.path.buf, e.why);
  return -1;
}

/* ---- decoding ---------------------------------------------------------- */

/* The string cache's block (MBL_STRINGS); its user values 1..MBL_NSTR are
 * the strings of str[], MBL_NSTR + 1.. those of ids[]. An entry matches
 * only while its user value is the string whose bytes it points to. */
typedef struct strcache {
  struct {
    const char *s; /* the cached string's own bytes */
    size_t len;    /* 0: empty */
  } str[MBL_NSTR];
  uint64_t ids[MBL_NIDS]; /* 0: empty */
} strcache;

/* The bytes [p, end) read by decode, the string cache at stack index cache
 * (0: none), c its block. */
typedef struct decoder {
  lua_State *L;
  const uint8_t *p, *end;
  int cache;
  strcache *c;
} decoder;

static inline unsigned str_slot(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  uint32_t k = (uint32_t)len | (uint32_t)u[0] << 8 | (uint32_t)u[len - 1] << 16 |
               (uint32_t)u[len >> 1] << 24;
  return (unsigned)((k * UINT32_C(0x9e3779b1)) >> 26) & (MBL_NSTR - 1); /* the top bits */
}

static void push_str(decoder *d, const char *s, size_t len) {
  lua_State *L = d->L;
  if (!d->c || len - 1 >= MBL_STR_MAX) { /* no cache, empty or long */
    lua_pushlstring(L, s, len);
    return;
  }
  unsigned i = str_slot(s, len);
  if (d->c->str[i].len == len && !memcmp(d->c->str[i].s, s, len)) {
    lua_getiuservalue(L, d->cache, (int)i + 1);
    return;
  }
  const char *own = lua_pushlstring(L, s, len);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, d->cache, (int)i + 1);
  d->c->str[i].s = own;
  d->c->str[i].len = len;
}

static _Noreturn void corrupt(lua_State *L) {
  luaL_error(L, "corrupt message value");
  abort(); /* not reached */
}

/* Reads one value (mb_value.h's format, as mb_read does, here inline: a
 * message is mostly small items) and pushes it. */
static void decode(decoder *d) {
  lua_State *L = d->L;
  const uint8_t *p = d->p;
  if (p >= d->end) corrupt(L);
  size_t left = (size_t)(d->end - p) - 1;
  switch (*p++) {
  case MB_V_NIL:
    lua_pushnil(L);
    break;
  case MB_V_FALSE:
    lua_pushboolean(L, 0);
    break;
  case MB_V_TRUE:
    lua_pushboolean(L, 1);
    break;
  case MB_V_INT: {
    int64_t v;
    if (left < 8) corrupt(L);
    memcpy(&v, p, 8);
    p += 8;
    lua_pushinteger(L, (lua_Integer)v);
    break;
  }
  case MB_V_FLOAT: {
    double v;
    if (left < 8) corrupt(L);
    memcpy(&v, p, 8);
    p += 8;
    lua_pushnumber(L, (lua_Number)v);
    break;
  }
  case MB_V_STR: {
    uint32_t n;
    if (left < 4) corrupt(L);
    memcpy(&n, p, 4);
    if (left - 4 < n) corrupt(L);
    d->p = p + 4 + n;
    push_str(d, (const char *)p + 4, n);
    return;
  }
  case MB_V_TABLE: {
    uint32_t narr, nhash;
    if (left < 8) corrupt(L);
    memcpy(&narr, p, 4);
    memcpy(&nhash, p + 4, 4);
    d->p = p + 8;
    left -= 8;
    luaL_checkstack(L, 4, "message nested too deep");
    /* sized ahead only as far as the bytes left can hold (each item takes
     * one at least): a corrupt count must not allocate gigabytes */
    lua_createtable(L, (int)(narr > left || narr > 1u << 24 ? 0 : narr),
                    (int)(nhash > left || nhash > 1u << 24 ? 0 : nhash));
    for (uint32_t i = 1; i <= narr; i++) {
      decode(d);
      lua_rawseti(L, -2, (lua_Integer)i);
    }
    for (uint32_t i = 0; i < nhash; i++) {
      decode(d);
      decode(d);
      if (lua_isnil(L, -2)) {
        lua_pop(L, 2);
        continue;
      }
      lua_rawset(L, -3);
    }
    return;
  }
  default:
    corrupt(L);
  }
  d->p = p;
}

void mbL_decode(lua_State *L, const uint8_t *p, size_t len) {
  decoder d = {L, p, p + len, 0, NULL};
  decode(&d);
}

void mbL_decode_cached(lua_State *L, const uint8_t *p, size_t len) {
  decoder d = {L, p, p + len, MBL_STRINGS, lua_touserdata(L, MBL_STRINGS)};
  decode(&d);
}

/* Pushes the cached string of id and returns 1, or returns 0. */
static inline int cached_id(lua_State *L, uint64_t id) {
  strcache *c = lua_touserdata(L, MBL_STRINGS);
  unsigned i = (unsigned)id & (MBL_NIDS - 1);
  if (c->ids[i] != id) return 0;
  lua_getiuservalue(L, MBL_STRINGS, MBL_NSTR + (int)i + 1);
  return 1;
}

/* A message's id for its listener; kept in the cache (keep) for the next
 * listeners of the message to find: only while the core holds the message
 * elsewhere too (other deliveries of it), for keeping one that nobody
 * finds costs about as much as a hit saves. */
static void push_msg_id(lua_State *L, uint64_t id, int keep) {
  if (cached_id(L, id)) return;
  char buf[MB_NODE_ID_MAX];
  lua_pushlstring(L, buf, mb_id_format(id, buf));
  if (!keep) return;
  lua_pushvalue(L, -1);
  unsigned i = (unsigned)id & (MBL_NIDS - 1);
  lua_setiuservalue(L, MBL_STRINGS, MBL_NSTR + (int)i + 1);
  ((strcache *)lua_touserdata(L, MBL_STRINGS))->ids[i] = id;
}

/* An id as users see it: "hex", or "NODE:hex" on a node of a cluster. */
static void push_id(lua_State *L, const char *node, uint64_t id) {
  char buf[MB_NODE_ID_MAX];
  lua_pushlstring(L, buf, mb_node_id_format(node, id, buf));
}

void mbL_push_msg(lua_State *L, const mb_msg *m, int dest_idx, int payload_idx,
                  const char *node) {
  size_t len;
  const uint8_t *p;
  const char *rt = mb_msg_reply_to(m);
  uint64_t rid = mb_msg_response_id(m);
  const char *dest = mb_msg_destination(m);
  if (dest_idx) dest_idx = lua_absindex(L, dest_idx);
  if (payload_idx) payload_idx = lua_absindex(L, payload_idx);
  /* sized exactly: destination, payload, values, id, and what is set; the
   * keys come from the calling closure's upvalues (already interned) */
  lua_createtable(L, 0, 3 + (dest != NULL) + (rt != NULL) + (rid != 0));
  lua_pushvalue(L, MBL_KEY(MBL_K_PAYLOAD));
  if (payload_idx) {
    lua_pushvalue(L, payload_idx);
  } else {
    p = mb_msg_payload(m, &len);
    mbL_decode_cached(L, p, len);
  }
  lua_rawset(L, -3);
  lua_pushvalue(L, MBL_KEY(MBL_K_VALUES));
  p = mb_msg_values(m, &len);
  if (len)
    mbL_decode_cached(L, p, len);
  else
    lua_createtable(L, 0, 0);
  lua_rawset(L, -3);
  if (dest) {
    lua_pushvalue(L, MBL_KEY(MBL_K_DESTINATION));
    if (dest_idx)
      lua_pushvalue(L, dest_idx);
    else
      lua_pushstring(L, dest);
    lua_rawset(L, -3);
  }
  lua_pushvalue(L, MBL_KEY(MBL_K_ID));
  const char *origin = mb_msg_origin(m);
  if (origin)
    lua_pushstring(L, origin);
  else if (!node) /* kept when more deliveries of m may follow (not a shared one's), and a
                    * request's, for its reply's response_id when the requester is here */
    push_msg_id(L, mb_msg_id(m), mb_msg_is_request(m) || (!payload_idx && !mb_msg_sole(m)));
  else
    push_id(L, node, mb_msg_id(m));
  lua_rawset(L, -3);
  if (rt) {
    lua_pushvalue(L, MBL_KEY(MBL_K_REPLY_TO));
    lua_pushstring(L, rt);
    lua_rawset(L, -3);
  }
  if (rid) {
    lua_pushvalue(L, MBL_KEY(MBL_K_RESPONSE_ID));
    if (node || !cached_id(L, rid)) push_id(L, node, rid);
    lua_rawset(L, -3);
  }
  if (origin && mb_msg_redelivered(m)) { /* a durable destination's, delivered before */
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "redelivered");
  }
}

void mbL_push_keys(lua_State *L) {
  static const char *const names[MBL_NKEYS] = {"payload",  "values",   "destination",
                                                 "id", "reply_to", "response_id"};
  static const char strings_key = 0;
  for (int i = 0; i < MBL_NKEYS; i++) lua_pushstring(L, names[i]);
  /* the string cache: one per state */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &strings_key) == LUA_TNIL) {
    lua_pop(L, 1);
    strcache *c = lua_newuserdatauv(L, sizeof *c, MBL_NSTR + MBL_NIDS);
    memset(c, 0, sizeof *c);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &strings_key);
  }
}
