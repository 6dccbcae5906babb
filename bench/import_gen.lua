-- NDJSON events for bench/import.sh: lua5.4 bench/import_gen.lua LINES > FILE
-- Deterministic (the same file every time), about 210 bytes a line: 1,000 customers, four models,
-- properties on every fifth line, timestamps in order over January 2025, as a gateway's log has
-- them.
local n = tonumber(arg[1]) or 1000000
local models = { { "gpt-4o", "openai" }, { "gpt-4o-mini", "openai" }, { "claude-3-5-sonnet", "anthropic" },
  { "gemini-1.5-pro", "google" } }
local out, k = {}, 0
local format = string.format
for i = 1, n do
  local m = models[i % 4 + 1]
  local t = 1735689600 + (i - 1) * (31 * 86400) // n -- 2025-01-01 onwards, in order
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
