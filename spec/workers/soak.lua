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
  ["k/replies"] = {type = "parallel", max_queue = 4},
  -- the services' own senders send here (never removed)
  ["k/sblk"] = {type = "parallel", max_queue = 2, on_full = "block", concurrency = 2},
  ["k/sser"] = {type = "serial", max_queue = 2, on_full = "block"},
  ["k/ssyn"] = {type = "synchronous"},
  ["k/sreq"] = {type = "parallel"},
}
local DESTS = {"k/par", "k/blk", "k/ser", "k/syn", "k/req", "k/tmp",
               "k/sblk", "k/sser", "k/ssyn", "k/sreq"}
local SVC_SENT = {["k/sblk"] = true, ["k/sser"] = true, ["k/ssyn"] = true, ["k/sreq"] = true}
for _, d in ipairs(DESTS) do assert(mb.destination(d, OPTS[d])) end
assert(mb.destination("k/ack", {type = "serial"}))
assert(mb.destination("k/rep"))
assert(mb.destination("k/replies", OPTS["k/replies"]))
assert(mb.destination("mb/dead-letters"))

-- what the scenario saw, per destination and incarnation (a destination
-- removed and declared again is a new one, with new statistics)
local inc = {}
for _, d in ipairs(DESTS) do inc[d] = 1 end
local accepted, refused, acks, dead = {}, {}, {}, {}
local function add(t, d, i) local k = d .. "#" .. i; t[k] = (t[k] or 0) + 1 end
local function get(t, d) return t[d .. "#" .. inc[d]] or 0 end
local dead_kind = {failed = 0, dropped = 0}
local reply_failed = {} -- deliveries failed by their reply to reply_to
local replies_in = 0
local timeouts = {} -- requests that ended by their timeout
local seen, last_ser = {}, {}

mb.listen("k/ack", function(msg)
  local a = msg.payload
  add(acks, a.d, a.i)
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
  local p = type(r.message) == "table" and r.message.payload
  if type(p) == "table" and p.i then
    add(dead, r.destination, p.i)
    -- the handler ran (and acked) but its reply to reply_to failed
    if tostring(r.error):match("^failed: reply to 'k/replies' not delivered") then
      add(reply_failed, r.destination, p.i)
    end
  else
    problem("dead letter without its message: " .. tostring(r.error))
  end
  local kind = type(r.error) == "string" and r.error:match("^(%a+):")
  if kind == "failed" or kind == "dropped" then
    dead_kind[kind] = dead_kind[kind] + 1
  else
    -- the docs say failed or dropped; count what it is called
    dead_kind[tostring(kind)] = (dead_kind[tostring(kind)] or 0) + 1
  end
end)

-- replies to k/par's messages sent with reply_to (a small queue: full now
-- and then, and it is removed and declared again too)
local function replies_handler(msg)
  if not msg.response_id then problem("a message at k/replies without response_id") end
  replies_in = replies_in + 1
end
mb.listen("k/replies", replies_handler)

-- the scenario's own listener at k/tmp (k/tmp loses its listeners when removed)
local function tmp_handler(msg)
  local p = msg.payload
  if p.f then error("soak: failing on purpose k/tmp #" .. p.n, 0) end
  assert(mb.send("k/ack", {d = "k/tmp", i = p.i, n = p.n, s = p.s, by = "scenario"}))
end
local tmp_listener = assert(mb.listen("k/tmp", tmp_handler))

local running, stop_at = 0, mb.now() + SECONDS
-- services: a and b with 2 instances, c with 1
local svc, loaded = {}, 0
-- each load runs its own copy of soak_service.lua, which a reload may
-- rewrite first: a body that waits before it listens, or one that fails
-- (a syntax error; a raise once it listens and its sender started)
local SOURCE = assert(io.open(dir .. "/soak_service.lua")):read("a")
local VARIANTS = {
  slow = "mb.sleep(0.02) -- listens late\n" .. SOURCE,
  syntax = SOURCE .. "\nthis is not Lua\n",
  raise = SOURCE .. "\nerror('soak: broken on purpose')\n",
}
local paths, names = {}, {}
local function write(path, text)
  local f = assert(io.open(path .. ".tmp", "w"))
  f:write(text)
  f:close()
  assert(os.rename(path .. ".tmp", path))
