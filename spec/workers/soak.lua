-- A seeded soak: while senders send (send-and-forget, on_full = "block",
-- requests with timeouts, request_all, synchronous sends) to serial,
-- parallel and synchronous destinations with several listeners and
-- instances, the live system is changed: services reloaded, stopped and
-- loaded again, listeners closed and added again, a destination removed
-- and declared again, queues filled to max_queue. Then the accounting:
--   * every send returned an id or an error with a known code;
--   * every request and request_all returned (a reply, or an error);
--   * per destination: sent == accepted sends, rejected == refused sends,
--     delivered + failed + dropped == deliveries, delivered == the acks
--     the handlers sent, failed + dropped == its dead letters, nothing
--     pending or in flight;
--   * no message handled twice by one group, serial order per group;
--   * the totals printed for the spec to compare with mbrun's summary.
-- The operations are chosen by the seed (printed); thread timing is not.
--   mbrun -w W soak.lua [SEED] [SECONDS]
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
local SEED = tonumber((select(1, ...))) or os.time()
local SECONDS = tonumber((select(2, ...))) or 3
math.randomseed(SEED)
print(("soak: seed %d, %g s, %d workers"):format(SEED, SECONDS, select(2, mb.worker())))

local CODES = {no_destination = true, no_listeners = true, queue_full = true, timeout = true,
               failed = true, closed = true, exists = true}
local problems = {}
local function problem(s)
  if #problems < 20 then problems[#problems + 1] = s end
  io.stderr:write("soak problem: ", s, "\n")
end
local codes, samples = {}, {}
local function code_of(err, d)
  local code = type(err) == "string" and err:match("^([%a_]+):")
  if not (code and CODES[code]) then problem("unclear error: " .. tostring(err)) end
  local k = (d or "?") .. " " .. tostring(code)
  codes[k] = (codes[k] or 0) + 1
  samples[k] = samples[k] or err
  return code
end

local OPTS = {
  ["k/par"] = {type = "parallel", max_queue = 8},
  ["k/blk"] = {type = "parallel", max_queue = 4, on_full = "block", concurrency = 3},
  ["k/ser"] = {type = "serial", max_queue = 16, on_full = "block"},
  ["k/syn"] = {type = "synchronous"},
  ["k/req"] = {type = "parallel"},
  ["k/tmp"] = {type = "parallel", max_queue = 32},
}
local DESTS = {"k/par", "k/blk", "k/ser", "k/syn", "k/req", "k/tmp"}
for _, d in ipairs(DESTS) do assert(mb.destination(d, OPTS[d])) end
assert(mb.destination("k/ack", {type = "serial"}))
assert(mb.destination("mb/dead-letters"))

-- what the scenario saw: per destination (the current incarnation of k/tmp)
local accepted, refused = {}, {}
local function reset(d) accepted[d], refused[d] = 0, 0 end
for _, d in ipairs(DESTS) do reset(d) end
local acks, dead, dead_kind = {}, {}, {failed = 0, dropped = 0}
local seen, last_ser = {}, {}

mb.listen("k/ack", function(msg)
  local a = msg.payload
  acks[a.d] = (acks[a.d] or 0) + 1
  local key = a.d .. "|" .. a.s .. "|" .. a.n .. "|" .. a.by
  if seen[key] then problem("handled twice: " .. key) end
  seen[key] = true
  if a.d == "k/ser" then
    local k = a.s .. "|" .. a.by
    if last_ser[k] and a.n <= last_ser[k] then
      problem(("serial order: %s got #%d after #%d"):format(a.by, a.n, last_ser[k]))
    end
    last_ser[k] = a.n
  end
end)
mb.listen("mb/dead-letters", function(msg)
  local r = msg.payload
  dead[r.destination] = (dead[r.destination] or 0) + 1
  local kind = type(r.error) == "string" and r.error:match("^(%a+):")
  if kind == "failed" or kind == "dropped" then
    dead_kind[kind] = dead_kind[kind] + 1
  else
    -- the docs say failed or dropped; count what it is called
    dead_kind[tostring(kind)] = (dead_kind[tostring(kind)] or 0) + 1
  end
end)

-- the scenario's own listener at k/tmp (k/tmp loses its listeners when removed)
local function tmp_handler(msg)
  local p = msg.payload
  if p.f then error("soak: failing on purpose k/tmp #" .. p.n, 0) end
  assert(mb.send("k/ack", {d = "k/tmp", n = p.n, s = p.s, by = "scenario"}))
end
local tmp_listener = assert(mb.listen("k/tmp", tmp_handler))

-- services: a and b with 2 instances, c with 1
local svc, loaded = {}, 0
local function load(tag)
  loaded = loaded + 1
  local h, err = mb.load(dir .. "/soak_service.lua",
    {instances = tag == "c" and 1 or 2, name = "soak-" .. tag .. loaded,
     args = {tag .. loaded, math.random(1, 1 << 30)}})
  if not h then problem("load " .. tag .. ": " .. tostring(err)) end
  svc[tag] = h
