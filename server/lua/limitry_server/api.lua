-- HTTP handlers of the local Limitry-compatible server (runs inside nginx's Lua module).
local cjson = require "cjson.safe"
local store = require "limitry_server.store"
local event = require "limitry_server.event"
local query = require "limitry_server.query"
local time = require "limitry_server.time"
local faults = require "limitry_server.faults"
local encode = require "limitry_server.encode"
local admin = require "limitry_server.admin"
local limits = require "limitry_server.limits"
local standin = require "limitry_server.standin"
local text = require "limitry_server.text"
local valid_utf8, excerpt = text.valid_utf8, text.excerpt

local M = {}
local config
local MAX_BATCH = 1000

local function reply(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  if headers then for k, v in pairs(headers) do ngx.header[k] = v end end
  if type(body) == "table" then body = cjson.encode(body) end
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

local function fail(status, message) return reply(status, { error = message }) end

-- The deterministic sample data, as one batch for the store.
local function sample_batch()
  local sample = require "limitry_server.sample"
  local batch = {}
  for _, ev in ipairs(sample.events()) do batch[#batch + 1] = { ev, (time.parse(ev.timestamp)) } end
  return batch
end

function M.init(conf)
  config = conf
  standin.init(conf)
  cjson.encode_number_precision(14)
  -- cjson would take 0x10, Infinity and NaN as numbers: none of them is JSON.
  cjson.decode_invalid_numbers(false)
  -- A store that cannot be opened (a layout or format this server does not know, a failed upgrade)
  -- leaves the server answering 503 to everything, /healthz included, so `start` fails at once.
  local ok, opened = pcall(store.open, conf.data_dir, conf.sample and sample_batch)
  if not ok then
    M.broken = tostring(opened)
    ngx.log(ngx.ERR, "limitry-local: cannot open the data: ", M.broken)
    return
  end
  ngx.log(ngx.NOTICE, "limitry-local: ", opened)
  local loaded, skipped = admin.open(conf.data_dir .. "/config.jsonl")
  ngx.log(ngx.NOTICE, "limitry-local: ", loaded, " quota/alert/rate-limit changes replayed, ", skipped, " skipped")
  limits.warm(ngx.now())
end

-- The API key a request carries, or nil.
local function bearer()
  local h = ngx.var.http_authorization
  return h and h:match("^[Bb]earer%s+(%S+)%s*$")
end

local function authenticate(need)
  local h = ngx.var.http_authorization
  if not h or h == "" then return nil, 401, "Missing API key: send Authorization: Bearer <key>" end
  local key = h:match("^[Bb]earer%s+(%S+)%s*$")
  if not key then return nil, 401, "Malformed Authorization header: expected Bearer <key>" end
  local scope = config.keys[key]
  if not scope then return nil, 401, "Invalid API key" end
  if need == "read" and scope ~= "all" then return nil, 403, "This API key does not have permission to read usage" end
  if need == "admin" and scope ~= "all" then
    return nil, 403, "This API key may only record and track events and run checks, not administer quotas and rate limits"
  end
  return true
end

local FILTERS = { "customerId", "eventType", "model" }

-- Parses the shared query parameters. Returns a query table or nil, message.
local function parse_range(args)
  local q = {}
  for _, name in ipairs { "startDate", "endDate" } do
    local v = args[name]
    if v == nil or v == true or v == "" then return nil, name .. " is required" end
    if type(v) ~= "string" then return nil, name .. " must be given once" end
    if not valid_utf8(v) then return nil, name .. " must be valid UTF-8" end
    local t = time.parse(v)
    if not t then return nil, "Invalid " .. name .. " '" .. v .. "': expected an ISO 8601 date-time such as 2024-01-01T00:00:00Z" end
    q[name] = t
  end
  if q.startDate >= q.endDate then return nil, "startDate must be before endDate" end
  q.start, q["end"] = q.startDate, q.endDate
  for _, name in ipairs(FILTERS) do
    local v = args[name]
    if v ~= nil then
      if type(v) ~= "string" then return nil, name .. " must be a single string" end
      if not valid_utf8(v) then return nil, name .. " must be valid UTF-8" end
      if v ~= "" then q[name] = v end
    end
  end
  return q
end

local function one_of(args, name, allowed)
  local v = args[name]
  if v == nil or v == true or v == "" then return nil, name .. " is required (one of " .. table.concat(allowed, ", ") .. ")" end
  for _, a in ipairs(allowed) do if v == a then return v end end
  return nil, "Invalid " .. name .. " '" .. excerpt(type(v) == "table" and v[1] or v, 64) .. "': must be one of " .. table.concat(allowed, ", ")
end

local function usage(kind, chunks)
  local args = ngx.req.get_uri_args(100)
  local q, err = parse_range(args)
  local body
  if kind == "summary" then
    if not q then return fail(400, err) end
    body = encode.metrics(query.summary(q))
  elseif kind == "breakdown" then
    local group_by, gerr = one_of(args, "groupBy", query.GROUP_BY)
    if not group_by then return fail(400, gerr) end
    if not q then return fail(400, err) end
    body = encode.data(query.breakdown(q, group_by, cjson.null))
  else
    local interval, ierr = one_of(args, "interval", query.INTERVALS)
    if not interval then return fail(400, ierr) end
    if not q then return fail(400, err) end
    body = encode.data(query.timeseries(q, interval))
  end
  if chunks and chunks > 1 then
    ngx.header["Content-Type"] = "application/json"
    local step = math.ceil(#body / chunks)
    for i = 1, #body, step do
      ngx.print(body:sub(i, i + step - 1))
      ngx.flush(true)
    end
    return
  end
  return reply(200, body)
end


-- The request's clock: the test-only header X-Limitry-Now (unix seconds) when started with --faults.
local function clock()
  if config.faults then
    local v = tonumber(ngx.var.http_x_limitry_now)
    if v then return v end
  end
  return ngx.now()
end

local function read_json()
  ngx.req.read_body()
  local raw = ngx.req.get_body_data()
  if not raw then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      raw = f and f:read("*a")
      if f then f:close() end
    end
  end
  if not raw or raw == "" then return nil, "Request body is required (JSON)" end
  local doc, derr = cjson.decode(raw)
  if doc == nil then return nil, "Request body is not valid JSON: " .. tostring(derr) end
  return doc, nil, raw
end

local function json_reply(status, t, headers) return reply(status, encode.json(t), headers) end

local function store_events(accepted, now)
  local ok, err = store.append(accepted)
  if not ok then
    ngx.log(ngx.ERR, "limitry-local: cannot store events: ", err)
    return nil
  end
  limits.after_append(accepted, now)
  return true
end

local function ingest(batch_mode)
  local doc, jerr, raw = read_json()
  if doc == nil then return fail(400, jerr) end
  local list
  if batch_mode then
    if type(doc) ~= "table" or type(doc.events) ~= "table" then return fail(400, "Body must be {\"events\": [ ... ]}") end
    list = doc.events
    if #list == 0 then return fail(400, "events must be a non-empty array") end
    if #list > MAX_BATCH then return fail(400, "A batch holds at most " .. MAX_BATCH .. " events, got " .. #list) end
  else
    list = { doc }
  end
  local now = clock()
  local accepted, results, keys = {}, {}, {}
  local text_ok = event.text_ok(raw)
  for i, ev in ipairs(list) do
    local norm, msg, ts = event.normalize(ev, now, text_ok)
    if not norm then return fail(400, (batch_mode and ("events[" .. i .. "]: ") or "") .. msg) end
    local key = norm.idempotencyKey
    local old = store.by_key(key) or (key and keys[key])
    if old then
      results[i] = { status = "duplicate", idempotencyKey = key, ev = old }
    else
      if key then keys[key] = norm end
      accepted[#accepted + 1] = { norm, ts }
      results[i] = { status = "recorded", timestamp = norm.timestamp, ev = norm }
    end
  end
  if #accepted > 0 and not store_events(accepted, now) then return fail(500, "Could not store events") end
  -- Ids are given by the append: fill them in now.
  for _, r in ipairs(results) do r.id, r.ev = r.ev.id, nil end
  if batch_mode then return reply(201, encode.batch_result(#list, #accepted, results)) end
  return json_reply(results[1].status == "duplicate" and 200 or 201, results[1])
end

-- GET /v1/events: newest first; the cursor is the sequence number of the last event of the page,
-- so events stored after a listing began never shift its later pages.
local function encode_cursor(n) return (ngx.encode_base64("seq:" .. n):gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" })) end
local function decode_cursor(c)
  if type(c) ~= "string" or #c > 64 then return nil end
  local b = c:gsub("[-_]", { ["-"] = "+", ["_"] = "/" })
  b = b .. string.rep("=", (4 - #b % 4) % 4)
  local raw = ngx.decode_base64(b)
  local n = raw and tonumber(raw:match("^seq:(%d+)$"))
  if not n or n < 1 or n > store.max_seq + 1 then return nil end
  return n
end

local function list_events()
  local args = ngx.req.get_uri_args(100)
  local f = {}
  for _, name in ipairs(FILTERS) do
    local v = args[name]
    if v ~= nil then
      if type(v) ~= "string" then return fail(400, name .. " must be a single string") end
      if not valid_utf8(v) then return fail(400, name .. " must be valid UTF-8") end
      if v ~= "" then f[name] = v end
    end
  end
  local limit = 50
  if args.limit ~= nil then
    limit = type(args.limit) == "string" and args.limit:match("^%d+$") and tonumber(args.limit)
    if not limit or limit < 1 or limit > 100 then return fail(400, "limit must be an integer from 1 to 100") end
  end
  local from = store.max_seq
  if args.cursor ~= nil and args.cursor ~= "" then
    local n = decode_cursor(args.cursor)
    if not n then return fail(400, "Invalid cursor: pass nextCursor from a previous page unchanged") end
    from = n - 1
  end
  local data, last, more = store.list(f, from, limit)
  return reply(200, '{"data":[' .. table.concat(data, ",") .. '],"nextCursor":'
    .. (more and ('"' .. encode_cursor(last) .. '"') or "null") .. ',"hasMore":' .. tostring(more) .. "}")
end

local function rate_headers(d, now)
  local r = d.refused
  local h = {
    ["Retry-After"] = tostring(math.max(1, math.ceil(r.reset - now))),
    ["X-RateLimit-Limit"] = encode.number(r.limit),
    ["X-RateLimit-Remaining"] = encode.number(r.remaining),
    ["X-RateLimit-Reset"] = encode.number(r.reset),
  }
  if r.period then
    h["X-Quota-Reset"], h["X-Quota-Period"], h["X-Quota-Metric"] = encode.number(r.reset), r.period, r.metric
  end
  return h
end

local function track()
  local doc, jerr, raw = read_json()
  if doc == nil then return fail(400, jerr) end
  local now = clock()
  local ev, msg, ts = event.normalize(doc, now, event.text_ok(raw))
  if not ev then return fail(400, msg) end
  -- A replay of an event already stored returns its id and today's statuses, counting nothing.
  local old = store.by_key(ev.idempotencyKey)
  if old then
    local dims = limits.dimensions(old)
    return json_reply(200, { id = old.id, allowed = true, rateLimits = limits.check_rate_limits(dims, now).rateLimits,
      quotas = limits.check_quotas(dims, now).quotas })
  end
  local d = limits.judge(ev, ts, now)
  if not d.allowed then
    return json_reply(429, { allowed = false, error = d.error, rateLimits = d.rateLimits, quotas = d.quotas },
      rate_headers(d, now))
  end
  if not store_events({ { ev, ts } }, now) then return fail(500, "Could not store the event") end
  return json_reply(200, { id = ev.id, allowed = true, rateLimits = d.rateLimits, quotas = d.quotas })
end

local function check(which)
  local doc, jerr = read_json()
  if doc == nil then return fail(400, jerr) end
  if type(doc) ~= "table" or (next(doc) ~= nil and doc[1] ~= nil) then
    return fail(400, "Body must be a dimension map such as {\"customer_id\": \"c1\"}")
  end
  local dims = {}
  for k, v in pairs(doc) do
    if type(k) ~= "string" or (type(v) ~= "string" and v ~= cjson.null) then
      return fail(400, "dimension " .. excerpt(k, 64) .. " must be a string")
    end
    if not valid_utf8(k) then return fail(400, "dimension names must be valid UTF-8") end
    if v ~= cjson.null and not valid_utf8(v) then return fail(400, "dimension " .. excerpt(k, 64) .. " must be valid UTF-8") end
    if v ~= cjson.null then dims[k] = v end
  end
  local now = clock()
  if which == "quota" then return json_reply(200, limits.check_quotas(dims, now)) end
  return json_reply(200, limits.check_rate_limits(dims, now))
end

local NOUN = { quota = "Quota", alert = "Quota alert", rateLimit = "Rate limit" }
local function not_found(kind, id) return fail(404, NOUN[kind] .. " '" .. excerpt(id, 256) .. "' not found") end

-- CRUD over admin records: op is list, create, get, update or delete.
local function crud(kind, op, id, extra)
  if op == "list" then return json_reply(200, { data = admin.list(kind, extra and function(r) return r.quotaId == extra end) }) end
  if op == "get" then
    local rec = admin.get(kind, id)
    if not rec then return not_found(kind, id) end
    return json_reply(200, rec)
  end
  if op == "delete" then
    local ok, status, err = admin.delete(kind, id)
    if not ok then
      if status == 404 then return not_found(kind, id) end
      ngx.log(ngx.ERR, "limitry-local: cannot store a deletion: ", err)
      return fail(500, "Could not store the change")
    end
    return json_reply(200, { success = true })
  end
  if op == "update" and not admin.get(kind, id) then return not_found(kind, id) end
  local body, jerr = read_json()
  if body == nil then return fail(400, jerr) end
  local rec, status, err
  if op == "create" then
    rec, status, err = admin.create(kind, body, clock(), extra and { quotaId = extra })
  else
    rec, status, err = admin.update(kind, id, body, clock())
  end
  if not rec then
    if status == 404 then return not_found(kind, id) end
    if status == 500 then
      ngx.log(ngx.ERR, "limitry-local: cannot store a change: ", err)
      return fail(500, "Could not store the change")
    end
    return fail(status, err)
  end
  -- The new limit's usage now, not at the first decision that needs it.
  limits.warm(clock(), kind, rec)
  return json_reply(op == "create" and 201 or 200, rec)
end

local function customer_usage(id)
  local q, err = parse_range(ngx.req.get_uri_args(100))
  if not q then return fail(400, err) end
  q.eventType, q.model = nil, nil
  q.customerId = id
  local m = query.summary(q)
  return reply(200, '{"customerId":' .. cjson.encode(id) .. "," .. encode.metrics(m):sub(2))
end

local PROJECT = { id = "proj_local", organizationId = "org_local", name = "Local project", slug = "local",
  createdAt = "2024-01-01T00:00:00Z", updatedAt = "2024-01-01T00:00:00Z" }

-- Routes: path pattern ("*" is one percent-decoded segment) -> method -> { scope, handler(params, opts) }.
local ROUTES = {
  { "/v1/usage", { GET = { "read", function(_, o) return usage("summary", o.chunks) end } } },
  { "/v1/usage/breakdown", { GET = { "read", function(_, o) return usage("breakdown", o.chunks) end } } },
  { "/v1/usage/timeseries", { GET = { "read", function(_, o) return usage("timeseries", o.chunks) end } } },
  { "/v1/events", { POST = { "write", function() return ingest(false) end }, GET = { "read", list_events } } },
  { "/v1/events/batch", { POST = { "write", function() return ingest(true) end } } },
  { "/v1/track", { POST = { "write", track } } },
  { "/v1/quotas/check", { POST = { "check", function() return check("quota") end } } },
  { "/v1/rate-limits/check", { POST = { "check", function() return check("rateLimit") end } } },
  { "/v1/quotas", {
    GET = { "admin", function() return crud("quota", "list") end },
    POST = { "admin", function() return crud("quota", "create") end } } },
  { "/v1/quotas/*", {
    GET = { "admin", function(p) return crud("quota", "get", p[1]) end },
    PUT = { "admin", function(p) return crud("quota", "update", p[1]) end },
    DELETE = { "admin", function(p) return crud("quota", "delete", p[1]) end } } },
  { "/v1/quotas/*/alerts", {
    GET = { "admin", function(p)
      if not admin.get("quota", p[1]) then return not_found("quota", p[1]) end
      return crud("alert", "list", nil, p[1])
    end },
    POST = { "admin", function(p)
      if not admin.get("quota", p[1]) then return not_found("quota", p[1]) end
      return crud("alert", "create", nil, p[1])
    end } } },
  { "/v1/quota-alerts/*", {
    GET = { "admin", function(p) return crud("alert", "get", p[1]) end },
    PUT = { "admin", function(p) return crud("alert", "update", p[1]) end },
    DELETE = { "admin", function(p) return crud("alert", "delete", p[1]) end } } },
  { "/v1/quota-alerts/*/history", {
    GET = { "admin", function(p)
      if not admin.get("alert", p[1]) then return not_found("alert", p[1]) end
      return json_reply(200, { data = encode.array(admin.history[p[1]] or {}) })
    end } } },
  { "/v1/rate-limits", {
    GET = { "admin", function() return crud("rateLimit", "list") end },
    POST = { "admin", function() return crud("rateLimit", "create") end } } },
  { "/v1/rate-limits/*", {
    GET = { "admin", function(p) return crud("rateLimit", "get", p[1]) end },
    PUT = { "admin", function(p) return crud("rateLimit", "update", p[1]) end },
    DELETE = { "admin", function(p) return crud("rateLimit", "delete", p[1]) end } } },
  { "/v1/customers/*/usage", { GET = { "read", function(p) return customer_usage(p[1]) end } } },
  { "/v1/project", { GET = { "read", function() return json_reply(200, PROJECT) end } } },
}
local function split(path)
  local segs = {}
  for seg in (path .. "/"):gmatch("([^/]*)/") do segs[#segs + 1] = seg end
  return segs
end
for _, r in ipairs(ROUTES) do r.segs = split(r[1]) end

local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The route for the raw request path (split before decoding, so an id may hold "/" as %2F).
local function route_for(raw)
  local segs = split(raw)
  for _, r in ipairs(ROUTES) do
    if #r.segs == #segs then
      local params, ok = {}, true
      for i, want in ipairs(r.segs) do
        local got = pct_decode(segs[i])
        if want == "*" then
          params[#params + 1] = got
        elseif got ~= want then
          ok = false
          break
        end
      end
      if ok then return r, params end
    end
  end
end

function M.handle()
  if M.broken then return fail(503, "The server could not open its data: " .. M.broken) end
  local uri = ngx.var.uri
  local opts = {}
  if config.faults then
    if uri == "/_test/requests" then
      local id = ngx.var.arg_id
      if not id then return fail(400, "id is required") end
      return reply(200, faults.report(id))
    end
    if uri == "/_test/outage" then return standin.outage_control(ngx.now()) end
    if uri == "/_test/stats" then return reply(200, standin.stats(store.count)) end
  end
  local test_id = config.faults and ngx.var.http_x_limitry_test_id
  local n = test_id and faults.record(test_id)
  -- The stand-in's latency, outage and API limit hold for every /v1/... request.
  if uri:sub(1, 4) == "/v1/" then
    local key = bearer()
    if standin.before(key and config.keys[key] and key, clock()) then return end
  end
  if config.faults then
    local spec = ngx.var.http_x_limitry_fault
    if spec then
      local done, extra = faults.apply(spec, n)
      if done then return end
      opts = extra or opts
    end
  end
  if uri == "/healthz" then return reply(200, { ok = true, events = store.count }) end
  local r, params = route_for((ngx.var.request_uri or uri):match("^[^?]*"))
  if not r then return fail(404, "Not found: " .. excerpt(uri, 1024)) end
  local method = ngx.req.get_method()
  local entry = r[2][method]
  if not entry then
    local allow = {}
    for m in pairs(r[2]) do allow[#allow + 1] = m end
    table.sort(allow)
    allow = table.concat(allow, ", ")
    return reply(405, { error = "Method not allowed: use " .. allow }, { Allow = allow })
  end
  local ok, status, message = authenticate(entry[1])
  if not ok then return fail(status, message) end
  for _, p in ipairs(params) do
    if not valid_utf8(p) then return fail(400, "Path ids must be valid UTF-8 once percent-decoded") end
  end
  if config.delay_ms and entry[1] == "read" then ngx.sleep(config.delay_ms / 1000) end
  return entry[2](params, opts)
end

return M
