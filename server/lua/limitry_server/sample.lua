-- Deterministic sample data: the same 50,400 events on every machine, 2024-01-01 to 2024-03-31
-- (90 days), six customers, seven models, four providers plus self-hosted models with none.
local time = require "limitry_server.time"

local M = {}

M.START = time.parse("2024-01-01T00:00:00Z")
M.DAYS = 90
M.PER_DAY = 560

local CUSTOMERS = { "cust_acme", "cust_globex", "cust_initech", "cust_umbrella", "cust_hooli", "cust_stark" }
local CUSTOMER_WEIGHT = { 30, 22, 16, 14, 10, 8 }
-- model, provider (nil: self-hosted), event type, cents per 1k input, cents per 1k output
local MODELS = {
  { "gpt-4o", "openai", "chat.completion", 0.25, 1.0 },
  { "gpt-4o-mini", "openai", "chat.completion", 0.015, 0.06 },
  { "claude-3-5-sonnet", "anthropic", "chat.completion", 0.3, 1.5 },
  { "claude-3-haiku", "anthropic", "chat.completion", 0.025, 0.125 },
  { "gemini-1.5-pro", "google", "chat.completion", 0.125, 0.5 },
  { "llama-3-70b", nil, "chat.completion", 0.5, 0.5 },
  { "text-embedding-3-small", "openai", "embedding", 0.002, 0 },
}
local MODEL_WEIGHT = { 20, 26, 14, 12, 8, 8, 12 }

-- Park-Miller: exact in doubles, so identical on every Lua.
local function rng(seed)
  local x = seed
  return function()
    x = (16807 * x) % 2147483647
    return x / 2147483647
  end
end

local function pick(weights, r)
  local total = 0
  for _, w in ipairs(weights) do total = total + w end
  local t = r * total
  for i, w in ipairs(weights) do
    if t < w then return i end
    t = t - w
  end
  return #weights
end

function M.events()
  local rand = rng(20240101)
  local out = {}
  for day = 0, M.DAYS - 1 do
    local n = M.PER_DAY
    for k = 1, n do
      local ts = M.START + day * 86400 + math.floor(rand() * 86400)
      local model = MODELS[pick(MODEL_WEIGHT, rand())]
      local customer = CUSTOMERS[pick(CUSTOMER_WEIGHT, rand())]
      local input = 50 + math.floor(rand() * 4000)
      local output = model[3] == "embedding" and 0 or (20 + math.floor(rand() * 1500))
      -- Fractional cents, to a thousandth: cheap models cost well under a cent per call.
      local cost = math.floor((input * model[4] + output * model[5]) + 0.5) / 1000
      out[#out + 1] = {
        customerId = customer,
        eventType = (model[3] == "chat.completion" and rand() < 0.1) and "tool_call" or model[3],
        model = model[1],
        provider = model[2],
        inputTokens = input,
        outputTokens = output,
        totalTokens = input + output,
        costCents = cost,
        latencyMs = 80 + math.floor(rand() * 2500),
        timestamp = time.format(ts),
        idempotencyKey = string.format("sample-%d-%d", day, k),
      }
    end
  end
  table.sort(out, function(a, b)
    if a.timestamp ~= b.timestamp then return a.timestamp < b.timestamp end
    return a.idempotencyKey < b.idempotencyKey
  end)
  return out
end

return M
