-- The client findings of issue 10 (items 1-10), each kept as a test that failed before its fix.
local limitry = require "limitry"
local core = require "limitry.core"
local support = require "spec.support.server"
local raw = require "spec.support.raw"

local S, E = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
local KEY_CHECK = "lm_hardening_secret_key"

local function raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
  return err
end

-- Every string anywhere in v (keys too), without recursion.
local function strings_in(v)
  local out, todo, seen = {}, { v }, {}
  while #todo > 0 do
    local t = table.remove(todo)
    if type(t) == "string" then
      out[#out + 1] = t
    elseif type(t) == "table" and not seen[t] then
      seen[t] = true
      for k, x in pairs(t) do todo[#todo + 1] = k; todo[#todo + 1] = x end
    end
  end
  return out
end

describe("hardening", function()
  local server

  setup(function() server = support.start() end)
  teardown(function() support.stop(server) end)

  local function client(extra)
    local o = { api_key = server.api_key, base_url = server.base_url, backoff = 0.01, max_backoff = 0.02, timeout = 5 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return limitry.new(o)
  end

  it("1. redacts the key at every depth the decoder allows", function()
    local key = server.api_key
    local depth = 190
    local body = '{"error":"nested","echo":' .. ("["):rep(depth) .. '"' .. key .. '"' .. ("]"):rep(depth) .. "}"
    local c = client { max_retries = 0, headers = { ["X-Limitry-Fault"] = support.json_fault(body, "status=400") } }
    local res, msg, err = c:usage():get_summary(S, E)
    assert.is_nil(res)
    assert.equal(400, err.status)
    local found_redacted = false
    for _, s in ipairs(strings_in(err)) do
      assert.is_nil(s:find(key, 1, true), "the key leaked in the error")
      if s == "[REDACTED]" then found_redacted = true end
    end
    assert.is_nil(msg:find(key, 1, true))
    assert.is_true(found_redacted)
    -- and the depth really is what the server sent
    local v, n = err.response.echo, 0
    while type(v) == "table" do v, n = v[1], n + 1 end
    assert.equal(depth, n)
    assert.equal("[REDACTED]", v)
  end)

  describe("2. a tiny timeout stays a timeout", function()
    it("blocking", function()
      local c = client { timeout = 0.0001, max_retries = 0, headers = { ["X-Limitry-Fault"] = "delay=3000" } }
      local t0 = support.now()
      local res, _, err = c:usage():get_summary(S, E)
      assert.is_nil(res)
      assert.equal("TimeoutError", err.name)
      assert.is_true(support.now() - t0 < 2, "took " .. (support.now() - t0) .. " s")
    end)

    it("async", function()
      local c = client { timeout = 0.0004, max_retries = 0, headers = { ["X-Limitry-Fault"] = "delay=3000" } }
      local t0 = support.now()
      local req = c:usage():start_summary(S, E)
      for _ = 1, 40 do
        if req:done() then break end
        c:poll(0.05)
      end
      assert.is_true(req:done(), "still pending after 2 s")
      local _, _, err = req:result()
      assert.equal("TimeoutError", err.name)
      assert.is_true(support.now() - t0 < 2)
    end)

    it("leaves no socket open and no entry in the socket registry when the connect times out", function()
      -- libcurl 7.88 closes a socket whose connect timed out without the close callback; an entry
      -- left behind could later name another file under the same number. Counted against what
      -- was open before: what earlier specs' clients still hold is theirs.
      collectgarbage()
      local open_before, kept_before = core.sockets()
      for _ = 1, 300 do
        local c = client { timeout = 0.001, connect_timeout = 0.001, max_retries = 0 }
        c:usage():get_summary(S, E)
        c:close()
      end
      collectgarbage()
      local open, kept = core.sockets()
      assert.equal(open_before, open)
      -- (Before: one entry more every few timeouts, 18 after 300.)
      assert.equal(kept_before, kept)
    end)

    it("reaches libcurl as at least 1 ms", function()
      local c = client { timeout = 0.0001, connect_timeout = 0.0001, max_retries = 0 }
      local watched = support.watch_core()
      c:usage():get_summary(S, E)
      watched.restore()
      local o = watched.configs[1] -- the configuration the client handed libcurl
      assert.equal(1, o.timeout_ms)
      assert.equal(1, o.connect_timeout_ms)
      c:close()
    end)
  end)

  describe("3. bytes waiting on an idle keep-alive connection are never an answer", function()
    local rs
    after_each(function() raw.stop(rs) end)

    local function check(mode, call)
      rs = raw.start(mode)
      local c = limitry.new { api_key = KEY_CHECK, base_url = rs.base_url, max_retries = 0, timeout = 5 }
      local first = assert(call(c))
      assert.equal(1, first.totalEvents)
      raw.push(rs)
      local second, msg = call(c)
      assert.is_nil(msg)
      assert.equal(2, second.totalEvents)
      local third, msg3 = call(c)
      assert.is_nil(msg3)
      assert.equal(2, third.totalEvents)
      assert.equal(2, raw.connections(rs))
      c:close()
    end

    local function blocking(c) return c:usage():get_summary(S, E) end
    local function async(c) return c:usage():start_summary(S, E):wait() end

    it("a complete answer pushed unasked (blocking)", function() check("stale_bytes", blocking) end)
    it("a 408 sent on the idle connection (blocking)", function() check("stale_408", blocking) end)
    it("a complete answer pushed unasked (async)", function() check("stale_bytes", async) end)
    it("a 408 sent on the idle connection (async)", function() check("stale_408", async) end)

    it("connections of transfers in flight are never taken for stale ones", function()
      local id = support.test_id("busy")
      local c = client { max_retries = 0, headers = { ["X-Limitry-Fault"] = "delay=20", ["X-Limitry-Test-Id"] = id } }
      local reqs = {}
      for round = 1, 3 do
        for _ = 1, 8 do reqs[#reqs + 1] = c:usage():start_summary(S, E) end
        for _ = 1, 100 do -- until the server has every request of this round (bounded)
          c:poll(0.005)
          if support.recorded(server, id).count >= 8 * round then break end
        end
        -- Answers arrive and wait unread in the sockets of transfers still in flight; the next
        -- round's starts look for stale idle connections and must leave these alone.
        core.sleep(0.1)
      end
      for i, req in ipairs(reqs) do
        local res, msg = req:wait()
        assert.is_nil(msg, "request " .. i)
        assert.equal(0, res.totalEvents)
      end
      assert.equal(24, support.recorded(server, id).count)
      c:close()
    end)

    it("a 408 answer is retried once", function()
      local id = support.test_id("408")
      local c = client { max_retries = 3, headers = { ["X-Limitry-Fault"] = "status=408;times=5", ["X-Limitry-Test-Id"] = id } }
      local res, _, err = c:usage():get_summary(S, E)
      assert.is_nil(res)
      assert.equal(408, err.status)
      assert.equal(2, err.attempts)
      assert.equal(2, support.recorded(server, id).count)
    end)
  end)

  describe("4. every number is bounded", function()
    it("rejects options that would overflow in C", function()
      raises("timeout must be a positive number", limitry.new, { api_key = "k", timeout = 1e16 })
      raises("connect_timeout must be a positive number", limitry.new, { api_key = "k", connect_timeout = 1e7 })
      raises("timeout must be a positive number", limitry.new, { api_key = "k", timeout = 0 / 0 })
      raises("max_response_size must be a positive whole number", limitry.new, { api_key = "k", max_response_size = 2 ^ 64 })
      raises("max_response_size must be a positive whole number", limitry.new, { api_key = "k", max_response_size = 0.5 })
      raises("max_response_size must be a positive whole number", limitry.new, { api_key = "k", max_response_size = 0 })
      raises("backoff must be a non%-negative number", limitry.new, { api_key = "k", backoff = 1e300 })
      raises("max_backoff must be a non%-negative number", limitry.new, { api_key = "k", max_backoff = 1e7 })
      raises("max_retry_after must be a non%-negative number", limitry.new, { api_key = "k", max_retry_after = math.huge })
      assert(limitry.new { api_key = "k", timeout = 1e6, max_response_size = 2 ^ 53, backoff = 1e6 })
    end)

    it("rejects unix times past year 9999 as an argument error", function()
      local u = client():usage()
      raises("start_date must be a finite, non%-negative unix time", u.get_summary, u, 1e17, E)
      raises("end_date must be a finite, non%-negative unix time", u.get_summary, u, S, 253402300800)
      local ok = pcall(u.get_summary, u, 0, 253402300799)
      assert.is_true(ok)
    end)

    it("poll(NaN) raises", function()
      local c = client()
      raises("client:poll: timeout must be a number of seconds >= 0", c.poll, c, 0 / 0)
    end)

    it("a huge Retry-After is refused at once, not slept", function()
      local c = client { max_retries = 2, headers = { ["X-Limitry-Fault"] = "status=429;retry_after=" .. ("9"):rep(400) } }
      local t0 = support.now()
      local res, _, err = c:usage():get_summary(S, E)
      assert.is_nil(res)
      assert.equal("RateLimitError", err.name)
      assert.equal(1, err.attempts)
      assert.is_true(support.now() - t0 < 1)
    end)

    it("the C core validates what it is handed", function()
      local h = core.new()
      local url = server.base_url .. "/usage?startDate=" .. S .. "&endDate=" .. E
      raises("timeout_ms", h.request, h, support.core_options { url = url, timeout_ms = 1e300 })
      raises("timeout_ms", h.request, h, support.core_options { url = url, timeout_ms = 0 / 0 })
      raises("max_body", h.request, h, support.core_options { url = url, max_body = 2 ^ 64 })
      raises("max_body", h.request, h, support.core_options { url = url, max_body = 0 })
      -- C has no defaults of its own: the facade owns every one
      raises("request option 'timeout_ms' must be a number", h.request, h, { url = url })
      raises("request option 'verify' must be a boolean", h.request, h, support.core_options { url = url, verify = 1 })
      local m = core.multi()
      local t0 = core.now()
      assert.equal(0, m:wait(1e300)) -- nothing attached: returns at once, no overflow
      assert.is_true(core.now() - t0 < 0.5)
      m:close()
      h:close()
    end)
  end)

  it("5. decodes JSON numbers longer than 63 characters exactly", function()
    assert.equal(1e99, core.decode("[1" .. ("0"):rep(99) .. "]")[1])
    assert.equal(1e5, core.decode("[1." .. ("0"):rep(80) .. "1e5]")[1])
    local tiny = core.decode("[-0." .. ("0"):rep(300) .. "1]")[1]
    assert.equal(-1e-301, tiny)
    assert.is_true(tiny < 0)
    -- 64+ characters just above the halfway point between 1 and the next double
    assert.equal(1 + 2 ^ -52, core.decode("[1.00000000000000011102230246251565404236316680908203125000000001]")[1])
  end)

  describe("6. credentials in base_url", function()
    it("are never shown by tostring, base_url or error messages", function()
      local port = support.closed_port()
      local c = limitry.new { api_key = "k", base_url = "http://alice:pa55word@127.0.0.1:" .. port .. "/v1", max_retries = 0 }
      assert.is_nil(tostring(c):find("pa55word", 1, true))
      assert.is_nil(tostring(c):find("alice", 1, true))
      assert.equal("http://127.0.0.1:" .. port .. "/v1", c.base_url)
      local res, msg, err = c:usage():get_summary(S, E)
      assert.is_nil(res)
      assert.equal("NetworkError", err.name)
      assert.matches("127%.0%.0%.1:" .. port, msg)
      for _, s in ipairs(strings_in(err)) do assert.is_nil(s:find("pa55word", 1, true)) end
    end)

    it("are still used for the request", function()
      local id = support.test_id("userinfo")
      local root = server.base_url:gsub("^http://", "http://alice:pa55word@")
      local c = limitry.new { api_key = server.api_key, base_url = root, headers = { ["X-Limitry-Test-Id"] = id } }
      assert(c:usage():get_summary(S, E))
      assert.equal(1, support.recorded(server, id).count)
    end)
  end)

  describe("7. honest errors", function()
    local rs
    after_each(function() raw.stop(rs) end)

    local function reply_error(reply, max_retries)
      rs = raw.start("canned", reply)
      local c = limitry.new { api_key = KEY_CHECK, base_url = rs.base_url, max_retries = max_retries or 1, backoff = 0.01, timeout = 5 }
      local res, msg, err = c:usage():get_summary(S, E)
      assert.is_nil(res)
      return msg, err
    end

    for name, reply in pairs {
      ["garbage bytes"] = "hello there, this is not HTTP\r\n\r\n",
      ["HTTP/0.9"] = '{"totalEvents":1}',
      ["status 000"] = "HTTP/1.1 000 OK\r\nContent-Length: 0\r\n\r\n",
      ["status 2000"] = "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    } do
      it("a reply that is not HTTP (" .. name .. ") is a retried NetworkError", function()
        local msg, err = reply_error(reply, 1)
        assert.equal("NetworkError", err.name)
        assert.equal("protocol", err.kind)
        assert.equal("the server's reply is not valid HTTP", err.message)
        assert.equal(2, err.attempts)
        assert.matches("^NetworkError: the server's reply is not valid HTTP", msg)
      end)
    end

    it("headers over 64 KiB are a DecodeError, not retried", function()
      local lines = {}
      for i = 1, 80 do lines[i] = ("X-Filler-%d: %s\r\n"):format(i, ("x"):rep(1000)) end
      local msg, err = reply_error("HTTP/1.1 200 OK\r\n" .. table.concat(lines) .. "Content-Length: 2\r\n\r\n{}", 2)
      assert.equal("DecodeError", err.name)
      assert.equal("too_large", err.kind)
      assert.equal("response headers larger than the limit of 65536 bytes", err.message)
      assert.equal(1, err.attempts)
      assert.matches("^DecodeError: response headers larger", msg)
    end)

    it("a 1 MB header line is the same DecodeError", function()
      local _, err = reply_error("HTTP/1.1 200 OK\r\nX-Huge: " .. ("y"):rep(1024 * 1024) .. "\r\nContent-Length: 2\r\n\r\n{}", 2)
      assert.equal("DecodeError", err.name)
      assert.equal("too_large", err.kind)
      assert.equal("response headers larger than the limit of 65536 bytes", err.message)
      assert.equal(1, err.attempts)
    end)

    it("a filter over 8 KiB raises an argument error naming it", function()
      local u = client():usage()
      raises("customer_id must be at most 8192 bytes", u.get_summary, u, S, E, { customer_id = ("c"):rep(10 * 1024 * 1024) })
      raises("model must be at most 8192 bytes", u.start_summary, u, S, E, { model = ("m"):rep(8193) })
    end)

    it("an option libcurl refuses raises instead of being ignored", function()
      local h = core.new()
      raises("libcurl refused the request option CURLOPT_URL",
        h.request, h, support.core_options { url = "http://127.0.0.1/" .. ("a"):rep(9 * 1024 * 1024) })
      h:close()
    end)
  end)

  describe("8. limitry.core does not trust its options table", function()
    local url
    before_each(function() url = server.base_url .. "/usage?startDate=" .. S .. "&endDate=" .. E end)

    it("ignores values behind __index (no metamethod runs)", function()
      local h = core.new()
      local calls = 0
      local opts = setmetatable({}, { __index = function(_, k)
        calls = calls + 1
        if k == "url" then return url .. "&x=" .. ("z"):rep(100) end
      end })
      raises("request option 'url' must be a string", h.request, h, opts)
      assert.equal(0, calls)
      h:close()
    end)

    it("reads headers raw, and sends them", function()
      local h = core.new()
      local id = support.test_id("raw-headers")
      local headers = { "Authorization: Bearer " .. server.api_key, "X-Limitry-Test-Id: " .. id }
      local proxied = setmetatable({}, { __index = function(_, i) return headers[i] end, __len = function() return 2 end })
      local status = h:request(support.core_options { url = url, headers = proxied })
      assert.equal(401, status) -- nothing raw in the proxy table: no Authorization sent
      status = h:request(support.core_options { url = url, headers = headers })
      assert.equal(200, status)
      assert.equal(1, support.recorded(server, id).count)
      h:close()
    end)
  end)

  describe("10. async", function()
    it("wait() returns when multi:add raises on a retry", function()
      local c = client { max_retries = 2, headers = { ["X-Limitry-Fault"] = "status=503;times=1" } }
      local req = c:usage():start_summary(S, E)
      -- From now on every add fails the way a refused option or a failed curl_multi_add_handle does.
      local watched = support.watch_core()
      watched.fail_add = "curl_multi_add_handle failed"
      for _ = 1, 100 do
        if req:done() then break end
        c:poll(0.05)
      end
      assert.is_true(req:done(), "the request never finished")
      local res, msg, err = req:wait()
      assert.is_nil(res)
      assert.equal("LimitryError", err.name)
      assert.matches("could not start the retry: .*curl_multi_add_handle failed", msg)
      assert.equal(0, c:poll(0))
      watched.restore()
      c:close()
    end)

    it("start_* raises when multi:add raises, leaving nothing pending", function()
      local c = client()
      local ok = c:usage():start_summary(S, E):wait()
      assert(ok)
      local watched = support.watch_core()
      watched.fail_add = "boom in add"
      raises("boom in add", c:usage().start_summary, c:usage(), S, E)
      watched.restore()
      assert.equal(0, c:poll(0)) -- nothing pending
      assert.is_nil(c:next_timeout())
      c:close()
    end)

    -- Sockets this process holds (the pipes and files of the helpers themselves do not count).
    local function open_fds()
      local f = assert(io.open("/proc/self/stat"))
      local pid = f:read("*l"):match("^(%d+)")
      f:close()
      local p = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null | grep -c 'socket:'")
      local n = tonumber(p:read("*a"))
      p:close()
      return n
    end

    it("a client dropped without close() is collected and frees its requests and sockets", function()
      collectgarbage()
      collectgarbage()
      local before = open_fds()
      local weak = setmetatable({}, { __mode = "v" })
      local id = support.test_id("dropped")
      do
        local c = client { headers = { ["X-Limitry-Fault"] = "delay=5000", ["X-Limitry-Test-Id"] = id } }
        local reqs = {}
        for i = 1, 4 do reqs[i] = c:usage():start_summary(S, E) end
        for _ = 1, 20 do c:poll(0.01) end
        weak.client, weak.req = c, reqs[1]
        assert.equal(4, #c:fds())
        assert.is_true(open_fds() >= before + 4)
      end
      for _ = 1, 4 do collectgarbage() end
      assert.is_nil(weak.client, "the client was not collected")
      assert.is_nil(weak.req, "a request was not collected")
      assert.is_true(open_fds() <= before, "sockets still open: " .. open_fds() .. " > " .. before)
    end)
  end)
end)
