-- bench/run.lua — the benchmark runner (plain Lua 5.4 with the mb module).
--
--   LUA_CPATH='build/?.so;;' lua5.4 bench/run.lua [options]
--
--   --out PATH      JSON results (env BENCH_OUT; default build/bench.json)
--   --rounds N      measured rounds after the warm-up (env BENCH_ROUNDS; default 9, at least 5)
--   --time S        target seconds per measurement (env BENCH_TIME; default 0.25)
--   --only IDS      comma-separated benchmark ids, e.g. 1,3 (env BENCH_ONLY)
--   --strict        exit 2 when a goal is missed (env BENCH_STRICT=1)
--   --list          list the benchmarks and exit
--
-- For each pair (an mb scenario and its baseline, see bench/scenarios.lua),
-- in one process: calibrate each side so one measurement takes about --time
-- seconds (these runs are the warm-up, with one more full-size A B round),
-- then run A B A B ... for --rounds rounds. Every measurement's result is
-- checked; a wrong one aborts the whole run with exit status 1. Reported per
-- side: median and min-max of ns per unit over the rounds, the rate, and for
-- the scenario the ratio baseline_ns / scenario_ns (> 1: mb is faster) taken
-- round by round (median, min-max). Sides that need several workers run in
-- a child process (bench/worker_bench.lua) which times its own work; a
-- benchmark may fix its rounds, count or target time, and set goals on the
-- ratio, the scenario's rate or its time per unit. Probes (memory) report
-- measured values instead of times.

local dir = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
package.path = dir .. "/?.lua;" .. dir .. "/lib/?.lua;" .. package.path

local function die(fmt, ...)
  io.stderr:write("\n", string.rep("!", 72), "\nbench: ", string.format(fmt, ...), "\n",
                  string.rep("!", 72), "\n")
  io.stderr:flush()
  os.exit(1)
end

for _, m in ipairs {{"mb", "build it with `make all` and run with LUA_CPATH='build/?.so;;'"},
                    {"cjson", "install the Debian package lua-cjson (`make deps`)"},
                    {"mediator", "install the Debian package lua-mediator (`make deps`)"}} do
  local ok, err = pcall(require, m[1])
  if not ok then die("cannot load module '%s': %s\n%s", m[1], m[2], err) end
end
local mb = require "mb"

---------------------------------------------------------------------------
-- options

local opts = {
  out = os.getenv("BENCH_OUT") or "build/bench.json",
  rounds = tonumber(os.getenv("BENCH_ROUNDS") or "") or 9,
  time = tonumber(os.getenv("BENCH_TIME") or "") or 0.25,
  only = os.getenv("BENCH_ONLY"),
  strict = os.getenv("BENCH_STRICT") == "1",
}
do
  local i = 1
  while arg and arg[i] do
    local a = arg[i]
    local function value()
      i = i + 1
      if not arg[i] then die("option %s needs a value", a) end
      return arg[i]
    end
    if a == "--out" then opts.out = value()
    elseif a == "--rounds" then opts.rounds = tonumber(value())
    elseif a == "--time" then opts.time = tonumber(value())
    elseif a == "--only" then opts.only = value()
    elseif a == "--strict" then opts.strict = true
    elseif a == "--list" then opts.list = true
    elseif a == "-h" or a == "--help" then
      local head = io.open(arg[0]):read("a"):match("^(.-)\n\n")
      io.write((("\n" .. head):gsub("\n%-%- ?", "\n")), "\n")
      os.exit(0)
    else die("unknown argument '%s' (try --help)", a) end
    i = i + 1
  end
end
if not opts.rounds or opts.rounds < 5 then die("--rounds must be at least 5") end
if not opts.time or opts.time <= 0 then die("--time must be a positive number of seconds") end

local benches = require "scenarios"
if opts.list then
  for _, b in ipairs(benches) do
    local labels = {}
    for i, side in ipairs(b.sides or {b.scenario, b.baseline}) do labels[i] = side.label end
    print(string.format("%-3s %-34s %s", b.id, b.title, table.concat(labels, "  vs  ")))
  end
  os.exit(0)
