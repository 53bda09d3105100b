-- bench/cluster/respond.lua — the responder node of the cluster
-- request/reply benchmarks (bench/cluster.lua): answers each request at the
-- cluster destination bench/svc with its payload, and ends after N.
--   mbrun -w 1 --nats URL --node NAME bench/cluster/respond.lua N
local N = tonumber((...))
assert(N, "usage: respond.lua N")
assert(mb.destination("bench/svc", {cluster = true}))
local got = 0
mb.listen("bench/svc", function(msg)
  got = got + 1
  return msg.payload
end)
mb.after(0.05, function() print("ready") end)
local deadline = mb.now() + 60
while got < N and mb.now() < deadline do mb.sleep(0.01) end
print(("RESULT answered=%d"):format(got))
if got < N then error(("answered %d of %d requests"):format(got, N)) end
