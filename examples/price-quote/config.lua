-- Price quote: four suppliers quote on one destination; scenario.lua asks
-- them all at once (scatter-gather) and takes the best price among the
-- answers that came in time.
--
--   ./build/mbrun -c examples/price-quote/config.lua examples/price-quote/scenario.lua
return {
  destinations = {
    -- parallel: every quoter works on the request at the same time, so the
    -- buyer waits for the slowest answer (or the timeout), not for the sum
    ["quotes/jungle-gym"] = {type = "parallel"},
  },
  -- One entry per supplier: four listener groups, and request_all gets one
  -- answer (or error) from each. (`instances = 2` on an entry would add a
  -- second state that shares that supplier's requests, not a fifth answer.)
  services = {
    {script = "quoter.lua", args = {{name = "acme", unit_price = 1180, delay = 0.02}}},
    {script = "quoter.lua", args = {{name = "gym-depot", unit_price = 1090, delay = 0.05}}},
    -- the cheapest, but it answers long after the buyer's deadline
    {script = "quoter.lua", args = {{name = "slowpoke", unit_price = 990, delay = 0.4}}},
    -- answers at once, with an error reply: it has nothing to sell
    {script = "quoter.lua", args = {{name = "bargain-bin", decline = "out of stock"}}},
  },
}
