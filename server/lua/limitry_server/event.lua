-- One event: the checks an event must pass (each refusal a message naming the field), the
-- normalized table kept of it, and its stored JSON text (exact numbers, so a restart or a migration
-- gives the very same values back).
local cjson = require "cjson.safe"
local time = require "limitry_server.time"
local text = require "limitry_server.text"
local valid_utf8, excerpt = text.valid_utf8, text.excerpt

local M = {}

-- Limits on one event (the contract gives none): each bounds what one event can cost in memory,
-- on disk and in every later scan, and keeps every sum a finite JSON number.
M.MAX_STRING = 256          -- customerId, eventType, model, provider, idempotencyKey
M.MAX_COUNT = 2 ^ 53 - 1    -- tokens and latencyMs: integers a double (and LuaJIT) holds exactly
M.MAX_COST = 1e12           -- cents per event: ten billion dollars
M.MAX_PROPERTIES = 64
M.MAX_PROPERTY_NAME = 128
M.MAX_PROPERTY_STRING = 1024
M.MAX_TIMESTAMP = 64

local STRING_FIELDS = { "customerId", "eventType", "model", "provider", "idempotencyKey" }
local COUNT_FIELDS = { "inputTokens", "outputTokens", "totalTokens", "latencyMs" }
local KNOWN = { costCents = true, properties = true, timestamp = true }
for _, n in ipairs(STRING_FIELDS) do KNOWN[n] = true end
for _, n in ipairs(COUNT_FIELDS) do KNOWN[n] = true end

local huge = math.huge
local function is_finite(v) return v == v and v ~= huge and v ~= -huge end
local function is_count(v) return type(v) == "number" and v >= 0 and v <= M.MAX_COUNT and v == math.floor(v) end

local function check_properties(p, text_ok)
  if type(p) ~= "table" then return nil, "properties must be an object" end
  local n = 0
  for k, v in pairs(p) do
    -- cjson decodes a JSON array to a table with number keys; object keys are always strings.
    if type(k) ~= "string" then return nil, "properties must be an object" end
    n = n + 1
    if n > M.MAX_PROPERTIES then return nil, "properties may hold at most " .. M.MAX_PROPERTIES .. " properties" end
    if k == "" or #k > M.MAX_PROPERTY_NAME then
      return nil, "properties: names must be 1 to " .. M.MAX_PROPERTY_NAME .. " characters"
    end
    if not text_ok and not valid_utf8(k) then return nil, "properties: names must be valid UTF-8" end
    local tv = type(v)
    if tv == "string" then
      if #v > M.MAX_PROPERTY_STRING then
        return nil, "properties." .. k .. " must be at most " .. M.MAX_PROPERTY_STRING .. " bytes"
      end
      if not text_ok and not valid_utf8(v) then return nil, "properties." .. k .. " must be valid UTF-8" end
    elseif tv == "number" then
      if not is_finite(v) or v > 1e300 or v < -1e300 then
        return nil, "properties." .. k .. " must be a finite number of magnitude at most 1e300"
      end
    elseif tv ~= "boolean" then
      return nil, "properties." .. k .. " must be a string, a number or a boolean"
    end
  end
  return true
end

-- Checks one decoded event and makes it the event kept, in place: only known fields (an unknown
-- one is refused), nulls removed, the derived ones filled in. Returns the event, nil, its unix
-- time; or nil, a message naming the field. text_ok: every string of the request is known to be
-- valid UTF-8 already (M.text_ok of its body).
local REQUIRED = { "customerId", "eventType" }
function M.normalize(ev, now, text_ok)
  if type(ev) ~= "table" then return nil, "an event must be a JSON object" end
  for k in pairs(ev) do
    if type(k) ~= "string" then return nil, "an event must be a JSON object" end
    if not KNOWN[k] then return nil, "unknown field '" .. excerpt(k, 64) .. "'" end
  end
  for _, name in ipairs(REQUIRED) do
    if type(ev[name]) ~= "string" or ev[name] == "" then return nil, name .. " is required (a non-empty string)" end
  end
  local null = cjson.null
  for _, name in ipairs(STRING_FIELDS) do
    local v = ev[name]
    if v == null then
      ev[name] = nil
    elseif v ~= nil then
      if type(v) ~= "string" or v == "" or #v > M.MAX_STRING then
        return nil, name .. " must be a non-empty string of at most " .. M.MAX_STRING .. " characters"
      end
      if not text_ok and not valid_utf8(v) then return nil, name .. " must be valid UTF-8" end
    end
  end
  for _, name in ipairs(COUNT_FIELDS) do
    local v = ev[name]
    if v == null then
      ev[name] = nil
    elseif v ~= nil and not is_count(v) then
      return nil, name .. " must be a non-negative integer of at most 9007199254740991"
    end
  end
  local cost = ev.costCents
  if cost == null or cost == nil then
    ev.costCents = 0
  elseif type(cost) ~= "number" or not is_finite(cost) or cost < 0 or cost > M.MAX_COST then
    return nil, "costCents must be a finite number from 0 to 1e12"
  end
  if ev.properties == null then
    ev.properties = nil
  elseif ev.properties ~= nil then
    local ok, msg = check_properties(ev.properties, text_ok)
    if not ok then return nil, msg end
  end
  local input, output = ev.inputTokens or 0, ev.outputTokens or 0
  ev.inputTokens, ev.outputTokens = input, output
  -- The usage contract defines totalTokens as input + output; a different value sent by a
  -- client would make totalTokens disagree with the two sums beside it, so it is refused.
  local sum = input + output
  -- Past 2^53 - 1 the sum is no longer exact in a double: totalTokens would not be input + output.
  if sum > M.MAX_COUNT then
    return nil, "inputTokens + outputTokens must be at most 9007199254740991 (totalTokens is their sum)"
  end
  if ev.totalTokens ~= nil and ev.totalTokens ~= sum then
    return nil, string.format("totalTokens must equal inputTokens + outputTokens (%.0f) or be left out, got %.0f",
      sum, ev.totalTokens)
  end
  ev.totalTokens = sum
  local ts, secs, frac
  local stamp = ev.timestamp
  if stamp == nil or stamp == cjson.null then
    -- Milliseconds, and the in-memory time is the one the stored text gives back on a restart.
    secs = math.floor(now)
    frac = string.format("%03d", math.min(999, math.floor((now - secs) * 1000)))
    ts = secs + tonumber("0." .. frac)
  else
    if type(stamp) == "string" then
      -- The usual UTC form is kept as it is (it is what format would write).
      ts = time.parse_utc(stamp)
      if ts then return ev, nil, ts end
      if #stamp <= M.MAX_TIMESTAMP then ts, secs, frac = time.parse(stamp) end
    end
    if not ts then
      return nil, "timestamp must be an ISO 8601 date-time such as 2024-01-15T10:30:00Z (a zone of at most "
        .. "+/-23:59, at most 9 fraction digits)"
    end
  end
  ev.timestamp = time.format(secs, frac)
  return ev, nil, ts
