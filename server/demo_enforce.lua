-- The enforcement demo (`make demo-enforce`): against a running local server (LIMITRY_BASE_URL,
-- LIMITRY_API_KEY), create a daily token quota and a per-second rate limit, then track calls until
-- each refuses, printing every decision. Raw HTTP with luasocket: the client's track/quotas calls
-- are being built separately; this shows what the server decides.
local http = require "socket.http"
local ltn12 = require "ltn12"
local decode = require("limitry.core").decode

local base = assert(os.getenv("LIMITRY_BASE_URL"), "LIMITRY_BASE_URL is not set")
local key = assert(os.getenv("LIMITRY_API_KEY"), "LIMITRY_API_KEY is not set")

local function call(method, path, body)
  local out = {}
  local _, status, headers = http.request {
    method = method, url = base .. path, sink = ltn12.sink.table(out),
    source = body and ltn12.source.string(body) or nil,
    headers = { Authorization = "Bearer " .. key, ["Content-Type"] = "application/json",
      ["Content-Length"] = body and tostring(#body) or nil },
  }
  return status, decode(table.concat(out)), headers
end

local function show(i, status, d, h)
  if d.allowed then
    local q, r = d.quotas[1], d.rateLimits[1]
    print(string.format("  call %2d: %d allowed   %s", i, status,
      q and string.format("quota used %d of %d", q.used, q.limit) or string.format("rate limit remaining %d of %d", r.remaining, r.limit)))
  else
    print(string.format("  call %2d: %d REFUSED   %s", i, status, d.error))
    print(string.format("           Retry-After: %s s   X-RateLimit-Reset: %s   X-Quota-Period: %s", h["retry-after"],
      h["x-ratelimit-reset"], h["x-quota-period"] or "-"))
  end
end

local status, q = call("POST", "/quotas", '{"name":"daily tokens","metric":"total_tokens","limitValue":1000,'
  .. '"period":"day","dimensionFilters":{"customer_id":"cust_demo"}}')
assert(status == 201, "creating the quota answered " .. tostring(status))
print(string.format("quota %s: 1,000 tokens per UTC day for customer cust_demo; each call uses 100 tokens", q.id))
for i = 1, 20 do
  local st, d, h = call("POST", "/track", '{"customerId":"cust_demo","eventType":"chat","model":"gpt-4o","inputTokens":60,"outputTokens":40}')
  show(i, st, d, h)
  if not d.allowed then break end
end

local rstatus, r = call("POST", "/rate-limits", '{"name":"5 per second","limitValue":5,"window":"second",'
  .. '"dimensionFilters":{"customer_id":"cust_burst"}}')
assert(rstatus == 201, "creating the rate limit answered " .. tostring(rstatus))
print()
print(string.format("rate limit %s: 5 calls per second for customer cust_burst", r.id))
for i = 1, 20 do
  local st, d, h = call("POST", "/track", '{"customerId":"cust_burst","eventType":"chat"}')
  show(i, st, d, h)
  if not d.allowed then break end
end
