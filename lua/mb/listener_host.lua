-- Runs a configured listener script in a service of its own: the script
-- returns its handler (or a table of handlers keyed by destination), and
-- this registers it at each destination the configuration maps it to.
--   args: script path, list of destinations, the folder of these modules
local script, destinations, luadir = ...
package.path = luadir .. "/?.lua;" .. package.path
local config = require "mb.config"

local result = dofile(script)
for _, d in ipairs(destinations) do
  local handler = assert(config.handler_for(result, script, d))
  assert(mb.listen(d, handler))
end
