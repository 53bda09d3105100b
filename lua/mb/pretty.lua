-- mb.pretty: Lua values as readable Lua-like text, for the REPL and its
-- `.listen` (and anyone who wants it: `local pretty = require "mb.pretty".pretty`).
-- The layout of the one value printer: every scalar, key and mask is the
-- text of runtime/core/mb_show.c (mb._show, mb._show_key), as --trace shows
-- it; this adds what only Lua values have: sorting, cycles, width, depth,
-- functions and userdata.
--
--   pretty({b = 2, a = {1, 2.0}, password = "x"})
--   --> {a = {1, 2.0}, b = 2, password = "********"}
--
-- Scalars print as Lua literals: strings quoted on one line (control
-- characters escaped: \n, else three decimal digits, NUL too), integers
-- and floats apart (3 and 3.0; math.mininteger, which has no numeral, as
-- `math.mininteger`). Tables print nested with their keys sorted: the list part 1..n first, then the other
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
-- M.line(value, max) is the same text on one line, cut after max
-- characters with "..." as mbrun --trace cuts payloads (for `.listen`).
--
-- Owns nothing and sets no globals; tested by spec/repl/repl_lua_spec.lua.

local M = {}

-- Scalars, keys and masks come from the one value printer (mb_show.c, as
-- mbrun --trace shows values): mb._show and mb._show_key.
local mb = require "mb"
local show, show_key = mb._show, mb._show_key

-- Whether the value under key k is hidden (its name contains "password",
-- "secret" or "token", in any case: the printer's one list).
function M.masks(k)
  return type(k) == "string" and select(2, show_key(k)) ~= nil
end

-- s as a Lua string literal on one line.
function M.quote(s)
  return show(s)
end

-- n as a Lua numeral (or expression, for inf and nan); floats keep a dot.
function M.number(n)
  return show(n)
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
  return show(v) or opaque(v)
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

-- The text of key k in a table constructor, with its " = ", and the mask
-- when the value under k is hidden.
local function key_text(k, P, level)
  if type(k) == "table" then
    return "[" .. flat(k, P, level + 1, math.huge) .. "] = "
  end
  local text, mask = show_key(k)
  return text or "[" .. opaque(k) .. "] = ", mask
end

-- The items of t in order, each as a key text ("" in the list part), the
-- value to print, and the mask for hidden ones.
local function items(t, P, level)
  local n, rest = layout(t)
  local list = {}
  for i = 1, n do list[i] = {"", t[i]} end
  for _, k in ipairs(rest) do
    local text, mask = key_text(k, P, level)
    list[#list + 1] = {text, t[k], mask}
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
      local vs = it[3] or flat(it[2], P, level + 1, budget - len)
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
    lines[i] = pad .. it[1] .. (it[3] or render(it[2], P, level + 1, #pad + #it[1]))
  end
  P.open[v] = nil
  return "{\n" .. table.concat(lines, ",\n") .. "\n" .. P.indent:rep(level) .. "}"
end

-- The text of value on one line, cut after max characters (... then
-- stands for the rest), as mbrun --trace cuts what it shows (mb_show.c:
-- whole pieces, a string's characters one by one). Only the part shown is
-- formatted, so a huge string costs no more than a short one.
local function cut_line(v, P, level, W)
  if W.cut then return end
  if type(v) == "string" then
    W.put('"')
    for i = 1, math.min(#v, W.max) do
      if W.cut then return end
      W.put(show(v:sub(i, i)):sub(2, -2))
    end
    W.put('"')
  elseif type(v) ~= "table" then
    W.put(scalar(v))
  elseif P.open[v] then
    W.put("<cycle>")
  elseif next(v) == nil then
    W.put("{}")
  elseif level >= P.depth then
    W.put("{...}")
  else
    P.open[v] = true
    W.put("{")
    for i, it in ipairs(items(v, P, level)) do
      if W.cut then break end
      if i > 1 then W.put(", ") end
      W.put(it[1])
      if it[3] then W.put(it[3]) else cut_line(it[2], P, level + 1, W) end
    end
    W.put("}")
    P.open[v] = nil
  end
end

function M.line(value, max, opts)
  opts = opts or {}
  local P = {open = {}, width = math.huge, depth = opts.depth or 10, indent = "  "}
  local parts, len = {}, 0
  local W = {max = max}
  function W.put(s)
    if W.cut then return end
    if len + #s > max then
      W.cut = true
      s = "..."
    end
    parts[#parts + 1] = s
    len = len + #s
  end
  cut_line(value, P, 0, W)
  return table.concat(parts)
end

-- value as text. opts: width (columns for one line, default 72; math.huge:
-- always one line), depth (table levels shown, default 10).
function M.pretty(value, opts)
  opts = opts or {}
  local P = {open = {}, width = opts.width or 72, depth = opts.depth or 10, indent = "  "}
  return render(value, P, 0, 0)
end

return M
