-- CPU time per request of the gateway path against the bare proxy_pass, by process (wrk, the
-- gateway's nginx workers, the Limitry stand-in) and by phase. On a shared or busy machine
-- requests/s moves with the load; CPU time per request moves much less, so this is where a change
-- to the gateway's hot path is judged.
--   sh bench/gateway.sh cost      (or: lua5.4 bench/gateway_cost.lua [seconds] [rounds])
-- The rows besides bare and gateway are extra locations of the same nginx:
--   floor        phase handlers that only do what any handler must: read ngx.ctx and the chunk
--                (ngx.arg[1]) in the body filter, ngx.ctx and the upstream status in the log phase
--   access       the gateway's access handler only (the decision)
--   access+body  and its body filter (usage read from the answer)
--   gateway      all three (the event recorded): what /v1/ runs
local scenario = require "spec.support.gateway_scenario"
local gateway_nginx = require "spec.support.gateway_nginx"
local support = require "spec.support.server"
local socket = require "socket"

local seconds, rounds = tonumber(arg[1]) or 5, tonumber(arg[2]) or 3
local TICK = 100 -- clock ticks per second (USER_HZ on Linux)

-- utime + stime of a process, in seconds.
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
  for _, pid in ipairs(scenario.worker_pids(master)) do total = total + cpu(pid) end
  return total
end

local GW = 'require("limitry.gateway")'
local ACCESS = "      access_by_lua_block { " .. GW .. ".access() }\n"
local BODY = "      body_filter_by_lua_block { " .. GW .. ".body_filter() }\n"
local FLOOR = "      access_by_lua_block { ngx.ctx.x = true }\n"
  .. "      body_filter_by_lua_block { local ctx, chunk = ngx.ctx.x, ngx.arg[1] }\n"
  .. "      log_by_lua_block { local ctx, status = ngx.ctx.x, ngx.var.upstream_status }\n"

local function location(name, phases)
  return "    location /" .. name .. "/ {\n      rewrite ^/" .. name .. "(/.*)$ $1 break;\n" .. phases
    .. "      proxy_pass http://model_api;\n    }\n"
end

local PATHS = { { "bare", "/bare" }, { "floor", "/floor" }, { "access", "/access" }, { "access+body", "/body" },
  { "gateway", "/v1" } }

local lim = scenario.start_limitry { latency = 20, api_limit = 1000000, nice = 19 }
local g = gateway_nginx.start { dir = support.tmpdir("gw-cost"), workers = 2,
  config = { client = { api_key = lim.api_key, base_url = lim.base_url } },
  extra = location("floor", FLOOR) .. location("access", ACCESS) .. location("body", ACCESS .. BODY) }
local out = support.tmpdir("wrk") .. "/cost.txt"
local timing = out .. ".time"

local function run(path)
  local g0, l0 = workers_cpu(g.pid), workers_cpu(lim.pid)
  os.execute(string.format("/usr/bin/time -f '%%U %%S' -o %s wrk -t2 -c16 -d%ds --latency -s bench/gateway_wrk.lua http://127.0.0.1:%d -- %s > %s 2>&1",
    timing, seconds, g.port, path, out))
  -- The recorder's last partial batch leaves within flush_interval (1 s); the stand-in ingests it.
  socket.sleep(2)
  local f = io.open(out)
  local w = scenario.parse_wrk(f:read("*a"))
  f:close()
  f = io.open(timing)
  local u, s = f:read("*a"):match("([%d.]+) ([%d.]+)")
  f:close()
  local n = w.requests or 0
  if n == 0 then return nil end
  return { rps = w.rps, p50 = w.p50, p99 = w.p99, wrk = (u + s) / n * 1e6,
    nginx = (workers_cpu(g.pid) - g0) / n * 1e6, limitry = (workers_cpu(lim.pid) - l0) / n * 1e6 }
end

local rows = {}
for _ = 1, rounds do
  for _, p in ipairs(PATHS) do
    rows[p[1]] = rows[p[1]] or {}
    table.insert(rows[p[1]], run(p[2]))
  end
end
gateway_nginx.stop(g)
support.stop(lim)

local function median(list, field)
  local v = {}
  for i, x in ipairs(list) do v[i] = x[field] end
  table.sort(v)
  return v[math.ceil(#v / 2)] or 0 / 0
end

print(string.format("wrk -t2 -c16 -d%ds on each path, %d rounds (medians); 2 nginx workers; CPU microseconds per request", seconds, rounds))
print("| path | requests/s | p50 ms | p99 ms | wrk | nginx workers | Limitry stand-in (nice 19) | total |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for _, p in ipairs(PATHS) do
  local r = rows[p[1]]
  local w, n, l = median(r, "wrk"), median(r, "nginx"), median(r, "limitry")
  print(string.format("| %s | %.0f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f |", p[1], median(r, "rps"),
    median(r, "p50"), median(r, "p99"), w, n, l, w + n + l))
end
