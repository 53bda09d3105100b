-- tools/failalloc.lua — allocation-failure injection (as SQLite and Lua's
-- own tests do): runs each scenario once to count its allocations, then
-- once per allocation N with the Nth failing (MB_FAIL_AT=N, the
-- build/failalloc build: runtime/core/mb_alloc.h, runtime/core/mb_failalloc.c), and
-- requires of every run:
--   no crash (no signal, no hang past the timeout), no sanitizer report
--   (ASan, UBSan, LeakSanitizer: no leak), no Lua panic;
--   an error reported (exit status 1 or 2 with a message on stderr) or
--   success;
--   the stats invariant: the scenarios print "invariant ok" (every
--   destination has delivered + failed + dropped == deliveries, nothing
--   pending or in flight); under mbrun, its summary reports nothing left
--   pending or still running.
--
--   lua5.4 tools/failalloc.lua [--dir build/failalloc] [--runs R] [--count K]
--                              [--only NAME] [--timeout S] [--from N]
--
-- --count K: allocations N..N+K-1 fail (MB_FAIL_COUNT). With K = 1 Lua
-- itself often absorbs the failure (it collects garbage and tries again);
-- K = 2 or more makes it raise "not enough memory".
-- --runs R: at most R runs per scenario, N striding evenly over the
-- allocations (0: every N). Prints one line per failing run (with the
-- command to reproduce it) and a summary: allocation points per scenario,
-- runs, reached (the Nth allocation happened and failed), outcomes. Exits 1
-- when any run failed. Run from the repository's top folder.

local opts = {dir = "build/failalloc", runs = 0, timeout = 60, from = 1, count = 1}
do
  local i = 1
  while arg[i] do
    local k, v = arg[i]:match("^%-%-(%w+)$"), arg[i + 1]
    if not k or opts[k] == nil and k ~= "only" or not v then
      io.stderr:write("usage: lua5.4 tools/failalloc.lua [--dir D] [--runs R] [--count K] ",
        "[--only NAME] [--timeout S] [--from N]\n")
      os.exit(2)
    end
    opts[k] = tonumber(v) or v
    i = i + 2
  end
end

