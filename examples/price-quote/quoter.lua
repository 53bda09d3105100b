-- A quoter: answers price requests at quotes/jungle-gym (parallel) with a
-- price for the quantity asked. config.lua loads it once per supplier (and
-- scenario.lua --raise once more), so each is a listener group of its own
-- and gets every request; scenario.lua asks them all at once with
-- mb.request_all.
--   args: one table {name =, unit_price =, delay = seconds before answering,
--         decline = reason (answers with an error reply instead of a price),
--         raise = reason (raises instead of answering: a failed delivery)}
--   request {item =, qty =} -> {quoter =, price =} or {quoter =, error =}
local q = ...

local function say(fmt, ...) print(("[%s] " .. fmt):format(q.name, ...)) end

mb.listen("quotes/jungle-gym", function(msg)
  local ask = msg.payload
  if q.delay then mb.sleep(q.delay) end -- looking it up; the loop keeps running
  if q.raise then
    -- a bug, not an answer: the bus reports it (stderr, `failed`, dead letter)
    error(("%s: %s"):format(q.name, q.raise))
  end
  if q.decline then
    -- an answer that says no: the requester gets it as a reply like any other
    say("cannot quote %d x '%s': %s", ask.qty, ask.item, q.decline)
    return {quoter = q.name, error = q.decline}
  end
  local price = q.unit_price * ask.qty
  say("quoting $%d for %d x '%s'", price, ask.qty, ask.item)
  return {quoter = q.name, price = price}
end)
