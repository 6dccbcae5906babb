-- OpenResty transport: one HTTP/1.1 exchange over ngx.socket.tcp, with nginx's keep-alive pool.
-- It moves bytes and nothing else: the request line and headers come from the client, and the
-- answer goes back as status, headers, body (or nil, kind, message) to limitry.protocol, exactly
-- like the libcurl handle's answer. Only the calling request's coroutine waits; the worker serves
-- everything else meanwhile.
local M = {}

local MAX_HEADER_BYTES = 65536
local HEADERS_TOO_LARGE = "response headers larger than the limit of 65536 bytes"
local NOT_HTTP = "the server's reply is not valid HTTP"

-- Where a base URL points, computed once per client.
-- { https, host, port, prefix, host_header, server_name }
function M.target(base_url)
  local scheme, authority, prefix = base_url:match("^(%a+)://([^/]+)(.*)$")
  scheme = scheme:lower()
  authority = authority:gsub("^.*@", "") -- userinfo is not ours to send: the key is the credential
  local host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  local https = scheme == "https"
  return {
    https = https,
    host = host,
    port = tonumber(port) or (https and 443 or 80),
    prefix = prefix,
    host_header = authority,
    -- SNI takes names, not addresses.
    server_name = not host:find("^[%d.]+$") and not host:find(":") and host or nil,
  }
end

-- The pool a connection goes back to. Host, port, TLS name, verification and the key (as a
-- digest: pool names are not secret) all take part, so no two of them ever share a connection.
function M.pool_name(target, verify, key)
  return table.concat({ "limitry", target.https and "https" or "http", target.host, target.port,
    target.server_name or "", verify and "verify" or "noverify", ngx.md5(key) }, "|")
end

-- The request's header lines after the request line, each ending in CRLF (the blank line that
-- ends the head is the caller's, after any body headers).
function M.head(target, header_lines)
  return "Host: " .. target.host_header .. "\r\n" .. table.concat(header_lines, "\r\n") .. "\r\n"
end

