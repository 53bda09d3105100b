-- A plain Lua program (lua5.4, mb.setup): a handler on another worker waits
-- for a reply where it cannot yield, then goes on working and sends. The
-- bus is not idle until that handler has returned: mb.run() must not come
-- back before its send is delivered. Prints "early N of ROUNDS".
local mb = require "mb"
mb.setup {workers = 2}
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
local ROUNDS = 20
for _, d in ipairs {"t/go", "t/echo", "t/done"} do assert(mb.destination(d)) end
local done = 0
assert(mb.listen("t/done", function() done = done + 1 end))
assert(mb.listen("t/echo", function(m) return m.payload end)) -- worker 0
mb.load(dir .. "/nested_waiter.lua") -- the least loaded worker: 1
local early = 0
for i = 1, ROUNDS do
  assert(mb.send("t/go", i))
  assert(mb.run {timeout = 10}, "mb.run timed out")
  if done ~= i then early = early + 1 end
  while done < i do mb.run {timeout = 1} end -- let a late one in
end
print(string.format("early %d of %d", early, ROUNDS))
