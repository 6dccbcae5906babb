-- limitry.cli.common: what every command of `limitry` shares: the exit statuses and the failure
-- that ends a command, the terminal, output (lines, JSON, records), and the arguments read from
-- flags (numbers, NAME=VALUE pairs, date ranges, an event) with the library's argument errors put
-- in the flags' words.
local limitry = require "limitry"
local format = require "limitry.cli.format"
local dates = require "limitry.cli.dates"

local C = {}

C.EXIT = { OK = 0, ERROR = 1, USAGE = 2, NO = 3, BAD_INPUT = 4 }
local EXIT = C.EXIT

-- A failure that ends the command: one line on stderr (none when msg is nil) and an exit status.
local Failure = {}
C.Failure = Failure
local function fail(code, msg) error(setmetatable({ code = code, msg = msg }, Failure), 0) end
local function usage_error(msg) fail(EXIT.USAGE, msg) end

local METRICS = { "totalEvents", "totalTokens", "totalInputTokens", "totalOutputTokens", "totalCostCents" }
local METRIC_TITLES = { "events", "total tokens", "input tokens", "output tokens", "cost" }

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
    -- The library names where its key came from; here that was the command line's --key or the environment.
    msg = tostring(msg):gsub("key given to limitry%.new", ctx.key_source or "%0")
    fail(EXIT.ERROR, msg .. hint)
  end
  return res
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

C.fail, C.usage_error = fail, usage_error
C.METRICS, C.METRIC_TITLES = METRICS, METRIC_TITLES
C.is_tty, C.terminal_width, C.unicode_terminal, C.now = is_tty, terminal_width, unicode_terminal, now
C.out, C.emit_json, C.emit_lines, C.plural, C.show_metric = out, emit_json, emit_lines, plural, show_metric
C.pairs_of, C.number_arg, C.date_range, C.call, C.event_of = pairs_of, number_arg, date_range, call, event_of
C.cell_of, C.emit_records, C.emit_record = cell_of, emit_records, emit_record

return C
