-- A budget guard for an OpenResty gateway: before proxying an AI request, look up the customer's
-- month-to-date cost in Limitry and answer 429 once it is over budget.
--
--   access_by_lua_block { require("budget_guard").check() }     -- or check{ fail_open = false }
--
-- The month-to-date cost is cached per customer in a lua_shared_dict for a short TTL, so most
-- requests never reach Limitry. The Limitry call runs on nginx's thread pool (see the README's
-- OpenResty notes), so a slow Limitry holds only the requests that need a fresh number.
local limitry = require "limitry"
local cjson = require "cjson.safe"

local M = {}

-- Set from init_by_lua (see nginx.conf); every field has a default.
M.config = {
  customer_header = "X-Customer-Id",
  default_budget_cents = 5000,
  budgets = {},          -- customer id -> budget in cents
  cache_dict = "limitry_budget",
  cache_ttl = 30,        -- seconds a month-to-date cost is trusted
  fail_open = true,      -- Limitry unreachable: let traffic through (true) or answer 503 (false)
  client = nil,          -- options for limitry.new; nil reads LIMITRY_API_KEY / LIMITRY_BASE_URL
}

-- One client per worker and per client options table: its connection is reused.
local clients = setmetatable({}, { __mode = "k" })
local DEFAULT = {}

function M.configure(cfg)
  for k, v in pairs(cfg) do M.config[k] = v end
end

local function client_for(options)
  local slot = options or DEFAULT
  local c = clients[slot]
  if not c then
    c = limitry.new(options)
    clients[slot] = c
  end
  return c
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

-- Month-to-date cost in cents, from the cache or Limitry. Returns cost or nil, msg.
function M.month_to_date(customer, cfg)
  cfg = cfg or M.config
  local dict = ngx.shared[cfg.cache_dict]
  local start, finish, _, month = this_month(ngx.time())
  local key = "mtd:" .. month .. ":" .. (cfg.client and cfg.client.base_url or "") .. ":" .. customer
  local cached = dict and dict:get(key)
  if cached then return cached, nil, true end
  local summary, msg = client_for(cfg.client):usage():get_summary { start_date = start, end_date = finish, customer_id = customer }
  if not summary then return nil, msg end
  if dict then dict:set(key, summary.totalCostCents, cfg.cache_ttl) end
  return summary.totalCostCents
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
