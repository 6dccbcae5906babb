-- CPU time per request of the gateway path against the bare proxy_pass, by process: wrk, the
-- gateway's nginx workers and the Limitry stand-in (which ingests the batches). On a shared or
-- busy machine requests/s moves with the load; CPU time per request moves much less, so this is
-- where a change to the gateway's hot path is judged.
--   sh bench/gateway.sh cost      (or: lua5.4 bench/gateway_cost.lua [seconds] [rounds])
local scenario = require "spec.support.gateway_scenario"
local gateway_nginx = require "spec.support.gateway_nginx"
local support = require "spec.support.server"
local socket = require "socket"

local seconds, rounds = tonumber(arg[1]) or 5, tonumber(arg[2]) or 3
local TICK = 100 -- clock ticks per second (USER_HZ on Linux)

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

-- utime + stime of a process and its children, in seconds.
local function cpu(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return 0 end
  local stat = f:read("*a")
  f:close()
  local fields = {}
  for x in stat:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / TICK
end

local function workers_cpu(master)
  local total = 0
  for pid in sh("pgrep -P " .. master):gmatch("%d+") do total = total + cpu(pid) end
  return total
end

local lim = scenario.start_limitry { latency = 20, api_limit = 1000000, nice = true }
local g = gateway_nginx.start { dir = support.tmpdir("gw-cost"), workers = 2,
  config = { client = { api_key = lim.api_key, base_url = lim.base_url } } }
local out = support.tmpdir("wrk") .. "/cost.txt"
local timing = out .. ".time"

local function run(which)
  local g0, l0 = workers_cpu(g.pid), workers_cpu(lim.pid)
  os.execute(string.format("/usr/bin/time -f '%%U %%S' -o %s wrk -t2 -c16 -d%ds --latency -s bench/gateway_wrk.lua http://127.0.0.1:%d -- %s > %s 2>&1",
    timing, seconds, g.port, which == "bare" and "/bare" or "/v1", out))
  -- The recorder's last partial batch leaves within flush_interval (1 s).
  socket.sleep(1.5)
  local f = io.open(out)
  local w = scenario.parse_wrk(f:read("*a"))
  f:close()
  f = io.open(timing)
  local u, s = f:read("*a"):match("([%d.]+) ([%d.]+)")
  f:close()
  local n = w.requests
  return { rps = w.rps, p50 = w.p50, p99 = w.p99, n = n, wrk = (u + s) / n * 1e6,
    nginx = (workers_cpu(g.pid) - g0) / n * 1e6, limitry = (workers_cpu(lim.pid) - l0) / n * 1e6 }
end

local rows = { bare = {}, gateway = {} }
for _ = 1, rounds do
  for _, which in ipairs { "bare", "gateway" } do table.insert(rows[which], run(which)) end
end
gateway_nginx.stop(g)
support.stop(lim)

local function median(list, field)
  local v = {}
  for i, x in ipairs(list) do v[i] = x[field] end
  table.sort(v)
  return v[math.ceil(#v / 2)]
end

print(string.format("wrk -t2 -c16 -d%ds, %d rounds (medians); CPU microseconds per request", seconds, rounds))
print("| path | requests/s | p50 ms | p99 ms | wrk | gateway nginx | Limitry stand-in | total |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for _, which in ipairs { "bare", "gateway" } do
  local r = rows[which]
  local w, n, l = median(r, "wrk"), median(r, "nginx"), median(r, "limitry")
  print(string.format("| %s | %.0f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f |", which, median(r, "rps"),
    median(r, "p50"), median(r, "p99"), w, n, l, w + n + l))
end
