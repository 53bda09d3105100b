-- bench/worker_bench.lua — one measurement of a benchmark that needs its own
-- process (mb.setup must be the first call), run by bench/run.lua:
--
--   LUA_CPATH='build/?.so;;' lua5.4 bench/worker_bench.lua SCENARIO WORKERS COUNT [ARG]
--
--   async   COUNT orders from a sender service to a listener service (4)
--   rr      COUNT requests from a requester service to a responder
--           service, ARG in flight (default 1) (5)
--   cpu     COUNT messages to a CPU-bound listener loaded with instances = 2;
--           ARG is the work's iteration count (6)
--   mem     COUNT messages queued behind a blocked serial listener, then
--           ARG (default 1000) idle services (9)
--   mem-lua COUNT messages queued in the plain-Lua queue bus (9, reference)
--
-- It prints one line on stdout,
--   RESULT n=COUNT seconds=S cpu=S name=value ... check=TEXT
-- (the names in order; peak_rss, the child's VmHWM in bytes, always among
-- them). seconds: the wall time of the measured work only (not start-up, loading
-- or the warm-up pass), taken with mb.now() by the services themselves;
-- cpu: os.clock() over the same span (all threads of the process); check:
-- what the run saw (counts, sums, where services ran), which the runner
-- compares with what it expects. A wrong placement or result raises here
-- (exit status 1) as well.
local dir = (arg[0]):match("^(.*)[/\\]") or "."
package.path = dir .. "/?.lua;" .. dir .. "/lib/?.lua;" .. package.path

local scenario, workers, n, extra = arg[1], tonumber(arg[2] or ""), tonumber(arg[3] or ""),
                                    arg[4]
if not (scenario and workers and n) then
  io.stderr:write("usage: lua5.4 bench/worker_bench.lua SCENARIO WORKERS COUNT [ARG]\n")
  os.exit(2)
end
n = math.tointeger(n)

local mb = require "mb"
if scenario ~= "mem-lua" then mb.setup {workers = workers} end

local W = dir .. "/workers/"

local function fail(fmt, ...)
  io.stderr:write("worker_bench ", scenario, ": ", string.format(fmt, ...), "\n")
  os.exit(1)
end

-- VmHWM: the most this process has had resident, in bytes
local function peak()
  local f = assert(io.open("/proc/self/status"))
  local kb = f:read("a"):match("VmHWM:%s*(%d+)")
  f:close()
  return tonumber(kb) * 1024
end

