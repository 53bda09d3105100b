local last = 0
return function(msg)
  local n = msg.payload
  if n ~= last + 1 then print("order broken: " .. n .. " after " .. last) end
  last = n
  mb.sleep(0.001) -- one at a time: the next waits for this one
  print("order " .. n)
end
