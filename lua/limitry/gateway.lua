-- limitry.gateway: metering and limiting in an OpenResty gateway in front of a model API, as the
-- phase handlers of a Kong-style plugin:
--
--   lua_shared_dict limitry 64m;
--   init_by_lua_block        { require("limitry.gateway").configure { fail_open = true } }
--   init_worker_by_lua_block { require("limitry.gateway").init_worker() }
--   location /v1/ {
--     access_by_lua_block      { require("limitry.gateway").access() }
--     body_filter_by_lua_block { require("limitry.gateway").body_filter() }
--     log_by_lua_block         { require("limitry.gateway").log() }
--     proxy_pass ...;
--   }
--   location = /metrics { content_by_lua_block { require("limitry.gateway").metrics() } }
--
-- access decides from cached limits (limitry.gateway.decisions), body_filter reads the answer's
-- token usage as it streams (limitry.gateway.usage), log records the call through the background
-- recorder (limitry.recorder), whose queue lives in the shared dict. No handler ever raises into
-- nginx: an internal failure is logged (at a bounded rate) and fail_open decides.
local limitry = require "limitry"
local options = require "limitry.options"
local recorder_mod = require "limitry.recorder"
local decisions_mod = require "limitry.gateway.decisions"
local usage = require "limitry.gateway.usage"
local event = require "limitry.gateway.event"
local request_body_mod = require "limitry.gateway.request_body"
local add_counter = require("limitry.gateway.rules").add -- a dict counter that never evicts

local M = {}

-- Every option and its default (README: "limitry.gateway").
M.DEFAULTS = {
  client = nil,              -- options for limitry.new; nil: LIMITRY_API_KEY / LIMITRY_BASE_URL
  dict = "limitry",          -- the lua_shared_dict: the queue, the cached limits, the metrics
  customer = "X-Customer-Id", -- a request header, or function() -> customer id
  model = "X-Model",         -- a request header or function() -> model; else the request body's "model"
  event_type = "model_call",
  provider = nil,            -- a string or function(); else what the answer's shape says
  fail_open = true,          -- no decision possible (Limitry unreachable, not configured): serve (true) or 503
  stream_usage = true,       -- add stream_options.include_usage to streamed chat completions lacking it
  extract = nil,             -- function(usage, ctx) -> usage: reads other answer shapes (see README)
  batch_size = 1000,         -- recorder: events per events:batch call
  flush_interval = 1,        -- recorder: seconds before a partial batch goes out
  max_queued = nil,          -- recorder: events held at most (default: what the dict holds, an eighth kept free)
  refresh_after = 5,         -- seconds before a cached limit status is refreshed in the background
  ttl = 15,                  -- seconds a status counts as current ("cached"); older is "stale"
  stale_ttl = 60,            -- seconds a stale status is still used when Limitry cannot be reached
  rules_interval = 30,       -- seconds between two reads of the quota and rate-limit list
  cold_timeout = 0.5,        -- seconds a request with nothing cached waits on Limitry at most
  check_budget = 300,        -- Limitry calls per minute for checks and lists, across workers
  api_budget = 900,          -- Limitry calls per minute in all (batches get what checks and lists leave)
  decision_header = "X-Limitry-Decision", -- fresh, cached, stale or skipped on every answer
  log_interval = 10,         -- seconds between two error-log lines of one kind
}

local TYPES = {
  client = "table", dict = "string", customer = { "string", "function" }, model = { "string", "function" },
  event_type = "string", provider = { "string", "function" }, fail_open = "boolean", stream_usage = "boolean",
  extract = "function", batch_size = "number", flush_interval = "number", max_queued = "number",
  refresh_after = "number", ttl = "number", stale_ttl = "number", rules_interval = "number", cold_timeout = "number",
  check_budget = "number", api_budget = "number", decision_header = "string", log_interval = "number",
}

local config -- set by configure (in init_by_lua, before nginx forks)
local state  -- this worker's: { recorder, decisions, dict, broken }

