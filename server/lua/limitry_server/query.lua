-- Aggregations over the event store: one linear scan over the columns per request.
local store = require "limitry_server.store"
local time = require "limitry_server.time"

local M = {}

local GROUP_COLUMN = { model = "model", customer_id = "customerId", event_type = "eventType", provider = "provider" }
M.GROUP_BY = { "model", "customer_id", "event_type", "provider" }
M.INTERVALS = { "hour", "day", "week" }
M.GROUP_COLUMN = GROUP_COLUMN

local function new_metrics()
  return { totalEvents = 0, totalTokens = 0, totalInputTokens = 0, totalOutputTokens = 0, totalCostCents = 0 }
end

-- Calls visit(i) for every event in [q.start, q["end"]) that matches the filters.
local function scan(q, visit)
  local c = store.cols
  local ts, cust, etype, model = c.ts, c.customerId, c.eventType, c.model
  local s, e = q.start, q["end"]
  local fc, fe, fm = q.customerId, q.eventType, q.model
  for i = 1, store.count do
    local t = ts[i]
    if t >= s and t < e
      and (fc == nil or cust[i] == fc)
      and (fe == nil or etype[i] == fe)
      and (fm == nil or model[i] == fm) then
      visit(i)
    end
  end
end

local function accumulate(m, i)
  local c = store.cols
  m.totalEvents = m.totalEvents + 1
  m.totalTokens = m.totalTokens + c.totalTokens[i]
  m.totalInputTokens = m.totalInputTokens + c.inputTokens[i]
  m.totalOutputTokens = m.totalOutputTokens + c.outputTokens[i]
  m.totalCostCents = m.totalCostCents + c.costCents[i]
end

-- Float sums drift (0.1 + 0.2); costs are reported to a millionth of a cent.
local function tidy(m)
  m.totalCostCents = math.floor(m.totalCostCents * 1e6 + 0.5) / 1e6
  return m
end

function M.summary(q)
  local m = new_metrics()
  scan(q, function(i) accumulate(m, i) end)
  return tidy(m)
end

-- Rows sorted by cost, then events, then dimension, so the order is stable; events lacking the
-- attribute form one row whose dimension is `null_value`.
function M.breakdown(q, group_by, null_value)
  local col = store.cols[GROUP_COLUMN[group_by]]
  local groups, order = {}, {}
  scan(q, function(i)
    local key = col[i]
    local m = groups[key]
    if not m then
      m = new_metrics()
      m.dimension = key or null_value
      groups[key] = m
      order[#order + 1] = m
    end
    accumulate(m, i)
  end)
  for _, m in ipairs(order) do tidy(m) end
  table.sort(order, function(a, b)
    if a.totalCostCents ~= b.totalCostCents then return a.totalCostCents > b.totalCostCents end
    if a.totalEvents ~= b.totalEvents then return a.totalEvents > b.totalEvents end
    return tostring(a.dimension) < tostring(b.dimension)
  end)
  return order
end

-- Only non-empty buckets, in time order.
function M.timeseries(q, interval)
  local ts = store.cols.ts
  local buckets, starts = {}, {}
  scan(q, function(i)
    local b = time.bucket(ts[i], interval)
    local m = buckets[b]
    if not m then
      m = new_metrics()
      buckets[b] = m
      starts[#starts + 1] = b
    end
    accumulate(m, i)
  end)
  table.sort(starts)
  local data = {}
  for k, b in ipairs(starts) do
    local m = tidy(buckets[b])
    m.timestamp = time.format(b)
    data[k] = m
  end
  return data
end

return M
