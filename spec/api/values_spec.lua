-- Value fidelity across a send: what a listener receives is its own copy of
-- exactly what was sent, and what cannot be sent raises an error naming the
-- path. SPEC section 2 ("Sendable values", "Listening") and 7 ("Depth").
local mb = require "mb"
local helper = require "spec.helper"

local error_of, assert_contains = helper.error_of, helper.assert_contains

local nest = helper.nest

local function depth_of(t)
  local n = 0
  while type(t) == "table" do
    n = n + 1
    t = t.x
  end
  return n
end

local ALL_BYTES
do
  local b = {}
  for i = 0, 255 do b[#b + 1] = string.char(i) end
  ALL_BYTES = table.concat(b)
end

local DEST = "values/in"

describe("sent values", function()
  local listeners = {}
  local received

  local function listen(d, fn, opts)
    local l = assert(mb.listen(d, fn, opts))
    listeners[#listeners + 1] = l
    return l
  end

  -- Sends payload (with opts) to DEST and returns the message the listener got.
  local function roundtrip(payload, opts)
    received = {}
    assert(mb.send(DEST, payload, opts))
    mb.run()
    assert.are.equal(1, #received, "expected one delivery")
    return received[1]
  end

  before_each(function()
    assert(mb.destination(DEST))
    received = {}
    listen(DEST, function(msg) received[#received + 1] = msg end)
  end)

  after_each(function()
    for _, l in ipairs(listeners) do l:close() end
    listeners = {}
    for _, d in ipairs(mb.destinations()) do mb.remove_destination(d) end
    mb.run()
  end)

  describe("copies", function()
    it("gives each listener its own copy", function()
      local seen = {}
      local function mutate(tag)
        return function(msg)
          seen[#seen + 1] = {tag = tag, before = msg.payload.items[1], n = #msg.payload.items}
          msg.payload.items[1] = tag
          msg.payload.items[#msg.payload.items + 1] = "added by " .. tag
          msg.payload.new = tag
          msg.values.v = tag
        end
      end
      listen(DEST, mutate("a"))
      listen(DEST, mutate("b"))
      local sent = {items = {"orig", "two"}}
      local values = {v = "orig"}
      assert(mb.send(DEST, sent, {values = values}))
      mb.run()
      assert.are.equal(2, #seen)
      for _, s in ipairs(seen) do
        assert.are.equal("orig", s.before, "listener " .. s.tag .. " saw another's change")
        assert.are.equal(2, s.n)
      end
      -- the first listener (registered in before_each) got an untouched copy too
      assert.are.equal(1, #received)
      assert.are.same({items = {"orig", "two"}}, received[1].payload)
      assert.are.same({v = "orig"}, received[1].values)
      -- and the sender's tables are unchanged
      assert.are.same({items = {"orig", "two"}}, sent)
      assert.are.same({v = "orig"}, values)
    end)

    it("is not the sender's table, and is taken at send time", function()
      local sent = {a = {b = 1}}
      assert(mb.send(DEST, sent))
      sent.a.b = 2 -- changed after the send, before the delivery
      sent.c = 3
      mb.run()
      local got = received[1].payload
      assert.are_not.equal(sent, got)
      assert.are_not.equal(sent.a, got.a)
      assert.are.same({a = {b = 1}}, got)
    end)

    it("gives a fresh message table to every delivery", function()
      assert(mb.send(DEST, {x = 1}))
      assert(mb.send(DEST, {x = 1}))
      mb.run()
      assert.are.equal(2, #received)
      assert.are_not.equal(received[1], received[2])
      assert.are_not.equal(received[1].payload, received[2].payload)
      assert.are_not.equal(received[1].values, received[2].values)
    end)
  end)

  describe("numbers", function()
    it("keeps integers integers and floats floats", function()
      local got = roundtrip({1, 1.0, 0, 0.0, -7, -7.0, 3, 3.5}).payload
      local want = {"integer", "float", "integer", "float", "integer", "float", "integer", "float"}
      for i, t in ipairs(want) do
        assert.are.equal(t, math.type(got[i]), "element " .. i)
      end
      assert.are.same({1, 1.0, 0, 0.0, -7, -7.0, 3, 3.5}, got)
    end)

    it("keeps the sign of -0.0", function()
      local got = roundtrip({z = -0.0, p = 0.0}).payload
      assert.are.equal("float", math.type(got.z))
      assert.are.equal(-math.huge, 1 / got.z)
      assert.are.equal(math.huge, 1 / got.p)
    end)

    it("keeps 2^53 as float and 2^53 + 1 as an exact integer", function()
      local got = roundtrip({f = 2^53, i = 9007199254740993, j = 9007199254740992}).payload
      assert.are.equal("float", math.type(got.f))
      assert.are.equal(2^53, got.f)
      assert.are.equal("integer", math.type(got.i))
      assert.is_true(got.i == 9007199254740993)
      assert.are.equal("integer", math.type(got.j))
    end)

    it("keeps the integer limits exact", function()
      local got = roundtrip({math.maxinteger, math.mininteger}).payload
      assert.is_true(got[1] == math.maxinteger)
      assert.is_true(got[2] == math.mininteger)
      assert.are.equal("integer", math.type(got[1]))
      assert.are.equal("integer", math.type(got[2]))
    end)

    it("keeps infinities, NaN and awkward floats", function()
      local got = roundtrip({inf = math.huge, ninf = -math.huge, nan = 0 / 0, tiny = 5e-324,
                             big = 1.7976931348623157e308, third = 1 / 3}).payload
      assert.are.equal(math.huge, got.inf)
      assert.are.equal(-math.huge, got.ninf)
      assert.are.equal("float", math.type(got.nan))
      assert.is_true(got.nan ~= got.nan, "NaN did not stay NaN")
      assert.are.equal(5e-324, got.tiny)
      assert.are.equal(1.7976931348623157e308, got.big)
      assert.are.equal(1 / 3, got.third)
    end)

    it("keeps scalar payloads", function()
      for _, v in ipairs({0, 1.0, -0.5, math.maxinteger, true, false, "", "s"}) do
        local p = roundtrip(v).payload
        assert.are.equal(v, p)
        assert.are.equal(math.type(v), math.type(p))
      end
      local m = roundtrip(nil)
      assert.is_nil(m.payload)
      local n = roundtrip(0 / 0).payload
      assert.is_true(n ~= n)
    end)
  end)

  describe("strings", function()
    it("are binary-safe: all 256 byte values", function()
      local got = roundtrip({s = ALL_BYTES, r = ALL_BYTES:reverse()}).payload
      assert.are.equal(256, #got.s)
      assert.are.equal(ALL_BYTES, got.s)
      assert.are.equal(ALL_BYTES:reverse(), got.r)
      assert.are.equal(ALL_BYTES, roundtrip(ALL_BYTES).payload)
    end)

    it("keep embedded NULs, in values and in keys too", function()
      local m = roundtrip({["k\0ey"] = "a\0b", z = "\0", t = "tail\0"},
        {values = {["v\0"] = "\0\0"}})
      assert.are.equal("a\0b", m.payload["k\0ey"])
      assert.are.equal(3, #m.payload["k\0ey"])
      assert.are.equal("\0", m.payload.z)
      assert.are.equal("tail\0", m.payload.t)
      assert.are.equal("\0\0", m.values["v\0"])
    end)

    it("come back exact when many short ones repeat (the decoder's string cache)", function()
      -- 300 keys of 0..40 bytes, more than the cache holds and sharing its
      -- slots, with short string values; three rounds, the values changing
      for round = 1, 3 do
        local p = {}
        for i = 1, 300 do
          local k = string.rep(string.char(97 + i % 26), i % 41) .. (i > 40 and tostring(i) or "")
          p[k] = string.rep("v", (i + round) % 35) .. round
        end
        p[""] = "empty key " .. round
        local got = roundtrip(p).payload
        local n = 0
        for k, v in pairs(got) do
          n = n + 1
          assert.are.equal(p[k], v)
        end
        local want = 0
        for _ in pairs(p) do want = want + 1 end
        assert.are.equal(want, n)
      end
    end)

    it("keep a long string", function()
      local s = string.rep(ALL_BYTES, 4096) -- 1 MiB
      assert.are.equal(s, roundtrip(s).payload)
    end)
  end)

  describe("tables", function()
    it("keep nested shapes", function()
      local v = {
        order = {id = 7, lines = {{sku = "a", qty = 1}, {sku = "b", qty = 2.5}}},
        matrix = {{1, 2}, {3, 4}, {}},
        flags = {on = true, off = false},
        empty = {},
        [10] = "ten",
        [-1] = "minus one",
        [0] = "zero",
      }
      assert.are.same(v, roundtrip(v).payload)
    end)

    it("keep the present keys of arrays with holes", function()
      local got = roundtrip({
        a = {1, nil, 3},
        b = {nil, 2},
        c = {[1] = "x", [5] = "y"},
        d = {1, 2, 3, nil, nil, 6},
      }).payload
      assert.are.equal(1, got.a[1])
      assert.is_nil(got.a[2])
      assert.are.equal(3, got.a[3])
      assert.is_nil(got.b[1])
      assert.are.equal(2, got.b[2])
      assert.are.same({[1] = "x", [5] = "y"}, got.c)
      assert.are.same({[1] = 1, [2] = 2, [3] = 3, [6] = 6}, got.d)
      for k in pairs(got.c) do assert.are.equal("integer", math.type(k)) end
    end)

    it("keep boolean keys", function()
      local got = roundtrip({[true] = "yes", [false] = "no", nested = {[true] = {[false] = 1}}}).payload
      assert.are.equal("yes", got[true])
      assert.are.equal("no", got[false])
      assert.are.equal(1, got.nested[true][false])
    end)

    it("keep float keys as floats", function()
      local big = 2^63 -- a float with no integer equivalent
      local got = roundtrip({[1.5] = "a", [-0.25] = "b", [big] = "c", [1e300] = "d"}).payload
      assert.are.equal("a", got[1.5])
      assert.are.equal("b", got[-0.25])
      assert.are.equal("c", got[big])
      assert.are.equal("d", got[1e300])
      local n = 0
      for k in pairs(got) do
        n = n + 1
        assert.are.equal("float", math.type(k), tostring(k))
      end
      assert.are.equal(4, n)
    end)

    it("keep integer and string keys apart", function()
      local got = roundtrip({[1] = "int", ["1"] = "str", [2] = "int2"}).payload
      assert.are.equal("int", got[1])
      assert.are.equal("str", got["1"])
      assert.are.equal("int2", got[2])
    end)

    it("copy a table that appears twice (no cycle) at both places", function()
      local shared = {n = 1}
      local got = roundtrip({a = shared, b = shared, list = {shared, shared}}).payload
      assert.are.same({n = 1}, got.a)
      assert.are.same({n = 1}, got.b)
      assert.are.same({{n = 1}, {n = 1}}, got.list)
    end)

    it("accept 64 levels of nesting (the payload table is level 1)", function()
      local got = roundtrip(nest(64)).payload
      assert.are.equal(64, depth_of(got))
    end)
  end)

  describe("msg.values", function()
    it("is an empty table when no values are given", function()
      local m = roundtrip("x")
      assert.are.same({}, m.values)
    end)

    it("keeps string keys and sendable values with their types", function()
      local values = {user = "ann", n = 1, f = 1.0, z = -0.0, ok = true, no = false,
                      list = {1, 2.5, "x"}, deep = {a = {b = {[true] = 1.5}}}, bin = ALL_BYTES}
      local m = roundtrip("x", {values = values})
      assert.are.same(values, m.values)
      assert.are.equal("integer", math.type(m.values.n))
      assert.are.equal("float", math.type(m.values.f))
      assert.are.equal(-math.huge, 1 / m.values.z)
      assert.are.equal("float", math.type(m.values.list[2]))
      assert.are_not.equal(values, m.values)
    end)

    it("raises for non-string keys, and sends nothing", function()
      assert_contains(error_of(mb.send, DEST, "x", {values = {[1] = "a"}}), "values")
      assert_contains(error_of(mb.send, DEST, "x", {values = {"a", "b"}}), "values")
      assert_contains(error_of(mb.send, DEST, "x", {values = {[true] = "a"}}), "values")
      assert_contains(error_of(mb.send, DEST, "x", {values = {[1.5] = "a"}}), "values")
      assert_contains(error_of(mb.send, DEST, "x", {values = {ok = 1, [2] = "a"}}), "values")
      mb.run()
      assert.are.equal(0, #received)
      assert.are.equal(0, mb.stats(DEST).sent)
    end)

    it("raises for non-string keys in mb.reply's values too, and replies nothing", function()
      -- (mb.reply took them: the reply's msg.values had integer and boolean keys)
      assert(mb.destination("values/svc"))
      local errs = {}
      listen("values/svc", function(m)
        for _, bad in ipairs({{[1] = "a"}, {"a", "b"}, {[true] = "a"}, {ok = 1, [2.5] = "a"}}) do
          errs[#errs + 1] = error_of(mb.reply, m, "r", bad)
        end
      end)
      local reply, err = mb.request("values/svc", "q", {timeout = 0.2})
      assert.is_nil(reply)
      assert.matches("^timeout: ", err) -- no reply went
      assert.are.equal(4, #errs)
      assert_contains(errs[1], "mb.reply: values keys must be strings (found a number key)")
      assert_contains(errs[2], "mb.reply: values keys must be strings (found a number key)")
      assert_contains(errs[3], "mb.reply: values keys must be strings (found a boolean key)")
      assert_contains(errs[4], "mb.reply: values keys must be strings (found a number key)")
      assert.are.equal(0, mb.stats("values/svc").replies)
    end)

    it("raises for an unsendable value, naming its path", function()
      assert_contains(error_of(mb.send, DEST, "x", {values = {f = print}}),
        "values.f: cannot send a function")
      assert_contains(error_of(mb.send, DEST, "x", {values = {t = {1, {2, print}}}}),
        "values.t[2][2]: cannot send a function")
      mb.run()
      assert.are.equal(0, #received)
    end)

    it("nests up to 64 levels, the values table being level 1", function()
      local values = nest(64)
      local m = roundtrip("x", {values = values})
      assert.are.equal(64, depth_of(m.values))
      local err = error_of(mb.send, DEST, "x", {values = nest(65)})
      assert_contains(err, "values" .. string.rep(".x", 64) .. ":")
    end)
  end)

  describe("message fields", function()
    it("carry destination and a unique string id equal to what send returned", function()
      local id1 = assert(mb.send(DEST, 1))
      local id2 = assert(mb.send(DEST, 2))
      mb.run()
      assert.are.equal(2, #received)
      assert.are.equal("string", type(id1))
      assert.are_not.equal(id1, id2)
      local byid = {}
      for _, m in ipairs(received) do
        assert.are.equal(DEST, m.destination)
        assert.are.equal("string", type(m.id))
        byid[m.id] = m.payload
      end
      assert.are.equal(1, byid[id1])
      assert.are.equal(2, byid[id2])
      assert.is_nil(received[1].reply_to)
      assert.is_nil(received[1].response_id)
    end)

    it("carry each its own id to every listener, also where ids are cached", function()
      -- two listeners, synchronous and parallel: the ids of one message are
      -- one string for both listeners and the sender, never another's
      assert(mb.destination("values/sync", {type = "synchronous"}))
      local seen = {}
      for _ = 1, 2 do
        listen("values/sync", function(m) seen[#seen + 1] = {m.id, m.payload} end)
        listen(DEST, function(m) seen[#seen + 1] = {m.id, m.payload} end)
      end
      local sent = {}
      for i = 1, 20 do
        sent[i] = assert(mb.send(i % 2 == 0 and "values/sync" or DEST, i))
      end
      mb.run()
      assert.are.equal(40, #seen)
      for _, s in ipairs(seen) do assert.are.equal(sent[s[2]], s[1]) end
      for i = 2, 20 do assert.are_not.equal(sent[i - 1], sent[i]) end
    end)

    it("carry reply_to; the reply carries response_id and keeps its types", function()
      assert(mb.destination("values/svc"))
      assert(mb.destination("values/replies"))
      local asked, replies = {}, {}
      listen("values/svc", function(m)
        asked[#asked + 1] = m
        return {echo = m.payload, f = 2.0, i = 2, s = "a\0b"}
      end)
      listen("values/replies", function(m) replies[#replies + 1] = m end)
      local id = assert(mb.send("values/svc", {1, 1.0}, {reply_to = "values/replies"}))
      mb.run()
      assert.are.equal(1, #asked)
      assert.are.equal("values/replies", asked[1].reply_to)
      assert.are.equal(id, asked[1].id)
      assert.are.equal(1, #replies)
      local r = replies[1]
      assert.are.equal(id, r.response_id)
      assert.are.equal("values/replies", r.destination)
      assert.are.equal("string", type(r.id))
      assert.are_not.equal(id, r.id)
      assert.are.same({echo = {1, 1.0}, f = 2.0, i = 2, s = "a\0b"}, r.payload)
      assert.are.equal("float", math.type(r.payload.echo[2]))
      assert.are.equal("float", math.type(r.payload.f))
      assert.are.equal("integer", math.type(r.payload.i))
    end)

    it("survive a request both ways", function()
      assert(mb.destination("values/svc"))
      local asked
      listen("values/svc", function(m)
        asked = m
        return {n = m.payload.n + 1, f = m.payload.f * 2, bin = m.payload.bin, [true] = 1.5}
      end)
      local reply, rmsg = mb.request("values/svc", {n = 1, f = 1.0, bin = ALL_BYTES},
        {values = {trace = "t1"}, timeout = 2})
      assert.is_table(reply, tostring(rmsg))
      assert.are.equal("t1", asked.values.trace)
      assert.are.equal(2, reply.n)
      assert.are.equal("integer", math.type(reply.n))
      assert.are.equal(2.0, reply.f)
      assert.are.equal("float", math.type(reply.f))
      assert.are.equal(ALL_BYTES, reply.bin)
      assert.are.equal(1.5, reply[true])
      assert.are.equal(asked.id, rmsg.response_id)
      assert.are.same(reply, rmsg.payload)
    end)

    it("survive an explicit mb.reply with values", function()
      assert(mb.destination("values/svc"))
      local ok, err
      listen("values/svc", function(m)
        ok, err = mb.reply(m, {i = 1, f = 1.0}, {who = "svc", n = 3, x = -0.0})
      end)
      local reply, rmsg = mb.request("values/svc", "q", {timeout = 0.5})
      assert.is_true(ok, "mb.reply returned " .. tostring(ok) .. ", " .. tostring(err))
      assert.is_table(reply, tostring(rmsg))
      assert.are.same({i = 1, f = 1.0}, reply)
      assert.are.equal("float", math.type(reply.f))
      assert.are.same({who = "svc", n = 3, x = -0.0}, rmsg.values)
      assert.are.equal(-math.huge, 1 / rmsg.values.x)
    end)
  end)

  describe("what cannot be sent", function()
    -- Each raises an error naming the path and sends nothing.
    local function refuses(payload, ...)
      local err = error_of(mb.send, DEST, payload)
      assert_contains(err, ...)
      mb.run()
      assert.are.equal(0, #received, "something was delivered")
      assert.are.equal(0, mb.stats(DEST).sent)
      return err
    end

    it("a function", function()
      refuses({f = print}, "payload.f: cannot send a function")
      refuses({items = {1, 2, function() end}}, "payload.items[3]: cannot send a function")
      refuses(print, "payload: cannot send a function")
    end)

    -- issue 12, item 10: a key with a NUL byte is not cut at the NUL
    it("names a key with a NUL byte, quotes or control bytes escaped", function()
      refuses({["a\0b"] = {f = print}}, 'payload["a\\000b"].f: cannot send a function')
      refuses({['say "hi"\n'] = print}, 'payload["say \\"hi\\"\\010"]: cannot send a function')
    end)

    it("a coroutine", function()
      refuses({co = coroutine.create(print)}, "payload.co: cannot send a coroutine")
      refuses({list = {coroutine.running()}}, "payload.list[1]: cannot send a coroutine")
    end)

    it("a userdata", function()
      refuses({out = io.stdout}, "payload.out: cannot send a userdata")
      refuses({{{io.stdout}}}, "payload[1][1][1]:", "userdata")
    end)

    it("a cyclic table", function()
      local t = {}
      t.self = t
      refuses(t, "payload.self:", "cycl")
      local a, b = {}, {}
      a.b = b
      b.list = {a}
      refuses({root = a}, "payload.root.b.list[1]:", "cycl")
    end)

    it("nesting deeper than 64 levels", function()
      local err = refuses(nest(65), "payload" .. string.rep(".x", 64) .. ":")
      assert.is_truthy(err:find("64", 1, true) or err:find("deep", 1, true), err)
      refuses({wrap = nest(64)}, "payload.wrap" .. string.rep(".x", 63) .. ":")
    end)

    it("a table used as a key", function()
      refuses({[{}] = 1}, "payload[", "table", "key")
      refuses({inner = {[{1}] = "v"}}, "payload.inner[", "key")
    end)

    it("a value whose key names an odd path", function()
      refuses({["odd key"] = print}, 'payload["odd key"]: cannot send a function')
      refuses({[true] = print}, "payload[true]: cannot send a function")
      refuses({[7] = {[2.5] = print}}, "payload[7][2.5]: cannot send a function")
    end)

    it("the same through mb.request, which raises instead of waiting", function()
      assert_contains(error_of(mb.request, DEST, {f = print}, {timeout = 5}),
        "payload.f: cannot send a function")
    end)
  end)

  describe("max_message_size", function()
    it("refuses a 70 MiB string, naming max_message_size", function()
      local big = string.rep("x", 70 * 1024 * 1024)
      local err = error_of(mb.send, DEST, big)
      assert_contains(err, "max_message_size")
      err = error_of(mb.send, DEST, {doc = {body = big}})
      assert_contains(err, "max_message_size")
      err = error_of(mb.send, DEST, "small", {values = {blob = big}})
      assert_contains(err, "max_message_size")
      mb.run()
      assert.are.equal(0, #received)
      assert.are.equal(0, mb.stats(DEST).sent)
    end)

    it("counts payload and values together", function()
      local half = string.rep("y", 40 * 1024 * 1024)
      local err = error_of(mb.send, DEST, half, {values = {more = half}})
      assert_contains(err, "max_message_size")
      mb.run()
      assert.are.equal(0, #received)
    end)

    it("refuses many small strings adding up to more than the limit", function()
      local chunk = string.rep("z", 1024 * 1024)
      local parts = {}
      for i = 1, 70 do parts[i] = chunk end -- 70 references to one 1 MiB string
      assert_contains(error_of(mb.send, DEST, parts), "max_message_size")
    end)

    it("delivers a message well under the limit", function()
      local s = string.rep("w", 8 * 1024 * 1024)
      assert.are.equal(s, roundtrip({body = s}).payload.body)
    end)

    it("is set by mb.setup in a plain Lua program", function()
      local script = os.tmpname() .. ".lua"
      helper.write(script, [[
        local mb = require "mb"
        mb.setup{max_message_size = 4096}
        mb.destination("big")
        mb.listen("big", function(msg) print("got " .. #msg.payload) end)
        for _, n in ipairs {4000, 4200} do
          local ok, err = pcall(mb.send, "big", string.rep("x", n))
          print(n, ok and "sent" or err)
        end
        -- payload and values together
        print(pcall(mb.send, "big", string.rep("x", 2100), {values = {v = string.rep("y", 2100)}}))
        mb.run()
        -- the same value again changes nothing; another one comes too late
        print(pcall(mb.setup, {max_message_size = 4096}))
        print(pcall(mb.setup, {max_message_size = 8192}))
      ]])
      local out, err, code = helper.run("lua5.4 " .. script)
      os.remove(script)
      assert.are.equal(0, code, err)
      assert.matches("4000\tsent\n", out)
      assert.matches("4200\tmb.send: payload: message too large %(over 4096 bytes, the max_message_size%)", out)
      assert.matches("\nfalse\tmb.send: message too large %(over 4096 bytes, the max_message_size%)", out)
      assert.matches("got 4000\n", out)
      assert.not_matches("got 4200", out)
      assert.matches("\ntrue\nfalse\t.*mb.setup: must come before any other use of the bus", out)
    end)

    it("takes from mb.setup only a whole number of bytes from 1 KiB to 1 GiB", function()
      for _, bad in ipairs {"16M", 4096.5, 0, -1, 1023, 1024 * 1024 * 1024 + 1, true} do
        local err = error_of(mb.setup, {max_message_size = bad})
        assert.matches("mb.setup: option 'max_message_size' must be", err)
      end
      assert.matches("from 1024 %(1 KiB%) to 1073741824 %(1 GiB%), not 1023",
        error_of(mb.setup, {max_message_size = 1023}))
      -- the limit it has (64 MiB) is no change, also in a program that has used the bus
      assert.is_nil((mb.setup{max_message_size = 64 * 1024 * 1024}))
    end)
  end)
end)
