-- Jungle Gyms R-Us: the worked use case that follows the Message Bus
-- introduction in Liferay 6.2's Developer's Guide, ported to mb.
--
--   ./build/mbrun examples/jungle-gyms/main.lua
--
-- main.lua plays messaging-spring.xml: it declares the destinations, loads
-- every department as a service of its own (its own Lua state), and starts
-- Procurement last, once everybody it talks to is listening.

-- This file's folder, so that the siblings load from any working directory.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

-- Permission to buy a part: Procurement asks and waits for a "yes" or "no".
assert(mb.destination("jungle/finance/purchase", {type = "synchronous"}))
assert(mb.destination("jungle/legal/purchase", {type = "synchronous"}))

-- Notice of a purchase: one notice at a time, in the order sent, and each
-- notice reaches every listener (Sales, then Warehouse) before the next.
assert(mb.destination("jungle/purchase", {type = "serial"}))

-- The answers to a notice: synchronous, as in Liferay's guide. An answer is
-- handed to every department listening here at once, before the serial
-- notice moves on, so everybody has read Sales' answer before Warehouse even
-- gets the notice, and the story prints in the order it happened. Parallel
-- would work too, but an answer could then be read after the next notice
-- had started: harder to follow, for no gain, since these listeners only
-- take note. (They must not wait, e.g. mb.sleep: a reply returned by a
-- handler is not waited for, so the notice would move on meanwhile.)
assert(mb.destination("jungle/purchase/response", {type = "synchronous"}))

-- Equipment news: send-and-forget to every employee, in any order.
assert(mb.destination("jungle/employee/news", {type = "parallel"}))

-- The departments that answer. Each script registers its listeners while it
-- loads, so they are all listening when Procurement starts.
mb.load(here .. "/finance.lua", {args = {1000}})   -- the budget, in dollars
mb.load(here .. "/legal.lua")
mb.load(here .. "/sales.lua")
mb.load(here .. "/warehouse.lua")

-- Every employee must read every news item, so each is a load of its own
-- (three listener groups). `instances = 3` would make one group of three
-- that shares the work: each item would reach only one of them.
for _, name in ipairs {"alice", "bob", "carol"} do
  mb.load(here .. "/employee.lua", {args = {name}})
end

mb.load(here .. "/procurement.lua")
