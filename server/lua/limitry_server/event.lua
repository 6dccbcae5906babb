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

-- Checks one decoded event and returns a new table holding only its known fields, with the
-- derived ones filled in: event, nil, unix time; or nil, message naming the field. text_ok: every
-- string of the request is known to be valid UTF-8 already (M.text_ok of its body).
local REQUIRED = { "customerId", "eventType" }
function M.normalize(ev, now, text_ok)
  if type(ev) ~= "table" then return nil, "an event must be a JSON object" end
  for k in pairs(ev) do
    if type(k) ~= "string" then return nil, "an event must be a JSON object" end
    if not KNOWN[k] then return nil, "unknown field '" .. excerpt(k, 64) .. "'" end
  end
  local out = {}
  for _, name in ipairs(REQUIRED) do
    if type(ev[name]) ~= "string" or ev[name] == "" then return nil, name .. " is required (a non-empty string)" end
  end
  for _, name in ipairs(STRING_FIELDS) do
    local v = ev[name]
    if v ~= nil and v ~= cjson.null then
      if type(v) ~= "string" or v == "" or #v > M.MAX_STRING then
        return nil, name .. " must be a non-empty string of at most " .. M.MAX_STRING .. " characters"
      end
      if not text_ok and not valid_utf8(v) then return nil, name .. " must be valid UTF-8" end
      out[name] = v
    end
  end
  for _, name in ipairs(COUNT_FIELDS) do
    local v = ev[name]
    if v ~= nil and v ~= cjson.null then
      if not is_count(v) then
        return nil, name .. " must be a non-negative integer of at most 9007199254740991"
      end
      out[name] = v
    end
  end
  local cost = ev.costCents
  if cost ~= nil and cost ~= cjson.null then
    if type(cost) ~= "number" or not is_finite(cost) or cost < 0 or cost > M.MAX_COST then
      return nil, "costCents must be a finite number from 0 to 1e12"
    end
    out.costCents = cost
  end
  if ev.properties ~= nil and ev.properties ~= cjson.null then
    local ok, msg = check_properties(ev.properties, text_ok)
    if not ok then return nil, msg end
    out.properties = ev.properties
  end
  out.inputTokens = out.inputTokens or 0
  out.outputTokens = out.outputTokens or 0
  -- The usage contract defines totalTokens as input + output; a different value sent by a
  -- client would make totalTokens disagree with the two sums beside it, so it is refused.
  local sum = out.inputTokens + out.outputTokens
  -- Past 2^53 - 1 the sum is no longer exact in a double: totalTokens would not be input + output.
  if sum > M.MAX_COUNT then
    return nil, "inputTokens + outputTokens must be at most 9007199254740991 (totalTokens is their sum)"
  end
  if out.totalTokens ~= nil and out.totalTokens ~= sum then
    return nil, string.format("totalTokens must equal inputTokens + outputTokens (%.0f) or be left out, got %.0f",
      sum, out.totalTokens)
  end
  out.totalTokens = sum
  out.costCents = out.costCents or 0
  local ts, secs, frac
  local stamp = ev.timestamp
  if stamp == nil or stamp == cjson.null then
    -- Milliseconds, and the in-memory time is the one the stored text gives back on a restart.
    secs = math.floor(now)
    frac = string.format("%03d", math.min(999, math.floor((now - secs) * 1000)))
    ts = secs + tonumber("0." .. frac)
  else
    if type(stamp) == "string" and #stamp <= M.MAX_TIMESTAMP then ts, secs, frac = time.parse(stamp) end
    if not ts then
      return nil, "timestamp must be an ISO 8601 date-time such as 2024-01-15T10:30:00Z (a zone of at most "
        .. "+/-23:59, at most 9 fraction digits)"
    end
  end
  out.timestamp = time.format(secs, frac)
  return out, nil, ts
end

-- One stored line. Numbers are written exactly (integers as integers, others with 17 significant
-- digits) so a restart reloads the very same doubles; cjson stops at 14 digits.
local format, floor, concat = string.format, math.floor, table.concat
local function number(v)
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
  return format("%.17g", v)
end
M.number = number

local LINE_FIELDS = { "id", "customerId", "eventType", "model", "provider", "idempotencyKey", "timestamp",
  "inputTokens", "outputTokens", "totalTokens", "latencyMs", "costCents" }
local LINE_KEYS = {}
for i, name in ipairs(LINE_FIELDS) do LINE_KEYS[i] = '"' .. name .. '":' end

local find = string.find
local function value(v)
  local t = type(v)
  if t == "number" then return number(v) end
  if t == "string" then
    -- Nothing to escape (cjson also escapes "/"): the usual case, without a trip through cjson.
    if not find(v, '[%c"\\/\127-\255]') then return '"' .. v .. '"' end
    return cjson.encode(v)
  end
  return tostring(v)
end

function M.encode_line(ev)
  local parts, n = {}, 0
  for i = 1, #LINE_FIELDS do
    local v = ev[LINE_FIELDS[i]]
    if v ~= nil then
      n = n + 1
      parts[n] = LINE_KEYS[i] .. value(v)
    end
  end
  if ev.properties then
    local props = {}
    for k, v in pairs(ev.properties) do props[#props + 1] = cjson.encode(k) .. ":" .. value(v) end
    parts[#parts + 1] = '"properties":{' .. concat(props, ",") .. "}"
  end
  return "{" .. concat(parts, ",") .. "}"
end

-- Whether every string a JSON text holds, once decoded, is valid UTF-8: the text is, and has no
-- \u escape of a surrogate (cjson decodes a lone one into bytes that are not UTF-8). Then the
-- per-string checks can be skipped.
function M.text_ok(raw)
  if find(raw, "\\u[dD][89a-fA-F]") then return false end
  return valid_utf8(raw)
end

return M
