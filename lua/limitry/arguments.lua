-- The arguments of every operation (lua/limitry/resources.lua): checks that raise naming the
-- argument before anything is sent, the snake_case -> camelCase mapping, and the readers that turn
-- a method's arguments into the path, query string and JSON body of a call.
--   A reader for a body or a query takes (where, value) and returns the JSON text (and, for
--   events, whether every event carries an idempotency key) or the query string ("?..." or "").
--   A reader of all the arguments (args.usage, args.customer_range, args.raw) takes (op, where, ...)
--   and returns path, body, keyed, method.
-- The limits are the local server's (server/lua/limitry_server/store.lua and admin.lua; the contract
-- gives none): a value past one would be a 400 there, so it is an argument error here.
local core = require "limitry.core"
local dates = require "limitry.dates"

local M = {}

local has_control, utf8_error, percent, encode = core.has_control, core.utf8_error, core.percent_encode, core.encode
M.MAX_PARAM_BYTES = 8192  -- a query value or a path: no filter or date comes near it; libcurl refuses URLs of 8 MB
local MAX_COUNT = 2 ^ 53 - 1  -- the largest integer every Lua and the server hold exactly
local MAX_STRING = 256        -- an event's strings (customer_id, ...); a quota's or rate limit's name
local MAX_COST = 1e12         -- cents in one event
local MAX_TIMESTAMP = 64      -- bytes of an ISO 8601 timestamp

local function raise(where, msg) error(where .. ": " .. msg, 0) end
M.raise = raise

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
M.describe = describe

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

