-- limitry.cli: the `limitry` command (bin/limitry). Usage reports, event imports, quotas, rate
-- limits, alerts, checks and the local server from a shell, on the library's public API
-- (limitry.new, its resources, client:request, limitry.recorder). See docs/cli.md.
--
-- Exit status: 0 done; 1 a Limitry or network error (or a failure of the local server); 2 a usage
-- error (a wrong flag or value, no API key); 3 a "no" (check or track refused, local status: not
-- running); 4 events import: lines that were not imported (bad input, or refused by Limitry).
-- Errors are one line on stderr, "limitry: ...", naming the fix where there is one. The API key
-- is never printed.
local argparse = require "argparse"
local limitry = require "limitry"
local format = require "limitry.cli.format"
local dates = require "limitry.cli.dates"

local M = {}

M.EXIT = { OK = 0, ERROR = 1, USAGE = 2, NO = 3, BAD_INPUT = 4 }
local EXIT = M.EXIT

-- A failure that ends the command: one line on stderr (none when msg is nil) and an exit status.
local Failure = {}
local function fail(code, msg) error(setmetatable({ code = code, msg = msg }, Failure), 0) end
local function usage_error(msg) fail(EXIT.USAGE, msg) end

local METRICS = { "totalEvents", "totalTokens", "totalInputTokens", "totalOutputTokens", "totalCostCents" }
local METRIC_TITLES = { "events", "total tokens", "input tokens", "output tokens", "cost" }
local CHART_METRICS = { cost = "totalCostCents", events = "totalEvents", tokens = "totalTokens",
  input = "totalInputTokens", output = "totalOutputTokens" }
local GROUPS = { model = "model", provider = "provider", customer = "customer_id", customer_id = "customer_id",
  ["customer-id"] = "customer_id", event_type = "event_type", ["event-type"] = "event_type" }

-- Shell and terminal -----------------------------------------------------------------------------

