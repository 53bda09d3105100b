-- handle:reload() (SPEC section 2, issue 15): new instances of the script
-- join the same groups; the old ones take no new deliveries, finish the
-- running ones and close; nothing is lost or delivered twice; a new file
-- that fails leaves the old instances running. Under load on 1, 2 and 4
-- workers: spec/workers/reload_load.lua.
local mb = require "mb"
local helper = require "spec.helper"

describe("handle:reload()", function()
  local dir, path
  before_each(function()
    dir = helper.tmpdir()
    path = dir .. "/ver.lua"
  end)
  after_each(function()
    for _, s in ipairs(mb.services()) do s.handle:stop() end
    for _, d in ipairs{"rl/ver", "rl/serial", "rl/slow"} do
      if mb.stats(d) then helper.assert_invariant(d) end
    end
    helper.remove_tree(dir)
    helper.assert_clean()
  end)

  -- the listener script, answering its version
  local function version(v, extra)
    helper.write(path, ([[
      %s
      mb.listen("rl/ver", function(msg) return "%s" end)
    ]]):format(extra or "", v))
  end

  it("runs the file again: the answers change, the instances and listeners stay", function()
    mb.destination("rl/ver")
    version("v1")
    local h = assert(mb.load(path, {instances = 3}))
    assert.are.equal("v1", (mb.request("rl/ver", 0)))
    version("v2")
    assert.are.equal(h, h:reload())
    for _ = 1, 6 do assert.are.equal("v2", (mb.request("rl/ver", 0))) end
    assert.are.equal(3, mb.stats("rl/ver").listeners)
    local list = mb.services()
    assert.are.equal(1, #list)
    assert.are.same({path, 3}, {list[1].path, list[1].instances})
    -- a handle from mb.services() reloads the same service
    version("v3")
    assert(list[1].handle:reload())
    assert.are.equal("v3", (mb.request("rl/ver", 0)))
    assert.are.equal(3, mb.stats("rl/ver").listeners)
  end)

  it("gives the new instances the same arguments", function()
    mb.destination("rl/ver")
    local function write(v)
      helper.write(path, ([[
        local n, a, b = select("#", ...), ...
        mb.listen("rl/ver", function() return "%s " .. n .. " " .. a .. " " .. math.type(b) end)
      ]]):format(v))
    end
    write("v1")
    local h = assert(mb.load(path, {args = {"x", 2}}))
    assert.are.equal("v1 2 x integer", (mb.request("rl/ver", 1)))
    write("v2")
    assert(h:reload())
    assert.are.equal("v2 2 x integer", (mb.request("rl/ver", 1)))
  end)

  it("keeps the old instances when the new file has a syntax error or raises", function()
    mb.destination("rl/ver")
    version("v1")
    local h = assert(mb.load(path, {instances = 2}))
    version("v2", "this is not Lua (")
    local ok, err = h:reload()
    assert.is_nil(ok)
    assert.matches("^failed: .*ver%.lua:1: syntax error", err)
    assert.are.equal("v1", (mb.request("rl/ver", 0)))
    -- raising after its listener is registered: the new instances go again
    version("v3", "mb.listen('rl/ver', function() return 'v3' end); error('not today', 0)")
    assert.are.same({nil, "failed: not today"}, {h:reload()})
    for _ = 1, 4 do assert.are.equal("v1", (mb.request("rl/ver", 0))) end
    assert.are.equal(2, mb.stats("rl/ver").listeners)
    assert.are.equal(2, mb.services()[1].instances)
  end)

  it("lets a running handler finish in the old script, and hands what waits to the new", function()
    mb.destination("rl/slow")
    helper.write(path, [[
      mb.listen("rl/slow", function(msg)
        if msg.payload == "slow" then mb.sleep(0.1) end
        return "old " .. tostring(msg.payload)
      end)
    ]])
    local h = assert(mb.load(path))
    local answers = {}
    mb.spawn(function() answers.slow = mb.request("rl/slow", "slow") end)
    mb.sleep(0.01) -- the old instance is inside the slow handler now
    helper.write(path, [[
      mb.listen("rl/slow", function(msg) return "new " .. tostring(msg.payload) end)
    ]])
    assert(h:reload())
    assert.are.equal("new 1", (mb.request("rl/slow", 1)))
    mb.run()
    assert.are.equal("old slow", answers.slow)
    local s = mb.stats("rl/slow")
    assert.are.same({2, 0, 0}, {s.delivered, s.failed, s.dropped})
    assert.are.equal(1, mb.services()[1].instances)
  end)

  it("keeps the old listeners until the new script listens, when its body waits first",
    function()
      mb.destination("rl/ver")
      version("v1")
      local h = assert(mb.load(path, {instances = 2}))
      version("v2", "mb.sleep(0.3)") -- reload returns at this wait
      assert(h:reload())
      for _ = 1, 4 do assert.are.equal("v1", (mb.request("rl/ver", 0))) end
      mb.sleep(0.5)
      for _ = 1, 4 do assert.are.equal("v2", (mb.request("rl/ver", 0))) end
      assert.are.equal(2, mb.stats("rl/ver").listeners)
      -- a new script that no longer listens there: the old listeners close
      -- after 2 s
      helper.write(path, "local x = 1\n")
      local t0 = mb.now()
      assert(h:reload())
      assert.are.equal("v2", (mb.request("rl/ver", 0)))
      while mb.stats("rl/ver").listeners > 0 and mb.now() - t0 < 5 do mb.sleep(0.05) end
      local took = mb.now() - t0
      assert.are.equal(0, mb.stats("rl/ver").listeners)
      assert.is_true(took >= 1.9 and took < 3, "closed after " .. took .. " s")
    end)

  it("keeps a serial destination's order across the switch", function()
    mb.destination("rl/serial", {type = "serial"})
    mb.destination("rl/log")
    local log = {}
    mb.listen("rl/log", function(msg) log[#log + 1] = msg.payload end)
    local body = [[
      mb.listen("rl/serial", function(msg)
        if msg.payload %% 7 == 0 then mb.sleep(0) end
        mb.send("rl/log", {n = msg.payload, v = %d})
      end)
    ]]
    helper.write(path, body:format(1))
    local h = assert(mb.load(path))
    mb.spawn(function()
      for n = 1, 300 do
        assert(mb.send("rl/serial", n))
        if n % 10 == 0 then mb.sleep(0) end -- some run, some wait in the queue
        if n % 100 == 50 then
          helper.write(path, body:format(n // 100 + 2))
          assert(h:reload())
        end
      end
    end)
    mb.run()
    assert.are.equal(300, #log)
    local versions = {}
    for i, e in ipairs(log) do
      assert.are.equal(i, e.n)
      versions[e.v] = true
      if i > 1 then assert.is_true(e.v >= log[i - 1].v) end
    end
    assert.is_true(versions[1] and versions[2] and versions[3] and versions[4])
  end)

  it("reloads the service that asks, from its own handler", function()
    mb.destination("rl/ver")
    version("v1", [[
      mb.listen("rl/self", function(msg) return (mb.services()[1].handle:reload()) ~= nil end)
    ]])
    mb.destination("rl/self")
    assert(mb.load(path))
    version("v2")
    assert.is_true((mb.request("rl/self", 0)))
    mb.run()
    assert.are.equal("v2", (mb.request("rl/ver", 0)))
    assert.are.equal(0, mb.stats("rl/self").listeners)
  end)

  it("keeps the instances in one group when one of them listens again", function()
    mb.destination("rl/ver")
    mb.destination("rl/ctl")
    helper.write(path, [[
      local l
      local function listen() l = mb.listen("rl/ver", function() return "v" end) end
      listen()
      mb.listen("rl/ctl", function() l:close(); listen() end) -- a setting changed
    ]])
    local h = assert(mb.load(path, {instances = 2}))
    assert(mb.send("rl/ctl", 1)) -- one of the two listens again
    mb.run()
    for n = 1, 4 do assert(mb.send("rl/ver", n)) end
    mb.run()
    assert.are.equal(4, mb.stats("rl/ver").deliveries) -- once each, not once per instance
    assert(h:reload())
    for n = 1, 4 do assert(mb.send("rl/ver", n)) end
    mb.run()
    local s = mb.stats("rl/ver")
    assert.are.same({8, 0, 2}, {s.deliveries, s.dropped, s.listeners})
  end)

  it("keeps the instances it should when reloads overlap, and stops them with a stop", function()
    -- on 4 workers a reload waits for instances started elsewhere: others
    -- (--watch, the REPL, a handler) can begin meanwhile
    helper.write(path, [[mb.listen("rl/ver", function() return "v" end)]])
    local scenario = dir .. "/overlap.lua"
    helper.write(scenario, ([[
      mb.destination("rl/ver")
      local h = assert(mb.load(%q, {instances = 3}))
      for _ = 1, 20 do
        local done = 0
        for _ = 1, 3 do mb.spawn(function() assert(h:reload()); done = done + 1 end) end
        while done < 3 do mb.sleep(0.001) end
      end
      mb.sleep(0.05)
      print("instances", mb.services()[2].instances, mb.stats("rl/ver").listeners)
      local r
      mb.spawn(function() r = {h:reload()} end)
      h:stop()
      while not r do mb.sleep(0.001) end
      mb.sleep(0.05)
      print("stopped", r[1], r[2], #mb.services(), mb.stats("rl/ver").listeners)
    ]]):format(path))
    local out, _, code = helper.mbrun("-w 4 " .. helper.quote(scenario), {merge = true})
    assert.are.equal(0, code, out)
    assert.matches("instances\t3\t3\n", out)
    assert.matches(("stopped\tnil\tclosed: service '%s' was stopped while it reloaded\t1\t0\n")
      :format(path:gsub("%p", "%%%0")), out)
  end)

  -- a reload a handler began dies with its instance when the service is
  -- stopped; a new instance that was not yet listed when the stop came
  -- (its worker busy) started afterwards and ran on, listening, after the
  -- stop had returned
  it("stops the new instances of a reload its own handler began, when the service stops", function()
    helper.write(path, [[
      mb.listen("rl/ver", function(msg)
        for _, s in ipairs(mb.services()) do
          if s.name == "self" then s.handle:reload() end
        end
        return "v"
      end)
    ]])
    local scenario = dir .. "/selfreload.lua"
    helper.write(scenario, ([[
      mb.destination("rl/ver")
      local h = assert(mb.load(%q, {name = "self"}))
      assert(mb.send("rl/ver", "reload"))
      -- keep this worker busy, so a new instance placed here cannot start yet
      local t0 = os.clock() while os.clock() - t0 < 0.3 do end
      h:stop()
      mb.sleep(0.3)
      print("after stop", #mb.services(), mb.stats("rl/ver").listeners)
    ]]):format(path))
    for _, w in ipairs({2, 3}) do
      local out = helper.mbrun("-w " .. w .. " " .. helper.quote(scenario), {merge = true})
      assert.matches("after stop\t1\t0\n", out)
    end
  end)

  it("says why mbrun's scenario cannot be reloaded", function()
    local scenario = dir .. "/scenario.lua"
    helper.write(scenario, "print(mb.services()[1].handle:reload())")
    local out, _, code = helper.mbrun("-w 2 " .. helper.quote(scenario), {merge = true})
    assert.are.equal(0, code, out)
    assert.are.equal(("nil\tfailed: service '%s' cannot be reloaded: it is the scenario mbrun "
      .. "runs (what mb.load, .load or a configuration started can be)\n"):format(scenario), out)
  end)

  it("says so when the service no longer runs", function()
    mb.destination("rl/ver")
    version("v1")
    local h = assert(mb.load(path))
    h:stop()
    assert.are.same({nil, ("closed: service '%s' is not running (nothing to reload)"):format(path)},
      {h:reload()})
  end)

  it("keeps named groups and each mb.listen's group of a multi-instance load", function()
    mb.destination("rl/ver")
    -- two listeners per instance at one destination: two groups of 2
    helper.write(path, [[
      mb.listen("rl/ver", function() end)
      mb.listen("rl/ver", function() end, {group = "rl-named"})
      mb.listen("rl/ver", function() end)
    ]])
    local h = assert(mb.load(path, {instances = 2}))
    local function deliveries() return mb.stats("rl/ver").deliveries end
    assert(mb.send("rl/ver", 1))
    mb.run()
    assert.are.equal(3, deliveries()) -- one per group: 2 of their own + the named one
    assert(h:reload())
    assert(mb.send("rl/ver", 2))
    mb.run()
    assert.are.equal(6, deliveries())
    assert.are.equal(6, mb.stats("rl/ver").listeners)
  end)
end)
