-- The client inside real nginx (Debian's lua-nginx-module, LuaJIT): usage calls go over cosockets
-- by default and never stall the worker; the worker-thread path fails soft when overloaded; a
-- client made before fork is safe in every worker; reloads finish calls in flight. (limitry.gateway,
-- the OpenResty product built on this, has its own spec: spec/gateway_spec.lua.)
local support = require "spec.support.server"
local gateway = require "spec.support.gateway"
local local_server = require "limitry_local"
local core = require "limitry.core"

local ROOT = os.getenv("PWD")
local WIDE = { "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z" }

-- The gateway's http block; gateway_conf() fills in the @NAME@ fields.
local GATEWAY = [[
  keepalive_timeout 30s;
  lua_package_path "@ROOT@/lua/?.lua;@ROOT@/lua/?/init.lua;@ROOT@/examples/openresty/?.lua;;";
  lua_package_cpath "@ROOT@/build/luajit/?.so;;";
  lua_shared_dict test_state 4m;
  init_by_lua_block {
    TEST = @TEST_VALUES@
    local limitry = require "limitry"
    local cjson = require "cjson.safe"
    -- Made before nginx forks its workers.
    SHARED = limitry.new { api_key = TEST.api_key, base_url = TEST.base_url }
    if TEST.blocking_shared then
      SHARED_BLOCKING = limitry.new { api_key = TEST.api_key, base_url = TEST.base_url, openresty = "blocking" }
      -- A call here opens a connection in the master, which every worker inherits.
      assert(SHARED_BLOCKING:usage():get_summary(TEST.wide[1], TEST.wide[2]))
    end
    -- /call: one usage call with the options in the query; the outcome as JSON.
    CALL = function(args)
      -- own_key=N: a key of this call's own, which the local server does not know (it answers 401)
      local key = args.own_key and ("lm_own_key_" .. args.own_key) or args.key == "ingest" and "lm_local_ingest_only_key"
      local opts = { api_key = key or TEST.api_key,
        base_url = args.tls and TEST.tls_url or TEST.base_url, openresty = args.mode,
        timeout = tonumber(args.timeout), max_response_size = tonumber(args.max_size),
        max_retries = tonumber(args.retries), backoff = tonumber(args.backoff),
        proxy = args.proxy, ca_file = args.ca_file, ssl_verify = not args.noverify,
        max_worker_thread_calls = tonumber(args.max_calls),
        headers = { ["X-Limitry-Fault"] = args.fault, ["X-Limitry-Test-Id"] = args.id } }
      local entries = {}
      if args.log then opts.log = function(e) entries[#entries + 1] = { line = tostring(e), transport = e.transport } end end
      local t0 = ngx.now()
      local ok, res, msg, err = pcall(function()
        local c = limitry.new(opts)
        return c:usage():get_summary(TEST.wide[1], TEST.wide[2], { customer_id = args.customer or "nobody" })
      end)
      ngx.update_time()
      local out = { elapsed = ngx.now() - t0, customer = args.customer, pid = ngx.worker.pid() }
      if not ok then out.raised = tostring(res)
      elseif res then out.events = res.totalEvents
      else out.msg, out.name, out.kind, out.attempts, out.status = msg, err.name, err.kind, err.attempts, err.status end
      if args.log then out.log = entries end
      return cjson.encode(out)
    end
  }
  server {
    listen 127.0.0.1:@PORT@ @REUSEPORT@;
    location = /call { content_by_lua_block { ngx.say(CALL(ngx.req.get_uri_args())) } }
    location = /call-tls-trusted {
      @TRUST@
      content_by_lua_block { local a = ngx.req.get_uri_args(); a.tls = true; ngx.say(CALL(a)) }
    }
    location = /call-tls-untrusted {
      content_by_lua_block { local a = ngx.req.get_uri_args(); a.tls = true; ngx.say(CALL(a)) }
    }
    location = /shared {
      content_by_lua_block {
        local client = ngx.var.arg_blocking and SHARED_BLOCKING or SHARED
        local s, msg = client:usage():get_summary(TEST.wide[1], TEST.wide[2], { customer_id = ngx.var.arg_customer })
        ngx.say(ngx.var.arg_customer, " ", s and s.totalEvents or msg, " ", ngx.worker.pid())
      }
    }
    location = /changed-timeout {
      content_by_lua_block {
        -- A client field changed after the first call applies to the next one.
        local c = require("limitry").new { api_key = TEST.api_key, base_url = TEST.base_url, max_retries = 0,
          headers = { ["X-Limitry-Fault"] = "delay=1500" } }
        c.timeout = 5
        local first = c:usage():get_summary(TEST.wide[1], TEST.wide[2])
        c.timeout = 0.2
        local _, _, err = c:usage():get_summary(TEST.wide[1], TEST.wide[2])
        ngx.say(first and "first ok" or "first failed", " ", err and err.name)
      }
    }
    location = /in-set-phase {
      set_by_lua_block $outcome {
        local ok, res, msg = pcall(function()
          return SHARED:usage():get_summary(TEST.wide[1], TEST.wide[2])
        end)
        return ok and "returned " .. tostring(res and res.totalEvents or msg) or "raised " .. tostring(res)
      }
      content_by_lua_block { ngx.say(ngx.var.outcome) }
    }
    location = /in-timer {
      content_by_lua_block {
        local done = ngx.shared.test_state
        local id = ngx.var.arg_id
        ngx.timer.at(0, function(premature)
          if premature then return end
          local s, msg = SHARED:usage():get_summary(TEST.wide[1], TEST.wide[2])
          done:set("timer:" .. id, s and ("events=" .. s.totalEvents) or msg)
        end)
        ngx.say("started")
      }
    }
    location = /timer-result { content_by_lua_block { ngx.say(ngx.shared.test_state:get("timer:" .. ngx.var.arg_id)) } }
    location = /async {
      content_by_lua_block {
        local usage = SHARED:usage()
        local fault = { ["X-Limitry-Fault"] = "delay=700" }
        local c = require("limitry").new { api_key = TEST.api_key, base_url = TEST.base_url, headers = fault }
        local t0 = ngx.now()
        local called
        local a = c:usage():start_summary(TEST.wide[1], TEST.wide[2], function(res) called = res and res.totalEvents end)
        local b = c:usage():start_breakdown("model", TEST.wide[1], TEST.wide[2])
        local done_before = a:done()
        local ra = a:wait()
        local rb = b:await()
        ngx.update_time()
        ngx.say(require("cjson").encode { a = ra.totalEvents, b = #rb.data, callback = called,
          done_before = done_before, elapsed = ngx.now() - t0, cancel = usage:start_summary(TEST.wide[1], TEST.wide[2]):cancel() })
      }
    }
    location = /ping { content_by_lua_block { ngx.say("pong") } }
    location = /enforce {
      content_by_lua_block {
        -- The rest of the API on the transport named by ?mode=: bodies, decisions, async twins.
        local c = require("limitry").new { api_key = TEST.api_key, base_url = TEST.base_url, openresty = ngx.var.arg_mode }
        local customer = ngx.var.arg_customer
        local rec = assert(c:events():record { customer_id = customer, event_type = "e", input_tokens = 5 })
        local d = assert(c:track { customer_id = customer, event_type = "e", output_tokens = 7 })
        local started = c:quotas():start_check { customer_id = customer }
        local checked = assert(started:wait())
        local u = assert(c:customers():get_usage(customer, TEST.wide[1], TEST.wide[2]))
        ngx.say(require("cjson").encode { id = rec.id, allowed = d.allowed, checked = checked.allowed, tokens = u.totalTokens })
      }
    }
    location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
    location = /idle {
      content_by_lua_block {
        local ok, cosocket = pcall(require, "limitry.transport.cosocket")
        ngx.say(ok and cosocket.idle() or "unknown")
      }
    }
  }
]]

local function gateway_conf(main_extra, values, port, reuseport, ca_file)
  local fields = {}
  for k, v in pairs(values) do
    if type(v) == "table" then
      fields[#fields + 1] = string.format("%s = { %q, %q }", k, v[1], v[2])
    else
      fields[#fields + 1] = string.format("%s = %q", k, tostring(v))
    end
  end
  local values_text = "{ " .. table.concat(fields, ", ") .. " }"
  local http = GATEWAY:gsub("@(%u[%u_]*)@", {
    ROOT = ROOT, TEST_VALUES = values_text, PORT = tostring(port), REUSEPORT = reuseport and "reuseport" or "",
    TRUST = ca_file and ("lua_ssl_trusted_certificate " .. ca_file .. ";") or "" })
  return local_server.nginx_conf(main_extra, http)
end

local function decode(answer)
  assert(answer and answer.status == 200, "gateway answered " .. tostring(answer and (answer.status or answer.error)))
  return assert(core.decode(answer.body), "not JSON: " .. tostring(answer.body))
end

local function ingest(server, events)
  local body = { '{"events":[' }
  for i, ev in ipairs(events) do
    body[#body + 1] = (i > 1 and "," or "") .. string.format('{"customerId":%q,"eventType":"chat","model":"gpt-4o","inputTokens":10,"costCents":%s}',
      ev.customer, tostring(ev.cents or 1))
  end
  body[#body + 1] = "]}"
  local status = support.http("POST", server.base_url .. "/events/batch", table.concat(body),
    { Authorization = "Bearer " .. server.api_key, ["Content-Type"] = "application/json" })
  assert.equal(201, status)
end

local function percentile(list, p)
  local sorted = {}
  for i, v in ipairs(list) do sorted[i] = v end
  table.sort(sorted)
  return sorted[math.max(1, math.ceil(#sorted * p))]
end

local function fault(spec) return (spec:gsub("[=;]", function(c) return string.format("%%%02X", c:byte()) end)) end

describe("in nginx (OpenResty)", function()
  local server, tls_server, pki, dir, port

  setup(function()
    server = support.start()
    pki = support.tmpdir("pki")
    support.make_pki(pki)
    tls_server = support.start { tls_cert = pki .. "/server.pem", tls_key = pki .. "/server.key" }
    port = local_server.free_port()
    dir = support.tmpdir("gateway")
    local values = { api_key = server.api_key, base_url = server.base_url, tls_url = tls_server.base_url,
      dead_url = "http://127.0.0.1:" .. support.closed_port() .. "/v1", wide = WIDE }
    local_server.run_nginx(dir, gateway_conf("thread_pool limitry threads=2;", values, port, false, pki .. "/ca.pem"), port, "tcp")
  end)
  teardown(function()
    pcall(local_server.stop, dir)
    support.stop(tls_server)
    support.stop(server)
  end)

  local function call(query) return decode(gateway.get(port, "/call?" .. (query or ""))) end

  describe("the cosocket transport (the default)", function()
    it("answers usage calls with the same results as the blocking client", function()
      ingest(server, { { customer = "cos-a" }, { customer = "cos-a" }, { customer = "cos-b" } })
      assert.same(2, call("customer=cos-a").events)
      assert.same(1, call("customer=cos-b").events)
      assert.same(2, call("customer=cos-a&mode=cosocket").events)
      assert.same(2, call("customer=cos-a&mode=blocking").events)
      assert.same(2, call("customer=cos-a&mode=worker_thread").events)
    end)

    it("sends the wire request of the contract on a pooled keep-alive connection", function()
      local id = support.test_id("cos-wire")
      for _ = 1, 5 do assert.same(0, call("customer=a%20b%26c&id=" .. id).events) end
      local rec = support.recorded(server, id)
      assert.equal(5, rec.count)
      assert.equal(1, rec.connections)
      local r = rec.requests[1]
      assert.equal("GET", r.method)
      assert.equal("/v1/usage?startDate=2000-01-01T00%3A00%3A00Z&endDate=2100-01-01T00%3A00%3A00Z&customerId=a%20b%26c", r.request_uri)
      assert.equal("Bearer " .. server.api_key, r.headers.authorization)
      assert.matches("^limitry%-lua/[%d.]+ %(LuaJIT [^;]+; ngx_lua/%d+%)$", r.headers["user-agent"])
      assert.equal(0, r.body_length)
    end)

    it("shares a pooled connection between API keys, each request carrying its own key", function()
      local id = support.test_id("cos-keys")
      local keys = {}
      for i = 1, 3 do
        assert.same(0, call("id=" .. id).events)
        assert.equal("AuthenticationError", call("key=ingest&id=" .. id).name)
        keys[2 * i - 1], keys[2 * i] = "Bearer " .. server.api_key, "Bearer lm_local_ingest_only_key"
      end
      local rec = support.recorded(server, id)
      assert.equal(6, rec.count)
      assert.equal(1, rec.connections, "the clients' six calls in a row on one pooled connection")
      for i, r in ipairs(rec.requests) do assert.equal(keys[i], r.headers.authorization) end
    end)

    it("reads chunked bodies and Content-Length bodies", function()
      assert.same(0, call("fault=" .. fault("chunked=5")).events)
      assert.same(0, call("fault=" .. fault("chunked=1")).events)
    end)

    it("maps server errors, retries 5xx with ngx.sleep and gives the contract's error values", function()
      local id = support.test_id("cos-retry")
      local ok = call("backoff=0.01&id=" .. id .. "&fault=" .. fault("status=503;times=1"))
      assert.same(0, ok.events)
      assert.equal(2, support.recorded(server, id).count)
      local bad = call("retries=1&backoff=0.01&fault=" .. fault("status=500"))
      assert.equal("APIError", bad.name)
      assert.equal(500, bad.status)
      assert.equal(2, bad.attempts)
      assert.equal("APIError: injected 500 (HTTP 500, 2 attempts)", bad.msg)
      local auth = call("key=ingest")
      assert.equal("AuthenticationError", auth.name)
      assert.equal(1, auth.attempts)
      local html = call("fault=" .. fault("body=html"))
      assert.equal("DecodeError", html.name)
      local redirect = call("fault=" .. fault("redirect=1"))
      assert.equal("APIError", redirect.name)
      assert.equal(302, redirect.status)
    end)

    -- Issue #17, items 8 and 12: the log option on every transport nginx offers, and errors that
    -- say where the key came from (from the worker thread's VM too).
    it("logs every attempt on the cosocket, blocking and worker-thread transports", function()
      for _, case in ipairs { { "cosocket", "cosocket" }, { "blocking", "curl" }, { "worker_thread", "worker_thread" } } do
        local out = call("log=1&mode=" .. case[1] .. "&backoff=0.01&id=" .. support.test_id("log-" .. case[1])
          .. "&fault=" .. fault("status=503;times=1"))
        assert.same(0, out.events)
        assert.equal(2, #out.log, case[1])
        assert.matches("^limitry: GET /usage %-> 503 APIError %(attempt 1, [%d.]+ ms, " .. case[2]
          .. "%): injected 503; retry in 0%.0%d%d s$", out.log[1].line)
        assert.matches("^limitry: GET /usage %-> 200 %(attempt 2, [%d.]+ ms, " .. case[2] .. "%)$", out.log[2].line)
        assert.equal(case[2], out.log[2].transport)
        local bad = call("log=1&key=ingest&mode=" .. case[1])
        assert.matches("^AuthenticationError: .* %(HTTP 403, key given to limitry%.new%)$", bad.msg)
        assert.equal(1, #bad.log)
        assert.matches("^limitry: GET /usage %-> 403 AuthenticationError %(attempt 1", bad.log[1].line)
      end
    end)

    it("gives NetworkError for a connection closed mid-body or before any answer", function()
      local mid = call("retries=0&fault=" .. fault("close=mid"))
      assert.equal("NetworkError", mid.name)
      assert.matches("connection broken before the response was complete", mid.msg, 1, true)
      local before = call("retries=0&fault=" .. fault("close=before"))
      assert.equal("NetworkError", before.name)
      assert.matches("server closed the connection without a response", before.msg, 1, true)
    end)

    it("enforces max_response_size while reading, for streamed and sized bodies", function()
      local streamed = call("max_size=100000&fault=" .. fault("size=2000000"))
      assert.equal("DecodeError", streamed.name)
      assert.equal("too_large", streamed.kind)
      assert.matches("response larger than the limit of 100000 bytes", streamed.msg, 1, true)
      local sized = call("max_size=100&fault=" .. fault("json=" .. string.rep("%20", 200) .. "{}"))
      assert.equal("too_large", sized.kind)
    end)

    it("times out per attempt with the client's timeout", function()
      local slow = call("timeout=0.3&retries=0&fault=" .. fault("delay=3000"))
      assert.equal("TimeoutError", slow.name)
      assert.matches("^TimeoutError: no complete response within 300 ms", slow.msg)
      assert.is_true(slow.elapsed < 2, "took " .. slow.elapsed .. " s")
    end)

    it("verifies TLS against lua_ssl_trusted_certificate, and fails cleanly without it", function()
      -- First, while no connection verified in the trusted location waits in the pool (pools are
      -- per host, port and TLS settings, shared by every client of the worker).
      local untrusted = decode(gateway.get(port, "/call-tls-untrusted?retries=0&key=ingest"))
      assert.equal("NetworkError", untrusted.name)
      assert.equal("tls", untrusted.kind, untrusted.msg)
      assert.matches("lua_ssl_trusted_certificate", untrusted.msg, 1, true)
      assert.same(0, decode(gateway.get(port, "/call-tls-trusted")).events)
      assert.same(0, decode(gateway.get(port, "/call-tls-untrusted?noverify=1")).events)
    end)

    it("rejects options nginx's cosockets cannot honour, naming the fix", function()
      assert.matches("does not go through a proxy.*worker_thread", call("proxy=http%3A%2F%2F127.0.0.1%3A9").raised)
      assert.matches("lua_ssl_trusted_certificate", call("ca_file=%2Ftmp%2Fca.pem").raised, 1, true)
      -- through the thread pool, libcurl honours them
      assert.same(0, call("mode=worker_thread&proxy=").events)
    end)

    it("applies a client field changed after the first call", function()
      assert.equal("first ok TimeoutError\n", gateway.get(port, "/changed-timeout").body)
    end)

    it("raises a clear error in phases that cannot yield, and works from a timer", function()
      local answer = gateway.get(port, "/in-set-phase")
      assert.equal(200, answer.status)
      assert.matches("^raised .*cannot call Limitry in nginx's set phase.*ngx%.timer%.at", answer.body)
      local id = support.test_id("timer")
      assert.equal("started\n", gateway.get(port, "/in-timer?id=" .. id).body)
      local result = gateway.eventually(10, function()
        local body = gateway.get(port, "/timer-result?id=" .. id).body
        return body ~= "nil\n" and body
      end)
      assert.matches("^events=%d+", result)
    end)

    it("runs start_* calls concurrently in light threads", function()
      local out = decode(gateway.get(port, "/async"))
      assert.is_number(out.a)
      assert.equal(out.a, out.callback)
      assert.is_number(out.b)
      assert.is_false(out.done_before)
      assert.is_true(out.cancel)
      -- two calls held 0.7 s each by Limitry, in flight together
      assert.is_true(out.elapsed >= 0.65 and out.elapsed < 1.3, "took " .. out.elapsed .. " s")
    end)

    it("records, tracks, checks and reads usage of the rest of the API on every transport", function()
      for _, mode in ipairs { "cosocket", "worker_thread", "blocking" } do
        local customer = support.test_id("enforce-" .. mode)
        local out = decode(gateway.get(port, "/enforce?mode=" .. mode .. "&customer=" .. customer))
        assert.is_string(out.id)
        assert.is_true(out.allowed)
        assert.is_true(out.checked)
        assert.equal(12, out.tokens)
      end
    end)

    it("keeps serving other requests while a usage call waits 1 s on Limitry", function()
      local id = support.test_id("cos-slow")
      local t0 = support.now()
      local slow = gateway.begin(port, "/call?id=" .. id .. "&fault=" .. fault("delay=1000"))
      assert.truthy(gateway.eventually(5, function() return support.recorded(server, id).count == 1 end))
      local latencies = {}
      for i = 1, 100 do
        local t = support.now()
        local answer = gateway.get(port, "/ping")
        latencies[i] = support.now() - t
        assert.equal("pong\n", answer.body)
      end
      local pings_done = support.now()
      local answer = slow()
      local slow_done = support.now()
      assert.same(0, decode(answer).events)
      assert.is_true(slow_done - t0 >= 0.95, "the slow call took only " .. (slow_done - t0))
      assert.is_true(pings_done < slow_done, "the pings finished after the slow call")
      for i, l in ipairs(latencies) do
        assert.is_true(l < 0.2, string.format("ping %d took %.1f ms", i, l * 1000))
      end
      io.stderr:write(string.format("\n[nginx, one worker, cosocket call held 1 s] 100 pings: p50 %.2f ms, "
        .. "p99 %.2f ms, max %.2f ms\n", percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000,
        percentile(latencies, 1) * 1000))
    end)

    it("would hold the worker with openresty = 'blocking' (the check above can fail)", function()
      local id = support.test_id("blocking-slow")
      local slow = gateway.begin(port, "/call?mode=blocking&id=" .. id .. "&fault=" .. fault("delay=1000"))
      -- Once Limitry holds the call, the worker is stuck in libcurl until it answers.
      assert.truthy(gateway.eventually(5, function() return support.recorded(server, id).count == 1 end))
      local t = support.now()
      local ping = gateway.get(port, "/ping")
      local held = support.now() - t
      slow()
      assert.equal("pong\n", ping.body)
      assert.is_true(held > 0.5, string.format("ping took %.1f ms", held * 1000))
    end)

    -- Issue #20, item 7: pools are per host, port and TLS settings, not per key (every request
    -- carries its own Authorization header), and a worker keeps at most pool_size (64) idle
    -- connections across all its pools and clients.
    it("bounds sockets: 2,000 requests, each with its own client and key, hold < 500 during and after", function()
      local pid = gateway.get(port, "/pid").body:match("%d+")
      local function sockets()
        local p = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null | grep -c 'socket:'")
        local n = tonumber(p:read("*a"))
        p:close()
        return n
      end
      -- A sampler beside the bursts: the worker's sockets every 10 ms, until the stop file exists
      -- (at most 12,000 samples).
      local samples = support.tmpdir("fd-samples") .. "/samples"
      local stop = samples .. ".stop"
      os.execute(("sh -c 'i=0; while [ $i -lt 12000 ] && [ ! -e %s ]; do ls -l /proc/%s/fd 2>/dev/null | grep -c socket: >> %s; "
        .. "sleep 0.01; i=$((i + 1)); done' >/dev/null 2>&1 &"):format(stop, pid, samples))
      local answered = 0
      for first = 1, 2000, 200 do
        local batch = {}
        -- each answer held 300 ms, so that the 200 calls of a burst are in flight together
        for i = first, first + 199 do batch[#batch + 1] = { path = "/call?own_key=" .. i .. "&fault=" .. fault("delay=300") } end
        for _, a in ipairs(gateway.burst(port, batch)) do
          assert.equal(200, a.status)
          -- the local server knows none of these keys: an answer each, over a connection
          assert.equal("AuthenticationError", decode(a).name)
          answered = answered + 1
        end
      end
      local after, idle = sockets(), gateway.get(port, "/idle").body:match("%S+")
      assert(io.open(stop, "w")):close()
      local peak, count = 0, 0
      for line in assert(io.open(samples)):lines() do
        count = count + 1
        peak = math.max(peak, tonumber(line) or 0)
      end
      io.stderr:write(string.format("\n[2,000 requests, a client and a key each, 200 at a time, answers held 300 ms] "
        .. "worker sockets: peak %d "
        .. "(%d samples), %d afterwards, %s idle in the pools\n", peak, count, after, idle))
      assert.equal(2000, answered)
      assert.is_true(count > 0, "no samples")
      assert.is_true(peak < 500, peak .. " sockets at the peak")
      assert.is_true(after < 500, after .. " sockets afterwards")
      assert.is_true(tonumber(idle) <= 64, idle .. " idle")
    end)
  end)

  describe("the worker-thread transport", function()
    it("answers every one of 300 concurrent calls, failing the overflow with nil, msg, err", function()
      local requests = {}
      for i = 1, 300 do requests[i] = { path = "/call?mode=worker_thread&fault=" .. fault("delay=200") } end
      local pid = gateway.get(port, "/pid").body
      local ok, overloaded = 0, 0
      for _, a in ipairs(gateway.burst(port, requests)) do
        local out = decode(a)
        if out.events then
          ok = ok + 1
        else
          assert.equal("NetworkError", out.name)
          assert.equal("overloaded", out.kind)
          assert.matches("max_worker_thread_calls", out.msg, 1, true)
          overloaded = overloaded + 1
        end
      end
      io.stderr:write(string.format("\n[worker_thread, threads=2, 300 at once] %d answered, %d overloaded\n", ok, overloaded))
      assert.equal(300, ok + overloaded)
      assert.is_true(ok >= 32, ok .. " calls answered")
      assert.equal(pid, gateway.get(port, "/pid").body, "the worker restarted")
      local f = assert(io.open(dir .. "/logs/error.log"))
      local log = f:read("*a")
      f:close()
      assert.is_nil(log:find("exited on signal", 1, true))
    end)
  end)

  describe("reload", function()
    it("finishes 64 calls in flight with correct answers", function()
      ingest(server, { { customer = "reload" }, { customer = "reload" }, { customer = "reload" } })
      local id = support.test_id("reload")
      local pending = {}
      for i = 1, 64 do pending[i] = gateway.begin(port, "/call?customer=reload&id=" .. id .. "&fault=" .. fault("delay=1000")) end
      assert.truthy(gateway.eventually(5, function() return support.recorded(server, id).count == 64 end))
      local pidfile = assert(io.open(dir .. "/logs/nginx.pid"))
      local master = tonumber(pidfile:read("*l"))
      pidfile:close()
      assert(os.execute("kill -HUP " .. master))
      local answered = 0
      for _, read in ipairs(pending) do
        local out = decode(read())
        assert.equal(3, out.events)
        answered = answered + 1
      end
      assert.equal(64, answered)
      assert.same(3, call("customer=reload").events)
    end)
  end)

end)

describe("a client made before nginx forks its workers", function()
  local server, dir, port
  local COUNT = 20

  setup(function()
    server = support.start()
    local events = {}
    for i = 1, COUNT do
      for _ = 1, i do events[#events + 1] = { customer = "fork-" .. i } end
    end
    ingest(server, events)
    port = local_server.free_port()
    dir = support.tmpdir("gateway2")
    local values = { api_key = server.api_key, base_url = server.base_url, tls_url = server.base_url,
      dead_url = server.base_url, wide = WIDE, blocking_shared = true }
    local conf = gateway_conf(nil, values, port, true, nil):gsub("worker_processes 1;", "worker_processes 2;")
    local_server.run_nginx(dir, conf, port, "tcp")
  end)
  teardown(function()
    pcall(local_server.stop, dir)
    support.stop(server)
  end)

  for _, variant in ipairs { { "cosocket", "" }, { "blocking, with a connection opened before fork", "&blocking=1" } } do
    it("gives every request its own customer's answer, in 2 workers (" .. variant[1] .. ")", function()
      local requests = {}
      for i = 1, 400 do
        requests[i] = { path = "/shared?customer=fork-" .. (i % COUNT + 1) .. variant[2] }
      end
      local crossed, failed, pids = 0, 0, {}
      for i, a in ipairs(gateway.burst(port, requests)) do
        local customer, events, pid = (a.body or ""):match("^(%S+) (%S+) (%d+)")
        if a.status ~= 200 or not tonumber(events) then
          failed = failed + 1
        else
          pids[pid] = true
          if customer ~= "fork-" .. (i % COUNT + 1) or tonumber(events) ~= i % COUNT + 1 then crossed = crossed + 1 end
        end
      end
      local workers = 0
      for _ in pairs(pids) do workers = workers + 1 end
      assert.equal(0, failed)
      assert.equal(0, crossed)
      assert.equal(2, workers)
    end)
  end
end)
