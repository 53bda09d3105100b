/*
 * bench/c/limit.c — benchmark 1c: the floor under any bus that keeps
 * SPEC.md's promises about a message, in C, with nothing of a bus around
 * it. send(payload) takes the snapshot a listener will own (a fresh table
 * with the payload's fields) and returns a 16-hex-digit id; run(fn) calls fn
 * once per queued message with {destination, payload, values = {}, id};
 * run_payloads(fn) calls it with the snapshot alone; run_fan(fns) gives
 * each message to every function of a list (benchmark 7c). send_shared
 * queues the sender's table itself (share = true: benchmarks 1zc, 1zk) and
 * run_co calls fn in a coroutine, as a bus whose handlers may wait must.
 * send_now(payload, fn) delivers at once (benchmark 2c, the synchronous
 * floor) and request(payload, fn) makes both messages of a round trip
 * (benchmark 3c).
 * No encoding, no statistics, no coroutine, no lock, one destination: what
 * is left is the Lua objects the message must have, and the calls.
 *
 * Built by `make bench` as build/mb_limit.so (require "mb_limit").
 */
#include <lauxlib.h>
#include <lua.h>

enum {
  K_PAYLOAD = 1, K_DESTINATION, K_VALUES, K_ID, K_DEST_NAME, K_QUEUE, K_REPLY_TO,
  K_RESPONSE_ID, K_REPLY_NAME, K_CO, NUP
};

static unsigned long long next_id;
static lua_Integer head = 1, tail;

static void push_id(lua_State *L, unsigned long long v) {
  char b[16];
  for (int i = 15; i >= 0; i--, v >>= 4) b[i] = "0123456789abcdef"[v & 15];
  lua_pushlstring(L, b, sizeof b);
}

/* Pushes a copy of the table at index from (its fields, one level). */
static void push_copy(lua_State *L, int from) {
  lua_createtable(L, 0, 4);
  lua_pushnil(L);
  while (lua_next(L, from)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
}

/* Pushes mb's message {destination, payload, values = {}, id} with the
 * payload at index payload and the id's string at index id. */
static void push_msg_n(lua_State *L, int payload, int id, int nrec) {
  lua_createtable(L, 0, nrec);
  lua_pushvalue(L, lua_upvalueindex(K_PAYLOAD));
  lua_pushvalue(L, payload);
  lua_rawset(L, -3);
  lua_pushvalue(L, lua_upvalueindex(K_DESTINATION));
  lua_pushvalue(L, lua_upvalueindex(K_DEST_NAME));
  lua_rawset(L, -3);
  lua_pushvalue(L, lua_upvalueindex(K_VALUES));
  lua_createtable(L, 0, 0);
  lua_rawset(L, -3);
  lua_pushvalue(L, lua_upvalueindex(K_ID));
  lua_pushvalue(L, id);
  lua_rawset(L, -3);
}

static void push_msg(lua_State *L, int payload, int id) { push_msg_n(L, payload, id, 4); }

/* Calls the function under its nargs arguments on the top of L's stack in
 * the library's coroutine, as a bus whose handlers may wait (mb.sleep,
 * mb.request) must call them; one coroutine, used again while its calls
 * return without waiting (the listeners here never wait; a real bus would
 * take a new one when one does). Leaves nres results on L. */
static void call_co(lua_State *L, int nargs, int nres) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(K_CO));
  int n;
  lua_xmove(L, co, nargs + 1);
  if (lua_resume(co, L, nargs, &n) != LUA_OK) {
    lua_xmove(co, L, 1);
    lua_error(L);
  }
  if (n < nres) luaL_error(L, "the handler returned too few results");
  lua_xmove(co, L, nres);
  lua_settop(co, 0);
}

static int l_send(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(K_QUEUE)); /* 2 */
  push_copy(L, 1);                             /* 3: the snapshot */
  lua_rawseti(L, 2, ++tail);
  push_id(L, ++next_id);
  return 1;
}

/* send_shared(payload): as send, but the listener will get the sender's
 * table itself, as with share = true (benchmarks 1zc and 1zk). */
static int l_send_shared(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(K_QUEUE));
  lua_pushvalue(L, 1);
  lua_rawseti(L, 2, ++tail);
  push_id(L, ++next_id);
  return 1;
}

/* Takes the next queued snapshot to index 3 and its id's string to 4. */
static void take_next(lua_State *L, unsigned long long id) {
  lua_rawgeti(L, 2, head);
  lua_pushnil(L);
  lua_rawseti(L, 2, head);
  push_id(L, id);
  head++;
}

static int l_run(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(K_QUEUE)); /* 2 */
  unsigned long long first = next_id - (unsigned long long)(tail - head);
  while (head <= tail) {
    take_next(L, first++);
    lua_pushvalue(L, 1);
    push_msg(L, 3, 4);
    lua_call(L, 1, 0);
    lua_settop(L, 2);
  }
  head = 1;
  tail = 0;
  return 0;
}

/* send_now(payload, fn): the listener fn gets mb's message around its
 * snapshot at once, in a coroutine (call_co), as a synchronous
 * destination's (benchmark 2c); returns the id's string. */
