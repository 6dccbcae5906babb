-- limitry.gateway in real nginx (Debian's nginx and lua-nginx-module), in front of a model API
-- stand-in (examples/openresty/fake_model_api.lua), against the local server as Limitry: usage read from
-- every answer shape, decisions from cached limits with local accounting, refusals, stale and
-- skipped decisions during an outage, metrics, a worker killed with events queued, a missing key,
-- a key that cannot read the rules, and the load scenario of issue #16 (shortened).
local limitry = require "limitry"
local core = require "limitry.core"
local support = require "spec.support.server"
local gateway_nginx = require "spec.support.gateway_nginx"
local scenario = require "spec.support.gateway_scenario"
local socket = require "socket"

local WIDE = { "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z" }

-- One HTTP/1.1 request on its own connection; the answer { status, headers, body } (body de-chunked).
local function request(port, method, path, headers, body)
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(20)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: gateway", "Connection: close" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  local raw = c:receive("*a")
  c:close()
  local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
  local answer = { status = tonumber(head:match("^HTTP/1%.%d (%d+)")), headers = {}, body = rest }
  for k, v in head:gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do answer.headers[k:lower()] = v end
  if answer.headers["transfer-encoding"] == "chunked" then
    local out, i = {}, 1
    while true do
      local size_hex, after = rest:match("^(%x+)\r\n()", i)
      local size = tonumber(size_hex or "", 16)
      if not size or size == 0 then break end
      out[#out + 1] = rest:sub(after, after + size - 1)
      i = after + size + 2
    end
    answer.body = table.concat(out)
  end
  return answer
end

local CHAT = "/v1/chat/completions"
local function chat_body(stream, with_usage)
  return '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]' .. (stream and ',"stream":true' or "")
    .. (with_usage and ',"stream_options":{"include_usage":true}' or "") .. "}"
end

local eventually = require("spec.support.gateway").eventually

describe("limitry.gateway in nginx", function()
  local lim, admin, g

  setup(function()
    lim = scenario.start_limitry { latency = 0, api_limit = 100000 }
    admin = limitry.new { api_key = lim.api_key, base_url = lim.base_url }
    g = gateway_nginx.start { dir = support.tmpdir("gw-spec"), workers = 2, ignore_client_abort = false,
      config = { client = { api_key = lim.api_key, base_url = lim.base_url }, refresh_after = 0.3, ttl = 1,
        stale_ttl = 2, rules_interval = 0.5, flush_interval = 0.1, cold_timeout = 0.5 } }
  end)
  teardown(function()
    gateway_nginx.stop(g)
    support.stop(lim)
  end)

  -- Returns once the gateway has read the rules twice since the call: the second read started
  -- after the first ended, so it sees a limit created before this call.
  local function wait_rules()
    local function reads() return scenario.metrics(g.port)['limitry_calls_total{call="rate_limits_list"}'] or 0 end
    local start = reads()
    assert.truthy(eventually(10, function() return reads() >= start + 2 end), "the rules were not read again")
  end

  local function events_of(customer)
    local list = {}
    for e in admin:events():each { customer_id = customer } do list[#list + 1] = e end
    return list
  end

  -- The events of customer once there are n of them.
  local function wait_events(customer, n)
    local list = eventually(10, function()
      local l = events_of(customer)
      return #l >= n and l or nil
    end)
    assert(list, "Limitry did not get " .. n .. " events of " .. customer)
    return list
  end

  describe("usage from the answers", function()
    local SHAPES = {
      { "OpenAI chat, JSON", CHAT, chat_body(false), "gpt-4o", "openai", false },
      { "OpenAI chat, SSE with include_usage", CHAT, chat_body(true, true), "gpt-4o", "openai", true },
      { "OpenAI chat, SSE without it (the gateway adds it)", CHAT, chat_body(true, false), "gpt-4o", "openai", true },
      { "OpenAI Responses, JSON", "/v1/responses", '{"model":"gpt-4o","input":"hi"}', "gpt-4o", "openai", false },
      { "OpenAI Responses, SSE", "/v1/responses", '{"model":"gpt-4o","input":"hi","stream":true}', "gpt-4o", "openai", true },
      { "Anthropic Messages, JSON", "/v1/messages", '{"model":"claude-3-5-sonnet","max_tokens":9}', "claude-3-5-sonnet", "anthropic", false },
      { "Anthropic Messages, SSE", "/v1/messages", '{"model":"claude-3-5-sonnet","max_tokens":9,"stream":true}',
        "claude-3-5-sonnet", "anthropic", true },
    }
    for _, shape in ipairs(SHAPES) do
      it("records " .. shape[1] .. " with its 30 + 20 tokens, model and provider", function()
        local customer = support.test_id("shape")
        local a = request(g.port, "POST", shape[2], { ["X-Customer-Id"] = customer }, shape[3])
        assert.equal(200, a.status, a.body)
        local ev = wait_events(customer, 1)[1]
        assert.equal(30, ev.inputTokens)
        assert.equal(20, ev.outputTokens)
        assert.equal(shape[4], ev.model)
        assert.equal(shape[5], ev.provider)
        assert.equal("model_call", ev.eventType)
        assert.is_number(ev.latencyMs)
        if shape[6] then assert.same({ stream = "true" }, ev.properties) else assert.is_nil(ev.properties) end
      end)
    end

    it("records an answer cut mid-stream with the tokens counted so far, marked incomplete", function()
      local customer = support.test_id("cut")
      request(g.port, "POST", "/v1/messages", { ["X-Customer-Id"] = customer, ["X-Upstream-Cut"] = "1" },
        '{"model":"claude-3-5-sonnet","stream":true}')
      local ev = wait_events(customer, 1)[1]
      assert.equal(30, ev.inputTokens) -- message_start came, message_delta did not
      assert.same({ stream = "true", incomplete = "true" }, ev.properties)
    end)

    it("records what a client that hung up mid-stream had been sent, marked incomplete", function()
      local customer = support.test_id("hangup")
      local c = assert(socket.connect("127.0.0.1", g.port))
      local body = '{"model":"claude-3-5-sonnet","stream":true}'
      c:send("POST /v1/messages HTTP/1.1\r\nHost: g\r\nX-Customer-Id: " .. customer .. "\r\nX-Upstream-Pace: 100\r\n"
        .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
      c:settimeout(5)
      local seen = ""
      repeat
        local part, _, partial = c:receive(64)
        seen = seen .. (part or partial or "")
      until seen:find("content_block_delta", 1, true) or not part
      c:close()
      local ev = wait_events(customer, 1)[1]
      assert.equal(30, ev.inputTokens)
      assert.equal("true", ev.properties.incomplete)
    end)

    it("does not record a call the upstream failed", function()
      local customer = support.test_id("failed")
      local a = request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer, ["X-Upstream-Status"] = "500" }, chat_body())
      assert.equal(500, a.status)
      request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body())
      socket.sleep(0.5)
      assert.equal(1, #wait_events(customer, 1))
    end)

    it("answers 400 for a request without a customer id, recording nothing", function()
      local a = request(g.port, "POST", CHAT, {}, chat_body())
      assert.equal(400, a.status)
      assert.equal("the X-Customer-Id header must name the customer (1 to 256 bytes)", core.decode(a.body).error)
    end)
  end)

  describe("decisions", function()
    it("refuses a customer whose quota is used, with 429, Retry-After and a JSON body", function()
      local customer = support.test_id("quota")
      assert(admin:quotas():create { name = "q " .. customer, metric = "total_tokens", limit_value = 100, period = "day",
        dimension_filters = { customer_id = customer } })
      wait_rules()
      local sources = {}
      for i = 1, 2 do
        local a = request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body())
        assert.equal(200, a.status, "call " .. i)
        sources[i] = a.headers["x-limitry-decision"]
        -- nginx may close the connection before its log phase ran (lingering close): this call's
        -- 50 tokens are counted when Limitry has them.
        wait_events(customer, i)
      end
      assert.same({ "fresh", "cached" }, sources)
      local refused = request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body())
      assert.equal(429, refused.status)
      local now = os.time()
      local to_midnight = (math.floor(now / 86400) + 1) * 86400 - now
      local after = tonumber(refused.headers["retry-after"])
      assert.is_true(math.abs(after - to_midnight) <= 2, "Retry-After " .. after .. ", midnight in " .. to_midnight)
      local body = core.decode(refused.body)
      assert.is_false(body.allowed)
      assert.equal("quota exceeded for this customer", body.error)
      assert.equal(after, body.retry_after)
      assert.equal("application/json", refused.headers["content-type"])
      socket.sleep(0.3)
      assert.equal(100, assert(admin:customers():get_usage(customer, WIDE[1], WIDE[2])).totalTokens)
    end)

    it("counts a rate limit locally within its window: 5 a minute admit 5", function()
      local customer = support.test_id("rate")
      assert(admin:rate_limits():create { name = "r " .. customer, limit_value = 5, window = "minute",
        dimension_filters = { customer_id = customer } })
      wait_rules()
      -- Not at the end of a minute, so all six calls fall in one window.
      local into = os.time() % 60
      if into > 50 then socket.sleep(61 - into) end
      local statuses = {}
      for i = 1, 6 do statuses[i] = request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body()).status end
      assert.same({ 200, 200, 200, 200, 200, 429 }, statuses)
    end)

    it("serves cached decisions as stale during an outage, then skips deciding (fail_open)", function()
      local customer = support.test_id("outage")
      assert(admin:quotas():create { name = "o " .. customer, metric = "total_events", limit_value = 1000, period = "day",
        dimension_filters = { customer_id = customer } })
      wait_rules()
      local function source()
        return request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body()).headers["x-limitry-decision"]
      end
      assert.equal("fresh", source())
      support.http("POST", lim.root .. "/_test/outage?seconds=30&status=503")
      finally(function() support.http("POST", lim.root .. "/_test/outage?seconds=0") end)
      assert.truthy(eventually(3, function() return source() == "stale" end), "never stale")
      assert.truthy(eventually(5, function() return source() == "skipped" end), "never skipped")
      support.http("POST", lim.root .. "/_test/outage?seconds=0")
      assert.truthy(eventually(5, function() return source() == "cached" end), "the status was not refreshed after the outage")
    end)
  end)

  describe("the recorder in nginx", function()
    it("keeps events queued while Limitry is down, across a killed worker, and delivers each once after", function()
      local customer = support.test_id("crash")
      support.http("POST", lim.root .. "/_test/outage?seconds=60&status=503")
      finally(function() support.http("POST", lim.root .. "/_test/outage?seconds=0") end)
      for _ = 1, 40 do
        assert.equal(200, request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body()).status)
      end
      socket.sleep(0.5) -- a flush attempt or two fails meanwhile
      local workers = {}
      for pid in io.popen("pgrep -P " .. g.pid):read("*a"):gmatch("%d+") do workers[#workers + 1] = pid end
      os.execute("kill -9 " .. workers[1])
      socket.sleep(0.3)
      support.http("POST", lim.root .. "/_test/outage?seconds=0")
      local list = eventually(15, function()
        local l = events_of(customer)
        return #l >= 40 and l or nil
      end)
      assert(list, "not every event arrived")
      socket.sleep(0.5)
      assert.equal(40, #events_of(customer))
    end)

    it("publishes its counters and the decisions as Prometheus metrics", function()
      local before = scenario.metrics(g.port)
      local customer = support.test_id("metrics")
      for _ = 1, 3 do request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body()) end
      wait_events(customer, 3)
      -- Each worker adds its counts to the dict every 0.25 s: wait for the three calls in each.
      local function moved(m, name) return (m[name] or 0) - (before[name] or 0) >= 3 end
      local function decisions(m)
        local n = 0
        for name, v in pairs(m) do
          if name:find("^limitry_decisions_total{") then n = n + v end
        end
        return n
      end
      local after = eventually(5, function()
        local m = scenario.metrics(g.port)
        return moved(m, "limitry_events_sent_total") and moved(m, "limitry_events_queued_total")
          and decisions(m) - decisions(before) >= 3 and m or nil
      end)
      assert(after, "the sent, queued and decision counters did not all move by 3")
      assert.is_true(after['limitry_decisions_total{outcome="allowed",source="cached"}'] >= 3)
      assert.is_number(after.limitry_queue_depth)
      assert.is_true(after['limitry_batches_total{outcome="sent"}'] >= 1)
      assert.is_true(after['limitry_calls_total{call="events_batch"}'] >= 1)
      assert.is_number(after['limitry_batch_duration_seconds_bucket{le="+Inf"}'])
      local _, text = support.http("GET", "http://127.0.0.1:" .. g.port .. "/metrics")
      assert.matches("# TYPE limitry_events_sent_total counter\n", text, 1, true)
      assert.matches("# TYPE limitry_batch_duration_seconds histogram\n", text, 1, true)
    end)

    it("never writes the API key to nginx's error log", function()
      local f = assert(io.open(g.dir .. "/logs/error.log"))
      local log = f:read("*a")
      f:close()
      assert.is_nil(log:find(lim.api_key, 1, true))
    end)
  end)
