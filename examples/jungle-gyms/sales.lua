-- Sales: hears of every purchase at jungle/purchase (serial) and answers with
-- a JSON comment, which goes to the notice's reply_to
-- (jungle/purchase/response); reads the other answers there.
-- A listener script: it returns a table of handlers keyed by destination,
-- and config.lua registers each at its destination.
local ME = "sales"

local function say(fmt, ...) print(("[" .. ME .. "] " .. fmt):format(...)) end

return {
  ["jungle/purchase"] = function(msg)
    local notice = mb.json.decode(msg.payload) -- {department, partName, responseDestinationName}
    say("%s bought '%s'; answering at %s", notice.department, notice.partName, msg.reply_to)
    -- the return value is the reply
    return mb.json.encode {
      department = ME,
      partName = notice.partName,
      comment = ("we'll put '%s' in the next catalogue"):format(notice.partName),
    }
  end,

  ["jungle/purchase/response"] = function(msg)
    local answer = mb.json.decode(msg.payload)
    if answer.department == ME then return end -- our own answer
    say("noted %s on '%s': %s", answer.department, answer.partName, answer.comment)
  end,
}
