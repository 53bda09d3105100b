-- failalloc: a service that answers requests and replies to reply_to.
mb.listen("calc", function(m) return m.payload * 2 end)
