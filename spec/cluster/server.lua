-- server.lua — what the cluster specs (cluster_spec.lua, durable_spec.lua)
-- share: a private nats-server per describe block with its folder and its
-- nodes, a plain NATS client written in bash, and lines of output.
--
--   local server = require "spec.cluster.server"
--   local env = server.block{server = {jetstream = true}, each = true}
--   if not env then return end        -- no nats-server: one pending test
--   ... env.srv.url, env.dir, env.list (nodes stopped after the block)
local busted = require "busted" -- its API: a required module does not see the spec's globals
local helper = require "spec.helper"
local ns = require "spec.lib.nats_server"
local nodes = require "spec.lib.nodes"

local M = {}

-- Sets up the describe block it is called in: before its tests (before
-- each one with opts.each) a folder (env.dir), opts.prepare(env) (files the
-- server needs), a nats-server started with opts.server (spec/lib/
-- nats_server.lua's options, or a function(env) returning them; a free
-- loopback port) as env.srv, then opts.ready(env)
-- (nodes to start); after them the nodes in env.list stopped by PID, the
-- server (whichever env.srv is then) stopped, the folder removed. Without
-- nats-server: one pending test and nil (under CI=true ns.find raises
-- instead: a missing server fails the run).
function M.block(opts)
  opts = opts or {}
  local exe, why = ns.find()
  if not exe then
    busted.pending("runs on a real nats-server (skipped: " .. why .. ")")
    return nil
  end
  local env = {list = {}}
  local before, after = busted.lazy_setup, busted.lazy_teardown
  if opts.each then before, after = busted.before_each, busted.after_each end
  before(function()
    env.dir = helper.tmpdir()
    env.list = {}
    if opts.prepare then opts.prepare(env) end
    local so = opts.server
    if type(so) == "function" then so = so(env) end
    env.srv = assert(ns.start(so))
    if opts.ready then opts.ready(env) end
  end)
  after(function()
    nodes.stop_all(env.list)
    if env.srv then env.srv:stop() end
    if env.dir then helper.remove_tree(env.dir) end
    env.srv, env.dir = nil, nil
  end)
  return env
end

-- A plain NATS client: bash speaking NATS's text protocol over /dev/tcp to
-- port. It reads the server's INFO, writes `protocol` (printf's format:
-- \r\n and \ooo escapes; no other %), then, with reply, prints the body of
-- the first MSG that comes back, else waits for the PONG of a PING at its
-- end. Returns stdout, stderr and exit status (at most 10 s).
function M.bash_client(port, dir, protocol, reply)
  local wait = reply
    and "while read -t 5 -r line <&3; do\n" ..
        "  case $line in MSG*) read -t 5 -r body <&3; printf '%s\\n' \"$body\"; break;; esac\ndone\n"
    or "while read -t 5 -r line <&3; do case $line in PONG*) break;; esac; done\n"
  local path = dir .. "/client.sh"
  helper.write(path, ("exec 3<>/dev/tcp/127.0.0.1/%d\nread -r info <&3\nprintf '%s' >&3\n%s")
    :format(port, protocol, wait))
  return helper.run("timeout 10 bash " .. helper.quote(path))
end

-- Lines of s that match pattern, as a list of captures (or whole matches).
function M.lines(s, pattern)
  local out = {}
  for l in s:gmatch("[^\n]+") do
    local c = l:match(pattern)
    if c then out[#out + 1] = c end
  end
  return out
end

function M.count(s, pattern) return #M.lines(s, pattern) end

return M