local function result(seconds, cpu, check, more)
  more = more or {}
  more.peak_rss = more.peak_rss or peak()
  local extras = {}
  for k, v in pairs(more) do extras[#extras + 1] = k .. "=" .. tostring(v) end
  table.sort(extras)
  io.stdout:write(string.format("RESULT n=%d seconds=%.9f cpu=%.6f %scheck=%s\n", n, seconds, cpu,
                                #extras > 0 and table.concat(extras, " ") .. " " or "", check))
  io.stdout:flush()
end

local function sum_to(k) return k * (k + 1) // 2 end

-- Where each loaded service says it runs: role -> list of worker indexes
-- (from 0). The services send to wb/hello from their body.
local hello = {}
local function listen_hello()
  assert(mb.destination("wb/hello"))
  assert(mb.listen("wb/hello", function(msg)
    local p = msg.payload
    hello[p.role] = hello[p.role] or {}
    table.insert(hello[p.role], p.worker)
  end))
end

-- The services of roles a and b must be on different workers when there
-- are two or more, on worker 0 with one. Returns the word for the check
-- ("apart" or "together") and "a@w,b@w" for the record.
local function check_apart(a, b)
  mb.run() -- the hellos
  local wa, wb = hello[a] and hello[a][1], hello[b] and hello[b][1]
  if not (wa and wb) then fail("no hello from %s or %s", a, b) end
  local _, count = mb.worker()
  if count ~= workers then fail("%d workers, asked for %d", count, workers) end
  if workers >= 2 and wa == wb then
    fail("%s and %s both landed on worker %d; this benchmark needs them apart", a, b, wa)
  end
  if workers == 1 and (wa ~= 0 or wb ~= 0) then
    fail("one worker, but services on %d, %d", wa, wb)
  end
  return workers >= 2 and "apart" or "together", string.format("%s@%d,%s@%d", a, wa, b, wb)
end

-- A destination's accounting must be clean once idle.
local function clean(dest, deliveries)
  local st = assert(mb.stats(dest))
  if st.failed ~= 0 or st.dropped ~= 0 or st.pending ~= 0 or st.in_flight ~= 0 or st.rejected ~= 0
     or st.delivered ~= st.deliveries or st.deliveries ~= deliveries then
    fail("mb.stats('%s'): sent=%d deliveries=%d (want %d) delivered=%d failed=%d dropped=%d "
         .. "pending=%d in_flight=%d rejected=%d", dest, st.sent, st.deliveries, deliveries,
         st.delivered, st.failed, st.dropped, st.pending, st.in_flight, st.rejected)
  end
end

-- Reports sent to wb/report by the services, by role.
local reports = {}
local function listen_reports()
  assert(mb.destination("wb/report"))
  assert(mb.listen("wb/report", function(msg) reports[msg.payload.role] = msg.payload end))
end

-- A warm-up pass before the measured one: the process is fresh, the
-- in-process baselines are not.
local function warm_n(k) return math.max(1, math.min(k, math.max(1000, k // 4))) end

---------------------------------------------------------------------------

if scenario == "async" then
  listen_hello()
  listen_reports()
  assert(mb.destination("wb/orders", {on_full = "block", max_queue = 4096}))
  assert(mb.destination("wb/reset"))
  assert(mb.destination("wb/go"))
  -- main runs on worker 0; the least loaded worker gets the next service
  assert(mb.load(W .. "listener.lua"))
  assert(mb.load(W .. "sender.lua"))
  local placement, where = check_apart("sender", "listener")
  local sent = 0
  local function pass(k)
    reports = {}
    assert(mb.request("wb/reset", {n = k}, {timeout = 30}))
    local c0 = os.clock()
    assert(mb.send("wb/go", {n = k}))
    mb.run()
    local cpu = os.clock() - c0
    sent = sent + k
    local s, l = reports.sender, reports.listener
    if not (s and l) then fail("missing report (sender %s, listener %s)", s, l) end
    return l.t1 - s.t0, cpu, string.format("count=%d sum=%d", l.count, l.sum)
  end
  pass(warm_n(n))
  local seconds, cpu, check = pass(n)
  clean("wb/orders", sent)
  result(seconds, cpu, check .. " " .. placement, {where = where})

elseif scenario == "rr" then
  local k = math.tointeger(tonumber(extra or "1"))
  listen_hello()
  listen_reports()
  assert(mb.destination("wb/rr"))
  assert(mb.destination("wb/go"))
  assert(mb.load(W .. "responder.lua"))
  assert(mb.load(W .. "requester.lua"))
  local placement, where = check_apart("requester", "responder")
  local asked = 0
  local function pass(m)
    reports = {}
    local c0 = os.clock()
    assert(mb.send("wb/go", {n = m, k = k}))
    mb.run()
    local cpu = os.clock() - c0
    asked = asked + m
    local r = reports.requester
    if not r then fail("no report from the requester") end
    return r.t1 - r.t0, cpu, string.format("count=%d sum=%d", r.count, r.sum)
  end
  pass(warm_n(n))
  local seconds, cpu, check = pass(n)
  clean("wb/rr", asked)
  result(seconds, cpu, check .. " " .. placement, {where = where})

elseif scenario == "cpu" then
  local iters = math.tointeger(tonumber(extra or ""))
  if not iters then fail("ARG: the work's iteration count") end
  local work = require "work"
  local want = {} -- the 7 possible results
  for s = 0, 6 do want[s] = work(iters, s) end
  listen_hello()
  assert(mb.destination("wb/cpu"))
  assert(mb.destination("wb/tally"))
  local count, sum, bad = 0, 0, 0
  assert(mb.listen("wb/tally", function(msg)
    local p = msg.payload
    count = count + 1
    sum = sum + p.id
    if p.r ~= want[p.id % 7] then bad = bad + 1 end
  end))
  assert(mb.load(W .. "cpu.lua", {instances = 2, args = {iters}}))
  mb.run()
  local w = hello.cpu or {}
  if #w ~= 2 then fail("%d instances said hello, want 2", #w) end
  if workers >= 2 and w[1] == w[2] then fail("both instances on worker %d", w[1]) end
  if workers == 1 and (w[1] ~= 0 or w[2] ~= 0) then
    fail("one worker, but instances on %d, %d", w[1], w[2])
  end
  local placement = workers >= 2 and "apart" or "together"
  local where = string.format("cpu@%d,cpu@%d", math.min(w[1], w[2]), math.max(w[1], w[2]))
  local sent = 0
  local function pass(m)
    count, sum, bad = 0, 0, 0
    local t0, c0 = mb.now(), os.clock()
    for i = 1, m do assert(mb.send("wb/cpu", {id = i, kind = "order", amount = 12.5})) end
    mb.run()
    local t1, c1 = mb.now(), os.clock()
    sent = sent + m
    return t1 - t0, c1 - c0, string.format("count=%d sum=%d bad=%d", count, sum, bad)
  end
  pass(math.min(n, 200))
  local seconds, cpu, check = pass(n)
  clean("wb/cpu", sent)
  clean("wb/tally", sent)
  result(seconds, cpu, check .. " " .. placement, {where = where})

elseif scenario == "mem" or scenario == "mem-lua" then
  local nservices = math.tointeger(tonumber(extra or "1000"))
  local page = 4096
  do
    local p = io.popen("getconf PAGESIZE 2>/dev/null")
    page = tonumber(p and p:read("l") or "") or page
    if p then p:close() end
  end
  local function rss() -- bytes, after a full collection
    collectgarbage("collect")
    collectgarbage("collect")
    local f = assert(io.open("/proc/self/statm"))
    local _, resident = f:read("l"):match("^(%d+)%s+(%d+)")
    f:close()
    return tonumber(resident) * page
  end
  local t0, c0 = mb.now(), os.clock()
  local payload = {id = 0, kind = "order", amount = 12.5} -- one table, sent n times

  if scenario == "mem-lua" then
    -- the reference: the same messages queued in the plain-Lua queue bus
    -- (a message table around a payload table each)
    local QueueBus = require "queuebus"
    local bus = QueueBus.new()
    bus:destination("wb/mem")
    local count, sum = 0, 0
    bus:listen("wb/mem", function(m) count = count + 1; sum = sum + m.payload.id end)
    local r0 = rss()
    for i = 1, n do bus:send("wb/mem", {id = i, kind = "order", amount = 12.5}) end
    local r1 = rss()
    bus:run()
    result(mb.now() - t0, os.clock() - c0, string.format("count=%d sum=%d", count, sum),
           {queued_bytes = r1 - r0, peak_rss = peak()})
    os.exit(0)
  end

  -- Nothing big is freed before or during a measurement: an allocator
  -- hands freed pages back to the system some time later (mimalloc after a
  -- delay), which would shrink the RSS in the middle of the next one.

  -- 1. idle services: nservices loads of a script with one listener; they
  --    stay loaded until the end
  assert(mb.destination("wb/idle"))
  local r2 = rss()
  local handles = {}
  for i = 1, nservices do handles[i] = assert(mb.load(W .. "idle.lua")) end
  mb.run()
  local r3 = rss()
  assert(mb.send("wb/idle", true)) -- one delivery to each: they are alive
  mb.run()
  clean("wb/idle", nservices)

  -- 2. n messages pending at a serial destination whose listener waits in
  --    its first delivery (message 0) until released
  assert(mb.destination("wb/mem", {type = "serial", max_queue = n + 16}))
  local count, sum, release = 0, 0, false
  assert(mb.listen("wb/mem", function(msg)
    local id = msg.payload.id
    if id == 0 then
      while not release do mb.sleep(0.002) end
    else
      count = count + 1
      sum = sum + id
    end
  end))
  assert(mb.send("wb/mem", payload))
  while mb.stats("wb/mem").in_flight == 0 do mb.sleep(0.001) end
  local r0 = rss()
  for i = 1, n do
    payload.id = i
    local id, err = mb.send("wb/mem", payload)
    if not id then fail("send %d: %s", i, tostring(err)) end
  end
  local r1 = rss()
  local st = mb.stats("wb/mem")
  if st.pending ~= n or st.in_flight ~= 1 then
    fail("pending %d (want %d), in flight %d (want 1)", st.pending, n, st.in_flight)
  end
  release = true
  mb.run()
  clean("wb/mem", n + 1)
  for i = 1, nservices do handles[i]:stop() end
  local check = string.format("count=%d sum=%d services=%d", count, sum,
                              mb.stats("wb/idle").delivered)
  result(mb.now() - t0, os.clock() - c0, check,
         {queued_bytes = r1 - r0, services_bytes = r3 - r2, peak_rss = peak()})

else
  fail("unknown scenario (async, rr, cpu, mem, mem-lua)")
end
