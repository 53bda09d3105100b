-- A destination's deliveries between services on free workers go on while
-- a handler runs long on the worker of its last sender. The listener (own
-- worker) takes its messages one at a time (concurrency 1); the hog, on the
-- sender's worker, runs up to 10 s of CPU, ending early once the listener
-- has had every message (it writes a file). Placement: main 0, listener 1,
-- sender 2, two idle services 0 and 1, the hog 2 (mbrun -w 3).
--   mbrun -w 3 hostage.lua
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
local flag = os.tmpname()
os.remove(flag)
mb.destination("h/d", {concurrency = 1})
mb.destination("h/go")
mb.destination("h/hog")
mb.destination("h/seen")
mb.destination("h/hogged")
local seen, hogged = 0, nil
mb.listen("h/seen", function() seen = seen + 1 end)
mb.listen("h/hogged", function(m) hogged = m.payload end)
mb.load(dir .. "/hostage_part.lua", {name = "listener", args = {"listener", flag}})
mb.load(dir .. "/hostage_part.lua", {name = "sender", args = {"sender"}})
mb.load(dir .. "/hostage_part.lua", {name = "idle1", args = {"idle"}})
mb.load(dir .. "/hostage_part.lua", {name = "idle2", args = {"idle"}})
mb.load(dir .. "/hostage_part.lua", {name = "hog", args = {"hog", flag}})
local w = {}
for _, s in ipairs(mb.services()) do w[s.name] = s.worker end
assert(w.listener ~= w.sender and w.hog == w.sender and w.listener ~= 0,
       "placement changed: listener " .. w.listener .. ", sender " .. w.sender .. ", hog " .. w.hog)
mb.send("h/go", 1)
mb.sleep(0.02)
mb.send("h/hog", 1)
mb.sleep(0.1)
for i = 11, 13 do assert(mb.send("h/d", i)) end -- from worker 0 too
while not hogged do mb.sleep(0.01) end
while seen < 8 do mb.sleep(0.01) end
os.remove(flag)
print(hogged == "released" and "ok deliveries went on beside the hog" or "starved: " .. hogged)
