-- The service of nested_wait.lua, on worker 1: for each go it asks t/echo
-- from where it cannot yield (its own coroutine, or a table.sort
-- comparator), so the wait drives a nested loop; then it works for 2 ms
-- and only then sends to t/done.
mb.listen("t/go", function(msg)
  local i, r = msg.payload, nil
  if i % 2 == 0 then
    r = coroutine.wrap(function() return mb.request("t/echo", i) end)()
  else
    local t = {2, 1}
    table.sort(t, function(a, b)
      r = r or mb.request("t/echo", i)
      return a < b
    end)
  end
  assert(r == i, "wrong reply")
  local t0 = mb.now()
  while mb.now() - t0 < 0.002 do end
  assert(mb.send("t/done", i))
end)