end
local function load(tag)
  loaded = loaded + 1
  local path = os.tmpname()
  paths[#paths + 1] = path
  write(path, SOURCE)
  local h, err = mb.load(path,
    {instances = tag == "c" and 1 or 2, name = "soak-" .. tag .. loaded,
     args = {tag .. loaded, math.random(1, 1 << 30), stop_at}})
  if not h then problem("load " .. tag .. ": " .. tostring(err)) end
  svc[tag] = h
  paths[h] = path
  names[h] = "soak-" .. tag .. loaded
end

-- a service still running has as many instances as it was loaded with
-- (its old instances still finishing are not listed); a reload a handler
-- began (p.r) may be under way: then within 2 s
local function check_instances(tag, where)
  local h = svc[tag]
  if not h then return end
  local want = tag == "c" and 1 or 2
  local t0, got = mb.now(), nil
  repeat
    got = nil
    for _, e in ipairs(mb.services()) do
      if e.name == names[h] then got = e.instances end
    end
    if got == nil or got == want then return end -- stopped by its own handler, or right
    mb.sleep(0.01)
  until mb.now() - t0 > 2
  problem(("service %s runs %d instances, not %d (%s, for 2 s)"):format(names[h], got, want, where))
end

local requests, answered = 0, 0
local function sent(d, i, id, err, quiet)
  if id then
    if type(id) ~= "string" then problem("send returned " .. tostring(id)) end
    add(accepted, d, i)
  else
    local code = code_of(err, d)
    if code ~= "no_destination" then add(refused, d, i) end
    if not quiet then mb.sleep(0) end -- an error comes at once: let the others run
  end
end

-- a request's error: refused at once (counted in rejected), or answered
-- after it was accepted (counted in sent). `closed` is both: "closed:
-- destination 'X' is being removed" refuses, "closed: service stopped",
-- "closed: no listener left at delivery", ... come after acceptance.
local function requested(i, ok, e, d, quiet)
  d = d or "k/req"
  if ok then add(accepted, d, i) return end
  local code = code_of(e, d)
  if code == "no_listeners" or code == "queue_full"
    or (code == "closed" and e:find("is being removed", 1, true)) then
    add(refused, d, i)
  elseif code ~= "no_destination" then
    add(accepted, d, i)
    if code == "timeout" then add(timeouts, d, i) end
  end
  if not quiet then mb.sleep(0) end
end

-- the services' senders report each send before and after
local starts, ends = {}, {}
mb.listen("k/rep", function(msg)
  local r = msg.payload
  if r.op == "start" then add(starts, r.d, 1) return end
  add(ends, r.d, 1)
  if r.d == "k/sreq" then
    requested(1, r.ok, r.err, r.d, true)
  else
    sent(r.d, 1, r.ok and "id" or nil, r.err, true)
  end
end)

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
    local function new(d)
      n = n + 1
      local p = {s = s, n = n, i = inc[d]}
      local r = rnd()
      if r < 0.03 then p.f = true
      elseif r < 0.05 then p.w = rnd() * 0.05
      elseif r < 0.10 then p.w = rnd() * 0.005
      elseif r < 0.1005 and d == "k/req" then p.r = true
      elseif r < 0.1008 and d == "k/req" then p.x = true end
      return p
    end
    local function send(d)
      local p = new(d)
      -- some with a reply_to: the handler's return value goes there
      local opts = d == "k/par" and rnd() < 0.3 and {reply_to = "k/replies"} or nil
      sent(d, p.i, mb.send(d, p, opts))
    end
    while mb.now() < stop_at do
      if kind == "par" then
        -- bursts into a small queue: queue_full expected
        for _ = 1, 1 + math.floor(rnd() * 12) do send("k/par") end
        mb.sleep(rnd() * 0.002)
      elseif kind == "blk" then
        send("k/blk")
      elseif kind == "ser" then
        send("k/ser")
        if rnd() < 0.3 then mb.sleep(0) end
      elseif kind == "syn" then
        send("k/syn")
      elseif kind == "tmp" then
        send("k/tmp")
        mb.sleep(rnd() * 0.001)
      elseif kind == "req" then
        local p = new("k/req")
        requests = requests + 1
        local v, e = mb.request("k/req", p, {timeout = 0.02 + rnd() * 0.2})
        answered = answered + 1
        requested(p.i, v ~= nil, e)
        if v ~= nil and (type(v) ~= "table" or v.n ~= p.n) then problem("wrong reply to #" .. p.n) end
      elseif kind == "all" then
        local p = new("k/req")
        requests = requests + 1
        local list, e = mb.request_all("k/req", p, {timeout = 0.05 + rnd() * 0.2})
        answered = answered + 1
        requested(p.i, list ~= nil, e)
        local timed_out = false
        for _, entry in ipairs(list or {}) do
          if entry.error then
            timed_out = timed_out or code_of(entry.error, "all-entry") == "timeout"
          elseif type(entry.payload) ~= "table" or entry.payload.n ~= p.n then
            problem("wrong request_all entry for #" .. p.n)
          end
        end
        if timed_out then add(timeouts, "k/req", p.i) end -- one per request_all
      end
    end
    running = running - 1
  end)
