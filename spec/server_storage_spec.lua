-- The local server's storage layout (server/lua/limitry_server/store.lua, query.lua), checked for
-- exactness where the layout has its own paths: a customer's events listed through the index of
-- blocks of 4,096 events (blocks without the customer, pages ending on a block's edge, filters), a
-- customer's usage sought t by t in the rollups (ranges far wider than the data, before 1970,
-- partial hours and minutes at both ends, series), and a database of the previous format (indexes
-- per customer) upgraded at start. Expected values are computed here, in integers; raw HTTP over
-- luasocket, as in server_scale_spec.lua.
local core = require "limitry.core"
local support = require "spec.support.server"

local KEY = "lm_local_test_key"

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

local function request(base, method, path, body)
  local headers = { Authorization = "Bearer " .. KEY }
  if body ~= nil then
    headers["Content-Type"] = "application/json"
    if type(body) == "table" then body = J(body) end
  end
  local status, raw = support.http(method, base .. path, body, headers)
  return status, core.decode(raw), raw
end

local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end
local function unix(y, m, d, h, mi, s) return days_from_civil(y, m, d) * 86400 + (h or 0) * 3600 + (mi or 0) * 60 + (s or 0) end

-- An instant in milliseconds (negative before 1970) as ISO 8601, UTC.
local function iso_ms(ms)
  local secs, frac = ms // 1000, ms % 1000
  local d = secs // 86400
  local rest = secs - d * 86400
  -- civil_from_days
  local z = d + 719468
  local era = (z >= 0 and z or z - 146096) // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local day = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format("%04d-%02d-%02dT%02d:%02d:%02d%sZ", y, m, day, rest // 3600, rest % 3600 // 60, rest % 60,
    frac ~= 0 and string.format(".%03d", frac) or "")
end

local function pct(s) return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end)) end

local function rng(seed)
  local x = seed
  return function(n)
    x = (16807 * x) % 2147483647
    return n and (x % n) or x / 2147483647
  end
end

