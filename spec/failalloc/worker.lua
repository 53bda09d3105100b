-- failalloc: a loaded service with a listener, a timer and a subscription.
local round = ...
mb.listen("work", function(m)
  local t = {}
  for i = 1, m.payload do t[i] = {round, i} end
  return #t
end)
mb.after(0.001, function() end)
mb.on("listener_added", function() end)
