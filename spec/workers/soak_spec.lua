-- The soak (spec/workers/soak.lua): a live system changed while traffic
-- flows — services reloaded (also with broken or slow new scripts),
-- stopped (also from their own handlers) and loaded again, listeners
-- closed and added again, destinations of every type removed and declared
-- again, queues at max_queue — on 2 and 4 workers, then the accounting.
-- The seed is printed; SOAK_SEED and SOAK_SECONDS override the fixed ones
-- (reproduce a failure: build/mbrun -w W spec/workers/soak.lua SEED SECONDS).
-- `make tsan` runs a shorter one against the ThreadSanitizer build (MBRUN).
local helper = require "spec.helper"
local SECONDS = tonumber(os.getenv("SOAK_SECONDS")) or 3

local function count(out, pattern)
  return tonumber(out:match(pattern)) or 0
end

describe("a live system changed while traffic flows", function()
  for _, case in ipairs({{w = 2, seed = 1301}, {w = 4, seed = 1302}}) do
    local seed = tonumber(os.getenv("SOAK_SEED")) or case.seed
    it(("loses, duplicates and hangs nothing on %d workers (seed %d)"):format(case.w, seed),
      function()
        local out, _, code = helper.mbrun(("-w %d spec/workers/soak.lua %d %g"):format(
          case.w, seed, SECONDS), {timeout = 60 + 10 * SECONDS, merge = true})
        local tail = out:sub(-4000)
        assert.is_nil(out:find("ThreadSanitizer", 1, true), out:match("WARNING: ThreadSanitizer.-\n\n") or tail)
        assert.is_nil(out:find("AddressSanitizer", 1, true), tail)
        assert.is_nil(out:find("runtime error:", 1, true), tail)
        assert.matches("soak: ok, seed " .. seed, out, 1, true)
        -- the deliberate failures and the stops: mbrun exits 1 and its
        -- totals (removed destinations too) are the dead letters' count
        local failed = count(out, "dead letters failed (%d+)")
        local dropped = count(out, "dead letters failed %d+ dropped (%d+)")
        assert.is_true(failed > 0, tail)
        assert.are.equal(failed, count(out, "mbrun: (%d+) deliver[a-z]* failed"), tail)
        assert.are.equal(dropped, count(out, "mbrun: (%d+) deliver[a-z]* dropped"), tail)
        assert.is_nil(out:find("mbrun: %d+ script error"), tail)
        assert.is_nil(out:find("left pending", 1, true), tail)
        assert.are.equal(1, code, tail)
      end)
  end
end)