local function check_config(cfg)
  local wrong = options.name_or_type_error(cfg, TYPES)
  if wrong then error("limitry.gateway.configure: " .. wrong, 3) end
  for _, k in ipairs { "refresh_after", "ttl", "stale_ttl", "rules_interval", "cold_timeout", "log_interval", "flush_interval" } do
    if cfg[k] and not (cfg[k] >= 0 and cfg[k] <= 86400) then
      error("limitry.gateway.configure: " .. k .. " must be a number of seconds from 0 to 86400 (got " .. tostring(cfg[k]) .. ")", 3)
    end
  end
  local function whole(k, low, high)
    local v = cfg[k]
    if v and not (v >= low and v <= high and v % 1 == 0) then
      error("limitry.gateway.configure: " .. k .. " must be a whole number from " .. low .. " to " .. high .. " (got " .. tostring(v) .. ")", 4)
    end
  end
  whole("batch_size", 1, 1000)
  whole("max_queued", 1, 2147483647)
  if cfg.decision_header and not cfg.decision_header:find("^[%w!#$%%&'*+.^_`|~-]+$") then
    error("limitry.gateway.configure: decision_header must be a header name (letters, digits, '-', ...)", 3)
  end
  if cfg.check_budget and (cfg.api_budget or M.DEFAULTS.api_budget) < cfg.check_budget then
    error("limitry.gateway.configure: check_budget must not exceed api_budget (" .. (cfg.api_budget or M.DEFAULTS.api_budget) .. ")", 3)
  end
  if cfg.dict and rawget(_G, "ngx") and ngx.shared and not ngx.shared[cfg.dict] then
    error("limitry.gateway.configure: dict '" .. cfg.dict .. "' is not a lua_shared_dict of nginx.conf (add 'lua_shared_dict "
      .. cfg.dict .. " 64m;' to the http block)", 3)
  end
  if cfg.client then
    -- The client's own options, checked as limitry.new checks them (a missing key is the workers' to
    -- find: LIMITRY_API_KEY reaches them through nginx's env directive).
    local ok, client = pcall(limitry.new, cfg.client)
    if ok then
      client:close()
    elseif not tostring(client):find("api_key is required", 1, true) then
      error("limitry.gateway.configure: client: " .. tostring(client):gsub("^limitry%.new: ", ""), 3)
    end
  end
  for _, k in ipairs { "check_budget", "api_budget" } do
    if cfg[k] and not (cfg[k] >= 1 and cfg[k] % 1 == 0) then
      error("limitry.gateway.configure: " .. k .. " must be a whole number of calls per minute >= 1 (got " .. tostring(cfg[k]) .. ")", 3)
    end
  end
end

-- A header option's nginx variable name (http_x_customer_id), or the function itself.
local function source_of(spec)
  if type(spec) == "function" then return spec end
  return "http_" .. spec:lower():gsub("-", "_")
end

local function read_source(src)
  if type(src) == "function" then return src() end
  return ngx.var[src]
end

-- configure(options): call it in init_by_lua (every worker inherits it). Raises on a wrong option.
function M.configure(cfg)
  cfg = cfg or {}
  if type(cfg) ~= "table" then error("limitry.gateway.configure: expected an options table", 2) end
  check_config(cfg)
  local c = {}
  for k, v in pairs(M.DEFAULTS) do c[k] = v end
  for k, v in pairs(cfg) do c[k] = v end
  c.customer_source, c.model_source = source_of(c.customer), source_of(c.model)
  c.model_header = type(c.model) == "string"
  c.event_type_json = event.quote(c.event_type)
  config = c
  state = nil
  return c
end

-- Error-log lines at a bounded rate: one per kind and log_interval across workers.
local function log(kind, level, msg)
  local dict = state and state.dict
  if dict and not dict:safe_add("log:gw:" .. kind, true, config.log_interval) then return end
  ngx.log(level == "error" and ngx.ERR or ngx.WARN, "limitry gateway: ", msg)
end

local function client_options(overrides)
  local o = {}
  for k, v in pairs(config.client or {}) do o[k] = v end
  for k, v in pairs(overrides) do o[k] = v end
  return o
end

-- The recorder's budget hook: Limitry's API limit counts every call of the key in a minute, so
-- batches get what this minute's checks and lists (limitry.gateway.decisions' count) leave of api_budget.
local function batch_budget()
  local dict, minute = state.dict, math.floor(ngx.now() / 60)
  local key = "gw:bc:" .. minute
  if (dict:get("d:b:" .. minute) or 0) + (dict:get(key) or 0) >= config.api_budget then return false end
  add_counter(dict, key, 1, 120)
  return true
end

