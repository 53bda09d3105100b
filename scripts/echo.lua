-- echo.lua: a responder that answers every message with the payload and
-- the values it got, so mb.request (and reply_to call-backs) work against it.
--
--   assert(mb.load("scripts/echo.lua", {args = {{destination = "svc/echo", delay = 0.1}}}))
--   local payload, reply = mb.request("svc/echo", {n = 1}, {values = {k = "v"}})
--   -- payload == {n = 1}, reply.values == {k = "v"}
--
-- Options (one table):
--   destination   name of the destination to answer at (required; it must
--                 exist: declare it first)
--   delay         seconds to wait before answering (default 0). The wait is
--                 an mb.sleep, so on a parallel destination many messages
--                 wait at once (up to its concurrency); on a serial one they
--                 wait one after another.
--
-- The reply is sent with mb.reply, so a nil payload is echoed too, and
-- values come back as the reply's values. A message that expects no reply
-- (a plain send, no reply_to) is taken and nothing is sent. Loaded with
-- `instances = N`, the instances share the messages. Starts no timer.

local options = dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or ".") .. "/lib/options.lua")
local o = options.new("echo.lua")
local fail = o.fail

local opts = o.check(..., {"destination", "delay"}, '{destination = "svc/echo"}')
local destination = o.name(opts, "destination")
local delay = opts.delay or 0
if type(delay) ~= "number" or delay < 0 or delay ~= delay then
  fail("option 'delay' must be a number of seconds, 0 or more")
end

o.listen(destination, function(msg)
  if delay > 0 then mb.sleep(delay) end
  -- nil, "closed: ..." when nobody waits for an answer: nothing to do
  mb.reply(msg, msg.payload, msg.values)
end)
