-- Shared by the failalloc scenarios (run by plain lua5.4 with the
-- build/failalloc mb.so): calls that may fail for want of memory, and the
-- final check of the accounting invariant.
local mb = require "mb"
local common = {}

common.errors = 0

-- Calls f; an error (out of memory, most likely) is reported on stderr and
-- counted, and the scenario goes on.
function common.try(f, ...)
  local r = table.pack(pcall(f, ...))
  if not r[1] then
    common.errors = common.errors + 1
    io.stderr:write("scenario: ", tostring(r[2]), "\n")
    return nil
  end
  return table.unpack(r, 2, r.n)
end

-- Runs the bus dry, then checks every destination: delivered + failed +
-- dropped == deliveries, nothing pending or in flight. Prints one line.
function common.finish()
  local idle = common.try(mb.run, {timeout = 20})
  local broken = {}
  for _, d in ipairs(common.try(mb.destinations) or {}) do
    local s = common.try(mb.stats, d)
    if s and (s.deliveries ~= s.delivered + s.failed + s.dropped or s.pending ~= 0
              or s.in_flight ~= 0) then
      broken[#broken + 1] = ("%s: deliveries %d, delivered %d, failed %d, dropped %d, "
        .. "pending %d, in_flight %d"):format(d, s.deliveries, s.delivered, s.failed, s.dropped,
        s.pending, s.in_flight)
    end
  end
  if idle == false then broken[#broken + 1] = "mb.run did not end idle" end
  if #broken == 0 then
    print("invariant ok")
  else
    print("invariant BROKEN: " .. table.concat(broken, "; "))
  end
end

return common
