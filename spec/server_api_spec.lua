-- The local server's whole API (events, track, checks, quotas, alerts, rate limits, customers,
-- project), over raw HTTP with luasocket, with hand-computed expectations. Times are pinned with the
-- test-only header X-Limitry-Now (unix seconds; honoured only with --faults), so period and window
-- boundaries are tested without sleeping. Unix times below were computed with `date -u -d ... +%s`.
local core = require "limitry.core"
local support = require "spec.support.server"
local socket = require "socket"

local KEY = "lm_local_test_key"
local INGEST = "lm_local_ingest_only_key"

local T = {
  wed_1320 = 1905081600,   -- 2030-05-15T13:20:00Z, a Wednesday
  wed_1359 = 1905083999,   -- 2030-05-15T13:59:59Z
  wed_1400 = 1905084000,   -- 2030-05-15T14:00:00Z
  wed_0000 = 1905033600,   -- 2030-05-15T00:00:00Z
  thu_0000 = 1905120000,   -- 2030-05-16T00:00:00Z
  mon_0000 = 1904860800,   -- 2030-05-13T00:00:00Z, the Monday starting that week
  sun_2359 = 1905465599,   -- 2030-05-19T23:59:59Z
  next_mon = 1905465600,   -- 2030-05-20T00:00:00Z
  feb29_end = 1835481599,  -- 2028-02-29T23:59:59Z (a leap year)
  mar1 = 1835481600,       -- 2028-03-01T00:00:00Z
  feb1 = 1832976000,       -- 2028-02-01T00:00:00Z
  dec31_end = 1924991999,  -- 2030-12-31T23:59:59Z
  jan1 = 1924992000,       -- 2031-01-01T00:00:00Z
}

