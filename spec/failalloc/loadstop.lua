-- failalloc scenario: services loaded on 2 workers, given work, stopped.
package.path = "spec/failalloc/?.lua;" .. package.path
local mb = require "mb"
local common = require "common"
local try = common.try
try(mb.setup, {workers = 2})
try(mb.destination, "work")
try(mb.destination, "mb/dead-letters")
try(mb.listen, "mb/dead-letters", function() end)
for round = 1, 3 do
  local h = try(mb.load, "spec/failalloc/worker.lua", {instances = 2, args = {round}})
  for i = 1, 4 do try(mb.send, "work", i) end
  try(mb.run, {timeout = 10})
  if h then try(h.stop, h) end
end
try(mb.load, "spec/failalloc/worker.lua", {args = {4}}) -- left to the end
common.finish()
