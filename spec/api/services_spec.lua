-- mb.services(): the services running now, one entry per mb.load, with
-- what each has done (SPEC section 2, "Services and the loop"); its
-- handle stops them. Several workers: spec/cli/mbrun_spec.lua.
local mb = require "mb"
local helper = require "spec.helper"

describe("mb.services()", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(function()
    for _, s in ipairs(mb.services()) do s.handle:stop() end
    helper.remove_tree(dir)
    helper.assert_clean()
  end)

  local function calc()
    return helper.write(dir .. "/calc.lua", [[
      mb.listen("svc/calc", function(msg)
        if msg.payload == "boom" then error("no sums today", 0) end
        return msg.payload * 2
      end)
    ]])
  end

  -- the arguments were pushed onto the new state's stack with no room
  -- made for them: past about 20, a load (or reload) wrote beyond the
  -- stack and crashed
  it("passes many arguments to a loaded (and reloaded) script", function()
    mb.destination("svc/args")
    local path = helper.write(dir .. "/args.lua", [[
      local n, last = select("#", ...), select(select("#", ...), ...)
      mb.listen("svc/args", function() return {n = n, last = last} end)
    ]])
    local args = {}
    for i = 1, 300 do args[i] = "arg " .. i end
    local h = assert(mb.load(path, {args = args, instances = 2}))
    assert.are.same({n = 300, last = "arg 300"}, mb.request("svc/args", 1))
    assert(h:reload())
    assert.are.same({n = 300, last = "arg 300"}, mb.request("svc/args", 1))
  end)

  it("lists nothing when only the program itself uses the bus", function()
    mb.destination("svc/own")
    mb.listen("svc/own", function() end)
    assert.are.same({}, mb.services())
  end)

  it("lists each load once, in the order loaded, with its instances and what they did", function()
    mb.destination("svc/calc")
    local path = calc()
    local idle = helper.write(dir .. "/idle.lua", "local x = 1\n")
    assert(mb.load(path, {instances = 3}))
    assert(mb.load(idle, {name = "idler"}))
    for i = 1, 10 do assert.are.equal(2 * i, mb.request("svc/calc", i)) end
    assert.are.same({nil, "failed: no sums today"}, {mb.request("svc/calc", "boom")})
    mb.run()
    local list = mb.services()
    assert.are.equal(2, #list)
    local s = list[1]
    assert.are.same({name = path, path = path, instances = 3, worker = 0, workers = {0, 0, 0},
                     deliveries = 11, failures = 1},
      {name = s.name, path = s.path, instances = s.instances, worker = s.worker,
       workers = s.workers, deliveries = s.deliveries, failures = s.failures})
    assert.are.equal("mb.Service", getmetatable(s.handle).__name)
    assert.are.same({"idler", idle, 1, 0, 0}, {list[2].name, list[2].path, list[2].instances,
                                                list[2].deliveries, list[2].failures})
  end)

  it("counts the failures of timers and of a body after its first wait", function()
    local path = helper.write(dir .. "/fails.lua", [[
      mb.after(0, function() error("timer says no", 0) end)
      mb.sleep(0.01)
      error("body says no", 0)
    ]])
    assert(mb.load(path))
    mb.run()
    local s = mb.services()[1]
    assert.are.same({0, 2}, {s.deliveries, s.failures})
  end)

  it("gives a handle that stops the service, which then is no longer listed", function()
    mb.destination("svc/calc")
    local path = calc()
    local h = assert(mb.load(path, {instances = 2}))
    assert(mb.load(path)) -- the same file again: another service
    local list = mb.services()
    assert.are.equal(2, #list)
    list[1].handle:stop()
    list = mb.services()
    assert.are.equal(1, #list)
    assert.are.equal(1, list[1].instances)
    assert.are.equal(1, mb.stats("svc/calc").listeners)
    h:stop() -- already stopped through the other handle: nothing to do
    list[1].handle:stop()
    assert.are.same({}, mb.services())
    assert.are.equal(0, mb.stats("svc/calc").listeners)
  end)

  it("does not list a load that failed to start", function()
    local path = helper.write(dir .. "/refuses.lua", "error('not today', 0)\n")
    assert.are.same({nil, "failed: not today"}, {mb.load(path, {instances = 2})})
    assert.are.same({}, mb.services())
  end)

  it("leaves out a service that says it is mbrun's own, and takes no other option", function()
    local path = helper.write(dir .. "/own.lua", "mb._service_info{hidden = true}\n")
    local h = assert(mb.load(path))
    assert.are.same({}, mb.services())
    h:stop()
    assert.matches("unknown option 'colour'", helper.error_of(mb._service_info, {colour = 1}))
  end)
end)

describe("mb.load's args (SPEC 2, 7)", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(function()
    helper.remove_tree(dir)
    helper.assert_clean()
  end)

  -- the script reports its `...` (count, then each value's type and value)
  local function got(args)
    local path = helper.write(dir .. "/args.lua", [[
      local parts = {tostring(select("#", ...))}
      for i = 1, select("#", ...) do
        local v = select(i, ...)
        parts[#parts + 1] = (math.type(v) or type(v)) .. ":" .. tostring(v)
      end
      mb_args = table.concat(parts, " ")
      mb.listen("svc/args", function() return mb_args end)
    ]])
    mb.destination("svc/args")
    local h = assert(mb.load(path, {args = args}))
    local seen = mb.request("svc/args", 1)
    h:stop()
    mb.remove_destination("svc/args")
    mb.run()
    return seen
  end

  it("are the script's `...`, in order, with their types", function()
    assert.are.equal("2 string:a integer:2", got({"a", 2}))
    assert.are.equal("3 float:2.0 boolean:false string:", got({2.0, false, ""}))
    assert.are.equal("0", got(nil))
    assert.are.equal("0", got({}))
  end)

  it("keep a hole as nil, up to the last entry, however the list was built", function()
    assert.are.equal("3 string:a nil:nil integer:3", got({"a", nil, 3}))
    local t = {}
    t[1] = "a"
    t[4] = 4 -- (#t may say 1 here)
    assert.are.equal("4 string:a nil:nil nil:nil integer:4", got(t))
  end)

  it("raise for a key that is not a position in the list, which the script would never see",
     function()
    local path = helper.write(dir .. "/x.lua", "")
    for key, args in pairs({f = {f = 1}, ["0"] = {[0] = "x"}, ["1.5"] = {"a", [1.5] = "b"},
                            ["true"] = {[true] = 1}}) do
      helper.assert_contains(helper.error_of(mb.load, path, {args = args}),
        "mb.load: option 'args' must be a list (found key '" .. key .. "'); the script gets its "
          .. "entries as `...`")
    end
    helper.assert_contains(helper.error_of(mb.load, path, {args = {[2000000] = 1}}),
      "mb.load: option 'args' has 2000000 entries (counting holes): a script takes at most 1000000")
    assert.are.same({}, mb.services())
  end)

  it("that fill Lua's stack fail the start saying so, not as out of memory", function()
    -- (under the limit of mb.load, over what the new state's stack takes
    -- with the script's own values)
    local path = helper.write(dir .. "/x.lua", "")
    local h, err = mb.load(path, {args = {[999990] = 1}})
    assert.is_nil(h)
    helper.assert_contains(err, "too many arguments for the script's `...` (999990")
    assert.are.same({}, mb.services())
  end)
end)

describe("mb.load's path", function()
  after_each(helper.assert_clean)

  -- it loaded "x.lua" for "x.lua\0junk", saying nothing
  it("raises for a path with a NUL byte, which no file has", function()
    local dir = helper.tmpdir()
    helper.write(dir .. "/x.lua", "")
    local err = helper.error_of(mb.load, dir .. "/x.lua\0junk")
    helper.remove_tree(dir)
    helper.assert_contains(err, "mb.load: the path has a NUL byte (at byte " .. #dir + 7 .. ")")
    assert.are.same({}, mb.services())
  end)
end)
