-- bench/profile.lua — runs one benchmark side for a fixed count, with no
-- runner around it, for profilers:
--
--   LUA_CPATH='build/?.so;;' perf record -g lua5.4 bench/profile.lua 1 2000000
--   LUA_CPATH='build/?.so;;' valgrind --tool=callgrind lua5.4 bench/profile.lua 3 50000
--
-- arguments: benchmark id (see run.lua --list), count, and "baseline" to
-- run the baseline side instead of the mb scenario.
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
    if side.setup then side.setup() end
    local t0 = os.clock()
    local got, aux = side.run(n)
    local t = os.clock() - t0
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
