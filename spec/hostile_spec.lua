-- The client against a server that misbehaves on purpose (spec/support/hostile_server.lua, a raw
-- socket server in a subprocess on a free loopback port): every case ends with the documented
-- result, within the timeout, and the client stays usable afterwards.
local limitry = require "limitry"
local support = require "spec.support.server"
local socket = require "socket"

local S, E = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
local TIMEOUT = 2
local NOT_HTTP = "the server's reply is not valid HTTP"
local HEADERS_TOO_LARGE = "response headers larger than the limit of 65536 bytes"

describe("a hostile server", function()
  local root, pid, dir

  setup(function()
    dir = support.tmpdir("hostile")
    local lua = jit and "luajit" or ("lua" .. _VERSION:sub(5))
    local p = assert(io.popen(("%s spec/support/hostile_server.lua %s/port 300 >%s/log 2>&1 & echo $!")
      :format(lua, dir, dir)))
    pid = tonumber(p:read("*l"))
    p:close()
    assert(pid, "hostile server did not start")
    local deadline = socket.gettime() + 15
    local port
    repeat
      local f = io.open(dir .. "/port")
      if f then port = f:read("*n") f:close() else socket.select(nil, nil, 0.02) end
    until port or socket.gettime() > deadline
    assert(port, "hostile server wrote no port")
    root = "http://127.0.0.1:" .. port
  end)

  teardown(function()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  end)

  local function client(case, opts)
    local o = { api_key = "lm_hostile_secret_key", base_url = root .. "/" .. case .. "/v1", timeout = TIMEOUT,
      connect_timeout = TIMEOUT, max_retries = 0, backoff = 0.01, max_backoff = 0.02 }
    for k, v in pairs(opts or {}) do o[k] = v end
    return limitry.new(o)
  end

  -- One summary call: res, msg, err and the seconds it took.
  local function call(c)
    local t0 = socket.gettime()
    local res, msg, err = c:usage():get_summary(S, E)
    return res, msg, err, socket.gettime() - t0
  end

  local function control(what, case)
    local status, body = support.http("GET", root .. "/_" .. what .. "/" .. case)
    assert.equal(200, status)
    return tonumber(body)
  end

  local function fails(case, name, opts)
    local res, msg, err, elapsed = call(client(case, opts))
    assert.is_nil(res, case .. " gave a result")
    assert.is_table(err, case .. ": " .. tostring(msg))
    assert.equal(name, err.name, case .. ": " .. tostring(msg))
    assert.equal(msg, tostring(err))
    assert.is_nil(msg:find("lm_hostile_secret_key", 1, true))
    assert.is_true(elapsed < TIMEOUT + 1.5, case .. " took " .. elapsed .. " s")
    return err, msg, elapsed
  end

  it("answers normally on the control path", function()
    local res = assert(call(client("ok")))
    assert.is_number(res.totalEvents)
  end)

  describe("slow drip", function()
    it("of the body is a TimeoutError within the timeout", function()
      local err, _, elapsed = fails("drip", "TimeoutError", { timeout = 1 })
      assert.equal("timeout", err.kind)
      assert.is_true(elapsed >= 0.9, "gave up after " .. elapsed .. " s, before the timeout")
    end)

    it("of the headers is a TimeoutError within the timeout", function()
      local err = fails("drip-headers", "TimeoutError", { timeout = 1 })
      assert.equal("timeout", err.kind)
    end)
  end)

  describe("oversized headers", function()
    it("endless header lines are a DecodeError too_large, not retried", function()
      local err = fails("endless-headers", "DecodeError", { max_retries = 2 })
      assert.equal("too_large", err.kind)
      assert.equal(HEADERS_TOO_LARGE, err.message)
      assert.equal(1, err.attempts)
    end)

    it("one 1 MiB header line is a DecodeError too_large, not retried", function()
      local before = control("hits", "long-header")
      local err = fails("long-header", "DecodeError", { max_retries = 2 })
      assert.equal("too_large", err.kind)
      assert.equal(HEADERS_TOO_LARGE, err.message)
      assert.equal(1, err.attempts)
      assert.equal(before + 1, control("hits", "long-header"))
    end)
  end)

  describe("compression bombs", function()
    for _, case in ipairs { "gzip-bomb", "deflate-bomb" } do
      it(case .. " (64 MiB of zeros) stops at max_response_size with a DecodeError too_large", function()
        local err, msg = fails(case, "DecodeError", { max_response_size = 1024 * 1024, max_retries = 2 })
        assert.equal("too_large", err.kind)
        assert.matches("larger than the limit of 1048576 bytes", msg)
        assert.equal(1, err.attempts)
      end)
    end
  end)

  -- libcurl sends a request again by itself when a reused connection dies before any answer;
  -- the URL it sends must be this call's, not the previous call's on the same handle.
  describe("a keep-alive connection closed as the next request arrives", function()
    local function month_range(m) return ("2024-%02d-01T00:00:00Z"):format(m), ("2024-%02d-01T00:00:00Z"):format(m + 1) end

    it("gets this call's URL sent again (blocking)", function()
      local u = client("drop-second"):usage()
      local before = control("hits", "drop-second")
      assert.equal(1, assert(u:get_summary(month_range(1))).totalEvents)
      assert.equal(3, assert(u:get_summary(month_range(3))).totalEvents)
      assert.equal(before + 3, control("hits", "drop-second"))
    end)

    it("gets this call's URL sent again (async)", function()
      local u = client("drop-second-async"):usage()
      local before = control("hits", "drop-second-async")
      assert.equal(1, assert(u:start_summary(month_range(1)):wait()).totalEvents)
      assert.equal(3, assert(u:start_summary(month_range(3)):wait()).totalEvents)
      assert.equal(before + 3, control("hits", "drop-second-async"))
    end)

    -- The raw core takes any URL libcurl takes; one without a scheme is libcurl's to guess again.
    it("gets a scheme-less URL sent again to the same place (raw core, multi)", function()
      local core = require "limitry.core"
      local m = core.multi()
      local function run(url)
        m:add(core.new(), {}, url)
        local deadline = socket.gettime() + TIMEOUT * 2
        while socket.gettime() < deadline do
          m:perform()
          local r = { m:next_done() }
          if r[1] ~= nil then return r[2], r[4] end
          m:wait(50)
        end
        error("no answer within " .. TIMEOUT * 2 .. " s")
      end
      local before = control("hits", "drop-second-core")
      for month = 1, 2 do
        local status, doc = run(("%s/drop-second-core/v1/usage?startDate=2024-%02d-01T00:00:00Z")
          :format(root:sub(#"http://" + 1), month))
        assert.equal(200, status)
        assert.equal(month, require("limitry.core").decode(doc).totalEvents)
      end
      assert.equal(before + 3, control("hits", "drop-second-core"))
      m:close()
    end)
  end)

  it("raw core: a URL without a host after an absolute one on the same handle is refused, not sent to the last host", function()
    local core = require "limitry.core"
    local h = core.new()
    assert.equal(200, (h:call({}, root .. "/ok/v1/usage?startDate=2024-01-01T00:00:00Z")))
    local before = control("hits", "ok")
    local status, kind = h:call({}, "/ok/v1/usage?startDate=2024-01-01T00:00:00Z")
    assert.is_nil(status)
    assert.equal("usage", kind)
    assert.equal(before, control("hits", "ok"))
    h:close()
  end)

  describe("lying Content-Length", function()
    it("longer than the body: a NetworkError, not a short result", function()
      local err = fails("cl-longer", "NetworkError")
      assert.equal("network", err.kind)
    end)

    it("shorter than the body: a DecodeError, and the rest is not taken as the next answer", function()
      local c = client("cl-shorter")
      local res, msg, err = call(c)
      assert.is_nil(res)
      assert.equal("DecodeError", err.name, msg)
      assert.equal(200, err.status)
      res, msg = call(c)
      assert.is_table(res, msg)
      assert.equal(control("hits", "cl-shorter"), res.totalEvents)
    end)
  end)

  describe("odd statuses", function()
    for _, s in ipairs { "000", "2000", "99" } do
      it(s .. " is a NetworkError: the reply is not valid HTTP", function()
        local err = fails("status-" .. s, "NetworkError")
        assert.equal("protocol", err.kind)
        assert.equal(NOT_HTTP, err.message)
      end)
    end

    it("600 is an APIError carrying the status", function()
      local err = fails("status-600", "APIError")
      assert.equal(600, err.status)
      assert.equal("odd status", err.message)
    end)

    it("1000 interim 100 Continue answers before the real one are skipped", function()
      local res, msg = call(client("1xx-storm"))
      assert.is_table(res, msg)
      assert.equal(control("hits", "1xx-storm"), res.totalEvents)
    end)

    it("an endless stream of 102 Processing is a TimeoutError within the timeout", function()
      -- Each interim answer is small and complete, so no size cap applies: the timeout ends it.
      local err = fails("1xx-endless", "TimeoutError", { timeout = 1 })
      assert.equal("timeout", err.kind)
    end)
  end)

  it("a 302 is an APIError and is not followed", function()
    local before = control("hits", "redirected")
    local err, msg = fails("redirect", "APIError", { max_retries = 2 })
    assert.equal(302, err.status)
    assert.equal(1, err.attempts)
    assert.matches("redirects are not followed", msg)
    assert.equal(before, control("hits", "redirected"))
  end)

  describe("replies that are not HTTP", function()
    for _, case in ipairs { "garbage", "http09" } do
      it(case .. " is a NetworkError of kind protocol", function()
        local err = fails(case, "NetworkError")
        assert.equal("protocol", err.kind)
        assert.equal(NOT_HTTP, err.message)
      end)
    end
  end)

  describe("a server speaking on an idle keep-alive connection", function()
    -- The first call is answered, then the server pushes bytes on the idle connection (the spec
    -- waits until it has); the second call must get its own answer over a fresh connection.
    for _, case in ipairs { "idle408", "idle408-open", "stray" } do
      it(case .. ": the next call still gets the right answer", function()
        local c = client(case)
        local first, msg = call(c)
        assert.is_table(first, msg)
        local pushed_before = first.totalEvents == 1 and 0 or control("pushed", case)
        local deadline = socket.gettime() + 5
        while control("pushed", case) <= pushed_before and socket.gettime() < deadline do
          socket.select(nil, nil, 0.01)
        end
        assert.is_true(control("pushed", case) > pushed_before, "the server never pushed")
        local second, msg2, err2 = call(c)
        assert.is_table(second, msg2)
        assert.is_nil(err2)
        assert.are_not.equal(666, second.totalEvents)
        assert.equal(control("hits", case), second.totalEvents)
      end)
    end
  end)
end)
