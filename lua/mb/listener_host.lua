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
local handlers = {}
for i, d in ipairs(destinations) do
  local handler, why = config.handler_for(result, script, d)
  if not handler then error(why, 0) end
  handlers[i] = handler
end
-- a handler the configuration maps to no destination would never run: a
-- typo in its key, say. Said (a script of handlers may serve several
-- configurations, so it is no error)
if type(result) == "table" then
  local mapped = {}
  for _, d in ipairs(destinations) do mapped[d] = true end
  local extra = {}
  for k, v in pairs(result) do
    if type(v) == "function" and not mapped[k] then extra[#extra + 1] = ("%q"):format(tostring(k)) end
  end
  table.sort(extra)
  if #extra > 0 then
    io.stderr:write(("mbrun: %s: its handler%s for %s never run%s: the configuration maps it " ..
      "only to %s\n"):format(script, #extra > 1 and "s" or "", table.concat(extra, ", "),
      #extra > 1 and "" or "s", table.concat(destinations, ", ")))
  end
end
for i, d in ipairs(destinations) do
  local l, err = mb.listen(d, handlers[i])
  if not l then error(err, 0) end
end
