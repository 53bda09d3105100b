-- Durable destinations (SPEC §6, Durable) on a real `nats-server -js -sd
-- DIR`: each test starts its own server on a free loopback port and its
-- `mbrun -w 1` nodes, all stopped by PID (spec/lib/nodes.lua,
-- spec/lib/nats_server.lua); every wait is bounded. A missing nats-server
-- skips these specs, or fails them under CI=true.
local helper = require "spec.helper"
local ns = require "spec.lib.nats_server"
local nodes = require "spec.lib.nodes"
local server = require "spec.cluster.server"

local lines, count = server.lines, server.count

describe("a durable destination", function()
  local env = server.block{server = {jetstream = true}, each = true}
  if not env then return end

  -- Starts a node running the Lua text code (with vars: "NAME=value ..."),
  -- kept running by a timer until stopped.
  local function node(name, code, vars)
    local path = ("%s/%s-%d.lua"):format(env.dir, name, #env.list + 1)
    helper.write(path, code .. "\nmb.every(1, function() end)\n")
    local n = nodes.start(env.srv.url, name, helper.quote(path), {env = vars})
    env.list[#env.list + 1] = n
    return n
  end

  -- Runs a sender node to its end; stdout, stderr, exit status.
  local function send(code, name)
    local path = ("%s/send-%d.lua"):format(env.dir, #env.list + 1)
    helper.write(path, code)
    return helper.mbrun(("-w 1 --nats %s --node %s %s"):format(env.srv.url, name or "s1",
      helper.quote(path)), {timeout = 40})
  end

  local DEAD = [[
assert(mb.destination("mb/dead-letters"))
mb.listen("mb/dead-letters", function(msg) print("dead " .. msg.payload.error) end)
]]

  it("processes 100 serial messages in order while its consumer node is killed at message 40 and restarted",
    function()
    -- the server gives message 40 to the stalled node again each ack_wait,
    -- up to max_deliver times, then gives it up: max_deliver leaves the
    -- spec's process (slow under valgrind) about 50 s to kill the node
    local decl = [[assert(mb.destination("q", {type = "serial",
  cluster = {durable = true, ack_wait = 1, max_deliver = 50}}))
]]
    local consumer = decl .. [[
mb.listen("q", function(msg)
  print(("got %d %s"):format(msg.payload.n, tostring(msg.redelivered)))
  if msg.payload.n == 40 and os.getenv("STALL") then
    print("stalled")
    -- killed here, before its handler returns (a busy wait: a child such
    -- as sleep(1) would outlive the node)
    local t = os.clock()
    while os.clock() - t < 60 do end
  end
  if msg.payload.n == 100 then print("redelivered " .. mb.stats("q").redelivered) end
end, {group = "work"})
mb.after(0.05, function() print("ready") end)
]]
    local c1 = node("c1", consumer, "STALL=1")
    assert(c1:wait_output("ready", 15), c1:errors())
    local out, err, code = send(decl .. [[
for n = 1, 100 do assert(mb.send("q", {n = n})) end
print("stored")
]])
    assert.equal(0, code, err)
    assert.matches("stored", out)
    assert(c1:wait_output("stalled", 15), c1:errors())
    c1:kill()
    local first = c1:output()
    local c2 = node("c1", consumer) -- the same node, restarted
    assert(c2:wait_output("redelivered %d+", 30), c2:output() .. c2:errors())
    local second = c2:output()
    local ns1 = lines(first, "^got (%d+) nil$")
    assert.equal(40, #ns1)
    for i, n in ipairs(ns1) do assert.equal(i, tonumber(n)) end
    -- the restarted node: 40 again (the only duplicate, marked), then 41..100 in order
    local all = lines(second, "^got (%d+ %a+)$")
    assert.equal("40 true", all[1])
    for i = 2, #all do assert.equal((39 + i) .. " nil", all[i]) end
    assert.equal(61, #all)
    assert.equal(1, tonumber(second:match("redelivered (%d+)")))
  end)

  it("leaves a node's connection to no child process, so a node that dies is seen gone at once",
    function()
    local out, err, code = send([[
local p = io.popen("ls -l /proc/self/fd 2> /dev/null | grep -c socket")
print("sockets in a child: " .. p:read("a"):match("%d+"))
p:close()
]])
    assert.equal(0, code, err)
    assert.matches("sockets in a child: 0\n", out)
  end)

  it("keeps what was stored before the server was killed -9, for a group that starts later",
    function()
    local decl = [[assert(mb.destination("keep", {cluster = {durable = true}}))
]]
    local out, err, code = send(decl .. [[
for n = 1, 50 do assert(mb.send("keep", {n = n})) end
print("stored")
]])
    assert.equal(0, code, err)
    assert.matches("stored", out)
    assert(env.srv:kill())
    assert(env.srv:restart())
    local l = node("l1", decl .. [[
local seen = {}
mb.listen("keep", function(msg)
  if not seen[msg.payload.n] then
    seen[msg.payload.n] = true
    print("got " .. msg.payload.n)
  end
end, {group = "late"})
]])
    assert(nodes.wait_for(function() return count(l:output(), "^got %d+$") >= 50 end, 30),
      l:output() .. l:errors())
    local got = {}
    for _, n in ipairs(lines(l:output(), "^got (%d+)$")) do got[tonumber(n)] = true end
    for n = 1, 50 do assert.is_true(got[n], "message " .. n .. " lost") end
  end)

  it("never runs two messages of a serial durable destination at once on two nodes of a group",
    function()
    local lock = env.dir .. "/lock"
    local decl = [[assert(mb.destination("one", {type = "serial", cluster = {durable = true}}))
]]
    local code = decl .. ([[
mb.listen("one", function(msg)
  if not os.execute("mkdir %s 2> /dev/null") then print("overlap " .. msg.payload.n) end
  os.execute("sleep 0.02")
  os.execute("rmdir %s 2> /dev/null")
  print("got " .. msg.payload.n)
end, {group = "one"})
mb.after(0.05, function() print("ready") end)
]]):format(lock, lock)
    local a, b = node("a1", code), node("b1", code)
    assert(a:wait_output("ready", 15), a:errors())
    assert(b:wait_output("ready", 15), b:errors())
    local out, err, status = send(decl .. [[
for n = 1, 40 do assert(mb.send("one", {n = n})) end
print("stored")
]])
    assert.equal(0, status, err)
    assert(nodes.wait_for(function()
      return count(a:output(), "^got ") + count(b:output(), "^got ") >= 40
    end, 30), a:output() .. b:output())
    assert.equal(0, count(a:output() .. b:output(), "overlap"))
    assert.equal(40, count(a:output(), "^got ") + count(b:output(), "^got "))
    assert.is_true(count(a:output(), "^got ") > 0 and count(b:output(), "^got ") > 0,
      "one node took every message")
    assert.equal(0, a:stop(), a.err) -- (a sanitizer's finding would make it 1)
    assert.equal(0, b:stop(), b.err)
  end)

  it("keeps a delivery that runs longer than ack_wait from going to another node meanwhile",
    function()
    local lock = env.dir .. "/lock"
    local decl = [[assert(mb.destination("long", {type = "serial",
  cluster = {durable = true, ack_wait = 1}}))
]]
    local code = decl .. ([[
mb.listen("long", function(msg)
  if not os.execute("mkdir %s 2> /dev/null") then print("overlap " .. msg.payload.n) end
  mb.sleep(2.5) -- yields: worker 0 goes on, and says the delivery is in progress
  os.execute("rmdir %s 2> /dev/null")
  print("got " .. msg.payload.n .. " " .. tostring(msg.redelivered))
end, {group = "long"})
mb.after(0.05, function() print("ready") end)
]]):format(lock, lock)
    local a, b = node("a1", code), node("b1", code)
    assert(a:wait_output("ready", 15), a:errors())
    assert(b:wait_output("ready", 15), b:errors())
    local out, err, status = send(decl .. [[
for n = 1, 2 do assert(mb.send("long", {n = n})) end
]])
    assert.equal(0, status, err)
    assert(nodes.wait_for(function()
      return count(a:output(), "^got ") + count(b:output(), "^got ") >= 2
    end, 20), a:output() .. b:output())
    os.execute("sleep 1.5") -- no redelivery comes
    local both = a:output() .. b:output()
    assert.equal(0, count(both, "overlap"))
    assert.equal(2, count(both, "^got %d nil$"), both)
    assert.equal(0, count(both, "true"))
    assert.equal(0, a:stop(), a.err)
    assert.equal(0, b:stop(), b.err)
  end)

  it("sends a message whose handler always fails to the dead letters after max_deliver attempts",
    function()
    local decl = [[assert(mb.destination("fails", {cluster = {durable = true, max_deliver = 3}}))
]]
    local l = node("l1", decl .. DEAD .. [[
mb.listen("fails", function(msg)
  print("try " .. msg.payload.n .. " " .. tostring(msg.redelivered))
  error("no luck")
end)
mb.after(0.05, function() print("ready") end)
mb.every(0.1, function()
  local s = mb.stats("fails")
  print("stats " .. s.deliveries .. " " .. s.failed .. " " .. s.redelivered)
end)
]])
    assert(l:wait_output("ready", 15), l:errors())
    local out, err, code = send(decl .. [[
for n = 1, 2 do assert(mb.send("fails", {n = n})) end
print("stored")
]])
    assert.equal(0, code, err)
    assert(nodes.wait_for(function() return count(l:output(), "^dead ") >= 2 end, 30),
      l:output() .. l:errors())
    os.execute("sleep 0.5") -- nothing more comes
    local o = l:output()
    assert.equal(2, count(o, "^dead "))
    assert.matches("dead failed: [^\n]*no luck", o)
    assert.equal(3, count(o, "^try 1 "))
    assert.equal(3, count(o, "^try 2 "))
    assert.equal(2, count(o, "^try %d nil"))
    assert.equal(4, count(o, "^try %d true"))
    assert.matches("stats 6 6 4", o)
  end)

  it("gives a node no more than its max_queue holds, so a slow node loses no message to the dead letters",
    function()
    -- the consumer's messages in flight are bounded by the queue: a full
    -- queue handed each extra one back, an attempt lost each time, and
    -- after max_deliver of them it went to the dead letters unhandled
    local decl = [[assert(mb.destination("slow", {max_queue = 3, cluster = {durable = true}}))
]]
    local l = node("l1", decl .. DEAD .. [[
local got = 0
mb.listen("slow", function(msg)
  local t = os.clock()
  while os.clock() - t < 0.01 do end -- holds worker 0: the queue fills
  got = got + 1
  if got == 60 then print("all 60") end
end)
mb.after(0.05, function() print("ready") end)
]])
    assert(l:wait_output("ready", 15), l:errors())
    local out, err, code = send(decl .. [[
for n = 1, 60 do assert(mb.send("slow", {n = n})) end
print("stored")
]])
    assert.equal(0, code, err)
    assert(nodes.wait_for(function()
      return l:output():match("all 60") or count(l:output(), "^dead ") > 0
    end, 30), l:output() .. l:errors())
    assert.equal(0, count(l:output(), "^dead "), l:output())
    assert.equal(0, l:stop(), l.err)
  end)

  -- A node's groups without a name share its consumer: a message is
  -- acknowledged once as many deliveries as groups took it at its arrival
  -- have ended. A group that closed or came while messages waited in the
  -- queue (concurrency 1: the next waits for the first) left them never
  -- acknowledged (held for ever by the in-progress beat) or acknowledged
  -- one delivery early, then read freed memory (a crash under ASan).
  local GROUPS = [[
assert(mb.destination("ch", {concurrency = 1, cluster = {durable = true, ack_wait = 2}}))
local b, mode = nil, os.getenv("MODE")
mb.listen("ch", function(msg)
  print("A " .. msg.payload .. " " .. tostring(msg.redelivered))
  if mode == "close" and b then b:close() b = nil end
  if mode == "add" and not b then b = mb.listen("ch", function(m) print("B " .. m.payload) end) end
  if msg.payload == 5 then print("five") end
end)
if mode == "close" then b = mb.listen("ch", function(m) print("B " .. m.payload) end) end
mb.after(0.05, function() print("ready") end)
]]
  local function groups_change(mode)
    local out, err, code = send([[
assert(mb.destination("ch", {concurrency = 1, cluster = {durable = true, ack_wait = 2}}))
for i = 1, 5 do assert(mb.send("ch", i)) end
]])
    assert.equal(0, code, err)
    local n = node("c1", GROUPS, "MODE=" .. mode) -- reads the 5 stored ones at once
    assert(n:wait_output("five", 15), n:output() .. n:errors())
    os.execute("sleep 0.3")
    local first = n:output()
    local status = n:stop()
    -- (a sanitizer's finding would make it 1; closing B dropped message 1's
    -- delivery there, given to it before)
    if mode == "close" then
      assert.equal(1, status, n.err)
      assert.matches("mbrun: 1 delivery dropped %(ch: 1%)", n.err)
    else
      assert.equal(0, status, n.err)
    end
    -- the same node again, after ack_wait: what it did not acknowledge comes again
    os.execute("sleep 2.5")
    local again = node("c1", GROUPS, "MODE=none")
    assert(again:wait_output("ready", 15), again:errors())
    os.execute("sleep 1")
    return first, again:output()
  end

  it("acknowledges a message a group that closed meanwhile no longer takes", function()
    local first, second = groups_change("close")
    for i = 2, 5 do assert.equal(1, count(first, "^A " .. i .. " "), first) end
    assert.equal(0, count(second, "^A [2-5] "), second)
  end)

  it("acknowledges a message once, not early, when a group comes meanwhile", function()
    local first, second = groups_change("add")
    for i = 1, 5 do assert.equal(1, count(first, "^A " .. i .. " "), first) end
    assert.equal(0, count(second, "^A "), second)
  end)

  it("makes its stream once the server has JetStream, when it had none at the declaration",
    function()
    -- the node started while the server ran without -js (or a JetStream
    -- cluster had no leader yet): its sends failed, and went on failing,
    -- and its listener got nothing, after the server had JetStream
    env.srv.jetstream = nil
    assert(env.srv:restart())
    local n = node("j1", [[
assert(mb.destination("late", {cluster = {durable = true}}))
mb.listen("late", function(msg) print("got " .. msg.payload) end)
local i = 0
mb.every(0.3, function()
  i = i + 1
  print("send " .. i, mb.send("late", "m" .. i, {timeout = 1}))
end)
]])
    assert(n:wait_output("send %d+\tnil\tfailed: the JetStream stream", 15), n:output() .. n:errors())
    env.srv.jetstream = true
    assert(env.srv:restart())
    assert(n:wait_output("got m%d+", 20), n:output() .. n:errors())
    assert.matches("send %d+\tj1:%x+\n", n:output())
    assert.matches("is made now", n:errors())
    -- the refusal was said once, not at each try
    assert.equal(1, select(2, n:errors():gsub("could not be made", "")), n:errors())
    assert.equal(0, n:stop(), n.err)
  end)

  it("makes its stream and consumers again after the server came back without them", function()
    -- the server restarted with an empty store (a container's, say): the
    -- running nodes' sends failed for ever, and their listeners got
    -- nothing, until they were restarted
    local decl = [[assert(mb.destination("lost", {cluster = {durable = true}}))
]]
    local l = node("l1", decl .. [[
mb.listen("lost", function(msg) print("got " .. msg.payload) end, {group = "g"})
mb.after(0.05, function() print("ready") end)
]])
    assert(l:wait_output("ready", 15), l:errors())
    local s = node("s1", decl .. [[
local i = 0
mb.every(0.3, function()
  i = i + 1
  print("send " .. i, mb.send("lost", i, {timeout = 1}))
end)
]])
    assert(l:wait_output("got %d+", 15), l:output() .. l:errors())
    assert(env.srv:kill())
    os.execute("rm -rf " .. helper.quote(env.srv.dir .. "/js"))
    assert(env.srv:restart())
    local after = #s:output()
    assert(nodes.wait_for(function()
      return s:output():sub(after + 1):match("send %d+\ts1:%x+\n")
    end, 20), s:output() .. s:errors())
    local n = tonumber(s:output():sub(after + 1):match("send (%d+)\ts1:%x+\n"))
    assert(l:wait_output("got " .. n .. "\n", 15), l:output() .. l:errors())
    assert.equal(0, l:stop(), l.err)
  end)

  it("makes its stream and consumer again when a send finds the stream deleted", function()
    local n = node("d1", [[
assert(mb.destination("del", {cluster = {durable = true}}))
mb.listen("del", function(msg) print("got " .. msg.payload) end)
local i = 0
mb.every(0.3, function()
  i = i + 1
  print("send " .. i, mb.send("del", i, {timeout = 1}))
end)
]])
    assert(n:wait_output("got %d+", 15), n:output() .. n:errors())
    local _, err, code = server.bash_client(env.srv.port, env.dir, [[CONNECT {"verbose":false}\r\n]]
      .. [[PUB $JS.API.STREAM.DELETE.mb__default__del 0\r\n\r\nPING\r\n]])
    assert.equal(0, code, err)
    assert(n:wait_output("send %d+\tnil\tfailed: no JetStream stream", 15), n:output())
    local after = #n:output()
    assert(nodes.wait_for(function()
      return n:output():sub(after + 1):match("send %d+\td1:%x+\n")
    end, 20), n:output() .. n:errors())
    local i = tonumber(n:output():sub(after + 1):match("send (%d+)\td1:%x+\n"))
    assert(n:wait_output("got " .. i .. "\n", 15), n:output() .. n:errors())
    assert.equal(0, n:stop(), n.err)
  end)

  it("says the server's reason for refusing its stream, and makes it once the server takes it",
    function()
    -- an operator's stream already takes every destination's subject: the
    -- server refuses mb's (overlapping subjects), which is no missing -js
    local function api(subject, body)
      return server.bash_client(env.srv.port, env.dir, ([[CONNECT {"verbose":false}\r\n]] ..
        [[SUB _INBOX.api 1\r\nPUB %s _INBOX.api %d\r\n%s\r\n]]):format(subject, #body, body), true)
    end
    assert.matches('"name":"ops"', api("$JS.API.STREAM.CREATE.ops",
      [[{"name":"ops","subjects":["mb.default.d.>"],"storage":"memory"}]]))
    local n = node("o1", [[
assert(mb.destination("ov", {cluster = {durable = true}}))
mb.listen("ov", function(msg) print("got " .. msg.payload) end)
local i = 0
mb.every(0.3, function()
  i = i + 1
  print("send " .. i, mb.send("ov", i, {timeout = 1}))
end)
]])
    assert(n:wait_output("send %d+\tnil\tfailed: [^\n]*could not be made", 15), n:output())
    local why = n:output():match("send %d+\tnil\t(failed: [^\n]*)")
    assert.matches("overlap", why)
    assert.not_matches("%-js", why)
    assert.matches('"success":true', api("$JS.API.STREAM.DELETE.ops", ""))
    assert(n:wait_output("got %d+", 15), n:output() .. n:errors())
    assert.equal(0, n:stop(), n.err)
  end)

  it("makes its consumer once the server takes it, when it refused it at first", function()
    -- an operator's pull consumer holds the node's consumer name: the
    -- server refuses mb's; once it is deleted, the node's listener gets
    -- what was stored (it got nothing, for ever, before)
    local decl = [[assert(mb.destination("cr", {cluster = {durable = true}}))
]]
    local out, err, code = send(decl .. [[
for i = 1, 3 do assert(mb.send("cr", i)) end
print("stored")
]])
    assert.equal(0, code, err)
    local function api(subject, body)
      return server.bash_client(env.srv.port, env.dir, ([[CONNECT {"verbose":false}\r\n]] ..
        [[SUB _INBOX.api 1\r\nPUB %s _INBOX.api %d\r\n%s\r\n]]):format(subject, #body, body), true)
    end
    local made = api("$JS.API.CONSUMER.DURABLE.CREATE.mb__default__cr.n__c1",
      [[{"stream_name":"mb__default__cr","config":{"durable_name":"n__c1","ack_policy":"explicit"}}]])
    assert.matches('"name":"n__c1"', made)
    local n = node("c1", decl .. [[
mb.listen("cr", function(msg) print("got " .. msg.payload) end)
]])
    assert(nodes.wait_for(function() return n:errors():match("could not be made") end, 15),
      n:output() .. n:errors())
    assert.matches('"success":true', api("$JS.API.CONSUMER.DELETE.mb__default__cr.n__c1", ""))
    assert(nodes.wait_for(function() return count(n:output(), "^got %d$") >= 3 end, 15),
      n:output() .. n:errors())
    assert.matches("consumer 'n__c1' of durable destination 'cr' is made now", n:errors())
    assert.equal(1, select(2, n:errors():gsub("could not be made", "")), n:errors())
    assert.equal(0, n:stop(), n.err)
  end)

  it("takes only the stream's answer as stored, not a plain client's reply", function()
    -- the stream is gone (deleted by an operator) and a plain client
    -- subscribed to the destination's subject answers every message: its
    -- reply is no JetStream acknowledgement: ignored (reported), the send
    -- times out (it was an id: stored, it said)
    local seen = env.dir .. "/seen"
    local script = env.dir .. "/replier.sh"
    helper.write(script, ([[
exec 3<>/dev/tcp/127.0.0.1/%d
read -r info <&3
printf 'CONNECT {"verbose":false,"headers":true}\r\nSUB mb.default.d.gone 1\r\nPUB $JS.API.STREAM.DELETE.mb__default__gone 0\r\n\r\nPING\r\n' >&3
while read -t 20 -r line <&3; do
  case $line in
    PONG*) echo ready >> %s;;
    HMSG\ mb.default.d.gone*) set -- $line; printf 'PUB %%s 2\r\n{}\r\n' "$4" >&3;;
  esac
done
]]):format(env.srv.port, helper.quote(seen)))
    local s = node("s1", [[
assert(mb.destination("gone", {cluster = {durable = true}}))
mb.after(0.2, function() print("ready") end)
mb.every(0.1, function()
  if io.open(os.getenv("SEEN")) then
    print("result", mb.send("gone", 1, {timeout = 1}))
    mb.stop()
  end
end)
]], "SEEN=" .. helper.quote(seen))
    assert(s:wait_output("ready", 15), s:errors())
    local pid = tonumber((helper.run(("timeout 30 bash %s > /dev/null 2>&1 & echo $!")
      :format(helper.quote(script)))))
    finally(function() os.execute(("kill %d 2> /dev/null"):format(pid)) end)
    assert(s:wait_output("result[^\n]*\n", 15), s:output() .. s:errors())
    assert.matches("result\tnil\ttimeout: ", s:output())
    assert.matches("a reply to a durable send at '[^']+' is no JetStream acknowledgement "
      .. "%(ignored%): {}", s:errors())
  end)

  it("takes the server's copies of a message it already acknowledged as acknowledged, not as lost",
    function()
    -- a handler holding worker 0 past ack_wait: the server sends the
    -- message again each ack_wait, and the node reads those copies only
    -- after the handler returned and acknowledged it; each went to the
    -- dead letters ("not acknowledged after N deliveries") for a message
    -- handled once and well (and with a larger max_deliver ran it again)
    local decl = [[assert(mb.destination("held", {cluster = {durable = true, ack_wait = 1,
  max_deliver = 1}}))
]]
    local l = node("l1", decl .. DEAD .. [[
mb.listen("held", function(msg)
  print("start " .. msg.payload .. " " .. tostring(msg.redelivered))
  local t = os.clock()
  while os.clock() - t < 2.5 do end -- holds worker 0: no in-progress beat leaves
  print("end " .. msg.payload)
end)
mb.after(0.05, function() print("ready") end)
]])
    assert(l:wait_output("ready", 15), l:errors())
    local out, err, code = send(decl .. [[
assert(mb.send("held", 1))
assert(mb.send("held", 2))
]])
    assert.equal(0, code, err)
    assert(l:wait_output("end 2", 20), l:output() .. l:errors())
    os.execute("sleep 2") -- (the copies come at once after each handler)
    local o = l:output()
    assert.equal(0, count(o, "^dead "), o)
    assert.equal(1, count(o, "^start 1 "), o)
    assert.equal(1, count(o, "^start 2 "), o)
    assert.equal(0, l:stop(), l.err)
  end)

  it("sends a message whose last attempt's node was killed to the dead letters of the next, saying what may have happened",
    function()
    local decl = [[assert(mb.destination("kd", {cluster = {durable = true, ack_wait = 1,
  max_deliver = 1}}))
]]
    local code = decl .. DEAD .. [[
mb.listen("kd", function(msg)
  print("start " .. msg.payload)
  if os.getenv("STALL") then
    local t = os.clock()
    while os.clock() - t < 60 do end -- killed here
  end
end, {group = "g"})
mb.after(0.05, function() print("ready") end)
]]
    local a = node("a1", code, "STALL=1")
    assert(a:wait_output("ready", 15), a:errors())
    local out, err, status = send(decl .. [[assert(mb.send("kd", 1))
]])
    assert.equal(0, status, err)
    assert(a:wait_output("start 1", 15), a:output() .. a:errors())
    a:kill()
    local b = node("b1", code)
    assert(b:wait_output("dead ", 15), b:output() .. b:errors())
    assert.matches("dead failed: not acknowledged after 1 deliveries %(max_deliver 1%): the last "
      .. "one's node stopped or was cut off before its handler returned, held its worker 0 past "
      .. "ack_wait, or could not take it", b:output())
    assert.equal(0, count(b:output(), "^start "))
  end)

  it("does not store later a send that timed out while its stream was being made", function()
    -- the server stalls (SIGSTOP) while the node asks for the stream: the
    -- send waiting for it returns timeout:, and must not be published when
    -- the stream comes (it was, and its listener got it)
    local trigger = env.dir .. "/go"
    local n = node("w1", [[
local started
mb.every(0.1, function()
  if started or not io.open(os.getenv("GO")) then return end
  started = true
  assert(mb.destination("ws", {cluster = {durable = true}}))
  mb.listen("ws", function(msg) print("got " .. msg.payload) end)
  print("first", mb.send("ws", 1, {timeout = 1}))
  mb.after(2, function() print("second", mb.send("ws", 2)) end)
end)
mb.after(0.05, function() print("ready") end)
]], "GO=" .. helper.quote(trigger))
    assert(n:wait_output("ready", 15), n:errors())
    env.srv:_signal("STOP")
    finally(function() env.srv:_signal("CONT") end)
    helper.write(trigger, "")
    local ok = n:wait_output("first\t[^\n]*\n", 10)
    env.srv:_signal("CONT")
    assert(ok, n:output() .. n:errors())
    assert.matches("first\tnil\ttimeout: ", n:output())
    assert(n:wait_output("got 2", 15), n:output() .. n:errors())
    assert.equal(0, count(n:output(), "^got 1"), n:output())
    assert.equal(0, n:stop(), n.err)
  end)

  it("takes no new messages from its consumers once it stops, so its stop ends with what it holds",
    function()
    -- a steady stream: the stopping node went on taking new messages while
    -- "taking no new messages", never drained, and its stop always ran to
    -- the end of the grace period, cutting its handlers short (exit 1)
    local decl = [[assert(mb.destination("st", {cluster = {durable = true, ack_wait = 2}}))
]]
    local code = decl .. [[
mb.listen("st", function(msg)
  mb.sleep(0.3)
  print("done " .. msg.payload)
end, {group = "g"})
mb.after(0.05, function() print("ready") end)
]]
    local a, b = node("a1", code), node("b1", code)
    assert(a:wait_output("ready", 15), a:errors())
    assert(b:wait_output("ready", 15), b:errors())
    local s = node("s1", decl .. [[
local i = 0
mb.every(0.02, function()
  i = i + 1
  if i <= 400 then assert(mb.send("st", i)) end
  if i == 400 then print("sent") end
end)
]])
    assert(a:wait_output("done %d+", 15), a:output() .. a:errors())
    local t = require("mb").now()
    local status = a:stop()
    local took = require("mb").now() - t
    assert.equal(0, status, a.err)
    assert.is_true(took < 3, ("the stop took %.1f s"):format(took))
    assert(s:wait_output("sent", 30), s:output() .. s:errors())
    -- what a1 had not started goes to b1 (at once, or after ack_wait)
    local function handled()
      local seen, n = {}, 0
      for _, x in ipairs(lines(a.out .. b:output(), "^done (%d+)$")) do
        if not seen[x] then seen[x], n = true, n + 1 end
      end
      return n
    end
    assert(nodes.wait_for(function() return handled() == 400 end, 20),
      ("%d of 400 handled\n%s"):format(handled(), b:errors()))
  end)

  it("refuses a send while the server is down with closed:", function()
    local decl = [[assert(mb.destination("down", {cluster = {durable = true}}))
]]
    local s = node("s1", decl .. [[
print(assert(mb.send("down", {n = 1})) and "sent")
mb.on("cluster_down", function()
  print("result", mb.send("down", {n = 2}))
end)
]])
    assert(s:wait_output("sent", 15), s:errors())
    assert(env.srv:kill())
    assert(s:wait_output("result", 10), s:output() .. s:errors())
    assert.matches("result\tnil\tclosed: ", s:output())
    assert.equal(0, s:stop(), s.err)
  end)

  it("keeps two long names that differ only at their end in two streams", function()
    -- a stream's name holds at most 255 bytes: a long destination name
    -- must not be cut to one shared by another destination
    local out, err, code = send([[
local a, b = ("a"):rep(200) .. "x", ("a:"):rep(100) .. "y"
local b2 = ("a:"):rep(100) .. "z"
for _, name in ipairs{a, b, b2} do
  assert(mb.destination(name, {cluster = {durable = true}}))
  mb.listen(name, function(msg) print("got " .. msg.payload .. " at " .. name:sub(-1)) end)
end
print("sent", mb.send(a, "x") ~= nil, mb.send(b, "y") ~= nil, mb.send(b2, "z") ~= nil,
  mb.send(a, "x") ~= nil)
local n = 0
mb.every(0.05, function()
  n = n + 1
  if n == 20 then mb.stop() end
end)
]])
    assert.equal(0, code, err)
    assert.matches("sent\ttrue\ttrue\ttrue\ttrue", out)
    assert.equal(2, count(out, "^got x at x$"), out)
    assert.equal(1, count(out, "^got y at y$"), out)
    assert.equal(1, count(out, "^got z at z$"), out)
    assert.equal(4, count(out, "^got "), out)
  end)

  it("checks its options", function()
    local out, err, code = send([[
print(pcall(mb.destination, "x", {cluster = {durable = true, max_deliver = 0}}))
print(pcall(mb.destination, "x", {cluster = {durable = true, bogus = 1}}))
print(pcall(mb.destination, "x", {cluster = {max_msgs = 5}}))
print(pcall(mb.destination, "x", {type = "synchronous", cluster = {durable = true}}))
print(pcall(mb.destination, "x", {cluster = {durable = true, max_age = -1}}))
-- JetStream refuses max_age < 0.1; an ack_wait under 1 s is shorter than
-- the node's "in progress" beat allows (a delivery would run twice at once)
print(pcall(mb.destination, "x", {cluster = {durable = true, max_age = 0.05}}))
print(pcall(mb.destination, "x", {cluster = {durable = true, ack_wait = 0.5}}))
print(pcall(mb.destination, "x", {cluster = {durable = true, ack_wait = 0/0}}))
print(pcall(mb.destination, "x", {cluster = {durable = true, max_deliver = 1000001}}))
assert(mb.destination("most", {cluster = {durable = true, max_deliver = 1000000}}))
assert(mb.destination("edge", {cluster = {durable = true, ack_wait = 1, max_age = 0.1}}))
assert(mb.destination("d", {cluster = {durable = true}}))
print(pcall(mb.request, "d", 1))
assert(mb.destination("p", {cluster = true}))
print(mb.destination("p", {cluster = {durable = true}}))
print(mb.destination("d", {cluster = {durable = true, max_deliver = 9}}))
]])
    assert.equal(0, code, err)
    assert.matches("option 'cluster.max_deliver' must be a positive integer, not 0", out)
    assert.matches("option 'cluster' unknown option 'bogus'", out)
    assert.matches("option 'cluster.durable' must be true", out)
    assert.matches("option 'cluster.durable' is for parallel and serial destinations", out)
    assert.matches("option 'cluster.max_age' must be a number of seconds from 0.1 to 1e9, not %-1",
      out)
    assert.matches("option 'cluster.max_age' must be a number of seconds from 0.1 to 1e9, not 0.05",
      out)
    assert.matches("option 'cluster.ack_wait' must be a number of seconds from 1.0 to 1e9, not 0.5",
      out)
    assert.matches("option 'cluster.ack_wait' must be a number of seconds from 1.0 to 1e9, not [-]?nan",
      out)
    assert.matches("option 'cluster.max_deliver' must be a positive integer up to 1000000, not "
      .. "1000001", out)
    assert.matches("mb.request: 'd' is a durable destination: it takes sends", out)
    assert.matches("nil\texists: destination 'p' exists with other options", out)
    assert.matches("nil\texists: durable destination 'd' is declared here with other options", out)
  end)

  it("is an exists error on a node that declares it plain (or plain one durable)", function()
    local a = node("a1", [[
assert(mb.destination("mix", {type = "serial", cluster = {durable = true}}))
assert(mb.destination("plain", {cluster = true}))
mb.after(0.05, function() print("ready") end)
]])
    assert(a:wait_output("ready", 15), a:errors())
    local out, err, code = send([[
print(mb.destination("mix", {type = "serial", cluster = true}))
print(mb.destination("plain", {cluster = {durable = true}}))
print(mb.destination("mix", {type = "serial", cluster = {durable = true}}))
]])
    assert.equal(0, code, err)
    assert.matches("nil\texists: destination 'mix' is durable serial on node a1 %(declared serial here%)",
      out)
    assert.matches("nil\texists: destination 'plain' is parallel on node a1 %(declared durable "
      .. "parallel here%)", out)
    assert.matches("\ntrue\n", out)
  end)

  it("fails a send with the server's reason when the server has no JetStream", function()
    env.srv:stop()
    env.srv = assert(ns.start())
    local out, err, code = send([[
assert(mb.destination("d", {cluster = {durable = true}}))
print(mb.send("d", 1))
]])
    assert.equal(0, code, err)
    assert.matches("nil\tfailed: the JetStream stream 'mb__default__d' of durable destination 'd' "
      .. "could not be made: [^\n]+ %(is nats%-server running with %-js%?%)", out)
  end)
end)

describe("a durable destination whose JetStream never answers", function()
  local env = server.block{}
  if not env then return end

  it("does not hold its node's stop for the management request in flight", function()
    -- a plain client takes every JetStream API request and answers none
    -- (a server under load, say): the node's management thread waits in
    -- its request for up to 5 s, and the stop must not wait with it
    local seen = env.dir .. "/seen"
    local script = env.dir .. "/swallow.sh"
    helper.write(script, ([[
exec 3<>/dev/tcp/127.0.0.1/%d
read -r info <&3
printf 'CONNECT {"verbose":false}\r\nSUB $JS.API.> 1\r\nPING\r\n' >&3
while read -t 20 -r line <&3; do
  case $line in PONG*) echo subscribed >> %s;; MSG*) echo request >> %s;; esac
done
]]):format(env.srv.port, helper.quote(seen), helper.quote(seen)))
    local pid = tonumber((helper.run(("timeout 30 bash %s > /dev/null 2>&1 & echo $!")
      :format(helper.quote(script)))))
    finally(function() os.execute(("kill %d 2> /dev/null"):format(pid)) end)
    local function heard(what)
      local f = io.open(seen)
      local s = f and f:read("a") or ""
      if f then f:close() end
      return s:find(what, 1, true)
    end
    assert(nodes.wait_for(function() return heard("subscribed") end, 10), "no swallower")
    local path = env.dir .. "/durable.lua"
    helper.write(path, [[
assert(mb.destination("d", {cluster = {durable = true}}))
mb.every(1, function() end)
]])
    local a = nodes.start(env.srv.url, "a1", helper.quote(path))
    env.list[#env.list + 1] = a
    assert(nodes.wait_for(function() return heard("request") end, 10), a:errors())
    local t = require("mb").now()
    local status = a:stop()
    local took = require("mb").now() - t
    assert.is_not_nil(status, "the node had to be killed: " .. tostring(a.err))
    assert.is_true(took < 2.5, ("the stop took %.1f s"):format(took))
  end)
end)
