-- The client against a real local server over loopback: wire format, results, errors, retries,
-- timeouts, keep-alive and limits.
local limitry = require "limitry"
local support = require "spec.support.server"

local JAN = { start_date = "2024-01-01T00:00:00Z", end_date = "2024-02-01T00:00:00Z" }
local HAS_INTEGERS = math.type ~= nil

local function params(extra)
  local p = { start_date = JAN.start_date, end_date = JAN.end_date }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

describe("limitry client", function()
  local server

  setup(function() server = support.start() end)
  teardown(function() support.stop(server) end)

  -- A client whose requests the server records under a fresh test id (and faults, if given).
  local function client(opts, fault)
    return support.client(server, "t", { backoff = 0.01, max_backoff = 0.05 }, opts, { ["X-Limitry-Fault"] = fault })
  end

  describe("wire request", function()
    it("sends GET /v1/usage with every parameter URL-encoded and no body", function()
      local c, id = client()
      local nasty = "a b&c/d+e=\195\169"
      assert.is_table((c:usage():get_summary(params { customer_id = nasty, event_type = "chat.completion", model = "gpt-4o" })))
      local rec = support.recorded(server, id).requests[1]
      assert.equal("GET", rec.method)
      assert.equal("/v1/usage?startDate=2024-01-01T00%3A00%3A00Z&endDate=2024-02-01T00%3A00%3A00Z"
        .. "&customerId=a%20b%26c%2Fd%2Be%3D%C3%A9&eventType=chat.completion&model=gpt-4o", rec.request_uri)
      assert.equal(nasty, rec.args.customerId)
      assert.equal("Bearer " .. server.api_key, rec.headers.authorization)
      assert.matches("^limitry%-lua/" .. limitry.VERSION:gsub("%.", "%%.") .. " %(", rec.headers["user-agent"])
      assert.equal(0, rec.body_length)
      assert.is_nil(rec.raw_header:lower():find("content%-length"))
      assert.is_nil(rec.raw_header:lower():find("transfer%-encoding"))
    end)

    it("leaves out absent optional parameters", function()
      local c, id = client()
      assert.is_table((c:usage():get_summary(JAN.start_date, JAN.end_date)))
      local uri = support.recorded(server, id).requests[1].request_uri
      assert.equal("/v1/usage?startDate=2024-01-01T00%3A00%3A00Z&endDate=2024-02-01T00%3A00%3A00Z", uri)
    end)

    it("sends groupBy and interval on their paths, in both call forms", function()
      local c, id = client()
      local u = c:usage()
      assert.is_table((u:get_breakdown { group_by = "customer_id", start_date = JAN.start_date, end_date = JAN.end_date }))
      assert.is_table((u:get_breakdown("provider", JAN.start_date, JAN.end_date, { model = "m" })))
      assert.is_table((u:get_timeseries { interval = "week", start_date = JAN.start_date, end_date = JAN.end_date }))
      assert.is_table((u:get_timeseries("hour", JAN.start_date, JAN.end_date, { event_type = "e" })))
      local reqs = support.recorded(server, id).requests
      assert.equal("/v1/usage/breakdown", reqs[1].uri)
      assert.equal("customer_id", reqs[1].args.groupBy)
      assert.equal("provider", reqs[2].args.groupBy)
      assert.equal("m", reqs[2].args.model)
      assert.equal("/v1/usage/timeseries", reqs[3].uri)
      assert.equal("week", reqs[3].args.interval)
      assert.equal("hour", reqs[4].args.interval)
      assert.equal("e", reqs[4].args.eventType)
    end)

    it("sends unix-second dates as UTC ISO 8601", function()
      local c, id = client()
      assert.is_table((c:usage():get_summary(1704067200, 1706745600)))
      local args = support.recorded(server, id).requests[1].args
      assert.equal("2024-01-01T00:00:00Z", args.startDate)
      assert.equal("2024-02-01T00:00:00Z", args.endDate)
    end)

    it("asks for gzip and decodes a gzipped body", function()
      local rows = {}
      for d = 1, 5 do
        rows[d] = string.format('{"timestamp":"2024-01-%02dT00:00:00Z","totalEvents":%d,"totalTokens":1,'
          .. '"totalInputTokens":1,"totalOutputTokens":0,"totalCostCents":0}', d, d)
      end
      local fault = support.json_fault('{"data":[' .. table.concat(rows, ",") .. ']}')
      local c, id = client({}, fault)
      local t = assert(c:usage():get_timeseries("day", JAN.start_date, JAN.end_date))
      assert.equal(5, #t.data)
      assert.equal(5, t.data[5].totalEvents)
      assert.matches("gzip", support.recorded(server, id).requests[1].headers["accept-encoding"])
      -- The server really compresses this answer when asked, so the path above was exercised.
      local status, _, headers = support.http("GET", server.base_url .. "/usage/timeseries", nil,
        { ["X-Limitry-Fault"] = fault, ["Accept-Encoding"] = "gzip" })
      assert.equal(200, status)
      assert.equal("gzip", headers["content-encoding"])
    end)

    it("reads a chunked body", function()
      local c = client({}, "chunked=5")
      local s = assert(c:usage():get_summary(params()))
      assert.equal(0, s.totalEvents)
      -- The server really sends this answer chunked, so the path above was exercised.
      local status, body, headers = support.http("GET", server.base_url .. "/usage?startDate=2024-01-01T00:00:00Z"
        .. "&endDate=2024-02-01T00:00:00Z", nil, { ["X-Limitry-Fault"] = "chunked=5", Authorization = "Bearer " .. server.api_key })
      assert.equal(200, status)
      assert.equal("chunked", headers["transfer-encoding"])
      assert.is_nil(headers["content-length"])
      assert.matches('"totalEvents":0', body)
    end)
  end)

  describe("results", function()
    it("keeps wire names, integers as integers, floats as floats, extra fields", function()
      local body = '{"totalEvents":500,"totalTokens":200000,"totalInputTokens":120000,'
        .. '"totalOutputTokens":80000,"totalCostCents":12.5,"currency":"usd","big":9007199254740993}'
      local c = client({}, support.json_fault(body))
      local s = assert(c:usage():get_summary(params()))
      assert.equal(500, s.totalEvents)
      assert.equal(12.5, s.totalCostCents)
      assert.equal("usd", s.currency)
      if HAS_INTEGERS then
        assert.equal("integer", math.type(s.totalEvents))
        assert.equal("integer", math.type(s.totalTokens))
        assert.equal("float", math.type(s.totalCostCents))
        assert.equal(9007199254740993, s.big)
        assert.equal("500", tostring(s.totalEvents))
      end
    end)

    it("leaves null fields out of breakdown rows", function()
      local body = '{"data":[{"dimension":null,"totalEvents":1,"totalTokens":2,"totalInputTokens":1,'
        .. '"totalOutputTokens":1,"totalCostCents":0},{"totalEvents":3,"totalTokens":2,"totalInputTokens":1,'
        .. '"totalOutputTokens":1,"totalCostCents":0,"dimension":"gpt-4"}]}'
      local c = client({}, support.json_fault(body))
      local b = assert(c:usage():get_breakdown("model", JAN.start_date, JAN.end_date))
      assert.equal(2, #b.data)
      assert.is_nil(b.data[1].dimension)
      assert.equal("gpt-4", b.data[2].dimension)
    end)

    it("returns real aggregates from the server", function()
      local c = client()
      local ingest = '{"events":[{"customerId":"c1","eventType":"chat","model":"m1","inputTokens":10,'
        .. '"outputTokens":5,"costCents":3,"timestamp":"2023-06-10T10:00:00Z"},{"customerId":"c2",'
        .. '"eventType":"chat","model":"m2","inputTokens":1,"outputTokens":1,"costCents":1,'
        .. '"timestamp":"2023-06-11T10:00:00Z"}]}'
      local status = support.http("POST", server.base_url .. "/events/batch", ingest,
        { Authorization = "Bearer " .. server.api_key, ["Content-Type"] = "application/json" })
      assert.equal(201, status)
      local u = c:usage()
      local JUNE = { "2023-06-01T00:00:00Z", "2023-07-01T00:00:00Z" }
      local s = assert(u:get_summary(JUNE[1], JUNE[2], { customer_id = "c1" }))
      assert.same({ totalEvents = 1, totalTokens = 15, totalInputTokens = 10, totalOutputTokens = 5, totalCostCents = 3 }, s)
      local t = assert(u:get_timeseries("day", JUNE[1], JUNE[2]))
      assert.equal(2, #t.data)
      assert.equal("2023-06-10T00:00:00Z", t.data[1].timestamp)
      local b = assert(u:get_breakdown("model", JUNE[1], JUNE[2]))
      assert.equal("m1", b.data[1].dimension)
    end)
  end)

  describe("errors", function()
    local function fails_with(name, fault, opts)
      local c = client(opts or { max_retries = 0 }, fault)
      local res, msg, err = c:usage():get_summary(params())
      assert.is_nil(res)
      assert.is_string(msg)
      assert.is_table(err)
      assert.equal(name, err.name)
      assert.equal(msg, tostring(err))
      assert.is_true(err:is(name))
      assert.is_true(err:is("LimitryError"))
      return err, msg
    end

    it("401 is an AuthenticationError with the server's message and body", function()
      local c = limitry.new { api_key = "lm_wrong_key", base_url = server.base_url }
      local res, msg, err = c:usage():get_summary(params())
      assert.is_nil(res)
      assert.equal("AuthenticationError", err.name)
      assert.is_true(err:is("APIError"))
      assert.is_false(err:is("NetworkError"))
      assert.equal(401, err.status)
      assert.equal("Invalid API key", err.message)
      assert.equal("Invalid API key", err.response.error)
      assert.equal(1, err.attempts)
      assert.equal("AuthenticationError: Invalid API key (HTTP 401, key given to limitry.new)", msg)
    end)

    -- Issue #17, item 12: which key and which URL, without showing the key.
    it("says where the key and base_url came from, never the key itself", function()
      local lua = jit and "luajit" or ("lua" .. _VERSION:sub(5))
      local function run(env, script)
        local p = assert(io.popen(env .. " " .. lua .. " -e '" .. script .. "' 2>&1"))
        local out = p:read("*a")
        p:close()
        return out
      end
      local CALL = [[local c = require("limitry").new(%s)
        local _, msg = c:usage():get_summary("2024-01-01", "2024-02-01") io.write(msg)]]
      local key = "lm_wrong_key_from_the_environment"
      local out = run("LIMITRY_API_KEY=" .. key .. " LIMITRY_BASE_URL=" .. server.base_url, CALL:format("{ max_retries = 0 }"))
      assert.equal("AuthenticationError: Invalid API key (HTTP 401, key from LIMITRY_API_KEY)", out)
      out = run("LIMITRY_API_KEY=" .. key, CALL:format("{ base_url = \"" .. server.base_url .. "\", max_retries = 0 }"))
      assert.equal("AuthenticationError: Invalid API key (HTTP 401, key from LIMITRY_API_KEY)", out)
      local c = limitry.new { api_key = "lm_local_ingest_only_key", base_url = server.base_url }
      local _, msg = c:usage():get_summary(params())
      assert.matches("^AuthenticationError: .* %(HTTP 403, key given to limitry%.new%)$", msg)

      local dead = "http://127.0.0.1:" .. support.closed_port() .. "/v1"
      out = run("LIMITRY_API_KEY=" .. key .. " LIMITRY_BASE_URL=" .. dead, CALL:format("{ max_retries = 0 }"))
      assert.matches("^NetworkError: could not connect: .* %(127%.0%.0%.1:%d+, base_url from LIMITRY_BASE_URL%)$", out)
      assert.is_nil(out:find(key, 1, true))
      out = run("LIMITRY_API_KEY=" .. key .. " LIMITRY_BASE_URL=http://example.invalid/v1",
        CALL:format("{ base_url = \"" .. dead .. "\", max_retries = 1, backoff = 0 }"))
      assert.matches("^NetworkError: could not connect: .* %(127%.0%.0%.1:%d+, 2 attempts, base_url given to limitry%.new%)$", out)
      -- a timeout names it too; async calls alike
      local slow = client({ timeout = 0.2, max_retries = 0 }, "delay=2000")
      _, msg = slow:usage():start_summary(params()):wait()
      assert.matches("^TimeoutError: .*, base_url given to limitry%.new%)$", msg)
      -- a server error is about the server, not about where the client's settings came from
      local _, msg500 = client({ max_retries = 0 }, "status=500"):usage():get_summary(params())
      assert.equal("APIError: injected 500 (HTTP 500)", msg500)
    end)

    -- Issue #17, item 6: a base_url without /v1 gave "APIError: Not found: /usage (HTTP 404)".
    it("hints at base_url on a 404 that a right base_url cannot give", function()
      local HINT = "; check base_url %(" .. server.root:gsub("%p", "%%%0") .. ", given to limitry%.new%): "
        .. "Limitry's API lives under /v1, e%.g%. https://api%.limitry%.com/v1$"
      local c = limitry.new { api_key = server.api_key, base_url = server.root, max_retries = 0 }
      local _, msg, err = c:usage():get_summary(params())
      assert.equal(404, err.status)
      assert.matches("^APIError: Not found: /usage %(HTTP 404%)" .. HINT, msg)
      assert.matches("^check base_url", err.hint)
      assert.equal(msg, tostring(err))
      -- any 404 when base_url lacks /v1: an id route, an async call, a raw request
      _, msg = c:quotas():get("q1")
      assert.matches(HINT, msg)
      _, msg = c:events():start_list():wait()
      assert.matches(HINT, msg)
      _, msg = c:request("GET", "/anything")
      assert.matches(HINT, msg)
      -- with /v1: a 404 on a route Limitry has still hints (a proxy, a wrong prefix before /v1)...
      local v1 = client({ max_retries = 0 }, "status=404")
      _, msg = v1:usage():get_summary(params())
      assert.matches("^APIError: injected 404 %(HTTP 404%); check base_url %(http://127%.0%.0%.1:%d+/v1, given to limitry%.new%)", msg)
      _, msg = v1:request("POST", "/events", { customer_id = "c", event_type = "e" })
      assert.matches("; check base_url", msg)
      -- ...but an unknown id is only that
      local good = limitry.new { api_key = server.api_key, base_url = server.base_url, max_retries = 0 }
      local _, msg2, err2 = good:quotas():get("quota_unknown")
      assert.equal(404, err2.status)
      assert.is_nil(err2.hint)
      assert.is_nil(msg2:find("base_url", 1, true))
      _, msg2 = good:request("GET", "/no-such-route")
      assert.is_nil(msg2:find("base_url", 1, true))
    end)

    it("403 is an AuthenticationError", function()
      local c = limitry.new { api_key = "lm_local_ingest_only_key", base_url = server.base_url }
      local _, _, err = c:usage():get_summary(params())
      assert.equal("AuthenticationError", err.name)
      assert.equal(403, err.status)
    end)

    it("400 is an APIError carrying the server's message", function()
      -- (a range that ends before it starts raises in the client now: spec/arguments_spec.lua)
      local c = client({}, support.json_fault('{"error":"startDate must be before endDate"}', "status=400"))
      local _, msg, err = c:usage():get_summary { start_date = "2024-01-01", end_date = "2024-02-01" }
      assert.equal("APIError", err.name)
      assert.equal(400, err.status)
      assert.equal("startDate must be before endDate", err.message)
      assert.equal(1, err.attempts)
      assert.matches("startDate must be before endDate", msg)
    end)

    it("sends every date form the client accepts, and the local server reads each the same (issue #17)", function()
      local dates = require "limitry.dates"
      local c, id = client()
      local forms = { "2024-01-01", "2024-01-01T00:00Z", "2024-01-01t00:00:00z", "2024-01-01 00:00:00",
        "2024-01-01T01:00:00+01:00", "2023-12-31T19:00:00-0500", "2024-01-01T00:00:00.000000000Z", "2024-01-01T00:00:00,0Z" }
      for _, form in ipairs(forms) do
        assert.equal(1704067200, dates.parse(form), form)
        local s = assert(c:usage():get_summary(form, "2024-02-01T00:00:00Z", { customer_id = "nobody" }))
        assert.equal(0, s.totalEvents)
      end
      local sent = support.recorded(server, id).requests
      assert.equal(#forms, #sent)
      for i, form in ipairs(forms) do assert.equal(form, sent[i].args.startDate) end -- sent unchanged
    end)

    it("429 is a RateLimitError with retry_after and rate-limit headers", function()
      local err = fails_with("RateLimitError", "status=429;retry_after=7")
      assert.equal(429, err.status)
      assert.equal(7, err.retry_after)
      assert.equal(1000, err.rate_limit.limit)
      assert.equal(0, err.rate_limit.remaining)
      assert.is_true(err:is("APIError"))
    end)

    it("500 with an HTML body is an APIError that never reaches the JSON decoder", function()
      local err = fails_with("APIError", "status=502;body=html")
      assert.equal(502, err.status)
      assert.is_nil(err.response)
      assert.matches("non%-JSON error body %(text/html%)", err.message)
    end)

    it("a 2xx that is not JSON is a DecodeError", function()
      local err, msg = fails_with("DecodeError", "body=malformed")
      assert.equal(200, err.status)
      assert.matches("^DecodeError: response is not JSON %(unexpected character at byte %d+%)", msg)
      fails_with("DecodeError", "body=truncated")
      fails_with("DecodeError", "body=empty")
    end)

    it("a 2xx of the wrong shape is a DecodeError, not a half-filled table", function()
      local err = fails_with("DecodeError", "body=wrongshape")
      assert.matches("not a summary", err.message)
      err = fails_with("DecodeError", support.json_fault('{"totalEvents":"5","totalTokens":1,"totalInputTokens":1,"totalOutputTokens":0,"totalCostCents":0}'))
      assert.matches("totalEvents", err.message)
      local c = client({}, support.json_fault('{"data":[{"timestamp":"x"}]}'))
      local _, _, e2 = c:usage():get_timeseries("day", JAN.start_date, JAN.end_date)
      assert.equal("DecodeError", e2.name)
      assert.matches("data%[1%]", e2.message)
    end)

    it("a redirect is not followed", function()
      local c, id = client({ max_retries = 0 }, "redirect=1")
      local _, msg, err = c:usage():get_summary(params())
      assert.equal("APIError", err.name)
      assert.equal(302, err.status)
      assert.matches("redirects are not followed", msg)
      assert.equal(1, support.recorded(server, id).count)
    end)

    it("a connection closed mid-body is a NetworkError", function()
      local err = fails_with("NetworkError", "close=mid")
      assert.is_nil(err.status)
      assert.matches("connection broken", err.message)
    end)

    it("a connection closed before any reply is a NetworkError", function()
      local err = fails_with("NetworkError", "close=before")
      assert.matches("without a response", err.message)
    end)

    it("connection refused is a NetworkError naming the host", function()
      local port = support.closed_port()
      local c = limitry.new { api_key = "lm_unused_key", base_url = "http://127.0.0.1:" .. port .. "/v1", max_retries = 0 }
      local _, msg, err = c:usage():get_summary(params())
      assert.equal("NetworkError", err.name)
      assert.is_false(err:is("TimeoutError"))
      assert.equal(1, err.attempts)
      assert.matches("could not connect", msg)
      assert.matches("127%.0%.0%.1:" .. port, msg)
    end)

    it("a slow server gives a TimeoutError after the timeout, not a hang", function()
      local c = client({ timeout = 0.3, max_retries = 0 }, "delay=3000")
      local t0 = support.now()
      local _, _, err = c:usage():get_summary(params())
      local elapsed = support.now() - t0
      assert.equal("TimeoutError", err.name)
      assert.is_true(err:is("NetworkError"))
      assert.is_true(elapsed < 2, "took " .. elapsed .. " s")
    end)

    it("an oversize body is an error after the cap, not an OOM", function()
      local _, msg = fails_with("DecodeError", "size=3000000", { max_retries = 0, max_response_size = 1024 * 1024 })
      assert.matches("larger than the limit of 1048576 bytes", msg)
      local err = fails_with("DecodeError", "size=" .. (20 * 1024 * 1024))
      assert.matches("16777216", err.message)
    end)

    it("never shows the API key, even when the server echoes it", function()
      local key = server.api_key
      local echo = support.json_fault('{"error":"key ' .. key .. ' is bad","detail":{"k":"' .. key .. '"}}', "status=401")
      local c = client({ max_retries = 0 }, echo)
      local _, msg, err = c:usage():get_summary(params())
      local seen = {}
      local function walk(v, depth)
        if depth > 10 then return end
        if type(v) == "string" then seen[#seen + 1] = v end
        if type(v) == "table" then for k, x in pairs(v) do walk(k, depth + 1) walk(x, depth + 1) end end
      end
      walk(err, 0)
      seen[#seen + 1] = msg
      seen[#seen + 1] = tostring(c)
      for _, s in ipairs(seen) do assert.is_nil(s:find(key, 1, true), "key leaked in: " .. s) end
      assert.matches("%[REDACTED%]", msg)
      -- Nor in anything reachable from the client or an async request (tables, not metatables).
      local req = c:usage():start_summary(params())
      local reachable = {}
      local function collect(v, depth)
        if depth > 12 or reachable[v] then return end
        if type(v) == "string" then reachable[#reachable + 1] = v end
        if type(v) == "table" then
          reachable[v] = true
          for k, x in pairs(v) do collect(k, depth + 1) collect(x, depth + 1) end
        end
      end
      collect(c, 0)
      collect(req, 0)
      req:cancel()
      -- Closed, not left to the collector: on LuaJIT the traces of this walk can keep the client
      -- reachable after the test (no Lua-visible path; -joff or jit.flush() frees it), and its
      -- connection would stay open into the specs that count sockets.
      c:close()
      for _, s in ipairs(reachable) do assert.is_nil(s:find(key, 1, true), "key reachable from the client: " .. s) end
    end)
  end)

  describe("retries", function()
    it("429 with Retry-After: 0, then 200, succeeds after 2 attempts", function()
      local c, id = client({}, "status=429;retry_after=0;times=1")
      local s = assert(c:usage():get_summary(params()))
      assert.equal(0, s.totalEvents)
      assert.equal(2, support.recorded(server, id).count)
    end)

    it("a steady 500 gives max_retries + 1 attempts", function()
      local c, id = client({ max_retries = 3 }, "status=500")
      local _, _, err = c:usage():get_summary(params())
      assert.equal("APIError", err.name)
      assert.equal(500, err.status)
      assert.equal(4, err.attempts)
      assert.equal(4, support.recorded(server, id).count)
    end)

    it("a 400 is tried once", function()
      local c, id = client({ max_retries = 3 }, "status=400")
      local _, _, err = c:usage():get_summary(params())
      assert.equal(1, err.attempts)
      assert.equal(1, support.recorded(server, id).count)
    end)

    it("a timeout is retried", function()
      local c, id = client({ timeout = 0.2, max_retries = 1 }, "delay=1000;times=1")
      local s = assert(c:usage():get_summary(params()))
      assert.is_table(s)
      assert.equal(2, support.recorded(server, id).count)
    end)

    it("a Retry-After past the cap fails at once instead of sleeping", function()
      local c, id = client({ max_retries = 3, max_retry_after = 5 }, "status=429;retry_after=120")
      local t0 = support.now()
      local _, _, err = c:usage():get_summary(params())
      assert.equal("RateLimitError", err.name)
      assert.equal(120, err.retry_after)
      assert.equal(1, err.attempts)
      assert.equal(1, support.recorded(server, id).count)
      assert.is_true(support.now() - t0 < 2)
    end)
  end)

  describe("connections", function()
    it("50 calls share one keep-alive connection", function()
      local c, id = client()
      local u = c:usage()
      for _ = 1, 50 do assert(u:get_summary(params())) end
      local rec = support.recorded(server, id)
      assert.equal(50, rec.count)
      assert.equal(1, rec.connections)
    end)

    it("close() is idempotent and a closed client refuses calls", function()
      local c = client()
      assert(c:usage():get_summary(params()))
      c:close()
      c:close()
      assert.has_error(function() c:usage():get_summary(params()) end, "limitry: this client is closed")
    end)

    it("a client dropped without close() is collected", function()
      -- Nothing (the core, the async machinery, a registry) may keep a dropped client alive.
      local dropped = setmetatable({}, { __mode = "v" })
      for i = 1, 20 do
        local c = client()
        assert(c:usage():get_summary(params()))
        dropped[i] = c
      end
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(dropped), "a dropped client was still reachable after a full collection")
    end)

    it("goes through the proxy option", function()
      local id = support.test_id("proxy")
      local c = limitry.new { api_key = server.api_key, base_url = "http://limitry.invalid/v1", max_retries = 0,
        proxy = server.root, headers = { ["X-Limitry-Test-Id"] = id } }
      assert(c:usage():get_summary(params()))
      local rec = support.recorded(server, id).requests[1]
      assert.equal("limitry.invalid", rec.headers.host)
    end)

    -- os.getenv cannot be set from Lua, so these run a child Lua with http_proxy in its environment.
    local function with_env_proxy(extra_option)
      local lua = jit and "luajit" or ("lua" .. _VERSION:sub(5))
      local script = string.format([[
        local limitry = require "limitry"
        local c = limitry.new { api_key = %q, base_url = "http://limitry.invalid/v1", max_retries = 0 %s }
        local s, msg = c:usage():get_summary("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
        io.write(s and "ok" or msg)]], server.api_key, extra_option)
      local p = io.popen("http_proxy=" .. server.root .. " " .. lua .. " -e '" .. script .. "' 2>&1")
      local out = p:read("*a")
      p:close()
      return out
    end

    it("takes a proxy from http_proxy in the environment", function()
      assert.equal("ok", with_env_proxy(""))
    end)

    it("ignores environment proxies with proxy = \"\"", function()
      assert.matches("^NetworkError: could not resolve the host name", with_env_proxy(', proxy = ""'))
    end)

    if _VERSION == "Lua 5.4" then
      it("closes on leaving a <close> scope", function()
        local chunk = assert(load([[
          local limitry, opts, p = ...
          local kept
          do
            local c <close> = limitry.new(opts)
            assert(c:usage():get_summary(p))
            kept = c
          end
          return kept
        ]]))
        local kept = chunk(limitry, { api_key = server.api_key, base_url = server.base_url }, params())
        assert.is_true(kept.closed)
      end)
    end
  end)
end)
