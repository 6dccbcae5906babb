-- limitry.recorder in a plain Lua host, against the real local server over loopback: batching,
-- retries, the bounded queue, invalid events isolated and dead-lettered, the spool across a kill -9,
-- and argument errors.
local limitry = require "limitry"
local recorder = require "limitry.recorder"
local core = require "limitry.core"
local support = require "spec.support.server"
local socket = require "socket"

local WIDE = { "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z" }

describe("limitry.recorder (plain Lua host)", function()
  local server, admin

  setup(function()
    server = support.start()
    admin = limitry.new { api_key = server.api_key, base_url = server.base_url }
  end)
  teardown(function() support.stop(server) end)

  -- A recorder whose batch calls the server records under a fresh test id; headers: more fault headers.
  local function new(opts, headers)
    local id = support.test_id("rec")
    local o = { client = { api_key = server.api_key, base_url = server.base_url,
      headers = { ["X-Limitry-Test-Id"] = id } }, backoff = 0.05, max_backoff = 0.2 }
    for k, v in pairs(headers or {}) do o.client.headers[k] = v end
    for k, v in pairs(opts or {}) do o[k] = v end
    return recorder.new(o), id
  end

  local function usage_of(customer) return assert(admin:customers():get_usage(customer, WIDE[1], WIDE[2])) end

  it("delivers every event once, in batches of at most batch_size, each event keyed when recorded", function()
    local r, id = new { batch_size = 250 } -- the server records bodies of at most 64 KiB
    local customer = support.test_id("batches")
    for i = 1, 1000 do assert.is_true(r:record { customer_id = customer, event_type = "call", input_tokens = i }) end
    assert.is_true(r:flush(10))
    local u = usage_of(customer)
    assert.equal(1000, u.totalEvents)
    assert.equal(1000 * 1001 / 2, u.totalInputTokens)
    local requests = support.recorded(server, id).requests
    assert.equal(4, #requests)
    local keys = {}
    for _, req in ipairs(requests) do
      assert.equal("/v1/events/batch", req.uri)
      local body = assert(core.decode(req.body))
      assert.is_true(#body.events <= 250)
      for _, ev in ipairs(body.events) do
        assert.is_string(ev.idempotencyKey)
        assert.is_nil(keys[ev.idempotencyKey], "a key given twice")
        keys[ev.idempotencyKey] = true
      end
    end
    local s = r:stats()
    assert.same({ 1000, 1000, 0, 0, 0 }, { s.queued, s.sent, s.refused, s.dead_lettered, s.depth })
    assert.is_true(r:close())
  end)

  it("sends whole batches while one is in flight, not what happens to be queued", function()
    local r, id = new({ batch_size = 100, flush_interval = 60, concurrency = 2 }, { ["X-Limitry-Fault"] = "delay=200" })
    local customer = support.test_id("whole")
    for i = 1, 350 do
      r:record { customer_id = customer, event_type = "call", input_tokens = i }
      if i % 10 == 0 then r:tick() end
    end
    assert.is_true(r:flush(10))
    local sizes = {}
    for _, req in ipairs(support.recorded(server, id).requests) do sizes[#sizes + 1] = #assert(core.decode(req.body)).events end
    assert.same({ 100, 100, 100, 50 }, sizes)
    r:close()
  end)

  it("sends a partial batch after flush_interval, driven by tick() alone", function()
    local r = new { flush_interval = 0.1 }
    local customer = support.test_id("tick")
    for _ = 1, 3 do r:record { customer_id = customer, event_type = "call" } end
    local deadline = socket.gettime() + 5
    while r:tick() > 0 and socket.gettime() < deadline do socket.sleep(0.01) end
    assert.equal(0, r:tick())
    assert.equal(3, usage_of(customer).totalEvents)
    r:close()
  end)

  it("never blocks in tick() while Limitry is slow", function()
    local r = new({ flush_interval = 0 }, { ["X-Limitry-Fault"] = "delay=1500" })
    local customer = support.test_id("slow")
    r:record { customer_id = customer, event_type = "call" }
    local worst = 0
    local deadline = socket.gettime() + 5
    while r:tick() > 0 and socket.gettime() < deadline do
      local t0 = socket.gettime()
      r:tick()
      worst = math.max(worst, socket.gettime() - t0)
      socket.sleep(0.005)
    end
    assert.equal(1, usage_of(customer).totalEvents)
    assert.is_true(worst < 0.1, "a tick took " .. worst .. " s")
    r:close()
  end)

  it("retries a failed batch with backoff, honouring Retry-After, and counts it once", function()
    local failures = {}
    local r, id = new({ log = function() end, on_failure = function(err, n) failures[#failures + 1] = { err.status, n } end },
      { ["X-Limitry-Fault"] = "status=503;retry_after=1;times=2" })
    local customer = support.test_id("retry")
    for _ = 1, 10 do r:record { customer_id = customer, event_type = "call" } end
    local t0 = socket.gettime()
    assert.is_true(r:flush(10))
    assert.is_true(socket.gettime() - t0 >= 1.9, "Retry-After: 1 was not waited out twice")
    assert.equal(10, usage_of(customer).totalEvents)
    assert.equal(3, support.recorded(server, id).count)
    assert.equal(20, r:stats().retried)
    assert.same({ { 503, 10 }, { 503, 10 } }, failures)
    r:close()
  end)

  it("isolates an event Limitry refuses as invalid, delivers the rest and dead-letters it with the reason", function()
    local dead = {}
    local r = new { dead_letter = function(json, reason, tag) dead[#dead + 1] = { json, reason, tag } end, log = function() end }
    local customer = support.test_id("dead")
    for i = 1, 10 do
      if i == 7 then
        assert.is_true(r:record_json('{"customerId":"' .. customer .. '","eventType":"call","inputTokens":-1,"idempotencyKey":"bad-'
          .. customer .. '"}', "line 7"))
      else
        r:record { customer_id = customer, event_type = "call", input_tokens = i }
      end
    end
    assert.is_true(r:flush(10))
    local u = usage_of(customer)
    assert.equal(9, u.totalEvents)
    assert.equal(55 - 7, u.totalInputTokens)
    assert.equal(1, #dead)
    assert.matches('"inputTokens":%-1', dead[1][1])
    assert.matches("inputTokens must be a non%-negative integer", dead[1][2])
    assert.equal("line 7", dead[1][3])
    assert.equal(1, r:stats().dead_lettered)
    r:close()
  end)

  it("refuses new events when the queue is full, counting each, and never drops old ones", function()
    local logged = {}
    local r = recorder.new { client = { api_key = "k", base_url = "http://127.0.0.1:" .. support.closed_port() .. "/v1" },
      max_queued = 5, log = function(level, msg) logged[#logged + 1] = level .. ": " .. msg end }
    for i = 1, 5 do assert.is_true(r:record { customer_id = "c", event_type = "call", input_tokens = i }) end
    for _ = 1, 3 do
      local ok, msg = r:record { customer_id = "c", event_type = "call" }
      assert.is_nil(ok)
      assert.equal("limitry.recorder: queue full", msg)
    end
    local s = r:stats()
    assert.equal(5, s.depth)
    assert.equal(3, s.refused)
    assert.equal(1, #logged) -- one line, however many refusals (log_interval)
    assert.matches("queue full", logged[1])
    r:close(0)
  end)

  it("keeps undelivered events in the spool for the next start", function()
    local spool = support.tmpdir("spool") .. "/events.spool"
    local down = { api_key = server.api_key, base_url = "http://127.0.0.1:" .. support.closed_port() .. "/v1" }
    local customer = support.test_id("spool")
    local r = recorder.new { client = down, spool = spool, log = function() end }
    for i = 1, 50 do r:record { customer_id = customer, event_type = "call", input_tokens = i } end
    local ok, msg = r:close(0.2)
    assert.is_nil(ok)
    assert.matches("50 events not delivered", msg)
    local again = recorder.new { client = { api_key = server.api_key, base_url = server.base_url }, spool = spool }
    assert.equal(50, again:stats().restored)
    assert.is_true(again:close(10))
    local u = usage_of(customer)
    assert.equal(50, u.totalEvents)
    assert.equal(1275, u.totalInputTokens)
    -- Nothing is left to send a third time.
    assert.equal(0, recorder.new { client = { api_key = server.api_key, base_url = server.base_url }, spool = spool }:stats().restored)
  end)

  it("delivers events written in the recorder's shorthand as their JSON", function()
    local code = {}
    for c, text in pairs(recorder.SHORTHAND) do code[text] = c end
    local customer = support.test_id("short")
    local r = new()
    for i = 1, 3 do
      assert.is_true(r:record_json(code['{"customerId":"'] .. customer .. code['","eventType":'] .. '"call"'
        .. code[',"idempotencyKey":"'] .. customer .. "-" .. i .. code['","timestamp":"'] .. '2026-01-01T00:00:00Z"'
        .. code[',"inputTokens":'] .. i .. code[',"properties":{'] .. '"k":"v"}}'))
    end
    assert.is_true(r:close(10))
    local u = usage_of(customer)
    assert.equal(3, u.totalEvents)
    assert.equal(6, u.totalInputTokens)
  end)

  it("says the events left are lost when a recorder without a spool is closed", function()
    local down = { api_key = server.api_key, base_url = "http://127.0.0.1:" .. support.closed_port() .. "/v1" }
    local r = recorder.new { client = down, log = function() end }
    for i = 1, 3 do r:record { customer_id = "c", event_type = "call", input_tokens = i } end
    local ok, msg = r:close(0.2)
    assert.is_nil(ok)
    assert.equal("limitry.recorder: 3 events not delivered, lost (no spool)", msg)
  end)

  it("delivers the items of an older recorder's spool ('0|' and a tag in front of each event)", function()
    local spool = support.tmpdir("spool-old") .. "/events.spool"
    local customer = support.test_id("spool-old")
    local f = assert(io.open(spool, "w"))
    for i = 1, 3 do
      local json = limitry.encode_event { customer_id = customer, event_type = "call", input_tokens = i,
        idempotency_key = customer .. "-" .. i }
      local item = (i == 3 and "4|tag3" or "0|") .. json
      f:write("R ", #item, "\n", item, "\n")
    end
    f:close()
    local delivered = {}
    local r = recorder.new { client = { api_key = server.api_key, base_url = server.base_url }, spool = spool,
      on_delivered = function(tags) for _, t in ipairs(tags) do delivered[#delivered + 1] = t end end }
    assert.equal(3, r:stats().restored)
    assert.is_true(r:close(10))
    local u = usage_of(customer)
    assert.equal(3, u.totalEvents)
    assert.equal(6, u.totalInputTokens)
    assert.same({ "tag3" }, delivered)
  end)

  it("loses no recorded event and counts none twice when the host is killed -9 half way (spool)", function()
    local dir = support.tmpdir("killed")
    local customer = support.test_id("killed")
    local N = 20000
    local lua = jit and "luajit" or ("lua" .. _VERSION:sub(5))
    local env = string.format("LIMITRY_API_KEY=%s LIMITRY_BASE_URL=%s", server.api_key, server.base_url)
    -- The host holds after 3N/4 events: recording 10,000 takes well under a second, less than a
    -- loaded machine may take to notice N/2 and kill.
    local p = assert(io.popen(string.format("%s %s spec/support/recorder_host.lua record %s/spool %s %d %s/progress %d >/dev/null 2>&1 & echo $!",
      env, lua, dir, customer, N, dir, 3 * N / 4)))
    local pid = tonumber(p:read("*l"))
    p:close()
    local function progress()
      local f = io.open(dir .. "/progress")
      if not f then return 0 end
      local last = 0
      for line in f:lines() do last = tonumber(line) or last end
      f:close()
      return last
    end
    local deadline = socket.gettime() + 60
    while progress() < N / 2 and socket.gettime() < deadline do socket.sleep(0.01) end
    os.execute("kill -9 " .. pid)
    socket.sleep(0.2)
    local recorded = progress()
    assert.is_true(recorded >= N / 2 and recorded <= 3 * N / 4, "killed at " .. recorded)
    local rc = os.execute(env .. " " .. lua .. " spec/support/recorder_host.lua drain " .. dir .. "/spool >/dev/null 2>&1")
    assert.is_true(rc == true or rc == 0, "the drain run failed")
    local u = usage_of(customer)
    -- Every event whose record() returned is there once; the kill may have come between a record()
    -- and its progress line, so one more (the next) may be there too.
    local sum = recorded * (recorded + 1) / 2
    local ok = (u.totalEvents == recorded and u.totalInputTokens == sum)
      or (u.totalEvents == recorded + 1 and u.totalInputTokens == sum + recorded + 1)
    assert.is_true(ok, string.format("recorded %d, Limitry holds %d events, %d tokens", recorded, u.totalEvents, u.totalInputTokens))
  end)

  it("raises on wrong arguments, naming them", function()
    assert.has_error(function() recorder.new { batch_size = 1001 } end, "limitry.recorder: batch_size must be a whole number from 1 to 1000")
    assert.has_error(function() recorder.new { colour = 1 } end,
      "limitry.recorder: unknown option 'colour' (allowed: backoff, batch_size, budget, client, clock, concurrency, dead_letter, dict, "
      .. "flush_interval, log, log_interval, max_backoff, max_queued, max_retry_after, on_delivered, on_failure, prefix, "
      .. "shutdown_timeout, "
      .. "spool, timeout)")
    assert.has_error(function() recorder.new { dict = "limitry" } end,
      "limitry.recorder: dict needs nginx (lua-nginx-module); leave it out in a plain Lua host")
    local r = recorder.new { client = { api_key = "k" } }
    assert.has_error(function() r:record "x" end, "limitry.recorder: record expects an event table (got string)")
    assert.has_error(function() r:record { customer_id = "c" } end, "recorder:record: event_type is required")
    assert.has_error(function() r:record { customer_id = "c", event_type = "e", input_tokens = -1 } end,
      "recorder:record: input_tokens must be a whole number from 0 to 2^53 - 1 (got -1)")
    assert.has_error(function() r:record { customer_id = "c", event_type = "e", idempotency_key = false } end,
      "limitry.recorder: events need an idempotency key (leave idempotency_key out to get one)")
    assert.has_error(function() r.record({ customer_id = "c", event_type = "e" }) end,
      "limitry.recorder: call it as recorder:record(event)")
    assert.has_error(function() r:record_json "not json" end, "limitry.recorder: record_json expects an event's JSON object text")
    r:close(0)
  end)
end)
