-- The payer (examples/cluster/durable.sh): five payments to a durable
-- serial destination while no node listens. Each mb.send returns once the
-- JetStream stream has stored the payment (or nil and why).
assert(mb.destination("shop/payments", {type = "serial",
  cluster = {durable = true, max_deliver = 3, ack_wait = 5}}))
for n = 1, 5 do
  local id, err = mb.send("shop/payments", {n = n, amount = 10 * n})
  print(id and ("payment %d stored"):format(n) or ("payment %d not stored: %s"):format(n, err))
end
