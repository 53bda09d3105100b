/*
 * mbl_share.c — share = true (SPEC section 2): a listener in the sending
 * service's own Lua state gets the sender's payload table itself. Owns the
 * state's record of those tables (S->sending, S->sq, S->shared). Used by
 * mb.send / mb.request (mbl_msg.c) before and after a send, and by a
 * handler's body to take the table. Tests: spec/api/share_spec.lua.
 */
#include "mbl_private.h"

/* SPEC section 2: a listener in the sender's own state gets the payload
 * table sent, not a copy. The message still carries the encoded payload
 * (the check of what can be sent, listeners elsewhere, JSON listeners and
 * dead letters use it); the core marks a message sent to a share
 * destination (mb_msg_shared), and a handler of the sending state takes
 * the sender's table instead of decoding:
 * - during the send (a synchronous destination delivers inline), from the
 *   sender's stack: S->sending, a chain of the sends under way;
 * - later, from S->shared (message id -> table), where the sender keeps it
 *   after the send, with a reference to the message (S->sq, oldest first)
 *   so that the entry goes only once the core holds the message no more
 *   (mb_msg_sole): the sweep drops those left alone by every queue,
 *   delivery and request.
 * A state's own deliveries never run while it is in mb.send, but inline,
 * so keeping the table after the send is in time. None of it raises: out
 * of memory, a listener gets a copy. */

/* S->sq is a ring of sq_cap (a power of two) slots, sq_n of them in use
 * from sq_head on, some of them emptied (NULL) by a full sweep; slot i's
 * table is at S->shared[i + 1], in the table's array part, which is sized
 * with the ring: writing there never allocates, so nothing here raises
 * but growing, which runs protected. */
#define SQ_SLOT(S, k) (((S)->sq_head + (k)) & ((S)->sq_cap - 1))

/* Empties slot i: its table and the reference. */
static void share_drop(mbL_state *S, lua_State *L, size_t i) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->shared);
  lua_pushnil(L);
  lua_rawseti(L, -2, (lua_Integer)i + 1);
  lua_pop(L, 1);
  mb_msg_unref(S->sq[i]);
  S->sq[i] = NULL;
}

void mbL_share_sweep(mbL_state *S, lua_State *L, int all) {
  /* one message held for long (a slow listener elsewhere) keeps the later
   * ones from the loop below: now and then, a sweep of them all (it leaves
   * holes, which the next growth of the ring closes) */
  int full = all || S->sq_n > 2 * S->sq_live + 64;
  if (full)
    for (size_t k = 0; k < S->sq_n; k++) {
      size_t i = SQ_SLOT(S, k);
      if (S->sq[i] && mb_msg_sole(S->sq[i])) share_drop(S, L, i);
    }
  while (S->sq_n && (!S->sq[S->sq_head] || mb_msg_sole(S->sq[S->sq_head]))) {
    if (S->sq[S->sq_head]) share_drop(S, L, S->sq_head);
    S->sq_head = (S->sq_head + 1) & (S->sq_cap - 1);
    S->sq_n--;
  }
  if (!S->sq_n) S->sq_head = S->sq_live = 0;
  if (full) S->sq_live = S->sq_n;
}

void mbL_share_release(mbL_state *S) {
  for (size_t k = 0; k < S->sq_n; k++) mb_msg_unref(S->sq[SQ_SLOT(S, k)]);
  free(S->sq);
  S->sq = NULL;
  S->sq_head = S->sq_n = S->sq_cap = S->sq_live = S->sq_hint = 0;
  /* the registry table goes with the Lua state */
}

/* Grows the ring (and the table) to hold what is live and as much again,
 * live entries first in their order; protected: (state, new ring). */
