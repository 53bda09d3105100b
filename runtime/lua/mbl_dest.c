/*
 * mbl_dest.c — destinations and events in the `mb` module: the one check of
 * a destination's name (mbL_check_dest) and of option tables
 * (mbL_check_keys, mbL_opt_enum, mbL_opt_positive), the runtime
 * conditions as nil, "code: message" (mbL_fail_rc), mb.destination and its
 * kin, mb.stats, and event subscriptions (mb.on).
 *
 * Owns: the subscription handles (userdata "mb.Subscription", one release
 * path, mbL_sub_release). Uses the core's destinations and events. Tests:
 * the busted specs in spec/ (destinations, events, stats).
 */
#include "mbl_private.h"

/* Pushes s as a quoted Lua string for an error message: its first 60
 * bytes, NUL and control bytes escaped, so nothing is cut or garbled. */
static void push_quoted(lua_State *L, const char *s, size_t len) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '"');
  size_t n = len > 60 ? 60 : len;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      luaL_addchar(&b, '\\');
      luaL_addchar(&b, (char)c);
    } else if (c == '\n') {
      luaL_addstring(&b, "\\n");
    } else if (c < 0x20 || c == 0x7f) {
      char e[8];
      snprintf(e, sizeof e, "\\%03u", c);
      luaL_addstring(&b, e);
    } else {
      luaL_addchar(&b, (char)c);
    }
  }
  if (n < len) {
    char more[48];
    snprintf(more, sizeof more, "...\" (%zu bytes)", len);
    luaL_addstring(&b, more);
  } else {
    luaL_addchar(&b, '"');
  }
  luaL_pushresult(&b);
}

/* Whether the value at idx is a destination name; if not, pushes why. */
static int name_ok(lua_State *L, int idx) {
  size_t len;
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *name = lua_tolstring(L, idx, &len);
    if (mb_dest_name_valid(name, len) && strlen(name) == len) return 1;
    push_quoted(L, name, len);
  } else {
    lua_pushfstring(L, "(a %s, not a string)", luaL_typename(L, idx));
  }
  lua_pushfstring(L, "invalid destination name %s (use 1-255 characters of A-Z a-z 0-9 _ . / : -)",
                  lua_tostring(L, -1));
  lua_remove(L, -2);
  return 0;
}

/* The destination name at idx; raises "fn: invalid destination name ...". */
const char *mbL_check_dest(lua_State *L, int idx, const char *fn) {
  size_t len;
  const char *name = luaL_checklstring(L, idx, &len);
  /* every send passes here: the message is built only for a bad name */
  if (mb_dest_name_valid(name, len) && strlen(name) == len) return name;
  if (!name_ok(L, idx)) luaL_error(L, "%s: %s", fn, lua_tostring(L, -1));
  return name;
}

/* Pushes nil and "code: text" for a runtime condition; returns 2. */
int mbL_fail_rc(lua_State *L, int rc, const char *dest, mbL_state *S) {
  lua_pushnil(L);
  switch (rc) {
  case MB_ENODEST:
    lua_pushfstring(L, "no_destination: no destination '%s'", dest);
    break;
  case MB_ENOLISTENERS:
    lua_pushfstring(L, "no_listeners: destination '%s' has no listeners", dest);
    break;
  case MB_EFULL: {
    mb_stats st;
    mb_dest_stats(core(S), dest, &st);
    lua_pushfstring(L, "queue_full: destination '%s' has %d pending messages (its max_queue)",
                    dest, (int)st.pending);
    break;
  }
  case MB_ECLOSED:
    lua_pushfstring(L, "closed: destination '%s' is being removed", dest);
    break;
  case MB_ESHUTDOWN:
    lua_pushfstring(L, "closed: shutting down, '%s' takes no new messages "
                       "(only what listeners send while handling)", dest);
    break;
  case MB_EEXISTS:
    lua_pushfstring(L, "exists: destination '%s' exists with other options", dest);
    break;
  default:
    lua_pushfstring(L, "%s: at destination '%s'", mb_strerror(rc), dest);
  }
  return 2;
}

/* ---- option tables: each check pushes why and returns -1, or returns 0;
 * never raises but for memory; the mbL_ wrappers raise "fn: ..." ---------- */

