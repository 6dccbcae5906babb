-- Talking to a gateway nginx from a spec: many raw HTTP requests at once over luasocket, each on its
-- own connection, so nginx sees them concurrently.
local socket = require "socket"

local M = {}

local function parse(raw)
  if not raw then return nil end
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  if not head then return nil end
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  local headers = {}
  for name, value in head:gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do headers[name:lower()] = value end
  if headers["transfer-encoding"] == "chunked" then
    local parts, rest = {}, body
    while true do
      local size, after = rest:match("^(%x+)\r\n(.*)$")
      size = size and tonumber(size, 16)
      if not size or size == 0 then break end
      parts[#parts + 1] = after:sub(1, size)
      rest = after:sub(size + 3)
    end
    body = table.concat(parts)
  end
  return { status = status, headers = headers, body = body }
end

-- Sends every request at once (one connection each), then reads every answer.
-- requests: { { path = "/x", headers = { name = value } }, ... }. Returns answers in the same
-- order: { status, headers, body, elapsed } or { error = "..." }. `timeout` bounds each read.
function M.burst(port, requests, timeout)
  local socks, started = {}, {}
  for i, req in ipairs(requests) do
    local s = socket.tcp()
    s:settimeout(timeout or 20)
    local ok, err = s:connect("127.0.0.1", port)
    if ok then
      local lines = { "GET " .. req.path .. " HTTP/1.1", "Host: gateway", "Connection: close" }
      for name, value in pairs(req.headers or {}) do lines[#lines + 1] = name .. ": " .. value end
      started[i] = socket.gettime()
      s:send(table.concat(lines, "\r\n") .. "\r\n\r\n")
      socks[i] = s
    else
      socks[i] = err
    end
  end
  local answers = {}
  for i, s in ipairs(socks) do
    if type(s) == "string" then
      answers[i] = { error = "connect: " .. s }
    else
      local raw, err, partial = s:receive("*a")
      s:close()
      answers[i] = parse(raw or partial) or { error = "read: " .. tostring(err) }
      answers[i].elapsed = socket.gettime() - started[i]
    end
  end
  return answers
end

-- One request; the answer as in burst.
function M.get(port, path, headers, timeout)
  return M.burst(port, { { path = path, headers = headers } }, timeout)[1]
end

-- Sends a request and returns a function that reads its answer later.
function M.begin(port, path, headers)
  local s = socket.tcp()
  s:settimeout(20)
  assert(s:connect("127.0.0.1", port))
  local lines = { "GET " .. path .. " HTTP/1.1", "Host: gateway", "Connection: close" }
  for name, value in pairs(headers or {}) do lines[#lines + 1] = name .. ": " .. value end
  assert(s:send(table.concat(lines, "\r\n") .. "\r\n\r\n"))
  return function()
    local raw, _, partial = s:receive("*a")
    s:close()
    return parse(raw or partial)
  end
end

-- Polls check() every 20 ms until it returns a true value or `seconds` pass; returns that value.
function M.eventually(seconds, check)
  local deadline = socket.gettime() + seconds
  repeat
    local v = check()
    if v then return v end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return check()
end

return M
