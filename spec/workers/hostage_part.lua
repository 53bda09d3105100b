-- The services of hostage.lua.
local role, flag = ...
if role == "listener" then
  local n = 0
  mb.listen("h/d", function()
    n = n + 1
    mb.send("h/seen", n)
    mb.sleep(0.02)
    if n == 8 then io.open(flag, "w"):close() end
  end)
elseif role == "sender" then
  mb.listen("h/go", function() for i = 1, 5 do assert(mb.send("h/d", i)) end end)
elseif role == "hog" then
  mb.listen("h/hog", function()
    local t = os.clock()
    while os.clock() - t < 10 do
      local f = io.open(flag)
      if f then
        f:close()
        mb.send("h/hogged", "released")
        return
      end
    end
    mb.send("h/hogged", "still held after 10 s of CPU")
  end)
end