/* The positive integer under key of table t (0: absent) in *v. */
static int try_positive(lua_State *L, int t, const char *key, lua_Integer *v) {
  int whole = 0;
  *v = 0;
  /* a float with a whole value counts as that integer (16 * 2^20 is a
   * float in Lua 5.4), as luaL_checkinteger takes it */
  if (lua_getfield(L, t, key) != LUA_TNIL &&
      (lua_type(L, -1) != LUA_TNUMBER || (*v = lua_tointegerx(L, -1, &whole), !whole) ||
       *v <= 0)) {
    int number = lua_type(L, -1) == LUA_TNUMBER;
    const char *was = luaL_tolstring(L, -1, NULL);
    lua_pushfstring(L, "must be a positive integer, not %s%s%s", number ? "" : "'", was,
                    number ? "" : "'");
    lua_replace(L, -3);
    lua_pop(L, 1);
    return -1;
  }
  lua_pop(L, 1);
  return 0;
}

/* The index in names of the string under key of table t (def: absent). */
static int try_enum(lua_State *L, int t, const char *key, const char *const *names, int def,
                    int *v) {
  *v = def;
  if (lua_getfield(L, t, key) == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  *v = -1;
  for (int i = 0; lua_type(L, -1) == LUA_TSTRING && names[i]; i++)
    if (strcmp(lua_tostring(L, -1), names[i]) == 0) *v = i;
  lua_pop(L, 1);
  if (*v >= 0) return 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "must be one of ");
  for (int i = 0; names[i]; i++) {
    if (i) luaL_addstring(&b, ", ");
    luaL_addchar(&b, '"');
    luaL_addstring(&b, names[i]);
    luaL_addchar(&b, '"');
  }
  luaL_pushresult(&b);
  return -1;
}

/* The first key of table t that is not in allowed, if any. */
static int try_keys(lua_State *L, int t, const char *const *allowed) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(lua_tostring(L, -1), allowed[i]) == 0;
    if (!ok) {
      lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL));
      lua_replace(L, -3);
      lua_pop(L, 1);
      return -1;
    }
  }
  return 0;
}

lua_Integer mbL_opt_positive(lua_State *L, int t, const char *key, const char *fn) {
  lua_Integer v;
  if (try_positive(L, t, key, &v)) luaL_error(L, "%s: option '%s' %s", fn, key, lua_tostring(L, -1));
  return v;
}

int mbL_opt_enum(lua_State *L, int t, const char *key, const char *const *names, int def,
                 const char *fn) {
  int v;
  if (try_enum(L, t, key, names, def, &v))
    luaL_error(L, "%s: option '%s' %s", fn, key, lua_tostring(L, -1));
  return v;
}

/* Raises for keys of table t that are not in allowed. */
void mbL_check_keys(lua_State *L, int t, const char *const *allowed, const char *fn) {
  if (try_keys(L, t, allowed)) luaL_error(L, "%s: %s", fn, lua_tostring(L, -1));
}

/* ---- destinations ------------------------------------------------------------- */

static const char *const TYPES[] = {"parallel", "serial", "synchronous", NULL};
static const char *const ON_FULL[] = {"reject", "block", NULL};

/* The one check of a destination's name (at nidx) and options (the table
 * at oidx; 0: none), for mb.destination and for mbrun's configuration
 * (mb._check_destination, used by lua/mb/config.lua). Never raises but for
 * memory. Returns 0 with the options in *o, or -1 with why pushed and the
 * option at fault in *key (NULL: the name, or an unknown option). */
/* A number of seconds >= min (> 0, at most 1e9) under key of table t
 * (absent: 0). */
static int try_seconds(lua_State *L, int t, const char *key, double min, double *v) {
  *v = 0;
  if (lua_getfield(L, t, key) != LUA_TNIL &&
      (lua_type(L, -1) != LUA_TNUMBER || !((*v = lua_tonumber(L, -1)) >= min) || *v > 1e9)) {
    const char *was = luaL_tolstring(L, -1, NULL);
    lua_pushfstring(L, "must be a number of seconds from %f to 1e9, not %s", min, was);
    lua_replace(L, -3);
    lua_pop(L, 1);
    return -1;
  }
  lua_pop(L, 1);
  return 0;
}

