-- What an answer means: the shapes a 2xx body must have, and interpret(), which turns an answer
-- (status, headers, body) into a result or an error value. Pure functions, the same for every
-- transport (limitry.call runs them).
--   A shape is { name, check = function(doc) -> ok, why, decision, small, flags }:
--   decision  a limit decision (track, the checks): a body with a boolean `allowed` is a result,
--             also on 429, and its headers are read (retry_after)
--   small     the answer is one small object: the C core reads it with a 1 KiB receive buffer,
--             which spares the heap a 16 KiB allocation per transfer (src/transfer.c)
--   flags     what the C core is handed with a call of this shape (handle:call): 1, decode a 2xx
--             JSON answer in C (not for limit decisions, whose headers are read too); 2, small
local core = require "limitry.core"
local errors = require "limitry.errors"

local M = {}

M.DECODE, M.SMALL, M.FRESH = 1, 2, 4 -- the C core's flags (src/transfer.h); FRESH: a new connection

-- A shape named `name` whose answers pass check(doc) (-> ok, or false and why: "it <why>").
function M.shape(name, check, opts)
  opts = opts or {}
  return { name = name, check = check, decision = opts.decision or false, small = opts.small or false,
    empty = opts.empty or false, -- a 2xx without a body (204 No Content) is true, not a DecodeError
    flags = (opts.decision and 0 or M.DECODE) + (opts.small and M.SMALL or 0) }
end

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

-- A shape whose answers are an object with `field` of `kind` ("string", "number", "boolean", or
-- "array").
function M.field(name, field, kind, opts)
  if kind == "array" then return M.shape(name, function(doc) return array_of(doc, field) end, opts) end
  return M.shape(name, function(doc) return has(doc, field, kind) end, opts)
end

-- The usage metrics: five numbers.
local METRICS = { "totalEvents", "totalTokens", "totalInputTokens", "totalOutputTokens", "totalCostCents" }
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

-- The shapes of Limitry's answers.
M.summary = M.shape("summary", is_metrics, { small = true })
M.breakdown = M.shape("breakdown", function(doc) return check_rows(doc, "dimension", "string", false) end)
M.timeseries = M.shape("timeseries", function(doc) return check_rows(doc, "timestamp", "string", true) end)
M.customer_usage = M.shape("customer_usage", function(doc)
  local ok, why = is_metrics(doc)
  if not ok then return ok, why end
  return has(doc, "customerId", "string")
end, { small = true })
M.event_id = M.field("event_id", "id", "string", { small = true })
M.event_count = M.field("event_count", "count", "number", { small = true })
M.event_page = M.shape("event_page", function(doc)
  local ok, why = array_of(doc, "data")
  if not ok then return ok, why end
  if type(doc.hasMore) ~= "boolean" then return false, "lacks the boolean 'hasMore'" end
  if doc.nextCursor ~= nil and type(doc.nextCursor) ~= "string" then return false, "has a 'nextCursor' that is not a string" end
  return true
end)
M.track = M.field("track", "allowed", "boolean", { decision = true, small = true })
M.quota_check = M.field("quota_check", "allowed", "boolean", { decision = true, small = true })
M.rate_limit_check = M.field("rate_limit_check", "allowed", "boolean", { decision = true, small = true })
M.resource = M.field("resource", "id", "string", { small = true })
M.resource_list = M.field("resource_list", "data", "array")
M.deleted = M.field("deleted", "success", "boolean", { small = true })
M.any = M.shape("any", function() return true end, { empty = true }) -- client:request: any JSON, or none

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

-- The error value of a non-2xx answer.
local function http_error(secret, status, headers, body)
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
  return errors.new({
    name = name, status = status, message = message, response = response, headers = headers, sent = true,
    retry_after = header_number(headers, "retry-after"),
    rate_limit = headers["x-ratelimit-limit"] and {
      limit = header_number(headers, "x-ratelimit-limit"),
      remaining = header_number(headers, "x-ratelimit-remaining"),
      reset = header_number(headers, "x-ratelimit-reset"),
    } or nil,
  }, secret)
end

-- Turns an answer into a result or an error value (not yet finished: attempts are filled in by the
-- retry loop). `decoded`: a 2xx body the C core already decoded (body then nil). Every string of
-- a decoded answer has the key (`secret`) replaced, results included: a server that echoes it
-- cannot put it in a result either.
function M.interpret(shape, secret, status, headers, body, decoded)
  if shape.decision and (status == 200 or status == 201 or status == 429) then
    local doc = decoded
    if doc == nil then doc = core.decode(body, secret) end
    if type(doc) == "table" and type(doc.allowed) == "boolean" then return M.decision(doc, headers) end
  end
  if status >= 200 and status < 300 then
    if shape.empty and decoded == nil and (body == nil or body == "") then return true end
    local doc, why = decoded, nil
    if doc == nil then doc, why = core.decode(body, secret) end
    if doc == nil then
      return nil, errors.new({ name = "DecodeError", status = status, headers = headers, sent = true,
        message = "response is not JSON (" .. why .. ")" }, secret)
    end
    local ok, bad = shape.check(doc)
    if not ok then
      return nil, errors.new({ name = "DecodeError", status = status, headers = headers, sent = true,
        message = "response is not a " .. shape.name .. ": it " .. bad, response = doc }, secret)
    end
    return doc
  end
  return nil, http_error(secret, status, headers, body)
end

return M
