-- Non-blocking calls on the multi handle, against the real local server.
local limitry = require "limitry"
local support = require "spec.support.server"

local S, E = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"

describe("async calls", function()
  local server

  setup(function() server = support.start() end)
  teardown(function() support.stop(server) end)

  local function client(opts, fault)
    return support.client(server, "async", { backoff = 0.01, max_backoff = 0.05 }, opts, { ["X-Limitry-Fault"] = fault })
  end

  local function drive(c, limit)
    local deadline = support.now() + (limit or 10)
    while c:poll(0.05) > 0 do
      assert(support.now() < deadline, "requests did not finish")
    end
  end

  it("returns a request at once and delivers the same result as the blocking call", function()
    local c = client({}, "delay=300")
    local u = c:usage()
    local t0 = support.now()
    local req = u:start_summary { start_date = S, end_date = E, customer_id = "nobody" }
    assert.is_true(support.now() - t0 < 0.2)
    assert.is_false(req:done())
    assert.same({ nil, "pending" }, { req:result() })
    drive(c)
    assert.is_true(req:done())
    local res, msg, err = req:result()
    assert.is_nil(msg)
    assert.is_nil(err)
    assert.same(c:usage():get_summary(S, E, { customer_id = "nobody" }), res)
  end)

  it("calls the callback once, in every call form", function()
    local c = client()
    local u = c:usage()
    local got = {}
    u:start_breakdown("model", S, E, function(res) got[#got + 1] = res end)
    u:start_timeseries({ interval = "day", start_date = S, end_date = E }, function(res) got[#got + 1] = res end)
    u:start_summary(S, E, { model = "m" }, function(res) got[#got + 1] = res end)
    drive(c)
    assert.equal(3, #got)
    for _, r in ipairs(got) do assert.is_table(r) end
  end)

  it("runs many requests at once and reuses their connections afterwards", function()
    local c, id = client({}, "delay=400")
    local u = c:usage()
    local t0 = support.now()
    local reqs = {}
    for i = 1, 8 do reqs[i] = u:start_summary(S, E) end
    drive(c)
    local elapsed = support.now() - t0
    -- Eight 400 ms answers one after another would take 3.2 s.
    assert.is_true(elapsed < 2, "took " .. elapsed .. " s")
    for i = 1, 8 do reqs[i] = u:start_summary(S, E) end
    drive(c)
    for _, r in ipairs(reqs) do assert.is_table((r:result())) end
    local rec = support.recorded(server, id)
    assert.equal(16, rec.count)
    assert.is_true(rec.connections <= 8, rec.connections .. " connections")
  end)

  it("poll never blocks longer than its timeout", function()
    local c = client({}, "delay=1000")
    local req = c:usage():start_summary(S, E)
    local t0 = support.now()
    assert.equal(1, c:poll(0))
    local zero = support.now() - t0
    t0 = support.now()
    assert.equal(1, c:poll(0.1))
    local tenth = support.now() - t0
    assert.is_true(zero < 0.05, "poll(0) took " .. zero)
    assert.is_true(tenth >= 0.09 and tenth < 0.3, "poll(0.1) took " .. tenth)
    assert.is_false(req:done())
    req:cancel()
  end)

  it("tells a host loop which sockets to watch and when to call again", function()
    local c = client({}, "delay=300")
    assert.is_nil(c:next_timeout())
    local req = c:usage():start_summary(S, E)
    c:poll(0.05)
    local fds = c:fds()
    assert.is_true(#fds >= 1)
    assert.is_number(fds[1].fd)
    assert.is_true(fds[1].read or fds[1].write)
    local t = c:next_timeout()
    assert.is_number(t)
    assert.is_true(t >= 0)
    req:wait()
    assert.is_nil(c:next_timeout())
  end)

  it("retries like the blocking path", function()
    local c, id = client({}, "status=429;retry_after=0;times=1")
    local res = c:usage():start_summary(S, E):wait()
    assert.is_table(res)
    assert.equal(2, support.recorded(server, id).count)
    local c2, id2 = client({ max_retries = 2 }, "status=503")
    local _, msg, err = c2:usage():start_summary(S, E):wait()
    assert.equal("APIError", err.name)
    assert.equal(3, err.attempts)
    assert.equal(3, support.recorded(server, id2).count)
    assert.equal(msg, tostring(err))
  end)

  it("returns the same error values as the blocking path", function()
    local c = limitry.new { api_key = "lm_wrong", base_url = server.base_url }
    local _, _, err = c:usage():start_summary(S, E):wait()
    assert.equal("AuthenticationError", err.name)
    assert.equal(401, err.status)
    local t = client({ timeout = 0.3, max_retries = 0 }, "delay=3000")
    local _, _, terr = t:usage():start_summary(S, E):wait()
    assert.equal("TimeoutError", terr.name)
    local port = support.closed_port()
    local n = limitry.new { api_key = "lm_x_key", base_url = "http://127.0.0.1:" .. port .. "/v1", max_retries = 1, backoff = 0.01 }
    local _, _, nerr = n:usage():start_summary(S, E):wait()
    assert.equal("NetworkError", nerr.name)
    assert.equal(2, nerr.attempts)
  end)

  it("cancels without calling the callback", function()
    local c = client({}, "delay=2000")
    local called = false
    local req = c:usage():start_summary(S, E, function() called = true end)
    c:poll(0.05)
    assert.is_true(req:cancel())
    assert.is_false(req:cancel())
    assert.is_true(req:done())
    local res, msg, err = req:result()
    assert.is_nil(res)
    assert.equal("LimitryError: cancelled", msg)
    assert.equal("LimitryError", err.name)
    assert.equal(msg, err.msg)
    assert.equal(0, c:poll(0))
    assert.is_false(called)
  end)

  it("lets coroutines await results while the host keeps ticking", function()
    local c = client({}, "delay=200")
    local u = c:usage()
    local results, ticks = {}, 0
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = coroutine.create(function()
        local res = u:start_summary(S, E):await()
        results[i] = res
      end)
    end
    local deadline = support.now() + 10
    repeat
      ticks = ticks + 1
      for _, co in ipairs(tasks) do
        if coroutine.status(co) == "suspended" then assert(coroutine.resume(co)) end
      end
      c:poll(0.01)
      local alive = 0
      for _, co in ipairs(tasks) do if coroutine.status(co) ~= "dead" then alive = alive + 1 end end
    until alive == 0 or support.now() > deadline
    for i = 1, 3 do assert.is_table(results[i]) end
    assert.is_true(ticks > 5, "the host loop ran " .. ticks .. " ticks")
  end)

  it("close() cancels what is in flight and frees the handles", function()
    local c = client({}, "delay=2000")
    local req = c:usage():start_summary(S, E)
    c:poll(0.02)
    c:close()
    assert.is_true(req:done())
    assert.equal("LimitryError: cancelled", select(2, req:result()))
    assert.has_error(function() c:usage():start_summary(S, E) end, "limitry: this client is closed")
  end)

  it("a value the C core refuses names the caller's line at start, and no file on a retry", function()
    local c = client({ max_retries = 1 }, "status=503;times=1")
    c.max_response_size = 1.5 -- a field assigned after new is checked by the core only
    local ok, msg = pcall(c:usage().start_summary, c:usage(), S, E)
    assert.is_false(ok)
    -- The caller's line where the VM keeps it through tail calls (5.3+), never a library file.
    assert.matches("request option 'max_body' must be a whole number of bytes$", msg)
    assert.is_nil(msg:find("limitry/", 1, true), msg)
    if _VERSION ~= "Lua 5.1" then assert.matches("^spec/async_spec%.lua:%d+: ", msg) end
    c.max_response_size = 1e6
    local req = c:usage():start_summary(S, E) -- answered 503, then retried
    c.max_response_size = 1.5 -- the retry cannot start
    local _, rmsg, err = req:wait()
    assert.equal("LimitryError", err.name)
    assert.matches("could not start the retry: request option 'max_body'", rmsg, 1, true)
    assert.is_nil(rmsg:find(".lua:", 1, true))
    c:close()
  end)

  it("the core's multi hands back each transfer's owner, the handle when none (or false) is given", function()
    local core = require "limitry.core"
    local cfg = support.core_options { headers = { "Authorization: Bearer " .. server.api_key }, timeout_ms = 5000 }
    local url = server.base_url .. "/usage?startDate=" .. S .. "&endDate=" .. E
    local m, h1, h2, h3 = core.multi(), core.new(), core.new(), core.new()
    local owner = {}
    m:add(h1, cfg, url, nil, nil, true, owner)
    m:add(h2, cfg, url, nil, nil, true, false)
    m:add(h3, cfg, url, nil, nil, true)
    assert.equal(3, #m:owners())
    local got = {}
    for _ = 1, 500 do
      m:perform()
      local who, status = m:next_done()
      if who then
        assert.equal(200, status)
        got[#got + 1] = who
      end
      if #got == 3 then break end
      m:wait(10)
    end
    table.sort(got, function(a, b) return tostring(a) < tostring(b) end)
    local want = { owner, h2, h3 }
    table.sort(want, function(a, b) return tostring(a) < tostring(b) end)
    assert.same(want, got)
    assert.same({}, m:owners())
    -- a handle closed in flight leaves its owner listed until removed, so close() can cancel it
    m:add(h1, cfg, url, nil, nil, true, owner)
    h1:close()
    assert.same({ owner }, m:owners())
    m:remove(h1)
    assert.same({}, m:owners())
    m:close()
    h2:close()
    h3:close()
  end)

  it("checks arguments at once, like the blocking calls", function()
    local c = client()
    local ok, err = pcall(function() c:usage():start_breakdown("colour", S, E) end)
    assert.is_false(ok)
    assert.matches("group_by must be one of 'model', 'customer_id', 'event_type', 'provider' %(got 'colour'%)", err)
    assert.has_error(function() c:poll(-1) end, "client:poll: timeout must be a number of seconds >= 0")
  end)
end)