end

-- One stored line. Numbers are written exactly (integers as integers, others with 17 significant
-- digits) so a restart reloads the very same doubles; cjson stops at 14 digits.
local format, floor = string.format, math.floor
local function number(v)
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
  return format("%.17g", v)
end
M.number = number

-- The same into a string.buffer: LuaJIT writes a number of at most 14 digits as "%.14g" does, so an
-- integer below 1e14 is put as it is (0 as "0": put(-0) would write "-0"), other numbers through
-- putf, with no string made either way.
local function put_number(buf, v)
  if v == 0 then
    buf:put("0")
  elseif v == floor(v) and v > -1e14 and v < 1e14 then
    buf:put(v)
  elseif v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
    buf:putf("%d", v)
  else
    buf:putf("%.17g", v)
  end
end

local json_plain = text.json_plain
local function put_str(buf, v)
  -- Nothing to escape: the usual case, without a trip through cjson.
  if json_plain(v) then
    buf:put('"', v, '"')
  else
    buf:put(cjson.encode(v))
  end
end

-- The fields in this order, then properties; absent ones left out, appended to string.buffer buf.
-- Nothing is made per event but the buffer's bytes (this runs for every event stored): the store
-- binds them as they are.
function M.encode_into(buf, ev)
  local model, provider, key, latency = ev.model, ev.provider, ev.idempotencyKey, ev.latencyMs
  buf:put('{"id":"', ev.id, '","customerId":')
  put_str(buf, ev.customerId)
  buf:put(',"eventType":')
  put_str(buf, ev.eventType)
  if model then
    buf:put(',"model":')
    put_str(buf, model)
  end
  if provider then
    buf:put(',"provider":')
    put_str(buf, provider)
  end
  if key then
    buf:put(',"idempotencyKey":')
    put_str(buf, key)
  end
  buf:put(',"timestamp":"', ev.timestamp, '","inputTokens":')
  put_number(buf, ev.inputTokens)
  buf:put(',"outputTokens":')
  put_number(buf, ev.outputTokens)
  buf:put(',"totalTokens":')
  put_number(buf, ev.totalTokens)
  if latency then
    buf:put(',"latencyMs":')
    put_number(buf, latency)
  end
  buf:put(',"costCents":')
  put_number(buf, ev.costCents)
  local props = ev.properties
  if not props then
    buf:put("}")
    return buf
  end
  buf:put(',"properties":{')
  local first = true
  for k, v in pairs(props) do
    if not first then buf:put(",") end
    first = false
    put_str(buf, k)
    buf:put(":")
    local t = type(v)
    if t == "number" then
      put_number(buf, v)
    elseif t == "string" then
      put_str(buf, v)
    else
      buf:put(v and "true" or "false")
    end
  end
  buf:put("}}")
  return buf
end

local line_buf = require("string.buffer").new(512)
-- The event's stored line as a string.
function M.encode_line(ev)
  line_buf:reset()
  return M.encode_into(line_buf, ev):tostring()
end

-- Whether every string a JSON text holds, once decoded, is valid UTF-8: the text is, and has no
-- \u escape of a surrogate (cjson decodes a lone one into bytes that are not UTF-8). Then the
-- per-string checks can be skipped.
local find = string.find
function M.text_ok(raw)
  local at = find(raw, "\\u", 1, true)
  while at do
    if find(raw, "^[dD][89a-fA-F]", at + 2) then return false end
    at = find(raw, "\\u", at + 2, true)
  end
  return valid_utf8(raw)
end

return M
