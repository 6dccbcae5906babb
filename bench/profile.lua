-- `make profile`: where the instructions of a call go. Runs N (2,000) sequential get_summary calls,
-- then N start_summary calls at 64 in flight, on Lua 5.4 under callgrind against the fixed-reply
-- nginx (bench/fixed_server.lua), and writes callgrind_annotate's top 30 functions of each,
-- inclusive and exclusive, to build/bench/profile.txt. The interpreter is build/bench/luahost
-- (bench/luahost.c: Lua 5.4 with its symbols) when profile.sh could build it, else lua5.4.
-- The warm-up and start-up are in the totals too; `make bench` subtracts them, this does not.
package.path = "bench/?.lua;" .. package.path
local fixed_server = require "fixed_server"

local ROOT = os.getenv("PWD")
local N = tonumber(os.getenv("CALLS")) or 2000
local TMP = (os.getenv("LIMITRY_TEST_TMP") or ROOT .. "/.test-tmp") .. "/profile"
local OUT = ROOT .. "/build/bench/profile.txt"

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

local LUA = "lua5.4"
local host = io.open(ROOT .. "/build/bench/luahost")
if host then
  host:close()
  LUA = ROOT .. "/build/bench/luahost"
end
local ENV = ("env LUA_PATH=%s LUA_CPATH=%s"):format(shq(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"),
  shq(ROOT .. "/build/5.4/?.so;;"))

-- callgrind_annotate's function lines: "12,345 ( 1.23%)  file:function [object]".
local function annotate(inclusive, CG)
  local p = io.popen(("callgrind_annotate --auto=no --threshold=100 --inclusive=%s %s 2>/dev/null"):format(inclusive, shq(CG)))
  local lines, total = {}, nil
  for line in p:lines() do
    local ir, rest = line:match("^%s*([%d,]+) %(%s*[%d.]+%%%)%s+(.*)$")
    if ir then
      ir = tonumber((ir:gsub(",", "")))
      if rest:match("PROGRAM TOTALS") then total = ir else lines[#lines + 1] = { ir = ir, name = rest } end
    end
  end
  p:close()
  return lines, total
end

local out = {}
local function say(fmt, ...) out[#out + 1] = fmt:format(...) end

local function report(what, CG)
  local exclusive, total = annotate("no", CG)
  local inclusive = annotate("yes", CG)
  if not total then
    io.stderr:write("profile: callgrind_annotate gave no totals for ", CG, "\n")
    os.exit(1)
  end

  say("callgrind, %d %s, Lua 5.4 (%s), keep-alive, fixed-reply nginx; %s", N, what, LUA, os.date("!%Y-%m-%d %H:%M UTC"))
  say("program total %d instructions, %.0f per call (start-up and warm-up calls included; make bench subtracts them)", total, total / N)
  say("libcurl is stripped on Debian: its functions show as addresses; limitry's own are named%s.",
    LUA == "lua5.4" and ", lua5.4's are addresses too (no liblua5.4.a for build/bench/luahost)" or "")
  say("")
  say("== exclusive instructions by object ==")
  local by_object, order = {}, {}
  for _, l in ipairs(exclusive) do
    local obj = l.name:match("%[([^%]]+)%]%s*$")
    obj = obj and obj:match("[^/]+$") or (l.name:find("/src/", 1, true) and "limitry/core.so" or "(not named)")
    if not by_object[obj] then by_object[obj] = 0; order[#order + 1] = obj end
    by_object[obj] = by_object[obj] + l.ir
  end
  table.sort(order, function(a, b) return by_object[a] > by_object[b] end)
  for _, obj in ipairs(order) do
    if by_object[obj] * 1000 >= total then
      say("%14s (%5.1f%%) %8.0f per call  %s", by_object[obj], by_object[obj] * 100 / total, by_object[obj] / N, obj)
    end
  end
  -- Inclusive costs: the interpreter's spine (main, pcall, the VM loop: ~100% each) and stripped
  -- addresses say nothing; named functions (limitry's, libcurl's and Lua's API, libc) do.
  local named = {}
  for _, l in ipairs(inclusive) do
    if l.ir < 0.95 * total and not l.name:match("^%?%?%?:0x") then named[#named + 1] = l end
  end
  for _, part in ipairs { { "inclusive, named functions below the interpreter's spine", named }, { "exclusive (self)", exclusive } } do
    say("")
    say("== top 30 functions, %s ==", part[1])
    for i = 1, math.min(30, #part[2]) do
      local l = part[2][i]
      say("%14s (%5.1f%%) %8.0f per call  %s", l.ir, l.ir * 100 / total, l.ir / N, l.name)
    end
  end
  say("")
end

local server = fixed_server.start(TMP .. "/server")
local lua_side = io.popen(("%s timeout -k 5 120 lua5.4 bench/worker.lua lua_lines %s %d 2>&1"):format(ENV, shq(server.url), N))
local lua_lines = lua_side:read("*a")
lua_side:close()
local runs = {
  { "sequential get_summary calls", "sequential", { "limitry", server.url, N, 1000000 } },
  { "start_summary calls at 64 in flight", "async", { "limitry_async", server.url, 64, N, 1000000 } },
}
local files = {}
for i, r in ipairs(runs) do
  local args = {}
  for j, a in ipairs(r[3]) do args[j] = shq(a) end
  files[i] = TMP .. "/callgrind." .. r[2]
  if not run(("%s timeout -k 5 300 valgrind --tool=callgrind --callgrind-out-file=%s %s bench/worker.lua %s >/dev/null 2>%s"):format(
    ENV, shq(files[i]), LUA, table.concat(args, " "), shq(TMP .. "/valgrind." .. r[2] .. ".log"))) then
    fixed_server.stop(server)
    io.stderr:write("profile: callgrind run failed; see ", TMP, "/valgrind.", r[2], ".log\n")
    os.exit(1)
  end
end
fixed_server.stop(server)
for i, r in ipairs(runs) do report(r[1], files[i]) end
say("%s", lua_lines)
local f = assert(io.open(OUT, "w"))
f:write(table.concat(out, "\n"), "\n")
f:close()
print(table.concat(out, "\n"))
io.stderr:write("profile: written to ", OUT, " (callgrind data: ", TMP, "/callgrind.*)\n")
