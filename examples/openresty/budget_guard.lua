-- A budget guard for an OpenResty gateway: before proxying an AI request, look up the customer's
-- month-to-date cost in Limitry and answer 429 once it is over budget.
--
--   access_by_lua_block { require("budget_guard").check() }     -- or check{ fail_open = false }
--
-- Built for gateway load:
-- - One Limitry call per customer per cache period, however many requests arrive at once: the
--   first request of a cold customer takes a lock in the shared dict and asks Limitry; the others
--   wait for its answer (at most `lock_wait` seconds) instead of asking too.
-- - Failures are cached too (`fail_ttl`), so an outage costs one call per period, not one per request.
-- - Request-path timeouts are short and there are no retries: a hanging Limitry delays a request by
--   at most `timeout` + `lock_wait`, then the guard fails open or closed.
-- - Entries expire after a jittered `cache_ttl`, and the first request that sees an entry in the
--   last `refresh_ahead` part of its life refreshes it from a timer while still being served from
--   the cache, so caches neither go cold together (00:00 UTC on the 1st) nor make a request wait.
-- - The cache key holds the project (a digest of base URL and key, never the key) and the month.
-- The Limitry call goes over nginx's cosockets: only the requests that need a fresh number wait.
local limitry = require "limitry"
local cjson = require "cjson.safe"

local M = {}

-- Set from init_by_lua (see nginx.conf); every field has a default.
M.config = {
  customer_header = "X-Customer-Id",
  default_budget_cents = 5000,
  budgets = {},          -- customer id -> budget in cents
  cache_dict = "limitry_budget",
  cache_ttl = 30,        -- seconds a month-to-date cost is trusted (each entry gets +-10%)
  refresh_ahead = 0.2,   -- refresh in the background during the last 20% of an entry's life
  fail_ttl = 5,          -- seconds a failed lookup is remembered
  lock_wait = 0.5,       -- seconds a request waits for another request's lookup of the same customer
  fail_open = true,      -- Limitry unreachable: let traffic through (true) or answer 503 (false)
  client = nil,          -- options for limitry.new; nil reads LIMITRY_API_KEY / LIMITRY_BASE_URL
}

-- What the request path needs from the client unless the configuration says otherwise.
local REQUEST_PATH = { timeout = 0.3, connect_timeout = 0.2, max_retries = 0 }

-- One client (and its project digest) per worker and per client options table.
local clients = setmetatable({}, { __mode = "k" })
local DEFAULT = {}

function M.configure(cfg)
  for k, v in pairs(cfg) do M.config[k] = v end
end

local function client_for(options)
  local slot = options or DEFAULT
  local entry = clients[slot]
  if not entry then
    local merged = {}
    for k, v in pairs(REQUEST_PATH) do merged[k] = v end
    for k, v in pairs(options or {}) do merged[k] = v end
    merged.api_key = merged.api_key or os.getenv("LIMITRY_API_KEY")
    merged.base_url = merged.base_url or os.getenv("LIMITRY_BASE_URL")
    local project = ngx.md5((merged.base_url or limitry.DEFAULT_BASE_URL) .. "\n" .. tostring(merged.api_key)):sub(1, 16)
    entry = { client = limitry.new(merged), project = project }
    clients[slot] = entry
  end
  return entry
end

-- M.config with the fields of overrides (a table given to check) on top.
local function settings(overrides)
  if not overrides then return M.config end
  local merged = {}
  for k, v in pairs(M.config) do merged[k] = v end
  for k, v in pairs(overrides) do merged[k] = v end
  return merged
end

