-- The rest of the API (events, track, quotas, alerts, rate limits, customers, project) against the
-- real local server over loopback: wire requests, result shapes, argument errors, limit decisions,
-- retries with stable idempotency keys, pagination, async twins.
local limitry = require "limitry"
local core = require "limitry.core"
local support = require "spec.support.server"

local HAS_INTEGERS = math.type ~= nil
local WIDE = { "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z" }

-- Unix seconds of the next UTC midnight after t.
local function next_midnight(t) return (math.floor(t / 86400) + 1) * 86400 end

describe("the rest of the API", function()
  local server

  setup(function() server = support.start() end)
  teardown(function() support.stop(server) end)

  -- A client whose requests the server records under a fresh test id. extra_headers: more
  -- request headers (X-Limitry-Fault, X-Limitry-Now).
  local function client(opts, extra_headers)
    return support.client(server, "api", { backoff = 0.01, max_backoff = 0.05, timeout = 5 }, opts, extra_headers)
  end

  local function recorded(id) return support.recorded(server, id).requests end
  local function body_of(rec) return assert(core.decode(assert(rec.body, "the server recorded no body"))) end

  local function unique(tag) return support.test_id(tag) end

  describe("events", function()
    it("records one event: POST /v1/events with a camelCase JSON body and a generated idempotency key", function()
      local c, id = client()
      local customer = unique("rec")
      local res, msg = c:events():record { customer_id = customer, event_type = "model_call", model = "gpt-4o",
        provider = "openai", input_tokens = 120, output_tokens = 80, latency_ms = 350, cost_cents = 0.42,
        properties = { region = "eu", customer_id = "kept as is", n = 3, beta = true }, timestamp = 1700000000 }
      assert.is_nil(msg)
      assert.is_string(res.id)
      local rec = recorded(id)[1]
      assert.equal("POST", rec.method)
      assert.equal("/v1/events", rec.uri)
      assert.equal("application/json", rec.headers["content-type"])
      local body = body_of(rec)
      assert.equal(customer, body.customerId)
      assert.equal("model_call", body.eventType)
      assert.equal(120, body.inputTokens)
      assert.equal(80, body.outputTokens)
      assert.is_nil(body.totalTokens) -- the server computes it
      assert.equal(350, body.latencyMs)
      assert.equal(0.42, body.costCents)
      assert.equal("2023-11-14T22:13:20Z", body.timestamp)
      assert.same({ region = "eu", customer_id = "kept as is", n = 3, beta = true }, body.properties)
      assert.matches("^%x+$", body.idempotencyKey)
      assert.equal(32, #body.idempotencyKey)
      if HAS_INTEGERS then assert.equal("integer", math.type(body.inputTokens)) end
    end)

    it("retries a failed record with the same idempotency key, and the server counts it once", function()
      local customer = unique("retry")
      local c, id = client(nil, { ["X-Limitry-Fault"] = "status=503;times=1" })
      assert.is_string(assert(c:events():record { customer_id = customer, event_type = "e", input_tokens = 1 }).id)
      local reqs = recorded(id)
      assert.equal(2, #reqs)
      assert.equal(body_of(reqs[1]).idempotencyKey, body_of(reqs[2]).idempotencyKey)
      local page = assert(client():events():list { customer_id = customer })
      assert.equal(1, #page.data)
    end)

    it("keeps a caller's idempotency key, and never retries a record sent without one", function()
      local c, id = client({ max_retries = 2 }, { ["X-Limitry-Fault"] = "status=503" })
      local res, _, err = c:events():record { customer_id = "x", event_type = "e", idempotency_key = false }
      assert.is_nil(res)
      assert.equal("APIError", err.name)
      assert.equal(1, err.attempts)
      assert.is_nil(body_of(recorded(id)[1]).idempotencyKey)
      local c2, id2 = client()
      assert(c2:events():record { customer_id = "x", event_type = "e", idempotency_key = "mine-1" })
      assert.equal("mine-1", body_of(recorded(id2)[1]).idempotencyKey)
    end)

    it("cuts a timestamp's fraction to the millisecond, never into the next second (issue #21, item 7)", function()
      local c, id = client()
      local customer = unique("ts")
      for _, at in ipairs { 1704067199.9996, 1704067199.99999, 1704067200.001 } do
        assert(c:events():record { customer_id = customer, event_type = "e", timestamp = at })
      end
      local sent = {}
      for i, rec in ipairs(recorded(id)) do sent[i] = body_of(rec).timestamp end
      assert.same({ "2023-12-31T23:59:59.999Z", "2023-12-31T23:59:59.999Z", "2024-01-01T00:00:00.001Z" }, sent)
      local stored = {}
      for ev in c:events():each { customer_id = customer } do stored[#stored + 1] = ev.timestamp end
      table.sort(stored)
      assert.same({ "2023-12-31T23:59:59.999Z", "2023-12-31T23:59:59.999Z", "2024-01-01T00:00:00.001Z" }, stored)
    end)

    -- Issue #21, item 9: every rule of the local server (store.lua's normalize, admin.lua) holds in
    -- the client too: the largest value it takes is taken by the server, the next one raises here.
    it("agrees with the server's limits: the last value allowed is stored, the next raises naming it", function()
      local c, id = client()
      local ev = c:events()
      local function props(n, key_len, value)
        local t = {}
        for i = 1, n do t[(("k%03d"):format(i) .. string.rep("p", key_len)):sub(1, math.max(4, key_len))] = value end
        return t
      end
      local customer = unique("limits")
      local function event(extra)
        local e = { customer_id = customer, event_type = "e" }
        for k, v in pairs(extra) do e[k] = v end
        return e
      end
      local taken = {
        event { model = string.rep("m", 256), provider = string.rep("p", 256), event_type = string.rep("e", 256),
          idempotency_key = string.rep("i", 256) },
        event { latency_ms = 2 ^ 53 - 1, cost_cents = 1e12 },
        event { properties = props(64, 4, string.rep("v", 1024)) },
        event { properties = { [string.rep("k", 128)] = 1e300, neg = -1e300 } },
        event { timestamp = "2024-01-01T00:00:00.123456789+23:59" },
      }
      for i, e in ipairs(taken) do
        local res, msg = ev:record(e)
        assert.is_nil(msg, "event " .. i)
        assert.is_string(res.id)
      end
      local q = assert(c:quotas():create { name = string.rep("n", 256), metric = "total_events", limit_value = 2 ^ 53 - 1,
        period = "day", dimension_filters = (function()
          local f = { customer_id = unique("limits-q") }
          for i = 2, 32 do f["f" .. i .. string.rep("x", 120)] = string.rep("v", 1024) end
          return f
        end)() })
      assert.is_true(assert(c:quotas():delete(q.id)).success)
      local r = assert(c:rate_limits():create { name = "r", limit_value = 2 ^ 53 - 1, window = "hour",
        dimension_filters = { customer_id = unique("limits-r") } })
      assert.is_true(assert(c:rate_limits():delete(r.id)).success)
      local sent = #recorded(id)

      local refused = {
        { event { customer_id = string.rep("c", 257) }, "customer_id must be a non%-empty string of at most 256 bytes %(got 257 bytes%)" },
        { event { model = string.rep("m", 257) }, "model must be a non%-empty string of at most 256 bytes" },
        { event { idempotency_key = string.rep("i", 257) }, "idempotency_key must be a non%-empty string of at most 256 bytes" },
        { event { latency_ms = 0.5 }, "latency_ms must be a whole number from 0 to 2%^53 %- 1 %(got 0%.5%)" },
        { event { latency_ms = 2 ^ 53 }, "latency_ms must be a whole number from 0 to 2%^53 %- 1" },
        { event { latency_ms = 1e300 }, "latency_ms must be a whole number from 0 to 2%^53 %- 1 %(got 1e%+300%)" },
        { event { cost_cents = 1.000001e12 }, "cost_cents must be a finite number from 0 to 1e12" },
        { event { properties = props(65, 4, "v") }, "properties may hold at most 64 entries" },
        { event { properties = { [string.rep("k", 129)] = 1 } }, "properties keys must be at most 128 bytes %(got 129 bytes%)" },
        { event { properties = { k = string.rep("v", 1025) } }, "properties%.k must be a string of at most 1024 bytes %(got 1025 bytes%)" },
        { event { properties = { k = 1e301 } }, "properties%.k must be a number of magnitude at most 1e300" },
        { event { properties = { k = -1e301 } }, "properties%.k must be a number of magnitude at most 1e300" },
        { event { timestamp = "2024-01-01T00:00:00" .. string.rep("0", 60) .. "Z" }, "timestamp must be at most 64 bytes" },
        { event { customer_id = "a\255b" }, "^events:record: customer_id is not valid UTF%-8 %(byte 2%)$" },
        { event { properties = { ["k\237\160\128"] = 1 } }, "^events:record: properties key is not valid UTF%-8 %(byte 2%)$" },
        { event { properties = { k = "\244\144\128\128" } }, "^events:record: properties%.k is not valid UTF%-8 %(byte 1%)$" },
      }
      for i, case in ipairs(refused) do
        local ok, msg = pcall(ev.record, ev, case[1])
        assert.is_false(ok, "case " .. i .. " did not raise")
        assert.matches(case[2], msg, nil, false)
        assert.is_nil(msg:find("%.lua:%d+:"), msg)
      end
      local admin = {
        { function() c:quotas():create { name = string.rep("n", 257), metric = "total_events", limit_value = 1, period = "day" } end,
          "quotas:create: name must be a non%-empty string of at most 256 bytes" },
        { function() c:quotas():create { name = "q", metric = "total_events", limit_value = 2 ^ 53, period = "day" } end,
          "limit_value must be a number > 0 and at most 2%^53 %- 1" },
        { function() c:rate_limits():create { name = "r", limit_value = 2.5, window = "hour" } end,
          "rate_limits:create: limit_value must be a whole number from 1 to 2%^53 %- 1 %(got 2%.5%)" },
        { function() c:quotas():create { name = "q", metric = "total_events", limit_value = 1, period = "day",
          dimension_filters = { customer_id = "" } } end, "dimension_filters%.customer_id must be a non%-empty string of at most 1024 bytes %(got an empty string%)" },
        { function()
          local f = {}
          for i = 1, 33 do f["f" .. i] = "v" end
          c:rate_limits():create { name = "r", limit_value = 1, window = "hour", dimension_filters = f }
        end, "dimension_filters may hold at most 32 entries" },
        { function() c:quotas():check { customer_id = "\255" } end, "quotas:check: dimensions%.customer_id is not valid UTF%-8" },
        { function() c:track { customer_id = "c", event_type = "e\192" } end, "^client:track: event_type is not valid UTF%-8 %(byte 2%)$" },
      }
      for i, case in ipairs(admin) do
        local ok, msg = pcall(case[1])
        assert.is_false(ok, "admin case " .. i .. " did not raise")
        assert.matches(case[2], msg, nil, false)
      end
      assert.equal(sent, #recorded(id)) -- nothing more was sent
    end)

    it("refuses ids '.' and '..', which a URL path resolves to another resource (issue #21, item 5)", function()
      local c, id = client()
      local calls = {
        function() return c:quotas():get("..") end,
        function() return c:quotas():delete("..") end,
        function() return c:quotas():update(".", { limit_value = 2 }) end,
        function() return c:rate_limits():get(".") end,
        function() return c:quota_alerts():history(".") end,
        function() return c:quota_alerts():list("..") end,
        function() return c:customers():get_usage("..", WIDE[1], WIDE[2]) end,
        function() return c:customers():start_usage { customer_id = ".", start_date = WIDE[1], end_date = WIDE[2] } end,
      }
      for i, call in ipairs(calls) do
        local ok, msg = pcall(call)
        assert.is_false(ok, "call " .. i .. " did not raise")
        assert.matches("^[%a_]+:[%a_]+: [%a_]+ must not be '%.' or '%.%.' %(a URL would resolve it to another resource%)$", msg)
      end
      assert.equal(0, #recorded(id))
      -- ids with dots that are no path segment of their own are ids like any other
      local _, _, err = c:quotas():get("...")
      assert.equal(404, err.status)
      local _, _, err2 = c:quotas():get("a/../b")
      assert.equal(404, err2.status)
      local reqs = recorded(id)
      assert.equal("/v1/quotas/...", reqs[1].request_uri)
      assert.equal("/v1/quotas/a%2F..%2Fb", reqs[2].request_uri)
    end)

    it("records a batch: POST /v1/events/batch, every event keyed, { count = N }", function()
      local c, id = client()
      local customer = unique("batch")
      local res = assert(c:events():batch { { customer_id = customer, event_type = "e", input_tokens = 5 },
        { customer_id = customer, event_type = "e", output_tokens = 7, idempotency_key = "k-" .. customer } })
      assert.equal(2, res.count)
      if HAS_INTEGERS then assert.equal("integer", math.type(res.count)) end
      local body = body_of(recorded(id)[1])
      assert.equal(2, #body.events)
      assert.equal(32, #body.events[1].idempotencyKey)
      assert.equal("k-" .. customer, body.events[2].idempotencyKey)
    end)

    it("pages through 1,000 events with each, fetching as the loop goes", function()
      local customer = unique("page")
      local batch = {}
      for i = 1, 1000 do batch[i] = { customer_id = customer, event_type = "e", input_tokens = i } end
      assert.equal(1000, assert(client():events():batch(batch)).count)
      local c, id = client()
      local seen, sum = {}, 0
      for ev in c:events():each { customer_id = customer, limit = 100 } do
        assert.is_nil(seen[ev.id], "event " .. tostring(ev.id) .. " seen twice")
        seen[ev.id] = true
        sum = sum + ev.inputTokens
      end
      assert.equal(500500, sum)
      local pages = recorded(id)
      assert.is_true(#pages >= 10, #pages .. " pages")
      assert.equal("100", pages[1].args.limit)
      assert.is_nil(pages[1].args.cursor)
      assert.is_string(pages[2].args.cursor)
      local last = assert(c:events():list { customer_id = customer, limit = 100, cursor = pages[#pages].args.cursor })
      assert.is_false(last.hasMore)
      assert.is_nil(last.nextCursor) -- a JSON null member is left out
    end)

    it("raises the error value when a page fails mid-loop", function()
      local customer = unique("midloop")
      local batch = {}
      for i = 1, 30 do batch[i] = { customer_id = customer, event_type = "e" } end
      assert(client():events():batch(batch))
      local c = client({ max_retries = 0 }, { ["X-Limitry-Fault"] = "status=500;from=2" })
      local n = 0
      local ok, err = pcall(function()
        for _ in c:events():each { customer_id = customer, limit = 10 } do n = n + 1 end
      end)
      assert.is_false(ok)
      assert.is_true(limitry.is_error(err))
      assert.equal("APIError", err.name)
      assert.equal(10, n)
    end)

    it("raises on wrong arguments, naming them, before anything is sent", function()
      local c, id = client()
      local ev = c:events()
      local cases = {
        { function() ev:record { event_type = "e" } end, "events:record: customer_id is required" },
        { function() ev:record { customer_id = "c", event_type = "e", input_tokens = -1 } end, "input_tokens must be a whole number" },
        { function() ev:record { customer_id = "c", event_type = "e", input_tokens = 1.5 } end, "input_tokens must be a whole number" },
        { function() ev:record { customer_id = "c", event_type = "e", cost_cents = 0 / 0 } end, "cost_cents must be a finite number" },
        { function() ev:record { customer_id = "c", event_type = "e", customerId = "x" } end, "unknown field 'customerId'" },
        { function() ev:record { customer_id = "c", event_type = "e", properties = { a = {} } } end, "properties.a must be a string, finite number or boolean" },
        { function() ev:record { customer_id = "c", event_type = "e", timestamp = "yesterday" } end, "timestamp must be an ISO 8601" },
        { function() ev:batch {} end, "events:batch: a batch holds 1 to 1000 events %(got 0%)" },
        { function() ev:list { limit = 0 } end, "limit must be a whole number from 1 to 100" },
        { function() ev:list { limit = 101 } end, "limit must be a whole number from 1 to 100" },
        { function() ev.record { customer_id = "c", event_type = "e" } end, "call it as events:record%(...%) with a colon" },
        { function() c:quotas():create { name = "q", metric = "tokens", limit_value = 1, period = "day" } end,
          "metric must be one of 'total_tokens', 'total_events', 'total_cost_cents' %(got 'tokens'%)" },
        { function() c:quotas():create { name = "q", metric = "total_tokens", limit_value = 0, period = "day" } end, "limit_value must be a number > 0" },
        { function() c:rate_limits():create { name = "r", limit_value = 5, window = "day" } end, "window must be one of 'second', 'minute', 'hour'" },
        { function() c:quota_alerts():create("q1", { threshold = 0 }) end, "threshold must be a whole number from 1 to 100" },
        { function() c:quota_alerts():create("q1", { threshold = 101 }) end, "threshold must be a whole number from 1 to 100" },
        { function() c:quotas():update("q1", {}) end, "quotas:update: nothing to update" },
        { function() c:customers():get_usage("c1", WIDE[1]) end, "customers:get_usage: end_date is required" },
        { function() c:track { customer_id = "c" } end, "client:track: event_type is required" },
        { function() c:track {} end, "client:track: customer_id is required" }, -- the first in name order, on every Lua
        { function() ev:record { customer_id = "c", event_type = "e", input_tokens = 2 ^ 53 } end,
          "input_tokens must be a whole number from 0 to 2%^53 %- 1 %(got 9%.007" },
        { function() ev:record { customer_id = "c", event_type = "e", latency_ms = -5 } end, "latency_ms must be a whole number from 0 to 2%^53 %- 1 %(got %-5%)" },
        { function() c:quotas():check { customer_id = 7 } end, "quotas:check: dimensions.customer_id must be a string %(got 7%)" },
        { function() c.events() end, "call it as client:events%(...%) with a colon" },
        { function() c.usage() end, "call it as client:usage%(...%) with a colon" },
        { function() c.poll() end, "call it as client:poll%(...%) with a colon" },
        { function() c:start_track {} end, "^client:start_track: customer_id is required" },
        { function() ev:start_record { customer_id = "c" } end, "^events:start_record: event_type is required" },
        { function() c:usage():start_summary("yesterday", "2024-01-01") end, "^usage:start_summary: start_date must be an ISO 8601" },
        -- Issue #17, item 5: dates are read as the server reads them, by the Lua name, with the reason.
        { function() c:customers():get_usage("c1", "2024-02-30", "2024-03-01") end,
          "^customers:get_usage: start_date '2024%-02%-30' has day 30 %(February 2024 has days 01 to 29%)$" },
        { function() c:customers():get_usage { customer_id = "c1", start_date = "2024-01-01", end_date = "2024-13-01" } end,
          "^customers:get_usage: end_date '2024%-13%-01' has month 13 %(months run 01 to 12%)$" },
        { function() c:customers():start_usage("c1", "2024-03-01", "2024-02-01") end,
          "^customers:start_usage: end_date must be after start_date" },
        { function() ev:record { customer_id = "c", event_type = "e", timestamp = "2024-01-01T25:00:00Z" } end,
          "^events:record: timestamp '2024%-01%-01T25:00:00Z' has hour 25 %(hours run 00 to 23%)$" },
        { function() c:track { customer_id = "c", event_type = "e", timestamp = "2024-01-01T00:00:00+24:00" } end,
          "^client:track: timestamp '2024%-01%-01T00:00:00%+24:00' has time zone %+24:00" },
        { function() ev:batch { { customer_id = "c", event_type = "e" }, { customer_id = "c", event_type = "e", timestamp = "2023-02-29" } } end,
          "^events:batch: events%[2%]: timestamp '2023%-02%-29' has day 29 %(February 2023 has days 01 to 28%)$" },
        { function() require("limitry").encode_event { customer_id = "c", event_type = "e", timestamp = "2024-06-31" } end,
          "^limitry%.encode_event: timestamp '2024%-06%-31' has day 31 %(June 2024 has days 01 to 30%)$" },
      }
      local big = {}
      for i = 1, 1001 do big[i] = { customer_id = "c", event_type = "e" } end
      cases[#cases + 1] = { function() ev:batch(big) end, "a batch holds 1 to 1000 events %(got 1001%)" }
      for i, case in ipairs(cases) do
        local ok, msg = pcall(case[1])
        assert.is_false(ok, "case " .. i .. " did not raise")
        assert.matches(case[2], tostring(msg), nil, false)
      end
      assert.equal(0, #recorded(id))
      c:close()
      local ok, msg = pcall(c.poll, c, 0)
      assert.is_false(ok)
      assert.matches("limitry: this client is closed", msg, 1, true)
    end)
  end)

  describe("track, quotas and rate limits", function()
    it("allows 10 tracked calls of 100 tokens under a 1,000-token daily quota and refuses the 11th", function()
      local customer = unique("quota")
      -- Noon UTC on a fixed day, through the server's test clock.
      local now = 1767268800 -- 2026-01-01T12:00:00Z
      local admin = client(nil, { ["X-Limitry-Now"] = tostring(now) })
      local quota = assert(admin:quotas():create { name = "daily tokens", metric = "total_tokens", limit_value = 1000,
        period = "day", dimension_filters = { customer_id = customer } })
      assert.is_string(quota.id)
      local c, id = client(nil, { ["X-Limitry-Now"] = tostring(now) })
      for i = 1, 10 do
        local d, msg = c:track { customer_id = customer, event_type = "model_call", input_tokens = 60, output_tokens = 40 }
        assert.is_nil(msg)
        assert.is_true(d.allowed, "call " .. i)
        assert.is_string(d.id)
        assert.is_table(d.quotas)
      end
      local d, msg = c:track { customer_id = customer, event_type = "model_call", input_tokens = 60, output_tokens = 40 }
      assert.is_nil(msg)
      assert.is_false(d.allowed)
      assert.is_string(d.error)
      assert.is_number(d.retry_after)
      assert.is_true(math.abs(d.retry_after - (next_midnight(now) - now)) <= 1, "retry_after " .. d.retry_after)
      assert.equal(11, #recorded(id)) -- a "no" is never retried
      local check = assert(admin:quotas():check { customer_id = customer })
      assert.is_false(check.allowed)
      assert.equal(1000, check.quotas[1].used)
      local usage = assert(client():customers():get_usage(customer, WIDE[1], WIDE[2]))
      assert.equal(10, usage.totalEvents)
      assert.equal(customer, usage.customerId)
    end)

    it("refuses the 6th call in a second under 5 per second, and allows again in the next second", function()
      local customer = unique("rate")
      local t = 1767268800
      assert(client():rate_limits():create { name = "5/s", limit_value = 5, window = "second",
        dimension_filters = { customer_id = customer } })
      local c = client(nil, { ["X-Limitry-Now"] = tostring(t) .. ".2" })
      for i = 1, 5 do assert.is_true(assert(c:track { customer_id = customer, event_type = "e" }).allowed, "call " .. i) end
      local d = assert(c:track { customer_id = customer, event_type = "e" })
      assert.is_false(d.allowed)
      assert.is_true(d.retry_after >= 0 and d.retry_after <= 1, "retry_after " .. tostring(d.retry_after))
      assert.is_false(assert(c:rate_limits():check { customer_id = customer }).allowed)
      local later = client(nil, { ["X-Limitry-Now"] = tostring(t + 1) .. ".1" })
      assert.is_true(assert(later:track { customer_id = customer, event_type = "e" }).allowed)
    end)

    it("keeps Limitry's own 429 an error (retried), apart from a limit decision", function()
      local c, id = client(nil, { ["X-Limitry-Fault"] = "status=429;retry_after=0;times=1" })
      local d = assert(c:track { customer_id = unique("own429"), event_type = "e" })
      assert.is_true(d.allowed)
      assert.equal(2, #recorded(id))
      local c2 = client({ max_retries = 0 }, { ["X-Limitry-Fault"] = "status=429;retry_after=0" })
      local res, _, err = c2:track { customer_id = "x", event_type = "e" }
      assert.is_nil(res)
      assert.equal("RateLimitError", err.name)
    end)

    it("creates, lists, gets, updates and deletes quotas, with percent-encoded ids", function()
      local c, id = client()
      local q = assert(c:quotas():create { name = "monthly cost", metric = "total_cost_cents", limit_value = 500,
        period = "month", dimension_filters = { customer_id = unique("crud") } })
      assert.equal("monthly cost", q.name)
      local listed = assert(c:quotas():list())
      local found = false
      for _, x in ipairs(listed.data) do found = found or x.id == q.id end
      assert.is_true(found)
      assert.equal(q.id, assert(c:quotas():get(q.id)).id)
      assert.equal(900, assert(c:quotas():update(q.id, { limit_value = 900 })).limitValue)
      assert.is_true(assert(c:quotas():delete(q.id)).success)
      local res, _, err = c:quotas():get(q.id)
      assert.is_nil(res)
      assert.equal(404, err.status)
      local _, _, err2 = c:quotas():get("a/b c?")
      assert.equal(404, err2.status)
      local reqs = recorded(id)
      assert.equal("/v1/quotas/a%2Fb%20c%3F", reqs[#reqs].request_uri)
      assert.equal("PUT", reqs[4].method)
      assert.equal("DELETE", reqs[5].method)
    end)

    it("retries create only when nothing was sent", function()
      local c, id = client({ max_retries = 2 }, { ["X-Limitry-Fault"] = "status=503" })
      local _, _, err = c:quotas():create { name = "q", metric = "total_events", limit_value = 1, period = "hour" }
      assert.equal(1, err.attempts)
      assert.equal(1, #recorded(id))
      local dead = limitry.new { api_key = "k", base_url = "http://127.0.0.1:" .. support.closed_port() .. "/v1",
        backoff = 0.01, max_retries = 2 }
      local _, _, err2 = dead:quotas():create { name = "q", metric = "total_events", limit_value = 1, period = "hour" }
      assert.equal("NetworkError", err2.name)
      assert.equal(3, err2.attempts)
    end)

    it("manages rate limits and quota alerts", function()
      local c = client()
      local r = assert(c:rate_limits():create { name = "burst", limit_value = 100, window = "minute", enabled = false,
        dimension_filters = { customer_id = unique("burst") } })
      assert.is_false(r.enabled)
      assert.is_true(assert(c:rate_limits():update(r.id, { enabled = true })).enabled)
      assert.equal(r.id, assert(c:rate_limits():get(r.id)).id)
      assert.is_table(assert(c:rate_limits():list()).data)
      assert.is_true(assert(c:rate_limits():delete(r.id)).success)
      -- Every quota and rate limit here is filtered to its own customer, so none limits another test.
      local q = assert(c:quotas():create { name = "q", metric = "total_events", limit_value = 10, period = "day",
        dimension_filters = { customer_id = unique("alerts") } })
      local a = assert(c:quota_alerts():create(q.id, { threshold = 80 }))
      assert.equal(80, a.threshold)
      assert.equal(a.id, assert(c:quota_alerts():list(q.id)).data[1].id)
      assert.equal(90, assert(c:quota_alerts():update(a.id, { threshold = 90 })).threshold)
      assert.equal(a.id, assert(c:quota_alerts():get(a.id)).id)
      assert.is_table(assert(c:quota_alerts():history(a.id)).data)
      assert.is_true(assert(c:quota_alerts():delete(a.id)).success)
    end)

    it("reads customer usage (both forms) and the project", function()
      local customer = unique("cust")
      assert(client():events():record { customer_id = customer, event_type = "e", input_tokens = 3, output_tokens = 4 })
      local c = client()
      local u = assert(c:customers():get_usage { customer_id = customer, start_date = WIDE[1], end_date = WIDE[2] })
      assert.equal(7, u.totalTokens)
      if HAS_INTEGERS then assert.equal("integer", math.type(u.totalTokens)) end
      local p = assert(c:project():get())
      assert.is_string(p.id)
      assert.is_string(p.name)
      assert.equal(c:project(), c:project())
    end)

    it("lets the ingest-only key record and track but not administer", function()
      local c = client { api_key = "lm_local_ingest_only_key" }
      assert(c:events():record { customer_id = unique("ingest"), event_type = "e" })
      assert.is_true(assert(c:track { customer_id = unique("ingest"), event_type = "e" }).allowed)
      local res, _, err = c:quotas():list()
      assert.is_nil(res)
      assert.equal("AuthenticationError", err.name)
      assert.equal(403, err.status)
    end)
  end)

  describe("async twins", function()
    it("start_record, start_track, start_check and start_usage run together and call back", function()
      local c = client()
      local customer = unique("async")
      local called
      local reqs = {
        c:events():start_record { customer_id = customer, event_type = "e", input_tokens = 2 },
        c:start_track({ customer_id = customer, event_type = "e" }, function(res) called = res and res.allowed end),
        c:quotas():start_check { customer_id = customer },
        c:customers():start_usage(customer, WIDE[1], WIDE[2]),
        c:project():start_get(),
      }
      for i, r in ipairs(reqs) do
        local res, msg = r:wait()
        assert.is_nil(msg, "request " .. i)
        assert.is_table(res)
      end
      assert.is_true(called)
      assert.is_true(reqs[3]:result().allowed)
    end)
  end)
end)
