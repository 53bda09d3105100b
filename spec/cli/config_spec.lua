-- mbrun -c CONFIG: the configuration file (SPEC section 3), run as a user
-- runs it; every mistake is reported with the file and key path, exit 2,
-- before anything starts.
local helper = require "spec.helper"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))

local function write(name, text)
  local f = assert(io.open(dir .. "/" .. name, "w"))
  f:write(text)
  f:close()
  return dir .. "/" .. name
end

-- its output (stdout and stderr) and exit code
local function mbrun(args)
  local out, _, code = helper.mbrun(args, {merge = true})
  return out, code
end

write("prices.lua", "return function(msg) return 12.5 * msg.payload.qty end\n")
write("handlers.lua", [[
return {
  ["shop/a"] = function(msg) return "a:" .. msg.payload end,
  ["shop/b"] = function(msg) return "b:" .. msg.payload end,
}
]])
write("orders.lua", [[
local tag = ...
mb.listen("shop/orders", function(msg)
  local price = mb.request("shop/prices", {qty = msg.payload.qty})
  print(tag .. " " .. msg.payload.item .. " " .. price .. " on " .. select(2, mb.worker()) .. " workers")
end)
]])
write("nothing.lua", "local x = 1\n")
write("raises.lua", "local x = 1\nerror('no handler today')\n")
write("good.lua", [[
return {
  workers = 3,
  destinations = {
    ["shop/orders"] = {type = "serial"},
    ["shop/prices"] = {type = "synchronous"},
    ["shop/a"] = {}, ["shop/b"] = {max_queue = 10, on_full = "block"},
  },
  services = {{script = "orders.lua", args = {"orders"}}},
  listeners = {["prices.lua"] = {"shop/prices"}, ["handlers.lua"] = {"shop/a", "shop/b"}},
}
]])
local scenario = write("scenario.lua", [[
print("scenario " .. table.concat({...}, ","))
mb.send("shop/orders", {item = "swing", qty = 2})
print(mb.request("shop/a", "x"), mb.request("shop/b", "y"))
]])

