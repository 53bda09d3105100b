-- loadgen.lua: a load generator. Sends `count` messages of `size` bytes to
-- a destination at `rate` messages per second, then prints a summary line
-- (and sends it to `report_to` when given) and ends.
--
--   assert(mb.load("scripts/loadgen.lua", {args = {{destination = "bench/in", count = 10000,
--                                                     rate = 0, size = 100}}}))
--
-- Options (one table):
--   destination   where to send (required)
--   count         how many messages to send (default 1000; 0 sends none)
--   rate          messages per second (default 0: as fast as the bus takes
--                 them). Message i is sent at i-1 / rate seconds after the
--                 start, so a run takes about (count - 1) / rate seconds.
--   size          bytes in each payload's data string (default 0)
--   values        a table sent as the values of every message (default none)
--   delay         seconds to wait before the first message (default 0),
--                 e.g. to let listeners loaded after the generator start
--   report_to     destination that also gets the summary, as a message
--   prefix        text printed in brackets before the summary (default "loadgen")
--   quiet         true: print no summary line; only with report_to, so the
--                 numbers still go somewhere (default false)
--
-- Message i (1..count) has the payload {id = i, data = string.rep("x", size)}.
-- At rate 0 the generator sends in batches of 64 and lets the loop run
-- (mb.sleep(0)) between batches, so listeners in the same process keep up;
-- a destination with on_full = "block" makes it wait for room.
--
-- A send the bus refuses (queue_full, no_listeners, no_destination, closed)
-- is counted, never lost silently: the summary line on stdout says
--   [loadgen] bench/in: sent 9990 of 10000 in 0.052s (192115.4/s), rejected 10 (queue_full: 10)
-- and the report sent to `report_to` is
--   {destination =, count =, sent =, rejected =, errors = {[code] = n},
--    first_error = "code: text" or nil, elapsed = seconds, rate = sent/s, size =}
-- If that report cannot be sent, the script raises (stderr, and mbrun
-- exits 1). The script body does all the work in its own coroutine and
-- leaves no timer: once the last message is sent it is done.

local options = dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or ".") .. "/lib/options.lua")
local o = options.new("loadgen.lua")
local fail, is_name = o.fail, o.is_name

local opts = o.check(..., {"destination", "count", "rate", "size", "values", "delay", "report_to", "prefix",
  "quiet"}, '{destination = "bench/in", count = 1000}')
local dest = o.name(opts, "destination")

local function integer_opt(key, default)
  local v = opts[key]
  if v == nil then return default end
  v = type(v) == "number" and math.tointeger(v)
  if not v or v < 0 then fail("option '%s' must be an integer, 0 or more", key) end
  return v
end
local count = integer_opt("count", 1000)
local size = integer_opt("size", 0)

local function number_opt(key)
  local v = opts[key]
  if v == nil then return 0 end
  if type(v) ~= "number" or not (v >= 0) or v == math.huge then
    fail("option '%s' must be a number, 0 or more", key)
  end
  return v
end
local rate = number_opt("rate")
local delay = number_opt("delay")

local values = opts.values
if values ~= nil and type(values) ~= "table" then fail("option 'values' must be a table") end

local report_to = opts.report_to
if report_to ~= nil and not is_name(report_to) then fail("option 'report_to' must be a destination name") end

local prefix = opts.prefix
if prefix == nil then prefix = "loadgen" end
if type(prefix) ~= "string" then fail("option 'prefix' must be a string") end

local quiet = opts.quiet
if quiet == nil then quiet = false end
if type(quiet) ~= "boolean" then fail("option 'quiet' must be true or false") end
if quiet and not report_to then fail("option 'quiet' needs 'report_to' (the summary must go somewhere)") end

-- ---- sending --------------------------------------------------------------

local BATCH = 64
local data = string.rep("x", size)
local send_opts = values and {values = values} or nil

if delay > 0 then mb.sleep(delay) end

local sent, rejected, errors, first_error = 0, 0, {}, nil
local start = mb.now()
for i = 1, count do
  if rate > 0 then
    local wait = start + (i - 1) / rate - mb.now()
    if wait > 0 then mb.sleep(wait) end
  elseif i % BATCH == 0 then
    mb.sleep(0)
  end
  local id, err = mb.send(dest, {id = i, data = data}, send_opts)
  if id then
    sent = sent + 1
  else
    rejected = rejected + 1
    local code = tostring(err):match("^([%w_]+)") or "error"
    errors[code] = (errors[code] or 0) + 1
    first_error = first_error or err
  end
end
local elapsed = mb.now() - start

local codes = {}
for code, n in pairs(errors) do codes[#codes + 1] = ("%s: %d"):format(code, n) end
table.sort(codes)
if not quiet then
  io.stdout:write(("[%s] %s: sent %d of %d in %.3fs (%.1f/s), rejected %d%s\n"):format(
    prefix, dest, sent, count, elapsed, elapsed > 0 and sent / elapsed or 0.0, rejected,
    #codes > 0 and (" (" .. table.concat(codes, ", ") .. ")") or ""))
  io.stdout:flush()
end

if report_to then
  local ok, err = mb.send(report_to, {
    destination = dest, count = count, sent = sent, rejected = rejected, errors = errors,
    first_error = first_error, elapsed = elapsed, rate = elapsed > 0 and sent / elapsed or 0.0,
    size = size,
  })
  if not ok then fail("cannot send the report to '%s': %s", report_to, err) end
end
