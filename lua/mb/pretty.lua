-- mb.pretty: Lua values as readable Lua-like text, for the REPL (and anyone
-- who wants it: `local pretty = require "mb.pretty".pretty`).
--
--   pretty({b = 2, a = {1, 2.0}, password = "x"})
--   --> {a = {1, 2.0}, b = 2, password = "********"}
--
-- Scalars print as Lua literals: strings quoted on one line (control
-- characters escaped, NUL too), integers and floats apart (3 and 3.0;
-- math.mininteger, which has no numeral, as `math.mininteger`). Tables print
-- nested with their keys sorted: the list part 1..n first, then the other
-- numbers ascending, then strings, then any other key by type and tostring.
-- A table prints on one line when that fits in `width` columns (72), else
-- one key per line, indented by two spaces. A table met again inside
-- itself prints as <cycle>; below `depth` levels (10) a table prints as
-- {...}. A value under a string key that contains "password", "secret" or
-- "token", in any case, prints as "********" (SPEC section 3: as in
-- `mbrun --trace`), whatever it is. Functions, userdata and threads print
-- as <function>, <userdata> (or the name of their metatable, e.g.
-- <mb.Listener>) and <thread>.
--
-- For data (tables of booleans, numbers and strings, no deeper than
-- `depth`, no key that is masked) the text is a Lua expression that `load`
-- reads back as an equal value, integers and floats apart (with `math` in
-- scope, for math.huge and math.mininteger; NaN prints as 0/0).
-- fuzz/fuzz_pretty.c checks this on random values.
--
-- Owns nothing and sets no globals; tested by spec/repl_lua_spec.lua.

local M = {}

local MASK = "\"********\""
local HIDDEN = {"password", "secret", "token"}

-- Whether the value under key k is hidden.
function M.masks(k)
  if type(k) ~= "string" then return false end
  k = k:lower()
  for _, m in ipairs(HIDDEN) do
    if k:find(m, 1, true) then return true end
  end
  return false
end

local ESC = {["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\",
             ["\a"] = "\\a", ["\b"] = "\\b", ["\f"] = "\\f", ["\v"] = "\\v"}
for b = 0, 31 do
  local c = string.char(b)
  -- always three digits, so a digit after it cannot join the escape
  ESC[c] = ESC[c] or ("\\%03d"):format(b)
end
ESC["\127"] = "\\127"

-- s as a Lua string literal on one line.
function M.quote(s)
  return '"' .. s:gsub('[%c"\\]', ESC) .. '"'
end

-- n as a Lua numeral (or expression, for inf and nan); floats keep a dot.
function M.number(n)
  if n == math.mininteger and math.type(n) == "integer" then
    return "math.mininteger" -- "-9223372036854775808" reads back as a float
  end
  if math.type(n) == "integer" then return ("%d"):format(n) end
  if n ~= n then return "0/0" end
  if n == math.huge then return "math.huge" end
  if n == -math.huge then return "-math.huge" end
  local s = ("%.14g"):format(n)
  if tonumber(s) ~= n then s = ("%.17g"):format(n) end
  if not s:find("[.eEn]") then s = s .. ".0" end
  return s
end

local RESERVED = {}
for w in ([[and break do else elseif end false for function goto if in local
  nil not or repeat return then true until while]]):gmatch("%a+") do
  RESERVED[w] = true
end

local function opaque(v)
  local t = type(v)
  if t == "userdata" then
    local mt = getmetatable(v)
    if type(mt) == "table" and type(mt.__name) == "string" then return "<" .. mt.__name .. ">" end
  end
  return "<" .. t .. ">"
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return M.quote(v) end
  if t == "number" then return M.number(v) end
  if t == "nil" or t == "boolean" then return tostring(v) end
  return opaque(v)
end

-- Key order: numbers, strings, then the rest by type name and tostring.
local RANK = {number = 1, string = 2}
local function before(a, b)
  local ta, tb = type(a), type(b)
  local ra, rb = RANK[ta] or 3, RANK[tb] or 3
  if ra ~= rb then return ra < rb end
  if ra < 3 then return a < b end
  if ta ~= tb then return ta < tb end
  return tostring(a) < tostring(b)
end

-- The list length n (t[1..n] all present) and the other keys, sorted.
local function layout(t)
  local n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  local rest = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then rest[#rest + 1] = k end
  end
  table.sort(rest, before)
  return n, rest
end

local flat

-- The text of key k in a table constructor, with its " = ".
local function key_text(k, P, level)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not RESERVED[k] then
    return k .. " = "
  end
  if type(k) == "table" then
    return "[" .. flat(k, P, level + 1, math.huge) .. "] = "
  end
  return "[" .. scalar(k) .. "] = "
end

-- The items of t in order, each as a key text ("" in the list part) and the
-- value to print (the mask for hidden ones).
local function items(t, P, level)
  local n, rest = layout(t)
  local list = {}
  for i = 1, n do list[i] = {"", t[i]} end
  for _, k in ipairs(rest) do
    local masked = M.masks(k)
    list[#list + 1] = {key_text(k, P, level), t[k], masked}
  end
  return list
end

-- v on one line, or nil when that is longer than budget characters.
-- P: the options, and open, the tables on the way down (for cycles).
function flat(v, P, level, budget)
  local s
  if type(v) ~= "table" then
    s = scalar(v)
  elseif P.open[v] then
    s = "<cycle>"
  elseif next(v) == nil then
    s = "{}"
  elseif level >= P.depth then
    s = "{...}"
  else
    P.open[v] = true
    local parts, len = {}, 2
    for i, it in ipairs(items(v, P, level)) do
      len = len + #it[1] + (i > 1 and 2 or 0)
      local vs = it[3] and MASK or flat(it[2], P, level + 1, budget - len)
      len = len + (vs and #vs or math.huge)
      if len > budget then break end
      parts[i] = it[1] .. vs
    end
    P.open[v] = nil
    if len > budget then return nil end
    s = "{" .. table.concat(parts, ", ") .. "}"
  end
  if #s > budget then return nil end
  return s
end

-- v starting at column col: on one line when it fits, else one item a line.
local function render(v, P, level, col)
  if type(v) ~= "table" then return scalar(v) end
  local s = flat(v, P, level, P.width - col)
  if s then return s end
  if P.open[v] then return "<cycle>" end
  if level >= P.depth then return "{...}" end
  P.open[v] = true
  local pad = P.indent:rep(level + 1)
  local lines = {}
  for i, it in ipairs(items(v, P, level)) do
    lines[i] = pad .. it[1] .. (it[3] and MASK or render(it[2], P, level + 1, #pad + #it[1]))
  end
  P.open[v] = nil
  return "{\n" .. table.concat(lines, ",\n") .. "\n" .. P.indent:rep(level) .. "}"
end

-- value as text. opts: width (columns for one line, default 72; math.huge:
-- always one line), depth (table levels shown, default 10).
function M.pretty(value, opts)
  opts = opts or {}
  local P = {open = {}, width = opts.width or 72, depth = opts.depth or 10, indent = "  "}
  return render(value, P, 0, 0)
end

return M
