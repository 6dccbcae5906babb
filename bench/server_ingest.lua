-- The local server's ingest path outside nginx, in phases: the batch bodies the import sends
-- (bench/import_gen.lua's events, as the CLI words them, with its derived keys), decoded, checked
-- and stored by the server's own modules (limitry_server.event, .store) under LuaJIT, with
-- per-phase CPU and wall times. For deciding between storage layouts quickly; bench/import.sh is
-- the real measure (the CLI, HTTP, nginx).
--
--   luajit bench/server_ingest.lua [EVENTS] [order|random|now] [DIR]
--     EVENTS  default 200,000, in batches of 1,000
--     order   the import's file: a month of a gateway's log in time order (default)
--     random  the same events in random time order
--     now     bench/server.lua's shape: 51 customers, 1 ms apart
--     DIR     the database folder (default .test-tmp/server-ingest, emptied first)
--   BENCH_PHASE_EVERY=N prints the phases of every N batches as well.
package.path = "server/lua/?.lua;" .. package.path
local ffi = require "ffi"

ffi.cdef [[
unsigned char *MD5(const unsigned char *d, size_t n, unsigned char *md);
typedef struct { long tv_sec; long tv_nsec; } limitry_timespec;
int clock_gettime(int clk, limitry_timespec *tp);
int sqlite3_db_status(void *db, int op, int *cur, int *hi, int reset);
]]
local crypto = ffi.load("crypto")
local md = ffi.new("unsigned char[16]")
local tsp = ffi.new("limitry_timespec")
local function wall()
  ffi.C.clock_gettime(1, tsp)
  return tonumber(tsp.tv_sec) + tonumber(tsp.tv_nsec) * 1e-9
end
local cpu = os.clock

-- What the server uses of nginx's API.
_G.ngx = {
  md5_bin = function(s)
    crypto.MD5(s, #s, md)
    return ffi.string(md, 16)
  end,
  now = function() return os.time() end,
  log = function() end,
  ERR = 4, NOTICE = 6,
}

local cjson = require "cjson.safe"
cjson.decode_invalid_numbers(false)
local event = require "limitry_server.event"
local store = require "limitry_server.store"

local N = tonumber(arg[1]) or 200000
local MODE = arg[2] or "order"
local DIR = arg[3] or ((os.getenv("PWD") or ".") .. "/.test-tmp/server-ingest")
local EVERY = tonumber(os.getenv("BENCH_PHASE_EVERY"))
-- Timestamps spaced as in bench/import.sh's file of this many lines (2.7 s apart for a million).
local FILE_LINES = tonumber(os.getenv("BENCH_FILE_LINES")) or 1000000
os.execute("rm -rf '" .. DIR .. "' && mkdir -p '" .. DIR .. "'")

local format = string.format
local models = { { "gpt-4o", "openai" }, { "gpt-4o-mini", "openai" }, { "claude-3-5-sonnet", "anthropic" },
  { "gemini-1.5-pro", "google" } }

-- A permutation of 1..N (random order), Park-Miller seeded: the same every run.
local perm
if MODE == "random" then
  perm = ffi.new("int32_t[?]", N + 1)
  for i = 1, N do perm[i] = i end
  local x = 20240101
  for i = N, 2, -1 do
    x = (16807 * x) % 2147483647
    local j = 1 + x % i
    perm[i], perm[j] = perm[j], perm[i]
  end
end

local START_NOW = math.floor(os.time()) - N / 1000 - 60
local function iso(t)
  local s = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. format(".%03dZ", math.floor((t - s) * 1000 + 0.5) % 1000)
end

-- Event k (1-based, in sending order) as the CLI sends it.
local function wire(k)
  local i = perm and perm[k] or k
  if MODE == "now" then
    local m = models[i % 4 + 1]
    local c = (i % 2 == 0) and "cust_00" or format("cust_%02d", 1 + i % 50)
    return format('{"customerId":"%s","eventType":"chat.completion","model":"%s","provider":"%s","inputTokens":%d,'
      .. '"outputTokens":%d,"latencyMs":%d,"costCents":%.3f,"timestamp":"%s","idempotencyKey":"%08x-%d"}',
      c, m[1], m[2], 50 + i % 4000, 20 + i % 1500, 80 + i % 2500, (i % 5000) / 1000, iso(START_NOW + i / 1000), i * 2654435761 % 4294967296, i)
  end
  local m = models[i % 4 + 1]
  local t = 1735689600 + math.floor((i - 1) * (31 * 86400) / FILE_LINES)
  local props = i % 5 == 0 and format(',"properties":{"region":"%s","retry":%s}', i % 2 == 0 and "eu" or "us",
    i % 10 == 0 and "true" or "false") or ""
  return format('{"customerId":"cust_%04d","eventType":"model_call","model":"%s","provider":"%s",'
    .. '"inputTokens":%d,"outputTokens":%d,"latencyMs":%d,"costCents":%.4f,"timestamp":"%s"%s,'
    .. '"idempotencyKey":"imp1-%d-%08x%08x"}',
    i % 1000, m[1], m[2], 50 + i % 4000, 10 + i % 900, 80 + i % 3000, (i % 10007) / 1000,
    os.date("!%Y-%m-%dT%H:%M:%SZ", t), props, i, i * 2654435761 % 4294967296, i * 40503 % 4294967296)
end

store.open(DIR, nil)

-- BENCH_DROP="index,table,...": dropped before the run (an experiment: what each one costs).
local db = store.db()
for name in (os.getenv("BENCH_DROP") or ""):gmatch("[%w_]+") do
  local ok = pcall(db.exec, db, "DROP INDEX " .. name)
  if not ok then db:exec("DELETE FROM " .. name .. "; CREATE TEMP TRIGGER IF NOT EXISTS no_" .. name
    .. " AFTER INSERT ON main." .. name .. " BEGIN DELETE FROM main." .. name .. "; END") end
end

-- BENCH_SQL="...": run once before the batches (another experiment: an index made, a pragma).
if os.getenv("BENCH_SQL") then db:exec(os.getenv("BENCH_SQL")) end

-- The commit, timed apart (its fsync is the wall time the CPU times do not show).
local commit_wall, commit_cpu = 0, 0
local exec = db.exec
db.exec = function(self, sql)
  if sql ~= "COMMIT" then return exec(self, sql) end
  local w, c = wall(), cpu()
  exec(self, sql)
  commit_wall, commit_cpu = commit_wall + wall() - w, commit_cpu + cpu() - c
end

-- Pages written (SQLITE_DBSTATUS_CACHE_WRITE): the WAL frames of the commits.
local sq = ffi.load("sqlite3")
local cur, hi = ffi.new("int[1]"), ffi.new("int[1]")
local pages = 0
local function pages_written()
  sq.sqlite3_db_status(db.db, 9, cur, hi, 1)
  return cur[0]
end

local P = { decode = 0, check = 0, append = 0, append_wall = 0 }
local total_wall = 0
local last = { P.decode, P.check, P.append, P.append_wall, commit_wall, commit_cpu, 0 }
local batches = 0
for first = 1, N, 1000 do
  local parts = {}
  for k = first, math.min(N, first + 999) do parts[#parts + 1] = wire(k) end
  local body = '{"events":[' .. table.concat(parts, ",") .. "]}"
  local w0 = wall()
  local c0 = cpu()
  local doc = cjson.decode(body)
  local c1 = cpu()
  local now = os.time()
  local text_ok = event.text_ok(body)
  local accepted, seen = {}, {}
  for _, ev in ipairs(doc.events) do
    local norm, msg, ts = event.normalize(ev, now, text_ok)
    assert(norm, msg)
    local key = norm.idempotencyKey
    if not (store.by_key(key) or (key and seen[key])) then
      if key then seen[key] = true end
      accepted[#accepted + 1] = { norm, ts }
    end
  end
  local c2, w2 = cpu(), wall()
  assert(store.append(accepted))
  local c3, w3 = cpu(), wall()
  pages = pages + pages_written()
  P.decode, P.check, P.append, P.append_wall = P.decode + c1 - c0, P.check + c2 - c1, P.append + c3 - c2, P.append_wall + w3 - w2
  total_wall = total_wall + w3 - w0
  batches = batches + 1
  if EVERY and batches % EVERY == 0 then
    local n = EVERY * 1000
    io.stderr:write(format("%7d events: per event µs: decode %.1f check %.1f append cpu %.1f (commit %.1f) wall %.1f (commit %.1f); pages/batch %.0f\n",
      batches * 1000, (P.decode - last[1]) / n * 1e6, (P.check - last[2]) / n * 1e6, (P.append - last[3]) / n * 1e6,
      (commit_cpu - last[6]) / n * 1e6, (P.append_wall - last[4]) / n * 1e6, (commit_wall - last[5]) / n * 1e6, (pages - last[7]) / EVERY))
    last = { P.decode, P.check, P.append, P.append_wall, commit_wall, commit_cpu, pages }
  end
end

local function us(x) return format("%.1f", x / N * 1e6) end
print(format("server_ingest: %d events (%s), batches of 1,000, in %s", N, MODE, DIR))
print(format("per event, µs CPU: decode %s, check + key lookup %s, append %s (of which commit %s)",
  us(P.decode), us(P.check), us(P.append), us(commit_cpu)))
print(format("pages written per batch: %.0f", pages / batches))
print(format("per event, µs wall: append %s (of which commit %s); whole batch %s -> %.0f events/s (the server alone)",
  us(P.append_wall), us(commit_wall), us(total_wall), N / total_wall))
local f = io.popen("du -sm '" .. DIR .. "'")
print("database folder: " .. f:read("*l"):match("^(%d+)") .. " MiB")
f:close()
