-- A synchronous send holds a delivery to run inline for a service that an
-- earlier listener of the same send stops: it is dropped, not run.
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
mb.destination("x/sync", {type = "synchronous"})
local h
mb.listen("x/sync", function() h:stop() end)
h = mb.load(dir .. "/victim.lua")
print("send " .. tostring(mb.send("x/sync", "hello")))
local s = mb.stats("x/sync")
print(("delivered %d dropped %d deliveries %d"):format(s.delivered, s.dropped, s.deliveries))
mb.remove_destination("x/sync")