-- init_worker(): this worker's clients, recorder and decision cache; starts the flusher.
function M.init_worker()
  if not config then M.configure {} end
  local dict = ngx.shared[config.dict]
  if not dict then
    error("limitry.gateway: nginx.conf needs 'lua_shared_dict " .. config.dict .. " 64m;' in the http block", 2)
  end
  state = { dict = dict, counters = recorder_mod.dict_counters(dict, "m:") }
  local ok, err = pcall(function()
    local request_path = limitry.new(client_options { timeout = config.cold_timeout,
      connect_timeout = math.min(config.cold_timeout, 1), max_retries = 0 })
    local background = limitry.new(client_options { max_retries = 0, timeout = 5, connect_timeout = 2 })
    state.decisions = decisions_mod.new { dict = dict, client = request_path, background = background,
      ttl = config.ttl, refresh_after = config.refresh_after, stale_ttl = config.stale_ttl,
      cold_wait = config.cold_timeout, check_budget = config.check_budget, counters = state.counters, log = log }
    state.recorder = recorder_mod.new { client = background, dict = config.dict, batch_size = config.batch_size,
      flush_interval = config.flush_interval, max_queued = config.max_queued,
      log_interval = config.log_interval, budget = batch_budget,
      on_delivered = function(tags) state.decisions:delivered(tags) end }
    if not rawget(_G, "LIMITRY_NOFLUSH") then state.recorder:start() end
    ngx.timer.every(0.25, function(premature)
      -- The recorder's counters with the gateway's, in one step: an answer and its event's queued
      -- or refused count reach the dict together.
      state.counters.sync()
      state.recorder.counters.sync()
      if premature then return end
      local rules = state.decisions:rules()
      if not rules or ngx.now() - rules.at > config.rules_interval then
        state.decisions:_refresh("rules", function() return state.decisions:fetch_rules(background) end)
      end
    end)
  end)
  if not ok then
    state.broken = tostring(err)
    ngx.log(ngx.ERR, "limitry gateway: not working in this worker: ", state.broken)
  end
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return c == '"' and '\\"' or c == "\\" and "\\\\" or string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- A refusal's answer: a JSON object of strings, numbers and booleans.
local function reply(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  local parts = {}
  for k, v in pairs(body) do
    parts[#parts + 1] = json_string(k) .. ":" .. (type(v) == "string" and json_string(v) or tostring(v))
  end
  table.sort(parts)
  ngx.print("{" .. table.concat(parts, ",") .. "}")
  return ngx.exit(status)
end

-- The request body's JSON text when it is small enough to be in memory (nil otherwise).
local function request_body()
  ngx.req.read_body()
  return ngx.req.get_body_data()
end

local find, floor = string.find, math.floor

local byte = string.byte

-- A customer or model id: 1 to 256 bytes, no control characters (checked byte by byte: a compiled
-- loop, where a pattern search would try every position).
local function valid_id(v)
  if type(v) ~= "string" then return false end
  local n = #v
  if n == 0 or n > 256 then return false end
  for i = 1, n do
    local b = byte(v, i)
    if b < 32 or b == 127 then return false end
  end
  return true
end

local DECISION_COUNTER = { [true] = {}, [false] = {} }
for _, src in ipairs { "fresh", "cached", "stale", "skipped" } do
  DECISION_COUNTER[true][src] = "dec:refused:" .. src
  DECISION_COUNTER[false][src] = "dec:allowed:" .. src
end

local function decide(ctx)
  return state.decisions:decide(ctx.customer, ctx.model, config.event_type)
end

-- access phase: the limit decision (429 refused; 503 when fail_open is false and no decision).
function M.access()
  if not state then return ngx.log(ngx.ERR, "limitry gateway: init_worker() was not called (init_worker_by_lua_block)") end
  local customer = read_source(config.customer_source)
  if not valid_id(customer) then
    return reply(400, { error = type(config.customer) == "string"
      and ("the " .. config.customer .. " header must name the customer (1 to 256 bytes)")
      or "no customer id for this request" })
  end
  local model = read_source(config.model_source)
  if (model == nil and config.model_header) or (config.stream_usage and find(ngx.var.uri, "/chat/completions", 1, true)) then
    local body = request_body()
    if body then
      if model == nil then model = request_body_mod.model(body) end
      if config.stream_usage then request_body_mod.with_stream_usage(body) end
    end
  end
  if model ~= nil and not valid_id(model) then model = nil end
  local ctx = { customer = customer, model = model }
  ngx.ctx.limitry = ctx
  local source, allowed, retry_after, why
  if state.broken then
    source = "skipped"
  else
    local ok, a, s, r, w, admits, limits = pcall(decide, ctx)
    if ok then
      allowed, source, retry_after, why, ctx.admits, ctx.limits = a, s, r, w, admits, limits
    else
      log("decide", "error", "deciding failed: " .. tostring(a))
      source = "skipped"
    end
  end
  state.counters.incr(DECISION_COUNTER[allowed == false][source] or "dec:allowed:skipped", 1)
  ngx.header[config.decision_header] = source
  if allowed == false then
    ctx.refused = true
    local seconds = math.max(1, math.ceil(retry_after or 1))
    return reply(429, { error = (why and why.kind == "r" and "rate limit" or "quota") .. " exceeded for this customer",
      allowed = false, retry_after = seconds }, { ["Retry-After"] = tostring(seconds) })
  end
  if allowed == nil and not config.fail_open then
    ctx.refused = true
    if state.broken then log("broken", "error", "not configured: " .. state.broken) end
    return reply(503, { error = "usage limits cannot be checked right now" }, { ["Retry-After"] = "1" })
  end
end

local function feed(ctx, chunk)
  local x = ctx.usage
  if not x then
    x = usage.new(nil, ctx.model)
    ctx.usage = x
  end
  x:feed(chunk)
end

-- body_filter phase: reads the answer's usage as it passes.
function M.body_filter()
  local ctx = ngx.ctx.limitry
  if not ctx or ctx.refused then return end
  local chunk = ngx.arg[1]
  if chunk == "" and ctx.usage then return end
  local ok, err = pcall(feed, ctx, chunk)
  if not ok then log("extract", "error", "reading usage failed: " .. tostring(err)) end
end

-- The properties of an event, written once for each combination of the three flags.
local PROPERTIES = {}
for k = 0, 7 do
  local list = {}
  if k % 2 == 1 then list[#list + 1] = { "stream", "true" } end
  if math.floor(k / 2) % 2 == 1 then list[#list + 1] = { "incomplete", "true" } end
  if k >= 4 then list[#list + 1] = { "usage", "unknown" } end
  PROPERTIES[k] = event.properties(list)
end

local function record(ctx)
  local u = ctx.usage and ctx.usage:finish() or { complete = false }
  if config.extract then u = config.extract(u, ctx) or u end
  local started = ngx.req.start_time()
  local p = config.provider
  if type(p) == "function" then p = p() end
  local input, output = u.input_tokens, u.output_tokens
  local flags = (u.stream and 1 or 0) + (u.complete and 0 or 2) + (input == nil and 4 or 0)
  local json = event.json(ctx.customer, config.event_type_json, state.recorder:new_key(), started,
    floor((ngx.now() - started) * 1000), ctx.model or u.model, p or u.provider, input, output, u.cost_cents,
    PROPERTIES[flags])
  local limits = ctx.limits
  local tag = limits and limits[1] and state.decisions:account(limits, ctx.admits, u, started) or nil
  -- Counted whether the recorder took the event or refused it (queue full, counted there): served
  -- calls = events delivered + events refused, cut-short calls included.
  local c = state.counters
  if u.complete then
    c.incr("gw:answers:complete", 1)
  else
    c.incr("gw:answers:incomplete", 1)
    c.incr("gw:incomplete_tokens", (input or 0) + (output or 0))
  end
  state.recorder:record_json(json, tag)
end

-- The status the upstream answered (the last one, after nginx's retries of other servers), else
-- the status of the answer (a location without an upstream).
local function served_status()
  local us = ngx.var.upstream_status
  if us then return tonumber(us) or tonumber(us:match("(%d+)%D*$")) or 0 end
  return ngx.status
end

-- log phase: records the call through the recorder when the upstream served it (2xx), also when
-- the client went away before the end (the event then says "incomplete").
function M.log()
  local ctx = ngx.ctx.limitry
  if not ctx or ctx.refused or not state or state.broken then return end
  local status = served_status()
  if status < 200 or status >= 300 then return end
  local ok, err = pcall(record, ctx)
  if not ok then log("record", "error", "recording failed: " .. tostring(err)) end
end

-- content phase of a /metrics location: Prometheus text.
function M.metrics()
  ngx.header["Content-Type"] = "text/plain; version=0.0.4"
  ngx.print(require("limitry.gateway.metrics").render(state and state.dict, state and state.recorder))
end

-- For specs and operators: this worker's recorder and decisions (nil before init_worker).
function M.state() return state end

return M