end
load("a"); load("b"); load("c")

local running, stop_at = 0, mb.now() + SECONDS
local requests, answered = 0, 0
local function sent(d, id, err)
  if id then
    if type(id) ~= "string" then problem("send returned " .. tostring(id)) end
    accepted[d] = accepted[d] + 1
  else
    local code = code_of(err, d)
    if code ~= "no_destination" then refused[d] = refused[d] + 1 end
    if code == "no_listeners" then mb.sleep(0) end
  end
end

-- senders, one coroutine each, with their own random stream
local function sender(s, kind, seed)
  running = running + 1
  mb.spawn(function()
    local rng_state = seed
    local function rnd() -- a private LCG, so the senders' choices do not depend on timing
      rng_state = (rng_state * 6364136223846793005 + 1442695040888963407) & 0x7fffffffffffffff
      return (rng_state >> 11) / (1 << 52)
    end
    local n = 0
    while mb.now() < stop_at do
      n = n + 1
      local p = {s = s, n = n}
      local r = rnd()
      if r < 0.03 then p.f = true elseif r < 0.08 then p.w = rnd() * 0.005 end
      if kind == "par" then
        -- bursts into a small queue: queue_full expected
        for _ = 1, 1 + math.floor(rnd() * 12) do
          sent("k/par", mb.send("k/par", p)); n = n + 1; p = {s = s, n = n}
        end
        mb.sleep(rnd() * 0.002)
      elseif kind == "blk" then
        sent("k/blk", mb.send("k/blk", p))
      elseif kind == "ser" then
        sent("k/ser", mb.send("k/ser", p))
        if rnd() < 0.3 then mb.sleep(0) end
      elseif kind == "syn" then
        sent("k/syn", mb.send("k/syn", p))
      elseif kind == "tmp" then
        sent("k/tmp", mb.send("k/tmp", p))
        mb.sleep(rnd() * 0.001)
      elseif kind == "req" then
        requests = requests + 1
        local v, e = mb.request("k/req", p, {timeout = 0.02 + rnd() * 0.2})
        answered = answered + 1
        if v == nil then
          local code = code_of(e, "k/req")
          -- "closed: service stopped", "closed: no listener left at
          -- delivery", ...: accepted (counted in sent), then dropped; only
          -- "closed: destination 'X' is being removed" is a refusal
          if code == "no_listeners" or code == "queue_full"
            or (code == "closed" and e:find("is being removed", 1, true)) then
            refused["k/req"] = refused["k/req"] + 1
            if code == "no_listeners" then mb.sleep(0) end
          elseif code ~= "no_destination" then
            accepted["k/req"] = accepted["k/req"] + 1
          end
        else
          accepted["k/req"] = accepted["k/req"] + 1
          if type(v) ~= "table" or v.n ~= p.n then problem("wrong reply to #" .. n) end
        end
      elseif kind == "all" then
        requests = requests + 1
        local list, e = mb.request_all("k/req", p, {timeout = 0.05 + rnd() * 0.2})
        answered = answered + 1
        if not list then
          local code = code_of(e, "k/req")
          -- "closed: service stopped", "closed: no listener left at
          -- delivery", ...: accepted (counted in sent), then dropped; only
          -- "closed: destination 'X' is being removed" is a refusal
          if code == "no_listeners" or code == "queue_full"
            or (code == "closed" and e:find("is being removed", 1, true)) then
            refused["k/req"] = refused["k/req"] + 1
            if code == "no_listeners" then mb.sleep(0) end
          elseif code ~= "no_destination" then
            accepted["k/req"] = accepted["k/req"] + 1
          end
        else
          accepted["k/req"] = accepted["k/req"] + 1
          for _, entry in ipairs(list) do
            if entry.error then code_of(entry.error, "all-entry")
            elseif type(entry.payload) ~= "table" or entry.payload.n ~= p.n then
              problem("wrong request_all entry for #" .. n)
            end
          end
        end
      end
    end
    running = running - 1
  end)
end
local kinds = {"par", "par", "blk", "blk", "ser", "ser", "syn", "tmp", "req", "req", "all"}
for i, k in ipairs(kinds) do sender(k .. i, k, math.random(1, 1 << 40)) end

