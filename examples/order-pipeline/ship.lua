-- Stage 3, at orders/priced: ships an order (the slowest stage) and tells
-- orders/shipped.
-- A listener script: config.lua registers the handler it returns.
--   {id =, item =, qty =, total =} -> orders/shipped (the same order)
return function(msg)
  local order = msg.payload
  mb.sleep(0.006) -- packing
  print(("[ship] order %d: %d x %s, $%d"):format(order.id, order.qty, order.item, order.total))
  assert(mb.send("orders/shipped", order))
end
