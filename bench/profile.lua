-- `make profile`: where the instructions of a sequential get_summary go. Runs N (2,000) calls on
-- Lua 5.4 under callgrind against the fixed-reply nginx (bench/fixed_server.lua) and writes
-- callgrind_annotate's top 30 functions, inclusive and exclusive, to build/bench/profile.txt.
-- The warm-up and start-up are in the totals too; `make bench` subtracts them, this does not.
package.path = "bench/?.lua;" .. package.path
local fixed_server = require "fixed_server"

local ROOT = os.getenv("PWD")
local N = tonumber(os.getenv("CALLS")) or 2000
local TMP = (os.getenv("LIMITRY_TEST_TMP") or ROOT .. "/.test-tmp") .. "/profile"
local OUT = ROOT .. "/build/bench/profile.txt"
local CG = TMP .. "/callgrind.out"

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

local server = fixed_server.start(TMP .. "/server")
local lua_side = io.popen(("env LUA_PATH=%s LUA_CPATH=%s timeout -k 5 120 lua5.4 bench/worker.lua lua_lines %s %d 2>&1"):format(
  shq(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"), shq(ROOT .. "/build/5.4/?.so;;"), shq(server.url), N))
local lua_lines = lua_side:read("*a")
lua_side:close()
local ok = run(("env LUA_PATH=%s LUA_CPATH=%s timeout -k 5 300 valgrind --tool=callgrind --callgrind-out-file=%s "
  .. "lua5.4 bench/worker.lua limitry %s %d 1000000 >/dev/null 2>%s"):format(
  shq(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"), shq(ROOT .. "/build/5.4/?.so;;"), shq(CG),
  shq(server.url), N, shq(TMP .. "/valgrind.log")))
fixed_server.stop(server)
if not ok then
  io.stderr:write("profile: callgrind run failed; see ", TMP, "/valgrind.log\n")
  os.exit(1)
end

-- callgrind_annotate's function lines: "12,345 ( 1.23%)  file:function [object]".
local function annotate(inclusive)
  local p = io.popen(("callgrind_annotate --threshold=100 --inclusive=%s %s 2>/dev/null"):format(inclusive, shq(CG)))
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

local exclusive, total = annotate("no")
local inclusive = annotate("yes")
if not total then
  io.stderr:write("profile: callgrind_annotate gave no totals for ", CG, "\n")
  os.exit(1)
end

local out = {}
local function say(fmt, ...) out[#out + 1] = fmt:format(...) end
say("callgrind, %d sequential get_summary calls, Lua 5.4, keep-alive, fixed-reply nginx; %s", N, os.date("!%Y-%m-%d %H:%M UTC"))
say("program total %d instructions, %.0f per call (start-up and 20 warm-up calls included; make bench subtracts them)", total, total / N)
say("lua5.4 and libcurl are stripped on Debian: their functions show as addresses; limitry's own are named.")
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
say("%s", lua_lines)
local f = assert(io.open(OUT, "w"))
f:write(table.concat(out, "\n"), "\n")
f:close()
print(table.concat(out, "\n"))
io.stderr:write("profile: written to ", OUT, " (callgrind data: ", CG, ")\n")
