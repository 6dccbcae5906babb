-- The local server's storage and enforcement as they scale (issue #18), checked for exactness, not
-- speed (bench/server.lua measures that): an independent aggregation check over ~2,000 events of its
-- own (expected values computed here, in integers), 200 concurrent tracks against a quota of 10,
-- running counters against late, future and duplicate events and changing limits, a restart, and
-- the migration of an old events.jsonl. Raw HTTP over luasocket, as in server_spec.lua.
local core = require "limitry.core"
local socket = require "socket"
local support = require "spec.support.server"

local KEY = "lm_local_test_key"

-- A small JSON encoder (the spec must not depend on the client's encoder under test). Numbers given
-- as { raw = "text" } are written as that text.
local function J(v)
  local t = type(v)
  if t == "string" then return (string.format("%q", v):gsub("\\\n", "\\n")) end
  if t == "number" then
    if v == math.floor(v) then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if t == "boolean" then return tostring(v) end
  if v.raw then return v.raw end
  if v[1] ~= nil then
    local out = {}
    for i, x in ipairs(v) do out[i] = J(x) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  local out = {}
  for k, x in pairs(v) do out[#out + 1] = J(k) .. ":" .. J(x) end
  table.sort(out)
  return "{" .. table.concat(out, ",") .. "}"
end

local function request(base, method, path, body, now)
  local headers = { Authorization = "Bearer " .. KEY }
  if now then headers["X-Limitry-Now"] = string.format("%.3f", now) end
  if body ~= nil then
    headers["Content-Type"] = "application/json"
    if type(body) == "table" then body = J(body) end
  end
  local status, raw = support.http(method, base .. path, body, headers)
  return status, core.decode(raw), raw
end

-- UTC calendar arithmetic of its own (not the server's time.lua).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end
local function unix(y, m, d, h, mi, s) return days_from_civil(y, m, d) * 86400 + (h or 0) * 3600 + (mi or 0) * 60 + (s or 0) end

-- An instant in milliseconds as ISO 8601 with a zone offset of `off` minutes.
local function iso_ms(ms, off)
  off = off or 0
  local secs = (ms // 1000) + off * 60
  local frac = ms % 1000
  local zone = off == 0 and "Z" or string.format("%s%02d:%02d", off < 0 and "-" or "+", math.abs(off) // 60, math.abs(off) % 60)
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. (frac ~= 0 and string.format(".%03d", frac) or "") .. zone
end

local function pct(s) return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end)) end

-- Park-Miller: the same events on every run.
local function rng(seed)
  local x = seed
  return function(n)
    x = (16807 * x) % 2147483647
    return n and (x % n) or x / 2147483647
  end
end

describe("local server aggregation, checked independently", function()
  local server
  setup(function() server = support.start { faults = false } end)
  teardown(function() support.stop(server) end)

  it("agrees with sums computed here over ~2,000 events: filters, half-open ranges, zone offsets, buckets, listings", function()
    local r = rng(424242)
    -- 2031-03-29 is a Saturday: four days cross a month's end and a Monday.
    local BASE = unix(2031, 3, 29) * 1000
    local SPAN = 4 * 86400 * 1000
    local CUSTOMERS, TYPES = { "c1", "c2", "c3", "c4", "c5" }, { "chat", "embed", "tool" }
    local MODELS, PROVIDERS = { "m1", "m2", "m3", "m4", false }, { "p1", "p2", "p3", false }
    local OFFSETS = { 0, 0, 0, 330, -180, -1439, 1439, 60 }
    local accepted, sent, keys = {}, 0, {}
    local function make()
      local ms = BASE + r(SPAN)
      local pick = r(10)
      if pick == 0 then ms = ms - ms % 60000 elseif pick == 1 then ms = ms - ms % 3600000
      elseif pick == 2 then ms = ms - ms % 86400000 elseif pick == 3 then ms = ms - ms % 1000 + 999 end
      local e = { customerId = CUSTOMERS[1 + r(#CUSTOMERS)], eventType = TYPES[1 + r(#TYPES)],
        model = MODELS[1 + r(#MODELS)] or nil, provider = PROVIDERS[1 + r(#PROVIDERS)] or nil,
        inputTokens = r(5000), timestamp = iso_ms(ms, OFFSETS[1 + r(#OFFSETS)]), ms = ms }
      if r(4) > 0 then e.outputTokens = r(2000) end
      if r(5) > 0 then e.cost = r(100000) end -- thousandths of a cent
      if r(3) == 0 then
        -- A key, sometimes one already used (a retry): only the first event with it counts.
        e.idempotencyKey = (#keys > 0 and r(4) == 0) and keys[1 + r(#keys)] or ("k" .. r())
        keys[#keys + 1] = e.idempotencyKey
      end
      return e
    end
    local function wire(e)
      local w = {}
      for _, k in ipairs { "customerId", "eventType", "model", "provider", "inputTokens", "outputTokens", "timestamp",
        "idempotencyKey" } do w[k] = e[k] end
      if e.cost then w.costCents = { raw = string.format("%d.%03d", e.cost // 1000, e.cost % 1000) } end
      return w
    end
    local seen = {}
    local sizes = { 1, 7, 150, 300, 42, 500, 3, 250, 1000 }
    local b = 0
    while sent < 2000 do
      b = b + 1
      local n = math.min(sizes[(b - 1) % #sizes + 1], 2000 - sent)
      local list, evs = {}, {}
      for i = 1, n do
        evs[i] = make()
        list[i] = wire(evs[i])
      end
      local status, res
      if n == 1 then
        status, res = request(server.base_url, "POST", "/events", list[1])
        res = { results = { res } }
        assert.is_true(status == 201 or status == 200)
      else
        status, res = request(server.base_url, "POST", "/events/batch", { events = list })
        assert.equal(201, status)
      end
      for i, e in ipairs(evs) do
        local k = e.idempotencyKey
        if not (k and seen[k]) then
          if k then seen[k] = true end
          e.id = res.results[i].id
          assert.equal("recorded", res.results[i].status)
          accepted[#accepted + 1] = e
        else
          assert.equal("duplicate", res.results[i].status)
        end
      end
      sent = sent + n
    end
    assert.is_true(#accepted > 1500)

    local function expected(s, e, f, group)
      local out = {}
      for _, ev in ipairs(accepted) do
        if ev.ms >= s and ev.ms < e and (not f.customerId or ev.customerId == f.customerId)
          and (not f.eventType or ev.eventType == f.eventType) and (not f.model or ev.model == f.model) then
          local k = group and group(ev) or 1
          local m = out[k] or { totalEvents = 0, totalInputTokens = 0, totalOutputTokens = 0, cost = 0 }
          out[k] = m
          m.totalEvents = m.totalEvents + 1
          m.totalInputTokens = m.totalInputTokens + ev.inputTokens
          m.totalOutputTokens = m.totalOutputTokens + (ev.outputTokens or 0)
          m.cost = m.cost + (ev.cost or 0)
        end
      end
      for _, m in pairs(out) do
        m.totalTokens = m.totalInputTokens + m.totalOutputTokens
        m.totalCostCents = m.cost / 1000
        m.cost = nil
      end
      return out
    end
    local EMPTY = { totalEvents = 0, totalTokens = 0, totalInputTokens = 0, totalOutputTokens = 0, totalCostCents = 0 }
    local function metrics(m)
      return { totalEvents = m.totalEvents, totalTokens = m.totalTokens, totalInputTokens = m.totalInputTokens,
        totalOutputTokens = m.totalOutputTokens, totalCostCents = m.totalCostCents }
    end

    -- Ranges: the whole span, aligned ones, and random instants to the millisecond, in several zones.
    local ranges = { { BASE - 86400000, BASE + SPAN + 86400000 }, { BASE, BASE + 86400000 },
      { BASE + 3600000, BASE + 2 * 86400000 + 60000 } }
    for _ = 1, 40 do
      local a, z = BASE - 3600000 + r(SPAN + 7200000), BASE - 3600000 + r(SPAN + 7200000)
      if r(3) == 0 then z = a + r(7200000) end
      local snap = r(4)
      if snap == 0 then a = a - a % 60000 elseif snap == 1 then a = a - a % 60000 + r(1000) end
      if r(3) == 0 then z = z - z % 60000 + r(1000) end
      if a > z then a, z = z, a end
      if a == z then z = a + 1 end
      ranges[#ranges + 1] = { a, z }
    end
    -- And ranges ending (or starting) within a second of a minute that holds events at its very start.
    local on_minute = {}
    for _, ev in ipairs(accepted) do if ev.ms % 60000 == 0 then on_minute[#on_minute + 1] = ev.ms end end
    for i = 1, 10 do
      local m = on_minute[1 + r(#on_minute)]
      if i % 2 == 0 then
        ranges[#ranges + 1] = { m - r(7200000), m + 1 + r(999) }
      else
        ranges[#ranges + 1] = { m - 1 - r(999), m + r(7200000) }
      end
    end
    local FILTERS = { {}, { customerId = "c2" }, { model = "m3" }, { eventType = "embed", customerId = "c4" },
      { customerId = "c1", eventType = "chat", model = "m1" }, { customerId = "nobody" } }
    local GROUPS = { model = "model", customer_id = "customerId", event_type = "eventType", provider = "provider" }
    local BUCKET = { hour = 3600000, day = 86400000, week = 7 * 86400000 }
    local MONDAY = 4 * 86400000 -- 1970-01-05T00:00:00Z, a Monday
    local checked = 0
    for i, rg in ipairs(ranges) do
      local s, e = rg[1], rg[2]
      local q = "startDate=" .. pct(iso_ms(s, OFFSETS[1 + r(#OFFSETS)])) .. "&endDate=" .. pct(iso_ms(e, OFFSETS[1 + r(#OFFSETS)]))
      for fi, f in ipairs(FILTERS) do
        if fi == 1 or (i + fi) % 3 == 0 then
          local fq = ""
          for _, name in ipairs { "customerId", "eventType", "model" } do
            if f[name] then fq = fq .. "&" .. name .. "=" .. f[name] end
          end
          local status, got = request(server.base_url, "GET", "/usage?" .. q .. fq)
          assert.equal(200, status)
          assert.same(expected(s, e, f)[1] and metrics(expected(s, e, f)[1]) or EMPTY, got, "summary " .. q .. fq)
          checked = checked + 1
          if fi <= 3 then
            for by, field in pairs(GROUPS) do
              local _, bd = request(server.base_url, "GET", "/usage/breakdown?groupBy=" .. by .. "&" .. q .. fq)
              local want = expected(s, e, f, function(ev) return ev[field] or "<null>" end)
              local got_map, prev = {}, nil
              for _, row in ipairs(bd.data) do
                got_map[row.dimension or "<null>"] = metrics(row)
                if prev then
                  assert.is_true(prev.totalCostCents > row.totalCostCents or (prev.totalCostCents == row.totalCostCents
                    and prev.totalEvents >= row.totalEvents), "breakdown order")
                end
                prev = row
              end
              local want_map = {}
              for k, m in pairs(want) do want_map[k] = metrics(m) end
              assert.same(want_map, got_map, "breakdown " .. by .. " " .. q .. fq)
              checked = checked + 1
            end
            for interval, size in pairs(BUCKET) do
              local _, ts = request(server.base_url, "GET", "/usage/timeseries?interval=" .. interval .. "&" .. q .. fq)
              local want = expected(s, e, f, function(ev)
                local base = interval == "week" and MONDAY or 0
                return (ev.ms - base) // size * size + base
              end)
              local starts = {}
              for k in pairs(want) do starts[#starts + 1] = k end
              table.sort(starts)
              local list = {}
              for n, k in ipairs(starts) do
                list[n] = metrics(want[k])
                list[n].timestamp = os.date("!%Y-%m-%dT%H:%M:%SZ", k // 1000)
              end
              local got_list = {}
              for n, p in ipairs(ts.data) do
                got_list[n] = metrics(p)
                got_list[n].timestamp = p.timestamp
              end
              assert.same(list, got_list, "timeseries " .. interval .. " " .. q .. fq)
              checked = checked + 1
            end
          end
        end
      end
      local _, cu = request(server.base_url, "GET", "/customers/c5/usage?" .. q)
      local want = expected(s, e, { customerId = "c5" })[1]
      local m = metrics(want or EMPTY)
      m.customerId = "c5"
      assert.same(m, cu)
    end
    assert.is_true(checked > 200)

    -- Listings: every page, newest first, each event once, with the filters applied.
    for _, f in ipairs { { customerId = "c3" }, { customerId = "c1", eventType = "tool" }, { model = "m2" }, {} } do
      local want = {}
      for n = #accepted, 1, -1 do
        local ev = accepted[n]
        if (not f.customerId or ev.customerId == f.customerId) and (not f.eventType or ev.eventType == f.eventType)
          and (not f.model or ev.model == f.model) then want[#want + 1] = ev.id .. "/" .. ev.inputTokens end
      end
      local got, cursor = {}, nil
      for _ = 1, 100 do
        local path = "/events?limit=37"
        for k, v in pairs(f) do path = path .. "&" .. k .. "=" .. v end
        if cursor then path = path .. "&cursor=" .. cursor end
        local status, page = request(server.base_url, "GET", path)
        assert.equal(200, status)
        for _, ev in ipairs(page.data) do got[#got + 1] = ev.id .. "/" .. ev.inputTokens end
        if not page.hasMore then break end
        cursor = page.nextCursor
      end
      assert.same(want, got)
    end
  end)
end)

describe("local server enforcement at scale", function()
  local server
  setup(function() server = support.start { faults = true } end)
  teardown(function() support.stop(server) end)

  local unique = 0
  local function uid(tag)
    unique = unique + 1
    return string.format("%s-%d-%d", tag, math.floor(socket.gettime() * 1000), unique)
  end
  local function req(method, path, body, now) return request(server.base_url, method, path, body, now) end

  it("admits exactly 10 of 200 concurrent tracks against a quota of 10, and of a rate limit of 10", function()
    for _, kind in ipairs { "quota", "rate limit" } do
      local cust = uid("conc")
      if kind == "quota" then
        assert.equal(201, (req("POST", "/quotas", { name = "ten", metric = "total_events", limitValue = 10, period = "day",
          dimensionFilters = { customer_id = cust } })))
      else
        assert.equal(201, (req("POST", "/rate-limits", { name = "ten", limitValue = 10, window = "hour",
          dimensionFilters = { customer_id = cust } })))
      end
      local conns = {}
      for i = 1, 200 do
        local c = socket.tcp()
        c:settimeout(10)
        assert(c:connect("127.0.0.1", server.port))
        conns[i] = c
      end
      local body = J { customerId = cust, eventType = "e", inputTokens = 1 }
      for _, c in ipairs(conns) do
        c:send("POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. KEY
          .. "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
      end
      local counts = {}
      for _, c in ipairs(conns) do
        local line = c:receive("*l") or ""
        local status = line:match("^HTTP/1%.1 (%d+)") or "none"
        counts[status] = (counts[status] or 0) + 1
        c:close()
      end
      assert.same({ ["200"] = 10, ["429"] = 190 }, counts, kind)
      local _, page = req("GET", "/events?customerId=" .. cust)
      assert.equal(10, #page.data)
    end
  end)

  it("keeps usage exact with events recorded before a quota, late and future events, updates and deletes", function()
    local cust = uid("cnt")
    local day = unix(2032, 7, 14) -- a Wednesday
    local now = day + 13 * 3600 + 0.25
    local D = day * 1000 -- times below in milliseconds
    local function ev(tokens, ms, extra)
      local e = { customerId = cust, eventType = "chat", inputTokens = tokens, timestamp = iso_ms(ms) }
      for k, v in pairs(extra or {}) do e[k] = v end
      return e
    end
    -- Before any quota: today's first and last millisecond count, yesterday's last and tomorrow's first do not.
    assert.equal(201, (req("POST", "/events/batch", { events = {
      ev(100, D), ev(200, D + 86400000 - 1, { model = "mx" }), ev(400, D + 3600000, { model = "mx" }),
      ev(1000, D - 1), ev(2000, D + 86400000) } }, now)))
    local status, q = req("POST", "/quotas", { name = "day", metric = "total_tokens", limitValue = 1000, period = "day",
      dimensionFilters = { customer_id = cust } }, now)
    assert.equal(201, status)
    local function used(at, dims)
      local _, c = req("POST", "/quotas/check", dims or { customer_id = cust }, at)
      for _, s in ipairs(c.quotas) do if s.id == q.id then return s.used end end
    end
    assert.equal(700, used(now))
    -- Late (yesterday) and future (tomorrow) events land in their own periods.
    assert.equal(201, (req("POST", "/events", ev(5, D - 7200000), now)))
    assert.equal(201, (req("POST", "/events", ev(7, D + 86405000), now)))
    assert.equal(700, used(now))
    assert.equal(2007, used(day + 86400 + 60))
    assert.equal(1005, used(day - 1))
    -- A replayed key counts once.
    local keyed = ev(50, D + 13 * 3600000 + 250, { idempotencyKey = cust .. "-k" })
    assert.equal(201, (req("POST", "/events", keyed, now)))
    assert.equal(200, (req("POST", "/events", keyed, now)))
    assert.equal(200, (req("POST", "/track", keyed, now)))
    assert.equal(750, used(now))
    -- Track to the limit, then over it.
    local s1, t1 = req("POST", "/track", { customerId = cust, eventType = "chat", inputTokens = 250 }, now)
    assert.equal(200, s1)
    assert.equal(1000, t1.quotas[1].used)
    assert.equal(429, (req("POST", "/track", { customerId = cust, eventType = "chat", inputTokens = 1 }, now)))
    -- An update starts from the stored events again: a new limit, then a new filter.
    assert.equal(200, (req("PUT", "/quotas/" .. q.id, { limitValue = 2000 }, now)))
    assert.equal(1000, used(now))
    assert.equal(200, (req("POST", "/track", { customerId = cust, eventType = "chat", inputTokens = 500, model = "mx" }, now)))
    assert.equal(1500, used(now))
    assert.equal(200, (req("PUT", "/quotas/" .. q.id, { dimensionFilters = { customer_id = cust, model = "mx" } }, now)))
    assert.equal(1100, used(now, { customer_id = cust, model = "mx" }))
    -- Deleted and created again: the same usage, from the store.
    assert.equal(200, (req("DELETE", "/quotas/" .. q.id)))
    assert.is_nil(used(now))
    status, q = req("POST", "/quotas", { name = "again", metric = "total_events", limitValue = 100, period = "day",
      dimensionFilters = { customer_id = cust } }, now)
    assert.equal(201, status)
    assert.equal(6, used(now))
    -- More than the 64 periods a counter keeps: an hourly quota asked about 80 hours, then the first again.
    local hq_status, hq = req("POST", "/quotas", { name = "hourly", metric = "total_events", limitValue = 100, period = "hour",
      dimensionFilters = { customer_id = cust .. "-h" } }, now)
    assert.equal(201, hq_status)
    for h = 0, 79 do
      if h % 10 == 0 then
        assert.equal(201, (req("POST", "/events", { customerId = cust .. "-h", eventType = "e",
          timestamp = iso_ms(D + h * 3600000 + 1000) }, now)))
      end
      local _, c = req("POST", "/quotas/check", { customer_id = cust .. "-h" }, day + h * 3600 + 2)
      assert.equal(h % 10 == 0 and 1 or 0, c.quotas[1].used, "hour " .. h)
      assert.equal(hq.id, c.quotas[1].id)
    end
    assert.equal(201, (req("POST", "/events", { customerId = cust .. "-h", eventType = "e", timestamp = iso_ms(D + 5000) }, now)))
    local _, c0 = req("POST", "/quotas/check", { customer_id = cust .. "-h" }, day + 10)
    assert.equal(2, c0.quotas[1].used)
  end)

  it("counts string properties, costs and sub-second windows exactly, before and after the limit exists", function()
    local cust = uid("prop")
    local now = unix(2032, 9, 1, 10, 0, 0) + 0.5
    local function ev(props, cost, ms)
      return { customerId = cust, eventType = "e", properties = props, costCents = cost,
        timestamp = iso_ms(ms or unix(2032, 9, 1, 10, 0, 0) * 1000 + 500) }
    end
    assert.equal(201, (req("POST", "/events/batch", { events = {
      ev({ region = "eu" }, 0.1), ev({ region = "us" }, 0.2), ev({ region = 1 }, 0.4), ev({ region = "eu", tier = "x" }, 0.2),
      ev({ other = "eu" }, 0.8) } }, now)))
    local _, q = req("POST", "/quotas", { name = "eu cost", metric = "total_cost_cents", limitValue = 0.5, period = "month",
      dimensionFilters = { customer_id = cust, region = "eu" } }, now)
    local _, c = req("POST", "/quotas/check", { customer_id = cust, region = "eu" }, now)
    assert.equal(q.id, c.quotas[1].id)
    assert.equal(0.3, c.quotas[1].used) -- 0.1 + 0.2, reported to a millionth of a cent
    local s1, t1 = req("POST", "/track", ev({ region = "eu" }, 0.2), now)
    assert.equal(200, s1)
    assert.equal(0.5, t1.quotas[1].used)
    assert.equal(429, (req("POST", "/track", ev({ region = "eu" }, 0.000001), now)))
    assert.equal(201, (req("POST", "/events", ev({ region = "us" }, 5), now)))
    _, c = req("POST", "/quotas/check", { customer_id = cust, region = "eu" }, now)
    assert.equal(0.5, c.quotas[1].used)
    -- Events in this second, before a per-second rate limit exists.
    local sec = math.floor(now) + 30
    local S = sec * 1000
    assert.equal(201, (req("POST", "/events/batch", { events = {
      ev(nil, nil, S), ev(nil, nil, S + 999), ev(nil, nil, S + 1000), ev(nil, nil, S - 1) } }, now)))
    assert.equal(201, (req("POST", "/rate-limits", { name = "3/s", limitValue = 3, window = "second",
      dimensionFilters = { customer_id = cust } }, now)))
    local _, rl = req("POST", "/rate-limits/check", { customer_id = cust }, sec + 0.5)
    assert.equal(1, rl.rateLimits[1].remaining)
    assert.equal(200, (req("POST", "/track", ev(nil, nil, S + 500), sec + 0.5)))
    assert.equal(429, (req("POST", "/track", ev(nil, nil, S + 600), sec + 0.6)))
    assert.equal(200, (req("POST", "/track", ev(nil, nil, S + 1500), sec + 1.5)))
  end)
end)

describe("local server restart and migration", function()
  it("answers the same usage and decisions after a restart, from the database alone", function()
    local dir = support.tmpdir("restart")
    local info = support.start { dir = dir, faults = true }
    local now = unix(2033, 1, 10, 8) + 0.125
    local base = info.base_url
    local events = {}
    for i = 1, 3000 do
      events[#events + 1] = { customerId = "r" .. (i % 7), eventType = "e", inputTokens = i, costCents = { raw = "0.001" },
        timestamp = iso_ms(math.floor((now - 86400) * 1000) + i * 20000) }
      if #events == 1000 then
        assert.equal(201, (request(base, "POST", "/events/batch", { events = events }, now)))
        events = {}
      end
    end
    assert.equal(201, (request(base, "POST", "/quotas", { name = "r3", metric = "total_tokens", limitValue = 1e9, period = "day",
      dimensionFilters = { customer_id = "r3" } }, now)))
    assert.equal(200, (request(base, "POST", "/track", { customerId = "r3", eventType = "e", inputTokens = 9 }, now)))
    local paths = { "/usage?startDate=2033-01-09&endDate=2033-01-11", "/usage/breakdown?groupBy=customer_id&startDate=2033-01-09&endDate=2033-01-11",
      "/usage/timeseries?interval=hour&startDate=2033-01-09T07:59:59.5Z&endDate=2033-01-10T08:00:00.25Z", "/events?limit=5" }
    local function snapshot(b)
      local out = {}
      for i, p in ipairs(paths) do out[i] = select(3, request(b, "GET", p)) end
      local _, c = request(b, "POST", "/quotas/check", { customer_id = "r3" }, now)
      out[#out + 1] = J(c.quotas[1].used)
      return out
    end
    local before = snapshot(base)
    support.stop(info)
    info = support.start { dir = dir, faults = true }
    local after = snapshot(info.base_url)
    support.stop(info)
    assert.same(before, after)
    assert.equal(3001, core.decode(before[1]).totalEvents)
    assert.equal(3, core.decode(before[1]).totalCostCents)
  end)

  it("after a kill -9 mid-ingest: every acknowledged event, rollups that agree with the events, no double count", function()
    local dir = support.tmpdir("kill9")
    local info = support.start { dir = dir, faults = true }
    local base = info.base_url
    local day = unix(2033, 2, 1)
    local r = rng(99)
    local acked = {}
    assert.equal(201, (request(base, "POST", "/quotas", { name = "k9", metric = "total_tokens", limitValue = 1e12, period = "day",
      dimensionFilters = { customer_id = "k9" } })))
    local function batch(n, tag)
      local list = {}
      for i = 1, n do
        list[i] = { customerId = i % 3 == 0 and "k9-other" or "k9", eventType = "e", inputTokens = 1 + r(1000),
          idempotencyKey = tag .. "-" .. i, timestamp = iso_ms(day * 1000 + r(86400000)) }
      end
      return list
    end
    for b = 1, 20 do
      local list = batch(200, "acked" .. b)
      local status, res = request(base, "POST", "/events/batch", { events = list })
      assert.equal(201, status)
      for i, e in ipairs(list) do acked[res.results[i].id] = e.inputTokens end
    end
    -- Eight batches in flight on their own connections when every nginx process dies.
    local conns = {}
    for j = 1, 8 do
      local c = socket.tcp()
      c:settimeout(5)
      assert(c:connect("127.0.0.1", info.port))
      local body = J { events = batch(500, "inflight" .. j) }
      c:send("POST /v1/events/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. KEY
        .. "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
      conns[j] = c
    end
    conns[1]:receive("*l")
    local f = assert(io.open("/proc/" .. info.pid .. "/task/" .. info.pid .. "/children"))
    local pids = { info.pid }
    for p in f:read("*a"):gmatch("%d+") do pids[#pids + 1] = p end
    f:close()
    -- The master first: alive, it would fork a new worker for the one killed.
    os.execute("kill -9 " .. table.concat(pids, " "))
    for _, c in ipairs(conns) do c:close() end
    local local_server = require "limitry_local"
    for _ = 1, 200 do
      if not local_server.alive(info.pid) then break end
      socket.sleep(0.02)
    end
    os.remove(dir .. "/logs/nginx.pid")
    info = support.start { dir = dir, faults = true }
    local ok, err = pcall(function()
      -- The events, from the event rows themselves.
      local listed, cursor, sums = {}, nil, { all = 0, k9 = 0, part = 0, n = 0 }
      local a_ms, b_ms = day * 1000 + 30500, day * 1000 + 86399500
      for _ = 1, 200 do
        local _, page = request(info.base_url, "GET", "/events?limit=100" .. (cursor and ("&cursor=" .. cursor) or ""))
        for _, e in ipairs(page.data) do
          assert.is_nil(listed[e.id], "listed twice: " .. e.id)
          listed[e.id] = e.inputTokens
          sums.n = sums.n + 1
          sums.all = sums.all + e.inputTokens
          if e.customerId == "k9" then sums.k9 = sums.k9 + e.inputTokens end
          local hh, mm, ss, ms = e.timestamp:match("T(%d%d):(%d%d):(%d%d)%.?(%d*)Z$")
          local t = day * 1000 + ((hh * 60 + mm) * 60 + ss) * 1000 + (tonumber(ms ~= "" and ms or 0))
          if t >= a_ms and t < b_ms then sums.part = sums.part + e.inputTokens end
        end
        if not page.hasMore then break end
        cursor = page.nextCursor
      end
      for id, tokens in pairs(acked) do assert.equal(tokens, listed[id], "acknowledged " .. id) end
      -- Whole batches only: 20 acknowledged, and each in-flight one all or nothing.
      assert.equal(0, (sums.n - 4000) % 500)
      print(string.format("\n  kill -9 with 8 batches of 500 in flight: %d of them stored", (sums.n - 4000) // 500))
      -- The rollups (totals, a customer's rows, minutes and partial minutes) and the counter agree.
      local range = "startDate=" .. pct(iso_ms(day * 1000)) .. "&endDate=" .. pct(iso_ms((day + 86400) * 1000))
      local _, all = request(info.base_url, "GET", "/usage?" .. range)
      assert.equal(sums.n, all.totalEvents)
      assert.equal(sums.all, all.totalInputTokens)
      local _, k9 = request(info.base_url, "GET", "/usage?" .. range .. "&customerId=k9")
      assert.equal(sums.k9, k9.totalInputTokens)
      local _, part = request(info.base_url, "GET", "/usage?startDate=" .. pct(iso_ms(a_ms)) .. "&endDate=" .. pct(iso_ms(b_ms)))
      assert.equal(sums.part, part.totalInputTokens)
      local _, series = request(info.base_url, "GET", "/usage/timeseries?interval=hour&" .. range)
      local hourly = 0
      for _, p in ipairs(series.data) do hourly = hourly + p.totalInputTokens end
      assert.equal(sums.all, hourly)
      local _, c = request(info.base_url, "POST", "/quotas/check", { customer_id = "k9" }, day + 3600)
      assert.equal(sums.k9, c.quotas[1].used)
    end)
    support.stop(info)
    assert(ok, err)
  end)

  it("migrates an old events.jsonl once: ids, order, keys and sums kept, a torn line skipped", function()
    local dir = support.tmpdir("migrate")
    assert(os.execute("mkdir -p '" .. dir .. "/data'"))
    -- As the server wrote events before it kept SQLite: one exact JSON line each, a line from before
    -- events had ids, a key written twice, and a torn last line.
    local lines = {
      '{"id":"evt_1","customerId":"a","eventType":"e","idempotencyKey":"k1","timestamp":"2024-05-01T00:00:00Z",'
        .. '"inputTokens":1,"outputTokens":2,"totalTokens":3,"costCents":0.1}',
      '{"id":"evt_2","customerId":"b","eventType":"e","model":"m","provider":"p","timestamp":"2024-05-01T10:00:00.123Z",'
        .. '"inputTokens":10,"outputTokens":0,"totalTokens":10,"latencyMs":5,"costCents":0.2,"properties":{"region":"eu"}}',
      '{"customerId":"a","eventType":"e","timestamp":"2024-05-02T00:00:00Z","inputTokens":100,"outputTokens":0,"totalTokens":100,"costCents":0}',
      '{"id":"evt_7","customerId":"a","eventType":"x","idempotencyKey":"k7","timestamp":"2024-05-03T23:59:59.999Z",'
        .. '"inputTokens":1000,"outputTokens":1,"totalTokens":1001,"costCents":1e-7}',
      '{"id":"evt_8","customerId":"c","eventType":"x","idempotencyKey":"k1","timestamp":"2024-05-04T00:00:00Z",'
        .. '"inputTokens":5,"outputTokens":5,"totalTokens":10,"costCents":9}',
      '{"customerId":"torn","eventType":"e","timest',
    }
    local f = assert(io.open(dir .. "/data/events.jsonl", "wb"))
    f:write(table.concat(lines, "\n"))
    f:close()
    local info = support.start { dir = dir, faults = false }
    local ok, err = pcall(function()
      local base = info.base_url
      local _, s = request(base, "GET", "/usage?startDate=2024-05-01&endDate=2024-06-01")
      assert.same({ totalEvents = 4, totalInputTokens = 1111, totalOutputTokens = 3, totalTokens = 1114, totalCostCents = 0.3 }, s)
      local _, page = request(base, "GET", "/events?limit=10")
      local ids = {}
      for i, e in ipairs(page.data) do ids[i] = e.id end
      assert.same({ "evt_7", "evt_3", "evt_2", "evt_1" }, ids)
      assert.same({ region = "eu" }, page.data[3].properties)
      assert.equal("2024-05-01T10:00:00.123Z", page.data[3].timestamp)
      assert.equal(5, page.data[3].latencyMs)
      -- Keys are kept: a replay answers the migrated event; new ids come after the old ones.
      local status, dup = request(base, "POST", "/events", { customerId = "z", eventType = "e", idempotencyKey = "k7" })
      assert.equal(200, status)
      assert.equal("evt_7", dup.id)
      -- evt_8 was in the file too (a second event with key k1, not migrated): never given again.
      local _, fresh = request(base, "POST", "/events", { customerId = "z", eventType = "e" })
      assert.equal("evt_9", fresh.id)
      assert.is_nil(io.open(dir .. "/data/events.jsonl"))
      assert.truthy(io.open(dir .. "/data/events.jsonl.migrated"))
    end)
    support.stop(info)
    assert(ok, err)
    -- Started again: the database is read, nothing is migrated twice.
    info = support.start { dir = dir, faults = false }
    local _, s = request(info.base_url, "GET", "/usage?startDate=2024-05-01&endDate=2024-06-01")
    local _, page = request(info.base_url, "GET", "/events?limit=1")
    support.stop(info)
    assert.equal(4, s.totalEvents)
    assert.equal("evt_9", page.data[1].id)
  end)
end)
