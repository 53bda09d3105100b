-- Legal: approves a part when its safety rating meets the minimum.
-- A listener script: it returns its handler, and config.lua registers it at
-- jungle/legal/purchase (synchronous).
--   {part =} -> {answer = "yes"|"no", reason =}
local MINIMUM = 4
local ratings = { -- out of 5
  ["swing chains"] = 5,
  ["monkey bars"] = 4,
  ["trampoline"] = 2,
  ["slide"] = 4,
}

local function say(fmt, ...) print(("[legal] " .. fmt):format(...)) end

return function(msg)
  local part = msg.payload.part
  local rating = ratings[part]
  local answer, reason
  if not rating then
    answer, reason = "no", "no safety rating on file"
  elseif rating < MINIMUM then
    answer, reason = "no", ("safety rating %d/5, below our minimum of %d"):format(rating, MINIMUM)
  else
    answer, reason = "yes", ("safety rating %d/5"):format(rating)
  end
  say("%s: %s", answer, reason)
  return {answer = answer, reason = reason}
end
