-- Shared by the specs: a clean bus after every test, and a check that
-- nothing (registry refs, coroutines, timers, waiters, requests,
-- deliveries) is left behind; files and folders; the one way to run mbrun
-- (helper.mbrun, helper.mbrun_signalled).
--
-- The specs by surface, each folder found by `busted spec`:
--   spec/api/       the Lua module: bus, values, JSON, reply_to, finalizers
--   spec/cli/       mbrun: arguments, configuration, trace/stats/graph,
--                   shutdown, install, the ready scripts
--   spec/repl/      the REPL: through a pipe, its Lua side, on a terminal
--   spec/workers/   worker threads (and the mbrun scenarios they run)
--   spec/examples/  the examples, run as a user runs them
--   spec/cluster/   the private nats-server of the cluster specs
--   spec/c/         the C tests (make c-tests); spec/failalloc/, spec/tsan/
--                   and spec/lib/ hold what other rounds run
local mb = require "mb"
local assert = require "luassert"

local helper = {}

-- The spec folder and the project's root, from this file's own path (the
-- specs run from the root; nested specs find files from here).
helper.SPEC = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
helper.ROOT = helper.SPEC:match("^(.*)/spec$") or (helper.SPEC == "spec" and ".") or helper.SPEC .. "/.."

-- The mbrun the specs test: MBRUN, or the one of the normal build.
helper.MBRUN = os.getenv("MBRUN") or "build/mbrun"

-- s as one word for sh.
function helper.quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Removes every destination, closes what the test left open, runs the loop
-- dry, and returns the module's counts.
function helper.clean()
  for _, d in ipairs(mb.destinations()) do mb.remove_destination(d) end
  mb.run({timeout = 5})
  collectgarbage()
  collectgarbage()
  return mb._counts()
end

-- Asserts that the counts are back to an empty bus.
function helper.assert_clean()
  local c = helper.clean()
  assert.are.same({refs = 0, coroutines = 0, waiters = 0, timers = 0, listeners = 0,
                   subscriptions = 0, messages = 0, deliveries = 0, requests = 0},
    {refs = c.refs, coroutines = c.coroutines, waiters = c.waiters, timers = c.timers,
     listeners = c.listeners, subscriptions = c.subscriptions, messages = c.messages,
     deliveries = c.deliveries, requests = c.requests})
end

-- The accounting invariant of SPEC section 2, for every destination.
function helper.assert_invariant(name)
  local s = mb.stats(name)
  assert.are.equal(s.deliveries, s.delivered + s.failed + s.dropped,
    name .. ": delivered + failed + dropped ~= deliveries")
end

-- A table nested n levels deep (the table itself is level 1).
function helper.nest(n)
  local top = {}
  local t = top
  for _ = 2, n do
    t.x = {}
    t = t.x
  end
  return top
end

-- The error text of f(...), which must raise.
function helper.error_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error, got success")
  return tostring(err)
end

-- Asserts that s contains every one of the plain substrings.
function helper.assert_contains(s, ...)
  for i = 1, select("#", ...) do
    local part = select(i, ...)
    assert.is_truthy(s:find(part, 1, true), ("expected %q to contain %q"):format(s, part))
  end
end

-- ---- for the specs that run mbrun as a subprocess ----

-- Writes text to path; returns path.
function helper.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- The whole content of the file at path.
function helper.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- A new empty folder (remove it with helper.remove_tree).
function helper.tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'"))
  return dir
end

function helper.remove_tree(dir) os.execute("rm -rf '" .. dir .. "'") end

-- Runs a shell command line; returns its stdout, its stderr, its exit
-- status and the seconds it took.
function helper.run(cmdline)
  local err = os.tmpname()
  local p = assert(io.popen("s=$(date +%s%N); (" .. cmdline .. ") 2>" .. err
    .. "; echo \"EXIT:$? NS:$(( $(date +%s%N) - s ))\""))
  local out = p:read("a")
  p:close()
  local f = assert(io.open(err))
  local errout = f:read("a")
  f:close()
  os.remove(err)
  local code, ns = out:match("EXIT:(%d+) NS:(%d+)%s*$")
  return (out:gsub("EXIT:%d+ NS:%d+%s*$", "")), errout, tonumber(code), tonumber(ns) / 1e9
