-- HTTP handlers of the local Limitry-compatible server (runs inside nginx's Lua module).
local cjson = require "cjson.safe"
local store = require "limitry_server.store"
local query = require "limitry_server.query"
local time = require "limitry_server.time"
local faults = require "limitry_server.faults"
local encode = require "limitry_server.encode"

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

local function load_sample()
  local sample = require "limitry_server.sample"
  local batch = {}
  for _, ev in ipairs(sample.events()) do batch[#batch + 1] = { ev, (time.parse(ev.timestamp)) } end
  assert(store.append(batch))
end

function M.init(conf)
  config = conf
  cjson.encode_number_precision(14)
  -- cjson would take 0x10, Infinity and NaN as numbers: none of them is JSON.
  cjson.decode_invalid_numbers(false)
  local path = conf.data_dir .. "/events.jsonl"
  local existed = io.open(path, "rb")
  if existed then existed:close() end
  local loaded, skipped = store.open(path)
  if not existed and conf.sample then load_sample() end
  ngx.log(ngx.NOTICE, "limitry-local: ", store.count, " events (", loaded, " loaded, ", skipped, " unreadable lines skipped)")
end

local function authenticate(need)
  local h = ngx.var.http_authorization
  if not h or h == "" then return nil, 401, "Missing API key: send Authorization: Bearer <key>" end
  local key = h:match("^[Bb]earer%s+(%S+)%s*$")
  if not key then return nil, 401, "Malformed Authorization header: expected Bearer <key>" end
  local scope = config.keys[key]
  if not scope then return nil, 401, "Invalid API key" end
  if need == "read" and scope ~= "all" then return nil, 403, "This API key does not have permission to read usage" end
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
      if v ~= "" then q[name] = v end
    end
  end
  return q
end

local function one_of(args, name, allowed)
  local v = args[name]
  if v == nil or v == true or v == "" then return nil, name .. " is required (one of " .. table.concat(allowed, ", ") .. ")" end
  for _, a in ipairs(allowed) do if v == a then return v end end
  return nil, "Invalid " .. name .. " '" .. tostring(type(v) == "table" and v[1] or v) .. "': must be one of " .. table.concat(allowed, ", ")
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

local function ingest(batch_mode)
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
  if not raw or raw == "" then return fail(400, "Request body is required (JSON)") end
  local doc, derr = cjson.decode(raw)
  if doc == nil then return fail(400, "Request body is not valid JSON: " .. tostring(derr)) end
  local list
  if batch_mode then
    if type(doc) ~= "table" or type(doc.events) ~= "table" then return fail(400, "Body must be {\"events\": [ ... ]}") end
    list = doc.events
    if #list == 0 then return fail(400, "events must be a non-empty array") end
    if #list > MAX_BATCH then return fail(400, "A batch holds at most " .. MAX_BATCH .. " events, got " .. #list) end
  else
    list = { doc }
  end
  local now = ngx.now()
  local accepted, results, keys = {}, {}, {}
  for i, ev in ipairs(list) do
    local norm, msg, ts = store.normalize(ev, now)
    if not norm then return fail(400, (batch_mode and ("events[" .. i .. "]: ") or "") .. msg) end
    local key = norm.idempotencyKey
    if store.is_duplicate(key) or (key and keys[key]) then
      results[i] = { status = "duplicate", idempotencyKey = key }
    else
      if key then keys[key] = true end
      accepted[#accepted + 1] = { norm, ts }
      results[i] = { status = "recorded", timestamp = norm.timestamp }
    end
  end
  if #accepted > 0 then
    local ok, err = store.append(accepted)
    if not ok then
      ngx.log(ngx.ERR, "limitry-local: cannot store events: ", err)
      return fail(500, "Could not store events")
    end
  end
  if batch_mode then
    return reply(201, { recorded = #accepted, duplicates = #list - #accepted, results = results })
  end
  return reply(results[1].status == "duplicate" and 200 or 201, results[1])
end

local ROUTES = {
  ["/v1/usage"] = { "GET", "read", function(opts) return usage("summary", opts.chunks) end },
  ["/v1/usage/breakdown"] = { "GET", "read", function(opts) return usage("breakdown", opts.chunks) end },
  ["/v1/usage/timeseries"] = { "GET", "read", function(opts) return usage("timeseries", opts.chunks) end },
  ["/v1/events"] = { "POST", "write", function() return ingest(false) end },
  ["/v1/events/batch"] = { "POST", "write", function() return ingest(true) end },
}

function M.handle()
  local uri = ngx.var.uri
  local opts = {}
  if config.faults then
    if uri == "/_test/requests" then
      local id = ngx.var.arg_id
      if not id then return fail(400, "id is required") end
      return reply(200, faults.report(id))
    end
    local id = ngx.var.http_x_limitry_test_id
    local n = id and faults.record(id)
    local spec = ngx.var.http_x_limitry_fault
    if spec then
      local done, extra = faults.apply(spec, n)
      if done then return end
      opts = extra or opts
    end
  end
  if uri == "/healthz" then return reply(200, { ok = true, events = store.count }) end
  local route = ROUTES[uri]
  if not route then return fail(404, "Not found: " .. uri) end
  if ngx.req.get_method() ~= route[1] then
    return reply(405, { error = "Method not allowed: use " .. route[1] }, { Allow = route[1] })
  end
  local ok, status, message = authenticate(route[2])
  if not ok then return fail(status, message) end
  if config.delay_ms and route[2] == "read" then ngx.sleep(config.delay_ms / 1000) end
  return route[3](opts)
end

return M
