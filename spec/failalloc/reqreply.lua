-- failalloc scenario: request/reply on 2 workers — requests, a
-- request_all, sends with reply_to, dead letters.
package.path = "spec/failalloc/?.lua;" .. package.path
local mb = require "mb"
local common = require "common"
local try = common.try
try(mb.setup, {workers = 2})
for _, d in ipairs({"calc", "answers", "mb/dead-letters"}) do try(mb.destination, d) end
try(mb.listen, "mb/dead-letters", function() end)
local answers = 0
try(mb.listen, "answers", function() answers = answers + 1 end)
try(mb.load, "spec/failalloc/calc.lua", {instances = 2})
try(mb.spawn, function()
  for i = 1, 8 do
    local r, err = mb.request("calc", i, {timeout = 10})
    if r ~= i * 2 then io.stderr:write("scenario: request ", i, ": ", tostring(err), "\n") end
  end
  mb.request_all("calc", 1, {timeout = 10})
  for i = 1, 4 do mb.send("calc", i, {reply_to = "answers"}) end
end)
common.finish()
