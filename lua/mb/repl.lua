-- The Lua side of the REPL (SPEC section 4): a service of its own that
-- evaluates what the user types and runs the dot-commands. mbrun's front
-- end (terminal, history, completion, Ctrl-C) declares the destination
-- "mb/repl" and loads this script with the folder of the Lua modules:
--
--   mb.load(luadir .. "/mb/repl.lua", {name = "repl", args = {luadir}})
--
-- It then sends one request per line, and the reply says what to do next:
--   {line = "text"}  -> {status = "ok" | "error" | "more" | "quit"}
--                       or {status = "trace", on = true | false}
--   {cancel = true}  -> {status = "ok"}  (unfinished input forgotten)
-- "more": the input so far is an unfinished Lua chunk; the next line
-- continues it. Everything shown goes out through print (one write per
-- line, which the front end places above the prompt); an error is one line.
--
-- Lua input works as in lua.c: `return <input>` first, so expressions show
-- their values, else the input as a statement; input is unfinished when the
-- syntax error ends in <eof>. Code runs in this service's globals (so `mb`
-- is there, and globals persist between lines) inside the handler's
-- coroutine, so mb.request and mb.sleep just work.
--
-- Owns: the unfinished input, the listeners of .listen, the services of
-- .load. Lists and stops any service through mb.services() (.services,
-- .stop); marks itself hidden there (mb._service_info), as boot.lua does. Tested by spec/repl/repl_lua_spec.lua (driven by spec/repl/driver.lua).

local luadir = ...
mb._service_info{hidden = true} -- mbrun's own: .services and mb.services() leave it out
package.path = luadir .. "/?.lua;" .. package.path
local pretty, one_line = require("mb.pretty").pretty, require("mb.pretty").line

-- the REPL's own references, safe from what the user does to the globals
local G = _G
local mb, print, load, xpcall, pcall, tostring, type, select = mb, print, load, xpcall, pcall, tostring,
  type, select
local tonumber, ipairs, next, getmetatable, assert = tonumber, ipairs, next, getmetatable, assert
local math, table = math, table

local DEFAULT_TIMEOUT = 5

-- The REPL's lines come through mb/repl: removed, the session could take
-- no more input. In this state only (each service has its own mb), removing
-- it is refused, as a programming error.
do
  local remove = mb.remove_destination
  mb.remove_destination = function(name, ...)
    if name == "mb/repl" then
      error("mb.remove_destination: 'mb/repl' is the REPL's own destination; removing it would " ..
        "end this session (.quit or Ctrl-D leave)", 2)
    end
    return remove(name, ...)
  end
end

local pending = nil -- the unfinished Lua input, lines joined by "\n"
local listeners = {} -- destination -> listener handle, for .listen
local services = {} -- handles of the .load-ed services, kept for the session

local OK, ERROR, MORE = {status = "ok"}, {status = "error"}, {status = "more"}

-- An error line: what it shows of the user's input (names, paths,
-- commands) and of what mb said of it goes to the terminal, so control
-- characters are written as escapes (\027, \n, as mb's own messages
-- quote a bad name): the line stays one line, and no escape sequence
-- reaches the terminal.
local function escaped(c)
  return c == "\n" and "\\n" or ("\\%03d"):format(c:byte())
end

-- text with its control characters written as escapes (see escaped)
local function shown(text) return (text:gsub("[%c]", escaped)) end

local function fail(fmt, ...)
  print("error: " .. shown(fmt:format(...)))
  return ERROR
end

-- ---- Lua input ---------------------------------------------------------------

