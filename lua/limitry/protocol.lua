-- What the three usage calls send and what their answers mean. Pure functions, shared by the
-- blocking path, the async path and the OpenResty path.
local core = require "limitry.core"
local errors = require "limitry.errors"

local M = {}

M.GROUP_BY = { "model", "customer_id", "event_type", "provider" }
M.INTERVALS = { "hour", "day", "week" }
local METRICS = { "totalEvents", "totalTokens", "totalInputTokens", "totalOutputTokens", "totalCostCents" }
M.METRICS = METRICS

-- Each call: its path, the parameter that comes before the dates (if any) and its wire name.
M.CALLS = {
  get_summary = { path = "/usage", shape = "summary" },
  get_breakdown = { path = "/usage/breakdown", lead = "group_by", wire = "groupBy", allowed = M.GROUP_BY, shape = "breakdown" },
  get_timeseries = { path = "/usage/timeseries", lead = "interval", wire = "interval", allowed = M.INTERVALS, shape = "timeseries" },
}
local FILTERS = { { "customer_id", "customerId" }, { "event_type", "eventType" }, { "model", "model" } }

-- `where` names the call: "usage:get_summary", "events:record", ...
local function raise(where, msg) error(where .. ": " .. msg, 0) end

-- Both in C (core): a Lua pattern class costs ~150 instructions a byte, paid on every call whose
-- query changed. has_control(s): a byte 0-31 or 127; percent_encode(s): all but A-Z a-z 0-9 - . _ ~
-- as %XX.
local has_control = core.has_control
M.has_control = has_control

local function quote_list(list) return "'" .. table.concat(list, "', '") .. "'" end

-- Query values longer than this raise: no usage filter or date comes near it, and libcurl
-- refuses URLs of 8 MB.
M.MAX_PARAM_BYTES = 8192
local MAX_UNIX_TIME = 253402300799 -- 9999-12-31T23:59:59Z, the last time ISO 8601 writes in 4 digits

local function check_length(where, name, v)
  if #v > M.MAX_PARAM_BYTES then
    raise(where, name .. " must be at most " .. M.MAX_PARAM_BYTES .. " bytes (got " .. #v .. ")")
  end
end

local MONTHS = { "January", "February", "March", "April", "May", "June", "July", "August", "September",
  "October", "November", "December" }
local function days_in_month(y, m)
  if m == 2 then return ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) and 29 or 28 end
  return (m == 4 or m == 6 or m == 9 or m == 11) and 30 or 31
end
-- Days from 1970-01-01 to y-m-d (proleptic Gregorian, any year 0000-9999).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- Reads an ISO 8601 date-time as the local server does (server/lua/limitry_server/time.lua):
-- "YYYY-MM-DD", optionally followed by "T" (or "t", or a space) and HH:MM[:SS[.fraction]] and a
-- zone (Z, +HH:MM, -HH:MM or +HHMM; none means UTC), at most 9 fraction digits, offsets up to
-- 23:59. Returns the instant in unix seconds, or nil and why not, in words that name the field
-- (month 13, day 30 of February 2024, hour 25, an offset of +25:00...).
-- A piece of the caller's text for a message: at most 20 bytes of it.
local function piece(s) return #s > 20 and s:sub(1, 20) .. "..." or s end

local function parse_date(v)
  local y, mo, d, rest = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil, "is not an ISO 8601 date-time" end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 then return nil, "has month " .. mo .. " (months run 01 to 12)" end
  local last = days_in_month(y, mo)
  if d < 1 or d > last then
    return nil, "has day " .. d .. " (" .. MONTHS[mo] .. " " .. string.format("%04d", y) .. " has days 01 to " .. last .. ")"
  end
  local secs = days_from_civil(y, mo, d) * 86400
  if rest == "" then return secs end
  local h, mi, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
  if not h then
    return nil, "has '" .. piece(rest) .. "' after the date (expected 'T' and a time, HH:MM[:SS[.fraction]], then a zone)"
  end
  h, mi = tonumber(h), tonumber(mi)
  if h > 23 then return nil, "has hour " .. h .. " (hours run 00 to 23)" end
  if mi > 59 then return nil, "has minute " .. mi .. " (minutes run 00 to 59)" end
  local s, fraction = 0, 0
  local ss, after = tail:match("^:(%d%d)(.*)$")
  if ss then
    s, tail = tonumber(ss), after
    if s > 60 then return nil, "has second " .. s .. " (seconds run 00 to 60, 60 for a leap second)" end
    local digits, after_fraction = tail:match("^[.,](%d+)(.*)$")
    if digits then
      if #digits > 9 then return nil, "has a fraction of " .. #digits .. " digits (at most 9)" end
      fraction, tail = tonumber("0." .. digits), after_fraction
    end
  end
  local offset = 0
  if tail ~= "" and tail ~= "Z" and tail ~= "z" then
    local sign, oh, om = tail:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then
      return nil, "has time zone '" .. piece(tail) .. "' (expected Z, +HH:MM or -HH:MM, or none for UTC)"
    end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then
      return nil, "has time zone " .. tail .. " (an offset runs from -23:59 to +23:59)"
    end
    offset = (oh * 60 + om) * 60
    if sign == "-" then offset = -offset end
  end
  return secs + h * 3600 + mi * 60 + s - offset + fraction
