-- Stage 2, at orders/valid: prices an order from the price list (a slow
-- lookup) and passes it on to orders/priced with its total.
-- A listener script: config.lua registers the handler it returns.
--   {id =, item =, qty =} -> orders/priced {id =, item =, qty =, total =}
-- An item that is not on the price list makes the handler raise: that is a
-- failed delivery, reported on stderr and at mb/dead-letters, and mbrun
-- exits 1 (scenario.lua --raise sends such an order).
local PRICES = {swing = 45, slide = 300, ["monkey bars"] = 250, sandpit = 80}

return function(msg)
  local order = msg.payload
  local unit = PRICES[order.item] or error(("no price for '%s'"):format(order.item))
  mb.sleep(0.004) -- the pricing service takes its time; the loop keeps running
  order.total = unit * order.qty
  assert(mb.send("orders/priced", order)) -- waits while orders/priced is full
end