local function sh_capture(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("a")
  p:close()
  return s
end

local cc = os.getenv("CC") or "cc"
local preload = sh_capture("env -u LD_PRELOAD " .. cc .. " -print-file-name=libasan.so"):gsub("%s+$", "") .. ":"
  .. sh_capture("env -u LD_PRELOAD " .. cc .. " -print-file-name=libubsan.so"):gsub("%s+$", "")
local SAN_ENV = "ASAN_OPTIONS=detect_leaks=1:exitcode=99 UBSAN_OPTIONS=print_stacktrace=1"
-- mb.so preloaded as well: still mapped when LeakSanitizer reports at exit
local LUA = ("%s LD_PRELOAD=%s:%s/mb.so LUA_CPATH='%s/?.so;;' lua5.4"):format(SAN_ENV, preload,
  opts.dir, opts.dir)
local MBRUN = SAN_ENV .. " MB_LUA_DIR=lua " .. opts.dir .. "/mbrun" -- lua/: wherever mbrun is

local scenarios = {
  {name = "demo", cmd = MBRUN .. " -w 2 -c examples/jungle-gyms/config.lua "
    .. "examples/jungle-gyms/scenario.lua", mbrun = true},
  {name = "reqreply", cmd = LUA .. " spec/failalloc/reqreply.lua"},
  {name = "loadstop", cmd = LUA .. " spec/failalloc/loadstop.lua"},
  {name = "reload", cmd = LUA .. " spec/failalloc/reload.lua"},
}

local tmp = os.tmpname()
local out_f, err_f, rep_f = tmp .. ".out", tmp .. ".err", tmp .. ".rep"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- Runs one scenario with allocation n failing (0: none): returns the
-- outcome ("ok", "error" or a failure word), a note, and the report.
local function run(sc, n)
  os.remove(rep_f)
  local cmd = ("MB_FAIL_AT=%d MB_FAIL_COUNT=%d MB_FAIL_REPORT=%s timeout -s KILL %d env %s > %s "
    .. "2> %s; echo $?"):format(n, opts.count, rep_f, opts.timeout, sc.cmd, out_f, err_f)
  local code = tonumber(sh_capture(cmd):match("(%d+)%s*$"))
  local out, err, rep = read(out_f), read(err_f), read(rep_f)
  local report = {allocations = tonumber(rep:match("allocations (%d+)")),
                  failed = tonumber(rep:match("failed (%d+)")) or 0}
  local function first_lines(s)
    local lines = {}
    for l in s:gmatch("[^\n]+") do
      if #lines < 6 and not l:match("^%s*$") then lines[#lines + 1] = "    " .. l end
    end
    return table.concat(lines, "\n")
  end
  local san = err:match("ERROR: %w+Sanitizer[^\n]*") or err:match("[^\n]*runtime error:[^\n]*")
    or err:match("SUMMARY: %w+Sanitizer[^\n]*")
  if code == 137 or code == 124 then return "HANG", first_lines(err), report end
  if san or code == 99 then return "SANITIZER", (san or "") .. "\n" .. first_lines(err), report end
  if err:match("PANIC") then return "PANIC", first_lines(err), report end
  if code > 2 then return "CRASH", ("exit status %d\n%s"):format(code, first_lines(err)), report end
  if sc.mbrun then
    local lost = err:match("[^\n]*left pending[^\n]*") or err:match("[^\n]*still running[^\n]*")
    if lost then return "INVARIANT", lost, report end
  else
    local broken = out:match("invariant BROKEN[^\n]*")
    if broken then return "INVARIANT", broken, report end
    if not out:match("invariant ok") and code == 0 then
      return "SILENT", "exit 0 without the invariant line", report
    end
  end
  if code == 0 and not err:match("%S") then return "ok", nil, report end
  if code == 0 then return "error", nil, report end -- reported, and the run went on
  if err:match("%S") then return "error", nil, report end
  return "SILENT", ("exit status %d and nothing on stderr"):format(code), report
end

local failures = 0
local summary = {}
for _, sc in ipairs(scenarios) do
  if not opts.only or opts.only == sc.name then
    local outcome, note, rep = run(sc, 0)
    if outcome ~= "ok" or not rep.allocations then
      print(("%s: fails without any injected failure: %s\n%s"):format(sc.name, outcome,
        note or "(no allocation report: is this the failalloc build?)"))
      failures = failures + 1
    else
      local total = rep.allocations
      local stride = opts.runs > 0 and math.max(1, math.ceil(total / opts.runs)) or 1
      local s = {name = sc.name, total = total, runs = 0, reached = 0, ok = 0, error = 0, bad = 0}
      for n = opts.from, total, stride do
        local o, why, r = run(sc, n)
        s.runs = s.runs + 1
        if r.failed > 0 then s.reached = s.reached + 1 end
        if o == "ok" or o == "error" then
          s[o] = s[o] + 1
        else
          s.bad = s.bad + 1
          failures = failures + 1
          print(("%s N=%d: %s\n%s\n  reproduce: MB_FAIL_AT=%d MB_FAIL_COUNT=%d %s"):format(sc.name,
            n, o, why or "", n, opts.count, sc.cmd))
        end
      end
      summary[#summary + 1] = s
    end
  end
end
os.remove(out_f)
os.remove(err_f)
os.remove(rep_f)
os.remove(tmp)

print(("%-10s %12s %6s %8s %8s %8s %6s"):format("scenario", "allocations", "runs", "reached",
  "success", "error", "FAIL"))
for _, s in ipairs(summary) do
  print(("%-10s %12d %6d %8d %8d %8d %6d"):format(s.name, s.total, s.runs, s.reached, s.ok,
    s.error, s.bad))
end
if failures > 0 then
  print(("failalloc: %d failing run%s"):format(failures, failures > 1 and "s" or ""))
  os.exit(1)
end
print("failalloc: every run crash-free, leak-free, reported or succeeded, invariant kept")