local function run_ok(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

local tty_cache = {}
local function is_tty(fd)
  if tty_cache[fd] == nil then tty_cache[fd] = run_ok("test -t " .. fd) end
  return tty_cache[fd]
end

-- The terminal's width: $COLUMNS, else what the terminal says, else 80.
local function terminal_width()
  local c = tonumber(os.getenv("COLUMNS") or "")
  if c and c >= 20 then return math.floor(c) end
  local p = io.popen("stty size </dev/tty 2>/dev/null")
  if p then
    local out = p:read("*a") or ""
    p:close()
    local cols = tonumber(out:match("^%s*%d+%s+(%d+)"))
    if cols and cols >= 20 then return cols end
  end
  return 80
end

local function unicode_terminal()
  for _, name in ipairs { "LC_ALL", "LC_CTYPE", "LANG" } do
    local v = os.getenv(name)
    if v and v ~= "" then return v:lower():find("utf%-?8") ~= nil end
  end
  return false
end

-- Two clocks: `now` for durations and rates (limitry's monotonic seconds, sub-millisecond), and
-- os.time() for dates (--from 7d, the default --to).
local now = (function()
  local ok, core = pcall(require, "limitry.core")
  return ok and core.now or os.time
end)()

-- Output ----------------------------------------------------------------------------------------

local function out(line)
  local ok = io.stdout:write(line, "\n")
  if not ok then fail(EXIT.ERROR) end -- a closed pipe (| head): stop quietly
end

local function emit_json(ctx, value, array_hint)
  out(format.json(value, ctx.pretty, array_hint))
end

local function emit_lines(lines)
  for _, line in ipairs(lines) do out(line) end
end

-- Numbers for people, by metric.
local function plural(n, word)
  return format.thousands(n) .. " " .. word .. (n == 1 and "" or "s")
end

local function show_metric(name, v)
  if name == "totalCostCents" then return format.dollars(v) end
  return format.thousands(v)
end

-- Arguments ---------------------------------------------------------------------------------------

-- "k=v" pairs of a repeated option into a table (`what` names the option in errors).
local function pairs_of(list, what)
  local t = {}
  for _, item in ipairs(list or {}) do
    local k, v = item:match("^([^=]+)=(.*)$")
    if not k or k == "" then usage_error(what .. " takes NAME=VALUE (got '" .. item .. "')") end
    if t[k] ~= nil then usage_error(what .. " " .. k .. " is given twice") end
    t[k] = v
  end
  return t
end

-- Properties: NAME=VALUE (a string) or NAME:=JSON (a number, boolean or string as JSON).
local function properties_of(list)
  local t
  for _, item in ipairs(list or {}) do
    t = t or {}
    local k, json = item:match("^([^=:]+):=(.*)$")
    local v
    if k then
      v = limitry.decode(json)
      if type(v) ~= "number" and type(v) ~= "boolean" and type(v) ~= "string" then
        usage_error("--property " .. k .. ":= needs a JSON number, boolean or string (got '" .. json .. "')")
      end
    else
      k, v = item:match("^([^=]+)=(.*)$")
      if not k then usage_error("--property takes NAME=VALUE or NAME:=JSON (got '" .. item .. "')") end
    end
    if t[k] ~= nil then usage_error("--property " .. k .. " is given twice") end
    t[k] = v
  end
  return t
end

local function number_arg(v, flag, whole, min, max)
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n ~= n or n == math.huge or n == -math.huge or (whole and n % 1 ~= 0) or (min and n < min) or (max and n > max) then
    local what = whole and "a whole number" or "a number"
    if min and max then
      what = what .. " from " .. min .. " to " .. max
    elseif min then
      what = what .. (min == 0 and " >= 0" or " >= " .. min)
    end
    usage_error(flag .. " must be " .. what .. " (got '" .. tostring(v) .. "')")
  end
  if whole and math.tointeger then n = math.tointeger(n) end
  return n
end

-- The [from, to) range of a usage command: defaults to this month so far.
local function date_range(a)
  local t = os.time()
  local from_text, from_t = dates.parse(a.from or "mtd", t)
  if not from_text then usage_error("--from " .. from_t) end
  local to_text, to_t
  if a.to then
    to_text, to_t = dates.parse(a.to, t)
    if not to_text then usage_error("--to " .. to_t) end
  else
    to_t = math.floor(t) + 1 -- now, this second included
    to_text = dates.iso(to_t)
  end
  if from_t and to_t and from_t >= to_t then
    usage_error("--from (" .. from_text .. ") must come before --to (" .. to_text .. ")")
  end
  return from_text, to_text, from_t, to_t
end

-- The flag behind an argument of the library (its errors name the Lua argument).
local FLAGS = { customer_id = "--customer", limit_value = "--limit", dimension_filters = "--filter",
  properties = "--property", group_by = "--by", start_date = "--from", end_date = "--to", dimensions = "--dimension",
  id = "ID", quota_id = "QUOTA_ID", path = "PATH" }

-- An argument error of the library ("quotas:create: metric must be ...") in the flags' words.
local function flag_words(msg)
  local rest = tostring(msg):gsub("^[%w_.]+:[%w_]+: ", ""):gsub("^limitry%.[%w_]+: ", "")
  local name, tail = rest:match("^([%a_]+)(%s.*)$")
  if name and (FLAGS[name] or name:find("^[a-z]+_[a-z_]+$") or name == "metric" or name == "period" or name == "window"
    or name == "threshold" or name == "name" or name == "model" or name == "provider" or name == "limit"
    or name == "cursor" or name == "timestamp") then
    return (FLAGS[name] or ("--" .. name:gsub("_", "-"))) .. tail
  end
  return rest
end

-- Calls the library: argument errors it raises are usage errors (exit 2); a runtime failure
-- (nil, msg, err) is exit 1 with a hint at the fix.
local function call(ctx, fn, ...)
  local ok, res, msg, err = pcall(fn, ...)
  if not ok then
    if getmetatable(res) == Failure then error(res, 0) end
    usage_error(flag_words(res))
  end
  if res == nil then
    local hint = ""
    if err and err.name == "AuthenticationError" then
      hint = err.status == 403 and "; the key may not make this call (check --key or LIMITRY_API_KEY)"
        or "; check --key or LIMITRY_API_KEY"
    elseif err and err.is and err:is("NetworkError") then
      hint = "; is Limitry reachable at " .. ctx.base_url_shown() .. "? (--base-url or LIMITRY_BASE_URL)"
    elseif err and err.name == "RateLimitError" and err.retry_after then
      hint = "; try again in " .. math.ceil(err.retry_after) .. " s"
    end
    fail(EXIT.ERROR, tostring(msg) .. hint)
  end
  return res
end

-- Commands ----------------------------------------------------------------------------------------

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

local function metric_columns(first_title, first_align)
  local cols = { { title = first_title, align = first_align } }
  for i = 1, #METRICS do cols[#cols + 1] = { title = METRIC_TITLES[i], align = "right" } end
  return cols
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
  if ctx.output == "csv" then
    out(format.csv_row { by, METRICS[1], METRICS[2], METRICS[3], METRICS[4], METRICS[5] })
    for _, r in ipairs(res.data) do
      out(format.csv_row({ r.dimension, r[METRICS[1]], r[METRICS[2]], r[METRICS[3]], r[METRICS[4]], r[METRICS[5]] }, 6))
    end
    return
  end
  out(range_title(from, to, a) .. ", by " .. by)
  local rows = {}
  for i, r in ipairs(res.data) do
    rows[i] = { r.dimension or "(none)" }
    for j, m in ipairs(METRICS) do rows[i][j + 1] = show_metric(m, r[m]) end
  end
  emit_lines(format.table(metric_columns(by:gsub("_", " ")), rows))
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
  if ctx.output == "csv" then
    out(format.csv_row { "timestamp", METRICS[1], METRICS[2], METRICS[3], METRICS[4], METRICS[5] })
    for _, p in ipairs(res.data) do
      out(format.csv_row({ p.timestamp, p[METRICS[1]], p[METRICS[2]], p[METRICS[3]], p[METRICS[4]], p[METRICS[5]] }, 6))
    end
    return
  end
  out(range_title(from, to, a) .. ", per " .. interval)
  local rows = {}
  for i, p in ipairs(res.data) do
    rows[i] = { p.timestamp }
    for j, m in ipairs(METRICS) do rows[i][j + 1] = show_metric(m, p[m]) end
  end
  emit_lines(format.table(metric_columns("bucket"), rows))
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

-- events list | record | import

local EVENT_COLUMNS = { "id", "timestamp", "customer_id", "event_type", "model", "provider", "input_tokens", "output_tokens",
  "total_tokens", "latency_ms", "cost_cents", "idempotency_key", "properties" }
local WIRE = { customer_id = "customerId", event_type = "eventType", input_tokens = "inputTokens",
  output_tokens = "outputTokens", total_tokens = "totalTokens", latency_ms = "latencyMs", cost_cents = "costCents",
  idempotency_key = "idempotencyKey" }

H["events list"] = function(ctx, a)
  local q = { customer_id = a.customer, model = a.model, event_type = a.event_type, cursor = a.cursor }
  q.limit = number_arg(a.limit, "--limit", true, 1, 100) or (a.all and 100 or nil)
  local client = ctx.client()
  local events = client:events()
  local fmt = ctx.output
  local widths -- table output: the columns' widths so far (the header is printed once)
  local count = 0
  local first_json = true
  if fmt == "csv" then out(format.csv_row(EVENT_COLUMNS)) end
  if fmt == "json" and a.all then io.stdout:write("[") end
  local page
  repeat
    page = call(ctx, events.list, events, q)
    for _, ev in ipairs(page.data) do
      count = count + 1
      if fmt == "ndjson" then
        out(format.json(ev))
      elseif fmt == "json" and a.all then
        local ok = io.stdout:write(first_json and "\n" or ",\n", format.json(ev))
        if not ok then fail(EXIT.ERROR) end
        first_json = false
      elseif fmt == "csv" then
        local row = {}
        for i, name in ipairs(EVENT_COLUMNS) do row[i] = ev[WIRE[name] or name] end
        out(format.csv_row(row, #EVENT_COLUMNS))
      end
    end
    if fmt == "json" and not a.all then emit_json(ctx, page) end
    if fmt == "table" then
      local rows = {}
      for i, ev in ipairs(page.data) do
        rows[i] = { ev.timestamp or "", ev.customerId or "", ev.eventType or "", ev.model or "",
          format.thousands(ev.inputTokens or 0), format.thousands(ev.outputTokens or 0),
          ev.costCents and format.dollars(ev.costCents) or "", ev.id or "" }
      end
      local cols = { { title = "timestamp" }, { title = "customer" }, { title = "event type" }, { title = "model" },
        { title = "input", align = "right" }, { title = "output", align = "right" }, { title = "cost", align = "right" },
        { title = "id" } }
      if rows[1] then
        local first = widths == nil
        widths = widths or {}
        local lines = format.table(cols, rows, widths)
        for i = first and 1 or 3, #lines do out(lines[i]) end -- the header once
      end
    end
    q.cursor = page.nextCursor
  until not (a.all and page.hasMore and page.nextCursor)
  if fmt == "json" and a.all then out(first_json and "]" or "\n]") end
  if fmt == "table" then
    if count == 0 then out("(no events)") end
    if page.hasMore and page.nextCursor and not ctx.quiet then
      io.stderr:write("limitry: more events: add --cursor ", page.nextCursor, " (or --all for every page)\n")
    end
  end
end

-- An event from the flags of `events record` and `track`.
local function event_of(a)
  local ev = {
    customer_id = a.customer, event_type = a.event_type, model = a.model, provider = a.provider,
    input_tokens = number_arg(a.input_tokens, "--input-tokens", true, 0),
    output_tokens = number_arg(a.output_tokens, "--output-tokens", true, 0),
    total_tokens = number_arg(a.total_tokens, "--total-tokens", true, 0),
    latency_ms = number_arg(a.latency_ms, "--latency-ms", true, 0),
    cost_cents = number_arg(a.cost_cents, "--cost-cents", false, 0),
    idempotency_key = a.idempotency_key,
    properties = properties_of(a.property),
  }
  if a.timestamp then
    local text, t = dates.parse(a.timestamp, os.time())
    if not text then usage_error("--timestamp " .. t) end
    ev.timestamp = text
  end
  return ev
end

H["events record"] = function(ctx, a)
  local client = ctx.client()
  local res = call(ctx, client:events().record, client:events(), event_of(a))
  if ctx.quiet then return end
  if ctx.output == "json" then return emit_json(ctx, res) end
  if ctx.output == "csv" then
    out(format.csv_row { "id", "status" })
    return out(format.csv_row({ res.id, res.status }, 2))
  end
  local list = { { "id", res.id } }
  if res.status then list[2] = { "status", res.status } end
  emit_lines(format.pairs_table(list))
end

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

local function cell_of(v)
  if type(v) == "boolean" then return v and "yes" or "no" end
  return format.cell(v)
end

local function emit_records(ctx, rows, columns, titles)
  if ctx.output == "json" then return emit_json(ctx, { data = rows }) end
  if ctx.output == "csv" then
    out(format.csv_row(columns))
    for _, r in ipairs(rows) do
      local cells = {}
      for i, c in ipairs(columns) do
        local v = r[c]
        if type(v) == "table" then v = format.json(v) end
        cells[i] = v
      end
      out(format.csv_row(cells, #columns))
    end
    return
  end
  if not rows[1] then return out("(none)") end
  local cols, t = {}, {}
  for i, title in ipairs(titles) do
    cols[i] = { title = title, align = (title == "limit" or title == "threshold" or title == "used") and "right" or nil }
  end
  for i, r in ipairs(rows) do
    t[i] = {}
    for j = 1, #titles do t[i][j] = cell_of(r[columns[j]]) end
  end
  emit_lines(format.table(cols, t))
end

local function emit_record(ctx, res)
  if ctx.output == "json" then return emit_json(ctx, res) end
  local keys = {}
  for k in pairs(res) do keys[#keys + 1] = k end
  table.sort(keys, function(x, y)
    if x == "id" then return y ~= "id" end
    if y == "id" then return false end
    return x < y
  end)
  if ctx.output == "csv" then
    local cells = {}
    for i, k in ipairs(keys) do cells[i] = type(res[k]) == "table" and format.json(res[k]) or res[k] end
    out(format.csv_row(keys))
    return out(format.csv_row(cells, #keys))
  end
  local list = {}
  for i, k in ipairs(keys) do list[i] = { k, cell_of(res[k]) } end
  emit_lines(format.pairs_table(list))
end

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

for _, group in ipairs { "quotas", "rate-limits" } do
  H[group .. " list"] = function(ctx)
    local r, info = resource(ctx, group)
    local res = call(ctx, r.list, r)
    emit_records(ctx, res.data, info.columns, info.titles)
  end
  H[group .. " get"] = function(ctx, a)
    local r = resource(ctx, group)
    emit_record(ctx, call(ctx, r.get, r, a.id))
  end
  H[group .. " create"] = function(ctx, a)
    local r = resource(ctx, group)
    local res = call(ctx, r.create, r, limit_fields(a, group, false))
    if ctx.quiet then return out(res.id) end
    emit_record(ctx, res)
  end
  H[group .. " update"] = function(ctx, a)
    local r = resource(ctx, group)
    local res = call(ctx, r.update, r, a.id, limit_fields(a, group, true))
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

H["alerts list"] = function(ctx, a)
  local r, info = resource(ctx, "alerts")
  local res = call(ctx, r.list, r, a.quota_id)
  emit_records(ctx, res.data, info.columns, info.titles)
end
H["alerts get"] = function(ctx, a)
  local r = resource(ctx, "alerts")
  emit_record(ctx, call(ctx, r.get, r, a.id))
end
H["alerts create"] = function(ctx, a)
  local r = resource(ctx, "alerts")
  local res = call(ctx, r.create, r, a.quota_id, { threshold = number_arg(a.threshold, "--threshold", true, 1, 100) })
  if ctx.quiet then return out(res.id) end
  emit_record(ctx, res)
end
H["alerts update"] = function(ctx, a)
  local r = resource(ctx, "alerts")
  local res = call(ctx, r.update, r, a.id, { threshold = number_arg(a.threshold, "--threshold", true, 1, 100) })
  if ctx.quiet then return end
  emit_record(ctx, res)
end
H["alerts delete"] = function(ctx, a)
  local r = resource(ctx, "alerts")
  local res = call(ctx, r.delete, r, a.id)
  if ctx.quiet then return end
  if ctx.output == "json" then return emit_json(ctx, res) end
  if ctx.output == "csv" then
    out("id,success")
    return out(format.csv_row({ a.id, res.success }, 2))
  end
  out((res.success and "deleted " or "not deleted: ") .. "alert " .. a.id)
end
H["alerts history"] = function(ctx, a)
  local r = resource(ctx, "alerts")
  local res = call(ctx, r.history, r, a.id)
  emit_records(ctx, res.data, { "threshold", "triggeredAt", "used", "limit" }, { "threshold", "triggeredAt", "used", "limit" })
end

H["project"] = function(ctx)
  local client = ctx.client()
  emit_record(ctx, call(ctx, client:project().get, client:project()))
end

-- Raw calls: limitry get|post|put|delete PATH
local function raw(method)
  return function(ctx, a)
    local path = a.path
    if path:sub(1, 1) ~= "/" then path = "/" .. path end
    local client = ctx.client()
    if client.base_url:find("/v1$") then path = path:gsub("^/v1/", "/") end
    local body = a.data
    if body == "-" then
      body = io.stdin:read("*a")
    elseif body and body:sub(1, 1) == "@" then
      local f, err = io.open(body:sub(2), "rb")
      if not f then usage_error("--data " .. body .. ": " .. tostring(err)) end
      body = f:read("*a")
      f:close()
    end
    if body and limitry.decode(body) == nil then usage_error("--data is not JSON") end
    if method ~= "GET" and method ~= "DELETE" and body == nil then body = "{}" end
    local opts = a.idempotent and { idempotent = true } or nil
    local res = call(ctx, client.request, client, method, path, body, opts)
    emit_json(ctx, res)
  end
end
H["get"], H["post"], H["put"], H["delete"] = raw("GET"), raw("POST"), raw("PUT"), raw("DELETE")

-- events import

local function progress_printer(size)
  local width = terminal_width()
  return function(s, final)
    if final then
      io.stderr:write("\r\027[K")
      return io.stderr:flush()
    end
    local elapsed = now() - s.started
    local rate = elapsed > 0 and s.sent / elapsed or 0
    local line = string.format("%s sent  %s lines  %s ev/s", format.thousands(s.sent), format.thousands(s.lines),
      format.thousands(math.floor(rate)))
    if s.bad > 0 then line = line .. "  " .. format.thousands(s.bad) .. " bad" end
    if size and size > 0 and s.position then
      local frac = math.min(1, s.position / size)
      local eta = frac > 0 and elapsed / frac - elapsed or nil
      local bar_w = math.max(10, math.min(40, width - format.width(line) - 22))
      local filled = math.floor(frac * bar_w + 0.5)
      line = string.format("[%s%s] %3d%%  %s", string.rep("#", filled), string.rep(".", bar_w - filled),
        math.floor(frac * 100), line)
      if eta and frac < 1 then line = line .. string.format("  ETA %d:%02d", math.floor(eta / 60), math.floor(eta % 60)) end
    end
    io.stderr:write("\r", line:sub(1, width - 1), "\027[K")
    io.stderr:flush()
  end
end

H["events import"] = function(ctx, a)
  local import = require "limitry.cli.import"
  local source = a.file
  if source == "-" and a.key == "-" then usage_error("--key - and an import from stdin both need stdin: give the key in LIMITRY_API_KEY") end
  local input, size, first_line
  if source == "-" then
    input = io.stdin
  else
    local err
    input, err = io.open(source, "rb")
    if not input then usage_error("cannot read " .. source .. ": " .. tostring(err):gsub("^[^:]*: ", "")) end
    size = input:seek("end")
    input:seek("set")
  end
  local fmt = a.format or "auto"
  if fmt == "auto" then
    if source:lower():find("%.csv$") then
      fmt = "csv"
    elseif source:lower():find("%.ndjson$") or source:lower():find("%.jsonl$") or source:lower():find("%.json$") then
      fmt = "ndjson"
    else
      -- Sniff: NDJSON lines start with "{". The first line read is handed to the import.
      first_line = input:read("*l")
      fmt = first_line and first_line:match("^[\239\187\191%s]*{") and "ndjson" or "csv"
    end
  end
  if fmt ~= "ndjson" and fmt ~= "csv" then usage_error("--format must be auto, ndjson or csv (got '" .. fmt .. "')") end
  local scope = a.key_scope
  if scope and not scope:match("^[%w_.:]+$") or (scope and #scope > 64) then
    usage_error("--key-scope takes up to 64 letters, digits, '_', '.' or ':' (got '" .. scope .. "')")
  end
  local batch_size = number_arg(a.batch_size, "--batch-size", true, 1, 1000) or 1000
  local concurrency = number_arg(a.concurrency, "--concurrency", true, 1, 64) or 2
  local give_up = number_arg(a.give_up, "--give-up", false, 0) or 60
  local client
  if not a.dry_run then client = ctx.client { max_retries = 0, timeout = number_arg(a.timeout, "--timeout", false, 0.001) or 30 } end
  local shown, max_shown = 0, a.show_errors and number_arg(a.show_errors, "--show-errors", true, 0) or 20
  local errors_file
  if a.errors then
    local err
    errors_file, err = io.open(a.errors, "wb")
    if not errors_file then usage_error("--errors " .. a.errors .. ": " .. tostring(err)) end
  end
  local progress = (not ctx.quiet) and (a.progress or (a.progress == nil and is_tty(2))) and progress_printer(size) or nil
  local label = source == "-" and "stdin" or source
  local s = import.run {
    input = input, first_line = first_line, size = size, format = fmt, strict = a.strict, dry_run = a.dry_run, key_scope = scope,
    batch_size = batch_size, concurrency = concurrency, give_up = give_up, client = client, now = now,
    progress = progress,
    bad = function(line, reason)
      if errors_file then errors_file:write(label, ":", tostring(line or "?"), ": ", reason, "\n") end
      if a.strict then return end -- the failure below names it
      shown = shown + 1
      if shown <= max_shown then
        if progress then io.stderr:write("\r\027[K") end
        io.stderr:write("limitry: ", label, ":", tostring(line or "?"), ": ", reason, "\n")
      end
    end,
  }
  if input ~= io.stdin then input:close() end
  if errors_file then errors_file:close() end
  if client then client:close() end
  if shown > max_shown then
    io.stderr:write("limitry: ", format.thousands(shown - max_shown), " more bad lines not shown",
      a.errors and "" or " (--errors FILE lists them all)", "\n")
  end
  local rate = s.seconds > 0 and s.sent / s.seconds or 0
  local summary = { file = label, format = fmt, lines = s.lines, events = s.events, sent = s.sent, batches = s.batches, bad = s.bad,
    refused = s.refused, seconds = math.floor(s.seconds * 1000 + 0.5) / 1000, eventsPerSecond = math.floor(rate + 0.5),
    dryRun = a.dry_run or nil }
  local stop = s.stopped
  if stop and stop.kind == "error" then
    local e = stop.err
    local hint
    if e.name == "AuthenticationError" then
      hint = "check --key or LIMITRY_API_KEY"
    elseif e:is("NetworkError") then
      hint = "is Limitry reachable at " .. ctx.base_url_shown() .. "? (--base-url or LIMITRY_BASE_URL)"
    else
      hint = "try again later"
    end
    fail(EXIT.ERROR, "import stopped after line " .. format.thousands(s.lines) .. " (" .. plural(s.sent, "event")
      .. " sent): " .. e.msg .. "; " .. hint .. ", then run the same command again: events already sent count once")
  end
  if not ctx.quiet then
    if ctx.output == "json" then
      emit_json(ctx, summary)
    elseif ctx.output == "csv" then
      out("file,format,lines,events,sent,bad,refused,seconds,eventsPerSecond")
      out(format.csv_row({ label, fmt, s.lines, s.events, s.sent, s.bad, s.refused, summary.seconds, summary.eventsPerSecond }, 9))
    else
      if a.dry_run then
        out(string.format("%s: %s, %s to send, %s bad (dry run: nothing sent)", label, plural(s.lines, "line"),
          plural(s.events, "event"), format.thousands(s.bad)))
      else
        out(string.format("%s: %s sent in %.1f s (%s events/s); %s, %s bad%s", label, plural(s.sent, "event"),
          s.seconds, format.thousands(summary.eventsPerSecond), plural(s.lines, "line"), format.thousands(s.bad),
          s.refused > 0 and (" (" .. format.thousands(s.refused) .. " refused by Limitry)") or ""))
      end
    end
  end
  if stop and stop.kind == "header" then fail(EXIT.BAD_INPUT, label .. ":" .. stop.line .. ": " .. stop.reason) end
  if stop and a.strict then
    fail(EXIT.BAD_INPUT, "stopped at " .. label .. ":" .. tostring(stop.line or "?") .. " (--strict): " .. stop.reason
      .. "; the lines before it were imported")
  end
  if s.bad > 0 then return EXIT.BAD_INPUT end
end

-- limitry local start | stop | status: the bundled server (server/ in a checkout; in the rock, the
-- rock's own folder, beside bin/: copy_directories = { "server" }).

local function server_home(ctx, a)
  local candidates = {}
  if a.server_dir then candidates[1] = a.server_dir end
  local env = os.getenv("LIMITRY_SERVER_HOME")
  if env and env ~= "" then candidates[#candidates + 1] = env end
  local script = ctx.script or ""
  local bin = script:match("^(.*)/[^/]+$") or "."
  candidates[#candidates + 1] = bin .. "/../server"
  for _, dir in ipairs(candidates) do
    local f = io.open(dir .. "/limitry_local.lua", "rb")
    if f then
      f:close()
      return dir
    end
    if dir == a.server_dir then usage_error("--server-dir " .. dir .. " holds no limitry_local.lua") end
  end
  fail(EXIT.ERROR, "cannot find the local server (server/limitry_local.lua beside bin/); "
    .. "pass --server-dir DIR or set LIMITRY_SERVER_HOME")
end

local function load_server(ctx, a)
  local home = server_home(ctx, a)
  package.path = home .. "/?.lua;" .. package.path
  local ok, mod = pcall(require, "limitry_local")
  if not ok then
    local msg = tostring(mod):match("^[^\n]*")
    if msg:find("module 'socket' not found", 1, true) then
      fail(EXIT.ERROR, "the local server needs luasocket (Debian: apt-get install lua-socket)")
    end
    fail(EXIT.ERROR, "cannot load the local server from " .. home .. ": " .. msg)
  end
  return mod
end

local function server_folder(a)
  if a.dir then return a.dir end
  local env = os.getenv("LIMITRY_SERVER_DIR")
  if env and env ~= "" then return env end
  return ".limitry-local"
end

H["local start"] = function(ctx, a)
  local server = load_server(ctx, a)
  local argv = { "start", "--dir", server_folder(a) }
  if a.port then argv[#argv + 1] = "--port"; argv[#argv + 1] = tostring(number_arg(a.port, "--port", true, 0, 65535)) end
  if a.server_key then argv[#argv + 1] = "--key"; argv[#argv + 1] = a.server_key end
  if a.empty then argv[#argv + 1] = "--empty" end
  if a.faults then argv[#argv + 1] = "--faults" end
  -- The server's own command line prints the export lines, or one error line and exits 1.
  server.main(argv)
  if not ctx.quiet and is_tty(1) then
    io.stderr:write("limitry: local server started; configure this shell with: eval \"$(limitry local start)\"\n")
  end
end

H["local stop"] = function(ctx, a)
  local server = load_server(ctx, a)
  local dir = server_folder(a)
  local ok, res = pcall(server.stop, dir)
  if not ok then fail(EXIT.ERROR, tostring(res):gsub("^limitry%-local: ", "") .. "") end
  if not ctx.quiet then out("stopped the local server (pid " .. tostring(res) .. ") in " .. dir) end
end

H["local status"] = function(ctx, a)
  local server = load_server(ctx, a)
  local dir = server_folder(a)
  local info
  if server.running then
    info = server.running(dir)
  else
    local f = io.open(dir .. "/logs/nginx.pid", "rb")
    local pid = f and tonumber(f:read("*l") or "")
    if f then f:close() end
    if pid and server.alive(pid) then info = { pid = pid, dir = dir } end
  end
  if not info then
    if not ctx.quiet then out("not running (no server in " .. dir .. ")") end
    return EXIT.NO
  end
  if ctx.quiet then return end
  if ctx.output == "json" then return emit_json(ctx, { running = true, pid = info.pid, dir = info.dir or dir, baseUrl = info.base_url }) end
  out("running: pid " .. tostring(info.pid) .. (info.base_url and (", " .. info.base_url) or "") .. ", data in " .. (info.dir or dir))
end

-- The parser -------------------------------------------------------------------------------------

local OUTPUTS = {
  default = { "table", "json", "csv" },
  events_list = { "table", "json", "ndjson", "csv" },
}

-- The options every command takes (listed last in its --help, under "Common options"). They may
-- also come before the command (`limitry -o json usage summary`): the root's go to root_<name>
-- (argparse resets an option's target when a subcommand declares it again) and are merged after.
local COMMON = { "key", "base_url", "timeout", "output", "quiet" }
local function add_globals(cmd, outputs, piped, root)
  local function target(o, name)
    if root then o:target("root_" .. name) end
    return o
  end
  local list = {
    target(cmd:option("--key", "API key (default: $LIMITRY_API_KEY); '-' reads it from stdin. Never printed.")
      :argname("KEY"), "key"),
    target(cmd:option("--base-url", "Limitry's URL (default: $LIMITRY_BASE_URL, else " .. limitry.DEFAULT_BASE_URL .. ")")
      :argname("URL"), "base_url"),
    target(cmd:option("--timeout", "seconds per request (default 30)"):argname("SECONDS"), "timeout"),
  }
  if outputs then
    list[#list + 1] = target(cmd:option("-o --output", "output: " .. table.concat(outputs, ", ") .. " (default: table "
      .. "on a terminal, " .. (piped or "json") .. " otherwise)"):argname("FMT"), "output")
  end
  list[#list + 1] = target(cmd:flag("-q --quiet", "no progress and no messages; on a change, no output (create prints "
    .. "the new id)"), "quiet")
  cmd._common = list
end

-- Groups a leaf's own options first and the common ones after (argparse lists groups in order).
local function group_options(cmd)
  local common, own = {}, {}
  for _, o in ipairs(cmd._common or {}) do common[o] = true end
  for _, o in ipairs(cmd._options) do
    if not common[o] and o._name ~= "-h" then own[#own + 1] = o end
  end
  local unpack = table.unpack or unpack
  if own[1] then cmd:group("Options", unpack(own)) end
  if cmd._common then cmd:group("Common options", unpack(cmd._common)) end
end

local function add_filters(cmd)
  cmd:option("--from", "start (included): YYYY-MM-DD, YYYY-MM, ISO 8601, now, today, yesterday, wtd, mtd, ytd, "
    .. "7d, 24h, 2w (default: mtd)"):argname("WHEN")
  cmd:option("--to", "end (excluded), as --from (default: now)"):argname("WHEN")
  cmd:option("--customer", "only this customer_id"):argname("ID")
  cmd:option("--model", "only this model"):argname("MODEL")
  cmd:option("--event-type", "only this event type"):argname("TYPE")
end

local function add_event_flags(cmd)
  cmd:option("--customer", "customer_id (required)"):argname("ID")
  cmd:option("--event-type", "event_type (required), such as model_call"):argname("TYPE")
  cmd:option("--model", "model"):argname("MODEL")
  cmd:option("--provider", "provider"):argname("NAME")
  cmd:option("--input-tokens", "input tokens"):argname("N")
  cmd:option("--output-tokens", "output tokens"):argname("N")
  cmd:option("--total-tokens", "total tokens (default: input + output)"):argname("N")
  cmd:option("--latency-ms", "latency in milliseconds"):argname("N")
  cmd:option("--cost-cents", "cost in cents (fractions allowed)"):argname("CENTS")
  cmd:option("--property", "a property NAME=VALUE (a string) or NAME:=JSON (number, boolean); repeatable")
    :argname("NAME=VALUE"):count("*")
  cmd:option("--idempotency-key", "the event's key (default: a random one); the same key counts once"):argname("KEY")
  cmd:option("--timestamp", "when it happened, as --from of usage (default: the server's time)"):argname("WHEN")
end

local function build_parser()
  local paths = {} -- parser -> "limitry usage summary"
  local p = argparse("limitry", "The Limitry command line: usage reports, event imports, quotas, rate limits and checks.")
    :epilog("Exit status: 0 done, 1 a Limitry or network error, 2 a usage error, 3 a \"no\" (check, track, "
      .. "local status), 4 lines not imported (events import). Key and URL: LIMITRY_API_KEY, LIMITRY_BASE_URL. "
      .. "Every command takes --help. More: docs/cli.md.")
    :help_max_width(100)
  p:command_target("command")
  p:flag("--version", "print the version and exit"):action(function()
    print("limitry " .. limitry.VERSION .. " (limitry-lua, " .. (jit and jit.version or _VERSION) .. ")")
    os.exit(0)
  end)
  add_globals(p, { "table", "json", "ndjson", "csv" }, nil, true)
  paths[p] = "limitry"
  local function group(name, description)
    local g = p:command(name):summary(description):description(description)
    g:command_target("sub")
    paths[g] = "limitry " .. name
    return g
  end
  local function leaf(parent, name, description, outputs, piped)
    local c = parent:command(name):summary(description):description(description)
    add_globals(c, outputs, piped)
    paths[c] = paths[parent] .. " " .. name
    return c
  end

  local usage = group("usage", "Usage reports: totals, a breakdown, a timeseries (with a chart).")
  local c = leaf(usage, "summary", "Totals over a range: events, tokens, cost.", OUTPUTS.default)
  add_filters(c)
  c = leaf(usage, "breakdown", "Totals per model, customer, event type or provider.", OUTPUTS.default)
  add_filters(c)
  c:option("--by", "model (default), customer, event-type or provider"):argname("DIMENSION")
  c = leaf(usage, "timeseries", "Totals per hour, day or week; --chart draws them.", OUTPUTS.default)
  add_filters(c)
  c:option("--interval", "hour, day (default) or week"):argname("INTERVAL")
  c:option("--chart", "draw the series: bars (default) or spark (a sparkline as wide as the terminal)")
    :args("?"):argname("STYLE")
  c:option("--metric", "what --chart draws: cost (default), events, tokens, input, output"):argname("METRIC")
  c:option("--width", "chart width in columns (default: the terminal's)"):argname("N")
  c:flag("--ascii", "draw with ASCII characters only")

  local customers = group("customers", "A customer's usage.")
  c = leaf(customers, "usage", "Totals of one customer over a range.", OUTPUTS.default)
  c:argument("customer_id", "the customer")
  c:option("--from", "start (included), as in usage summary (default: mtd)"):argname("WHEN")
  c:option("--to", "end (excluded) (default: now)"):argname("WHEN")

  local events = group("events", "List, record and import events.")
  c = leaf(events, "list", "Events, newest first: one page, or --all pages.", OUTPUTS.events_list, "ndjson")
  c:option("--customer", "only this customer_id"):argname("ID")
  c:option("--model", "only this model"):argname("MODEL")
  c:option("--event-type", "only this event type"):argname("TYPE")
  c:option("--limit", "events per page, 1 to 100 (default 50; 100 with --all)"):argname("N")
  c:option("--cursor", "the page after this cursor (nextCursor of the previous page)"):argname("CURSOR")
  c:flag("--all", "every page, following the cursor")
  c = leaf(events, "record", "Record one event.", OUTPUTS.default)
  add_event_flags(c)
  c = leaf(events, "import", "Import events from NDJSON or CSV; safe to run again (see docs/cli.md).", { "table", "json", "csv" })
  c:argument("file", "an NDJSON or CSV file, or - for stdin")
  c:option("--format", "auto (default: by extension, else by the first line), ndjson or csv"):argname("FORMAT")
  c:flag("--strict", "stop at the first bad line (the lines before it are imported)")
  c:flag("--dry-run", "check every line, send nothing")
  c:option("--key-scope", "a name mixed into the derived idempotency keys (files whose lines could coincide)")
    :argname("NAME")
  c:option("--batch-size", "events per request, 1 to 1000 (default 1000)"):argname("N")
  c:option("--concurrency", "requests in flight (default 2)"):argname("N")
  c:option("--give-up", "seconds without a delivery before stopping (default 60)"):argname("SECONDS")
  c:option("--errors", "write every bad line's number and reason to FILE"):argname("FILE")
  c:option("--show-errors", "bad lines shown on stderr (default 20)"):argname("N")
  c:flag("--progress", "show the progress line even when stderr is not a terminal")
  c:flag("--no-progress", "never show the progress line"):target("progress"):action("store_false")

  for _, name in ipairs { "quotas", "rate-limits" } do
    local noun = name == "quotas" and "quota" or "rate limit"
    local g = group(name, name == "quotas" and "Quotas: tokens, events or cost per hour, day, week or month."
      or "Rate limits: events per second, minute or hour.")
    leaf(g, "list", "Every " .. noun .. ".", OUTPUTS.default)
    c = leaf(g, "get", "One " .. noun .. ".", OUTPUTS.default)
    c:argument("id", "its id")
    for _, verb in ipairs { "create", "update" } do
      c = leaf(g, verb, verb == "create" and ("Create a " .. noun .. ".") or ("Change a " .. noun .. "'s fields."),
        OUTPUTS.default)
      if verb == "update" then c:argument("id", "its id") end
      c:option("--name", "its name"):argname("NAME")
      c:option("--limit", name == "quotas" and "the limit (tokens, events or cents)" or "events per window"):argname("N")
      if name == "quotas" then
        c:option("--metric", "total_tokens, total_events or total_cost_cents"):argname("METRIC")
        c:option("--period", "hour, day, week or month"):argname("PERIOD")
      else
        c:option("--window", "second, minute or hour"):argname("WINDOW")
        c:flag("--enable", "enabled (the default on create)")
        c:flag("--disable", "disabled: neither enforced nor listed by checks")
      end
      c:option("--filter", "applies to events with NAME=VALUE (customer_id, model, event_type, provider or a "
        .. "property); repeatable" .. (verb == "update" and "; replaces the filters" or "")):argname("NAME=VALUE"):count("*")
      if verb == "update" then c:flag("--no-filters", "remove every filter") end
    end
    c = leaf(g, "delete", "Delete a " .. noun .. ".", OUTPUTS.default)
    c:argument("id", "its id")
  end

  local alerts = group("alerts", "Quota alerts: fire when usage reaches a percentage of a quota.")
  c = leaf(alerts, "list", "A quota's alerts.", OUTPUTS.default)
  c:argument("quota_id", "the quota")
  c = leaf(alerts, "get", "One alert.", OUTPUTS.default)
  c:argument("id", "its id")
  c = leaf(alerts, "create", "Add an alert to a quota.", OUTPUTS.default)
  c:argument("quota_id", "the quota")
  c:option("--threshold", "percent of the quota, 1 to 100 (required)"):argname("PERCENT")
  c = leaf(alerts, "update", "Change an alert's threshold.", OUTPUTS.default)
  c:argument("id", "its id")
  c:option("--threshold", "percent of the quota, 1 to 100 (required)"):argname("PERCENT")
  c = leaf(alerts, "delete", "Delete an alert.", OUTPUTS.default)
  c:argument("id", "its id")
  c = leaf(alerts, "history", "When an alert fired.", OUTPUTS.default)
  c:argument("id", "its id")

  c = leaf(p, "check", "May this customer make a call? Exit 0 allowed, 3 refused.", OUTPUTS.default)
  c:option("--customer", "customer_id"):argname("ID")
  c:option("--model", "model"):argname("MODEL")
  c:option("--event-type", "event type"):argname("TYPE")
  c:option("--provider", "provider"):argname("NAME")
  c:option("--dimension", "another dimension NAME=VALUE (a property); repeatable"):argname("NAME=VALUE"):count("*")
  c:option("--only", "quotas or rate-limits (default: both)"):argname("KIND")

  c = leaf(p, "track", "Check the limits, then record the event if allowed. Exit 0 allowed, 3 refused.", OUTPUTS.default)
  add_event_flags(c)

  leaf(p, "project", "The project the key belongs to.", OUTPUTS.default)

  for _, verb in ipairs { "get", "post", "put", "delete" } do
    c = leaf(p, verb, verb:upper() .. " any path of the API and print its JSON answer (raw).", { "json" })
    c:argument("path", "relative to the base URL, such as /quotas (a leading /v1 is dropped)")
    if verb == "post" or verb == "put" then
      c:option("-d --data", "the JSON body; @FILE reads a file, - reads stdin"):argname("JSON")
      c:flag("--idempotent", "safe to send twice: retried like a read")
    end
  end

  local loc = group("local", "The bundled local Limitry-compatible server (nginx + Lua).")
  for _, verb in ipairs { "start", "stop", "status" } do
    local desc = verb == "start" and "Start it and print export lines: eval \"$(limitry local start)\"."
      or verb == "stop" and "Stop it." or "Is it running? Exit 0 yes, 3 no."
    c = loc:command(verb):summary(desc):description(desc)
    paths[c] = "limitry local " .. verb
    c:option("--dir", "its folder (default: $LIMITRY_SERVER_DIR, else .limitry-local)"):argname("DIR")
    c:option("--server-dir", "where the server's code is (default: found beside bin/)"):argname("DIR")
    c:flag("-q --quiet", "no messages")
    if verb == "start" then
      c:option("--port", "its port (default: a free one)"):argname("N")
      c:option("--key", "the API key it accepts (default: lm_local_test_key)"):argname("KEY"):target("server_key")
      c:flag("--empty", "no sample data on the first start of a folder")
      c:flag("--faults", "test-only fault injection (see server/lua/limitry_server/faults.lua)")
    end
    if verb == "status" then c:option("-o --output", "table or json"):argname("FORMAT") end
  end
  for parser in pairs(paths) do
    if parser ~= p and parser._common then group_options(parser) end
  end
  return p, paths
end
M.build_parser = build_parser

-- Main ------------------------------------------------------------------------------------------

local function output_format(a, command)
  local allowed, piped = OUTPUTS.default, "json"
  if command == "events list" then allowed, piped = OUTPUTS.events_list, "ndjson" end
  if command == "get" or command == "post" or command == "put" or command == "delete" then allowed = { "json" } end
  local o = a.output
  if o then
    for _, v in ipairs(allowed) do if v == o then return o end end
    usage_error("--output must be one of " .. table.concat(allowed, ", ") .. " for " .. command .. " (got '" .. o .. "')")
  end
  if command == "events import" then return is_tty(1) and "table" or "json" end
  return is_tty(1) and "table" or piped
end

-- Runs the command line (argv without the program name: arg). Returns the exit status.
function M.main(argv, opts)
  opts = opts or {}
  local list = {}
  for i = 1, #argv do list[i] = argv[i] end
  local parser, paths = build_parser()
  local secret -- the key, redacted from anything printed
  local function report(msg)
    if msg == nil then return end
    msg = tostring(msg):gsub("\n", "; ")
    if secret and #secret > 0 then
      local i = 1
      while true do
        local s, e = msg:find(secret, i, true)
        if not s then break end
        msg = msg:sub(1, s - 1) .. "[REDACTED]" .. msg:sub(e + 1)
        i = s + 10
      end
    end
    io.stderr:write("limitry: ", msg, "\n")
  end

  local function run()
    parser.error = function(current, msg)
      local path = paths[current] or "limitry"
      usage_error(msg:gsub("\n", "; ") .. " (see " .. path .. " --help)")
    end
    local a = parser:parse(list)
    for _, name in ipairs(COMMON) do
      if a[name] == nil then a[name] = a["root_" .. name] end
    end
    local command = a.command
    if a.sub then command = command .. " " .. a.sub end
    local handler = H[command]
    if not handler then usage_error("unknown command '" .. command .. "' (see limitry --help)") end
    local ctx = { script = opts.script, quiet = a.quiet }
    if command:find("^local ") then
      ctx.output = a.output or "table"
      if ctx.output ~= "table" and ctx.output ~= "json" then usage_error("--output must be table or json") end
    else
      ctx.output = output_format(a, command)
    end
    ctx.pretty = ctx.output == "json" and is_tty(1)
    local client
    local base_url_text
    ctx.base_url_shown = function() return base_url_text or "the base URL" end
    ctx.client = function(extra)
      if client and not extra then return client end
      local key = a.key
      if key == "-" then
        key = io.stdin:read("*l")
        if not key or key:match("^%s*$") then usage_error("--key -: no key on stdin") end
        key = key:match("^%s*(.-)%s*$")
        a.key = key
      end
      if key == nil or key == "" then key = os.getenv("LIMITRY_API_KEY") end
      if key == nil or key == "" then
        usage_error("no API key: set LIMITRY_API_KEY or pass --key KEY (--key - reads it from stdin)")
      end
      secret = key
      local o = { api_key = key, base_url = a.base_url, timeout = number_arg(a.timeout, "--timeout", false, 0.001, 1e6) }
      for k, v in pairs(extra or {}) do o[k] = v end
      local ok, c = pcall(limitry.new, o)
      if not ok then
        local msg = tostring(c):gsub("^limitry%.new: ", "")
        if msg:find("^base_url") then
          usage_error("the base URL (--base-url or LIMITRY_BASE_URL) must be an http:// or https:// URL without query, such as "
            .. limitry.DEFAULT_BASE_URL)
        end
        if msg:find("^api_key") then usage_error("the API key must not contain spaces or control characters") end
        usage_error(msg)
      end
      base_url_text = c.base_url
      if not extra then client = c end
      return c
    end
    local code = handler(ctx, a)
    if client then client:close() end
    return code or EXIT.OK
  end

  local ok, res = xpcall(run, function(e)
    if getmetatable(e) == Failure then return e end
    if type(e) == "string" and e:find("interrupted!", 1, true) then
      return setmetatable({ code = 130, msg = "interrupted (an import can be run again: events already sent count once)" }, Failure)
    end
    return { internal = true, msg = tostring(e), trace = debug.traceback("", 2) }
  end)
  if ok then
    io.stdout:flush()
    return res
  end
  io.stdout:flush()
  if getmetatable(res) == Failure then
    report(res.msg)
    return res.code
  end
  report("internal error: " .. res.msg:match("^[^\n]*") .. " (please report it; LIMITRY_DEBUG=1 shows where)")
  if os.getenv("LIMITRY_DEBUG") == "1" then io.stderr:write(res.trace, "\n") end
  return EXIT.ERROR
end

return M
