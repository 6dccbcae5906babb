-- The gateway under load, as issue #16 sets it: real nginx (2 workers) with limitry.gateway in
-- front of a model API stand-in; a Limitry stand-in (the local server) answering after 20 ms,
-- enforcing 1,000 API requests per minute and holding one quota (customer `capped`, 10,000 tokens
-- a day); wrk over 20 customers (`capped` one request in 20), half the calls streamed; Limitry
-- answering 503 for a while, an nginx reload, then time to drain. Shared by spec/gateway_spec.lua
-- (a short run) and bench/gateway.lua (the full one, printed as a table).
package.path = "server/?.lua;" .. package.path
local local_server = require "limitry_local"
local socket = require "socket"
local gateway_nginx = require "spec.support.gateway_nginx"
local support = require "spec.support.server"
local sink = require "spec.support.limitry_sink"

local M = {}

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

local function http_get(url, method)
  local status, body = support.http(method or "GET", url)
  return status, body
end

-- The Limitry stand-in: opts.latency (ms), opts.api_limit (per minute), opts.nice (its processes'
-- nice value, e.g. 19: they take only CPU time left over; -5: they get theirs first).
function M.start_limitry(opts)
  local dir = support.tmpdir("standin")
  local info = local_server.start { dir = dir, empty = true, faults = true, latency = opts.latency or 20,
    api_limit = opts.api_limit or 1000 }
  info.root = info.base_url:gsub("/v1$", "")
  if opts.nice then
    os.execute("renice -n " .. opts.nice .. " -p " .. info.pid .. " " .. sh("pgrep -P " .. info.pid):gsub("%s+", " ") .. " >/dev/null")
  end
  return info
end

-- Numbers from a gateway's /metrics page.
function M.metrics(port)
  local _, body = http_get("http://127.0.0.1:" .. port .. "/metrics")
  local m = {}
  for name, labels, value in (body or ""):gmatch("\n?([%w_]+)(%b{}) ([%d.eE+-]+)") do m[name .. labels] = tonumber(value) end
  for name, value in (body or ""):gmatch("\n([%w_]+) ([%d.eE+-]+)") do m[name] = tonumber(value) end
  return m
end

-- The pids of an nginx master's workers.
local function worker_pids(master)
  local pids = {}
  for pid in sh("pgrep -P " .. master):gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
  return pids
end

M.worker_pids = worker_pids

