-- Jungle Gyms R-Us: what happens once config.lua has declared the
-- destinations and every department is listening: Procurement starts and
-- works through its deals (see procurement.lua). The run ends by itself when
-- the last news item has been read.
--
--   ./build/mbrun -c examples/jungle-gyms/config.lua examples/jungle-gyms/scenario.lua

-- This file's folder, so that Procurement loads from any working directory
-- (mb.load resolves relative paths against the current directory).
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

-- Procurement sends as well as listens, so it is a service of its own,
-- loaded last: everybody it talks to is listening by now.
assert(mb.load(here .. "/procurement.lua"))
