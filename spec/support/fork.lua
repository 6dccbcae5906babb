-- Runs a function in a forked child and brings its results back through a file. Uses Debian's
-- lua-posix where it loads (5.1, 5.3, LuaJIT) and the test-only shim (build/<lua>/
-- limitry_test_fork.so) elsewhere. Every wait is bounded; a child that overstays is killed.
local support = require "spec.support.server"
local socket = require "socket"

local M = {}

local ok_u, unistd = pcall(require, "posix.unistd")
local ok_w, wait = pcall(require, "posix.sys.wait")
local ok_s, signal = pcall(require, "posix.signal")
if ok_u and ok_w and ok_s then
  M.provider = "lua-posix"
  M.fork, M._exit = unistd.fork, unistd._exit
  M.wait = function(pid) return wait.wait(pid, wait.WNOHANG) end
  M.kill = function(pid) signal.kill(pid, signal.SIGKILL) end
else
  local shim = require "limitry_test_fork"
  M.provider = "shim"
  M.fork, M._exit, M.wait, M.kill = shim.fork, shim._exit, shim.wait, shim.kill
end

local function serialize(t)
  local out = { "return {" }
  for k, v in pairs(t) do
    local value = type(v) == "string" and string.format("%q", v) or tostring(v)
    out[#out + 1] = string.format("[%q] = %s,", k, value)
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n")
end

-- Forks; the child runs fn() (which returns a flat table of strings, numbers, booleans) and
-- exits with _exit(0), or _exit(1) if fn raised. Returns the table and the child's exit code.
function M.run(fn, seconds)
  local file = support.tmpdir("fork") .. "/result.lua"
  io.stdout:flush()
  io.stderr:flush()
  local pid = M.fork()
  if pid == 0 then
    local ok, res = pcall(fn)
    local f = io.open(file, "w")
    if f then
      f:write(serialize(ok and res or { error = tostring(res) }))
      f:close()
    end
    M._exit(ok and 0 or 1)
  end
  local deadline = socket.gettime() + (seconds or 15)
  local code
  while true do
    local r, state, status = M.wait(pid)
    if r and r ~= 0 and state ~= "running" then
      code = state == "exited" and status or -1
      break
    end
    if socket.gettime() > deadline then
      M.kill(pid)
      M.wait(pid)
      error("the child process did not finish within " .. (seconds or 15) .. " s (killed)")
    end
    socket.sleep(0.01)
  end
  local f = io.open(file)
  local res = f and assert((loadstring or load)(f:read("*a")))() or {}
  if f then f:close() end
  return res, code
end

return M
