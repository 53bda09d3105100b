mb.listen("w/sync", function()
  mb.sleep(0.05)
  mb.send("w/events", "listener done")
end)
