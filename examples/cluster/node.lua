-- One billing node of the cluster example (examples/cluster/README.md):
-- the shop's destinations, shared over NATS; billing and pricing are groups
-- across every node (each order billed once, on any node); audit is each
-- node's own (every node sees every order).
return {
  workers = 1,
  destinations = {
    ["shop/orders"] = {cluster = true},
    ["shop/prices"] = {cluster = true},
    ["shop/health"] = {cluster = true},
  },
  listeners = {
    ["billing.lua"] = {"shop/orders", group = "billing"},
    ["pricer.lua"] = {"shop/prices", group = "pricing"},
    ["audit.lua"] = {"shop/orders", "shop/health"},
  },
  services = {{script = "ready.lua"}},
}
