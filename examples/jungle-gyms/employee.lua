-- An employee: reads the equipment news at jungle/employee/news (parallel).
-- Loaded once per employee, so that each one gets every news item.
local name = ...

mb.listen("jungle/employee/news", function(msg)
  print(("[employee %s] read the news: %s"):format(name, msg.payload))
end)
