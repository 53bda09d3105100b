-- A listener at "w/serial" that reports the start and end of each delivery
-- to the scenario's synchronous "w/check" destination.
local who = ...
mb.listen("w/serial", function(msg)
  mb.request("w/check", {who = who, i = msg.payload, phase = "start"})
  mb.sleep(0.001 * (msg.payload % 3))
  mb.request("w/check", {who = who, i = msg.payload, phase = "end"})
end)