end)

describe("limitry.gateway counting on its own", function()
  local lim, admin, g
  setup(function()
    lim = scenario.start_limitry { latency = 0, api_limit = 100000 }
    admin = limitry.new { api_key = lim.api_key, base_url = lim.base_url }
    -- Statuses are never refreshed here: only the gateway's own count can refuse.
    g = gateway_nginx.start { dir = support.tmpdir("gw-local"), workers = 2, config = { refresh_after = 3600, ttl = 3600,
      flush_interval = 3600, client = { api_key = lim.api_key, base_url = lim.base_url } } }
  end)
  teardown(function()
    gateway_nginx.stop(g)
    support.stop(lim)
  end)

  it("refuses a customer as soon as this gateway has used the quota, before Limitry has a single event", function()
    local customer = support.test_id("local")
    assert(admin:quotas():create { name = "l " .. customer, metric = "total_tokens", limit_value = 100, period = "day",
      dimension_filters = { customer_id = customer } })
    local function queued() return scenario.metrics(g.port).limitry_events_queued_total or 0 end
    local statuses = {}
    for i = 1, 3 do
      local before = queued()
      statuses[i] = request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body()).status
      if statuses[i] == 200 then
        assert.truthy(eventually(5, function() return queued() > before end), "call " .. i .. " was not recorded")
      end
    end
    assert.same({ 200, 200, 429 }, statuses)
    -- Nothing was delivered (flush_interval is an hour): the refusal came from the local count.
    assert.equal(0, assert(admin:customers():get_usage(customer, WIDE[1], WIDE[2])).totalEvents)
  end)

  it("serves every call with its queue full, and counts each one as an answer: queued + refused = served", function()
    -- Its own nginx, whose queue holds 5 events; nothing leaves (flush_interval is an hour).
    local full = gateway_nginx.start { dir = support.tmpdir("gw-full"), workers = 2, config = { max_queued = 5,
      flush_interval = 3600, client = { api_key = lim.api_key, base_url = lim.base_url } } }
    finally(function() gateway_nginx.stop(full) end)
    local customer = support.test_id("full")
    for _ = 1, 8 do
      assert.equal(200, request(full.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body()).status)
    end
    -- Each worker adds its counts to the dict every 0.25 s: wait until every one of the 8 is in.
    local m = eventually(5, function()
      local x = scenario.metrics(full.port)
      local answered = x['limitry_answers_recorded_total{answer="complete"}'] or 0
      local taken = (x.limitry_events_queued_total or 0) + (x.limitry_events_refused_total or 0)
      return answered >= 8 and taken >= 8 and x or nil
    end)
    assert(m, "the answers were not counted")
    assert.equal(8, m['limitry_answers_recorded_total{answer="complete"}'])
    assert.equal(5, m.limitry_events_queued_total)
    assert.equal(3, m.limitry_events_refused_total)
    assert.equal(5, m.limitry_queue_depth)
  end)
