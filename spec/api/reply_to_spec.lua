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
end)
