-- Books a payment: one member of the "ledger" group, on any node, at a
-- time (a durable serial destination). The bank fails payment 3 the first
-- time: mb hands it back, and the next delivery has msg.redelivered.
local node = os.getenv("NODE") or "?"
return function(msg)
  local p = msg.payload
  if p.n == 3 and not msg.redelivered then error("the bank did not answer") end
  print(("%s booked payment %d (%d)%s"):format(node, p.n, p.amount,
    msg.redelivered and ", delivered again" or ""))
end
