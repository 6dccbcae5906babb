-- Gateway throughput in real nginx: 200 concurrent requests, each making one uncached get_summary
-- against a Limitry that answers in 100 ms, on one nginx worker. Compared in the same run with a
-- handler that does a raw ngx.socket.tcp GET of the same URL (the floor), and with the worker-thread
-- transport. Also: ping latency while calls are in flight. Prints one markdown table.
--   sh bench/openresty.sh            (DURATION=10 CONNECTIONS=200 DELAY_MS=100 THREADS=32)
package.path = "server/?.lua;" .. package.path
local local_server = require "limitry_local"

local ROOT = os.getenv("PWD")
local DURATION = tonumber(os.getenv("DURATION") or 10)
local CONNECTIONS = tonumber(os.getenv("CONNECTIONS") or 200)
local DELAY_MS = tonumber(os.getenv("DELAY_MS") or 100)
local THREADS = tonumber(os.getenv("THREADS") or 32)

local dir = ROOT .. "/.test-tmp/bench-openresty"
os.execute("rm -rf '" .. dir .. "' && mkdir -p '" .. dir .. "'")
local server = local_server.start { dir = dir .. "/server", empty = true, delay = DELAY_MS }
local port = local_server.free_port()

local HTTP = [[
  lua_package_path "ROOT/lua/?.lua;ROOT/lua/?/init.lua;;";
  lua_package_cpath "ROOT/build/luajit/?.so;;";
  init_by_lua_block {
    BASE, KEY = "BASE_URL", "API_KEY"
    require "limitry"
    RANGE = "startDate=2024-01-01T00%3A00%3A00Z&endDate=2024-02-01T00%3A00%3A00Z"
  }
  server {
    listen 127.0.0.1:PORT backlog=4096;
    location = /limitry {
      content_by_lua_block {
        local c = require("limitry").new { api_key = KEY, base_url = BASE, openresty = ngx.var.arg_mode, max_worker_thread_calls = 1000 }
        local s, msg = c:usage():get_summary("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", { customer_id = "c" .. math.random(1, 1e9) })
        if not s then ngx.status = 502; ngx.say(msg) return end
        ngx.say(s.totalEvents)
      }
    }
    location = /raw {
      content_by_lua_block {
        -- The floor: the same GET over a pooled cosocket, status line, headers, Content-Length body.
        local host, port, prefix = BASE:match("^http://([^:/]+):(%d+)(.*)$")
        local sock = ngx.socket.tcp()
        sock:settimeouts(10000, 30000, 30000)
        local ok, err = sock:connect(host, tonumber(port), { pool_size = 64 })
        if not ok then ngx.status = 502; ngx.say(err) return end
        sock:send("GET " .. prefix .. "/usage?" .. RANGE .. "&customerId=c" .. math.random(1, 1e9)
          .. " HTTP/1.1\r\nHost: " .. host .. ":" .. port .. "\r\nAuthorization: Bearer " .. KEY .. "\r\nAccept: application/json\r\n\r\n")
        local line = sock:receive("*l")
        local length
        while true do
          local h = sock:receive("*l")
          if not h or h == "" then break end
          local n = h:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
          if n then length = tonumber(n) end
        end
        local body = length and sock:receive(length)
        sock:setkeepalive(60000, 64)
        if not (line and line:find(" 200 ") and body) then ngx.status = 502; ngx.say("bad answer") return end
        ngx.say(#body)
      }
    }
    location = /ping { content_by_lua_block { ngx.say("pong") } }
  }
]]
local conf = local_server.nginx_conf("thread_pool limitry threads=" .. THREADS .. ";",
  (HTTP:gsub("ROOT", ROOT):gsub("BASE_URL", server.base_url):gsub("API_KEY", server.api_key):gsub("PORT", tostring(port))))
conf = conf:gsub("worker_connections 1024", "worker_connections 4096")
local ok, err = pcall(local_server.run_nginx, dir .. "/gateway", conf, port, "tcp")
if not ok then
  local_server.stop(server.dir)
  error(err)
end

local function wrk(path, connections, seconds)
  local cmd = string.format("wrk -t%d -c%d -d%ds --timeout 10s --latency 'http://127.0.0.1:%d%s' 2>&1", math.min(2, connections), connections, seconds, port, path)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  local total = tonumber(out:match("(%d+) requests in")) or 0
  local non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
  local socket_errors = 0
  for n in (out:match("Socket errors:([^\n]*)") or ""):gmatch("%d+") do socket_errors = socket_errors + tonumber(n) end
  local elapsed = tonumber(out:match("requests in ([%d.]+)s")) or seconds
  return {
    ok_per_s = (total - non2xx) / elapsed,
    errors = non2xx + socket_errors, total = total,
    p50 = out:match("\n%s+50%%%s+(%S+)"), p99 = out:match("\n%s+99%%%s+(%S+)"),
  }
end

-- Warm up both paths (connection pools, JIT), then measure.
wrk("/limitry", 50, 2)
wrk("/raw", 50, 2)
local raw = wrk("/raw", CONNECTIONS, DURATION)
local cos = wrk("/limitry", CONNECTIONS, DURATION)
local thr = wrk("/limitry?mode=worker_thread", CONNECTIONS, DURATION)

-- Ping latency with 200 calls in flight (wrk in the background on /limitry).
local bg = io.popen(string.format("wrk -t1 -c%d -d4s --timeout 10s 'http://127.0.0.1:%d/limitry' >/dev/null 2>&1; echo done", CONNECTIONS, port))
os.execute("sleep 1")
local ping = wrk("/ping", 1, 2)
bg:read("*a")
bg:close()

local function row(name, r, ratio)
  print(string.format("| %-58s | %9.0f | %7s | %7s | %6d of %-7d | %s |", name, r.ok_per_s, r.p50 or "?", r.p99 or "?",
    r.errors, r.total, ratio or ""))
end
print(string.format("\nnginx %s, 1 worker, %d cores; Limitry stand-in answers in %d ms; wrk -t2 -c%d -d%ds per row",
  io.popen("nginx -v 2>&1"):read("*l"):match("[%d.]+$") or "?", tonumber(io.popen("nproc"):read("*l")), DELAY_MS, CONNECTIONS, DURATION))
print("| handler | ok calls/s | p50 | p99 | errors | vs raw cosocket |")
print("|---|---|---|---|---|---|")
row("raw ngx.socket.tcp GET (the floor)", raw, "1.00")
row("limitry get_summary, cosocket (default)", cos, string.format("%.2f", cos.ok_per_s / raw.ok_per_s))
row("limitry get_summary, openresty='worker_thread', threads=" .. THREADS, thr, string.format("%.2f", thr.ok_per_s / raw.ok_per_s))
print(string.format("| /ping on the same worker while %d cosocket calls wait | %9.0f | %7s | %7s | %6d of %-7d |  |",
  CONNECTIONS, ping.ok_per_s, ping.p50 or "?", ping.p99 or "?", ping.errors, ping.total))

local_server.stop(dir .. "/gateway")
local_server.stop(server.dir)
