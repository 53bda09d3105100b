-- One instance of a stress service (see stress.lua): listens at its own
-- destination; every 8th message it asks the next service for a number
-- (request/reply inside a listener) and adds it. Reports its totals at a
-- destination of its own, announced at "s/hello".
local index, nservices = ...
local me = ("s/report/%d/%s"):format(index, tostring({}):match("0x(%x+)"))
local count, sum = 0, 0
mb.destination(me)
mb.listen(me, function() return {count = count, sum = sum} end)
mb.listen("s/" .. index, function(m)
  local k = m.payload
  if m.reply_to == nil and m.values.ask then return k + 1 end -- a question
  count = count + 1
  sum = sum + k
  if k % 8 == 0 then
    local nextd = "s/" .. (index % nservices + 1)
    local r, err = mb.request(nextd, k, {values = {ask = true}, timeout = 30})
    assert(r == k + 1, "stress: bad answer " .. tostring(r) .. " " .. tostring(err))
  end
end)
mb.send("s/hello", me)
