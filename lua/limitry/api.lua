-- The rest of Limitry's API (events, track, quotas, quota alerts, rate limits, customers, project):
-- argument checks, the snake_case -> camelCase mapping, request bodies and the shapes of the
-- answers. Like limitry.protocol for the usage calls, it only builds requests and reads answers;
-- the client sends them on whatever transport suits the host.
--
-- A request is { method, path, body (JSON text or nil), shape, retry } where retry is "safe"
-- (retried like the usage GETs) or "connect" (retried only when nothing was sent).
local core = require "limitry.core"
local protocol = require "limitry.protocol"

local M = {}

local has_control = protocol.has_control
local utf8_error = core.utf8_error
local MAX_COUNT = 2 ^ 53 - 1 -- the largest integer every Lua and the server hold exactly
-- Limits the local server keeps (server/lua/limitry_server/store.lua and admin.lua; the contract
-- gives none): a value past one would be a 400 there, so it is an argument error here, naming the
-- argument, before anything is sent.
local MAX_STRING = 256        -- an event's strings (customer_id, ...); a quota's or rate limit's name
local MAX_COST = 1e12         -- cents in one event
local MAX_PROPERTIES = 64
local MAX_MAP_KEY = 128       -- bytes of a property name or a dimension filter's name
local MAX_MAP_STRING = 1024   -- bytes of a property's or a dimension filter's string value
local MAX_PROPERTY_NUMBER = 1e300
local MAX_FILTERS = 32
local MAX_TIMESTAMP = 64      -- bytes of an ISO 8601 timestamp

local function raise(where, msg) error(where .. ": " .. msg, 0) end

