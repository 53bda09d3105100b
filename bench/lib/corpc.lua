-- bench/lib/corpc.lua — the coroutine request/reply baseline in plain Lua
-- 5.4: a client runs in a coroutine; request(dest, payload) yields to the
-- scheduler, which queues the request as a message table, later runs the
-- destination's handler protected (pcall) with that message, and resumes the
-- client with the handler's return value as the reply (or nil, "failed: ...").
local Corpc = {}
Corpc.__index = Corpc

function Corpc.new()
  return setmetatable({handlers = {}, qco = {}, qmsg = {}, head = 1, tail = 0, next_id = 0},
                      Corpc)
end

function Corpc:handle(name, fn) self.handlers[name] = fn end

-- Called inside a coroutine started by spawn: waits for the reply.
function Corpc.request(name, payload)
  return coroutine.yield(name, payload)
end

function Corpc:_resume(co, ...)
  local ok, name, payload = coroutine.resume(co, ...)
  if not ok then error(name, 0) end
  if coroutine.status(co) == "suspended" then -- it asked for something
    if not self.handlers[name] then return self:_resume(co, nil, "no_destination: " .. name) end
    local id = self.next_id + 1
    self.next_id = id
    local t = self.tail + 1
    self.tail = t
    self.qco[t] = co
    self.qmsg[t] = {destination = name, payload = payload, id = id}
  end
end

function Corpc:spawn(fn, ...) self:_resume(coroutine.create(fn), ...) end

function Corpc:run()
  local qco, qmsg, handlers = self.qco, self.qmsg, self.handlers
  while self.head <= self.tail do
    local h = self.head
    local co, m = qco[h], qmsg[h]
    qco[h], qmsg[h] = nil, nil
    self.head = h + 1
    local ok, reply = pcall(handlers[m.destination], m)
    if ok then
      self:_resume(co, reply)
    else
      self:_resume(co, nil, "failed: " .. tostring(reply))
    end
  end
  self.head, self.tail = 1, 0 -- drained: reuse the array part from the start
end

return Corpc
