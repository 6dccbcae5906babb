-- JSON for metric objects, written directly: several times faster than cjson's generic walk for
-- the thousands of rows an hourly series has, and integers never come out as 1e+14.
local cjson = require "cjson.safe"

local format, floor, concat = string.format, math.floor, table.concat

local M = {}

local function number(v)
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
  return format("%.17g", v)
end

local function metrics(m)
  local head = ""
  if m.timestamp then
    head = format('"timestamp":%s,', cjson.encode(m.timestamp))
  elseif m.dimension ~= nil then
    head = format('"dimension":%s,', m.dimension == cjson.null and "null" or cjson.encode(m.dimension))
  end
  return format('{%s"totalEvents":%s,"totalTokens":%s,"totalInputTokens":%s,"totalOutputTokens":%s,"totalCostCents":%s}',
    head, number(m.totalEvents), number(m.totalTokens), number(m.totalInputTokens),
    number(m.totalOutputTokens), number(m.totalCostCents))
end
M.metrics = metrics

function M.data(rows)
  local out = {}
  for i, m in ipairs(rows) do out[i] = metrics(m) end
  return '{"data":[' .. concat(out, ",") .. "]}"
end

return M
