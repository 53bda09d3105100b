-- The examples in examples/, run as a user runs them: `mbrun -c CONFIG
-- SCENARIO` as a subprocess, with one worker (the order of lines is then the
-- order of events) and with four. Checks the exit status and the output:
-- in order where the destination types guarantee an order (synchronous,
-- serial), at all and exactly once where they do not (parallel), and the
-- figures the examples print (statistics, counts).
--
--   LUA_CPATH='build/?.so;;' MBRUN=build/mbrun lua5.4 /usr/bin/busted \
--     --lpath='lua/?.lua;lua/?/init.lua' spec/examples/examples_spec.lua
--
-- Run from the project root; MBRUN names the mbrun to test.

local helper = require "spec.helper"
local quote, absolute = helper.quote, helper.absolute

-- Runs mbrun with args (from folder dir when given); returns its output
-- lines (stdout and stderr, empty ones left out), exit status and output.
local function run(args, dir)
  local out, _, code = helper.mbrun(args, {dir = dir, merge = true})
  local lines = {}
  for line in out:gmatch("[^\n]*") do
    if line ~= "" then lines[#lines + 1] = line end
  end
  return lines, code, out
end

-- Runs example `name` (examples/NAME/config.lua and scenario.lua) with
-- mbrun; `opts` go before -c, `args` after the scenario.
local function example(name, opts, args)
  local dir = "examples/" .. name
  return run(("%s -c %s/config.lua %s/scenario.lua %s"):format(opts or "", dir, dir, args or ""))
end

-- The index of the first line that is exactly `line`, from `from` on.
local function find(lines, line, from)
  for i = from or 1, #lines do
    if lines[i] == line then return i end
  end
end

-- The index of the first line that matches the Lua pattern, from `from` on.
local function find_match(lines, pattern, from)
  for i = from or 1, #lines do
    if lines[i]:match(pattern) then return i end
  end
end

local function count(lines, line)
  local n = 0
  for _, l in ipairs(lines) do
    if l == line then n = n + 1 end
  end
  return n
end

-- Asserts that `expected` appear in `lines` in this order (other lines may
-- come between); returns the index of the last one.
local function assert_in_order(lines, expected, from, out)
  local at = (from or 1) - 1
  for _, line in ipairs(expected) do
    local i = find(lines, line, at + 1)
    assert(i, ("expected, after line %d:\n  %s\nin the output:\n%s"):format(at, line, out))
    at = i
  end
  return at
end

local function sorted_copy(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  return t
end

describe("examples/jungle-gyms", function()
  local lines, code, out
  local CONFIG, SCENARIO = "examples/jungle-gyms/config.lua", "examples/jungle-gyms/scenario.lua"

  -- One worker: the order of lines is then the order of events. With more
  -- workers, listeners on different workers print concurrently (checked
  -- below: the same lines, in another order).
  setup(function()
    lines, code, out = example("jungle-gyms", "-w 1")
  end)

  it("tells the same story, in some order, on four workers", function()
    local many, code4, out4 = example("jungle-gyms", "-w 4")
    assert.are.equal(0, code4, out4)
    assert.are.same(sorted_copy(lines), sorted_copy(many))
  end)

  it("runs to the end by itself and exits 0, with nothing on stderr", function()
    assert.are.equal(0, code, out)
    assert.is_nil(out:find("mbrun:", 1, true), out)
    for _, line in ipairs(lines) do
      assert.matches("^%[[%w ]+%] %S", line) -- one event a line, department first
    end
  end)

  it("asks Finance, then Legal, part after part, and shows both refusals", function()
    assert_in_order(lines, {
      "[procurement] asking finance to buy 'swing chains' for $120",
      "[finance] yes: within budget ($880 left)",
      "[procurement] finance said yes: within budget ($880 left)",
      "[procurement] asking legal to buy 'swing chains' for $120",
      "[legal] yes: safety rating 5/5",
      "[procurement] legal said yes: safety rating 5/5",
      -- refused by Finance: Legal is not asked
      "[procurement] asking finance to buy 'monkey bars' for $950",
      "[finance] no: over budget ($950 asked, $880 left)",
      "[procurement] finance said no: over budget ($950 asked, $880 left)",
      -- refused by Legal: Finance gives the reserved money back
      "[procurement] asking finance to buy 'trampoline' for $400",
      "[finance] yes: within budget ($480 left)",
      "[procurement] asking legal to buy 'trampoline' for $400",
      "[legal] no: safety rating 2/5, below our minimum of 4",
      "[procurement] legal said no: safety rating 2/5, below our minimum of 4",
      "[procurement] telling finance to release the $400 for 'trampoline'",
      "[finance] released the $400 reserved for 'trampoline' ($880 left)",
      "[procurement] asking finance to buy 'slide' for $300",
      "[finance] yes: within budget ($580 left)",
      "[procurement] asking legal to buy 'slide' for $300",
      "[legal] yes: safety rating 4/5",
      "[procurement] approved 2 of 4 parts",
    }, 1, out)
    assert.is_nil(find(lines, "[procurement] asking legal to buy 'monkey bars' for $950"))
  end)

  it("sends a JSON purchase notice only for the approved parts", function()
    assert_in_order(lines, {
      "[procurement] approved 2 of 4 parts",
      '[procurement] purchase notice to jungle/purchase: {"department":"procurement",'
        .. '"partName":"swing chains","responseDestinationName":"jungle/purchase/response"}',
      '[procurement] purchase notice to jungle/purchase: {"department":"procurement",'
        .. '"partName":"slide","responseDestinationName":"jungle/purchase/response"}',
    }, 1, out)
    assert.is_nil(out:find("bought 'monkey bars'", 1, true), out)
    assert.is_nil(out:find("bought 'trampoline'", 1, true), out)
  end)

  it("has Sales, then Warehouse answer each notice, one notice after the other", function()
    -- serial: every listener (in registration order) before the next notice;
    -- synchronous answers: read by all before the notice moves on
    assert_in_order(lines, {
      "[sales] procurement bought 'swing chains'; answering at jungle/purchase/response",
      "[warehouse] noted sales on 'swing chains': we'll put 'swing chains' in the next catalogue",
      "[procurement] sales answered on 'swing chains': we'll put 'swing chains' in the next catalogue",
      "[warehouse] procurement bought 'swing chains'; answering at jungle/purchase/response",
      "[sales] noted warehouse on 'swing chains': bay 1 is cleared for 'swing chains'",
      "[procurement] warehouse answered on 'swing chains': bay 1 is cleared for 'swing chains'",
      "[sales] procurement bought 'slide'; answering at jungle/purchase/response",
      "[warehouse] noted sales on 'slide': we'll put 'slide' in the next catalogue",
      "[procurement] sales answered on 'slide': we'll put 'slide' in the next catalogue",
      "[warehouse] procurement bought 'slide'; answering at jungle/purchase/response",
      "[sales] noted warehouse on 'slide': bay 2 is cleared for 'slide'",
      "[procurement] warehouse answered on 'slide': bay 2 is cleared for 'slide'",
    }, 1, out)
    -- each department ignores its own answer
    assert.is_nil(out:find("[sales] noted sales", 1, true), out)
    assert.is_nil(out:find("[warehouse] noted warehouse", 1, true), out)
  end)

  it("broadcasts the news once all answers are in, and every employee reads every item", function()
    local last_answer = find(lines,
      "[procurement] warehouse answered on 'slide': bay 2 is cleared for 'slide'")
    assert(last_answer, out)
    for _, part in ipairs {"swing chains", "slide"} do
      local item = ("new '%s' on the way to the warehouse"):format(part)
      local sent = assert_in_order(lines, {"[procurement] news for all employees: " .. item},
        last_answer, out)
      for _, employee in ipairs {"alice", "bob", "carol"} do
        -- parallel: no order among employees or items, but after the send
        local line = ("[employee %s] read the news: %s"):format(employee, item)
        assert_in_order(lines, {line}, sent, out)
        assert.are.equal(1, count(lines, line), out)
      end
    end
    local reads = 0
    for _, line in ipairs(lines) do
      if line:find("^%[employee ") then reads = reads + 1 end
    end
    assert.are.equal(6, reads, out)
  end)

  it("tells the same story from any working directory", function()
    -- the configuration resolves its scripts against its own folder, the
    -- scenario loads Procurement from its own: absolute paths from /tmp,
    -- and bare file names from inside the example's folder
    local runs = {
      {"-w 1 -c " .. quote(absolute(CONFIG)) .. " " .. quote(absolute(SCENARIO)), "/tmp"},
      {"-w 1 -c config.lua scenario.lua", "examples/jungle-gyms"},
    }
    for _, r in ipairs(runs) do
      local elsewhere, code2, out2 = run(r[1], r[2])
      assert.are.equal(0, code2, out2)
      assert.are.same(sorted_copy(lines), sorted_copy(elsewhere))
    end
  end)
end)

describe("examples/order-pipeline", function()
  local N = 20
  local REASON = 'qty must be a whole number from 1 to 99, not "three"'

  -- The ids of the [ship] lines, in the order printed.
  local function shipped_ids(lines)
    local ids = {}
    for _, l in ipairs(lines) do
      local id = l:match("^%[ship%] order (%d+): ")
      if id then ids[#ids + 1] = tonumber(id) end
    end
    return ids
  end

  -- 1..n without the ids in `skip`.
  local function ids_but(n, skip)
    local ids = {}
    for id = 1, n do
      if not skip[id] then ids[#ids + 1] = id end
    end
    return ids
  end

  -- The stage statistics the scenario prints: name -> {max, largest, refused}.
  local function stage_stats(lines)
    local st = {}
    for _, l in ipairs(lines) do
      local d, max, largest, refused = l:match(
        "^%[summary%] (orders/%a+) +max_queue (%d+), largest_pending (%d+) %([%a ]+%), "
          .. "sends refused (%d+)$")
      if d then st[d] = {tonumber(max), tonumber(largest), tonumber(refused)} end
    end
    return st
  end

  -- What every run without --raise must show.
  local function check_clean(lines, code, out)
    assert.are.equal(0, code, out)
    assert.is_nil(out:find("mbrun:", 1, true), out)
    for _, line in ipairs(lines) do
      assert.matches("^%[[%a ]+%] %S", line) -- one event a line, who first
    end
    assert.are.equal(('[producer] sending %d orders to orders/new (max_queue 2, on_full = "block")')
      :format(N), lines[1], out)
    -- serial stages: every valid order shipped exactly once, in the order sent
    assert.are.same(ids_but(N, {[7] = true}), shipped_ids(lines))
    -- the malformed order: turned down by validate, received at orders/rejected
    assert_in_order(lines, {
      "[validate] order 7 rejected: " .. REASON,
      "[rejected] order 7, back to the customer: " .. REASON,
    }, 1, out)
    assert.are.equal(1, count(lines, "[validate] order 7 rejected: " .. REASON), out)
    assert.is_nil(out:find("dead letter]", 1, true), out)
    -- the summary ends the run
    local last = assert_in_order(lines, {
      ("[summary] %d orders, all accounted for: %d shipped, 1 rejected, 0 dead-lettered")
        :format(N, N - 1),
      "[summary] shipped in the order sent: yes (" .. table.concat(ids_but(N, {[7] = true}), " ") .. ")",
    }, 1, out)
    assert.are.equal(#lines, last + 3, out)
    -- no queue above its max_queue, no send refused; the producer, which
    -- never pauses, filled orders/new to the limit
    local st = stage_stats(lines)
    for _, d in ipairs {"orders/new", "orders/valid", "orders/priced"} do
      assert(st[d], out)
      local max, largest, refused = table.unpack(st[d])
      assert.are.equal(2, max, out)
      assert(largest >= 1 and largest <= max, out)
      assert.are.equal(0, refused, out)
    end
    assert.are.equal(2, st["orders/new"][2], out)
    -- back-pressure: the producer's last send returned only once the pipeline
    -- had room for it. At most 9 orders can be on their way then (3 stages,
    -- each with 1 in hand and 2 waiting), so at least 19 - 9 = 10 valid
    -- orders had been shipped. Without back-pressure it would finish first.
    local done = find_match(lines,
      ("^%%[producer%%] all %d orders accepted in [%%d.]+ s; %%d+ sends waited for room$"):format(N))
    assert(done, out)
    assert(#shipped_ids({table.unpack(lines, 1, done)}) >= 10, out)
    assert(tonumber(lines[done]:match("(%d+) sends waited")) > 0, out)
  end

  it("pushes every order through in order with one worker, none refused, queues bounded", function()
    check_clean(example("order-pipeline", "-w 1"))
  end)

  it("does the same on four workers (the stages then run on different workers)", function()
    check_clean(example("order-pipeline", "-w 4"))
  end)

  it("runs from the example's own folder", function()
    local lines, code, out = run("-w 2 -c config.lua scenario.lua", "examples/order-pipeline")
    assert.are.equal(0, code, out)
    assert.truthy(find(lines, ("[summary] %d orders, all accounted for: %d shipped, 1 rejected, "
      .. "0 dead-lettered"):format(N, N - 1)), out)
  end)

  it("with --raise, reports the failed order as a dead letter, goes on, and exits 1", function()
    local lines, code, out = example("order-pipeline", "-w 2", "16 --raise")
    assert.are.equal(1, code, out)
    -- the raise: on stderr with a traceback, and in mbrun's verdict
    assert.truthy(out:find(
      "mb: listener at 'orders/valid' failed: [^\n]*price%.lua:%d+: no price for 'zip line'\nstack traceback:"), out)
    assert.truthy(find(lines, "mbrun: 1 delivery failed (orders/valid: 1)"), out)
    -- the dead-letter report names the destination and carries the order
    assert.truthy(find_match(lines,
      "^%[dead letter%] order 13 %(1 x zip line%) at orders/valid: failed: .*price%.lua:%d+: no price for 'zip line'$"),
      out)
    -- the serial stage went on with the next orders, in order
    assert.are.same(ids_but(16, {[7] = true, [13] = true}), shipped_ids(lines))
    assert.truthy(find(lines,
      "[summary] 16 orders, all accounted for: 14 shipped, 1 rejected, 1 dead-lettered"), out)
  end)
end)

describe("examples/price-quote", function()
  local ASKING = "[buyer] asking %d quoters at quotes/jungle-gym for 3 x 'jungle gym kit', "
    .. "answers within 0.2 s"
  local TIMEOUT = "[buyer]   timeout  ?            no answer from quotes/jungle-gym within 0.2 s"

  -- The buyer's lines, and how long its request_all waited.
  local function buyer(lines, out)
    local mine, waited = {}, nil
    for _, l in ipairs(lines) do
      if l:match("^%[buyer%]") then
        local n, s = l:match("^%[buyer%] (%d+) answers after ([%d.]+) s:$")
        if n then
          waited = tonumber(s)
          l = ("[buyer] %s answers after X s:"):format(n)
        end
        mine[#mine + 1] = l
      end
    end
    assert(waited, out)
    return mine, waited
  end

  local function check_clean(lines, code, out)
    assert.are.equal(0, code, out)
    assert.is_nil(out:find("mbrun:", 1, true), out)
    local mine, waited = buyer(lines, out)
    assert.are.same({
      ASKING:format(4),
      "[buyer] 4 answers after X s:",
      "[buyer]   ok       gym-depot    $3270",
      "[buyer]   ok       acme         $3540",
      "[buyer]   failed   bargain-bin  out of stock",
      TIMEOUT,
      "[buyer] best price: gym-depot at $3270 (2 of 4 quoters answered in time)",
      -- slowpoke's late reply is counted; nothing failed, so mbrun exits 0
      "[buyer] quotes/jungle-gym: 4 deliveries, 4 delivered, 0 failed, 4 replies, 1 timeout",
    }, mine)
    -- request_all ended at the timeout, without waiting for slowpoke (0.4 s)
    assert(waited >= 0.19 and waited < 0.38, out)
    -- every quoter got the request (parallel: each group once), slowpoke
    -- answered after the buyer had picked
    for _, line in ipairs {
      "[acme] quoting $3540 for 3 x 'jungle gym kit'",
      "[gym-depot] quoting $3270 for 3 x 'jungle gym kit'",
      "[bargain-bin] cannot quote 3 x 'jungle gym kit': out of stock",
      "[slowpoke] quoting $2970 for 3 x 'jungle gym kit'",
    } do
      assert.are.equal(1, count(lines, line), out)
    end
    assert_in_order(lines, {
      "[buyer] best price: gym-depot at $3270 (2 of 4 quoters answered in time)",
      "[slowpoke] quoting $2970 for 3 x 'jungle gym kit'",
      "[buyer] quotes/jungle-gym: 4 deliveries, 4 delivered, 0 failed, 4 replies, 1 timeout",
    }, 1, out)
    assert.are.equal(12, #lines, out)
  end

  it("gathers the quotes with one worker and picks the best one that came in time", function()
    check_clean(example("price-quote", "-w 1"))
  end)

  it("does the same on four workers", function()
    check_clean(example("price-quote", "-w 4"))
  end)

  it("with --raise, shows the raising quoter as failed at once and exits 1", function()
    local lines, code, out = example("price-quote", "-w 2", "--raise")
    assert.are.equal(1, code, out)
    local mine, waited = buyer(lines, out)
    assert.are.equal(ASKING:format(5), mine[1], out)
    assert.are.equal("[buyer] 5 answers after X s:", mine[2], out)
    assert.are.equal("[buyer]   ok       gym-depot    $3270", mine[3], out)
    assert.are.equal("[buyer]   ok       acme         $3540", mine[4], out)
    assert.matches("^%[buyer%]   failed   %?            raised: .*quoter%.lua:%d+: crashy: price list is corrupt$",
      mine[5])
    assert.are.same({
      "[buyer]   failed   bargain-bin  out of stock",
      TIMEOUT,
      "[buyer] best price: gym-depot at $3270 (2 of 5 quoters answered in time)",
      "[buyer] quotes/jungle-gym: 5 deliveries, 4 delivered, 1 failed, 4 replies, 1 timeout",
    }, {table.unpack(mine, 6)})
    assert(waited >= 0.19 and waited < 0.38, out)
    assert.truthy(find(lines, "mbrun: 1 delivery failed (quotes/jungle-gym: 1)"), out)
  end)
end)

describe("the cluster example (examples/cluster/run.sh)", function()
  local ns = require "spec.lib.nats_server"
  local exe, why = ns.find() -- under CI=true a missing server raises here
  if not exe then
    it("runs on a real nats-server", function() pending("skipped: " .. why) end)
    return
  end

  it("prices and bills six orders once each over two nodes, and sums their stats", function()
    local out, err, code = helper.run(("NATS_SERVER=%s timeout 60 env -u LD_PRELOAD sh " ..
      "examples/cluster/run.sh %s"):format(quote(exe), quote(absolute(helper.MBRUN))))
    assert.are.equal(0, code, out .. err)
    for n = 1, 6 do
      assert.matches(("\norder %d: %%a+ x%d costs [%%d.]+ %%(priced on billing%%-[12]%%)\n"):format(n, n),
        out)
      local billed = 0
      for _ in out:gmatch(("billed order %d "):format(n)) do billed = billed + 1 end
      assert.are.equal(1, billed, "order " .. n .. " billed " .. billed .. " times\n" .. out)
    end
    assert.matches("\nnil\tfailed: %./pricer%.lua:%d+: no price for trampoline %(node billing%-[12]%)\n",
      out)
    assert.matches("\nhealth: billing%-1 saw 6, billing%-2 saw 6\n", out)
    assert.matches("\nshop/orders over 3 nodes: 6 sent, 18 delivered\n", out)
  end)

  it("keeps five payments through a server killed -9 and books them in order later (durable.sh)",
    function()
    local out, err, code = helper.run(("NATS_SERVER=%s timeout 60 env -u LD_PRELOAD sh " ..
      "examples/cluster/durable.sh %s"):format(quote(exe), quote(absolute(helper.MBRUN))))
    assert.are.equal(0, code, out .. err)
    for n = 1, 5 do assert.matches(("\npayment %d stored\n"):format(n), out) end
    assert.matches("\nnats%-server killed %(%-9%) and started again on its store\n", out)
    local booked = {}
    for n in out:gmatch("%[ledger%-1%] ledger%-1 booked payment (%d)") do booked[#booked + 1] = n end
    assert.are.same({"1", "2", "3", "4", "5"}, booked)
    assert.matches("booked payment 3 %(30%), delivered again\n", out)
    assert.matches("the bank did not answer", out)
  end)
end)
