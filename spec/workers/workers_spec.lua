-- Worker threads: the destination semantics hold across workers, with 1, 2
-- and 4 workers (more workers than this machine has cores too), and a
-- stress run. The scenarios are mbrun scripts in spec/workers/; `make tsan`
-- runs this spec against a ThreadSanitizer build (MBRUN) with a smaller
-- STRESS_N.
local helper = require "spec.helper"
local STRESS_N = tonumber(os.getenv("STRESS_N")) or 1000000
-- under ThreadSanitizer 100,000 took gigabytes of its memory (the normal
-- build: 16 MB), so `make tsan` sets a smaller RELOAD_N
local RELOAD_N = tonumber(os.getenv("RELOAD_N")) or 100000

local function mbrun(args)
  local out, _, code = helper.mbrun(args, {timeout = 600, merge = true})
  return out, code
end

describe("worker threads", function()
  for _, w in ipairs({1, 2, 4}) do
    it("keep the destination semantics with " .. w .. " worker(s)", function()
      local out, code = mbrun("-w " .. w .. " spec/workers/semantics.lua")
      assert.is_nil(out:find("ThreadSanitizer", 1, true), out)
      for _, line in ipairs({
        "ok serial order across workers",
        "ok parallel instances on " .. math.min(w, 4) .. " workers",
        "ok synchronous send waits for other workers",
        "ok request across workers",
        "ok request_all across workers",
        "ok statistics exact across workers",
        "ok stopped service: 5 dropped, none lost",
      }) do
        assert.is_truthy(out:find(line, 1, true), "missing: " .. line .. "\n" .. out)
      end
      -- the scenario fails one delivery on purpose and stops services with
      -- deliveries open; mbrun counts them although their destinations
      -- were removed, and says so
      assert.matches("mbrun: 1 delivery failed %(removed destinations: 1%)", out)
      assert.matches("mbrun: 5 deliveries dropped %(removed destinations: 5%)", out)
      assert.are.equal(1, code, out)
    end)
  end

  -- a destination's pump ran on the worker of its last sender: a handler
  -- running long there held up its deliveries between other workers
  it("go on delivering between free workers while a handler runs long on the sender's worker",
    function()
      local out, code = mbrun("-w 3 spec/workers/hostage.lua")
      assert.is_nil(out:find("ThreadSanitizer", 1, true), out)
      assert.matches("ok deliveries went on beside the hog", out)
      assert.are.equal(0, code, out)
    end)

  -- issue 15: hot reload under load, every message exactly once
  for _, w in ipairs({1, 2, 4}) do
    it("hand a group over to a reloaded script 20 times under load with " .. w .. " worker(s)",
      function()
        local out, code = mbrun("-w " .. w .. " spec/workers/reload_load.lua " .. RELOAD_N .. " 20")
        assert.is_nil(out:find("ThreadSanitizer", 1, true), out)
        assert.matches("ok reload: " .. RELOAD_N .. " messages, 20 reloads, 21 versions on " .. w, out)
        assert.are.equal(0, code, out)
      end)
  end

  -- issue 17: a request's message is in the groups table only for
  -- request_all (and remote ones); a later mb.reply still finds its group
  for _, w in ipairs({1, 2, 4}) do
    it("file each mb.reply under its group on " .. w .. " worker(s), a stopped requester's too",
      function()
        local out, code = mbrun("-w " .. w .. " spec/workers/replies.lua 300")
        assert.is_nil(out:find("ThreadSanitizer", 1, true), out)
        assert.matches("ok replies: 900 requests %+ 900 request_all on " .. w .. " workers", out)
        assert.are.equal(0, code, out)
      end)
  end

  it("survive a stress run: 4 services x 2 instances, requests inside listeners", function()
    local out, code = mbrun("-w 4 spec/workers/stress.lua " .. STRESS_N)
    assert.is_nil(out:find("ThreadSanitizer", 1, true), out)
    assert.matches("ok stress: " .. STRESS_N .. " messages %+ " .. STRESS_N // 8 .. " requests", out)
    assert.are.equal(0, code, out)
  end)

  it("keep the bus busy while a timer that stopped itself still runs", function()
    local out, code = mbrun("-w 2 spec/workers/timer_stop.lua")
    assert.matches("received 2000001000000", out)
    assert.are.equal(0, code, out)
  end)

  it("drop, not run, an inline delivery whose service was stopped meanwhile", function()
    local out, code = mbrun("-w 1 spec/workers/stop_inline.lua")
    assert.is_nil(out:find("victim ran", 1, true), out)
    assert.matches("delivered 1 dropped 1 deliveries 2", out)
    assert.matches("mbrun: 1 delivery dropped", out)
    assert.are.equal(1, code, out)
  end)

  -- with two workers the instance that asked stopped while stop waited
  -- for the other one: its handler was cut there, the delivery counted
  -- dropped and the request answered "closed: service stopped"
  for _, w in ipairs({1, 2}) do
    it("let a handler that stops its own service finish and answer with " .. w .. " worker(s)",
      function()
        local out, code = mbrun("-w " .. w .. " spec/workers/stop_self.lua")
        assert.matches("after stop in instance on worker", out)
        assert.matches("request: answered after stop", out)
        assert.matches("services left: 1", out)
        assert.matches("delivered 1 failed 0 dropped 0", out)
        assert.are.equal(0, code, out)
      end)
  end

  -- a draining old instance marked itself stopping with no lock while a
  -- reload on another worker read that under the lock (ThreadSanitizer,
  -- `make tsan`, saw the race on every run)
  it("reload one service from two coroutines at once while its old instances drain", function()
    local out, code = mbrun("-w 4 spec/workers/reload_race.lua 40")
    assert.is_nil(out:find("ThreadSanitizer", 1, true), out)
    assert.matches("ok reload race: 80 reloads, %d+ answered, 0 failed", out)
    assert.are.equal(0, code, out)
  end)

  it("stay busy while a handler on another worker waits where it cannot yield", function()
    -- its wait drives a nested loop that empties its worker's queue; the
    -- handler still runs and sends afterwards, so mb.run() must wait for it
    local p = io.popen([[LUA_CPATH="$LUA_CPATH" lua5.4 spec/workers/nested_wait.lua 2>&1]])
    local out = p:read("a")
    p:close()
    assert.matches("early 0 of 20", out)
  end)

  it("run a plain Lua program on several workers with mb.setup", function()
    local p = io.popen([[LUA_CPATH="$LUA_CPATH" lua5.4 -e '
      local mb = require "mb"
      mb.setup{workers = 3}
      assert(select(2, mb.worker()) == 3)
      mb.destination("w/calc")
      local h = mb.load("spec/workers/calc.lua", {instances = 3})
      local sum = 0
      for i = 1, 30 do sum = sum + mb.request("w/calc", {op = "add", a = i, b = 0}) end
      print("sum", sum)
      h:stop()
      print(pcall(mb.setup, {workers = 2}))
    ' 2>&1]])
    local out = p:read("a")
    p:close()
    assert.matches("sum\t465", out)
    assert.matches("false\t.*mb.setup: must come before any other use of the bus", out)
  end)
end)
