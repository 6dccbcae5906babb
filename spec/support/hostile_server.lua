-- A raw-socket HTTP server that misbehaves on purpose, for spec/hostile_spec.lua.
--   lua hostile_server.lua PORTFILE [LIFETIME_SECONDS]
-- Listens on 127.0.0.1 on a free port (written to PORTFILE once it accepts), serves connections
-- concurrently from coroutines, and exits by itself after LIFETIME_SECONDS (default 300) or on
-- GET /_quit. The first path segment picks the behaviour: GET /<case>/v1/usage?... (see CASES).
-- A case name may carry a parameter after "=" (/long-line=status:1048576/v1/usage): CASES gets it.
-- GET /_hits/<case> and /_pushed/<case> answer how many requests a case served and how many
-- unsolicited replies it pushed onto idle connections, so the spec waits on facts, not sleeps.
-- GET /_close_idle/all shuts down every connection waiting for its next request (as a server that
-- drops idle connections does) and answers how many: a check that counts a connection's requests
-- then starts on new connections, whatever pool another check left them in.
-- Requests are read whole (headers, and a Content-Length body), so POSTs work as GETs do.
local socket = require "socket"
local unpack = table.unpack or unpack

local portfile, lifetime = arg[1], tonumber(arg[2] or 300)
local deadline = socket.gettime() + lifetime

local SUMMARY = '{"totalEvents":%d,"totalTokens":0,"totalInputTokens":0,"totalOutputTokens":0,"totalCostCents":0}'
local hits, pushed = {}, {}
local waiting = {} -- connections waiting for their next request line
local listener -- the listening socket (set below)

