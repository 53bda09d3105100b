-- A format = "json" listener that plain NATS clients can ask (its answer is
-- JSON text), then "ready": the listeners' subscriptions leave on this turn
-- of the loop
local node = os.getenv("NODE")
assert(mb.destination("jsonecho", {cluster = true}))
mb.listen("jsonecho", function(text)
  local msg = mb.json.decode(text)
  return {echo = msg.payload, node = node, id = msg.id}
end, {format = "json"})
-- format = "json" listeners that answer with mb.reply(text): while the
-- handler runs, and later (which another node's message cannot have)
assert(mb.destination("jsonreply", {cluster = true}))
mb.listen("jsonreply", function(text)
  assert(mb.reply(text, {via = "json", node = node}))
end, {format = "json"})
assert(mb.destination("jsonlate", {cluster = true}))
mb.listen("jsonlate", function(text)
  mb.after(0, function() print("jsonlate", pcall(mb.reply, text, "late")) end)
end, {format = "json"})
-- what this node could not take, said in its output
assert(mb.destination("mb/dead-letters"))
mb.listen("mb/dead-letters", function(msg)
  print("dead " .. msg.payload.destination .. " " .. tostring(msg.payload.node) .. " " .. msg.payload.error)
end)
mb.after(0.05, function() print("ready") end)
