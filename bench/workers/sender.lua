-- bench/workers/sender.lua — the sender of benchmark 4 (bench/worker_bench.lua).
-- Says where it runs (wb/hello); on {n} at wb/go sends n order messages to
-- wb/orders (on_full = "block": it waits when the queue is full) and
-- reports when it started to wb/report.
local send, now = mb.send, mb.now
mb.send("wb/hello", {role = "sender", worker = (mb.worker())})
mb.listen("wb/go", function(msg)
  local n = msg.payload.n
  local t0 = now()
  for i = 1, n do
    local id, err = send("wb/orders", {id = i, kind = "order", amount = 12.5})
    if not id then error("send failed: " .. tostring(err)) end
  end
  assert(send("wb/report", {role = "sender", t0 = t0, t1 = now()}))
end)
