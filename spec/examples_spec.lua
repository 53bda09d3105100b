-- The Jungle Gyms R-Us demo (examples/jungle-gyms), run as a user runs it:
-- `mbrun examples/jungle-gyms/main.lua` as a subprocess. Checks the exit
-- status and that the story lines appear, in order where the destination
-- types guarantee an order (synchronous, serial), and at all where they
-- do not (parallel news).
--
--   LUA_CPATH='build/?.so;;' lua5.4 /usr/bin/busted spec/examples_spec.lua
--
-- Run from the project root; MBRUN names the mbrun to test.

local MBRUN = os.getenv("MBRUN") or "build/mbrun"
local DEMO = "examples/jungle-gyms/main.lua"

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs a shell command line; returns its output lines and exit status.
local function run(cmdline)
  local p = assert(io.popen(cmdline .. " 2>&1; echo EXIT:$?"))
  local out = p:read("a")
  p:close()
  local lines = {}
  for line in out:gmatch("[^\n]*") do
    if line ~= "" then lines[#lines + 1] = line end
  end
  local code = tonumber(table.remove(lines):match("^EXIT:(%d+)$"))
  return lines, code, out
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local p = assert(io.popen("pwd"))
  local cwd = p:read("l")
  p:close()
  return cwd .. "/" .. path
end

-- The index of the first line that is exactly `line`, from `from` on.
local function find(lines, line, from)
  for i = from or 1, #lines do
    if lines[i] == line then return i end
  end
end

local function count(lines, line)
  local n = 0
  for _, l in ipairs(lines) do
    if l == line then n = n + 1 end
  end
  return n
end

-- Asserts that `expected` appear in `lines` in this order (other lines may
-- come between); returns the index of the last one.
local function assert_in_order(lines, expected, from, out)
  local at = (from or 1) - 1
  for _, line in ipairs(expected) do
    local i = find(lines, line, at + 1)
    assert(i, ("expected, after line %d:\n  %s\nin the output:\n%s"):format(at, line, out))
    at = i
  end
  return at
end

describe("examples/jungle-gyms", function()
  local lines, code, out

  -- One worker: the order of lines is then the order of events. With more
  -- workers, listeners on different workers print concurrently (checked
  -- below: the same lines, in another order).
  setup(function()
    lines, code, out = run(shell_quote(MBRUN) .. " -w 1 " .. DEMO)
  end)

  it("tells the same story, in some order, on four workers", function()
    local many, code4, out4 = run(shell_quote(MBRUN) .. " -w 4 " .. DEMO)
    assert.are.equal(0, code4, out4)
    local a, b = {}, {}
    for i, l in ipairs(lines) do a[i] = l end
    for i, l in ipairs(many) do b[i] = l end
    table.sort(a)
    table.sort(b)
    assert.are.same(a, b)
  end)

  it("runs to the end by itself and exits 0, with nothing on stderr", function()
    assert.are.equal(0, code, out)
    assert.is_nil(out:find("mbrun:", 1, true), out)
    for _, line in ipairs(lines) do
      assert.matches("^%[[%w ]+%] %S", line) -- one event a line, department first
    end
  end)

  it("asks Finance, then Legal, part after part, and shows both refusals", function()
    assert_in_order(lines, {
      "[procurement] asking finance to buy 'swing chains' for $120",
      "[finance] yes: within budget ($880 left)",
      "[procurement] finance said yes: within budget ($880 left)",
      "[procurement] asking legal to buy 'swing chains' for $120",
      "[legal] yes: safety rating 5/5",
      "[procurement] legal said yes: safety rating 5/5",
      -- refused by Finance: Legal is not asked
      "[procurement] asking finance to buy 'monkey bars' for $950",
      "[finance] no: over budget ($950 asked, $880 left)",
      "[procurement] finance said no: over budget ($950 asked, $880 left)",
      -- refused by Legal: Finance gives the reserved money back
      "[procurement] asking finance to buy 'trampoline' for $400",
      "[finance] yes: within budget ($480 left)",
      "[procurement] asking legal to buy 'trampoline' for $400",
      "[legal] no: safety rating 2/5, below our minimum of 4",
      "[procurement] legal said no: safety rating 2/5, below our minimum of 4",
      "[procurement] telling finance to release the $400 for 'trampoline'",
      "[finance] released the $400 reserved for 'trampoline' ($880 left)",
      "[procurement] asking finance to buy 'slide' for $300",
      "[finance] yes: within budget ($580 left)",
      "[procurement] asking legal to buy 'slide' for $300",
      "[legal] yes: safety rating 4/5",
      "[procurement] approved 2 of 4 parts",
    }, 1, out)
    assert.is_nil(find(lines, "[procurement] asking legal to buy 'monkey bars' for $950"))
  end)

  it("sends a JSON purchase notice only for the approved parts", function()
    assert_in_order(lines, {
      "[procurement] approved 2 of 4 parts",
      '[procurement] purchase notice to jungle/purchase: {"department":"procurement",'
        .. '"partName":"swing chains","responseDestinationName":"jungle/purchase/response"}',
      '[procurement] purchase notice to jungle/purchase: {"department":"procurement",'
        .. '"partName":"slide","responseDestinationName":"jungle/purchase/response"}',
    }, 1, out)
    assert.is_nil(out:find("bought 'monkey bars'", 1, true), out)
    assert.is_nil(out:find("bought 'trampoline'", 1, true), out)
  end)

  it("has Sales, then Warehouse answer each notice, one notice after the other", function()
    -- serial: every listener (in registration order) before the next notice;
    -- synchronous answers: read by all before the notice moves on
    assert_in_order(lines, {
      "[sales] procurement bought 'swing chains'; answering at jungle/purchase/response",
      "[warehouse] noted sales on 'swing chains': we'll put 'swing chains' in the next catalogue",
      "[procurement] sales answered on 'swing chains': we'll put 'swing chains' in the next catalogue",
      "[warehouse] procurement bought 'swing chains'; answering at jungle/purchase/response",
      "[sales] noted warehouse on 'swing chains': bay 1 is cleared for 'swing chains'",
      "[procurement] warehouse answered on 'swing chains': bay 1 is cleared for 'swing chains'",
      "[sales] procurement bought 'slide'; answering at jungle/purchase/response",
      "[warehouse] noted sales on 'slide': we'll put 'slide' in the next catalogue",
      "[procurement] sales answered on 'slide': we'll put 'slide' in the next catalogue",
      "[warehouse] procurement bought 'slide'; answering at jungle/purchase/response",
      "[sales] noted warehouse on 'slide': bay 2 is cleared for 'slide'",
      "[procurement] warehouse answered on 'slide': bay 2 is cleared for 'slide'",
    }, 1, out)
    -- each department ignores its own answer
    assert.is_nil(out:find("[sales] noted sales", 1, true), out)
    assert.is_nil(out:find("[warehouse] noted warehouse", 1, true), out)
  end)

  it("broadcasts the news once all answers are in, and every employee reads every item", function()
    local last_answer = find(lines,
      "[procurement] warehouse answered on 'slide': bay 2 is cleared for 'slide'")
    assert(last_answer, out)
    for _, part in ipairs {"swing chains", "slide"} do
      local item = ("new '%s' on the way to the warehouse"):format(part)
      local sent = assert_in_order(lines, {"[procurement] news for all employees: " .. item},
        last_answer, out)
      for _, employee in ipairs {"alice", "bob", "carol"} do
        -- parallel: no order among employees or items, but after the send
        local line = ("[employee %s] read the news: %s"):format(employee, item)
        assert_in_order(lines, {line}, sent, out)
        assert.are.equal(1, count(lines, line), out)
      end
    end
    local reads = 0
    for _, line in ipairs(lines) do
      if line:find("^%[employee ") then reads = reads + 1 end
    end
    assert.are.equal(6, reads, out)
  end)

  it("tells the same story from any working directory", function()
    local elsewhere, code2, out2 = run("cd /tmp && " .. shell_quote(absolute(MBRUN)) .. " "
      .. shell_quote(absolute(DEMO)))
    assert.are.equal(0, code2, out2)
    local a, b = {}, {}
    for i, l in ipairs(lines) do a[i] = l end
    for i, l in ipairs(elsewhere) do b[i] = l end
    table.sort(a)
    table.sort(b)
    assert.are.same(a, b)
  end)
end)
