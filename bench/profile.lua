-- bench/profile.lua — runs one benchmark side for a fixed count, with no
-- runner around it, for profilers:
--
--   LUA_CPATH='build/?.so;;' perf record -g lua5.4 bench/profile.lua 1 2000000
--   LUA_CPATH='build/?.so;;' valgrind --tool=callgrind lua5.4 bench/profile.lua 3 50000
--
-- arguments: benchmark id (see run.lua --list), count, and "baseline" to
-- run the baseline side instead of the mb scenario. Sides that run in a
-- child process (4, 5, 6) are better profiled in the child itself:
--
--   LUA_CPATH='build/?.so;;' perf record -g lua5.4 bench/worker_bench.lua async 2 600000
local dir = (arg[0]):match("^(.*)[/\\]") or "."
package.path = dir .. "/?.lua;" .. dir .. "/lib/?.lua;" .. package.path

local id, n, which = arg[1], tonumber(arg[2] or ""), arg[3] or "scenario"
if not id or not n then
  io.stderr:write("usage: lua5.4 bench/profile.lua ID COUNT [baseline]\n")
  os.exit(2)
end
for _, b in ipairs(require "scenarios") do
  if b.id == id then
    local side = b[which]
    if not side then
      io.stderr:write("benchmark ", id,
                      " is a probe: run its child, bench/worker_bench.lua, directly\n")
      os.exit(2)
    end
    if side.setup then side.setup() end
    local t0 = os.clock()
    local got, aux, timed = side.run(n)
    local t = os.clock() - t0
    -- a child process measured itself: profile the child instead, e.g.
    --   perf record -g lua5.4 bench/worker_bench.lua async 2 600000
    if timed then t = timed.cpu end
    local want = side.expect(n, aux)
    if got ~= want then
      io.stderr:write("WRONG RESULT: got ", got, ", want ", want, "\n")
      os.exit(1)
    end
    if side.finish then side.finish() end
    print(string.format("%s %s: %d in %.3f s cpu, %.0f ns each", id, side.label, n, t, t / n * 1e9))
    os.exit(0)
  end
end
io.stderr:write("no benchmark ", id, "\n")
os.exit(2)
