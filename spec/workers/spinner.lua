local dir = ...
mb.listen("l/spin", function()
  local t = mb.now()
  while mb.now() - t < 0.3 do end -- busy while the runtime shuts down
  mb.load(dir .. "/victim.lua")
end)
