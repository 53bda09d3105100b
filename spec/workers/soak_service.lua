-- A service of the soak (soak.lua): listens at the soak's destinations
-- (again when one is declared again), acknowledges every message it
-- handled to k/ack just before it returns (so `delivered` can be checked
-- against the acks), raises for messages marked f, sleeps for messages
-- marked w, reloads (stops) itself for messages marked r (x), answers
-- requests, and now and then closes one of its listeners and listens
-- again.
--   args: the service's name (its group tag), the seed
local name, seed = ...
math.randomseed(seed)
local DESTS = {"k/par", "k/blk", "k/ser", "k/syn", "k/req", "k/sblk", "k/sser", "k/ssyn", "k/sreq"}
local listeners, mine = {}, {}
for _, d in ipairs(DESTS) do mine[d] = true end

local function handler(dest)
  return function(msg)
    local p = msg.payload
    if p.w then mb.sleep(p.w) end
    if p.f then error("soak: failing on purpose " .. dest .. " #" .. p.n, 0) end
    if p.r or p.x then -- reload, or stop, its own service
      for _, s in ipairs(mb.services()) do
        if s.name == "soak-" .. name then
          if p.r then s.handle:reload() else s.handle:stop() end
        end
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

-- a sender in the service (at destinations the scenario never removes), stopped or reloaded with it: blocking sends,
-- synchronous sends and requests that may be cut short. Each send is
-- reported to k/rep before it starts and after it returned (nothing
-- yields between its return and the report).
local stop_at = select(3, ...)
local me = ("%s:%.6f:%s"):format(name, mb.now(), tostring({}):match("0x%x+") or "")
local function report(t) assert(mb.send("k/rep", t)) end
mb.spawn(function()
  local n = 0
  local SEND = {"k/sblk", "k/sser", "k/ssyn", "k/sreq"}
  while mb.now() < stop_at do
    local d = SEND[math.random(#SEND)]
    n = n + 1
    report({op = "start", d = d, s = me, n = n})
    local ok, err
    local p = {s = me, n = n, i = 1}
    local r = math.random()
    if r < 0.03 then p.f = true elseif r < 0.06 then p.w = math.random() * 0.02 end
    if d == "k/sreq" then
      local v, e = mb.request(d, p, {timeout = 0.02 + math.random() * 0.1})
      ok, err = v ~= nil, e
    else
      ok, err = mb.send(d, p)
    end
    report({op = "end", d = d, s = me, n = n, ok = ok and true or false, err = err})
    mb.sleep(math.random() * 0.003)
  end
end)