describe("mbrun -c", function()
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("declares destinations, starts services and listener scripts, then runs the scenario", function()
    local out, code = mbrun("-c " .. dir .. "/good.lua " .. scenario .. " one two")
    assert.are.equal(0, code, out)
    assert.matches("scenario one,two", out)
    assert.matches("orders swing 25.0 on 3 workers", out) -- workers from the file
    assert.matches("a:x\tb:y", out)
  end)

  it("lets -w override the configuration's workers", function()
    local out, code = mbrun("-w 1 -c " .. dir .. "/good.lua " .. scenario)
    assert.are.equal(0, code, out)
    assert.matches("orders swing 25.0 on 1 workers", out)
  end)

  describe("max_message_size", function()
    -- sends a payload of each size, printing what came of it
    local sizes = write("sizes.lua", [[
      mb.destination("big")
      mb.listen("big", function() end)
      for _, n in ipairs {...} do
        local ok, err = pcall(mb.send, "big", string.rep("x", tonumber(n)))
        print(n, ok and "sent" or err)
      end
    ]])

    it("sets the largest message a send accepts", function()
      local cfg = write("small_messages.lua", "return {max_message_size = 4 * 1024}")
      local out, code = mbrun("-c " .. cfg .. " " .. sizes .. " 4000 4200")
      assert.are.equal(0, code, out)
      assert.matches("4000\tsent", out)
      assert.matches("4200\tmb.send: payload: message too large %(over 4096 bytes, the max_message_size%)", out)
    end)

    it("takes a float with a whole value, as Lua's own functions do (2^12 is a float)",
      function()
        local cfg = write("float_sizes.lua", "return {max_message_size = 2^12, workers = 1.0, "
                          .. "destinations = {q = {max_queue = 1e4, concurrency = 2.0}}}")
        local out, code = mbrun("-c " .. cfg .. " " .. sizes .. " 4000 4200")
        assert.are.equal(0, code, out)
        assert.matches("4000\tsent", out)
        assert.matches("4200\tmb.send: payload: message too large %(over 4096 bytes", out)
      end)

    it("is overridden by --max-message-size", function()
      local cfg = write("small_messages2.lua", "return {max_message_size = 4 * 1024}")
      local out, code = mbrun("--max-message-size 8K -c " .. cfg .. " " .. sizes .. " 4200 8200")
      assert.are.equal(0, code, out)
      assert.matches("4200\tsent", out)
      assert.matches("8200\tmb.send: payload: message too large %(over 8192 bytes", out)
    end)
  end)

  it("runs the configured services until SIGINT when there is no scenario", function()
    local out, _, code, _, running = helper.mbrun_signalled("-c " .. dir .. "/good.lua",
      {delay = 0.5, signals = {"INT"}, merge = true})
    assert.is_true(running, out)
    assert.are.equal(0, code, out)
  end)

  it("runs the configured services until one calls mb.stop(), delivering what is pending (SPEC 7)",
     function()
    write("stopper.lua", [[
      local n = 0
      mb.listen("shop/a", function() mb.sleep(0.05) n = n + 1 print("handled " .. n) end)
      for i = 1, 3 do mb.send("shop/a", i) end
      mb.after(0.01, function() print("stopping") mb.stop() end)
    ]])
    local conf = write("stops.lua", [[
      return {destinations = {["shop/a"] = {}}, services = {{script = "stopper.lua"}}}
    ]])
    local out, _, code, secs = helper.mbrun("-c " .. conf, {merge = true, timeout = 20})
    assert.are.equal(0, code, out)
    assert.matches("stopping\n", out)
    assert.matches("handled 3\n", out) -- the grace period let them finish
    assert.is_true(secs < 5, "took " .. secs)
  end)

  it("makes one group of the services and listener scripts that name the same group", function()
    write("gsvc.lua", "local tag = ...\nmb.listen('g', function() return tag end)\n")
    write("glsn.lua", "return function() return 'lsn' end\n")
    local conf = write("groups.lua", [[
      return {destinations = {g = {}},
              services = {{script = "gsvc.lua", args = {"a"}, group = "billing"},
                          {script = "gsvc.lua", args = {"b"}, group = "billing"}},
              listeners = {["glsn.lua"] = {"g", group = "billing"}}}
    ]])
    local scen = write("gscen.lua", [[
      local seen = {}
      for i = 1, 30 do
        local r = mb.request_all("g", i)
        assert(#r == 1, #r .. " answers")
        seen[r[1].payload] = (seen[r[1].payload] or 0) + 1
      end
      print(("a %d b %d lsn %d deliveries %d"):format(seen.a or 0, seen.b or 0, seen.lsn or 0,
        mb.stats("g").deliveries))
    ]])
    local out, code = mbrun("-w 2 -c " .. conf .. " " .. scen)
    assert.are.equal(0, code, out)
    local a, b, lsn = out:match("a (%d+) b (%d+) lsn (%d+) deliveries 30\n")
    assert.is_truthy(a, out)
    -- each member gets its share: the one with the fewest deliveries in progress
    assert.are.equal(30, a + b + lsn)
    assert.is_true(a + 0 > 0 and b + 0 > 0 and lsn + 0 > 0, out)
  end)

  it("gives every script it runs the mb global: listener scripts, services, the REPL (SPEC 7)",
     function()
    write("glsn.lua", 'assert(mb == require "mb")\nreturn function() return type(mb) end\n')
    write("gsvc2.lua", 'assert(mb == require "mb")\nmb.listen("s", function() return type(mb) end)\n')
    local conf = write("globals.lua", [[
      return {destinations = {l = {}, s = {}}, listeners = {["glsn.lua"] = {"l"}},
              services = {{script = "gsvc2.lua"}}}
    ]])
    local input = write("globals.txt", 'mb == require "mb"\n(mb.request("l", 1))\n(mb.request("s", 1))\n')
    local out, _, code = helper.mbrun("-c " .. conf .. " -i", {stdin = input, merge = true})
    assert.are.equal(0, code, out)
    assert.are.equal('true\ntable\ntable\n', out)
  end)

  local mistakes = {
    {"a file that does not exist", nil, "cannot open .*/missing.lua"},
    {"a syntax error", "return {workers = }", "bad1.lua:1: unexpected symbol"},
    {"not a table", "return 42", "bad2.lua: must return a table .*not a number"},
    {"an unknown key", "return {workerz = 2}", "bad3.lua: unknown key 'workerz'"},
    {"workers of the wrong type", "return {workers = 'many'}",
      "bad4.lua: workers: must be an integer from 1 to 256, not \"many\""},
    {"an invalid destination name", "return {destinations = {['a b'] = {}}}",
      "bad5.lua: destinations%[\"a b\"%]: invalid destination name"},
    {"an unknown destination type", "return {destinations = {x = {type = 'fast'}}}",
      "bad6.lua: destinations.x.type: must be one of \"parallel\", \"serial\", \"synchronous\""},
    {"an unknown destination option", "return {destinations = {x = {colour = 1}}}",
      "bad7.lua: destinations.x: unknown option 'colour'"},
    {"a bad max_queue", "return {destinations = {x = {max_queue = -1}}}",
      "bad8.lua: destinations.x.max_queue: must be a positive integer, not %-1"},
    {"a missing service script", "return {services = {{script = 'nope.lua'}}}",
      "bad9.lua: services%[1%].script: cannot read .*/nope.lua"},
    {"bad instances", "return {services = {{script = 'orders.lua', instances = 0}}}",
      "bad10.lua: services%[1%].instances: must be an integer from 1 to 4096, not 0"},
    {"a listener at an undeclared destination", "return {listeners = {['prices.lua'] = {'shop/x'}}}",
      "bad11.lua: listeners%[\"prices.lua\"%]%[1%]: no destination 'shop/x'"},
    {"a listener script that returns nothing usable",
      "return {destinations = {x = {}}, listeners = {['nothing.lua'] = {'x'}}}",
      "bad12.lua: listeners%[\"nothing.lua\"%]: failed: %S*/nothing.lua: must return its handler %(a function%) or a table"},
    {"a handler table without the mapped destination",
      "return {destinations = {x = {}}, listeners = {['handlers.lua'] = {'x'}}}",
      "bad13.lua: listeners%[\"handlers.lua\"%]: failed: %S*/handlers.lua: returns a table of handlers without one for 'x'"},
    {"services that are not a list", "return {services = {main = {script = 'orders.lua'}}}",
      "bad14.lua: services: must be a list %(found key 'main'%)"},
    -- issue 12, item 9
    {"a hole in the services list", "return {services = {{script = 'orders.lua'}, nil, {script = 'nope.lua'}}}",
      "bad15.lua: services%[2%]: missing: the list has a hole %(nil%) before its entry 3"},
    {"a hole in a listener's destinations, before an undeclared one",
      "return {destinations = {x = {}}, listeners = {['prices.lua'] = {'x', nil, 'undeclared'}}}",
      "bad16.lua: listeners%[\"prices.lua\"%]%[2%]: missing: the list has a hole %(nil%) before its entry 3"},
    {"concurrency on a serial destination", "return {destinations = {x = {type = 'serial', concurrency = 4}}}",
      "bad17.lua: destinations.x.concurrency: is only for parallel destinations %(this one is serial%)"},
    {"a listener script that raises while starting",
      "return {destinations = {x = {}}, listeners = {['raises.lua'] = {'x'}}}",
      "bad18.lua: listeners%[\"raises.lua\"%]: failed: %S*/raises.lua:2: no handler today"},
    {"an error raised with the base functions it offers",
      "return {workers = assert(tonumber(os.getenv('MB_NO_SUCH_VARIABLE')), 'set MB_NO_SUCH_VARIABLE')}",
      "bad19.lua: raised an error: %S*bad19.lua:1: set MB_NO_SUCH_VARIABLE"},
    {"an error object with __tostring",
      "error(setmetatable({}, {__tostring = function() return 'told through __tostring' end}))",
      "bad20.lua: raised an error: told through __tostring\n$"},
    -- found by fuzz/fuzz_config.c
    {"a table whose metamethod raises while it is checked",
      "return {destinations = {x = setmetatable({}, {__index = function() error('boom') end})}}",
      "bad21.lua: raised an error while it was checked %(a metamethod of one of its tables%?%): " ..
        "%S*bad21.lua:1: boom"},
    {"a destination name with a newline, on one line",
      "return {destinations = {['a\\nb'] = {}}}",
      "bad22.lua: destinations%[\"a\\nb\"%]: invalid destination name"},
    {"a precompiled chunk, naming the file", "\27Lua",
      "bad23.lua: attempt to load a binary chunk %(mode is 't'%)"},
    {"a max_message_size that is not a whole number", "return {max_message_size = '16M'}",
      "bad24.lua: max_message_size: must be a whole number of bytes from 1024 %(1 KiB%) to " ..
        "1073741824 %(1 GiB%), e%.g%. 16 %* 1024 %* 1024; not \"16M\""},
    {"a max_message_size below 1 KiB", "return {max_message_size = 64}",
      "bad25.lua: max_message_size: must be a whole number of bytes from 1024 .*; not 64"},
    {"a max_message_size over 1 GiB", "return {max_message_size = 2 * 1024 * 1024 * 1024}",
      "bad26.lua: max_message_size: must be .*; not 2147483648"},
    {"a max_message_size that is a float with a fraction", "return {max_message_size = 4096.5}",
      "bad27.lua: max_message_size: must be .*; not 4096.5"},
    -- issue 17
    {"a share option that is not a boolean", "return {destinations = {x = {share = 'yes'}}}",
      "bad28.lua: destinations.x.share: must be true or false"},
    -- found by the red-team pass of session 12: these hung mbrun, or let a
    -- configuration take all the memory, before anything started
    {"a configuration that never returns", "while true do end",
      "bad29.lua: still running after 5 s %(an endless loop%?%); a configuration file must " ..
        "return its table"},
    {"a configuration that never returns, inside a pcall",
      "while true do pcall(function() while true do end end) end",
      "bad30.lua: still running after 5 s"},
    {"a configuration that takes too much memory",
      "local s = ('x'):rep(300 * 1024 * 1024)\nreturn {}",
      "bad31.lua: needs more than 256 MiB of memory to run %(a configuration file is data%)"},
    -- also found by the red-team pass: these started, then failed (exit 1) or
    -- ran with part of the configuration silently left out
    {"a service script that is a folder", "return {services = {{script = '.'}}}",
      "bad32.lua: services%[1%].script: cannot read %S*/%.: Is a directory"},
    {"more instances than mb.load takes", "return {services = {{script = 'orders.lua', instances = 5000}}}",
      "bad33.lua: services%[1%].instances: must be an integer from 1 to 4096, not 5000"},
    {"args that are not a list", "return {services = {{script = 'orders.lua', args = {tag = 'x'}}}}",
      "bad34.lua: services%[1%].args: must be a list %(found key 'tag'%); the script gets its " ..
        "entries as `...`"},
    {"a listener mapped twice to one destination",
      "return {destinations = {x = {}}, listeners = {['prices.lua'] = {'x', 'x'}}}",
      "bad35.lua: listeners%[\"prices.lua\"%]%[2%]: 'x' is listed twice %(also as entry 1%)"},
    {"a listener script that is a folder",
      "return {destinations = {x = {}}, listeners = {['.'] = {'x'}}}",
      "bad36.lua: listeners%[\".\"%]: cannot read %S*/%.: Is a directory"},
    {"workers given as a string", "return {workers = '4'}",
      "bad37.lua: workers: must be an integer from 1 to 256, not \"4\""},
    {"destinations given as a list of names", "return {destinations = {'x'}}",
      "bad38.lua: destinations%[1%]: invalid destination name %(a number, not a string%)"},
    {"a listener's destination that is not a name",
      "return {destinations = {x = {}}, listeners = {['prices.lua'] = {'x', {'x'}}}}",
      "bad39.lua: listeners%[\"prices.lua\"%]%[2%]: must be a destination name %(a string%), not a table\n"},
    -- found by the review of session 12: Lua runs no hook in a finalizer, so
    -- a __gc that loops hung mbrun (when the check's state closed, or at a
    -- collection)
    {"a configuration whose __gc never returns",
      "setmetatable({}, {__gc = function() while true do end end})\nreturn {}",
      "bad40.lua: still running after 5 s %(an endless loop, in a __gc or one long C call%?%); a "
        .. "configuration file must return its table\n"},
    {"a configuration whose __gc never returns, at a collection",
      "setmetatable({}, {__gc = function() while true do end end})\ncollectgarbage()\nreturn {}",
      "bad41.lua: still running after 5 s"},
    -- an allocation the file itself caught is not what went wrong
    {"a mistake after an allocation failure the file caught",
      "pcall(string.rep, 'x', 300 * 1024 * 1024)\nreturn {workers = 'x'}",
      "bad42.lua: workers: must be an integer from 1 to 256, not \"x\""},
    {"a listener mapping's group that is no group name",
      "return {destinations = {x = {}}, listeners = {['prices.lua'] = {'x', group = 'a b'}}}",
      "bad43.lua: listeners%[\"prices.lua\"%]%.group: must be 1%-64 characters of A%-Z a%-z 0%-9 _ %-, not a b"},
    -- SPEC 6: a configuration error, exit 2
    {"a cluster destination with no cluster to join", "return {destinations = {x = {cluster = true}}}",
      "bad44.lua: destinations.x is a cluster destination, but no cluster is configured"},
  }
  for n, m in ipairs(mistakes) do
    it("reports " .. m[1] .. " and exits 2", function()
      local path = m[2] and write("bad" .. (n - 1) .. ".lua", m[2]) or dir .. "/missing.lua"
      local out, code = mbrun("-c " .. path .. " " .. scenario)
      assert.are.equal(2, code, out)
      assert.matches("^mbrun: %S-" .. m[3], out) -- the path, then what is wrong
      assert.are.equal(1, select(2, out:gsub("\n", "")), "one line: " .. out)
      assert.is_nil(out:find("scenario", 1, true), "nothing may start: " .. out)
    end)
  end

  it("says which handlers of a listener script no destination maps, and runs", function()
    local path = write("extra.lua",
      "return {destinations = {['shop/a'] = {}}, listeners = {['handlers.lua'] = {'shop/a'}}}")
    local out, code = mbrun("-c " .. path .. " " .. scenario)
    assert.are.equal(0, code, out)
    assert.matches("mbrun: %S*/handlers.lua: its handler for \"shop/b\" never runs: the "
      .. "configuration maps it only to shop/a\n", out)
  end)

  -- issue 12, items 9 and 15
  describe("starts in one pass", function()
    it("runs each listener script once", function()
      write("loud.lua", "print('loud.lua runs')\nreturn function(msg) return msg.payload end\n")
      local cfg = write("once.lua", "return {destinations = {x = {}}, listeners = {['loud.lua'] = {'x'}}}")
      local s = write("once_scenario.lua", "print('reply ' .. mb.request('x', 7))\n")
      local out, code = mbrun("-w 2 -c " .. cfg .. " " .. s)
      assert.are.equal(0, code, out)
      assert.are.equal(1, select(2, out:gsub("loud.lua runs", "")), out)
      assert.matches("reply 7", out)
    end)

    -- found by the red-team pass of session 12: mb.load returns at the
    -- script's first wait, so the scenario started before the handler was
    -- registered (no_listeners), and a failure after the wait was exit 1
    -- with the scenario run
    it("waits for a listener script that waits while it loads", function()
      write("slow_start.lua", "mb.sleep(0.3)\nreturn function(msg) return 'slow ' .. msg.payload end\n")
      local cfg = write("slow.lua", "return {destinations = {x = {}}, listeners = {['slow_start.lua'] = {'x'}}}")
      local s = write("slow_scenario.lua", "print(mb.request('x', 'start'))\n")
      for _, w in ipairs {1, 2} do
        local out, code = mbrun("-w " .. w .. " -c " .. cfg .. " " .. s)
        assert.are.equal(0, code, out)
        assert.matches("^slow start\ttable", out)
      end
    end)

    it("exits 2 when a listener script fails after a wait while it loads, before the scenario", function()
      write("late_fail.lua", "mb.sleep(0.2)\nreturn 42\n")
      local cfg = write("late.lua", "return {destinations = {x = {}}, listeners = {['late_fail.lua'] = {'x'}}}")
      local out, code = mbrun("-w 2 -c " .. cfg .. " " .. scenario)
      assert.are.equal(2, code, out)
      assert.matches("late_fail.lua: must return its handler", out)
      assert.matches("mbrun: %S*late.lua: listeners%[\"late_fail.lua\"%]: failed while it loaded " ..
        "%(see above%)\n", out)
      assert.is_nil(out:find("scenario", 1, true), out)
    end)

    it("offers the safe base functions to the configuration file", function()
      local cfg = write("base.lua", [[
        local names = {}
        for _, n in ipairs {"a", "b"} do names[#names + 1] = n end
        local dests = {}
        for _, n in pairs(names) do dests[string.format("q/%s", n)] = {max_queue = math.max(1, select("#", 1, 2))} end
        assert(type(os.getenv("PATH")) == "string" and tostring(1) == "1" and tonumber("2") == 2)
        assert(math.random == nil and print == nil and io == nil and require == nil, "not data")
        if not next(dests) then error("no destinations") end
        return {destinations = dests}
      ]])
      local s = write("base_scenario.lua", "print(table.concat(mb.destinations(), ' '))\n")
      local out, code = mbrun("-c " .. cfg .. " " .. s)
      assert.are.equal(0, code, out)
      assert.matches("q/a q/b", out)
    end)

    local services = [[
      return {destinations = {t = {}},
              services = {{script = "ticker.lua", instances = 2}, {script = "refuses.lua", instances = 3}}}
    ]]
    write("ticker.lua", "mb.listen('t', function() end)\nmb.every(0.01, function() end)\nprint('ticker up')\n")
    write("refuses.lua", "mb.listen('t', function() end)\nerror('this service refuses to start')\n")

    it("exits 1 when a service fails to start, after stopping what started, before the scenario", function()
      local cfg = write("refusing.lua", services)
      local out, code = mbrun("-w 3 -c " .. cfg .. " " .. scenario)
      assert.are.equal(1, code, out)
      assert.matches("mbrun: %S*refusing.lua: services%[2%]: failed: %S*/refuses.lua:2: this service refuses to start\n",
        out)
      assert.are.equal(2, select(2, out:gsub("ticker up", "")), out) -- it started, then stopped
      assert.is_nil(out:find("scenario", 1, true), out)
    end)

    it("exits 1 when a service fails to start and there is no scenario", function()
      local cfg = write("refusing2.lua", services)
      local out, code = mbrun("-w 3 -c " .. cfg)
      assert.are.equal(1, code, out) -- (124: it kept running)
      assert.matches("services%[2%]: failed: %S*/refuses.lua:2: this service refuses to start", out)
    end)

    -- found by the red-team pass of session 12: read twice, a pipe gave
    -- its text to the check and nothing to the start ("must return a table,
    -- not a nil", after the check had passed)
    it("exits 2, saying why, for a configuration that is not a regular file (a pipe)", function()
      local out, code = mbrun("-c /dev/stdin " .. scenario .. " < /dev/null") -- not a file either
      assert.are.equal(2, code, out)
      assert.are.equal("mbrun: /dev/stdin: not a regular file (a pipe?): mbrun reads the " ..
        "configuration twice, to check it and to start it; give the path of a file\n", out)
    end)

    it("exits 2 for a configuration file or scenario that is a folder", function()
      local out, code = mbrun("-c " .. dir .. " " .. scenario)
      assert.are.equal(2, code, out)
      assert.matches("^mbrun: %S+ is a folder; give the path of a configuration file", out)
      out, code = mbrun("-c " .. dir .. "/good.lua " .. dir)
      assert.are.equal(2, code, out)
      assert.matches("^mbrun: %S+ is a folder; give the path of a Lua script", out)
    end)
  end)
end)
