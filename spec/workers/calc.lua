mb.listen("w/calc", function(m)
  local p = m.payload
  if p.op == "add" then return p.a + p.b end
  if p.op == "sleep" then mb.sleep(p.s) return "late" end
  if p.op == "fail" then error("calc refuses") end
end)
