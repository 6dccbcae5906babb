-- Enforcement: which quotas and rate limits apply to an event or a dimension map, how much of each
-- is used, the track decision, and quota alerts.
--
-- Windows and periods are the UTC ones holding the server's clock ("now"); an event counts in the
-- window and period holding its timestamp. A tracked event is refused when
--   a rate limit: events in the current window + 1 > limitValue, or
--   a quota: it is already used up (used >= limitValue) or used + this event's amount > limitValue,
-- judged before the event is added; rate limits first, then quotas.
--
-- Usage is kept as running counters, per limit and period start: an entry is computed once from the
-- store (its rollups; the raw rows of the period when a filter names a string property) when first
-- needed, then every event stored afterwards (recorded, batched or tracked, whatever its timestamp)
-- is added to the entry of its own period if that entry exists. So a decision costs the same with a
-- thousand or a million events stored, and stays exact: an entry always equals what a scan of the
-- stored events would sum. Entries are keyed by the limit's record (a weak table): an update makes a
-- new record, so a changed filter, period or metric starts afresh; at most MAX_PERIODS entries are
-- kept per limit (the oldest go first; a dropped entry is computed again if ever needed).
-- One nginx worker: a decision, its store and its counter updates run without yielding, so
-- concurrent tracks are judged one after another.
local admin = require "limitry_server.admin"
local time = require "limitry_server.time"
local encode = require "limitry_server.encode"
local query = require "limitry_server.query"

local M = {}

local COLUMN = { customer_id = "customerId", event_type = "eventType", model = "model", provider = "provider" }
M.MAX_PERIODS = 64

-- The dimension map of an event: the four named dimensions and its string properties (a property
-- never hides one of the four).
function M.dimensions(ev)
  local d = {}
  if ev.properties then
    for k, v in pairs(ev.properties) do if type(v) == "string" then d[k] = v end end
  end
  for dim, col in pairs(COLUMN) do d[dim] = ev[col] end
  return d
end

local function applies(filters, dims)
  for k, want in pairs(filters) do
    if dims[k] ~= want then return false end
  end
  return true
end
M.applies = applies

-- Does event ev match every filter?
local function event_matches(filters, ev)
  for k, want in pairs(filters) do
    local col = COLUMN[k]
    local have
    if col then
      have = ev[col]
    else
      local p = ev.properties
      have = p and p[k]
    end
    if have ~= want then return false end
  end
  return true
end

local function amount(metric, ev)
  if metric == "total_tokens" then return ev.totalTokens end
  if metric == "total_events" then return 1 end
  return ev.costCents
end

local function round_cost(v)
  if v < 9e9 then return math.floor(v * 1e6 + 0.5) / 1e6 end
  return v
end

-- record -> { [period start] = amount used (costs as summed), n = entries }
local counters = setmetatable({}, { __mode = "k" })

