local node = os.getenv("NODE")
return {
  ask = function(msg) return {node = node, echo = msg.payload} end,
  boom = function(msg) error("boom at " .. node) end,
  slow = function(msg) mb.sleep(0.5) return "late" end,
}
