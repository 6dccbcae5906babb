-- Fork safety of the C core (issue 7 item 2): a libcurl handle or multi handle made in one
-- process is never used by another. The child's first call opens its own connection; the
-- parent's connection (plain or TLS) keeps working after the child used and dropped its copy;
-- async requests in flight at fork time fail in the child and complete in the parent.
local limitry = require "limitry"
local core = require "limitry.core"
local support = require "spec.support.server"
local fork = require "spec.support.fork"

local JUNE = { "2023-06-01T00:00:00Z", "2023-07-01T00:00:00Z" }

local function ingest(server)
  local events = {}
  for i = 1, 3 do events[#events + 1] = ('{"customerId":"parent","eventType":"chat","model":"m","inputTokens":1,'
    .. '"outputTokens":1,"costCents":1,"timestamp":"2023-06-1%dT10:00:00Z"}'):format(i) end
  for i = 1, 5 do events[#events + 1] = ('{"customerId":"child","eventType":"chat","model":"m","inputTokens":1,'
    .. '"outputTokens":1,"costCents":1,"timestamp":"2023-06-2%dT10:00:00Z"}'):format(i) end
  local status = support.http("POST", server.base_url .. "/events/batch", '{"events":[' .. table.concat(events, ",") .. "]}",
    { Authorization = "Bearer " .. server.api_key, ["Content-Type"] = "application/json" })
  assert.equal(201, status)
end

local function summary(c, who)
  local s, msg = c:usage():get_summary(JUNE[1], JUNE[2], { customer_id = who })
  return s and s.totalEvents, msg
end

-- The connection serial the server saw for each recorded request, in order.
local function connections(rec)
  local list = {}
  for i, r in ipairs(rec.requests) do list[i] = r.connection end
  return list
end

