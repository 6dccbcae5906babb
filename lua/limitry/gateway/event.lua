-- The gateway's event, written straight to its JSON wire form (what limitry.encode_event would
-- make of it) in the recorder's shorthand (limitry.recorder.SHORTHAND: half the room in the
-- shared dict), because this runs once per proxied call: one string.format call and no other
-- string made (a writer per combination of the optional members, built on first use), the
-- timestamp's date part made once per second, an idempotency key from the recorder. The values
-- come from the gateway itself (ids checked in the access phase: no control characters, at most
-- 256 bytes).
local recorder = require "limitry.recorder"

local M = {}

local format, floor, find, gsub, concat = string.format, math.floor, string.find, string.gsub, table.concat
local load = loadstring or load -- luacheck: ignore 113 (Lua 5.1's loadstring)

-- s as the inside of a JSON string (s holds no control characters): s itself unless it has a
-- quote or a backslash.
local function escaped(s)
  if find(s, '"', 1, true) or find(s, "\\", 1, true) then return (gsub(s, '["\\]', "\\%0")) end
  return s
end

function M.quote(s) return '"' .. escaped(s) .. '"' end

local last_second, last_prefix -- the timestamp's date part, made once per second

-- The optional members, in the order they are written, and the bit each has in a writer's mask.
-- The short code of a text of recorder.SHORTHAND.
local CODE = {}
for code, text in pairs(recorder.SHORTHAND) do CODE[text] = code end
M.CODE = CODE

local OPTIONAL = {
  { CODE[',"model":"'] .. '%s"', "model" },
  { CODE[',"provider":"'] .. '%s"', "provider" },
  { CODE[',"inputTokens":'] .. "%d", "input" },
  { CODE[',"outputTokens":'] .. "%d", "output" },
  { CODE[',"costCents":'] .. "%.17g", "cost" },
}

local writers = {}

local function writer(mask)
  local fmt = { CODE['{"customerId":"'] .. "%s" .. CODE['","eventType":'] .. "%s" .. CODE[',"idempotencyKey":"'] .. "%s"
    .. CODE['","timestamp":"'] .. '%s.%03dZ"' .. CODE[',"latencyMs":'] .. "%d" }
  local args = {}
  for i, member in ipairs(OPTIONAL) do
    if floor(mask / 2 ^ (i - 1)) % 2 == 1 then
      fmt[#fmt + 1], args[#args + 1] = member[1], member[2]
    end
  end
  fmt[#fmt + 1] = "%s}"
  local source = "local format, fmt = ...\n"
    .. "return function(customer, event_type, key, second, ms, latency_ms, model, provider, input, output, cost, properties)\n"
    .. "  return format(fmt, customer, event_type, key, second, ms, latency_ms, "
    .. (args[1] and concat(args, ", ") .. ", " or "") .. "properties)\nend\n"
  local w = assert(load(source, "=limitry.gateway.event writer"))(format, concat(fmt))
  writers[mask] = w
  return w
end

-- The event's JSON text, in shorthand. event_type: already quoted (M.quote); properties: already
-- written (M.properties), or "" or nil. model, provider, input, output, cost: nil when unknown.
function M.json(customer, event_type, key, t, latency_ms, model, provider, input, output, cost, properties)
  local mask = (model and 1 or 0) + (provider and 2 or 0) + (input and 4 or 0) + (output and 8 or 0) + (cost and 16 or 0)
  local sec = floor(t)
  if sec ~= last_second then last_second, last_prefix = sec, os.date("!%Y-%m-%dT%H:%M:%S", sec) end
  return (writers[mask] or writer(mask))(escaped(customer), event_type, escaped(key), last_prefix,
    floor((t - sec) * 1000), latency_ms, model and escaped(model), provider and escaped(provider), input, output, cost,
    properties or "")
end

-- The properties member for string values (keys and values without quotes or backslashes), in
-- shorthand: "" when there are none.
function M.properties(pairs_list)
  if not pairs_list[1] then return "" end
  local parts = {}
  for i, kv in ipairs(pairs_list) do parts[i] = '"' .. kv[1] .. '":"' .. kv[2] .. '"' end
  return CODE[',"properties":{'] .. concat(parts, ",") .. "}"
end

return M
