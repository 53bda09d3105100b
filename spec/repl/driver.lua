-- Drives lua/mb/repl.lua as mbrun's REPL front end does, without a
-- terminal: declares mb/repl, loads the REPL service, then sends each line
-- of LINESFILE as a request and prints the reply's status as <<status>>
-- (<<trace on>> / <<trace off>> for .trace). A line "<<cancel>>" sends
-- {cancel = true} instead (Ctrl-C). Run with -w 1 so output keeps its order:
--   mbrun -w 1 spec/repl/driver.lua LUADIR LINESFILE
local luadir, linesfile = ...
assert(mb.destination("mb/repl"))
mb.load(luadir .. "/mb/repl.lua", {name = "repl", args = {luadir}})
for line in io.lines(linesfile) do
  local payload = line == "<<cancel>>" and {cancel = true} or {line = line}
  local r, err = mb.request("mb/repl", payload, {timeout = 30})
  if not r then
    print("<<request failed: " .. tostring(err) .. ">>")
  elseif r.status == "trace" then
    print("<<trace " .. (r.on and "on" or "off") .. ">>")
  else
    print("<<" .. tostring(r.status) .. ">>")
  end
end