end
M.parse_date = parse_date

-- Dates already read: text -> unix seconds. A loop that asks for the same range again pays a table
-- lookup, not the parse. Bounded: emptied when it reaches 256 entries.
local parsed, parsed_n = {}, 0

-- What an error shows of a value the caller gave: quoted, and cut when long.
local function shown(v)
  if #v > 64 then return "'" .. v:sub(1, 40) .. "...' (" .. #v .. " bytes)" end
  return "'" .. v .. "'"
end

-- An ISO 8601 string (sent unchanged) or unix seconds (sent as YYYY-MM-DDTHH:MM:SSZ, with
-- milliseconds when `keep_fraction` and the milliseconds are not 0). Seconds are cut, never
-- rounded, to the millisecond (or the second), so a time never moves into the next second, day
-- or month: 1704067199.9996 is 2023-12-31T23:59:59.999Z. Seconds and fraction come from one
-- decimal text rounded to the microsecond, so a value written with 3 decimals keeps them although
-- its double is a hair below (1704067200.001 is 1704067200.000999927...).
-- A string is checked here as the server would check it (parse_date), so a month 13 or the 30th of
-- February raises naming the argument instead of coming back as the server's 400 about `startDate`.
-- `max` (optional): the longest string allowed (default MAX_PARAM_BYTES).
-- Returns the text to send and the instant in unix seconds.
local function check_date(where, name, v, keep_fraction, max)
  if type(v) == "number" then
    if not (v >= 0 and v <= MAX_UNIX_TIME) then
      raise(where, name .. " must be a finite, non-negative unix time in seconds, at most " .. MAX_UNIX_TIME .. " (9999-12-31)")
    end
    local whole, ms = string.format("%.6f", v):match("^(%d+)%.(%d%d%d)")
    local keep = keep_fraction and ms ~= "000"
    -- The instant returned is the one sent: cut as the text is.
    return os.date("!%Y-%m-%dT%H:%M:%S", tonumber(whole)) .. (keep and "." .. ms or "") .. "Z",
      tonumber(whole) + (keep and tonumber(ms) / 1000 or 0)
  end
  if type(v) ~= "string" then
    raise(where, name .. " is required: an ISO 8601 string such as '2024-01-01T00:00:00Z' or unix seconds (got " .. type(v) .. ")")
  end
  if #v > (max or M.MAX_PARAM_BYTES) then
    raise(where, name .. " must be at most " .. (max or M.MAX_PARAM_BYTES) .. " bytes (got " .. #v .. ")")
  end
  local t = parsed[v]
  if t then return v, t end
  if has_control(v) then raise(where, name .. " must be an ISO 8601 date-time without control characters") end
  local why
  t, why = parse_date(v)
  if not t then
    if why == "is not an ISO 8601 date-time" then
      raise(where, name .. " must be an ISO 8601 date-time such as '2024-01-01T00:00:00Z' or '2024-01-01' (got " .. shown(v) .. ")")
    end
    raise(where, name .. " " .. shown(v) .. " " .. why)
  end
  if parsed_n >= 256 then parsed, parsed_n = {}, 0 end
  parsed[v], parsed_n = t, parsed_n + 1
  return v, t
end
M.check_date = check_date

-- Both ends of a range, checked, and the range itself: the end must come after the start (the
-- contract's ranges are half-open, [start, end), and the server answers 400 otherwise).
-- Returns the two texts to send.
function M.check_range(where, start_date, end_date, keep_fraction)
  local a, ta = check_date(where, "start_date", start_date, keep_fraction)
  local b, tb = check_date(where, "end_date", end_date, keep_fraction)
  if tb <= ta then
    local function as_given(v, text) return type(v) == "string" and shown(v) or tostring(v) .. " (" .. text .. ")" end
    raise(where, "end_date must be after start_date (got start_date " .. as_given(start_date, a) .. ", end_date "
      .. as_given(end_date, b) .. ")")
  end
  return a, b
end
M.check_date = check_date

-- A non-empty string without control characters, at most MAX_PARAM_BYTES long.
local function check_string(where, name, v)
  if type(v) ~= "string" or v == "" then
    raise(where, name .. " must be a non-empty string (got " .. (v == "" and "an empty string" or type(v)) .. ")")
  end
  if has_control(v) then raise(where, name .. " must not contain control characters") end
  check_length(where, name, v)
  return v
end
M.check_string = check_string

local function check_filter(where, name, v)
  if v == nil then return nil end
  return check_string(where, name, v)
end

local percent_encode = core.percent_encode
M.percent_encode = percent_encode

-- Per usage call: the name its argument errors carry, and the argument names it takes.
local WHERE, ALLOWED = {}, {}
for fn, call in pairs(M.CALLS) do
  WHERE[fn] = "usage:" .. fn
  ALLOWED[fn] = { start_date = true, end_date = true, customer_id = true, event_type = true, model = true }
  if call.lead then ALLOWED[fn][call.lead] = true end
end

-- Normalises the arguments of a call (table form or the positional form of the Python SDK) into
-- the query string. Raises on any argument error, before anything is sent.
function M.build_query(fn, ...)
  local call = M.CALLS[fn]
  local where = WHERE[fn]
  local params
  local n = select("#", ...)
  local first = ...
  if type(first) == "table" and n == 1 then
    params = first
  else
    local args = { ... }
    local i = 1
    params = {}
    if call.lead then
      params[call.lead] = args[i]
      i = i + 1
    end
    params.start_date, params.end_date = args[i], args[i + 1]
    local opts = args[i + 2]
    if opts ~= nil then
      if type(opts) ~= "table" then raise(where, "the options after end_date must be a table (customer_id, event_type, model)") end
      for k, v in pairs(opts) do
        if params[k] ~= nil then raise(where, "option '" .. tostring(k) .. "' is also given as a positional argument") end
        params[k] = v
      end
    end
    if n > i + 2 then raise(where, "too many arguments (expected " .. (call.lead and call.lead .. ", " or "") .. "start_date, end_date [, options])") end
  end

  local allowed = ALLOWED[fn]
  for k in pairs(params) do
    if not allowed[k] then
      local names = {}
      for a in pairs(allowed) do names[#names + 1] = a end
      table.sort(names)
      raise(where, "unknown parameter '" .. tostring(k) .. "' (allowed: " .. table.concat(names, ", ") .. ")")
    end
  end

  local q = {}
  if call.lead then
    local v = params[call.lead]
    local ok = false
    for _, a in ipairs(call.allowed) do if v == a then ok = true end end
    if not ok then
      raise(where, call.lead .. " must be one of " .. quote_list(call.allowed) ..
        (v == nil and " (missing)" or " (got " .. (type(v) == "string" and "'" .. v .. "'" or type(v)) .. ")"))
    end
    q[#q + 1] = call.wire .. "=" .. v
  end
  local start_date, end_date = M.check_range(where, params.start_date, params.end_date)
  q[#q + 1] = "startDate=" .. percent_encode(start_date)
  q[#q + 1] = "endDate=" .. percent_encode(end_date)
  for _, f in ipairs(FILTERS) do
    local v = check_filter(where, f[1], params[f[1]])
    if v then q[#q + 1] = f[2] .. "=" .. percent_encode(v) end
  end
  return call.path .. "?" .. table.concat(q, "&")
end

local numbers = core.numbers
local function is_metrics(t)
  if numbers(t, "totalEvents", "totalTokens", "totalInputTokens", "totalOutputTokens", "totalCostCents") then
    return true -- the common case, in one call: it runs on every answer and every row
  end
  if type(t) ~= "table" then return false, "is not an object" end
  for _, m in ipairs(METRICS) do
    if type(t[m]) ~= "number" then return false, "lacks the number " .. m end
  end
  return true
end

local function check_rows(doc, extra, extra_kind, required)
  if type(doc) ~= "table" or type(doc.data) ~= "table" then return false, "lacks the array 'data'" end
  local n = #doc.data
  for k in pairs(doc.data) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false, "has a 'data' that is not an array" end
  end
  for i = 1, n do
    local row = doc.data[i]
    local ok, why = is_metrics(row)
    if not ok then return false, "data[" .. i .. "] " .. why end
    local v = row[extra]
    if (v == nil and required) or (v ~= nil and type(v) ~= extra_kind) then
      return false, "data[" .. i .. "]." .. extra .. " is not a " .. extra_kind
    end
  end
  return true
end

local SHAPES = {
  summary = is_metrics,
  breakdown = function(doc) return check_rows(doc, "dimension", "string", false) end,
  timeseries = function(doc) return check_rows(doc, "timestamp", "string", true) end,
}
-- Other resources (limitry.api) add their shapes here: name -> function(doc) -> ok, why.
M.SHAPES = SHAPES
M.is_metrics = is_metrics
-- Shapes whose answers may be a limit decision: a body with a boolean `allowed` is a result, also
-- on 429 (see M.decision).
M.DECISIONS = {}
-- Shapes whose answers are one small object (resources add theirs): the C core reads them with a
-- small receive buffer, which spares the heap a 16 KiB allocation per transfer (src/request.c).
M.SMALL = { summary = true }
-- The flags handed to the C core with a request of each shape: 1, decode a 2xx JSON answer in C
-- (not for limit decisions, whose headers are read too); 2, the answer is small. Computed on first
-- use, after every module has added its shapes (they do so when loaded).
-- Added to a request's flags when it must go out on a new connection (retry rule "connect").
M.FRESH = 4
M.FLAGS = setmetatable({}, { __index = function(t, shape)
  local flags = (M.DECISIONS[shape] and 0 or 1) + (M.SMALL[shape] and 2 or 0)
  rawset(t, shape, flags)
  return flags
end })

local function header_number(headers, name)
  local v = headers and headers[name]
  return v and tonumber((v:match("^%s*(%d+%.?%d*)%s*$"))) or nil
end

-- A limit decision (track, checks): the body as it came, with `retry_after` (seconds) on a "no":
-- Retry-After, else the later of X-RateLimit-Reset and X-Quota-Reset (unix seconds) minus now.
function M.decision(doc, headers)
  if doc.allowed == false and doc.retry_after == nil then
    local after = header_number(headers, "retry-after")
    if not after then
      local reset = math.max(header_number(headers, "x-ratelimit-reset") or -1, header_number(headers, "x-quota-reset") or -1)
      if reset >= 0 then after = math.max(0, reset - os.time()) end
    end
    doc.retry_after = after
  end
  return doc
end

-- Turns one transfer's outcome into a result or an error value (not yet finished: attempts are
-- filled in by the retry loop). `shape` names the expected 2xx body. The last four arguments
-- are what handle:call returned after its status: headers, body, connections, decoded on an
-- answer (`decoded`: a 2xx body the C core already decoded, body then nil), or kind, message,
-- curl_code, sent on a transport failure (status nil; sent: false when no byte of the request
-- was written, see limitry.core). Every string of a decoded answer has the key (`secret`)
-- replaced, results included: a server that echoes it cannot put it in a result either.
function M.interpret(shape, secret, status, headers, body, curl_code, decoded)
  if status == nil then
    return nil, M.transport_error(headers, body, curl_code, secret, decoded)
  end
  if M.DECISIONS[shape] and (status == 200 or status == 201 or status == 429) then
    local doc = decoded
    if doc == nil then doc = core.decode(body, secret) end
    if type(doc) == "table" and type(doc.allowed) == "boolean" then return M.decision(doc, headers) end
  end
  if status >= 200 and status < 300 then
    local doc, why = decoded, nil
    if doc == nil then doc, why = core.decode(body, secret) end
    if doc == nil then
      return nil, errors.new({ name = "DecodeError", status = status, headers = headers, sent = true,
        message = "response is not JSON (" .. why .. ")" }, secret)
    end
    local ok, bad = SHAPES[shape](doc)
    if not ok then
      return nil, errors.new({ name = "DecodeError", status = status, headers = headers, sent = true,
        message = "response is not a " .. shape .. ": it " .. bad, response = doc }, secret)
    end
    return doc
  end
  local response = core.decode(body, secret)
  if type(response) ~= "table" then response = nil end
  local message = response and type(response.error) == "string" and response.error
  if not message then
    local ctype = headers["content-type"] or "no content type"
    message = (#body == 0) and "empty error body" or ("non-JSON error body (" .. ctype .. ")")
  end
  local name = "APIError"
  if status == 401 or status == 403 then
    name = "AuthenticationError"
  elseif status == 429 then
    name = "RateLimitError"
  elseif status >= 300 and status < 400 then
    message = "unexpected redirect" .. (headers.location and (" to " .. headers.location) or "") ..
      "; redirects are not followed (check base_url)"
  end
  return nil, errors.new({
    name = name, status = status, message = message, response = response, headers = headers, sent = true,
    retry_after = header_number(headers, "retry-after"),
    rate_limit = headers["x-ratelimit-limit"] and {
      limit = header_number(headers, "x-ratelimit-limit"),
      remaining = header_number(headers, "x-ratelimit-remaining"),
      reset = header_number(headers, "x-ratelimit-reset"),
    } or nil,
  }, secret)
end

-- The `log` option: one entry per attempt, on every transport. An entry is a table (fields below)
-- whose tostring is one readable line, so `log = print` works:
--   limitry: GET /usage -> 503 APIError (attempt 1, 12.3 ms, curl): injected 503; retry in 0.310 s
-- `path` has no query (its values carry customer ids and cursors); nothing in an entry holds the key.
local LogEntry = {}
LogEntry.__index = LogEntry
LogEntry.__tostring = function(e)
  local outcome = e.status and tostring(e.status) or ""
  if e.error then outcome = outcome .. (outcome ~= "" and " " or "") .. e.error end
  local line = string.format("limitry: %s %s -> %s (attempt %d, %.1f ms, %s)", e.method, e.path, outcome,
    e.attempt, e.duration * 1000, e.transport)
  if e.error and e.message then line = line .. ": " .. e.message end
  if e.retry then line = line .. string.format("; retry in %.3f s", e.retry_in) end
  return line
end
M.LogEntry = LogEntry

-- Calls log(entry) for one attempt of req that started at `started` (core.now()) and ended with
-- `status` (an answer's HTTP status, or nil) and `err` (the error value, or nil for a result);
-- `delay`: the seconds until the next attempt, or nil when this one was the last.
function M.log_attempt(log, secret, transport, req, attempt, started, status, err, delay)
  local path = req.path:match("^[^?#]*")
  if secret and path:find(secret, 1, true) then path = errors.redact(path, secret) end
  local e = setmetatable({ method = req.method or "GET", path = path, attempt = attempt, transport = transport,
    duration = core.now() - started, status = status, retry = delay ~= nil, retry_in = delay }, LogEntry)
  if err then e.error, e.kind, e.message = err.name, err.kind, err.message end
  log(e)
end

local KIND_NAME = { timeout = "TimeoutError", network = "NetworkError", tls = "NetworkError",
  decode = "DecodeError", too_large = "DecodeError", memory = "NetworkError", usage = "NetworkError",
  protocol = "NetworkError", fork = "NetworkError" }

-- `sent`: what the transport says: false when no byte of the request was written to a connection
-- (the server cannot have it), true (or nil) when it may have been.
function M.transport_error(kind, text, curl_code, secret, sent)
  return errors.new({ name = KIND_NAME[kind] or "NetworkError", kind = kind, message = text,
    curl_code = curl_code, sent = sent ~= false }, secret)
end

-- nil when err must not be retried after `attempt` tries, else the seconds to wait first.
-- `mode` "connect": only failures where nothing was sent (err.sent == false, set by the
-- transport) are retried (create, update, delete, and events sent without idempotency keys).
function M.retry_delay(err, attempt, policy, mode)
  if attempt > policy.max_retries then return nil end
  if mode == "connect" and err.sent ~= false then return nil end
  -- A 408 usually answers a connection the server dropped as idle: worth one more try.
  local retryable = err.kind == "network" or err.kind == "timeout" or err.kind == "protocol"
    or err.status == 429 or (err.status and err.status >= 500) or (err.status == 408 and attempt == 1)
  if not retryable then return nil end
  if err.status == 429 and err.retry_after then
    if err.retry_after > policy.max_retry_after then return nil end
    return err.retry_after
  end
  local cap = math.min(policy.max_backoff, policy.backoff * 2 ^ (attempt - 1))
  return cap / 2 + math.random() * cap / 2
end

return M
