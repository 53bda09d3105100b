-- Jungle Gyms R-Us: the system to run, the counterpart of the plugin's
-- messaging-spring.xml in Liferay 6.2's Developer's Guide. It declares the
-- destinations and says who listens where; scenario.lua then starts
-- Procurement, which drives the story.
--
--   ./build/mbrun -c examples/jungle-gyms/config.lua examples/jungle-gyms/scenario.lua
--
-- Script paths are relative to this file's folder. No `workers` here: mbrun
-- uses one per core unless -w N says otherwise.
return {
  destinations = {
    -- Permission to buy a part: Procurement asks and waits for a "yes" or "no".
    ["jungle/finance/purchase"] = {type = "synchronous"},
    ["jungle/legal/purchase"] = {type = "synchronous"},

    -- Notice of a purchase: one notice at a time, in the order sent, and each
    -- notice reaches every listener (Sales, then Warehouse) before the next.
    ["jungle/purchase"] = {type = "serial"},

    -- The answers to a notice: synchronous, as in Liferay's guide. An answer
    -- is handed to every department listening here before the serial notice
    -- moves on, so everybody has read Sales' answer before Warehouse even gets
    -- the notice, and the story prints in the order it happened. (Parallel
    -- would work too, but an answer could then be read after the next notice
    -- had started. These listeners only take note; they must not wait, e.g.
    -- mb.sleep: a reply returned by a handler is not waited for.)
    ["jungle/purchase/response"] = {type = "synchronous"},

    -- Equipment news: send-and-forget to every employee, in any order.
    ["jungle/employee/news"] = {type = "parallel"},
  },

  -- Departments that only answer what they are sent: each script returns its
  -- handler (Legal), or a table of handlers keyed by destination (Sales), and
  -- runs in a service of its own, registered where this maps it. Listener
  -- scripts start before the services below, so Sales is the first listener
  -- at jungle/purchase and answers each notice before Warehouse.
  listeners = {
    ["legal.lua"] = {"jungle/legal/purchase"},
    ["sales.lua"] = {"jungle/purchase", "jungle/purchase/response"},
  },

  -- Departments that need arguments or keep state between messages: each is
  -- loaded as a service (its own Lua state) and registers its own listeners.
  services = {
    {script = "finance.lua", args = {1000}},   -- the budget, in dollars
    {script = "warehouse.lua"},                -- numbers the bays it clears
    -- Every employee must read every news item, so each is an entry of its
    -- own (three listener groups). `instances = 3` would make one group of
    -- three that shares the work: each item would reach only one of them.
    {script = "employee.lua", args = {"alice"}, name = "alice"},
    {script = "employee.lua", args = {"bob"}, name = "bob"},
    {script = "employee.lua", args = {"carol"}, name = "carol"},
  },
}
