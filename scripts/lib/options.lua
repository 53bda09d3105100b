-- lib/options.lua: the option handling every ready script in scripts/
-- shares. Not a script itself: a script loads it relative to its own path
-- (its Lua state, started by mb.load, has no scripts/ in package.path):
--
--   local options = dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or ".")
--                          .. "/lib/options.lua")
--   local o = options.new("echo.lua")
--   local opts = o.check(..., {"destination", "delay"}, '{destination = "svc/echo"}')
--
-- options.new(NAME) gives a table of functions whose errors name the script:
--   fail(fmt, ...)      raises "NAME: " .. fmt:format(...) (no position)
--   is_name(s)          true when s is a valid destination name
--   check(opts, known, example)
--                       opts (the script's `...`; nil is {}) must be a
--                       table whose keys are all in the list `known`;
--                       `example` is shown when it is not a table. Returns
--                       the table.
--   name(opts, key)     opts[key]: required, and a destination name
--   destinations(opts)  the names in opts.destination and opts.destinations
--                       (at least one; duplicates dropped, first order
--                       kept) as a list, and the set of them
--   exist(dests, what)  every name in the list dests must be a declared
--                       destination, else "no destination 'D' to WHAT
--                       (declare it first with mb.destination)"
--   listen(d, handler)  mb.listen(d, handler), raising "cannot listen at
--                       'D': REASON" when the bus refuses

local options = {}

local function is_name(s)
  return type(s) == "string" and #s >= 1 and #s <= 255 and s:match("^[A-Za-z0-9_./:-]+$") ~= nil
end
options.is_name = is_name

function options.new(NAME)
  local o = {is_name = is_name}

  local function fail(fmt, ...) error(NAME .. ": " .. fmt:format(...), 0) end
  o.fail = fail

  function o.check(opts, known, example)
    if opts == nil then opts = {} end
    if type(opts) ~= "table" then
      fail("expects one table of options, e.g. %s, got a %s", example, type(opts))
    end
    local set = {}
    for _, k in ipairs(known) do set[k] = true end
    for k in pairs(opts) do
      if not set[k] then fail("unknown option '%s'", tostring(k)) end
    end
    return opts
  end

  function o.name(opts, key)
    if opts[key] == nil then fail("option '%s' is required", key) end
    if not is_name(opts[key]) then fail("option '%s' must be a destination name", key) end
    return opts[key]
  end

  function o.destinations(opts)
    local dests, seen = {}, {}
    local function add(d, what)
      if not is_name(d) then fail("option '%s' must be a destination name", what) end
      if not seen[d] then
        seen[d] = true
        dests[#dests + 1] = d
      end
    end
    if opts.destination ~= nil then add(opts.destination, "destination") end
    if opts.destinations ~= nil then
      if type(opts.destinations) ~= "table" then
        fail("option 'destinations' must be a list of destination names")
      end
      for i, d in ipairs(opts.destinations) do add(d, ("destinations[%d]"):format(i)) end
    end
    if #dests == 0 then fail("option 'destination' (or 'destinations') is required") end
    return dests, seen
  end

  function o.exist(dests, what)
    for _, d in ipairs(dests) do
      if not mb.has_destination(d) then
        fail("no destination '%s' to %s (declare it first with mb.destination)", d, what)
      end
    end
  end

  function o.listen(destination, handler)
    local ok, err = mb.listen(destination, handler)
    if not ok then fail("cannot listen at '%s': %s", destination, err) end
  end

  return o
end

return options
