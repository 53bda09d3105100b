-- bench/scenarios.lua — the benchmarks run by bench/run.lua: a list of
-- pairs, each an mb scenario and the baseline it is measured against.
--
-- A side is {label, setup(), run(n) -> got, expect(n) -> want, finish()}: run(n) does
-- n units of work (messages, requests, encodes...) and returns a summary of
-- what it saw (counts, sums of ids, bytes); the runner aborts when it is not
-- exactly expect(n). Only run(n) is timed. setup() runs once, before the
-- warm-up; finish(), when present, checks the bus accounting after the rounds.
-- child = true marks a side that runs in its own process (its peak RSS is
-- its own, not the runner's).
--
-- Batched sends: an async sender sends BATCH messages then lets the bus
-- deliver them (mb.run() / bus:run()), so queues stay short and the whole
-- path (send, queue, dispatch, listener) is in each measurement.
local mb = require "mb"
local QueueBus = require "queuebus"
local SpecBus = require "specbus"
local Corpc = require "corpc"
local Mediator = require "mediator"
local cjson = require "cjson"
local make_doc = require "doc"

local BATCH = 1000

local send, run, request = mb.send, mb.run, mb.request

local function sum_to(n) return n * (n + 1) // 2 end

local function summary(count, sum) return string.format("count=%d sum=%d", count, sum) end

-- Sends n order messages to dest through send_fn, BATCH at a time, calling
-- drain() after each batch.
local function batch_send(send_fn, drain, dest, n)
  local i = 0
  while i < n do
    local last = i + BATCH
    if last > n then last = n end
    for k = i + 1, last do
      local id, err = send_fn(dest, {id = k, kind = "order", amount = 12.5})
      if not id then error("send failed: " .. tostring(err)) end
    end
    i = last
    drain()
  end
end

local function mb_drain() run() end

-- After the rounds: the destination's accounting must be clean.
local function clean_stats(dest)
  return function()
    local st = assert(mb.stats(dest))
    if st.failed ~= 0 or st.dropped ~= 0 or st.pending ~= 0 or st.in_flight ~= 0
       or st.delivered ~= st.deliveries or st.rejected ~= 0 then
      error(string.format("mb.stats('%s'): sent=%d deliveries=%d delivered=%d failed=%d "
                          .. "dropped=%d pending=%d in_flight=%d rejected=%d", dest, st.sent,
                          st.deliveries, st.delivered, st.failed, st.dropped, st.pending,
                          st.in_flight, st.rejected))
    end
  end
end

-- n listeners that count deliveries and sum payload ids; returns the
-- listener functions and a function giving and resetting the totals.
local function counting_listeners(nl)
  local count, sum = 0, 0
  local fns = {}
  for j = 1, nl do
    fns[j] = function(msg)
      sum = sum + msg.payload.id
      count = count + 1
    end
  end
  return fns, function()
    local c, s = count, sum
    count, sum = 0, 0
    return c, s
  end
end

-- A plain-Lua bus side (the queue bus of 1, 1c, 1p and 7, the bus of 1s):
-- bus delivers every message at dest (default "bench/one") to each of fns.
local function lua_bus_side(bus, fns, totals, label, dest)
  dest = dest or "bench/one"
  return {
    label = label or "Lua queue bus",
    setup = function()
      bus:destination(dest)
      for _, fn in ipairs(fns) do bus:listen(dest, fn) end
    end,
    run = function(n)
      batch_send(function(d, p) return bus:send(d, p) end, function() bus:run() end, dest, n)
      return summary(totals())
    end,
    expect = function(n) return summary(#fns * n, #fns * sum_to(n)) end,
  }
end

local list = {}

-- The mb side of benchmark 1 at destination dest (benchmark 4 measures
-- against it too): a batch sender and one counting listener, one worker.
local function same_worker_async(dest, label, opts)
  local fns, totals = counting_listeners(1)
  return {
    label = label,
    setup = function()
      assert(mb.destination(dest, opts))
      assert(mb.listen(dest, fns[1]))
    end,
    finish = clean_stats(dest),
    run = function(n)
      batch_send(send, mb_drain, dest, n)
      return summary(totals())
    end,
    expect = function(n) return summary(n, sum_to(n)) end,
  }
end

-- The mb side of benchmark 3 (and the baselines of 5a/5b): k coroutines
-- (mb.spawn) share n requests to a listener in the same Lua state, each
-- waiting for its reply before the next.
local function same_worker_requests(dest, label, k)
  return {
    label = label,
    setup = function()
      assert(mb.destination(dest))
      assert(mb.listen(dest, function(msg) return {id = msg.payload.id} end))
    end,
    finish = clean_stats(dest),
    run = function(n)
      local count, sum = 0, 0
      local function client(c)
        for i = c, n, k do
          local r, err = request(dest, {id = i, kind = "order", amount = 12.5})
          if not r then error("request failed: " .. tostring(err)) end
          sum = sum + r.id
          count = count + 1
        end
      end
      for c = 1, k do mb.spawn(client, c) end
      run()
      return summary(count, sum)
    end,
    expect = function(n) return summary(n, sum_to(n)) end,
  }
end

---------------------------------------------------------------------------
-- 1. async send -> one Lua listener, same worker
do
  local fns, totals = counting_listeners(1)
  local bus = QueueBus.new()
  list[#list + 1] = {
    id = "1",
    title = "async send -> 1 listener",
    unit = "msg",
    goal = 0.8, -- issue 17
    scenario = same_worker_async("bench/one", "mb (parallel dest)"),
    baseline = lua_bus_side(bus, fns, totals),
  }
end

---------------------------------------------------------------------------
-- 1z. benchmark 1 with share = true (issue 17): the listener, in the
-- sender's Lua state, gets the sender's payload table instead of a copy
-- (the payload is still checked and encoded, as SPEC.md says)
do
  local fns, totals = counting_listeners(1)
  local bus = QueueBus.new()
  list[#list + 1] = {
    id = "1z",
    title = "async send -> 1 listener, share = true",
    unit = "msg",
    goal = 1.1, -- issue 17
    scenario = same_worker_async("bench/one-z", "mb (parallel, share)", {share = true}),
    baseline = lua_bus_side(bus, fns, totals),
  }
end

---------------------------------------------------------------------------
-- 1zd. what share = true saves on a larger payload: the ~1 KB order
-- document of 8b (lib/doc.lua, built fresh for each send), share = true
-- against the same destination without it (the baseline is mb itself)
do
  local function doc_side(dest, label, opts)
    local count, sum = 0, 0
    return {
      label = label,
      setup = function()
        assert(mb.destination(dest, opts))
        assert(mb.listen(dest, function(msg)
          count = count + 1
          sum = sum + msg.payload.items[8].qty + msg.payload.id
        end))
      end,
      finish = clean_stats(dest),
      run = function(n)
        local i = 0
        while i < n do
          local last = math.min(i + BATCH, n)
          for k = i + 1, last do
            local d = make_doc()
            d.id = k
            local id, err = send(dest, d)
            if not id then error("send failed: " .. tostring(err)) end
          end
          i = last
          run()
        end
        local got = summary(count, sum)
        count, sum = 0, 0
        return got
      end,
      -- items[8].qty is 8 % 4 + 1 = 1
      expect = function(n) return summary(n, sum_to(n) + n) end,
    }
  end
  list[#list + 1] = {
    id = "1zd",
    title = "share = true, ~1 KB document",
    unit = "msg",
    note = "baseline is mb itself, without share",
    scenario = doc_side("bench/doc-z", "mb (parallel, share)", {share = true}),
    baseline = doc_side("bench/doc", "mb (parallel dest)"),
  }
end

---------------------------------------------------------------------------
-- 1s. benchmark 1 against a plain-Lua bus that keeps SPEC.md's promises
-- about a message (own copy, values, string id), which the queue bus skips
do
  local fns, totals = counting_listeners(1)
  local bus = SpecBus.new()
  list[#list + 1] = {
    id = "1s",
    goal = 2.5, -- issue 17
    title = "async send, Lua bus with mb's message",
    unit = "msg",
    scenario = same_worker_async("bench/one-s", "mb (parallel dest)"),
    baseline = lua_bus_side(bus, fns, totals, "Lua bus, own copies"),
  }
end

-- 1c, 1p, 1zc, 1zk, 1sc: a C ring buffer with no bus (bench/c/limit.c,
-- built by make bench) that queues with limit[how.send or "send"] and
-- delivers with limit[deliver] to fn, whose count and sum totals() gives
-- and resets; against the queue bus (or how.bus, labelled how.bus_label).
local function c_ring_pair(id, title, label, deliver, fn, totals, how)
  how = how or {}
  local ok, limit = pcall(require, "mb_limit")
  local fns, bus_totals = counting_listeners(1)
  local queue = limit and limit[how.send or "send"]
  return {
    id = id,
    title = title,
    unit = "msg",
    skip = not ok and "build/mb_limit.so is missing: run make bench" or nil,
    scenario = {
      label = label,
      run = function(n)
        batch_send(function(_, p) return queue(p) end, function() limit[deliver](fn) end,
                   "bench/limit", n)
        return summary(totals())
      end,
      expect = function(n) return summary(n, sum_to(n)) end,
    },
    baseline = lua_bus_side(how.bus or QueueBus.new(), fns, bus_totals, how.bus_label),
  }
end

---------------------------------------------------------------------------
-- 1c. the floor: the C ring buffer gives the listener mb's message. Its
-- ratio is the most any bus keeping SPEC.md's message could reach on
-- benchmark 1.
do
  local fns, totals = counting_listeners(1)
  list[#list + 1] = c_ring_pair("1c", "floor: C ring, mb's message", "C ring buffer (no bus)",
                                "run", fns[1], totals)
end

---------------------------------------------------------------------------
-- 1p. below the floor: the listener gets its payload's snapshot alone (no
-- message table, values or id): the most any bus that gives each listener
-- its own copy could reach on benchmark 1, whatever its message looks like
do
  local count, sum = 0, 0
  local function on_payload(p)
    sum = sum + p.id
    count = count + 1
  end
  local function totals()
    local c, s = count, sum
    count, sum = 0, 0
    return c, s
  end
  list[#list + 1] = c_ring_pair("1p", "floor: C ring, payload copy only",
                                "C ring buffer, payload only", "run_payloads", on_payload, totals)
end

---------------------------------------------------------------------------
-- 1sc. the floor under 1s: 1c's C ring against the Lua bus that keeps
-- SPEC.md's promises (1s's baseline)
do
  local fns, totals = counting_listeners(1)
  list[#list + 1] = c_ring_pair("1sc", "floor of 1s: C ring vs the Lua bus",
                                "C ring buffer (no bus)", "run", fns[1], totals,
                                {bus = SpecBus.new(), bus_label = "Lua bus, own copies"})