-- lua.c's msghandler, without the traceback: the message, one line.
local function message(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if type(mt) == "table" and mt.__tostring then
    -- as mbrun says of a script's error object (runtime/lua/mbl_task.c)
    local ok, text = pcall(tostring, e)
    if ok then return text end
    return ("(error object is a %s value; its __tostring raised)"):format(type(e))
  end
  return ("(error object is a %s value)"):format(type(e))
end

local function incomplete(err)
  return err:sub(-5) == "<eof>"
end

-- Compiles the input: the function, or nil and the syntax error, and
-- whether the input is unfinished.
local function compile(text)
  local f, rerr = load("return " .. text, "=stdin", "t", G)
  if f then return f end
  local err
  f, err = load(text, "=stdin", "t", G)
  if f then return f end
  -- an unfinished expression ("{1,") counts too, not only statements
  return nil, err, incomplete(err) or incomplete(rerr)
end

local function show(...)
  local n = select("#", ...)
  if n == 0 then return end
  local out = {}
  for i = 1, n do
    local v = select(i, ...)
    -- as lua.c does, a string on its own prints raw
    out[i] = type(v) == "string" and v or pretty(v)
  end
  print(table.concat(out, "\t"))
end

local function finish(ok, ...)
  if not ok then
    print((...))
    return ERROR
  end
  show(...)
  return OK
end

local function lua_input(line)
  local text = pending and (pending .. "\n" .. line) or line
  local f, err, more = compile(text)
  if not f then
    if more then
      pending = text
      return MORE
    end
    pending = nil
    print(err)
    return ERROR
  end
  pending = nil -- before running: the code may wait, and other lines come
  return finish(xpcall(f, message))
end

-- ---- payloads ------------------------------------------------------------------

-- Whether text is a payload: a Lua expression (the function to evaluate)
-- or JSON (the function returns the decoded value); or nil and the error.
local function payload_of(text)
  local f, err = load("return " .. text, "=payload", "t", G)
  if f then return f end
  local ok, v = pcall(mb.json.decode, text)
  if ok then return function() return v end end
  return nil, err
end

-- The payload's value, or nil and the error line printed.
local function evaluate(f)
  local ok, v = xpcall(f, message)
  if not ok then return nil, fail("%s", v) end
  return true, v
end

-- ---- commands ------------------------------------------------------------------

local commands, order = {}, {}

local function command(name, usage, help, fn)
  commands[name] = {usage = usage, help = help, fn = fn}
  order[#order + 1] = name
end

local function usage(name)
  return fail("usage: %s", commands[name].usage)
end

-- "DEST rest" -> "DEST", "rest" (rest trimmed, maybe "")
local function word(s)
  local w, rest = s:match("^(%S+)%s*(.-)%s*$")
  return w, rest or ""
end

-- A listed message on one line: [DEST] #ID PAYLOAD, then values and
-- reply_to / response_id when set; a long payload (values) is cut after 240
-- (120) characters with "...", as mbrun --trace cuts them.
local PAYLOAD_MAX, VALUES_MAX = 240, 120
local function listed(msg)
  local out = {"[", msg.destination, "] #", msg.id, " ", one_line(msg.payload, PAYLOAD_MAX)}
  if msg.values and next(msg.values) ~= nil then out[#out + 1] = "  values=" .. one_line(msg.values, VALUES_MAX) end
  if msg.reply_to then out[#out + 1] = "  reply_to=" .. msg.reply_to end
  if msg.response_id then out[#out + 1] = "  response_id=" .. msg.response_id end
  return table.concat(out)
end

-- Runs mb.<fn>(...) for a command: its results, or nil and the error line
-- printed (a raised error and a nil, err return alike).
local function call(fn, ...)
  local r = table.pack(pcall(fn, ...))
  if not r[1] then return nil, fail("%s", message(r[2])) end
  if r[2] == nil and type(r[3]) == "string" then return nil, fail("%s", r[3]) end
  return table.unpack(r, 2, r.n)
end

command(".send", ".send DEST PAYLOAD", "send PAYLOAD (Lua expression or JSON) to DEST", function(args)
  local dest, text = word(args)
  if not dest or text == "" then return usage(".send") end
  local f, err = payload_of(text)
  if not f then return fail("PAYLOAD is neither a Lua expression nor JSON: %s", err) end
  local ok, v = evaluate(f)
  if not ok then return v end
  local id, e = call(mb.send, dest, v)
  if not id then return e end
  print("sent " .. id)
  return OK
end)

command(".request", ".request DEST PAYLOAD [TIMEOUT]",
  "send PAYLOAD to DEST and print the reply (TIMEOUT seconds, default " .. DEFAULT_TIMEOUT .. ")",
  function(args)
    local dest, text = word(args)
    if not dest or text == "" then return usage(".request") end
    local timeout = DEFAULT_TIMEOUT
    -- the last word is the TIMEOUT when it is a number and what comes before
    -- it is a payload ("1 -1" is 1 with a timeout of -1, not the payload 0)
    local head, last = text:match("^(.-)%s+(%S+)$")
    local t = last and tonumber(last)
    local f = t and payload_of(head)
    if f then
      if not (t > 0) then
        return fail("TIMEOUT (the last word) must be a positive number of seconds, not %s", last)
      end
      timeout = t
    else
      local err
      f, err = payload_of(text)
      if not f then return fail("PAYLOAD is neither a Lua expression nor JSON: %s", err) end
    end
    local ok, v = evaluate(f)
    if not ok then return v end
    local reply, e = call(mb.request, dest, v, {timeout = timeout})
    if reply == nil and e == ERROR then return ERROR end
    print(pretty(reply))
    return OK
  end)

command(".listen", ".listen DEST", "print every message that arrives at DEST", function(args)
  local dest, extra = word(args)
  if not dest or extra ~= "" then return usage(".listen") end
  if listeners[dest] then return fail("already listening at '%s'", dest) end
  local l, e = call(mb.listen, dest, function(msg) print(listed(msg)) end)
  if not l then return e end
  listeners[dest] = l
  print("listening at " .. dest)
  return OK
end)

command(".unlisten", ".unlisten DEST", "stop printing the messages of DEST", function(args)
  local dest, extra = word(args)
  if not dest or extra ~= "" then return usage(".unlisten") end
  local l = listeners[dest]
  if not l then return fail("not listening at '%s'", dest) end
  listeners[dest] = nil
  l:close()
  print("stopped listening at " .. dest)
  return OK
end)

-- names padded to one width, so the columns line up
local function padded(names)
  local w = 0
  for _, n in ipairs(names) do w = math.max(w, #n) end
  return function(n) return n .. (" "):rep(w - #n) end
end

-- The destinations to show: all but the REPL's own (mb/repl, which mbrun
-- hides from --trace, --stats and --graph too).
local function user_destinations()
  local names = {}
  for _, n in ipairs(mb.destinations()) do
    if n ~= "mb/repl" then names[#names + 1] = n end
  end
  return names
end

command(".dests", ".dests", "list the destinations: type, listeners, pending messages", function(args)
  if args ~= "" then return usage(".dests") end
  local names = user_destinations()
  local all, pad = mb.stats(), padded(names)
  for _, n in ipairs(names) do
    local s = all[n]
    if s then -- (removed meanwhile otherwise)
      print(("%s  %-11s  listeners=%d  pending=%d"):format(pad(n), s.type, s.listeners, s.pending))
    end
  end
  return OK
end)

local COUNTS = {"sent", "rejected", "delivered", "failed", "dropped", "pending", "in_flight",
                "replies", "timeouts"}

command(".stats", ".stats [DEST]", "statistics of DEST, or one line per destination", function(args)
  local dest, extra = word(args)
  if extra ~= "" then return usage(".stats") end
  if dest then
    local s, e = call(mb.stats, dest)
    if not s then return e end
    print(pretty(s))
    return OK
  end
  local names = user_destinations()
  local all, pad = mb.stats(), padded(names)
  for _, n in ipairs(names) do
    local s = all[n]
    if s then
      local out = {pad(n)}
      for _, k in ipairs(COUNTS) do out[#out + 1] = ("%s=%d"):format(k, s[k]) end
      print(table.concat(out, "  "))
    end
  end
  return OK
end)

command(".load", ".load SCRIPT [N] [ARG]",
  "run SCRIPT as a service (N instances; ARG, a Lua expression or JSON, is its argument)",
  function(args)
    local path, rest = word(args)
    if not path then return usage(".load") end
    local n = 1
    local count, after = word(rest)
    if count and math.type(tonumber(count)) == "integer" then n, rest = tonumber(count), after end
    if n < 1 then return fail("N must be a whole number, 1 or more") end
    local opts = {instances = n}
    if rest ~= "" then
      local f, err = payload_of(rest)
      if not f then return fail("ARG is neither a Lua expression nor JSON: %s", err) end
      local ok, v = evaluate(f)
      if not ok then return v end
      opts.args = {v}
    end
    local h, e = call(mb.load, path, opts)
    if not h then return e end
    services[#services + 1] = h
    print(("loaded %s (%d instance%s)"):format(shown(path), n, n == 1 and "" or "s"))
    return OK
  end)

-- rows (lists of strings) as columns two spaces apart, the first row the
-- header
local function columns(rows)
  local w = {}
  for _, r in ipairs(rows) do
    for i, cell in ipairs(r) do w[i] = math.max(w[i] or 0, #cell) end
  end
  for _, r in ipairs(rows) do
    local out = {}
    for i, cell in ipairs(r) do out[i] = i < #r and cell .. (" "):rep(w[i] - #cell) or cell end
    print(table.concat(out, "  "))
  end
end

command(".services", ".services",
  "list the services: name, path, instances, worker(s), deliveries, failures", function(args)
    if args ~= "" then return usage(".services") end
    local list, e = call(mb.services)
    if not list then return e end
    if #list == 0 then
      print("no services running")
      return OK
    end
    local rows = {{"name", "path", "instances", "worker", "deliveries", "failures"}}
    for _, s in ipairs(list) do
      rows[#rows + 1] = {s.name, s.path, tostring(s.instances), table.concat(s.workers, ","),
                         tostring(s.deliveries), tostring(s.failures)}
    end
    columns(rows)
    return OK
  end)

-- The services called name: by their name as .services shows it (every
-- load of that name), else by its short form, the file name without .lua
-- ("calc" for "lib/calc.lua"); or nil and why when the short form stands
-- for services of different names.
local function services_called(name)
  local list = mb.services()
  local found, names = {}, {}
  for _, s in ipairs(list) do
    if s.name == name then found[#found + 1] = s end
  end
  if #found > 0 then return found end
  for _, s in ipairs(list) do
    local short = s.name:match("([^/]*)$"):gsub("%.lua$", "")
    if short == name then
      found[#found + 1] = s
      if names[#names] ~= s.name then names[#names + 1] = s.name end
    end
  end
  if #names > 1 then
    return nil, ("'%s' could be %s: give the name as .services shows it"):format(name,
      table.concat(names, " or "))
  end
  return found
end

-- .stop and .reload: act(s) on every service called args (nil and why
-- when it fails), then "DONE NAME (N instances)".
local function on_services(cmd, done, act)
  return function(args)
    if args == "" then return usage(cmd) end
    local found, why = services_called(args)
    if not found then return fail("%s", why) end
    if #found == 0 then return fail("no service '%s' runs (.services lists them)", args) end
    local n = 0
    for _, s in ipairs(found) do
      local ok, err = pcall(act, s)
      if not ok then return fail("%s", message(err)) end
      if err then return fail("%s", err) end
      n = n + s.instances
    end
    print(("%s %s (%d instance%s)"):format(done, shown(args), n, n == 1 and "" or "s"))
    return OK
  end
end

command(".stop", ".stop SERVICE",
  "stop a service (every instance; SERVICE as .services names it, or its file name without .lua)",
  on_services(".stop", "stopped", function(s) s.handle:stop() end))

command(".reload", ".reload SERVICE",
  "load a service's script again: new instances take over, the old finish what runs (as .stop names it)",
  on_services(".reload", "reloaded", function(s)
    local h, err = s.handle:reload()
    if not h then return ("%s (%s keeps running as it was)"):format(err, s.name) end
  end))

command(".trace", ".trace on|off", "print one line per hop of every message (or stop)", function(args)
  if args == "on" then return {status = "trace", on = true} end
  if args == "off" then return {status = "trace", on = false} end
  return usage(".trace")
end)

command(".help", ".help", "this list", function()
  local pad = padded((function()
    local u = {}
    for i, name in ipairs(order) do u[i] = commands[name].usage end
    return u
  end)())
  for _, name in ipairs(order) do
    local c = commands[name]
    print(pad(c.usage) .. "  " .. c.help)
  end
  print("Anything else is Lua: expressions print their values; `mb` is the bus.")
  return OK
end)

command(".quit", ".quit", "leave: what is pending is delivered first; timers stop without firing",
  function() return {status = "quit"} end)

local function run_command(line)
  local name, args = line:match("^(%.%S*)%s*(.-)%s*$")
  local c = commands[name]
  if not c then return fail("unknown command '%s' (.help lists the commands)", name) end
  return c.fn(args)
end

-- ---- the handler -----------------------------------------------------------------

local function handle(msg)
  local p = msg.payload
  if type(p) ~= "table" then return ERROR end
  if p.cancel then
    pending = nil
    return OK
  end
  local line = p.line
  if type(line) ~= "string" then return ERROR end
  if not pending then
    if line:match("^%s*$") then return OK end
    -- commands only at the start of an input (inside a long string a line
    -- may well start with a dot), and a dot before a digit is a number
    if line:match("^%s*%.[^%d]") then return run_command((line:gsub("^%s+", ""))) end
  end
  return lua_input(line)
end

assert(mb.listen("mb/repl", handle))