-- Scheduler: each connection is a coroutine that yields { read = sock } / { write = sock } /
-- { wake = time } and is resumed when that is ready.
local tasks = {}
local function spawn(fn, ...)
  local co = coroutine.create(fn)
  tasks[#tasks + 1] = { co = co, args = { ... }, wait = {} }
end

local function sleep(s) coroutine.yield { wake = socket.gettime() + s } end

local Conn = {}
Conn.__index = Conn

function Conn:line()
  local partial = ""
  while true do
    local l, err, part = self.sock:receive("*l", partial)
    if l then return l end
    if err ~= "timeout" then return nil end
    partial = part
    coroutine.yield { read = self.sock }
  end
end

-- Exactly n bytes (a request body), or nil once the peer is gone.
function Conn:bytes(n)
  local got = ""
  while #got < n do
    local data, err, part = self.sock:receive(n - #got)
    data = data or part
    got = got .. (data or "")
    if not data or (err and err ~= "timeout") then return nil end
    if #got < n then coroutine.yield { read = self.sock } end
  end
  return got
end

-- Sends all of s; false once the peer is gone.
function Conn:send(s)
  local i = 1
  while i <= #s do
    local last, err, partial = self.sock:send(s, i)
    if last then return true end
    if err ~= "timeout" then return false end
    i = partial + 1
    coroutine.yield { write = self.sock }
  end
  return true
end

local function http(status, body, extra)
  return "HTTP/1.1 " .. status .. "\r\nContent-Type: application/json\r\n" .. (extra or "")
    .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
end
local function ok(n) return http("200 OK", SUMMARY:format(n)) end

-- A successful answer of the right shape for what was asked (req: method, path, body, headers):
-- an event id, a batch's count, a "yes" decision, a new quota, else a summary whose totalEvents is n.
local function answer(req, n)
  local path = req.path:gsub("%?.*$", "")
  if req.method == "POST" and path:find("/events/batch$") then
    local _, count = (req.body or ""):gsub('"customerId"', "")
    return http("200 OK", ('{"count":%d}'):format(count))
  elseif req.method == "POST" and path:find("/events$") then
    return http("200 OK", ('{"id":"evt_%d"}'):format(n))
  elseif req.method == "POST" and path:find("/track$") then
    return http("200 OK", ('{"allowed":true,"id":"evt_%d","quotas":[],"rateLimits":[]}'):format(n))
  elseif req.method == "POST" and path:find("/check$") then
    return http("200 OK", '{"allowed":true,"quotas":[],"rateLimits":[]}')
  elseif req.method == "POST" and path:find("/quotas$") then
    return http("200 OK", ('{"id":"q_%d","name":"q"}'):format(n))
  elseif req.method == "DELETE" then
    return http("200 OK", '{"success":true}')
  end
  return ok(n)
end

-- Sends `total` bytes of `fill` after `prefix`, 64 KiB at a time, until the peer goes away.
local function flood(c, prefix, fill, total)
  if not c:send(prefix) then return false end
  local piece = string.rep(fill, 65536)
  local sent = 0
  while sent < total do
    local n = math.min(#piece, total - sent)
    if not c:send(n == #piece and piece or piece:sub(1, n)) then return false end
    sent = sent + n
  end
  return false
end

-- Closes the connection with a reset (no FIN), as a proxy that gave up does.
local function reset(c)
  c.sock:setoption("linger", { on = true, timeout = 0 })
  return false
end

-- A compression bomb: 64 MiB of zeros, gzip-compressed once at start-up (about 64 KiB) and
-- rewrapped as a zlib stream for Content-Encoding: deflate (the adler32 of n zeros is n % 65521 << 16 | 1).
local BOMB_SIZE = 64 * 1024 * 1024
local function make_bombs()
  local p = assert(io.popen("head -c " .. BOMB_SIZE .. " /dev/zero | gzip -c -n -1"))
  local gz = p:read("*a")
  p:close()
  assert(#gz > 18 and gz:byte(1) == 0x1f and gz:byte(2) == 0x8b and gz:byte(4) == 0, "gzip output")
  local raw = gz:sub(11, -9)
  local b = BOMB_SIZE % 65521
  local adler = string.char(math.floor(b / 256), b % 256, 0, 1)
  return gz, "\120\156" .. raw .. adler
end
local GZIP_BOMB, DEFLATE_BOMB = make_bombs()

-- Each case gets the connection and its request number (per case, from 1); returns true to keep
-- the connection open for more requests, false to close it.
local CASES = {}

CASES.ok = function(c, n, _, req) return c:send(answer(req, n)) end

-- A few bytes every 100 ms: the body, or the headers themselves, never end.
CASES.drip = function(c)
  c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[")
  local stop = socket.gettime() + 30
  while socket.gettime() < stop and c:send(" ") do sleep(0.1) end
  return false
end
CASES["drip-headers"] = function(c)
  c:send("HTTP/1.1 200 OK\r\nX-Slow: ")
  local stop = socket.gettime() + 30
  while socket.gettime() < stop and c:send("a") do sleep(0.1) end
  return false
end

-- Header lines without end (up to 8 MiB), or one header line of 1 MiB.
CASES["endless-headers"] = function(c)
  if not c:send("HTTP/1.1 200 OK\r\n") then return false end
  local pad = string.rep("h", 100)
  for i = 1, 80000 do
    if not c:send(("X-Pad-%d: %s\r\n"):format(i, pad)) then break end
  end
  return false
end
CASES["long-header"] = function(c, n)
  c:send("HTTP/1.1 200 OK\r\nX-Long: " .. string.rep("a", 1024 * 1024) .. "\r\n" .. ok(n):match("\r\n(.*)$"))
  return false
end

CASES["gzip-bomb"] = function(c)
  return c:send(http("200 OK", GZIP_BOMB, "Content-Encoding: gzip\r\n"))
end
CASES["deflate-bomb"] = function(c)
  return c:send(http("200 OK", DEFLATE_BOMB, "Content-Encoding: deflate\r\n"))
end

-- Content-Length larger than the body (then the connection closes), or smaller than it (the
-- rest stays on the wire; only the first request of the case lies).
CASES["cl-longer"] = function(c, n)
  local body = SUMMARY:format(n)
  c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. (#body + 1000) .. "\r\n\r\n" .. body)
  return false
end
CASES["cl-shorter"] = function(c, n)
  if n > 1 then return c:send(ok(n)) end
  local body = SUMMARY:format(n)
  return c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n" .. body)
end

-- Statuses outside what HTTP allows, and a storm of interim 1xx answers before (or instead of) one.
for _, s in ipairs { "000", "2000", "600", "99" } do
  CASES["status-" .. s] = function(c) c:send(http(s .. " Odd", '{"error":"odd status"}')) return false end
end
CASES["1xx-storm"] = function(c, n)
  if not c:send(string.rep("HTTP/1.1 100 Continue\r\n\r\n", 1000)) then return false end
  return c:send(ok(n))
end
CASES["1xx-endless"] = function(c)
  local stop = socket.gettime() + 30
  while socket.gettime() < stop and c:send(string.rep("HTTP/1.1 102 Processing\r\n\r\n", 100)) do sleep(0.01) end
  return false
end

CASES.redirect = function(c)
  return c:send(http("302 Found", '{"error":"moved"}', "Location: /redirected/v1/usage\r\n"))
end
CASES.redirected = CASES.ok

-- Replies that are not HTTP/1.x at all.
CASES.garbage = function(c) c:send("\0\1\2\3 this is not HTTP \255\254\r\n\r\n") return false end
CASES.http09 = function(c, n) c:send(SUMMARY:format(n)) return false end

-- After the first answer, the server speaks on the idle keep-alive connection: a 408 (then
-- closing it, as nginx and load balancers do, or keeping it open), or a whole stray answer.
local function push_after_first(case, bytes, keep)
  CASES[case] = function(c, n)
    if not c:send(ok(n)) then return false end
    if n > 1 then return true end
    sleep(0.05)
    local sent = c:send(bytes)
    pushed[case] = (pushed[case] or 0) + 1
    return sent and keep
  end
end
push_after_first("idle408", "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false)
push_after_first("idle408-open", "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n", true)
push_after_first("stray", ok(666), true)

-- Every second request of the case is read and its connection closed unanswered, as a server
-- does that drops a keep-alive connection just as a request arrives: libcurl sends the request
-- again on a new connection. An answer's totalEvents is the month of the startDate asked for,
-- so the spec sees which URL went out again.
local function drop_every_second(case)
  CASES[case] = function(c, n, target)
    if n % 2 == 0 then return false end
    return c:send(ok(tonumber(target:match("startDate=%d+%-(%d+)")) or 0))
  end
end
drop_every_second("drop-second")
drop_every_second("drop-second-async")
drop_every_second("drop-second-core")

-- Malformed chunk-size lines (libcurl: not HTTP); the first chunk would be a whole summary.
for name, size in pairs { zz = "zz", negative = "-5", empty = "", space = " ", ["0x"] = "0x5", huge = "ffffffffffffffffff" } do
  CASES["chunk-" .. name] = function(c, n)
    local body = SUMMARY:format(n)
    c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" .. size .. "\r\n"
      .. body .. "\r\n0\r\n\r\n")
    return false
  end
end

-- One line that never ends (param "where:bytes"): the status line, a header line, a chunk-size
-- line (hex digits, or a chunk extension) or a trailer line, `bytes` long and without a newline.
local LONG_PREFIX = {
  status = "HTTP/1.1 200 OK",
  header = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Long: ",
  chunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
  ["chunk-ext"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=",
  trailer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: ",
}
CASES["long-line"] = function(c, _, _, req)
  local where, bytes = req.param:match("^([%w-]+):(%d+)$")
  return flood(c, assert(LONG_PREFIX[where], "long-line: where"), where == "chunk" and "f" or "a", tonumber(bytes))
end

-- A Content-Length body of 2,000 bytes dripped one byte every `param` ms (default 2).
CASES["drip-fast"] = function(c, _, _, req)
  local gap = (tonumber(req.param) or 2) / 1000
  c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n")
  for _ = 1, 2000 do
    if not c:send(" ") then return false end
    sleep(gap)
  end
  return false
end
-- Interim 100 Continue answers as fast as the connection takes them, for up to 30 s.
CASES["continue-flood"] = function(c)
  local burst = string.rep("HTTP/1.1 100 Continue\r\n\r\n", 2000)
  local stop = socket.gettime() + 30
  while socket.gettime() < stop and c:send(burst) do end
  return false
end

-- Framing that must not be taken at face value.
CASES["cl-duplicate"] = function(c, n)
  local body = SUMMARY:format(n)
  c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\nContent-Length: " .. #body
    .. "\r\n\r\n" .. body)
  return false
end
CASES["cl-and-chunked"] = function(c, n)
  local body = SUMMARY:format(n)
  return c:send(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n")
    :format(#body, body))
end
CASES["cl-2gib"] = function(c, n)
  c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n" .. SUMMARY:format(n))
  return false
end
-- A 204 carrying a body that is a whole second answer (666): it must never answer the next call.
CASES["204-body"] = function(c, n)
  if n % 2 == 1 then return c:send("HTTP/1.1 204 No Content\r\n\r\n" .. ok(666)) end
  return c:send(ok(n))
end
CASES["101"] = function(c)
  c:send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" .. ok(666))
  return false
end
-- An answer followed at once by a second, unasked one (666) on the same connection.
CASES.smuggled = function(c, n)
  return c:send(ok(n) .. ok(666))
end

-- The key sent back: in a limit decision's error text, and (plain and \u-escaped) in a summary.
CASES["echo-key"] = function(c, n, _, req)
  local key = (req.headers.authorization or ""):match("^Bearer (.*)$") or ""
  local escaped = key:gsub(".", function(ch) return ("\\u%04x"):format(ch:byte()) end)
  if req.path:find("/track$") then
    return c:send(http("429 Too Many Requests", ('{"allowed":false,"error":"no for Bearer %s","quotas":[{"name":"%s"}],"%s":1}')
      :format(key, escaped, key), "Retry-After: 7\r\n"))
  end
  return c:send(http("200 OK", ('{"totalEvents":%d,"totalTokens":0,"totalInputTokens":0,"totalOutputTokens":0,'
    .. '"totalCostCents":0,"note":"echo %s","escaped":"%s","list":["%s"]}'):format(n, key, escaped, key)))
end

-- The request body sent back as a string field of an event id answer.
CASES["echo-body"] = function(c, n, _, req)
  local text = (req.body or ""):gsub('[\\"]', "\\%0")
  return c:send(http("200 OK", ('{"id":"evt_%d","echo":"%s"}'):format(n, text)))
end

-- Requests forwarded and then lost: the connection is reset once the request was read, before
-- any answer. "reset-second": the second request of each connection (the first, a warm-up, is
-- answered); "reset-post": every POST.
CASES["reset-second"] = function(c, n, _, req)
  if c.requests == 2 then return reset(c) end
  return c:send(answer(req, n))
end
CASES["reset-post"] = function(c, n, _, req)
  if req.method == "POST" then return reset(c) end
  return c:send(answer(req, n))
end
-- As a server killed mid-request (kill -9): the request is read, then the server exits at once,
-- so a new connection is refused. For a server of its own (the spec starts one for this case).
CASES.die = function(c, n, _, req)
  if c.requests == 1 and n == 1 then return c:send(answer(req, n)) end
  io.stdout:write("die: ", req.method, " ", req.path, "\n")
  io.stdout:flush()
  listener:close() -- first: a new connection is refused from now on, as when the process is gone
  reset(c)
  c.sock:close()
  os.exit(0)
end

local running = true

local function serve(sock)
  sock:settimeout(0)
  local c = setmetatable({ sock = sock, requests = 0 }, Conn)
  while running do
    waiting[c] = true
    local line = c:line()
    waiting[c] = nil
    if not line then break end
    local method, target = line:match("^(%u+) (%S+) HTTP/1%.%d$")
    local headers = {}
    repeat
      local h = c:line()
      if not h then target = nil break end
      local name, value = h:match("^([^:]+):%s*(.-)%s*$")
      if name then headers[name:lower()] = value end
    until h == ""
    if not target then break end
    local body
    if tonumber(headers["content-length"]) then
      body = c:bytes(tonumber(headers["content-length"]))
      if not body then break end
    end
    c.requests = c.requests + 1
    local case, rest = target:match("^/([^/?]+)(.*)$")
    local param
    if case then case, param = case:match("^([^=]*)=?(.*)$") end
    local req = { method = method, path = rest, headers = headers, body = body, param = param }
    local keep
    if case == "_quit" then
      running = false
      c:send(http("200 OK", "{}"))
      keep = false
    elseif case == "_close_idle" then
      local n = 0
      for other in pairs(waiting) do
        other.sock:shutdown("both")
        n = n + 1
      end
      keep = c:send(http("200 OK", tostring(n)))
    elseif case == "_hits" or case == "_pushed" then
      local count = (case == "_hits" and hits or pushed)[rest:sub(2)] or 0
      keep = c:send(http("200 OK", tostring(count)))
    elseif case and CASES[case] then
      hits[case] = (hits[case] or 0) + 1
      keep = CASES[case](c, hits[case], rest, req)
    else
      keep = c:send(http("404 Not Found", '{"error":"no such case"}'))
    end
    if not keep then break end
  end
  sock:close()
end

local server = assert(socket.bind("127.0.0.1", 0))
listener = server
server:settimeout(0)
do
  local _, port = server:getsockname()
  local tmp = portfile .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(port)
  f:close()
  assert(os.rename(tmp, portfile))
end

while running and socket.gettime() < deadline do
  local now = socket.gettime()
  local reads, writes, wake = { server }, {}, now + 0.5
  for _, t in ipairs(tasks) do
    if t.wait.read then reads[#reads + 1] = t.wait.read
    elseif t.wait.write then writes[#writes + 1] = t.wait.write
    elseif t.wait.wake and t.wait.wake < wake then wake = t.wait.wake end
  end
  local r, w = socket.select(reads, writes, math.max(0, wake - now))
  local client = r[server] and server:accept()
  if client then spawn(serve, client) end
  now = socket.gettime()
  local alive = {}
  for _, t in ipairs(tasks) do
    local ready = t.args ~= nil or (t.wait.read and r[t.wait.read]) or (t.wait.write and w[t.wait.write])
      or (t.wait.wake and t.wait.wake <= now)
    if ready then
      local okr, what = coroutine.resume(t.co, unpack(t.args or {}))
      t.args = nil
      if not okr then io.stderr:write("hostile server: ", tostring(what), "\n") end
      t.wait = type(what) == "table" and what or {}
    end
    if coroutine.status(t.co) ~= "dead" then alive[#alive + 1] = t end
  end
  tasks = alive
end
server:close()
