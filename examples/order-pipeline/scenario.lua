-- Order pipeline: a producer pushes N orders (default 20) into orders/new as
-- fast as it can; config.lua's stages validate, price and ship them. Order 7
-- is malformed, and validate turns it down. At the end this prints what
-- shows back-pressure at work: every order is accounted for, shipped in the
-- order sent, no send was refused, and no queue ever held more than its
-- max_queue.
--
--   ./build/mbrun -c examples/order-pipeline/config.lua examples/order-pipeline/scenario.lua [N] [--raise]
--
-- --raise makes order 13 ask for an item price.lua has no price for: its
-- handler raises, the failed delivery comes back as a dead letter (printed
-- below, so the order is not lost), and mbrun exits 1 because a delivery
-- failed.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local config = dofile(here .. "/config.lua") -- plain data: the queue limits
local STAGES = {"orders/new", "orders/valid", "orders/priced"}
local ITEMS = {"swing", "slide", "monkey bars", "sandpit"}

local n, raise = 20, false
for _, a in ipairs {...} do
  if a == "--raise" then
    raise = true
  elseif math.tointeger(tonumber(a)) and tonumber(a) >= 13 then
    n = math.tointeger(tonumber(a))
  else
    error("usage: scenario.lua [N >= 13] [--raise]", 0)
  end
end

-- The ends of the pipeline: every order must come out at one of them.
local shipped, rejected, dead = {}, {}, {}
local sent_all = false

local function summary()
  -- (called only once shipped + rejected + dead-lettered == n)
  print(("[summary] %d orders, all accounted for: %d shipped, %d rejected, %d dead-lettered")
    :format(n, #shipped, #rejected, #dead))
  local in_order = true
  for i = 2, #shipped do
    if shipped[i] <= shipped[i - 1] then in_order = false end
  end
  print(("[summary] shipped in the order sent: %s (%s)"):format(in_order and "yes" or "NO",
    table.concat(shipped, " ")))
  for _, d in ipairs(STAGES) do
    local s, max = mb.stats(d), config.destinations[d].max_queue
    print(("[summary] %-13s max_queue %d, largest_pending %d (%s), sends refused %d"):format(d, max,
      s.largest_pending, s.largest_pending <= max and "never above" or "ABOVE", s.rejected))
  end
end

-- Called after each outcome and after the last send: the summary comes once
-- both the producer and the pipeline are done.
local function settle()
  if sent_all and #shipped + #rejected + #dead == n then summary() end
end

mb.listen("orders/shipped", function(msg)
  shipped[#shipped + 1] = msg.payload.id
  settle()
end)
mb.listen("orders/rejected", function(msg)
  local r = msg.payload
  rejected[#rejected + 1] = r.order.id
  print(("[rejected] order %d, back to the customer: %s"):format(r.order.id, r.error))
  settle()
end)
mb.listen("mb/dead-letters", function(msg)
  local r = msg.payload -- {destination =, message =, error =}
  local order = r.message.payload
  dead[#dead + 1] = order.id
  print(("[dead letter] order %d (%s x %s) at %s: %s"):format(order.id, tostring(order.qty),
    tostring(order.item), r.destination, r.error))
  settle()
end)

-- The producer: no pauses of its own. Each send returns once orders/new has
-- room; a full queue makes it wait (on_full = "block"), not fail.
print(("[producer] sending %d orders to orders/new (max_queue %d, on_full = %q)"):format(n,
  config.destinations["orders/new"].max_queue, config.destinations["orders/new"].on_full))
local started, waits = mb.now(), 0
for id = 1, n do
  local order = {id = id, item = ITEMS[(id - 1) % #ITEMS + 1], qty = (id - 1) % 3 + 1}
  if id == 7 then order.qty = "three" end         -- malformed: validate turns it down
  if id == 13 and raise then order.item = "zip line" end -- not on price's list
  local t = mb.now()
  assert(mb.send("orders/new", order))
  if mb.now() - t > 0.001 then waits = waits + 1 end
end
print(("[producer] all %d orders accepted in %.2f s; %d sends waited for room"):format(n,
  mb.now() - started, waits))
sent_all = true
settle()
