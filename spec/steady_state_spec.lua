-- The steady-state call (issue 8): options go to libcurl once per configuration, one handle
-- switches methods and bodies correctly, and answers decoded in C keep every behaviour.
local support = require "spec.support.server"

local S, E = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"

describe("steady-state calls", function()
  local server

  setup(function() server = support.start() end)
  teardown(function() support.stop(server) end)

  local function client(opts, fault)
    return support.client(server, "steady", { max_retries = 0, timeout = 5 }, opts, { ["X-Limitry-Fault"] = fault })
  end

  it("applies the options to libcurl once, and again only after a client field changed", function()
    local core = support.watch_core()
    local c = client({}, "delay=300")
    local usage = c:usage()
    for _ = 1, 3 do assert.equal("number", type(assert(usage:get_summary(S, E)).totalEvents)) end
    core.restore()
    local handle = core.handles[1] -- the client's: made on its first call
    assert.equal(1, #core.handles)
    assert.equal(1, handle:stats().configs_applied)
    c.timeout = 0.1 -- the server waits 300 ms: the new timeout must reach libcurl
    local res, _, err = usage:get_summary(S, E)
    assert.is_nil(res)
    assert.equal("TimeoutError", err.name)
    assert.equal(2, handle:stats().configs_applied)
    c.timeout = 5
    assert.is_table((usage:get_summary(S, E)))
    assert.equal(3, handle:stats().configs_applied)
    c:close()
  end)

  it("an assignment to any libcurl field reaches the next call, blocking and async", function()
    local core = support.watch_core()
    local c = client()
    local usage = c:usage()
    assert.is_table((usage:get_summary(S, E)))
    core.restore()
    local handle = core.handles[1]
    c.max_response_size = 10 -- the summary is longer: the next answer is too large
    assert.equal(10, c.max_response_size)
    local _, _, err = usage:get_summary(S, E)
    assert.equal("too_large", err and err.kind)
    local _, _, aerr = usage:start_summary(S, E):wait()
    assert.equal("too_large", aerr and aerr.kind)
    c.max_response_size = 16 * 1024 * 1024
    assert.is_table((usage:get_summary(S, E)))
    assert.is_table((usage:start_summary(S, E):wait()))
    c.connect_timeout = 2 -- the same answer, with a configuration made again
    local before = handle:stats().configs_applied
    assert.is_table((usage:get_summary(S, E)))
    assert.equal(before + 1, handle:stats().configs_applied)
    -- other fields are plain fields, and the client still prints and refuses a dot call
    c.max_retries = 1
    assert.equal(1, rawget(c, "max_retries"))
    -- the libcurl fields live behind the client's own metatable (README, Options)
    assert.is_nil(rawget(c, "connect_timeout"))
    assert.equal(2, c.connect_timeout)
    assert.are_not.equal(require("limitry").Client, getmetatable(c))
    assert.matches("^limitry.client %(", tostring(c))
    assert.has_error(function() c.poll(1) end, "limitry: call it as client:poll(...) with a colon")
    c:close()
  end)

  it("reads a small-shaped answer larger than its 1 KiB receive buffer, blocking and async", function()
    local body = '{"totalEvents":7,"totalTokens":2,"totalInputTokens":1,"totalOutputTokens":1,'
      .. '"totalCostCents":0.5,"note":"' .. ("x"):rep(6000) .. '"}'
    local c = client({}, support.json_fault(body))
    local res = assert(c:usage():get_summary(S, E))
    assert.equal(7, res.totalEvents)
    assert.equal(6000, #res.note)
    local ares = assert(c:usage():start_summary(S, E):wait())
    assert.equal(6000, #ares.note)
    c:close()
  end)

  it("switches method, body and headers on one handle from call to call", function()
    local c, id = client()
    local core = support.watch_core()
    local keep = { idempotent = true } -- retried like GETs: every call on the client's one handle
    c:request("GET", "/usage?startDate=" .. S .. "&endDate=" .. E)
    c:request("POST", "/events", '{"a":1}', keep)
    c:request("DELETE", "/nothing/1", nil, keep)
    c:request("PUT", "/nothing/2", '{"b":22}', keep)
    c:request("POST", "/nothing/3", '{"c":333}', keep)
    c:request("GET", "/usage?startDate=" .. S .. "&endDate=" .. E)
    core.restore()
    local reqs = support.recorded(server, id).requests
    local got = {}
    for i, r in ipairs(reqs) do
      got[i] = r.method .. " " .. r.uri .. " " .. r.body_length .. " " .. tostring(r.headers["content-type"])
        .. " " .. tostring(r.headers.expect)
    end
    assert.same({
      "GET /v1/usage 0 nil nil",
      "POST /v1/events 7 application/json nil",
      "DELETE /v1/nothing/1 0 nil nil",
      "PUT /v1/nothing/2 8 application/json nil",
      "POST /v1/nothing/3 9 application/json nil",
      "GET /v1/usage 0 nil nil",
    }, got)
    for _, r in ipairs(reqs) do assert.equal("Bearer " .. server.api_key, r.headers.authorization) end
    assert.equal(1, #core.handles)
    assert.equal(1, core.handles[1]:stats().configs_applied)
    c:close()
  end)

  it("a 2xx decoded in C but of the wrong shape still carries the response and its headers", function()
    local c = client({}, support.json_fault('{"totalEvents":"5"}'))
    local res, msg, err = c:usage():get_summary(S, E)
    assert.is_nil(res)
    assert.matches("^DecodeError: response is not a summary", msg)
    assert.equal("application/json", err.headers["content-type"])
    assert.equal("5", err.response.totalEvents)
    c:close()
  end)

  it("a 2xx that is not JSON is still a DecodeError with its offset", function()
    local c = client({}, "body=malformed")
    local _, msg, err = c:usage():get_summary(S, E)
    assert.matches("^DecodeError: response is not JSON %(", msg)
    assert.is_table(err.headers)
    c:close()
  end)

  it("the same query twice is the same request, and a bad date still raises after a good one", function()
    local c, id = client()
    local usage = c:usage()
    assert.is_table((usage:get_summary(S, E)))
    assert.is_table((usage:get_summary(S, E)))
    assert.has_error(function() usage:get_summary("2024-13", E) end)
    assert.has_error(function() usage:get_summary(S, {}) end)
    assert.is_table((usage:get_summary(0, 86400)))
    local reqs = support.recorded(server, id).requests
    assert.equal(reqs[1].request_uri, reqs[2].request_uri)
    assert.equal("/v1/usage?startDate=1970-01-01T00%3A00%3A00Z&endDate=1970-01-02T00%3A00%3A00Z", reqs[3].request_uri)
    c:close()
  end)

  it("handle:call checks its arguments like handle:request", function()
    local h = require("limitry.core").new()
    assert.has_error(function() h:call({}, nil) end)
    assert.has_error(function() h:call({}, "http://127.0.0.1:1/", "PATCH") end,
      "request option 'method' must be GET, POST, PUT or DELETE")
    assert.has_error(function() h:call({}, "http://127.0.0.1:1/", "POST", {}) end, "request option 'body' must be a string")
    assert.has_error(function() h:call({ timeout_ms = -1 }, "http://127.0.0.1:1/") end)
    h:close()
  end)
end)
