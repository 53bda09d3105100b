-- The ready scripts in scripts/, loaded by path as users load them: the
-- logger, echo, counter, JSON-lines sink, load generator and forwarder.
-- What they print is checked through mbrun as a subprocess; the rest runs
-- in this process with mb.load.
local mb = require "mb"
local helper = require "spec.helper"
local write_file = helper.write


-- scripts/ next to this spec's folder, wherever busted runs from
local SCRIPTS = helper.ROOT .. "/scripts"
local function script(name) return SCRIPTS .. "/" .. name end

local function tmpfile(suffix)
  local path = os.tmpname()
  os.remove(path)
  return path .. (suffix or "")
end


local function read_lines(path)
  local lines = {}
  for line in io.lines(path) do lines[#lines + 1] = line end
  return lines
end

-- Runs mbrun on a scenario (the text, with SCRIPTS standing for the
-- scripts folder); returns its output (stdout and stderr), exit code and
-- wall-clock seconds.
local function mbrun(text)
  local path = tmpfile(".lua")
  write_file(path, ("local SCRIPTS = %q\n"):format(SCRIPTS) .. text)
  -- (timeout: a scenario that never ends fails its test with exit code 124)
  local out, _, code, secs = helper.mbrun(path, {merge = true})
  os.remove(path)
  return out, code, secs
end

local function count_matches(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

describe("scripts", function()
  local services, files, base

  before_each(function()
    services, files = {}, {}
    base = mb._counts().services
  end)

  -- loads a script with its one table of options; stopped after the test
  local function load(name, opts, extra)
    local load_opts = {args = {opts}}
    for k, v in pairs(extra or {}) do load_opts[k] = v end
    local h = mb.load(script(name), load_opts)
    services[#services + 1] = h
    return h
  end

  after_each(function()
    for _, h in ipairs(services) do h:stop() end
    for _, d in ipairs(mb.destinations()) do helper.assert_invariant(d) end
    for _, d in ipairs(mb.destinations()) do mb.remove_destination(d) end
    mb.run()
    for _, f in ipairs(files) do os.remove(f) end
    helper.assert_clean()
    assert.are.equal(base, mb._counts().services, "a loaded service was left running")
  end)

  describe("logger.lua", function()
    it("prints one pretty, masked line per message at each destination", function()
      local out, code = mbrun([[
        mb.destination("shop/orders")
        mb.destination("shop/users")
        mb.load(SCRIPTS .. "/logger.lua",
          {args = {{destinations = {"shop/orders", "shop/users"}, prefix = "log"}}})
        local function sent(id) io.stdout:write("sent ", id, "\n") io.stdout:flush() end
        sent(mb.send("shop/orders", {item = "swing", qty = 2, price = 12.5, total = 25.0,
                                     tags = {"red", "big"}, [7] = true},
                     {values = {Auth_Token = "tok-123", user = "ann"}}))
        sent(mb.send("shop/users", {name = "bob", PASSWORD = "hunter2", note = "two\nlines\t\"q\"",
          profile = {api = {client_secret = "s3cr3t",
                            sessions = {{session_token = "sess-9", n = 1}}},
                     secrets = {"a-secret-list"}}}))
        sent(mb.send("shop/orders", nil, {reply_to = "shop/users"}))
      ]])
      assert.are.equal(0, code, out)
      local ids = {}
      for id in out:gmatch("sent (%x+)\n") do ids[#ids + 1] = id end
      assert.are.equal(3, #ids, out)
      -- one line per message, found by its id (parallel destinations keep
      -- no order between messages)
      local lines, n = {}, 0
      for line in out:gmatch("[^\n]+") do
        if line:find("[log]", 1, true) == 1 then
          n = n + 1
          lines[line:match(" #(%x+) ")] = line
        end
      end
      assert.are.equal(3, n, out)
      local T = "^%[log%] %+%d+%.%d%d%ds "
      assert.matches(T .. "shop/orders #" .. ids[1] .. " ", lines[ids[1]])
      assert.are.equal(
        ' {[7] = true, item = "swing", price = 12.5, qty = 2, tags = {"red", "big"}, total = 25.0}'
          .. ' values={Auth_Token = ********, user = "ann"}',
        lines[ids[1]]:match(" #%x+( .*)$"))
      assert.matches(T .. "shop/users #" .. ids[2] .. " ", lines[ids[2]])
      assert.are.equal(
        ' {PASSWORD = ********, name = "bob", note = "two\\nlines\\t\\"q\\"",'
          .. ' profile = {api = {client_secret = ********, sessions = {{n = 1, session_token = ********}}},'
          .. ' secrets = ********}}',
        lines[ids[2]]:match(" #%x+( .*)$"))
      assert.matches(T .. "shop/orders #" .. ids[3] .. " nil reply_to=shop/users$", lines[ids[3]])
      for _, secret in ipairs {"tok-123", "hunter2", "s3cr3t", "sess-9", "a-secret-list"} do
        assert.is_nil(out:find(secret, 1, true), secret .. " was printed")
      end
    end)

    it("masks extra keys and cuts long strings when told", function()
      local out, code = mbrun([[
        mb.destination("l")
        mb.load(SCRIPTS .. "/logger.lua",
          {args = {{destination = "l", mask = {"Card"}, max_string = 5}}})
        mb.send("l", {credit_card = "4111-1111", name = "abcdefgh", n = 1})
      ]])
      assert.are.equal(0, code, out)
      assert.matches('^%+%d+%.%d%d%ds l #%x+ {credit_card = %*%*%*%*%*%*%*%*, n = 1, '
        .. 'name = "abcde"%.%.%.%(8 bytes%)}\n$', out)
    end)
  end)

  describe("echo.lua", function()
    it("answers requests with the payload and values it got", function()
      mb.destination("svc/echo")
      load("echo.lua", {destination = "svc/echo"})
      local payload = {n = 1, f = 1.0, s = "bin\0ary", list = {1, 2, {deep = true}}}
      local got, reply = mb.request("svc/echo", payload, {values = {k = "v", n = 2}, timeout = 2})
      assert.are.same(payload, got)
      assert.are.equal("float", math.type(got.f))
      assert.are.same({k = "v", n = 2}, reply.values)
      -- a nil payload is echoed too (a handler returning nil would not answer)
      local none, msg = mb.request("svc/echo", nil, {timeout = 2})
      assert.is_nil(none)
      assert.is_table(msg)
      assert.is_string(msg.response_id)
    end)

    it("answers reply_to call-backs, takes plain sends, and waits its delay", function()
      mb.destination("svc/slow")
      mb.destination("svc/replies")
      load("echo.lua", {destination = "svc/slow", delay = 0.2})
      local replies = {}
      mb.listen("svc/replies", function(m) replies[#replies + 1] = m end)
      local id = mb.send("svc/slow", "call me back", {reply_to = "svc/replies"})
      assert.truthy(mb.send("svc/slow", "no answer wanted"))
      local t0 = mb.now()
      local got = mb.request("svc/slow", "hello", {timeout = 5})
      assert.are.equal("hello", got)
      assert.is_true(mb.now() - t0 >= 0.15)
      mb.run()
      assert.are.equal(1, #replies)
      assert.are.equal("call me back", replies[1].payload)
      assert.are.equal(id, replies[1].response_id)
      local st = mb.stats("svc/slow")
      assert.are.equal(3, st.delivered)
      assert.are.equal(0, st.failed)
    end)

    it("shares the messages between instances, and each load answers request_all", function()
      mb.destination("svc/many")
      load("echo.lua", {destination = "svc/many"}, {instances = 3})
      load("echo.lua", {destination = "svc/many"})
      for i = 1, 20 do assert.are.equal(i, mb.request("svc/many", i)) end
      local all = mb.request_all("svc/many", "x", {timeout = 2})
      assert.are.equal(2, #all)
      for _, a in ipairs(all) do assert.are.equal("x", a.payload) end
    end)
  end)

  describe("counter.lua", function()
    it("counts exactly and sums a field per destination, answering at its report destination", function()
      mb.destination("c/a")
      mb.destination("c/b", {type = "serial"})
      load("counter.lua", {destinations = {"c/a", "c/b"}, field = "order.qty"})
      assert.is_true(mb.has_destination("c/a/count"))
      for i = 1, 1000 do assert.truthy(mb.send("c/a", {order = {qty = i}})) end
      for _ = 1, 10 do assert.truthy(mb.send("c/b", {order = {qty = 0.5}})) end
      assert.truthy(mb.send("c/b", {order = {qty = "many"}}))
      assert.truthy(mb.send("c/b", "no order"))
      mb.run()
      local totals = mb.request("c/a/count", nil, {timeout = 2})
      assert.are.same({count = 1000, sum = 500500, skipped = 0}, totals.destinations["c/a"])
      assert.are.same({count = 12, sum = 5.0, skipped = 2}, totals.destinations["c/b"])
      assert.are.equal(1012, totals.count)
      assert.are.equal(500505.0, totals.sum)
      assert.are.equal(2, totals.skipped)
      assert.are.equal("integer", math.type(totals.destinations["c/a"].sum))
      -- reset after answering
      assert.are.equal(1012, mb.request("c/a/count", {reset = true}).count)
      assert.are.same({count = 0, sum = 0, skipped = 0, destinations = {
        ["c/a"] = {count = 0, sum = 0, skipped = 0}, ["c/b"] = {count = 0, sum = 0, skipped = 0}}},
        mb.request("c/a/count"))
    end)

    it("counts without a field, at a report destination of its choice", function()
      mb.destination("c/x")
      load("counter.lua", {destination = "c/x", report = "stats/x"})
      for i = 1, 1000 do mb.send("c/x", i) end
      mb.run()
      local t = mb.request("stats/x")
      assert.are.equal(1000, t.count)
      assert.are.equal(0, t.sum)
    end)

    it("prints totals every N seconds while messages come, and lets the bus end", function()
      local out, code, secs = mbrun([[
        mb.destination("c/tick")
        mb.load(SCRIPTS .. "/counter.lua", {args = {{destination = "c/tick", field = "n", every = 0.1}}})
        for i = 1, 20 do
          mb.send("c/tick", {n = i})
          mb.sleep(0.02)
        end
      ]])
      assert.are.equal(0, code, out)
      assert.is_true(count_matches(out, "%[counter%] c/tick count=%d+ sum=%d+") >= 2, out)
      assert.matches("%[counter%] c/tick count=20 sum=210 %(%+%d+, [%d.]+/s%)\n$", out)
      assert.is_true(secs < 3, "mbrun ran " .. secs .. " s")
    end)

    it("prints its totals when a request asks", function()
      local out, code = mbrun([[
        mb.destination("c/p")
        mb.load(SCRIPTS .. "/counter.lua", {args = {{destination = "c/p", field = "n", prefix = "total"}}})
        for i = 1, 3 do mb.send("c/p", {n = i}) end
        mb.send("c/p", {})
        mb.sleep(0.01)
        local t = mb.request("c/p/count", {print = true})
        print("answered " .. t.count)
      ]])
      assert.are.equal(0, code, out)
      assert.matches("^%[total%] c/p count=4 sum=6 %(%+4, [%d.]+/s%) skipped=1\nanswered 4\n$", out)
    end)

    it("prints nothing and starts no timer while no message comes", function()
      local out, code = mbrun([[
        mb.destination("c/quiet")
        mb.load(SCRIPTS .. "/counter.lua", {args = {{destination = "c/quiet", every = 0.05}}})
      ]])
      assert.are.equal(0, code, out)
      assert.are.equal("", out) -- no message, no timer, no line
    end)
  end)

  describe("sink.lua", function()
    it("writes one valid JSON line per message, with the message's fields", function()
      local path = tmpfile(".jsonl")
      files[#files + 1] = path
      write_file(path, "an old line, replaced\n")
      mb.destination("k/a", {type = "serial"})
      mb.destination("k/b")
      load("sink.lua", {destinations = {"k/a", "k/b"}, path = path, append = false})
      local ids = {}
      for i = 1, 100 do
        ids[i] = assert(mb.send("k/a", {n = i, f = i + 0.5, s = "line\n" .. i, list = {i, "two"}},
          {values = {i = i, password = "not masked here"}}))
      end
      local other = assert(mb.send("k/b", nil, {reply_to = "k/a"}))
      mb.run()
      local lines = read_lines(path)
      assert.are.equal(101, #lines)
      local at_a = {}
      for _, line in ipairs(lines) do
        local m = mb.json.decode(line)
        if m.destination == "k/a" then
          at_a[#at_a + 1] = m
        else
          assert.are.same({destination = "k/b", id = other, values = {}, reply_to = "k/a"}, m)
          assert.matches('^{"destination":"k/b","id":"%x+","payload":null,"values":{},"reply_to":"k/a"}$', line)
        end
      end
      assert.are.equal(100, #at_a)
      for i, m in ipairs(at_a) do -- a serial destination: in send order
        assert.are.equal(ids[i], m.id)
        assert.are.same({n = i, f = i + 0.5, s = "line\n" .. i, list = {i, "two"}}, m.payload)
        assert.are.equal("float", math.type(m.payload.f))
        assert.are.same({i = i, password = "not masked here"}, m.values)
      end
    end)

    it("appends by default", function()
      local path = tmpfile(".jsonl")
      files[#files + 1] = path
      mb.destination("k/c")
      local h = load("sink.lua", {destination = "k/c", path = path})
      for i = 1, 5 do mb.send("k/c", i) end
      mb.run()
      h:stop()
      load("sink.lua", {destination = "k/c", path = path})
      for i = 6, 10 do mb.send("k/c", i) end
      mb.run()
      local lines = read_lines(path)
      assert.are.equal(10, #lines)
      for i, line in ipairs(lines) do assert.are.equal(i, mb.json.decode(line).payload) end
    end)

    it("fails a delivery it cannot write, naming the message and the file", function()
      local out, code = mbrun([[
        mb.destination("k/full")
        mb.load(SCRIPTS .. "/sink.lua", {args = {{destination = "k/full", path = "/dev/full"}}})
        print("sent " .. mb.send("k/full", {n = 1}))
      ]])
      assert.are.equal(1, code, out)
      local id = out:match("sent (%x+)")
      assert.truthy(out:find("sink.lua: cannot write message " .. id .. " from 'k/full' to '/dev/full'",
        1, true), out)
      assert.matches("1 delivery failed %(k/full: 1%)", out)
    end)
  end)

  describe("loadgen.lua", function()
    it("sends exactly count messages of size bytes, and reports", function()
      mb.destination("lg/in")
      mb.destination("lg/report")
      local got, bad = {}, 0
      mb.listen("lg/in", function(m)
        if #m.payload.data ~= 100 or got[m.payload.id] then bad = bad + 1 end
        got[m.payload.id] = true
      end)
      local report
      mb.listen("lg/report", function(m) report = m.payload end)
      load("loadgen.lua", {destination = "lg/in", count = 1000, size = 100, report_to = "lg/report",
                           quiet = true})
      mb.run()
      assert.are.equal(0, bad)
      for i = 1, 1000 do assert.is_true(got[i], "message " .. i .. " missing") end
      assert.are.equal(1000, mb.stats("lg/in").sent)
      assert.are.equal(1000, mb.stats("lg/in").delivered)
      assert.are.equal(1000, report.count)
      assert.are.equal(1000, report.sent)
      assert.are.equal(0, report.rejected)
      assert.are.same({}, report.errors)
      assert.are.equal(100, report.size)
      assert.is_number(report.elapsed)
    end)

    it("keeps its rate", function()
      mb.destination("lg/slow")
      mb.destination("lg/report")
      local n, report = 0, nil
      mb.listen("lg/slow", function() n = n + 1 end)
      mb.listen("lg/report", function(m) report = m.payload end)
      local t0 = mb.now()
      load("loadgen.lua", {destination = "lg/slow", count = 21, rate = 50, report_to = "lg/report",
                           quiet = true})
      mb.run()
      local took = mb.now() - t0
      assert.are.equal(21, n)
      -- (count - 1) / rate = 0.4 s; a generous lower bound only
      assert.is_true(took >= 0.3, "took " .. took .. " s")
      assert.is_true(report.elapsed >= 0.3, "reported " .. report.elapsed .. " s")
    end)

    it("counts refused sends, never losing one silently", function()
      mb.destination("lg/full", {type = "serial", max_queue = 5})
      mb.destination("lg/report")
      local n, report = 0, nil
      mb.listen("lg/full", function() mb.sleep(0.001) n = n + 1 end)
      mb.listen("lg/report", function(m) report = m.payload end)
      load("loadgen.lua", {destination = "lg/full", count = 300, report_to = "lg/report", quiet = true})
      mb.run()
      assert.is_true(report.rejected > 0)
      assert.are.equal(300, report.sent + report.rejected)
      assert.are.same({queue_full = report.rejected}, report.errors)
      assert.matches("^queue_full: ", report.first_error)
      assert.are.equal(report.sent, n)
      local st = mb.stats("lg/full")
      assert.are.equal(report.sent, st.sent)
      assert.are.equal(report.rejected, st.rejected)
    end)

    it("prints its summary line and ends", function()
      local out, code = mbrun([[
        mb.destination("lg/x")
        mb.destination("lg/nobody")
        local n = 0
        mb.listen("lg/x", function() n = n + 1 end)
        mb.load(SCRIPTS .. "/loadgen.lua", {args = {{destination = "lg/x", count = 500, size = 10}}})
        mb.load(SCRIPTS .. "/loadgen.lua", {args = {{destination = "lg/nobody", count = 7, prefix = "gen"}}})
        mb.sleep(0.2)
        print("received " .. n)
      ]])
      assert.are.equal(0, code, out)
      assert.matches("%[loadgen%] lg/x: sent 500 of 500 in %d+%.%d%d%ds %([%d.]+/s%), rejected 0\n", out)
      assert.matches("%[gen%] lg/nobody: sent 0 of 7 in %d+%.%d%d%ds %([%d.]+/s%), rejected 7 "
        .. "%(no_listeners: 7%)\n", out)
      assert.matches("received 500\n", out)
    end)
  end)

  describe("forwarder.lua", function()
    it("relays payload and values to another destination after the delay", function()
      mb.destination("fw/in")
      mb.destination("fw/out")
      local got = {}
      mb.listen("fw/out", function(m) got[#got + 1] = {at = mb.now(), msg = m} end)
      load("forwarder.lua", {from = "fw/in", to = "fw/out", delay = 0.3})
      local t0 = mb.now()
      local ids = {}
      for i = 1, 10 do ids[i] = mb.send("fw/in", {n = i, nested = {f = 1.5}}, {values = {k = i}}) end
      mb.run()
      local took = mb.now() - t0
      assert.are.equal(10, #got)
      local seen = {}
      for _, g in ipairs(got) do
        assert.is_true(g.at - t0 >= 0.25, "forwarded after " .. (g.at - t0) .. " s")
        local i = g.msg.payload.n
        seen[i] = true
        assert.are.same({n = i, nested = {f = 1.5}}, g.msg.payload)
        assert.are.same({k = i}, g.msg.values)
        assert.are_not.equal(ids[i], g.msg.id) -- a new message
      end
      for i = 1, 10 do assert.is_true(seen[i]) end
      -- a parallel `from`: the ten waited at once, not one after another
      assert.is_true(took < 2, "took " .. took .. " s")
      assert.are.equal(10, mb.stats("fw/in").delivered)
    end)

    it("keeps the order of a serial destination, one delay after another", function()
      mb.destination("fw/s", {type = "serial"})
      mb.destination("fw/t")
      local got = {}
      mb.listen("fw/t", function(m) got[#got + 1] = m.payload end)
      load("forwarder.lua", {from = "fw/s", to = "fw/t", delay = 0.05})
      local t0 = mb.now()
      for i = 1, 5 do mb.send("fw/s", i) end
      mb.run()
      assert.are.same({1, 2, 3, 4, 5}, got)
      assert.is_true(mb.now() - t0 >= 0.2)
    end)

    it("raises when it cannot forward: the delivery fails, the error is printed", function()
      local out, code = mbrun([[
        mb.destination("fw/a")
        mb.destination("fw/nobody")
        mb.load(SCRIPTS .. "/forwarder.lua", {args = {{from = "fw/a", to = "fw/nobody", delay = 0.01}}})
        print("sent " .. mb.send("fw/a", "lost?"))
      ]])
      assert.are.equal(1, code, out)
      local id = out:match("sent (%x+)")
      assert.truthy(out:find("forwarder.lua: cannot forward message " .. id
        .. " from 'fw/a' to 'fw/nobody': no_listeners", 1, true), out)
      assert.matches("1 delivery failed %(fw/a: 1%)", out)
    end)
  end)

  describe("options", function()
    local cases = {
      {"logger.lua", '"shop/orders"', "logger.lua: expects one table of options"},
      {"logger.lua", "{}", "logger.lua: option 'destination' (or 'destinations') is required"},
      {"logger.lua", "{destination = 42}", "logger.lua: option 'destination' must be a destination name"},
      {"logger.lua", '{destinations = {"o/k", "bad name"}}',
       "logger.lua: option 'destinations[2]' must be a destination name"},
      {"logger.lua", '{destination = "o/k", colour = "red"}', "logger.lua: unknown option 'colour'"},
      {"logger.lua", '{destination = "o/missing"}', "logger.lua: no destination 'o/missing' to listen at"},
      {"logger.lua", '{destination = "o/k", max_string = -1}', "logger.lua: option 'max_string' must be"},
      {"echo.lua", "{}", "echo.lua: option 'destination' is required"},
      {"echo.lua", '{destination = "o/k", delay = "soon"}', "echo.lua: option 'delay' must be a number"},
      {"counter.lua", '{destination = "o/k", every = 0}', "counter.lua: option 'every' must be a positive"},
      {"counter.lua", '{destination = "o/k", field = "a..b"}', "counter.lua: option 'field' must be"},
      {"counter.lua", '{destination = "o/k", report = "o/k"}', "counter.lua: option 'report' must not be"},
      {"sink.lua", '{destination = "o/k"}', "sink.lua: option 'path' is required"},
      {"sink.lua", '{destination = "o/k", path = "/nonexistent/dir/x.jsonl"}',
       "sink.lua: cannot open '/nonexistent/dir/x.jsonl'"},
      {"loadgen.lua", '{destination = "o/k", count = -1}', "loadgen.lua: option 'count' must be an integer"},
      {"loadgen.lua", '{destination = "o/k", count = 1.5}', "loadgen.lua: option 'count' must be an integer"},
      {"loadgen.lua", '{destination = "o/k", rate = "fast"}', "loadgen.lua: option 'rate' must be a number"},
      {"loadgen.lua", '{destination = "o/k", quiet = true}', "loadgen.lua: option 'quiet' needs 'report_to'"},
      {"forwarder.lua", '{from = "o/k"}', "forwarder.lua: option 'to' is required"},
      {"forwarder.lua", '{from = "o/k", to = "o/k"}', "forwarder.lua: options 'from' and 'to' must be different"},
    }
    it("are checked at load, with an error naming the script and the option", function()
      local text = {'mb.destination("o/k")'}
      for _, c in ipairs(cases) do
        -- mb.load returns nil, "failed: <error>" (SPEC section 2)
        text[#text + 1] = ("print(select('#', mb.load(SCRIPTS .. %q, {args = {%s}})))"):format("/" .. c[1], c[2])
        text[#text + 1] = ("print(select(2, mb.load(SCRIPTS .. %q, {args = {%s}})))"):format("/" .. c[1], c[2])
      end
      local out, code = mbrun(table.concat(text, "\n"))
      assert.are.equal(0, code, out)
      for _, c in ipairs(cases) do
        assert.truthy(out:find("\nfailed: [^\n]*" .. c[3]:gsub("%p", "%%%0"), 1), c[3] .. "\n" .. out)
      end
      local twos = 0
      for line in out:gmatch("[^\n]+") do twos = twos + (line == "2" and 1 or 0) end
      assert.are.equal(#cases, twos, out) -- nil and the error, each time
      assert.is_nil(out:find("mb: ", 1, true), out) -- nothing reported besides
    end)
  end)
end)
