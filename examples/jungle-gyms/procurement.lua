-- Procurement: finds deals on parts, asks Finance and then Legal for
-- permission (synchronous: mb.request), sends a notice of each approved
-- purchase to jungle/purchase (asynchronous with call-back: the answers come
-- to jungle/purchase/response), and when every answer is in, tells all
-- employees the news (send-and-forget to jungle/employee/news).
-- A service started by scenario.lua once every other department listens.
local ME = "procurement"
local RESPONSES = "jungle/purchase/response"

local deals = {
  {part = "swing chains", price = 120},
  {part = "monkey bars", price = 950},
  {part = "trampoline", price = 400},
  {part = "slide", price = 300},
}

local function say(fmt, ...) print(("[" .. ME .. "] " .. fmt):format(...)) end

-- JSON text of an object with its keys in the given order, as Liferay's
-- JSONObject.put calls build it (mb.json.encode orders keys as the table
-- happens to hold them, which changes from run to run).
local function json_object(pairs_list)
  local fields = {}
  for i, kv in ipairs(pairs_list) do
    fields[i] = mb.json.encode(kv[1]) .. ":" .. mb.json.encode(kv[2])
  end
  return "{" .. table.concat(fields, ",") .. "}"
end

-- Asks one department; true when it said yes.
local function permission(department, dest, deal)
  say("asking %s to buy '%s' for $%d", department, deal.part, deal.price)
  local reply, err = mb.request(dest, {part = deal.part, price = deal.price}, {timeout = 2})
  if not reply then error(("no answer from %s: %s"):format(department, err)) end
  say("%s said %s: %s", department, reply.answer, reply.reason)
  return reply.answer == "yes"
end

-- 1. Permission, one part after the other.
local bought = {}
for _, deal in ipairs(deals) do
  if permission("finance", "jungle/finance/purchase", deal) then
    if permission("legal", "jungle/legal/purchase", deal) then
      bought[#bought + 1] = deal.part
    else
      -- Finance reserved the money: give it back. A synchronous send with no
      -- reply expected: it returns once Finance has run it.
      say("telling finance to release the $%d for '%s'", deal.price, deal.part)
      assert(mb.send("jungle/finance/purchase", {part = deal.part, price = deal.price, release = true}))
    end
  end
end
say("approved %d of %d parts", #bought, #deals)

-- 3. The news, sent by the answer listener below once Sales and Warehouse
--    have answered every notice.
local function news()
  for _, part in ipairs(bought) do
    local item = ("new '%s' on the way to the warehouse"):format(part)
    say("news for all employees: %s", item)
    assert(mb.send("jungle/employee/news", item))
  end
end

-- 2. The notices, and their answers.
local expected = #bought * 2 -- Sales and Warehouse answer each notice
mb.listen(RESPONSES, function(msg)
  local answer = mb.json.decode(msg.payload)
  if answer.department == ME then return end -- ours (we never answer here)
  say("%s answered on '%s': %s", answer.department, answer.partName, answer.comment)
  expected = expected - 1
  if expected == 0 then news() end
end)

for _, part in ipairs(bought) do
  local notice = json_object {
    {"department", ME},
    {"partName", part},
    {"responseDestinationName", RESPONSES},
  }
  say("purchase notice to jungle/purchase: %s", notice)
  assert(mb.send("jungle/purchase", notice, {reply_to = RESPONSES}))
end
