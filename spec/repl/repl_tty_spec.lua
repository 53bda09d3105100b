-- The REPL in a real terminal: mbrun runs in a tmux pane (a pseudo-
-- terminal), the spec types with send-keys and reads the screen with
-- capture-pane. Shows that output arriving while a line is half typed is
-- printed above the prompt and leaves the line intact, tab completion of a
-- destination name and of a service name, history recalled after a restart, and Ctrl-C.
--
--   LUA_CPATH='build/?.so;;' lua5.4 /usr/bin/busted spec/repl/repl_tty_spec.lua
--
-- Run from the project root; MBRUN names the mbrun to test. Needs tmux
-- (`make test` installs it).

local function sh(cmdline)
  local p = assert(io.popen(cmdline .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local CWD = sh("pwd"):gsub("%s+$", "")
-- a tmux server of our own, a new one for each session (a server whose
-- last session was killed exits on its own: a session started meanwhile
-- could land on it as it goes), its socket in a folder of ours; the ASan
-- run's LD_PRELOAD stays out of it
local helper = require "spec.helper"
local MBRUN = helper.MBRUN
local SOCKETS = helper.tmpdir()
local sessions = 0
local SOCKET = SOCKETS .. "/s0"
local function tmux(args) return sh("env -u LD_PRELOAD tmux -S " .. quote(SOCKET) .. " " .. args) end

-- The screen, each line without trailing blanks, without the empty rows
-- below the last line written.
local function screen()
  local text = tmux("capture-pane -p -t repl"):gsub("[ \t]+\n", "\n"):gsub("\n+$", "")
  return text
end

-- Polls the screen until pattern (a Lua pattern) shows, for up to 10 s
-- (the sanitizer builds are slow); returns the screen.
local function wait_for(pattern)
  local text
  for _ = 1, 200 do
    text = screen()
    if text:find(pattern) then return text end
    sh("sleep 0.05")
  end
  error(("timed out waiting for %q on the screen:\n%s"):format(pattern, text), 2)
end

local function keys(...)
  local args = {}
  for i, k in ipairs {...} do args[i] = quote(k) end
  tmux("send-keys -t repl " .. table.concat(args, " "))
end

-- The non-empty lines of the screen.
local function lines(text)
  local t = {}
  for l in text:gmatch("[^\n]*") do
    if l:match("%S") then t[#t + 1] = l end
  end
  return t
end

describe("the REPL on a terminal", function()
  local state -- XDG_STATE_HOME of the session: the history lives there
  local started = {} -- PIDs of the mbruns this case started

  local function start()
    sessions = sessions + 1
    SOCKET = SOCKETS .. "/s" .. sessions
    local cmd = ("cd %s && XDG_STATE_HOME=%s %s -w 2; echo EXITED $?; sleep 60"):format(
      quote(CWD), quote(state), MBRUN)
    tmux("new-session -d -s repl -x 120 -y 40 " .. quote(cmd))
    wait_for("mb>$")
    -- mbrun's PID (the pane's shell's child), to be sure it ends in after_each
    local pane = tmux("display-message -p -t repl '#{pane_pid}'"):match("%d+")
    -- (without the ASan round's LD_PRELOAD: pgrep hung in a futex under it)
    for pid in sh("env -u LD_PRELOAD pgrep -P " .. pane):gmatch("%d+") do
      started[#started + 1] = pid
    end
  end

  local function stop()
    keys("C-d")
    wait_for("EXITED %d+")
    local code = tonumber(screen():match("EXITED (%d+)"))
    tmux("kill-session -t repl")
    return code
  end

  before_each(function()
    state = os.tmpname()
    os.remove(state)
    assert(os.execute("mkdir -p " .. quote(state)))
  end)

  after_each(function()
    tmux("kill-server") -- SIGHUP to the panes: mbrun shuts down
    -- by PID, bounded: an mbrun that did not end (a TSan build never
    -- delivers the abort to a pure-Lua loop) is killed, not left spinning
    for _, pid in ipairs(started) do
      io.stderr:write(sh(("env -u LD_PRELOAD sh -c 'for i in $(seq 100); do kill -0 %s 2>/dev/null "
        .. "|| exit 0; sleep 0.05; done; echo repl_tty_spec: mbrun %s still ran 5 s after its "
        .. "terminal closed: killed; kill -9 %s'"):format(pid, pid, pid)))
    end
    started = {}
    os.execute("rm -rf " .. quote(state))
  end)

  teardown(function() helper.remove_tree(SOCKETS) end)

  it("prints a message above the prompt while a line is half typed, and keeps the line", function()
    start()
    keys('mb.destination("news")', "Enter")
    wait_for("true")
    keys('mb.listen("news", function(m) print("news: " .. m.payload) end)', "Enter")
    wait_for("\nmb>$")
    -- a timer sends in 0.5 s; meanwhile the user is typing
    keys('mb.after(0.5, function() mb.send("news", "hello") end)', "Enter")
    wait_for("\nmb>$")
    keys("x = 'half typed")
    local text = wait_for("news: hello")
    local l = lines(text)
    assert.are.equal("news: hello", l[#l - 1], text)
    assert.are.equal("mb> x = 'half typed", l[#l], text)
    -- the line is still there to finish and run
    keys(" line'", "Enter")
    wait_for("\nmb>$")
    keys("x", "Enter")
    text = wait_for("half typed line\nmb>$")
    assert.matches("mb> x = 'half typed line'\n", text)
    assert.are.equal(0, stop())
  end)

  it("completes commands and destination names with Tab", function()
    start()
    keys('mb.destination("jungle/orders/new")', "Enter")
    wait_for("true")
    keys(".sen", "Tab")
    wait_for("mb> %.send$")
    keys("jungle/ord", "Tab")
    local text = wait_for("mb> %.send jungle/orders/new")
    assert.matches("mb> %.send jungle/orders/new", text)
    keys("C-u")
    assert.are.equal(0, stop())
  end)

  it("completes service names after .stop, and stops the service", function()
    start()
    keys('mb.destination("d")', "Enter")
    wait_for("true")
    keys('mb.load("scripts/echo.lua", {name = "billing/invoices", instances = 2, args = {{destination = "d"}}})',
      "Enter")
    wait_for("<mb.Service>\nmb>$")
    keys(".sto", "Tab")
    wait_for("mb> %.stop$")
    keys("bill", "Tab")
    wait_for("mb> %.stop billing/invoices$")
    keys("Enter")
    wait_for("stopped billing/invoices %(2 instances%)\nmb>$")
    assert.are.equal(0, stop())
  end)

  it("recalls the history of an earlier session", function()
    start()
    keys("remembered = 6 * 7", "Enter")
    wait_for("\nmb>$")
    assert.are.equal(0, stop())
    local f = assert(io.open(state .. "/mb_history"))
    local saved = f:read("a")
    f:close()
    assert.matches("remembered", saved)
    start()
    keys("Up")
    wait_for("mb> remembered = 6 %* 7")
    keys("Enter")
    wait_for("\nmb>$")
    keys("remembered", "Enter")
    wait_for("\n42\nmb>$")
    assert.are.equal(0, stop())
  end)

  it("keeps what is typed while a line runs for the next prompt, shown once", function()
    start()
    keys("mb.sleep(0.5)", "Enter")
    sh("sleep 0.1")
    keys("typed_early = 1")
    local text = wait_for("\nmb> typed_early = 1$")
    local _, n = text:gsub("typed_early", "")
    assert.are.equal(1, n, text)
    keys("Enter")
    wait_for("\nmb>$")
    keys("typed_early", "Enter")
    wait_for("\n1\nmb>$")
    assert.are.equal(0, stop())
  end)

  it("cancels the line being typed, or the wait for a running one, on Ctrl-C", function()
    start()
    keys("this is not run")
    wait_for("mb> this is not run$")
    keys("C-c")
    wait_for("this is not run%^C\nmb>$")
    keys("function f()", "Enter")
    wait_for(">>$")
    keys("C-c") -- forgets the unfinished function
    wait_for("\nmb>$")
    -- Ctrl-C once the line waits (what it printed shows), not after a fixed
    -- 0.2 s: on a loaded machine its code was still running then, and the
    -- Ctrl-C went to the code, which reached its wait before the interrupt
    -- did (such an interrupt is lost: the line waits on)
    keys('print("wait" .. "ing") mb.sleep(30)', "Enter")
    wait_for("\nwaiting$")
    keys("C-c")
    wait_for("no longer waiting for that line")
    keys("1 + 1", "Enter")
    local text = wait_for("\n2\nmb>$")
    assert.not_matches("this is not run\n", text)
    assert.are.equal(0, stop())
  end)

  -- A Ctrl-C that finds the line's code running but lands while it is in C
  -- on its way into a wait (here: encoding a 4 MB payload for mb.request)
  -- set a hook that never fired, and the interrupt was dropped at the end
  -- of the run: the screen showed nothing and the line went on (lost in 7
  -- of 10 such presses). Each press must now get an answer: the code
  -- interrupted, or the wait for the line stopped.
  it("answers every Ctrl-C while a line's code goes in and out of waits", function()
    -- the listener in a service of its own: the REPL's state runs only the line
    local dir = helper.tmpdir()
    local f = assert(io.open(dir .. "/echo.lua", "w"))
    f:write("mb.destination('e') mb.listen('e', function() return 1 end)\n")
    f:close()
    start()
    keys(".load " .. dir .. "/echo.lua", "Enter")
    wait_for("loaded [^\n]*\nmb>$")
    keys("s = string.rep('x', 2^22)", "Enter")
    wait_for("\nmb>$")
    for i = 1, 6 do
      keys("go = true while go do mb.request('e', s) end", "Enter")
      sh("sleep 0." .. (1 + i % 3))
      keys("C-c")
      local text
      for _ = 1, 200 do -- 10 s
        text = screen()
        if text:find("interrupted[^\n]*\nmb>$") or text:find("no longer waiting for that line[^\n]*\nmb>$") then
          break
        end
        sh("sleep 0.05")
      end
      assert(text:find("interrupted") or text:find("no longer waiting"),
        ("press %d: no answer to Ctrl-C in 10 s:\n%s"):format(i, text))
      keys("C-l")
      keys("go = false print('round " .. i .. "')", "Enter")
      wait_for("round " .. i .. "\nmb>$")
      keys("C-l")
      wait_for("^mb>$")
    end
    assert.are.equal(0, stop())
    helper.remove_tree(dir)
  end)

  it("interrupts a line whose Lua code runs on Ctrl-C, as lua's prompt does", function()
    start()
    keys("n = 0; while true do n = n + 1 end", "Enter")
    sh("sleep 0.3")
    keys("C-c")
    wait_for("interrupted[^\n]*\nmb>$")
    keys("n > 0", "Enter")
    wait_for("\ntrue\nmb>$")
    assert.are.equal(0, stop())
  end)
end)
