-- Enforcement: which quotas and rate limits apply to an event or a dimension map, how much of each
-- is used (always computed from the stored events, so a restart or a kill -9 cannot forget usage),
-- the track decision, and quota alerts.
--
-- Windows and periods are the UTC ones holding the server's clock ("now"); an event counts in the
-- window and period holding its timestamp. A tracked event is refused when
--   a rate limit: events in the current window + 1 > limitValue, or
--   a quota: it is already used up (used >= limitValue) or used + this event's amount > limitValue,
-- judged before the event is added; rate limits first, then quotas.
local store = require "limitry_server.store"
local admin = require "limitry_server.admin"
local time = require "limitry_server.time"
local encode = require "limitry_server.encode"

local M = {}

local COLUMN = { customer_id = "customerId", event_type = "eventType", model = "model", provider = "provider" }

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

-- Does stored event ev match every filter?
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

-- Sum of metric over the stored events matching filters with a timestamp in [s, e).
local function used(filters, metric, s, e)
  local ts, events = store.cols.ts, store.events
  local sum = 0
  for i = 1, store.count do
    local t = ts[i]
    if t >= s and t < e then
      local ev = events[i]
      if event_matches(filters, ev) then sum = sum + amount(metric, ev) end
    end
  end
  if metric == "total_cost_cents" then sum = round_cost(sum) end
  return sum
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

local function applicable(kind, dims)
  return admin.list(kind, function(rec)
    return (kind ~= "rateLimit" or rec.enabled ~= false) and applies(rec.dimensionFilters, dims)
  end)
end

-- POST /quotas/check: read-only.
function M.check_quotas(dims, now)
  local out, allowed = encode.array(), true
  for _, q in ipairs(applicable("quota", dims)) do
    local s, e = time.period(now, q.period)
    local st = M.quota_status(q, used(q.dimensionFilters, q.metric, s, e))
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
    local st = M.rate_status(r, used(r.dimensionFilters, "total_events", s, e), e)
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
    local count = used(r.dimensionFilters, "total_events", s, e)
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
    local u = used(q.dimensionFilters, q.metric, s, e)
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

-- After events were stored: fires every alert whose threshold the new events crossed, once per
-- period. `batch` is the list of {event, ts} just appended.
function M.after_append(batch, now)
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
          local after = used(q.dimensionFilters, q.metric, s, e)
          local mark = q.limitValue * alert.threshold / 100
          if after - delta < mark and after >= mark then
            local ok, err = admin.fire(alert, s, { threshold = alert.threshold, triggeredAt = time.format(now),
              used = after, limit = q.limitValue })
            if not ok then ngx.log(ngx.ERR, "limitry-local: cannot store an alert firing: ", err) end
          end
        end
      end
    end
  end
end

return M
