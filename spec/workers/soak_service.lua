-- A service of the soak (soak.lua): listens at the soak's destinations
-- (again when one is declared again), acknowledges every message it
-- handled to k/ack just before it returns (so `delivered` can be checked
-- against the acks), raises for messages marked f, sleeps for messages
-- marked w, reloads itself for messages marked r, answers requests, and
-- now and then closes one of its listeners and listens again.
--   args: the service's name (its group tag), the seed
local name, seed = ...
math.randomseed(seed)
local DESTS = {"k/par", "k/blk", "k/ser", "k/syn", "k/req"}
local listeners, mine = {}, {}
for _, d in ipairs(DESTS) do mine[d] = true end

local function handler(dest)
  return function(msg)
    local p = msg.payload
    if p.w then mb.sleep(p.w) end
    if p.f then error("soak: failing on purpose " .. dest .. " #" .. p.n, 0) end
    if p.r then
      for _, s in ipairs(mb.services()) do
        if s.name == "soak-" .. name then s.handle:reload() end
      end
    end
    -- nothing may yield between the ack and the return
    assert(mb.send("k/ack", {d = dest, i = p.i, n = p.n, s = p.s, by = name}))
    return {by = name, n = p.n}
  end
end

local function listen(d)
  -- one listener per destination (two would be two groups)
  if listeners[d] then listeners[d]:close() end
  listeners[d] = mb.listen(d, handler(d)) -- nil while d is removed
end
for _, d in ipairs(DESTS) do listen(d) end
mb.on("destination_added", function(d)
  if mine[d] then listen(d) end
end)

-- listener churn inside the service: close one and listen again
mb.every(0.05 + math.random() * 0.05, function()
  local d = DESTS[math.random(#DESTS)]
  if listeners[d] then listeners[d]:close() end
  listeners[d] = nil
  if math.random() < 0.5 then mb.sleep(math.random() * 0.01) end
  listen(d)
end)