/* The `cluster` option when it is a table (at the top of the stack): a
 * durable destination's (SPEC 6, Durable); *key names the option at fault
 * as "cluster.KEY". */
static int check_durable(lua_State *L, int t, mb_dest_type type, mb_durable_opts *du,
                         const char **key) {
  static const char *const keys[] = {"durable", "max_deliver", "max_msgs", "max_bytes",
                                     "max_age", "ack_wait", NULL};
  lua_Integer v;
  *key = "cluster";
  if (try_keys(L, t, keys)) return -1;
  *key = "cluster.durable";
  if (lua_getfield(L, t, "durable") != LUA_TBOOLEAN || !lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    lua_pushstring(L, "must be true (a table for `cluster` is a durable destination's "
                      "options; a plain cluster destination is cluster = true)");
    return -1;
  }
  lua_pop(L, 1);
  if (try_positive(L, t, (*key = "cluster.max_deliver") + 8, &v)) return -1;
  if (v > MB_DURABLE_MAX_DELIVER) {
    lua_pushfstring(L, "must be a positive integer up to %d, not %I", MB_DURABLE_MAX_DELIVER, v);
    return -1;
  }
  du->max_deliver = (int)v;
  if (try_positive(L, t, (*key = "cluster.max_msgs") + 8, &v)) return -1;
  du->max_msgs = (int64_t)v;
  if (try_positive(L, t, (*key = "cluster.max_bytes") + 8, &v)) return -1;
  du->max_bytes = (int64_t)v;
  if (try_seconds(L, t, (*key = "cluster.max_age") + 8, MB_DURABLE_MIN_MAX_AGE, &du->max_age))
    return -1;
  if (try_seconds(L, t, (*key = "cluster.ack_wait") + 8, MB_DURABLE_MIN_ACK_WAIT, &du->ack_wait))
    return -1;
  if (type == MB_SYNCHRONOUS) {
    *key = "cluster.durable";
    lua_pushstring(L, "is for parallel and serial destinations (this one is synchronous)");
    return -1;
  }
  *key = NULL;
  return 0;
}

static int check_destination(lua_State *L, int nidx, int oidx, mb_dest_opts *o,
                             const char **key, mb_durable_opts *du) {
  static const char *const keys[] = {"type", "max_queue", "on_full", "concurrency", "cluster",
                                     "share", NULL};
  int type = 0, on_full = 0, cluster = 0, share = 0;
  lua_Integer max_queue = 0, concurrency = 0;
  memset(o, 0, sizeof *o);
  memset(du, 0, sizeof *du);
  *key = NULL;
  if (!name_ok(L, nidx)) return -1;
  if (!oidx) return 0;
  if (try_keys(L, oidx, keys)) return -1;
  if (try_enum(L, oidx, *key = "type", TYPES, 0, &type) ||
      try_enum(L, oidx, *key = "on_full", ON_FULL, 0, &on_full) ||
      try_positive(L, oidx, *key = "max_queue", &max_queue) ||
      try_positive(L, oidx, *key = "concurrency", &concurrency))
    return -1;
  if (concurrency && type != MB_PARALLEL) {
    lua_pushfstring(L, "is only for parallel destinations (this one is %s)", TYPES[type]);
    return -1;
  }
  *key = "share";
  int ty = lua_getfield(L, oidx, "share");
  share = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (ty != LUA_TNIL && ty != LUA_TBOOLEAN) {
    lua_pushstring(L, "must be true or false");
    return -1;
  }
  *key = "cluster";
  ty = lua_getfield(L, oidx, "cluster");
  cluster = lua_toboolean(L, -1);
  if (ty == LUA_TTABLE) {
    int rc = check_durable(L, lua_gettop(L), (mb_dest_type)type, du, key);
    if (rc) {
      lua_remove(L, -2);
      return -1;
    }
    cluster = 2;
    *key = "cluster";
  }
  lua_pop(L, 1);
  if (ty != LUA_TNIL && ty != LUA_TBOOLEAN && ty != LUA_TTABLE) {
    lua_pushstring(L, "must be true, false or a durable destination's table {durable = true, "
                      "max_deliver =, max_msgs =, max_bytes =, max_age =, ack_wait =}");
    return -1;
  }
  char subject[1024];
  if (cluster && mb_cluster_subject("x", lua_tostring(L, nidx), subject, sizeof subject)) {
    lua_pushfstring(L, "cannot share '%s' over NATS: a cluster destination's name must not "
                       "start or end with '/' or hold \"//\" (its NATS subject would have an "
                       "empty part)", lua_tostring(L, nidx));
    return -1;
  }
  *key = NULL;
  o->cluster = cluster;
  o->share = share;
  o->type = (mb_dest_type)type;
  o->on_full = (mb_full_policy)on_full;
  o->max_queue = (size_t)max_queue;
  o->concurrency = (size_t)concurrency;
  return 0;
}