-- the changes, chosen by the seed, while the senders send
local ops = {}
local function count(op) ops[op] = (ops[op] or 0) + 1 end
while mb.now() < stop_at do
  mb.sleep(math.random() * 0.03)
  local r = math.random(6)
  local tag = ({"a", "b", "c"})[math.random(3)]
  if r == 1 and svc[tag] then
    local h, err = svc[tag]:reload()
    if not h then code_of(err) end
    count("reload")
  elseif r == 2 and svc[tag] then
    svc[tag]:stop()
    svc[tag] = nil
    count("stop")
  elseif r == 2 or r == 3 then
    if not svc[tag] then load(tag); count("load") end
  elseif r == 4 then
    tmp_listener:close()
    if math.random() < 0.5 then mb.sleep(math.random() * 0.005) end
    tmp_listener = mb.listen("k/tmp", tmp_handler) -- nil while k/tmp is away
    count("relisten")
  elseif r == 5 then
    -- remove k/tmp while it is sent to, then declare it again
    local s = mb.stats("k/tmp")
    mb.remove_destination("k/tmp")
    count("remove")
    local t0 = mb.now()
    while mb.has_destination("k/tmp") do
      if mb.now() - t0 > 5 then problem("k/tmp not removed within 5 s") break end
      mb.sleep(0.001)
    end
    assert(s)
    local ok, err = mb.destination("k/tmp", OPTS["k/tmp"])
    if not ok then problem("redeclare k/tmp: " .. tostring(err)) end
    reset("k/tmp")
    tmp_listener = assert(mb.listen("k/tmp", tmp_handler))
  elseif r == 6 then
    -- the scenario's own, ungrouped listener at k/par, on and off
    local l = mb.listen("k/par", function(msg)
      assert(mb.send("k/ack", {d = "k/par", n = msg.payload.n, s = msg.payload.s, by = "scn"}))
    end)
    mb.sleep(math.random() * 0.02)
    l:close()
    count("scn-listen")
  end
end

-- the end: senders done, then everything settled
local t0 = mb.now()
while running > 0 do
  if mb.now() - t0 > 20 then problem(running .. " senders still running after 20 s") break end
  mb.sleep(0.01)
end
if answered ~= requests then problem(("%d requests, %d returned"):format(requests, answered)) end
local function settled()
  for _, d in ipairs(mb.destinations()) do
    local s = mb.stats(d)
    if s.pending > 0 or s.in_flight > 0 then return false end
  end
  return true
end
t0 = mb.now()
while not settled() do
  if mb.now() - t0 > 20 then problem("not settled after 20 s") break end
  mb.sleep(0.01)
end
mb.sleep(0.05)
while not settled() do mb.sleep(0.01) end

local totals = {failed = 0, dropped = 0}
for _, d in ipairs(DESTS) do
  local s = mb.stats(d)
  local line = ("%s: sent %d accepted %d rejected %d refused %d deliveries %d delivered %d acks %d failed %d dropped %d dead %d")
    :format(d, s.sent, accepted[d], s.rejected, refused[d], s.deliveries, s.delivered,
            acks[d] or 0, s.failed, s.dropped, dead[d] or 0)
  print("soak: " .. line)
  if s.delivered + s.failed + s.dropped ~= s.deliveries then problem("invariant: " .. line) end
  if s.pending ~= 0 or s.in_flight ~= 0 then problem("left over: " .. line) end
  if s.sent ~= accepted[d] then problem("sent ~= accepted: " .. line) end
  if s.rejected ~= refused[d] then problem("rejected ~= refused: " .. line) end
  if d ~= "k/tmp" then
    if s.delivered ~= (acks[d] or 0) then problem("delivered ~= acks: " .. line) end
    if s.failed + s.dropped ~= (dead[d] or 0) then problem("dead letters: " .. line) end
  end
end
for _, d in ipairs({"k/ack", "mb/dead-letters"}) do
  local s = mb.stats(d)
  if s.failed + s.dropped + s.rejected ~= 0 or s.delivered ~= s.deliveries then
    problem(("%s: delivered %d of %d, failed %d, dropped %d, rejected %d"):format(
      d, s.delivered, s.deliveries, s.failed, s.dropped, s.rejected))
  end
end
local list = {}
for k, v in pairs(ops) do list[#list + 1] = k .. " " .. v end
table.sort(list)
print("soak: ops " .. table.concat(list, ", "))
list = {}
for k, v in pairs(codes) do list[#list + 1] = k .. " " .. v .. " (" .. samples[k] .. ")" end
table.sort(list)
for _, l in ipairs(list) do print("soak: error " .. l) end
print(("soak: requests %d, dead letters failed %d dropped %d"):format(
  requests, dead_kind.failed, dead_kind.dropped))
for k, v in pairs(dead_kind) do
  if k ~= "failed" and k ~= "dropped" then problem(("%d dead letters of kind %s"):format(v, k)) end
end
for _, h in pairs(svc) do h:stop() end
if #problems > 0 then
  print("soak: FAILED with seed " .. SEED .. ": " .. #problems .. " problem(s)")
  for _, p in ipairs(problems) do print("soak:   " .. p) end
else
  print("soak: ok, seed " .. SEED)
end
