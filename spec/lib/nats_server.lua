-- nats_server.lua — a private nats-server for busted specs (SPEC §6 tests).
--
-- Starts `nats-server -a 127.0.0.1 -p -1 --ports_file_dir DIR` (a free
-- loopback port; never the system service), learns its PID from the shell
-- that execs it and its port from DIR/nats-server_<PID>.ports, stops it by
-- PID (SIGTERM, then SIGKILL after a bound), kills it (an outage) and
-- restarts it on the same port. Every wait is bounded. Uses Lua 5.4, the
-- standard tools (sh, kill, sleep, mkdir, rm) and, if loaded, mb.now.
-- The C twin: spec/c/nats_server.h. Its spec: spec/cluster/nats_spec.lua.
--
--   local ns = require "spec.lib.nats_server"
--   local exe, why = ns.find()           -- nil + why when not installed, and
--                                        -- under CI=true an error instead
--   local srv = assert(ns.start{jetstream = true})  -- srv.url, srv.port, srv.pid
--   srv:kill()      -- kill -9 by PID (an outage)
--   assert(srv:restart())                -- the same port again
--   srv:stop()      -- SIGTERM, SIGKILL after 3 s; removes its folder
local M = {}

local ok_mb, mb = pcall(require, "mb")

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function run(cmd) -- true when the command exits 0
  local ok, how, code = os.execute(cmd)
  return ok == true and how == "exit" and code == 0
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- A monotonic clock in seconds: mb.now when the mb module is there, else
-- the sum of the sleeps below (a lower bound of the time waited).
local slept = 0
local function now()
  if ok_mb and type(mb) == "table" and mb.now then return mb.now() end
  return slept
end

local function sleep(s)
  slept = slept + s
  os.execute("sleep " .. string.format("%.3f", s))
end

-- Polls pred() every `step` s until it returns a value or `secs` passed.
local function wait_for(pred, secs, step)
  local deadline = now() + secs
  repeat
    local v = pred()
    if v then return v end
    sleep(step or 0.02)
  until now() > deadline
  return pred()
end

-- Whether the process is there and not a zombie (Linux /proc).
local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end
M.alive = alive
M.read_file = read_file -- (spec/lib/nodes.lua and bench/cluster.lua use both)

local function executable(path)
  return run("test -x " .. sh_quote(path))
end

