-- Reloads that overlap while the old instances drain: each old instance,
-- when its last handler ends, marks itself stopping on its worker while a
-- reload on another worker picks the instances to replace (a data race
-- before, seen by ThreadSanitizer: `make tsan` runs this).
--   mbrun -w 4 reload_race.lua [RELOADS]
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
local R = tonumber((...)) or 40
mb.destination("rr/in")
local h = assert(mb.load(dir .. "/reload_race_service.lua", {instances = 3}))
local running, answered, failed = true, 0, 0
for _ = 1, 4 do
  mb.spawn(function()
    while running do
      local v = mb.request("rr/in", 1, {timeout = 5})
      if v == 1 then answered = answered + 1 else failed = failed + 1 end
    end
  end)
end
local done = 0
for _ = 1, 2 do
  mb.spawn(function()
    for _ = 1, R do
      local ok, err = h:reload()
      assert(ok or err:match("^closed: ") or err:match("^failed: "), err)
    end
    done = done + 1
  end)
end
while done < 2 do mb.sleep(0.01) end
running = false
mb.sleep(0.1)
local n = 0
for _, s in ipairs(mb.services()) do if s.path:match("reload_race_service") then n = s.instances end end
assert(n == 3, n .. " instances after the reloads, want 3")
print(("ok reload race: %d reloads, %d answered, %d failed"):format(2 * R, answered, failed))
h:stop()
