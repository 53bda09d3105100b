-- Per-service limits (SPEC section 2, mb.load's `memory`; issue 15): a
-- service past its memory fails alone, as Lua's "not enough memory", and
-- goes on; the others keep working. Run through mbrun on 2 workers.
local helper = require "spec.helper"

describe("mb.load's memory limit", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(function() helper.remove_tree(dir) end)

  it("fails the service that allocates past it, alone, and the service goes on", function()
    helper.write(dir .. "/hog.lua", [[
      local keep = {}
      mb.listen("hog", function(msg)
        if msg.payload == "grow" then
          while true do keep[#keep + 1] = string.rep("x", 1024 * 1024) .. #keep end
        end
        keep = {}
        collectgarbage()
        return "still here"
      end)
    ]])
    helper.write(dir .. "/main.lua", [[
      mb.destination("hog")
      mb.destination("other")
      assert(mb.load("hog.lua", {memory = 16 * 1024 * 1024}))
      local served = 0
      assert(mb.load("other.lua", {instances = 2}))
      -- the others' traffic goes on while the hog fails, twice
      local done = 0
      for i = 1, 2 do
        mb.spawn(function() print("hog", mb.request("hog", "grow", {timeout = 10})) done = done + 1 end)
      end
      for i = 1, 2000 do
        local r = mb.request("other", i, {timeout = 10})
        if r == 2 * i then served = served + 1 end
      end
      while done < 2 do mb.sleep(0.01) end
      print("served", served)
      print("after", mb.request("hog", "light", {timeout = 10}))
      for _, s in ipairs(mb.services()) do
        if s.name:match("hog") then print("failures", s.failures, "deliveries", s.deliveries) end
      end
    ]])
    helper.write(dir .. "/other.lua", [[mb.listen("other", function(m) return m.payload * 2 end)]])
    local out, err, code = helper.mbrun("-w 2 main.lua", {dir = dir})
    assert.are.equal(1, code, out .. err) -- the two failed deliveries
    assert.are.equal(2, select(2, out:gsub("hog\tnil\tfailed: not enough memory", "")), out)
    assert.matches("served\t2000\n", out)
    assert.matches("after\tstill here\t", out)
    -- (the light call's ending may be counted after its reply is back)
    assert.matches("failures\t2\tdeliveries\t[23]\n", out)
    assert.matches("mbrun: 2 deliveries failed %(hog: 2%)", err)
  end)

  it("refuses a memory limit that is not a positive number of bytes", function()
    helper.write(dir .. "/x.lua", "")
    helper.write(dir .. "/main.lua", [[
      print(pcall(mb.load, "x.lua", {memory = -1}))
      print(pcall(mb.load, "x.lua", {memory = "16M"}))
    ]])
    local out, err, code = helper.mbrun("-w 1 main.lua", {dir = dir})
    assert.are.equal(0, code, out .. err)
    assert.matches("false\t.*mb.load: option 'memory' must be a positive integer", out)
    assert.are.equal(2, select(2, out:gsub("false\t[^\n]*option 'memory'", "")), out)
  end)

  it("takes `memory` in the configuration, checked with its key path", function()
    helper.write(dir .. "/x.lua", "")
    helper.write(dir .. "/bad.lua", [[return {services = {{script = "x.lua", memory = "lots"}}}]])
    local out, err, code = helper.mbrun("-c bad.lua", {dir = dir})
    assert.are.equal(2, code, out .. err)
    assert.matches("bad.lua: services%[1%]%.memory: must be a positive number of bytes", err)
  end)
end)

describe("mb.load's cpu limit", function()
  local dir
  before_each(function()
    dir = helper.tmpdir()
    helper.write(dir .. "/spin.lua", [[
      mb.listen("spin", function(msg)
        if msg.payload == "loop" then while true do end end
        if msg.payload == "inner" then coroutine.wrap(function() while true do end end)() end
        if msg.payload == "pcall" then while true do pcall(function() while true do end end) end end
        return "fine"
      end)
      mb.listen("tick", function()
        mb.after(0, function() while true do end end) -- a timer callback that never returns
      end)
    ]])
    helper.write(dir .. "/main.lua", [[
      mb.destination("spin")
      mb.destination("tick")
      mb.destination("other")
      assert(mb.load("spin.lua", {cpu = 0.2}))
      assert(mb.load("other.lua"))
      -- aborted soon: within 2 s of the process's CPU time (not of the
      -- clock's: on a loaded machine 0.2 s of CPU takes seconds)
      for _, p in ipairs{"loop", "inner", "pcall"} do
        local t = os.clock()
        local ok, err = mb.request("spin", p, {timeout = 10})
        print(p, ok, err, os.clock() - t < 2)
      end
      assert(mb.send("tick", 1))
      mb.sleep(0.5)
      print("after", mb.request("spin", "ok", {timeout = 10}))
      print("other", mb.request("other", 21, {timeout = 10}))
    ]])
    helper.write(dir .. "/other.lua", [[mb.listen("other", function(m) return m.payload * 2 end)]])
  end)
  after_each(function() helper.remove_tree(dir) end)

  for _, w in ipairs{1, 2, 4} do
    it("aborts a call that runs past it, alone, on " .. w .. " worker(s), and the service goes on",
      function()
        local out, err, code = helper.mbrun("-w " .. w .. " main.lua", {dir = dir})
        assert.are.equal(1, code, out .. err)
        for _, p in ipairs{"loop", "inner", "pcall"} do
          assert.matches(p .. "\tnil\tfailed: cpu limit %(0%.2 s%)\ttrue\n", out)
        end
        assert.matches("mb: timer callback failed: cpu limit %(0%.2 s%)", err)
        assert.matches("after\tfine\t", out)
        assert.matches("other\t42\t", out)
      end)
  end

  it("reaches what a failing handler still runs: its error's __tostring and its __close",
     function()
    helper.write(dir .. "/unwind.lua", [[
      mb.listen("unwind", function(msg)
        if msg.payload == "tostring" then
          error(setmetatable({}, {__tostring = function() while true do end end}))
        elseif msg.payload == "close" then
          local x <close> = setmetatable({}, {__close = function() while true do end end})
          error("raised", 0)
        elseif msg.payload == "aborted" then -- its __close runs, on a budget of its own
          local x <close> = setmetatable({}, {__close = function() print("closed") end})
          while true do end
        end
        return "fine"
      end)
    ]])
    helper.write(dir .. "/main.lua", [[
      mb.destination("unwind")
      assert(mb.load("unwind.lua", {cpu = 0.2}))
      for _, p in ipairs{"tostring", "close", "aborted"} do
        local t = os.clock()
        local ok, err = mb.request("unwind", p, {timeout = 10})
        print(p, ok, err, os.clock() - t < 2)
      end
      print("after", mb.request("unwind", "ok", {timeout = 10}))
    ]])
    local out, err, code = helper.mbrun("-w 2 main.lua", {dir = dir, timeout = 30})
    assert.are.equal(1, code, out .. err)
    assert.matches("tostring\tnil\tfailed: %(error object is a table value; its __tostring "
      .. "raised%)\ttrue\n", out)
    assert.matches("close\tnil\tfailed: raised\ttrue\n", out)
    assert.matches("mb: listener at 'unwind': closing a to%-be%-closed variable raised: cpu limit "
      .. "%(0%.2 s%)", err)
    assert.matches("closed\naborted\tnil\tfailed: cpu limit %(0%.2 s%)\ttrue\n", out)
    assert.matches("after\tfine\t", out)
  end)

  it("refuses a cpu limit that is not a number of seconds above 0", function()
    helper.write(dir .. "/x.lua", "")
    helper.write(dir .. "/bad.lua", [[
      print(pcall(mb.load, "x.lua", {cpu = 0}))
      print(pcall(mb.load, "x.lua", {cpu = 0/0}))
    ]])
    local out, err, code = helper.mbrun("-w 1 bad.lua", {dir = dir})
    assert.are.equal(0, code, out .. err)
    assert.are.equal(2, select(2, out:gsub("false\t[^\n]*mb.load: option 'cpu'", "")), out)
    helper.write(dir .. "/conf.lua", [[return {services = {{script = "x.lua", cpu = -1}}}]])
    out, err, code = helper.mbrun("-c conf.lua", {dir = dir})
    assert.are.equal(2, code, out .. err)
    assert.matches("conf.lua: services%[1%]%.cpu: must be a number of seconds above 0", err)
  end)
end)