end)

describe("limitry.gateway without a usable key", function()
  local lim, dirs = nil, {}
  setup(function() lim = scenario.start_limitry { latency = 0, api_limit = 100000 } end)
  teardown(function()
    for _, g in ipairs(dirs) do gateway_nginx.stop(g) end
    support.stop(lim)
  end)

  it("fails open or closed as configured when LIMITRY_API_KEY never reached the worker, naming the env directive", function()
    local open = gateway_nginx.start { dir = support.tmpdir("gw-nokey"), workers = 1, config = { fail_open = true,
      client = { base_url = lim.base_url } } }
    dirs[#dirs + 1] = open
    local closed = gateway_nginx.start { dir = support.tmpdir("gw-nokey2"), workers = 1, config = { fail_open = false,
      client = { base_url = lim.base_url } } }
    dirs[#dirs + 1] = closed
    local a = request(open.port, "POST", CHAT, { ["X-Customer-Id"] = "c" }, chat_body())
    assert.equal(200, a.status)
    assert.equal("skipped", a.headers["x-limitry-decision"])
    local b = request(closed.port, "POST", CHAT, { ["X-Customer-Id"] = "c" }, chat_body())
    assert.equal(503, b.status)
    assert.equal("usage limits cannot be checked right now", core.decode(b.body).error)
    local f = assert(io.open(closed.dir .. "/logs/error.log"))
    local log = f:read("*a")
    f:close()
    assert.matches("env LIMITRY_API_KEY;", log, 1, true)
  end)

  it("enforces with a key that may not read the rules, checking each customer on its own", function()
    local admin = limitry.new { api_key = lim.api_key, base_url = lim.base_url }
    local customer = support.test_id("ingest")
    assert(admin:quotas():create { name = "i " .. customer, metric = "total_events", limit_value = 2, period = "day",
      dimension_filters = { customer_id = customer } })
    local g = gateway_nginx.start { dir = support.tmpdir("gw-ingest"), workers = 1, config = { flush_interval = 0.1,
      client = { api_key = "lm_local_ingest_only_key", base_url = lim.base_url } } }
    dirs[#dirs + 1] = g
    local statuses = {}
    for i = 1, 3 do
      statuses[i] = request(g.port, "POST", CHAT, { ["X-Customer-Id"] = customer }, chat_body()).status
      socket.sleep(0.3) -- each call delivered before the next (nothing here counts locally across the refresh)
    end
    assert.same({ 200, 200, 429 }, statuses)
  end)
end)

describe("limitry.recorder's flusher in nginx", function()
  -- A Limitry stand-in in the same nginx (/fake/v1/events/batch) that notes the most batches it
  -- ever held at once; when the flusher may send two at once, it holds each batch until a second
  -- one is in flight (or 3 s pass), so a flusher that sends one at a time is seen to.
  local EXTRA = [[
    location = /fake/v1/events/batch {
      client_body_buffer_size 1m;
      client_max_body_size 2m;
      content_by_lua_block {
        local d = ngx.shared.upstream
        local now = d:incr("inflight", 1, 0)
        if now > (d:get("max_inflight") or 0) then d:set("max_inflight", now) end
        local deadline = ngx.now() + 3
        while d:get("hold") and (d:get("inflight") or 0) < 2 and ngx.now() < deadline do ngx.sleep(0.01) end
        ngx.req.read_body()
        local n = select(2, ngx.req.get_body_data():gsub('"idempotencyKey"', ""))
        d:incr("events", n, 0)
        d:incr("calls", 1, 0)
        d:incr("inflight", -1)
        ngx.say('{"count":', n, '}')
      }
    }
    location = /_flush {
      content_by_lua_block {
        local calls_allowed = tonumber(ngx.var.arg_budget)
        ngx.shared.upstream:set("hold", tonumber(ngx.var.arg_concurrency) >= 2)
        local asked = 0
        local rec = require("limitry.recorder").new { dict = "limitry", prefix = "t" .. ngx.var.arg_run .. ":",
          client = { api_key = "sk-test", base_url = "http://127.0.0.1:" .. ngx.var.server_port .. "/fake/v1" },
          concurrency = tonumber(ngx.var.arg_concurrency), flush_interval = 0,
          budget = calls_allowed and function() asked = asked + 1; return asked <= calls_allowed end or nil }
        for i = 1, tonumber(ngx.var.arg_events) do
          rec:record_json('{"customerId":"c","eventType":"e","idempotencyKey":"k' .. ngx.var.arg_run .. '-' .. i .. '"}')
        end
        local ok, err = rec:flush(10)
        local d = ngx.shared.upstream
        ngx.say(string.format('{"flushed":%s,"left":%d,"events":%d,"calls":%d,"max_inflight":%d,"err":%q}',
          tostring(ok == true), rec:stats().depth, d:get("events") or 0, d:get("calls") or 0, d:get("max_inflight") or 0,
          tostring(err)))
      }
    }
]]
  local g
  setup(function()
    g = gateway_nginx.start { dir = support.tmpdir("gw-flusher"), workers = 1, extra = EXTRA,
      config = { client = { api_key = "sk-test", base_url = "http://127.0.0.1:" .. support.closed_port() .. "/v1" } } }
  end)
  teardown(function() gateway_nginx.stop(g) end)

  local function run(query)
    local a = request(g.port, "GET", "/_flush?" .. query)
    assert.equal(200, a.status, a.body)
    return limitry.decode(a.body)
  end

  it("keeps `concurrency` batches in flight at once, each event delivered once", function()
    local r = run("run=1&events=4000&concurrency=2")
    assert.is_true(r.flushed)
    assert.equal(4000, r.events)
    assert.equal(4, r.calls)
    assert.equal(2, r.max_inflight)
  end)

  it("asks the budget before each batch call and keeps what it refuses queued", function()
    local before = run("run=2&events=0&concurrency=1")
    local r = run("run=3&events=5000&concurrency=1&budget=2")
    assert.is_false(r.flushed)
    assert.equal(2, r.calls - before.calls)
    assert.equal(2000, r.events - before.events)
    assert.equal(3000, r.left)
  end)
end)

describe("limitry.gateway.configure in nginx", function()
  it("stops nginx from starting on a wrong option, naming it in the error log", function()
    local dir = support.tmpdir("gw-badopt")
    assert.has_error(function() gateway_nginx.start { dir = dir, workers = 1, config = { batch_size = 5000 } } end)
    local f = assert(io.open(dir .. "/logs/error.log"))
    local log = f:read("*a")
    f:close()
    assert.truthy(log:find("limitry.gateway.configure: batch_size must be a whole number from 1 to 1000", 1, true), log)
  end)
end)

describe("examples/openresty/nginx.conf", function()
  it("is accepted by nginx as written, with the checkout's path and the providers on loopback", function()
    local dir = support.tmpdir("example-conf")
    os.execute("mkdir -p " .. dir .. "/logs")
    local root = os.getenv("PWD")
    local f = assert(io.open("examples/openresty/nginx.conf"))
    local conf = f:read("*a"):gsub("/path/to/limitry%-lua", root):gsub("api%.openai%.com", "127.0.0.1")
      :gsub("api%.anthropic%.com", "127.0.0.1"):gsub("listen 8080;", "listen 127.0.0.1:" .. support.closed_port() .. ";")
    f:close()
    local out = assert(io.open(dir .. "/nginx.conf", "w"))
    out:write(conf)
    out:close()
    local p = io.popen("env -u LUA_PATH -u LUA_CPATH /usr/sbin/nginx -t -p " .. dir .. "/ -c nginx.conf 2>&1")
    local text = p:read("*a")
    p:close()
    assert.matches("test is successful", text)
  end)
end)

describe("limitry.gateway under load (issue #16's scenario, shortened)", function()
  it("loses no event, keeps the capped customer near its quota and Limitry under its API limit", function()
    local r = scenario.run { seconds = 8, connections = 32, outage_at = 2, outage_seconds = 2, reload_at = 5, drain = 30 }
    finally(function() scenario.stop(r) end)
    local detail = string.format("served %s, events %s (%s incomplete), tokens %s/%s (%s incomplete), calls %s, capped %s, log %s",
      r.served, r.events, r.incomplete, r.tokens, r.upstream_tokens, r.incomplete_tokens, r.limitry_calls, r.capped_tokens,
      table.concat(r.log_sample, " | "))
    -- Every served call's event, and the calls cut short (recorded with what was counted) besides.
    assert.equal(r.served + r.incomplete, r.events, detail)
    assert.equal(r.upstream_tokens + r.incomplete_tokens, r.tokens, detail)
    assert.is_true(r.incomplete <= 20, detail)
    assert.equal(0, r.api_limited, detail)
    assert.is_true(r.events / r.limitry_calls >= 50, detail)
    assert.is_true(r.capped_tokens >= 9000 and r.capped_tokens <= 11000, detail)
    assert.is_true(r.served / r.wrk.requests >= 0.93, detail)
    assert.is_true(r.log_lines <= 200, detail)
    assert.equal(0, r.crashes, detail)
  end)
end)