/* A new cluster destination: a node that has it with another type, or
 * durable where it is not (or the other way round), makes it an `exists`
 * error here (SPEC §6), and it is removed again. stack: name, opts, type,
 * durable. */
static int probe_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  const char *name = lua_tostring(L, 1);
  int durable = lua_toboolean(L, 4);
  const char *mine = TYPES[lua_tointeger(L, 3)];
  for (size_t i = 0; i < w->n; i++) {
    if (w->ans[i].status != MB_OK || !w->ans[i].reply) continue;
    size_t len;
    const uint8_t *p = mb_msg_payload(w->ans[i].reply, &len);
    mbL_decode(L, p, len);
    int their_durable = lua_istable(L, -1) && lua_getfield(L, -1, "durable") != LUA_TNIL &&
                        lua_toboolean(L, -1);
    if (lua_istable(L, -2)) lua_pop(L, 1);
    const char *theirs = lua_istable(L, -1) && lua_getfield(L, -1, "type") == LUA_TSTRING
                             ? lua_tostring(L, -1) : NULL;
    char kind_theirs[40], kind_mine[40];
    if (theirs && their_durable != durable) { /* "serial" vs "durable serial" */
      snprintf(kind_theirs, sizeof kind_theirs, "%s%s", their_durable ? "durable " : "", theirs);
      snprintf(kind_mine, sizeof kind_mine, "%s%s", durable ? "durable " : "", mine);
      theirs = kind_theirs;
      mine = kind_mine;
    }
    if (theirs && strcmp(theirs, mine) != 0) {
      const char *origin = mb_msg_origin(w->ans[i].reply);
      const char *colon = origin ? strchr(origin, ':') : NULL;
      int node = colon ? (int)(colon - origin) : 1;
      mb_runtime *rt = core(w->S);
      lua_pushnil(L);
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      luaL_addstring(&b, "exists: destination '");
      luaL_addstring(&b, name);
      luaL_addstring(&b, "' is ");
      luaL_addstring(&b, theirs);
      luaL_addstring(&b, " on node ");
      luaL_addlstring(&b, origin ? origin : "?", origin ? (size_t)node : 1);
      luaL_addstring(&b, " (declared ");
      luaL_addstring(&b, mine);
      luaL_addstring(&b, " here)");
      luaL_pushresult(&b);
      mbL_state *S = w->S;
      mbL_waiter_free(w);
      mb_dest_remove(rt, name);
      if (durable && S->R->cluster)
        mb_cluster_durable(S->R->cluster, name, MB_PARALLEL, NULL, NULL, 0);
      return 2;
    }
    lua_settop(L, 4);
    mine = TYPES[lua_tointeger(L, 3)];
  }
  mbL_waiter_free(w);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_destination(lua_State *L) {
  mbL_state *S = state_of(L);
  mbL_check_dest(L, 1, "mb.destination");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  mb_dest_opts o;
  mb_durable_opts du;
  const char *key;
  if (check_destination(L, 1, lua_isnoneornil(L, 2) ? 0 : 2, &o, &key, &du)) {
    if (key) return luaL_error(L, "mb.destination: option '%s' %s", key, lua_tostring(L, -1));
    return luaL_error(L, "mb.destination: %s", lua_tostring(L, -1));
  }
  const char *name = lua_tostring(L, 1);
  if (o.cluster && !S->R->cluster)
    return luaL_error(L, "mb.destination: '%s' is a cluster destination, but this node is in no "
                         "cluster: join one first (mbrun --nats URL, the configuration's "
                         "cluster = {url = ...}, or mb.setup{cluster = {url = ...}})", name);
  int existed = o.cluster && mb_dest_exists(core(S), name);
  if (o.cluster == 2) { /* the link stores its messages: its stream and limits first */
    char err[400];
    du.max_queue = o.max_queue;
    int drc = mb_cluster_durable(S->R->cluster, name, o.type, &du, err, sizeof err);
    if (drc < 0) {
      lua_pushnil(L);
      lua_pushfstring(L, "%s: %s", mb_strerror(drc), err);
      return 2;
    }
  }
  int rc = mb_dest_declare(core(S), name, &o);
  /* the link stores the messages of name only while it is durable here */
  if (o.cluster && S->R->cluster && mb_dest_cluster(core(S), name) != 3)
    mb_cluster_durable(S->R->cluster, name, o.type, NULL, NULL, 0);
  if (o.cluster && rc == MB_OK && !existed) { /* the other nodes' type must be the same */
    mbL_waiter *w = mbL_waiter_new(S);
    if (!w) return luaL_error(L, "mb.destination: out of memory");
    lua_settop(L, 2);
    lua_pushinteger(L, o.type); /* 3 */
    lua_pushboolean(L, o.cluster == 2); /* 4: durable */
    rc = mb_link_stats(S->svc, name, 0, mbL_request_done, w, &w->req);
    if (rc < 0) { /* the link is down: the check waits for no one */
      mbL_waiter_free(w);
      lua_pushboolean(L, 1);
      return 1;
    }
    return mbL_wait_for(L, w, probe_k);
  }
  if (rc == MB_ECLOSED) {
    lua_pushnil(L);
    lua_pushfstring(L, "closed: destination '%s' is being removed", name);
    return 2;
  }
  if (rc < 0) return mbL_fail_rc(L, rc, name, S);
  lua_pushboolean(L, 1);
  return 1;
}

