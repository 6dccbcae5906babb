-- The cosocket transport's reader (limitry.transport.cosocket): one HTTP/1.1 answer from an nginx
-- cosocket, by the attempt's deadline. Every read is a receiveany, which returns as soon as any
-- bytes arrive, with what is left of the attempt's time as its timeout: so no server, however it
-- drips or floods, keeps an attempt past its deadline, and nothing is buffered past the limit of
-- what is being read (a line, a chunk, the body). The limits are the libcurl transport's
-- (core.limits, src/core.h): one answer's status line and headers (and a chunked body's
-- trailers), all the heads of one attempt, interim 1xx answers included, and the hex digits of a
-- chunk size.
--   reader.new(sock, deadline_ms, timeout_ms) -> r
--   reader.head(r)                   -> status, headers, http_minor | nil, kind, message
--   reader.body(r, status, headers, max_body) -> body, reusable | nil, kind, message
--   reader.failure(err, timeout_ms, got_any) -> nil, kind, message (a failed read or write)
--   reader.drained(r)                whether nothing was read past the answer
local limits = require("limitry.core").limits

local M = {}

local MAX_HEADER_BYTES = limits.header_bytes
local MAX_ALL_HEADER_BYTES = limits.all_header_bytes
local MAX_CHUNK_HEX = limits.chunk_hex_digits
local HEADERS_TOO_LARGE = "response headers larger than the limit of " .. MAX_HEADER_BYTES .. " bytes"
local ALL_HEADERS_TOO_LARGE = "response headers larger than the limit of " .. MAX_ALL_HEADER_BYTES
  .. " bytes (interim answers included)"
local NOT_HTTP = "the server's reply is not valid HTTP"
-- Asked of receiveany at most: nginx hands back at most its lua_socket_buffer_size (4 KiB by
-- default) a read, so this only bounds what one read may add to the reader's buffer.
local READ_SIZE = 65536

local find, sub, byte, concat, ceil, min = string.find, string.sub, string.byte, table.concat, math.ceil, math.min

local function now_ms() return ngx.now() * 1000 end

