-- JSON for metric objects, written directly: several times faster than cjson's generic walk for
-- the thousands of rows an hourly series has, and integers never come out as 1e+14.
-- Counts are integers by construction, but their sums can pass 2^53 (then %d would print a wrong
-- or, past 2^63, a negative number): such rows go through number(), as costs always do. Ingestion
-- bounds every value so sums stay finite; number() still never writes inf or nan (not JSON).
local cjson = require "cjson.safe"

local format, floor, concat = string.format, math.floor, table.concat

local M = {}

local MAX = 1.7976931348623157e308

local function number(v)
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
  if v ~= v then return "0" end
  if v > MAX then return "1.7976931348623157e+308" end
  if v < -MAX then return "-1.7976931348623157e+308" end
  return format("%.17g", v)
end
M.number = number

local METRICS = '"totalEvents":%d,"totalTokens":%d,"totalInputTokens":%d,"totalOutputTokens":%d,"totalCostCents":%s}'
local PLAIN = "{" .. METRICS
local WITH_TIMESTAMP = '{"timestamp":"%s",' .. METRICS -- our own ISO labels: nothing to escape
local WITH_DIMENSION = '{"dimension":%s,' .. METRICS
local BIG = METRICS:gsub("%%d", "%%s")
local BIG_PLAIN, BIG_TIMESTAMP, BIG_DIMENSION = "{" .. BIG, '{"timestamp":"%s",' .. BIG, '{"dimension":%s,' .. BIG
local EXACT = 2 ^ 53

local function metrics(m)
  local ev, tot, tin, tout = m.totalEvents, m.totalTokens, m.totalInputTokens, m.totalOutputTokens
  local plain, stamped, dimensioned = PLAIN, WITH_TIMESTAMP, WITH_DIMENSION
  -- The usual case, %d on whole numbers, is the fast one; input and output are at most the total.
  if tot >= EXACT or ev >= EXACT then
    ev, tot, tin, tout = number(ev), number(tot), number(tin), number(tout)
    plain, stamped, dimensioned = BIG_PLAIN, BIG_TIMESTAMP, BIG_DIMENSION
  end
  if m.timestamp then
    return format(stamped, m.timestamp, ev, tot, tin, tout, number(m.totalCostCents))
  elseif m.dimension ~= nil then
    return format(dimensioned, m.dimension == cjson.null and "null" or cjson.encode(m.dimension),
      ev, tot, tin, tout, number(m.totalCostCents))
  end
  return format(plain, ev, tot, tin, tout, number(m.totalCostCents))
end
M.metrics = metrics

function M.data(rows)
  local out = {}
  for i, m in ipairs(rows) do out[i] = metrics(m) end
  return '{"data":[' .. concat(out, ",") .. "]}"
end

-- Any value as JSON with exact numbers (cjson is set to 14 digits). A table is an array when it
-- has the ARRAY metatable or a [1]; otherwise an object, its keys sorted so answers are stable.
M.ARRAY = { __name = "array" }
function M.array(t) return setmetatable(t or {}, M.ARRAY) end

local function json(v, out)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = cjson.encode(v)
  elseif t == "number" then
    out[#out + 1] = number(v)
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == nil or v == cjson.null then
    out[#out + 1] = "null"
  elseif getmetatable(v) == M.ARRAY or v[1] ~= nil then
    out[#out + 1] = "["
    for i, item in ipairs(v) do
      if i > 1 then out[#out + 1] = "," end
      json(item, out)
    end
    out[#out + 1] = "]"
  else
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = cjson.encode(k)
      out[#out + 1] = ":"
      json(v[k], out)
    end
    out[#out + 1] = "}"
  end
end

-- The answer to a batch: {"count","duplicates","recorded","results"}, each result {"id","status",
-- "timestamp"} or {"id","idempotencyKey","status"}: the bytes M.json makes of it, built directly
-- (a thousand results per batch).
-- A batch's answer, written into one buffer: no string per event (a batch of 1,000 made 1,000).
-- LuaJIT's string.buffer, required at the first batch (this module loads in plain Lua too).
local batch_buf
function M.batch_result(count, recorded, results)
  batch_buf = batch_buf or require("string.buffer").new(65536)
  local b = batch_buf
  b:reset()
  b:putf('{"count":%d,"duplicates":%d,"recorded":%d,"results":[', count, count - recorded, recorded)
  for i, r in ipairs(results) do
    if i > 1 then b:put(",") end
    if r.status == "recorded" then
      b:put('{"id":"', r.id, '","status":"recorded","timestamp":"', r.timestamp, '"}')
    else
      b:put('{"id":"', r.id, '","idempotencyKey":', cjson.encode(r.idempotencyKey), ',"status":"duplicate"}')
    end
  end
  b:put("]}")
  return b:tostring()
end

function M.json(v)
  local out = {}
  json(v, out)
  return concat(out)
end

return M
