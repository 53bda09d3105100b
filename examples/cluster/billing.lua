-- Bills an order: one member of the "billing" group, on any node, gets it.
local node = os.getenv("NODE") or "?"
return function(msg)
  print(("%s billed order %d (%s x%d)"):format(node, msg.payload.n, msg.payload.item, msg.payload.qty))
end
