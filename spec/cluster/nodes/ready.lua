-- the listeners' subscriptions leave on this turn of the loop; "ready" after it
mb.after(0.05, function() print("ready") end)