/* Of send_now and request (payload, fn): pushes the payload's snapshot (3),
 * a new id (4), then fn and its message, with nrec fields, ready for call_co. */
static void deliver_now(lua_State *L, int nrec) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  push_copy(L, 1);       /* 3 */
  push_id(L, ++next_id); /* 4 */
  lua_pushvalue(L, 2);
  push_msg_n(L, 3, 4, nrec);
}

static int l_send_now(lua_State *L) {
  deliver_now(L, 4);
  call_co(L, 1, 0);
  return 1; /* the id */
}

/* request(payload, fn): one round trip with SPEC's two messages and no
 * queue: fn (in a coroutine: call_co) gets the request {destination, payload, values, id, reply_to}
 * around its snapshot and returns the reply payload; returns the reply's
 * snapshot and its message {payload, values, id, response_id}, as
 * mb.request does (benchmark 3c). */
static int l_request(lua_State *L) {
  deliver_now(L, 5); /* 4: the request's id */
  lua_pushvalue(L, lua_upvalueindex(K_REPLY_TO));
  lua_pushvalue(L, lua_upvalueindex(K_REPLY_NAME));
  lua_rawset(L, -3);
  call_co(L, 1, 1); /* 5: the reply */
  luaL_checktype(L, 5, LUA_TTABLE);
  push_copy(L, 5);       /* 6: the requester's copy */
  push_id(L, ++next_id); /* 7 */
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, lua_upvalueindex(K_PAYLOAD));
  lua_pushvalue(L, 6);
  lua_rawset(L, -3);
  lua_pushvalue(L, lua_upvalueindex(K_VALUES));
  lua_createtable(L, 0, 0);
  lua_rawset(L, -3);
  lua_pushvalue(L, lua_upvalueindex(K_ID));
  lua_pushvalue(L, 7);
  lua_rawset(L, -3);
  lua_pushvalue(L, lua_upvalueindex(K_RESPONSE_ID));
  lua_pushvalue(L, 4);
  lua_rawset(L, -3);
  lua_pushvalue(L, 6);
  lua_insert(L, -2);
  return 2;
}

/* run_co(fn): as run, but each call runs in a coroutine (call_co:
 * benchmark 1zk). */
static int l_run_co(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(K_QUEUE)); /* 2 */
  unsigned long long first = next_id - (unsigned long long)(tail - head);
  while (head <= tail) {
    take_next(L, first++); /* 3: the payload, 4: its id */
    lua_pushvalue(L, 1);
    push_msg(L, 3, 4);
    call_co(L, 1, 0);
    lua_settop(L, 2);
  }
  head = 1;
  tail = 0;
  return 0;
}

/* run_payloads(fn): as run, but fn gets the payload's snapshot alone, the
 * least a listener with its own copy could be given (benchmark 1p). */
static int l_run_payloads(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(K_QUEUE)); /* 2 */
  while (head <= tail) {
    lua_pushvalue(L, 1);
    lua_rawgeti(L, 2, head);
    lua_pushnil(L);
    lua_rawseti(L, 2, head);
    head++;
    lua_call(L, 1, 0);
  }
  head = 1;
  tail = 0;
  return 0;
}

/* run_fan(fns): each queued message to every function of the list fns,
 * each with a message of its own around a copy of its own (the last gets
 * the snapshot itself); the id's string is made once per message, as mb
 * caches it for a fan-out (benchmark 7c). */
static int l_run_fan(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_Integer nl = luaL_len(L, 1);
  lua_pushvalue(L, lua_upvalueindex(K_QUEUE)); /* 2 */
  unsigned long long first = next_id - (unsigned long long)(tail - head);
  while (head <= tail) {
    take_next(L, first++);
    for (lua_Integer i = 1; i <= nl; i++) {
      lua_rawgeti(L, 1, i);
      if (i < nl)
        push_copy(L, 3);
      else
        lua_pushvalue(L, 3);
      push_msg(L, lua_gettop(L), 4);
      lua_remove(L, -2);
      lua_call(L, 1, 0);
    }
    lua_settop(L, 2);
  }
  head = 1;
  tail = 0;
  return 0;
}

int luaopen_mb_limit(lua_State *L) {
  static const luaL_Reg fns[] = {{"send", l_send},
                                 {"send_shared", l_send_shared},
                                 {"send_now", l_send_now},
                                 {"request", l_request},
                                 {"run_co", l_run_co},
                                 {"run", l_run},
                                 {"run_payloads", l_run_payloads},
                                 {"run_fan", l_run_fan},
                                 {NULL, NULL}};
  luaL_newlibtable(L, fns);
  lua_pushliteral(L, "payload");
  lua_pushliteral(L, "destination");
  lua_pushliteral(L, "values");
  lua_pushliteral(L, "id");
  lua_pushliteral(L, "bench/limit");
  lua_newtable(L);
  lua_pushliteral(L, "reply_to");
  lua_pushliteral(L, "response_id");
  lua_pushliteral(L, "bench/limit/reply");
  lua_newthread(L);
  luaL_setfuncs(L, fns, NUP - 1);
  return 1;
}
