-- bench/workers/responder.lua — the responder of benchmark 5: answers each
-- request at wb/rr with {id = <the request's id>}.
mb.send("wb/hello", {role = "responder", worker = (mb.worker())})
mb.listen("wb/rr", function(msg) return {id = msg.payload.id} end)
