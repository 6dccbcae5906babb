-- limitry.cli.usage: `limitry usage summary|breakdown|timeseries` and `limitry customers usage`:
-- usage reports as tables, JSON or CSV, and a timeseries drawn as bars or a sparkline.
local format = require "limitry.cli.format"
local dates = require "limitry.cli.dates"
local common = require "limitry.cli.common"

local usage_error, number_arg, date_range, call = common.usage_error, common.number_arg, common.date_range, common.call
local out, emit_json, emit_lines, show_metric = common.out, common.emit_json, common.emit_lines, common.show_metric
local terminal_width, unicode_terminal = common.terminal_width, common.unicode_terminal
local METRICS, METRIC_TITLES = common.METRICS, common.METRIC_TITLES

local CHART_METRICS = { cost = "totalCostCents", events = "totalEvents", tokens = "totalTokens",
  input = "totalInputTokens", output = "totalOutputTokens" }
local GROUPS = { model = "model", provider = "provider", customer = "customer_id", customer_id = "customer_id",
  ["customer-id"] = "customer_id", event_type = "event_type", ["event-type"] = "event_type" }

local H = {} -- "group sub" -> function(ctx, a)

-- usage summary | breakdown | timeseries
local function usage_filters(a)
  return { customer_id = a.customer, model = a.model, event_type = a.event_type }
end

