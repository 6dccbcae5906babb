-- The cosocket transport (OpenResty): one HTTP/1.1 exchange per attempt over ngx.socket.tcp, with
-- nginx's keep-alive pools. Only the calling request's coroutine waits; the worker serves
-- everything else meanwhile. The answer is read by limitry.transport.cosocket_reader, by the
-- attempt's deadline and within the same limits as libcurl's.
-- Per client (state.cosocket): the settings below, made on the first call in nginx and again when
-- a client field they come from has changed (compared at each call).
-- Refused, naming the fix: `proxy` (cosockets do not go through HTTP proxies) and `ca_file` /
-- `ca_path` (nginx's lua_ssl_trusted_certificate names the CAs).
--
-- Connections: a pool is named after scheme, host, port, TLS name and verification, not the key
-- (every request carries its own Authorization header), so every client of one worker that talks
-- to the same Limitry shares it. A worker keeps at most `pool_size` idle connections across all
-- its pools and clients (the largest pool_size of the clients that put one back): one over the
-- bound is closed instead of pooled. The count is kept here, per worker: each connection put back,
-- with the time it expires (keepalive_timeout); one taken again is forgotten; and a connect that
-- found its pool empty forgets that pool's count (the server had closed them while idle).
local reader = require "limitry.transport.cosocket_reader"
local async = require "limitry.async"

local M = { name = "cosocket" }

M.KINDS = {
  timeout = { "TimeoutError", true }, network = { "NetworkError", true }, protocol = { "NetworkError", true },
  tls = { "NetworkError" }, too_large = { "DecodeError" },
}

local ceil, min = math.ceil, math.min
local function now_ms() return ngx.now() * 1000 end
local function ms(seconds) return math.max(1, math.ceil(seconds * 1000)) end

-- Where a base URL points: { https, host, port, prefix, host_header, server_name }.
local function target(base_url)
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

-- The idle connections this worker keeps: pool name -> the times (ngx.now) their keep-alive ends.
local idle, idle_total = {}, 0

local function forget_expired(now)
  idle_total = 0
  for name, list in pairs(idle) do
    local kept = {}
    for _, expires in ipairs(list) do
      if expires > now then kept[#kept + 1] = expires end
    end
    idle[name] = kept[1] and kept or nil
    idle_total = idle_total + #kept
  end
end

-- A connection of pool `name` came from the pool (reused), or the pool had none left.
local function taken(name, reused)
  local list = idle[name]
  if not list then return end
  if reused then
    if list[1] then
      list[#list] = nil
      idle_total = idle_total - 1
    end
  else
    idle_total = idle_total - #list
    idle[name] = nil
  end
end

-- Puts sock back into conn's pool, unless this worker already keeps conn.pool_size idle ones.
local function keep(sock, conn)
  local now = ngx.now()
  if idle_total >= conn.pool_size then forget_expired(now) end
  if idle_total >= conn.pool_size or not sock:setkeepalive(conn.keepalive_ms, conn.pool_size) then
    return sock:close()
  end
  local list = idle[conn.pool] or {}
  idle[conn.pool] = list
  list[#list + 1] = now + conn.keepalive_timeout
  idle_total = idle_total + 1
end

-- The number of idle connections this worker counts (for specs and operators).
function M.idle() return idle_total end

-- The client's settings; level: error()'s, at the caller of the public method.
local function settings(state, level)
  local c = state.client
  local conn = state.cosocket
  if conn and conn.timeout == c.timeout and conn.connect_timeout == c.connect_timeout
    and conn.verify == c.ssl_verify and conn.max_body == c.max_response_size
    and conn.keepalive_timeout == c.keepalive_timeout and conn.pool_size == c.pool_size
    and conn.proxy == c.proxy and conn.ca_file == c.ca_file and conn.ca_path == c.ca_path then
    return conn
  end
  if c.proxy and c.proxy ~= "" then
    error("limitry: the cosocket transport does not go through a proxy (option proxy); "
      .. "use openresty = 'worker_thread' to call Limitry through one", level + 1)
  end
  if c.ca_file or c.ca_path then
    error("limitry: ca_file/ca_path do not reach nginx's cosockets: name the CA in nginx.conf with "
      .. "lua_ssl_trusted_certificate, or use openresty = 'worker_thread'", level + 1)
  end
  local t = target(c.base_url)
  local lines = { state.user_agent("ngx_lua/" .. tostring(ngx.config and ngx.config.ngx_lua_version)) }
  for i, line in ipairs(state.header_lines) do lines[i + 1] = line end
  local pool = table.concat({ "limitry", t.https and "https" or "http", t.host, t.port, t.server_name or "",
    c.ssl_verify and "verify" or "noverify" }, "|")
  conn = {
    target = t,
    -- the request's header lines after the request line, each ending in CRLF (the blank line that
    -- ends the head comes after any body headers)
    head = "Host: " .. t.host_header .. "\r\n" .. table.concat(lines, "\r\n") .. "\r\n",
    timeout_ms = ms(c.timeout), connect_timeout_ms = ms(c.connect_timeout), keepalive_ms = ms(c.keepalive_timeout),
    pool = pool, pool_options = { pool = pool, pool_size = c.pool_size },
    -- calls that must not be sent twice: a pool nothing is ever put back into, so always a new connection
    fresh_options = { pool = pool .. "|fresh" },
    -- the fields these came from, to notice a change
    timeout = c.timeout, connect_timeout = c.connect_timeout, verify = c.ssl_verify, max_body = c.max_response_size,
    keepalive_timeout = c.keepalive_timeout, pool_size = c.pool_size, proxy = c.proxy, ca_file = c.ca_file,
    ca_path = c.ca_path,
  }
  state.cosocket = conn
  return conn
end

local function connect_failure(err)
  if err == "timeout" then return nil, "timeout", "timed out while connecting" end
  if err:find("no resolver defined", 1, true) then
    return nil, "network", "could not resolve the host name (nginx.conf needs a 'resolver' line)"
  end
  if err:find("could not be resolved", 1, true) then return nil, "network", "could not resolve the host name" end
  return nil, "network", "could not connect: " .. err
end

-- A connected socket (TLS done for https), whether it was reused, or nil, kind, message.
local function connect(conn, fresh)
  local sock = ngx.socket.tcp()
  sock:settimeouts(min(conn.connect_timeout_ms, conn.timeout_ms), conn.timeout_ms, conn.timeout_ms)
  local ok, err = sock:connect(conn.target.host, conn.target.port, fresh and conn.fresh_options or conn.pool_options)
  if not ok then return connect_failure(err) end
  local reused = sock:getreusedtimes() > 0
  if not fresh then taken(conn.pool, reused) end
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
  return sock, reused
end

-- One exchange on one connection. Returns status, headers, body, or nil, kind, message, nil,
-- sent (false when no byte of the request was written), plus `stale` = true when a pooled
-- connection failed before any byte of an answer (the server had closed it while idle), which
-- is worth one more try on another connection for a request that may be sent twice.
-- `fresh`: a new connection, never a pooled one, closed afterwards.
local function exchange(conn, request, fresh)
  local deadline = now_ms() + conn.timeout_ms -- the attempt's: connect included, as libcurl's
  local sock, reused, message = connect(conn, fresh)
  if not sock then return nil, reused, message, nil, false end
  local left = deadline - now_ms()
  if left <= 0 then
    sock:close()
    return nil, "timeout", string.format("no complete response within %d ms", conn.timeout_ms), nil, false
  end
  sock:settimeout(ceil(left))
  local ok, err = sock:send(request)
  if not ok then
    sock:close()
    -- Some bytes may have gone out before the error: sent.
    local _, kind, text = reader.failure(err, conn.timeout_ms, false)
    if reused and err ~= "timeout" then kind, text = "network", "connection broken" end
    return nil, kind, text, nil, true, reused and err ~= "timeout"
  end
  local r = reader.new(sock, deadline, conn.timeout_ms)
  local status, headers, minor = reader.head(r)
  if not status then
    sock:close()
    -- headers, minor hold kind, message here
    local stale = reused and headers == "network" and minor == "server closed the connection without a response"
    return nil, headers, minor, nil, true, stale
  end
  local body, reusable, why = reader.body(r, status, headers, conn.max_body)
  if not body then
    sock:close()
    return nil, reusable, why, nil, true -- kind, message
  end
  if reusable and not fresh and reader.drained(r) and reader.keeps_alive(headers, minor) then
    keep(sock, conn)
  else
    sock:close()
  end
  return status, headers, body
end

-- One attempt. A call whose retry rule is "unsent" (it must not be sent twice) goes out on a new
-- connection, closed afterwards: a pooled one can die after the request went out and before any
-- answer, and nothing then tells whether the server has it. Other calls are sent once more, on
-- another connection, when a pooled one turns out to be dead (see exchange).
function M.send(state, call)
  local conn = settings(state, 3) -- settings < send < call.run < the public method
  local method, body = call.method, call.body
  local request
  if body then
    request = { method, " ", conn.target.prefix, call.path, " HTTP/1.1\r\n", conn.head,
      "Content-Type: application/json\r\nContent-Length: ", #body, "\r\n\r\n", body }
  else
    request = { method, " ", conn.target.prefix, call.path, " HTTP/1.1\r\n", conn.head, "\r\n" }
  end
  local fresh = call.retry == "unsent"
  local a, b, c, d, sent, stale = exchange(conn, request, fresh)
  if not (stale and not fresh) then return a, b, c, d, sent end
  a, b, c, d, sent = exchange(conn, request, false)
  if a == nil and sent == false then
    -- The request went out on the dead connection, and no new one could be made: the server
    -- may have it (libcurl's words for the same case).
    c = c:gsub("^could not connect", "connection lost after the request was sent; reconnecting failed")
      :gsub("^timed out while connecting", "connection lost after the request was sent; reconnecting timed out")
    sent = true
  end
  return a, b, c, d, sent
end

function M.sleep(seconds) ngx.sleep(seconds) end

M.start = async.in_threads(M) -- async calls run in nginx light threads

return M
