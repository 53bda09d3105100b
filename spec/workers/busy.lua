-- A CPU-bound instance: reports which worker each message ran on.
local me = mb.worker()
mb.listen("w/par", function(m)
  local x = 0
  for i = 1, 20000 do x = x + i % 7 end
  mb.send("w/where", me)
  return x
end)
