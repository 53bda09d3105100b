-- An answerer of replies.lua: two listeners at r/plain and at r/all (two
-- groups each), answering by return, by mb.reply from a spawned coroutine,
-- or by mb.reply from a timer 1 ms later (at r/all the second listener
-- often before the first); at r/hold it keeps the message 50 ms.
local tag = ...
local held, closed, taken = 0, 0, 0
-- a request's first reply wins (the other group's is refused: closed);
-- each of request_all's is taken
local function reply(m, text, all)
  local ok, err = mb.reply(m, text)
  assert(ok or not all and err:match("^closed: "), err)
end
local function answer(m, text, all, g)
  local k = m.payload + 2 * g -- the two listeners of a request_all answer in different ways
  if k % 3 == 0 then return text end
  if k % 3 == 1 then
    mb.spawn(function() reply(m, text, all) end)
  else
    mb.after(0.001, function() reply(m, text, all) end)
  end
end
for g = 1, 2 do
  mb.listen("r/plain", function(m)
    return answer(m, tag, false, 0)
  end)
  mb.listen("r/all", function(m) return answer(m, tag .. "/" .. g, true, g) end)
end
if tag == "A" then
  mb.listen("r/ask", function() return {held, closed, taken} end)
  mb.listen("r/hold", function(m)
    held = held + 1
    mb.after(0.05, function()
      local ok, err = mb.reply(m, "late")
      if ok then taken = taken + 1 elseif err:match("^closed: ") then closed = closed + 1 end
    end)
  end)
end
