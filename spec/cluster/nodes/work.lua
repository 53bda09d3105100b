return function(msg) print("work " .. tostring(msg.payload)) end
