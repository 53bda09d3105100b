-- Every node's own group: sees every order, and answers the health check.
local node = os.getenv("NODE") or "?"
local seen = 0
return {
  ["shop/orders"] = function() seen = seen + 1 end,
  ["shop/health"] = function() return {node = node, orders_seen = seen} end,
}
