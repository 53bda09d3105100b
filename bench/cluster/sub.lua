-- bench/cluster/sub.lua — the listener node of the cluster pub/sub benchmark
-- (bench/cluster.lua): counts N messages at the cluster destination
-- bench/data, checks each payload, tells the sender how far it got every ACK
-- messages (bench/ack: the sender's window), and prints the time of the last
-- receipt (mb.now(), CLOCK_MONOTONIC: the same clock as the sender node's).
--   mbrun -w 1 --nats URL --node NAME bench/cluster/sub.lua N ACK SIZE
local N, ACK, SIZE = tonumber((...)), tonumber((select(2, ...))), tonumber((select(3, ...)))
assert(N and ACK and SIZE, "usage: sub.lua N ACK SIZE")
assert(mb.destination("bench/data", {cluster = true}))
assert(mb.destination("bench/ack", {cluster = true}))
local got, bad, t_first, t_last = 0, 0, nil, nil
mb.listen("bench/data", function(msg)
  got = got + 1
  if got == 1 then t_first = mb.now() end
  if #msg.payload ~= SIZE then bad = bad + 1 end
  if got % ACK == 0 or got == N then assert(mb.send("bench/ack", got)) end
  if got == N then t_last = mb.now() end
end)
-- the subscription leaves on this turn of the loop; the driver starts the
-- sender once it has read "ready"
mb.after(0.05, function() print("ready") end)
local deadline = mb.now() + 60
while not t_last and mb.now() < deadline do mb.sleep(0.005) end
print(("RESULT got=%d bad=%d t_first=%.6f t_last=%.6f"):format(got, bad, t_first or -1, t_last or -1))
if not t_last or bad > 0 then error(("got %d of %d messages, %d with a wrong payload"):format(got, N, bad)) end
