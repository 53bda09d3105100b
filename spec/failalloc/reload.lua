-- failalloc scenario: a service of 2 instances on 2 workers reloaded while
-- it has work (handle:reload: new instances, the old ones drain), then
-- stopped; one more reload left to the end.
package.path = "spec/failalloc/?.lua;" .. package.path
local mb = require "mb"
local common = require "common"
local try = common.try
try(mb.setup, {workers = 2})
try(mb.destination, "work")
try(mb.destination, "mb/dead-letters")
try(mb.listen, "mb/dead-letters", function() end)
local h = try(mb.load, "spec/failalloc/worker.lua", {instances = 2, args = {1}})
for round = 1, 3 do
  for i = 1, 4 do try(mb.send, "work", i) end
  if h then try(h.reload, h) end
  try(mb.run, {timeout = 10})
end
if h then try(h.stop, h) end
h = try(mb.load, "spec/failalloc/worker.lua", {args = {4}})
for i = 1, 2 do try(mb.send, "work", i) end
if h then try(h.reload, h) end -- its old instance drains at the end
common.finish()
