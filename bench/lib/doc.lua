-- bench/lib/doc.lua — the ~1 KB JSON document of scenario 8 (an order with
-- a customer, eight items, nested tables, strings, integers, floats and
-- booleans). Built fresh by each call; deterministic.
return function()
  local items = {}
  for i = 1, 8 do
    items[i] = {
      sku = string.format("SKU-%05d", 1000 + i * 37),
      name = "Widget model " .. string.char(64 + i),
      qty = i % 4 + 1,
      price = i * 3.25 + 0.5,
      tags = {"blue", i % 2 == 0 and "sale" or "new"},
      gift = i % 3 == 0,
    }
  end
  return {
    id = 918273,
    kind = "order",
    created = "2024-05-17T10:42:13Z",
    customer = {
      name = "Ada Lovelace",
      email = "ada@example.org",
      vip = true,
      address = {street = "12 Analytical Row", city = "London", zip = "NW1 2AB", country = "GB"},
    },
    items = items,
    total = 251.75,
    currency = "EUR",
    notes = "Leave at the door; ring twice.",
  }
end
