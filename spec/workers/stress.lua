-- 4 services x 2 instances exchanging N messages, with requests inside
-- listeners; then the stats invariant and exact per-service sums.
--   mbrun -w 4 stress.lua [N]
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
local N = tonumber((...)) or 1000000
local S = 4
mb.destination("s/hello")
local reports = {}
mb.listen("s/hello", function(m) reports[#reports + 1] = m.payload end)
for i = 1, S do mb.destination("s/" .. i, {max_queue = 4096, on_full = "block"}) end
for i = 1, S do mb.load(dir .. "/stress_service.lua", {instances = 2, args = {i, S}}) end
local t0 = mb.now()
-- senders in several coroutines, each blocking when a queue is full
local per = N // 4
local done = 0
for c = 0, 3 do
  mb.spawn(function()
    for k = c * per + 1, (c + 1) * per do assert(mb.send("s/" .. (k % S + 1), k)) end
    done = done + 1
  end)
end
while done < 4 do mb.sleep(0.01) end
local function settled()
  for i = 1, S do
    local s = mb.stats("s/" .. i)
    if s.pending > 0 or s.in_flight > 0 then return false end
  end
  return true
end
while not settled() do mb.sleep(0.01) end
local took = mb.now() - t0
while #reports < 2 * S do mb.sleep(0.01) end
-- exact sums per service (one group of two instances each)
local count, sum = {}, {}
for _, dest in ipairs(reports) do
  local i = tonumber(dest:match("^s/report/(%d+)/"))
  local r = assert(mb.request(dest, "report"))
  count[i] = (count[i] or 0) + r.count
  sum[i] = (sum[i] or 0) + r.sum
end
local total = 0
for i = 1, S do
  local want_count, want_sum = 0, 0
  for k = 1, per * 4 do
    if k % S + 1 == i then
      want_count = want_count + 1
      want_sum = want_sum + k
    end
  end
  assert(count[i] == want_count, ("service %d: count %d, want %d"):format(i, count[i], want_count))
  assert(sum[i] == want_sum, ("service %d: sum %d, want %d"):format(i, sum[i], want_sum))
  local s = mb.stats("s/" .. i)
  assert(s.delivered + s.failed + s.dropped == s.deliveries, "invariant at s/" .. i)
  assert(s.failed == 0 and s.dropped == 0 and s.rejected == 0, "losses at s/" .. i)
  total = total + s.deliveries
end
local asks = per * 4 // 8
assert(total == per * 4 + asks, ("deliveries %d, want %d"):format(total, per * 4 + asks))
print(("ok stress: %d messages + %d requests on %d workers in %.2f s"):format(
  per * 4, asks, select(2, mb.worker()), took))
