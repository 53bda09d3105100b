-- Hot reload under load (issue 15): a generator sends N messages through a
-- group of two instances while their script is rewritten and reloaded R
-- times; each handler forwards what it got with its script's version to a
-- collector here, and answers its version to the requests among them
-- (every 50th message). Every message must arrive exactly once, the accounting
-- invariant hold with nothing failed or dropped, and the version change.
--   mbrun -w W reload_load.lua N R
local N, R = tonumber((select(1, ...))) or 100000, tonumber((select(2, ...))) or 20
local path = os.tmpname()
local function write(version)
  local f = assert(io.open(path .. ".tmp", "w"))
  f:write(([[
    local version = %d
    mb.listen("rl/in", function(msg)
      assert(mb.send("rl/seen", {n = msg.payload, v = version}))
      return version -- what a request gets back
    end)
  ]]):format(version))
  f:close()
  assert(os.rename(path .. ".tmp", path)) -- as an editor saves
end
mb.destination("rl/in", {max_queue = 2048, on_full = "block"})
mb.destination("rl/seen", {max_queue = 2048, on_full = "block"})
local seen, got, versions, last_v = {}, 0, {}, {}
mb.listen("rl/seen", function(msg)
  local n, v = msg.payload.n, msg.payload.v
  seen[n] = (seen[n] or 0) + 1
  got = got + 1
  versions[v] = (versions[v] or 0) + 1
  last_v[n] = v
end)
write(0)
local h = assert(mb.load(path, {instances = 2}))
local t0, every = mb.now(), N // (R + 1)
local reloads, reloaded_at = 0, {}
-- every 50th message is a request, from a coroutine of its own
local asked, answered, bad = 0, 0, {}
local function ask(n)
  asked = asked + 1
  mb.spawn(function()
    local v, err = mb.request("rl/in", n, {timeout = 30})
    if math.type(v) == "integer" then
      answered = answered + 1
    else
      bad[#bad + 1] = n .. ": " .. tostring(err)
    end
  end)
end
for n = 1, N do
  if n % 50 == 0 then ask(n) else assert(mb.send("rl/in", n)) end
  if n % every == 0 and reloads < R then
    -- the version running has answered (with few workers the queue could
    -- hold everything sent since the last reload: then the next version
    -- would answer it all); the messages sent since stay queued meanwhile
    local t0 = mb.now()
    while not versions[reloads] do
      assert(mb.now() - t0 < 10, "version " .. reloads .. " answered nothing in 10 s")
      mb.sleep(0.001)
    end
    reloads = reloads + 1
    write(reloads)
    assert(h:reload())
    reloaded_at[reloads] = n
  end
end
while got < N or answered + #bad < asked do mb.sleep(0.01) end
mb.sleep(0.05) -- a duplicate would come now
local missing, twice = 0, 0
for n = 1, N do
  if not seen[n] then missing = missing + 1 elseif seen[n] > 1 then twice = twice + 1 end
end
assert(#bad == 0, #bad .. " requests not answered, the first: " .. tostring(bad[1]))
assert(missing == 0 and twice == 0 and got == N,
  ("%d missing, %d twice, %d received of %d"):format(missing, twice, got, N))
for _, d in ipairs{"rl/in", "rl/seen"} do
  local s = mb.stats(d)
  assert(s.delivered + s.failed + s.dropped == s.deliveries, "invariant at " .. d)
  assert(s.failed == 0 and s.dropped == 0 and s.rejected == 0,
    ("%s: %d failed, %d dropped, %d rejected"):format(d, s.failed, s.dropped, s.rejected))
  assert(s.deliveries == N, ("%s: %d deliveries, want %d"):format(d, s.deliveries, N))
end
-- every version answered, and what was sent after the last reload
-- returned was answered by the last version only
local nv = 0
for v = 0, R do if versions[v] then nv = nv + 1 end end
assert(nv == R + 1, ("%d versions answered, want %d"):format(nv, R + 1))
for n = reloaded_at[R] + 1, N do
  assert(last_v[n] == R, ("message %d answered by version %s after the last reload"):format(
    n, tostring(last_v[n])))
end
local mine = {}
for _, s in ipairs(mb.services()) do if s.path == path then mine[#mine + 1] = s end end
assert(#mine == 1 and mine[1].instances == 2, "one service of 2 instances after the reloads")
assert(mb.stats("rl/in").listeners == 2, "2 listeners after the reloads")
h:stop()
os.remove(path)
print(("ok reload: %d messages, %d reloads, %d versions on %d workers in %.2f s"):format(
  N, R, nv, select(2, mb.worker()), mb.now() - t0))
