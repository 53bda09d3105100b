-- mbrun's first service when it runs with -c CONFIG: declares the configured
-- destinations, then starts the listener scripts and the services. mbrun
-- checked the file before (mb.config), and starts the scenario, if any,
-- once this has returned nothing.
--   args: config path, the folder of these modules
-- Returns nothing when all started, or mbrun's exit code and why, after
-- stopping what had started: 2 when a listener script could not start (it
-- raised, or returned no handler for a destination mapped to it: part of
-- checking the configuration), 1 when a service's script raised while
-- starting.
local cfgpath, luadir = ...
mb._service_info{hidden = true} -- mbrun's own: mb.services() leaves it out
package.path = luadir .. "/?.lua;" .. package.path
local config = require "mb.config"

local cfg, err = config.load(cfgpath)
if not cfg then return 2, err end -- (changed since mbrun checked it)
for _, d in ipairs(cfg.destinations) do
  local ok, why = mb.destination(d.name, d.opts)
  if not ok then return 2, ("%s: %s: %s"):format(cfgpath, d.at, why) end
end

local started = {}

-- Starts a script as mb.load does; a raise (a syntax error) counts as a
-- failure to start too.
local function start(code, at, path, opts)
  local ok, h, why = pcall(mb.load, path, opts)
  if ok and h then
    started[#started + 1] = h
    return true
  end
  for i = #started, 1, -1 do started[i]:stop() end
  return false, code, ("%s: %s: %s"):format(cfgpath, at, ok and why or tostring(h))
end

local function listeners_at(d)
  local s = mb.stats(d)
  return s and s.listeners or 0
end

-- Whether the listener host named `name` has failed (or is gone).
local function host_failed(name)
  for _, s in ipairs(mb.services()) do
    if s.name == name then return s.failures > 0 end
  end
  return true
end

for _, l in ipairs(cfg.listeners) do
  local before = {}
  for i, d in ipairs(l.destinations) do before[i] = listeners_at(d) end
  local ok, code, why = start(2, l.at, luadir .. "/mb/listener_host.lua",
    {name = l.script, args = {l.script, l.destinations, luadir}, group = l.group,
     memory = l.memory, cpu = l.cpu})
  if not ok then return code, why end
  -- mb.load returns at the script's first wait (mb.sleep, mb.request while
  -- it loads): its handler is registered only later. Wait for that, so that
  -- nothing after it starts before; a failure then is still one to start.
  local function registered()
    for i, d in ipairs(l.destinations) do
      if listeners_at(d) <= before[i] then return false end
    end
    return true
  end
  while not registered() do
    if host_failed(l.script) then
      for i = #started, 1, -1 do started[i]:stop() end
      return 2, ("%s: %s: failed while it loaded (see above)"):format(cfgpath, l.at)
    end
    mb.sleep(0.005)
  end
end
for _, s in ipairs(cfg.services) do
  local ok, code, why = start(1, s.at, s.script,
    {instances = s.instances, args = s.args, name = s.name, group = s.group, memory = s.memory,
     cpu = s.cpu})
  if not ok then return code, why end
end
