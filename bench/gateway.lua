-- The gateway scenario of issue #16, measured: sh bench/gateway.sh (about 3 minutes).
--   lua5.4 bench/gateway.lua [quick]
-- Prints one markdown table: what Limitry received against what the upstream served, the capped
-- customer, Limitry calls, the error log, a whole-run Limitry outage, and the gateway path against a
-- bare proxy_pass in the same nginx.
local scenario = require "spec.support.gateway_scenario"

local quick = arg[1] == "quick"
local compare_only = arg[1] == "compare"
local rows = {}
local function row(what, value, target, met) rows[#rows + 1] = { what, value, target or "", met == nil and "" or (met and "met" or "MISSED") } end

if not compare_only then
-- 1. The scenario: 64 connections, 24 s, Limitry 503 for 6 s from second 8, nginx -s reload at 16.
local r = scenario.run { seconds = quick and 8 or 24, connections = 64, outage_at = quick and 2 or 8,
  outage_seconds = quick and 2 or 6, reload_at = quick and 5 or 16, drain = 30 }
scenario.stop(r)
local w = r.wrk
row("requests sent (wrk -t2 -c64, " .. (quick and 8 or 24) .. " s)", w.requests)
row("calls the upstream served", r.served)
row("calls cut short (recorded with what was counted, marked incomplete)", r.incomplete)
row("events at Limitry", r.events, "= served + cut short", r.events == r.served + r.incomplete)
row("events lost", r.served + r.incomplete - r.events, "0", r.served + r.incomplete == r.events)
row("tokens at Limitry / reported by the upstream (+ counted in calls cut short)",
  r.tokens .. " / " .. r.upstream_tokens .. " (+ " .. r.incomplete_tokens .. ")", "equal", r.tokens == r.upstream_tokens + r.incomplete_tokens)
row("queue drained after the load", string.format("%.1f s", r.drain_seconds), "<= 30 s", r.drain_seconds <= 30)
row("Limitry API calls", r.limitry_calls)
row("events per Limitry call", string.format("%.0f", r.events / math.max(1, r.limitry_calls)), ">= 50", r.events / math.max(1, r.limitry_calls) >= 50)
row("Limitry API-limit 429s", r.api_limited, "0", r.api_limited == 0)
row("tokens admitted for `capped` (quota 10,000)", r.capped_tokens, "9,000 - 11,000", r.capped_tokens >= 9000 and r.capped_tokens <= 11000)
row("requests served (of those sent)", string.format("%.1f %%", 100 * r.served / w.requests), ">= 93 %", r.served / w.requests >= 0.93)
row("error-log lines (warn and above)", r.log_lines, "<= 200", r.log_lines <= 200)
row("worker crashes", r.crashes, "0", r.crashes == 0)
row("worker RSS, highest", (r.rss_max_kib or 0) .. " KiB")

-- 2. Limitry down for a whole run: the queue stops at its bound, every refused event counted.
local bound = 20000
local d = scenario.run { seconds = quick and 8 or 60, connections = 16, outage_at = 0, outage_seconds = quick and 9 or 61,
  drain = 60, gateway = { max_queued = bound } }
scenario.stop(d)
local refused = d.metrics.limitry_events_refused_total or 0
row("Limitry down " .. (quick and 8 or 60) .. " s: calls served", d.served)
row("  calls cut short at the end of the run (recorded or refused, marked incomplete)", d.incomplete)
row("  events delivered after recovery + refused (queue full)", d.events .. " + " .. refused .. " = " .. (d.events + refused),
  "= served + cut short", d.events + refused == d.served + d.incomplete)
row("  events delivered after recovery (max_queued " .. bound .. ")", d.events, "<= " .. bound, d.events <= bound)
row("  worker RSS, highest", (d.rss_max_kib or 0) .. " KiB")
row("  error-log lines", d.log_lines, "<= 200", d.log_lines <= 200)

end

-- 3. Gateway path vs bare proxy_pass, 16 connections, Limitry healthy (a stand-in that stores
-- nothing: spec.support.limitry_sink; Limitry's own work is not the gateway's).
local runs = scenario.compare { rounds = quick and 1 or 5, seconds = quick and 3 or 8, connections = 16 }
local function median(list, field)
  local v = {}
  for i, x in ipairs(list) do v[i] = x[field] end
  table.sort(v)
  return v[math.ceil(#v / 2)]
end
row("comparison's Limitry: answers after 20 ms, stores nothing (spec/support/limitry_sink.lua); events it was sent", runs.events)
local brps, grps = median(runs.bare, "rps"), median(runs.gateway, "rps")
local b99, g99 = median(runs.bare, "p99"), median(runs.gateway, "p99")
row("bare proxy_pass: requests/s, p50, p99 (median of runs)", string.format("%.0f, %.2f ms, %.2f ms", brps, median(runs.bare, "p50"), b99))
row("gateway: requests/s, p50, p99", string.format("%.0f, %.2f ms, %.2f ms", grps, median(runs.gateway, "p50"), g99))
local function each(list, field, fmt)
  local v = {}
  for i, x in ipairs(list) do v[i] = string.format(fmt, x[field]) end
  return table.concat(v, ", ")
end
row("  each round: bare requests/s, p99 ms", each(runs.bare, "rps", "%.0f") .. "; " .. each(runs.bare, "p99", "%.2f"))
row("  each round: gateway requests/s, p99 ms", each(runs.gateway, "rps", "%.0f") .. "; " .. each(runs.gateway, "p99", "%.2f"))
row("gateway / bare requests/s", string.format("%.2f", grps / brps), ">= 0.80", grps / brps >= 0.8)
row("gateway p99 vs bare p99", string.format("%.2f ms vs %.2f ms", g99, b99), "<= max(1.5x, +2 ms)", g99 <= math.max(1.5 * b99, b99 + 2))

print("| measure | value | target | met |")
print("|---|---|---|---|")
for _, x in ipairs(rows) do print("| " .. table.concat(x, " | ") .. " |") end
