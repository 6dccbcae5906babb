-- The local Limitry-compatible server, checked over HTTP with luasocket (not with the client, so a
-- bug in one cannot hide a bug in the other). Expected numbers are computed by hand below.
local core = require "limitry.core"
local support = require "spec.support.server"

local KEY = "lm_local_test_key"
local AUTH = { Authorization = "Bearer " .. KEY }

-- 2024-01-01 is a Monday. e5 sits exactly on the end of RANGE; e6 is given with a +02:00 offset.
local EVENTS = {
  { customerId = "c1", eventType = "chat", model = "m1", provider = "openai", inputTokens = 10, outputTokens = 5, costCents = 3, timestamp = "2024-01-01T00:00:00Z" },
  { customerId = "c1", eventType = "chat", model = "m2", provider = "anthropic", inputTokens = 20, outputTokens = 10, costCents = 7, timestamp = "2024-01-01T01:30:00Z" },
  { customerId = "c2", eventType = "embed", model = "m3", inputTokens = 100, outputTokens = 0, costCents = 1, timestamp = "2024-01-07T23:59:59Z" },
  { customerId = "c2", eventType = "chat", model = "m1", provider = "openai", inputTokens = 1, outputTokens = 1, costCents = 2.5, timestamp = "2024-01-08T00:00:00Z" },
  { customerId = "c3", eventType = "chat", model = "m1", provider = "openai", inputTokens = 7, outputTokens = 3, costCents = 4, timestamp = "2024-01-15T00:00:00Z" },
  { customerId = "c1", eventType = "chat", model = "m2", provider = "anthropic", inputTokens = 2, outputTokens = 2, costCents = 1, timestamp = "2024-01-08T01:00:00+02:00" },
}
local RANGE = "startDate=2024-01-01T00:00:00Z&endDate=2024-01-15T00:00:00Z"

