-- stop_self.lua's service: its handler stops its own service, then says so
-- and answers.
mb.listen("x/self", function(msg)
  for _, s in ipairs(mb.services()) do
    if s.name == "self-stopper" then s.handle:stop() end
  end
  print("after stop in instance on worker " .. mb.worker())
  return "answered after stop"
end)
