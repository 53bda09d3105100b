-- Prices an item: a request to the "pricing" group, answered by one node.
local node = os.getenv("NODE") or "?"
local PRICES = {swing = 12.5, slide = 40.0, rope = 3.25}
return function(msg)
  local price = PRICES[msg.payload.item]
  if not price then error("no price for " .. tostring(msg.payload.item)) end
  return {price = price * msg.payload.qty, node = node}
end