end

---------------------------------------------------------------------------
-- 1zc and 1zk. the floor under 1z (share = true): the C ring gives the
-- listener mb's message around the sender's own table, with a plain call
-- (1zc) or, as a bus whose handlers may wait must, in a coroutine (1zk)
do
  local fns, totals = counting_listeners(1)
  list[#list + 1] = c_ring_pair("1zc", "floor of 1z: C ring, sender's table",
                                "C ring, shared table", "run", fns[1], totals,
                                {send = "send_shared"})
end
do
  local fns, totals = counting_listeners(1)
  list[#list + 1] = c_ring_pair("1zk", "floor of 1z: the same in a coroutine",
                                "C ring, shared, coroutine", "run_co", fns[1], totals,
                                {send = "send_shared"})
end

-- The baseline of 2 and 2c: lua-mediator's publish on channel chan, to
-- one subscriber that counts and sums the payload ids.
local function mediator_side(chan)
  local med = Mediator()
  local mcount, msum = 0, 0
  return {
    label = "lua-mediator",
    setup = function()
      med:subscribe(chan, function(payload) -- mediator passes the payload only
        msum = msum + payload.id
        mcount = mcount + 1
      end)
    end,
    run = function(n)
      for i = 1, n do med:publish(chan, {id = i, kind = "order", amount = 12.5}) end
      local got = summary(mcount, msum)
      mcount, msum = 0, 0
      return got
    end,
    expect = function(n) return summary(n, sum_to(n)) end,
  }
