/*
 * mbl_value.h — converts between Lua values and the mb value encoding
 * (mb_value.h), and builds the message tables listeners receive. The layer
 * between the core (no Lua) and the module (lmb.c).
 * Tests: spec/api/values_spec.lua.
 */
#ifndef MBL_VALUE_H
#define MBL_VALUE_H

#include <lauxlib.h>
#include <lua.h>

#include "mb.h"

/* Appends the value at idx to b. Checks what can be sent: types, cycles,
 * depth (MB_MAX_DEPTH), and size (max bytes). Never raises; on error returns
 * -1 and writes "<root><path>: <reason>" into err. */
int mbL_encode(lua_State *L, int idx, mb_buf *b, size_t max, const char *root, char *err,
               size_t errlen);

/* Appends the value at idx to b as JSON text, in one pass: the same text,
 * and the same errors, as mb_json_encode of what mbL_encode writes (no size
 * limit). Never raises; on error returns -1, leaves b as it was and writes
 * "<root><path>: <reason>" into err. */
int mbL_json_encode(lua_State *L, int idx, mb_buf *b, const char *root, char *err,
                    size_t errlen);

/* Pushes the value encoded at [p, p+len). May raise only on memory errors;
 * call it where a Lua error is caught (a coroutine or a protected call). */
void mbL_decode(lua_State *L, const uint8_t *p, size_t len);

/* The message tables' keys, as upvalues 2..7 of the C closures that call
 * mbL_push_msg (upvalue 1 is the module's state), and upvalue 8, the
 * state's string cache (MBL_STRINGS, below): mbL_push_keys pushes them in
 * this order (MBL_NUPS values). */
enum { MBL_K_PAYLOAD, MBL_K_VALUES, MBL_K_DESTINATION, MBL_K_ID, MBL_K_REPLY_TO,
       MBL_K_RESPONSE_ID, MBL_NKEYS };
#define MBL_KEY(k) lua_upvalueindex(2 + (k))
#define MBL_NUPS (MBL_NKEYS + 1)
void mbL_push_keys(lua_State *L);

/* The string cache of a state (a userdata, one per state, shared by its
 * closures as upvalue MBL_STRINGS): the short strings decoded last (keys
 * mostly: the same few come in every message), each in a slot chosen by
 * its bytes, and the ids of messages given last to listeners while more
 * deliveries of them were to come (a message with several listeners),
 * each in a slot chosen by its number. A string found there is pushed
 * without hashing and interning its bytes again (the same string object
 * interning would give: Lua interns short strings). The strings are its
 * user values, so they stay alive while cached: at most MBL_NSTR strings
 * of up to MBL_STR_MAX bytes and MBL_NIDS ids per state. */
#define MBL_STRINGS lua_upvalueindex(2 + MBL_NKEYS)
#define MBL_NSTR 64 /* a power of two */
#define MBL_STR_MAX 32
#define MBL_NIDS 4 /* a power of two */

/* Decodes [p, p+len) as mbL_decode does, its short strings through the
 * string cache of the running closure (MBL_STRINGS). */
void mbL_decode_cached(lua_State *L, const uint8_t *p, size_t len);

/* Pushes a fresh message table: destination, payload, values, id, and
 * reply_to / response_id when set. dest_idx (0: none) is a stack slot
 * holding the destination's name as a string (saves interning it again);
 * payload_idx (0: none) a slot holding the payload already decoded, used as
 * is. Call it from a C closure with the upvalues above. */
void mbL_push_msg(lua_State *L, const mb_msg *m, int dest_idx, int payload_idx,
                  const char *node);

/* mb._pretty and mb._masks (mbl_show.c): the one value printer for Lua
 * values, on mb_show.c's pieces, used by lua/mb/pretty.lua (the REPL,
 * `.listen`). They use no upvalue: any state may register them
 * (fuzz/fuzz_pretty.c does). */
extern const luaL_Reg mbL_show_funcs[];

#endif
