-- Time to encode a 1,000-event batch body: core.encode against lua-cjson's encode of the same table.
-- Bounded: at most ROUNDS encodes (default 200) or 5 seconds per encoder. From the repo root:
--   sh tools/build.sh 5.4 && LUA_CPATH="build/5.4/?.so;;" lua5.4 bench/encode.lua      (or 5.3, 5.1, luajit)
local core = require "limitry.core"
local ok_cjson, cjson = pcall(require, "cjson")

local ROUNDS = tonumber(os.getenv("ROUNDS")) or 200
local MAX_SECONDS = 5
local LUA = jit and jit.version or _VERSION

local models = { "gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3.1-70b" }
local events = {}
for i = 1, 1000 do
  local input, output = 100 + (i * 37) % 4000, 20 + (i * 11) % 900
  events[i] = {
    customerId = "cust_" .. (i % 50),
    eventType = "llm.call",
    model = models[i % #models + 1],
    provider = "openai",
    inputTokens = input,
    outputTokens = output,
    totalTokens = input + output,
    costCents = input * 0.00025 + output * 0.001,
    latencyMs = 200 + (i * 13) % 3000,
    idempotencyKey = core.random_id(),
    timestamp = string.format("2024-01-%02dT%02d:%02d:00.123Z", i % 28 + 1, i % 24, i % 60),
    properties = { feature = "chat", region = i % 2 == 0 and "eu" or "us", cached = i % 3 == 0 },
  }
end
local body = { events = events }

local function bench(encode)
  local text = encode(body)
  collectgarbage()
  local n, t0 = 0, os.clock()
  repeat
    encode(body)
    n = n + 1
  until n >= ROUNDS or os.clock() - t0 > MAX_SECONDS
  return (os.clock() - t0) / n * 1000, #text, n
end

local ms, bytes, n = bench(core.encode)
local line = string.format("encode a 1,000-event batch (%d bytes), %s: core.encode %.3f ms", bytes, LUA, ms)
if ok_cjson then
  local cms, cbytes = bench(cjson.encode)
  -- cjson's text is not the same: 14 significant digits and unsorted keys.
  line = line .. string.format(", cjson.encode %.3f ms (%d bytes), ratio %.2f", cms, cbytes, ms / cms)
else
  line = line .. ", lua-cjson not installed for this Lua"
end
print(line .. string.format(" (%d rounds, CPU time per encode)", n))
