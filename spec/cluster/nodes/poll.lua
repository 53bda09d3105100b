local node = os.getenv("NODE")
return {
  poll = function(msg) return node end,
  syncd = function(msg)
    mb.sleep(0.2)
    print("syncd " .. tostring(msg.payload))
  end,
}
