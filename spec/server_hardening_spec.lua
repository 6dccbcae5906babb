-- The local server against hostile or careless input: numbers JSON cannot carry, offsets that do
-- not exist, inconsistent token counts, oversized events and requests, values that must survive a
-- restart bit for bit, and the start script's process and environment handling. Raw HTTP over
-- luasocket, as in server_spec.lua.
local core = require "limitry.core"
local socket = require "socket"
local support = require "spec.support.server"
local local_server = require "limitry_local"

local KEY = "lm_local_test_key"
local AUTH = "Bearer " .. KEY

local function post(info, path, body)
  local status, out, headers = support.http("POST", info.base_url .. path, body,
    { Authorization = AUTH, ["Content-Type"] = "application/json" })
  return status, core.decode(out), out, headers
end

local function get(info, path)
  local status, body, headers = support.http("GET", info.base_url .. path, nil, { Authorization = AUTH })
  return status, core.decode(body), body, headers
end

-- One raw request line + headers over a socket, for what luasocket's http refuses to send.
local function raw(info, request)
  local c = socket.tcp()
  c:settimeout(5)
  assert(c:connect("127.0.0.1", info.port))
  assert(c:send(request))
  local status_line = c:receive("*l")
  local headers, length = {}, nil
  while true do
    local line = c:receive("*l")
    if not line or line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
    if k and k:lower() == "content-length" then length = tonumber(v) end
  end
  local body = length and c:receive(length) or c:receive("*a")
  c:close()
  return tonumber(status_line:match(" (%d%d%d) ")), body, headers
end

local function ev(fields)
  local base = '{"customerId":"h","eventType":"e","timestamp":"2023-03-01T00:00:00Z"'
  return base .. (fields ~= "" and ("," .. fields) or "") .. "}"
end

