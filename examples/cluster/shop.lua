-- The shop: a node of its own that prices and places six orders, then asks
-- every node how it is. Run by run.sh with --nats and --node shop.
for _, d in ipairs{"shop/orders", "shop/prices", "shop/health"} do
  assert(mb.destination(d, {cluster = true}))
end

local items = {"swing", "slide", "rope", "swing", "rope", "slide"}
for n, item in ipairs(items) do
  local quote, err = mb.request("shop/prices", {item = item, qty = n}, {timeout = 5})
  assert(quote, err)
  print(("order %d: %s x%d costs %.2f (priced on %s)"):format(n, item, n, quote.price, quote.node))
  assert(mb.send("shop/orders", {n = n, item = item, qty = n}, {confirm = true}))
end

print(mb.request("shop/prices", {item = "trampoline", qty = 1}, {timeout = 5}))

mb.sleep(0.2) -- the audits count the last order
local nodes = {}
for _, a in ipairs(mb.request_all("shop/health", "how are you?", {timeout = 5})) do
  if a.payload then nodes[#nodes + 1] = ("%s saw %d"):format(a.payload.node, a.payload.orders_seen) end
end
table.sort(nodes)
print("health: " .. table.concat(nodes, ", "))
local st = mb.stats("shop/orders", {cluster = true})
print(("shop/orders over %d nodes: %d sent, %d delivered"):format(st.nodes, st.sent, st.delivered))