local function range_title(from, to, a)
  local parts = { "from " .. from .. " to " .. to }
  if a.customer then parts[#parts + 1] = "customer " .. a.customer end
  if a.model then parts[#parts + 1] = "model " .. a.model end
  if a.event_type then parts[#parts + 1] = "event type " .. a.event_type end
  return table.concat(parts, ", ")
end

H["usage summary"] = function(ctx, a)
  local from, to = date_range(a)
  local q = usage_filters(a)
  q.start_date, q.end_date = from, to
  local client = ctx.client()
  local res = call(ctx, client:usage().get_summary, client:usage(), q)
  if ctx.output == "json" then return emit_json(ctx, res) end
  if ctx.output == "csv" then
    out(format.csv_row(METRICS))
    local row = {}
    for i, m in ipairs(METRICS) do row[i] = res[m] end
    return out(format.csv_row(row, #METRICS))
  end
  out(range_title(from, to, a))
  local list = {}
  for i, m in ipairs(METRICS) do list[i] = { METRIC_TITLES[i], show_metric(m, res[m]) } end
  -- right-aligned values
  local w = 0
  for _, p in ipairs(list) do w = math.max(w, format.width(p[2])) end
  for _, p in ipairs(list) do p[2] = string.rep(" ", w - format.width(p[2])) .. p[2] end
  emit_lines(format.pairs_table(list))
end

-- Rows of a first column (the field `key` of each row) and the five metrics: CSV, or a table for
-- people under `title`. first: { CSV header, table title, what a table shows for a missing key }.
local function emit_metric_rows(ctx, data, key, first, title)
  if ctx.output == "csv" then
    out(format.csv_row { first[1], METRICS[1], METRICS[2], METRICS[3], METRICS[4], METRICS[5] })
    for _, r in ipairs(data) do
      out(format.csv_row({ r[key], r[METRICS[1]], r[METRICS[2]], r[METRICS[3]], r[METRICS[4]], r[METRICS[5]] }, 6))
    end
    return
  end
  out(title)
  local cols, rows = { { title = first[2] } }, {}
  for i = 1, #METRICS do cols[#cols + 1] = { title = METRIC_TITLES[i], align = "right" } end
  for i, r in ipairs(data) do
    rows[i] = { r[key] or first[3] }
    for j, m in ipairs(METRICS) do rows[i][j + 1] = show_metric(m, r[m]) end
  end
  emit_lines(format.table(cols, rows))
end

H["usage breakdown"] = function(ctx, a)
  local by = GROUPS[a.by or "model"]
  if not by then usage_error("--by must be one of model, customer, event-type, provider (got '" .. a.by .. "')") end
  local from, to = date_range(a)
  local q = usage_filters(a)
  q.start_date, q.end_date, q.group_by = from, to, by
  local client = ctx.client()
  local res = call(ctx, client:usage().get_breakdown, client:usage(), q)
  if ctx.output == "json" then return emit_json(ctx, res) end
  emit_metric_rows(ctx, res.data, "dimension", { by, (by:gsub("_", " ")), "(none)" }, range_title(from, to, a) .. ", by " .. by)
end

-- Label of a bucket start for charts.
local function bucket_label(ts, interval)
  if interval == "hour" then return (ts:sub(1, 10) .. " " .. ts:sub(12, 16)) end
  return ts:sub(1, 10)
end

-- The series over [from_t, to_t) with the buckets the server left out as zeros (charts only).
local function dense(series, interval, from_t, to_t, metric)
  local by_start, points = {}, {}
  local parsed_all = true
  for _, p in ipairs(series) do
    local t = dates.parse_iso(p.timestamp)
    if not t then parsed_all = false break end
    by_start[t] = (by_start[t] or 0) + (p[metric] or 0)
  end
  local step = dates.STEP[interval]
  if not parsed_all or not from_t or not to_t or (to_t - from_t) / step > 100000 then
    for i, p in ipairs(series) do points[i] = { bucket_label(p.timestamp, interval), p[metric] or 0, p.timestamp } end
    return points
  end
  local t = dates.bucket_start(from_t, interval)
  while t < to_t do
    local iso = dates.iso(t)
    points[#points + 1] = { bucket_label(iso, interval), by_start[t] or 0, iso }
    t = t + step
  end
  return points
end

H["usage timeseries"] = function(ctx, a)
  local interval = a.interval or "day"
  if not dates.STEP[interval] then usage_error("--interval must be one of hour, day, week (got '" .. interval .. "')") end
  local metric = CHART_METRICS[a.metric or "cost"]
  if not metric then usage_error("--metric must be one of cost, events, tokens, input, output (got '" .. a.metric .. "')") end
  local style = a.chart
  if type(style) == "table" then style = style[1] or "bars" end -- --chart [STYLE]
  if style ~= nil and style ~= "bars" and style ~= "spark" then
    usage_error("--chart takes bars or spark (got '" .. tostring(style) .. "')")
  end
  local from, to, from_t, to_t = date_range(a)
  local q = usage_filters(a)
  q.start_date, q.end_date, q.interval = from, to, interval
  local client = ctx.client()
  local res = call(ctx, client:usage().get_timeseries, client:usage(), q)
  if style then
    local width = number_arg(a.width, "--width", true, 20, 10000) or terminal_width()
    local unicode = unicode_terminal() and not a.ascii
    local points = dense(res.data, interval, from_t, to_t, metric)
    local title = (a.metric or "cost") .. " per " .. interval .. ", " .. range_title(from, to, a)
    if #points == 0 then
      out(title)
      return out("(no data)")
    end
    local chart = require "limitry.cli.chart"
    local show = function(v) return show_metric(metric, v) end
    if style == "bars" then
      out(title)
      return emit_lines(chart.bars(points, show, width, unicode))
    end
    local values, total, peak = {}, 0, 0
    for i, p in ipairs(points) do
      values[i] = p[2]
      total = total + p[2]
      if p[2] > peak then peak = p[2] end
    end
    local line, per = chart.sparkline(values, width, unicode)
    out(title)
    out(line)
    local first, last = points[1][1], points[#points][1]
    local tail = "total " .. show(total) .. ", peak " .. show(peak) .. " per " .. interval
    local head = first .. string.rep(" ", math.max(1, format.width(line) - #first - #last)) .. last
    out(head)
    return out(tail .. (per > 1 and (" (a character is " .. per .. " " .. interval .. "s)") or ""))
  end
  if ctx.output == "json" then return emit_json(ctx, res) end
  emit_metric_rows(ctx, res.data, "timestamp", { "timestamp", "bucket" }, range_title(from, to, a) .. ", per " .. interval)
end

H["customers usage"] = function(ctx, a)
  local from, to = date_range(a)
  local client = ctx.client()
  local res = call(ctx, client:customers().get_usage, client:customers(), a.customer_id, from, to)
  if ctx.output == "json" then return emit_json(ctx, res) end
  if ctx.output == "csv" then
    out(format.csv_row { "customer_id", METRICS[1], METRICS[2], METRICS[3], METRICS[4], METRICS[5] })
    return out(format.csv_row({ res.customerId, res[METRICS[1]], res[METRICS[2]], res[METRICS[3]], res[METRICS[4]],
      res[METRICS[5]] }, 6))
  end
  out(range_title(from, to, { customer = res.customerId }))
  local list = {}
  for i, m in ipairs(METRICS) do list[i] = { METRIC_TITLES[i], show_metric(m, res[m]) } end
  emit_lines(format.pairs_table(list))
end

return H
