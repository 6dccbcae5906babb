-- A usage report: a month's summary, a breakdown by model and a per-day bar chart.
--   lua5.4 examples/report.lua [YYYY-MM] [customer_id]
-- Needs LIMITRY_API_KEY (and LIMITRY_BASE_URL for the local server); `make demo` sets both.

-- Lets the example run from a checkout (after `make build`) as well as after `luarocks make`.
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/" .. (jit and "luajit" or _VERSION:sub(5)) .. "/?.so;" .. package.cpath

local limitry = require "limitry"

local month = arg[1] or "2024-01"
local customer = arg[2]
local year, mon = month:match("^(%d%d%d%d)%-(%d%d)$")
if not year then
  io.stderr:write("usage: report.lua [YYYY-MM] [customer_id]\n")
  os.exit(2)
end
year, mon = tonumber(year), tonumber(mon)
if mon < 1 or mon > 12 then
  io.stderr:write("report.lua: month ", month, " has month ", mon, " (months run 01 to 12)\n")
  os.exit(2)
end
local start_date = string.format("%04d-%02d-01T00:00:00Z", year, mon)
local end_date = mon == 12 and string.format("%04d-01-01T00:00:00Z", year + 1)
  or string.format("%04d-%02d-01T00:00:00Z", year, mon + 1)

local client = limitry.new()
local usage = client:usage()
local filter = { customer_id = customer }

local function dollars(cents) return string.format("$%.2f", cents / 100) end
local function thousands(n)
  local s = tostring(math.floor(n))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

local summary, msg = usage:get_summary(start_date, end_date, filter)
if not summary then
  io.stderr:write("report failed: ", msg, "\n")
  os.exit(1)
end
print(string.format("Usage %s%s  (%s)", month, customer and (" for " .. customer) or "", client.base_url))
print(string.rep("=", 60))
print(string.format("  events        %14s", thousands(summary.totalEvents)))
print(string.format("  input tokens  %14s", thousands(summary.totalInputTokens)))
print(string.format("  output tokens %14s", thousands(summary.totalOutputTokens)))
print(string.format("  total tokens  %14s", thousands(summary.totalTokens)))
print(string.format("  cost          %14s", dollars(summary.totalCostCents)))
if summary.totalEvents == 0 then
  print(string.format("  (no events in %s%s)", month, customer and (" for " .. customer) or ""))
end

local breakdown = assert(usage:get_breakdown("model", start_date, end_date, filter))
print()
print("By model")
print(string.rep("-", 60))
for _, row in ipairs(breakdown.data) do
  print(string.format("  %-24s %8s events %12s tokens %9s", row.dimension or "(none)",
    thousands(row.totalEvents), thousands(row.totalTokens), dollars(row.totalCostCents)))
end

local series = assert(usage:get_timeseries("day", start_date, end_date, filter))
local peak = 0
for _, point in ipairs(series.data) do peak = math.max(peak, point.totalCostCents) end
print()
print("Cost per day")
print(string.rep("-", 60))
for _, point in ipairs(series.data) do
  local width = peak > 0 and math.floor(point.totalCostCents / peak * 36 + 0.5) or 0
  print(string.format("  %s %-36s %9s", point.timestamp:sub(1, 10), string.rep("#", width), dollars(point.totalCostCents)))
end
client:close()