static int share_grow_p(lua_State *L) {
  mbL_state *S = lua_touserdata(L, 1);
  mb_msg **q = lua_touserdata(L, 2);
  size_t cap = (size_t)lua_tointeger(L, 3), k = 0;
  lua_createtable(L, (int)cap, 0);
  if (S->shared > 0) lua_rawgeti(L, LUA_REGISTRYINDEX, S->shared);
  for (size_t j = 0; j < S->sq_n; j++) {
    size_t i = SQ_SLOT(S, j);
    if (!S->sq[i]) continue;
    lua_rawgeti(L, -1, (lua_Integer)i + 1);
    lua_rawseti(L, -3, (lua_Integer)k + 1);
    q[k++] = S->sq[i];
  }
  if (S->shared > 0) lua_pop(L, 1);
  if (S->shared > 0) {
    lua_rawseti(L, LUA_REGISTRYINDEX, S->shared); /* an existing key */
  } else {
    S->shared = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  /* nothing above raised: the new ring is S's */
  free(S->sq);
  S->sq = q;
  S->sq_cap = cap;
  S->sq_head = S->sq_hint = 0;
  S->sq_n = S->sq_live = k;
  return 0;
}

/* Before the send of m with the payload at pidx: 1 when a listener of S
 * may have to get that table (a share destination exists; the payload is
 * a table), m then held by s (a reference) and S->sending. */
int mbL_share_before(lua_State *L, mbL_state *S, mb_msg *m, int pidx, int json,
                     mbL_sending *s) {
  if (!mb_runtime_shares(core(S)) || json || lua_type(L, pidx) != LUA_TTABLE) return 0;
  s->m = mb_msg_ref(m);
  s->L = L;
  s->idx = pidx;
  s->prev = S->sending;
  S->sending = s;
  return 1;
}

/* After that send: keeps the table while a delivery of m to S may still
 * come (m went to a share destination and the core still holds it). */
void mbL_share_after(lua_State *L, mbL_state *S, mbL_sending *s) {
  mb_msg *m = s->m;
  S->sending = s->prev;
  if (!mb_msg_shared(m) || mb_msg_sole(m)) {
    mb_msg_unref(m);
    return;
  }
  mbL_share_sweep(S, L, 0);
  if (S->sq_n == S->sq_cap) {
    mbL_share_sweep(S, L, 1); /* what is live decides the new size */
    size_t live = 0, cap = S->sq_cap ? S->sq_cap : 64;
    for (size_t k = 0; k < S->sq_n; k++) live += S->sq[SQ_SLOT(S, k)] != NULL;
    while (cap < 2 * (live + 1)) cap *= 2;
    mb_msg **q = malloc(cap * sizeof *q);
    lua_pushcfunction(L, share_grow_p);
    lua_pushlightuserdata(L, S);
    lua_pushlightuserdata(L, q);
    lua_pushinteger(L, (lua_Integer)cap);
    if (!q || lua_pcall(L, 3, 0, 0) != LUA_OK) {
      if (q) lua_pop(L, 1); /* the error */
      else lua_pop(L, 4);
      free(q);
      mb_msg_unref(m); /* out of memory: its listeners get copies */
      return;
    }
  }
  size_t i = SQ_SLOT(S, S->sq_n);
  S->sq[i] = m; /* the reference goes with it */
  S->sq_n++;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->shared);
  lua_pushvalue(L, s->idx);
  lua_rawseti(L, -2, (lua_Integer)i + 1); /* in the array part: no allocation */
  lua_pop(L, 1);
}

/* For a handler of S (on its coroutine L): pushes the payload table S sent
 * as m, if S sent it to a share destination, and returns 1; else pushes
 * nothing, returns 0. */
int mbL_share_push(lua_State *L, mbL_state *S, const mb_msg *m) {
  if (!mb_msg_shared(m)) return 0;
  for (mbL_sending *s = S->sending; s; s = s->prev)
    if (s->m == m) {
      lua_pushvalue(s->L, s->idx);
      lua_xmove(s->L, L, 1);
      return 1;
    }
  /* deliveries mostly come in the order of the sends: from the slot after
   * the one found last time, round the ring */
  size_t from = (S->sq_hint - S->sq_head) & (S->sq_cap - 1);
  if (from >= S->sq_n) from = 0;
  for (size_t j = 0; j < S->sq_n; j++) {
    size_t k = from + j < S->sq_n ? from + j : from + j - S->sq_n;
    size_t i = SQ_SLOT(S, k);
    if (S->sq[i] == m) {
      S->sq_hint = (i + 1) & (S->sq_cap - 1);
      lua_rawgeti(L, LUA_REGISTRYINDEX, S->shared);
      lua_rawgeti(L, -1, (lua_Integer)i + 1);
      lua_remove(L, -2);
      return 1;
    }
  }
  return 0;
}

