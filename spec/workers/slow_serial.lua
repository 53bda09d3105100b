mb.listen("w/stopme", function() mb.sleep(10) end)
