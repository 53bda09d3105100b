-- bench/cluster/pub.lua — the sender node of the cluster pub/sub benchmark
-- (bench/cluster.lua): N payloads of SIZE bytes (a string: its encoding is
-- SIZE + 5 bytes) to the cluster destination bench/data, in chunks of 1000
-- per loop turn (what a turn publishes leaves in one write), at most WINDOW
-- ahead of what the listener node acknowledged (bench/ack; else 0.2 ms
-- pauses), as build/nats_raw --mode pubsub does. Prints the time of the
-- first send.
--   mbrun -w 1 --nats URL --node NAME bench/cluster/pub.lua N WINDOW SIZE
local N, WINDOW, SIZE = tonumber((...)), tonumber((select(2, ...))), tonumber((select(3, ...)))
assert(N and WINDOW and SIZE, "usage: pub.lua N WINDOW SIZE")
assert(mb.destination("bench/data", {cluster = true}))
assert(mb.destination("bench/ack", {cluster = true}))
local acked = 0
mb.listen("bench/ack", function(msg)
  if msg.payload > acked then acked = msg.payload end
end)
mb.sleep(0.05) -- the bench/ack subscription is in place before the first ack
local payload = string.rep("x", SIZE)
local send = mb.send
local sent, t_first = 0, mb.now()
while sent < N do
  if sent - acked >= WINDOW then
    mb.sleep(0.0002)
  else
    for _ = 1, math.min(1000, N - sent) do
      assert(send("bench/data", payload))
    end
    sent = sent + math.min(1000, N - sent)
    mb.sleep(0) -- a turn of the loop: the chunk is written, acks are read
  end
end
local t_sent = mb.now()
-- the listener's last acknowledgement (it comes when all arrived): waited
-- for, so that it finds this node still listening
local deadline = mb.now() + 60
while acked < N and mb.now() < deadline do mb.sleep(0.001) end
print(("RESULT sent=%d t_first=%.6f t_sent=%.6f acked=%d"):format(sent, t_first, t_sent, acked))
if acked < N then error(("the listener acknowledged %d of %d"):format(acked, N)) end
