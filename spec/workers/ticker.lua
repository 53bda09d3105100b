local tm
tm = mb.every(0.01, function()
  tm:stop()
  local x = 0
  for i = 1, 2e6 do x = x + i end -- still running after the stop
  mb.send("t/d", x)
end)
