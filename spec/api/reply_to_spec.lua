-- SPEC 7, "a reply that cannot be delivered" (issue 12, item 3): a reply
-- to a reply_to that does not exist or has no listeners makes the delivery
-- it answers `failed`, with the reason on stderr and in a dead letter.
local mb = require "mb"
local helper = require "spec.helper"


describe("a reply that cannot be delivered", function()
  local letters, dl
  -- a stop asked by an earlier spec with no run in progress is latched
  -- until a run takes it (issue 12, item 5, fixed elsewhere)
  setup(function() mb.run({timeout = 1}) end)
  before_each(function()
    letters = {}
    mb.destination("mb/dead-letters")
    dl = mb.listen("mb/dead-letters", function(m) letters[#letters + 1] = m.payload end)
    mb.destination("rt/calc")
    mb.destination("rt/empty")
  end)
  after_each(function()
    dl:close()
    helper.assert_clean()
  end)

  it("fails the delivery when the handler's return value goes to a missing reply_to", function()
    local l = mb.listen("rt/calc", function(m) return m.payload * 10 end)
    assert.is_truthy(mb.send("rt/calc", 4, {reply_to = "rt/nowhere"}))
    assert.is_true(mb.run({timeout = 5}))
    local s = mb.stats("rt/calc")
    assert.are.equal(1, s.failed)
    assert.are.equal(0, s.delivered)
    helper.assert_invariant("rt/calc")
    assert.are.equal(1, #letters)
    assert.are.equal("rt/calc", letters[1].destination)
    assert.are.equal(4, letters[1].message.payload)
    helper.assert_contains(letters[1].error, "failed: reply to 'rt/nowhere' not delivered",
      "no_destination")
    l:close()
  end)

  it("fails the delivery when the reply_to has no listeners", function()
    local l = mb.listen("rt/calc", function(m) return m.payload * 10 end)
    mb.send("rt/calc", 5, {reply_to = "rt/empty"})
    assert.is_true(mb.run({timeout = 5}))
    assert.are.equal(1, mb.stats("rt/calc").failed)
    assert.are.equal(1, #letters)
    helper.assert_contains(letters[1].error, "reply to 'rt/empty' not delivered", "no_listeners")
    l:close()
  end)

  it("gives mb.reply nil, err and fails the delivery it answers", function()
    local got
    local l = mb.listen("rt/calc", function(m) got = {mb.reply(m, m.payload * 10)} end)
    mb.send("rt/calc", 6, {reply_to = "rt/empty"})
    assert.is_true(mb.run({timeout = 5}))
    assert.is_nil(got[1])
    helper.assert_contains(got[2], "no_listeners", "rt/empty")
    assert.are.equal(1, mb.stats("rt/calc").failed)
    assert.are.equal(0, mb.stats("rt/calc").delivered)
    assert.are.equal(1, #letters)
    l:close()
  end)

  it("still delivers a reply that has somewhere to go", function()
    local replies = {}
    local l = mb.listen("rt/calc", function(m) return m.payload * 10 end)
    local r = mb.listen("rt/empty", function(m) replies[#replies + 1] = m.payload end)
    mb.send("rt/calc", 7, {reply_to = "rt/empty"})
    assert.is_true(mb.run({timeout = 5}))
    assert.are.same({70}, replies)
    assert.are.equal(1, mb.stats("rt/calc").delivered)
    assert.are.equal(0, mb.stats("rt/calc").failed)
    assert.are.equal(0, #letters)
    l:close()
    r:close()
  end)

  it("makes mbrun say why on stderr and exit 1", function()
    local dir = helper.tmpdir()
    local path = helper.write(dir .. "/s.lua", [[
      mb.destination("calc")
      mb.listen("calc", function(m) return m.payload + 1 end)
      mb.send("calc", 1, {reply_to = "nowhere"})
    ]])
    local _, err, code = helper.mbrun(path)
    helper.remove_tree(dir)
    assert.are.equal(1, code)
    helper.assert_contains(err, "mb: listener at 'calc': reply to 'nowhere' not delivered: "
      .. "no_destination", "counted as failed", "1 delivery failed")
  end)

  it("raises when mb.reply is given a message whose reply_to is not a destination name", function()
    -- a copied message table with a bad reply_to: the reply was sent
    -- nowhere ("closed: ... it has no reply_to"), and "a\0b" went to 'a'
    local function copy(t)
      local c = {}
      for k, v in pairs(t) do c[k] = v end
      return c
    end
    local kept, errs = {}, {}
    local l = mb.listen("rt/calc", function(m)
      kept[#kept + 1] = m
      for _, bad in ipairs{"bad name!", "", "a\0b", string.rep("x", 256)} do
        local c = copy(m)
        c.reply_to = bad
        errs[#errs + 1] = helper.error_of(mb.reply, c, "answer")
      end
      local c = copy(m)
      c.reply_to = {}
      errs[#errs + 1] = helper.error_of(mb.reply, c, "answer")
      local text = mb.json.encode({id = m.id, destination = m.destination, reply_to = "no way"})
      errs[#errs + 1] = helper.error_of(mb.reply, text, "answer")
    end)
    local r = mb.listen("rt/empty", function() end)
    assert.is_truthy(mb.send("rt/calc", 1, {reply_to = "rt/empty"}))
    assert.is_truthy(mb.send("rt/calc", 2)) -- (a request would be answered as well)
    assert.is_true(mb.run({timeout = 5}))
    local want = {'"bad name!"', '""', '"a\\000b"', '"' .. string.rep("x", 60) .. '..." (256 bytes)',
                  "(a table, not a string)", '"no way"'}
    assert.are.equal(2 * #want, #errs)
    for i, e in ipairs(errs) do
      helper.assert_contains(e, "mb.reply: reply_to: invalid destination name " .. want[(i - 1) % #want + 1])
    end
    -- later, outside the handler, the same
    local c = copy(kept[1])
    c.reply_to = "bad name!"
    helper.assert_contains(helper.error_of(mb.reply, c, "late"),
      'mb.reply: reply_to: invalid destination name "bad name!"')
    -- and a valid one still answers
    assert.is_true(mb.reply(kept[1], "late"))
    assert.is_true(mb.run({timeout = 5}))
    assert.are.equal(2, mb.stats("rt/calc").delivered)
    assert.are.equal(0, #letters)
    l:close()
    r:close()
  end)
end)