local function m(events, input, output, cost, extra)
  local t = { totalEvents = events, totalInputTokens = input, totalOutputTokens = output,
    totalTokens = input + output, totalCostCents = cost }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local function encode_event(ev)
  local parts = {}
  for k, v in pairs(ev) do
    parts[#parts + 1] = string.format("%q:%s", k, type(v) == "string" and string.format("%q", v) or tostring(v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

describe("local server", function()
  local server

  local function get(path, headers)
    local status, body = support.http("GET", server.base_url .. path, nil, headers or AUTH)
    return status, core.decode(body), body
  end
  local function post(path, body, headers)
    local h = headers or { Authorization = AUTH.Authorization, ["Content-Type"] = "application/json" }
    local status, out = support.http("POST", server.base_url .. path, body, h)
    return status, core.decode(out)
  end

  setup(function()
    server = support.start { faults = false }
    local list = {}
    for i, ev in ipairs(EVENTS) do list[i] = encode_event(ev) end
    local status, res = post("/events/batch", '{"events":[' .. table.concat(list, ",") .. "]}")
    assert(status == 201, "ingest failed: " .. tostring(status))
    assert(res.recorded == 6)
  end)
  teardown(function() support.stop(server) end)

  describe("aggregation", function()
    it("sums the half-open range (the event at endDate is out, the one at startDate in)", function()
      local status, s = get("/usage?" .. RANGE)
      assert.equal(200, status)
      assert.same(m(5, 133, 18, 14.5), s)
      assert.same(m(1, 7, 3, 4), select(2, get("/usage?startDate=2024-01-15T00:00:00Z&endDate=2024-01-16T00:00:00Z")))
      assert.same(m(0, 0, 0, 0), select(2, get("/usage?startDate=2023-12-31T00:00:00Z&endDate=2024-01-01T00:00:00Z")))
      assert.same(m(1, 10, 5, 3), select(2, get("/usage?startDate=2024-01-01T00:00:00Z&endDate=2024-01-01T00:00:01Z")))
    end)

    it("applies filters before aggregating", function()
      assert.same(m(3, 32, 17, 11), select(2, get("/usage?" .. RANGE .. "&customerId=c1")))
      assert.same(m(2, 11, 6, 5.5), select(2, get("/usage?" .. RANGE .. "&model=m1&eventType=chat")))
      assert.same(m(0, 0, 0, 0), select(2, get("/usage?" .. RANGE .. "&customerId=nobody")))
    end)

    it("groups by provider, with events lacking one under null", function()
      local _, b, raw = get("/usage/breakdown?groupBy=provider&" .. RANGE)
      assert.same({
        m(2, 22, 12, 8, { dimension = "anthropic" }),
        m(2, 11, 6, 5.5, { dimension = "openai" }),
        m(1, 100, 0, 1),
      }, b.data)
      assert.matches('"dimension":null', raw)
    end)

    it("groups by model, customer_id and event_type", function()
      local _, b = get("/usage/breakdown?groupBy=model&" .. RANGE)
      assert.same({ m(2, 22, 12, 8, { dimension = "m2" }), m(2, 11, 6, 5.5, { dimension = "m1" }),
        m(1, 100, 0, 1, { dimension = "m3" }) }, b.data)
      _, b = get("/usage/breakdown?groupBy=customer_id&" .. RANGE)
      assert.same({ m(3, 32, 17, 11, { dimension = "c1" }), m(2, 101, 1, 3.5, { dimension = "c2" }) }, b.data)
      _, b = get("/usage/breakdown?groupBy=event_type&" .. RANGE .. "&customerId=c2")
      assert.same({ m(1, 1, 1, 2.5, { dimension = "chat" }), m(1, 100, 0, 1, { dimension = "embed" }) }, b.data)
    end)

    it("buckets weeks from Monday 00:00Z, including an offset timestamp on the Sunday", function()
      local _, t = get("/usage/timeseries?interval=week&" .. RANGE)
      assert.same({
        m(4, 132, 17, 12, { timestamp = "2024-01-01T00:00:00Z" }),
        m(1, 1, 1, 2.5, { timestamp = "2024-01-08T00:00:00Z" }),
      }, t.data)
      -- A range starting mid-week still uses Monday-aligned buckets.
      _, t = get("/usage/timeseries?interval=week&startDate=2024-01-03T00:00:00Z&endDate=2024-01-10T00:00:00Z")
      assert.equal("2024-01-01T00:00:00Z", t.data[1].timestamp)
      assert.equal(2, t.data[1].totalEvents)
      assert.equal(1, t.data[2].totalEvents)
    end)

    it("buckets days and hours in UTC and omits empty buckets", function()
      local _, t = get("/usage/timeseries?interval=day&" .. RANGE)
      local got = {}
      for i, p in ipairs(t.data) do got[i] = p.timestamp .. "=" .. p.totalEvents end
      assert.same({ "2024-01-01T00:00:00Z=2", "2024-01-07T00:00:00Z=2", "2024-01-08T00:00:00Z=1" }, got)
      _, t = get("/usage/timeseries?interval=hour&" .. RANGE)
      got = {}
      for i, p in ipairs(t.data) do got[i] = p.timestamp .. "=" .. p.totalEvents end
      assert.same({ "2024-01-01T00:00:00Z=1", "2024-01-01T01:00:00Z=1", "2024-01-07T23:00:00Z=2",
        "2024-01-08T00:00:00Z=1" }, got)
    end)

    it("answers an empty range with an empty data array", function()
      local _, _, raw = get("/usage/timeseries?interval=day&startDate=2020-01-01&endDate=2020-01-02")
      assert.equal('{"data":[]}', raw)
    end)
  end)

  describe("ingestion", function()
    it("records an event once per idempotency key", function()
      local ev = '{"customerId":"i1","eventType":"chat","inputTokens":4,"outputTokens":6,"idempotencyKey":"once","timestamp":"2022-03-01T10:00:00Z"}'
      local status, res = post("/events", ev)
      assert.equal(201, status)
      assert.equal("recorded", res.status)
      status, res = post("/events", ev)
      assert.equal(200, status)
      assert.equal("duplicate", res.status)
      local _, s = get("/usage?startDate=2022-03-01&endDate=2022-03-02")
      assert.same(m(1, 4, 6, 0), s)
    end)

    it("dedupes inside a batch and computes totalTokens when absent", function()
      local status, res = post("/events/batch", '{"events":['
        .. '{"customerId":"i2","eventType":"e","inputTokens":1,"outputTokens":2,"idempotencyKey":"b1","timestamp":"2022-04-01T00:00:00Z"},'
        .. '{"customerId":"i2","eventType":"e","inputTokens":1,"outputTokens":2,"idempotencyKey":"b1","timestamp":"2022-04-01T00:00:00Z"},'
        .. '{"customerId":"i2","eventType":"e","inputTokens":20,"outputTokens":30,"totalTokens":50,"timestamp":"2022-04-01T00:00:00Z"}]}')
      assert.equal(201, status)
      assert.equal(2, res.recorded)
      assert.equal(1, res.duplicates)
      local _, s = get("/usage?startDate=2022-04-01&endDate=2022-04-02")
      assert.equal(2, s.totalEvents)
      assert.equal(53, s.totalTokens)
    end)

    it("rejects bad events with a precise 400 and stores nothing from that batch", function()
      local cases = {
        { "{}", "customerId is required" },
        { '{"customerId":"x"}', "eventType is required" },
        { '{"customerId":"x","eventType":"e","inputTokens":-1}', "inputTokens must be a non%-negative integer" },
        { '{"customerId":"x","eventType":"e","timestamp":"yesterday"}', "timestamp must be an ISO 8601" },
        { "not json", "not valid JSON" },
      }
      for _, case in ipairs(cases) do
        local status, res = post("/events", case[1])
        assert.equal(400, status, case[1])
        assert.matches(case[2], res.error)
      end
      local status, res = post("/events/batch", '{"events":[{"customerId":"z","eventType":"e","timestamp":"2022-05-01T00:00:00Z"},{"customerId":"z"}]}')
      assert.equal(400, status)
      assert.matches("events%[2%]: eventType is required", res.error)
      assert.equal(0, select(2, get("/usage?startDate=2022-05-01&endDate=2022-05-02")).totalEvents)
      local big = {}
      for i = 1, 1001 do big[i] = '{"customerId":"z","eventType":"e"}' end
      status, res = post("/events/batch", '{"events":[' .. table.concat(big, ",") .. "]}")
      assert.equal(400, status)
      assert.matches("at most 1000 events", res.error)
    end)
  end)

  describe("bad requests", function()
    it("401 without a key or with an unknown one, 403 for a key that may not read", function()
      local status, res = get("/usage?" .. RANGE, {})
      assert.equal(401, status)
      assert.matches("Missing API key", res.error)
      status, res = get("/usage?" .. RANGE, { Authorization = "Bearer lm_nope" })
      assert.equal(401, status)
      assert.equal("Invalid API key", res.error)
      status = get("/usage?" .. RANGE, { Authorization = "Bearer lm_local_ingest_only_key" })
      assert.equal(403, status)
      status = get("/usage?" .. RANGE, { Authorization = "Basic abc" })
      assert.equal(401, status)
    end)

    it("400 with a precise message for every malformed parameter", function()
      local cases = {
        { "/usage?endDate=2024-01-02", "startDate is required" },
        { "/usage?startDate=2024-01-01", "endDate is required" },
        { "/usage?startDate=2024-13-01&endDate=2024-01-02", "Invalid startDate '2024%-13%-01'" },
        { "/usage?startDate=2024-01-01T25:00:00Z&endDate=2024-01-02", "Invalid startDate" },
        { "/usage?startDate=2024-01-02&endDate=2024-01-02", "startDate must be before endDate" },
        { "/usage?startDate=2024-01-01&startDate=2024-01-02&endDate=2024-02-01", "startDate must be given once" },
        { "/usage/breakdown?groupBy=colour&" .. RANGE, "Invalid groupBy 'colour': must be one of model, customer_id, event_type, provider" },
        { "/usage/breakdown?" .. RANGE, "groupBy is required" },
        { "/usage/timeseries?interval=month&" .. RANGE, "Invalid interval 'month': must be one of hour, day, week" },
        { "/usage/timeseries?" .. RANGE, "interval is required" },
      }
      for _, case in ipairs(cases) do
        local status, res = get(case[1])
        assert.equal(400, status, case[1])
        assert.matches(case[2], res.error)
      end
    end)

    it("404 for unknown paths and 405 for the wrong method, never a 500", function()
      local status, res = get("/usage/summary?" .. RANGE)
      assert.equal(404, status)
      assert.matches("Not found", res.error)
      status = get("/nothing")
      assert.equal(404, status)
      status = post("/usage?" .. RANGE, "{}")
      assert.equal(405, status)
      for _, weird in ipairs { "/usage?startDate=%ff%fe&endDate=%00", "/usage?" .. string.rep("a=b&", 200),
        "/usage/breakdown?groupBy[]=x&" .. RANGE } do
        status = get(weird)
        assert.is_true(status >= 400 and status < 500, weird .. " gave " .. tostring(status))
      end
    end)

    it("does not expose the test-only endpoint unless started with --faults", function()
      local status = support.http("GET", server.root .. "/_test/requests?id=x")
      assert.equal(404, status)
    end)
  end)
end)

describe("local server storage", function()
  local function summary(info, range)
    local _, body = support.http("GET", info.base_url .. "/usage?" .. range, nil, AUTH)
    return core.decode(body)
  end
  local function ingest(info, body)
    return support.http("POST", info.base_url .. "/events", body, { Authorization = AUTH.Authorization })
  end
  local R = "startDate=2021-01-01&endDate=2021-02-01"

  it("keeps events across a restart, a kill -9 and a torn last line", function()
    local dir = support.tmpdir("store")
    local info = support.start { dir = dir, faults = false }
    assert.equal(201, ingest(info, '{"customerId":"s","eventType":"e","inputTokens":5,"timestamp":"2021-01-05T00:00:00Z"}'))
    support.stop(info)

    info = support.start { dir = dir, faults = false }
    assert.equal(1, summary(info, R).totalEvents)
    assert.equal(201, ingest(info, '{"customerId":"s","eventType":"e","inputTokens":7,"timestamp":"2021-01-06T00:00:00Z"}'))
    -- A crash: every nginx process killed at once, no chance to flush anything. The master is
    -- stopped first: a running master forks a new worker for the one killed under it, and that
    -- worker, orphaned by the master's own kill, would outlive the suite on the old port.
    os.execute("kill -STOP " .. info.pid .. "; pkill -9 -P " .. info.pid .. "; kill -9 " .. info.pid)
    -- And a write torn half-way, as a power cut during an append would leave it.
    local f = assert(io.open(dir .. "/data/events.jsonl", "ab"))
    f:write('{"customerId":"torn","eventType":"e","timest')
    f:close()
    os.remove(dir .. "/logs/nginx.pid")

    info = support.start { dir = dir, faults = false }
    local s = summary(info, R)
    assert.equal(2, s.totalEvents)
    assert.equal(12, s.totalInputTokens)
    assert.equal(201, ingest(info, '{"customerId":"s","eventType":"e","inputTokens":1,"timestamp":"2021-01-07T00:00:00Z"}'))
    support.stop(info)

    info = support.start { dir = dir, faults = false }
    s = summary(info, R)
    support.stop(info)
    assert.equal(3, s.totalEvents)
    assert.equal(13, s.totalInputTokens)
  end)

  it("loads the deterministic sample data on the first start of a folder", function()
    local info = support.start { faults = false, empty = false }
    local _, body = support.http("GET", info.base_url .. "/usage?startDate=2024-01-01&endDate=2024-03-31", nil, AUTH)
    local s = core.decode(body)
    local _, pbody = support.http("GET", info.base_url .. "/usage/breakdown?groupBy=provider&startDate=2024-01-01&endDate=2024-03-31", nil, AUTH)
    local _, cbody = support.http("GET", info.base_url .. "/usage/breakdown?groupBy=customer_id&startDate=2024-01-01&endDate=2024-03-31", nil, AUTH)
    local _, mbody = support.http("GET", info.base_url .. "/usage/breakdown?groupBy=model&startDate=2024-01-01&endDate=2024-03-31", nil, AUTH)
    support.stop(info)
    assert.equal(50400, s.totalEvents)
    assert.equal(s.totalInputTokens + s.totalOutputTokens, s.totalTokens)
    local providers = core.decode(pbody).data
    local has_null = false
    for _, row in ipairs(providers) do if row.dimension == nil then has_null = true end end
    assert.is_true(has_null)
    assert.equal(4, #providers)
    assert.equal(6, #core.decode(cbody).data)
    assert.equal(7, #core.decode(mbody).data)
    -- Same seed, same data: these totals are stable on every machine.
    assert.near(35861.63, s.totalCostCents, 1e-6)
  end)
end)