/* mb._check_destination(name, options) -> true, or false, the option at
 * fault (nil: the name, or an unknown option) and why: the rules of
 * mb.destination, for checking a configuration before anything runs. */
static int l_check_destination(lua_State *L) {
  lua_settop(L, 2);
  mb_dest_opts o;
  mb_durable_opts du;
  const char *key;
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (check_destination(L, 1, lua_isnil(L, 2) ? 0 : 2, &o, &key, &du) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  if (key)
    lua_pushstring(L, key);
  else
    lua_pushnil(L);
  lua_rotate(L, -3, 2); /* false, key, why */
  return 3;
}

static int l_remove_destination(lua_State *L) {
  mbL_state *S = state_of(L);
  const char *name = mbL_check_dest(L, 1, "mb.remove_destination");
  int rc = mb_dest_remove(core(S), name);
  if (rc < 0) return mbL_fail_rc(L, rc, name, S);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_has_destination(lua_State *L) {
  mbL_state *S = state_of(L);
  const char *name = mbL_check_dest(L, 1, "mb.has_destination");
  lua_pushboolean(L, mb_dest_exists(core(S), name));
  return 1;
}

static void add_name(void *ud, const char *name) {
  lua_State *L = ud;
  lua_pushstring(L, name);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

static int l_destinations(lua_State *L) {
  mbL_state *S = state_of(L);
  lua_newtable(L);
  mb_dest_each(core(S), add_name, L);
  return 1;
}

/* durable: with `redelivered` (a durable destination's, SPEC 6) */
static void push_stats(lua_State *L, const mb_stats *st, int durable) {
  lua_createtable(L, 0, 14);
  lua_pushstring(L, TYPES[st->type]);
  lua_setfield(L, -2, "type");
#define F(name)                              \
  lua_pushinteger(L, (lua_Integer)st->name); \
  lua_setfield(L, -2, #name)
  F(listeners);
  F(sent);
  F(rejected);
  F(deliveries);
  F(delivered);
  F(failed);
  F(dropped);
  F(pending);
  F(largest_pending);
  F(in_flight);
  F(replies);
  F(timeouts);
  if (durable) {
    F(redelivered);
  }
#undef F
}

static void add_stats(void *ud, const char *name) {
  lua_State *L = ud;
  mbL_state *S = state_of(L);
  mb_stats st;
  if (mb_dest_stats(core(S), name, &st) == MB_OK) {
    push_stats(L, &st, mb_dest_cluster(core(S), name) == 3);
    lua_setfield(L, -2, name);
  }
}

/* mb.stats(name, {cluster = true}): the nodes' answers summed. stack: name,
 * opts. */
static int stats_cluster_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  static const char *const sums[] = {"listeners", "sent", "rejected", "deliveries", "delivered",
                                     "failed", "dropped", "pending", "in_flight", "replies",
                                     "timeouts", NULL, NULL};
  const char *const *keys = sums;
  const char *with[sizeof sums / sizeof *sums];
  mb_stats st;
  int have = mb_dest_stats(core(w->S), lua_tostring(L, 1), &st) == MB_OK;
  if (mb_dest_cluster(core(w->S), lua_tostring(L, 1)) == 3) { /* durable: and redeliveries */
    memcpy(with, sums, sizeof sums);
    with[sizeof sums / sizeof *sums - 2] = "redelivered";
    keys = with;
  }
  lua_createtable(L, 0, 14);
  int t = lua_gettop(L);
  lua_pushstring(L, have ? TYPES[st.type] : "parallel");
  lua_setfield(L, t, "type");
  for (int i = 0; keys[i]; i++) {
    lua_pushinteger(L, 0);
    lua_setfield(L, t, keys[i]);
  }
  lua_pushinteger(L, 0);
  lua_setfield(L, t, "largest_pending");
  int nodes = 0;
  for (size_t i = 0; i < w->n; i++) {
    if (w->ans[i].status != MB_OK || !w->ans[i].reply) continue;
    size_t len;
    const uint8_t *p = mb_msg_payload(w->ans[i].reply, &len);
    mbL_decode(L, p, len);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      continue;
    }
    nodes++;
    for (int k = 0; keys[k]; k++) {
      lua_getfield(L, -1, keys[k]);
      lua_getfield(L, t, keys[k]);
      lua_pushinteger(L, lua_tointeger(L, -1) + lua_tointeger(L, -2));
      lua_setfield(L, t, keys[k]);
      lua_pop(L, 2);
    }
    lua_getfield(L, -1, "largest_pending");
    lua_getfield(L, t, "largest_pending");
    if (lua_tointeger(L, -2) > lua_tointeger(L, -1)) {
      lua_pushvalue(L, -2);
      lua_setfield(L, t, "largest_pending");
    }
    lua_pop(L, 3);
  }
  lua_pushinteger(L, nodes);
  lua_setfield(L, t, "nodes");
  mbL_waiter_free(w);
  return 1;
}


static int l_stats(lua_State *L) {
  mbL_state *S = state_of(L);
  mb_service_settle(S->svc); /* this service's finished deliveries count */
  if (!lua_isnoneornil(L, 2)) {
    static const char *const keys[] = {"cluster", NULL};
    luaL_checktype(L, 2, LUA_TTABLE);
    mbL_check_keys(L, 2, keys, "mb.stats");
    lua_getfield(L, 2, "cluster");
    int cluster = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (cluster) {
      const char *name = mbL_check_dest(L, 1, "mb.stats");
      if (!S->R->cluster || mb_dest_cluster(core(S), name) < 1)
        return luaL_error(L, "mb.stats: '%s' is not a cluster destination of this node", name);
      mbL_waiter *w = mbL_waiter_new(S);
      if (!w) return luaL_error(L, "mb.stats: out of memory");
      lua_settop(L, 2);
      int rc = mb_link_stats(S->svc, name, 1.0, mbL_request_done, w, &w->req);
      if (rc < 0) {
        mbL_waiter_free(w);
        return mbL_fail_rc(L, rc, name, S);
      }
      return mbL_wait_for(L, w, stats_cluster_k);
    }
  }
  if (lua_isnoneornil(L, 1)) {
    lua_newtable(L);
    mb_dest_each(core(S), add_stats, L);
    return 1;
  }
  const char *name = mbL_check_dest(L, 1, "mb.stats");
  mb_stats st;
  int rc = mb_dest_stats(core(S), name, &st);
  if (rc < 0) return mbL_fail_rc(L, rc, name, S);
  push_stats(L, &st, mb_dest_cluster(core(S), name) == 3);
  return 1;
}

/* ---- events ------------------------------------------------------------------- */

/* in the order of their bits in mb_event_kind */
static const char *const EVENTS[] = {"destination_added", "destination_removed",
                                     "listener_added",    "listener_removed",
                                     "cluster_down",      "cluster_up",
                                     NULL};

/* Pushes an event's callback arguments: the destination and the info table
 * (a protected call: it allocates). */
static int event_args_p(lua_State *L) {
  const mb_event *ev = lua_touserdata(L, 1);
  if (ev->kind & (MB_EV_CLUSTER_DOWN | MB_EV_CLUSTER_UP))
    lua_pushnil(L); /* about the connection, no destination */
  else
    lua_pushstring(L, ev->destination);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, TYPES[ev->type]);
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)ev->listeners);
  lua_setfield(L, -2, "listeners");
  int k = 0;
  while (!(ev->kind & (1u << k))) k++;
  lua_pushstring(L, EVENTS[k]);
  lua_setfield(L, -2, "event");
  if (ev->service) {
    lua_pushstring(L, ev->service);
    lua_setfield(L, -2, "service");
  }
  return 2;
}

