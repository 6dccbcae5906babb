-- NDJSON events for bench/import.sh: lua5.4 bench/import_gen.lua LINES [time|random] > FILE
-- Deterministic (the same file every time), about 210 bytes a line: 1,000 customers, four models,
-- properties on every fifth line, timestamps over January 2025 (one every 2.7 s for a million
-- lines): in time order, as a gateway's log has them, or ("random") the very same lines in a
-- random order (a Park-Miller shuffle, the same every time).
local n = tonumber(arg[1]) or 1000000
local order = arg[2] or "time"
assert(order == "time" or order == "random", "the order is time or random")
local models = { { "gpt-4o", "openai" }, { "gpt-4o-mini", "openai" }, { "claude-3-5-sonnet", "anthropic" },
  { "gemini-1.5-pro", "google" } }
local perm
if order == "random" then
  perm = {}
  for i = 1, n do perm[i] = i end
  local x = 20250101
  for i = n, 2, -1 do
    x = (16807 * x) % 2147483647
    local j = 1 + x % i
    perm[i], perm[j] = perm[j], perm[i]
  end
end
local out, k = {}, 0
local format = string.format
for pos = 1, n do
  local i = perm and perm[pos] or pos
  local m = models[i % 4 + 1]
  local t = 1735689600 + (i - 1) * (31 * 86400) // n -- 2025-01-01 onwards
  local props = i % 5 == 0 and format(',"properties":{"region":"%s","retry":%s}', i % 2 == 0 and "eu" or "us",
    i % 10 == 0 and "true" or "false") or ""
  k = k + 1
  out[k] = format('{"customer_id":"cust_%04d","event_type":"model_call","model":"%s","provider":"%s",'
    .. '"input_tokens":%d,"output_tokens":%d,"latency_ms":%d,"cost_cents":%.4f,"timestamp":"%s"%s}',
    i % 1000, m[1], m[2], 50 + i % 4000, 10 + i % 900, 80 + i % 3000, (i % 10007) / 1000,
    os.date("!%Y-%m-%dT%H:%M:%SZ", t), props)
  if k == 10000 then
    io.write(table.concat(out, "\n"), "\n")
    out, k = {}, 0
  end
end
if k > 0 then io.write(table.concat(out, "\n", 1, k), "\n") end
