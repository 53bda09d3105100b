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
