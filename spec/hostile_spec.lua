-- The client against a server that misbehaves on purpose (spec/support/hostile_server.lua, a raw
-- socket server in a subprocess on a free loopback port): every case ends with the documented
-- result, within the timeout, and the client stays usable afterwards. The checks shared with the
-- nginx transport (spec/openresty_hostile_spec.lua) are listed in spec/support/hostile.lua; the
-- ones here are libcurl's own.
local limitry = require "limitry"
local hostile = require "spec.support.hostile"
local socket = require "socket"
local support = require "spec.support.server"

local S, E = hostile.S, hostile.E
local TIMEOUT = 2

describe("a hostile server", function()
  local h, root

  setup(function()
    h = hostile.start(300)
    root = h.root
  end)

  teardown(function() hostile.stop(h) end)

  local function client(case, opts)
    local o = { api_key = hostile.KEY, base_url = root .. "/" .. case .. "/v1", timeout = TIMEOUT,
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

  local function control(what, case) return hostile.control(h, what, case) end

  local function fails(case, name, opts)
    local res, msg, err, elapsed = call(client(case, opts))
    assert.is_nil(res, case .. " gave a result")
    assert.is_table(err, case .. ": " .. tostring(msg))
    assert.equal(name, err.name, case .. ": " .. tostring(msg))
    assert.equal(msg, tostring(err))
    assert.is_nil(msg:find(hostile.KEY, 1, true))
    assert.is_true(elapsed < TIMEOUT + 1.5, case .. " took " .. elapsed .. " s")
    return err, msg, elapsed
  end

  it("answers normally on the control path", function()
    local res = assert(call(client("ok")))
    assert.is_number(res.totalEvents)
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
        m:add(core.new(), support.core_options(), url)
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
    local handle = core.new()
    local cfg = support.core_options()
    assert.equal(200, (handle:call(cfg, root .. "/ok/v1/usage?startDate=2024-01-01T00:00:00Z")))
    local before = control("hits", "ok")
    local status, kind = handle:call(cfg, "/ok/v1/usage?startDate=2024-01-01T00:00:00Z")
    assert.is_nil(status)
    assert.equal("usage", kind)
    assert.equal(before, control("hits", "ok"))
    handle:close()
  end)

  it("a 302 is an APIError and is not followed", function()
    local before = control("hits", "redirected")
    local err, msg = fails("redirect", "APIError", { max_retries = 2 })
    assert.equal(302, err.status)
    assert.equal(1, err.attempts)
    assert.matches("redirects are not followed", msg)
    assert.equal(before, control("hits", "redirected"))
  end)

  -- Issue #21 and what held before it, as on the nginx transport (spec/support/hostile.lua).
  describe("(the checks shared with nginx)", function()
    for _, t in ipairs(hostile.CHECKS) do
      it(t.title, function()
        local counter = hostile.counter(t)
        local before = control("hits", counter)
        local outs = hostile.run(hostile.args(h, t))
        local problem = hostile.verify(t, outs, control("hits", counter) - before)
        assert.is_nil(problem, problem)
      end)
    end
  end)

  describe("a server killed after reading a request (kill -9)", function()
    -- A server of its own, which exits once it has read the request after the warm-up.
    for _, retries in ipairs { 0, 2 } do
      it("a keyed batch it read is never reported as 'nothing was sent' (max_retries " .. retries .. ")", function()
        local dying = hostile.start(60)
        local outs = hostile.run { root = dying.root, case = "die", calls = "summary,batch", retries = retries }
        local log = hostile.log(dying)
        hostile.stop(dying)
        assert.is_table(outs[1].res, outs[1].msg)
        local out = outs[2]
        assert.matches("die: POST /v1/events/batch", log, 1, true)
        assert.equal("NetworkError", out.name, out.msg)
        assert.is_true(out.sent, out.msg)
        assert.equal(retries + 1, out.attempts)
        if retries == 0 then
          assert.matches("^NetworkError: connection lost after the request was sent; reconnecting failed: Connection refused", out.msg)
        else
          assert.matches("an earlier attempt may have reached the server)", out.msg, 1, true)
        end
      end)
    end

    it("a create it read fails once, sent = true, and is not retried", function()
      local dying = hostile.start(60)
      local outs = hostile.run { root = dying.root, case = "die", calls = "summary,create_quota", retries = 2 }
      local log = hostile.log(dying)
      hostile.stop(dying)
      assert.matches("die: POST /v1/quotas", log, 1, true)
      assert.equal(1, outs[2].attempts, outs[2].msg)
      assert.is_true(outs[2].sent)
    end)
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