end

-- The one way the specs run mbrun: helper.MBRUN with args (the words after
-- it, as typed in a shell), bounded by opts.timeout seconds (default 60;
-- then killed, exit status 124), without the outer run's LD_PRELOAD (a
-- sanitizer build of mbrun carries its own runtime). opts.dir: run from
-- that folder; opts.stdin: a file as its input; opts.merge: stderr into
-- stdout, in the order written (as a terminal shows them; err is then "");
-- opts.env: "NAME=value ..." set for mbrun alone.
-- Returns stdout, stderr, the exit status and the seconds it took.
function helper.mbrun(args, opts)
  opts = opts or {}
  local exe = helper.MBRUN
  if opts.dir then exe = helper.absolute(exe) end
  local cmd = ("timeout %s env -u LD_PRELOAD %s %s %s"):format(opts.timeout or 60, opts.env or "",
    helper.quote(exe), args)
  if opts.stdin then cmd = cmd .. " < " .. helper.quote(opts.stdin) end
  if opts.merge then cmd = cmd .. " 2>&1" end
  if opts.dir then cmd = "cd " .. helper.quote(opts.dir) .. " && " .. cmd end
  return helper.run(cmd)
end

-- The same for mbrun in the background, told by signals: waits (at most
-- 5 s) until its output shows opts.ready (a grep pattern; none: no wait),
-- then opts.delay seconds, sends each of opts.signals ("INT", "TERM", ...;
-- opts.gap seconds apart, default 0.05) and waits for its exit; a kill -9
-- after opts.bound seconds (default 20) ends one that does not exit.
-- opts.merge as for helper.mbrun. Returns stdout, stderr, the exit status,
-- the milliseconds from the last signal to the exit, and whether mbrun
-- was still running when the first signal went.
function helper.mbrun_signalled(args, opts)
  opts = opts or {}
  local q = helper.quote
  local outf, errf = os.tmpname(), os.tmpname()
  local kills = {}
  for i, sig in ipairs(opts.signals or {}) do
    kills[i] = (i > 1 and ("sleep %s; "):format(opts.gap or 0.05) or "")
      .. "t=$(date +%s%N); kill -" .. sig .. " $pid"
  end
  local wait = opts.ready and ("for i in $(seq 250); do grep -q %s %s && break; sleep 0.02; done")
    :format(q(opts.ready), q(outf)) or ""
  local p = assert(io.popen(([[
env -u LD_PRELOAD %s %s > %s 2>%s & pid=$!
( sleep %s; kill -9 $pid ) > /dev/null 2>&1 & killer=$!
%s
sleep %s
kill -0 $pid 2> /dev/null && alive=1 || alive=0
t=$(date +%%s%%N)
%s
wait $pid; st=$?
e=$(date +%%s%%N)
kill $killer 2> /dev/null
echo "EXIT:$st MS:$(( (e - t) / 1000000 )) ALIVE:$alive"
]]):format(q(helper.MBRUN), args, q(outf), opts.merge and "&1" or q(errf), opts.bound or 20, wait,
    opts.delay or 0, table.concat(kills, "; "))))
  local status = p:read("a")
  p:close()
  local out, err = helper.read(outf), opts.merge and "" or helper.read(errf)
  os.remove(outf)
  os.remove(errf)
  local code, ms, alive = status:match("EXIT:(%d+) MS:(%d+) ALIVE:(%d)")
  return out, err, tonumber(code), tonumber(ms), alive == "1"
end

-- path from the current folder made absolute.
function helper.absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local p = assert(io.popen("pwd"))
  local cwd = p:read("l")
  p:close()
  return cwd .. "/" .. path
end

return helper
