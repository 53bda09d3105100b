-- Shared by the specs: a clean bus after every test, and a check that
-- nothing (registry refs, coroutines, timers, waiters, requests,
-- deliveries) is left behind.
local mb = require "mb"
local assert = require "luassert"

local helper = {}

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

-- Runs a shell command line; returns its stdout, its stderr and its exit
-- status.
function helper.run(cmdline)
  local err = os.tmpname()
  local p = assert(io.popen("(" .. cmdline .. ") 2>" .. err .. "; echo EXIT:$?"))
  local out = p:read("a")
  p:close()
  local f = assert(io.open(err))
  local errout = f:read("a")
  f:close()
  os.remove(err)
  local code = tonumber(out:match("EXIT:(%d+)%s*$"))
  return (out:gsub("EXIT:%d+%s*$", "")), errout, code
end

return helper