-- The nats-server executable: $NATS_SERVER, then $PATH, then the sbin
-- folders (Debian puts it in /usr/sbin, often not in a user's PATH).
-- Returns the path, or nil and a message; with CI=true a missing server is
-- an error (so the spec fails instead of skipping).
function M.find()
  local env = os.getenv("NATS_SERVER")
  local dirs = {}
  if env and env ~= "" then
    if executable(env) then return env end
  else
    for d in ((os.getenv("PATH") or "") .. ":/usr/sbin:/usr/local/sbin:/usr/bin"):gmatch("[^:]+") do
      dirs[#dirs + 1] = d
    end
    for _, d in ipairs(dirs) do
      local p = d .. "/nats-server"
      if executable(p) then return p end
    end
  end
  local why = "nats-server not found" .. (env and env ~= "" and (" at NATS_SERVER=" .. env) or
    " (looked in $PATH, /usr/sbin, /usr/local/sbin)") ..
    ": install it with `apt-get install nats-server` (or `make test-deps`), or set NATS_SERVER"
  if os.getenv("CI") == "true" then
    error(why .. " [CI=true: a missing nats-server fails the run]", 2)
  end
  return nil, why
end

local Server = {}
Server.__index = Server

local function ports_file(self, pid)
  return self.dir .. "/nats-server_" .. pid .. ".ports"
end

-- Starts the process on self.port (-1: a free one); waits at most
-- self.timeout s for the ports file. true, or nil and a message.
local function launch(self, port)
  local pidfile = self.dir .. "/pid"
  os.remove(pidfile)
  local args = {"-a", "127.0.0.1", "-p", tostring(port), "--ports_file_dir", self.dir}
  if self.jetstream then
    args[#args + 1] = "-js"
    args[#args + 1] = "-sd"
    args[#args + 1] = self.dir .. "/js"
  end
  for _, a in ipairs(self.args or {}) do args[#args + 1] = a end
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = sh_quote(a) end
  -- the inner shell writes its own PID, then becomes the server (exec), so
  -- that PID is the server's; it runs in the background, its output in a log
  local inner = "echo $$ > " .. sh_quote(pidfile) .. "; exec " .. sh_quote(self.exe) .. " " ..
    table.concat(quoted, " ")
  if not run("sh -c " .. sh_quote(inner) .. " >> " .. sh_quote(self.dir .. "/server.log") ..
    " 2>&1 < /dev/null &") then
    return nil, "could not run sh to start " .. self.exe
  end
  local pid = wait_for(function()
    local s = read_file(pidfile)
    return s and tonumber(s:match("%d+"))
  end, self.timeout)
  if not pid then return nil, "nats-server did not start (no PID within " .. self.timeout .. " s)" end
  self.pid = pid
  local got = wait_for(function()
    local s = read_file(ports_file(self, pid))
    local p = s and tonumber(s:match("%a+://[^\"]-:(%d+)")) -- nats:// or tls://
    if p then return p end
    if not alive(pid) then return "dead" end
  end, self.timeout, 0.01)
  if got == "dead" then got = nil end
  if not got then
    local log = read_file(self.dir .. "/server.log") or ""
    self:_signal("KILL")
    self.pid = nil
    return nil, "nats-server did not listen within " .. self.timeout .. " s (port " .. port .. "): " ..
      (log:match("[^\n]*\n?$") or "")
  end
  if port ~= -1 and got ~= port then
    self:_signal("KILL")
    self.pid = nil
    return nil, "nats-server listens on " .. got .. ", not " .. port
  end
  self.port = got
  self.url = "nats://127.0.0.1:" .. got
  return true
end

-- Starts a private server. opts: jetstream (-js, store in its folder),
-- args (more arguments), timeout (each wait, default 5 s). Returns the
-- server object, or nil and a message (nats-server missing: see find).
function M.start(opts)
  opts = opts or {}
  local exe, why = M.find()
  if not exe then return nil, why end
  local tmp = os.getenv("TMPDIR") or "/tmp"
  local base = tmp .. "/mb-nats-spec-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
  if not run("mkdir -p " .. sh_quote(base)) then return nil, "cannot create " .. base end
  local self = setmetatable({exe = exe, dir = base, jetstream = opts.jetstream, args = opts.args,
                             timeout = opts.timeout or 5}, Server)
  local ok, err = launch(self, -1)
  if not ok then
    run("rm -rf " .. sh_quote(base))
    return nil, err
  end
  return self
end

function Server:_signal(sig)
  local num = ({TERM = 15, KILL = 9, STOP = 19, CONT = 18})[sig]
  if self.pid then run("kill -" .. num .. " " .. self.pid .. " 2>/dev/null") end
end

-- Waits (bounded) for the process to go; SIGKILL after `grace` s.
function Server:_reap(grace)
  if not self.pid then return true end
  local gone = wait_for(function() return not alive(self.pid) end, grace, 0.01)
  if not gone then
    self:_signal("KILL")
    gone = wait_for(function() return not alive(self.pid) end, 2, 0.01)
  end
  os.remove(ports_file(self, self.pid))
  if gone then self.pid = nil end
  return gone
end

-- kill -9 by PID: an outage (the folder and the port are kept for restart).
function Server:kill()
  self:_signal("KILL")
  return self:_reap(2)
end

-- Starts it again on the same port (after kill or stop_only). A port taken
-- in between (rare) is retried until the bound. true, or nil and a message.
function Server:restart()
  if self.pid and alive(self.pid) then self:kill() end
  local port, ok, err = self.port, nil, nil
  local deadline = now() + self.timeout
  repeat
    ok, err = launch(self, port)
    if ok then return true end
    sleep(0.05)
  until now() > deadline
  return nil, err
end

-- SIGTERM (a clean shutdown), SIGKILL after 3 s; the folder stays.
function Server:stop_only()
  self:_signal("TERM")
  return self:_reap(3)
end

-- Stops the server (SIGTERM, SIGKILL after 3 s) and removes its folder.
-- Safe to call twice (teardown).
function Server:stop()
  local gone = self:stop_only()
  if self.dir then
    run("rm -rf " .. sh_quote(self.dir))
    self.dir = nil
  end
  return gone
end

-- Whether something answers NATS's INFO on the port (bash's /dev/tcp,
-- bounded by timeout(1)): a check that the server really serves.
function M.answers(port, secs)
  local cmd = "timeout " .. (secs or 2) .. " bash -c " ..
    sh_quote("exec 3<>/dev/tcp/127.0.0.1/" .. port .. " && head -c 4 <&3") .. " 2>/dev/null"
  local p = io.popen(cmd)
  local s = p:read("a")
  p:close()
  return s == "INFO"
end

return M