static void on_event(void *ud, const mb_event *ev) {
  mbL_sub *s = ud;
  mbL_state *S = s->S;
  mbL_task *t = mbL_task_new(S, T_EVENT);
  if (!t) {
    mbL_failed(S->R, "mb: event callback for '%s' not run: out of memory\n", ev->destination);
    return;
  }
  lua_State *co = t->co;
  lua_pushcfunction(co, event_args_p);
  lua_pushlightuserdata(co, (void *)ev);
  if (lua_pcall(co, 1, 2, 0) != LUA_OK) {
    mbL_failed(S->R, "mb: event callback for '%s' not run: out of memory\n", ev->destination);
    lua_settop(co, 0);
    mbL_task_free(t, 1);
    return;
  }
  lua_rawgeti(co, LUA_REGISTRYINDEX, s->self_ref);
  lua_getiuservalue(co, -1, 1);
  lua_remove(co, -2);
  lua_insert(co, -3); /* fn, destination, info */
  mbL_task_run(t, 2);
}

static int l_on(lua_State *L) {
  mbL_state *S = state_of(L);
  int kind = luaL_checkoption(L, 1, NULL, EVENTS);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  mbL_sub *s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  s->self_ref = LUA_NOREF;
  luaL_setmetatable(L, "mb.Subscription");
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  /* anchored before the core knows it (luaL_ref may raise) */
  lua_pushvalue(L, -1);
  s->self_ref = ref(S, L);
  s->sub = mb_subscribe(S->svc, 1u << kind, on_event, s);
  if (!s->sub) {
    unref(S, L, &s->self_ref);
    return luaL_error(L, "mb.on: out of memory");
  }
  s->S = S;
  s->next = S->subs;
  if (S->subs) S->subs->prev = s;
  S->subs = s;
  S->nsubs++;
  return 1;
}

