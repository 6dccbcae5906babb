-- One measurement, run in its own process by bench/bench.lua (so each row gets the Lua it needs and
-- a fresh heap). Prints one line of numbers on stdout; any failure raises (non-zero exit).
--   lua worker.lua MODE ARGS...
-- Every loop stops after its count or its time budget (MAX seconds), whichever comes first; the
-- clock is read every 64 calls so that reading it costs nothing measurable.
-- Modes (URL is the fixed server's base URL, .../v1):
--   limitry URL N MAX [CA_FILE]      sequential get_summary on one client      -> calls seconds
--   limitry_new_query URL N MAX       the same with a different customer_id each call (the query is built again)
--   limitry_async URL DEPTH N MAX    start_summary, DEPTH in flight, poll      -> calls seconds minor_faults
--   luacurl URL N MAX                Debian lua-curl (require "curl") + cjson  -> calls seconds
--   luasocket URL N MAX [CA_FILE]    socket.http (or ssl.https with CA_FILE) + cjson, a connection per call
--   decode_limitry FILE K            core.decode of FILE, K times  -> decodes seconds fastest_seconds
--   decode_cjson FILE K              cjson.decode of FILE, K times -> decodes seconds fastest_seconds
--   rss URL N1 N2 MAX                VmRSS after N1 and after N2 sequential calls -> n1 kib1 n2 kib2
--   lua_lines URL N                  Lua VM instructions per call by function and line (for make profile)
local socket = require "socket"
local unpack = unpack or table.unpack -- luacheck: ignore (5.1 and LuaJIT have the global)

local mode = arg[1]
local KEY = "lm_bench_key"
local S, E = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
local QUERY = "/usage?startDate=2024-01-01T00%3A00%3A00Z&endDate=2024-02-01T00%3A00%3A00Z"
-- The header lines limitry sends (bench.lua passes its User-Agent line), for the reference clients.
local HEADERS = { os.getenv("LIMITRY_BENCH_UA") or "User-Agent: limitry-bench/1", "Authorization: Bearer " .. KEY,
  "Accept: application/json" }
local WARMUP = 20
local now = socket.gettime

local function check(s)
  if type(s) ~= "table" or s.totalEvents ~= 500 then error("unexpected answer: " .. tostring(s), 0) end
end

-- Calls f() up to n times or until max seconds have passed; prints the count and the seconds.
local function timed(n, max, f)
  for _ = 1, WARMUP do f() end
  local t0, done = now(), 0
  while done < n do
    f()
    done = done + 1
    if done % 64 == 0 and now() - t0 > max then break end
  end
  print(string.format("%d %.6f", done, now() - t0))
end

local function limitry_client(url, ca_file)
  local limitry = require "limitry"
  return limitry.new { api_key = KEY, base_url = url, ca_file = ca_file }
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function rss_kib()
  local s = read_file("/proc/self/status")
  return tonumber(s:match("VmRSS:%s+(%d+)"))
end

-- Minor page faults of this process so far (field 10 of /proc/self/stat, after the command name).
local function minor_faults()
  local stat = read_file("/proc/self/stat")
  local fields = {}
  for f in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  return tonumber(fields[8])
end

local modes = {}

function modes.limitry(url, n, max, ca_file)
  local usage = limitry_client(url, ca_file):usage()
  timed(tonumber(n), tonumber(max), function() check(assert(usage:get_summary(S, E))) end)
end

function modes.limitry_new_query(url, n, max)
  local usage = limitry_client(url):usage()
  local i = 0
  timed(tonumber(n), tonumber(max), function()
    i = i + 1
    check(assert(usage:get_summary(S, E, { customer_id = "cust_" .. i % 1000 })))
  end)
end

function modes.limitry_async(url, depth, n, max)
  local client = limitry_client(url)
  local usage = client:usage()
  depth, n, max = tonumber(depth), tonumber(n), tonumber(max)
  -- Each callback starts the next call, so DEPTH stay in flight until the count or the budget is
  -- spent; poll returns once nothing is pending.
  local started, done, t0 = 0, 0, nil
  local on_done
  local function start()
    started = started + 1
    usage:start_summary(S, E, on_done)
  end
  on_done = function(res, msg)
    if not res then error(msg, 0) end
    check(res)
    done = done + 1
    if started < n and (done % 64 ~= 0 or now() - t0 <= max) then start() end
  end
  -- Warm-up: open the DEPTH connections first.
  for _ = 1, depth do usage:start_summary(S, E, function(res, msg) if not res then error(msg, 0) end end) end
  while client:poll(1) > 0 do end
  local faults = minor_faults()
  t0 = now()
  for _ = 1, math.min(depth, n) do start() end
  while client:poll(1) > 0 and now() - t0 < max + 30 do end
  print(string.format("%d %.6f %d", done, now() - t0, minor_faults() - faults))
  client:close()
end

function modes.luacurl(url, n, max)
  local curl = require "curl"
  local cjson = require "cjson"
  local h = curl.easy_init()
  local parts = {}
  h:setopt(curl.OPT_URL, url .. QUERY)
  h:setopt(curl.OPT_HTTPHEADER, HEADERS)
  h:setopt(curl.OPT_ACCEPT_ENCODING, "")
  h:setopt(curl.OPT_NOSIGNAL, 1)
  -- Without OPT_WRITEDATA, lua-curl passes (chunk, length).
  h:setopt(curl.OPT_WRITEFUNCTION, function(chunk, length)
    parts[#parts + 1] = chunk
    return length
  end)
  timed(tonumber(n), tonumber(max), function()
    parts = {}
    assert(h:perform())
    check(cjson.decode(table.concat(parts)))
  end)
end

function modes.luasocket(url, n, max, ca_file)
  local ltn12 = require "ltn12"
  local cjson = require "cjson"
  local http = ca_file and require "ssl.https" or require "socket.http"
  local headers = {}
  for _, line in ipairs(HEADERS) do
    local name, value = line:match("^([^:]+): (.*)$")
    headers[name] = value
  end
  timed(tonumber(n), tonumber(max), function()
    local parts = {}
    local ok, code = http.request {
      url = url .. QUERY, headers = headers, sink = ltn12.sink.table(parts),
      cafile = ca_file, verify = ca_file and "peer" or nil, protocol = ca_file and "any" or nil,
    }
    if not ok or code ~= 200 then error("request failed: " .. tostring(code), 0) end
    check(cjson.decode(table.concat(parts)))
  end)
end

-- Prints the count, the total seconds and the fastest single decode: the fastest is what the
-- decoder costs when nobody else holds the core, the figure that survives a noisy machine.
local function decode_loop(decode, path, k)
  local body = read_file(path)
  k = tonumber(k)
  assert(#decode(body).data > 0)
  collectgarbage()
  local t0, best = now(), math.huge
  for _ = 1, k do
    local t = now()
    if not decode(body) then error("decode failed", 0) end
    best = math.min(best, now() - t)
  end
  print(string.format("%d %.6f %.6f", k, now() - t0, best))
end

function modes.decode_limitry(path, k) decode_loop(require("limitry.core").decode, path, k) end
function modes.decode_cjson(path, k) decode_loop(require("cjson").decode, path, k) end

function modes.rss(url, n1, n2, max)
  local usage = limitry_client(url):usage()
  n1, n2, max = tonumber(n1), tonumber(n2), tonumber(max)
  local t0, done = now(), 0
  local function run_to(target)
    while done < target do
      check(assert(usage:get_summary(S, E)))
      done = done + 1
      if done % 64 == 0 and now() - t0 > max then break end
    end
    collectgarbage()
    collectgarbage()
    return done, rss_kib()
  end
  local d1, k1 = run_to(n1)
  local d2, k2 = run_to(n2)
  print(string.format("%d %d %d %d", d1, k1, d2, k2))
end

-- A count hook fires every STEP VM instructions; what it sees is where the Lua side of a call spends
-- its instructions (time inside C functions such as gsub or libcurl is not counted: see callgrind).
function modes.lua_lines(url, n)
  local usage = limitry_client(url):usage()
  n = tonumber(n)
  for _ = 1, WARMUP do check(assert(usage:get_summary(S, E))) end
  -- A hook every instruction: with a count of 10, Lua 5.4.4 reported about 780 instructions a call
  -- where there are 89 (the count is not spread evenly over the instructions it skips).
  local STEP = 1
  local by_line, by_fn, samples = {}, {}, 0
  local getinfo = debug.getinfo
  debug.sethook(function()
    local info = getinfo(2, "Sln")
    if info and info.short_src ~= "bench/worker.lua" then
      local where = info.short_src:gsub("^.*/lua/", "") .. ":"
      local line = where .. info.currentline
      local fn = where .. info.linedefined .. " " .. (info.name or "?")
      by_line[line] = (by_line[line] or 0) + 1
      by_fn[fn] = (by_fn[fn] or 0) + 1
      samples = samples + 1
    end
  end, "", STEP)
  for _ = 1, n do check(assert(usage:get_summary(S, E))) end
  debug.sethook()
  local function top(t, title, k)
    local list = {}
    for name, c in pairs(t) do list[#list + 1] = { name, c } end
    table.sort(list, function(a, b) return a[2] > b[2] end)
    print(("== %s: Lua VM instructions per call (limitry's files only; %.0f in all) =="):format(title, samples * STEP / n))
    for i = 1, math.min(k, #list) do print(("%8.0f  %s"):format(list[i][2] * STEP / n, list[i][1])) end
    print()
  end
  top(by_fn, "by function (file:line where defined, name)", 20)
  top(by_line, "by line", 25)
end

local f = modes[mode] or error("unknown mode " .. tostring(mode), 0)
f(select(2, unpack(arg)))
