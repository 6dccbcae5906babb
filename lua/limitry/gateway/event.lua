-- The gateway's event, written straight to its JSON wire form (what limitry.encode_event would
-- make of it), because this runs once per proxied call: no intermediate table, the timestamp's
-- date part made once per second, an idempotency key from the recorder. The values come from the
-- gateway itself (ids checked in the access phase: no control characters, at most 256 bytes).
local M = {}

local format, floor, find, gsub = string.format, math.floor, string.find, string.gsub

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

-- The event's JSON text. event_type: already quoted (json string); properties: already written
-- (`,"properties":{...}`) or "". model, provider, input, output, cost: nil when unknown.
function M.json(customer, event_type, key, t, latency_ms, model, provider, input, output, cost, properties)
  return format('{"customerId":%s,"eventType":%s,"idempotencyKey":%s,"timestamp":"%s","latencyMs":%d%s%s%s%s%s%s}',
    q(customer), event_type, q(key), M.timestamp(t), latency_ms,
    model and ',"model":' .. q(model) or "", provider and ',"provider":' .. q(provider) or "",
    input and format(',"inputTokens":%d', input) or "", output and format(',"outputTokens":%d', output) or "",
    cost and format(',"costCents":%.17g', cost) or "", properties)
end

return M
