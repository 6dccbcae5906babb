-- Client throughput and memory against the local server with the sample data. Bounded: a fixed
-- number of calls per row.
--   sh bench/client.sh            (starts the server, runs this on Lua 5.4 and LuaJIT)
local limitry = require "limitry"
local core = require "limitry.core"

local N = tonumber(os.getenv("CALLS")) or 500
local S, E = "2024-01-01T00:00:00Z", "2024-03-31T00:00:00Z"

local function rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local kb = f:read("*a"):match("VmRSS:%s+(%d+)")
  f:close()
  return tonumber(kb) or 0
end

local rows = {}
local function row(name, calls, seconds)
  rows[#rows + 1] = string.format("| %-40s | %6d | %9.1f | %8.3f |", name, calls, calls / seconds, seconds / calls * 1000)
end

local client = limitry.new()
local usage = client:usage()

local t = core.now()
for _ = 1, N do assert(usage:get_summary(S, E, { customer_id = "cust_acme" })) end
row("get_summary, sequential, keep-alive", N, core.now() - t)

t = core.now()
for _ = 1, N / 10 do assert(usage:get_timeseries("hour", S, E)) end
row("get_timeseries hourly 90 d (2,160 rows)", N / 10, core.now() - t)

t = core.now()
local done, inflight, started = 0, 0, 0
while done < N do
  while inflight < 16 and started < N do
    started = started + 1
    inflight = inflight + 1
    usage:start_summary(S, E, { customer_id = "cust_acme" }, function(res)
      assert(res)
      done = done + 1
      inflight = inflight - 1
    end)
  end
  client:poll(0.01)
end
row("start_summary, 16 in flight", N, core.now() - t)

local body = '{"data":[' .. string.rep('{"timestamp":"2024-01-01T00:00:00Z","totalEvents":1,"totalTokens":2,'
  .. '"totalInputTokens":1,"totalOutputTokens":1,"totalCostCents":0.5},', 8759)
  .. '{"timestamp":"2024-01-01T00:00:00Z","totalEvents":1,"totalTokens":2,"totalInputTokens":1,'
  .. '"totalOutputTokens":1,"totalCostCents":0.5}]}'
t = core.now()
for _ = 1, 20 do assert(core.decode(body)) end
row(string.format("core.decode, a year hourly (%.1f MiB)", #body / 1048576), 20, core.now() - t)

collectgarbage()
collectgarbage()
local lua_kb_before, rss_before = collectgarbage("count"), rss_kb()
for _ = 1, N do assert(usage:get_summary(S, E)) end
collectgarbage()
collectgarbage()
local lua_kb_after, rss_after = collectgarbage("count"), rss_kb()
client:close()

print(string.format("%s, libcurl %s, %d calls per row", jit and jit.version or _VERSION, core.curl_version, N))
print("| what                                     |  calls |   calls/s | ms/call |")
print("|------------------------------------------|--------|-----------|----------|")
for _, r in ipairs(rows) do print(r) end
print(string.format("memory over %d more calls: Lua heap %.0f -> %.0f KiB, RSS %d -> %d KiB", N,
  lua_kb_before, lua_kb_after, rss_before, rss_after))