describe("fork safety (" .. fork.provider .. ")", function()
  describe("over HTTP", function()
    local server
    setup(function()
      server = support.start()
      ingest(server)
    end)
    teardown(function() support.stop(server) end)

    it("the child opens its own connection; the parent keeps reusing its own", function()
      local id = support.test_id("fork")
      local c = limitry.new { api_key = server.api_key, base_url = server.base_url, max_retries = 0, timeout = 5,
        headers = { ["X-Limitry-Test-Id"] = id } }
      assert.equal(3, summary(c, "parent"))
      local res, code = fork.run(function()
        local a, msg = summary(c, "child")
        local b = summary(c, "child")
        c:close() -- the child's close must not touch the parent's connection
        return { first = a, second = b, msg = msg }
      end)
      assert.equal(0, code, res.error)
      assert.is_nil(res.msg)
      assert.equal(5, res.first)
      assert.equal(5, res.second)
      assert.equal(3, summary(c, "parent"))
      local conns = connections(support.recorded(server, id))
      assert.equal(4, #conns)
      assert.are_not.equal(conns[1], conns[2]) -- the child's first call: a new connection
      assert.equal(conns[2], conns[3])         -- which the child then reuses
      assert.equal(conns[1], conns[4])         -- the parent's call after the fork: its old one
      c:close()
    end)

    it("async: requests in flight at fork fail in the child and complete in the parent", function()
      local id = support.test_id("fork-async")
      local c = limitry.new { api_key = server.api_key, base_url = server.base_url, max_retries = 2, backoff = 0.01, timeout = 5,
        headers = { ["X-Limitry-Test-Id"] = id, ["X-Limitry-Fault"] = "delay=400" } }
      local warm = c:usage():start_summary(JUNE[1], JUNE[2], { customer_id = "parent" })
      local s = warm:wait()
      assert.equal(3, s.totalEvents)
      local req = c:usage():start_summary(JUNE[1], JUNE[2], { customer_id = "parent" })
      for _ = 1, 200 do -- until the server has the request (bounded)
        c:poll(0.01)
        if support.recorded(server, id).count == 2 then break end
      end
      assert.equal(2, support.recorded(server, id).count)
      local res, code = fork.run(function()
        local t0 = core.now()
        local r, msg, err = req:wait()
        local waited = core.now() - t0
        local fresh = c:usage():start_summary(JUNE[1], JUNE[2], { customer_id = "child" }):wait()
        c:close()
        return { res = r ~= nil, msg = msg, name = err and err.name, kind = err and err.kind,
          attempts = err and err.attempts, waited = waited, fresh = fresh and fresh.totalEvents }
      end)
      assert.equal(0, code, res.error)
      assert.is_false(res.res)
      assert.equal("NetworkError", res.name)
      assert.equal("fork", res.kind)
      assert.equal(1, res.attempts)
      assert.matches("^NetworkError: the request was started before fork", res.msg)
      assert.is_true(res.waited < 0.3, "the child waited " .. res.waited .. " s")
      assert.equal(5, res.fresh)
      local r, msg = req:wait()
      assert.is_nil(msg)
      assert.equal(3, r.totalEvents)
      local conns = connections(support.recorded(server, id))
      assert.equal(3, #conns)
      assert.equal(conns[1], conns[2]) -- the parent: one connection before and across the fork
      assert.are_not.equal(conns[2], conns[3]) -- the child's new request: its own
      c:close()
    end)
  end)

  describe("over HTTPS", function()
    local server, pki
    setup(function()
      pki = support.tmpdir("pki")
      support.make_pki(pki)
      server = support.start { tls_cert = pki .. "/server.pem", tls_key = pki .. "/server.key" }
      local c = limitry.new { api_key = server.api_key, base_url = server.base_url, ca_file = pki .. "/ca.pem" }
      assert(c:usage():get_summary(JUNE[1], JUNE[2]))
      c:close()
    end)
    teardown(function() support.stop(server) end)

    local function recorded(id)
      local h = core.new()
      local status, _, body = h:request(support.core_options { url = server.root .. "/_test/requests?id=" .. id, ca_file = pki .. "/ca.pem" })
      h:close()
      assert.equal(200, status)
      return assert(core.decode(body))
    end

    it("the parent's TLS connection keeps working after the child used and closed its client", function()
      local id = support.test_id("fork-tls")
      local c = limitry.new { api_key = server.api_key, base_url = server.base_url, ca_file = pki .. "/ca.pem", timeout = 5,
        max_retries = 0, headers = { ["X-Limitry-Test-Id"] = id } }
      assert(c:usage():get_summary(JUNE[1], JUNE[2]))
      local res, code = fork.run(function()
        local s, msg = c:usage():get_summary(JUNE[1], JUNE[2])
        c:close()
        return { ok = s ~= nil, msg = msg }
      end)
      assert.equal(0, code, res.error)
      assert.is_true(res.ok, res.msg)
      local s, msg = c:usage():get_summary(JUNE[1], JUNE[2])
      assert.is_nil(msg)
      assert.equal(0, s.totalEvents)
      local conns = connections(recorded(id))
      assert.equal(3, #conns)
      assert.are_not.equal(conns[1], conns[2])
      assert.equal(conns[1], conns[3]) -- no close_notify or FIN reached the parent's connection
      c:close()
    end)

    it("a child that only drops its inherited client leaves the parent's TLS connection alone", function()
      local id = support.test_id("fork-gc")
      local c = limitry.new { api_key = server.api_key, base_url = server.base_url, ca_file = pki .. "/ca.pem", timeout = 5,
        max_retries = 0, headers = { ["X-Limitry-Test-Id"] = id } }
      assert.equal(0, summary(c, "parent"))
      local _, code = fork.run(function()
        c = nil
        for _ = 1, 3 do collectgarbage() end -- the handle's __gc runs in the child
        return {}
      end)
      assert.equal(0, code)
      assert.equal(0, summary(c, "parent"))
      local conns = connections(recorded(id))
      assert.equal(2, #conns)
      assert.equal(conns[1], conns[2])
      c:close()
    end)
  end)
end)