local function rss_kib(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local kb = f:read("*a"):match("VmRSS:%s*(%d+)")
  f:close()
  return tonumber(kb)
end

-- Error-log lines of level warn and above (nginx's own notices of starts and reloads are not).
local function log_lines(dir)
  local f = io.open(dir .. "/logs/error.log")
  if not f then return 0, 0, {} end
  local n, crashes, sample = 0, 0, {}
  for line in f:lines() do
    if line:find("%[warn%]") or line:find("%[error%]") or line:find("%[crit%]") or line:find("%[alert%]")
      or line:find("%[emerg%]") then
      n = n + 1
      if #sample < 5 then sample[#sample + 1] = line end
    end
    if line:find("exited on signal", 1, true) then crashes = crashes + 1 end
  end
  f:close()
  return n, crashes, sample
end

local function wrk_command(port, path, connections, seconds, out)
  return string.format("wrk -t2 -c%d -d%ds --latency -s bench/gateway_wrk.lua http://127.0.0.1:%d -- %s > %s 2>&1",
    connections, seconds, port, path, out)
end

-- wrk's figures from its output text.
function M.parse_wrk(text)
  local function ms(v, unit)
    v = tonumber(v)
    if unit == "us" then return v / 1000 elseif unit == "s" then return v * 1000 end
    return v
  end
  local r = { requests = tonumber(text:match("(%d+) requests in")), rps = tonumber(text:match("Requests/sec:%s*([%d.]+)")),
    non2xx = tonumber(text:match("Non%-2xx or 3xx responses: (%d+)")) or 0,
    errors = text:match("Socket errors: ([^\n]+)") }
  for p, v, unit in text:gmatch("(%d+)%%%s+([%d.]+)(%a+)") do r["p" .. p] = ms(v, unit) end
  return r
end

local function upstream_served(g)
  local _, body = http_get("http://127.0.0.1:" .. g.upstream .. "/_served")
  local calls, tokens = (body or ""):match('"calls":(%d+),"tokens":(%d+)')
  return tonumber(calls), tonumber(tokens)
end

-- Runs the scenario. opts: seconds, connections, outage_at, outage_seconds, reload_at, drain (s),
-- workers, gateway (extra configure options), quiet. Returns the figures.
function M.run(opts)
  local limitry = require "limitry"
  local lim = M.start_limitry(opts)
  local admin = limitry.new { api_key = lim.api_key, base_url = lim.base_url }
  assert(admin:quotas():create { name = "capped daily tokens", metric = "total_tokens", limit_value = 10000,
    period = "day", dimension_filters = { customer_id = "capped" } })
  local config = { client = { api_key = lim.api_key, base_url = lim.base_url } }
  for k, v in pairs(opts.gateway or {}) do config[k] = v end
  local g = gateway_nginx.start { dir = support.tmpdir("gw-scenario"), workers = opts.workers or 2, config = config }
  local out = support.tmpdir("wrk") .. "/wrk.txt"
  local started = socket.gettime()
  os.execute(wrk_command(g.port, "/v1", opts.connections, opts.seconds, out) .. " &")
  local rss = {}
  local function sample()
    for _, pid in ipairs(worker_pids(g.pid)) do
      local kb = rss_kib(pid)
      if kb and (not rss.max or kb > rss.max) then rss.max = kb end
    end
  end
  local did_outage, did_reload = not opts.outage_at, not opts.reload_at
  while socket.gettime() - started < opts.seconds + 1 do
    local t = socket.gettime() - started
    if not did_outage and t >= opts.outage_at then
      did_outage = true
      http_get(lim.root .. "/_test/outage?seconds=" .. opts.outage_seconds .. "&status=503", "POST")
    end
    if not did_reload and t >= opts.reload_at then
      did_reload = true
      gateway_nginx.reload(g)
    end
    sample()
    socket.sleep(0.2)
  end
  -- wrk prints its totals when it ends.
  local text
  repeat
    local f = io.open(out)
    text = f and f:read("*a") or ""
    if f then f:close() end
    if not text:find("Requests/sec", 1, true) then socket.sleep(0.2) end
  until text:find("Requests/sec", 1, true) or socket.gettime() - started > opts.seconds + 30
  local load_end = socket.gettime()
  -- Drain: until Limitry holds every served call's event, or the drain time is over.
  local served, tokens, events
  repeat
    served, tokens = upstream_served(g)
    local _, stats = http_get(lim.root .. "/_test/stats")
    events = tonumber((stats or ""):match('"events":(%d+)'))
    local m = M.metrics(g.port)
    if events == served + (m['limitry_answers_recorded_total{answer="incomplete"}'] or 0) then break end
    sample()
    socket.sleep(0.25)
  until socket.gettime() - load_end > (opts.drain or 30)
  local drained = socket.gettime() - load_end
  local _, stats = http_get(lim.root .. "/_test/stats")
  local wide_s, wide_e = "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
  local summary = assert(admin:usage():get_summary(wide_s, wide_e))
  local capped = assert(admin:customers():get_usage("capped", wide_s, wide_e))
  local metrics = M.metrics(g.port)
  -- Answers cut short (the gateway records what it counted; the upstream does not call them served).
  local incomplete = metrics['limitry_answers_recorded_total{answer="incomplete"}'] or 0
  local incomplete_tokens = metrics.limitry_incomplete_answer_tokens_total or 0
  local lines, crashes, sample_lines = log_lines(g.dir)
  local r = {
    wrk = M.parse_wrk(text),
    served = served, upstream_tokens = tokens, events = events, tokens = summary.totalTokens,
    incomplete = incomplete, incomplete_tokens = incomplete_tokens,
    capped_tokens = capped.totalTokens, limitry_calls = tonumber(stats:match('"api_requests":(%d+)')),
    api_limited = tonumber(stats:match('"api_limited":(%d+)')), outage_answers = tonumber(stats:match('"outage_answers":(%d+)')),
    drain_seconds = drained, log_lines = lines, crashes = crashes, log_sample = sample_lines,
    rss_max_kib = rss.max, metrics = metrics, gateway = g, limitry = lim,
  }
  return r
end

function M.stop(r)
  gateway_nginx.stop(r.gateway)
  support.stop(r.limitry)
end

-- Gateway path vs the bare proxy in the same nginx: `rounds` alternating wrk runs of `seconds`.
-- The gateway's own cost is what is compared: Limitry is spec.support.limitry_sink, which answers
-- after 20 ms as Limitry does but stores nothing (a real gateway does not share its cores with
-- Limitry's ingest; the local server's would be counted against the gateway on this machine).
-- Returns { bare = {wrk figures...}, gateway = {...}, events = what the sink was sent }.
function M.compare(opts)
  local lim = sink.start { latency = opts.latency or 20 }
  local g = gateway_nginx.start { dir = support.tmpdir("gw-compare"), workers = opts.workers or 2,
    config = { client = { api_key = lim.api_key, base_url = lim.base_url } } }
  local runs = { bare = {}, gateway = {} }
  local out = support.tmpdir("wrk") .. "/cmp.txt"
  -- Not counted: 2 s on each path first (LuaJIT compiles the hot paths, the rules are read).
  for _, path in ipairs { "/bare", "/v1" } do os.execute(wrk_command(g.port, path, opts.connections, 2, out)) end
  for _ = 1, opts.rounds do
    for _, which in ipairs { "bare", "gateway" } do
      os.execute(wrk_command(g.port, which == "bare" and "/bare" or "/v1", opts.connections, opts.seconds, out))
      local f = io.open(out)
      runs[which][#runs[which] + 1] = M.parse_wrk(f:read("*a"))
      f:close()
    end
  end
  gateway_nginx.stop(g)
  runs.events = sink.events(lim)
  sink.stop(lim)
  return runs
end

return M
