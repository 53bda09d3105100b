-- bench/peak.lua — benchmark 10's peak-RSS probe: the empty scenario, but it
-- prints the process's VmHWM (bytes) as it ends, under mbrun or lua5.4.
local f = assert(io.open("/proc/self/status"))
local kb = assert(f:read("a"):match("VmHWM:%s*(%d+)"), "no VmHWM in /proc/self/status")
f:close()
print(string.format("VmHWM=%d", tonumber(kb) * 1024))
