-- mb.json.encode / mb.json.decode, and the JSON forms of messages:
-- `format = "json"` listeners and `format = "json"` sends.
-- SPEC sections 2 (Lua API: mb.json, mb.listen, mb.send) and 7 (JSON, Depth).
local mb = require "mb"
local helper = require "spec.helper"

local encode, decode = mb.json.encode, mb.json.decode

local error_of, assert_contains = helper.error_of, helper.assert_contains

-- Decodes text, which must be invalid; returns the byte position the error
-- names and the whole message.
local function bad_json_at(text)
  local err = error_of(decode, text)
  local pos = err:match("invalid JSON at byte (%d+)")
  assert.is_not_nil(pos, ("no 'invalid JSON at byte N' in %q"):format(err))
  return tonumber(pos), err
end

local nest = helper.nest

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function clean()
  for _, d in ipairs(mb.destinations()) do mb.remove_destination(d) end
  mb.run()
end

describe("mb.json", function()
  after_each(clean)

  describe("round trips", function()
    it("keeps nested structures", function()
      local v = {
        name = "shop",
        open = true,
        closed = false,
        items = {{sku = "a-1", qty = 2, price = 9.5}, {sku = "b-2", qty = 1, price = 10.0}},
        matrix = {{1, 2, 3}, {4, 5, 6}, {}},
        meta = {tags = {"x", "y"}, deep = {deeper = {deepest = {"bottom"}}}},
        empty = {},
        text = "",
      }
      local back = decode(encode(v))
      assert.are.same(v, back)
      assert.are.same(v, decode(encode(back)))
    end)

    it("round-trips scalars at the top level", function()
      for _, v in ipairs({true, false, 0, -1, 42, 0.5, -2.25, "", "plain", "é😀"}) do
        local back = decode(encode(v))
        assert.are.equal(v, back)
        assert.are.equal(math.type(v), math.type(back))
      end
      assert.are.equal("null", encode(nil))
      assert.is_nil(decode("null"))
    end)

    it("encodes integers without a fraction and floats always with one", function()
      assert.are.equal("1", encode(1))
      assert.are.equal("1.0", encode(1.0))
      assert.are.equal("3.0", encode(3.0))
      assert.are.equal("-3.0", encode(-3.0))
      assert.are.equal("0.5", encode(0.5))
      assert.are.equal("[1,1.0]", encode({1, 1.0}))
      -- big floats that print without a '.' still get a '.' or an exponent
      for _, f in ipairs({2^53, 1e15, 1e20, 123456789012345.0, 1e300, -0.0}) do
        local s = encode(f)
        assert.is_truthy(s:find("[.eE]"), ("float %.17g encoded as %q"):format(f, s))
      end
    end)

    it("decodes numbers with a fraction or an exponent as floats", function()
      local cases = {
        {"3.0", 3.0}, {"-3.0", -3.0}, {"0.5", 0.5}, {"1e2", 100.0}, {"1E2", 100.0},
        {"1e-2", 0.01}, {"2.5e+3", 2500.0}, {"0.0", 0.0},
      }
      for _, c in ipairs(cases) do
        local v = decode(c[1])
        assert.are.equal("float", math.type(v), c[1])
        assert.are.equal(c[2], v, c[1])
      end
      local z = decode("-0.0")
      assert.are.equal("float", math.type(z))
      assert.are.equal(-math.huge, 1 / z) -- the sign survives
    end)

    it("decodes numbers without a fraction or exponent as integers", function()
      for _, c in ipairs({{"0", 0}, {"3", 3}, {"-17", -17}, {"-0", 0}, {"1000000", 1000000}}) do
        local v = decode(c[1])
        assert.are.equal("integer", math.type(v), c[1])
        assert.are.equal(c[2], v, c[1])
      end
    end)

    it("keeps integer and float distinct inside structures, both ways", function()
      local v = {i = 1, f = 1.0, list = {1, 2.0, 3, 4.5}, neg = -0.0}
      local back = decode(encode(v))
      assert.are.equal("integer", math.type(back.i))
      assert.are.equal("float", math.type(back.f))
      assert.are.equal("integer", math.type(back.list[1]))
      assert.are.equal("float", math.type(back.list[2]))
      assert.are.equal("integer", math.type(back.list[3]))
      assert.are.equal("float", math.type(back.list[4]))
      assert.are.equal("float", math.type(back.neg))
      assert.are.equal(-math.huge, 1 / back.neg)
    end)

    it("writes floats with the fewest digits of %.15g..%.17g that read back", function()
      local cases = {
        {-0.0, "-0.0"}, {0.0, "0.0"}, {0.1, "0.1"}, {0.3, "0.3"}, {1 / 3, "0.3333333333333333"},
        {100.0, "100.0"}, {1e14, "100000000000000.0"}, {1e15, "1e+15"}, {1e21, "1e+21"},
        {1e300, "1e+300"}, {0.0001, "0.0001"}, {1e-5, "1e-05"}, {-0.0025, "-0.0025"},
        {2^53, "9007199254740992.0"}, {2^63, "9.223372036854776e+18"}, {123.456, "123.456"},
        {999999999999999.9, "999999999999999.9"}, {5e-324, "4.94065645841247e-324"},
        {251.75, "251.75"}, {-7.0, "-7.0"},
      }
      for _, c in ipairs(cases) do
        assert.are.equal(c[2], encode(c[1]), ("%.17g"):format(c[1]))
        assert.are.equal("[" .. c[2] .. "]", encode({c[1]}))
      end
    end)

    it("round-trips floats exactly", function()
      for _, f in ipairs({0.1, 1 / 3, -2 / 3, 1e300, -1e-300, 5e-324, 2^53, 2^63, 1e15 + 0.5,
                          math.pi, 123456.789, 1.7976931348623157e308}) do
        local back = decode(encode(f))
        assert.are.equal("float", math.type(back), ("%.17g"):format(f))
        assert.are.equal(f, back, ("%.17g"):format(f))
      end
    end)

    it("keeps big integers exact", function()
      local cases = {
        {"9007199254740993", 9007199254740993},
        {"-9007199254740993", -9007199254740993},
        {"9223372036854775807", math.maxinteger},
        {"-9223372036854775808", math.mininteger},
      }
      for _, c in ipairs(cases) do
        local v = decode(c[1])
        assert.are.equal("integer", math.type(v), c[1])
        assert.is_true(v == c[2], c[1]) -- integer comparison, no float rounding
        assert.are.equal(c[1], encode(c[2]))
        assert.are.equal(c[1], encode(v))
      end
      local t = decode(encode({math.maxinteger, math.mininteger, 9007199254740993}))
      assert.is_true(t[1] == math.maxinteger)
      assert.is_true(t[2] == math.mininteger)
      assert.is_true(t[3] == 9007199254740993)
      assert.are.equal("integer", math.type(t[3]))
    end)

    -- issue 12, item 7: not an infinity no encoder could write back
    it("refuses numbers beyond the double range, naming their byte", function()
      assert.are.equal("mb.json.decode: invalid JSON at byte 0: number 1e400 is out of range "
        .. "(a JSON number must be within +-1.8e308)", error_of(decode, "1e400"):match("mb%.json.*"))
      assert.are.equal(10, (bad_json_at('{"a": [1, -1E999]}')))
      assert.are.equal(1, (bad_json_at("[2e308]")))
      assert.are.equal(1.7976931348623157e308, decode("1.7976931348623157e308"))
      assert.are.equal(0.0, decode("1e-400")) -- below the smallest double: zero
      assert.are.equal("float", math.type(decode("1e-400")))
    end)

    it("decodes numbers beyond 64 bits as floats", function()
      local cases = {
        {"123456789012345678901234", 1.2345678901234568e23},
        {"9223372036854775808", 2^63},
        {"-9223372036854775809", -(2^63)},
        {"100000000000000000000000000000000000000", 1e38},
      }
      for _, c in ipairs(cases) do
        local v = decode(c[1])
        assert.are.equal("float", math.type(v), c[1])
        assert.are.equal(c[2], v, c[1])
      end
    end)
  end)

  describe("strings", function()
    it("decodes \\u escapes to UTF-8", function()
      assert.are.equal("\xc3\xa9", decode('"\\u00e9"'))
      assert.are.equal("\xc3\xa9", decode('"\\u00E9"'))
      assert.are.equal("A", decode('"\\u0041"'))
      assert.are.equal("\xe2\x82\xac", decode('"\\u20ac"')) -- euro sign, 3 bytes
      assert.are.equal("caf\xc3\xa9!", decode('"caf\\u00e9!"'))
    end)

    it("decodes a surrogate pair to one 4-byte UTF-8 sequence", function()
      local s = decode('"\\ud83d\\ude00"')
      assert.are.equal(4, #s)
      assert.are.equal("f09f9880", hex(s))
      assert.are.equal("😀", s)
      assert.are.equal("x😀y", decode('"x\\ud83d\\ude00y"'))
    end)

    -- issue 12, item 7; SPEC 7 (JSON text)
    it("decodes any surrogate escape that is not a pair to U+FFFD, keeping what follows", function()
      local fffd = "\xef\xbf\xbd"
      assert.are.equal(fffd .. "A", decode('"\\ud800\\u0041"'))
      assert.are.equal(fffd .. "x", decode('"\\udc00x"'))
      assert.are.equal("a" .. fffd, decode('"a\\uD800"'))
      assert.are.equal(fffd .. fffd, decode('"\\udc00\\ud800"'))
      assert.are.equal(fffd .. "\u{10000}", decode('"\\ud800\\ud800\\udc00"'))
      assert.are.equal(fffd .. "\n", decode('"\\ud800\\n"'))
      assert.are.equal("\u{10FFFF}", decode('"\\udbff\\udfff"'))
      assert.are.equal("\\ud800", decode('"\\\\ud800"')) -- an escaped backslash
      assert.are.same({["k" .. fffd .. "A"] = fffd}, decode('{"k\\ud800\\u0041": "\\udfff"}'))
      assert.is_truthy(utf8.len(decode('["\\ud800", "\\udc00\\udc00"]')[2]))
    end)

    it("keeps \\u0000 inside a string", function()
      local s = decode('"a\\u0000b"')
      assert.are.equal(3, #s)
      assert.are.equal("a\0b", s)
      local t = decode('{"k\\u0000ey": "\\u0000"}')
      assert.are.equal("\0", t["k\0ey"])
    end)

    it("decodes the simple escapes", function()
      assert.are.equal("\"\\/\b\f\n\r\t", decode([["\"\\\/\b\f\n\r\t"]]))
    end)

    it("escapes quotes, backslashes and control characters on encode", function()
      assert.are.equal([["a\"b"]], encode('a"b'))
      assert.are.equal([["a\\b"]], encode("a\\b"))
      assert.are.equal([["\n\r\t"]], encode("\n\r\t"))
      assert.are.equal([["\u0001"]], (encode("\1"):gsub("\\u00(%x%x)", function(h)
        return "\\u00" .. h:lower() end)))
      assert.are.equal([["\u0000"]], encode("\0"))
      -- every control character comes out escaped: no raw byte below 0x20
      local ctl = {}
      for b = 0, 31 do ctl[#ctl + 1] = string.char(b) end
      local s = table.concat(ctl) .. '"\\' .. "end"
      local text = encode(s)
      assert.is_nil(text:find("[%z\1-\31]"), "raw control byte in " .. text)
      assert.are.equal(s, decode(text))
    end)

    it("writes every other byte as it is: '/', DEL, UTF-8 and invalid UTF-8", function()
      assert.are.equal('"\\u0000\\u0001\\b\\t\\n\\u000B\\f\\r\\u001B\\u001F /\127\128\255\195\169\\"\\\\"',
        encode("\0\1\8\9\10\11\12\13\27\31 /\127\128\255\195\169\"\\"))
      assert.are.equal('{"\\u001F/\255":"\\t"}', encode({["\31/\255"] = "\t"}))
    end)

    it("round-trips UTF-8 text and escapes in keys", function()
      local v = {["clé"] = "valeur é😀", ['a"b'] = "q", ["new\nline"] = "\t"}
      assert.are.same(v, decode(encode(v)))
    end)
  end)

  describe("tables", function()
    it("encodes an empty table as {}", function()
      assert.are.equal("{}", encode({}))
      assert.are.equal('{"a":{}}', encode({a = {}}))
      assert.are.same({}, decode("{}"))
      assert.are.same({}, decode("[]"))
    end)

    it("encodes a table with keys exactly 1..n as an array", function()
      assert.are.equal("[1,2,3]", encode({1, 2, 3}))
      assert.are.equal('["a",["b",["c"]]]', encode({"a", {"b", {"c"}}}))
      assert.are.equal("[true,false]", encode({true, false}))
      assert.are.same({10, 20, 30}, decode("[10,20,30]"))
    end)

    it("encodes any other table as an object whose integer keys become strings", function()
      local holes = decode(encode({[1] = "a", [3] = "c"}))
      assert.are.same({["1"] = "a", ["3"] = "c"}, holes)
      local mixed = decode(encode({"a", "b", x = 1}))
      assert.are.same({["1"] = "a", ["2"] = "b", x = 1}, mixed)
      assert.are.equal('{"0":"z"}', encode({[0] = "z"}))
      assert.are.equal('{"-5":"n"}', encode({[-5] = "n"}))
      assert.are.equal('{"2":"b"}', encode({[2] = "b"}))
      local big = decode(encode({[math.maxinteger] = 1}))
      assert.are.equal(1, big[tostring(math.maxinteger)])
    end)

    it("writes the array part first, then the other keys", function()
      assert.are.equal('{"1":"a","2":"b","x":1}', encode({"a", "b", x = 1}))
      assert.are.equal('[{},[{}],{"k":[1,2.5,"s",true]}]', encode({{}, {{}}, {k = {1, 2.5, "s", true}}}))
    end)

    it("decodes null as an absent value", function()
      local a = decode("[1,null,3]")
      assert.are.equal(1, a[1])
      assert.is_nil(a[2])
      assert.are.equal(3, a[3])
      assert.are.same({b = 2}, decode('{"a":null,"b":2}'))
    end)

    it("refuses a boolean key, naming the path", function()
      local err = error_of(encode, {a = {[true] = 1}})
      assert_contains(err, "value.a[true]", "boolean key")
      err = error_of(encode, {[false] = 1})
      assert_contains(err, "value[false]", "boolean key")
      err = error_of(encode, {list = {{}, {}, {[true] = "x"}}})
      assert_contains(err, "value.list[3][true]", "boolean key")
    end)

    it("refuses a float key, naming the path", function()
      local err = error_of(encode, {a = {[1.5] = 1}})
      assert_contains(err, "value.a[1.5]", "float key")
      err = error_of(encode, {[0.25] = true})
      assert_contains(err, "value[0.25]", "float key")
    end)

    it("refuses NaN and infinities, naming the path", function()
      assert_contains(error_of(encode, 0 / 0), "NaN")
      assert_contains(error_of(encode, math.huge), "infinity")
      assert_contains(error_of(encode, -math.huge), "infinity")
      assert_contains(error_of(encode, {x = {y = math.huge}}), "value.x.y", "infinity")
      assert_contains(error_of(encode, {1, 2, 0 / 0}), "value[3]", "NaN")
    end)

    -- issue 12, item 7; SPEC 7 (JSON text)
    it("refuses keys that would be one JSON object key (1 and \"1\"), naming the path", function()
      assert.are.equal('mb.json.encode: value["1"]: cannot encode the keys 1 and "1" in one JSON '
        .. 'object (both are written as "1")',
        error_of(encode, {[1] = "a", ["1"] = "b"}):match("mb%.json%.encode: .*"))
      assert_contains(error_of(encode, {x = {"a", "b", ["2"] = "c"}}), 'value.x["2"]: cannot encode the keys 2 and "2"')
      assert_contains(error_of(encode, {list = {{}, {[-5] = 1, ["-5"] = 2}}}), 'value.list[2]["-5"]')
      assert_contains(error_of(encode, {[math.mininteger] = 1, [tostring(math.mininteger)] = 2}),
        'value["-9223372036854775808"]: cannot encode the keys -9223372036854775808 and '
        .. '"-9223372036854775808" in one JSON object (both are written as "-9223372036854775808")')
      -- only the decimal form collides; a hole leaves its index free
      assert.are.same({["01"] = 2, ["1.0"] = 3, [" 1"] = 4, ["+1"] = 5, ["-0"] = 6, ["3"] = 7, ["1"] = "a"},
        decode(encode({"a", nil, ["01"] = 2, ["1.0"] = 3, [" 1"] = 4, ["+1"] = 5, ["-0"] = 6, ["3"] = 7})))
      assert.are.same({["2"] = "b", ["1"] = "a"}, decode(encode({"a", nil, ["2"] = "b"})))
    end)

    it("fails a format = \"json\" delivery of colliding keys, without calling the handler", function()
      assert(mb.destination("json/collide"))
      local calls = 0
      mb.listen("json/collide", function() calls = calls + 1 end, {format = "json"})
      assert(mb.send("json/collide", {[1] = "a", ["1"] = "b"}))
      mb.run()
      assert.are.equal(0, calls)
      assert.are.equal(1, mb.stats("json/collide").failed)
    end)

    -- issue 12, item 6: a table with an array part and another key was
    -- written again at every level (4x per 2 levels); a JSON array with a
    -- null decodes to such a table. 64 levels run in a child process with a
    -- generous bound (linear: well under a millisecond; before: never).
    it("encodes 64 levels of tables with an array part and another key, in linear time", function()
      local script = os.tmpname()
      helper.write(script, [[
        local mb = require "mb"
        local text = string.rep("[1,null,", 63) .. "[1,null,0]" .. string.rep("]", 63)
        local a = mb.json.encode(mb.json.decode(text))
        local t = "end"
        for i = 1, 64 do t = {t, i, k = i} end
        io.write(a, "\n", mb.json.encode(t), "\n")
      ]])
      local out, err, code = helper.run("timeout 60 lua5.4 " .. script)
      os.remove(script)
      assert.are.equal(0, code, "did not finish within 60 s: " .. err)
      local a, b = out:match("^(.-)\n(.-)\n$")
      assert.are.equal(string.rep('{"1":1,"3":', 64) .. "0" .. string.rep("}", 64), a)
      local want = '"end"'
      for i = 1, 64 do want = '{"1":' .. want .. ',"2":' .. i .. ',"k":' .. i .. "}" end
      assert.are.equal(want, b)
    end)

    it("refuses what cannot be sent at all, saying it cannot encode it, and where", function()
      -- encoding sends nothing: the message says "encode", not "send"
      local function says(v, want)
        assert.are.equal("mb.json.encode: " .. want, error_of(encode, v):match("mb%.json%.encode: .*"))
      end
      says(function() end, "value: cannot encode a function in JSON")
      says({f = print}, "value.f: cannot encode a function in JSON")
      says({list = {1, {co = coroutine.create(print)}}},
        "value.list[2].co: cannot encode a coroutine in JSON")
      says({[print] = 1}, "value[<function>]: cannot encode a table with a function key in JSON")
      local cyc = {}
      cyc.me = cyc
      says(cyc, "value.me: cannot encode a cyclic table in JSON (it contains itself)")
      -- (the same values in a message still say "send")
      assert_contains(error_of(mb.send, "x", {f = print}), "payload.f: cannot send a function")
    end)

    it("names what cannot be sent at all before what JSON cannot express", function()
      -- whichever key comes first: the value could not even be sent
      assert.are.equal("mb.json.encode: value.f: cannot encode a function in JSON",
        error_of(encode, {[true] = 1, f = print}):match("mb%.json%.encode: .*"))
      assert.are.equal("mb.json.encode: value[1].x: cannot encode a userdata in JSON",
        error_of(encode, {[1.5] = 1, {x = io.stdout}}):match("mb%.json%.encode: .*"))
      assert.are.equal("mb.json.encode: value[4]: cannot encode a function in JSON",
        error_of(encode, {1, 2, 0 / 0, print}):match("mb%.json%.encode: .*"))
      assert.are.equal("mb.json.encode: value.x.y[2.5]: cannot encode a float key in JSON",
        error_of(encode, {x = {y = {[2.5] = 1}}}):match("mb%.json%.encode: .*"))
    end)
  end)

  describe("invalid JSON", function()
    it("raises 'invalid JSON at byte N' for malformed text", function()
      for _, text in ipairs({'{"a": tru}', '"abc', "[1] x", "", "   ", "[1,]", '{"a" 1}',
                             "{a:1}", "[1,2", "nul", "'x'", '{"a":1}}', "[01]", '"\\x"',
                             '"\\u12"', "-", "1.", ".5", "[1 2]", '{"a":}'}) do
        local pos, err = bad_json_at(text)
        assert_contains(err, "mb.json.decode")
        assert.is_true(pos >= 0 and pos <= #text, ("byte %d for %q (%d bytes)"):format(pos, text, #text))
      end
    end)

    -- Byte positions: the offending token is at 0-based offsets [first, last];
    -- a position in [first, last + 1] is accepted (0- or 1-based reading, and
    -- a lexer that notices the error one byte after the token).
    local function assert_position(text, first, last)
      local pos, err = bad_json_at(text)
      assert.is_true(pos >= first and pos <= last + 1,
        ("%q: expected byte %d..%d, got: %s"):format(text, first, last + 1, err))
      -- the position is absolute: text in front moves it by exactly that much
      local pad = string.rep(" ", 100)
      local pos2 = bad_json_at(pad .. text)
      assert.are.equal(pos + 100, pos2, ("shifted %q"):format(text))
      return pos
    end

    it("names the position of a bad literal", function()
      -- `tru}`: the bad token starts at offset 6; '}' (offset 9) shows it is bad
      assert_position('{"a": tru}', 6, 9)
    end)

    it("names the position of an unterminated string", function()
      -- the string runs from offset 6 to the end of the input (10 bytes)
      assert_position('{"k": "abc', 6, 9)
      assert_position('"abc', 0, 3)
    end)

    it("names the position of trailing garbage", function()
      assert_position("[1] x", 4, 4)
      assert_position('{"a":1} {}', 8, 8)
    end)

    it("names the position of a misplaced token", function()
      assert_position("[1,]", 3, 3)
      assert_position('{"a" 1}', 5, 5)
      assert_position('[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, }', 32, 32)
    end)

    it("names a position far into a long text", function()
      local text = "[" .. string.rep("1,", 5000) .. "oops]"
      local pos = bad_json_at(text)
      assert.is_true(pos >= 10001 and pos <= 10006, "got byte " .. pos)
    end)

    it("rejects a non-string argument", function()
      error_of(decode, {})
      error_of(decode, nil)
    end)
  end)

  describe("depth", function()
    it("decodes 1000 nested arrays, or refuses them cleanly", function()
      local text = string.rep("[", 1000) .. "1" .. string.rep("]", 1000)
      local ok, v = pcall(decode, text)
      if ok then
        local levels = 0
        while type(v) == "table" do
          levels = levels + 1
          v = v[1]
        end
        assert.are.equal(1000, levels)
        assert.are.equal(1, v)
      else
        assert_contains(tostring(v), "invalid JSON at byte")
      end
    end)

    it("decodes 1000 nested objects, or refuses them cleanly", function()
      local text = string.rep('{"a":', 1000) .. '"end"' .. string.rep("}", 1000)
      local ok, v = pcall(decode, text)
      if ok then
        for _ = 1, 1000 do v = v.a end
        assert.are.equal("end", v)
      else
        assert_contains(tostring(v), "invalid JSON at byte")
      end
    end)

    it("refuses absurd nesting with an error, not a crash", function()
      local n = 200000
      local err = error_of(decode, string.rep("[", n) .. string.rep("]", n))
      assert_contains(err, "invalid JSON at byte")
      err = error_of(decode, string.rep("[", n)) -- unbalanced too
      assert_contains(err, "invalid JSON at byte")
    end)

    it("encodes 64 levels and refuses 65, naming the path", function()
      local text = encode(nest(64))
      assert.are.equal(string.rep('{"x":', 63) .. "{}" .. string.rep("}", 63), text)
      local err = error_of(encode, nest(65))
      assert_contains(err, "value" .. string.rep(".x", 64) ..
        ": cannot encode a table nested deeper than 64 levels in JSON")
    end)
  end)
end)

describe("JSON messages", function()
  local listeners = {}
  local function listen(d, fn, opts)
    local l = assert(mb.listen(d, fn, opts))
    listeners[#listeners + 1] = l
    return l
  end

  after_each(function()
    for _, l in ipairs(listeners) do l:close() end
    listeners = {}
    clean()
  end)

  describe("a format = \"json\" listener", function()
    it("receives the message as a JSON object with destination, payload, values, id", function()
      assert(mb.destination("json/in"))
      local texts = {}
      listen("json/in", function(text) texts[#texts + 1] = text end, {format = "json"})
      local id = assert(mb.send("json/in", {a = 1, list = {1, 2.5, "x"}}))
      mb.run()
      assert.are.equal(1, #texts)
      local text = texts[1]
      assert.are.equal("string", type(text))
      local m = decode(text)
      local keys = {}
      for k in pairs(m) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.are.same({"destination", "id", "payload", "values"}, keys)
      assert.are.equal("json/in", m.destination)
      assert.are.equal(id, m.id)
      assert.are.same({a = 1, list = {1, 2.5, "x"}}, m.payload)
      assert.are.equal("float", math.type(m.payload.list[2]))
      assert.are.same({}, m.values)
      -- values is an object even when empty, and ints/floats stay apart in the text
      assert_contains(text, '"values":{}', '"a":1', "2.5")
    end)

    it("gets values, reply_to and floats written with a '.'", function()
      assert(mb.destination("json/in"))
      assert(mb.destination("json/replies"))
      local text
      listen("json/in", function(t) text = t end, {format = "json"})
      local id = assert(mb.send("json/in", {f = 3.0, i = 3},
        {values = {user = "ann", n = 2, r = 0.5}, reply_to = "json/replies"}))
      mb.run()
      assert.is_string(text)
      assert_contains(text, '"f":3.0', '"i":3')
      local m = decode(text)
      assert.are.equal(id, m.id)
      assert.are.equal("json/replies", m.reply_to)
      assert.is_nil(m.response_id)
      assert.are.same({user = "ann", n = 2, r = 0.5}, m.values)
      assert.are.equal("float", math.type(m.payload.f))
      assert.are.equal("integer", math.type(m.payload.i))
    end)

    it("gets response_id on a reply", function()
      assert(mb.destination("json/svc"))
      assert(mb.destination("json/replies"))
      listen("json/svc", function(msg) return {echo = msg.payload} end)
      local text
      listen("json/replies", function(t) text = t end, {format = "json"})
      local id = assert(mb.send("json/svc", "hi", {reply_to = "json/replies"}))
      mb.run()
      assert.is_string(text)
      local m = decode(text)
      assert.are.equal(id, m.response_id)
      assert.are.equal("json/replies", m.destination)
      assert.are.same({echo = "hi"}, m.payload)
    end)

    it("gets a nil payload as null", function()
      assert(mb.destination("json/in"))
      local text
      listen("json/in", function(t) text = t end, {format = "json"})
      assert(mb.send("json/in", nil))
      mb.run()
      assert_contains(text, '"payload":null')
    end)

    it("answers a request with its return value", function()
      assert(mb.destination("json/svc"))
      listen("json/svc", function(text)
        local m = decode(text)
        return {got = m.payload, id = m.id}
      end, {format = "json"})
      local reply, rmsg = mb.request("json/svc", {q = 1}, {timeout = 2})
      assert.is_table(reply, tostring(rmsg))
      assert.are.same({q = 1}, reply.got)
      assert.are.equal(rmsg.response_id, reply.id)
    end)

    it("can reply explicitly with mb.reply(text, payload)", function()
      assert(mb.destination("json/svc"))
      local ok, err
      listen("json/svc", function(text)
        ok, err = mb.reply(text, {explicit = decode(text).payload})
      end, {format = "json"})
      local reply, e = mb.request("json/svc", "ping", {timeout = 0.5})
      assert.is_true(ok, "mb.reply returned " .. tostring(ok) .. ", " .. tostring(err))
      assert.are.same({explicit = "ping"}, reply, tostring(e))
    end)

    it("fails the delivery of a message JSON cannot express, without calling the handler", function()
      assert(mb.destination("json/in"))
      local calls = 0
      listen("json/in", function() calls = calls + 1 end, {format = "json"})
      assert(mb.send("json/in", {[true] = "yes"}))
      assert(mb.send("json/in", {ok = 1}))
      mb.run()
      assert.are.equal(1, calls)
      local s = mb.stats("json/in")
      assert.are.equal(1, s.failed)
      assert.are.equal(1, s.delivered)
      assert.are.equal(s.deliveries, s.delivered + s.failed + s.dropped)
    end)
  end)

  describe("mb.send with format = \"json\"", function()
    it("delivers the parsed payload as a table", function()
      assert(mb.destination("json/in"))
      local got
      listen("json/in", function(msg) got = msg end)
      assert(mb.send("json/in", '{"a":1}', {format = "json"}))
      mb.run()
      assert.are.same({a = 1}, got.payload)
      assert.are.equal("integer", math.type(got.payload.a))
    end)

    it("keeps numbers, strings and nesting of the JSON text", function()
      assert(mb.destination("json/in"))
      local got
      listen("json/in", function(msg) got = msg.payload end)
      assert(mb.send("json/in",
        '{"i":9007199254740993,"f":3.0,"s":"\\u00e9\\ud83d\\ude00\\u0000","a":[1,[2,[3]]],"n":null}',
        {format = "json", values = {k = "v"}}))
      mb.run()
      assert.is_true(got.i == 9007199254740993)
      assert.are.equal("integer", math.type(got.i))
      assert.are.equal("float", math.type(got.f))
      assert.are.equal("é😀\0", got.s)
      assert.are.same({1, {2, {3}}}, got.a)
      assert.is_nil(got.n)
    end)

    it("sends JSON scalars as scalar payloads", function()
      assert(mb.destination("json/in"))
      local got = {}
      listen("json/in", function(msg) got[#got + 1] = {msg.payload} end)
      for _, text in ipairs({"42", "4.5", '"s"', "true"}) do
        assert(mb.send("json/in", text, {format = "json"}))
        mb.run()
      end
      assert.are.equal(4, #got)
      local byvalue = {}
      for _, g in ipairs(got) do byvalue[tostring(g[1]) .. ":" .. tostring(math.type(g[1]))] = true end
      assert.is_true(byvalue["42:integer"])
      assert.is_true(byvalue["4.5:float"])
      assert.is_true(byvalue["s:nil"])
      assert.is_true(byvalue["true:nil"])
    end)

    it("raises on malformed JSON, naming the byte position, and sends nothing", function()
      assert(mb.destination("json/in"))
      local calls = 0
      listen("json/in", function() calls = calls + 1 end)
      local err = error_of(mb.send, "json/in", '{"a": tru}', {format = "json"})
      assert_contains(err, "invalid JSON at byte")
      local pos = tonumber(err:match("invalid JSON at byte (%d+)"))
      assert.is_true(pos >= 6 and pos <= 10, err)
      err = error_of(mb.send, "json/in", "[1] x", {format = "json"})
      pos = tonumber(err:match("invalid JSON at byte (%d+)"))
      assert.is_true(pos == 4 or pos == 5, err)
      err = error_of(mb.send, "json/in", '{"k": "abc', {format = "json"})
      assert_contains(err, "invalid JSON at byte")
      mb.run()
      assert.are.equal(0, calls)
      assert.are.equal(0, mb.stats("json/in").sent)
    end)

    it("raises on a number beyond the double range, and sends nothing", function()
      assert(mb.destination("json/in"))
      local calls = 0
      listen("json/in", function() calls = calls + 1 end)
      local err = error_of(mb.send, "json/in", '{"big": 1e400}', {format = "json"})
      assert_contains(err, "invalid JSON at byte 8: number 1e400 is out of range")
      mb.run()
      assert.are.equal(0, calls)
      assert.are.equal(0, mb.stats("json/in").sent)
    end)

    it("raises when the payload is a table, not JSON text", function()
      assert(mb.destination("json/in"))
      listen("json/in", function() end)
      assert_contains(error_of(mb.send, "json/in", {a = 1}, {format = "json"}), "JSON string")
      mb.run()
      assert.are.equal(0, mb.stats("json/in").sent)
    end)

    -- The runtime means to refuse anything but a string here ("a format =
    -- \"json\" payload must be a JSON string"); a number is not JSON text.
    it("raises when the payload is a number, not JSON text", function()
      assert(mb.destination("json/in"))
      listen("json/in", function() end)
      assert_contains(error_of(mb.send, "json/in", 12, {format = "json"}), "JSON string")
      mb.run()
      assert.are.equal(0, mb.stats("json/in").sent)
    end)

    it("accepts 64 levels of nesting and refuses 65", function()
      assert(mb.destination("json/in"))
      local got
      listen("json/in", function(msg) got = msg.payload end)
      assert(mb.send("json/in", string.rep("[", 64) .. string.rep("]", 64), {format = "json"}))
      mb.run()
      local levels = 0
      while type(got) == "table" do
        levels = levels + 1
        got = got[1]
      end
      assert.are.equal(64, levels)
      local err = error_of(mb.send, "json/in", string.rep("[", 65) .. string.rep("]", 65),
        {format = "json"})
      assert_contains(err, "invalid JSON at byte")
    end)
  end)
end)
