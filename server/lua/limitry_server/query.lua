-- Aggregations over the event store. A half-open range [start, end) is cut into pieces: whole days
-- from the day rollups, whole hours from the hour rollups, whole minutes from the minute rollups,
-- and only the partial minutes at its two ends from the raw rows (the covering index on ts). Each
-- piece is one SQL aggregate; the pieces are summed here. A query without filters reads the total
-- tables (a row per day, hour or minute); one with a customer seeks (t, the customer's first gid)
-- in the rollups' primary key for each t of the piece (a customer's groups are one range of gids:
-- store.lua), t running over the piece as far as the table holds rows; others read every group's
-- rows of the range, filtered by the gids of the groups that match (dims). So a query reads rollup
-- rows of the range's days (or hours for an hourly series), two days' hours and two hours'
-- minutes, plus two partial minutes of events, however many events are stored; and every event
-- counts exactly once: a rollup row holds the events with t <= ts < t + size (store.floor_to), and
-- the pieces' bounds are exact multiples of their size.
local store = require "limitry_server.store"
local time = require "limitry_server.time"

local floor = math.floor
local floor_to = store.floor_to

local M = {}

M.GROUP_BY = { "model", "customer_id", "event_type", "provider" }
M.INTERVALS = { "hour", "day", "week" }
local BUCKET_SECONDS = { hour = 3600, day = 86400, week = 7 * 86400 }
local GROUP_COLUMN = { model = "model", customer_id = "customer", event_type = "etype", provider = "provider" }
-- Filters a query may carry (the usage calls' three, and provider for quota and rate-limit filters).
local FILTER_COLUMN = { { "customerId", "customer" }, { "eventType", "etype" }, { "model", "model" }, { "provider", "provider" } }

local function ceil_to(x, size)
  local m = floor_to(x, size)
  if m < x then m = m + size end
  return m
end

-- The pieces of [s, e) as { size or false (raw rows), a, b }, using rollups no larger than max_size.
local function pieces(s, e, max_size)
  local out = {}
  local levels = store.LEVELS
  local function split(a, b, li)
    if a >= b then return end
    local size = levels[li]
    if not size then
      out[#out + 1] = { false, a, b }
      return
    end
    if size > max_size then return split(a, b, li + 1) end
    local A, B = ceil_to(a, size), floor_to(b, size)
    if A < B then
      split(a, A, li + 1)
      out[#out + 1] = { size, A, B }
      split(B, b, li + 1)
    elseif A == B then
      -- One boundary inside: cut there, so no raw piece ever spans two minutes (nor two buckets).
      split(a, A, li + 1)
      split(A, b, li + 1)
    else
      split(a, b, li + 1)
    end
  end
  split(s, e, 1)
  return out
end
M.pieces = pieces

-- SQL of one piece: the group column's value (or NULL), then count, input, output and cost sums.
-- Raw rows (size false): the events' own columns, `names` the filtered ones, `extra` raw-only SQL (a
-- property filter). Rollups: `customer` (the customer's gid range, two parameters), the other
-- filters through dims; `by_t`: the rows are sought t by t, for t = ?1, ?1 + size, ... below ?2.
local sql_cache = {}
local function piece_sql(size, group, names, customer, extra, by_t)
  local key = tostring(size) .. "|" .. (group or "") .. "|" .. names .. "|" .. (customer and "c" or "") .. "|"
    .. (extra or "") .. (by_t and "|t" or "")
  local sql = sql_cache[key]
  if sql then return sql end
  if not size then
    local g = (group == nil or group == "t") and "NULL" or group
    local where = {}
    for name in names:gmatch("%S+") do where[#where + 1] = " AND " .. name .. " = ?" end
    sql = "SELECT " .. g .. ", count(*), total(inp), total(outp), total(cost) FROM events WHERE ts >= ? AND ts < ?"
      .. table.concat(where) .. (extra or "")
    if group and group ~= "t" then sql = sql .. " GROUP BY " .. g end
  elseif names == "" and not customer and (group == nil or group == "t") then
    -- Without a filter or a group column, the totals: one row per minute, hour or day.
    if group then
      sql = "SELECT t, n, inp, outp, cost FROM " .. store.TOTAL[size] .. " WHERE t >= ? AND t < ?"
    else
      sql = "SELECT NULL, total(n), total(inp), total(outp), total(cost) FROM " .. store.TOTAL[size]
        .. " WHERE t >= ? AND t < ?"
    end
  else
    local g = group == nil and "NULL" or (group == "t" and "r.t" or "d." .. group)
    local tbl = store.ROLLUP[size]
    local from, where
    if by_t then
      from = "WITH RECURSIVE k(t) AS (SELECT ?1 UNION ALL SELECT t + " .. size .. " FROM k WHERE t + " .. size
        .. " < ?2) SELECT %s FROM k CROSS JOIN " .. tbl .. " r"
      where = { "r.t = k.t" }
    else
      from = "SELECT %s FROM " .. tbl .. " r"
      where = { "r.t >= ?1 AND r.t < ?2" }
    end
    if customer then where[#where + 1] = "r.gid >= ? AND r.gid < ?" end
    if names ~= "" then
      local dw = {}
      for name in names:gmatch("%S+") do dw[#dw + 1] = name .. " = ?" end
      where[#where + 1] = "r.gid IN (SELECT gid FROM dims WHERE " .. table.concat(dw, " AND ") .. ")"
    end
    if group and group ~= "t" then from = from .. " CROSS JOIN dims d ON d.gid = r.gid" end
    sql = from:format(g .. ", total(r.n), total(r.inp), total(r.outp), total(r.cost)") .. " WHERE "
      .. table.concat(where, " AND ")
    if group then sql = sql .. " GROUP BY " .. g end
  end
  sql_cache[key] = sql
  return sql
end

-- The first and last t a rollup table holds (nil when empty): a piece sought t by t runs no
-- further than the rows.
local function extent(db, tbl)
  local lo = db:row("SELECT min(t) FROM " .. tbl)[1]
  if lo == nil then return nil end
  return lo, db:row("SELECT max(t) FROM " .. tbl)[1]
end

-- Sums the five metrics of the events in [q.start, q["end"]) matching q's filters, grouped by
-- `group`: nil (one group), a column name, or "t" (time buckets of `size` seconds numbered from
-- `base`). Returns the metrics by group key (false: the attribute is absent) and the keys.
-- q.extra, q.extra_params: a filter the rollups cannot answer (SQL on the events: string properties),
-- applied to the raw rows of the whole range. raw_cost: the cost sums as summed, not rounded.
local function aggregate(q, group, base, size, raw_cost)
  local db = store.db()
  -- The filters on the events' columns; on the rollups the customer is a range of gids and the
  -- others are looked up in dims.
  local raw_names, raw_params, dim_names, dim_params = {}, {}, {}, {}
  for _, f in ipairs(FILTER_COLUMN) do
    local v = q[f[1]]
    if v ~= nil then
      raw_names[#raw_names + 1] = f[2]
      raw_params[#raw_params + 1] = v
      if f[2] ~= "customer" then
        dim_names[#dim_names + 1] = f[2]
        dim_params[#dim_params + 1] = v
      end
    end
  end
  raw_names, dim_names = table.concat(raw_names, " "), table.concat(dim_names, " ")
  local customer = q.customerId ~= nil
  local lo, hi -- the customer's gids, [lo, hi); none: no rollup row is the customer's
  if customer then
    local row = db:row("SELECT gid FROM dims WHERE customer = ? LIMIT 1", q.customerId)
    if row then
      lo = floor(row[1] / store.PER_CUSTOMER) * store.PER_CUSTOMER
      hi = lo + store.PER_CUSTOMER
    end
  end
  local list
  if q.extra then
    list = { { false, q.start, q["end"] } }
  else
    list = pieces(q.start, q["end"], size or math.huge)
  end
  local ev, sin, sout, scost, keys = {}, {}, {}, {}, {}
  local params = {}
  local extents = {}
  for _, piece in ipairs(list) do
    local psize, a, b = piece[1], piece[2], piece[3]
    local by_t = customer and psize
    if by_t then
      local e = extents[psize]
      if not e then
        local first, last = extent(db, store.ROLLUP[psize])
        e = (first and lo) and { first, last + psize } or { 0, 0 }
        extents[psize] = e
      end
      if a < e[1] then a = e[1] end
      if b > e[2] then b = e[2] end
    end
    if a < b then
      local st = db:prepare(psize and piece_sql(psize, group, dim_names, customer, nil, by_t)
        or piece_sql(false, group, raw_names, customer, q.extra))
      params[1], params[2] = a, b
      local n = 2
      if psize then
        if customer then params[3], params[4], n = lo, hi, 4 end
        for i = 1, #dim_params do params[n + i] = dim_params[i] end
        n = n + #dim_params
      else
        for i = 1, #raw_params do params[n + i] = raw_params[i] end
        n = n + #raw_params
        if q.extra_params then
          for i = 1, #q.extra_params do params[n + i] = q.extra_params[i] end
          n = n + #q.extra_params
        end
      end
      st:bind_all(params, n)
      while st:step() do
        local count = st:double(1)
        if count > 0 then
          local k
          if group == "t" then
            -- A rollup row's own start, or a raw piece's (it lies within one bucket).
            local t = psize and st:double(0) or a
            k = floor((t - base) / size)
            if base + k * size > t then k = k - 1 elseif base + (k + 1) * size <= t then k = k + 1 end
          elseif group then
            k = st:text(0)
            if k == nil or k == "" then k = false end
          else
            k = 1
          end
          local c = ev[k]
          if not c then
            c, sin[k], sout[k], scost[k] = 0, 0, 0, 0
            keys[#keys + 1] = k
          end
          ev[k] = c + count
          sin[k] = sin[k] + st:double(2)
          sout[k] = sout[k] + st:double(3)
          scost[k] = scost[k] + st:double(4)
        end
      end
      st:reset()
    end
  end
  local groups = {}
  for _, k in ipairs(keys) do
    local cost = scost[k]
    -- Float sums drift (0.1 + 0.2): costs are reported to a millionth of a cent. Past 2^53 / 1e6
    -- a double has no millionths left to round (and cost * 1e6 could overflow).
    if not raw_cost and cost < 9e9 then cost = floor(cost * 1e6 + 0.5) / 1e6 end
    groups[k] = {
      totalEvents = ev[k], totalInputTokens = sin[k], totalOutputTokens = sout[k], totalTokens = sin[k] + sout[k],
      totalCostCents = cost,
    }
  end
  return groups, keys
end
M.aggregate = aggregate

local EMPTY = { totalEvents = 0, totalTokens = 0, totalInputTokens = 0, totalOutputTokens = 0, totalCostCents = 0 }

function M.summary(q)
  local groups = aggregate(q)
  if groups[1] then return groups[1] end
  local m = {}
  for k, v in pairs(EMPTY) do m[k] = v end
  return m
end

-- Rows sorted by cost, then events, then dimension, so the order is stable; events lacking the
-- attribute form one row whose dimension is `null_value`.
function M.breakdown(q, group_by, null_value)
  local groups, keys = aggregate(q, GROUP_COLUMN[group_by])
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

-- Only non-empty buckets, in time order. Buckets are numbered from the one holding the range start.
function M.timeseries(q, interval)
  local size = BUCKET_SECONDS[interval]
  local base = time.bucket(q.start, interval)
  local groups, keys = aggregate(q, "t", base, size)
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