local function reply(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  ngx.say(cjson.encode(body))
  return ngx.exit(status)
end

-- Unix seconds of a UTC date (os.time would apply the host's time zone).
local function utc_epoch(y, m, d)
  if m <= 2 then y, m = y - 1, m + 12 end
  local days = 365 * y + math.floor(y / 4) - math.floor(y / 100) + math.floor(y / 400)
    + math.floor((153 * (m - 3) + 2) / 5) + d - 719469
  return days * 86400
end

-- The current UTC month: ISO start and end, seconds until it ends, and "YYYY-MM".
local function this_month(now)
  local t = os.date("!*t", now)
  local ny, nm = t.year, t.month + 1
  if nm == 13 then ny, nm = ny + 1, 1 end
  return string.format("%04d-%02d-01T00:00:00Z", t.year, t.month),
    string.format("%04d-%02d-01T00:00:00Z", ny, nm),
    math.max(1, utc_epoch(ny, nm, 1) - now),
    string.format("%04d-%02d", t.year, t.month)
end
M.this_month = this_month

-- A cached entry is "cost fetched_at life" (seconds); `life` is the jittered TTL it was given.
local function encode_entry(cost, now, life) return string.format("%.17g %.3f %.3f", cost, now, life) end
local function decode_entry(s)
  local cost, fetched, life = s:match("^(%S+) (%S+) (%S+)$")
  return tonumber(cost), tonumber(fetched), tonumber(life)
end

-- Asks Limitry and caches the answer (or the failure). Returns cost or nil, msg.
local function fetch(dict, key, customer, cfg, entry)
  local start, finish = this_month(ngx.time())
  local summary, msg = entry.client:usage():get_summary { start_date = start, end_date = finish, customer_id = customer }
  if not summary then
    dict:set("fail:" .. key, msg, cfg.fail_ttl)
    return nil, msg
  end
  local life = cfg.cache_ttl * (0.9 + 0.2 * math.random())
  dict:set(key, encode_entry(summary.totalCostCents, ngx.now(), life), life)
  dict:delete("fail:" .. key)
  return summary.totalCostCents
end

local function refresh_in_background(premature, key, customer, cfg, entry)
  if premature then return end -- nginx is shutting down or reloading: the cached entry will do
  local dict = ngx.shared[cfg.cache_dict]
  local ok, err = pcall(fetch, dict, key, customer, cfg, entry)
  if not ok then ngx.log(ngx.ERR, "budget guard: background refresh failed: ", err) end
  dict:delete("lock:" .. key)
end

-- Month-to-date cost in cents, from the cache or Limitry. Returns cost or nil, msg.
function M.month_to_date(customer, cfg)
  cfg = cfg or M.config
  local dict = assert(ngx.shared[cfg.cache_dict], "budget guard: lua_shared_dict " .. cfg.cache_dict .. " is missing")
  local entry = client_for(cfg.client)
  local _, _, _, month = this_month(ngx.time())
  local key = "mtd:" .. entry.project .. ":" .. month .. ":" .. customer
  local lock = "lock:" .. key
  local lock_ttl = (entry.client.timeout + entry.client.connect_timeout) * (entry.client.max_retries + 1) + 1

  local cached = dict:get(key)
  if cached then
    local cost, fetched, life = decode_entry(cached)
    if ngx.now() - fetched > life * (1 - cfg.refresh_ahead) and dict:add(lock, true, lock_ttl) then
      local ok = ngx.timer.at(0, refresh_in_background, key, customer, cfg, entry)
      if not ok then dict:delete(lock) end
    end
    return cost, nil, true
  end
  local failed = dict:get("fail:" .. key)
  if failed then return nil, failed .. " (cached failure)" end

  if dict:add(lock, true, lock_ttl) then
    local ok, cost, msg = pcall(fetch, dict, key, customer, cfg, entry)
    dict:delete(lock)
    if not ok then return nil, "budget guard: " .. tostring(cost) end
    return cost, msg
  end
  -- Another request is asking Limitry for this customer: wait for its answer, briefly.
  local deadline = ngx.now() + cfg.lock_wait
  local pause = 0.002
  while ngx.now() < deadline do
    ngx.sleep(pause)
    pause = math.min(pause * 2, 0.02)
    cached = dict:get(key)
    if cached then return (decode_entry(cached)), nil, true end
    failed = dict:get("fail:" .. key)
    if failed then return nil, failed .. " (cached failure)" end
  end
  return nil, "usage lookup still running after " .. cfg.lock_wait .. " s"
end

-- Ends the request with 400/429/503, or returns to let it through. overrides: fields of config.
function M.check(overrides)
  local cfg = settings(overrides)
  local customer = ngx.req.get_headers()[cfg.customer_header]
  if type(customer) ~= "string" or customer == "" then
    return reply(400, { error = "missing " .. cfg.customer_header .. " header" })
  end
  local budget = cfg.budgets[customer] or cfg.default_budget_cents
  local spent, msg = M.month_to_date(customer, cfg)
  if not spent then
    ngx.log(ngx.WARN, "budget guard: usage lookup failed for ", customer, ": ", msg)
    if cfg.fail_open then
      ngx.header["X-Budget-Check"] = "skipped"
      return
    end
    return reply(503, { error = "usage service unavailable", customer = customer })
  end
  ngx.header["X-Budget-Remaining-Cents"] = tostring(budget - spent)
  if spent >= budget then
    local _, _, retry_after = this_month(ngx.time())
    return reply(429, { error = "monthly budget exceeded", customer = customer,
      spent_cents = spent, budget_cents = budget }, { ["Retry-After"] = tostring(retry_after) })
  end
end

return M
