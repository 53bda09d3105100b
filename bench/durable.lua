-- bench/durable.lua — the durable benchmark of issue 16: mb's durable
-- destinations against the same JetStream use from a plain libnats
-- program, over one private `nats-server -js` (spec/lib/nats_server.lua: a
-- free loopback port, stopped by PID).
--
--   LUA_CPATH='build/?.so;;' lua5.4 bench/durable.lua [--rounds N] [--count N]
--     [--inflight W] [--strict] [--mbrun PATH] [--raw PATH]
--
-- d1: N messages (default 20000) sent with W (default 64) sends in flight,
-- each returning once stored, and delivered to one listener group through
-- the stream's consumer, each acknowledged when its handler returns: mb is
-- one `mbrun -w 1` node (bench/durable/node.lua), raw is build/js_raw
-- (js_PublishAsync with W pending, a durable push consumer with a deliver
-- group, explicit acks). Messages/s from the first send to the N-th
-- delivery; one warm-up round, then --rounds (default 5) rounds of mb, raw,
-- mb, raw...; the median of the round-by-round ratios must be >= 0.7
-- (--strict: exit 2 when missed). A missing nats-server skips (exit 0)
-- unless CI=true.
local dir = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
package.path = dir .. "/../?.lua;" .. package.path

local function die(fmt, ...)
  io.stderr:write("\nbench/durable: ", string.format(fmt, ...), "\n")
  os.exit(1)
end

local ok_mb, mb = pcall(require, "mb")
if not ok_mb then die("cannot load the mb module (make all; LUA_CPATH='build/?.so;;'): %s", mb) end
local ns = require "spec.lib.nats_server"

local opts = {rounds = 5, count = 20000, inflight = 64, strict = os.getenv("BENCH_STRICT") == "1",
              mbrun = os.getenv("MBRUN") or "build/mbrun", raw = "build/js_raw"}
do
  local i = 1
  while arg[i] do
    local a, v = arg[i], arg[i + 1]
    if a == "--strict" then opts.strict = true; i = i - 1
    elseif a == "--rounds" then opts.rounds = tonumber(v)
    elseif a == "--count" then opts.count = tonumber(v)
    elseif a == "--inflight" then opts.inflight = tonumber(v)
    elseif a == "--mbrun" then opts.mbrun = v
    elseif a == "--raw" then opts.raw = v
    else die("unknown option %s (see the header of bench/durable.lua)", a) end
    i = i + 2
  end
end
if not (opts.rounds and opts.rounds >= 1 and opts.count and opts.count >= 100 and opts.inflight
  and opts.inflight >= 1) then
  die("--rounds >= 1, --count >= 100 and --inflight >= 1, as numbers")
end
for _, p in ipairs {opts.mbrun, opts.raw} do
  if not os.execute("test -x " .. p) then die("%s is missing: run `make all %s` first", p, opts.raw) end
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local exe, why = ns.find() -- (an error under CI=true)
if not exe then
  print("bench/durable: skipped: " .. why)
  os.exit(0)
end
local srv, err = ns.start{jetstream = true}
if not srv then die("cannot start nats-server -js: %s", err) end

-- Runs cmd (bounded by timeout(1)); its RESULT rate, or stops the run.
local function rate(cmd)
  local p = io.popen("timeout 120 " .. cmd .. " 2>&1")
  local out = p:read("a")
  local okc = p:close()
  local r = out:match("RESULT msgs=%d+ secs=[%d.]+ rate=(%d+)")
  if not okc or not r then
    srv:stop()
    die("%s failed: %s", cmd, out)
  end
  return tonumber(r)
end

local seq = 0
local function mb_side(n)
  seq = seq + 1
  return rate(("env -u LD_PRELOAD %s -w 1 --nats %s --node bench%d %s %d %d"):format(q(opts.mbrun),
    q(srv.url), seq, q(dir .. "/durable/node.lua"), n, opts.inflight))
end
local function raw_side(n)
  return rate(("%s --url %s %d %d"):format(q(opts.raw), q(srv.url), n, opts.inflight))
end

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local m = #s
  return m % 2 == 1 and s[(m + 1) // 2] or (s[m // 2] + s[m // 2 + 1]) / 2, s[1], s[m]
end

print(("durable benchmark (nats-server -js at %s), %d rounds after a warm-up, mb = one `mbrun -w 1` "
  .. "node, raw = %s"):format(srv.url, opts.rounds, opts.raw))
mb_side(math.max(100, opts.count // 10))
raw_side(math.max(100, opts.count // 10))
local mbs, raws, ratios = {}, {}, {}
for i = 1, opts.rounds do
  mbs[i], raws[i] = mb_side(opts.count), raw_side(opts.count)
  ratios[i] = mbs[i] / raws[i]
  io.stderr:write(("  d1 round %d: mb %.1f Kmsg/s, raw %.1f Kmsg/s, ratio %.2f\n"):format(i,
    mbs[i] / 1e3, raws[i] / 1e3, ratios[i]))
end
srv:stop()
local m, mlo, mhi = median(mbs)
local r, rlo, rhi = median(raws)
local x, xlo, xhi = median(ratios)
local met = x >= 0.7
print(("d1  durable send (stored) + delivery (acked), %d in flight, n=%d  mb %.1f Kmsg/s (%.1f-%.1f)  "
  .. "raw %.1f Kmsg/s (%.1f-%.1f)  mb/raw %.2fx (%.2f-%.2f)  goal >= 0.7x %s"):format(opts.inflight,
  opts.count, m / 1e3, mlo / 1e3, mhi / 1e3, r / 1e3, rlo / 1e3, rhi / 1e3, x, xlo, xhi,
  met and "met" or "MISSED"))
if not met and opts.strict then os.exit(2) end
