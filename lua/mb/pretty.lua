-- mb.pretty: Lua values as readable Lua-like text, for the REPL and its
-- `.listen` (and anyone who wants it: `local pretty = require "mb.pretty".pretty`).
--
--   pretty({b = 2, a = {1, 2.0}, password = "x"})
--   --> {a = {1, 2.0}, b = 2, password = "********"}
--
-- The printer is the one value printer, in C: mb._pretty
-- (runtime/lua/mbl_show.c, on runtime/core/mb_show.c's pieces), which says
-- what the text looks like. On one line, data prints as `mbrun --trace`
-- shows it: the same scalars, keys in the same order, the same masks.
--   pretty(value [, opts]): opts.width (columns for one line, default 72;
--     math.huge: always one line), opts.depth (table levels, default 10).
--   masks(k): whether the value under key k is hidden.
--
--   line(value, max): the text on one line, cut after max
--     bytes with "..." as mbrun --trace cuts payloads (for `.listen`).
--
-- Owns nothing and sets no globals; tested by spec/repl/repl_lua_spec.lua.

local mb = require "mb"

return {pretty = mb._pretty, masks = mb._masks, line = mb._line}
