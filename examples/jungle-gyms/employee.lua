-- An employee: reads the equipment news at jungle/employee/news (parallel).
-- Loaded once per employee, with the name as its argument (config.lua has an
-- entry for each), so that each one is a listener group of its own and gets
-- every news item.
local name = ...

mb.listen("jungle/employee/news", function(msg)
  print(("[employee %s] read the news: %s"):format(name, msg.payload))
end)
