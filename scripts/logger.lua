-- logger.lua: prints every message that arrives at one or more
-- destinations, one line per message, pretty and masked.
--
--   assert(mb.load("scripts/logger.lua", {args = {{destination = "shop/orders", prefix = "orders"}}}))
--
-- Options (one table):
--   destination   name of a destination to listen at        } at least one;
--   destinations  list of destination names to listen at    } both may be given
--   prefix        text printed in brackets at the start of each line
--                 (default: none)
--   mask          list of extra key fragments to mask, added to the
--                 built-in "password", "secret" and "token" (default: {})
--   max_string    strings longer than this many bytes are cut, and their
--                 length is shown (default 256; 0 prints them whole)
--
-- Each line: [prefix] +SECONDS DESTINATION #ID PAYLOAD, then values=...
-- when the message has values, reply_to=... and response_id=... when set.
-- SECONDS is the time since the logger started. Tables print nested on the
-- one line with their keys sorted ({1, 2} for lists, {a = 1, ["b c"] = 2}
-- otherwise); strings are quoted with control characters escaped; floats
-- keep their dot (3.0). A value under a key that contains "password",
-- "secret" or "token" (in any case, at any depth, payload or values) prints
-- as ******** - whatever the value is, a table included.
--
--   [orders] +0.002s shop/orders #2a {item = "swing", qty = 2} values={user = {password = ********}}
--
-- The destinations must exist (declare them first). The logger never
-- replies and starts no timer: it ends with the bus. Lines go to stdout,
-- flushed one by one so they interleave with other output in order.

local options = dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or ".") .. "/lib/options.lua")
local o = options.new("logger.lua")
local fail = o.fail

local opts = o.check(..., {"destination", "destinations", "prefix", "mask", "max_string"},
  '{destination = "shop/orders"}')
local dests = o.destinations(opts)

local prefix = opts.prefix
if prefix ~= nil and type(prefix) ~= "string" then fail("option 'prefix' must be a string") end

local masked = {"password", "secret", "token"}
if opts.mask ~= nil then
  if type(opts.mask) ~= "table" then fail("option 'mask' must be a list of strings") end
  for i, m in ipairs(opts.mask) do
    if type(m) ~= "string" or m == "" then fail("option 'mask[%d]' must be a non-empty string", i) end
    masked[#masked + 1] = m:lower()
  end
end

local max_string = opts.max_string
if max_string == nil then max_string = 256 end
if math.type(max_string) ~= "integer" or max_string < 0 then
  fail("option 'max_string' must be an integer, 0 or more")
end

-- ---- pretty printing ------------------------------------------------------

local function hides(key)
  if type(key) ~= "string" then return false end
  key = key:lower()
  for _, m in ipairs(masked) do
    if key:find(m, 1, true) then return true end
  end
  return false
end

-- quotes, backslashes and control characters escaped: one line, always
local ESC = {["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\"}
for b = 0, 31 do
  local c = string.char(b)
  ESC[c] = ESC[c] or ("\\%03d"):format(b)
end
ESC["\127"] = "\\127"

local function quote(s)
  local cut = ""
  if max_string > 0 and #s > max_string then
    cut = ("...(%d bytes)"):format(#s)
    s = s:sub(1, max_string)
  end
  return '"' .. s:gsub('[%c"\\]', ESC) .. '"' .. cut
end

local function number(n)
  if math.type(n) == "integer" then return ("%d"):format(n) end
  if n ~= n then return "nan" end
  if n == math.huge then return "inf" end
  if n == -math.huge then return "-inf" end
  local s = ("%.14g"):format(n)
  if tonumber(s) ~= n then s = ("%.17g"):format(n) end
  if not s:find("[.eE]") then s = s .. ".0" end
  return s
end

local RANK = {number = 1, string = 2, boolean = 3}
local function key_before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return RANK[ta] < RANK[tb] end
  if ta == "boolean" then return not a and b end
  return a < b
end

local pretty

local function key_text(k)
  if type(k) == "string" then
    if k:match("^[A-Za-z_][A-Za-z0-9_]*$") then return k end
    return "[" .. quote(k) .. "]"
  end
  return "[" .. (type(k) == "number" and number(k) or tostring(k)) .. "]"
end

local function table_text(t, out)
  local keys, n = {}, 0
  for k in pairs(t) do
    n = n + 1
    keys[n] = k
  end
  if n == 0 then
    out[#out + 1] = "{}"
    return
  end
  local list = true
  for i = 1, n do
    if t[i] == nil then
      list = false
      break
    end
  end
  out[#out + 1] = "{"
  if list then
    for i = 1, n do
      if i > 1 then out[#out + 1] = ", " end
      pretty(t[i], out)
    end
  else
    table.sort(keys, key_before)
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = ", " end
      out[#out + 1] = key_text(k)
      out[#out + 1] = " = "
      if hides(k) then
        out[#out + 1] = "********"
      else
        pretty(t[k], out)
      end
    end
  end
  out[#out + 1] = "}"
end

function pretty(v, out)
  local t = type(v)
  if t == "table" then
    table_text(v, out)
  elseif t == "string" then
    out[#out + 1] = quote(v)
  elseif t == "number" then
    out[#out + 1] = number(v)
  else
    out[#out + 1] = tostring(v)
  end
end

-- ---- listening ------------------------------------------------------------

local start = mb.now()
local head = prefix and ("[" .. prefix .. "] ") or ""

local function log(msg)
  local out = {head, ("+%.3fs "):format(mb.now() - start), msg.destination, " #", msg.id, " "}
  pretty(msg.payload, out)
  if next(msg.values) ~= nil then
    out[#out + 1] = " values="
    pretty(msg.values, out)
  end
  if msg.reply_to then out[#out + 1] = " reply_to=" .. msg.reply_to end
  if msg.response_id then out[#out + 1] = " response_id=" .. msg.response_id end
  out[#out + 1] = "\n"
  io.stdout:write(table.concat(out))
  io.stdout:flush()
end

o.exist(dests, "listen at")
for _, d in ipairs(dests) do o.listen(d, log) end