-- A small JSON encoder (the spec must not depend on the client's encoder under test).
local function J(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v):gsub("\\\n", "\\n") end
  if t == "number" then
    if v == math.floor(v) then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if t == "boolean" then return tostring(v) end
  if v[1] ~= nil or getmetatable(v) == "array" then
    local out = {}
    for i, x in ipairs(v) do out[i] = J(x) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  local out = {}
  for k, x in pairs(v) do out[#out + 1] = J(k) .. ":" .. J(x) end
  table.sort(out)
  return "{" .. table.concat(out, ",") .. "}"
end

local server

-- method, path (under /v1), body (a table or raw string), opts { now, key, raw_path }
local function req(method, path, body, opts)
  opts = opts or {}
  local headers = { Authorization = "Bearer " .. (opts.key or KEY) }
  if opts.key == false then headers.Authorization = nil end
  if opts.now then headers["X-Limitry-Now"] = tostring(opts.now) end
  if body ~= nil then
    headers["Content-Type"] = "application/json"
    if type(body) == "table" then body = J(body) end
  end
  local status, raw, h = support.http(method, (opts.base or server.base_url) .. path, body, headers)
  return status, core.decode(raw), h, raw
end

local unique = 0
local function uid(tag)
  unique = unique + 1
  return string.format("%s-%d-%d", tag, math.floor(socket.gettime() * 1000), unique)
end

local function quota(q)
  local status, res = req("POST", "/quotas", q)
  assert(status == 201, "quota create answered " .. tostring(status) .. ": " .. tostring(res and res.error))
  return res
end
local function rate_limit(r)
  local status, res = req("POST", "/rate-limits", r)
  assert(status == 201, "rate limit create answered " .. tostring(status) .. ": " .. tostring(res and res.error))
  return res
end
local function track(ev, now) return req("POST", "/track", ev, { now = now }) end

describe("local server API", function()
  setup(function() server = support.start { faults = true } end)
  teardown(function() support.stop(server) end)

  describe("events", function()
    it("records an event and answers its id; a replayed idempotency key answers the same id", function()
      local status, res = req("POST", "/events", { customerId = "ev1", eventType = "chat", inputTokens = 3, idempotencyKey = "ev1-k" })
      assert.equal(201, status)
      assert.matches("^evt_%d+$", res.id)
      local status2, res2 = req("POST", "/events", { customerId = "ev1", eventType = "chat", inputTokens = 3, idempotencyKey = "ev1-k" })
      assert.equal(200, status2)
      assert.equal(res.id, res2.id)
      local _, page = req("GET", "/events?customerId=ev1")
      assert.equal(1, #page.data)
      assert.equal(res.id, page.data[1].id)
      assert.equal(3, page.data[1].totalTokens)
    end)

    it("records a batch all-or-nothing and answers its count", function()
      local status, res = req("POST", "/events/batch", { events = {
        { customerId = "ev2", eventType = "a", inputTokens = 1 },
        { customerId = "ev2", eventType = "b", outputTokens = 2, properties = { region = "eu" } },
      } })
      assert.equal(201, status)
      assert.equal(2, res.count)
      status, res = req("POST", "/events/batch", { events = {
        { customerId = "ev2", eventType = "c" }, { customerId = "ev2" } } })
      assert.equal(400, status)
      assert.matches("events%[2%]: eventType is required", res.error)
      local _, page = req("GET", "/events?customerId=ev2")
      assert.equal(2, #page.data)
      -- Newest first, every field back.
      assert.equal("b", page.data[1].eventType)
      assert.same({ region = "eu" }, page.data[1].properties)
      assert.equal("a", page.data[2].eventType)
      assert.is_true(page.data[1].id ~= page.data[2].id)
      assert.is_false(page.hasMore)
    end)

    it("filters the list by customerId, eventType and model, and validates limit and cursor", function()
      req("POST", "/events/batch", { events = {
        { customerId = "ev3", eventType = "chat", model = "m1" },
        { customerId = "ev3", eventType = "chat", model = "m2" },
        { customerId = "ev3", eventType = "embed", model = "m1" },
      } })
      assert.equal(2, #select(2, req("GET", "/events?customerId=ev3&model=m1")).data)
      assert.equal(2, #select(2, req("GET", "/events?customerId=ev3&eventType=chat")).data)
      assert.equal(1, #select(2, req("GET", "/events?customerId=ev3&eventType=chat&model=m2")).data)
      for _, bad in ipairs { "limit=0", "limit=101", "limit=x", "limit=1.5" } do
        local status, res = req("GET", "/events?" .. bad)
        assert.equal(400, status, bad)
        assert.matches("limit must be an integer from 1 to 100", res.error)
      end
      local status, res = req("GET", "/events?cursor=nonsense")
      assert.equal(400, status)
      assert.matches("Invalid cursor", res.error)
      local _, page, _, raw = req("GET", "/events?customerId=ev3&limit=2")
      assert.equal(2, #page.data)
      assert.is_true(page.hasMore)
      local _, last, _, raw2 = req("GET", "/events?customerId=ev3&limit=2&cursor=" .. page.nextCursor)
      assert.equal(1, #last.data)
      assert.is_false(last.hasMore)
      assert.matches('"nextCursor":"', raw)
      assert.matches('"nextCursor":null', raw2)
    end)

    it("pages over 1,000 events with cursors while events are inserted between pages", function()
      local cust = uid("page")
      local want = {}
      for b = 1, 4 do
        local list = {}
        for i = 1, 250 do list[i] = { customerId = cust, eventType = "e", inputTokens = (b - 1) * 250 + i } end
        local status, res = req("POST", "/events/batch", { events = list })
        assert.equal(201, status)
        assert.equal(250, res.count)
      end
      for i = 1, 1000 do want[i] = i end
      local seen, got, cursor, pages = {}, {}, nil, 0
      repeat
        local status, page = req("GET", "/events?limit=100&customerId=" .. cust .. (cursor and ("&cursor=" .. cursor) or ""))
        assert.equal(200, status)
        pages = pages + 1
        for _, e in ipairs(page.data) do
          assert.is_nil(seen[e.id], "event listed twice: " .. e.id)
          seen[e.id] = true
          got[#got + 1] = e.inputTokens
        end
        -- New events of the same customer arrive while the listing goes on.
        local more = {}
        for i = 1, 7 do more[i] = { customerId = cust, eventType = "late", inputTokens = 5000 + pages * 10 + i } end
        assert.equal(201, (req("POST", "/events/batch", { events = more })))
        cursor = page.hasMore and page.nextCursor or nil
      until not cursor or pages > 20
      assert.equal(10, pages)
      -- Exactly the 1,000 events stored when the listing began, newest first.
      local expected = {}
      for i = 1, 1000 do expected[i] = want[1001 - i] end
      assert.same(expected, got)
      -- A fresh listing sees the 70 late ones first.
      local _, first = req("GET", "/events?limit=100&customerId=" .. cust)
      assert.equal("late", first.data[1].eventType)
      assert.equal("late", first.data[70].eventType)
      assert.equal("e", first.data[71].eventType)
      assert.equal(50, #select(2, req("GET", "/events?customerId=" .. cust)).data)
    end)
  end)

  describe("track", function()
    it("done-when: 1,000 tokens a day on one customer allows 10 calls of 100 and refuses the 11th until midnight", function()
      local cust = uid("dw")
      local q = quota { name = "daily tokens", metric = "total_tokens", limitValue = 1000, period = "day",
        dimensionFilters = { customer_id = cust } }
      for i = 1, 10 do
        local status, res = track({ customerId = cust, eventType = "chat", inputTokens = 60, outputTokens = 40 }, T.wed_1320 + i)
        assert.equal(200, status, "call " .. i)
        assert.is_true(res.allowed)
        assert.matches("^evt_", res.id)
        assert.same({ { id = q.id, name = "daily tokens", metric = "total_tokens", period = "day", limit = 1000,
          used = 100 * i, remaining = 1000 - 100 * i, exceeded = i == 10 } }, res.quotas)
      end
      local now = T.wed_1320 + 11
      local status, res, h = track({ customerId = cust, eventType = "chat", inputTokens = 100 }, now)
      assert.equal(429, status)
      assert.is_false(res.allowed)
      assert.matches("Quota 'daily tokens' exceeded", res.error)
      assert.equal(tostring(T.thu_0000 - now), h["retry-after"])   -- 38389 s to the next UTC midnight
      assert.equal(tostring(T.thu_0000), h["x-quota-reset"])
      assert.equal("day", h["x-quota-period"])
      assert.equal("total_tokens", h["x-quota-metric"])
      assert.equal("1000", h["x-ratelimit-limit"])
      assert.equal("0", h["x-ratelimit-remaining"])
      assert.equal(tostring(T.thu_0000), h["x-ratelimit-reset"])
      assert.same({ { id = q.id, name = "daily tokens", metric = "total_tokens", period = "day", limit = 1000,
        used = 1000, remaining = 0, exceeded = true } }, res.quotas)
      -- Not recorded: still 10 events.
      local _, u = req("GET", "/customers/" .. cust .. "/usage?startDate=2030-05-15&endDate=2030-05-16")
      assert.equal(10, u.totalEvents)
      assert.equal(1000, u.totalTokens)
      -- Another customer is not limited; the next UTC day starts afresh.
      assert.equal(200, (track({ customerId = cust .. "-other", eventType = "chat", inputTokens = 5000 }, now)))
      status, res = track({ customerId = cust, eventType = "chat", inputTokens = 100 }, T.thu_0000)
      assert.equal(200, status)
      assert.equal(100, res.quotas[1].used)
    end)

    it("done-when: 5 per second refuses the 6th call in a second and allows again in the next", function()
      local cust = uid("rps")
      local r = rate_limit { name = "five per second", limitValue = 5, window = "second", dimensionFilters = { customer_id = cust } }
      local base = T.wed_1320 + 100
      for i = 1, 5 do
        local status, res = track({ customerId = cust, eventType = "chat" }, base + i * 0.15)
        assert.equal(200, status, "call " .. i)
        assert.same({ { id = r.id, name = "five per second", window = "second", limit = 5, remaining = 5 - i,
          reset = base + 1, exceeded = i == 5 } }, res.rateLimits)
      end
      local status, res, h = track({ customerId = cust, eventType = "chat" }, base + 0.9)
      assert.equal(429, status)
      assert.is_false(res.allowed)
      assert.matches("Rate limit 'five per second' exceeded", res.error)
      assert.equal("1", h["retry-after"])
      assert.equal("5", h["x-ratelimit-limit"])
      assert.equal("0", h["x-ratelimit-remaining"])
      assert.equal(tostring(base + 1), h["x-ratelimit-reset"])
      assert.is_nil(h["x-quota-reset"])
      status, res = track({ customerId = cust, eventType = "chat" }, base + 1)
      assert.equal(200, status)
      assert.equal(4, res.rateLimits[1].remaining)
    end)

    it("uses the server's own clock without the test header", function()
      local cust = uid("clock")
      rate_limit { name = "five per minute", limitValue = 5, window = "minute", dimensionFilters = { customer_id = cust } }
      local before = os.time()
      local statuses = {}
      for i = 1, 6 do statuses[i] = (track({ customerId = cust, eventType = "chat" })) end
      local after = os.time()
      for i = 1, 5 do assert.equal(200, statuses[i], "call " .. i) end
      -- The 6th is refused unless the calls straddled a minute boundary.
      if math.floor(before / 60) == math.floor(after / 60) then assert.equal(429, statuses[6]) end
    end)

    it("checks rate limits before quotas and records nothing refused", function()
      local cust = uid("order")
      rate_limit { name = "one per hour", limitValue = 1, window = "hour", dimensionFilters = { customer_id = cust } }
      quota { name = "one event", metric = "total_events", limitValue = 1, period = "hour", dimensionFilters = { customer_id = cust } }
      assert.equal(200, (track({ customerId = cust, eventType = "e" }, T.wed_1320)))
      local status, res, h = track({ customerId = cust, eventType = "e" }, T.wed_1320 + 1)
      assert.equal(429, status)
      assert.matches("^Rate limit", res.error)
      assert.is_nil(h["x-quota-period"])
      assert.equal(1, #res.quotas)
      assert.equal(1, #res.rateLimits)
      assert.equal(1, #select(2, req("GET", "/events?customerId=" .. cust)).data)
    end)

    it("refuses an event that would pass the limit, and any event once a quota is used up", function()
      local cust = uid("edge")
      quota { name = "100 tokens", metric = "total_tokens", limitValue = 100, period = "day", dimensionFilters = { customer_id = cust } }
      assert.equal(200, (track({ customerId = cust, eventType = "e", inputTokens = 60 }, T.wed_1320)))
      assert.equal(429, (track({ customerId = cust, eventType = "e", inputTokens = 41 }, T.wed_1320)))
      assert.equal(200, (track({ customerId = cust, eventType = "e", inputTokens = 40 }, T.wed_1320)))
      assert.equal(429, (track({ customerId = cust, eventType = "e", inputTokens = 0 }, T.wed_1320)))
    end)

    it("matches dimension filters on customer_id, event_type, model, provider and string properties", function()
      local cust = uid("dims")
      quota { name = "eu gpt", metric = "total_events", limitValue = 1, period = "day",
        dimensionFilters = { customer_id = cust, event_type = "chat", model = "gpt", provider = "openai", region = "eu" } }
      local ev = { customerId = cust, eventType = "chat", model = "gpt", provider = "openai", properties = { region = "eu" } }
      local other = { customerId = cust, eventType = "chat", model = "gpt", provider = "openai", properties = { region = "us" } }
      local numeric = { customerId = cust, eventType = "chat", model = "gpt", provider = "openai", properties = { region = 1 } }
      local _, res = track(ev, T.wed_1320)
      assert.equal(1, #res.quotas)
      local _, res2 = track(other, T.wed_1320)
      assert.equal(0, #res2.quotas)
      assert.equal(200, (track(numeric, T.wed_1320)))
      assert.equal(429, (track(ev, T.wed_1320)))
      local _, c = req("POST", "/quotas/check", { customer_id = cust, event_type = "chat", model = "gpt", provider = "openai", region = "eu" }, { now = T.wed_1320 })
      assert.is_false(c.allowed)
      assert.equal(1, c.quotas[1].used)
      _, c = req("POST", "/quotas/check", { customer_id = cust }, { now = T.wed_1320 })
      assert.is_true(c.allowed)
      assert.equal(0, #c.quotas)
    end)

    it("counts cost exactly and events one each", function()
      local cust = uid("cost")
      quota { name = "cost", metric = "total_cost_cents", limitValue = 0.3, period = "month", dimensionFilters = { customer_id = cust } }
      local _, r1 = track({ customerId = cust, eventType = "e", costCents = 0.1 }, T.wed_1320)
      assert.equal(0.1, r1.quotas[1].used)
      local _, r2 = track({ customerId = cust, eventType = "e", costCents = 0.2 }, T.wed_1320)
      assert.equal(0.3, r2.quotas[1].used)   -- 0.1 + 0.2 reported as 0.3, not 0.30000000000000004
      assert.is_true(r2.quotas[1].exceeded)
      assert.equal(429, (track({ customerId = cust, eventType = "e", costCents = 0 }, T.wed_1320)))
    end)

    it("replays an idempotency key with the original id, counting it once", function()
      local cust = uid("idem")
      quota { name = "q", metric = "total_tokens", limitValue = 1000, period = "day", dimensionFilters = { customer_id = cust } }
      local ev = { customerId = cust, eventType = "e", inputTokens = 100, idempotencyKey = cust .. "-k" }
      local _, a = track(ev, T.wed_1320)
      local status, b = track(ev, T.wed_1320)
      assert.equal(200, status)
      assert.is_true(b.allowed)
      assert.equal(a.id, b.id)
      assert.equal(100, b.quotas[1].used)
      -- An event recorded with a key and tracked later with it is the same event.
      local _, rec = req("POST", "/events", { customerId = cust, eventType = "e", inputTokens = 5, idempotencyKey = cust .. "-r" }, { now = T.wed_1320 })
      local _, tr = track({ customerId = cust, eventType = "e", inputTokens = 5, idempotencyKey = cust .. "-r" }, T.wed_1320)
      assert.equal(rec.id, tr.id)
      assert.equal(105, tr.quotas[1].used)
      -- A batch replayed answers the same count and ids.
      local batch = { events = { { customerId = cust, eventType = "b", idempotencyKey = cust .. "-b1" },
        { customerId = cust, eventType = "b", idempotencyKey = cust .. "-b2" } } }
      local _, x = req("POST", "/events/batch", batch)
      local _, y = req("POST", "/events/batch", batch)
      assert.equal(2, y.count)
      assert.equal(x.results[1].id, y.results[1].id)
      assert.equal(x.results[2].id, y.results[2].id)
      assert.equal(0, y.recorded)
    end)
  end)

  describe("periods and windows", function()
    local function boundary(period, last, first, limit_ends)
      local cust = uid("p-" .. period)
      quota { name = period, metric = "total_events", limitValue = 1, period = period, dimensionFilters = { customer_id = cust } }
      assert.equal(200, (track({ customerId = cust, eventType = "e" }, last)))
      local status, _, h = track({ customerId = cust, eventType = "e" }, last)
      assert.equal(429, status, period)
      assert.equal("1", h["retry-after"], period)
      assert.equal(tostring(limit_ends), h["x-quota-reset"], period)
      assert.equal(period, h["x-quota-period"])
      assert.equal(200, (track({ customerId = cust, eventType = "e" }, first)), period)
      local _, c = req("POST", "/quotas/check", { customer_id = cust }, { now = first })
      assert.equal(1, c.quotas[1].used)
      assert.is_false(c.allowed)
    end

    it("resets hourly quotas on the UTC hour", function() boundary("hour", T.wed_1359, T.wed_1400, T.wed_1400) end)
    it("resets daily quotas at 00:00Z", function() boundary("day", T.thu_0000 - 1, T.thu_0000, T.thu_0000) end)
    it("resets weekly quotas on Monday 00:00Z", function() boundary("week", T.sun_2359, T.next_mon, T.next_mon) end)
    it("resets monthly quotas on the 1st, after a leap day and at a year end", function()
      boundary("month", T.feb29_end, T.mar1, T.mar1)
      boundary("month", T.dec31_end, T.jan1, T.jan1)
    end)

    it("counts events where their timestamps fall: a whole Monday-to-Sunday week", function()
      local cust = uid("week")
      local q = quota { name = "week", metric = "total_tokens", limitValue = 100, period = "week", dimensionFilters = { customer_id = cust } }
      req("POST", "/events/batch", { events = {
        { customerId = cust, eventType = "e", inputTokens = 1, timestamp = "2030-05-12T23:59:59Z" },  -- Sunday before
        { customerId = cust, eventType = "e", inputTokens = 2, timestamp = "2030-05-13T00:00:00Z" },  -- Monday
        { customerId = cust, eventType = "e", inputTokens = 4, timestamp = "2030-05-19T23:59:59Z" },  -- Sunday
        { customerId = cust, eventType = "e", inputTokens = 8, timestamp = "2030-05-20T00:00:00Z" },  -- next Monday
      } })
      local _, c = req("POST", "/quotas/check", { customer_id = cust }, { now = T.wed_1320 })
      assert.same({ allowed = true, quotas = { { id = q.id, name = "week", metric = "total_tokens", period = "week",
        limit = 100, used = 6, remaining = 94, exceeded = false } } }, c)
      _, c = req("POST", "/quotas/check", { customer_id = cust }, { now = T.mon_0000 - 1 })
      assert.equal(1, c.quotas[1].used)
    end)

    it("aligns rate-limit windows to the minute and the hour", function()
      local cust = uid("win")
      rate_limit { name = "2/min", limitValue = 2, window = "minute", dimensionFilters = { customer_id = cust } }
      local m0 = T.wed_1320 -- on a minute boundary
      assert.equal(200, (track({ customerId = cust, eventType = "e" }, m0 + 58)))
      assert.equal(200, (track({ customerId = cust, eventType = "e" }, m0 + 59)))
      local status, _, h = track({ customerId = cust, eventType = "e" }, m0 + 59.5)
      assert.equal(429, status)
      assert.equal(tostring(m0 + 60), h["x-ratelimit-reset"])
      assert.equal(200, (track({ customerId = cust, eventType = "e" }, m0 + 60)))
      local _, c = req("POST", "/rate-limits/check", { customer_id = cust }, { now = m0 + 60 })
      assert.same({ allowed = true, rateLimits = { { id = c.rateLimits[1].id, name = "2/min", window = "minute", limit = 2,
        remaining = 1, reset = m0 + 120, exceeded = false } } }, c)
      local cust2 = uid("win-h")
      rate_limit { name = "1/h", limitValue = 1, window = "hour", dimensionFilters = { customer_id = cust2 } }
      assert.equal(200, (track({ customerId = cust2, eventType = "e" }, T.wed_1400 - 3599)))
      local s2, _, h2 = track({ customerId = cust2, eventType = "e" }, T.wed_1359)
      assert.equal(429, s2)
      assert.equal("1", h2["retry-after"])
      assert.equal(200, (track({ customerId = cust2, eventType = "e" }, T.wed_1400)))
    end)
  end)

  describe("checks", function()
    it("are read-only and say no once a quota or a rate limit is used up", function()
      local cust = uid("chk")
      quota { name = "two", metric = "total_events", limitValue = 2, period = "day", dimensionFilters = { customer_id = cust } }
      rate_limit { name = "three", limitValue = 3, window = "hour", dimensionFilters = { customer_id = cust } }
      for _ = 1, 3 do
        local _, c = req("POST", "/quotas/check", { customer_id = cust }, { now = T.wed_1320 })
        assert.is_true(c.allowed)
        assert.equal(0, c.quotas[1].used)
      end
      track({ customerId = cust, eventType = "e" }, T.wed_1320)
      track({ customerId = cust, eventType = "e" }, T.wed_1320)
      local _, q = req("POST", "/quotas/check", { customer_id = cust }, { now = T.wed_1320 })
      assert.is_false(q.allowed)
      assert.is_true(q.quotas[1].exceeded)
      local _, r = req("POST", "/rate-limits/check", { customer_id = cust }, { now = T.wed_1320 })
      assert.is_true(r.allowed)
      assert.equal(1, r.rateLimits[1].remaining)
      assert.equal(T.wed_1400, r.rateLimits[1].reset)
      local status, bad = req("POST", "/quotas/check", { customer_id = 5 })
      assert.equal(400, status)
      assert.matches("customer_id must be a string", bad.error)
      assert.equal(400, (req("POST", "/rate-limits/check", "[1]")))
    end)

    it("do not enforce or list a disabled rate limit", function()
      local cust = uid("off")
      local r = rate_limit { name = "off", limitValue = 1, window = "hour", enabled = false, dimensionFilters = { customer_id = cust } }
      assert.is_false(r.enabled)
      for _ = 1, 3 do assert.equal(200, (track({ customerId = cust, eventType = "e" }, T.wed_1320))) end
      local _, c = req("POST", "/rate-limits/check", { customer_id = cust }, { now = T.wed_1320 })
      assert.equal(0, #c.rateLimits)
      req("PUT", "/rate-limits/" .. r.id, { enabled = true })
      assert.equal(429, (track({ customerId = cust, eventType = "e" }, T.wed_1320)))
    end)
  end)

  describe("CRUD", function()
    it("creates, reads, lists, updates and deletes quotas", function()
      local q = quota { name = "crud", metric = "total_events", limitValue = 10, period = "hour" }
      assert.matches("^quota_%d+$", q.id)
      assert.same({}, q.dimensionFilters)
      assert.equal(q.createdAt, q.updatedAt)
      local status, got = req("GET", "/quotas/" .. q.id)
      assert.equal(200, status)
      assert.same(q, got)
      local _, list = req("GET", "/quotas")
      local found = false
      for _, x in ipairs(list.data) do if x.id == q.id then found = true end end
      assert.is_true(found)
      local _, up = req("PUT", "/quotas/" .. q.id, { limitValue = 20, name = "renamed" })
      assert.equal(20, up.limitValue)
      assert.equal("renamed", up.name)
      assert.equal("hour", up.period)
      assert.same(up, select(2, req("GET", "/quotas/" .. q.id)))
      local ds, del = req("DELETE", "/quotas/" .. q.id)
      assert.equal(200, ds)
      assert.same({ success = true }, del)
      local s404, nf = req("GET", "/quotas/" .. q.id)
      assert.equal(404, s404)
      assert.equal("Quota '" .. q.id .. "' not found", nf.error)
      assert.equal(404, (req("DELETE", "/quotas/" .. q.id)))
      assert.equal(404, (req("PUT", "/quotas/" .. q.id, { name = "x" })))
    end)

    it("creates, reads, updates and deletes rate limits, enabled by default", function()
      local r = rate_limit { name = "rl", limitValue = 3, window = "minute" }
      assert.matches("^rl_%d+$", r.id)
      assert.is_true(r.enabled)
      assert.same(r, select(2, req("GET", "/rate-limits/" .. r.id)))
      local _, up = req("PUT", "/rate-limits/" .. r.id, { window = "hour", dimensionFilters = { model = "m" } })
      assert.equal("hour", up.window)
      assert.same({ model = "m" }, up.dimensionFilters)
      local _, list = req("GET", "/rate-limits")
      assert.is_true(#list.data >= 1)
      assert.same({ success = true }, select(2, req("DELETE", "/rate-limits/" .. r.id)))
      assert.equal(404, (req("GET", "/rate-limits/" .. r.id)))
    end)

    it("percent-decodes path ids", function()
      local q = quota { name = "pct", metric = "total_events", limitValue = 1, period = "day", dimensionFilters = { customer_id = "nobody" } }
      local encoded = q.id:gsub("_", "%%5F")
      assert.equal(200, (req("GET", "/quotas/" .. encoded)))
      local status, u = req("GET", "/customers/a%2Fb%20c/usage?startDate=2030-01-01&endDate=2030-02-01")
      assert.equal(200, status)
      assert.equal("a/b c", u.customerId)
      local s2, nf = req("GET", "/rate-limits/no%2Fsuch")
      assert.equal(404, s2)
      assert.equal("Rate limit 'no/such' not found", nf.error)
    end)

    it("refuses bad bodies with a 400 naming the field", function()
      local cases = {
        { "/quotas", {}, "name is required" },
        { "/quotas", { name = "x", limitValue = 1, period = "day" }, "metric is required" },
        { "/quotas", { name = "x", metric = "tokens", limitValue = 1, period = "day" }, "metric must be one of total_tokens, total_events, total_cost_cents" },
        { "/quotas", { name = "x", metric = "total_events", limitValue = 0, period = "day" }, "limitValue must be a number greater than 0" },
        { "/quotas", { name = "x", metric = "total_events", limitValue = -1, period = "day" }, "limitValue must be" },
        { "/quotas", { name = "x", metric = "total_events", limitValue = 1, period = "year" }, "period must be one of hour, day, week, month" },
        { "/quotas", { name = "", metric = "total_events", limitValue = 1, period = "day" }, "name must be a non%-empty string" },
        { "/quotas", { name = "x", metric = "total_events", limitValue = 1, period = "day", dimensionFilters = { model = 3 } },
          "dimensionFilters.model must be a non%-empty string" },
        { "/quotas", { name = "x", metric = "total_events", limitValue = 1, period = "day", colour = "red" }, "unknown field 'colour'" },
        { "/rate-limits", { name = "x", limitValue = 1.5, window = "second" }, "limitValue must be a positive integer" },
        { "/rate-limits", { name = "x", limitValue = 1, window = "day" }, "window must be one of second, minute, hour" },
        { "/rate-limits", { name = "x", limitValue = 1, window = "hour", enabled = "yes" }, "enabled must be true or false" },
        { "/rate-limits", "[1,2]", "Body must be a JSON object" },
        { "/rate-limits", "{", "not valid JSON" },
      }
      for _, c in ipairs(cases) do
        local status, res = req("POST", c[1], c[2])
        assert.equal(400, status, J(c[2]))
        assert.matches(c[3], res.error)
      end
      local q = quota { name = "v", metric = "total_events", limitValue = 1, period = "day", dimensionFilters = { customer_id = "nobody" } }
      local status, res = req("PUT", "/quotas/" .. q.id, { period = "fortnight" })
      assert.equal(400, status)
      assert.matches("period must be one of", res.error)
      assert.equal("day", select(2, req("GET", "/quotas/" .. q.id)).period)
    end)

    it("answers 404 for unknown routes and 405 naming the methods a route takes", function()
      assert.equal(404, (req("GET", "/quotas/x/y/z")))
      local status, res, h = req("PATCH", "/quotas/quota_1", {})
      assert.equal(405, status)
      assert.equal("DELETE, GET, PUT", h.allow)
      assert.matches("Method not allowed", res.error)
      assert.equal(405, (req("GET", "/track")))
    end)

    it("limits a tracked event's body to 1 MiB, as a recorded one's", function()
      local status, res = req("POST", "/track", '{"customerId":"big","eventType":"e","properties":{"blob":"'
        .. string.rep("x", 2 * 1024 * 1024) .. '"}}')
      assert.equal(413, status)
      assert.matches("/v1/track take at most 1 MiB", res.error)
    end)
  end)

  describe("quota alerts", function()
    it("are created under a quota, fire once per period when crossed, and go with their quota", function()
      local cust = uid("alert")
      local q = quota { name = "alerted", metric = "total_tokens", limitValue = 1000, period = "day", dimensionFilters = { customer_id = cust } }
      local status, a = req("POST", "/quotas/" .. q.id .. "/alerts", { threshold = 80 })
      assert.equal(201, status)
      assert.matches("^alert_%d+$", a.id)
      assert.equal(q.id, a.quotaId)
      assert.equal(80, a.threshold)
      assert.same({ data = { a } }, select(2, req("GET", "/quotas/" .. q.id .. "/alerts")))
      assert.same(a, select(2, req("GET", "/quota-alerts/" .. a.id)))
      local _, up = req("PUT", "/quota-alerts/" .. a.id, { threshold = 50 })
      assert.equal(50, up.threshold)
      track({ customerId = cust, eventType = "e", inputTokens = 400 }, T.wed_1320)
      local _, h = req("GET", "/quota-alerts/" .. a.id .. "/history")
      assert.same({}, h.data)
      track({ customerId = cust, eventType = "e", inputTokens = 200 }, T.wed_1320 + 60)   -- 600: crosses 50%
      track({ customerId = cust, eventType = "e", inputTokens = 200 }, T.wed_1320 + 120)  -- 800: already fired today
      req("POST", "/events", { customerId = cust, eventType = "e", inputTokens = 600 }, { now = T.thu_0000 + 5 }) -- crosses on Thursday
      _, h = req("GET", "/quota-alerts/" .. a.id .. "/history")
      assert.same({
        { threshold = 50, triggeredAt = "2030-05-15T13:21:00Z", used = 600, limit = 1000 },
        { threshold = 50, triggeredAt = "2030-05-16T00:00:05Z", used = 600, limit = 1000 },
      }, h.data)
      for _, bad in ipairs { 0, 101, 2.5 } do
        local s, res = req("POST", "/quotas/" .. q.id .. "/alerts", { threshold = bad })
        assert.equal(400, s)
        assert.matches("threshold must be an integer from 1 to 100", res.error)
      end
      assert.equal(404, (req("POST", "/quotas/quota_999999/alerts", { threshold = 5 })))
      assert.equal(404, (req("GET", "/quota-alerts/alert_999999/history")))
      req("DELETE", "/quotas/" .. q.id)
      assert.equal(404, (req("GET", "/quota-alerts/" .. a.id)))
    end)
  end)

  describe("customers and project", function()
    it("answers a customer's usage over a range and the local project", function()
      local cust = uid("cu")
      req("POST", "/events/batch", { events = {
        { customerId = cust, eventType = "e", inputTokens = 3, outputTokens = 4, costCents = 1.5, timestamp = "2030-01-01T00:00:00Z" },
        { customerId = cust, eventType = "e", inputTokens = 1, timestamp = "2030-01-31T23:59:59Z" },
        { customerId = cust, eventType = "e", inputTokens = 100, timestamp = "2030-02-01T00:00:00Z" },
      } })
      local status, u = req("GET", "/customers/" .. cust .. "/usage?startDate=2030-01-01T00:00:00Z&endDate=2030-02-01T00:00:00Z")
      assert.equal(200, status)
      assert.same({ customerId = cust, totalEvents = 2, totalTokens = 8, totalInputTokens = 4, totalOutputTokens = 4,
        totalCostCents = 1.5 }, u)
      local s400, e = req("GET", "/customers/" .. cust .. "/usage?startDate=2030-01-01")
      assert.equal(400, s400)
      assert.matches("endDate is required", e.error)
      local _, p = req("GET", "/project")
      assert.same({ id = "proj_local", organizationId = "org_local", name = "Local project", slug = "local",
        createdAt = "2024-01-01T00:00:00Z", updatedAt = "2024-01-01T00:00:00Z" }, p)
    end)
  end)

  describe("keys", function()
    it("lets the ingest-only key record, track and check, but not read or administer", function()
      local cust = uid("keys")
      local function as(method, path, body) return (req(method, path, body, { key = INGEST })) end
      assert.equal(201, as("POST", "/events", { customerId = cust, eventType = "e" }))
      assert.equal(201, as("POST", "/events/batch", { events = { { customerId = cust, eventType = "e" } } }))
      assert.equal(200, as("POST", "/track", { customerId = cust, eventType = "e" }))
      assert.equal(200, as("POST", "/quotas/check", { customer_id = cust }))
      assert.equal(200, as("POST", "/rate-limits/check", { customer_id = cust }))
      for _, c in ipairs {
        { "GET", "/events" }, { "GET", "/customers/c/usage?startDate=2030-01-01&endDate=2030-01-02" }, { "GET", "/project" },
        { "GET", "/quotas" }, { "POST", "/quotas", {} }, { "GET", "/quotas/quota_1" }, { "PUT", "/quotas/quota_1", {} },
        { "DELETE", "/quotas/quota_1" }, { "GET", "/quotas/quota_1/alerts" }, { "POST", "/quotas/quota_1/alerts", {} },
        { "GET", "/quota-alerts/alert_1" }, { "GET", "/quota-alerts/alert_1/history" }, { "GET", "/rate-limits" },
        { "POST", "/rate-limits", {} }, { "DELETE", "/rate-limits/rl_1" },
      } do
        assert.equal(403, as(c[1], c[2], c[3]), c[1] .. " " .. c[2])
      end
      assert.equal(401, (req("GET", "/quotas", nil, { key = false })))
      assert.equal(401, (req("POST", "/track", { customerId = cust, eventType = "e" }, { key = "lm_nope" })))
    end)
  end)
end)

describe("local server without --faults", function()
  it("ignores X-Limitry-Now", function()
    local info = support.start { faults = false }
    local ok, err = pcall(function()
      local cust = uid("nofault")
      local _, q = req("POST", "/quotas", { name = "h", metric = "total_events", limitValue = 1, period = "hour",
        dimensionFilters = { customer_id = cust } }, { base = info.base_url })
      assert.truthy(q.id)
      assert.equal(200, (req("POST", "/track", { customerId = cust, eventType = "e" }, { base = info.base_url, now = T.wed_1320 })))
      -- Were the header honoured, the event would sit in 2030 and this hour's check would show 0.
      local _, c = req("POST", "/quotas/check", { customer_id = cust }, { base = info.base_url })
      assert.equal(1, c.quotas[1].used)
    end)
    support.stop(info)
    assert(ok, err)
  end)
end)

describe("local server durability", function()
  package.path = "server/?.lua;" .. package.path
  local local_server = require "limitry_local"

  local function children(pid)
    local f = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children")
    local list = {}
    if f then
      for p in f:read("*a"):gmatch("%d+") do list[#list + 1] = p end
      f:close()
    end
    return list
  end

  it("loses no acknowledged event, quota or rate limit to a kill -9 mid-load", function()
    local dir = support.tmpdir("durable")
    local info = local_server.start { dir = dir, empty = true, faults = false }
    local base = info.base_url
    local acked, acked_quotas, acked_rls = {}, {}, {}
    local function post(path, body) return req("POST", path, body, { base = base }) end
    local N = 300
    local loaded, load_err = pcall(function()
      for i = 1, N do
        local status, res = post("/events", { customerId = "dur", eventType = "e", inputTokens = i, idempotencyKey = "dur-" .. i })
        assert.equal(201, status)
        acked[res.id] = i
        if i % 30 == 0 then
          local qs, q = post("/quotas", { name = "q" .. i, metric = "total_tokens", limitValue = i, period = "day",
            dimensionFilters = { customer_id = "dur-quota" } })
          assert.equal(201, qs)
          acked_quotas[q.id] = q
          local rs, r = post("/rate-limits", { name = "r" .. i, limitValue = 1000000, window = "hour",
            dimensionFilters = { customer_id = "dur" } })
          assert.equal(201, rs)
          acked_rls[r.id] = r
        end
        if i % 7 == 0 then
          local ts, t = post("/track", { customerId = "dur", eventType = "t", inputTokens = 0, idempotencyKey = "dur-t" .. i })
          if ts == 200 then acked[t.id] = "t" .. i end
        end
      end
    end)
    if not loaded then
      local_server.stop(info.dir) -- a failed load must not leave the server running
      error(load_err, 0)
    end
    -- Requests in flight on their own connections when every nginx process dies.
    local port = tonumber(base:match(":(%d+)/"))
    local inflight = {}
    for j = 1, 8 do
      local c = socket.tcp()
      c:settimeout(2)
      assert(c:connect("127.0.0.1", port))
      local path, body = "/v1/events", J { customerId = "dur", eventType = "inflight", inputTokens = 1, idempotencyKey = "dur-f" .. j }
      if j % 2 == 0 then
        path, body = "/v1/quotas", J { name = "inflight" .. j, metric = "total_events", limitValue = j, period = "hour",
          dimensionFilters = { customer_id = "dur-quota" } }
      end
      c:send("POST " .. path .. " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. KEY
        .. "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
      inflight[j] = c
    end
    -- Kill once the first of them is being answered: the others are in the server's hands.
    local first_line = inflight[1]:receive("*l")
    local workers = children(info.pid)
    assert.is_true(#workers >= 1)
    -- The master first: alive, it would fork a new worker for each one killed, orphaned a moment later.
    os.execute("kill -9 " .. info.pid .. " " .. table.concat(workers, " "))
    -- Whatever was answered before the kill counts as acknowledged too.
    local answered = 0
    for j, c in ipairs(inflight) do
      local data, _, partial = c:receive("*a")
      data = data or partial or ""
      if j == 1 then data = (first_line or "") .. "\r\n" .. data end
      c:close()
      local body = data:match("^HTTP/1%.1 201.-\r\n\r\n(.*)$")
      if body then
        answered = answered + 1
        local res = core.decode(body)
        if j % 2 == 0 then acked_quotas[res.id] = res else acked[res.id] = "inflight" end
      end
    end
    print(string.format("\n  kill -9 with 8 requests in flight: %d of them answered before the kill", answered))
    local dead = socket.gettime() + 10
    while (local_server.alive(info.pid) or local_server.alive(workers[1])) and socket.gettime() < dead do socket.sleep(0.05) end
    assert.is_false(local_server.alive(info.pid))
    -- And a change torn half-way through its line, as a power cut mid-append would leave it.
    local f = assert(io.open(dir .. "/data/config.jsonl", "ab"))
    f:write('{"t":"quota","v":{"id":"quota_99999","name":"to')
    f:close()

    info = local_server.start { dir = dir, empty = true, faults = false }
    local ok, err = pcall(function()
      local served, cursor = {}, nil
      for _ = 1, 50 do
        local status, page = req("GET", "/events?limit=100&customerId=dur" .. (cursor and ("&cursor=" .. cursor) or ""), nil, { base = info.base_url })
        assert.equal(200, status)
        for _, e in ipairs(page.data) do served[e.id] = e end
        if not page.hasMore then break end
        cursor = page.nextCursor
      end
      local n = 0
      for id, i in pairs(acked) do
        n = n + 1
        assert.truthy(served[id], "acknowledged event " .. id .. " lost")
        if type(i) == "number" then assert.equal(i, served[id].inputTokens) end
      end
      assert.is_true(n >= N + 42)
      local _, quotas = req("GET", "/quotas", nil, { base = info.base_url })
      local by_id = {}
      for _, q in ipairs(quotas.data) do by_id[q.id] = q end
      for id, q in pairs(acked_quotas) do assert.same(q, by_id[id]) end
      local _, rls = req("GET", "/rate-limits", nil, { base = info.base_url })
      by_id = {}
      for _, r in ipairs(rls.data) do by_id[r.id] = r end
      for id, r in pairs(acked_rls) do assert.same(r, by_id[id]) end
      -- New ids never reuse acknowledged ones.
      local _, fresh = req("POST", "/events", { customerId = "dur", eventType = "after" }, { base = info.base_url })
      assert.is_nil(acked[fresh.id])
      local _, fq = req("POST", "/quotas", { name = "after", metric = "total_events", limitValue = 1, period = "day" }, { base = info.base_url })
      assert.is_nil(acked_quotas[fq.id])
      assert.equal(404, (req("GET", "/quotas/quota_99999", nil, { base = info.base_url })))
      assert.same(fq, select(2, req("GET", "/quotas/" .. fq.id, nil, { base = info.base_url })))
      -- The line written after the torn one was fenced off from it: it survives another restart.
      local_server.stop(info.dir)
      info = local_server.start { dir = dir, empty = true, faults = false }
      assert.same(fq, select(2, req("GET", "/quotas/" .. fq.id, nil, { base = info.base_url })))
    end)
    local_server.stop(info.dir)
    assert(ok, err)
  end)
end)
