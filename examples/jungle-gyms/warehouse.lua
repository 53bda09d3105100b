-- Warehouse: hears of every purchase at jungle/purchase (serial) and answers
-- with a JSON comment, which goes to the notice's reply_to
-- (jungle/purchase/response); reads the other answers there. A service
-- loaded by config.lua; it numbers the bays it clears.
local ME = "warehouse"
local bay = 0

local function say(fmt, ...) print(("[" .. ME .. "] " .. fmt):format(...)) end

mb.listen("jungle/purchase", function(msg)
  local notice = mb.json.decode(msg.payload) -- {department, partName, responseDestinationName}
  bay = bay + 1
  say("%s bought '%s'; answering at %s", notice.department, notice.partName, msg.reply_to)
  return mb.json.encode {
    department = ME,
    partName = notice.partName,
    comment = ("bay %d is cleared for '%s'"):format(bay, notice.partName),
  }
end)

mb.listen("jungle/purchase/response", function(msg)
  local answer = mb.json.decode(msg.payload)
  if answer.department == ME then return end -- our own answer
  say("noted %s on '%s': %s", answer.department, answer.partName, answer.comment)
end)
