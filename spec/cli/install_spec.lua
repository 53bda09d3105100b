-- make install and make uninstall, run as subprocesses into temporary
-- folders: every file in place with its mode, the installed mbrun (with its
-- Lua modules and ready scripts), the installed Lua module, the header and
-- libmb.a through pkg-config, the man page.
local helper = require "spec.helper"
local ROOT = helper.ROOT

-- What the outer run may have set and must not leak into the subprocesses:
-- the ASan preload of make asan-spec, the build's LUA_CPATH, MB_LUA_DIR, an
-- outer make's flags (jobserver).
local CLEAN_ENV = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS -u LUA_CPATH -u LUA_CPATH_5_4" ..
  " -u LUA_PATH -u LUA_PATH_5_4 -u LUA_INIT -u LUA_INIT_5_4 -u MB_LUA_DIR -u MAKEFLAGS -u MFLAGS" ..
  " -u MAKELEVEL -u DESTDIR -u PREFIX -u PKG_CONFIG_PATH "

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs a shell command (in a clean environment); returns its stdout, its
-- stderr and its exit code.
local errfile = os.tmpname()
local write, read = helper.write, helper.read

local function sh(cmd)
  local p = io.popen(CLEAN_ENV .. "sh -c " .. q(cmd) .. " 2>" .. q(errfile) .. "; echo \"EXIT:$?\"")
  local out = p:read("a")
  p:close()
  local f = io.open(errfile)
  local err = f and f:read("a") or ""
  if f then f:close() end
  os.remove(errfile)
  local code = tonumber(out:match("EXIT:(%d+)%s*$"))
  return (out:gsub("EXIT:%d+%s*$", "")), err, code
end

-- Runs cmd and asserts that it exits 0; returns stdout and stderr.
local function ok(cmd)
  local out, err, code = sh(cmd)
  assert.are.equal(0, code, ("'%s' exited %s:\n%s%s"):format(cmd, tostring(code), out, err))
  return out, err
end



local function have(prog)
  local _, _, code = sh("command -v " .. prog .. " >/dev/null")
  return code == 0
end

-- "755 regular file", "755 directory", ... or nil when missing.
local function mode_of(path)
  local out, _, code = sh("stat -c '%a %F' " .. q(path))
  if code ~= 0 then return nil end
  return (out:gsub("%s+$", ""))
end

local function version()
  return read(ROOT .. "/runtime/mb.h"):match('#define MB_VERSION "([^"]+)"')
end

