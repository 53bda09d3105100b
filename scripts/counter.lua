-- counter.lua: counts the messages that arrive at one or more destinations
-- (and sums a numeric payload field), and answers requests for the totals.
--
--   assert(mb.load("scripts/counter.lua", {args = {{destination = "shop/orders", field = "qty"}}}))
--   ...
--   local totals = mb.request("shop/orders/count")
--   -- {count = 1000, sum = 2500, skipped = 0,
--   --  destinations = {["shop/orders"] = {count = 1000, sum = 2500, skipped = 0}}}
--
-- Options (one table):
--   destination   name of a destination to count at            } at least one;
--   destinations  list of destination names to count at        } both may be given
--   field         payload field to sum: a key, or a dotted path into nested
--                 tables ("order.qty", "items.1.qty"); default none: sums
--                 stay 0. A message whose field is missing or not a number
--                 is counted, not summed, and counted in `skipped`.
--   report        destination where the totals are answered (default:
--                 "<first destination>/count"; declared, parallel, if missing)
--   every         seconds: print the totals this often while messages keep
--                 coming (default: never)
--   prefix        text printed in brackets before each totals line
--                 (default "counter")
--
-- The report destination answers every request (or reply_to message) with
-- {count =, sum =, skipped =, destinations = {[name] = {count =, sum =,
-- skipped =}}}; count, sum and skipped are the totals over all destinations.
-- The request's payload may ask for more: {print = true} also prints the
-- totals, {reset = true} sets them back to 0 after answering. Integer
-- fields sum as integers, a float makes the sum a float.
--
-- `every` never keeps the bus alive on its own: the first message after a
-- quiet spell starts one mb.after timer; when it fires it prints one line
-- per destination and ends; the next message starts the next one. A line:
--   [counter] shop/orders count=1000 sum=2500 (+200, 199.8/s)
-- (+N: messages since the previous line, and their rate; " skipped=N" is
-- added when fields were skipped). So the totals print at
-- most once per `every` seconds while messages come, once more at most
-- `every` seconds after the last one, and then no timer is left: mb.run()
-- and mbrun return. For the totals at the very end, request them
-- ({print = true}) from the scenario once its work is done.
--
-- The destinations must exist (declare them first). Load the counter once
-- (not with instances = N: each instance would count its share only).

local options = dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or ".") .. "/lib/options.lua")
local o = options.new("counter.lua")
local fail, is_name = o.fail, o.is_name

local opts = o.check(..., {"destination", "destinations", "field", "report", "every", "prefix"},
  '{destination = "shop/orders"}')
local dests, seen = o.destinations(opts)

local path
if opts.field ~= nil then
  if type(opts.field) ~= "string" or opts.field == "" then
    fail("option 'field' must be a non-empty string (a key or a dotted path)")
  end
  path = {}
  for part in (opts.field .. "."):gmatch("([^.]*)%.") do
    if part == "" then fail("option 'field' must be a non-empty string (a key or a dotted path)") end
    path[#path + 1] = part
  end
end

local report = opts.report
if report == nil then
  report = dests[1] .. "/count"
  if #report > 255 then fail("option 'report' is needed: '%s/count' is too long a name", dests[1]) end
end
if not is_name(report) then fail("option 'report' must be a destination name") end
if seen[report] then fail("option 'report' must not be one of the destinations counted") end

local every = opts.every
if every ~= nil and (type(every) ~= "number" or not (every > 0)) then
  fail("option 'every' must be a positive number of seconds")
end

local prefix = opts.prefix
if prefix == nil then prefix = "counter" end
if type(prefix) ~= "string" then fail("option 'prefix' must be a string") end

-- ---- counting -------------------------------------------------------------

local totals = {}        -- name -> {count, sum, skipped, shown, shown_at}
local function reset()
  local now = mb.now()
  for _, d in ipairs(dests) do totals[d] = {count = 0, sum = 0, skipped = 0, shown = 0, shown_at = now} end
end
reset()

local function field_of(payload)
  local v = payload
  for _, k in ipairs(path) do
    if type(v) ~= "table" then return nil end
    local x = v[k]
    if x == nil and math.tointeger(tonumber(k)) then x = v[math.tointeger(tonumber(k))] end
    v = x
  end
  return v
end

local function print_totals()
  local now = mb.now()
  local lines = {}
  for _, d in ipairs(dests) do
    local t = totals[d]
    local new, dt = t.count - t.shown, now - t.shown_at
    lines[#lines + 1] = ("[%s] %s count=%d sum=%s (+%d, %.1f/s)%s\n"):format(
      prefix, d, t.count, tostring(t.sum), new, dt > 0 and new / dt or 0,
      t.skipped > 0 and (" skipped=%d"):format(t.skipped) or "")
    t.shown, t.shown_at = t.count, now
  end
  io.stdout:write(table.concat(lines))
  io.stdout:flush()
end

local timer -- the pending `every` timer, if any
local function tick()
  timer = nil
  print_totals()
end

local function counter_for(d)
  local t
  return function(msg)
    t = totals[d] -- reset() replaces the tables
    t.count = t.count + 1
    if path then
      local v = field_of(msg.payload)
      if type(v) == "number" then
        t.sum = t.sum + v
      else
        t.skipped = t.skipped + 1
      end
    end
    if every and not timer then timer = mb.after(every, tick) end
  end
end

local function answer(msg)
  local all = {count = 0, sum = 0, skipped = 0, destinations = {}}
  for _, d in ipairs(dests) do
    local t = totals[d]
    all.count = all.count + t.count
    all.sum = all.sum + t.sum
    all.skipped = all.skipped + t.skipped
    all.destinations[d] = {count = t.count, sum = t.sum, skipped = t.skipped}
  end
  local ask = msg.payload
  if type(ask) == "table" and ask.print then print_totals() end
  if type(ask) == "table" and ask.reset then reset() end
  return all
end

o.exist(dests, "count at")
if not mb.has_destination(report) then
  local ok, err = mb.destination(report)
  if not ok and not mb.has_destination(report) then
    fail("cannot declare the report destination '%s': %s", report, err)
  end
end
o.listen(report, answer)
for _, d in ipairs(dests) do o.listen(d, counter_for(d)) end
