-- mb.config — reads and checks an mbrun configuration file (SPEC section 3,
-- the counterpart of Liferay's messaging-spring.xml): a Lua file returning
--   { workers = N, max_message_size = BYTES,
--     destinations = { [name] = {type=, max_queue=, on_full=, concurrency=, share=} },
--     services = { {script = path, instances = N, args = {...}, name = "...",
--                    group = "..."}, ... },
--     listeners = { [script path] = {destination, ..., group = "..."} },
--     cluster = {url = ..., namespace =, node =, user =, password =, token =,
--                creds =, tls = {ca =, cert =, key =}} }
-- Relative paths resolve against the configuration file's folder. Every
-- mistake is reported with the file and the key path, before anything runs.
-- Used by mbrun (runtime/mbrun.c) and by its boot script (lua/mb/boot.lua).
local mb = require "mb" -- its destination rules: mb._check_destination

local M = {}

local TOP = {workers = true, max_message_size = true, destinations = true, services = true,
             listeners = true, cluster = true}
-- the range of max_message_size: MB_MESSAGE_SIZE_MIN and _MAX in runtime/mb.h
local MESSAGE_MIN, MESSAGE_MAX = 1024, 1024 * 1024 * 1024
local SERVICE_KEYS = {script = true, instances = true, args = true, name = true, group = true,
                      memory = true, cpu = true}
local CLUSTER_KEYS = {url = true, namespace = true, node = true, user = true, password = true,
                      token = true, creds = true, tls = true}
local TLS_KEYS = {ca = true, cert = true, key = true}

-- A group, node or namespace name (SPEC section 6): as mb_cluster_name_valid.
local function cluster_name(v)
  return type(v) == "string" and #v >= 1 and #v <= 64 and not v:find("[^%w_%-]")
end

-- a whole number: an integer, or a float with a whole value (16 * 2^20 is
-- a float in Lua 5.4), as mb.destination and mb.setup take them
local function whole(v) return type(v) == "number" and math.tointeger(v) ~= nil end
local function is_count(v) return whole(v) and v > 0 end
local MAX_INSTANCES = 4096 -- as mb.load (runtime/lua/mbl_service.c)

local function key_path(base, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return base .. "." .. k end
  if math.type(k) == "integer" then return ("%s[%d]"):format(base, k) end -- not ["1"]: a string
  return (("%s[%q]"):format(base, tostring(k)):gsub("\\\n", "\\n"))
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

-- nil when the file at path can be read, else why not (a folder opens,
-- but reading it fails)
local function unreadable(path)
  local f, err = io.open(path, "r")
  if not f then return err end
  local _, why = f:read(1)
  f:close()
  if why then return ("%s: %s"):format(path, why) end
end

-- v in a message: a string quoted, so that "4" and 4 read apart
local function shown(v)
  return type(v) == "string" and ("%q"):format(v) or tostring(v)
end

-- An error object as people read it (SPEC section 7): through its
-- __tostring when it has one.
local function error_text(e)
  if type(e) == "string" or type(e) == "number" then return tostring(e) end
  local mt = getmetatable(e)
  if type(mt) == "table" and mt.__tostring then
    local ok, text = pcall(tostring, e)
    if ok then return text end
  end
  return ("(error object is a %s value)"):format(type(e))
end

-- A copy of a library table: what a configuration does to it stays there.
local function copy(t, leave_out)
  local c = {}
  for k, v in pairs(t) do
    if not (leave_out and leave_out[k]) then c[k] = v end
  end
  return c
end

-- What a configuration file sees (documented in README, "Configuration"):
-- the pure parts of the base library and copies of string, table, math
-- (without random: mbrun reads the file twice, before starting anything and
-- when starting, and both times it must give the same table) and utf8, and
-- os.getenv. No print, io, require or load: a configuration is data.
local function environment()
  return {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type,
    rawequal = rawequal, rawget = rawget, rawlen = rawlen, getmetatable = getmetatable,
    setmetatable = setmetatable,
    string = copy(string), table = copy(table), utf8 = copy(utf8),
    math = copy(math, {random = true, randomseed = true}),
    os = {getenv = os.getenv},
  }
end

-- The checks of M.load; may raise when a table of the configuration has
-- metamethods that do.
local function check(path)
  local dir = path:match("^(.*)/[^/]*$") or "."
  local function resolve(p)
    if p:sub(1, 1) == "/" then return p end
    return dir .. "/" .. p
  end
  local chunk, err = loadfile(path, "t", environment())
  if not chunk then
    -- a precompiled chunk's error does not name the file
    if err:sub(1, #path) ~= path then err = ("%s: %s"):format(path, err) end
    return nil, err
  end
  local ok, cfg = pcall(chunk)
  if not ok then return nil, ("%s: raised an error: %s"):format(path, error_text(cfg)) end
  local problem
  local function bad(fmt, ...)
    problem = problem or (path .. ": " .. fmt:format(...))
  end
  -- The length of list t (at: its key path), or nil after reporting what
  -- makes it no list: a key other than 1, 2, ..., or a hole (nil) before
  -- the last entry, which would silently drop what follows it.
  local function list_length(t, at, entry)
    local n = 0
    for k in pairs(t) do
      if math.type(k) ~= "integer" or k < 1 then
        bad("%s: must be a list (found key '%s')", at, tostring(k))
        return nil
      end
      if k > n then n = k end
    end
    for i = 1, n do
      if t[i] == nil then
        bad("%s[%d]: missing: the list has a hole (nil) before its entry %d; " ..
          "each entry must be %s", at, i, n, entry)
        return nil
      end
    end
    return n
  end
  if type(cfg) ~= "table" then
    return nil, ("%s: must return a table (workers, destinations, services, listeners), " ..
      "not a %s"):format(path, type(cfg))
  end
  -- the first key of t (in sorted order) that is not allowed is a mistake
  local function unknown_keys(t, allowed, at, what, expected)
    for _, k in ipairs(sorted_keys(t)) do
      if not allowed[k] then bad("%s%s '%s' (%s)", at, what, tostring(k), expected) end
    end
  end
  unknown_keys(cfg, TOP, "", "unknown key",
    "expected workers, max_message_size, destinations, services, listeners, cluster")
  local out = {workers = cfg.workers, max_message_size = cfg.max_message_size, destinations = {},
               services = {}, listeners = {}}
  if cfg.cluster ~= nil and type(cfg.cluster) ~= "table" then
    bad("cluster: must be a table {url = ..., node = ...}, not a %s", type(cfg.cluster))
  elseif cfg.cluster then
    local c = cfg.cluster
    unknown_keys(c, CLUSTER_KEYS, "cluster: ", "unknown key",
      "url, namespace, node, user, password, token, creds, tls")
    if type(c.url) ~= "string" or c.url == "" then
      bad("cluster.url: must be the NATS server's URL (e.g. \"nats://127.0.0.1:4222\")")
    end
    for _, k in ipairs({"user", "password", "token", "creds"}) do
      if c[k] ~= nil and type(c[k]) ~= "string" then
        bad("cluster.%s: must be a string, not a %s", k, type(c[k]))
      end
    end
    for _, k in ipairs({"namespace", "node"}) do
      if c[k] ~= nil and not cluster_name(c[k]) then
        bad("cluster.%s: must be 1-64 characters of A-Z a-z 0-9 _ -, not %s", k, tostring(c[k]))
      end
    end
    if c.tls ~= nil and type(c.tls) ~= "table" then
      bad("cluster.tls: must be a table {ca =, cert =, key =}")
    elseif c.tls then
      unknown_keys(c.tls, TLS_KEYS, "cluster.tls: ", "unknown key", "ca, cert, key")
      for _, k in ipairs({"ca", "cert", "key"}) do
        if c.tls[k] ~= nil and type(c.tls[k]) ~= "string" then
          bad("cluster.tls.%s: must be a file name, not a %s", k, type(c.tls[k]))
        end
      end
    end
    out.cluster = c
  end
  if cfg.workers ~= nil and not (is_count(cfg.workers) and cfg.workers <= 256) then
    bad("workers: must be an integer from 1 to 256, not %s", shown(cfg.workers))
  end
  local max = cfg.max_message_size
  if max ~= nil and not (whole(max) and max >= MESSAGE_MIN and max <= MESSAGE_MAX) then
    bad("max_message_size: must be a whole number of bytes from %d (1 KiB) to %d (1 GiB), " ..
      "e.g. 16 * 1024 * 1024; not %s", MESSAGE_MIN, MESSAGE_MAX,
      type(max) == "string" and ("%q"):format(max) or tostring(max))
  end
  local declared = {}
  if cfg.destinations ~= nil and type(cfg.destinations) ~= "table" then
    bad("destinations: must be a table of name = options")
  elseif cfg.destinations then
    for _, name in ipairs(sorted_keys(cfg.destinations)) do
      local opts = cfg.destinations[name]
      local at = key_path("destinations", name)
      -- the rules of mb.destination itself, checked before anything runs
      local ok, key, why = mb._check_destination(name, type(opts) == "table" and opts or nil)
      if not ok then
        bad("%s%s: %s", at, key and "." .. key or "", why)
      elseif type(opts) ~= "table" then
        bad("%s: must be a table of options, not a %s", at, type(opts))
      else
        declared[name] = true
        out.destinations[#out.destinations + 1] = {name = name, opts = opts, at = at}
        if opts.cluster then out.cluster_dest = out.cluster_dest or at end
      end
    end
  end
  if cfg.services ~= nil and type(cfg.services) ~= "table" then
    bad("services: must be a list of {script = path, instances = N, args = {...}}")
  elseif cfg.services then
    for i = 1, list_length(cfg.services, "services", "a table {script = path, ...}") or 0 do
      local svc = cfg.services[i]
      local at = ("services[%d]"):format(i)
      if type(svc) ~= "table" then
        bad("%s: must be a table {script = path, ...}, not a %s", at, type(svc))
      else
        unknown_keys(svc, SERVICE_KEYS, at .. ": ", "unknown key",
          "script, instances, args, name, group, memory, cpu")
        if svc.cpu ~= nil and not (type(svc.cpu) == "number" and svc.cpu > 0 and svc.cpu < math.huge) then
          bad("%s.cpu: must be a number of seconds above 0 (e.g. 0.5), not %s", at, tostring(svc.cpu))
        end
        if svc.memory ~= nil and not is_count(svc.memory) then
          bad("%s.memory: must be a positive number of bytes (e.g. 16 * 1024 * 1024), not %s", at,
              tostring(svc.memory))
        end
        if svc.group ~= nil and not cluster_name(svc.group) then
          bad("%s.group: must be 1-64 characters of A-Z a-z 0-9 _ -, not %s", at, tostring(svc.group))
        end
        if type(svc.script) ~= "string" then
          bad("%s.script: must be the path of a Lua script", at)
        elseif unreadable(resolve(svc.script)) then
          bad("%s.script: cannot read %s", at, unreadable(resolve(svc.script)))
        end
        if svc.instances ~= nil and not (is_count(svc.instances) and svc.instances <= MAX_INSTANCES) then
          bad("%s.instances: must be an integer from 1 to %d, not %s", at, MAX_INSTANCES,
            shown(svc.instances))
        end
        if svc.args ~= nil and type(svc.args) ~= "table" then
          bad("%s.args: must be a list, not a %s", at, type(svc.args))
        elseif svc.args ~= nil then
          -- the script gets args[1], args[2], ... as `...`: any other key would be lost
          for _, k in ipairs(sorted_keys(svc.args)) do
            if math.type(k) ~= "integer" or k < 1 then
              bad("%s.args: must be a list (found key '%s'); the script gets its entries as `...`",
                at, tostring(k))
            end
          end
        end
        if svc.name ~= nil and (type(svc.name) ~= "string" or svc.name == "") then
          bad("%s.name: must be a non-empty string (how --trace and --graph call it), not %s", at,
              type(svc.name) == "string" and "an empty string" or "a " .. type(svc.name))
        end
        if type(svc.script) == "string" then
          out.services[#out.services + 1] = {script = resolve(svc.script), at = at,
                                             instances = svc.instances, args = svc.args, name = svc.name,
                                             group = svc.group, memory = svc.memory, cpu = svc.cpu}
        end
      end
    end
  end
  if cfg.listeners ~= nil and type(cfg.listeners) ~= "table" then
    bad("listeners: must be a table of script path = {destination, ...}")
  elseif cfg.listeners then
    for _, script in ipairs(sorted_keys(cfg.listeners)) do
      local dests = cfg.listeners[script]
      local at = key_path("listeners", script)
      if type(script) ~= "string" then
        bad("listeners: keys must be script paths, not a %s", type(script))
      elseif unreadable(resolve(script)) then
        bad("%s: cannot read %s", at, unreadable(resolve(script)))
      elseif type(dests) ~= "table" or next(dests) == nil then
        bad("%s: must be a list of destination names", at)
      else
        local group, memory, cpu = rawget(dests, "group"), rawget(dests, "memory"), rawget(dests, "cpu")
        if cpu ~= nil and not (type(cpu) == "number" and cpu > 0 and cpu < math.huge) then
          bad("%s.cpu: must be a number of seconds above 0 (e.g. 0.5), not %s", at, tostring(cpu))
        end
        if group ~= nil and not cluster_name(group) then
          bad("%s.group: must be 1-64 characters of A-Z a-z 0-9 _ -, not %s", at, tostring(group))
        end
        if memory ~= nil and not is_count(memory) then
          bad("%s.memory: must be a positive number of bytes (e.g. 16 * 1024 * 1024), not %s", at,
              tostring(memory))
        end
        if group ~= nil or memory ~= nil or cpu ~= nil then
          dests = copy(dests, {group = true, memory = true, cpu = true})
        end
        local seen = {}
        for i = 1, list_length(dests, at, "a destination name") or 0 do
          local d = dests[i]
          if type(d) ~= "string" then
            bad("%s[%d]: must be a destination name (a string), not a %s", at, i, type(d))
          elseif not declared[d] then
            bad("%s[%d]: no destination '%s' among the configured destinations", at, i, tostring(d))
          elseif seen[d] then
            -- two registrations: the script would handle each message twice
            bad("%s[%d]: '%s' is listed twice (also as entry %d)", at, i, d, seen[d])
          end
          seen[d] = seen[d] or i
        end
        out.listeners[#out.listeners + 1] = {script = resolve(script), destinations = dests, at = at,
                                             group = group, memory = memory, cpu = cpu}
      end
    end
  end
  if problem then return nil, problem end
  return out
end

-- Reads the file at path. Returns the checked configuration, with absolute
-- script paths and declared destinations as a sorted list, each entry with
-- its key path (at), or nil and ONE line "FILE: key.path: what is wrong".
-- It never raises: a metamethod of the configuration's own tables that
-- raises while it is checked is reported like any other mistake.
function M.load(path)
  local ok, cfg, err = pcall(check, path)
  if not ok then
    cfg, err = nil, ("%s: raised an error while it was checked (a metamethod of one of its " ..
      "tables?): %s"):format(path, error_text(cfg))
  end
  if not cfg then return nil, (tostring(err):gsub("\r?\n", "\\n")) end
  return cfg
end

-- Checks what a listener script returns: a function, or a table with a
-- function for each destination it is mapped to. Returns the handler for
-- destination d (or nil and why).
function M.handler_for(result, script, d)
  if type(result) == "function" then return result end
  if type(result) == "table" then
    if type(result[d]) == "function" then return result[d] end
    return nil, ("%s: returns a table of handlers without one for '%s'"):format(script, d)
  end
  return nil, ("%s: must return its handler (a function) or a table of handlers keyed by " ..
    "destination, not a %s"):format(script, type(result))
end

return M