-- The reader of one attempt's answer: { sock, buf (bytes read and not yet used, from pos),
-- pos, deadline (ms, ngx.now's clock), timeout_ms, reads }.
function M.new(sock, deadline, timeout_ms)
  return { sock = sock, buf = "", pos = 1, deadline = deadline, timeout_ms = timeout_ms, reads = 0 }
end

-- Reads at most `max` more bytes into r.buf. nil, "timeout" past the deadline, or nil, err.
local function more(r, max)
  local left = r.deadline - now_ms()
  if left <= 0 then return nil, "timeout" end
  local sock = r.sock
  sock:settimeout(ceil(left)) -- whole ms: 0 would mean "the default" (60 s) to nginx
  local data, err = sock:receiveany(max)
  if not data then return nil, err end
  local reads = r.reads + 1
  r.reads = reads
  -- A read that finds bytes waiting does not yield, and ngx.now() moves only when the worker
  -- does: a server that floods would keep the clock still.
  if reads % 16 == 0 then ngx.update_time() end
  local pos = r.pos
  if pos > #r.buf then
    r.buf = data
  else
    r.buf = sub(r.buf, pos) .. data
  end
  r.pos = 1
  return true
end

-- The next line, without its LF (and a CR before it), or nil, err ("too_large" when no LF comes
-- within `cap` bytes: no more than cap + 1 bytes of the line are ever read).
local function line(r, cap)
  while true do
    local buf, pos = r.buf, r.pos
    local lf = find(buf, "\n", pos, true)
    if lf then
      if lf - pos > cap then return nil, "too_large" end
      r.pos = lf + 1
      if lf > pos and byte(buf, lf - 1) == 13 then lf = lf - 1 end
      return sub(buf, pos, lf - 1)
    end
    local pending = #buf - pos + 1
    if pending > cap then return nil, "too_large" end
    local ok, err = more(r, cap + 1 - pending)
    if not ok then return nil, err end
  end
end

-- Drops everything up to and including the next LF, keeping nothing of it (a chunk extension,
-- which libcurl skips the same way), or nil, err.
local function skip_line(r)
  while true do
    local lf = find(r.buf, "\n", r.pos, true)
    if lf then
      r.pos = lf + 1
      return true
    end
    r.buf, r.pos = "", 1
    local ok, err = more(r, READ_SIZE)
    if not ok then return nil, err end
  end
end

-- Exactly n bytes as a string, or nil, err.
local function take(r, n)
  local buf, pos = r.buf, r.pos
  local have = #buf - pos + 1
  if have >= n then
    r.pos = pos + n
    return sub(buf, pos, pos + n - 1)
  end
  local parts = { sub(buf, pos) }
  r.buf, r.pos = "", 1
  n = n - have
  while n > 0 do
    local ok, err = more(r, min(n, READ_SIZE)) -- never past what is asked: the rest is the next answer's
    if not ok then return nil, err end
    parts[#parts + 1] = r.buf
    n = n - #r.buf
    r.buf = ""
  end
  return concat(parts)
end

function M.failure(err, timeout_ms, got_any)
  if err == "timeout" then
    return nil, "timeout", string.format("no complete response within %d ms", timeout_ms)
  end
  if got_any then return nil, "network", "connection broken before the response was complete" end
  return nil, "network", "server closed the connection without a response"
end

-- A failed read as nil, kind, message. got_any: bytes of the answer had come.
local function read_failure(r, err, got_any)
  if err == "too_large" then return nil, "too_large", HEADERS_TOO_LARGE end
  if err == "protocol" then return nil, "protocol", NOT_HTTP end
  return M.failure(err, r.timeout_ms, got_any)
end

-- Whether what r holds so far can start an answer ("HTTP/"): garbage or an HTTP/0.9 body is not
-- HTTP as soon as its first bytes are there, not once 64 KiB or the connection's end have come.
local function may_be_http(r)
  local start = sub(r.buf, r.pos, r.pos + 4)
  return start == sub("HTTP/", 1, #start)
end

-- Reads the status line and the headers. Returns status, headers, http_minor or nil, kind, message.
function M.head(r)
  local all = 0 -- bytes of every head so far, interim answers included
  while true do
    if r.pos > #r.buf then
      local ok, err = more(r, READ_SIZE)
      if not ok then return read_failure(r, err, all > 0) end
    end
    if not may_be_http(r) then return nil, "protocol", NOT_HTTP end
    local l, err = line(r, MAX_HEADER_BYTES)
    if not l then return read_failure(r, err, true) end
    -- Three digits, then a space or the end (libcurl reads any three: 600 is an answer too).
    local minor, status, after = l:match("^HTTP/1%.([01]) (%d%d%d)(.?)")
    status = tonumber(status)
    if not status or status < 100 or (after ~= "" and after ~= " ") then return nil, "protocol", NOT_HTTP end
    local headers, size, last = {}, #l + 2, nil
    while true do
      l, err = line(r, MAX_HEADER_BYTES - size)
      if not l then return read_failure(r, err, true) end
      size = size + #l + 2
      if l == "" then break end
      local name, value = l:match("^([^:%s]+):%s*(.-)%s*$")
      if name then
        name = name:lower()
        local old = headers[name]
        headers[name] = old and (old .. ", " .. value) or value
        last = name
      elseif l:find("^[ \t]") and last then -- an obsolete folded line: more of the last value
        headers[last] = headers[last] .. " " .. l:match("^%s*(.-)%s*$")
      elseif not l:find(":", 1, true) then -- libcurl refuses a header line without a colon too
        return nil, "protocol", NOT_HTTP
      end
    end
    all = all + size
    if all > MAX_ALL_HEADER_BYTES then return nil, "too_large", ALL_HEADERS_TOO_LARGE end
    if status >= 200 or status == 101 then return status, headers, minor end
    -- 1xx: an interim answer; the real one follows on the same connection.
  end
end

local function too_large(max_body)
  return nil, "too_large", string.format("response larger than the limit of %d bytes", max_body)
end

-- A chunk's size line: 1 to 16 hex digits at its start (anything after them, up to the LF, is
-- skipped unread, as libcurl does). Returns the size or nil, err.
local function chunk_size(r)
  while true do
    local buf, pos = r.buf, r.pos
    local stop = find(buf, "[^%x]", pos)
    if stop then
      local digits = stop - pos
      if digits == 0 or digits > MAX_CHUNK_HEX then return nil, "protocol" end
      local size = tonumber(sub(buf, pos, stop - 1), 16)
      r.pos = stop
      local ok, err = skip_line(r)
      if not ok then return nil, err end
      return size
    end
    if #buf - pos + 1 > MAX_CHUNK_HEX then return nil, "protocol" end
    local ok, err = more(r, READ_SIZE)
    if not ok then return nil, err end
  end
end

-- The CRLF after a chunk's data: CRs, then LF (libcurl's reading). true or nil, err.
local function chunk_end(r)
  while true do
    local b = byte(r.buf, r.pos)
    if b == 10 then
      r.pos = r.pos + 1
      return true
    elseif b == 13 then
      r.pos = r.pos + 1
    elseif b then
      return nil, "protocol"
    else
      local ok, err = more(r, READ_SIZE)
      if not ok then return nil, err end
    end
  end
end

-- A chunked body, trailers included. Returns the body or nil, kind, message.
local function read_chunked(r, max_body)
  local parts, total = {}, 0
  while true do
    local size, err = chunk_size(r)
    if not size then return read_failure(r, err, true) end
    if size == 0 then break end
    total = total + size
    if total > max_body then return too_large(max_body) end
    local data
    data, err = take(r, size)
    if not data then return read_failure(r, err, true) end
    parts[#parts + 1] = data
    local ok
    ok, err = chunk_end(r)
    if not ok then return read_failure(r, err, true) end
  end
  local trailer_bytes = 0
  while true do -- trailers, up to the blank line, within the headers' limit
    local l, err = line(r, MAX_HEADER_BYTES - trailer_bytes)
    if not l then return read_failure(r, err, true) end
    if l == "" then break end
    -- a header line, as libcurl requires (it refuses one without a colon)
    if not l:find(":", 1, true) and not l:find("^[ \t]") then return nil, "protocol", NOT_HTTP end
    trailer_bytes = trailer_bytes + #l + 2
  end
  return concat(parts)
end

-- Reads the body as the headers describe it. Returns body, reusable or nil, kind, message.
function M.body(r, status, headers, max_body)
  if status == 204 or status == 304 then return "", true end
  local te = headers["transfer-encoding"]
  if te then
    if not te:lower():find("chunked", 1, true) then return nil, "protocol", NOT_HTTP end
    local body, kind, message = read_chunked(r, max_body)
    if not body then return nil, kind, message end
    -- With a Content-Length beside it, the answer may be a smuggling attempt: read by the
    -- chunks (RFC 9112, 6.3), and the connection is not used again.
    return body, headers["content-length"] == nil
  end
  local length = headers["content-length"]
  if length then
    local n = tonumber(length:match("^%d+$"))
    if not n then return nil, "protocol", NOT_HTTP end
    if n > max_body then return too_large(max_body) end
    if n == 0 then return "", true end
    local data, err = take(r, n)
    if not data then return read_failure(r, err, true) end
    return data, true
  end
  -- Neither: the body runs to the end of the connection.
  local parts, total = { sub(r.buf, r.pos) }, #r.buf - r.pos + 1
  r.buf, r.pos = "", 1
  if total > max_body then return too_large(max_body) end
  while true do
    local ok, err = more(r, min(READ_SIZE, max_body - total + 1))
    if not ok then
      if err == "closed" then return concat(parts), false end
      return read_failure(r, err, true)
    end
    total = total + #r.buf
    if total > max_body then return too_large(max_body) end
    parts[#parts + 1] = r.buf
    r.buf = ""
  end
end

-- Whether the server keeps the connection open after this answer.
function M.keeps_alive(headers, minor)
  local conn = headers.connection
  conn = conn and conn:lower()
  if minor == "0" then return conn ~= nil and conn:find("keep-alive", 1, true) ~= nil end
  return not (conn and conn:find("close", 1, true))
end

-- Whether every byte read was part of the answer (bytes after it answer nothing: the connection is
-- not used again).
function M.drained(r) return r.pos > #r.buf end

return M
