-- `make bench`: limitry against its references, side by side in one run, printed as one markdown
-- table with the issue-8 targets. Every measurement runs in its own process (bench/worker.lua or
-- the C loops), under `timeout`, against one fixed-reply nginx (bench/fixed_server.lua).
-- The machine is shared and noisy: calls/s rows alternate limitry and its reference for ROUNDS
-- rounds and keep each one's best; instruction counts (callgrind, 2N calls minus N) are repeatable.
--   sh bench/bench.sh                 (BENCH_QUICK=1: a few hundred calls per row, for a smoke run)
-- Exits non-zero when a row could not be measured (the table is still printed).
package.path = "bench/?.lua;" .. package.path
local fixed_server = require "fixed_server"

local ROOT = os.getenv("PWD")
local QUICK = os.getenv("BENCH_QUICK") == "1"
local TMP = (os.getenv("LIMITRY_TEST_TMP") or ROOT .. "/.test-tmp") .. "/bench"
local BIN = ROOT .. "/build/bench"

-- Counts and time budgets (seconds) per row. Normal run: about 3 s per calls/s measurement.
local P = QUICK and {
  rounds = 1, seq = 300, seq_s = 1, socket = 100, tls = 300, luasec = 10, async = 300, async_s = 1,
  wrk_s = 1, decode = 2, rss1 = 100, rss2 = 500, rss_s = 10, cg = 100,
} or {
  rounds = 5, seq = 40000, seq_s = 2, socket = 5000, tls = 40000, luasec = 60, async = 100000, async_s = 3,
  wrk_s = 3, decode = 20, rss1 = 1000, rss2 = 100000, rss_s = 60, cg = 2000,
}

local KEY = "lm_bench_key"
local QUERY = "/usage?startDate=2024-01-01T00%3A00%3A00Z&endDate=2024-02-01T00%3A00%3A00Z"
-- The references send the very header lines limitry 5.4 sends: libcurl formats custom header lines
-- byte by byte (~75 instructions a byte), so a shorter User-Agent alone would lower their cost.
package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;" .. package.path
package.cpath = ROOT .. "/build/5.4/?.so;" .. package.cpath
local USER_AGENT = ("User-Agent: limitry-lua/%s (%s; libcurl/%s)"):format(require("limitry").VERSION, _VERSION,
  require("limitry.core").curl_version)
