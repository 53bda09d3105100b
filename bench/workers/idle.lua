-- bench/workers/idle.lua — a trivial service for benchmark 9: one listener
-- that counts what arrives at wb/idle; otherwise idle.
local count = 0
mb.listen("wb/idle", function() count = count + 1 end)
