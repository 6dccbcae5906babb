-- The local server as a "Limitry stand-in" for load tests of gateways: --latency on every /v1/...
-- answer, --api-limit (Limitry's own API limit, per key and minute), and with --faults a switchable
-- outage (POST /_test/outage) and request counters (GET /_test/stats). Raw HTTP over luasocket, as
-- in server_spec.lua, and the client once to check it reads the API limit as a RateLimitError.
local core = require "limitry.core"
local socket = require "socket"
local support = require "spec.support.server"

local KEY = "lm_local_test_key"
local INGEST = "lm_local_ingest_only_key"
local MINUTE = 1905081600 -- 2030-05-15T13:20:00Z, on a minute boundary

local function call(info, method, path, body, opts)
  opts = opts or {}
  local headers = { Authorization = "Bearer " .. (opts.key or KEY) }
  if opts.now then headers["X-Limitry-Now"] = tostring(opts.now) end
  if body then headers["Content-Type"] = "application/json" end
  local status, raw, h = support.http(method, (opts.root or info.root) .. path, body, headers)
  return status, core.decode(raw), h, raw
end

describe("local server --latency", function()
  local server
  setup(function() server = support.start { faults = false, latency = 200 } end)
  teardown(function() support.stop(server) end)

  it("holds every /v1/... answer, whatever the route or the outcome", function()
    for _, c in ipairs {
      { "GET", "/v1/project", nil, 200 },
      { "GET", "/v1/usage?startDate=2024-01-01&endDate=2024-01-02", nil, 200 },
      { "POST", "/v1/events", '{"customerId":"lat","eventType":"e"}', 201 },
      { "POST", "/v1/quotas/check", '{"customer_id":"lat"}', 200 },
      { "GET", "/v1/nothing", nil, 404 },
      { "GET", "/v1/usage", nil, 400 },
    } do
      local t0 = socket.gettime()
      local status = call(server, c[1], c[2], c[3])
      local took = socket.gettime() - t0
      assert.equal(c[4], status, c[2])
      assert.is_true(took >= 0.195, c[2] .. " answered after " .. took .. " s")
    end
    local status, _, h = call(server, "GET", "/v1/usage", nil, { key = "lm_nope" })
    assert.equal(401, status)
    assert.is_nil(h["retry-after"])
    -- Outside /v1 nothing is held.
    local t0 = socket.gettime()
    assert.equal(200, (support.http("GET", server.root .. "/healthz")))
    assert.is_true(socket.gettime() - t0 < 0.15)
  end)

  it("does not block nginx: 8 requests at once are answered together", function()
    local conns = {}
    local t0 = socket.gettime()
    for i = 1, 8 do
      local c = socket.tcp()
      c:settimeout(5)
      assert(c:connect("127.0.0.1", server.port))
      c:send("GET /v1/project HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. KEY .. "\r\nConnection: close\r\n\r\n")
      conns[i] = c
    end
    for _, c in ipairs(conns) do
      local line = c:receive("*l")
      assert.matches(" 200 ", line)
      c:close()
    end
    local took = socket.gettime() - t0
    assert.is_true(took >= 0.195 and took < 1.2, "8 held requests took " .. took .. " s")
  end)
end)

describe("local server --api-limit", function()
  local server
  setup(function() server = support.start { faults = true, api_limit = 3 } end)
  teardown(function() support.stop(server) end)

  it("answers N requests per minute and key, then a 429 without `allowed`, until the minute ends", function()
    local now = MINUTE + 20.25
    for i = 1, 3 do
      assert.equal(200, (call(server, "GET", "/v1/project", nil, { now = now + i })), "request " .. i)
    end
    -- Every route counts, whatever it answers.
    local status, res, h, raw = call(server, "POST", "/v1/track", '{"customerId":"al","eventType":"e"}', { now = now + 4 })
    assert.equal(429, status)
    assert.equal('{"error":"Too many requests: the API limit is 3 requests per minute"}', raw)
    assert.is_nil(res.allowed)
    assert.equal("36", h["retry-after"]) -- ceil(MINUTE + 60 - (MINUTE + 24.25))
    assert.equal("3", h["x-ratelimit-limit"])
    assert.equal("0", h["x-ratelimit-remaining"])
    assert.equal(tostring(MINUTE + 60), h["x-ratelimit-reset"])
    assert.matches("application/json", h["content-type"], 1, true)
    -- Retry-After is at least 1, even in the window's last fraction of a second.
    status, res, h = call(server, "GET", "/v1/project", nil, { now = MINUTE + 59.9 })
    assert.equal(429, status)
    assert.is_nil(res.allowed)
    assert.equal("1", h["retry-after"])
    -- The other key has its own count; a key nobody knows is a 401, not counted.
    assert.equal(200, (call(server, "POST", "/v1/quotas/check", '{"customer_id":"al"}', { key = INGEST, now = now })))
    assert.equal(401, (call(server, "GET", "/v1/project", nil, { key = "lm_nope", now = now })))
    -- The next minute starts afresh.
    assert.equal(200, (call(server, "GET", "/v1/project", nil, { now = MINUTE + 60 })))
  end)

  it("is read by the client as Limitry's own rate limit (a RateLimitError), not a limit decision", function()
    local now = MINUTE + 3600
    for _ = 1, 3 do call(server, "GET", "/v1/project", nil, { now = now }) end
    local client = require("limitry").new { api_key = KEY, base_url = server.base_url, max_retries = 0,
      headers = { ["X-Limitry-Now"] = tostring(now) } }
    local res, msg, err = client:track { customer_id = "al", event_type = "e" }
    client:close()
    assert.is_nil(res)
    assert.equal("RateLimitError", err.name)
    assert.equal(429, err.status)
    assert.equal(60, err.retry_after)
    assert.matches("API limit is 3 requests per minute", msg, 1, true)
  end)
end)

describe("local server outage and stats (--faults)", function()
  local server
  setup(function() server = support.start { faults = true } end)
  teardown(function() support.stop(server) end)

  local function outage(query)
    local status, raw = support.http("POST", server.root .. "/_test/outage?" .. query)
    return status, core.decode(raw)
  end
  local function stats()
    local status, raw = support.http("GET", server.root .. "/_test/stats")
    assert.equal(200, status)
    return core.decode(raw)
  end

  it("answers every /v1/... request with the outage's status for its seconds, then recovers", function()
    local before = stats()
    assert.same({ api_requests = 0, api_limited = 0, outage_answers = 0, events = 0 }, before)
    assert.equal(201, (call(server, "POST", "/v1/events", '{"customerId":"o","eventType":"e"}')))
    local status, res = outage("seconds=30&status=502")
    assert.equal(200, status)
    assert.is_true(res.outage)
    assert.equal(502, res.status)
    for _, c in ipairs {
      { "GET", "/v1/usage?startDate=2024-01-01&endDate=2024-01-02" },
      { "POST", "/v1/track", '{"customerId":"o","eventType":"e"}' },
      { "POST", "/v1/events/batch", '{"events":[{"customerId":"o","eventType":"e"}]}' },
      { "GET", "/v1/nothing" },
    } do
      local s, body, h = call(server, c[1], c[2], c[3])
      assert.equal(502, s, c[2])
      assert.is_string(body.error)
      assert.equal("1", h["retry-after"])
    end
    -- The key is not even looked at.
    assert.equal(502, (call(server, "GET", "/v1/project", nil, { key = "lm_nope" })))
    assert.equal(200, (outage("seconds=0")))
    assert.equal(200, (call(server, "GET", "/v1/project")))
    -- Without a status, 503; it ends by itself after its seconds.
    assert.equal(200, (outage("seconds=0.3")))
    assert.equal(503, (call(server, "GET", "/v1/project")))
    socket.sleep(0.45)
    assert.equal(200, (call(server, "GET", "/v1/project")))
    assert.same({ api_requests = 9, api_limited = 0, outage_answers = 6, events = 1 }, stats())
  end)

  it("refuses a malformed outage request with a 400", function()
    for _, q in ipairs { "", "seconds=-1", "seconds=x", "seconds=90000", "seconds=5&status=200", "seconds=5&status=5030" } do
      local status, res = outage(q)
      assert.equal(400, status, q)
      assert.is_string(res.error)
    end
    assert.equal(405, (support.http("GET", server.root .. "/_test/outage?seconds=1")))
  end)

  it("counts stored events whichever way they came", function()
    local n = stats().events
    assert.equal(201, (call(server, "POST", "/v1/events/batch", '{"events":[{"customerId":"s","eventType":"e"},{"customerId":"s","eventType":"e"}]}')))
    assert.equal(200, (call(server, "POST", "/v1/track", '{"customerId":"s","eventType":"e"}')))
    assert.equal(n + 3, stats().events)
  end)
end)

describe("local server without --faults", function()
  it("has neither /_test/outage nor /_test/stats", function()
    local info = support.start { faults = false }
    local s1 = support.http("POST", info.root .. "/_test/outage?seconds=5")
    local s2 = support.http("GET", info.root .. "/_test/stats")
    local s3 = call(info, "GET", "/v1/project")
    support.stop(info)
    assert.equal(404, s1)
    assert.equal(404, s2)
    assert.equal(200, s3)
  end)
end)
