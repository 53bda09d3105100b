-- A listener that sends to its own serial destination twice, with
-- max_queue = 1 and on_full = "block": the first send fills the queue, the
-- second waits for room that only the listener's own return would make.
-- Nothing can move it on (SPEC section 7, "mb.run()"). spec/api/bus_spec.lua.
mb.destination("stuck", {type = "serial", max_queue = 1, on_full = "block"})
mb.listen("stuck", function(m)
  if m.payload == 0 then
    mb.send("stuck", 1)
    mb.send("stuck", 2)
  end
end)