end

---------------------------------------------------------------------------
-- 2. synchronous destination: send -> listener, returns after delivery
do
  local fns, totals = counting_listeners(1)
  list[#list + 1] = {
    id = "2",
    title = "synchronous send -> 1 listener",
    unit = "msg",
    goal = 0.8, -- issue 17
    scenario = {
      label = "mb (synchronous dest)",
      setup = function()
        assert(mb.destination("bench/sync", {type = "synchronous"}))
        assert(mb.listen("bench/sync", fns[1]))
      end,
      finish = clean_stats("bench/sync"),
      run = function(n)
        for i = 1, n do
          local id, err = send("bench/sync", {id = i, kind = "order", amount = 12.5})
          if not id then error("send failed: " .. tostring(err)) end
        end
        -- synchronous: every delivery has run when send returned
        return summary(totals())
      end,
      expect = function(n) return summary(n, sum_to(n)) end,
    },
    baseline = mediator_side({"bench", "sync"}),
  }
end

---------------------------------------------------------------------------
-- 2c. the floor under 2: C's send_now gives the listener mb's message
-- around its own copy at once, in a coroutine (bench/c/limit.c), no bus
do
  local ok, limit = pcall(require, "mb_limit")
  local fns, totals = counting_listeners(1)
  list[#list + 1] = {
    id = "2c",
    title = "floor of 2: C, mb's message at once",
    unit = "msg",
    skip = not ok and "build/mb_limit.so is missing: run make bench" or nil,
    scenario = {
      label = "C send_now (no bus)",
      run = function(n)
        local send_now, fn = limit.send_now, fns[1]
        for i = 1, n do send_now({id = i, kind = "order", amount = 12.5}, fn) end
        return summary(totals())
      end,
      expect = function(n) return summary(n, sum_to(n)) end,
    },
    baseline = mediator_side({"bench", "sync-c"}),
  }