end
load("a"); load("b"); load("c")
local kinds = {"par", "par", "blk", "blk", "ser", "ser", "syn", "syn", "tmp", "req", "req", "all"}
for i, k in ipairs(kinds) do sender(k .. i, k, math.random(1, 1 << 40)) end

-- the changes, chosen by the seed, while the senders send
local ops = {}
local function count(op) ops[op] = (ops[op] or 0) + 1 end
local REMOVABLE = {"k/tmp", "k/tmp", "k/tmp", "k/par", "k/blk", "k/ser", "k/syn", "k/req",
                   "k/replies"}
while mb.now() < stop_at do
  mb.sleep(math.random() * 0.03)
  local op_t0 = mb.now()
  local r = math.random(8)
  local tag = ({"a", "b", "c"})[math.random(3)]
  if r == 1 and svc[tag] then
    local v = math.random(8)
    local variant = v == 1 and "slow" or v == 2 and "syntax" or v == 3 and "raise" or nil
    local path = paths[svc[tag]]
    write(path, variant and VARIANTS[variant] or SOURCE)
    local h, err = svc[tag]:reload()
    if variant == "syntax" or variant == "raise" then
      if h then problem("a reload with a " .. variant .. " error returned the handle")
      elseif not err:match("^failed: ") and not err:match("^closed: ") then
        problem("a reload with a " .. variant .. " error: " .. tostring(err))
      end
      write(path, SOURCE)
    elseif not h then
      code_of(err, "reload")
    end
    check_instances(tag, "after a reload")
    count("reload " .. (variant or "same"))
  elseif r == 2 and svc[tag] then
    svc[tag]:stop()
    svc[tag] = nil
    count("stop")
  elseif r == 2 or r == 3 then
    if not svc[tag] then load(tag); count("load") end
  elseif r == 4 then
    if tmp_listener then tmp_listener:close() end
    if math.random() < 0.5 then mb.sleep(math.random() * 0.005) end
    tmp_listener = mb.listen("k/tmp", tmp_handler) -- nil while k/tmp is away
    count("relisten")
  elseif r == 5 then
    -- remove a destination while it is sent to, then declare it again
    local d = REMOVABLE[math.random(#REMOVABLE)]
    local tr = mb.now()
    mb.remove_destination(d)
    if os.getenv("SOAK_DEBUG") then print(("soak: remove_destination(%s) took %.3f s"):format(d, mb.now() - tr)) end
    count("remove " .. d)
    local t0 = mb.now()
    local shown = 0.25
    while mb.has_destination(d) do
      if mb.now() - t0 > 5 then problem(d .. " not removed within 5 s") break end
      if os.getenv("SOAK_DEBUG") and mb.now() - t0 > shown then
        shown = shown + 0.25
        local st = mb.stats(d)
        print(("soak: removing %s for %.2f s: pending %s in_flight %s listeners %s"):format(
          d, mb.now() - t0, st and st.pending, st and st.in_flight, st and st.listeners))
      end
      mb.sleep(0.001)
    end
    tr = mb.now()
    local ok, err = mb.destination(d, OPTS[d])
    if os.getenv("SOAK_DEBUG") then print(("soak: destination(%s) took %.3f s, %.3f since remove"):format(d, mb.now() - tr, mb.now() - t0)) end
    if not ok then problem("declare " .. d .. " again: " .. tostring(err)) end
    if inc[d] then inc[d] = inc[d] + 1 end
    if d == "k/tmp" then tmp_listener = assert(mb.listen("k/tmp", tmp_handler)) end
    if d == "k/replies" then assert(mb.listen("k/replies", replies_handler)) end
  elseif r == 6 then
    -- the scenario's own, ungrouped listener at k/par, on and off
    local l = mb.listen("k/par", function(msg)
      local p = msg.payload
      assert(mb.send("k/ack", {d = "k/par", i = p.i, n = p.n, s = p.s, by = "scn"}))
    end)
    mb.sleep(math.random() * 0.02)
    if l then l:close() end
    count("scn-listen")
  elseif r == 7 and svc[tag] then
    -- a reload that a stop overtakes
    local h, done = svc[tag], false
    mb.spawn(function()
      local ok, err = h:reload()
      if not ok and not (err or ""):match("^closed: service '.*' was stopped while it reloaded") then
        code_of(err, "reload-stop")
      end
      done = true
    end)
    if math.random() < 0.5 then mb.sleep(math.random() * 0.005) end
    h:stop()
    svc[tag] = nil
    local t0 = mb.now()
    while not done do
      if mb.now() - t0 > 5 then problem("reload overtaken by stop did not return in 5 s") break end
      mb.sleep(0.001)
    end
    count("reload+stop")
  elseif r == 8 and svc[tag] then
    -- overlapping reloads: they settle on the one begun last, and the
    -- service runs as many instances as it was loaded with
    local h, k, done = svc[tag], math.random(2, 3), 0
    for _ = 1, k do
      mb.spawn(function()
        local ok, err = h:reload()
        if not ok then code_of(err, "reload-overlap") end
        done = done + 1
      end)
    end
    local t0 = mb.now()
    while done < k do
      if mb.now() - t0 > 5 then problem("overlapping reloads did not return in 5 s") break end
      mb.sleep(0.001)
    end
    mb.sleep(0.01)
    check_instances(tag, "after overlapping reloads")
    count("reload x" .. k)
  end
  local took = mb.now() - op_t0
  if took > 0.25 then
    print(("soak: op %d took %.3f s"):format(r, took))
  end
end

-- the end: senders done, then everything settled
local t0 = mb.now()
while running > 0 do
  if mb.now() - t0 > 20 then problem(running .. " senders still running after 20 s") break end
  mb.sleep(0.01)
end
if answered ~= requests then problem(("%d requests, %d returned"):format(requests, answered)) end
-- the services' senders end at the same time; then the services stop
-- (what their senders still wait for is cut short: refused, or accepted
-- and not reported)
mb.sleep(0.05)
for tag in pairs(svc) do check_instances(tag, "at the end") end
for tag, h in pairs(svc) do h:stop(); svc[tag] = nil end
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

-- the current incarnation of each destination: its statistics against
-- what the senders, the handlers (acks) and the dead letters saw
for _, d in ipairs(DESTS) do
  local s = mb.stats(d)
  local line = ("%s#%d: sent %d accepted %d rejected %d refused %d deliveries %d delivered %d acks %d failed %d dropped %d dead %d")
    :format(d, inc[d], s.sent, get(accepted, d), s.rejected, get(refused, d), s.deliveries,
            s.delivered, get(acks, d), s.failed, s.dropped, get(dead, d))
  if s.delivered + s.failed + s.dropped ~= s.deliveries then problem("invariant: " .. line) end
  -- each accepted message counts a delivery per group there at dispatch,
  -- or one dropped delivery when none was
  if s.deliveries < s.sent then problem("fewer deliveries than messages: " .. line) end
  if s.pending ~= 0 or s.in_flight ~= 0 then problem("left over: " .. line) end
  if SVC_SENT[d] then
    -- sends cut short by a stop: started, never reported as ended
    local cut = get(starts, d) - get(ends, d)
    line = line .. (" cut %d"):format(cut)
    if s.sent + s.rejected ~= get(accepted, d) + get(refused, d) + cut
      or s.sent < get(accepted, d) or s.rejected < get(refused, d) then
      problem("sent + rejected ~= accepted + refused + cut short: " .. line)
    end
  else
    if s.sent ~= get(accepted, d) then problem("sent ~= accepted: " .. line) end
    if s.rejected ~= get(refused, d) then problem("rejected ~= refused: " .. line) end
  end
  line = line .. (" reply-failed %d"):format(get(reply_failed, d))
  if s.delivered ~= get(acks, d) - get(reply_failed, d) then
    problem("delivered ~= acks - reply-failed: " .. line)
  end
  if s.failed + s.dropped ~= get(dead, d) then problem("dead letters: " .. line) end
  if d == "k/req" or d == "k/sreq" then
    -- every handler there returns a reply; every request that timed out counts
    line = line .. (" replies %d timeouts %d seen %d"):format(s.replies, s.timeouts, get(timeouts, d))
    if s.replies ~= s.delivered then problem("replies ~= delivered: " .. line) end
    if s.timeouts ~= get(timeouts, d) then problem("timeouts: " .. line) end
  end
  print("soak: " .. line)
end
for _, d in ipairs({"k/ack", "k/rep", "mb/dead-letters"}) do
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
print(("soak: requests %d, replies to reply_to %d, dead letters failed %d dropped %d"):format(
  requests, replies_in, dead_kind.failed, dead_kind.dropped))
for k, v in pairs(dead_kind) do
  if k ~= "failed" and k ~= "dropped" then problem(("%d dead letters of kind %s"):format(v, k)) end
end
for _, path in ipairs(paths) do os.remove(path) end
if #problems > 0 then
  print("soak: FAILED with seed " .. SEED .. ": " .. #problems .. " problem(s)")
  for _, p in ipairs(problems) do print("soak:   " .. p) end
else
  print("soak: ok, seed " .. SEED)
end
