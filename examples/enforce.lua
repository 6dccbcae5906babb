-- Enforcement with the client (`make demo-enforce`): create a daily token quota and a per-second
-- rate limit, then track calls until each refuses, printing every decision.
--   lua5.4 examples/enforce.lua
-- Needs LIMITRY_API_KEY (and LIMITRY_BASE_URL for the local server).
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/" .. (jit and "luajit" or _VERSION:sub(5)) .. "/?.so;" .. package.cpath

local limitry = require "limitry"

local client = limitry.new()
local run = tostring(os.time())

local function show(i, d)
  if d.allowed then
    local q, r = (d.quotas or {})[1], (d.rateLimits or {})[1]
    print(string.format("  call %2d: allowed   %s", i,
      q and string.format("quota used %d of %d", q.used, q.limit)
        or r and string.format("rate limit remaining %d of %d", r.remaining, r.limit) or ""))
  else
    print(string.format("  call %2d: REFUSED   %s (retry in %s s)", i, tostring(d.error), tostring(d.retry_after)))
  end
end

local customer = "cust_demo_" .. run
local q = assert(client:quotas():create { name = "daily tokens", metric = "total_tokens", limit_value = 1000,
  period = "day", dimension_filters = { customer_id = customer } })
print(string.format("quota %s: 1,000 tokens per UTC day for %s; each call uses 100 tokens", q.id, customer))
for i = 1, 20 do
  local d = assert(client:track { customer_id = customer, event_type = "chat", model = "gpt-4o",
    input_tokens = 60, output_tokens = 40 })
  show(i, d)
  if not d.allowed then break end
end

local burst = "cust_burst_" .. run
local r = assert(client:rate_limits():create { name = "5 per second", limit_value = 5, window = "second",
  dimension_filters = { customer_id = burst } })
print()
print(string.format("rate limit %s: 5 calls per second for %s", r.id, burst))
for i = 1, 20 do
  local d = assert(client:track { customer_id = burst, event_type = "chat" })
  show(i, d)
  if not d.allowed then break end
end
client:close()
