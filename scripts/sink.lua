-- sink.lua: a JSON-lines file sink. Appends every message that arrives at
-- one or more destinations to a file, one JSON object per line, flushed
-- line by line.
--
--   mb.load("scripts/sink.lua", {args = {{destination = "shop/orders", path = "orders.jsonl"}}})
--
-- Options (one table):
--   path          the file to write (required). Relative paths are taken
--                 from the current working directory.
--   destination   name of a destination to listen at      } at least one;
--   destinations  list of destination names to listen at  } both may be given
--   append        true (default): add to the file; false: empty it first
--
-- Each line is the message encoded with mb.json.encode, keys in this order:
--   {"destination":"shop/orders","id":"2a","payload":{...},"values":{...}}
-- followed by "reply_to" and "response_id" when the message has them.
-- The bus's JSON rules apply (SPEC section 7): integers and floats stay
-- apart (3 vs 3.0), an empty table is {}, a nil payload is null; strings
-- pass through byte for byte with control characters escaped, so a line
-- never breaks. Read the file back with mb.json.decode, line by line.
--
-- A line that cannot be written raises: that delivery counts as failed
-- (and its error goes to stderr). The file is opened when the script loads
-- (an error names it if it cannot be) and closed when the service stops or
-- the bus ends. The destinations must exist (declare them first). Starts
-- no timer. Loaded with instances = N, each instance appends to the same
-- file: lines never mix, but their order is the order they were handled.

local NAME = "sink.lua"
local function fail(fmt, ...) error(NAME .. ": " .. fmt:format(...), 0) end

local function is_name(s)
  return type(s) == "string" and #s >= 1 and #s <= 255 and s:match("^[A-Za-z0-9_./:-]+$") ~= nil
end

local opts = ...
if opts == nil then opts = {} end
if type(opts) ~= "table" then
  fail("expects one table of options, e.g. {destination = \"shop/orders\", path = \"orders.jsonl\"}, got a %s",
    type(opts))
end
local KNOWN = {destination = true, destinations = true, path = true, append = true}
for k in pairs(opts) do
  if not KNOWN[k] then fail("unknown option '%s'", tostring(k)) end
end

local dests, seen = {}, {}
local function add_dest(d, what)
  if not is_name(d) then fail("option '%s' must be a destination name", what) end
  if not seen[d] then
    seen[d] = true
    dests[#dests + 1] = d
  end
end
if opts.destination ~= nil then add_dest(opts.destination, "destination") end
if opts.destinations ~= nil then
  if type(opts.destinations) ~= "table" then
    fail("option 'destinations' must be a list of destination names")
  end
  for i, d in ipairs(opts.destinations) do add_dest(d, ("destinations[%d]"):format(i)) end
end
if #dests == 0 then fail("option 'destination' (or 'destinations') is required") end

if opts.path == nil then fail("option 'path' is required") end
if type(opts.path) ~= "string" or opts.path == "" then fail("option 'path' must be a file name") end
local append = opts.append
if append == nil then append = true end
if type(append) ~= "boolean" then fail("option 'append' must be true or false") end

for _, d in ipairs(dests) do
  if not mb.has_destination(d) then
    fail("no destination '%s' to listen at (declare it first with mb.destination)", d)
  end
end

local file, err = io.open(opts.path, append and "ab" or "wb")
if not file then fail("cannot open '%s': %s", opts.path, err) end
file:setvbuf("full")

local encode = mb.json.encode

local function write(msg)
  local parts = {
    '{"destination":', encode(msg.destination),
    ',"id":', encode(msg.id),
    ',"payload":', encode(msg.payload),
    ',"values":', encode(msg.values),
  }
  if msg.reply_to then
    parts[#parts + 1] = ',"reply_to":'
    parts[#parts + 1] = encode(msg.reply_to)
  end
  if msg.response_id then
    parts[#parts + 1] = ',"response_id":'
    parts[#parts + 1] = encode(msg.response_id)
  end
  parts[#parts + 1] = "}\n"
  local ok, werr = file:write(table.concat(parts))
  if ok then ok, werr = file:flush() end
  if not ok then
    error(("%s: cannot write message %s from '%s' to '%s': %s"):format(
      NAME, msg.id, msg.destination, opts.path, tostring(werr)), 0)
  end
end

for _, d in ipairs(dests) do
  local ok, lerr = mb.listen(d, write)
  if not ok then fail("cannot listen at '%s': %s", d, lerr) end
end
