-- mbrun --watch (SPEC section 3, issue 15): a loaded service or configured
-- listener script whose file changes is reloaded as by handle:reload(); a
-- failed reload is reported and the old instances keep running. The
-- scenario edits the files itself while mbrun runs it, and waits (bounded)
-- for the answers to change.
local helper = require "spec.helper"

describe("mbrun --watch", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(function() helper.remove_tree(dir) end)

  local function scenario()
    helper.write(dir .. "/svc.lua", [[mb.listen("w/svc", function() return "s1" end)]])
    helper.write(dir .. "/lis.lua", [[return function() return "l1" end]])
    helper.write(dir .. "/config.lua", [[
      return {destinations = {["w/svc"] = {}, ["w/lis"] = {}},
              listeners = {["lis.lua"] = {"w/lis"}},
              services = {{script = "svc.lua", instances = 2}}}
    ]])
    return helper.write(dir .. "/scenario.lua", ([[
      local dir = %q
      -- as an editor saves: a temporary file renamed over the script
      local function save(name, text)
        local f = assert(io.open(dir .. "/" .. name .. ".tmp", "w"))
        f:write(text)
        f:close()
        assert(os.rename(dir .. "/" .. name .. ".tmp", dir .. "/" .. name))
      end
      -- written in place (same inode), as `echo text > file` does
      local function overwrite(name, text)
        local f = assert(io.open(dir .. "/" .. name, "w"))
        f:write(text)
        f:close()
      end
      local function answer(dest) return (assert(mb.request(dest, 0, {timeout = 1}))) end
      local function until_answer(dest, want)
        local t0 = mb.now()
        while answer(dest) ~= want do
          if mb.now() - t0 > 5 then error(dest .. ": still not " .. want .. " after 5 s", 0) end
          mb.sleep(0.02)
        end
        print(("%%s answers %%s"):format(dest, want))
      end
      mb.sleep(0.6) -- the watcher has found every service
      save("svc.lua", [=[mb.listen("w/svc", function() return "s2" end)]=])
      until_answer("w/svc", "s2")
      save("lis.lua", [=[return function() return "l2" end]=])
      until_answer("w/lis", "l2")
      overwrite("svc.lua", [=[mb.listen("w/svc", function() return "s3!" end)]=])
      until_answer("w/svc", "s3!")
      save("svc.lua", "this is not Lua (")
      mb.sleep(0.6)
      print("after a broken save: " .. answer("w/svc"))
      print(("instances %%d, listeners %%d"):format(#mb.services()[2].workers,
        mb.stats("w/svc").listeners))
    ]]):format(dir))
  end

  it("reloads a changed service or listener script, and keeps the old one when the new fails",
    function()
      local path = scenario()
      local out, err, code = helper.mbrun(("-w 2 --watch -c %s %s"):format(
        helper.quote(dir .. "/config.lua"), helper.quote(path)), {timeout = 30})
      assert.are.equal(0, code, out .. err)
      assert.matches("w/svc answers s2\nw/lis answers l2\nw/svc answers s3!\n" ..
        "after a broken save: s3!\ninstances 2, listeners 2\n", out, 1, true)
      local svc = dir .. "/svc.lua"
      assert.truthy(err:find(("mbrun: --watch: %s changed: reloaded %s (2 instances)"):format(
        svc, svc), 1, true), err)
      assert.truthy(err:find(("mbrun: --watch: %s changed: reloaded %s (1 instance)"):format(
        dir .. "/lis.lua", dir .. "/lis.lua"), 1, true), err)
      assert.truthy(err:find(("mbrun: --watch: %s changed, but %s did not reload (failed: " ..
        "%s:1: syntax error near 'is'); the old instances keep running"):format(svc, svc, svc),
        1, true), err)
    end)

  it("is off without --watch: a changed script runs on as it was", function()
    local path = helper.write(dir .. "/plain.lua", ([[
      local dir = %q
      mb.destination("w/x")
      local f = io.open(dir .. "/x.lua", "w")
      f:write('mb.listen("w/x", function() return 1 end)')
      f:close()
      assert(mb.load(dir .. "/x.lua"))
      f = io.open(dir .. "/x.lua", "w")
      f:write('mb.listen("w/x", function() return 2 end)')
      f:close()
      mb.sleep(0.5)
      print("answer " .. mb.request("w/x", 0))
    ]]):format(dir))
    local out, err, code = helper.mbrun("-w 1 " .. helper.quote(path))
    assert.are.equal(0, code, out .. err)
    assert.are.equal("answer 1\n", out)
  end)
end)
