-- limitry.gateway's metrics in Prometheus' text format (the nginx-lua-prometheus conventions: a
-- `limitry_` prefix, `_total` counters, HELP and TYPE lines, one histogram). Every number is a
-- counter in the shared dict (keys "m:..."), so the page is the same whichever worker serves it.
local recorder_mod = require "limitry.recorder"

local M = {}

local COUNTERS = {
  { "events_queued", "limitry_events_queued_total", "Events the recorder queued." },
  { "events_sent", "limitry_events_sent_total", "Events Limitry acknowledged." },
  { "events_retried", "limitry_events_retried_total", "Events in batches that failed and were kept to send again." },
  { "events_refused", "limitry_events_refused_total", "Events refused because the queue was full." },
  { "events_dead_lettered", "limitry_events_dead_lettered_total", "Events Limitry refused as invalid, dropped and logged." },
}

local function escape(v) return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" })) end

local function number(v)
  if v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return string.format("%d", v) end
  return string.format("%.17g", v)
end

-- The page, from the dict and the worker's recorder (its queue depth).
function M.render(dict, recorder)
  local out = {}
  local function line(s) out[#out + 1] = s end
  if not dict then return "# limitry gateway not initialised in this worker\n" end
  local rp = "m:" .. recorder_mod.DEFAULTS.prefix
  local function get(key) return dict:get(key) or 0 end
  for _, c in ipairs(COUNTERS) do
    line("# HELP " .. c[2] .. " " .. c[3])
    line("# TYPE " .. c[2] .. " counter")
    line(c[2] .. " " .. number(get(rp .. c[1])))
  end
  line("# HELP limitry_queue_depth Events waiting to be delivered (queued and in unsettled batches).")
  line("# TYPE limitry_queue_depth gauge")
  line("limitry_queue_depth " .. number(recorder and recorder.queue:depth() or 0))
  line("# HELP limitry_batches_total events:batch calls by outcome.")
  line("# TYPE limitry_batches_total counter")
  for _, o in ipairs { "sent", "failed", "split" } do
    line('limitry_batches_total{outcome="' .. o .. '"} ' .. number(get(rp .. "batches_" .. o)))
  end
  line("# HELP limitry_batch_duration_seconds Duration of delivered events:batch calls.")
  line("# TYPE limitry_batch_duration_seconds histogram")
  for _, le in ipairs(recorder_mod.BUCKETS) do
    line('limitry_batch_duration_seconds_bucket{le="' .. le .. '"} ' .. number(get(rp .. "batch_seconds_le:" .. le)))
  end
  local count = get(rp .. "batch_seconds_count")
  line('limitry_batch_duration_seconds_bucket{le="+Inf"} ' .. number(count))
  line("limitry_batch_duration_seconds_sum " .. number(get(rp .. "batch_seconds_sum")))
  line("limitry_batch_duration_seconds_count " .. number(count))

  line("# HELP limitry_answers_recorded_total Calls served (2xx) and recorded or, the queue being full, refused; by whether their answer was read to its end.")
  line("# TYPE limitry_answers_recorded_total counter")
  for _, a in ipairs { "complete", "incomplete" } do
    line('limitry_answers_recorded_total{answer="' .. a .. '"} ' .. number(get("m:gw:answers:" .. a)))
  end
  line("# HELP limitry_incomplete_answer_tokens_total Tokens counted in answers cut short (a stream that ended early).")
  line("# TYPE limitry_incomplete_answer_tokens_total counter")
  line("limitry_incomplete_answer_tokens_total " .. number(get("m:gw:incomplete_tokens")))

  -- Labelled counters, found by their keys.
  local decisions, calls, errors = {}, {}, {}
  for _, key in ipairs(dict:get_keys(0)) do
    local outcome, source = key:match("^m:dec:(%a+):(%a+)$")
    if outcome then decisions[#decisions + 1] = { outcome, source, get(key) } end
    local call = key:match("^m:[^:]*:?calls:([%w_]+)$")
    if call then calls[call] = (calls[call] or 0) + get(key) end
    local ecall, name = key:match("^m:[^:]*:?call_errors:([%w_]+):([%w_]+)$")
    if ecall then errors[#errors + 1] = { ecall, name, get(key) } end
  end
  table.sort(decisions, function(a, b) return a[1] .. a[2] < b[1] .. b[2] end)
  line("# HELP limitry_decisions_total Limit decisions by outcome and by how they were made.")
  line("# TYPE limitry_decisions_total counter")
  for _, d in ipairs(decisions) do
    line('limitry_decisions_total{outcome="' .. escape(d[1]) .. '",source="' .. escape(d[2]) .. '"} ' .. number(d[3]))
  end
  local names = {}
  for call in pairs(calls) do names[#names + 1] = call end
  table.sort(names)
  line("# HELP limitry_calls_total Calls made to Limitry, by call.")
  line("# TYPE limitry_calls_total counter")
  for _, call in ipairs(names) do line('limitry_calls_total{call="' .. escape(call) .. '"} ' .. number(calls[call])) end
  table.sort(errors, function(a, b) return a[1] .. a[2] < b[1] .. b[2] end)
  line("# HELP limitry_call_errors_total Failed calls to Limitry, by call and error.")
  line("# TYPE limitry_call_errors_total counter")
  for _, e in ipairs(errors) do
    line('limitry_call_errors_total{call="' .. escape(e[1]) .. '",error="' .. escape(e[2]) .. '"} ' .. number(e[3]))
  end
  return table.concat(out, "\n") .. "\n"
end

return M
