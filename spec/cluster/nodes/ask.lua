local node = os.getenv("NODE")
return {
  ask = function(msg) return {node = node, echo = msg.payload} end,
  boom = function(msg) error("boom at " .. node) end,
  -- a number payload says how long to take (seconds), else half a second
  slow = function(msg) mb.sleep(type(msg.payload) == "number" and msg.payload or 0.5) return "late" end,
}
