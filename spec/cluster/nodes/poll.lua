local node = os.getenv("NODE")
return {
  poll = function(msg) return node end,
  replyx = function(msg)
    assert(mb.reply(msg, {via = "mb.reply", node = node}))
  end,
  -- a plain message expects no reply: mb.reply says closed, as for a local one
  replyplain = function(msg)
    local ok, r, err = pcall(mb.reply, msg, "unasked")
    print("replyplain", msg.payload, ok, r, err)
  end,
  tiny = function(msg) mb.sleep(0.05) print("tiny " .. msg.payload) end,
  syncd = function(msg)
    mb.sleep(0.2)
    print("syncd " .. tostring(msg.payload))
  end,
}
