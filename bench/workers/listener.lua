-- bench/workers/listener.lua — the listener of benchmark 4: counts the
-- orders at wb/orders and sums their ids; once it has the number announced
-- at wb/reset it reports {count, sum, t1} to wb/report.
local now = mb.now
local count, sum, want = 0, 0, -1
mb.send("wb/hello", {role = "listener", worker = (mb.worker())})
mb.listen("wb/reset", function(msg)
  count, sum, want = 0, 0, msg.payload.n
  return true
end)
mb.listen("wb/orders", function(msg)
  local p = msg.payload
  sum = sum + p.id
  count = count + 1
  if count == want then
    assert(mb.send("wb/report", {role = "listener", t1 = now(), count = count, sum = sum}))
  end
end)
