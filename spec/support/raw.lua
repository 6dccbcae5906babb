-- Starts spec/support/raw_server.lua as a separate process (the client under test blocks its own
-- process) and talks to it through files in a fresh folder. Every wait is bounded.
local support = require "spec.support.server"
local socket = require "socket"

local M = {}

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function wait_for(path, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    local s = read(path)
    if s and s ~= "" then return s end
    socket.sleep(0.01)
  end
  error("raw server: " .. path .. " did not appear within " .. seconds .. " s")
end

-- mode: "stale_bytes", "stale_408" or "canned" (then reply: the bytes sent to every request)
function M.start(mode, reply)
  local dir = support.tmpdir("raw")
  if reply then
    local f = assert(io.open(dir .. "/reply", "wb"))
    f:write(reply)
    f:close()
  end
  assert(os.execute(("lua5.4 spec/support/raw_server.lua '%s' %s >'%s/log' 2>&1 &"):format(dir, mode, dir)))
  local port = tonumber(wait_for(dir .. "/port", 5))
  return { dir = dir, port = port, base_url = "http://127.0.0.1:" .. port .. "/v1" }
end

-- Lets the server push its unasked bytes and returns once they have been sent.
function M.push(s)
  local f = assert(io.open(s.dir .. "/go", "wb"))
  f:close()
  wait_for(s.dir .. "/pushed", 5)
end

function M.connections(s) return tonumber(read(s.dir .. "/conns") or "0") end

function M.stop(s)
  if not s then return end
  local f = io.open(s.dir .. "/stop", "wb")
  if f then f:close() end
end

return M
