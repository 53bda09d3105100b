-- A service of the soak (soak.lua): listens at the soak's destinations,
-- acknowledges every message it handled to k/ack just before it returns
-- (so `delivered` can be checked against the acks), raises for messages
-- marked f, sleeps for messages marked w, answers requests, and now and
-- then closes one of its listeners and listens again.
--   args: the service's name (its group tag), the seed
local name, seed = ...
math.randomseed(seed)
local DESTS = {"k/par", "k/blk", "k/ser", "k/syn", "k/req"}
local listeners = {}

local function handler(dest)
  return function(msg)
    local p = msg.payload
    if p.w then mb.sleep(p.w) end
    if p.f then error("soak: failing on purpose " .. dest .. " #" .. p.n, 0) end
    -- nothing may yield between the ack and the return
    assert(mb.send("k/ack", {d = dest, n = p.n, s = p.s, by = name}))
    return {by = name, n = p.n}
  end
end

for _, d in ipairs(DESTS) do
  listeners[d] = assert(mb.listen(d, handler(d)))
end

-- listener churn inside the service: close one and listen again
mb.every(0.05 + math.random() * 0.05, function()
  local d = DESTS[math.random(#DESTS)]
  listeners[d]:close()
  if math.random() < 0.5 then mb.sleep(math.random() * 0.01) end
  listeners[d] = assert(mb.listen(d, handler(d)))
end)
