-- bench/lib/queuebus.lua — the "queue bus" baseline: the simplest message bus
-- one would write in plain Lua 5.4. send() wraps the payload in a message
-- table and appends it to a table queue; run() drains the queue, calling
-- every listener of the message's destination with the message. Payloads are
-- shared, not copied (mb gives every listener its own copy).
local QueueBus = {}
QueueBus.__index = QueueBus

function QueueBus.new()
  return setmetatable({listeners = {}, q = {}, head = 1, tail = 0, next_id = 0}, QueueBus)
end

function QueueBus:destination(name)
  self.listeners[name] = self.listeners[name] or {}
end

function QueueBus:listen(name, fn)
  local ls = assert(self.listeners[name], "no destination")
  ls[#ls + 1] = fn
end

function QueueBus:send(name, payload)
  local ls = self.listeners[name]
  if not ls then return nil, "no_destination: " .. name end
  if #ls == 0 then return nil, "no_listeners: " .. name end
  local id = self.next_id + 1
  self.next_id = id
  local t = self.tail + 1
  self.tail = t
  self.q[t] = {destination = name, payload = payload, id = id}
  return id
end

-- Delivers everything queued (and whatever listeners send meanwhile).
function QueueBus:run()
  local q, listeners = self.q, self.listeners
  local h = self.head
  while h <= self.tail do
    local m = q[h]
    q[h] = nil
    h = h + 1
    self.head = h
    local ls = listeners[m.destination]
    for i = 1, #ls do ls[i](m) end
  end
  self.head, self.tail = 1, 0 -- drained: reuse the array part from the start
end

return QueueBus
