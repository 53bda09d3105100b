-- bench/workers/cpu.lua — the CPU-bound listener of benchmark 6: for each
-- message at wb/cpu runs `iters` rounds of integer work (about 200 µs,
-- calibrated by the runner; bench/lib/work.lua) and tells wb/tally the
-- message id and the result.
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
local work = dofile(dir .. "/../lib/work.lua")
local iters = ...
mb.send("wb/hello", {role = "cpu", worker = (mb.worker())})
mb.listen("wb/cpu", function(msg)
  local id = msg.payload.id
  assert(mb.send("wb/tally", {id = id, r = work(iters, id)}))
end)
