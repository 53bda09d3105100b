-- Finance: approves a purchase when it fits the budget, and reserves the
-- money. Listens at jungle/finance/purchase (synchronous). A service, since
-- it keeps the budget between messages: config.lua loads it with the budget
-- (in dollars) as its argument.
--   ask:     {part =, price =}           -> {answer = "yes"|"no", reason =}
--   release: {part =, price =, release = true}: a purchase fell through.
local budget = ...
local left = budget

local function say(fmt, ...) print(("[finance] " .. fmt):format(...)) end

mb.listen("jungle/finance/purchase", function(msg)
  local ask = msg.payload
  if ask.release then
    left = left + ask.price
    say("released the $%d reserved for '%s' ($%d left)", ask.price, ask.part, left)
    return nil -- nobody waits for an answer
  end
  if ask.price > left then
    local reason = ("over budget ($%d asked, $%d left)"):format(ask.price, left)
    say("no: %s", reason)
    return {answer = "no", reason = reason}
  end
  left = left - ask.price
  local reason = ("within budget ($%d left)"):format(left)
  say("yes: %s", reason)
  return {answer = "yes", reason = reason}
end)