-- The whole request as pieces for one send: method, path, the head, and the body if any.
function M.message(conn, method, path, body)
  if body then
    return { method, " ", conn.target.prefix, path, " HTTP/1.1\r\n", conn.head,
      "Content-Type: application/json\r\nContent-Length: ", #body, "\r\n\r\n", body }
  end
  return { method, " ", conn.target.prefix, path, " HTTP/1.1\r\n", conn.head, "\r\n" }
end

local function now_ms() return ngx.now() * 1000 end

-- sock:receive(pattern) (receiveany with `any`) within what is left of the attempt's deadline, so
-- a server that drips bytes cannot stretch an attempt.
local function receive(sock, deadline, pattern, any)
  sock:settimeout(math.max(1, deadline - now_ms()))
  if any then return sock:receiveany(pattern) end
  return sock:receive(pattern)
end

local function transport_failure(err, timeout_ms, got_any)
  if err == "timeout" then
    return nil, "timeout", string.format("no complete response within %d ms", timeout_ms)
  end
  if got_any then return nil, "network", "connection broken before the response was complete" end
  return nil, "network", "server closed the connection without a response"
end

local function connect_failure(err)
  if err == "timeout" then return nil, "timeout", "timed out while connecting" end
  if err:find("no resolver defined", 1, true) then
    return nil, "network", "could not resolve the host name (nginx.conf needs a 'resolver' line)"
  end
  if err:find("could not be resolved", 1, true) then return nil, "network", "could not resolve the host name" end
  return nil, "network", "could not connect: " .. err
end

-- Reads the status line and the headers. Returns status, headers, http_minor or nil, kind, message.
local function read_head(sock, deadline, timeout_ms)
  while true do
    local line, err = receive(sock, deadline, "*l")
    if not line then return transport_failure(err, timeout_ms, false) end
    local minor, status = line:match("^HTTP/1%.([01]) (%d%d%d)")
    status = tonumber(status)
    if not status or status < 100 or status > 599 then return nil, "protocol", NOT_HTTP end
    local headers, size = {}, #line
    while true do
      line, err = receive(sock, deadline, "*l")
      if not line then return transport_failure(err, timeout_ms, true) end
      size = size + #line + 2
      if size > MAX_HEADER_BYTES then return nil, "too_large", HEADERS_TOO_LARGE end
      if line == "" then break end
      local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
      if name then
        name = name:lower()
        local old = headers[name]
        headers[name] = old and (old .. ", " .. value) or value
      end
    end
    if status >= 200 or status == 101 then return status, headers, minor end
    -- 1xx: an interim answer; the real one follows on the same connection.
  end
end

local function too_large(max_body)
  return nil, "too_large", string.format("response larger than the limit of %d bytes", max_body)
end

-- Reads the body as the headers describe it. Returns body, reusable or nil, kind, message.
local function read_body(sock, status, headers, deadline, timeout_ms, max_body)
  if status == 204 or status == 304 then return "", true end
  local te = headers["transfer-encoding"]
  if te then
    if not te:lower():find("chunked", 1, true) then return nil, "protocol", NOT_HTTP end
    local parts, total = {}, 0
    while true do
      local line, err = receive(sock, deadline, "*l")
      if not line then return transport_failure(err, timeout_ms, true) end
      local size = tonumber(line:match("^%s*(%x+)%s*[;]?"), 16)
      if not size or #line > 1024 then return nil, "protocol", NOT_HTTP end
      if size == 0 then break end
      total = total + size
      if total > max_body then return too_large(max_body) end
      local data
      data, err = receive(sock, deadline, size)
      if not data then return transport_failure(err, timeout_ms, true) end
      parts[#parts + 1] = data
      data, err = receive(sock, deadline, 2)
      if data ~= "\r\n" then
        if not data then return transport_failure(err, timeout_ms, true) end
        return nil, "protocol", NOT_HTTP
      end
    end
    local trailer_bytes = 0
    repeat -- trailers, up to the blank line
      local line, err = receive(sock, deadline, "*l")
      if not line then return transport_failure(err, timeout_ms, true) end
      trailer_bytes = trailer_bytes + #line
      if trailer_bytes > MAX_HEADER_BYTES then return nil, "too_large", HEADERS_TOO_LARGE end
    until line == ""
    return table.concat(parts), true
  end
  local length = headers["content-length"]
  if length then
    local n = tonumber(length:match("^%d+$"))
    if not n then return nil, "protocol", NOT_HTTP end
    if n > max_body then return too_large(max_body) end
    if n == 0 then return "", true end
    local data, err = receive(sock, deadline, n)
    if not data then return transport_failure(err, timeout_ms, true) end
    return data, true
  end
  -- Neither: the body runs to the end of the connection.
  local parts, total = {}, 0
  while true do
    local data, err = receive(sock, deadline, 65536, true)
    if not data then
      if err == "closed" then return table.concat(parts), false end
      return transport_failure(err, timeout_ms, true)
    end
    total = total + #data
    if total > max_body then return too_large(max_body) end
    parts[#parts + 1] = data
  end
end

local function keeps_alive(headers, minor)
  local conn = headers.connection
  conn = conn and conn:lower()
  if minor == "0" then return conn ~= nil and conn:find("keep-alive", 1, true) ~= nil end
  return not (conn and conn:find("close", 1, true))
end

-- One exchange on one connection. Returns status, headers, body, or nil, kind, message, plus
-- `stale` = true when a pooled connection failed before any byte of an answer (the server had
-- closed it while idle), which is worth one more try on another connection.
local function exchange(conn, request_line)
  local sock = ngx.socket.tcp()
  sock:settimeouts(conn.connect_timeout_ms, conn.timeout_ms, conn.timeout_ms)
  local ok, err = sock:connect(conn.target.host, conn.target.port, conn.pool_options)
  if not ok then return connect_failure(err) end
  local reused = sock:getreusedtimes() > 0
  if conn.target.https and not reused then
    -- pcall: resty.core's sslhandshake asserts (raises) when a handshake that finished at once
    -- failed verification; that is a NetworkError like any other failed handshake. Passing
    -- `false` for the session would skip that check and accept an unverified peer.
    local called
    called, ok, err = pcall(sock.sslhandshake, sock, nil, conn.target.server_name, conn.verify)
    if not called then ok, err = nil, "certificate verify failed" end
    if not ok then
      sock:close()
      if tostring(err):find("verif") or tostring(err):find("certificate") then
        return nil, "tls", "TLS certificate verification failed (trust its issuer with lua_ssl_trusted_certificate in nginx.conf)"
      end
      return nil, "tls", "TLS handshake failed"
    end
  end
  local deadline = now_ms() + conn.timeout_ms
  ok, err = sock:send(request_line)
  if not ok then
    sock:close()
    if reused and err ~= "timeout" then return nil, "network", "connection broken", nil, true end
    return transport_failure(err, conn.timeout_ms, false)
  end
  local status, headers, minor = read_head(sock, deadline, conn.timeout_ms)
  if not status then
    sock:close()
    -- headers, minor hold kind, message here
    local stale = reused and headers == "network" and minor == "server closed the connection without a response"
    return nil, headers, minor, nil, stale
  end
  local body, reusable, why = read_body(sock, status, headers, deadline, conn.timeout_ms, conn.max_body)
  if not body then
    sock:close()
    return nil, reusable, why -- kind, message
  end
  if reusable and keeps_alive(headers, minor) then
    sock:setkeepalive(conn.keepalive_ms, conn.pool_size)
  else
    sock:close()
  end
  return status, headers, body
end

-- The transport's one entry: `conn` is the client's cosocket settings (see M.settings),
-- `request_line` the whole request (a table of strings, sent as one).
function M.request(conn, request_line)
  local a, b, c, _, stale = exchange(conn, request_line)
  if stale then a, b, c = exchange(conn, request_line) end
  return a, b, c
end

return M
