-- mbrun's first service when it runs with -c CONFIG: declares the configured
-- destinations, starts the services and the listener scripts, then the
-- scenario (if any) as a service of its own.
--   args: config path, the folder of these modules, scenario path or "",
--         the scenario's arguments...
local cfgpath, luadir, scenario = ...
local scenario_args = table.pack(select(4, ...))
package.path = luadir .. "/?.lua;" .. package.path
local config = require "mb.config"

local cfg = assert(config.load(cfgpath)) -- mbrun checked it before starting
for _, d in ipairs(cfg.destinations) do
  assert(mb.destination(d.name, d.opts))
end
for _, l in ipairs(cfg.listeners) do
  mb.load(luadir .. "/mb/listener_host.lua", {name = l.script, args = {l.script, l.destinations, luadir}})
end
for _, s in ipairs(cfg.services) do
  mb.load(s.script, {instances = s.instances, args = s.args, name = s.name})
end
if scenario ~= "" then
  mb.load(scenario, {args = {table.unpack(scenario_args, 1, scenario_args.n)}})
end
