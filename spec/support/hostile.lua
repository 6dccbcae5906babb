-- The hostile-server checks shared by spec/hostile_spec.lua (libcurl, in the busted process) and
-- spec/openresty_hostile_spec.lua (cosockets, inside real nginx): starting the server
-- (spec/support/hostile_server.lua), reading its counters, the calls a check makes, and the checks
-- themselves as data. M.run makes the calls of one check and returns their outcomes as plain
-- tables; in nginx it runs in a request handler (this file is loaded there too, so nothing here
-- needs luasocket or busted at load time) and the outcomes come back as JSON.
local M = {}

M.KEY = "lm_hostile_secret_key"
M.S, M.E = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
M.NOT_HTTP = "the server's reply is not valid HTTP"
M.HEADERS_TOO_LARGE = "response headers larger than the limit of 65536 bytes"
M.ALL_HEADERS_TOO_LARGE = "response headers larger than the limit of 307200 bytes (interim answers included)"

---------------------------------------------------------------------------------------------------
-- The server (busted side only).

-- Starts a hostile server in a subprocess on a free loopback port: { root, pid, dir }.
function M.start(lifetime)
  local socket = require "socket"
  local support = require "spec.support.server"
  local dir = support.tmpdir("hostile")
  local lua = jit and "luajit" or ("lua" .. _VERSION:sub(5))
  local p = assert(io.popen(("%s spec/support/hostile_server.lua %s/port %d >%s/log 2>&1 & echo $!")
    :format(lua, dir, lifetime or 300, dir)))
  local pid = tonumber(p:read("*l"))
  p:close()
  assert(pid, "hostile server did not start")
  local deadline = socket.gettime() + 15
  local port
  repeat
    local f = io.open(dir .. "/port")
    if f then port = f:read("*n") f:close() else socket.select(nil, nil, 0.02) end
  until port or socket.gettime() > deadline
  assert(port, "hostile server wrote no port")
  return { root = "http://127.0.0.1:" .. port, pid = pid, dir = dir }
end

function M.stop(h)
  if h and h.pid then os.execute("kill " .. h.pid .. " 2>/dev/null") end
end

-- What the server logged (the "die" case writes there).
function M.log(h)
  local f = io.open(h.dir .. "/log")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

-- How many requests a case served ("hits") or pushed unasked ("pushed").
function M.control(h, what, case)
  local support = require "spec.support.server"
  local status, body = support.http("GET", h.root .. "/_" .. what .. "/" .. case)
  assert(status == 200, "hostile server control answered " .. tostring(status))
  return tonumber(body)
end

---------------------------------------------------------------------------------------------------
-- The calls (both sides). Each takes the client and returns what the call returns.

local function event(extra)
  local ev = { customer_id = "c", event_type = "e", input_tokens = 1 }
  for k, v in pairs(extra or {}) do ev[k] = v end
  return ev
end

M.CALLS = {
  summary = function(c) return c:usage():get_summary(M.S, M.E) end,
  start_summary = function(c) return c:usage():start_summary(M.S, M.E):wait() end,
  track = function(c) return c:track(event()) end,
  start_track = function(c) return c:start_track(event()):wait() end,
  track_unkeyed = function(c) return c:track(event { idempotency_key = false }) end,
  record = function(c) return c:events():record(event()) end,
  record_unkeyed = function(c) return c:events():record(event { idempotency_key = false }) end,
  start_record_unkeyed = function(c) return c:events():start_record(event { idempotency_key = false }):wait() end,
  record_at = function(c, args) return c:events():record(event { timestamp = tonumber(args.at) }) end,
  batch = function(c) return c:events():batch { event(), event() } end,
  batch_unkeyed = function(c) return c:events():batch { event(), event { idempotency_key = false } } end,
  create_quota = function(c)
    return c:quotas():create { name = "q", metric = "total_events", limit_value = 1, period = "day" }
  end,
  delete_quota = function(c) return c:quotas():delete("q_1") end,
  -- Ids a URL path would resolve to another resource.
  get_dotdot = function(c) return c:quotas():get("..") end,
  delete_dotdot = function(c) return c:quotas():delete("..") end,
  update_dot = function(c) return c:rate_limits():update(".", { enabled = true }) end,
  usage_dotdot = function(c) return c:customers():get_usage("..", M.S, M.E) end,
  history_dot = function(c) return c:quota_alerts():history(".") end,
  alert_dotdot = function(c) return c:quota_alerts():create("..", { threshold = 50 }) end,
  -- Arguments the local server would refuse with a 400.
  bad_utf8 = function(c) return c:events():record(event { customer_id = "a\255b" }) end,
  bad_utf8_property = function(c) return c:track(event { properties = { region = "eu\192" } }) end,
  latency_fraction = function(c) return c:events():record(event { latency_ms = 0.5 }) end,
  latency_huge = function(c) return c:events():record(event { latency_ms = 1e300 }) end,
  cost_huge = function(c) return c:events():record(event { cost_cents = 1e15 }) end,
}

