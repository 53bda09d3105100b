-- mb.reply across workers (issue 17's request path): answerers on their own
-- workers reply at once, from a spawned coroutine, or from a timer; plain
-- requests and request_all from requesters on other workers; a requester
-- stopped while its requests wait. Every request_all answer is filed under
-- the listener that gave it; nothing is lost or answered twice.
--   mbrun -w N replies.lua [N]
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
local N = tonumber((...)) or 200
mb.destination("r/plain")
mb.destination("r/all")
mb.destination("r/hold")
mb.destination("r/done")
mb.destination("r/ask")
local answerers = {mb.load(dir .. "/replies_answerer.lua", {args = {"A"}}),
                   mb.load(dir .. "/replies_answerer.lua", {args = {"B"}})}
local done, fails = 0, {}
mb.listen("r/done", function(m)
  done = done + 1
  if m.payload ~= "ok" then fails[#fails + 1] = m.payload end
end)
local requesters = {}
for i = 1, 3 do requesters[i] = mb.load(dir .. "/replies_requester.lua", {args = {i, N}}) end
-- one requester whose requests wait at r/hold when it is stopped
local stopped = mb.load(dir .. "/replies_requester.lua", {args = {"hold", 8}})
local function held() return mb.request("r/ask", "held?", {timeout = 10}) end
while held()[1] < 8 do mb.sleep(0.001) end
stopped:stop()
while done < #requesters do mb.sleep(0.005) end
assert(#fails == 0, table.concat(fails, "\n"))
-- the held ones are answered now, to nobody: each mb.reply says closed
local h = held()
while h[2] + h[3] < 8 do mb.sleep(0.005) h = held() end
assert(h[2] == 8, ("replies to the stopped requester: %d closed, %d taken"):format(h[2], h[3]))
for _, d in ipairs{"r/plain", "r/all", "r/hold"} do
  local s = mb.stats(d)
  while s.pending > 0 or s.in_flight > 0 do mb.sleep(0.005) s = mb.stats(d) end
  assert(s.delivered + s.failed + s.dropped == s.deliveries, "invariant at " .. d)
  assert(s.failed == 0 and s.dropped == 0, "losses at " .. d)
end
for _, s in ipairs(requesters) do s:stop() end
for _, s in ipairs(answerers) do s:stop() end
print(("ok replies: %d requests + %d request_all on %d workers"):format(3 * N, 3 * N,
  select(2, mb.worker())))
for _, d in ipairs(mb.destinations()) do mb.remove_destination(d) end
