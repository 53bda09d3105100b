-- A requester of replies.lua: n requests and n request_all, several in
-- flight; then it says "ok" (or what went wrong) at r/done. As "hold", it
-- only starts n requests at r/hold and waits (it is stopped meanwhile).
local who, n = ...
if who == "hold" then
  for _ = 1, n do mb.spawn(function() mb.request("r/hold", 1, {timeout = 60}) end) end
  return
end
local bad, left = nil, 4
for c = 1, 4 do
  mb.spawn(function()
    for k = c, n, 4 do
      local r, err = mb.request("r/plain", k, {timeout = 30})
      if r ~= "A" and r ~= "B" then bad = bad or ("request %d: %s %s"):format(k, r, err) end
      local all = mb.request_all("r/all", k, {timeout = 30})
      -- answers come in the order of the groups: a service's first
      -- listener's before its second's (a reply filed under the wrong
      -- group of its service shows as /2 before /1, or twice)
      local seen = {}
      for i, a in ipairs(all) do
        if a.error then bad = bad or ("request_all %d: %s"):format(k, a.error) end
        local t, g = tostring(a.payload):match("^(%u)/(%d)$")
        if not t or seen[a.payload] or (g == "2") ~= (seen[t .. "/1"] ~= nil) then
          bad = bad or ("request_all %d: answer %d is %s after %s"):format(k, i,
            tostring(a.payload), table.concat((function()
              local l = {}
              for j = 1, i - 1 do l[j] = tostring(all[j].payload) end
              return l
            end)(), ","))
        end
        if a.payload then seen[a.payload] = true end
      end
      if #all ~= 4 then bad = bad or ("request_all %d: %d answers"):format(k, #all) end
    end
    left = left - 1
    if left == 0 then mb.send("r/done", bad or "ok") end
  end)
end
