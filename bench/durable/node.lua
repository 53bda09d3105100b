-- bench/durable/node.lua — one node sends N messages to a durable
-- destination from W coroutines (W sends in flight, each returning once
-- stored) while its own listener group takes them through the stream's
-- consumer, each acknowledged when the handler returns. Prints
-- "RESULT msgs=N secs=S rate=R" once every message was delivered (and
-- checked: each payload once), or fails. Args: N W.
local N, W = tonumber((...)) or 20000, tonumber(select(2, ...)) or 64
local name = "bench" .. os.time() .. math.random(1e6)
assert(mb.destination(name, {cluster = {durable = true, max_age = 60}}))
local seen, got, t0, failed = {}, 0, nil, nil
local done = false
mb.listen(name, function(msg)
  local n = msg.payload.n
  if seen[n] then return end -- a redelivery: not counted twice
  seen[n] = true
  got = got + 1
  if got == N then
    local secs = mb.now() - t0
    print(("RESULT msgs=%d secs=%.3f rate=%.0f"):format(N, secs, N / secs))
    done = true
  end
end, {group = "bench"})
mb.after(0.3, function() -- the consumer is made on the server meanwhile
  t0 = mb.now()
  local next_n = 0
  for _ = 1, W do
    mb.spawn(function()
      while next_n < N do
        next_n = next_n + 1
        local ok, err = mb.send(name, {n = next_n, pad = "0123456789abcdef0123456789abcdef"})
        if not ok then failed = err end
      end
    end)
  end
end)
local watch
watch = mb.every(0.1, function()
  if failed then error("a send failed: " .. failed) end
  if done then watch:stop() end
end)
