local node = os.getenv("NODE")
return {
  poll = function(msg) return node end,
  replyx = function(msg)
    assert(mb.reply(msg, {via = "mb.reply", node = node}))
  end,
  tiny = function(msg) mb.sleep(0.05) print("tiny " .. msg.payload) end,
  syncd = function(msg)
    mb.sleep(0.2)
    print("syncd " .. tostring(msg.payload))
  end,
}
