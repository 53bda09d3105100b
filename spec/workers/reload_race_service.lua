mb.listen("rr/in", function(msg) mb.sleep(0.001) return msg.payload end)
