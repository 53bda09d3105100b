-- forwarder.lua: a delay/forwarder. Takes every message that arrives at
-- `from` and, `delay` seconds later, sends its payload and values to `to`.
--
--   assert(mb.load("scripts/forwarder.lua", {args = {{from = "shop/orders", to = "shop/audit", delay = 0.5}}}))
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
-- a parallel `from` up to its concurrency (default 64 per worker) wait at once, in no
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
local options = dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or ".") .. "/lib/options.lua")
local o = options.new(NAME)
local fail = o.fail

local opts = o.check(..., {"from", "to", "delay"}, '{from = "a", to = "b", delay = 1}')
local from, to = o.name(opts, "from"), o.name(opts, "to")
if from == to then fail("options 'from' and 'to' must be different destinations") end
local delay = opts.delay or 0
if type(delay) ~= "number" or not (delay >= 0) or delay == math.huge then
  fail("option 'delay' must be a number of seconds, 0 or more")
end
o.exist({from}, "listen at")

o.listen(from, function(msg)
  if delay > 0 then mb.sleep(delay) end
  local id, serr = mb.send(to, msg.payload, {values = msg.values})
  if not id then
    error(("%s: cannot forward message %s from '%s' to '%s': %s"):format(NAME, msg.id, from, to, serr), 0)
  end
end)
