-- The client inside real nginx (Debian's lua-nginx-module, LuaJIT) with one worker: usage calls
-- run on the thread pool and never stall the worker; and the budget guard example.
local socket = require "socket"
local support = require "spec.support.server"
local local_server = require "limitry_local"
local core = require "limitry.core"

local ROOT = os.getenv("PWD")

local GATEWAY = [[
  keepalive_timeout 30s;
  lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;%s/examples/openresty/?.lua;;";
  lua_package_cpath "%s/build/luajit/?.so;;";
  lua_shared_dict limitry_budget 1m;
  init_by_lua_block {
    TEST = { api_key = %q, base_url = %q, dead_url = %q, guard_id = %q }
    require("budget_guard").configure {
      budgets = { rich = 1000000, poor = 100 },
      default_budget_cents = 50,
      cache_ttl = 30,
      client = { api_key = TEST.api_key, base_url = TEST.base_url, headers = { ["X-Limitry-Test-Id"] = TEST.guard_id } },
    }
    DEAD = { api_key = TEST.api_key, base_url = TEST.dead_url, max_retries = 0, connect_timeout = 1 }
  }
  server {
    listen 127.0.0.1:%d;
    location = /slow {
      content_by_lua_block {
        local limitry = require "limitry"
        local c = limitry.new { api_key = TEST.api_key, base_url = TEST.base_url, openresty = ngx.var.arg_mode,
          headers = { ["X-Limitry-Fault"] = "delay=1000" } }
        local s, msg = c:usage():get_summary("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
        ngx.say(s and ("events=" .. s.totalEvents) or msg)
      }
    }
    location = /error {
      content_by_lua_block {
        local limitry = require "limitry"
        local c = limitry.new { api_key = "lm_wrong_key_123", base_url = TEST.base_url }
        local s, msg, err = c:usage():get_summary("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
        ngx.say(msg, "|", tostring(err:is("APIError")), "|", err.status, "|", err.attempts)
      }
    }
    location = /ping { content_by_lua_block { ngx.say("pong") } }
    location /guarded/ {
      access_by_lua_block { require("budget_guard").check() }
      content_by_lua_block { ngx.say("served") }
    }
    location /dead-open/ {
      access_by_lua_block { require("budget_guard").check { client = DEAD, fail_open = true } }
      content_by_lua_block { ngx.say("served") }
    }
    location /dead-closed/ {
      access_by_lua_block { require("budget_guard").check { client = DEAD, fail_open = false } }
      content_by_lua_block { ngx.say("served") }
    }
  }
]]

local function percentile(list, p)
  local sorted = {}
  for i, v in ipairs(list) do sorted[i] = v end
  table.sort(sorted)
  return sorted[math.max(1, math.ceil(#sorted * p))]
end

describe("in nginx (OpenResty)", function()
  local server, gateway_dir, gateway
  local guard_id = support.test_id("guard")

  setup(function()
    server = support.start()
    local port = local_server.free_port()
    gateway_dir = support.tmpdir("gateway")
    local conf = local_server.nginx_conf("thread_pool limitry threads=4;",
      GATEWAY:format(ROOT, ROOT, ROOT, ROOT, server.api_key, server.base_url,
        "http://127.0.0.1:" .. support.closed_port() .. "/v1", guard_id, port))
    local_server.run_nginx(gateway_dir, conf, port, "tcp")
    gateway = "http://127.0.0.1:" .. port
  end)
  teardown(function()
    pcall(local_server.stop, gateway_dir)
    support.stop(server)
  end)

  -- Sends GET path on a new connection and returns the socket, to read the answer later.
  local function begin(path)
    local s = socket.tcp()
    s:settimeout(10)
    assert(s:connect("127.0.0.1", tonumber(gateway:match(":(%d+)$"))))
    assert(s:send("GET " .. path .. " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"))
    return s
  end

  it("keeps serving other requests while a usage call waits 1 s on Limitry", function()
    local t0 = support.now()
    local slow = begin("/slow")
    socket.sleep(0.1)
    local latencies = {}
    for i = 1, 100 do
      local t = support.now()
      local status, body = support.http("GET", gateway .. "/ping")
      latencies[i] = support.now() - t
      assert.equal(200, status)
      assert.equal("pong\n", body)
    end
    local pings_done = support.now()
    local answer = slow:receive("*a")
    slow:close()
    local slow_done = support.now()
    assert.matches("events=0", answer)
    assert.is_true(slow_done - t0 >= 0.95, "the slow call took only " .. (slow_done - t0))
    assert.is_true(pings_done < slow_done, "the pings finished after the slow call")
    for i, l in ipairs(latencies) do
      assert.is_true(l < 0.2, string.format("ping %d took %.1f ms", i, l * 1000))
    end
    io.stderr:write(string.format("\n[nginx, one worker, usage call held 1 s] 100 pings: p50 %.2f ms, "
      .. "p99 %.2f ms, max %.2f ms; all done %.0f ms after start, slow call done at %.0f ms\n",
      percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000, percentile(latencies, 1) * 1000,
      (pings_done - t0) * 1000, (slow_done - t0) * 1000))
  end)

  it("would hold the worker with openresty = 'blocking' (the check above can fail)", function()
    local slow = begin("/slow?mode=blocking")
    socket.sleep(0.1)
    local t = support.now()
    local status = support.http("GET", gateway .. "/ping")
    local held = support.now() - t
    slow:receive("*a")
    slow:close()
    assert.equal(200, status)
    assert.is_true(held > 0.5, string.format("ping took %.1f ms", held * 1000))
  end)

  it("returns the same error values through the thread pool", function()
    local status, body = support.http("GET", gateway .. "/error")
    assert.equal(200, status)
    assert.equal("AuthenticationError: Invalid API key (HTTP 401)|true|401|1\n", body)
  end)

  describe("budget guard example", function()
    local function ingest(customer, cents)
      local ev = string.format('{"customerId":%q,"eventType":"chat","model":"gpt-4o","inputTokens":100,"costCents":%d}', customer, cents)
      local status = support.http("POST", server.base_url .. "/events", ev, { Authorization = "Bearer " .. server.api_key })
      assert.equal(201, status)
    end
    local function guarded(prefix, customer)
      local status, body, headers = support.http("GET", gateway .. prefix .. "chat", nil,
        customer and { ["X-Customer-Id"] = customer } or {})
      return status, body, headers
    end

    setup(function()
      ingest("poor", 500)
      ingest("rich", 500)
    end)

    it("lets customers under budget through", function()
      local status, body, headers = guarded("/guarded/", "rich")
      assert.equal(200, status)
      assert.equal("served\n", body)
      assert.equal(tostring(1000000 - 500), headers["x-budget-remaining-cents"])
      assert.equal(200, (guarded("/guarded/", "newcomer")))
    end)

    it("answers 429 with a JSON error over budget", function()
      local status, body, headers = guarded("/guarded/", "poor")
      assert.equal(429, status)
      local doc = core.decode(body)
      assert.equal("monthly budget exceeded", doc.error)
      assert.equal(500, doc.spent_cents)
      assert.equal(100, doc.budget_cents)
      assert.is_true(tonumber(headers["retry-after"]) > 0)
      assert.equal("application/json", headers["content-type"])
    end)

    it("caches month-to-date cost, so repeated requests do not reach Limitry", function()
      for _ = 1, 5 do guarded("/guarded/", "rich") end
      local customers = {}
      for _, r in ipairs(support.recorded(server, guard_id).requests) do
        customers[r.args.customerId] = (customers[r.args.customerId] or 0) + 1
      end
      assert.equal(1, customers.rich)
      assert.equal(1, customers.poor)
    end)

    it("fails open or closed, as configured, when Limitry is unreachable", function()
      local status, body, headers = guarded("/dead-open/", "rich")
      assert.equal(200, status)
      assert.equal("served\n", body)
      assert.equal("skipped", headers["x-budget-check"])
      status, body = guarded("/dead-closed/", "rich")
      assert.equal(503, status)
      assert.equal("usage service unavailable", core.decode(body).error)
    end)

    it("rejects a request without a customer id", function()
      assert.equal(400, (guarded("/guarded/", nil)))
    end)

    it("never writes the API key to nginx's log", function()
      local f = assert(io.open(gateway_dir .. "/logs/error.log"))
      local log = f:read("*a")
      f:close()
      assert.matches("usage lookup failed", log)
      assert.is_nil(log:find(server.api_key, 1, true))
    end)
  end)
end)