end

-- The baseline of 3 and 3c: a coroutine requests n times through
-- lib/corpc.lua, whose scheduler runs the handler at dest and resumes it.
local function corpc_side(dest)
  local rpc = Corpc.new()
  return {
    label = "Lua coroutine req/reply",
    setup = function()
      rpc:handle(dest, function(msg) return {id = msg.payload.id} end)
    end,
    run = function(n)
      local count, sum = 0, 0
      local req = Corpc.request
      rpc:spawn(function()
        for i = 1, n do
          local r, err = req(dest, {id = i, kind = "order", amount = 12.5})
          if not r then error("request failed: " .. tostring(err)) end
          sum = sum + r.id
          count = count + 1
        end
      end)
      rpc:run()
      return summary(count, sum)
    end,
    expect = function(n) return summary(n, sum_to(n)) end,
  }
end

---------------------------------------------------------------------------
-- 3. request/reply, same worker, one request in flight
do
  list[#list + 1] = {
    id = "3",
    title = "request/reply, 1 in flight",
    unit = "req",
    goal = 0.7, -- issue 17
    scenario = same_worker_requests("bench/rr", "mb.request", 1),
    baseline = corpc_side("bench/rr"),
  }
end

---------------------------------------------------------------------------
-- 3c. the floor under 3: C's request makes both of SPEC's messages of a
-- round trip (the listener's request, the requester's reply message, each
-- around its own copy; bench/c/limit.c) with no queue, the handler in a
-- coroutine and the requester waiting in one, as in the baseline
do
  local ok, limit = pcall(require, "mb_limit")
  local function handler(msg) return {id = msg.payload.id} end
  list[#list + 1] = {
    id = "3c",
    title = "floor of 3: C, both messages, no queue",
    unit = "req",
    skip = not ok and "build/mb_limit.so is missing: run make bench" or nil,
    scenario = {
      label = "C request (no bus)",
      run = function(n)
        -- the requester waits in a coroutine, as mb.request's caller and
        -- the baseline's do: one yield and one resume per round trip
        local count, sum = 0, 0
        local request, yield, resume = limit.request, coroutine.yield, coroutine.resume
        local client = coroutine.create(function()
          for i = 1, n do
            local r = yield({id = i, kind = "order", amount = 12.5})
            sum = sum + r.id
            count = count + 1
          end
        end)
        local _, p = resume(client)
        while p do
          _, p = resume(client, request(p, handler))
        end
        return summary(count, sum)
      end,
      expect = function(n) return summary(n, sum_to(n)) end,
    },
    baseline = corpc_side("bench/rr-c"),
  }
end

---------------------------------------------------------------------------
-- Benchmarks 4, 5, 6, 9 and 10 run mb in child processes: mb.setup (the
-- number of workers) must be the first call in a process. A child side
-- spawns `lua5.4 bench/worker_bench.lua SCENARIO WORKERS COUNT [ARG]`,
-- which times its own work (not its start-up) and prints
--   RESULT n=... seconds=... cpu=... [name=value ...] check=TEXT
-- run(n) returns the check, nothing, and {wall, cpu, peak} from the child
-- (peak: its VmHWM), which the runner uses instead of its own clock and
-- its own peak RSS.

-- the interpreter running us (arg[-1] for `lua5.4 bench/run.lua`)
local LUA = "lua5.4"
if arg then
  local i = -1
  while arg[i - 1] do i = i - 1 end
  LUA = arg[i] or LUA
