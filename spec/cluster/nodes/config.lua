-- One node of the cluster specs (spec/cluster/cluster_spec.lua): every
-- destination the specs use, shared over NATS, and a listener script each.
return {
  destinations = {
    fan = {cluster = true},
    work = {cluster = true},
    ask = {cluster = true},
    boom = {cluster = true},
    slow = {cluster = true},
    order = {type = "serial", cluster = true},
    poll = {cluster = true},
    syncd = {type = "synchronous", cluster = true},
    tiny = {type = "serial", max_queue = 2, cluster = true},
    replyx = {cluster = true},
    replyplain = {cluster = true},
  },
  listeners = {
    ["fan.lua"] = {"fan"},
    ["work.lua"] = {"work", group = "billing"},
    ["ask.lua"] = {"ask", "boom", "slow", group = "askers"},
    ["order.lua"] = {"order"},
    ["poll.lua"] = {"poll", "syncd", "tiny", "replyx", "replyplain"},
  },
  services = {{script = "ready.lua"}},
}
