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

for _, l in ipairs(cfg.listeners) do
  local ok, code, why = start(2, l.at, luadir .. "/mb/listener_host.lua",
    {name = l.script, args = {l.script, l.destinations, luadir}, group = l.group,
     memory = l.memory, cpu = l.cpu})
  if not ok then return code, why end
end
for _, s in ipairs(cfg.services) do
  local ok, code, why = start(1, s.at, s.script,
    {instances = s.instances, args = s.args, name = s.name, group = s.group, memory = s.memory,
     cpu = s.cpu})
  if not ok then return code, why end
end