describe("make install", function()
  local tmp, dest, usr

  setup(function()
    tmp = ok("mktemp -d /tmp/mb-install-spec-XXXXXX"):gsub("%s+$", "")
    dest = tmp .. "/root"
    usr = dest .. "/usr/local"
    ok("make -s -C " .. q(ROOT) .. " install DESTDIR=" .. q(dest) .. " PREFIX=/usr/local >/dev/null")
  end)

  teardown(function()
    if tmp and tmp:match("^/tmp/mb%-install%-spec%-") then sh("rm -rf " .. q(tmp)) end
  end)

  it("puts every file in place under DESTDIR/PREFIX with its mode and content", function()
    local files = {
      {"bin/mbrun", "755", ROOT .. "/build/mbrun"},
      {"lib/lua/5.4/mb.so", "644", ROOT .. "/build/mb.so"},
      {"lib/libmb.a", "644", ROOT .. "/build/libmb.a"},
      {"include/mb/mb.h", "644", ROOT .. "/runtime/mb.h"},
      {"include/mb/mb_value.h", "644", ROOT .. "/runtime/mb_value.h"},
      {"share/man/man1/mbrun.1", "644", ROOT .. "/doc/mbrun.1"},
      {"lib/pkgconfig/mb.pc", "644"},
      {"share/mb/scripts/README.md", "644", ROOT .. "/scripts/README.md"},
    }
    -- every Lua module and ready script of the source tree (at least these)
    local lua_files = ok("cd " .. q(ROOT) .. " && ls lua/mb/*.lua scripts/*.lua scripts/lib/*.lua")
    for _, must in ipairs({"lua/mb/config.lua", "lua/mb/boot.lua", "lua/mb/listener_host.lua",
                           "scripts/echo.lua", "scripts/logger.lua", "scripts/lib/options.lua"}) do
      assert.truthy(lua_files:find(must .. "\n", 1, true), must)
    end
    for src in lua_files:gmatch("[^\n]+") do
      local to = src:gsub("^lua/", "share/lua/5.4/"):gsub("^scripts/", "share/mb/scripts/")
      files[#files + 1] = {to, "644", ROOT .. "/" .. src}
    end
    for _, f in ipairs(files) do
      local path = usr .. "/" .. f[1]
      assert.are.equal(f[2] .. " regular file", mode_of(path), path)
      if f[3] then assert.are.equal(read(f[3]), read(path), path .. " differs from " .. f[3]) end
    end
    for _, d in ipairs({"bin", "include/mb", "lib/lua/5.4", "share/lua/5.4/mb", "share/mb/scripts/lib"}) do
      assert.are.equal("755 directory", mode_of(usr .. "/" .. d), d)
    end
    -- nothing outside PREFIX, nothing unexpected inside it
    local listing = ok("cd " .. q(dest) .. " && find . -type f | sort")
    local n = select(2, listing:gsub("\n", "\n"))
    assert.are.equal(#files, n, listing)
    assert.is_nil(listing:match("%./[^u]"), listing)
  end)

  it("writes mb.pc for PREFIX, not for DESTDIR", function()
    local pc = read(usr .. "/lib/pkgconfig/mb.pc")
    assert.matches("\nprefix=/usr/local\n", pc, 1, true)
    assert.is_nil(pc:find(dest, 1, true), "DESTDIR leaked into mb.pc")
    assert.is_nil(pc:find("@", 1, true), "a placeholder left in mb.pc")
    assert.matches("\nVersion: " .. version():gsub("%.", "%%.") .. "\n", pc)
  end)

  it("uses the folders Debian's lua5.4 searches under /usr/local", function()
    local out = ok("lua5.4 -e 'print(package.cpath) print(package.path)'")
    assert.truthy(out:find("/usr/local/lib/lua/5.4/?.so", 1, true), out)
    assert.truthy(out:find("/usr/local/share/lua/5.4/?.lua", 1, true), out)
  end)

  it("installs an mbrun that runs --version and a scenario that loads a ready script", function()
    local mbrun = usr .. "/bin/mbrun"
    local out = ok(q(mbrun) .. " --version")
    assert.matches("^mbrun " .. version():gsub("%.", "%%.") .. " ", out)
    write(tmp .. "/hello.lua", ([[
      local who = ...
      mb.destination("greetings")
      local echo = mb.load(%q, {args = {{destination = "greetings"}}})
      print("echo: " .. mb.request("greetings", {hello = who}).hello)
      echo:stop()
    ]]):format(usr .. "/share/mb/scripts/echo.lua"))
    out = ok("cd / && " .. q(mbrun) .. " -w 1 " .. q(tmp .. "/hello.lua") .. " world")
    assert.are.equal("echo: world\n", out)
  end)

  it("installs an mbrun that finds its Lua modules for -c", function()
    local mbrun = usr .. "/bin/mbrun"
    write(tmp .. "/shop.lua", [[
      return {
        workers = 1,
        destinations = {["shop/orders"] = {type = "serial"}},
        listeners = {["orders.lua"] = {"shop/orders"}},   -- relative to this file
      }
    ]])
    write(tmp .. "/orders.lua", [[return function(msg) print("order " .. msg.payload.item) end]])
    write(tmp .. "/send.lua", [[assert(mb.send("shop/orders", {item = "swing"}))]])
    -- from / so that nothing is found through the current directory
    local out = ok("cd / && " .. q(mbrun) .. " -c " .. q(tmp .. "/shop.lua") .. " " .. q(tmp .. "/send.lua"))
    assert.are.equal("order swing\n", out)
    -- a configuration mistake is reported by the installed config.lua
    write(tmp .. "/bad.lua", [[return {destinations = {x = {type = "fast"}}}]])
    local _, err, code = sh("cd / && " .. q(mbrun) .. " -c " .. q(tmp .. "/bad.lua"))
    assert.are.equal(2, code)
    assert.truthy(err:find('destinations.x.type: must be one of "parallel", "serial", "synchronous"', 1, true), err)
  end)

  it("installs a Lua module that require \"mb\" loads and that delivers a message", function()
    local cdir = usr .. "/lib/lua/5.4"
    write(tmp .. "/app.lua", [[
      package.cpath = ... .. "/?.so"
      package.path = ""
      local mb = require "mb"
      assert(package.searchpath("mb", package.cpath) == ... .. "/mb.so")
      mb.destination("app/in")
      local got
      mb.listen("app/in", function(msg) got = msg.payload.n * 2 end)
      assert(mb.send("app/in", {n = 21}))
      mb.run()
      print("got " .. tostring(got))
    ]])
    local out = ok("cd / && lua5.4 " .. q(tmp .. "/app.lua") .. " " .. q(cdir))
    assert.are.equal("got 42\n", out)
  end)

  it("gives pkg-config flags with which a C program builds, links and runs", function()
    local env = "PKG_CONFIG_LIBDIR=" .. q(usr .. "/lib/pkgconfig") .. " PKG_CONFIG_SYSROOT_DIR=" .. q(dest) .. " "
    local flags = ok(env .. "pkg-config --cflags --libs mb"):gsub("%s+$", "")
    assert.truthy(flags:find("-I" .. usr .. "/include/mb", 1, true), flags)
    assert.truthy(flags:find("-L" .. usr .. "/lib", 1, true), flags)
    assert.truthy(flags:find("-lmb", 1, true), flags)
    assert.are.equal(version() .. "\n", ok(env .. "pkg-config --modversion mb"))
    write(tmp .. "/prog.c", [[
#include <mb.h>
#include <stdio.h>

static long got = -1;

static void on_msg(void *ud, mb_delivery *d) {
  size_t n;
  const uint8_t *p = mb_msg_payload(mb_delivery_msg(d), &n);
  mb_reader r = {p, p + n};
  mb_item it;
  (void)ud;
  if (mb_read(&r, &it) == 0 && it.tag == MB_V_INT) got = (long)it.v.i;
  mb_delivery_done(d, MB_OK, NULL);
}

int main(void) {
  mb_runtime *rt = mb_runtime_new(NULL);
  if (!rt) return 10;
  if (mb_dest_declare(rt, "c/in", NULL) != MB_OK || !mb_dest_exists(rt, "c/in")) return 11;
  mb_service *svc = mb_service_new(rt, "prog", 0);
  int err = 0;
  mb_listener *l = mb_listen(svc, "c/in", 0, on_msg, NULL, NULL, &err);
  if (!l) return 12;
  mb_buf b = {0};
  mb_enc_int(&b, 42);
  mb_msg *m = mb_msg_new(b.p, b.len, NULL, 0, NULL);
  mb_buf_free(&b);
  if (mb_send(svc, "c/in", m, NULL, NULL) != MB_OK) return 13;
  mb_runtime_run(rt, 0);
  mb_stats st;
  if (mb_dest_stats(rt, "c/in", &st) != MB_OK) return 14;
  printf("%s got %ld delivered %llu %s\n", MB_VERSION, got, (unsigned long long)st.delivered,
         mb_strerror(mb_dest_declare(rt, "bad name", NULL)));
  mb_listener_close(l);
  mb_service_free(svc);
  mb_runtime_free(rt);
  return got == 42 ? 0 : 15;
}
]])
    -- compiled outside the source tree, so only the installed header can be found
    ok("cd " .. q(tmp) .. " && cc -std=c11 -Wall -Wextra -Werror -o prog prog.c $(" .. env ..
      "pkg-config --cflags --libs mb)")
    local out = ok(q(tmp .. "/prog"))
    assert.are.equal(version() .. " got 42 delivered 1 invalid\n", out)
  end)

  it("installs a man page that renders without warnings", function()
    local page = usr .. "/share/man/man1/mbrun.1"
    local src = read(page)
    assert.truthy(src:find("\n.TH MBRUN 1 ", 1, true), "no .TH line")
    for _, section in ipairs({"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION FILE",
                              "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"}) do
      assert.truthy(src:find("\n.SH " .. section .. "\n", 1, true), section)
    end
    if have("groff") then
      local _, err = ok("groff -man -Tutf8 -ww -z " .. q(page))
      assert.are.equal("", err)
    end
    if not have("man") then return end   -- man-db is not among make deps' packages
    local out, err = ok("LC_ALL=C MANWIDTH=80 man -l " .. q(page))
    assert.are.equal("", err)
    out = out:gsub(".\b", ""):gsub("%s+", " ")   -- overstrikes, justification and line breaks
    for _, s in ipairs({"mbrun [options] SCENARIO.lua [ARGS...]",
                        "mbrun -c CONFIG.lua [options] [SCENARIO.lua [ARGS...]]",
                        "-c FILE", "-w N", "--trace", "--stats", "--graph[=dot|svg]", "--graph-out FILE",
                        "--grace SECONDS", "-h, --help", "--version", "closed: shutting down",
                        "MB_LUA_DIR",
                        "mbrun -c examples/jungle-gyms/config.lua examples/jungle-gyms/scenario.lua"}) do
      assert.truthy(out:find(s, 1, true), "man page lacks " .. s)
    end
    -- man mbrun finds it in the installed layout
    local where = ok("MANPATH=" .. q(usr .. "/share/man") .. " man -w mbrun")
    assert.are.equal(page .. "\n", where)
  end)
end)

describe("make uninstall", function()
  it("removes what make install put under PREFIX, and nothing else", function()
    local tmp = ok("mktemp -d /tmp/mb-install-spec-XXXXXX"):gsub("%s+$", "")
    finally(function() sh("rm -rf " .. q(tmp)) end)
    local prefix = tmp .. "/prefix"
    -- a plain PREFIX this time, without DESTDIR
    ok("make -s -C " .. q(ROOT) .. " install PREFIX=" .. q(prefix) .. " >/dev/null")
    assert.are.equal("755 regular file", mode_of(prefix .. "/bin/mbrun"))
    local pc = read(prefix .. "/lib/pkgconfig/mb.pc")
    assert.truthy(pc:find("\nprefix=" .. prefix .. "\n", 1, true), pc)
    local flags = ok("PKG_CONFIG_LIBDIR=" .. q(prefix .. "/lib/pkgconfig") .. " pkg-config --cflags mb")
    assert.are.equal("-I" .. prefix .. "/include/mb", (flags:gsub("%s+$", "")))
    local out = ok("cd / && " .. q(prefix .. "/bin/mbrun") .. " --version")
    assert.matches("^mbrun ", out)
    -- someone else's files in shared folders stay
    write(prefix .. "/share/lua/5.4/other.lua", "return 1\n")
    write(prefix .. "/bin/other", "#!/bin/sh\n")
    ok("make -s -C " .. q(ROOT) .. " uninstall PREFIX=" .. q(prefix) .. " >/dev/null")
    local left = ok("cd " .. q(prefix) .. " && find . -type f | sort")
    assert.are.equal("./bin/other\n./share/lua/5.4/other.lua\n", left)
    for _, d in ipairs({"include/mb", "share/mb", "share/lua/5.4/mb"}) do
      assert.is_nil(mode_of(prefix .. "/" .. d), d .. " left behind")
    end
  end)
end)
