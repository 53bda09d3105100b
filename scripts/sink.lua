-- sink.lua: a JSON-lines file sink. Appends every message that arrives at
-- one or more destinations to a file, one JSON object per line, flushed
-- line by line.
--
--   assert(mb.load("scripts/sink.lua", {args = {{destination = "shop/orders", path = "orders.jsonl"}}}))
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
local options = dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or ".") .. "/lib/options.lua")
local o = options.new(NAME)
local fail = o.fail

local opts = o.check(..., {"destination", "destinations", "path", "append"},
  '{destination = "shop/orders", path = "orders.jsonl"}')
local dests = o.destinations(opts)

if opts.path == nil then fail("option 'path' is required") end
if type(opts.path) ~= "string" or opts.path == "" then fail("option 'path' must be a file name") end
local append = opts.append
if append == nil then append = true end
if type(append) ~= "boolean" then fail("option 'append' must be true or false") end

o.exist(dests, "listen at")

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

for _, d in ipairs(dests) do o.listen(d, write) end