/* The one release path of a subscription handle. unsubscribe: tell the
 * core (not when the state goes away: freeing the service ends it there);
 * L: where to drop the anchor (NULL: the registry goes with the state). */
void mbL_sub_release(mbL_sub *s, int unsubscribe, lua_State *L) {
  mbL_state *S = s->S;
  if (!S) return;
  if (unsubscribe) mb_unsubscribe(s->sub);
  s->sub = NULL;
  s->S = NULL;
  if (s->prev)
    s->prev->next = s->next;
  else
    S->subs = s->next;
  if (s->next) s->next->prev = s->prev;
  S->nsubs--;
  if (L) unref(S, L, &s->self_ref);
}

static int sub_close_l(lua_State *L) {
  mbL_sub_release(luaL_checkudata(L, 1, "mb.Subscription"), 1, L);
  return 0;
}


const luaL_Reg mbL_dest_funcs[] = {
    {"destination", l_destination},
    {"_check_destination", l_check_destination},
    {"remove_destination", l_remove_destination},
    {"has_destination", l_has_destination},
    {"destinations", l_destinations},
    {"stats", l_stats},
    {"on", l_on},
    {NULL, NULL},
};

const luaL_Reg mbL_sub_methods[] = {{"close", sub_close_l}, {NULL, NULL}};
