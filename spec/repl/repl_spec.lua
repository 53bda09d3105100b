-- The REPL driven through a pipe, as scripts and tests drive it: mbrun
-- reads stdin line by line, prints results with no prompt and no escape
-- codes, and exits at the end of input once pending work is done. Every
-- command, its errors, multi-line input, -i after a scenario and -c with -i.
-- (spec/repl/repl_lua_spec.lua tests lua/mb/repl.lua in more detail;
-- spec/repl/repl_tty_spec.lua the terminal.)
--
--   LUA_CPATH='build/?.so;;' lua5.4 /usr/bin/busted spec/repl/repl_spec.lua
--
-- Run from the project root; MBRUN names the mbrun to test.

local helper = require "spec.helper"
local write = helper.write

-- Pipes `lines` into mbrun with args; returns stdout lines, stderr text and
-- the exit status.
local function repl(lines, args)
  local input = write(os.tmpname(), table.concat(lines, "\n") .. "\n")
  local out, err, code = helper.mbrun(args or "-w 2", {stdin = input})
  os.remove(input)
  local t = {}
  for l in out:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t, err, code, out
end

describe("the REPL on a pipe", function()
  it("evaluates Lua, keeps globals, continues unfinished input, and prints no prompt", function()
    local out, err, code, raw = repl({
      "x = 6",
      "x * 7",
      "function twice(n)",
      "  return n * 2",
      "end",
      "twice(x), 'two', nil",
      "{b = 2, a = {1, 2}, db_password = 'pw'}",
      "undefined_fn()",
      "for i = 1,",
    })
    assert.are.equal(0, code, err)
    assert.are.same({
      "42",
      "12\ttwo\tnil",
      '{a = {1, 2}, b = 2, db_password = "********"}',
      "stdin:1: attempt to call a nil value (global 'undefined_fn')",
      "error: the input ended inside an unfinished Lua chunk",
    }, out)
    assert.not_matches("mb>", raw)
    assert.not_matches("\27", raw) -- no escape codes
    assert.are.equal("", err)
  end)

  it("sends, requests, listens and unlistens with .commands", function()
    local out, err, code = repl({
      'mb.destination("shop/orders")',
      ".load scripts/echo.lua {destination = 'shop/orders'}",
      ".request shop/orders {item = 'swing', token = 't'}",
      '.request shop/orders {"item": "json", "n": [1, 2]} 2',
      'mb.destination("shop/news")',
      ".listen shop/news",
      ".send shop/news {headline = 'slides on sale'}",
      "mb.sleep(0.1)",
      ".unlisten shop/news",
    })
    assert.are.equal(0, code, err)
    assert.are.equal("true", out[1])
    assert.are.equal("loaded scripts/echo.lua (1 instance)", out[2])
    assert.are.equal('{item = "swing", token = "********"}', out[3])
    assert.are.equal('{item = "json", n = {1, 2}}', out[4])
    assert.are.equal("listening at shop/news", out[6])
    assert.matches("^sent %x+$", out[7])
    assert.matches('^%[shop/news%] #%x+ {headline = "slides on sale"}$', out[8])
    assert.are.equal("stopped listening at shop/news", out[9])
  end)

  it(".listen cuts a long payload and long values as --trace does", function()
    local out, err, code = repl({
      'mb.destination("big", {type = "synchronous"})',
      ".listen big",
      ".trace on",
      'mb.send("big", string.rep("y\\n", 100000), {values = {v = string.rep("z", 500)}})',
      'mb.send("big", {1, 2, {3, string.rep("w", 300)}})',
    }, "-w 1")
    assert.are.equal(0, code, err)
    local traced = {}
    for payload in ("\n" .. err):gmatch("\ntrace [^\n]*  ok  %S+  ([^\n]*)") do traced[#traced + 1] = payload end
    local listed = {}
    for _, l in ipairs(out) do
      local payload = l:match("^%[big%] #%x+ (.*)$")
      if payload then listed[#listed + 1] = payload end
    end
    assert.are.equal(2, #listed, table.concat(out, "\n"))
    assert.are.same(traced, listed)
    -- 240 characters of the payload, 120 of the values, then "..." for the rest
    assert.are.equal('"' .. ("y\\n"):rep(79) .. 'y...  values={v = "' .. ("z"):rep(114) .. '...',
      listed[1])
    assert.are.equal('{1, 2, {3, "' .. ("w"):rep(228) .. '...', listed[2])
  end)

  it("prints one clear line for each mistake and goes on", function()
    local out, err, code = repl({
      ".bogus",
      ".send",
      ".send nowhere 1",
      ".send shop/x {{{",
      'mb.destination("quiet")',
      ".request quiet 1",
      'mb.listen("quiet", function() mb.sleep(1) end)',
      ".request quiet 1 0.1",
      ".unlisten quiet",
      ".listen nowhere",
      ".load no/such/script.lua",
      ".stats nowhere",
      ".trace maybe",
      "1 + 1",
    })
    assert.are.same({
      "error: unknown command '.bogus' (.help lists the commands)",
      "error: usage: .send DEST PAYLOAD",
      "error: no_destination: no destination 'nowhere'",
      "error: PAYLOAD is neither a Lua expression nor JSON: payload:1: unexpected symbol near <eof>",
      "true",
      "error: no_listeners: destination 'quiet' has no listeners",
      "<mb.Listener>",
      "error: timeout: no reply from quiet within 0.1 s",
      "error: not listening at 'quiet'",
    }, {table.unpack(out, 1, 9)})
    assert.matches("^error: ", out[10])
    assert.matches("^error: mb.load: cannot open no/such/script.lua", out[11])
    assert.are.equal("error: no_destination: no destination 'nowhere'", out[12])
    assert.matches("^error: usage: .trace on|off", out[13])
    assert.are.equal("2", out[14]) -- still going
    assert.are.equal(0, code, err)
  end)

  it("lists destinations and statistics, and traces on demand", function()
    local out, err, code = repl({
      'mb.destination("a/serial", {type = "serial"})',
      'mb.listen("a/serial", function() end)',
      ".dests",
      ".trace on",
      'mb.send("a/serial", {password = "hunter2"})',
      "mb.sleep(0.05)",
      ".trace off",
      ".stats a/serial",
      ".stats",
    })
    assert.are.equal(0, code, err)
    assert.are.equal("a/serial  serial       listeners=1  pending=0", out[3])
    assert.are.equal("trace on", out[4])
    assert.matches("^trace +[%d.]+  %x+  a/serial  repl %-> repl  ok  %S+  {password = \"%*+\"}", err)
    assert.not_matches("hunter2", err)
    assert.not_matches("mb/repl", err) -- the REPL's own traffic is not traced
    assert.are.equal("trace off", out[6])
    assert.are.equal("{", out[7])
    local text = table.concat(out, "\n")
    assert.matches("\n  delivered = 1,\n", text)
    assert.matches("\na/serial  sent=1  rejected=0  delivered=1", text)
  end)

  it("shows .help, leaves on .quit, and delivers what is pending at the end of input", function()
    local out, err, code = repl({
      ".help",
      'mb.destination("slow", {type = "serial"})',
      'mb.listen("slow", function(m) mb.sleep(0.05) print("done " .. m.payload) end)',
      "for i = 1, 5 do mb.send('slow', i) end",
      ".quit",
      "print('not read')",
    })
    assert.are.equal(0, code, err)
    local text = table.concat(out, "\n")
    for _, cmd in ipairs {".send", ".request", ".listen", ".unlisten", ".dests", ".stats", ".load",
                          ".services", ".stop", ".trace", ".help", ".quit"} do
      assert.matches("\n?%" .. cmd .. " ", text)
    end
    for i = 1, 5 do assert.matches("done " .. i, text) end
    assert.not_matches("not read", text)
  end)

  it("stops the timers still set at the end of input, saying so, and delivers what is pending", function()
    -- (were the ticker waited for, mbrun would run until the spec's timeout: exit 124)
    local _, err, code, out = repl({
      'mb.destination("slow", {type = "serial"})',
      'mb.listen("slow", function(m) mb.sleep(0.05) print("done " .. m.payload) end)',
      "for i = 1, 3 do mb.send('slow', i) end",
      'mb.after(0.5, function() print("after fired") end)',
      'ticker = mb.every(0.3, function() print("tick") end)',
    })
    assert.are.equal(0, code, err)
    for i = 1, 3 do assert.matches("done " .. i, out) end
    assert.not_matches("after fired", out)
    assert.not_matches("tick", out)
    assert.are.equal("mbrun: the input ended with 2 timers (mb.after, mb.every) still set; they " ..
      "stop without firing (end the input with mb.sleep(SECONDS) to let them fire first)\n", err)
    -- a wait at the end lets them fire; one stopped by the user is not counted
    local lines
    lines, err, code = repl({
      'mb.after(0.05, function() print("after fired") end)',
      'ticker = mb.every(0.02, function() print("tick") end)',
      'stopped = mb.every(1, print); stopped:stop()',
      "mb.sleep(0.2)",
      "ticker:stop()",
    })
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    local text = table.concat(lines, "\n")
    assert.matches("after fired", text)
    assert.matches("tick", text)
  end)

  it("leaves at once when stdin is closed or empty", function()
    for _, redirect in ipairs {"<&-", "< /dev/null"} do
      local out, err, code = helper.mbrun("-w 1 " .. redirect)
      assert.are.equal(0, code, err)
      assert.are.equal("", out)
    end
  end)

  -- found by the red-team pass of session 12: piped, SIGINT was taken as
  -- the REPL's Ctrl-C, which only a terminal has; a line that spun kept
  -- mbrun running for ever (the signal unanswered, no grace period begun)
  it("stops mbrun on SIGINT, as SIGTERM does, while a line spins", function()
    local input = write(os.tmpname(), 'print("spinning") while true do end\n')
    for _, w in ipairs {1, 2} do
      local out, err, code, ms = helper.mbrun_signalled(("-w %d --grace 1 < %s"):format(w, input),
        {ready = "spinning", signals = {"INT"}, bound = 15})
      assert.are.equal(1, code, out .. err)
      assert.is_true(ms < 2500 and ms >= 900, ms .. " ms\n" .. err)
      helper.assert_contains(err, "mbrun: SIGINT: a handler on worker 0 has not returned yet",
        "failed: aborted: shutting down (the grace period of 1 s is over)")
    end
    os.remove(input)
  end)

  -- found by the red-team pass of session 12: the session went on, but
  -- every later line said "cannot reach the REPL service: closed"
  it("refuses to remove its own mb/repl, and goes on", function()
    local out, err, code = repl({
      'mb.remove_destination("mb/repl")',
      'pcall(mb.remove_destination, "mb/repl")',
      'mb.destination("mine")',
      'mb.remove_destination("mine")',
      '1 + 1',
    })
    assert.are.same({
      "mb.remove_destination: 'mb/repl' is the REPL's own destination; removing it " ..
        "would end this session (.quit or Ctrl-D leave)",
      "false\tmb.remove_destination: 'mb/repl' is the REPL's own destination; removing it " ..
        "would end this session (.quit or Ctrl-D leave)",
      "true",
      "true",
      "2",
    }, {table.unpack(out, 1, 5)})
    assert.are.equal(0, code, err)
  end)

  it("hides only its own mb/repl, not a user's destination that starts the same", function()
    local out, err, code = repl({
      'mb.destination("mb/replay")',
      'mb.listen("mb/replay", function() end)',
      ".dests",
    }, "-w 1 --stats")
    assert.are.equal(0, code, err)
    assert.are.equal("mb/replay  parallel     listeners=1  pending=0", out[3])
    assert.matches("\nmb/replay +parallel", err)
    assert.not_matches("\nmb/repl ", err)
  end)

  it("opens after a scenario with -i, and next to a configuration with -c and -i", function()
    local dir = helper.tmpdir()
    local scenario = write(dir .. "/scenario.lua", [[
      mb.destination("prices", {type = "synchronous"})
      mb.listen("prices", function(m) return m.payload.qty * 2.5 end)
      print("scenario ran")
    ]])
    local out, err, code = repl({".request prices {qty = 4}"}, "-w 1 -i " .. scenario)
    assert.are.equal(0, code, err)
    assert.are.same({"scenario ran", "10.0"}, out)
    write(dir .. "/double.lua", "return function(m) return m.payload * 2 end\n")
    local config = write(dir .. "/config.lua", [[
      return {destinations = {double = {}}, listeners = {["double.lua"] = {"double"}}}
    ]])
    out, err, code = repl({".request double 21", ".dests"}, "-w 2 -i -c " .. config)
    helper.remove_tree(dir)
    assert.are.equal(0, code, err)
    assert.are.same({"42", "double  parallel     listeners=1  pending=0"}, out)
  end)

  -- issue 12, item 8
  it("says in one line that a .load failed, and goes on with exit status 0", function()
    local dir = helper.tmpdir()
    local bad = write(dir .. "/refuses.lua", [[
      mb.listen("svc/x", function() end)
      mb.every(0.01, function() end)
      error("this service refuses to start")
    ]])
    local out, err, code = repl({
      'mb.destination("svc/x")',
      ".load " .. bad .. " 2",
      'mb.stats("svc/x").listeners',
      "1 + 1",
    }, "-w 3")
    helper.remove_tree(dir)
    assert.are.equal(0, code, err)
    assert.are.same({"true", "error: failed: " .. bad .. ":3: this service refuses to start", "0", "2"}, out)
    assert.are.equal("", err)
  end)
end)
