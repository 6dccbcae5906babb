-- The `log` option (issue #17, item 8): one entry per attempt, on the blocking and the multi-handle
-- transports (the cosocket and worker-thread ones: spec/openresty_spec.lua), saying what was asked,
-- what came back, how long it took and whether another attempt follows; never the key, never the query.
local limitry = require "limitry"
local support = require "spec.support.server"

local S, E = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"

describe("the log option", function()
  local server
  setup(function() server = support.start() end)
  teardown(function() support.stop(server) end)

  -- A client whose entries land in the returned list, with faults (X-Limitry-Fault) if given.
  local function logged(opts, fault)
    local entries = {}
    local o = { backoff = 0.01, max_backoff = 0.02, log = function(e) entries[#entries + 1] = e end }
    for k, v in pairs(opts or {}) do o[k] = v end
    local c = support.client(server, "log", o, nil, { ["X-Limitry-Fault"] = fault })
    return c, entries
  end

  local function no_secret(entries, key)
    for _, e in ipairs(entries) do
      for k, v in pairs(e) do
        assert.is_nil(tostring(v):find(key, 1, true), k)
        assert.is_nil(tostring(k):find(key, 1, true))
      end
      assert.is_nil(tostring(e):find(key, 1, true))
    end
  end

  for _, how in ipairs { "blocking", "async" } do
    local function summary(c, ...)
      if how == "blocking" then return c:usage():get_summary(...) end
      return c:usage():start_summary(...):wait()
    end
    local transport = how == "blocking" and "curl" or "multi"

    it("logs one entry per attempt, with the retry and its delay (" .. how .. ")", function()
      local c, entries = logged({ max_retries = 2 }, "status=503;times=2")
      local res = assert(summary(c, S, E, { customer_id = "secret-customer" }))
      assert.equal(0, res.totalEvents)
      assert.equal(3, #entries)
      for i, e in ipairs(entries) do
        assert.equal("GET", e.method)
        assert.equal("/usage", e.path) -- no query: its values carry customer ids and cursors
        assert.equal(i, e.attempt)
        assert.equal(transport, e.transport)
        assert.is_number(e.duration)
        assert.is_true(e.duration >= 0 and e.duration < 5)
      end
      assert.equal(503, entries[1].status)
      assert.equal("APIError", entries[1].error)
      assert.equal("injected 503", entries[1].message)
      assert.is_true(entries[1].retry)
      assert.is_true(entries[1].retry_in > 0 and entries[1].retry_in <= 0.01)
      assert.is_true(entries[2].retry)
      assert.equal(200, entries[3].status)
      assert.is_nil(entries[3].error)
      assert.is_false(entries[3].retry)
      assert.is_nil(entries[3].retry_in)
      assert.matches("^limitry: GET /usage %-> 503 APIError %(attempt 1, [%d.]+ ms, " .. transport
        .. "%): injected 503; retry in 0%.0%d%d s$", tostring(entries[1]))
      assert.matches("^limitry: GET /usage %-> 200 %(attempt 3, [%d.]+ ms, " .. transport .. "%)$", tostring(entries[3]))
      for _, e in ipairs(entries) do assert.is_nil(tostring(e):find("secret-customer", 1, true)) end
      no_secret(entries, server.api_key)
    end)

    it("logs the last attempt of a failure as not retried, and a Retry-After as its delay (" .. how .. ")", function()
      local c, entries = logged({ max_retries = 1 }, "status=429;retry_after=0")
      local _, _, err = summary(c, S, E)
      assert.equal("RateLimitError", err.name)
      assert.equal(2, #entries)
      assert.equal(429, entries[1].status)
      assert.equal("RateLimitError", entries[1].error)
      assert.equal(0, entries[1].retry_in)
      assert.is_false(entries[2].retry)

      local dead = limitry.new { api_key = server.api_key, base_url = "http://127.0.0.1:" .. support.closed_port() .. "/v1",
        max_retries = 0, log = function(e) entries[#entries + 1] = e end }
      entries = {}
      summary(dead, S, E)
      assert.equal(1, #entries)
      assert.is_nil(entries[1].status)
      assert.equal("NetworkError", entries[1].error)
      assert.equal("network", entries[1].kind)
      assert.matches("^limitry: GET /usage %-> NetworkError %(attempt 1, [%d.]+ ms, " .. transport .. "%): could not connect", tostring(entries[1]))
    end)
  end

  it("logs writes and limit decisions: a 'no' is a result, not an error", function()
    local c, entries = logged({ max_retries = 0 })
    local customer = support.test_id("log-track")
    assert(c:quotas():create { name = "q", metric = "total_events", limit_value = 1, period = "day",
      dimension_filters = { customer_id = customer } })
    assert.is_true(assert(c:track { customer_id = customer, event_type = "e" }).allowed)
    assert.is_false(assert(c:start_track { customer_id = customer, event_type = "e" }:wait()).allowed)
    assert.equal(3, #entries)
    assert.same({ "POST", "/quotas", 201 }, { entries[1].method, entries[1].path, entries[1].status })
    assert.same({ "POST", "/track", 200, "curl" }, { entries[2].method, entries[2].path, entries[2].status, entries[2].transport })
    assert.same({ "POST", "/track", 429, "multi" }, { entries[3].method, entries[3].path, entries[3].status, entries[3].transport })
    assert.is_nil(entries[3].error)
    assert.is_false(entries[3].retry)
    no_secret(entries, server.api_key)
  end)

  it("never shows the key, even in a path that holds it", function()
    local c, entries = logged({ max_retries = 0 })
    c:request("GET", "/quotas/" .. server.api_key .. "?key=" .. server.api_key)
    assert.equal(1, #entries)
    assert.equal("/quotas/[REDACTED]", entries[1].path)
    no_secret(entries, server.api_key)
  end)

  it("is a field of the client: assigned, it applies from the next call; false turns it off", function()
    local c = support.client(server, "log-field", { max_retries = 0 })
    assert.is_false(c.log)
    assert(c:usage():get_summary(S, E))
    local n = 0
    c.log = function() n = n + 1 end
    assert(c:usage():get_summary(S, E))
    assert(c:usage():start_summary(S, E):wait())
    assert.equal(2, n)
    c.log = false
    assert(c:usage():get_summary(S, E))
    assert.equal(2, n)
  end)

  it("is checked like every option", function()
    assert.has_error(function() limitry.new { api_key = "k", log = "stderr" } end,
      "limitry.new: option 'log' must be a function (got string)")
    local ok, msg = pcall(limitry.new, { api_key = "k", bogus = 1 })
    assert.is_false(ok)
    assert.matches("log", msg)
    assert.is_nil(msg:find("_origin", 1, true)) -- internal options are not offered
  end)

  it("works with print: tostring(entry) is the line", function()
    local c = support.client(server, "log-print", { max_retries = 0 })
    local lines = {}
    local real_print = print
    print = function(...) lines[#lines + 1] = table.concat({ tostring(...) }, "\t") end -- luacheck: ignore 121
    c.log = print
    local ok, err = pcall(function() assert(c:usage():get_summary(S, E)) end)
    print = real_print -- luacheck: ignore 121
    assert(ok, err)
    assert.equal(1, #lines)
    assert.matches("^limitry: GET /usage %-> 200 %(attempt 1, [%d.]+ ms, curl%)$", lines[1])
  end)
end)
