-- The gateway's event, written straight to its JSON wire form (what limitry.encode_event would
-- make of it), because this runs once per proxied call: no intermediate table, the timestamp's
-- date part made once per second, an idempotency key from the recorder. The values come from the
-- gateway itself (ids checked in the access phase: no control characters, at most 256 bytes).
local M = {}

local format, floor, find, gsub, concat = string.format, math.floor, string.find, string.gsub, table.concat

-- A JSON string of s, which holds no control characters.
local function q(s)
  if find(s, '"', 1, true) or find(s, "\\", 1, true) then s = gsub(s, '["\\]', "\\%0") end
  return '"' .. s .. '"'
end
M.quote = q

local last_second, last_prefix

-- unix seconds t as an ISO 8601 string with milliseconds (truncated: never a later second).
function M.timestamp(t)
  local sec = floor(t)
  if sec ~= last_second then last_second, last_prefix = sec, os.date("!%Y-%m-%dT%H:%M:%S", sec) end
  return format("%s.%03dZ", last_prefix, floor((t - sec) * 1000))
end

-- f: customer, event_type (already quoted), model, provider, input, output, latency_ms, t, key,
-- cost, properties (a table of strings, or nil).
function M.json(f)
  local parts = { '{"customerId":', q(f.customer), ',"eventType":', f.event_type, ',"idempotencyKey":', q(f.key),
    ',"timestamp":"', M.timestamp(f.t), '","latencyMs":', format("%d", f.latency_ms) }
  local n = #parts
  if f.model then parts[n + 1], parts[n + 2], n = ',"model":', q(f.model), n + 2 end
  if f.provider then parts[n + 1], parts[n + 2], n = ',"provider":', q(f.provider), n + 2 end
  if f.input then parts[n + 1], parts[n + 2], n = ',"inputTokens":', format("%d", f.input), n + 2 end
  if f.output then parts[n + 1], parts[n + 2], n = ',"outputTokens":', format("%d", f.output), n + 2 end
  if f.cost then parts[n + 1], parts[n + 2], n = ',"costCents":', format("%.17g", f.cost), n + 2 end
  if f.properties then
    local props = {}
    for k, v in pairs(f.properties) do props[#props + 1] = q(k) .. ":" .. q(v) end
    if props[1] then parts[n + 1], parts[n + 2], n = ',"properties":{', concat(props, ","), n + 2 end
    if props[1] then parts[n + 1], n = "}", n + 1 end
  end
  parts[n + 1] = "}"
  return concat(parts)
end

return M
