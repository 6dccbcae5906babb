-- A tiny HTTP server on raw luasocket sockets, run as its own process by spec/support/raw.lua,
-- for replies the real local server cannot give (bytes pushed onto an idle connection, broken
-- status lines, huge headers). Usage: lua raw_server.lua DIR MODE
--   stale_bytes  first connection: one valid answer (totalEvents = 1), then, once DIR/go exists,
--                a second complete answer (totalEvents = 666) pushed unasked onto the idle
--                connection, which stays open; every later request on any connection: totalEvents = 2
--   stale_408    the same, but what is pushed is "408 Request Timeout", then the connection closes
--   canned       every request gets the bytes of DIR/reply, then the connection closes
-- It writes its port to DIR/port, counts accepted connections in DIR/conns, and exits by itself
-- after 20 s or once DIR/stop exists.
local socket = require "socket"

local dir, mode = arg[1], arg[2]
local function exists(name)
  local f = io.open(dir .. "/" .. name, "rb")
  if f then f:close() end
  return f ~= nil
end
local function write(name, text)
  local f = assert(io.open(dir .. "/" .. name .. ".tmp", "wb"))
  f:write(text)
  f:close()
  assert(os.rename(dir .. "/" .. name .. ".tmp", dir .. "/" .. name))
end

local function summary(n)
  local body = string.format('{"totalEvents":%d,"totalTokens":0,"totalInputTokens":0,"totalOutputTokens":0,"totalCostCents":0}', n)
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end

local server = assert(socket.bind("127.0.0.1", 0))
server:settimeout(0)
local _, port = server:getsockname()
write("port", tostring(port))

local deadline = socket.gettime() + 20
local clients = {}      -- socket -> { buf = "", first = bool }
local first_conn, pushed
local conns = 0
local canned = mode == "canned" and assert(io.open(dir .. "/reply", "rb")):read("*a")

local function drop(c)
  clients[c] = nil
  c:close()
end

while socket.gettime() < deadline and not exists("stop") do
  local watch = { server }
  for c in pairs(clients) do watch[#watch + 1] = c end
  local ready = socket.select(watch, nil, 0.02)
  for _, s in ipairs(ready) do
    if s == server then
      local c = server:accept()
      if c then
        c:settimeout(0)
        conns = conns + 1
        write("conns", tostring(conns))
        clients[c] = { buf = "", first = (conns == 1) }
        if conns == 1 then first_conn = c end
      end
    else
      local st = clients[s]
      local data, err, partial = s:receive(8192)
      data = data or partial
      if data and #data > 0 then st.buf = st.buf .. data end
      while st.buf:find("\r\n\r\n", 1, true) do
        local _, e = st.buf:find("\r\n\r\n", 1, true)
        st.buf = st.buf:sub(e + 1)
        if canned then
          s:send(canned)
          drop(s)
          break
        elseif st.first and not pushed then
          s:send(summary(1))
        elseif not st.first then
          s:send(summary(2))
        end -- a request on the first connection after the push: the pushed bytes were its answer
      end
      if err == "closed" and clients[s] then drop(s) end
    end
  end
  if not canned and first_conn and not pushed and exists("go") then
    pushed = true
    if mode == "stale_408" then
      first_conn:send("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
      drop(first_conn)
    else
      first_conn:send(summary(666))
    end
    write("pushed", "1")
  end
end
for c in pairs(clients) do c:close() end
server:close()
