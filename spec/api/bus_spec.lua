-- The bus as SPEC sections 1, 2 and 7 describe it: destination types,
-- the three patterns, errors, statistics, events and dead letters.
local mb = require "mb"
local helper = require "spec.helper"

describe("destinations", function()
  after_each(helper.assert_clean)

  it("are declared, listed sorted, found and removed", function()
    assert.is_true(mb.destination("b/x"))
    assert.is_true(mb.destination("a/y", {type = "serial"}))
    assert.are.same({"a/y", "b/x"}, mb.destinations())
    assert.is_true(mb.has_destination("b/x"))
    assert.is_true(mb.remove_destination("b/x"))
    assert.is_false(mb.has_destination("b/x"))
    local ok, err = mb.remove_destination("b/x")
    assert.is_nil(ok)
    assert.matches("^no_destination: ", err)
  end)

  it("removed and declared again take sends as the new one (a sender's last lookup is kept)",
     function()
    local got = {}
    assert.is_true(mb.destination("b/again"))
    local l1 = assert(mb.listen("b/again", function(m) got[#got + 1] = "old " .. m.payload end))
    assert(mb.send("b/again", 1))
    mb.run()
    assert.is_true(mb.remove_destination("b/again"))
    mb.run()
    local ok, err = mb.send("b/again", 2)
    assert.is_nil(ok)
    assert.matches("^no_destination: ", err)
    assert.is_true(mb.destination("b/again", {type = "synchronous"}))
    local l2 = assert(mb.listen("b/again", function(m) got[#got + 1] = "new " .. m.payload end))
    assert(mb.send("b/again", 3))
    assert.is_true(mb.destination("b/other")) -- another name in between
    assert(mb.send("b/again", 4))
    assert.are.same({"old 1", "new 3", "new 4"}, got)
    l1:close()
    l2:close()
    assert.is_true(mb.remove_destination("b/again"))
    assert.is_true(mb.remove_destination("b/other"))
    mb.run()
  end)

  it("accept an identical redeclaration and refuse different options", function()
    assert.is_true(mb.destination("d", {type = "serial", max_queue = 10}))
    assert.is_true(mb.destination("d", {type = "serial", max_queue = 10}))
    local ok, err = mb.destination("d", {type = "parallel"})
    assert.is_nil(ok)
    assert.matches("^exists: destination 'd'", err)
  end)

  it("raise on invalid names and options", function()
    assert.has_error(function() mb.destination("") end)
    assert.has_error(function() mb.destination(string.rep("a", 256)) end)
    assert.has_error(function() mb.destination("has space") end)
    assert.is_true(mb.destination(string.rep("a", 255)))
    assert.has_error(function() mb.destination("x", {type = "fast"}) end,
      'mb.destination: option \'type\' must be one of "parallel", "serial", "synchronous"')
    assert.has_error(function() mb.destination("x", {max_queue = 0}) end)
    assert.has_error(function() mb.destination("x", {colour = "red"}) end,
      "mb.destination: unknown option 'colour'")
    assert.has_error(function() mb.send("bad name", 1) end)
  end)

  it("show an invalid name whole in the error, NUL and control bytes escaped", function()
    local err = helper.error_of(mb.destination, "shop\0orders")
    helper.assert_contains(err, [[invalid destination name "shop\000orders"]])
    err = helper.error_of(mb.send, "a\nb", 1)
    helper.assert_contains(err, [[mb.send: invalid destination name "a\nb"]])
    err = helper.error_of(mb.destination, string.rep("x", 300))
    helper.assert_contains(err, string.rep("x", 60) .. [[..." (300 bytes)]])
  end)
end)

describe("a parallel destination", function()
  after_each(helper.assert_clean)

  it("delivers every message to every listener", function()
    mb.destination("p")
    local a, b = 0, 0
    mb.listen("p", function(m) a = a + m.payload end)
    mb.listen("p", function(m) b = b + m.payload end)
    for i = 1, 100 do assert.is_string(mb.send("p", i)) end
    mb.run()
    assert.are.equal(5050, a)
    assert.are.equal(5050, b)
    local s = mb.stats("p")
    assert.are.equal(100, s.sent)
    assert.are.equal(200, s.deliveries)
    assert.are.equal(200, s.delivered)
  end)

  it("lets deliveries overlap when listeners wait", function()
    mb.destination("p")
    local running, most = 0, 0
    mb.listen("p", function()
      running = running + 1
      most = math.max(most, running)
      mb.sleep(0.05)
      running = running - 1
    end)
    for i = 1, 10 do mb.send("p", i) end
    local t0 = mb.now()
    mb.run()
    assert.are.equal(10, most)
    assert.is_true(mb.now() - t0 < 0.3) -- ten 50 ms waits overlapped (0.5 s in a row)
  end)

  it("caps deliveries in flight at its concurrency", function()
    mb.destination("p", {concurrency = 3})
    local running, most, done = 0, 0, 0
    mb.listen("p", function()
      running = running + 1
      most = math.max(most, running)
      mb.sleep(0.005)
      running = running - 1
      done = done + 1
    end)
    for i = 1, 12 do mb.send("p", i) end
    mb.run()
    assert.are.equal(3, most)
    assert.are.equal(12, done)
  end)
end)

describe("a serial destination", function()
  after_each(helper.assert_clean)

  it("keeps send order through every listener, also when a listener yields", function()
    mb.destination("s", {type = "serial"})
    local log = {}
    mb.listen("s", function(m)
      log[#log + 1] = "a" .. m.payload
      mb.sleep(0.002 * (4 - m.payload)) -- earlier messages wait longer
      log[#log + 1] = "a" .. m.payload .. "."
    end)
    mb.listen("s", function(m) log[#log + 1] = "b" .. m.payload end)
    for i = 1, 3 do mb.send("s", i) end
    mb.run()
    assert.are.same({"a1", "a1.", "b1", "a2", "a2.", "b2", "a3", "a3.", "b3"}, log)
  end)

  it("keeps order when a listener makes a request", function()
    mb.destination("s", {type = "serial"})
    mb.destination("svc")
    mb.listen("svc", function(m) mb.sleep(0.001) return m.payload * 10 end)
    local log = {}
    mb.listen("s", function(m)
      local r = mb.request("svc", m.payload)
      log[#log + 1] = r
    end)
    for i = 1, 5 do mb.send("s", i) end
    mb.run()
    assert.are.same({10, 20, 30, 40, 50}, log)
  end)
end)

describe("a synchronous destination", function()
  after_each(helper.assert_clean)

  it("returns from send only after every listener ran", function()
    mb.destination("y", {type = "synchronous"})
    local log = {}
    mb.listen("y", function(m) log[#log + 1] = "one " .. m.payload end)
    mb.listen("y", function(m) mb.sleep(0.01) log[#log + 1] = "two " .. m.payload end)
    assert.is_string(mb.send("y", "x"))
    log[#log + 1] = "after send"
    assert.are.same({"one x", "two x", "after send"}, log)
  end)

  it("lets other coroutines run while the sender waits", function()
    mb.destination("y", {type = "synchronous"})
    local log = {}
    mb.listen("y", function() mb.sleep(0.1) log[#log + 1] = "listener" end)
    mb.spawn(function() mb.send("y", 1) log[#log + 1] = "sender" end)
    mb.spawn(function() mb.sleep(0.01) log[#log + 1] = "other" end)
    mb.run()
    assert.are.same({"other", "listener", "sender"}, log)
  end)
end)

describe("send-and-forget", function()
  after_each(helper.assert_clean)

  it("returns a unique message id", function()
    mb.destination("f")
    mb.listen("f", function() end)
    local seen = {}
    for i = 1, 50 do
      local id = mb.send("f", i)
      assert.is_string(id)
      assert.is_nil(seen[id])
      seen[id] = true
    end
    mb.run()
  end)

  it("gives the listener a message table of its own", function()
    mb.destination("f")
    local got
    mb.listen("f", function(m) got = m end)
    local payload = {n = 1}
    local id = mb.send("f", payload, {values = {who = "me", n = 2}})
    mb.run()
    assert.are.equal("f", got.destination)
    assert.are.equal(id, got.id)
    assert.are.same({n = 1}, got.payload)
    assert.are.same({who = "me", n = 2}, got.values)
    assert.is_nil(got.reply_to)
    got.payload.n = 99
    assert.are.equal(1, payload.n)
  end)

  it("gives an empty values table when none were sent", function()
    mb.destination("f")
    local got
    mb.listen("f", function(m) got = m.values end)
    mb.send("f", 1)
    mb.run()
    assert.are.same({}, got)
  end)
end)

describe("asynchronous with a call-back", function()
  after_each(helper.assert_clean)

  it("sends the handler's return value to reply_to with response_id", function()
    mb.destination("ask")
    mb.destination("answers")
    mb.listen("ask", function(m) return m.payload .. "!" end)
    local got = {}
    mb.listen("answers", function(m) got[#got + 1] = m end)
    local id = mb.send("ask", "hi", {reply_to = "answers"})
    mb.run()
    assert.are.equal(1, #got)
    assert.are.equal("hi!", got[1].payload)
    assert.are.equal(id, got[1].response_id)
    assert.are.equal("answers", got[1].destination)
    assert.are.equal(1, mb.stats("ask").replies)
  end)

  it("lets a handler reply later with mb.reply", function()
    mb.destination("ask")
    mb.destination("answers")
    local pending
    mb.listen("ask", function(m) pending = m end)
    local got
    mb.listen("answers", function(m) got = m end)
    mb.send("ask", 1, {reply_to = "answers"})
    mb.run()
    assert.is_nil(got)
    assert.is_true(mb.reply(pending, "later", {note = "x"}))
    mb.run()
    assert.are.equal("later", got.payload)
    assert.are.same({note = "x"}, got.values)
  end)

  it("waits for a synchronous reply_to before the serial destination moves on", function()
    mb.destination("work", {type = "serial"})
    mb.destination("answers", {type = "synchronous"})
    local log = {}
    mb.listen("answers", function() mb.sleep(0.01) log[#log + 1] = "answer seen" end)
    mb.listen("work", function() return "done" end)
    mb.listen("work", function() log[#log + 1] = "second listener" end)
    mb.send("work", "job", {reply_to = "answers"})
    mb.run()
    assert.are.same({"answer seen", "second listener"}, log)
  end)

  it("refuses mb.reply for a message that expects none", function()
    mb.destination("f")
    local msg
    mb.listen("f", function(m) msg = m end)
    mb.send("f", 1)
    mb.run()
    local ok, err = mb.reply(msg, 2)
    assert.is_nil(ok)
    assert.matches("^closed: ", err)
  end)
end)

describe("request/reply", function()
  after_each(helper.assert_clean)

  it("returns the first reply and its message", function()
    mb.destination("calc")
    mb.listen("calc", function(m) return m.payload.a + m.payload.b end)
    local r, msg = mb.request("calc", {a = 2, b = 3})
    assert.are.equal(5, r)
    assert.are.equal("calc", msg.destination)
    assert.is_string(msg.response_id)
  end)

  it("works inside a listener (nested request/reply)", function()
    mb.destination("outer")
    mb.destination("inner")
    mb.listen("inner", function(m) return m.payload * 2 end)
    mb.listen("outer", function(m)
      local r = mb.request("inner", m.payload + 1)
      return r + 1
    end)
    assert.are.equal(9, (mb.request("outer", 3)))
  end)

  it("works from coroutines, many in flight", function()
    mb.destination("echo")
    mb.listen("echo", function(m) mb.sleep(0.001) return m.payload end)
    local sum = 0
    for i = 1, 50 do
      mb.spawn(function()
        local r = mb.request("echo", i) -- read sum only after the wait
        sum = sum + r
      end)
    end
    mb.run()
    assert.are.equal(1275, sum)
  end)

  it("times out near its deadline and counts the timeout", function()
    mb.destination("slow")
    mb.listen("slow", function() mb.sleep(1) return "late" end)
    local t0 = mb.now()
    local r, err = mb.request("slow", 1, {timeout = 0.1})
    local took = mb.now() - t0
    assert.is_nil(r)
    assert.matches("^timeout: ", err)
    assert.is_true(took >= 0.09 and took < 0.6, "took " .. took) -- not the listener's 1 s
    mb.run() -- the late reply arrives: counted, not delivered
    local s = mb.stats("slow")
    assert.are.equal(1, s.timeouts)
    assert.are.equal(1, s.replies)
    helper.assert_invariant("slow")
  end)

  it("answers no_destination and no_listeners at once", function()
    local t0 = mb.now()
    local r, err = mb.request("nowhere", 1, {timeout = 5})
    assert.is_nil(r)
    assert.matches("^no_destination: ", err)
    mb.destination("empty")
    r, err = mb.request("empty", 1, {timeout = 5})
    assert.is_nil(r)
    assert.matches("^no_listeners: ", err)
    assert.is_true(mb.now() - t0 < 1)
    assert.are.equal(1, mb.stats("empty").rejected)
  end)

  it("fails at once when the listener raises", function()
    mb.destination("bad")
    mb.listen("bad", function() error("boom") end)
    local t0 = mb.now()
    local r, err = mb.request("bad", 1, {timeout = 5})
    assert.is_nil(r)
    assert.matches("^failed: .*boom", err)
    assert.is_true(mb.now() - t0 < 1)
  end)

  it("counts a second reply and refuses it with closed", function()
    mb.destination("twice")
    local second
    mb.listen("twice", function(m)
      mb.reply(m, "first")
      second = {mb.reply(m, "second")}
      return "third"
    end)
    assert.are.equal("first", (mb.request("twice", 1)))
    assert.is_nil(second[1])
    assert.matches("^closed: ", second[2])
    assert.are.equal(3, mb.stats("twice").replies)
  end)

  it("takes a later mb.reply from whichever listener gives it first", function()
    -- a request's message is not in the groups table (only request_all's):
    -- its reply goes by id alone
    mb.destination("held")
    local held = {}
    mb.listen("held", function(m) held[1] = m end)
    mb.listen("held", function(m) held[2] = m end)
    local other
    mb.spawn(function()
      while not (held[1] and held[2]) do mb.sleep(0.001) end
      assert.is_true(mb.reply(held[2], "second's"))
      other = {mb.reply(held[1], "first's")}
    end)
    local r, msg = mb.request("held", "q", {timeout = 1})
    assert.are.equal("second's", r)
    assert.are.equal(held[2].id, msg.response_id)
    mb.run()
    assert.is_nil(other[1])
    assert.matches("^closed: ", other[2])
  end)

  it("raises on bad options", function()
    mb.destination("x")
    assert.has_error(function() mb.request("x", 1, {timeout = -1}) end)
    assert.has_error(function() mb.request("x", 1, {colour = 1}) end)
  end)
end)

describe("request_all", function()
  after_each(helper.assert_clean)

  it("gathers one answer per listener", function()
    mb.destination("quote")
    mb.listen("quote", function() return 10 end)
    mb.listen("quote", function() mb.sleep(0.01) return 12 end)
    mb.listen("quote", function() error("no stock") end)
    local answers = mb.request_all("quote", "part", {timeout = 1})
    assert.are.equal(3, #answers)
    local prices, errors = {}, 0
    for _, a in ipairs(answers) do
      if a.error then
        errors = errors + 1
        assert.matches("^failed: .*no stock", a.error)
      else
        prices[#prices + 1] = a.payload
        assert.are.equal("quote", a.msg.destination)
      end
    end
    table.sort(prices)
    assert.are.same({10, 12}, prices)
    assert.are.equal(1, errors)
  end)

  it("files an explicit mb.reply under its own listener, once", function()
    mb.destination("g")
    local second
    mb.listen("g", function(m)
      mb.reply(m, "A1")
      second = {mb.reply(m, "A2")}
    end)
    mb.listen("g", function() end) -- never answers
    local answers = mb.request_all("g", "q", {timeout = 0.1})
    assert.are.equal("A1", answers[1].payload)
    assert.matches("^timeout: ", answers[2].error)
    assert.is_nil(second[1])
    assert.matches("^closed: ", second[2])
  end)

  it("files a later mb.reply under the listener that got the message", function()
    mb.destination("g2")
    local held
    mb.listen("g2", function() end) -- never answers
    mb.listen("g2", function(m) held = m end) -- answers after its handler returned
    mb.spawn(function()
      while not held do mb.sleep(0.001) end
      assert.is_true(mb.reply(held, "B"))
    end)
    local answers = mb.request_all("g2", "q", {timeout = 0.1})
    assert.are.equal(2, #answers)
    assert.matches("^timeout: ", answers[1].error)
    assert.are.equal("B", answers[2].payload)
  end)

  it("takes a later mb.reply of its one group; after the end, mb.reply says closed", function()
    mb.destination("g1")
    local held
    mb.listen("g1", function(m) held = m end)
    mb.spawn(function()
      while not held do mb.sleep(0.001) end
      assert.is_true(mb.reply(held, "only"))
    end)
    local answers = mb.request_all("g1", "q", {timeout = 1})
    assert.are.equal(1, #answers)
    assert.are.equal("only", answers[1].payload)
    local ok, err = mb.reply(held, "again")
    assert.is_nil(ok)
    assert.matches("^closed: ", err)
    held = nil
    answers = mb.request_all("g1", "q", {timeout = 0.05}) -- nobody answers: its timeout
    assert.are.equal(1, #answers)
    assert.matches("^timeout: ", answers[1].error)
    ok, err = mb.reply(held, "late")
    assert.is_nil(ok)
    assert.matches("^closed: ", err)
  end)

  it("marks groups that did not answer in time", function()
    mb.destination("quote")
    mb.listen("quote", function() return 1 end)
    mb.listen("quote", function() mb.sleep(0.2) return 2 end)
    local answers = mb.request_all("quote", "x", {timeout = 0.05})
    assert.are.equal(2, #answers)
    assert.are.equal(1, answers[1].payload)
    assert.matches("^timeout: ", answers[2].error)
    mb.run()
  end)
end)

describe("full queues", function()
  after_each(helper.assert_clean)

  it("reject with queue_full by default", function()
    mb.destination("q", {max_queue = 2})
    local n = 0
    mb.listen("q", function() n = n + 1 end)
    assert.is_string(mb.send("q", 1))
    assert.is_string(mb.send("q", 2))
    local ok, err = mb.send("q", 3)
    assert.is_nil(ok)
    assert.matches("^queue_full: destination 'q'", err)
    mb.run()
    assert.are.equal(2, n)
    local s = mb.stats("q")
    assert.are.equal(2, s.sent)
    assert.are.equal(1, s.rejected)
    assert.are.equal(2, s.largest_pending)
  end)

  it("make the sender wait with on_full = block", function()
    mb.destination("q", {max_queue = 2, on_full = "block"})
    local got = {}
    mb.listen("q", function(m) got[#got + 1] = m.payload end)
    local sent = 0
    mb.spawn(function()
      for i = 1, 10 do
        assert.is_string(mb.send("q", i))
        sent = sent + 1
      end
    end)
    assert.is_true(sent < 10) -- it is waiting for room
    mb.run()
    assert.are.equal(10, sent)
    assert.are.same({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, got)
    assert.are.equal(0, mb.stats("q").rejected)
    assert.are.equal(2, mb.stats("q").largest_pending)
  end)

  it("block from plain code too (the call drives the loop)", function()
    mb.destination("q", {max_queue = 1, on_full = "block"})
    local n = 0
    mb.listen("q", function() n = n + 1 end)
    for i = 1, 5 do assert.is_string(mb.send("q", i)) end
    mb.run()
    assert.are.equal(5, n)
  end)
end)

describe("removing a destination", function()
  after_each(helper.assert_clean)

  it("delivers what is pending, refuses new sends, then removes it", function()
    mb.destination("r")
    local n = 0
    mb.listen("r", function() n = n + 1 end)
    for i = 1, 3 do mb.send("r", i) end
    assert.is_true(mb.remove_destination("r"))
    local ok, err = mb.send("r", 4)
    assert.is_nil(ok)
    assert.matches("^closed: ", err)
    assert.is_true(mb.has_destination("r"))
    mb.run()
    assert.are.equal(3, n)
    assert.is_false(mb.has_destination("r"))
    ok, err = mb.send("r", 5)
    assert.is_nil(ok)
    assert.matches("^no_destination: ", err)
  end)
end)

describe("listeners", function()
  after_each(helper.assert_clean)

  it("need an existing destination", function()
    local l, err = mb.listen("missing", function() end)
    assert.is_nil(l)
    assert.matches("^no_destination: ", err)
  end)

  it("stop receiving once closed", function()
    mb.destination("c")
    local n = 0
    local l = mb.listen("c", function() n = n + 1 end)
    mb.send("c", 1)
    mb.run()
    l:close()
    l:close() -- twice is harmless
    local ok, err = mb.send("c", 2)
    assert.is_nil(ok)
    assert.matches("^no_listeners: ", err)
    assert.are.equal(1, n)
  end)

  it("that raise are counted as failed and stay registered", function()
    mb.destination("e")
    local n = 0
    mb.listen("e", function(m)
      n = n + 1
      if m.payload == 2 then error("bad payload") end
    end)
    for i = 1, 3 do mb.send("e", i) end
    mb.run()
    assert.are.equal(3, n)
    local s = mb.stats("e")
    assert.are.equal(1, s.failed)
    assert.are.equal(2, s.delivered)
    assert.are.equal(1, s.listeners)
  end)

  it("receive JSON text with format = json", function()
    mb.destination("j")
    local got
    mb.listen("j", function(text) got = text end, {format = "json"})
    local id = mb.send("j", {a = 1}, {values = {k = "v"}})
    mb.run()
    local t = mb.json.decode(got)
    assert.are.same({a = 1}, t.payload)
    assert.are.same({k = "v"}, t.values)
    assert.are.equal(id, t.id)
    assert.are.equal("j", t.destination)
  end)
end)

describe("statistics", function()
  after_each(helper.assert_clean)

  it("account for every delivery after a mixed run", function()
    mb.destination("mix", {type = "serial"})
    mb.destination("par")
    local l2
    mb.listen("mix", function(m)
      if m.payload % 3 == 0 then error("three") end
      -- closing the second listener while message 4 is being delivered:
      -- its delivery of message 4 was scheduled, so it is dropped
      if m.payload == 4 then l2:close() end
      mb.sleep(0)
    end)
    l2 = mb.listen("mix", function() end)
    mb.listen("par", function(m) if m.payload % 2 == 0 then error("even") end end)
    for i = 1, 9 do mb.send("mix", i) mb.send("par", i) end
    -- removed with 9 messages pending: they are still delivered
    mb.remove_destination("par")
    local par = mb.stats("par")
    mb.run()
    assert.is_false(mb.has_destination("par"))
    assert.are.equal(9, par.pending)
    local mix = mb.stats("mix")
    helper.assert_invariant("mix")
    assert.are.same({9, 13, 9, 3, 1, 0, 0}, {mix.sent, mix.deliveries, mix.delivered, mix.failed,
                                            mix.dropped, mix.pending, mix.in_flight})
  end)

  it("account for a removed destination's deliveries until it is gone", function()
    mb.destination("par")
    local seen = 0
    mb.listen("par", function(m)
      seen = seen + 1
      if m.payload % 2 == 0 then error("even") end
    end)
    for i = 1, 9 do mb.send("par", i) end
    local stats
    mb.on("destination_removed", function() end):close()
    -- sample the stats just before the removal completes
    mb.listen("par", function() stats = mb.stats("par") end)
    mb.remove_destination("par")
    mb.run()
    assert.are.equal(9, seen)
    assert.are.equal(9, stats.sent)
    assert.is_true(stats.failed <= 4)
  end)

  it("are given for all destinations at once", function()
    mb.destination("a")
    mb.destination("b", {type = "synchronous"})
    local all = mb.stats()
    assert.are.equal("parallel", all.a.type)
    assert.are.equal("synchronous", all.b.type)
    local s, err = mb.stats("zzz")
    assert.is_nil(s)
    assert.matches("^no_destination", err)
  end)
end)

describe("dead letters", function()
  after_each(helper.assert_clean)

  it("receive a report for each failed delivery", function()
    mb.destination("mb/dead-letters")
    mb.destination("work")
    local reports = {}
    mb.listen("mb/dead-letters", function(m) reports[#reports + 1] = m.payload end)
    mb.listen("work", function(m) if m.payload == "bad" then error("cannot") end end)
    mb.send("work", "good")
    local id = mb.send("work", "bad", {values = {n = 1}})
    mb.run()
    assert.are.equal(1, #reports)
    assert.are.equal("work", reports[1].destination)
    assert.are.equal("bad", reports[1].message.payload)
    assert.are.equal(id, reports[1].message.id)
    assert.are.same({n = 1}, reports[1].message.values)
    assert.matches("^failed: .*cannot", reports[1].error)
  end)
end)

describe("events", function()
  after_each(helper.assert_clean)

  it("tell about destinations and listeners", function()
    local seen = {}
    local h = mb.on("destination_added", function(name, info)
      seen[#seen + 1] = "added " .. name .. " " .. info.type
    end)
    local h2 = mb.on("listener_added", function(name, info)
      seen[#seen + 1] = "listener " .. name .. " " .. info.listeners
    end)
    local h3 = mb.on("destination_removed", function(name) seen[#seen + 1] = "removed " .. name end)
    mb.destination("ev", {type = "serial"})
    local l = mb.listen("ev", function() end)
    mb.run()
    l:close()
    mb.remove_destination("ev")
    mb.run()
    assert.are.same({"added ev serial", "listener ev 1", "removed ev"}, seen)
    h:close()
    h2:close()
    h3:close()
    mb.destination("ev2")
    mb.run()
    assert.are.equal(3, #seen)
  end)
end)

describe("tasks and time", function()
  after_each(helper.assert_clean)

  it("measure time with a monotonic clock", function()
    local a = mb.now()
    mb.sleep(0.01)
    local b = mb.now()
    assert.is_true(b - a >= 0.009)
    -- monotonic seconds count from boot, not from 1970
    assert.is_true(math.abs(a - os.time()) > 3600 * 24 * 365)
  end)

  it("run timers once or repeatedly until stopped", function()
    local once, many = 0, 0
    mb.after(0.01, function() once = once + 1 end)
    local t
    t = mb.every(0.005, function()
      many = many + 1
      if many == 3 then t:stop() end
    end)
    mb.run()
    assert.are.equal(1, once)
    assert.are.equal(3, many)
  end)

  it("skip an mb.every tick while the callback's previous call still waits", function()
    local calls, running, most = 0, 0, 0
    local t = mb.every(0.01, function()
      calls = calls + 1
      running = running + 1
      most = math.max(most, running)
      mb.sleep(0.05)
      running = running - 1
    end)
    mb.after(0.3, function() t:stop() end)
    mb.run()
    assert.are.equal(1, most) -- never two calls at once (before: about 5)
    assert.is_true(calls >= 3 and calls <= 7, "calls: " .. calls)
    -- a call that outlives its stopped timer ends as usual
    local ended = false
    local t2
    t2 = mb.every(0.01, function()
      t2:stop()
      mb.sleep(0.02)
      ended = true
    end)
    mb.run()
    assert.is_true(ended)
  end)

  it("bound mb.run with a timeout and stop it with mb.stop", function()
    local t = mb.every(0.01, function() end)
    local t0 = mb.now()
    assert.is_false(mb.run({timeout = 0.05}))
    assert.is_true(mb.now() - t0 < 1)
    mb.after(0.01, function() mb.stop() end)
    assert.is_false(mb.run())
    t:stop()
    assert.is_true(mb.run())
  end)

  it("ignore mb.stop when no run is in progress", function()
    mb.destination("d")
    local n = 0
    mb.listen("d", function() n = n + 1 end)
    mb.stop() -- no run: nothing to stop, and nothing kept for the next run
    mb.send("d", 1)
    assert.is_true(mb.run({timeout = 5}))
    assert.are.equal(1, n)
  end)

  it("say when mb.run is stuck: work left that nothing can move on", function()
    local h = mb.load("spec/workers/stuck_self.lua")
    mb.send("stuck", 0)
    local t0 = mb.now()
    local ok, why = mb.run({timeout = 5})
    assert.is_true(mb.now() - t0 < 2, "it knew at once, not at the timeout")
    assert.is_false(ok)
    assert.are.equal("stuck: 1 delivery in flight, 1 pending, and nothing can move them on "
      .. "(at 'stuck'; a listener waiting for room in its own full queue?)", why)
    local s = mb.stats("stuck")
    assert.are.equal(1, s.in_flight)
    assert.are.equal(1, s.pending)
    assert.are.equal(0, s.rejected)
    h:stop() -- drops the delivery and the blocked send
    assert.is_true(mb.run({timeout = 5}))
    helper.assert_invariant("stuck")
    -- the send that never got in is refused, as every send is either
    -- accepted or refused
    s = mb.stats("stuck")
    assert.are.equal(3, s.sent + s.rejected)
    assert.are.equal(1, s.rejected)
  end)

  it("say when mb.run is stuck on a request with no time limit that nothing can answer", function()
    local h = mb.load("spec/workers/stuck_request.lua")
    mb.send("stuck/req", 0)
    local t0 = mb.now()
    local ok, why = mb.run({timeout = 5})
    assert.is_true(mb.now() - t0 < 2, "it knew at once, not at the timeout")
    assert.is_false(ok)
    assert.are.equal("stuck: 1 delivery in flight, 1 pending, 1 request waiting with no time "
      .. "limit, and nothing can move them on (at 'stuck/req'; a request with timeout = "
      .. "math.huge that nothing will answer?)", why)
    h:stop() -- drops the delivery and the pending message, cancels the request
    assert.is_true(mb.run({timeout = 5}))
    helper.assert_invariant("stuck/req")
  end)

  it("say when mb.run is stuck on a request with no time limit that nobody answered", function()
    mb.destination("d")
    local saved
    local l = mb.listen("d", function(m) saved = m end) -- answers nothing
    local got
    mb.spawn(function() got = {mb.request("d", 1, {timeout = math.huge})} end)
    local t0 = mb.now()
    local ok, why = mb.run({timeout = 5})
    assert.is_true(mb.now() - t0 < 2, "it knew at once, not at the timeout")
    assert.is_false(ok)
    assert.are.equal("stuck: 0 deliveries in flight, 0 pending, 1 request waiting with no time "
      .. "limit, and nothing can move them on (a request with timeout = math.huge that "
      .. "nothing will answer?)", why)
    assert.is_nil(got)
    assert.is_true(mb.reply(saved, "later")) -- it can still be answered
    assert.is_true(mb.run({timeout = 5}))
    assert.are.equal("later", got[1])
    -- where no coroutine can wait, the wait raises instead of never ending
    helper.assert_contains(helper.error_of(mb.request, "d", 2, {timeout = math.huge}),
      "this wait can never end (nothing left that could end it)")
    l:close()
    assert.is_true(mb.run({timeout = 5}))
    helper.assert_invariant("d")
  end)

  -- found by the review of session 12: a request that had timed out while
  -- its send still waited for room was counted as one with no time limit
  it("not blame a stuck run on a request that had a time limit and timed out", function()
    local h = mb.load("spec/workers/stuck_self.lua")
    mb.send("stuck", 0)
    local got
    mb.spawn(function()
      mb.sleep(0.05) -- the queue is full by then: this send waits for room
      got = {mb.request("stuck", 5, {timeout = 0.2})}
    end)
    local ok, why = mb.run({timeout = 5})
    assert.is_false(ok)
    assert.are.same({nil, "timeout: no reply from stuck within 0.2 s"}, got)
    assert.are.equal("stuck: 1 delivery in flight, 1 pending, and nothing can move them on "
      .. "(at 'stuck'; a listener waiting for room in its own full queue?)", why)
    h:stop()
    assert.is_true(mb.run({timeout = 5}))
    helper.assert_invariant("stuck")
  end)

  it("refuse NaN, negative and infinite seconds, with math.huge only for timeouts", function()
    mb.destination("d")
    mb.listen("d", function(m) return m.payload end)
    local function f() end
    helper.assert_contains(helper.error_of(mb.every, 0 / 0, f),
      "mb.every: seconds must be a positive, finite number (not NaN)")
    helper.assert_contains(helper.error_of(mb.sleep),
      "mb.sleep: seconds must be a finite number, zero or more (not given)")
    helper.assert_contains(helper.error_of(mb.every, 0, f), "(not 0)")
    helper.assert_contains(helper.error_of(mb.every, math.huge, f), "(not math.huge)")
    helper.assert_contains(helper.error_of(mb.after, 0 / 0, f),
      "mb.after: seconds must be a finite number, zero or more (not NaN)")
    helper.assert_contains(helper.error_of(mb.after, -1, f), "(not -1)")
    helper.assert_contains(helper.error_of(mb.after, math.huge, f), "(not math.huge)")
    helper.assert_contains(helper.error_of(mb.sleep, 0 / 0),
      "mb.sleep: seconds must be a finite number, zero or more (not NaN)")
    helper.assert_contains(helper.error_of(mb.sleep, -0.5), "(not -0.5)")
    helper.assert_contains(helper.error_of(mb.sleep, math.huge), "(not math.huge)")
    helper.assert_contains(helper.error_of(mb.sleep, "soon"), "(not a string)")
    for _, call in ipairs({
      function(o) return mb.request("d", 1, o) end,
      function(o) return mb.request_all("d", 1, o) end,
      function(o) return mb.run(o) end,
    }) do
      for _, bad in ipairs({0 / 0, -1, 0, -math.huge}) do
        helper.assert_contains(helper.error_of(call, {timeout = bad}),
          "option 'timeout' must be a positive number of seconds, or math.huge for no limit")
      end
    end
    -- zero is a number of seconds for sleep and after
    local fired = false
    mb.after(0, function() fired = true end)
    mb.spawn(function() mb.sleep(0) end)
    assert.is_true(mb.run({timeout = 5}))
    assert.is_true(fired)
    -- math.huge: no limit
    assert.are.equal(1, mb.request("d", 1, {timeout = math.huge}))
    assert.are.equal(1, #mb.request_all("d", 1, {timeout = math.huge}))
    mb.after(0.01, f)
    assert.is_true(mb.run({timeout = math.huge}))
  end)

  it("pass arguments to spawned functions", function()
    local got
    mb.spawn(function(a, b) mb.sleep(0) got = a + b end, 2, 3)
    mb.run()
    assert.are.equal(5, got)
  end)

  -- they were moved onto the new coroutine's stack with no room made
  -- there: past about 20 they were written beyond it
  it("pass many arguments to spawned functions", function()
    local args, got = {}, nil
    for i = 1, 5000 do args[i] = i end
    mb.spawn(function(...)
      local n, last = select("#", ...), select(select("#", ...), ...)
      mb.sleep(0)
      got = {n, last}
    end, table.unpack(args))
    mb.run()
    assert.are.same({5000, 5000}, got)
  end)

  it("bound mb.run from its call, however long the program was away from the loop", function()
    mb.destination("d")
    local n = 0
    mb.listen("d", function() n = n + 1 end)
    mb.run() -- the loop reads the clock
    local t0 = os.clock()
    while os.clock() - t0 < 0.3 do end -- busy longer than the bound, away from the loop
    mb.send("d", 1)
    assert.is_true(mb.run({timeout = 0.2})) -- it ended before it started
    assert.are.equal(1, n)
  end)

  it("keep running after a timer callback raises", function()
    local n = 0
    mb.after(0, function() error("timer boom") end)
    mb.after(0.01, function() n = n + 1 end)
    mb.run()
    assert.are.equal(1, n)
  end)
end)

-- issue 12, items 8, 10 and 13
describe("mb.load of a script that raises while starting", function()
  local dir, base
  before_each(function()
    dir = helper.tmpdir()
    base = mb._counts().services
  end)
  after_each(function()
    helper.remove_tree(dir)
    helper.assert_clean()
  end)

  it("returns nil and failed: <error>, and stops the instances already started", function()
    mb.destination("lf/x")
    local path = helper.write(dir .. "/second_refuses.lua", [[
      mb.listen("lf/x", function() end)
      mb.every(0.01, function() end)
      if mb.stats("lf/x").listeners == 2 then error("the second instance refuses") end
    ]])
    local h, err = mb.load(path, {instances = 3})
    assert.is_nil(h)
    assert.are.equal("failed: " .. path .. ":3: the second instance refuses", err)
    assert.are.equal(0, mb.stats("lf/x").listeners) -- the first one's listener went with it
    assert.are.equal(base, mb._counts().services) -- the third one never started
    assert.is_true(mb.run({timeout = 1})) -- no timer of theirs is left to keep the bus busy
  end)

  it("shows an error object through its __tostring", function()
    local path = helper.write(dir .. "/object.lua", [[
      error(setmetatable({}, {__tostring = function() return "an object that explains itself" end}))
    ]])
    assert.are.same({nil, "failed: an object that explains itself"}, {mb.load(path)})
    assert.are.equal(base, mb._counts().services)
  end)

  it("keeps the handle of a script that raises only after its first wait", function()
    local path = helper.write(dir .. "/later.lua", "mb.sleep(0)\nerror('later')\n")
    local h = mb.load(path)
    assert.are.equal("mb.Service", getmetatable(h).__name)
    mb.run()
    h:stop()
    assert.are.equal(base, mb._counts().services)
  end)
end)

describe("a handler that raises", function()
  after_each(helper.assert_clean)

  it("has its to-be-closed variables closed", function()
    mb.destination("tbc")
    local closed = {}
    mb.listen("tbc", function(m)
      local x <close> = setmetatable({}, {__close = function(_, e) closed[#closed + 1] = tostring(e) end})
      error("handler boom " .. m.payload, 0)
    end)
    mb.send("tbc", 1)
    assert.are.same({nil, "failed: handler boom 2"}, {mb.request("tbc", 2)})
    mb.run()
    assert.are.same({"handler boom 1", "handler boom 2"}, closed)
    assert.are.equal(2, mb.stats("tbc").failed)
  end)

  it("fails a request with its error object's __tostring text", function()
    mb.destination("obj")
    mb.listen("obj", function()
      error(setmetatable({}, {__tostring = function() return "told through __tostring" end}))
    end)
    assert.are.same({nil, "failed: told through __tostring"}, {mb.request("obj", 1)})
    mb.destination("plain")
    mb.listen("plain", function() error({}) end)
    assert.are.same({nil, "failed: (error object is a table value)"}, {mb.request("plain", 1)})
  end)
end)
