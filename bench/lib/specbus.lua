-- bench/lib/specbus.lua — a plain-Lua bus that keeps the promises SPEC.md
-- makes about a message, which the queue bus (lib/queuebus.lua) does not:
-- every listener gets its own copy of the payload, taken when the message
-- is sent (the sender may change its table afterwards), a message table with
-- `destination`, `payload`, `values` (always a table) and `id`, a unique
-- string of 16 hex digits as mb's. What it still leaves out: checking that
-- a payload can be sent, statistics, isolation between services, workers.
-- It is the queue bus (new, destination, listen) with its own send and run.
local QueueBus = require "queuebus"
local SpecBus = setmetatable({}, {__index = QueueBus})
SpecBus.__index = SpecBus

local format = string.format

function SpecBus.new() return setmetatable(QueueBus.new(), SpecBus) end

local function copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in next, v do c[k] = copy(x) end
  return c
end

function SpecBus:send(name, payload, values)
  local ls = self.listeners[name]
  if not ls then return nil, "no_destination: " .. name end
  if #ls == 0 then return nil, "no_listeners: " .. name end
  local n = self.next_id + 1
  self.next_id = n
  local id = format("%016x", n)
  local t = self.tail + 1
  self.tail = t
  self.q[t] = {name, copy(payload), values and copy(values), id}
  return id
end

-- Delivers everything queued (and whatever listeners send meanwhile).
function SpecBus:run()
  local q, listeners = self.q, self.listeners
  local h = self.head
  while h <= self.tail do
    local e = q[h]
    q[h] = nil
    h = h + 1
    self.head = h
    local name, payload, values, id = e[1], e[2], e[3], e[4]
    local ls = listeners[name]
    for i = 1, #ls do
      local last = i == #ls -- the last listener gets the snapshot itself
      ls[i]({destination = name, payload = last and payload or copy(payload),
             values = values and (last and values or copy(values)) or {}, id = id})
    end
  end
  self.head, self.tail = 1, 0
end

return SpecBus