local HEADERS = { USER_AGENT, "Authorization: Bearer " .. KEY, "Accept: application/json" }
local failures = {}
local STARTED = os.time()

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function capture(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  local ok, _, code = p:close()
  if ok == nil or ok == false or (type(ok) == "number" and ok ~= 0) then return nil, out, code end
  return out
end

local ENV = {
  ["5.4"] = "lua5.4", ["luajit"] = "luajit", ["5.1"] = "lua5.1",
}
-- The command line running worker.lua MODE ARGS on Lua v with this checkout's limitry; the
-- interpreter itself runs under WRAP (valgrind), not `env`.
local WRAP = ""
local function worker(v, ...)
  local args = {}
  for i, a in ipairs { ... } do args[i] = shq(a) end
  return ("env LIMITRY_BENCH_UA=%s LUA_PATH=%s LUA_CPATH=%s %s%s bench/worker.lua %s"):format(shq(USER_AGENT),
    shq(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"), shq(ROOT .. "/build/" .. v .. "/?.so;;"), WRAP, ENV[v],
    table.concat(args, " "))
end

local function c_loop(prog, ...)
  local args = {}
  for i, a in ipairs { ... } do args[i] = shq(a) end
  for _, h in ipairs(HEADERS) do args[#args + 1] = shq(h) end
  return BIN .. "/" .. prog .. " " .. table.concat(args, " ")
end

-- The same C loop with a URL handle parsed once (CURLOPT_CURLU), as limitry sets its URL: the rows
-- against it show limitry's own cost apart from what that setting saves inside libcurl.
local function preparsed(cmd) return "env LOOP_PREPARSED_URL=1 " .. cmd end
local PREPARSED = ", URL parsed once (CURLOPT_CURLU)"

-- Runs cmd (bounded by `timeout`), returns the numbers it printed, or nil after noting the failure.
local function numbers(what, cmd, limit)
  local out, err = capture(("timeout -k 5 %d %s"):format(limit, cmd))
  local t = {}
  for n in (out or ""):gmatch("[%d.]+") do t[#t + 1] = tonumber(n) end
  if not out or #t == 0 then
    failures[#failures + 1] = what .. ": " .. ((err or out or ""):gsub("%s+$", ""):sub(-400))
    return nil
  end
  return t
end

-- calls/s of the "calls seconds [...]" a command printed, and the numbers themselves.
local function rate(what, cmd, limit)
  local t = numbers(what, cmd, limit or 60)
  if t and t[1] > 0 and t[2] > 0 then return t[1] / t[2], t end
  return nil
end

-- Best calls/s of each command over ROUNDS rounds, the commands taking turns; also the numbers
-- printed by each command's best round.
local function best_rates(list)
  local best, printed = {}, {}
  for _ = 1, P.rounds do
    for i, item in ipairs(list) do
      local r, t = rate(item[1], item[2], item[3])
      if r and (not best[i] or r > best[i]) then best[i], printed[i] = r, t end
    end
  end
  return best, printed
end

local function wrk(connections, url)
  local hs = {}
  for _, h in ipairs(HEADERS) do hs[#hs + 1] = "-H " .. shq(h) end
  local out, err = capture(("timeout -k 5 %d wrk -t1 -c%d -d%ds %s %s"):format(P.wrk_s + 30, connections, P.wrk_s,
    table.concat(hs, " "), shq(url)))
  local r = out and tonumber(out:match("Requests/sec:%s+([%d.]+)"))
  if not r or (out:match("Non%-2xx")) then
    failures[#failures + 1] = "wrk -c" .. connections .. ": " .. tostring(out or err)
    return nil
  end
  return r
end

-- Instructions per call: callgrind totals of 2N calls minus N calls, over N.
local function instructions(what, make_cmd)
  local totals = {}
  for i, n in ipairs { P.cg, 2 * P.cg } do
    local file = ("%s/callgrind.%s.%d"):format(TMP, what:gsub("%W", "_"), n)
    WRAP = ("valgrind --tool=callgrind --callgrind-out-file=%s "):format(shq(file))
    local cmd = make_cmd(n, WRAP)
    WRAP = ""
    local ok = numbers(what .. " under callgrind", cmd, 300)
    local f = ok and io.open(file)
    if not f then return nil end
    local text = f:read("*a")
    f:close()
    totals[i] = tonumber(text:match("\ntotals:%s*(%d+)") or text:match("\nsummary:%s*(%d+)"))
    if not totals[i] then
      failures[#failures + 1] = what .. ": no totals in " .. file
      return nil
    end
  end
  return (totals[2] - totals[1]) / P.cg
end

local function decode_ms(what, v, mode, file)
  local t = numbers(what, worker(v, mode, file, P.decode), 120)
  return t and t[3] * 1000
end

-- A year of hourly buckets, as GET /usage/timeseries?interval=hour answers it.
local function write_timeseries(path)
  local rows = {}
  local t = os.time { year = 2024, month = 1, day = 1, hour = 0 }
  local offset = os.time(os.date("!*t", t)) - t -- os.time reads local time; we want UTC
  for i = 0, 8759 do
    local ev = (i * 7919) % 1000 + 1
    local input, output = ev * 6131 + i % 97, ev * 3889 + i % 89
    rows[#rows + 1] = ('{"timestamp":"%s","totalEvents":%d,"totalTokens":%d,"totalInputTokens":%d,'
      .. '"totalOutputTokens":%d,"totalCostCents":%.6f}'):format(os.date("!%Y-%m-%dT%H:%M:%SZ", t - offset + i * 3600),
      ev, input + output, input, output, (input * 0.00025 + output * 0.001) + i / 9973)
  end
  local f = assert(io.open(path, "wb"))
  f:write('{"data":[', table.concat(rows, ","), "]}")
  f:close()
  local g = assert(io.open(path, "rb"))
  local size = g:seek("end")
  g:close()
  return size
end

local function first_line(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local l = p:read("*l") or "?"
  p:close()
  return l
end

-- ---------------------------------------------------------------------------------------------

local server = fixed_server.start(TMP .. "/server")
local ok, err = pcall(function()
  local url, https = server.url, server.https_url
  local full = url .. QUERY
  local rows = {}
  -- better: "low" (limitry/ref should be at most target) or "high" (at least target).
  local function row(measure, lim, ref, ref_name, better, target, fmt)
    rows[#rows + 1] = { measure = measure, lim = lim, ref = ref, ref_name = ref_name, better = better,
      target = target, fmt = fmt or "%.0f" }
  end

  -- Sequential calls/s, keep-alive: limitry 5.4 / bare libcurl / Lua-cURL alternate.
  local seq = best_rates {
    { "limitry 5.4", worker("5.4", "limitry", url, P.seq, P.seq_s) },
    { "bare libcurl", c_loop("curl_loop", full, P.seq, P.seq_s) },
    { "Lua-cURL", worker("5.1", "luacurl", url, P.seq, P.seq_s) },
    { "limitry LuaJIT", worker("luajit", "limitry", url, P.seq, P.seq_s) },
    { "bare libcurl, pre-parsed URL", preparsed(c_loop("curl_loop", full, P.seq, P.seq_s)) },
  }
  local sock = rate("luasocket", worker("5.4", "luasocket", url, P.socket, P.seq_s))
  local wrk1 = wrk(1, full)

  -- Async.
  local async = {}
  for _, depth in ipairs { 8, 64 } do
    local r, printed = best_rates {
      { "limitry async " .. depth, worker("5.4", "limitry_async", url, depth, P.async, P.async_s) },
      { "bare multi " .. depth, c_loop("multi_loop", full, depth, P.async, P.async_s) },
      { "bare multi, pre-parsed URL " .. depth, preparsed(c_loop("multi_loop", full, depth, P.async, P.async_s)) },
    }
    -- minor page faults per 1,000 calls in the best round (a page fault costs system time)
    local function faults(t) return t and t[3] and t[3] * 1000 / t[1] end
    async[depth] = { lim = r[1], bare = r[2], preparsed = r[3], wrk = wrk(depth, full), lim_faults = faults(printed[1]),
      bare_faults = faults(printed[2]) }
  end

  -- HTTPS keep-alive vs luasocket + luasec (a TLS handshake per call).
  local tls = best_rates { { "limitry https", worker("5.4", "limitry", https, P.tls, P.seq_s, server.ca_file) } }[1]
  local luasec = rate("luasec", worker("5.4", "luasocket", https, P.luasec, P.seq_s, server.ca_file))

  -- Decode.
  local ts_file = TMP .. "/timeseries-hour-year.json"
  local ts_size = write_timeseries(ts_file)
  local dec = {}
  for _, v in ipairs { "5.4", "luajit" } do
    dec[v] = { lim = decode_ms("core.decode " .. v, v, "decode_limitry", ts_file),
      cjson = decode_ms("cjson.decode " .. v, v, "decode_cjson", ts_file) }
  end

  -- RSS.
  local rss = numbers("rss", worker("5.4", "rss", url, P.rss1, P.rss2, P.rss_s), P.rss_s + 60)

  -- Instructions (callgrind).
  local ins_lim = instructions("limitry", function(n) return worker("5.4", "limitry", url, n, 1e6) end)
  local ins_new_query = instructions("limitry, new query", function(n) return worker("5.4", "limitry_new_query", url, n, 1e6) end)
  local ins_bare = instructions("bare", function(n, wrap) return wrap .. c_loop("curl_loop", full, n, 1e6) end)
  local ins_preparsed = instructions("bare, pre-parsed URL",
    function(n, wrap) return preparsed(wrap .. c_loop("curl_loop", full, n, 1e6)) end)
  local ins_async = {}
  for _, depth in ipairs { 8, 64 } do
    ins_async[depth] = {
      lim = instructions("limitry async " .. depth, function(n) return worker("5.4", "limitry_async", url, depth, n, 1e6) end),
      bare = instructions("bare multi " .. depth, function(n, wrap) return wrap .. c_loop("multi_loop", full, depth, n, 1e6) end),
      preparsed = instructions("bare multi, pre-parsed URL " .. depth,
        function(n, wrap) return preparsed(wrap .. c_loop("multi_loop", full, depth, n, 1e6)) end),
    }
  end
  local ins_luacurl = instructions("luacurl", function(n) return worker("5.1", "luacurl", url, n, 1e6) end)
  local ins_sock = instructions("luasocket", function(n) return worker("5.4", "luasocket", url, n, 1e6) end)

  local function K(n) return ("%d"):format(n) end
  row("instructions per sequential get_summary (callgrind, " .. K(2 * P.cg) .. " minus " .. K(P.cg) .. " calls)",
    ins_lim, ins_bare, "bare libcurl easy loop (C)", "low", 1.25)
  row("instructions per sequential get_summary", ins_lim, ins_preparsed, "bare libcurl easy loop (C)" .. PREPARSED, "low")
  row("instructions per sequential get_summary, a new customer_id each call", ins_new_query, ins_lim,
    "limitry, the same query each call", "low")
  row("instructions per sequential get_summary", ins_lim, ins_luacurl, "Lua-cURL + cjson, Lua 5.1", "low", 1.0)
  row("instructions per sequential get_summary", ins_lim, ins_sock, "luasocket + cjson, a connection per call", "low")
  row("sequential calls/s, keep-alive, Lua 5.4", seq[1], seq[2], "bare libcurl easy loop (C)", "high", 0.97)
  row("sequential calls/s, keep-alive, Lua 5.4", seq[1], seq[5], "bare libcurl easy loop (C)" .. PREPARSED, "high")
  row("sequential calls/s, keep-alive, Lua 5.4", seq[1], seq[3], "Lua-cURL + cjson, Lua 5.1", "high", 1.0)
  row("sequential calls/s, keep-alive, Lua 5.4", seq[1], sock, "luasocket + cjson, a connection per call", "high")
  row("sequential calls/s, keep-alive, Lua 5.4", seq[1], wrk1, "wrk -t1 -c1 (the server's ceiling)", "high")
  row("sequential calls/s, keep-alive, LuaJIT", seq[4], seq[2], "bare libcurl easy loop (C)", "high")
  local function multi_loop_name(depth) return ("bare libcurl multi loop (C), %d in flight"):format(depth) end
  for _, depth in ipairs { 8, 64 } do
    local measure = ("instructions per async start_summary, %d in flight"):format(depth)
    row(measure, ins_async[depth].lim, ins_async[depth].bare, multi_loop_name(depth), "low")
    row(measure, ins_async[depth].lim, ins_async[depth].preparsed, multi_loop_name(depth) .. PREPARSED, "low")
  end
  for _, depth in ipairs { 8, 64 } do
    row(("async calls/s, %d in flight, Lua 5.4"):format(depth), async[depth].lim, async[depth].bare,
      multi_loop_name(depth), "high", 0.9)
    row(("async calls/s, %d in flight, Lua 5.4"):format(depth), async[depth].lim, async[depth].preparsed,
      multi_loop_name(depth) .. PREPARSED, "high")
    row(("async calls/s, %d in flight, Lua 5.4"):format(depth), async[depth].lim, async[depth].wrk,
      ("wrk -t1 -c%d"):format(depth), "high")
    row(("minor page faults per 1,000 async calls, %d in flight"):format(depth), async[depth].lim_faults,
      async[depth].bare_faults, multi_loop_name(depth), "low", nil, "%.1f")
  end
  row("HTTPS keep-alive sequential calls/s, Lua 5.4", tls, luasec, "luasocket + luasec, a connection per call", "high")
  for _, v in ipairs { "5.4", "luajit" } do
    row(("decode ms (fastest of %d), %.2f MB 8,760-row hourly timeseries, %s"):format(P.decode, ts_size / 1e6, v == "luajit" and "LuaJIT" or "Lua 5.4"),
      dec[v].lim, dec[v].cjson, "lua-cjson cjson.decode", "low", 0.75, "%.2f")
  end

  -- Print.
  print(("## limitry benchmark%s"):format(QUICK and " (BENCH_QUICK=1: smoke run, numbers are not meaningful)" or ""))
  print()
  print(("- machine: %s cores, %s"):format(first_line("nproc"),
    (first_line("grep -m1 'model name' /proc/cpuinfo"):gsub("^model name%s*:%s*", ""))))
  print("- date: " .. os.date("!%Y-%m-%d %H:%M UTC"))
  print(("- versions: %s, %s, %s, nginx %s, Lua-cURL %s"):format(first_line("lua5.4 -v"):match("^(Lua [%d.]+)") or "?",
    first_line("luajit -v"):match("^(LuaJIT [%w.%-]+)") or "?",
    first_line("curl-config --version"), first_line("nginx -v"):match("nginx/([%d.]+)") or "?",
    first_line("dpkg-query -W -f='${Version}' lua-curl")))
  print("- server: nginx, 1 worker, fixed summary body at /v1/usage, keep-alive, 127.0.0.1; "
    .. "Lua-cURL is Debian's lua-curl (`require \"curl\"`, Lua 5.1/5.2 only, linked to libcurl-gnutls)")
  print(("- calls/s: best of %d alternating rounds, each at most %d calls or %g s; async at most %g s"):format(
    P.rounds, P.seq, P.seq_s, P.async_s))
  print()
  print("| measure | limitry | reference | reference value | limitry / reference | target | met |")
  print("|---|---|---|---|---|---|---|")
  local missing = 0
  local function cell(v, fmt)
    if v == nil then missing = missing + 1 return "failed" end
    return fmt:format(v)
  end
  for _, r in ipairs(rows) do
    local ratio = (r.lim and r.ref and r.ref ~= 0) and r.lim / r.ref
    local target, met = "", ""
    if r.target then
      target = (r.better == "low" and "<= %.2fx" or ">= %.2fx"):format(r.target)
      if ratio then
        local good = (r.better == "low" and ratio <= r.target) or (r.better == "high" and ratio >= r.target)
        met = good and "met" or "missed"
      else
        met = "n/a"
      end
    end
    print(("| %s | %s | %s | %s | %s | %s | %s |"):format(r.measure, cell(r.lim, r.fmt), r.ref_name,
      cell(r.ref, r.fmt), ratio and ("%.2fx"):format(ratio) or "n/a", target, met))
  end
  if rss then
    local growth = rss[4] - rss[2]
    print(("| RSS after %d and %d sequential calls, Lua 5.4 (VmRSS, after a full GC) | %d -> %d KiB | (limitry alone) | | %+d KiB | growth < 1024 KiB | %s |"):format(
      rss[1], rss[3], rss[2], rss[4], growth, (growth < 1024 and rss[3] == P.rss2) and "met" or "missed"))
  else
    missing = missing + 1
    print("| RSS after 1,000 and 100,000 sequential calls | failed | | | n/a | growth < 1024 KiB | n/a |")
  end
  if missing > 0 then failures[#failures + 1] = missing .. " cells could not be measured" end
end)
fixed_server.stop(server)
if not ok then failures[#failures + 1] = tostring(err) end
if #failures > 0 then
  io.stdout:flush()
  io.stderr:write("\n")
  io.stderr:write("bench: not complete:\n  ", table.concat(failures, "\n  "), "\n")
  os.exit(1)
end
print()
print(("bench: complete table in %d s"):format(os.time() - STARTED))
