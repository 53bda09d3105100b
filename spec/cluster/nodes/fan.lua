return function(msg) print("fan " .. tostring(msg.payload.n) .. " " .. msg.id) end
