-- bench/workers/requester.lua — the requester of benchmark 5: on {n, k} at
-- wb/go, k coroutines share n requests to wb/rr (coroutine c asks ids c,
-- c + k, c + 2k ...), each waiting for its reply before the next; when the
-- last one is done, {count, sum of reply ids, t0, t1} goes to wb/report.
local request, now, spawn = mb.request, mb.now, mb.spawn
mb.send("wb/hello", {role = "requester", worker = (mb.worker())})
mb.listen("wb/go", function(msg)
  local n, k = msg.payload.n, msg.payload.k
  local count, sum, running = 0, 0, k
  local t0 = now()
  local function client(c)
    for i = c, n, k do
      local r, err = request("wb/rr", {id = i, kind = "order", amount = 12.5})
      if not r then error("request failed: " .. tostring(err)) end
      sum = sum + r.id
      count = count + 1
    end
    running = running - 1
    if running == 0 then
      assert(mb.send("wb/report", {role = "requester", t0 = t0, t1 = now(), count = count,
                                   sum = sum}))
    end
  end
  for c = 2, k do spawn(client, c) end
  client(1)
end)
