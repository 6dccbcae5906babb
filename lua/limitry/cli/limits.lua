-- limitry.cli.limits: `limitry check` and `limitry track` (a decision and the limits' statuses),
-- and `limitry quotas|rate-limits|alerts list|get|create|update|delete` (alerts: history too).
local format = require "limitry.cli.format"
local common = require "limitry.cli.common"

local EXIT, usage_error, number_arg, pairs_of, call = common.EXIT, common.usage_error, common.number_arg, common.pairs_of,
  common.call
local out, emit_json, emit_lines, event_of = common.out, common.emit_json, common.emit_lines, common.event_of
local emit_records, emit_record = common.emit_records, common.emit_record

local H = {} -- "group sub" -> function(ctx, a)

-- Limit statuses (a check's or a track's) as rows: kind, id, name, used, limit, remaining, exceeded, per, reset.
local function status_rows(res)
  local rows = {}
  for _, q in ipairs(res.quotas or {}) do
    rows[#rows + 1] = { kind = "quota", id = q.id, name = q.name, used = q.used, limit = q.limit, remaining = q.remaining,
      exceeded = q.exceeded, per = q.period, metric = q.metric }
  end
  for _, r in ipairs(res.rateLimits or {}) do
    local used = (r.limit and r.remaining) and (r.limit - r.remaining) or nil
    rows[#rows + 1] = { kind = "rate limit", id = r.id, name = r.name, used = used, limit = r.limit, remaining = r.remaining,
      exceeded = r.exceeded, per = r.window, reset = r.reset }
  end
  return rows
end

local STATUS_CSV = { "kind", "id", "name", "used", "limit", "remaining", "exceeded", "per", "reset" }

local function emit_decision(ctx, res, verb)
  if ctx.quiet then return end
  if ctx.output == "json" then return emit_json(ctx, res) end
  local rows = status_rows(res)
  if ctx.output == "csv" then
    out(format.csv_row { "allowed", "retry_after", "kind", "id", "name", "used", "limit", "remaining", "exceeded", "per",
      "reset" })
    if #rows == 0 then return out(format.csv_row({ res.allowed, res.retry_after }, 2)) end
    for _, r in ipairs(rows) do
      local cells = { res.allowed, res.retry_after }
      for i, k in ipairs(STATUS_CSV) do cells[i + 2] = r[k] end
      out(format.csv_row(cells, #STATUS_CSV + 2))
    end
    return
  end
  local head = res.allowed and (verb .. ": allowed") or (verb .. ": refused")
  if res.id then head = head .. " (" .. res.id .. ")" end
  if not res.allowed and res.error then head = head .. ": " .. res.error end
  if not res.allowed and res.retry_after then head = head .. "; retry in " .. math.ceil(res.retry_after) .. " s" end
  out(head)
  if rows[1] then
    local cols = { { title = "kind" }, { title = "name" }, { title = "used", align = "right" }, { title = "limit", align = "right" },
      { title = "remaining", align = "right" }, { title = "per" }, { title = "exceeded" }, { title = "id" } }
    local t = {}
    for i, r in ipairs(rows) do
      local money = r.metric == "total_cost_cents"
      local show = money and format.dollars or format.thousands
      t[i] = { r.kind, r.name or "", r.used and show(r.used) or "", r.limit and show(r.limit) or "",
        r.remaining and show(r.remaining) or "", (r.per or "") .. (r.metric and (" (" .. r.metric .. ")") or ""),
        r.exceeded and "yes" or "no", r.id or "" }
    end
    emit_lines(format.table(cols, t))
  else
    out("(no quota or rate limit applies)")
  end
end

H["track"] = function(ctx, a)
  local client = ctx.client()
  local res = call(ctx, client.track, client, event_of(a))
  emit_decision(ctx, res, "track")
  return res.allowed and EXIT.OK or EXIT.NO
end

H["check"] = function(ctx, a)
  local dims = pairs_of(a.dimension, "--dimension")
  for flag, name in pairs { customer = "customer_id", model = "model", event_type = "event_type", provider = "provider" } do
    if a[flag] then
      if dims[name] then usage_error("--dimension " .. name .. " repeats --" .. flag:gsub("_", "-")) end
      dims[name] = a[flag]
    end
  end
  local client = ctx.client()
  local res = { allowed = true, quotas = {}, rateLimits = {} }
  if a.only ~= "rate-limits" then
    local q = call(ctx, client:quotas().check, client:quotas(), dims)
    res.quotas = q.quotas or {}
    res.allowed = res.allowed and q.allowed
  end
  if a.only ~= "quotas" then
    local r = call(ctx, client:rate_limits().check, client:rate_limits(), dims)
    res.rateLimits = r.rateLimits or {}
    res.allowed = res.allowed and r.allowed
  end
  emit_decision(ctx, res, "check")
  return res.allowed and EXIT.OK or EXIT.NO
end

-- quotas | rate-limits | alerts

local RESOURCE = {
  quotas = { method = "quotas", noun = "quota",
    columns = { "id", "name", "metric", "limitValue", "period", "dimensionFilters", "createdAt", "updatedAt" },
    titles = { "id", "name", "metric", "limit", "period", "filters" } },
  ["rate-limits"] = { method = "rate_limits", noun = "rate limit",
    columns = { "id", "name", "limitValue", "window", "enabled", "dimensionFilters", "createdAt", "updatedAt" },
    titles = { "id", "name", "limit", "window", "enabled", "filters" } },
  alerts = { method = "quota_alerts", noun = "alert",
    columns = { "id", "quotaId", "threshold", "createdAt", "updatedAt" },
    titles = { "id", "quota", "threshold", "created" } },
}

local function resource(ctx, group)
  local client = ctx.client()
  local r = client[RESOURCE[group].method](client)
  return r, RESOURCE[group]
end

local function limit_fields(a, group, partial)
  local f = {}
  f.name = a.name
  if group == "quotas" then
    f.metric = a.metric
    f.period = a.period
    f.limit_value = number_arg(a.limit, "--limit", false)
  else
    f.window = a.window
    f.limit_value = number_arg(a.limit, "--limit", true)
    if a.enable then f.enabled = true end
    if a.disable then f.enabled = false end
  end
  if a.filter and a.filter[1] then
    f.dimension_filters = pairs_of(a.filter, "--filter")
  elseif a.no_filters then
    f.dimension_filters = {}
  end
  if not partial then
    local missing = {}
    for _, k in ipairs(group == "quotas" and { "name", "metric", "limit", "period" } or { "name", "limit", "window" }) do
      if a[k] == nil then missing[#missing + 1] = "--" .. k end
    end
    if missing[1] then usage_error(group .. " create needs " .. table.concat(missing, ", ")) end
  end
  return f
end

-- The threshold of `alerts create|update` (the only field of an alert).
local function alert_fields(a)
  return { threshold = number_arg(a.threshold, "--threshold", true, 1, 100) }
end

for _, group in ipairs { "quotas", "rate-limits", "alerts" } do
  local fields = group == "alerts" and alert_fields or limit_fields
  H[group .. " list"] = function(ctx, a)
    local r, info = resource(ctx, group)
    local res
    if group == "alerts" then res = call(ctx, r.list, r, a.quota_id) else res = call(ctx, r.list, r) end
    emit_records(ctx, res.data, info.columns, info.titles)
  end
  H[group .. " get"] = function(ctx, a)
    local r = resource(ctx, group)
    emit_record(ctx, call(ctx, r.get, r, a.id))
  end
  H[group .. " create"] = function(ctx, a)
    local r = resource(ctx, group)
    local res
    if group == "alerts" then
      res = call(ctx, r.create, r, a.quota_id, fields(a))
    else
      res = call(ctx, r.create, r, fields(a, group, false))
    end
    if ctx.quiet then return out(res.id) end
    emit_record(ctx, res)
  end
  H[group .. " update"] = function(ctx, a)
    local r = resource(ctx, group)
    local res = call(ctx, r.update, r, a.id, fields(a, group, true))
    if ctx.quiet then return end
    emit_record(ctx, res)
  end
  H[group .. " delete"] = function(ctx, a)
    local r, info = resource(ctx, group)
    local res = call(ctx, r.delete, r, a.id)
    if ctx.quiet then return end
    if ctx.output == "json" then return emit_json(ctx, res) end
    if ctx.output == "csv" then
      out("id,success")
      return out(format.csv_row({ a.id, res.success }, 2))
    end
    out((res.success and "deleted " or "not deleted: ") .. info.noun .. " " .. a.id)
  end
end

H["alerts history"] = function(ctx, a)
  local r = resource(ctx, "alerts")
  local res = call(ctx, r.history, r, a.id)
  emit_records(ctx, res.data, { "threshold", "triggeredAt", "used", "limit" }, { "threshold", "triggeredAt", "used", "limit" })
end

return H
