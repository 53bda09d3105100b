-- bench/lib/work.lua — the CPU-bound work of benchmark 6: `iters` rounds of
-- a 32-bit xorshift seeded from the message id (seed id % 7 + 1, so there
-- are only 7 distinct results and the checker can know them all). Plain
-- Lua integer arithmetic: no allocation, no calls.
return function(iters, id)
  local x = id % 7 + 1
  for _ = 1, iters do
    x = x ~ ((x << 13) & 0xffffffff)
    x = x ~ (x >> 17)
    x = x ~ ((x << 5) & 0xffffffff)
  end
  return x
end