end
local DIR = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
local MBRUN = os.getenv("MBRUN") or "build/mbrun"

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs one child and returns its RESULT as a table (numbers for seconds,
-- cpu and the extras that look like numbers); raises on a failed child.
local function child(scenario, workers, n, extra)
  local cmd = table.concat({quote(LUA), quote(DIR .. "/worker_bench.lua"), scenario, workers,
                            string.format("%d", n), extra and quote(extra) or ""}, " ")
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok, how, code = p:close()
  if not ok then
    error(string.format("child `%s` ended (%s %s) with output:\n%s", cmd, how, code, out))
  end
  local line = out:match("RESULT ([^\n]*)")
  if not line then error(string.format("child `%s` printed no RESULT line:\n%s", cmd, out)) end
  local head, check = line:match("^(.-)%s*check=(.*)$")
  if not head then
    error(string.format("child `%s`: no check in its RESULT line:\n%s", cmd, out))
  end
  local r = {check = check}
  for k, v in head:gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) or v end
  if r.n ~= n then error(string.format("child `%s` measured n = %s", cmd, tostring(r.n))) end
  return r
end

-- A side run by a child with this many workers; the check it must print
-- is expect(n) .. " " .. placement ("apart" across workers, "together" on one).
local function child_side(label, scenario, workers, expect, extra, n0)
  local side = {label = label, n0 = n0, child = true}
  side.run = function(n)
    local r = child(scenario, workers, n, type(extra) == "function" and extra() or extra)
    side.where = r.where
    return r.check, nil, {wall = r.seconds, cpu = r.cpu, peak = r.peak_rss}
  end
  side.expect = function(n) return expect(n) .. " " .. (workers >= 2 and "apart" or "together") end
  return side
end

local function counted(n) return summary(n, sum_to(n)) end

---------------------------------------------------------------------------
-- 4. async across workers: sender service on one worker, listener service
--    on the other, against benchmark 1's same-worker mb side
list[#list + 1] = {
  id = "4",
  title = "async send across workers",
  unit = "msg",
  goal = 1.9, -- issue 17
  note = "ratio: vs benchmark 1's mb side (same worker, in-process); > 1: across is faster",
  scenario = child_side("mb, 2 workers (child)", "async", 2, counted, nil, 20000),
  baseline = same_worker_async("bench/one-4", "mb, same worker (= bench 1)"),
}
-- 4b. the same child program with 1 worker: isolates the cost of crossing
list[#list + 1] = {
  id = "4b",
  title = "async: 2 workers vs 1 (same child)",
  unit = "msg",
  note = "the child of 4 with mb.setup{workers = 1}: both services on worker 0",
  scenario = child_side("mb, 2 workers (child)", "async", 2, counted, nil, 20000),
  baseline = child_side("mb, 1 worker (child)", "async", 1, counted, nil, 20000),
}

---------------------------------------------------------------------------
-- 5. request/reply across workers: requester and responder services on
--    different workers, 1 and 64 requests in flight
list[#list + 1] = {
  id = "5a",
  title = "request/reply across workers, 1",
  unit = "req",
  note = "1 in flight; ratio vs benchmark 3's mb side (same worker)",
  scenario = child_side("mb, 2 workers (child)", "rr", 2, counted, "1", 500),
  baseline = same_worker_requests("bench/rr-5a", "mb, same worker (= bench 3)", 1),
}
list[#list + 1] = {
  id = "5b",
  title = "request/reply across workers, 64",
  unit = "req",
  goal = 1.8, -- issue 17
  note = "64 coroutines in flight; ratio vs the same in-process on one worker",
  scenario = child_side("mb, 2 workers (child)", "rr", 2, counted, "64", 5000),
  baseline = same_worker_requests("bench/rr-5b", "mb, same worker, 64 in flight", 64),
}