end
if opts.only and opts.only ~= "" then
  local want, kept = {}, {}
  for id in opts.only:gmatch("[^,%s]+") do want[id] = true end
  for _, b in ipairs(benches) do if want[b.id] then kept[#kept + 1] = b end end
  if #kept == 0 then die("--only %s matches no benchmark (see --list)", opts.only) end
  benches = kept
end

---------------------------------------------------------------------------
-- measuring

local now, clock = mb.now, os.clock

-- Peak RSS: VmHWM from /proc/self/status, in bytes (nil where there is
-- none); reset_peak() brings it down to the current RSS (Linux:
-- /proc/self/clear_refs, 5) and says whether it could.
local function read_peak()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local kb = f:read("a"):match("VmHWM:%s*(%d+)")
  f:close()
  return kb and tonumber(kb) * 1024
end

local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if not f then return false end
  local ok = f:write("5")
  return f:close() and ok ~= nil
end

-- A side that runs in a child process returns, as run's third value, the
-- {wall, cpu, peak} the child measured of its own work (its start-up and
-- loading are not the benchmark; peak is its VmHWM); those replace the
-- runner's clocks and peak RSS. Returns wall and cpu seconds and the peak
-- RSS in bytes: the runner's own process during this run for a side that
-- runs in it (nil when it cannot be reset).
local function measure(b, side, n)
  collectgarbage("collect")
  local can_peak = reset_peak()
  local t0, c0 = now(), clock()
  local ok, got, aux, timed = pcall(side.run, n)
  local t1, c1 = now(), clock()
  if not ok then die("benchmark %s, %s: raised an error: %s", b.id, side.label, tostring(got)) end
  local want = side.expect(n, aux)
  if got ~= want then
    die("WRONG RESULT in benchmark %s (%s), %s, n = %d\n  got:  %s\n  want: %s", b.id, b.title,
        side.label, n, tostring(got), tostring(want))
  end
  local peak = can_peak and read_peak() or nil
  if timed then
    if timed.wall then return timed.wall, timed.cpu, timed.peak end
    peak = timed.peak
  end
  return t1 - t0, c1 - c0, peak
end

local function two_digits(n) -- rounds to two significant digits
  local p = 1
  while n >= 100 * p do p = p * 10 end
  return math.max(1, math.floor(n / p + 0.5) * p)
end

-- Grows n until a run takes a tenth of the target, then scales it. A
-- benchmark with a fixed n (b.n) is not calibrated; b.time replaces the
-- target of --time.
local function calibrate(b, side)
  if b.n then return b.n end
  local target = b.time or opts.time
  local n = side.n0 or 1000
  local t = measure(b, side, n)
  while t < target / 10 do
    n = n * 4
    t = measure(b, side, n)
  end
  return two_digits(n * target / t)
end

local function median(xs)
  local s = table.move(xs, 1, #xs, 1, {})
  table.sort(s)
  local m = #s // 2
  return #s % 2 == 1 and s[m + 1] or (s[m] + s[m + 1]) / 2
end

local function stats(xs)
  return {median = median(xs), min = math.min(table.unpack(xs)), max = math.max(table.unpack(xs))}
end

local function run_pair(b)
  local A, B = b.scenario, b.baseline
  io.stderr:write(string.format("bench %-3s %-34s ", b.id, b.title))
  io.stderr:flush()
  for _, side in ipairs {A, B} do
    if side.setup then
      local ok, err = pcall(side.setup)
      if not ok then die("benchmark %s, %s: setup failed: %s", b.id, side.label, tostring(err)) end
    end
  end
  local na, nb = calibrate(b, A), calibrate(b, B)
  measure(b, A, na) -- the full-size warm-up round
  measure(b, B, nb)
  local ra = {ns = {}, wall = {}, cpu = {}, peak = {}}
  local rb = {ns = {}, wall = {}, cpu = {}, peak = {}}
  local ratios = {}
  local rounds = b.rounds or opts.rounds
  for r = 1, rounds do
    local wa, ca, pa = measure(b, A, na)
    local wb, cb, pb = measure(b, B, nb)
    ra.wall[r], ra.cpu[r], ra.ns[r], ra.peak[r] = wa, ca, wa / na * 1e9, pa
    rb.wall[r], rb.cpu[r], rb.ns[r], rb.peak[r] = wb, cb, wb / nb * 1e9, pb
    ratios[r] = rb.ns[r] / ra.ns[r]
    io.stderr:write(".")
    io.stderr:flush()
  end
  io.stderr:write("\n")
  for _, side in ipairs {A, B} do
    if side.finish then
      local ok, err = pcall(side.finish)
      if not ok then die("benchmark %s, %s: %s", b.id, side.label, tostring(err)) end
    end
  end
  local function side_result(side, n, rs)
    local ns = stats(rs.ns)
    return {
      label = side.label,
      n = n,
      where = side.where, -- a child's services: role@worker, as it last reported
      ns_per_unit = ns,
      units_per_s = {median = 1e9 / ns.median, min = 1e9 / ns.max, max = 1e9 / ns.min},
      -- VmHWM over each measurement: of the side's own process (a child),
      -- or of the runner's, which it shares with the other in-process sides
      peak_rss = #rs.peak == #rs.ns and stats(rs.peak) or nil,
      process = side.child and "child" or "runner",
      samples = {ns_per_unit = rs.ns, wall_s = rs.wall, cpu_s = rs.cpu,
                 peak_rss = #rs.peak == #rs.ns and rs.peak or nil},
    }
  end
  local ratio = stats(ratios)
  local scenario = side_result(A, na, ra)
  -- goals: a ratio (goal), or the scenario's own rate (goal_rate, units/s
  -- at least) or time (goal_ns, ns per unit at most), on the medians
  local meets_goal -- nil when there is no goal
  if b.goal then meets_goal = ratio.median >= b.goal end
  if b.goal_rate then
    meets_goal = (meets_goal ~= false) and scenario.units_per_s.median >= b.goal_rate
  end
  if b.goal_ns then
    meets_goal = (meets_goal ~= false) and scenario.ns_per_unit.median <= b.goal_ns
  end
  return {
    id = b.id,
    title = b.title,
    unit = b.unit,
    note = b.note,
    rounds = rounds,
    goal = b.goal,
    goal_rate = b.goal_rate,
    goal_ns = b.goal_ns,
    meets_goal = meets_goal,
    ratio = ratio,
    ratio_samples = ratios,
    scenario = scenario,
    baseline = side_result(B, nb, rb),
  }
end

-- A probe (b.kind == "probe") is not timed: each of its sides returns a
-- check and a table of measured values (e.g. bytes); the sides run
-- alternately for b.rounds rounds (default 3), and every value is reported
-- as median (min-max).
local function run_probe(b)
  io.stderr:write(string.format("bench %-3s %-34s ", b.id, b.title))
  io.stderr:flush()
  local rounds = b.rounds or 3
  local samples = {}
  for s = 1, #b.sides do samples[s] = {} end
  for _ = 1, rounds do
    for s, side in ipairs(b.sides) do
      collectgarbage("collect")
      local ok, got, values = pcall(side.run)
      if not ok then
        die("benchmark %s, %s: raised an error: %s", b.id, side.label, tostring(got))
      end
      if got ~= side.expect then
        die("WRONG RESULT in benchmark %s (%s), %s\n  got:  %s\n  want: %s", b.id, b.title,
            side.label, tostring(got), tostring(side.expect))
      end
      for k, v in pairs(values) do
        samples[s][k] = samples[s][k] or {}
        table.insert(samples[s][k], v)
      end
    end
    io.stderr:write(".")
    io.stderr:flush()
  end
  io.stderr:write("\n")
  local sides = {}
  for s, side in ipairs(b.sides) do
    local values = {}
    for k, xs in pairs(samples[s]) do
      local st = stats(xs)
      st.samples = xs
      values[k] = st
    end
    sides[s] = {label = side.label, values = values}
  end
  return {id = b.id, kind = "probe", title = b.title, note = b.note, rounds = rounds,
          metrics = b.metrics, sides = sides}
end

---------------------------------------------------------------------------
-- reporting

local function rate(x)
  if x >= 1e6 then return string.format("%.2f M", x / 1e6) end
  if x >= 1e3 then return string.format("%.1f k", x / 1e3) end
  return string.format("%.0f  ", x)
end

-- a median and its min-max in one unit chosen by the median: ns, us, ms
local function time_cells(med, lo, hi)
  local div, unit = 1, "ns"
  if med >= 1e6 then div, unit = 1e6, "ms" elseif med >= 1e4 then div, unit = 1e3, "us" end
  local function f(x)
    x = x / div
    return x >= 100 and string.format("%.0f", x) or x >= 10 and string.format("%.1f", x)
           or string.format("%.2f", x)
  end
  return string.format("%s %s (%s-%s)", f(med), unit, f(lo), f(hi))
end

local function bytes(x)
  if x >= 1e6 then return string.format("%.1f MB", x / 1e6) end
  if x >= 1e4 then return string.format("%.1f kB", x / 1e3) end
  return string.format("%.0f B", x)
end

local function goal_text(r)
  if r.meets_goal == nil then return "-" end
  local parts = {}
  if r.goal then parts[#parts + 1] = string.format(">= %gx", r.goal) end
  if r.goal_rate then parts[#parts + 1] = string.format(">= %s%s/s", rate(r.goal_rate), r.unit) end
  if r.goal_ns then parts[#parts + 1] = "<= " .. time_cells(r.goal_ns, 0, 0):gsub(" %(.*", "") end
  return table.concat(parts, ", ") .. (r.meets_goal and " met" or " MISSED")
end

local function table_text(results, meta)
  local out = {}
  local function line(...) out[#out + 1] = string.format(...) end
  line("mb benchmarks: %d rounds (A B alternately) after a warm-up, ~%.2g s per measurement",
       meta.settings.rounds, meta.settings.target_s)
  line("%s, mb %s, %s, %s cores, commit %s", meta.lua, meta.mb, meta.host.cpu, meta.host.cores,
       meta.commit)
  line("ratio = baseline ns / mb ns, per round (> 1: mb is faster); median (min-max)")
  line("peak RSS = VmHWM during the measurements, median; * = the runner's own process, shared by")
  line("the in-process sides (reset before each measurement), else the side's own child process")
  line("")
  line("%-4s %-33s %14s %25s %9s   %-19s %s", "id", "benchmark / side", "rate",
       "time/unit (min-max)", "peak RSS", "ratio (min-max)", "goal")
  line("%s", string.rep("-", 122))
  for _, r in ipairs(results) do
    local rounds = r.rounds ~= meta.settings.rounds and string.format(" (%d rounds)", r.rounds)
                   or ""
    line("%-4s %s%s%s", r.id, r.title, rounds, r.note and ("   [" .. r.note .. "]") or "")
    if r.kind == "probe" then
      for _, s in ipairs(r.sides) do
        for _, m in ipairs(r.metrics) do
          local v = s.values[m.key]
          if v then
            line("     %-46s %32s", s.label .. ": " .. m.label,
                 string.format("%s (%s-%s)", bytes(v.median), bytes(v.min), bytes(v.max)))
          end
        end
      end
    else
      for _, which in ipairs {"scenario", "baseline"} do
        local s = r[which]
        local peak = s.peak_rss and bytes(s.peak_rss.median) .. (s.process == "runner" and "*" or " ")
                     or "-"
        local cells = string.format("     %-32s %11s/s %25s %9s", s.label,
                                    rate(s.units_per_s.median) .. r.unit,
                                    time_cells(s.ns_per_unit.median, s.ns_per_unit.min,
                                               s.ns_per_unit.max), peak)
        if which == "scenario" then
          local ratio = string.format("%.2fx (%.2f-%.2f)", r.ratio.median, r.ratio.min, r.ratio.max)
          line("%-90s   %-19s %s", cells, ratio, goal_text(r))
        else
          line("%s", cells)
        end
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- JSON with sorted keys (no dependency on the codecs being measured)
local function to_json(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "nil" then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    local s = string.format("%.15g", v)
    if tonumber(s) ~= v then s = string.format("%.17g", v) end
    return s
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      return ({['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t"})[c]
             or string.format("\\u%04x", c:byte())
    end) .. '"'
  end
  local inner = indent .. "  "
  local parts = {}
  if #v > 0 or next(v) == nil then
    local nested = false
    for i = 1, #v do
      parts[i] = to_json(v[i], inner)
      nested = nested or type(v[i]) == "table"
    end
    if #parts == 0 then return "[]" end
    if not nested then return "[" .. table.concat(parts, ", ") .. "]" end
    return "[\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do parts[i] = inner .. to_json(k) .. ": " .. to_json(v[k], inner) end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

local function first_line(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local s = p:read("l")
  p:close()
  return s
end

local function cpu_model()
  local f = io.open("/proc/cpuinfo")
  if not f then return "unknown cpu" end
  local s = f:read("a")
  f:close()
  return (s:match("model name%s*:%s*([^\n]+)") or "unknown cpu"):gsub("%s+", " ")
end

---------------------------------------------------------------------------

local meta = {
  date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
  commit = (first_line("git rev-parse --short HEAD") or "unknown")
           .. (first_line("git status --porcelain -- runtime") and "+dirty" or ""),
  lua = _VERSION,
  mb = mb.version,
  host = {cpu = cpu_model(), cores = first_line("nproc") or "?"},
  settings = {rounds = opts.rounds, target_s = opts.time},
}

local started = now()
local results = {}
for _, b in ipairs(benches) do
  if b.skip then
    io.stderr:write(string.format("benchmark %s skipped: %s\n", b.id, b.skip))
  else
    results[#results + 1] = b.kind == "probe" and run_probe(b) or run_pair(b)
  end
end
meta.total_s = now() - started

local text = table_text(results, meta)
io.stdout:write("\n", text)
io.stdout:write(string.format("(%.0f s in all)\n", meta.total_s))

local out_dir = opts.out:match("^(.*)/[^/]*$")
if out_dir then os.execute("mkdir -p '" .. out_dir:gsub("'", "'\\''") .. "'") end
local f, err = io.open(opts.out, "w")
if not f then die("cannot write %s: %s", opts.out, err) end
f:write(to_json({meta = meta, results = results}), "\n")
f:close()
io.stdout:write("results written to ", opts.out, "\n")

local missed = {}
for _, r in ipairs(results) do
  if r.meets_goal == false then missed[#missed + 1] = r.id end
end
if #missed > 0 then
  io.stdout:write("goals missed: ", table.concat(missed, ", "), "\n")
  if opts.strict then os.exit(2) end
end
