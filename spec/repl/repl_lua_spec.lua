-- The Lua side of the REPL: the printer (lua/mb/pretty.lua, the C of
-- runtime/lua/mbl_show.c) unit by unit, and
-- lua/mb/repl.lua driven for real, without the terminal front end: mbrun
-- runs spec/repl/driver.lua, which loads repl.lua as the front end does and
-- sends it one request per line, printing each reply's status as
-- <<status>>. Run from the project root:
--   LUA_CPATH='build/?.so;;' MBRUN=build/mbrun lua5.4 /usr/bin/busted \
--     --lpath='lua/?.lua;lua/?/init.lua' spec/repl/repl_lua_spec.lua
local pretty = require("mb.pretty").pretty
local masks = require("mb.pretty").masks

local helper = require "spec.helper"
local write_file = helper.write
local LUADIR = helper.ROOT .. "/lua"
local DRIVER = helper.SPEC .. "/repl/driver.lua"
local ECHO = helper.ROOT .. "/scripts/echo.lua"

-- Runs the lines through the REPL; returns the steps (one per line: the
-- status and the lines printed before it), the lines printed after the
-- last one, stderr and the exit code.
local function session(lines)
  local input = os.tmpname()
  write_file(input, table.concat(lines, "\n") .. "\n")
  local out, err, code = helper.mbrun(("-w 1 %s %s %s"):format(DRIVER, LUADIR, input))
  os.remove(input)
  local steps, current = {}, {}
  for line in out:gmatch("([^\n]*)\n") do
    local status = line:match("^<<(.*)>>$")
    if status then
      steps[#steps + 1] = {status = status, out = current}
      current = {}
    else
      current[#current + 1] = line
    end
  end
  return steps, current, err, code
end

-- Message ids vary: "[dest] #2a ..." -> "[dest] #ID ...", "sent 2a" -> "sent ID".
local function norm(line)
  return (line:gsub("^(%[[^%]]*%] #)%x+", "%1ID"):gsub("^sent %x+$", "sent ID")
    :gsub("response_id=%x+", "response_id=ID"))
end

-- Runs a script of {input, status, {expected lines}} and checks each step
-- (ids normalized); a clean run: nothing on stderr, exit code 0.
local function check(script)
  local lines = {}
  for i, s in ipairs(script) do lines[i] = s[1] end
  local steps, after, err, code = session(lines)
  assert.are.equal("", err)
  assert.are.equal(0, code)
  assert.are.same({}, after)
  assert.are.equal(#script, #steps, "one status per line")
  for i, s in ipairs(script) do
    local got = {}
    for j, l in ipairs(steps[i].out) do got[j] = norm(l) end
    -- (expected lines nil: the caller checks them)
    assert.are.same({status = s[2], out = s[3] or got}, {status = steps[i].status, out = got},
      ("line %d: %q"):format(i, s[1]))
  end
  return steps
end

describe("mb.pretty", function()
  it("prints scalars as Lua literals, integers and floats apart", function()
    assert.are.equal("3", pretty(3))
    assert.are.equal("3.0", pretty(3.0))
    assert.are.equal("-0.5", pretty(-0.5))
    assert.are.equal("1e+100", pretty(1e100))
    assert.are.equal("0.1", pretty(0.1))
    assert.are.equal("9007199254740992.0", pretty(2.0 ^ 53))
    assert.are.equal("math.huge", pretty(math.huge))
    assert.are.equal("-math.huge", pretty(-math.huge))
    assert.are.equal("0/0", pretty(0 / 0))
    assert.are.equal("nil", pretty(nil))
    assert.are.equal("false", pretty(false))
    assert.are.equal('"abc"', pretty("abc"))
  end)

  it("quotes strings on one line, control characters escaped", function()
    local s = pretty('a\nb\t"c"\\\0' .. "1\r\127")
    assert.are.equal('"a\\nb\\009\\"c\\"\\\\\\0001\\013\\127"', s)
    assert.is_nil(s:find("\n"))
    -- and it reads back as the same string
    assert.are.equal('a\nb\t"c"\\\0' .. "1\r\127", load("return " .. s)())
  end)

  it("names functions, threads and userdata", function()
    assert.are.equal("<function>", pretty(print))
    assert.are.equal("<thread>", pretty(coroutine.create(print)))
    assert.are.equal("<FILE*>", pretty(io.stdout)) -- its metatable's __name
    assert.are.equal("{f = <function>}", pretty({f = print}))
  end)

  it("sorts keys: the list first, then numbers, strings and the rest", function()
    local t = {"x", "y", b = 1, a = 2, [-1] = 3, [10] = 4, [2.5] = 5, [true] = 6, [false] = 7, B = 8}
    assert.are.equal('{"x", "y", [-1] = 3, [2.5] = 5, [10] = 4, B = 8, a = 2, b = 1, [false] = 7, [true] = 6}',
      pretty(t, {width = math.huge}))
  end)

  it("brackets keys that are not identifiers", function()
    assert.are.equal('{["1"] = 1, ["end"] = 2, ["odd key"] = 3, ok_1 = 4}',
      pretty({["odd key"] = 3, ["end"] = 2, ["1"] = 1, ok_1 = 4}))
    assert.are.equal("{1, [3] = 3}", pretty({1, nil, 3}))
    assert.are.equal("{[3.5] = true}", pretty({[3.5] = true}))
  end)

  it("nests tables on one line while they fit in 72 columns", function()
    assert.are.equal("{a = {b = {c = {1, 2.0}}}, d = {}}", pretty({d = {}, a = {b = {c = {1, 2.0}}}}))
    -- {s = "..."} is the string's length + 8 characters
    assert.are.equal('{s = "' .. ("x"):rep(64) .. '"}', pretty({s = ("x"):rep(64)}))
    assert.are.equal('{\n  s = "' .. ("x"):rep(65) .. '"\n}', pretty({s = ("x"):rep(65)}))
  end)

  it("breaks a long table into one key per line, nested tables indented", function()
    local t = {
      name = "a rather long name that takes up a good part of the line",
      items = {{id = 1, qty = 2}, {id = 2, qty = 1.5}},
      list = {("a"):rep(30), ("b"):rep(30), ("c"):rep(30)},
    }
    assert.are.equal(table.concat({
      "{",
      "  items = {{id = 1, qty = 2}, {id = 2, qty = 1.5}},",
      "  list = {",
      '    "' .. ("a"):rep(30) .. '",',
      '    "' .. ("b"):rep(30) .. '",',
      '    "' .. ("c"):rep(30) .. '"',
      "  },",
      '  name = "a rather long name that takes up a good part of the line"',
      "}",
    }, "\n"), pretty(t))
  end)

  it("takes the width from its options", function()
    local t = {a = 1, b = {c = 2}}
    assert.are.equal("{\n  a = 1,\n  b = {c = 2}\n}", pretty(t, {width = 14}))
    assert.are.equal("{\n  a = 1,\n  b = {\n    c = 2\n  }\n}", pretty(t, {width = 12}))
    local long = {s = ("x"):rep(200), t = {("y"):rep(100)}}
    local one = pretty(long, {width = math.huge})
    assert.is_nil(one:find("\n"))
    assert.are.equal(long.s, load("return " .. one)().s)
  end)

  it("marks cycles, and only cycles", function()
    local t = {name = "t"}
    t.self = t
    t.sub = {up = t}
    assert.are.equal('{name = "t", self = <cycle>, sub = {up = <cycle>}}', pretty(t))
    local a, b = {}, {}
    a.b, b.a = b, a
    assert.are.equal("{b = {a = <cycle>}}", pretty(a))
    local shared = {1}
    assert.are.equal("{x = {1}, y = {1}}", pretty({x = shared, y = shared}))
    -- in the multi-line layout too
    local big = {s = ("x"):rep(80)}
    big.me = big
    assert.are.equal('{\n  me = <cycle>,\n  s = "' .. ("x"):rep(80) .. '"\n}', pretty(big))
    local narrow = {}
    narrow.self = narrow
    assert.are.equal("{\n  self = <cycle>\n}", pretty(narrow, {width = 4}))
  end)

  it("stops at the depth limit", function()
    local t = {x = {x = {x = {x = 1}}}, e = {}}
    assert.are.equal("{e = {}, x = {x = {...}}}", pretty(t, {depth = 2}))
    assert.are.equal("{e = {}, x = {x = {x = {x = 1}}}}", pretty(t))
    local deep = {}
    local cur = deep
    for _ = 1, 20 do
      cur.x = {}
      cur = cur.x
    end
    cur.x = 1
    -- ten levels by default
    assert.are.equal(("{x = "):rep(10) .. "{...}" .. ("}"):rep(10), pretty(deep))
    -- at most MB_MAX_DEPTH (64) levels, whatever the options ask
    local very = {}
    cur = very
    for _ = 1, 100 do
      cur.x = {}
      cur = cur.x
    end
    assert.are.equal(("{x = "):rep(64) .. "{...}" .. ("}"):rep(64), pretty(very, {depth = math.huge, width = math.huge}))
  end)

  it("prints an empty table as {} in the multi-line layout too", function()
    assert.are.equal("{}", pretty({}, {width = 1}))
    assert.are.equal("{\n  a = {}\n}", pretty({a = {}}, {width = 4}))
  end)

  it("runs no metamethod, and keys of any type keep one order", function()
    local mt = {__tostring = function() error("no tostring") end, __index = function() error("no index") end,
                __pairs = function() error("no pairs") end, __len = function() error("no len") end}
    local k1, k2 = setmetatable({1}, mt), setmetatable({2}, mt)
    local t = setmetatable({[k1] = "a", [k2] = "b", [print] = 1, [true] = 2, z = 3, [1] = 4}, mt)
    local s = pretty(t, {width = math.huge})
    -- the list, strings, then by type name: boolean, function, table
    assert.matches('^{4, z = 3, %[true%] = 2, %[<function>%] = 1, %[{[12]}%] = "[ab]", %[{[12]}%] = "[ab]"}$', s)
    for _ = 1, 3 do assert.are.equal(s, pretty(t, {width = math.huge})) end
  end)

  it("says which option is wrong", function()
    assert.has_error(function() pretty({}, {width = -1}) end,
      "mb.pretty: opts.width must be a number of at least 0, not -1")
    assert.has_error(function() pretty({}, {depth = "deep"}) end,
      "mb.pretty: opts.depth must be a number of at least 0, not deep")
    assert.has_error(function() pretty({}, 3) end)
  end)

  it("masks values under password, secret and token keys at any depth", function()
    local t = {user = {name = "bob", profile = {apiToken = "t0k", DB_Password = {1, 2},
                                                 client_secret = 5, tok = "shown"}},
               password = false, list = {"token"}}
    assert.are.equal('{list = {"token"}, password = "********", user = {name = "bob", profile = '
      .. '{DB_Password = "********", apiToken = "********", client_secret = "********", tok = "shown"}}}',
      pretty(t, {width = math.huge}))
    local multi = pretty(t)
    assert.truthy(multi:find("\n", 1, true))
    assert.is_nil(multi:find("t0k", 1, true))
    assert.is_nil(multi:find("client_secret = 5", 1, true))
    assert.is_true(masks("X_SECRET_Y"))
    assert.is_false(masks("name"))
    assert.is_false(masks(1))
  end)
end)

describe("mb.pretty.line", function()
  local line = require("mb.pretty").line

  it("is pretty's text on one line while it fits", function()
    local v = {b = {1, 2.0}, a = "x", api_token = "t", [3] = true}
    assert.are.equal(pretty(v, {width = math.huge}), line(v, 240))
    assert.are.equal('{[3] = true, a = "x", api_token = "********", b = {1, 2.0}}', line(v, 240))
  end)

  it("cuts after max characters with ..., whole pieces, a string character by character", function()
    assert.are.equal('"abc...', line("abcdef", 4))
    assert.are.equal('"a...', line("a\nb", 3)) -- never half an escape
    assert.are.equal("{1, 2, ...", line({1, 2, 3, 4}, 7))
    assert.are.equal('"' .. ("x"):rep(239) .. "...", line(("x"):rep(10 * 1024 * 1024), 240))
    local t = {}
    t.self = t
    assert.are.equal("{self = <cycle>}", line(t, 240))
  end)
end)

describe("the REPL service (lua/mb/repl.lua)", function()
  it("prints the values of expressions and nothing for statements", function()
    check({
      {"1 + 2", "ok", {"3"}},
      {"x = 10", "ok", {}},
      {"x * 2", "ok", {"20"}},
      {"7 // 2, 7 / 2", "ok", {"3\t3.5"}},
      {'"abc"', "ok", {"abc"}},
      {"nil", "ok", {"nil"}},
      {'1, "two", {3}', "ok", {"1\ttwo\t{3}"}},
      {'{b = 2, a = {1, 2.0}, ["k k"] = "v", secret = "s"}', "ok",
        {'{a = {1, 2.0}, b = 2, ["k k"] = "v", secret = "********"}'}},
      {'print("hi")', "ok", {"hi"}},
      {"", "ok", {}},
      {"   ", "ok", {}},
    })
  end)

  it("keeps globals between lines, in the globals where mb lives", function()
    check({
      {"counter = 1", "ok", {}},
      {"counter = counter + 1", "ok", {}},
      {"counter", "ok", {"2"}},
      {"type(mb.send), _G.counter", "ok", {"function\t2"}},
      {"local y = 1", "ok", {}},
      {"y", "ok", {"nil"}},
    })
  end)

  it("asks for more while a chunk is unfinished, then runs it", function()
    check({
      {"function double(a)", "more", {}},
      {"  local r = a * 2", "more", {}},
      {"  return r", "more", {}},
      {"end", "ok", {}},
      {"double(21)", "ok", {"42"}},
      {"{1,", "more", {}},
      {"2.5}", "ok", {"{1, 2.5}"}},
      {"for i = 1, 2 do", "more", {}},
      {"print(i)", "more", {}},
      {"end", "ok", {"1", "2"}},
      {"s = [[", "more", {}},
      {".help is text here", "more", {}},
      {"]]", "ok", {}},
      {"s", "ok", {".help is text here", ""}},
    })
  end)

  it("prints syntax and runtime errors on one line and goes on", function()
    check({
      {"x = = 1", "error", {"stdin:1: unexpected symbol near '='"}},
      {"foo()", "error", {"stdin:1: attempt to call a nil value (global 'foo')"}},
      {'error("boom")', "error", {"stdin:1: boom"}},
      {'error("no position", 0)', "error", {"no position"}},
      {"error({})", "error", {"(error object is a table value)"}},
      -- as mbrun says of a script's (found by the red-team pass of session 12:
      -- the REPL printed the __tostring's own error, "stdin:1: inner")
      {'error(setmetatable({}, {__tostring = function() error("inner") end}))', "error",
        {"(error object is a table value; its __tostring raised)"}},
      {"if true then", "more", {}},
      {"  local t = nil", "more", {}},
      {"  t.x = 1", "more", {}},
      {"end", "error", {"stdin:3: attempt to index a nil value (local 't')"}},
      {"end", "error", {"stdin:1: <eof> expected near 'end'"}},
      {".5 + 1", "ok", {"1.5"}},
    })
  end)

  it("runs code that waits (mb.sleep, mb.request) in its own coroutine", function()
    check({
      {'mb.destination("t/sync", {type = "synchronous"})', "ok", {"true"}},
      {'mb.listen("t/sync", function(m) return m.payload * 2 end)', "ok", {"<mb.Listener>"}},
      {"mb.sleep(0.01)", "ok", {}},
      {'(mb.request("t/sync", 21))', "ok", {"42"}},
    })
  end)

  it("forgets the unfinished input on cancel", function()
    check({
      {"<<cancel>>", "ok", {}},
      {"if true then", "more", {}},
      {"print('never')", "more", {}},
      {"<<cancel>>", "ok", {}},
      {"end", "error", {"stdin:1: <eof> expected near 'end'"}},
      {"v = {", "more", {}},
      {"<<cancel>>", "ok", {}},
      {"v", "ok", {"nil"}},
    })
  end)

  it("answers .quit and .trace with their statuses, printing nothing", function()
    check({
      {".trace on", "trace on", {}},
      {".trace off", "trace off", {}},
      {".trace", "error", {"error: usage: .trace on|off"}},
      {".trace maybe", "error", {"error: usage: .trace on|off"}},
      {".quit", "quit", {}},
    })
  end)

  it("lists the commands with .help, one line each", function()
    local steps = check({{".help", "ok", nil}})
    local out = steps[1].out
    local names = {".send DEST PAYLOAD", ".request DEST PAYLOAD [TIMEOUT]", ".listen DEST",
                   ".unlisten DEST", ".dests", ".stats [DEST]", ".load SCRIPT [N] [ARG]",
                   ".services", ".stop SERVICE", ".reload SERVICE", ".trace on|off", ".help",
                   ".quit"}
    assert.are.equal(#names + 1, #out)
    for i, name in ipairs(names) do
      assert.are.equal(name, out[i]:sub(1, #name))
      assert.truthy(out[i]:sub(#name + 1):match("^%s+%S"), "a description after " .. name)
    end
  end)

  it("says which command is unknown and how the known ones are used", function()
    check({
      {".foo", "error", {"error: unknown command '.foo' (.help lists the commands)"}},
      {".send", "error", {"error: usage: .send DEST PAYLOAD"}},
      {".send t/a", "error", {"error: usage: .send DEST PAYLOAD"}},
      {".request t/a", "error", {"error: usage: .request DEST PAYLOAD [TIMEOUT]"}},
      {".listen", "error", {"error: usage: .listen DEST"}},
      {".unlisten", "error", {"error: usage: .unlisten DEST"}},
      {".load", "error", {"error: usage: .load SCRIPT [N] [ARG]"}},
      {".dests all", "error", {"error: usage: .dests"}},
      {".stats a b", "error", {"error: usage: .stats [DEST]"}},
      {".services all", "error", {"error: usage: .services"}},
      {".stop", "error", {"error: usage: .stop SERVICE"}},
      {".reload", "error", {"error: usage: .reload SERVICE"}},
    })
  end)

  it("shows what the user typed in a command's error with control characters escaped", function()
    -- a name, path or command word went to the terminal raw: an escape
    -- sequence in it (here: red, and the bell) reached the terminal
    check({
      {".foo\27[31m", "error", {"error: unknown command '.foo\\027[31m' (.help lists the commands)"}},
      {".unlisten q\27[31mz", "error", {"error: not listening at 'q\\027[31mz'"}},
      {".stop s\7x", "error", {"error: no service 's\\007x' runs (.services lists them)"}},
      {".reload s\27]0;t\7", "error", {"error: no service 's\\027]0;t\\007' runs (.services lists them)"}},
      {".load /no/such\27[2J.lua", "error",
        {"error: mb.load: cannot open /no/such\\027[2J.lua: No such file or directory"}},
      {".send a\27[31mb 1", "error",
        {'error: mb.send: invalid destination name "a\\027[31mb" (use 1-255 characters of A-Z a-z 0-9 _ . / : -)'}},
      {".send t/s error('x\1y')", "error", {"error: payload:1: x\\001y"}},
    })
  end)

  it(".send sends Lua or JSON payloads and prints the id or the error", function()
    local steps = check({
      {'mb.destination("t/s", {type = "synchronous"})', "ok", {"true"}},
      {".send t/s 1", "error", {"error: no_listeners: destination 't/s' has no listeners"}},
      {".listen t/s", "ok", {"listening at t/s"}},
      -- a synchronous destination: the listener has printed before send returns
      {'.send t/s {x = 1, token = "s3cr3t", nested = {db_password = "p"}}', "ok",
        {'[t/s] #ID {nested = {db_password = "********"}, token = "********", x = 1}', "sent ID"}},
      {'.send t/s {"k": [1, 2.5, "x"], "n": {"a": true}}', "ok",
        {'[t/s] #ID {k = {1, 2.5, "x"}, n = {a = true}}', "sent ID"}},
      {"p = {n = 5}", "ok", {}},
      {".send t/s p", "ok", {"[t/s] #ID {n = 5}", "sent ID"}},
      {".send t/s [1, 2]", "ok", {"[t/s] #ID {1, 2}", "sent ID"}},
      {".send nowhere 1", "error", {"error: no_destination: no destination 'nowhere'"}},
      {".send t/s {a=", "error",
        {"error: PAYLOAD is neither a Lua expression nor JSON: payload:1: unexpected symbol near <eof>"}},
      {".send t/s nothing.here", "error", {"error: payload:1: attempt to index a nil value (global 'nothing')"}},
      {".send t/s print", "error", {"error: mb.send: payload: cannot send a function"}},
    })
    -- the id printed is the id of the message that arrived
    local arrived = steps[4].out[1]:match("^%[t/s%] #(%x+) ")
    assert.are.equal("sent " .. arrived, steps[4].out[2])
  end)

  it(".listen prints each arriving message on one line until .unlisten", function()
    local steps, after = session({
      'mb.destination("t/p")',
      ".listen t/p",
      ".listen t/p",
      ".listen nowhere",
      '.send t/p {long = string.rep("x", 100)}',
      'mb.send("t/p", 7, {reply_to = "t/p", values = {apiToken = "t", k = 1}})',
      "mb.sleep(0.05)",
      ".unlisten t/p",
      ".send t/p 1",
      ".unlisten t/p",
    })
    assert.are.same({}, after)
    assert.are.same({"listening at t/p"}, steps[2].out)
    assert.are.same({"error", {"error: already listening at 't/p'"}}, {steps[3].status, steps[3].out})
    assert.are.same({"error", {"error: no_destination: no destination 'nowhere'"}},
      {steps[4].status, steps[4].out})
    -- a parallel destination: the message is printed once its delivery runs
    local all = {}
    for i = 5, 7 do
      for _, l in ipairs(steps[i].out) do
        if l:match("^sent ") or l:match("^%[t/p%]") then all[#all + 1] = norm(l) end
      end
    end
    assert.are.same({
      "sent ID",
      '[t/p] #ID {long = "' .. ("x"):rep(100) .. '"}',
      '[t/p] #ID 7  values={apiToken = "********", k = 1}  reply_to=t/p',
    }, all)
    assert.are.same({"stopped listening at t/p"}, steps[8].out)
    -- its listener is gone: nobody listens there any more
    assert.are.same({"error: no_listeners: destination 't/p' has no listeners"}, steps[9].out)
    assert.are.same({"error", {"error: not listening at 't/p'"}}, {steps[10].status, steps[10].out})
  end)

  it(".load starts a service and .request prints its reply", function()
    check({
      {'mb.destination("t/e")', "ok", {"true"}},
      {".load " .. ECHO .. ' {destination = "t/e"}', "ok", {"loaded " .. ECHO .. " (1 instance)"}},
      {".request t/e {n = 1}", "ok", {"{n = 1}"}},
      {".request t/e {n = 1} 2", "ok", {"{n = 1}"}},
      {".request t/e 7 2.5", "ok", {"7"}},
      {".request t/e 3", "ok", {"3"}},
      {'.request t/e [1, {"a": 2, "password": "p"}] 1', "ok", {'{1, {a = 2, password = "********"}}'}},
      {".request t/e nil", "ok", {"nil"}},
      -- the TIMEOUT is the last word, and must be positive
      {".request t/e 1 -1", "error",
        {"error: TIMEOUT (the last word) must be a positive number of seconds, not -1"}},
      {".request t/e {n = 1} 0", "error",
        {"error: TIMEOUT (the last word) must be a positive number of seconds, not 0"}},
      {".request t/e 1 - 1", "ok", {"0"}},
      {".request t/e 1 1e999", "ok", {"1"}}, -- math.huge: no limit
      {".request nowhere 1", "error", {"error: no_destination: no destination 'nowhere'"}},
      {'mb.destination("t/e2")', "ok", {"true"}},
      {".load " .. ECHO .. ' 2 {"destination": "t/e2"}', "ok", {"loaded " .. ECHO .. " (2 instances)"}},
      {'mb.stats("t/e2").listeners', "ok", {"2"}},
      {".request t/e2 {ok = true}", "ok", {"{ok = true}"}},
      {".load " .. ECHO .. " 0", "error", {"error: N must be a whole number, 1 or more"}},
      {".load " .. ECHO .. " {a=", "error",
        {"error: ARG is neither a Lua expression nor JSON: payload:1: unexpected symbol near <eof>"}},
      {".load no/such/script.lua", "error",
        {"error: mb.load: cannot open no/such/script.lua: No such file or directory"}},
    })
  end)

  it("shows a path or service name with control characters escaped in its success line too",
    function()
      -- .load, .reload and .stop echoed them raw: a file named with an
      -- escape sequence (here: clear the screen) reached the terminal
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir))
      local path = dir .. "/x\27[2J.lua"
      helper.write(path, "mb.listen('t/x', function() return 1 end)\n")
      local shown = dir .. "/x\\027[2J.lua"
      check({
        {'mb.destination("t/x")', "ok", {"true"}},
        {".load " .. path, "ok", {"loaded " .. shown .. " (1 instance)"}},
        {".reload x\27[2J", "ok", {"reloaded x\\027[2J (1 instance)"}},
        {".stop x\27[2J", "ok", {"stopped x\\027[2J (1 instance)"}},
      })
      os.remove(path)
      os.remove(dir)
    end)

  it(".reload loads a service's script again, and keeps it as it was when the file is wrong",
    function()
      local path = os.tmpname() .. ".lua"
      local function version(v, extra)
        helper.write(path, ("%s\nmb.listen('t/v', function() return %q end)\n"):format(
          extra or "", v))
      end
      version("v1")
      local short = path:match("([^/]*)%.lua$")
      check({
        {'mb.destination("t/v")', "ok", {"true"}},
        {".load " .. path .. " 2", "ok", {"loaded " .. path .. " (2 instances)"}},
        {".request t/v 0", "ok", {'"v1"'}},
        {"ok = io.open(" .. ("%q"):format(path) .. ", 'w'):write([[mb.listen('t/v', " ..
         "function() return 'v2' end)]]):close()", "ok", {}},
        {".reload " .. short, "ok", {"reloaded " .. short .. " (2 instances)"}},
        {".request t/v 0", "ok", {'"v2"'}},
        {"ok = io.open(" .. ("%q"):format(path) .. ", 'w'):write('(((('):close()", "ok", {}},
        {".reload " .. path, "error", {"error: failed: " .. path ..
          ":1: unexpected symbol near <eof> (" .. path .. " keeps running as it was)"}},
        {".request t/v 0", "ok", {'"v2"'}},
        {".reload nothing", "error", {"error: no service 'nothing' runs (.services lists them)"}},
      })
      os.remove(path)
    end)

  it(".services lists the services, and .stop stops one by its name or file name", function()
    local sink = helper.write(os.tmpname() .. ".lua", [[
      mb.listen("t/n", function(m) return m.payload end)
    ]])
    local steps = check({
      {'mb.destination("t/e")', "ok", {"true"}},
      {'mb.destination("t/n")', "ok", {"true"}},
      {".load " .. ECHO .. ' {destination = "t/e"}', "ok", {"loaded " .. ECHO .. " (1 instance)"}},
      {".load " .. ECHO .. ' 2 {destination = "t/e"}', "ok", {"loaded " .. ECHO .. " (2 instances)"}},
      {'h = mb.load(' .. ("%q"):format(sink) .. ', {name = "the sink"})', "ok", {}},
      {".request t/e 1", "ok", {"1"}},
      {".request t/n 2", "ok", {"2"}},
      {".services", "ok", nil},
      {".stop echo", "ok", {"stopped echo (3 instances)"}},
      {".request t/e 1", "error", {"error: no_listeners: destination 't/e' has no listeners"}},
      {".stop echo", "error", {"error: no service 'echo' runs (.services lists them)"}},
      {".stop the sink", "ok", {"stopped the sink (1 instance)"}},
      {".services", "ok", nil},
    })
    os.remove(sink)
    -- columns two spaces apart after the widest cell; the driver is the scenario
    local rows = {}
    for i, line in ipairs(steps[8].out) do
      rows[i] = {}
      for cell in (line .. "  "):gmatch("(.-)  +") do rows[i][#rows[i] + 1] = cell end
    end
    assert.are.same({
      {"name", "path", "instances", "worker", "deliveries", "failures"},
      {DRIVER, DRIVER, "1", "0", "0", "0"},
      {ECHO, ECHO, "1", "0", "1", "0"},
      {ECHO, ECHO, "2", "0,0", "1", "0"}, -- (each group gets every message)
      {"the sink", sink, "1", "0", "1", "0"},
    }, rows)
    local header = steps[8].out[1]
    assert.are.equal(#DRIVER + 2, header:find("path", 1, true) - 1, header)
    assert.are.same({DRIVER}, {steps[13].out[2]:match("^(%S+)")})
    assert.are.equal(2, #steps[13].out)
  end)

  it(".stop refuses a file name that stands for services of different names", function()
    local dir = helper.tmpdir()
    local other = helper.write(dir .. "/echo.lua", "mb.listen('t/o', function() end)\n")
    check({
      {'mb.destination("t/e")', "ok", {"true"}},
      {'mb.destination("t/o")', "ok", {"true"}},
      {".load " .. ECHO .. ' {destination = "t/e"}', "ok", {"loaded " .. ECHO .. " (1 instance)"}},
      {".load " .. other, "ok", {"loaded " .. other .. " (1 instance)"}},
      {".stop echo", "error",
        {"error: 'echo' could be " .. ECHO .. " or " .. other .. ": give the name as .services shows it"}},
      {".stop " .. other, "ok", {"stopped " .. other .. " (1 instance)"}},
      {".stop echo", "ok", {"stopped echo (1 instance)"}},
      {'mb.stats("t/e").listeners + mb.stats("t/o").listeners', "ok", {"0"}},
    })
    helper.remove_tree(dir)
  end)

  it(".request gives up after TIMEOUT seconds when nobody answers", function()
    local t0 = os.time()
    check({
      {'mb.destination("t/q")', "ok", {"true"}},
      {".listen t/q", "ok", {"listening at t/q"}},
      -- the REPL's own listener prints it and does not answer
      {".request t/q {a = 1} 0.2", "error",
        {"[t/q] #ID {a = 1}", "error: timeout: no reply from t/q within 0.2 s"}},
    })
    assert.is_true(os.time() - t0 < 5, "the default timeout was used")
  end)

  it(".dests and .stats show every destination but the REPL's own", function()
    local steps = check({
      {'mb.destination("t/slow", {type = "serial"})', "ok", {"true"}},
      {'mb.destination("t/sync", {type = "synchronous"})', "ok", {"true"}},
      -- held until `go` is set, so the other two stay pending
      {'mb.listen("t/slow", function() while not go do mb.sleep(0.01) end end)', "ok", {"<mb.Listener>"}},
      {'for i = 1, 3 do mb.send("t/slow", i) end', "ok", {}},
      {".dests", "ok", {
        "t/slow  serial       listeners=1  pending=2",
        "t/sync  synchronous  listeners=0  pending=0",
      }},
      {".stats t/slow", "ok", nil},
      {".stats", "ok", nil},
      {".stats nowhere", "error", {"error: no_destination: no destination 'nowhere'"}},
      {"go = true", "ok", {}},
    })
    -- the stats table, pretty: one key a line, and Lua that reads back
    local out = steps[6].out
    assert.are.same({"{", "  delivered = 0,", "  deliveries = 1,"}, {out[1], out[2], out[3]})
    assert.are.equal("}", out[#out])
    local s = load("return " .. table.concat(out, "\n"))()
    s.largest_pending = nil -- 2 or 3, depending on when the first was dispatched
    assert.are.same({type = "serial", listeners = 1, sent = 3, rejected = 0, deliveries = 1, delivered = 0,
                     failed = 0, dropped = 0, pending = 2, in_flight = 1, replies = 0, timeouts = 0}, s)
    out = steps[7].out
    assert.are.equal(2, #out)
    assert.are.equal("t/slow  sent=3  rejected=0  delivered=0  failed=0  dropped=0  pending=2  "
      .. "in_flight=1  replies=0  timeouts=0", out[1])
    assert.truthy(out[2]:match("^t/sync  sent=0  "))
  end)
end)
