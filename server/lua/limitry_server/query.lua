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

local BUCKET_SECONDS = { hour = 3600, day = 86400, week = 7 * 86400 }
local labels = {} -- bucket start -> ISO label; bounded by the buckets ever asked for

-- Only non-empty buckets, in time order. Buckets are numbered from the one holding the range
-- start and summed in plain arrays: this is the server's hottest loop (hourly, 90 days).
function M.timeseries(q, interval)
  local c = store.cols
  local ts, cust, etype, model = c.ts, c.customerId, c.eventType, c.model
  local tin, tout, ttot, tcost = c.inputTokens, c.outputTokens, c.totalTokens, c.costCents
  local s, e = q.start, q["end"]
  local fc, fe, fm = q.customerId, q.eventType, q.model
  local size = BUCKET_SECONDS[interval]
  local base = time.bucket(s, interval)
  local floor = math.floor
  local ev, sin, sout, stot, scost, used = {}, {}, {}, {}, {}, {}
  for i = 1, store.count do
    local t = ts[i]
    if t >= s and t < e
      and (fc == nil or cust[i] == fc)
      and (fe == nil or etype[i] == fe)
      and (fm == nil or model[i] == fm) then
      local k = floor((t - base) / size)
      local n = ev[k]
      if not n then
        n, sin[k], sout[k], stot[k], scost[k] = 0, 0, 0, 0, 0
        used[#used + 1] = k
      end
      ev[k] = n + 1
      sin[k] = sin[k] + tin[i]
      sout[k] = sout[k] + tout[i]
      stot[k] = stot[k] + ttot[i]
      scost[k] = scost[k] + tcost[i]
    end
  end
  table.sort(used)
  local data = {}
  for _, k in ipairs(used) do
    do
      local start = base + k * size
      local label = labels[start]
      if not label then
        label = time.format(start)
        labels[start] = label
      end
      data[#data + 1] = tidy {
        timestamp = label, totalEvents = ev[k], totalInputTokens = sin[k],
        totalOutputTokens = sout[k], totalTokens = stot[k], totalCostCents = scost[k],
      }
    end
  end
  return data
end

return M
