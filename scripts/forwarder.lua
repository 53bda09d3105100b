-- forwarder.lua: a delay/forwarder. Takes every message that arrives at
-- `from` and, `delay` seconds later, sends its payload and values to `to`.
--
--   mb.load("scripts/forwarder.lua", {args = {{from = "shop/orders", to = "shop/audit", delay = 0.5}}})
--
-- Options (one table):
--   from          destination to listen at (required; it must exist)
--   to            destination to send to (required, different from `from`;
--                 it need not exist yet when the forwarder loads)
--   delay         seconds to wait before forwarding (default 0)
--
-- The forwarded message is a new message (its own id) with the same payload
-- and values; reply_to is not carried over (a reply would answer the
-- forwarded message, not the original), and a request made at `from` gets
-- no answer from the forwarder.
--
-- The wait is an mb.sleep inside the handler, so the delivery at `from`
-- ends only once the message is forwarded: on a serial `from` the messages
-- are forwarded one after another, each `delay` after the previous one; on
-- a parallel `from` up to its concurrency (default 64) wait at once, in no
-- guaranteed order, and the throughput is at most concurrency / delay
-- messages per second. A `to` with on_full = "block" makes the forwarder wait for
-- room.
--
-- A forward the bus refuses (no_destination, no_listeners, queue_full,
-- closed) is never dropped silently: the handler raises an error naming the
-- message, `from`, `to` and the reason; the runtime prints it to stderr, the
-- delivery at `from` counts as failed (and reaches mb/dead-letters when that
-- has listeners), and mbrun exits 1. Starts no timer.

local NAME = "forwarder.lua"
local function fail(fmt, ...) error(NAME .. ": " .. fmt:format(...), 0) end

local function is_name(s)
  return type(s) == "string" and #s >= 1 and #s <= 255 and s:match("^[A-Za-z0-9_./:-]+$") ~= nil
end

local opts = ...
if opts == nil then opts = {} end
if type(opts) ~= "table" then
  fail("expects one table of options, e.g. {from = \"a\", to = \"b\", delay = 1}, got a %s", type(opts))
end
local KNOWN = {from = true, to = true, delay = true}
for k in pairs(opts) do
  if not KNOWN[k] then fail("unknown option '%s'", tostring(k)) end
end
for _, key in ipairs {"from", "to"} do
  if opts[key] == nil then fail("option '%s' is required", key) end
  if not is_name(opts[key]) then fail("option '%s' must be a destination name", key) end
end
local from, to = opts.from, opts.to
if from == to then fail("options 'from' and 'to' must be different destinations") end
local delay = opts.delay or 0
if type(delay) ~= "number" or not (delay >= 0) or delay == math.huge then
  fail("option 'delay' must be a number of seconds, 0 or more")
end
if not mb.has_destination(from) then
  fail("no destination '%s' to listen at (declare it first with mb.destination)", from)
end

local ok, err = mb.listen(from, function(msg)
  if delay > 0 then mb.sleep(delay) end
  local id, serr = mb.send(to, msg.payload, {values = msg.values})
  if not id then
    error(("%s: cannot forward message %s from '%s' to '%s': %s"):format(NAME, msg.id, from, to, serr), 0)
  end
end)
if not ok then fail("cannot listen at '%s': %s", from, err) end