---------------------------------------------------------------------------
-- 6. parallel speedup: a CPU-bound listener (about 200 µs of Lua work per
--    message, lib/work.lua) loaded with instances = 2 at a parallel
--    destination; 2 workers against 1. The iteration count is calibrated
--    once, in this process, and both children use it.
do
  local work = require "work"
  local iters
  local function calibrate_work()
    -- the median of 5 runs: on a shared machine the fastest run is not
    -- what the children will see
    local probe = 200000
    work(probe, 1) -- warm
    local ts = {}
    for i = 1, 5 do
      local t0 = mb.now()
      work(probe, i)
      ts[i] = mb.now() - t0
    end
    table.sort(ts)
    iters = math.max(1, math.floor(200e-6 / (ts[3] / probe) + 0.5))
    return ts[3] / probe
  end
  local function expect_cpu(n) return string.format("count=%d sum=%d bad=0", n, sum_to(n)) end
  local b = {
    id = "6",
    title = "parallel speedup, CPU-bound",
    unit = "msg",
    goal = 1.85, -- issue 17
    time = 0.4,
    scenario = child_side("mb, 2 workers (child)", "cpu", 2, expect_cpu,
                          function() return tostring(iters) end, 200),
    baseline = child_side("mb, 1 worker (child)", "cpu", 1, expect_cpu,
                          function() return tostring(iters) end, 200),
  }
  b.scenario.setup = function()
    local per = calibrate_work()
    b.note = string.format("instances = 2; %d iterations ~ 200 us per message (%.1f ns each); "
                           .. "ratio = speedup", iters, per * 1e9)
  end
  list[#list + 1] = b
end

---------------------------------------------------------------------------
-- 7. fan-out: one message to 10 listeners (one Lua state for now)
do
  local NL = 10
  local fns, totals = counting_listeners(NL)
  local bus = QueueBus.new()
  list[#list + 1] = {
    id = "7",
    goal = 0.3, -- issue 17
    title = "fan-out: 1 msg -> 10 listeners",
    unit = "msg",
    note = "ns/msg is per message sent (10 deliveries each)",
    scenario = {
      label = "mb (10 listeners)",
      setup = function()
        assert(mb.destination("bench/fanout"))
        for j = 1, NL do assert(mb.listen("bench/fanout", fns[j])) end
      end,
      finish = clean_stats("bench/fanout"),
      run = function(n)
        batch_send(send, mb_drain, "bench/fanout", n)
        return summary(totals())
      end,
      expect = function(n) return summary(NL * n, NL * sum_to(n)) end,
    },
    baseline = lua_bus_side(bus, fns, totals, "Lua queue bus, 10 listeners", "bench/fanout"),
  }
end

---------------------------------------------------------------------------
-- 7c. the floor under 7: the C ring buffer (bench/c/limit.c) gives each
-- message to the same 10 listeners, each with mb's message around a copy
-- of its own, all in one Lua state and with no bus: the most any bus that
-- keeps SPEC.md's message could reach on benchmark 7
do
  local NL = 10
  local fns, totals = counting_listeners(NL)
  local bus_fns, bus_totals = counting_listeners(NL)
  local ok, limit = pcall(require, "mb_limit")
  list[#list + 1] = {
    id = "7c",
    title = "floor: C ring, fan-out to 10",
    unit = "msg",
    note = "ns/msg is per message sent (10 deliveries each)",
    skip = not ok and "build/mb_limit.so is missing: run make bench" or nil,
    scenario = {
      label = "C ring buffer (no bus)",
      run = function(n)
        batch_send(function(_, p) return limit.send(p) end, function() limit.run_fan(fns) end,
                   "bench/limit", n)
        return summary(totals())
      end,
      expect = function(n) return summary(NL * n, NL * sum_to(n)) end,
    },
    baseline = lua_bus_side(QueueBus.new(), bus_fns, bus_totals, "Lua queue bus, 10 listeners",
                            "bench/fanout-c"),
  }
end

---------------------------------------------------------------------------
-- 8a. a format = "json" listener vs a table listener
--
-- The JSON listener does what a forwarding listener would: it takes the
-- text and counts its bytes. The check: the byte total must be exactly
-- n * (fixed part) + the digits of every payload id + the digits of every
-- message id (summed by the sender from what mb.send returns); the first
-- and last texts are decoded afterwards and their payloads checked.
do
  local count, bytes, first, last = 0, 0, nil, nil
  local fixed -- bytes of a message's JSON text beside the two ids
  local tfns, ttotals = counting_listeners(1)

  local function digits_sum(n) -- sum of #tostring(i) for i = 1..n
    local s, lo, d = 0, 1, 1
    while lo <= n do
      local hi = math.min(n, lo * 10 - 1)
      s = s + (hi - lo + 1) * d
      lo, d = lo * 10, d + 1
    end
    return s
  end

  -- like batch_send, but also sums the length of the returned message ids
  local function send_counting_ids(dest, n)
    local idbytes, i = 0, 0
    while i < n do
      local last_k = i + BATCH
      if last_k > n then last_k = n end
      for k = i + 1, last_k do
        local id, err = send(dest, {id = k, kind = "order", amount = 12.5})
        if not id then error("send failed: " .. tostring(err)) end
        idbytes = idbytes + #id
      end
      i = last_k
      run()
    end
    return idbytes
  end

  local function check_text(s, want_id)
    local m = mb.json.decode(s)
    local p = m.payload
    if not (p.id == want_id and p.kind == "order" and p.amount == 12.5
            and m.destination == "bench/json-listener") then
      return "bad message text: " .. s
    end
    return "ok"
  end

  list[#list + 1] = {
    id = "8a",
    title = "listener format: json vs table",
    unit = "msg",
    note = "baseline is mb itself (format = \"table\")",
    scenario = {
      label = "mb, format = \"json\"",
      setup = function()
        assert(mb.destination("bench/json-listener"))
        assert(mb.listen("bench/json-listener", function(s)
          count = count + 1
          bytes = bytes + #s
          if count == 1 then first = s end
          last = s
        end, {format = "json"}))
        -- learn the fixed part from one message
        local id = assert(send("bench/json-listener", {id = 1, kind = "order", amount = 12.5}))
        run()
        fixed = bytes - 1 - #id
        count, bytes, first, last = 0, 0, nil, nil
      end,
      finish = clean_stats("bench/json-listener"),
      run = function(n)
        local idbytes = send_counting_ids("bench/json-listener", n)
        local got = string.format("count=%d bytes=%d first=%s last=%s", count, bytes,
                                  first and check_text(first, 1) or "none",
                                  last and check_text(last, n) or "none")
        count, bytes, first, last = 0, 0, nil, nil
        return got, idbytes
      end,
      expect = function(n, idbytes)
        return string.format("count=%d bytes=%d first=ok last=ok", n,
                             n * fixed + digits_sum(n) + idbytes)
      end,
    },
    baseline = {
      label = "mb, format = \"table\"",
      setup = function()
        assert(mb.destination("bench/table-listener"))
        assert(mb.listen("bench/table-listener", tfns[1]))
      end,
      finish = clean_stats("bench/table-listener"),
      run = function(n)
        local idbytes = send_counting_ids("bench/table-listener", n)
        return summary(ttotals()), idbytes
      end,
      expect = function(n) return summary(n, sum_to(n)) end,
    },
  }
end

---------------------------------------------------------------------------
-- 8b/8c. mb.json.encode / decode vs lua-cjson on a ~1 KB document
do
  local doc = make_doc()
  local mb_text = mb.json.encode(doc)
  local cj_text = cjson.encode(doc)
  local input = cj_text -- both decoders read the same text

  -- deep equality, numbers compared by value (cjson decodes 3 as 3.0)
  local function same(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then return a == b end
    for k, v in pairs(a) do if not same(v, b[k]) then return false end end
    for k in pairs(b) do if a[k] == nil then return false end end
    return true
  end
  assert(same(mb.json.decode(mb_text), doc), "mb.json round trip changed the document")
  assert(same(cjson.decode(cj_text), doc), "cjson round trip changed the document")
  assert(same(mb.json.decode(input), cjson.decode(input)), "decoders disagree")

  -- a decode is checked by its item count, two quantities and the total
  local function decode_side(label, decode)
    return {
      label = label,
      run = function(n)
        local q, items, bad = 0, 0, 0
        for _ = 1, n do
          local d = decode(input)
          local its = d.items
          items = items + #its
          q = q + its[1].qty + its[#its].qty
          if d.total ~= 251.75 then bad = bad + 1 end
        end
        return string.format("items=%d qty=%.0f bad=%d", items, q, bad)
      end,
      expect = function(n)
        return string.format("items=%d qty=%.0f bad=0", n * #doc.items,
                             n * (doc.items[1].qty + doc.items[#doc.items].qty))
      end,
    }
  end
  local function encode_side(label, encode, len)
    return {
      label = label,
      run = function(n)
        local total = 0
        for _ = 1, n do total = total + #encode(doc) end
        return string.format("bytes=%d", total)
      end,
      expect = function(n) return string.format("bytes=%d", n * len) end,
    }
  end
  list[#list + 1] = {
    id = "8b",
    title = string.format("json encode, %d B doc", #mb_text),
    unit = "doc",
    goal = 1.0,
    scenario = encode_side("mb.json.encode", mb.json.encode, #mb_text),
    baseline = encode_side("cjson.encode", cjson.encode, #cj_text),
  }
  list[#list + 1] = {
    id = "8c",
    title = string.format("json decode, %d B doc", #input),
    unit = "doc",
    goal = 1.0,
    scenario = decode_side("mb.json.decode", mb.json.decode),
    baseline = decode_side("cjson.decode", cjson.decode),
  }
end

---------------------------------------------------------------------------
-- 9. memory, from the RSS of a child (/proc/self/statm, after a full
--    collection): 1e6 messages pending at a serial destination whose
--    listener waits in its first delivery, and 1000 idle services (one
--    listener each). Reference: the same messages queued in the plain-Lua
--    queue bus. Not timed: a probe, reported as values.
do
  local QUEUED, SERVICES = 1000000, 1000
  local mb_check = counted(QUEUED) .. " services=" .. SERVICES
  list[#list + 1] = {
    id = "9",
    kind = "probe",
    title = "memory (RSS delta)",
    rounds = 3,
    note = string.format("%d messages pending behind a blocked serial listener; %d idle services; "
                         .. "2 workers", QUEUED, SERVICES),
    sides = {
      {
        label = "mb",
        run = function()
          local r = child("mem", 2, QUEUED, tostring(SERVICES))
          return r.check, {queued = r.queued_bytes / QUEUED, service = r.services_bytes / SERVICES,
                           peak = r.peak_rss}
        end,
        expect = mb_check,
      },
      {
        label = "Lua queue bus",
        run = function()
          local r = child("mem-lua", 1, QUEUED)
          return r.check, {queued = r.queued_bytes / QUEUED, peak = r.peak_rss}
        end,
        expect = counted(QUEUED),
      },
    },
    metrics = {
      {key = "queued", label = "bytes per queued message", unit = "B"},
      {key = "service", label = "bytes per idle service", unit = "B"},
      {key = "peak", label = "peak RSS (VmHWM)", unit = "B"},
    },
  }
end

---------------------------------------------------------------------------
-- 10. start-up: build/mbrun on an empty scenario, start to exit, one run per
--     measurement, 50 rounds; against lua5.4 on the same file. Both are
--     spawned through /bin/sh (os.execute with `exec`), whose cost is in
--     both and shown in the note (exec /bin/true).
do
  local empty = DIR .. "/empty.lua"
  -- peak_cmd runs the same program on bench/peak.lua, which prints its
  -- VmHWM as it ends: the side's peak RSS (not timed)
  local function spawn_side(label, cmd, peak_cmd)
    local side = {label = label, child = true}
    side.run = function(n)
      local ok = 0
      for _ = 1, n do
        local done, how, code = os.execute(cmd)
        if not done then error(string.format("`%s` ended (%s %s)", cmd, how, code)) end
        ok = ok + 1
      end
      return string.format("ok=%d", ok), nil, side.peak and {peak = side.peak}
    end
    side.expect = function(n) return string.format("ok=%d", n) end
    side.setup = function()
      local p = assert(io.popen(peak_cmd))
      local out = p:read("a")
      p:close()
      side.peak = tonumber(out:match("VmHWM=(%d+)"))
      if not side.peak then error(string.format("`%s` printed no VmHWM: %s", peak_cmd, out)) end
    end
    return side
  end
  local peak = DIR .. "/peak.lua"
  local b = {
    id = "10",
    title = "start-up: mbrun, empty scenario",
    unit = "run",
    n = 1,
    rounds = 50,
    goal_ns = 5e6,
    scenario = spawn_side("build/mbrun (default -w: cores)",
                          "exec " .. quote(MBRUN) .. " " .. quote(empty) .. " </dev/null",
                          quote(MBRUN) .. " " .. quote(peak) .. " </dev/null"),
    baseline = spawn_side("lua5.4 (no mb)",
                          "exec " .. quote(LUA) .. " " .. quote(empty) .. " </dev/null",
                          quote(LUA) .. " " .. quote(peak) .. " </dev/null"),
  }
  local peak_setup = b.scenario.setup
  b.scenario.setup = function()
    local f = io.open(MBRUN)
    if not f then error("no " .. MBRUN .. " (make all; or set MBRUN)") end
    f:close()
    peak_setup()
    local xs = {}
    for i = 1, 21 do
      local t0 = mb.now()
      assert(os.execute("exec /bin/true"))
      xs[i] = mb.now() - t0
    end
    table.sort(xs)
    b.note = string.format("spawn floor (sh + exec /bin/true): %.2f ms median, in both sides",
                           xs[11] * 1e3)
  end
  list[#list + 1] = b
end

return list
