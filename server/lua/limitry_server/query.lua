-- Aggregations over the event store: one linear scan over the columns per request, summing into
-- plain tables keyed by group (this is the server's hottest loop: 90 days hourly is 2,160 groups).
local store = require "limitry_server.store"
local time = require "limitry_server.time"

local M = {}

local GROUP_COLUMN = { model = "model", customer_id = "customerId", event_type = "eventType", provider = "provider" }
M.GROUP_BY = { "model", "customer_id", "event_type", "provider" }
M.INTERVALS = { "hour", "day", "week" }
local BUCKET_SECONDS = { hour = 3600, day = 86400, week = 7 * 86400 }

-- Sums the five metrics of the events in [q.start, q["end"]) that match q's filters, grouped by
-- `by`: nil (one group), a column (its value; false where absent) or { base, size } (the time bucket
-- numbered from base). The grouping is a branch, not a function argument: one call site calling
-- three different functions defeats LuaJIT's trace compiler (hourly series 2x slower).
-- Returns the metrics tables by group key and the keys in first-seen order.
local function aggregate(q, by_column, base, size)
  local c = store.cols
  local ts, cust, etype, model = c.ts, c.customerId, c.eventType, c.model
  local tin, tout, ttot, tcost = c.inputTokens, c.outputTokens, c.totalTokens, c.costCents
  local s, e = q.start, q["end"]
  local fc, fe, fm = q.customerId, q.eventType, q.model
  local floor = math.floor
  local ev, sin, sout, stot, scost, keys = {}, {}, {}, {}, {}, {}
  for i = 1, store.count do
    local t = ts[i]
    if t >= s and t < e
      and (fc == nil or cust[i] == fc)
      and (fe == nil or etype[i] == fe)
      and (fm == nil or model[i] == fm) then
      local k
      if by_column then
        k = by_column[i]
      elseif size then
        k = floor((t - base) / size)
      else
        k = 1
      end
      local n = ev[k]
      if not n then
        n, sin[k], sout[k], stot[k], scost[k] = 0, 0, 0, 0, 0
        keys[#keys + 1] = k
      end
      ev[k] = n + 1
      sin[k] = sin[k] + tin[i]
      sout[k] = sout[k] + tout[i]
      stot[k] = stot[k] + ttot[i]
      scost[k] = scost[k] + tcost[i]
    end
  end
  local groups = {}
  for _, k in ipairs(keys) do
    local cost = scost[k]
    -- Float sums drift (0.1 + 0.2): costs are reported to a millionth of a cent. Past 2^53 / 1e6
    -- a double has no millionths left to round (and cost * 1e6 could overflow).
    if cost < 9e9 then cost = floor(cost * 1e6 + 0.5) / 1e6 end
    groups[k] = {
      totalEvents = ev[k], totalInputTokens = sin[k], totalOutputTokens = sout[k], totalTokens = stot[k],
      totalCostCents = cost,
    }
  end
  return groups, keys
end

function M.summary(q)
  local groups = aggregate(q)
  return groups[1] or { totalEvents = 0, totalTokens = 0, totalInputTokens = 0, totalOutputTokens = 0, totalCostCents = 0 }
end

-- Rows sorted by cost, then events, then dimension, so the order is stable; events lacking the
-- attribute form one row whose dimension is `null_value`.
function M.breakdown(q, group_by, null_value)
  local col = store.cols[GROUP_COLUMN[group_by]]
  local groups, keys = aggregate(q, col)
  local rows = {}
  for n, k in ipairs(keys) do
    local m = groups[k]
    m.dimension = k or null_value
    rows[n] = m
  end
  table.sort(rows, function(a, b)
    if a.totalCostCents ~= b.totalCostCents then return a.totalCostCents > b.totalCostCents end
    if a.totalEvents ~= b.totalEvents then return a.totalEvents > b.totalEvents end
    return tostring(a.dimension) < tostring(b.dimension)
  end)
  return rows
end

local labels = {} -- bucket start -> ISO label; bounded by the buckets ever asked for

-- Only non-empty buckets, in time order. Buckets are numbered from the one holding the range
-- start, so the per-event work is one subtraction and one division.
function M.timeseries(q, interval)
  local size = BUCKET_SECONDS[interval]
  local base = time.bucket(q.start, interval)
  local groups, keys = aggregate(q, nil, base, size)
  table.sort(keys)
  local data = {}
  for n, k in ipairs(keys) do
    local start = base + k * size
    local label = labels[start]
    if not label then
      label = time.format(start)
      labels[start] = label
    end
    local m = groups[k]
    m.timestamp = label
    data[n] = m
  end
  return data
end

return M