describe("local server storage", function()
  local server
  setup(function() server = support.start { faults = false } end)
  teardown(function() support.stop(server) end)

  it("lists a customer's events across blocks of 4,096, some without the customer, with filters and cursors", function()
    -- 10,000 events (evt_1 .. evt_10000: a fresh server): "rare" in block 0 and block 2 only,
    -- "dense" every third event, the others spread over 40 customers.
    local rare = {}
    for i = 100, 110 do rare[i] = true end
    for i = 8192, 8195 do rare[i] = true end -- the first four of block 2
    rare[4095] = true                        -- the last of block 0
    local events = {}
    for i = 1, 10000 do
      local c = rare[i] and "rare" or (i % 3 == 0 and "dense" or ("other" .. i % 40))
      events[i] = { customerId = c, eventType = i % 2 == 0 and "chat" or "embed", model = "m" .. i % 3, inputTokens = i,
        timestamp = iso_ms(unix(2030, 6, 1) * 1000 + i * 1000) }
    end
    for b = 0, 9 do
      local list = {}
      for i = 1, 1000 do list[i] = events[b * 1000 + i] end
      local status, res = request(server.base_url, "POST", "/events/batch", { events = list })
      assert.equal(201, status)
      assert.equal("evt_" .. (b * 1000 + 1), res.results[1].id)
    end
    local function want(f)
      local out = {}
      for i = 10000, 1, -1 do
        local e = events[i]
        if e.customerId == f.customerId and (not f.eventType or e.eventType == f.eventType) and (not f.model or e.model == f.model) then
          out[#out + 1] = "evt_" .. i .. "/" .. e.inputTokens
        end
      end
      return out
    end
    local function listed(f, limit)
      local got, cursor, pages = {}, nil, 0
      for _ = 1, 5000 do
        local path = "/events?limit=" .. limit
        for k, v in pairs(f) do path = path .. "&" .. k .. "=" .. v end
        if cursor then path = path .. "&cursor=" .. cursor end
        local status, page = request(server.base_url, "GET", path)
        assert.equal(200, status)
        pages = pages + 1
        for _, e in ipairs(page.data) do
          assert.equal(f.customerId, e.customerId)
          got[#got + 1] = e.id .. "/" .. e.inputTokens
        end
        assert.equal(page.hasMore, page.nextCursor ~= core.null and page.nextCursor ~= nil)
        if not page.hasMore then break end
        assert.equal(limit, #page.data)
        cursor = page.nextCursor
      end
      return got, pages
    end
    for _, case in ipairs {
      { { customerId = "rare" }, 1 }, { { customerId = "rare" }, 4 }, { { customerId = "rare" }, 5 }, { { customerId = "rare" }, 100 },
      { { customerId = "rare", eventType = "chat" }, 2 }, { { customerId = "rare", model = "m1" }, 3 },
      { { customerId = "dense" }, 100 }, { { customerId = "dense", eventType = "embed", model = "m0" }, 37 },
      { { customerId = "other7" }, 100 }, { { customerId = "nobody" }, 10 },
    } do
      local f, limit = case[1], case[2]
      local w = want(f)
      local got, pages = listed(f, limit)
      assert.same(w, got, J(f) .. " limit " .. limit)
      assert.equal(math.max(1, math.ceil(#w / limit)), pages, J(f) .. " pages")
    end
    assert.equal(16, #want { customerId = "rare" })
    -- A page of "rare" that ends on block 2's first event: the next page starts in block 0.
    local _, p1 = request(server.base_url, "GET", "/events?customerId=rare&limit=4")
    assert.equal("evt_8192", p1.data[4].id)
    local _, p2 = request(server.base_url, "GET", "/events?customerId=rare&limit=2&cursor=" .. p1.nextCursor)
    assert.same({ "evt_4095", "evt_110" }, { p2.data[1].id, p2.data[2].id })
  end)

  it("sums a customer's usage exactly over ranges wider than the data, before 1970, with partial hours at both ends", function()
    local r = rng(2718)
    -- Events in three clusters: around the epoch (both sides), in 2031 and in 2033, for three customers.
    local CLUSTERS = { unix(1969, 12, 31, 22) * 1000, unix(2031, 5, 5, 10) * 1000, unix(2033, 11, 30, 23) * 1000 }
    local accepted = {}
    for _ = 1, 6 do
      local list = {}
      for i = 1, 300 do
        local base = CLUSTERS[1 + r(3)]
        local ms = base + r(6 * 3600 * 1000) -- six hours from the cluster's start
        if r(8) == 0 then ms = ms - ms % 3600000 end
        if r(8) == 0 then ms = ms - ms % 60000 end
        local e = { customerId = "s" .. r(3), eventType = r(2) == 0 and "chat" or "tool", model = r(3) == 0 and "mx" or "my",
          inputTokens = r(1000), outputTokens = r(100), ms = ms, timestamp = iso_ms(ms) }
        if r(2) == 0 then e.cost = r(50000) end
        list[i] = e
        accepted[#accepted + 1] = e
      end
      local wire = {}
      for i, e in ipairs(list) do
        wire[i] = { customerId = e.customerId, eventType = e.eventType, model = e.model, inputTokens = e.inputTokens,
          outputTokens = e.outputTokens, timestamp = e.timestamp,
          costCents = e.cost and { raw = string.format("%d.%03d", e.cost // 1000, e.cost % 1000) } or nil }
      end
      assert.equal(201, (request(server.base_url, "POST", "/events/batch", { events = wire })))
    end
    local function expected(s, e, f, bucket)
      local out = {}
      for _, ev in ipairs(accepted) do
        if ev.ms >= s and ev.ms < e and ev.customerId == f.customerId and (not f.model or ev.model == f.model)
          and (not f.eventType or ev.eventType == f.eventType) then
          local k = bucket and (ev.ms // bucket * bucket) or 1
          local m = out[k] or { totalEvents = 0, totalInputTokens = 0, totalOutputTokens = 0, cost = 0 }
          out[k] = m
          m.totalEvents = m.totalEvents + 1
          m.totalInputTokens = m.totalInputTokens + ev.inputTokens
          m.totalOutputTokens = m.totalOutputTokens + ev.outputTokens
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
    local ranges = {
      { unix(1900, 1, 1) * 1000, unix(2100, 1, 1) * 1000 },            -- two centuries, days sought only where data is
      { unix(1969, 1, 1) * 1000, unix(1970, 1, 1) * 1000 },            -- the epoch's left side
      { unix(1969, 12, 31, 23, 17) * 1000 + 250, unix(1970, 1, 1, 2, 3) * 1000 + 999 }, -- across it, partial at both ends
      { unix(2031, 5, 5, 10, 30) * 1000 + 1, unix(2033, 11, 30, 23, 59) * 1000 + 59999 },
      { unix(2031, 5, 5, 11) * 1000 - 1, unix(2031, 5, 5, 13) * 1000 + 1 }, -- a millisecond into the hours beside
      { unix(2040, 1, 1) * 1000, unix(2041, 1, 1) * 1000 },            -- after every event
      { unix(1950, 1, 1) * 1000, unix(1960, 1, 1) * 1000 },            -- before every event
    }
    for _ = 1, 12 do
      local c = CLUSTERS[1 + r(3)]
      local a = c - 3600000 + r(8 * 3600000)
      local z = a + 1 + r(5 * 3600000)
      ranges[#ranges + 1] = { a, z }
    end
    local checked = 0
    for _, rg in ipairs(ranges) do
      local s, e = rg[1], rg[2]
      local q = "startDate=" .. pct(iso_ms(s)) .. "&endDate=" .. pct(iso_ms(e))
      for _, f in ipairs { { customerId = "s0" }, { customerId = "s1", model = "mx" }, { customerId = "s2", eventType = "tool" },
        { customerId = "s9" } } do
        local fq = ""
        for _, name in ipairs { "customerId", "eventType", "model" } do
          if f[name] then fq = fq .. "&" .. name .. "=" .. f[name] end
        end
        local status, got = request(server.base_url, "GET", "/usage?" .. q .. fq)
        assert.equal(200, status)
        local w = expected(s, e, f)[1]
        assert.same(w and metrics(w) or EMPTY, got, "summary " .. q .. fq)
        if not f.model and not f.eventType then
          local _, cu = request(server.base_url, "GET", "/customers/" .. f.customerId .. "/usage?" .. q)
          local m = metrics(w or EMPTY)
          m.customerId = f.customerId
          assert.same(m, cu, "customer usage " .. q)
        end
        -- Hourly and daily series where the range is short enough to list.
        if e - s <= 40 * 86400000 then
          for interval, size in pairs { hour = 3600000, day = 86400000 } do
            local _, ts = request(server.base_url, "GET", "/usage/timeseries?interval=" .. interval .. "&" .. q .. fq)
            local buckets = expected(s, e, f, size)
            local starts = {}
            for k in pairs(buckets) do starts[#starts + 1] = k end
            table.sort(starts)
            local list = {}
            for n, k in ipairs(starts) do
              list[n] = metrics(buckets[k])
              list[n].timestamp = iso_ms(k)
            end
            local got_list = {}
            for n, p in ipairs(ts.data) do
              got_list[n] = metrics(p)
              got_list[n].timestamp = p.timestamp
            end
            assert.same(list, got_list, "timeseries " .. interval .. " " .. q .. fq)
          end
        end
        local _, bd = request(server.base_url, "GET", "/usage/breakdown?groupBy=model&" .. q .. fq)
        local by_model = {}
        for _, ev in ipairs(accepted) do
          if ev.ms >= s and ev.ms < e and ev.customerId == f.customerId and (not f.model or ev.model == f.model)
            and (not f.eventType or ev.eventType == f.eventType) then
            by_model[ev.model] = (by_model[ev.model] or 0) + ev.inputTokens
          end
        end
        local got_model = {}
        for _, row in ipairs(bd.data) do got_model[row.dimension] = row.totalInputTokens end
        assert.same(by_model, got_model, "breakdown " .. q .. fq)
        checked = checked + 1
      end
    end
    assert.is_true(checked >= 70)
  end)
end)

describe("local server storage format", function()
  -- The server's own SQLite binding, under LuaJIT (as nginx runs it), on a stopped server's database.
  local function sql(path, statements)
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write('package.path = "server/lua/?.lua;" .. package.path\n',
      'local db = require("limitry_server.sqlite").open(', string.format("%q", path), ')\n',
      'db:exec(', string.format("%q", statements), ')\n',
      'local st = db:prepare("SELECT name FROM sqlite_master WHERE type = \'index\' AND sql IS NOT NULL ORDER BY name")\n',
      'local out = {}\nwhile st:step() do out[#out + 1] = st:text(0) end\nst:reset()\n',
      'local v = db:row("SELECT v FROM meta WHERE k = \'format\'")\n',
      'io.write(table.concat(out, ","), " format=", tostring(v and v[1]))\ndb:close()\n')
    f:close()
    local p = io.popen("luajit " .. script .. " 2>&1")
    local out = p:read("*a")
    p:close()
    os.remove(script)
    return out
  end

  it("upgrades a database of format 2 (indexes per customer) at start: same answers, the new index", function()
    local dir = support.tmpdir("format2")
    local info = support.start { dir = dir, faults = false }
    local base = info.base_url
    local list = {}
    for i = 1, 500 do
      list[i] = { customerId = "f" .. i % 7, eventType = "e", model = "m" .. i % 2, inputTokens = i,
        timestamp = iso_ms(unix(2034, 2, 3) * 1000 + i * 61000) }
    end
    assert.equal(201, (request(base, "POST", "/events/batch", { events = list })))
    local paths = { "/usage?startDate=2034-02-03T00:17:30.5Z&endDate=2034-02-03T07:01:00Z&customerId=f3",
      "/usage/timeseries?interval=hour&startDate=2034-02-01&endDate=2034-02-05&customerId=f5&model=m1",
      "/events?customerId=f2&limit=30", "/usage/breakdown?groupBy=customer_id&startDate=2034-02-01&endDate=2034-02-05" }
    local function snapshot(b)
      local out = {}
      for i, p in ipairs(paths) do out[i] = select(3, request(b, "GET", p)) end
      return out
    end
    local before = snapshot(base)
    support.stop(info)
    local db = dir .. "/data/events.db"
    -- As format 2 left it: an index on the events' customer and on each rollup's (customer, t).
    assert.equal("events_customer,events_keys,events_ts,r_day_customer,r_hour_customer,r_minute_customer format=2",
      sql(db, "DROP INDEX events_block; CREATE INDEX events_customer ON events (customer);"
        .. " CREATE INDEX r_minute_customer ON r_minute (customer, t); CREATE INDEX r_hour_customer ON r_hour (customer, t);"
        .. " CREATE INDEX r_day_customer ON r_day (customer, t); UPDATE meta SET v = 2 WHERE k = 'format';"))
    info = support.start { dir = dir, faults = false }
    local after = snapshot(info.base_url)
    support.stop(info)
    assert.same(before, after)
    assert.equal(30, #core.decode(after[3]).data)
    assert.equal("events_block,events_keys,events_ts format=3", sql(db, ""))
  end)
end)
