-- The local server at gateway scale (issue #18), measured as a new user would: the Lua 5.4 client,
-- one server, events posted in batches of 1,000 for 51 customers (half of them the tracked
-- customer's), then track and check calls against one quota and one rate limit, the usage queries,
-- the server's memory and a restart. Prints one markdown table, a column per number of stored events.
--
--   sh bench/server.sh                      (make bench-server) scales 0, 100,000, 1,000,000
--   BENCH_SCALES="0 10000" sh bench/server.sh
--   BENCH_CALLS=2000 (tracks and checks per scale), BENCH_QUERIES=20 (runs of each query), BENCH_KEEP=1
--
-- The events are a gateway's at 1,000 requests/s: timestamps 1 ms apart, the last million ending
-- when the run starts (so about 17 minutes of traffic, in today's UTC day unless the run starts just
-- after midnight), each with the client's idempotency key. Bounded: every loop has a fixed count;
-- the server is stopped at the end (and on an error), its folder removed unless BENCH_KEEP=1.
-- Loopback only. Latencies are the client's (request to decoded answer), in milliseconds.
package.path = "server/?.lua;" .. package.path
local local_server = require "limitry_local"
local limitry = require "limitry"
local socket = require "socket"

local now = socket.gettime
local SCALES = {}
for n in (os.getenv("BENCH_SCALES") or "0 100000 1000000"):gmatch("%d+") do SCALES[#SCALES + 1] = tonumber(n) end
table.sort(SCALES)
local CALLS = tonumber(os.getenv("BENCH_CALLS")) or 2000
local QUERIES = tonumber(os.getenv("BENCH_QUERIES")) or 20
local DIR = (os.getenv("PWD") or ".") .. "/.test-tmp/bench-server-scale"
local TOTAL = SCALES[#SCALES]
local RATE = 1000                                    -- simulated gateway requests per second
local START = math.floor(now()) - math.ceil(math.max(TOTAL, 1) / RATE) - 60
local TRACKED = "cust_00"
local MODELS = { { "gpt-4o", "openai" }, { "gpt-4o-mini", "openai" }, { "claude-3-5-sonnet", "anthropic" },
  { "claude-3-haiku", "anthropic" }, { "llama-3-70b" } }

local function iso(t)
  local s = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%03dZ", math.floor((t - s) * 1000 + 0.5) % 1000)
end

-- Park-Miller: the same events on every run.
local seed = 20240101
local function rand()
  seed = (16807 * seed) % 2147483647
  return seed / 2147483647
end

-- Event i (0-based, in the order they are posted).
local function make_event(i)
  local customer = (i % 2 == 0) and TRACKED or string.format("cust_%02d", 1 + math.floor(rand() * 50))
  local m = MODELS[1 + math.floor(rand() * #MODELS)]
  local input, output = 50 + math.floor(rand() * 4000), 20 + math.floor(rand() * 1500)
  return {
    customer_id = customer, event_type = rand() < 0.1 and "tool_call" or "chat.completion", model = m[1], provider = m[2],
    input_tokens = input, output_tokens = output, cost_cents = math.floor(input * 0.25 + output + 0.5) / 1000,
    latency_ms = 80 + math.floor(rand() * 2500), timestamp = iso(START + i / RATE),
  }
end

local function percentile(list, p)
  table.sort(list)
  if #list == 0 then return 0 end
  return list[math.max(1, math.ceil(#list * p))]
end

local function ms(v) return string.format(v < 10 and "%.2f" or "%.1f", v * 1000) end

local function rss_kib(pid)
  local total = 0
  local pids = { pid }
  local f = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children")
  if f then
    for c in f:read("*a"):gmatch("%d+") do pids[#pids + 1] = c end
    f:close()
  end
  for _, p in ipairs(pids) do
    local s = io.open("/proc/" .. p .. "/status")
    if s then
      total = total + tonumber(s:read("*a"):match("VmRSS:%s*(%d+)") or 0)
      s:close()
    end
  end
  return total
end

-- CPU seconds (user + system) the server's worker has used so far.
local function worker_cpu(pid)
  local f = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children")
  local total = 0
  if f then
    for c in f:read("*a"):gmatch("%d+") do
      local s = io.open("/proc/" .. c .. "/stat")
      if s then
        local fields = {}
        for x in s:read("*a"):match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
        s:close()
        total = total + (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime, stime (ticks of 1/100 s)
      end
    end
    f:close()
  end
  return total
end

-- The disk under the data folder: p50 and p99 of 300 fsyncs of a 4 KiB append, in ms (python3, a
-- dependency already). Every track and batch waits for one: on a shared machine this row says
-- whether a slow p99 above is the disk's.
local function fsync_latency(dir)
  local p = io.popen("python3 -c 'import os,sys,time\n"
    .. "fd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_APPEND)\nts=[]\n"
    .. "for i in range(300):\n os.write(fd,b\"x\"*4096); t=time.perf_counter(); os.fsync(fd); ts.append(time.perf_counter()-t)\n"
    .. "os.close(fd); os.remove(sys.argv[1]); ts.sort(); print(\"%.2f / %.2f\" % (ts[150]*1e3, ts[297]*1e3))' '"
    .. dir .. "/fsync-probe'")
  local out = p:read("*l")
  p:close()
  return out or "?"
end

local function must(res, msg) return assert(res, msg) end

local server, client
local function start()
  local t0 = now()
  server = local_server.start { dir = DIR, empty = true }
  local took = now() - t0
  client = limitry.new { api_key = server.api_key, base_url = server.base_url, timeout = 120 }
  return took
end
local function stop()
  if client then client:close() end
  client = nil
  if server then local_server.stop(server.dir, { reap_wait = 0 }) end
end

-- Times fn() `n` times; returns the list of durations.
local function times(n, fn)
  local out = {}
  for i = 1, n do
    local t0 = now()
    fn(i)
    out[i] = now() - t0
  end
  return out
end

local rows, results = {}, {}
local function row(name) rows[#rows + 1] = name end
row("ingest, events/s (batches of 1,000)")
row("server CPU per batch of 1,000, ms")
row("track p50 / p99, ms")
row("check p50 / p99, ms (quotas)")
row("check p50 / p99, ms (rate limits)")
row("summary, whole range, ms (p50 / max)")
row("summary, one customer, ms")
row("summary, unaligned range (partial minutes), ms")
row("summary, unaligned range, one customer, ms")
row("summary, unaligned range, one model, ms")
row("breakdown by model, ms")
row("breakdown by customer, ms")
row("timeseries hourly, ms")
row("timeseries hourly, one customer, ms")
row("customer usage, ms")
row("events list, 100 of one customer, ms")
row("server RSS (master + worker), MiB")
row("disk: fsync of 4 KiB p50 / p99, ms (before the tracks)")
row("start-up (restart until it serves), s")

local ok, err = pcall(function()
  os.execute("rm -rf '" .. DIR .. "'")
  start()
  must(client:quotas():create { name = "bench daily tokens", metric = "total_tokens", limit_value = 1e15, period = "day",
    dimension_filters = { customer_id = TRACKED } })
  must(client:rate_limits():create { name = "bench per minute", limit_value = 1e9, window = "minute",
    dimension_filters = { customer_id = TRACKED } })
  local stored, ingest_time = 0, 0
  local day = math.floor(START / 86400) * 86400
  local range = { start_date = iso(day):sub(1, 10) .. "T00:00:00Z", end_date = iso(day + 2 * 86400):sub(1, 10) .. "T00:00:00Z" }
  for col, scale in ipairs(SCALES) do
    local r = {}
    results[col] = r
    -- Ingest up to this scale.
    local batch_times = 0
    local events = client:events()
    local added = 0
    local cpu0 = worker_cpu(server.pid)
    while stored < scale do
      local n = math.min(1000, scale - stored)
      local list = {}
      for k = 1, n do list[k] = make_event(stored + k - 1) end
      local t0 = now()
      local res, msg = events:batch(list)
      batch_times = batch_times + (now() - t0)
      assert(res and res.count == n, msg)
      stored = stored + n
      added = added + n
    end
    ingest_time = ingest_time + batch_times
    r[1] = added > 0 and string.format("%.0f", added / batch_times) or "-"
    r[2] = added > 0 and string.format("%.1f", (worker_cpu(server.pid) - cpu0) * 1000 / (added / 1000)) or "-"
    local rss = rss_kib(server.pid)
    -- The garbage of the events generated above is this process's: collected now, it does not
    -- land in the latencies below (it put track p99 at 4-5 ms at a million events).
    collectgarbage()
    collectgarbage()
    local disk = fsync_latency(DIR)
    -- Enforcement.
    local tracked = times(CALLS, function(i)
      local d = must(client:track { customer_id = TRACKED, event_type = "chat.completion", model = "gpt-4o",
        provider = "openai", input_tokens = 100 + i, output_tokens = 50, cost_cents = 0.125 })
      assert(d.allowed and #d.quotas == 1 and #d.rateLimits == 1)
    end)
    r[3] = ms(percentile(tracked, 0.5)) .. " / " .. ms(percentile(tracked, 0.99))
    local checked = times(CALLS, function()
      local c = must(client:quotas():check { customer_id = TRACKED, model = "gpt-4o" })
      assert(c.allowed and #c.quotas == 1)
    end)
    r[4] = ms(percentile(checked, 0.5)) .. " / " .. ms(percentile(checked, 0.99))
    checked = times(CALLS, function()
      local c = must(client:rate_limits():check { customer_id = TRACKED })
      assert(c.allowed and #c.rateLimits == 1)
    end)
    r[5] = ms(percentile(checked, 0.5)) .. " / " .. ms(percentile(checked, 0.99))
    -- Usage queries.
    local usage = client:usage()
    local function q(fn)
      local list = times(QUERIES, fn)
      local max = 0
      for _, v in ipairs(list) do if v > max then max = v end end
      return ms(percentile(list, 0.5)) .. " / " .. ms(max)
    end
    local total
    r[6] = q(function() total = must(usage:get_summary(range)) end)
    assert(total.totalEvents >= scale + CALLS, "summary counts " .. total.totalEvents)
    r[7] = q(function() must(usage:get_summary { start_date = range.start_date, end_date = range.end_date, customer_id = TRACKED }) end)
    local span = TOTAL / RATE + 60
    local a, b = START + span * 0.1 + 0.4567, START + span * 0.9 + 0.891
    r[8] = q(function() must(usage:get_summary { start_date = iso(a), end_date = iso(b) }) end)
    r[9] = q(function() must(usage:get_summary { start_date = iso(a), end_date = iso(b), customer_id = TRACKED }) end)
    r[10] = q(function() must(usage:get_summary { start_date = iso(a), end_date = iso(b), model = "claude-3-haiku" }) end)
    r[11] = q(function() must(usage:get_breakdown { group_by = "model", start_date = range.start_date, end_date = range.end_date }) end)
    r[12] = q(function() must(usage:get_breakdown { group_by = "customer_id", start_date = range.start_date, end_date = range.end_date }) end)
    r[13] = q(function() must(usage:get_timeseries { interval = "hour", start_date = range.start_date, end_date = range.end_date }) end)
    r[14] = q(function() must(usage:get_timeseries { interval = "hour", start_date = range.start_date, end_date = range.end_date,
      customer_id = TRACKED }) end)
    r[15] = q(function() must(client:customers():get_usage(TRACKED, range.start_date, range.end_date)) end)
    r[16] = q(function()
      local page = must(client:events():list { customer_id = "cust_07", limit = 100 })
      assert(scale == 0 or #page.data > 0)
    end)
    rss = math.max(rss, rss_kib(server.pid))
    -- A restart (the data stays), then the memory it holds once queried again.
    stop()
    local took = start()
    must(client:usage():get_summary(range))
    must(client:track { customer_id = TRACKED, event_type = "chat.completion", input_tokens = 1 })
    rss = math.max(rss, rss_kib(server.pid))
    r[17] = string.format("%.0f", rss / 1024)
    r[18] = disk
    r[19] = string.format("%.2f", took)
    io.stderr:write(string.format("bench-server: %d events stored, %.0f s of batches so far\n", stored, ingest_time))
  end
end)
local du = io.popen("du -sm '" .. DIR .. "/data' 2>/dev/null"):read("*l")
stop()
if os.getenv("BENCH_KEEP") ~= "1" then os.execute("rm -rf '" .. DIR .. "'") end
if not ok then error(err, 0) end

local head, rule = { "| stored events" }, { "|---" }
for _, s in ipairs(SCALES) do
  local label = tostring(s):reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  head[#head + 1] = label
  rule[#rule + 1] = "---:"
end
print(string.format("local server, %d cores, %s; one nginx worker; the Lua 5.4 client on loopback; %d tracks and %d checks "
  .. "per column, each query %d times", tonumber(io.popen("nproc"):read("*l")) or 0, jit and "LuaJIT" or _VERSION, CALLS, CALLS, QUERIES))
print(table.concat(head, " | ") .. " |")
print(table.concat(rule, "|") .. "|")
local missing = 0
for i, name in ipairs(rows) do
  local line = { "| " .. name }
  for col = 1, #SCALES do
    line[#line + 1] = results[col][i] or ""
    if not results[col][i] then missing = missing + 1 end
  end
  print(table.concat(line, " | ") .. " |")
end
if du then print(string.format("\ndata folder at the end: %s MiB", du:match("^(%d+)"))) end
if missing > 0 then error(missing .. " cells of the table are empty", 0) end