local function sorted_keys(t)
  local names = {}
  for k in pairs(t) do names[#names + 1] = tostring(k) end
  table.sort(names)
  return table.concat(names, ", ")
end

local function describe(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  if type(v) == "number" then return tostring(v) end
  return type(v)
end

-- Text that goes into a JSON body must be UTF-8 (core.encode would refuse it, naming the wire
-- field and the caller's file position instead of the argument).
local function check_utf8(where, name, v)
  local bad = utf8_error(v)
  if bad then raise(where, name .. " is not valid UTF-8 (byte " .. bad .. ")") end
  return v
end

-- A non-empty string without control characters, valid UTF-8, at most `max` bytes (default: the
-- 8 KiB of protocol.check_string).
local function check_string(where, name, v, max)
  protocol.check_string(where, name, v)
  if max and #v > max then
    raise(where, name .. " must be a non-empty string of at most " .. max .. " bytes (got " .. #v .. " bytes)")
  end
  return check_utf8(where, name, v)
end

-- An event's strings and a limit's name: at most MAX_STRING bytes.
local function check_short(where, name, v) return check_string(where, name, v, MAX_STRING) end

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

local function check_cost(where, name, v)
  if not finite(v) or v < 0 or v > MAX_COST then
    raise(where, name .. " must be a finite number from 0 to 1e12 (got " .. describe(v) .. ")")
  end
  return v
end

local function check_count(where, name, v)
  if not finite(v) or v < 0 or v % 1 ~= 0 or v > MAX_COUNT then
    raise(where, name .. " must be a whole number from 0 to 2^53 - 1 (got " .. describe(v) .. ")")
  end
  return math.tointeger and math.tointeger(v) or v -- 60.0 goes out as 60
end

-- An event's timestamp: ISO 8601 text of at most MAX_TIMESTAMP bytes, checked as the server
-- reads it, or unix seconds (cut to the millisecond, see protocol.check_date).
local function check_date(where, name, v)
  return (protocol.check_date(where, name, v, true, MAX_TIMESTAMP))
end

-- A map sent unchanged (properties, a dimension map, dimension_filters): string keys; string,
-- finite number or boolean values. `kind` sets what else holds:
--   "properties"  at most 64 entries, names of 1-128 bytes, strings of at most 1024 bytes,
--                 numbers of magnitude at most 1e300
--   "filters"     strings only: at most 32 entries, names of 1-128 bytes, non-empty strings of
--                 at most 1024 bytes
--   "dimensions"  strings only (a check's dimension map)
local MAP_RULES = {
  properties = { entries = MAX_PROPERTIES, key = MAX_MAP_KEY, string = MAX_MAP_STRING, number = MAX_PROPERTY_NUMBER },
  filters = { strings_only = true, entries = MAX_FILTERS, key = MAX_MAP_KEY, string = MAX_MAP_STRING, nonempty = true },
  dimensions = { strings_only = true },
}
local function check_map(where, name, v, kind)
  local rules = MAP_RULES[kind]
  local strings_only = rules.strings_only
  if type(v) ~= "table" then raise(where, name .. " must be a table (got " .. type(v) .. ")") end
  local out, n = {}, 0
  for k, x in pairs(v) do
    if type(k) ~= "string" or k == "" or has_control(k) then
      raise(where, name .. " keys must be non-empty strings (got " .. describe(k) .. ")")
    end
    n = n + 1
    if rules.entries and n > rules.entries then raise(where, name .. " may hold at most " .. rules.entries .. " entries") end
    if rules.key and #k > rules.key then
      raise(where, name .. " keys must be at most " .. rules.key .. " bytes (got " .. #k .. " bytes)")
    end
    check_utf8(where, name .. " key", k)
    local ok = type(x) == "string" or (not strings_only and (type(x) == "boolean" or finite(x)))
    if not ok then
      raise(where, name .. "." .. k .. " must be a " .. (strings_only and "string" or "string, finite number or boolean")
        .. " (got " .. describe(x) .. ")")
    end
    if type(x) == "string" then
      if (rules.string and #x > rules.string) or (rules.nonempty and x == "") then
        raise(where, name .. "." .. k .. " must be a " .. (rules.nonempty and "non-empty " or "") .. "string of at most "
          .. rules.string .. " bytes (got " .. (x == "" and "an empty string" or #x .. " bytes") .. ")")
      end
      check_utf8(where, name .. "." .. k, x)
    elseif type(x) == "number" and rules.number and (x > rules.number or x < -rules.number) then
      raise(where, name .. "." .. k .. " must be a number of magnitude at most 1e300 (got " .. describe(x) .. ")")
    end
    out[k] = x
  end
  return out
end

local function one_of(list)
  local set = {}
  for _, v in ipairs(list) do set[v] = true end
  return function(where, name, v)
    if not set[v] then
      raise(where, name .. " must be one of '" .. table.concat(list, "', '") .. "' (got " .. describe(v) .. ")")
    end
    return v
  end
end

local function check_boolean(where, name, v)
  if type(v) ~= "boolean" then raise(where, name .. " must be a boolean (got " .. type(v) .. ")") end
  return v
end

local function check_positive(where, name, v)
  if not finite(v) or v <= 0 or v > MAX_COUNT then
    raise(where, name .. " must be a number > 0 and at most 2^53 - 1 (got " .. describe(v) .. ")")
  end
  return v
end

-- A rate limit's limit: a whole number of calls.
local function check_positive_count(where, name, v)
  if not finite(v) or v <= 0 or v > MAX_COUNT or v % 1 ~= 0 then
    raise(where, name .. " must be a whole number from 1 to 2^53 - 1 (got " .. describe(v) .. ")")
  end
  return math.tointeger and math.tointeger(v) or v
end

local function check_percent(where, name, v)
  if not finite(v) or v < 1 or v > 100 or v % 1 ~= 0 then
    raise(where, name .. " must be a whole number from 1 to 100 (got " .. describe(v) .. ")")
  end
  return v
end

local function check_key(where, name, v)
  if v == false then return false end -- opts out of the generated key
  return check_short(where, name, v)
end

-- Field lists: Lua name -> { wire name, check, required }.
local EVENT = {
  customer_id = { "customerId", check_short, true },
  event_type = { "eventType", check_short, true },
  model = { "model", check_short }, provider = { "provider", check_short },
  input_tokens = { "inputTokens", check_count }, output_tokens = { "outputTokens", check_count },
  total_tokens = { "totalTokens", check_count },
  latency_ms = { "latencyMs", check_count }, -- whole milliseconds, as the server stores them
  cost_cents = { "costCents", check_cost },
  properties = { "properties", function(w, n, v) return check_map(w, n, v, "properties") end },
  idempotency_key = { "idempotencyKey", check_key },
  timestamp = { "timestamp", check_date },
}
M.METRICS = { "total_tokens", "total_events", "total_cost_cents" }
M.PERIODS = { "hour", "day", "week", "month" }
M.WINDOWS = { "second", "minute", "hour" }
local QUOTA = {
  name = { "name", check_short, true },
  metric = { "metric", one_of(M.METRICS), true },
  limit_value = { "limitValue", check_positive, true },
  period = { "period", one_of(M.PERIODS), true },
  dimension_filters = { "dimensionFilters", function(w, n, v) return check_map(w, n, v, "filters") end },
}
local RATE_LIMIT = {
  name = { "name", check_short, true },
  limit_value = { "limitValue", check_positive_count, true },
  window = { "window", one_of(M.WINDOWS), true },
  dimension_filters = QUOTA.dimension_filters,
  enabled = { "enabled", check_boolean },
}
local ALERT = { threshold = { "threshold", check_percent, true } }
local LIST = {
  customer_id = { "customerId", check_string }, event_type = { "eventType", check_string },
  model = { "model", check_string },
  limit = { "limit", function(w, n, v)
    if not finite(v) or v < 1 or v > 100 or v % 1 ~= 0 then raise(w, n .. " must be a whole number from 1 to 100 (got " .. describe(v) .. ")") end
    return v
  end },
  cursor = { "cursor", check_string },
}

-- Checks `args` against `fields` and returns the wire table. `partial`: nothing is required
-- (update), but something must be given.
local function to_wire(where, fields, args, partial)
  if type(args) ~= "table" then raise(where, "expected a table of fields (got " .. type(args) .. ")") end
  local out, any = {}, false
  for k, v in pairs(args) do
    local f = fields[k]
    if not f then raise(where, "unknown field '" .. tostring(k) .. "' (allowed: " .. sorted_keys(fields) .. ")") end
    out[f[1]] = f[2](where, k, v)
    any = true
  end
  if partial then
    if not any then raise(where, "nothing to update (fields: " .. sorted_keys(fields) .. ")") end
  else
    local names = {}
    for k, f in pairs(fields) do
      if f[3] and args[k] == nil then names[#names + 1] = k end
    end
    table.sort(names) -- the same message on every Lua
    if names[1] then raise(where, names[1] .. " is required") end
  end
  return out
end

-- An event's wire table, with an idempotency key generated when it has none (unless the caller
-- passed idempotency_key = false). Returns the table and whether it carries a key.
local function event_wire(where, ev)
  local wire = to_wire(where, EVENT, ev)
  if wire.idempotencyKey == nil then wire.idempotencyKey = core.random_id() end
  if wire.idempotencyKey == false then
    wire.idempotencyKey = nil
    return wire, false
  end
  return wire, true
end

local function encode(value) return core.encode(value) end

local percent = protocol.percent_encode

-- An id in the URL path, percent-encoded. "." and ".." are refused: percent-encoding keeps dots
-- (they are unreserved), and every URL normaliser (libcurl's, nginx's, a proxy's) resolves such a
-- segment, so quotas:get("..") would read /v1/ and customers:get_usage("..") the project's
-- totals. They are the only ids it rewrites: "/" and "%" are encoded.
local function id_arg(where, name, v)
  check_string(where, name, v)
  if v == "." or v == ".." then
    raise(where, name .. " must not be '.' or '..' (a URL would resolve it to another resource)")
  end
  return percent(v)
end

local function query(fields, args, where)
  local wire = to_wire(where, fields, args or {}, false)
  local names = {}
  for k in pairs(wire) do names[#names + 1] = k end
  table.sort(names)
  local parts = {}
  for _, k in ipairs(names) do
    local v = wire[k]
    parts[#parts + 1] = k .. "=" .. percent(type(v) == "number" and string.format("%d", v) or v)
  end
  return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
end

-- Shapes of the answers (a DecodeError names what is missing).
local function has(doc, field, kind)
  if type(doc) ~= "table" then return false, "is not an object" end
  if type(doc[field]) ~= kind then return false, "lacks the " .. kind .. " '" .. field .. "'" end
  return true
end
local function array_of(doc, field)
  local ok, why = has(doc, field, "table")
  if not ok then return ok, why end
  local n = #doc[field]
  for k in pairs(doc[field]) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false, "has a '" .. field .. "' that is not an array" end
  end
  return true
end
local SHAPES = {
  event_id = function(doc) return has(doc, "id", "string") end,
  event_count = function(doc) return has(doc, "count", "number") end,
  event_page = function(doc)
    local ok, why = array_of(doc, "data")
    if not ok then return ok, why end
    if type(doc.hasMore) ~= "boolean" then return false, "lacks the boolean 'hasMore'" end
    if doc.nextCursor ~= nil and type(doc.nextCursor) ~= "string" then return false, "has a 'nextCursor' that is not a string" end
    return true
  end,
  track = function(doc) return has(doc, "allowed", "boolean") end,
  quota_check = function(doc) return has(doc, "allowed", "boolean") end,
  rate_limit_check = function(doc) return has(doc, "allowed", "boolean") end,
  resource = function(doc) return has(doc, "id", "string") end,
  resource_list = function(doc) return array_of(doc, "data") end,
  deleted = function(doc) return has(doc, "success", "boolean") end,
  customer_usage = function(doc)
    local ok, why = protocol.is_metrics(doc)
    if not ok then return ok, why end
    return has(doc, "customerId", "string")
  end,
}
for name, check in pairs(SHAPES) do protocol.SHAPES[name] = check end
protocol.DECISIONS.track = true
protocol.DECISIONS.quota_check = true
protocol.DECISIONS.rate_limit_check = true
for _, shape in ipairs { "event_id", "event_count", "track", "quota_check", "rate_limit_check", "resource", "deleted",
  "customer_usage" } do
  protocol.SMALL[shape] = true
end

local function request(method, path, body, shape, retry)
  return { method = method, path = path, body = body, shape = shape, retry = retry or "safe" }
end

-- Every call: resource -> name -> function(...) -> request. The names are the public method names;
-- each also gets an async twin, start_ + the name without a leading get_.
M.CALLS = {
  events = {
    record = function(ev)
      local wire, keyed = event_wire("events:record", ev)
      return request("POST", "/events", encode(wire), "event_id", keyed and "safe" or "connect")
    end,
    batch = function(list)
      local where = "events:batch"
      if type(list) ~= "table" then raise(where, "expected an array of events (got " .. type(list) .. ")") end
      local n = #list
      if n < 1 or n > 1000 then raise(where, "a batch holds 1 to 1000 events (got " .. n .. ")") end
      for k in pairs(list) do
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then raise(where, "expected an array of events (key " .. describe(k) .. ")") end
      end
      local events, all_keyed = setmetatable({}, core.array_mt), true
      for i = 1, n do
        local wire, keyed = event_wire(where .. ": events[" .. i .. "]", list[i])
        events[i] = wire
        all_keyed = all_keyed and keyed
      end
      return request("POST", "/events/batch", encode { events = events }, "event_count", all_keyed and "safe" or "connect")
    end,
    list = function(args)
      return request("GET", "/events" .. query(LIST, args, "events:list"), nil, "event_page")
    end,
  },
  track = function(ev)
    local wire, keyed = event_wire("client:track", ev)
    return request("POST", "/track", encode(wire), "track", keyed and "safe" or "connect")
  end,
  quotas = {
    check = function(dims)
      return request("POST", "/quotas/check", encode(check_map("quotas:check", "dimensions", dims or {}, "dimensions")), "quota_check")
    end,
    list = function() return request("GET", "/quotas", nil, "resource_list") end,
    get = function(id) return request("GET", "/quotas/" .. id_arg("quotas:get", "id", id), nil, "resource") end,
    create = function(args)
      return request("POST", "/quotas", encode(to_wire("quotas:create", QUOTA, args)), "resource", "connect")
    end,
    update = function(id, args)
      local path = "/quotas/" .. id_arg("quotas:update", "id", id)
      return request("PUT", path, encode(to_wire("quotas:update", QUOTA, args, true)), "resource", "connect")
    end,
    delete = function(id) return request("DELETE", "/quotas/" .. id_arg("quotas:delete", "id", id), nil, "deleted", "connect") end,
  },
  rate_limits = {
    check = function(dims)
      return request("POST", "/rate-limits/check", encode(check_map("rate_limits:check", "dimensions", dims or {}, "dimensions")), "rate_limit_check")
    end,
    list = function() return request("GET", "/rate-limits", nil, "resource_list") end,
    get = function(id) return request("GET", "/rate-limits/" .. id_arg("rate_limits:get", "id", id), nil, "resource") end,
    create = function(args)
      return request("POST", "/rate-limits", encode(to_wire("rate_limits:create", RATE_LIMIT, args)), "resource", "connect")
    end,
    update = function(id, args)
      local path = "/rate-limits/" .. id_arg("rate_limits:update", "id", id)
      return request("PUT", path, encode(to_wire("rate_limits:update", RATE_LIMIT, args, true)), "resource", "connect")
    end,
    delete = function(id) return request("DELETE", "/rate-limits/" .. id_arg("rate_limits:delete", "id", id), nil, "deleted", "connect") end,
  },
  quota_alerts = {
    create = function(quota_id, args)
      local path = "/quotas/" .. id_arg("quota_alerts:create", "quota_id", quota_id) .. "/alerts"
      return request("POST", path, encode(to_wire("quota_alerts:create", ALERT, args)), "resource", "connect")
    end,
    list = function(quota_id)
      return request("GET", "/quotas/" .. id_arg("quota_alerts:list", "quota_id", quota_id) .. "/alerts", nil, "resource_list")
    end,
    get = function(id) return request("GET", "/quota-alerts/" .. id_arg("quota_alerts:get", "id", id), nil, "resource") end,
    update = function(id, args)
      local path = "/quota-alerts/" .. id_arg("quota_alerts:update", "id", id)
      return request("PUT", path, encode(to_wire("quota_alerts:update", ALERT, args, true)), "resource", "connect")
    end,
    delete = function(id) return request("DELETE", "/quota-alerts/" .. id_arg("quota_alerts:delete", "id", id), nil, "deleted", "connect") end,
    history = function(id)
      return request("GET", "/quota-alerts/" .. id_arg("quota_alerts:history", "id", id) .. "/history", nil, "resource_list")
    end,
  },
  customers = {
    get_usage = function(customer_id, start_date, end_date)
      local where = "customers:get_usage"
      if type(customer_id) == "table" and start_date == nil then
        local args = customer_id
        for k in pairs(args) do
          if k ~= "customer_id" and k ~= "start_date" and k ~= "end_date" then
            raise(where, "unknown field '" .. tostring(k) .. "' (allowed: customer_id, end_date, start_date)")
          end
        end
        customer_id, start_date, end_date = args.customer_id, args.start_date, args.end_date
      end
      if start_date == nil then raise(where, "start_date is required") end
      if end_date == nil then raise(where, "end_date is required") end
      local path = "/customers/" .. id_arg(where, "customer_id", customer_id) .. "/usage"
      start_date, end_date = protocol.check_range(where, start_date, end_date, true)
      return request("GET", path .. "?startDate=" .. percent(start_date) .. "&endDate=" .. percent(end_date),
        nil, "customer_usage")
    end,
  },
  project = {
    get = function() return request("GET", "/project", nil, "resource") end,
  },
}

-- limitry.encode_event(event): the JSON text events:record would send for this event (checked as
-- events:record checks it, the encoder's UTF-8 check included, with an idempotency key generated
-- when it has none), without sending it. For code that queues events itself (limitry.recorder):
-- the key is fixed when the event is made, so every resend of the text counts once.
function M.encode_event(ev, where)
  local wire = event_wire(where or "limitry.encode_event", ev)
  return encode(wire)
end

-- Routes Limitry has whatever the ids: a 404 on one of them means the base URL is wrong (see
-- Client:_finish). Routes with an id in their path are not here: a 404 there is an unknown id.
local KNOWN_ROUTES = {
  ["GET /usage"] = true, ["GET /usage/breakdown"] = true, ["GET /usage/timeseries"] = true,
  ["POST /events"] = true, ["POST /events/batch"] = true, ["GET /events"] = true, ["POST /track"] = true,
  ["GET /quotas"] = true, ["POST /quotas"] = true, ["POST /quotas/check"] = true,
  ["GET /rate-limits"] = true, ["POST /rate-limits"] = true, ["POST /rate-limits/check"] = true,
  ["GET /project"] = true,
}
function M.known_route(method, path)
  return KNOWN_ROUTES[method .. " " .. path:gsub("[?#].*$", ""):gsub("/$", "")] == true
end

-- client:request(method, path [, body [, options]]): an endpoint the library does not wrap.
local RAW_METHODS = { GET = true, POST = true, PUT = true, DELETE = true }
local RAW_OPTIONS = { idempotent = "boolean" }
function M.raw_request(where, method, path, body, opts)
  if not RAW_METHODS[method] then raise(where, "method must be 'GET', 'POST', 'PUT' or 'DELETE' (got " .. describe(method) .. ")") end
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" or path:find("[%s%c]") or path:find("#", 1, true) then
    raise(where, "path must be a string starting with '/' (relative to base_url, without spaces or control characters), such as '/events'")
  end
  if #path > protocol.MAX_PARAM_BYTES then raise(where, "path must be at most " .. protocol.MAX_PARAM_BYTES .. " bytes") end
  if body ~= nil and type(body) ~= "string" and type(body) ~= "table" then
    raise(where, "body must be JSON text (a string) or a table to encode (got " .. type(body) .. ")")
  end
  if body ~= nil and method == "GET" then raise(where, "a GET request has no body") end
  if type(body) == "table" then body = encode(body) end
  if opts ~= nil then
    if type(opts) ~= "table" then raise(where, "options must be a table (idempotent)") end
    for k, v in pairs(opts) do
      if not RAW_OPTIONS[k] then raise(where, "unknown option '" .. tostring(k) .. "' (allowed: idempotent)") end
      if type(v) ~= RAW_OPTIONS[k] then raise(where, "option '" .. k .. "' must be a " .. RAW_OPTIONS[k]) end
    end
  end
  -- Retried like the usage calls when it is a GET or said to be idempotent, else only when nothing was sent.
  local safe = method == "GET" or (opts and opts.idempotent)
  return request(method, path, body, "any", safe and "safe" or "connect")
end
protocol.SHAPES.any = function() return true end

return M
