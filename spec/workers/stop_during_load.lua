-- mb.stop() while a listener on another worker is still loading a new
-- service: shutdown must stop and free everything (the ASan run checks).
local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
mb.destination("l/spin")
mb.load(dir .. "/spinner.lua", {args = {dir}})
mb.send("l/spin", 1)
mb.sleep(0.05)
print("stopping")
mb.stop()
