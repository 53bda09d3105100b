-- A ledger node (examples/cluster/durable.sh): the durable destination and
-- its "ledger" group; started after the payments were stored, it gets them
-- all, in order.
return {
  workers = 1,
  destinations = {
    ["shop/payments"] = {type = "serial", cluster = {durable = true, max_deliver = 3, ack_wait = 5}},
  },
  listeners = {["ledger.lua"] = {"shop/payments", group = "ledger"}},
  services = {{script = "ready.lua"}},
}
