-- Handles used from finalizers while a Lua state closes, and the module
-- first required inside a coroutine (issue 12, items 11 and 12). Each case
-- runs as a subprocess under the ASan+UBSan build (lua5.4 with the
-- sanitizer runtimes preloaded, as `make asan-spec` does), so that a read
-- of freed memory is a failure, not luck.
local helper = require "spec.helper"

local ASAN = os.getenv("MB_ASAN_DIR") or "build/asan"

local function sanitizer_env()
  local function lib(name)
    local p = io.popen("env -u LD_PRELOAD ${CC:-cc} -print-file-name=" .. name)
    local path = p:read("l")
    p:close()
    return path
  end
  return ("LD_PRELOAD=%s:%s ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1")
    :format(lib("libasan.so"), lib("libubsan.so"))
end

describe("finalizers and coroutines under ASan", function()
  local dir, env
  setup(function()
    -- the instrumented build these cases need (a no-op when up to date)
    assert(os.execute("make -s " .. ASAN .. "/mb.so " .. ASAN .. "/mbrun > /dev/null"),
      "cannot build the ASan build in " .. ASAN)
    env = sanitizer_env()
    dir = helper.tmpdir()
  end)
  teardown(function() helper.remove_tree(dir) end)

  local function lua(text)
    local path = helper.write(dir .. "/prog.lua", text)
    return helper.run(("%s LUA_CPATH='%s/?.so;;' lua5.4 %s"):format(env, ASAN, path))
  end

  local function mbrun(files, main)
    for name, text in pairs(files) do helper.write(dir .. "/" .. name, text) end
    return helper.run(("cd %s && ASAN_OPTIONS=detect_leaks=1 %s/%s %s"):format(dir,
      os.getenv("PWD"), ASAN .. "/mbrun", main))
  end

  it("keeps the main thread when require runs inside a coroutine", function()
    local out, err, code = lua([[
      local mb
      coroutine.wrap(function() mb = require "mb" end)()
      collectgarbage()
      collectgarbage()
      mb.destination("d")
      local got = {}
      mb.listen("d", function(m) got[#got + 1] = m.payload end)
      for i = 1, 3 do mb.send("d", i) end
      assert(mb.run({timeout = 5}))
      mb.after(0, function() got[#got + 1] = "timer" end)
      assert(mb.run({timeout = 5}))
      print(table.concat(got, ","))
    ]])
    assert.are.equal("", err)
    assert.are.equal(0, code)
    assert.are.equal("1,2,3,timer\n", out)
  end)

  it("lets a plain program's finalizers close handles after the bus is gone", function()
    -- the holder's metatable is set before require: Lua runs its __gc after
    -- the runtime's own
    local out, err, code = lua([[
      local holder = setmetatable({}, {__gc = function(o)
        o.l:close()
        o.t:stop()
        o.s:close()
        local ok, e = pcall(o.mb.send, "d", 1)
        print(ok, e)
      end})
      local mb = require "mb"
      mb.destination("d")
      holder.mb = mb
      holder.l = mb.listen("d", function() end)
      holder.t = mb.every(10, function() end)
      holder.s = mb.on("destination_added", function() end)
      print("end")
    ]])
    assert.are.equal("", err)
    assert.are.equal(0, code)
    assert.are.equal("end\nfalse\tmb: this service has stopped\n", out)
  end)

  it("lets a service's finalizers close handles while it stops", function()
    local out, err, code = mbrun({
      ["svc.lua"] = [[
        local l = mb.listen("d", function() end)
        local t = mb.every(10, function() end)
        local s = mb.on("destination_removed", function() end)
        local loaded = mb.load
        KEEP = setmetatable({}, {__gc = function()
          l:close()
          t:stop()
          s:close()
          print("gc", pcall(mb.stats))
        end})
      ]],
      ["main.lua"] = [[
        mb.destination("d")
        local h = mb.load("svc.lua")
        h:stop()
        mb.load("svc.lua", {instances = 2}) -- these stop when mbrun ends
        mb.spawn(function() mb.sleep(0.05) mb.stop() end)
      ]],
    }, "main.lua")
    assert.are.equal(0, code, err)
    assert.are.equal("", (err:gsub("mbrun: stopped[^\n]*\n", "")))
    local n = select(2, out:gsub("gc\tfalse\tmb: this service has stopped", ""))
    assert.are.equal(3, n, out)
  end)
end)
