-- Order pipeline: orders go through three serial stages, each a listener
-- script, with small queues that block the sender when full
-- (back-pressure), so a fast producer runs at the pace of the slowest stage
-- instead of piling messages up.
--
--   ./build/mbrun -c examples/order-pipeline/config.lua examples/order-pipeline/scenario.lua
--
--   producer -> orders/new -> validate -> orders/valid -> price -> orders/priced -> ship
--                                |                                                  |
--                                v                                                  v
--                         orders/rejected                                    orders/shipped

-- A stage's input: serial (one order at a time, in the order sent), at most
-- two orders waiting, and a send to a full queue waits for room.
local function stage() return {type = "serial", max_queue = 2, on_full = "block"} end

return {
  destinations = {
    ["orders/new"] = stage(),
    ["orders/valid"] = stage(),
    ["orders/priced"] = stage(),
    -- the ends of the pipeline, read by scenario.lua
    ["orders/shipped"] = {type = "serial"},
    ["orders/rejected"] = {type = "serial"}, -- orders validate turned down, with the reason
    ["mb/dead-letters"] = {type = "serial"}, -- deliveries that failed: a stage raised
  },
  -- each stage script returns its handler, which passes the order on
  listeners = {
    ["validate.lua"] = {"orders/new"},
    ["price.lua"] = {"orders/valid"},
    ["ship.lua"] = {"orders/priced"},
  },
}
