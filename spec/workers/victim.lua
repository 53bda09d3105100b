mb.listen("x/sync", function() print("victim ran") end)
