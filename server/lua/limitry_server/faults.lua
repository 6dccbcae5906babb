-- Test-only behaviour, active only when the server was started with --faults.
--
-- A request carrying `X-Limitry-Test-Id: ID` is recorded (request line, raw headers, body size,
-- connection serial, the body up to 64 KiB) and can be read back with `GET /_test/requests?id=ID`. A request carrying
-- `X-Limitry-Fault: k=v;k=v` gets the fault described instead of (or before) its normal answer:
--   status=N          answer N with {"error":"injected N"} (or the body chosen below)
--   retry_after=S     add Retry-After and X-RateLimit-* headers
--   times=K           apply only to the first K requests of this test id; later ones are normal
--   from=K            apply only from the K-th request of this test id on; earlier ones are normal
--   delay=MS          wait (without blocking the worker) before answering
--   body=html|empty|malformed|truncated|wrongshape   a body of that kind (status 200 unless given)
--   json=PCT          this exact percent-encoded body (status 200 unless given)
--   chunked=N         the normal answer, sent in N flushed chunks (Transfer-Encoding: chunked)
--   redirect=1        302 to /v1/usage
--   close=before|mid  close the connection before any reply, or half-way through the body
--   size=BYTES        a 200 JSON body of BYTES bytes (at most 256 MiB), streamed
local cjson = require "cjson.safe"

local M = {}
local MAX_SIZE = 256 * 1024 * 1024

local function parse_spec(s)
  local spec = {}
  for k, v in s:gmatch("([%w_]+)=([^;]*)") do spec[k] = v end
  return spec
end

local function test_dict() return ngx.shared.limitry_test end

function M.record(id)
  local dict = test_dict()
  local n = dict:incr("n:" .. id, 1, 0)
  local conn = ngx.var.connection
  if dict:add("c:" .. id .. ":" .. conn, true) then dict:incr("conns:" .. id, 1, 0) end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  dict:set("r:" .. id .. ":" .. n, cjson.encode {
    method = ngx.req.get_method(),
    request_uri = ngx.var.request_uri,
    uri = ngx.var.uri,
    args = ngx.req.get_uri_args(),
    raw_header = ngx.req.raw_header(),
    headers = ngx.req.get_headers(),
    body_length = body and #body or 0,
    body = body and #body <= 65536 and body or nil, -- request bodies, to check what a client sent
    connection = tonumber(conn),
  })
  return n
end

function M.report(id)
  local dict = test_dict()
  local n = dict:get("n:" .. id) or 0
  local list = {}
  for i = 1, n do list[i] = cjson.decode(dict:get("r:" .. id .. ":" .. i)) end
  local body = cjson.encode { count = n, connections = dict:get("conns:" .. id) or 0, requests = list }
  if n == 0 then body = body:gsub('"requests":{}', '"requests":[]') end
  return body
end

local function raw_reply(bytes)
  local sock = assert(ngx.req.socket(true))
  sock:send(bytes)
  ngx.exit(444)
end

local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local CANNED = {
  html = "<html><body><h1>502 Bad Gateway</h1></body></html>",
  empty = "",
  malformed = '{"totalEvents": oops}',
  truncated = '{"totalEvents":500,"totalTokens":2000',
  wrongshape = '[1,2,3]',
}

-- Returns true when the fault produced the whole reply; false lets the normal handler run
-- (possibly after a delay, or with chunking requested through the returned options).
function M.apply(header, request_number)
  local spec = parse_spec(header)
  if spec.times and (request_number or 1) > tonumber(spec.times) then return false end
  if spec.from and (request_number or 1) < tonumber(spec.from) then return false end
  if spec.delay then ngx.sleep(tonumber(spec.delay) / 1000) end
  if spec.close == "before" then return ngx.exit(444) end
  if spec.close == "mid" then
    raw_reply("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
      .. '{"totalEvents":500,"totalTok')
    return true
  end
  if spec.redirect then
    ngx.status = 302
    ngx.header["Location"] = "/v1/usage?redirected=1"
    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"error":"moved"}')
    return true
  end
  if spec.size then
    local size = math.min(tonumber(spec.size) or 0, MAX_SIZE)
    ngx.header["Content-Type"] = "application/json"
    local head = '{"totalEvents":1,"pad":"'
    ngx.print(head)
    local chunk = string.rep("x", 65536)
    local sent = #head
    while sent < size do
      local piece = size - sent < #chunk and chunk:sub(1, size - sent) or chunk
      ngx.print(piece)
      local ok = ngx.flush(true)
      if not ok then return true end
      sent = sent + #piece
    end
    ngx.print('"}')
    return true
  end
  local status = tonumber(spec.status)
  local body
  if spec.json then body = pct_decode(spec.json)
  elseif spec.body then body = CANNED[spec.body] or ""
  elseif status then body = cjson.encode { error = "injected " .. status } end
  if body then
    status = status or 200
    ngx.status = status
    ngx.header["Content-Type"] = spec.body == "html" and "text/html" or "application/json"
    if spec.retry_after then
      ngx.header["Retry-After"] = spec.retry_after
      ngx.header["X-RateLimit-Limit"] = "1000"
      ngx.header["X-RateLimit-Remaining"] = "0"
      ngx.header["X-RateLimit-Reset"] = tostring(ngx.time() + (tonumber(spec.retry_after) or 0))
    end
    ngx.header["Content-Length"] = #body
    ngx.print(body)
    return true
  end
  return false, { chunks = tonumber(spec.chunked) }
end

return M