-- The sum of metric over the stored events matching filters with a timestamp in [s, e), from the store.
local function compute(filters, metric, s, e)
  local q = { start = s, ["end"] = e }
  local extra, params = {}, {}
  for k, v in pairs(filters) do
    local col = COLUMN[k]
    if col then
      q[col] = v
    else
      extra[#extra + 1] = " AND EXISTS (SELECT 1 FROM json_each(body, '$.properties') AS p"
        .. " WHERE p.key = ? AND p.type = 'text' AND p.value = ?)"
      params[#params + 1] = k
      params[#params + 1] = v
    end
  end
  if #extra > 0 then q.extra, q.extra_params = table.concat(extra), params end
  local groups = query.aggregate(q, nil, nil, nil, true)
  local m = groups[1]
  if not m then return 0 end
  if metric == "total_tokens" then return m.totalTokens end
  if metric == "total_events" then return m.totalEvents end
  return m.totalCostCents
end

-- The amount of `metric` used by limit `rec` in its period [s, e) (costs as summed).
local function used(rec, metric, s, e)
  local c = counters[rec]
  if not c then
    c = { n = 0 }
    counters[rec] = c
  end
  local v = c[s]
  if v == nil then
    v = compute(rec.dimensionFilters, metric, s, e)
    if c.n >= M.MAX_PERIODS then
      local oldest
      for k in pairs(c) do if k ~= "n" and (not oldest or k < oldest) then oldest = k end end
      c[oldest] = nil
      c.n = c.n - 1
    end
    c[s] = v
    c.n = c.n + 1
  end
  return v
end

-- Forgets every counter (they are computed again from the store when needed).
function M.reset() counters = setmetatable({}, { __mode = "k" }) end

local function reported(metric, u)
  if metric == "total_cost_cents" then return round_cost(u) end
  return u
end

function M.quota_status(q, u, exceeded)
  local remaining = q.limitValue - u
  if remaining < 0 then remaining = 0 end
  if exceeded == nil then exceeded = u >= q.limitValue end
  return { id = q.id, name = q.name, metric = q.metric, period = q.period, limit = q.limitValue,
    used = u, remaining = remaining, exceeded = exceeded }
end

function M.rate_status(r, count, reset, exceeded)
  local remaining = r.limitValue - count
  if remaining < 0 then remaining = 0 end
  if exceeded == nil then exceeded = count >= r.limitValue end
  return { id = r.id, name = r.name, window = r.window, limit = r.limitValue, remaining = remaining,
    reset = reset, exceeded = exceeded }
end

-- The enabled limits of each kind, in creation order, indexed by their customer_id filter: the
-- candidates for an event are those of its customer and those without a customer_id filter.
local indexed_version, index
local function candidates(kind, customer)
  if indexed_version ~= admin.version then
    index = {}
    for _, k in ipairs { "quota", "rateLimit" } do
      local by_customer, general = {}, {}
      for pos, rec in ipairs(admin.list(k)) do
        if k ~= "rateLimit" or rec.enabled ~= false then
          local c = rec.dimensionFilters.customer_id
          local list = general
          if c then
            list = by_customer[c] or {}
            by_customer[c] = list
          end
          list[#list + 1] = { pos, rec }
        end
      end
      local plain = {}
      for i, x in ipairs(general) do plain[i] = x[2] end
      index[k] = { by_customer = by_customer, general = general, plain = plain, merged = {} }
    end
    indexed_version = admin.version
  end
  local ix = index[kind]
  local a = customer and ix.by_customer[customer]
  if not a then return ix.plain end
  local out = ix.merged[customer]
  if out then return out end
  -- Merged back into creation order (once per customer with limits of its own and change of limits).
  local b, i, j = ix.general, 1, 1
  out = {}
  ix.merged[customer] = out
  while i <= #a or j <= #b do
    if j > #b or (i <= #a and a[i][1] < b[j][1]) then
      out[#out + 1] = a[i][2]
      i = i + 1
    else
      out[#out + 1] = b[j][2]
      j = j + 1
    end
  end
  return out
end

local function applicable(kind, dims)
  local out = encode.array()
  for _, rec in ipairs(candidates(kind, dims.customer_id)) do
    if applies(rec.dimensionFilters, dims) then out[#out + 1] = rec end
  end
  return out
end

-- POST /quotas/check: read-only.
function M.check_quotas(dims, now)
  local out, allowed = encode.array(), true
  for _, q in ipairs(applicable("quota", dims)) do
    local s, e = time.period(now, q.period)
    local st = M.quota_status(q, reported(q.metric, used(q, q.metric, s, e)))
    if st.exceeded then allowed = false end
    out[#out + 1] = st
  end
  return { allowed = allowed, quotas = out }
end

-- POST /rate-limits/check: read-only.
function M.check_rate_limits(dims, now)
  local out, allowed = encode.array(), true
  for _, r in ipairs(applicable("rateLimit", dims)) do
    local s, e = time.period(now, r.window)
    local st = M.rate_status(r, used(r, "total_events", s, e), e)
    if st.exceeded then allowed = false end
    out[#out + 1] = st
  end
  return { allowed = allowed, rateLimits = out }
end

-- The track decision for normalized event ev (timestamp ts) at now. Returns a table:
-- { allowed, rateLimits, quotas } and, for a refusal, { error, refused = { limit, remaining,
-- reset, period?, metric? } }. Statuses of an allowed event already count it.
function M.judge(ev, ts, now)
  local dims = M.dimensions(ev)
  local rates, quotas = encode.array(), encode.array()
  local refused, message
  for _, r in ipairs(applicable("rateLimit", dims)) do
    local s, e = time.period(now, r.window)
    local count = used(r, "total_events", s, e)
    local over = count + 1 > r.limitValue
    local inside = ts >= s and ts < e
    if over and not refused then
      refused = { limit = r.limitValue, remaining = 0, reset = e }
      message = string.format("Rate limit '%s' exceeded: %s events per %s", r.name, encode.number(r.limitValue), r.window)
    end
    rates[#rates + 1] = { r, count, e, over, inside }
  end
  -- Quotas are judged only when every rate limit passed (rate limits first), but reported anyway.
  for _, q in ipairs(applicable("quota", dims)) do
    local s, e = time.period(now, q.period)
    local u = reported(q.metric, used(q, q.metric, s, e))
    local a = amount(q.metric, ev)
    local after = u + a
    -- Costs are compared as they are reported, to a millionth of a cent (0.1 + 0.2 fits in 0.3).
    if q.metric == "total_cost_cents" then after = round_cost(after) end
    local over = u >= q.limitValue or after > q.limitValue
    local inside = ts >= s and ts < e
    if over and not refused then
      refused = { limit = q.limitValue, remaining = math.max(0, q.limitValue - u), reset = e, period = q.period,
        metric = q.metric }
      message = string.format("Quota '%s' exceeded: %s %s per %s", q.name, encode.number(q.limitValue), q.metric, q.period)
    end
    quotas[#quotas + 1] = { q, u, a, over, inside }
  end
  local allowed = refused == nil
  for i, x in ipairs(rates) do
    local count = (allowed and x[5]) and x[2] + 1 or x[2]
    rates[i] = M.rate_status(x[1], count, x[3], (not allowed and x[4]) or count >= x[1].limitValue)
  end
  for i, x in ipairs(quotas) do
    local u = (allowed and x[5]) and x[2] + x[3] or x[2]
    if x[1].metric == "total_cost_cents" then u = round_cost(u) end
    quotas[i] = M.quota_status(x[1], u, (not allowed and x[4]) or u >= x[1].limitValue)
  end
  return { allowed = allowed, rateLimits = rates, quotas = quotas, error = message, refused = refused }
end

-- Adds the events just stored (a list of {event, ts}) to the counters that exist for their periods.
local function count_in(batch)
  for _, kind in ipairs { "rateLimit", "quota" } do
    local last_customer, list
    for _, item in ipairs(batch) do
      local ev, ts = item[1], item[2]
      if ev.customerId ~= last_customer then
        last_customer, list = ev.customerId, candidates(kind, ev.customerId)
      end
      for _, rec in ipairs(list) do
        local c = counters[rec]
        if c and c.n > 0 then
          local s = time.period(ts, kind == "quota" and rec.period or rec.window)
          local v = c[s]
          if v ~= nil and event_matches(rec.dimensionFilters, ev) then
            c[s] = v + amount(kind == "quota" and rec.metric or "total_events", ev)
          end
        end
      end
    end
  end
end

-- After events were stored: counts them, then fires every alert whose threshold the new events
-- crossed, once per period. `batch` is the list of {event, ts} just appended.
function M.after_append(batch, now)
  local ok, err = pcall(count_in, batch)
  if not ok then
    -- Never leave a counter that missed an event: all are computed again from the store.
    ngx.log(ngx.ERR, "limitry-local: counters reset after an error: ", err)
    M.reset()
  end
  local alerts = admin.state.alert
  if #alerts.order == 0 then return end
  for _, aid in ipairs(alerts.order) do
    local alert = alerts.by_id[aid]
    local q = admin.get("quota", alert.quotaId)
    if q then
      local s, e = time.period(now, q.period)
      if admin.fired[aid] ~= s then
        local delta = 0
        for _, item in ipairs(batch) do
          local ev, ts = item[1], item[2]
          if ts >= s and ts < e and event_matches(q.dimensionFilters, ev) then delta = delta + amount(q.metric, ev) end
        end
        if delta > 0 then
          local after = reported(q.metric, used(q, q.metric, s, e))
          local mark = q.limitValue * alert.threshold / 100
          if after - delta < mark and after >= mark then
            local fired, ferr = admin.fire(alert, s, { threshold = alert.threshold, triggeredAt = time.format(now),
              used = after, limit = q.limitValue })
            if not fired then ngx.log(ngx.ERR, "limitry-local: cannot store an alert firing: ", ferr) end
          end
        end
      end
    end
  end
end

-- Computes the counter of the current period of limit `rec` of `kind` (or of every limit, at
-- start-up), so the first decision does not pay for it.
function M.warm(now, kind, rec)
  if rec then
    if kind == "quota" or (kind == "rateLimit" and rec.enabled ~= false) then
      local s, e = time.period(now, kind == "quota" and rec.period or rec.window)
      used(rec, kind == "quota" and rec.metric or "total_events", s, e)
    end
    return
  end
  for _, k in ipairs { "rateLimit", "quota" } do
    for _, r in ipairs(admin.list(k)) do M.warm(now, k, r) end
  end
end

return M
