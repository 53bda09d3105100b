-- Stage 1, at orders/new: checks the shape of an order. A good order goes on
-- to orders/valid; a malformed one goes to orders/rejected with the reason.
-- Turning an order down is this stage's job, not a failure, so it answers
-- with a message instead of raising: nothing is lost, and the run still
-- counts as a success. (A raise would be a failed delivery: see price.lua.)
-- A listener script: config.lua registers the handler it returns.
--   {id =, item =, qty =} -> orders/valid, or orders/rejected {order =, error =}

local function problem(order)
  if type(order.item) ~= "string" or order.item == "" then
    return ("item must be a name, not %s"):format(mb.json.encode(order.item))
  end
  if math.type(order.qty) ~= "integer" or order.qty < 1 or order.qty > 99 then
    return ("qty must be a whole number from 1 to 99, not %s"):format(mb.json.encode(order.qty))
  end
end

return function(msg)
  local order = msg.payload
  local why = problem(order)
  if why then
    print(("[validate] order %d rejected: %s"):format(order.id, why))
    assert(mb.send("orders/rejected", {order = order, error = why}))
  else
    -- waits while orders/valid is full: this stage then holds its own
    -- queue, and the back-pressure reaches the producer
    assert(mb.send("orders/valid", order))
  end
end
