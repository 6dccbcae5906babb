-- client:request(method, path [, body [, options]]) and client:start_request(... [, callback]): an
-- endpoint the library does not wrap (issue #17, item 8). The wire request, the result, the errors,
-- and the retry rule: GET and idempotent = true are retried like the usage calls, the rest only when
-- nothing was sent.
local limitry = require "limitry"
local core = require "limitry.core"
local support = require "spec.support.server"

local unpack = table.unpack or unpack -- luacheck: ignore 143

describe("client:request", function()
  local server
  setup(function() server = support.start() end)
  teardown(function() support.stop(server) end)

  local function client(opts, fault)
    return support.client(server, "raw", { backoff = 0.01, max_backoff = 0.02 }, opts, { ["X-Limitry-Fault"] = fault })
  end
  local function recorded(id) return support.recorded(server, id) end

  it("sends the method, the path under base_url, the query as given and a JSON body", function()
    local c, id = client()
    local customer = support.test_id("raw")
    -- a table body is encoded by the core (keys sent as given: this is the wire format)
    local ev = assert(c:request("POST", "/events", { customerId = customer, eventType = "e", inputTokens = 3 }))
    assert.is_string(ev.id)
    -- a string body is sent as it is
    assert(c:request("POST", "/events", '{"customerId":"' .. customer .. '","eventType":"e","inputTokens":4}'))
    local page = assert(c:request("GET", "/events?customerId=" .. customer .. "&limit=1"))
    assert.equal(1, #page.data)
    assert.is_true(page.hasMore)
    local reqs = recorded(id).requests
    assert.equal(3, #reqs)
    assert.equal("POST", reqs[1].method)
    assert.equal("/v1/events", reqs[1].request_uri)
    assert.equal("application/json", reqs[1].headers["content-type"])
    assert.is_nil(reqs[1].headers.expect) -- no 100-continue round trip (README, Options)
    assert.equal("Bearer " .. server.api_key, reqs[1].headers.authorization)
    assert.same({ customerId = customer, eventType = "e", inputTokens = 3 }, core.decode(reqs[1].body))
    assert.equal('{"customerId":"' .. customer .. '","eventType":"e","inputTokens":4}', reqs[2].body)
    assert.equal("GET", reqs[3].method)
    assert.equal("/v1/events?customerId=" .. customer .. "&limit=1", reqs[3].request_uri)
    assert.equal(0, reqs[3].body_length)
    assert.is_nil(reqs[3].headers["content-type"])
  end)

  it("returns the answer's JSON as a plain table of any shape, integers kept", function()
    local c = client()
    local p = assert(c:request("GET", "/project"))
    assert.equal("proj_local", p.id)
    local s = assert(c:request("GET", "/usage?startDate=2024-01-01&endDate=2024-02-01"))
    assert.equal(0, s.totalEvents)
    if math.type then assert.equal("integer", math.type(s.totalEvents)) end
    local arr = assert(client({}, support.json_fault('[1,null,{"a":true}]')):request("GET", "/project"))
    assert.equal(1, arr[1])
    assert.equal(limitry.null, arr[2])
    assert.is_true(arr[3].a)
  end)

  it("returns true for a 2xx answer without a body (204 No Content); a typed call still wants JSON", function()
    assert.is_true(assert(client({}, "body=empty;status=204"):request("DELETE", "/quotas/quota_x")))
    assert.is_true(assert(client({}, "body=empty"):request("GET", "/project")))
    local res, _, err = client({ max_retries = 0 }, "body=empty"):project():get()
    assert.is_nil(res)
    assert.equal("DecodeError", err.name)
    local req = client({}, "body=empty;status=204"):start_request("DELETE", "/quotas/quota_x")
    assert.is_true(assert(req:wait(10)))
  end)

  it("returns errors as every call does: nil, msg, err", function()
    local c = client({ max_retries = 0 })
    local res, msg, err = c:request("GET", "/quotas/quota_nope")
    local _
    assert.is_nil(res)
    assert.equal("APIError", err.name)
    assert.equal(404, err.status)
    assert.equal(msg, tostring(err))
    _, msg, err = c:request("POST", "/events", { customerId = "c" })
    assert.equal(400, err.status)
    assert.matches("^APIError: .*eventType", msg)
    _, _, err = limitry.new { api_key = "lm_nope", base_url = server.base_url }:request("GET", "/project")
    assert.equal("AuthenticationError", err.name)
    _, msg, err = client({ max_retries = 0 }, "body=malformed"):request("GET", "/project")
    assert.equal("DecodeError", err.name)
    assert.matches("not JSON", msg)
  end)

  it("retries GET like the usage calls, and POST, PUT, DELETE only when nothing was sent", function()
    -- GET: a 503, then an answer
    local c, id = client({ max_retries = 2 }, "status=503;times=1")
    assert(c:request("GET", "/project"))
    assert.equal(2, recorded(id).count)
    -- POST: a 503 may have done the work; not sent again
    c, id = client({ max_retries = 2 }, "status=503;times=1")
    local _, _, err = c:request("POST", "/events", { customerId = "c", eventType = "e" })
    assert.equal(503, err.status)
    assert.equal(1, err.attempts)
    assert.equal(1, recorded(id).count)
    -- POST: a connection closed before any answer: the server may have it, so not sent again
    c, id = client({ max_retries = 2 }, "close=before")
    _, _, err = c:request("PUT", "/quotas/quota_x", { limitValue = 5 })
    assert.equal("NetworkError", err.name)
    assert.is_true(err.sent)
    assert.equal(1, err.attempts)
    assert.equal(1, recorded(id).count)
    -- ...but a GET is
    c, id = client({ max_retries = 2 }, "close=before;times=1")
    assert(c:request("GET", "/project"))
    assert.equal(2, recorded(id).count)
    -- POST: nothing was sent (connection refused): retried
    local dead = limitry.new { api_key = "k", base_url = "http://127.0.0.1:" .. support.closed_port() .. "/v1",
      max_retries = 2, backoff = 0 }
    _, _, err = dead:request("DELETE", "/quotas/q1")
    assert.is_false(err.sent)
    assert.equal(3, err.attempts)
    -- each call that must not be sent twice goes out on a new connection
    c, id = client({ max_retries = 0 })
    for _ = 1, 3 do c:request("POST", "/events", { customerId = "c", eventType = "e" }) end
    assert.equal(3, recorded(id).connections)
  end)

  it("retries a request said to be idempotent like a GET", function()
    local c, id = client({ max_retries = 2 }, "status=503;times=1")
    local body = limitry.encode_event { customer_id = support.test_id("raw-idem"), event_type = "e" }
    local res = assert(c:request("POST", "/events", body, { idempotent = true }))
    assert.is_string(res.id)
    assert.equal(2, recorded(id).count)
    c, id = client({ max_retries = 0 })
    for _ = 1, 3 do assert(c:request("POST", "/events", body, { idempotent = true })) end
    assert.equal(1, recorded(id).connections) -- and keeps its keep-alive connection
  end)

  it("has an async twin with the same rules", function()
    local c, id = client({ max_retries = 2 }, "status=503;times=1")
    local got
    local req = c:start_request("GET", "/project", function(res) got = res end)
    local res = assert(req:wait())
    assert.equal("proj_local", res.id)
    assert.equal(res, got)
    assert.equal(2, recorded(id).count)
    c, id = client({ max_retries = 2 }, "status=503;times=1")
    local _, _, err = c:start_request("POST", "/events", { customerId = "c", eventType = "e" }):wait()
    assert.equal(1, err.attempts)
    assert.equal(1, recorded(id).count)
    c, id = client({ max_retries = 2 }, "status=503;times=1")
    assert(c:start_request("POST", "/events", limitry.encode_event { customer_id = "c", event_type = "e" },
      { idempotent = true }):wait())
    assert.equal(2, recorded(id).count)
  end)

  it("raises on wrong arguments, naming the call, before anything is sent", function()
    local c = limitry.new { api_key = "k", base_url = "http://127.0.0.1:9/v1", max_retries = 0 }
    for _, case in ipairs {
      { { "PATCH", "/x" }, "^client:request: method must be 'GET', 'POST', 'PUT' or 'DELETE' %(got 'PATCH'%)$" },
      { { "get", "/x" }, "method must be" },
      { { "GET", "events" }, "^client:request: path must be a string starting with '/'" },
      { { "GET", "/a b" }, "path must be a string starting with '/'" },
      { { "GET", "/a\r\nX-Evil: 1" }, "path must be a string starting with '/'" },
      { { "GET", "/" .. string.rep("a", 8192) }, "path must be at most 8192 bytes" },
      { { "GET", "/x", "{}" }, "^client:request: a GET request has no body$" },
      { { "POST", "/x", 5 }, "body must be JSON text %(a string%) or a table to encode %(got number%)" },
      { { "POST", "/x", { a = 0 / 0 } }, "not a finite number" },
      { { "POST", "/x", "{}", { retry = true } }, "unknown option 'retry' %(allowed: idempotent%)" },
      { { "POST", "/x", "{}", { idempotent = "yes" } }, "option 'idempotent' must be a boolean" },
    } do
      local ok, msg = pcall(c.request, c, unpack(case[1]))
      assert.is_false(ok, case[2])
      assert.matches(case[2], msg)
    end
    local ok, msg = pcall(c.start_request, c, "PATCH", "/x", function() end)
    assert.is_false(ok)
    assert.matches("^client:start_request: method must be", msg)
    ok, msg = pcall(c.request, "GET", "/x")
    assert.is_false(ok)
    assert.matches("call it as client:request%(%.%.%.%) with a colon", msg)
  end)
end)
