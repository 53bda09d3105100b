-- share = true (SPEC section 2, issue 17): listeners in the sender's own
-- Lua state get the sender's payload table itself; listeners in other
-- services get copies; what can be sent, the statistics and the dead
-- letters are the same as without it.
local mb = require "mb"
local helper = require "spec.helper"

describe("a destination with share = true", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(function()
    helper.remove_tree(dir)
    helper.assert_clean()
  end)

  it("hands listeners in the sender's state the sender's table, one between them", function()
    mb.destination("sh/p", {share = true})
    mb.destination("sh/y", {type = "synchronous", share = true})
    mb.destination("sh/s", {type = "serial", share = true})
    local sent = {n = 1, items = {1, 2}}
    local got = {}
    local function keep(m) got[#got + 1] = m.payload end
    mb.listen("sh/p", keep)
    mb.listen("sh/p", keep)
    mb.listen("sh/y", keep)
    mb.listen("sh/s", keep)
    assert.is_string(mb.send("sh/p", sent))
    assert.is_string(mb.send("sh/y", sent)) -- delivered inline
    assert.is_string(mb.send("sh/s", sent))
    mb.run()
    assert.are.equal(4, #got)
    for i = 1, 4 do assert.is_true(rawequal(sent, got[i]), "listener " .. i) end
  end)

  it("hands each listener its own sender's table when synchronous sends nest", function()
    mb.destination("sh/outer", {type = "synchronous", share = true})
    mb.destination("sh/inner", {type = "synchronous", share = true})
    local outer, inner = {o = 1}, {i = 1}
    local seen = {}
    mb.listen("sh/inner", function(m) seen.inner = m.payload end)
    mb.listen("sh/outer", function(m)
      seen.outer1 = m.payload
      mb.send("sh/inner", inner)
    end)
    mb.listen("sh/outer", function(m) seen.outer2 = m.payload end)
    mb.send("sh/outer", outer)
    mb.run()
    assert.is_true(rawequal(outer, seen.outer1))
    assert.is_true(rawequal(outer, seen.outer2))
    assert.is_true(rawequal(inner, seen.inner))
  end)

  it("shares the payload of a request too, and only the payload", function()
    mb.destination("sh/r", {share = true})
    local sent, seen = {q = "why"}, nil
    mb.listen("sh/r", function(m)
      seen = m
      return {a = "because"}
    end)
    local reply
    mb.spawn(function() reply = mb.request("sh/r", sent, {values = {k = 1}}) end)
    mb.run()
    assert.is_true(rawequal(sent, seen.payload))
    assert.are.same({k = 1}, seen.values)
    assert.are.same({a = "because"}, reply)
  end)

  it("still copies for listeners that did not send it, and for other destinations", function()
    mb.destination("sh/p", {share = true})
    mb.destination("plain")
    local sent = {n = 1}
    local got
    mb.listen("plain", function(m) got = m.payload end)
    mb.send("plain", sent)
    mb.run()
    assert.is_false(rawequal(sent, got))
    assert.are.same(sent, got)
    -- a string or a number is the same value either way: only tables are kept
    local s
    mb.listen("sh/p", function(m) s = m.payload end)
    mb.send("sh/p", "text")
    mb.run()
    assert.are.equal("text", s)
    -- a JSON listener gets the text, as ever
    local l = mb.listen("sh/p", function(text) s = text end, {format = "json"})
    mb.send("sh/p", {n = 2})
    mb.run()
    assert.matches('"payload":{"n":2}', s, 1, true)
    l:close()
  end)

  it("gives a listener in another service its own copy, both ways", function()
    mb.destination("sh/to", {share = true})
    mb.destination("sh/back", {share = true})
    local path = helper.write(dir .. "/other.lua", [[
      local mine = {from = "other"}
      mb.listen("sh/to", function(m)
        m.payload.n = 99 -- its own copy: the sender's table stays as it was
        mb.send("sh/back", {same = rawequal(m.payload, mine), n = m.payload.n})
        mb.send("sh/back", mine)
      end)
    ]])
    local h = mb.load(path)
    local sent = {n = 1}
    local back = {}
    mb.listen("sh/back", function(m) back[#back + 1] = m.payload end)
    mb.send("sh/to", sent)
    mb.run()
    h:stop()
    assert.are.same({n = 1}, sent)
    assert.are.same({{same = false, n = 99}, {from = "other"}}, back)
  end)

  it("gives a loaded service's own listeners the table that service sent", function()
    mb.destination("sh/own", {share = true})
    mb.destination("sh/result")
    local path = helper.write(dir .. "/own.lua", [[
      local sent = {k = "v"}
      local got
      mb.listen("sh/own", function(m) got = m.payload end)
      mb.send("sh/own", sent)
      mb.sleep(0.05)
      mb.send("sh/result", {same = rawequal(got, sent)})
    ]])
    local result
    mb.listen("sh/result", function(m) result = m.payload end)
    local h = mb.load(path)
    mb.run()
    h:stop()
    assert.are.same({same = true}, result)
  end)

  it("checks the payload as without it: unsendable values still raise", function()
    mb.destination("sh/p", {share = true})
    mb.listen("sh/p", function() end)
    helper.assert_contains(helper.error_of(mb.send, "sh/p", {f = print}),
      "mb.send: payload.f: cannot send a function")
    local t = {}
    t.self = t
    helper.assert_contains(helper.error_of(mb.send, "sh/p", t), "cyclic")
    helper.assert_contains(helper.error_of(mb.send, "sh/p", helper.nest(65)), "deeper than 64")
    helper.assert_contains(helper.error_of(mb.request, "sh/p", {co = coroutine.create(print)}),
      "mb.request: payload.co: cannot send a coroutine")
  end)

  it("refuses a payload over max_message_size as without it", function()
    -- the module's bus is set up once per process: its limit is the default 64 MiB
    mb.destination("sh/p", {share = true})
    mb.listen("sh/p", function() end)
    local big = {string.rep("x", 64 * 1024 * 1024)}
    helper.assert_contains(helper.error_of(mb.send, "sh/p", big),
      "mb.send: payload[1]: message too large (over 67108864 bytes, the max_message_size)")
  end)

  it("counts and reports as without it: statistics and dead letters", function()
    mb.destination("mb/dead-letters")
    local reports = {}
    mb.listen("mb/dead-letters", function(m) reports[#reports + 1] = m end)
    for _, name in ipairs({"cmp/plain", "cmp/shared"}) do
      mb.destination(name, {share = name == "cmp/shared"})
      mb.listen(name, function(m) if m.payload.bad then error("cannot") end end)
      mb.listen(name, function() end)
      mb.send(name, {bad = false})
      mb.send(name, {bad = true})
    end
    mb.run()
    local plain, shared = mb.stats("cmp/plain"), mb.stats("cmp/shared")
    assert.are.same(plain, shared)
    assert.are.equal(4, shared.deliveries)
    assert.are.equal(1, shared.failed)
    assert.are.equal(2, #reports)
    assert.are.equal("cmp/shared", reports[2].payload.destination)
    assert.are.same({bad = true}, reports[2].payload.message.payload)
    assert.matches("^failed: .*cannot", reports[2].payload.error)
  end)

  it("is an option of its own: checked, and part of what a redeclaration compares", function()
    assert.are.equal("mb.destination: option 'share' must be true or false",
      helper.error_of(mb.destination, "sh/x", {share = "yes"}))
    assert.are.equal("mb.destination: option 'share' must be true or false",
      helper.error_of(mb.destination, "sh/x", {share = 1}))
    assert.are.same({false, "share", "must be true or false"},
      {mb._check_destination("sh/x", {share = {}})})
    assert.is_true(mb.destination("sh/x", {share = false}))
    assert.is_true(mb.destination("sh/x")) -- false is the default
    local ok, err = mb.destination("sh/x", {share = true})
    assert.is_nil(ok)
    assert.matches("^exists: ", err)
    assert.is_true(mb.destination("sh/y", {share = true}))
    assert.is_true(mb.destination("sh/y", {share = true}))
  end)

  it("finds every table while a slow listener elsewhere holds the oldest messages", function()
    mb.destination("sh/mix", {share = true})
    mb.destination("sh/mix-go")
    local path = helper.write(dir .. "/slow.lua", [[
      local go = false
      mb.listen("sh/mix-go", function() go = true end)
      mb.listen("sh/mix", function(m)
        if m.payload.i <= 3 then -- holds the first three until told
          while not go do mb.sleep(0.001) end
        end
      end)
    ]])
    local h = mb.load(path)
    local sent, wrong, n = {}, 0, 0
    mb.listen("sh/mix", function(m)
      n = n + 1
      if not rawequal(sent[m.payload.i], m.payload) then wrong = wrong + 1 end
    end)
    for batch = 0, 9 do
      for i = batch * 100 + 1, batch * 100 + 100 do
        sent[i] = {i = i}
        assert.is_string(mb.send("sh/mix", sent[i]))
      end
      mb.run({timeout = 0.01}) -- the slow one's three stay in flight
    end
    mb.send("sh/mix-go", true)
    mb.run()
    h:stop()
    assert.are.equal(1000, n)
    assert.are.equal(0, wrong)
    helper.assert_invariant("sh/mix")
  end)

  it("lets go of the sender's tables once the messages are done with", function()
    mb.destination("sh/p", {share = true})
    local n = 0
    mb.listen("sh/p", function() n = n + 1 end)
    local weak = setmetatable({}, {__mode = "k"})
    for i = 1, 200 do
      local t = {i = i}
      weak[t] = true
      mb.send("sh/p", t)
    end
    mb.run()
    collectgarbage()
    collectgarbage()
    assert.are.equal(200, n)
    assert.is_nil(next(weak))
    assert.are.equal(0, mb._counts().messages)
  end)
end)
