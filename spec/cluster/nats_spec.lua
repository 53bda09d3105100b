-- The private nats-server the cluster specs run on (spec/lib/nats_server.lua):
-- started on a free loopback port, found by PID and port file, killed and
-- restarted on the same port, stopped; a missing nats-server skips these
-- specs, or fails them under CI=true. (The libev adapter's own tests are C:
-- spec/c/test_nats_ev.c, `make nats-tests`.)
local ns = require "spec.lib.nats_server"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path)
  local ok = os.execute("test -e '" .. path .. "'")
  return ok == true
end

local lua_exe = "lua5.4"

-- Runs Lua code that uses the module in a child process with `env`
-- prepended; returns its output and whether it exited 0.
local function child(env, code)
  local cmd = env .. " " .. lua_exe .. " -e " .. string.format("%q", code) .. " 2>&1"
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

describe("the private nats-server for specs", function()
  it("says what is missing: skip normally, fail under CI=true", function()
    local code = 'package.path = "./?.lua;" .. package.path; ' ..
      'local ns = require "spec.lib.nats_server"; local exe, why = ns.find(); ' ..
      'print(exe, why)'
    local out, ok = child("CI= NATS_SERVER=/nonexistent/nats-server", code)
    assert.is_true(ok)
    assert.matches("nil\tnats%-server not found at NATS_SERVER=/nonexistent/nats%-server", out)
    assert.matches("apt%-get install nats%-server", out)
    out, ok = child("CI=true NATS_SERVER=/nonexistent/nats-server", code)
    assert.is_false(ok)
    assert.matches("CI=true: a missing nats%-server fails the run", out)
  end)

  local exe, why = ns.find() -- under CI=true a missing server raises here
  if not exe then
    it("runs a real nats-server", function() pending("skipped: " .. why) end)
    return
  end

  it("starts one of its own on a free loopback port and knows its PID", function()
    local srv = assert(ns.start())
    finally(function() srv:stop() end)
    assert.is_true(srv.port > 0)
    assert.equal("nats://127.0.0.1:" .. srv.port, srv.url)
    assert.is_true(ns.alive(srv.pid))
    -- the PID is the server we started, with our folder: not the system service
    local cmdline = read("/proc/" .. srv.pid .. "/cmdline"):gsub("%z", " ")
    assert.matches("nats%-server", cmdline)
    assert.truthy(cmdline:find(srv.dir, 1, true))
    assert.truthy(cmdline:find("-a 127.0.0.1", 1, true))
    assert.truthy(read(srv.dir .. "/nats-server_" .. srv.pid .. ".ports"))
    assert.is_true(ns.answers(srv.port))
  end)

  it("kills it by PID and restarts it on the same port", function()
    local srv = assert(ns.start())
    finally(function() srv:stop() end)
    local port, pid = srv.port, srv.pid
    assert.is_true(srv:kill())
    assert.is_false(ns.alive(pid))
    assert.is_nil(srv.pid)
    assert.is_false(ns.answers(port, 1))
    assert.is_true(srv:restart())
    assert.equal(port, srv.port)
    assert.are_not.equal(pid, srv.pid)
    assert.is_true(ns.answers(port))
  end)

  it("stops it (SIGTERM) and removes its folder; a second stop is harmless", function()
    local srv = assert(ns.start())
    local port, pid, dir = srv.port, srv.pid, srv.dir
    assert.is_true(srv:stop())
    assert.is_false(ns.alive(pid))
    assert.is_false(exists(dir))
    assert.is_false(ns.answers(port, 1))
    assert.is_true(srv:stop())
  end)

  it("runs JetStream with its store in the server's folder", function()
    local srv = assert(ns.start{jetstream = true})
    finally(function() srv:stop() end)
    local cmdline = read("/proc/" .. srv.pid .. "/cmdline"):gsub("%z", " ")
    assert.truthy(cmdline:find(" -js ", 1, true))
    assert.is_true(exists(srv.dir .. "/js/jetstream"))
    assert.is_true(ns.answers(srv.port))
  end)
end)
