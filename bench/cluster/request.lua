-- bench/cluster/request.lua — the requester node of the cluster
-- request/reply benchmarks (bench/cluster.lua): WARM requests first, then
-- N requests of a SIZE-byte payload to bench/svc (each reply checked),
-- K in flight (K coroutines, mb.spawn; K = 1: one after the other, each
-- round trip timed). Prints the seconds of the N, and with K = 1 the mean,
-- median and 99th percentile round trip in ms.
--   mbrun -w 1 --nats URL --node NAME bench/cluster/request.lua N K SIZE WARM
local N, K, SIZE, WARM = tonumber((...)), tonumber((select(2, ...))), tonumber((select(3, ...))),
  tonumber((select(4, ...)))
assert(N and K and SIZE and WARM, "usage: request.lua N K SIZE WARM")
assert(mb.destination("bench/svc", {cluster = true}))
local payload = string.rep("x", SIZE)
local request, now = mb.request, mb.now

local function ask()
  local r, err = request("bench/svc", payload)
  if r ~= payload then error("bad reply: " .. tostring(r) .. " " .. tostring(err)) end
end

for _ = 1, WARM do ask() end
if K == 1 then
  local rtts = {}
  local t0 = now()
  for i = 1, N do
    local t = now()
    ask()
    rtts[i] = now() - t
  end
  local secs = now() - t0
  table.sort(rtts)
  print(("RESULT n=%d secs=%.6f mean_ms=%.4f p50_ms=%.4f p99_ms=%.4f"):format(N, secs,
    secs / N * 1e3, rtts[N // 2 + 1] * 1e3, rtts[math.floor(N * 0.99) + 1] * 1e3))
else
  local left, done, t0 = N, 0, now()
  for _ = 1, K do
    mb.spawn(function()
      while left > 0 do
        left = left - 1
        ask()
        done = done + 1
        if done == N then
          print(("RESULT n=%d secs=%.6f"):format(N, now() - t0))
        end
      end
    end)
  end
end
