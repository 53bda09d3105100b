-- Runs a configured listener script in a service of its own: the script
-- returns its handler (or a table of handlers keyed by destination), and
-- this registers it at each destination the configuration maps it to. If
-- the script raises, or returns no handler for one of them, this raises
-- while starting: boot.lua's mb.load then fails and mbrun exits 2.
--   args: script path, list of destinations, the folder of these modules
local script, destinations, luadir = ...
mb._service_info{path = script} -- mb.services() shows the script it runs
package.path = luadir .. "/?.lua;" .. package.path
local config = require "mb.config"

local result = dofile(script)
for _, d in ipairs(destinations) do
  local handler, why = config.handler_for(result, script, d)
  if not handler then error(why, 0) end
  local l, err = mb.listen(d, handler)
  if not l then error(err, 0) end
end
