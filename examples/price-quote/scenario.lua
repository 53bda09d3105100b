-- Price quote: a buyer asks every supplier for a price at once with
-- mb.request_all (scatter-gather), waits at most TIMEOUT seconds, prints
-- each answer with its status (ok / failed / timeout) and takes the best
-- price among the ok ones.
--
--   ./build/mbrun -c examples/price-quote/config.lua examples/price-quote/scenario.lua [--raise]
--
-- --raise adds a fifth quoter whose handler raises: request_all reports it
-- as {error = "failed: ..."}, and mbrun then exits 1 (a delivery failed).
local DEST = "quotes/jungle-gym"
local TIMEOUT = 0.2
local ask = {item = "jungle gym kit", qty = 3}

local function say(fmt, ...) print(("[buyer] " .. fmt):format(...)) end

local raise = false
for _, a in ipairs {...} do
  if a == "--raise" then raise = true else error("usage: scenario.lua [--raise]", 0) end
end
if raise then
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  assert(mb.load(here .. "/quoter.lua", {args = {{name = "crashy", raise = "price list is corrupt"}}}))
end

local quoters = mb.stats(DEST).listeners -- one registration per quoter
say("asking %d quoters at %s for %d x '%s', answers within %g s", quoters, DEST, ask.qty, ask.item,
  TIMEOUT)
local started = mb.now()
local answers = mb.request_all(DEST, ask, {timeout = TIMEOUT})
local waited = mb.now() - started

-- One entry per quoter: {payload =, msg =} when it replied in time (its
-- reply may still say it cannot quote), {error = "timeout: ..."} when it had
-- not answered by the deadline, {error = "failed: ..."} when its handler
-- raised. A timeout entry cannot say who it was: quoters put their name in
-- what they send.
local ok, failed, late = {}, {}, {}
for _, a in ipairs(answers) do
  if a.error and a.error:match("^timeout: ") then
    late[#late + 1] = a.error:gsub("^timeout: ", "")
  elseif a.error then -- "failed: <the error it raised>"
    failed[#failed + 1] = ("%-12s raised: %s"):format("?", (a.error:gsub("^failed: ", "")))
  elseif a.payload.error then -- it answered, to say it cannot quote
    failed[#failed + 1] = ("%-12s %s"):format(a.payload.quoter, a.payload.error)
  else
    ok[#ok + 1] = a.payload
  end
end
table.sort(ok, function(a, b) return a.price < b.price end)
table.sort(failed)

say("%d answers after %.2f s:", #answers, waited)
for _, q in ipairs(ok) do say("  ok       %-12s $%d", q.quoter, q.price) end
for _, f in ipairs(failed) do say("  failed   %s", f) end
for _, t in ipairs(late) do say("  timeout  %-12s %s", "?", t) end
if ok[1] then
  say("best price: %s at $%d (%d of %d quoters answered in time)", ok[1].quoter, ok[1].price,
    #ok, #answers)
else
  say("no price to take")
end

-- The late quoter still answers; its reply finds nobody waiting and is only
-- counted. Wait until it has run, then show the destination's statistics.
while mb.stats(DEST).in_flight > 0 do mb.sleep(0.05) end
local s = mb.stats(DEST)
say("%s: %d deliveries, %d delivered, %d failed, %d replies, %d timeout", DEST, s.deliveries,
  s.delivered, s.failed, s.replies, s.timeouts)
