-- A repeating timer on another worker stops itself and then goes on
-- working: the bus must not look idle in between (the send is delivered).
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
mb.destination("t/d")
mb.listen("t/d", function(m) print("received " .. m.payload) end)
mb.load(dir .. "/ticker.lua")