-- A plain copy of v (tables nested, other values as they are), for JSON.
local function plain(v, depth)
  if type(v) ~= "table" or (depth or 0) > 20 then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = plain(x, (depth or 0) + 1) end
  return out
end

local function clock()
  local ngx = rawget(_G, "ngx")
  if ngx and type(ngx.now) == "function" and ngx.get_phase then
    ngx.update_time()
    return ngx.now()
  end
  return require("socket").gettime()
end

-- One call on client c: { res } or { msg, name, kind, message, attempts, sent, status } or
-- { raised }, with the seconds it took.
local function outcome(c, name, args)
  local t0 = clock()
  local ok, res, msg, err = pcall(M.CALLS[name], c, args)
  local out = { call = name, elapsed = clock() - t0 }
  if not ok then
    out.raised = tostring(res)
  elseif res ~= nil then
    out.res = plain(res)
  else
    out.msg, out.name, out.kind, out.message = msg, err.name, err.kind, err.message
    out.attempts, out.sent, out.status = err.attempts, err.sent, err.status
  end
  return out
end

-- Runs the calls of one check on one client (its key starts with M.KEY). args: { root, case, calls (comma-separated names),
-- timeout, retries, max_size, at }. Returns the list of outcomes.
local runs = 0
function M.run(args)
  local limitry = require "limitry"
  runs = runs + 1
  -- A key of its own. Connections are pooled per worker by host and port, whatever the key: the
  -- nginx spec has the server drop its idle connections before each check (/_close_idle).
  local key = ("%s-%d-%d"):format(M.KEY, runs, math.random(1, 1e9))
  local c = limitry.new { api_key = key, base_url = args.root .. "/" .. args.case .. "/v1",
    timeout = tonumber(args.timeout) or 2, connect_timeout = 2, max_retries = tonumber(args.retries) or 0,
    max_response_size = tonumber(args.max_size), backoff = 0.01, max_backoff = 0.02 }
  local outs = {}
  for name in tostring(args.calls or "summary"):gmatch("[^,]+") do outs[#outs + 1] = outcome(c, name, args) end
  c:close()
  return outs
end

---------------------------------------------------------------------------------------------------
-- The checks (busted side): each names a case of the hostile server, the calls made on one client
-- (a warm-up first where the connection must be a reused one), the client's options, and what
-- every transport must give. `expect` applies to the last call's outcome: its fields must be
-- equal; `within` bounds its seconds (the client's timeout plus 0.1 s where the server keeps
-- sending); `hits`: the case served exactly so many requests meanwhile; `raises`: the calls raise
-- (argument errors); `check(out, outs)` returns nil or what is wrong. Items refer to issue #21.

-- Whether any string of v (keys included) holds s.
local function holds(v, s)
  if type(v) == "string" then return v:find(s, 1, true) ~= nil end
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if holds(k, s) or holds(x, s) then return true end
  end
  return false
end
M.holds = holds

local function result(out)
  if out.res == nil then return "no result: " .. tostring(out.msg or out.raised) end
end

M.CHECKS = {}
local function check(t) M.CHECKS[#M.CHECKS + 1] = t end

-- Item 1: chunk sizes that are not hex raise nothing: a NetworkError like libcurl's, retried.
for _, case in ipairs { "chunk-zz", "chunk-negative", "chunk-empty", "chunk-space", "chunk-0x", "chunk-huge" } do
  for _, call in ipairs { "summary", "start_summary", "track" } do
    check { title = case .. " (" .. call .. ", retried) is a NetworkError: not valid HTTP", case = case, calls = call,
      retries = 2, hits = 3, expect = { name = "NetworkError", kind = "protocol", message = M.NOT_HTTP, attempts = 3 } }
  end
end

-- Item 2: a line without end: a DecodeError at the 64 KiB cap (status, header, trailer lines), a
-- chunk size of more than 16 hex digits is not HTTP, a chunk extension is skipped unread (the
-- connection closes after 1 MiB of it).
local MIB = 1024 * 1024
for _, where in ipairs { "status", "header", "trailer" } do
  check { title = "a " .. where .. " line of 1 MiB without end is a DecodeError too_large, not retried",
    case = "long-line=" .. where .. ":" .. MIB, calls = "summary", retries = 2, hits = 1,
    expect = { name = "DecodeError", kind = "too_large", message = M.HEADERS_TOO_LARGE, attempts = 1 } }
end
check { title = "a chunk-size line of 1 MiB of hex digits is a NetworkError: not valid HTTP",
  case = "long-line=chunk:" .. MIB, calls = "summary", hits = 1,
  expect = { name = "NetworkError", kind = "protocol", message = M.NOT_HTTP } }
check { title = "a chunk extension of 1 MiB is skipped unread until the connection closes",
  case = "long-line=chunk-ext:" .. MIB, calls = "summary", hits = 1,
  expect = { name = "NetworkError", kind = "network", message = "connection broken before the response was complete" } }
check { title = "a header line of 1 MiB (existing case) is the same DecodeError", case = "long-header", calls = "summary",
  retries = 2, hits = 1, expect = { name = "DecodeError", kind = "too_large", message = M.HEADERS_TOO_LARGE, attempts = 1 } }
check { title = "endless header lines are a DecodeError too_large, not retried", case = "endless-headers", calls = "summary",
  retries = 2, hits = 1, expect = { name = "DecodeError", kind = "too_large", message = M.HEADERS_TOO_LARGE, attempts = 1 } }

-- Item 3: the timeout bounds the attempt, however the server sends.
check { title = "a body dripped 1 byte every 2 ms is a TimeoutError within the timeout", case = "drip-fast", calls = "summary",
  timeout = 1, within = 1.1, at_least = 0.95, expect = { name = "TimeoutError", kind = "timeout" } }
check { title = "a body dripped 1 byte every 100 ms is a TimeoutError within the timeout", case = "drip", calls = "summary",
  timeout = 1, within = 1.1, at_least = 0.95, expect = { name = "TimeoutError", kind = "timeout" } }
check { title = "headers dripped 1 byte every 100 ms are a TimeoutError within the timeout", case = "drip-headers",
  calls = "summary", timeout = 1, within = 1.1, at_least = 0.95, expect = { name = "TimeoutError", kind = "timeout" } }
check { title = "a flood of 100 Continue ends at the 300 KiB cap on all heads, within the timeout", case = "continue-flood",
  calls = "summary", timeout = 1, within = 1.1,
  expect = { name = "DecodeError", kind = "too_large", message = M.ALL_HEADERS_TOO_LARGE, attempts = 1 } }
check { title = "a flood no limit stops (a chunk extension without end, as fast as it goes) ends at the timeout",
  case = "long-line=chunk-ext:" .. 64 * 1024 * MIB, calls = "summary", timeout = 1, within = 1.1, hits = 1,
  expect = { name = "TimeoutError", kind = "timeout" } }
check { title = "an endless stream of 102 Processing ends within the timeout", case = "1xx-endless", calls = "summary",
  timeout = 1, within = 1.1, check = function(out)
    -- 280 KB/s: the 300 KiB cap on all heads or the 1 s timeout, whichever comes first here
    if not (out.name == "TimeoutError" or out.message == M.ALL_HEADERS_TOO_LARGE) then return "got " .. tostring(out.msg) end
  end }
check { title = "1000 interim 100 Continue answers before the real one are skipped", case = "1xx-storm", calls = "summary",
  hits = 1, check = result }

-- Item 4: a call that must not be sent twice is sent at most once, whatever the connection does.
-- reset-second: each connection's second request is read, then the connection reset unanswered.
for _, call in ipairs { "record_unkeyed", "start_record_unkeyed", "track_unkeyed", "batch_unkeyed", "create_quota", "delete_quota" } do
  -- the warm-up on the same kind of path (async calls have connections of their own)
  local warm_up = call:find("^start_") and "start_summary" or "summary"
  check { title = call .. " after a warm-up call on the same client reaches the server once (retries 2)",
    case = "reset-second", calls = warm_up .. "," .. call, retries = 2, hits = 2, check = result }
end
-- reset-post: every POST is read and its connection reset unanswered.
for _, call in ipairs { "record_unkeyed", "track_unkeyed", "batch_unkeyed", "create_quota" } do
  check { title = call .. " lost after it was sent fails once, sent = true, not retried",
    case = "reset-post", calls = "summary," .. call, retries = 2, hits = 2,
    expect = { name = "NetworkError", kind = "network", attempts = 1, sent = true } }
end
check { title = "a keyed record lost after it was sent is retried (its key makes a resend harmless)",
  case = "reset-post", calls = "summary,record", retries = 2,
  expect = { name = "NetworkError", kind = "network", attempts = 3, sent = true } }

-- Item 5: ids that a path normaliser would turn into another resource raise; nothing is sent.
for _, call in ipairs { "get_dotdot", "delete_dotdot", "update_dot", "usage_dotdot", "history_dot", "alert_dotdot" } do
  check { title = call .. " raises an argument error naming the id", case = "ok", calls = call, hits = 0, raises = true,
    check = function(out)
      if not (out.raised and out.raised:find("must not be '%.' or '%.%.'")) then return "raised " .. tostring(out.raised) end
      if out.raised:find("%.lua:%d+:") then return "a file position in " .. out.raised end
    end }
end

-- Item 6: the key never reaches a result either.
for _, call in ipairs { "summary", "start_summary", "track", "start_track" } do
  check { title = "a server that echoes the key, plain and \\u-escaped, leaves no key in the result (" .. call .. ")",
    case = "echo-key", calls = call, check = function(out)
      if out.res == nil then return "no result: " .. tostring(out.msg) end
      if holds(out.res, M.KEY) then return "the key is in the result" end
      if call:find("track") then
        if out.res.error ~= "no for Bearer [REDACTED]" then return "error " .. tostring(out.res.error) end
        if out.res.allowed ~= false or out.res.retry_after ~= 7 then return "not the decision" end
      elseif out.res.note ~= "echo [REDACTED]" or out.res.escaped ~= "[REDACTED]" then
        return "note " .. tostring(out.res.note) .. ", escaped " .. tostring(out.res.escaped)
      end
    end }
end

-- Item 7: fractions of a second are cut to the millisecond, never rounded into the next second.
for at, want in pairs { ["1704067199.9996"] = "2023-12-31T23:59:59.999Z", ["1704067199.99999"] = "2023-12-31T23:59:59.999Z",
  ["1704067200.001"] = "2024-01-01T00:00:00.001Z", ["1704067200.5"] = "2024-01-01T00:00:00.500Z",
  ["1704067200"] = "2024-01-01T00:00:00Z", ["1704067199.0004"] = "2023-12-31T23:59:59Z" } do
  check { title = "timestamp " .. at .. " is sent as " .. want, case = "echo-body", calls = "record_at", at = at,
    check = function(out)
      if out.res == nil then return "no result: " .. tostring(out.msg) end
      local sent = tostring(out.res.echo):match('"timestamp":"([^"]*)"')
      if sent ~= want then return "sent " .. tostring(sent) end
    end }
end

-- Item 9: arguments the server would refuse raise first, naming the argument (no file position).
for call, want in pairs {
  bad_utf8 = "^events:record: customer_id is not valid UTF%-8 %(byte 2%)$",
  bad_utf8_property = "^client:track: properties%.region is not valid UTF%-8 %(byte 3%)$",
  latency_fraction = "^events:record: latency_ms must be a whole number from 0 to 2%^53 %- 1 %(got 0%.5%)$",
  latency_huge = "^events:record: latency_ms must be a whole number from 0 to 2%^53 %- 1 %(got 1e%+300%)$",
  cost_huge = "^events:record: cost_cents must be a finite number from 0 to 1e12 %(got 1e%+15%)$",
} do
  check { title = call .. " raises naming the argument", case = "ok", calls = call, hits = 0, raises = true,
    check = function(out)
      if not (out.raised and out.raised:find(want)) then return "raised " .. tostring(out.raised) end
    end }
end

-- What held before and must keep holding, on both transports: framing that lies never gives a
-- wrong answer, and what follows an answer is never the next one.
local function not_666(out)
  if out.res and out.res.totalEvents == 666 then return "took the stray answer" end
end
check { title = "Content-Length longer than the body is a NetworkError", case = "cl-longer", calls = "summary",
  expect = { name = "NetworkError", kind = "network" } }
check { title = "Content-Length shorter than the body: a DecodeError, and the rest is not the next answer",
  case = "cl-shorter", calls = "summary,summary", check = function(out, outs)
    if outs[1].name ~= "DecodeError" then return "first: " .. tostring(outs[1].msg) end
    return result(out) or not_666(out)
  end }
check { title = "two different Content-Lengths never give a wrong answer", case = "cl-duplicate", calls = "summary",
  check = function(out)
    if out.res and out.res.totalEvents ~= nil and out.res.totalTokens ~= 0 then return "a wrong answer" end
    if not out.res and out.name ~= "NetworkError" then return "got " .. tostring(out.msg) end
  end }
check { title = "Content-Length with chunked: the chunks are the body", case = "cl-and-chunked", calls = "summary", check = result }
check { title = "a 2 GiB Content-Length is a DecodeError at once", case = "cl-2gib", calls = "summary", within = 1,
  expect = { name = "DecodeError", kind = "too_large" } }
check { title = "a 204 carrying a body: the body is never the next answer", case = "204-body", calls = "summary,summary",
  check = function(out) return not_666(out) end }
check { title = "a 101 is an APIError, and what follows it is no answer", case = "101", calls = "summary",
  expect = { name = "APIError", status = 101 } }
check { title = "an unasked second answer right after the first is never the next answer", case = "smuggled",
  calls = "summary,summary", check = function(out) return result(out) or not_666(out) end }
for _, s in ipairs { "000", "2000", "99" } do
  check { title = "status " .. s .. " is a NetworkError: not valid HTTP", case = "status-" .. s, calls = "summary",
    expect = { name = "NetworkError", kind = "protocol", message = M.NOT_HTTP } }
end
check { title = "status 600 is an APIError carrying it", case = "status-600", calls = "summary",
  expect = { name = "APIError", status = 600, message = "odd status" } }
for _, case in ipairs { "garbage", "http09" } do
  check { title = case .. " is a NetworkError: not valid HTTP", case = case, calls = "summary",
    expect = { name = "NetworkError", kind = "protocol", message = M.NOT_HTTP } }
end

-- The query of check t against server h (for M.run, or nginx's /hostile).
function M.args(h, t)
  return { root = h.root, case = t.case, calls = t.calls, timeout = t.timeout, retries = t.retries, at = t.at }
end

-- The case name the server counts hits under (without its parameter).
function M.counter(t) return (t.case:gsub("=.*$", "")) end

-- nil when the outcomes `outs` of check t meet it, else what is wrong. `hits`: how many requests
-- the case served during the check (nil when not counted).
function M.verify(t, outs, hits)
  local out = outs[#outs]
  for i, o in ipairs(outs) do
    if o.raised and not t.raises then return "call " .. i .. " raised " .. o.raised end
    if o.msg and o.msg:find(M.KEY, 1, true) then return "the key is in a message" end
  end
  for k, want in pairs(t.expect or {}) do
    if out[k] ~= want then
      return ("%s is %s, not %s (%s)"):format(k, tostring(out[k]), tostring(want), tostring(out.msg or out.raised))
    end
  end
  if t.within and out.elapsed >= t.within then return ("took %.3f s, not under %.3f s"):format(out.elapsed, t.within) end
  if t.at_least and out.elapsed < t.at_least then return ("gave up after %.3f s"):format(out.elapsed) end
  if t.hits and hits ~= t.hits then return ("the server saw %d requests, not %d"):format(hits, t.hits) end
  if t.check then return t.check(out, outs) end
  return nil
end

return M
