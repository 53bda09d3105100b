-- Destination semantics across workers; run as `mbrun -w N semantics.lua`.
-- Prints one "ok <what>" line per check; any failed check raises (exit 1).
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
local _, nworkers = mb.worker()

-- 1. serial: one message at a time, in send order, through every listener,
--    with the listeners in services spread over the workers
mb.destination("w/serial", {type = "serial"})
mb.destination("w/check", {type = "synchronous"})
local log = {}
mb.listen("w/check", function(m)
  log[#log + 1] = m.payload.who .. m.payload.i .. m.payload.phase
  return true
end)
local a = mb.load(dir .. "/serial_listener.lua", {args = {"a"}})
local b = mb.load(dir .. "/serial_listener.lua", {args = {"b"}})
for i = 1, 30 do assert(mb.send("w/serial", i)) end
while mb.stats("w/serial").delivered < 60 do mb.sleep(0.005) end
local expected = {}
for i = 1, 30 do
  for _, who in ipairs({"a", "b"}) do
    expected[#expected + 1] = who .. i .. "start"
    expected[#expected + 1] = who .. i .. "end"
  end
end
assert(#log == #expected, "serial: " .. #log .. " events")
for i = 1, #log do assert(log[i] == expected[i], "serial: event " .. i .. " is " .. log[i]) end
print("ok serial order across workers")
a:stop()
b:stop()

-- 2. parallel: instances share the work, on different workers
mb.destination("w/par")
mb.destination("w/where")
local seen = {}
mb.listen("w/where", function(m) seen[m.payload] = (seen[m.payload] or 0) + 1 end)
local inst = mb.load(dir .. "/busy.lua", {instances = 4})
for i = 1, 200 do assert(mb.send("w/par", i)) end
while mb.stats("w/par").delivered < 200 do mb.sleep(0.005) end
while mb.stats("w/where").delivered < 200 do mb.sleep(0.005) end
local workers_used, total = 0, 0
for _, n in pairs(seen) do
  workers_used = workers_used + 1
  total = total + n
end
assert(total == 200, "parallel: " .. total .. " deliveries")
assert(mb.stats("w/par").deliveries == 200, "parallel: one delivery per message")
assert(workers_used == math.min(4, nworkers), "parallel: " .. workers_used .. " workers used")
print("ok parallel instances on " .. workers_used .. " workers")
inst:stop()

-- 3. synchronous: send returns once listeners on other workers ran
mb.destination("w/sync", {type = "synchronous"})
mb.destination("w/events", {type = "synchronous"})
local events = {}
mb.listen("w/events", function(m) events[#events + 1] = m.payload end)
local slow = mb.load(dir .. "/slow_sync.lua")
assert(mb.send("w/sync", "x"))
events[#events + 1] = "send returned"
assert(events[1] == "listener done" and events[2] == "send returned",
  "synchronous: " .. table.concat(events, ", "))
print("ok synchronous send waits for other workers")

-- 4. request/reply across workers: reply, timeout, failure, no_listeners
mb.destination("w/calc")
mb.destination("w/none")
local calc = mb.load(dir .. "/calc.lua")
assert(mb.request("w/calc", {op = "add", a = 2, b = 3}) == 5)
local t0 = mb.now()
local r, err = mb.request("w/calc", {op = "sleep", s = 0.5}, {timeout = 0.1})
assert(r == nil and err:match("^timeout: "), "timeout: " .. tostring(err))
assert(mb.now() - t0 < 0.4, "timeout took " .. (mb.now() - t0))
r, err = mb.request("w/calc", {op = "fail"}, {timeout = 5})
assert(r == nil and err:match("^failed: .*calc refuses"), "failed: " .. tostring(err))
r, err = mb.request("w/none", 1, {timeout = 5})
assert(r == nil and err:match("^no_listeners: "), "no_listeners: " .. tostring(err))
print("ok request across workers")

-- 5. request_all gathers from groups on different workers
local more = {mb.load(dir .. "/calc.lua"), mb.load(dir .. "/calc.lua")}
local answers = mb.request_all("w/calc", {op = "add", a = 1, b = 1}, {timeout = 2})
assert(#answers == 3, "request_all: " .. #answers .. " answers")
for _, ans in ipairs(answers) do assert(ans.payload == 2, tostring(ans.error)) end
print("ok request_all across workers")
for _, h in ipairs(more) do h:stop() end
-- the statistics stay exact: the failure above and the late reply counted
while mb.stats("w/calc").in_flight > 0 do mb.sleep(0.01) end
local c = mb.stats("w/calc")
assert(c.delivered + c.failed + c.dropped == c.deliveries, "calc: invariant")
assert(c.failed == 1 and c.timeouts == 1 and c.deliveries == 6 and c.replies == 5,
  ("calc: failed %d timeouts %d deliveries %d replies %d"):format(c.failed, c.timeouts,
    c.deliveries, c.replies))
print("ok statistics exact across workers")

-- 6. stopping a service: its open and queued deliveries are dropped, and
--    every delivery is accounted for
mb.destination("w/stopme", {type = "serial"})
local victim = mb.load(dir .. "/slow_serial.lua")
for i = 1, 5 do assert(mb.send("w/stopme", i)) end
while mb.stats("w/stopme").in_flight == 0 do mb.sleep(0.001) end
victim:stop()
assert(not select(1, mb.send("w/stopme", 6)), "a stopped service's destination has no listener")
while mb.stats("w/stopme").pending > 0 or mb.stats("w/stopme").in_flight > 0 do mb.sleep(0.005) end
local s = mb.stats("w/stopme")
assert(s.delivered + s.failed + s.dropped == s.deliveries, "stop: invariant")
assert(s.dropped == 5 and s.delivered == 0, "stop: dropped " .. s.dropped)
print("ok stopped service: 5 dropped, none lost")
mb.remove_destination("w/stopme") -- its drops are expected: not a failure of the run
calc:stop()
slow:stop()
for _, d in ipairs(mb.destinations()) do mb.remove_destination(d) end