-- A non-empty string without control characters, at most MAX_PARAM_BYTES long (a query value).
local function check_param(where, name, v)
  if type(v) ~= "string" or v == "" then
    raise(where, name .. " must be a non-empty string (got " .. (v == "" and "an empty string" or type(v)) .. ")")
  end
  if has_control(v) then raise(where, name .. " must not contain control characters") end
  if #v > M.MAX_PARAM_BYTES then
    raise(where, name .. " must be at most " .. M.MAX_PARAM_BYTES .. " bytes (got " .. #v .. ")")
  end
  return v
end

-- Text that goes into a JSON body must be UTF-8 (core.encode would refuse it, naming the wire
-- field and the caller's file position instead of the argument).
local function check_utf8(where, name, v)
  local bad = utf8_error(v)
  if bad then raise(where, name .. " is not valid UTF-8 (byte " .. bad .. ")") end
  return v
end

-- A string for a body: a query value's checks, UTF-8, and at most `max` bytes when given.
local function check_string(where, name, v, max)
  check_param(where, name, v)
  if max and #v > max then
    raise(where, name .. " must be a non-empty string of at most " .. max .. " bytes (got " .. #v .. " bytes)")
  end
  return check_utf8(where, name, v)
end

-- The checks a field list (below) names: function(where, name, value) -> the wire value.
local check = {}
M.check = check
check.string = check_string
check.param = check_param
function check.short(where, name, v) return check_string(where, name, v, MAX_STRING) end
function check.cost(where, name, v)
  if not finite(v) or v < 0 or v > MAX_COST then
    raise(where, name .. " must be a finite number from 0 to 1e12 (got " .. describe(v) .. ")")
  end
  return v
end
function check.count(where, name, v)
  if not finite(v) or v < 0 or v % 1 ~= 0 or v > MAX_COUNT then
    raise(where, name .. " must be a whole number from 0 to 2^53 - 1 (got " .. describe(v) .. ")")
  end
  return math.tointeger and math.tointeger(v) or v -- 60.0 goes out as 60
end
function check.positive(where, name, v)
  if not finite(v) or v <= 0 or v > MAX_COUNT then
    raise(where, name .. " must be a number > 0 and at most 2^53 - 1 (got " .. describe(v) .. ")")
  end
  return v
end
function check.positive_count(where, name, v) -- a rate limit's limit: a whole number of calls
  if not finite(v) or v <= 0 or v > MAX_COUNT or v % 1 ~= 0 then
    raise(where, name .. " must be a whole number from 1 to 2^53 - 1 (got " .. describe(v) .. ")")
  end
  return math.tointeger and math.tointeger(v) or v
end
-- A whole number from lo to hi (a percent, a page size).
function check.whole(lo, hi)
  return function(where, name, v)
    if not finite(v) or v < lo or v > hi or v % 1 ~= 0 then
      raise(where, name .. " must be a whole number from " .. lo .. " to " .. hi .. " (got " .. describe(v) .. ")")
    end
    return v
  end
end
function check.boolean(where, name, v)
  if type(v) ~= "boolean" then raise(where, name .. " must be a boolean (got " .. type(v) .. ")") end
  return v
end
function check.one_of(list)
  local set = {}
  for _, v in ipairs(list) do set[v] = true end
  return function(where, name, v)
    if not set[v] then raise(where, name .. " must be one of '" .. table.concat(list, "', '") .. "' (got " .. describe(v) .. ")") end
    return v
  end
end
-- An event's timestamp: ISO 8601 text of at most MAX_TIMESTAMP bytes, checked as the server reads
-- it, or unix seconds (cut to the millisecond).
function check.timestamp(where, name, v) return (dates.check(where, name, v, true, MAX_TIMESTAMP)) end
function check.key(where, name, v) -- an idempotency key, or false: none
  if v == false then return false end
  return check.short(where, name, v)
end

-- A map sent unchanged (properties, a dimension map, dimension_filters): string keys; string,
-- finite number or boolean values; `rules` say what else holds (entries, key bytes, string bytes,
-- number magnitude, strings only, non-empty strings).
local function check_map(where, name, v, rules)
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
    if not (type(x) == "string" or (not strings_only and (type(x) == "boolean" or finite(x)))) then
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
function check.map(rules) return function(where, name, v) return check_map(where, name, v, rules) end end

-- Checks `args` against a field list (Lua name -> { wire name, check, required }) and returns the
-- wire table. `partial`: nothing is required (update), but something must be given.
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

-- An id in the URL path, percent-encoded. "." and ".." are refused: percent-encoding keeps dots
-- (they are unreserved), and every URL normaliser (libcurl's, nginx's, a proxy's) resolves such a
-- segment, so quotas:get("..") would read /v1/ and customers:get_usage("..") the project's
-- totals. They are the only ids it rewrites: "/" and "%" are encoded.
function M.id(where, name, v)
  check_param(where, name, v)
  if v == "." or v == ".." then
    raise(where, name .. " must not be '.' or '..' (a URL would resolve it to another resource)")
  end
  return percent(v)
end

-- ---- readers of one argument ------------------------------------------------------------------

-- A body of the fields of a field list, all required ones given; changes: any subset, at least one.
function M.fields(fields) return function(where, v) return encode(to_wire(where, fields, v)) end end
function M.changes(fields) return function(where, v) return encode(to_wire(where, fields, v, true)) end end

-- A query string of the fields of a field list, in wire-name order; the argument may be absent.
function M.query(fields)
  return function(where, args)
    local wire = to_wire(where, fields, args or {}, false)
    local names = {}
    for k in pairs(wire) do names[#names + 1] = k end
    table.sort(names)
    local parts = {}
    for i, k in ipairs(names) do
      local v = wire[k]
      parts[i] = k .. "=" .. percent(type(v) == "number" and string.format("%d", v) or v)
    end
    return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
  end
end

-- A body that is a map of the given rules (a check's dimension map); the argument may be absent.
function M.map(rules) return function(where, v) return encode(check_map(where, "dimensions", v or {}, rules)) end end

-- An event's wire table, with an idempotency key generated when it has none (unless the caller
-- passed idempotency_key = false). Returns the table and whether it carries a key.
function M.event_wire(where, fields, ev)
  local wire = to_wire(where, fields, ev)
  if wire.idempotencyKey == nil then wire.idempotencyKey = core.random_id() end
  if wire.idempotencyKey == false then
    wire.idempotencyKey = nil
    return wire, false
  end
  return wire, true
end

-- One event as the body; whether it carries an idempotency key.
function M.event(fields)
  return function(where, ev)
    local wire, keyed = M.event_wire(where, fields, ev)
    return encode(wire), keyed
  end
end

-- { events = [...] }: 1 to 1000 events; whether every one carries an idempotency key.
function M.events(fields)
  return function(where, list)
    if type(list) ~= "table" then raise(where, "expected an array of events (got " .. type(list) .. ")") end
    local n = #list
    if n < 1 or n > 1000 then raise(where, "a batch holds 1 to 1000 events (got " .. n .. ")") end
    for k in pairs(list) do
      if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then raise(where, "expected an array of events (key " .. describe(k) .. ")") end
    end
    local events, all_keyed = setmetatable({}, core.array_mt), true
    for i = 1, n do
      local wire, keyed = M.event_wire(where .. ": events[" .. i .. "]", fields, list[i])
      events[i] = wire
      all_keyed = all_keyed and keyed
    end
    return encode { events = events }, all_keyed
  end
end

-- ---- readers of all the arguments ---------------------------------------------------------------

local USAGE_FILTERS = { { "customer_id", "customerId" }, { "event_type", "eventType" }, { "model", "model" } }

-- The usage calls' arguments: a table (start_date, end_date, the filters customer_id, event_type and
-- model, and `lead` when given) or the positional form of the Python SDK: [lead,] start_date,
-- end_date [, filters]. lead (group_by, interval) is one of `allowed`, sent as `wire`.
function M.usage(lead, wire, allowed)
  local names = { start_date = true, end_date = true, customer_id = true, event_type = true, model = true }
  if lead then names[lead] = true end
  local set = {}
  for _, a in ipairs(allowed or {}) do set[a] = true end
  local function params_of(where, n, ...)
    local first = ...
    if type(first) == "table" and n == 1 then return first end
    local args, i, params = { ... }, 1, {}
    if lead then
      params[lead] = args[i]
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
    if n > i + 2 then raise(where, "too many arguments (expected " .. (lead and lead .. ", " or "") .. "start_date, end_date [, options])") end
    return params
  end
  return function(op, where, ...)
    local params = params_of(where, select("#", ...), ...)
    for k in pairs(params) do
      if not names[k] then raise(where, "unknown parameter '" .. tostring(k) .. "' (allowed: " .. sorted_keys(names) .. ")") end
    end
    local q = {}
    if lead then
      local v = params[lead]
      if not set[v] then
        raise(where, lead .. " must be one of '" .. table.concat(allowed, "', '") .. "'" ..
          (v == nil and " (missing)" or " (got " .. (type(v) == "string" and "'" .. v .. "'" or type(v)) .. ")"))
      end
      q[1] = wire .. "=" .. v
    end
    local start_date, end_date = dates.check_range(where, params.start_date, params.end_date, false, M.MAX_PARAM_BYTES)
    q[#q + 1] = "startDate=" .. percent(start_date)
    q[#q + 1] = "endDate=" .. percent(end_date)
    for _, f in ipairs(USAGE_FILTERS) do
      local v = params[f[1]]
      if v ~= nil then q[#q + 1] = f[2] .. "=" .. percent(check_param(where, f[1], v)) end
    end
    return op[2] .. "?" .. table.concat(q, "&")
  end
end

-- customers:get_usage(customer_id, start_date, end_date), or a table of those three names: the id
-- in the path, the range (to the millisecond) in the query.
function M.customer_range(op, where, customer_id, start_date, end_date)
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
  local path = op[2]:gsub("{customer_id}", (M.id(where, "customer_id", customer_id):gsub("%%", "%%%%")))
  start_date, end_date = dates.check_range(where, start_date, end_date, true, M.MAX_PARAM_BYTES)
  return path .. "?startDate=" .. percent(start_date) .. "&endDate=" .. percent(end_date)
end

-- client:request(method, path [, body [, options]]): an endpoint the library does not wrap. A GET,
-- or a call said to be idempotent, is retried like the usage calls; anything else only when nothing
-- was sent (keyed = false).
local RAW_METHODS = { GET = true, POST = true, PUT = true, DELETE = true }
function M.raw(_, where, method, path, body, opts)
  if not RAW_METHODS[method] then raise(where, "method must be 'GET', 'POST', 'PUT' or 'DELETE' (got " .. describe(method) .. ")") end
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" or path:find("[%s%c]") or path:find("#", 1, true) then
    raise(where, "path must be a string starting with '/' (relative to base_url, without spaces or control characters), such as '/events'")
  end
  if #path > M.MAX_PARAM_BYTES then raise(where, "path must be at most " .. M.MAX_PARAM_BYTES .. " bytes") end
  if body ~= nil and type(body) ~= "string" and type(body) ~= "table" then
    raise(where, "body must be JSON text (a string) or a table to encode (got " .. type(body) .. ")")
  end
  if body ~= nil and method == "GET" then raise(where, "a GET request has no body") end
  if type(body) == "table" then body = encode(body) end
  if opts ~= nil then
    if type(opts) ~= "table" then raise(where, "options must be a table (idempotent)") end
    for k, v in pairs(opts) do
      if k ~= "idempotent" then raise(where, "unknown option '" .. tostring(k) .. "' (allowed: idempotent)") end
      if type(v) ~= "boolean" then raise(where, "option '" .. k .. "' must be a boolean") end
    end
  end
  return path, body, method == "GET" or (opts and opts.idempotent) or false, method
end

return M