local function shell(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  return out, (ok == true or ok == 0) and 0 or (code or 1)
end

describe("local server hardening", function()
  local server
  setup(function() server = support.start { faults = false } end)
  teardown(function() support.stop(server) end)

  describe("numbers", function()
    it("rejects costs that are not finite or out of range with a 400 naming the field", function()
      for _, cost in ipairs { "1e308", "1e400", "-1e400", "1e13", "-1" } do
        local status, res = post(server, "/events", ev('"costCents":' .. cost))
        assert.equal(400, status, cost)
        assert.matches("costCents", res.error, 1, true)
      end
      for _, bad in ipairs { "Infinity", "-Infinity", "NaN", "0x10" } do
        local status, res = post(server, "/events", ev('"costCents":' .. bad))
        assert.equal(400, status, bad)
        assert.matches("not valid JSON", res.error, 1, true)
      end
      local status, res = post(server, "/events", ev('"inputTokens":0x10'))
      assert.equal(400, status)
      assert.matches("not valid JSON", res.error, 1, true)
      status, res = post(server, "/events", ev('"properties":{"x":1e400}'))
      assert.equal(400, status)
      assert.matches("properties.x", res.error, 1, true)
      status, res = post(server, "/events", ev('"latencyMs":1e400'))
      assert.equal(400, status)
      assert.matches("latencyMs", res.error, 1, true)
      local _, s = get(server, "/usage?startDate=2023-03-01&endDate=2023-03-02")
      assert.equal(0, s.totalEvents)
    end)

    it("keeps sums valid JSON and positive past 2^63 tokens and at the largest cost", function()
      local max = "9007199254740991" -- 2^53 - 1, the largest count accepted
      local one = '{"customerId":"big","eventType":"e","timestamp":"2023-04-01T00:00:00Z","inputTokens":'
        .. max .. ',"costCents":1e12}'
      local list = {}
      for i = 1, 1000 do list[i] = one end
      assert.equal(201, (post(server, "/events/batch", '{"events":[' .. table.concat(list, ",") .. "]}")))
      assert.equal(201, (post(server, "/events/batch", '{"events":[' .. table.concat(list, ",", 1, 100) .. "]}")))
      for _, path in ipairs { "/usage?", "/usage/breakdown?groupBy=model&", "/usage/timeseries?interval=day&" } do
        local status, res, body = get(server, path .. "startDate=2023-04-01&endDate=2023-04-02")
        assert.equal(200, status)
        assert.is_table(res, body)
        local m = res.data and res.data[1] or res
        assert.equal(1100, m.totalEvents)
        assert.near(1100.0 * 9007199254740991, m.totalInputTokens, 1e4)
        assert.near(1100.0 * 9007199254740991, m.totalTokens, 1e4)
        assert.near(1.1e15, m.totalCostCents, 1)
      end
    end)
  end)

  describe("token sums and text (#21)", function()
    it("refuses inputTokens + outputTokens past 2^53 - 1, where totalTokens could not be their sum", function()
      local max = "9007199254740991"
      -- A day of its own: were one stored, no other spec's sums would see it.
      local function sum_ev(fields) return '{"customerId":"sum","eventType":"e","timestamp":"2023-07-01T00:00:00Z",' .. fields .. "}" end
      for _, fields in ipairs {
        '"inputTokens":' .. max .. ',"outputTokens":' .. max,
        '"inputTokens":' .. max .. ',"outputTokens":1',
        '"inputTokens":1,"outputTokens":' .. max .. ',"totalTokens":' .. max,
      } do
        local status, res = post(server, "/events", sum_ev(fields))
        assert.equal(400, status, fields)
        assert.matches("inputTokens + outputTokens must be at most 9007199254740991", res.error, 1, true)
      end
      local status, res = post(server, "/track", sum_ev('"inputTokens":' .. max .. ',"outputTokens":' .. max))
      assert.equal(400, status)
      assert.matches("inputTokens + outputTokens", res.error, 1, true)
      status, res = post(server, "/events/batch", '{"events":[' .. sum_ev('"inputTokens":' .. max .. ',"outputTokens":2') .. "]}")
      assert.equal(400, status)
      assert.matches("events[1]: inputTokens + outputTokens", res.error, 1, true)
      -- Exactly 2^53 - 1 in all is fine.
      local _, got = post(server, "/events", '{"customerId":"sum-ok","eventType":"e","inputTokens":9007199254740990,"outputTokens":1}')
      assert.matches("^evt_", got.id)
      local _, page = get(server, "/events?customerId=sum-ok")
      assert.equal(9007199254740991, page.data[1].totalTokens)
    end)

    it("refuses invalid UTF-8 in any string with a 400 naming the field, and serves back valid UTF-8", function()
      local bad = { "\255", "caf\195", "\192\175", "\237\160\128", "\244\144\128\128", "a\128b" }
      for _, b in ipairs(bad) do
        for _, c in ipairs {
          { "/events", '{"customerId":"' .. b .. '","eventType":"e"}', "customerId must be valid UTF-8" },
          { "/events", '{"customerId":"u","eventType":"' .. b .. '"}', "eventType must be valid UTF-8" },
          { "/events", '{"customerId":"u","eventType":"e","model":"' .. b .. '"}', "model must be valid UTF-8" },
          { "/events", '{"customerId":"u","eventType":"e","idempotencyKey":"' .. b .. '"}', "idempotencyKey must be valid UTF-8" },
          { "/events", '{"customerId":"u","eventType":"e","properties":{"p":"' .. b .. '"}}', "properties.p must be valid UTF-8" },
          { "/events", '{"customerId":"u","eventType":"e","properties":{"' .. b .. '":"x"}}', "properties: names must be valid UTF-8" },
          { "/events/batch", '{"events":[{"customerId":"u","eventType":"e"},{"customerId":"' .. b .. '","eventType":"e"}]}',
            "events[2]: customerId must be valid UTF-8" },
          { "/track", '{"customerId":"u","eventType":"e","provider":"' .. b .. '"}', "provider must be valid UTF-8" },
          { "/quotas", '{"name":"' .. b .. '","metric":"total_events","limitValue":1,"period":"day"}', "name must be valid UTF-8" },
          { "/rate-limits", '{"name":"r","limitValue":1,"window":"hour","dimensionFilters":{"customer_id":"' .. b .. '"}}',
            "dimensionFilters.customer_id must be valid UTF-8" },
          { "/quotas/check", '{"customer_id":"' .. b .. '"}', "dimension customer_id must be valid UTF-8" },
        } do
          local status, res, body = post(server, c[1], c[2])
          assert.equal(400, status, c[1] .. " " .. c[2])
          assert.is_table(res, body)
          assert.matches(c[3], res.error, 1, true)
          assert.truthy(utf8.len(body), "the 400 itself is valid UTF-8")
        end
      end
      -- cjson turns a lone low surrogate escape into bytes that are not UTF-8: refused as well.
      local status, res = post(server, "/events", '{"customerId":"\\udc00","eventType":"e"}')
      assert.equal(400, status)
      assert.is_string(res.error)
      -- Queries and path ids too (a customer's usage echoes its id).
      assert.equal(400, (get(server, "/customers/%FF/usage?startDate=2024-01-01&endDate=2024-01-02")))
      assert.equal(400, (get(server, "/usage?startDate=2024-01-01&endDate=2024-01-02&customerId=%C0%AF")))
      local s404, _, raw404 = get(server, "/quotas/%FFx")
      assert.equal(400, s404)
      assert.truthy(utf8.len(raw404))
      local s4, _, raw4 = get(server, "/nothing/%FF")
      assert.equal(404, s4)
      assert.truthy(utf8.len(raw4), raw4)
      -- Valid UTF-8 of every length is stored and served back as sent.
      local names = { "caf\u{e9}", "\u{65e5}\u{672c}", "\u{1F600}", "\u{10FFFF}" }
      for _, n in ipairs(names) do
        assert.equal(201, (post(server, "/events", '{"customerId":"utf8-ok","eventType":"' .. n .. '","properties":{"' .. n .. '":"' .. n .. '"}}')))
      end
      local _, page, listed = get(server, "/events?customerId=utf8-ok")
      assert.truthy(utf8.len(listed))
      assert.equal(4, #page.data)
      for i, e in ipairs(page.data) do
        assert.equal(names[5 - i], e.eventType)
        assert.equal(names[5 - i], e.properties[names[5 - i]])
      end
    end)
  end)

  describe("dates", function()
    it("rejects offsets outside -23:59..+23:59 in events and in startDate/endDate", function()
      for _, off in ipairs { "+99:99", "+24:00", "-24:00", "+05:60", "+2400" } do
        local status, res = post(server, "/events", '{"customerId":"h","eventType":"e","timestamp":"2023-05-01T00:00:00' .. off .. '"}')
        assert.equal(400, status, off)
        assert.matches("timestamp", res.error, 1, true)
        status, res = get(server, "/usage?startDate=2023-05-01T00:00:00" .. off:gsub("%+", "%%2B") .. "&endDate=2023-06-01")
        assert.equal(400, status, off)
        assert.matches("Invalid startDate", res.error, 1, true)
      end
      local status = post(server, "/events", '{"customerId":"h","eventType":"e","timestamp":"2023-05-01T00:00:00+23:59"}')
      assert.equal(201, status)
      local _, s = get(server, "/usage?startDate=2023-04-30T00:01:00Z&endDate=2023-04-30T00:01:01Z")
      assert.equal(1, s.totalEvents)
    end)
  end)

  describe("totalTokens", function()
    it("is inputTokens + outputTokens: computed when absent, a 400 when a client sends another value", function()
      local status, res = post(server, "/events", ev('"inputTokens":3,"outputTokens":4,"totalTokens":100'))
      assert.equal(400, status)
      assert.matches("totalTokens must equal inputTokens + outputTokens (7)", res.error, 1, true)
      status, res = post(server, "/events", ev('"totalTokens":50'))
      assert.equal(400, status)
      assert.matches("totalTokens", res.error, 1, true)
      assert.equal(201, (post(server, "/events", ev('"inputTokens":3,"outputTokens":4,"totalTokens":7'))))
      assert.equal(201, (post(server, "/events", ev('"inputTokens":1,"outputTokens":1'))))
      local _, s = get(server, "/usage?startDate=2023-03-01&endDate=2023-03-02")
      assert.same({ totalEvents = 2, totalInputTokens = 4, totalOutputTokens = 5, totalTokens = 9, totalCostCents = 0 }, s)
    end)
  end)

  describe("sizes", function()
    it("limits strings, properties and unknown fields with 400s naming the field", function()
      local cases = {
        { ev('"properties":{"k":"' .. string.rep("v", 1025) .. '"}'), "properties.k" },
        { ev('"properties":{"' .. string.rep("k", 129) .. '":1}'), "properties" },
        { ev('"properties":{"n":{"deep":1}}'), "properties.n" },
        { ev('"properties":[1,2]'), "properties must be an object" },
        { ev('"model":"' .. string.rep("m", 257) .. '"'), "model" },
        { ev('"colour":"red"'), "unknown field 'colour'" },
        { '{"customerId":"h","eventType":"e","timestamp":"2023-03-01T00:00:00.' .. string.rep("1", 100) .. 'Z"}', "timestamp" },
      }
      local many = {}
      for i = 1, 65 do many[i] = string.format('"p%d":%d', i, i) end
      cases[#cases + 1] = { ev('"properties":{' .. table.concat(many, ",") .. "}"), "at most 64 properties" }
      for _, case in ipairs(cases) do
        local status, res = post(server, "/events", case[1])
        assert.equal(400, status, case[1]:sub(1, 120))
        assert.matches(case[2], res.error, 1, true)
      end
      local ok_props = {}
      for i = 1, 63 do ok_props[i] = string.format('"p%d":"%s"', i, string.rep("v", 100)) end
      assert.equal(201, (post(server, "/events", ev('"properties":{' .. table.concat(ok_props, ",") .. ',"b":true}'))))
    end)

    it("answers oversized bodies (413) and URIs (414) and headers with JSON, not nginx's HTML", function()
      local big = ev('"properties":{"blob":"' .. string.rep("x", 10 * 1024 * 1024) .. '"}')
      local status, res, body, headers = post(server, "/events", big)
      assert.equal(413, status)
      assert.is_table(res, body)
      assert.matches("too large", res.error)
      assert.matches("application/json", headers["content-type"], 1, true)
      local huge = '{"events":[' .. string.rep(ev("") .. ",", 17 * 1024 * 1024 // 60) .. ev("") .. "]}"
      status, res = post(server, "/events/batch", huge)
      assert.equal(413, status)
      assert.matches("too large", res.error)
      local code, rbody, rheaders = raw(server, "GET /v1/usage?x=" .. string.rep("a", 20000) .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal(414, code)
      assert.matches("too long", core.decode(rbody).error)
      assert.matches("application/json", rheaders["content-type"], 1, true)
      code, rbody = raw(server, "GET /v1/usage HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("h", 20000) .. "\r\n\r\n")
      assert.equal(400, code)
      assert.is_string(core.decode(rbody).error)
    end)
  end)
end)

describe("local server storage is exact", function()
  it("answers the same bytes after a restart: 2^53 - 1 tokens, 15-digit costs, sub-second times", function()
    local dir = support.tmpdir("exact")
    local info = support.start { dir = dir, faults = false }
    local events = {
      '{"customerId":"x","eventType":"e","model":"m","inputTokens":9007199254740991,"costCents":123456789.123456,"timestamp":"2021-06-01T00:00:00.75Z"}',
      '{"customerId":"x","eventType":"e","model":"n","outputTokens":12345,"costCents":0.1,"timestamp":"2021-06-01T01:59:59.999+01:00"}',
      '{"customerId":"y","eventType":"e","costCents":1e-7,"latencyMs":3,"properties":{"r":0.30000000000000004,"s":"é"},"timestamp":"2021-06-01T00:00:00.25Z"}',
    }
    for _, e in ipairs(events) do assert.equal(201, (post(info, "/events", e))) end
    local paths = {
      "/usage?startDate=2021-06-01T00:00:00.5Z&endDate=2021-06-01T00:00:00.8Z",
      "/usage?startDate=2021-06-01T00:59:59.9990Z&endDate=2021-06-01T01:00:00Z",
      "/usage?startDate=2021-06-01&endDate=2021-06-02",
      "/usage/breakdown?groupBy=model&startDate=2021-06-01&endDate=2021-06-02",
      "/usage/timeseries?interval=hour&startDate=2021-06-01&endDate=2021-06-02",
    }
    local before = {}
    for i, p in ipairs(paths) do before[i] = select(3, get(info, p)) end
    support.stop(info)
    info = support.start { dir = dir, faults = false }
    local after = {}
    for i, p in ipairs(paths) do after[i] = select(3, get(info, p)) end
    support.stop(info)
    assert.same(before, after)
    local s = core.decode(before[1])
    assert.equal(1, s.totalEvents)
    assert.equal(9007199254740991, s.totalInputTokens)
    assert.equal(123456789.123456, s.totalCostCents)
    assert.equal(1, core.decode(before[2]).totalEvents)
  end)
end)

describe("limitry-local start", function()
  local lua = "lua5.4 server/limitry-local"

  it("prints export lines, so a command run after eval sees the variables", function()
    local dir = support.tmpdir("export")
    local out, code = shell("sh -c 'eval \"$(" .. lua .. " start --empty --dir " .. dir .. ")\" && sh -c \"echo key=\\$LIMITRY_API_KEY url=\\$LIMITRY_BASE_URL\"; "
      .. lua .. " stop --dir " .. dir .. " >/dev/null'")
    assert.equal(0, code, out)
    assert.matches("key=" .. KEY .. " url=http://127.0.0.1:%d+/v1", out)
  end)

  -- stdout, stderr and the exit code of cmd, separately.
  local function shell3(cmd)
    local errfile = os.tmpname()
    local p = assert(io.popen(cmd .. " 2>" .. errfile))
    local out = p:read("*a")
    local ok, _, code = p:close()
    local f = assert(io.open(errfile))
    local err = f:read("*a")
    f:close()
    os.remove(errfile)
    return out, err, (ok == true or ok == 0) and 0 or (code or 1)
  end
  local root = io.popen("pwd"):read("*l")
  local script = "lua5.4 " .. root .. "/server/limitry-local"
  -- tmpdir is relative unless LIMITRY_TEST_TMP is absolute (as tools/test.sh sets it).
  local function absolute(p) return p:sub(1, 1) == "/" and p or root .. "/" .. p end

  it("stop (#17): uses LIMITRY_SERVER_DIR without --dir, and names --dir when it finds no server", function()
    local dir = absolute(support.tmpdir("stopenv"))
    local out, err, code = shell3(script .. " start --empty --dir " .. dir)
    assert.equal(0, code, err)
    local pid = assert(tonumber(out:match("LIMITRY_SERVER_PID=(%d+)")))
    -- From another folder, as a shell that ran eval "$(limitry-local start)" would.
    out, err, code = shell3("cd /tmp && LIMITRY_SERVER_DIR=" .. dir .. " " .. script .. " stop")
    if code ~= 0 then shell3(script .. " stop --dir " .. dir) end
    assert.equal(0, code, err)
    assert.equal("stopped " .. pid .. "\n", out)
    assert.is_false(local_server.alive(pid))
    local empty = absolute(support.tmpdir("stopnone"))
    out, err, code = shell3("cd " .. empty .. " && env -u LIMITRY_SERVER_DIR " .. script .. " stop")
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("no server pid in " .. empty .. "/.limitry-local/logs/nginx.pid", err, 1, true)
    assert.matches("--dir", err, 1, true)
  end)

  it("stop (#17): says stopped only once the master and its workers are gone", function()
    local dir = support.tmpdir("stopgone")
    local out, err, code = shell3(script .. " start --empty --dir " .. dir)
    assert.equal(0, code, err)
    local pid = assert(tonumber(out:match("LIMITRY_SERVER_PID=(%d+)")))
    local f = assert(io.open("/proc/" .. pid .. "/task/" .. pid .. "/children"))
    local workers = {}
    for w in f:read("*a"):gmatch("%d+") do workers[#workers + 1] = tonumber(w) end
    f:close()
    assert.is_true(#workers >= 1)
    local t0 = socket.gettime()
    out = shell3(script .. " stop --dir " .. dir)
    local took = socket.gettime() - t0
    assert.equal("stopped " .. pid .. "\n", out)
    for _, p in ipairs { pid, table.unpack(workers) } do
      assert.is_false(local_server.alive(p), "process " .. p .. " still runs")
      -- Exited and reaped (kill -0 no longer finds it), unless its parent had not reaped it after
      -- limitry_local.REAP_WAIT seconds, as an init that never reaps would not.
      local zombie = io.open("/proc/" .. p .. "/stat")
      if zombie then zombie:close() end
      assert.is_true(zombie == nil or took >= local_server.REAP_WAIT, "process " .. p .. " still exists after stop")
    end
  end)

  it("start (#17): a second start in a folder whose server runs prints that server's export lines", function()
    local dir = support.tmpdir("twice")
    local first, err1, code1 = shell3(script .. " start --empty --dir " .. dir)
    assert.equal(0, code1, err1)
    local second, err2, code2 = shell3(script .. " start --empty --dir " .. dir .. " --port 1")
    local _, _, code3 = shell3(script .. " stop --dir " .. dir)
    assert.equal(0, code2, err2)
    assert.equal(0, code3)
    assert.equal(first, second)
    assert.matches("export LIMITRY_API_KEY=" .. KEY, second, 1, true)
    assert.matches("already running", err2, 1, true)
    assert.matches("pid " .. second:match("LIMITRY_SERVER_PID=(%d+)"), err2, 1, true)
  end)

  it("starts when the shell has LUA_PATH/LUA_CPATH set for Lua 5.4", function()
    local dir = support.tmpdir("luapath")
    local env = "LUA_PATH='/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;;' "
      .. "LUA_CPATH='/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;;' "
    local out, code = shell(env .. lua .. " start --empty --dir " .. dir)
    if code == 0 then shell(lua .. " stop --dir " .. dir) end
    assert.equal(0, code, out)
    assert.matches("LIMITRY_BASE_URL=", out, 1, true)
    assert.is_false(local_server.alive(assert(tonumber(out:match("LIMITRY_SERVER_PID=(%d+)")))))
  end)

  it("does not take a zombie left in the pid file for a running server", function()
    local dir = support.tmpdir("zombie")
    os.execute("mkdir -p " .. dir .. "/logs")
    -- `sleep 0` exits at once and its parent (exec'd into `sleep 10`) never reaps it: a zombie.
    local p = assert(io.popen("exec sh -c 'sleep 0 & echo $! $$; exec sleep 10'"))
    local zombie, holder = p:read("*l"):match("^(%d+) (%d+)$")
    zombie, holder = assert(tonumber(zombie)), assert(tonumber(holder))
    local state
    for _ = 1, 100 do
      local f = io.open("/proc/" .. zombie .. "/stat")
      state = f and f:read("*a"):match("%) (%a)")
      if f then f:close() end
      if state == "Z" then break end
      socket.sleep(0.02)
    end
    assert.equal("Z", state)
    local f = assert(io.open(dir .. "/logs/nginx.pid", "w"))
    f:write(zombie, "\n")
    f:close()
    local out, code = shell(lua .. " start --empty --dir " .. dir)
    if code == 0 then shell(lua .. " stop --dir " .. dir) end
    os.execute("kill " .. holder)
    p:close()
    assert.equal(0, code, out)
  end)
end)

describe("local server metric encoding", function()
  -- Ingestion bounds keep sums finite; this is the last guard should a sum still overflow.
  it("never writes inf or nan, which are not JSON", function()
    package.path = "server/lua/?.lua;" .. package.path
    local encode = require "limitry_server.encode"
    assert.equal("1.7976931348623157e+308", encode.number(math.huge))
    assert.equal("-1.7976931348623157e+308", encode.number(-math.huge))
    assert.equal("0", encode.number(0 / 0))
    local body = encode.metrics { totalEvents = 2, totalTokens = 2 ^ 70, totalInputTokens = 2 ^ 70,
      totalOutputTokens = 0, totalCostCents = 1e308 + 1e308 }
    local m = assert(core.decode(body), body)
    assert.equal(2 ^ 70, m.totalTokens)
    assert.equal(1.7976931348623157e308, m.totalCostCents)
  end)
end)
