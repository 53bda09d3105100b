-- nodes.lua — mbrun nodes of a cluster for busted specs (SPEC §6 tests).
--
-- Each node is `mbrun -w 1 --nats URL --node NAME ARGS...` in the
-- background, with its output in files of its own folder, its PID known
-- (a shell starts it with `&` and writes `$!`, then waits for it and writes
-- its exit status), stopped by PID (SIGTERM, SIGKILL after a bound). Every
-- wait is bounded. The sanitizer runs set MBRUN to their mbrun.
--
--   local nodes = require "spec.lib.nodes"
--   local n = nodes.start(srv.url, "n1", "-c " .. cfg, {dir = dir})
--   assert(n:wait_output("ready", 10))   -- a Lua pattern in its stdout
--   n:signal("STOP") / n:signal("CONT") / n:kill()
--   local code = n:stop()                -- exit status (nil: killed)
--   n.out, n.err                         -- what it wrote, after stop
local helper = require "spec.helper"
local mb = require "mb"

local M = {}
local Node = {}
Node.__index = Node

local q = helper.quote
local ns = require "spec.lib.nats_server"
local read, alive = ns.read_file, ns.alive

-- Waits (at most secs) for pred() to return a value.
function M.wait_for(pred, secs, step)
  local deadline = mb.now() + secs
  repeat
    local v = pred()
    if v then return v end
    os.execute("sleep " .. (step or 0.02))
  until mb.now() > deadline
  return pred()
end

-- Starts a node; args are mbrun's words after the cluster options, as typed
-- in a shell. opts.dir: run from there; opts.env: "NAME=value ...".
function M.start(url, name, args, opts)
  opts = opts or {}
  local dir = helper.tmpdir()
  local self = setmetatable({name = name, dir = dir}, Node)
  local cmd = ("%s env -u LD_PRELOAD %s %s -w 1 %s %s %s > %s/out 2> %s/err & echo $! > %s/pid; "
    .. "wait $!; echo $? > %s/status"):format(opts.dir and ("cd " .. q(opts.dir) .. " && ") or "",
    opts.env or "", q(helper.absolute(helper.MBRUN)),
    url and ("--nats " .. q(url)) or "", name and ("--node " .. q(name)) or "", args,
    dir, dir, dir, dir)
  os.execute("sh -c " .. q(cmd) .. " > /dev/null 2>&1 &")
  self.pid = M.wait_for(function()
    local p = read(dir .. "/pid")
    return p and tonumber(p:match("%d+"))
  end, 5)
  assert(self.pid, "node " .. tostring(name) .. " did not start")
  return self
end

function Node:output() return read(self.dir .. "/out") or "" end
function Node:errors() return read(self.dir .. "/err") or "" end

-- Waits (at most secs) until its stdout matches pattern (a Lua pattern).
function Node:wait_output(pattern, secs)
  return M.wait_for(function() return self:output():match(pattern) end, secs or 10)
end

function Node:alive() return alive(self.pid) end

function Node:signal(sig) os.execute(("kill -%s %d 2> /dev/null"):format(sig, self.pid)) end

function Node:kill()
  self:signal("KILL")
  M.wait_for(function() return not alive(self.pid) end, 5, 0.01)
end

-- SIGTERM (SIGCONT first: a stopped node), then SIGKILL after `bound`
-- seconds (default 10). Returns the exit status (nil when it had to be
-- killed or its status was not written), and keeps out and err.
function Node:stop(bound)
  if alive(self.pid) then
    self:signal("CONT")
    self:signal("TERM")
    if not M.wait_for(function() return not alive(self.pid) end, bound or 10, 0.01) then
      self:kill()
      self.killed = true
    end
  end
  local st = M.wait_for(function() return read(self.dir .. "/status") end, 2)
  self.out, self.err = self:output(), self:errors()
  helper.remove_tree(self.dir)
  return not self.killed and st and tonumber(st:match("%d+")) or nil
end

-- Stops every node of the list (teardown).
function M.stop_all(list)
  for _, n in ipairs(list) do
    if n.pid and not n.out then n:stop(5) end
  end
end

return M
