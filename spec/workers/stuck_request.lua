-- A listener of a parallel destination with concurrency = 1 that requests
-- its own destination with no time limit: the request's message waits for
-- the one slot, which only the listener's own return would free. Nothing
-- can move it on (SPEC section 7, "mb.run()"). spec/api/bus_spec.lua.
mb.destination("stuck/req", {concurrency = 1})
mb.listen("stuck/req", function(m)
  if m.payload == 0 then return mb.request("stuck/req", 1, {timeout = math.huge}) end
  return "inner"
end)
