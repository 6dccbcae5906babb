-- Enforcement in an OpenResty gateway in front of a model API: before proxying a model call,
-- ask Limitry whether the customer may make it; after the answer, record what it really cost.
--
--   access_by_lua_block      { require("limitry_gateway").before() }
--   body_filter_by_lua_block { require("limitry_gateway").capture() }
--   log_by_lua_block         { require("limitry_gateway").after() }
--
-- mode = "check" (default): quotas and rate limits are checked before the call, and the event is
-- recorded after it with the real token counts from the upstream's answer (OpenAI-style
-- `usage.prompt_tokens` / `usage.completion_tokens`), from a timer, so the client never waits for
-- the record. mode = "track": one `track` call before proxying (check and record at once, with the
-- tokens the request declares in the X-Estimated-Tokens header), nothing after.
-- When Limitry cannot answer, the gateway fails open (the call goes through, header
-- X-Limit-Check: skipped) or closed (503), as configured.
local limitry = require "limitry"
local cjson = require "cjson.safe"

local M = {}

M.config = {
  customer_header = "X-Customer-Id",
  model_header = "X-Model",
  mode = "check",
  fail_open = true,
  max_capture = 1024 * 1024, -- bytes of the upstream answer kept to read its usage
  event_type = "model_call",
  client = nil, -- options for limitry.new; nil reads LIMITRY_API_KEY / LIMITRY_BASE_URL
}

-- The request path gets short timeouts and no retries unless the configuration says otherwise.
local REQUEST_PATH = { timeout = 0.5, connect_timeout = 0.2, max_retries = 0 }

local clients = setmetatable({}, { __mode = "k" })
local DEFAULT = {}

function M.configure(cfg)
  for k, v in pairs(cfg) do M.config[k] = v end
end

local function client_for(options)
  local slot = options or DEFAULT
  if not clients[slot] then
    local merged = {}
    for k, v in pairs(REQUEST_PATH) do merged[k] = v end
    for k, v in pairs(options or {}) do merged[k] = v end
    clients[slot] = limitry.new(merged)
  end
  return clients[slot]
end

local function reply(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  ngx.say(cjson.encode(body))
  return ngx.exit(status)
end

-- Seconds from now to the end of a UTC quota period ("hour", "day", "week", "month").
local function period_left(period, now)
  local t = os.date("!*t", now)
  local into
  if period == "hour" then into = t.min * 60 + t.sec
    return 3600 - into
  end
  into = t.hour * 3600 + t.min * 60 + t.sec
  if period == "day" then return 86400 - into end
  if period == "week" then return (7 - (t.wday + 5) % 7) * 86400 - into end -- weeks start Monday
  if period == "month" then
    local y, m = t.year, t.month + 1
    if m == 13 then y, m = y + 1, 1 end
    local first = os.time { year = y, month = m, day = 1, hour = 0 } - os.time { year = t.year, month = t.month, day = t.day, hour = 0 }
    return first - into
  end
  return nil
end

local function refuse(decision, what)
  local headers = {}
  if decision.retry_after == nil then
    -- A check answers without Retry-After: the exceeded quotas' periods say when it frees up.
    for _, q in ipairs(decision.quotas or {}) do
      local left = q.exceeded and period_left(q.period, ngx.time())
      if left and (decision.retry_after == nil or left > decision.retry_after) then decision.retry_after = left end
    end
    for _, r in ipairs(decision.rateLimits or {}) do
      local left = r.exceeded and type(r.reset) == "number" and math.max(0, r.reset - ngx.time())
      if left and (decision.retry_after == nil or left > decision.retry_after) then decision.retry_after = left end
    end
  end
  if decision.retry_after then headers["Retry-After"] = tostring(math.max(1, math.ceil(decision.retry_after))) end
  return reply(429, { error = decision.error or (what .. " exceeded"), allowed = false,
    retry_after = decision.retry_after }, headers)
end

local function unavailable(cfg, msg)
  ngx.log(ngx.WARN, "limitry gateway: limit check failed: ", msg)
  if cfg.fail_open then
    ngx.header["X-Limit-Check"] = "skipped"
    return
  end
  return reply(503, { error = "limit service unavailable" })
end

-- access phase
function M.before(overrides)
  local cfg = M.config
  if overrides then
    cfg = {}
    for k, v in pairs(M.config) do cfg[k] = v end
    for k, v in pairs(overrides) do cfg[k] = v end
  end
  local headers = ngx.req.get_headers()
  local customer, model = headers[cfg.customer_header], headers[cfg.model_header]
  if type(customer) ~= "string" or customer == "" then
    return reply(400, { error = "missing " .. cfg.customer_header .. " header" })
  end
  model = type(model) == "string" and model ~= "" and model or nil
  local client = client_for(cfg.client)
  ngx.ctx.limitry = { customer = customer, model = model, started = ngx.now(), cfg = cfg, client = client, parts = {}, size = 0 }

  if cfg.mode == "track" then
    local tokens = tonumber(headers["X-Estimated-Tokens"]) or 0
    local d, msg = client:track { customer_id = customer, event_type = cfg.event_type, model = model,
      input_tokens = math.floor(tokens) }
    if not d then return unavailable(cfg, msg) end
    ngx.ctx.limitry.recorded = true
    if not d.allowed then return refuse(d, "limit") end
    return
  end

  local dims = { customer_id = customer, event_type = cfg.event_type, model = model }
  local rl, msg = client:rate_limits():check(dims)
  if not rl then return unavailable(cfg, msg) end
  if not rl.allowed then return refuse(rl, "rate limit") end
  local q
  q, msg = client:quotas():check(dims)
  if not q then return unavailable(cfg, msg) end
  if not q.allowed then return refuse(q, "quota") end
end

-- body_filter phase: keep (a bounded part of) the upstream's answer to read its usage later.
function M.capture()
  local ctx = ngx.ctx.limitry
  local chunk = ngx.arg[1]
  if not ctx or ctx.recorded or not chunk or chunk == "" then return end
  if ctx.size + #chunk <= ctx.cfg.max_capture then
    ctx.parts[#ctx.parts + 1] = chunk
    ctx.size = ctx.size + #chunk
  else
    ctx.too_big = true
  end
end

local function record(premature, client, event)
  if premature then return end -- shutting down: the record is lost, as a log line would be
  local res, msg = client:events():record(event)
  if not res then ngx.log(ngx.ERR, "limitry gateway: could not record usage for ", event.customer_id, ": ", msg) end
end

-- log phase: the upstream has answered; record its real usage from a timer (cosockets are not
-- available in the log phase, and the client must not wait for this anyway).
function M.after()
  local ctx = ngx.ctx.limitry
  if not ctx or ctx.recorded or ngx.status >= 400 then return end
  local answer = not ctx.too_big and cjson.decode(table.concat(ctx.parts)) or nil
  local u = type(answer) == "table" and type(answer.usage) == "table" and answer.usage or {}
  local function count(v) return type(v) == "number" and v >= 0 and math.floor(v) or nil end
  local event = {
    customer_id = ctx.customer, event_type = ctx.cfg.event_type, model = ctx.model,
    input_tokens = count(u.prompt_tokens), output_tokens = count(u.completion_tokens),
    latency_ms = math.floor((ngx.now() - ctx.started) * 1000),
  }
  local ok, err = ngx.timer.at(0, record, ctx.client, event)
  if not ok then ngx.log(ngx.ERR, "limitry gateway: cannot start the record timer: ", err) end
end

return M
