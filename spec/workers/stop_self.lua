-- A handler stops its own service (two instances, one per worker with -w
-- 2): stop returns, the handler runs to its end and its answer reaches the
-- request, as with one worker; the delivery is delivered, not dropped.
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
mb.destination("x/self")
assert(mb.load(dir .. "/stop_self_service.lua", {instances = 2, name = "self-stopper"}))
print("request: " .. tostring((mb.request("x/self", "stop", {timeout = 5}))))
local t0 = mb.now()
while #mb.services() > 1 and mb.now() - t0 < 5 do mb.sleep(0.01) end
print("services left: " .. #mb.services())
local s = mb.stats("x/self")
print(("delivered %d failed %d dropped %d"):format(s.delivered, s.failed, s.dropped))
