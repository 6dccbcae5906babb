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

  it("stores each event's text and answers a batch byte for byte (numbers exact, strings escaped)", function()
    -- { what is sent, the stored text from inputTokens on }: one property each, so one order.
    local cases = {
      { [["inputTokens":99999999999999,"outputTokens":100000000000000,"costCents":0.1,"latencyMs":0]],
        [["inputTokens":99999999999999,"outputTokens":100000000000000,"totalTokens":199999999999999,"latencyMs":0,"costCents":0.10000000000000001]] },
      { [["inputTokens":9007199254740990,"outputTokens":1,"costCents":1e12,"latencyMs":9007199254740991]],
        [["inputTokens":9007199254740990,"outputTokens":1,"totalTokens":9007199254740991,"latencyMs":9007199254740991,"costCents":1000000000000]] },
      { [["inputTokens":-0,"costCents":-0,"properties":{"n":-0}]],
        [["inputTokens":0,"outputTokens":0,"totalTokens":0,"costCents":0,"properties":{"n":0}]] },
      { [["costCents":123456789.123456,"properties":{"big":1e300}]],
        [["inputTokens":0,"outputTokens":0,"totalTokens":0,"costCents":123456789.123456,"properties":{"big":1.0000000000000001e+300}]] },
      { [["properties":{"k\\/\"":"v\u00e9\n\u007f"}]],
        [["inputTokens":0,"outputTokens":0,"totalTokens":0,"costCents":0,"properties":{"k\\\/\"":"vé\n\u007f"}]] },
      { [["properties":{"t":true}]], [["inputTokens":0,"outputTokens":0,"totalTokens":0,"costCents":0,"properties":{"t":true}]] },
      { [["properties":{"f":false,"x":12345678901234567890}]], nil },
    }
    local body = {}
    for i, c in ipairs(cases) do
      body[i] = [[{"customerId":"exact","eventType":"e\"q","model":"m/1","idempotencyKey":"key\"]] .. i
        .. [[","timestamp":"2035-01-02T03:04:05.060Z",]] .. c[1] .. "}"
    end
    local raw = '{"events":[' .. table.concat(body, ",") .. "]}"
    local status, res, text = request(server.base_url, "POST", "/events/batch", raw)
    assert.equal(201, status, text)
    local first = tonumber(res.results[1].id:match("%d+"))
    local want = { [[{"count":7,"duplicates":0,"recorded":7,"results":[]] }
    for i = 1, #cases do
      want[#want + 1] = (i > 1 and "," or "") .. [[{"id":"evt_]] .. (first + i - 1)
        .. [[","status":"recorded","timestamp":"2035-01-02T03:04:05.060Z"}]]
    end
    assert.equal(table.concat(want) .. "]}", text)
    -- The same again: duplicates, each with its key as JSON.
    text = select(3, request(server.base_url, "POST", "/events/batch", raw))
    want = { [[{"count":7,"duplicates":7,"recorded":0,"results":[]] }
    for i = 1, #cases do
      want[#want + 1] = (i > 1 and "," or "") .. [[{"id":"evt_]] .. (first + i - 1) .. [[","idempotencyKey":"key\"]] .. i
        .. [[","status":"duplicate"}]]
    end
    assert.equal(table.concat(want) .. "]}", text)
    local _, _, listing = request(server.base_url, "GET", "/events?customerId=exact&limit=10")
    for i, c in ipairs(cases) do
      if c[2] then
        local line = [[{"id":"evt_]] .. (first + i - 1) .. [[","customerId":"exact","eventType":"e\"q","model":"m\/1",]]
          .. [["idempotencyKey":"key\"]] .. i .. [[","timestamp":"2035-01-02T03:04:05.060Z",]] .. c[2] .. "}"
        assert.truthy(listing:find(line, 1, true), "event " .. i .. ": " .. line .. " in " .. listing)
      else
        local ev = core.decode(listing).data[#cases - i + 1]
        assert.same({ f = false, x = 12345678901234567890 }, ev.properties)
      end
    end
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

describe("local server timestamps", function()
  it("reads the usual UTC form byte by byte exactly as the full parser does, and refuses the rest to it", function()
    package.path = "server/lua/?.lua;" .. package.path
    local time = require "limitry_server.time"
    local r = rng(777)
    local checked, fast = 0, 0
    local function check(s)
      checked = checked + 1
      local a, asecs = time.parse_utc(s)
      if a then
        fast = fast + 1
        local b, bsecs, digits = time.parse(s)
        -- The same double (fraction included), and the text is what the server would write.
        assert.equal(b, a, s)
        assert.equal(bsecs, asecs, s)
        assert.equal(s, time.format(bsecs, digits))
      end
    end
    for _, base in ipairs { "2025-01-07T04:48:00", "1969-12-31T23:59:59", "2000-02-29T12:00:01", "0001-01-01T00:00:00" } do
      check(base .. "Z")
      for v = 0, 999 do check(string.format("%s.%03dZ", base, v)) end
      for v = 0, 99 do check(string.format("%s.%02dZ", base, v)) end
    end
    local chars = "0123456789-T:.Zz+ tx"
    for _ = 1, 50000 do
      local str = string.format("%04d-%02d-%02dT%02d:%02d:%02d", r(10000), r(14), r(33), r(26), r(62), r(62))
      local k = r(11)
      if k > 0 and k <= 9 then
        local f = {}
        for i = 1, k do f[i] = tostring(r(10)) end
        str = str .. "." .. table.concat(f)
      elseif k == 10 then
        str = str .. "."
      end
      str = str .. (r(8) == 0 and "+01:00" or "Z")
      if r(5) == 0 then
        local i, c = 1 + r(#str), 1 + r(#chars)
        str = str:sub(1, i - 1) .. chars:sub(c, c) .. str:sub(i + 1)
      end
      check(str)
    end
    -- Not the usual form: left to parse.
    for _, s in ipairs { "2025-01-07T04:48:60Z", "2025-01-07t04:48:00Z", "2025-01-07T04:48:00z", "2025-01-07T04:48:00.Z",
      "2025-01-07T04:48:00.1234567890Z", "2025-02-29T00:00:00Z", "2025-01-07T24:00:00Z", "2025-01-07 04:48:00Z",
      "2025-01-07T04:48:00+00:00", "2025-01-07T04:48Z", "2025-01-07" } do
      assert.is_nil(time.parse_utc(s), s)
    end
    assert.is_true(fast > 20000)
  end)
end)

describe("local server storage format", function()
  -- Runs SQL on a database with the server's own SQLite binding under LuaJIT (as nginx runs it);
  -- answers "name,name,... format=N": the tables and indexes there, and the format in meta.
  local function sql(path, statements)
    local script, text = os.tmpname(), os.tmpname()
    local t = assert(io.open(text, "w"))
    t:write(statements)
    t:close()
    local f = assert(io.open(script, "w"))
    f:write('package.path = "server/lua/?.lua;" .. package.path\n',
      'local db = require("limitry_server.sqlite").open(', string.format("%q", path), ')\n',
      'local t = io.open(', string.format("%q", text), '); local s = t:read("*a"); t:close()\n',
      'if s ~= "" then db:exec(s) end\n',
      -- Idempotency keys' hashes as format 2 stored them: the first 4 bytes of the key's MD5 (libcrypto).
      'local ffi = require "ffi"\n',
      'ffi.cdef "unsigned char *MD5(const unsigned char *d, size_t n, unsigned char *md);"\n',
      'local md, crypto = ffi.new("unsigned char[16]"), ffi.load("crypto")\n',
      'local keyed, upd = db:prepare("SELECT seq, ikey FROM events WHERE ikey IS NOT NULL AND khash IS NULL"), {}\n',
      'while keyed:step() do local k = keyed:text(1); crypto.MD5(k, #k, md)\n',
      '  upd[#upd + 1] = { keyed:int(0), tonumber(ffi.cast("uint32_t *", md)[0]) } end\n',
      'keyed:reset()\n',
      'for _, u in ipairs(upd) do db:run("UPDATE events SET khash = ? WHERE seq = ?", u[2], u[1]) end\n',
      'local st = db:prepare("SELECT name FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")\n',
      'local out = {}\nwhile st:step() do out[#out + 1] = st:text(0) end\nst:reset()\n',
      'local v = db:row("SELECT v FROM meta WHERE k = \'format\'")\n',
      'io.write(table.concat(out, ","), " format=", tostring(v and v[1]))\ndb:close()\n')
    f:close()
    local p = io.popen("luajit " .. script .. " 2>&1")
    local out = p:read("*a")
    p:close()
    os.remove(script)
    os.remove(text)
    return out
  end

  it("upgrades a database of format 2 (rollups by the four strings, indexes per customer) at start", function()
    -- A format-2 database written here, as that server left it: the events and their rollups per
    -- minute, hour and day, grouped and in total, each computed here.
    local dir = support.tmpdir("format2")
    assert(os.execute("mkdir -p '" .. dir .. "/data'"))
    local r = rng(31337)
    local DAY = unix(2034, 2, 3) * 1000
    local accepted = {}
    local rows = { "BEGIN;",
      "CREATE TABLE meta (k TEXT PRIMARY KEY, v);",
      "CREATE TABLE events (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, customer TEXT NOT NULL, etype TEXT NOT NULL,"
        .. " model TEXT, provider TEXT, inp REAL NOT NULL, outp REAL NOT NULL, cost REAL NOT NULL, ikey TEXT,"
        .. " khash INTEGER, body TEXT NOT NULL);",
      "CREATE INDEX events_ts ON events (ts, customer, etype, model, provider, inp, outp, cost);",
      "CREATE INDEX events_customer ON events (customer);",
      "CREATE INDEX events_keys ON events (seq, khash) WHERE khash IS NOT NULL;" }
    local LEVELS = { minute = 60000, hour = 3600000, day = 86400000 }
    for name in pairs(LEVELS) do
      rows[#rows + 1] = string.format("CREATE TABLE r_%s (t INTEGER NOT NULL, customer TEXT NOT NULL, etype TEXT NOT NULL,"
        .. " model TEXT NOT NULL, provider TEXT NOT NULL, n REAL NOT NULL, inp REAL NOT NULL, outp REAL NOT NULL,"
        .. " cost REAL NOT NULL, PRIMARY KEY (t, customer, etype, model, provider)) WITHOUT ROWID;"
        .. " CREATE INDEX r_%s_customer ON r_%s (customer, t);"
        .. " CREATE TABLE r_%s_total (t INTEGER PRIMARY KEY, n REAL NOT NULL, inp REAL NOT NULL, outp REAL NOT NULL,"
        .. " cost REAL NOT NULL) WITHOUT ROWID;", name, name, name, name)
    end
    local groups, totals = {}, {}
    for name in pairs(LEVELS) do groups[name], totals[name] = {}, {} end
    local function q(v) return v and ("'" .. v .. "'") or "NULL" end
    for seq = 1, 400 do
      local ms = DAY + r(2 * 86400000)
      local e = { customerId = "f" .. r(7), eventType = r(3) == 0 and "tool" or "chat", model = r(4) > 0 and ("m" .. r(3)) or nil,
        provider = r(3) > 0 and ("p" .. r(2)) or nil, inputTokens = r(1000), outputTokens = r(300), cost = r(9000), ms = ms }
      e.id = "evt_" .. seq
      accepted[#accepted + 1] = e
      local cost = string.format("%d.%03d", e.cost // 1000, e.cost % 1000)
      local body = string.format('{"id":"%s","customerId":"%s","eventType":"%s"%s%s,"timestamp":"%s","inputTokens":%d,'
        .. '"outputTokens":%d,"totalTokens":%d,"costCents":%s}', e.id, e.customerId, e.eventType,
        e.model and (',"model":"' .. e.model .. '"') or "", e.provider and (',"provider":"' .. e.provider .. '"') or "",
        iso_ms(ms), e.inputTokens, e.outputTokens, e.inputTokens + e.outputTokens, cost)
      e.key = seq % 3 == 0 and ("k2-" .. seq) or nil
      if e.key then body = body:sub(1, -2) .. ',"idempotencyKey":"' .. e.key .. '"}' end
      rows[#rows + 1] = string.format("INSERT INTO events VALUES (%d, %d.%03d, %s, %s, %s, %s, %d, %d, %s, %s, NULL, '%s');",
        seq, ms // 1000, ms % 1000, q(e.customerId), q(e.eventType), q(e.model), q(e.provider), e.inputTokens,
        e.outputTokens, cost, q(e.key), body)
      for name, size in pairs(LEVELS) do
        local t = ms // size * size // 1000
        local key = table.concat({ t, e.customerId, e.eventType, e.model or "", e.provider or "" }, "|")
        local g = groups[name][key] or { t, e.customerId, e.eventType, e.model or "", e.provider or "", 0, 0, 0, 0 }
        groups[name][key] = g
        local tot = totals[name][t] or { t, 0, 0, 0, 0 }
        totals[name][t] = tot
        for _, x in ipairs { { g, 6 }, { tot, 2 } } do
          local m, at = x[1], x[2]
          m[at], m[at + 1], m[at + 2], m[at + 3] = m[at] + 1, m[at + 1] + e.inputTokens, m[at + 2] + e.outputTokens,
            m[at + 3] + e.cost
        end
      end
    end
    for name in pairs(LEVELS) do
      for _, g in pairs(groups[name]) do
        rows[#rows + 1] = string.format("INSERT INTO r_%s VALUES (%d, '%s', '%s', '%s', '%s', %d, %d, %d, %d / 1000.0);",
          name, table.unpack(g))
      end
      for _, tot in pairs(totals[name]) do
        rows[#rows + 1] = string.format("INSERT INTO r_%s_total VALUES (%d, %d, %d, %d, %d / 1000.0);", name, table.unpack(tot))
      end
    end
    rows[#rows + 1] = "INSERT INTO meta VALUES ('format', 2); COMMIT;"
    local db = dir .. "/data/events.db"
    assert.equal("events,events_customer,events_keys,events_ts,meta,r_day,r_day_customer,r_day_total,r_hour,"
      .. "r_hour_customer,r_hour_total,r_minute,r_minute_customer,r_minute_total format=2",
      sql(db, table.concat(rows, "\n")))

    local info = support.start { dir = dir, faults = false }
    local ok, err = pcall(function()
      local base = info.base_url
      local function check(label)
        for _, rg in ipairs { { DAY, DAY + 2 * 86400000 }, { DAY + 3600000 * 5 + 17 * 60000 + 250, DAY + 86400000 + 3600000 * 7 + 1 },
          { DAY + 1234567, DAY + 1234567 + 59000 }, { DAY - 86400000, DAY + 3 * 86400000 } } do
          local s, e = rg[1], rg[2]
          local range = "startDate=" .. pct(iso_ms(s)) .. "&endDate=" .. pct(iso_ms(e))
          for _, f in ipairs { {}, { customerId = "f3" }, { customerId = "f5", model = "m1" }, { model = "m2" }, { customerId = "new" } } do
            local fq = ""
            for _, name in ipairs { "customerId", "model" } do
              if f[name] then fq = fq .. "&" .. name .. "=" .. f[name] end
            end
            local want = { totalEvents = 0, totalInputTokens = 0, totalOutputTokens = 0, cost = 0 }
            local by_hour, by_provider = {}, {}
            for _, ev in ipairs(accepted) do
              if ev.ms >= s and ev.ms < e and (not f.customerId or ev.customerId == f.customerId)
                and (not f.model or ev.model == f.model) then
                want.totalEvents = want.totalEvents + 1
                want.totalInputTokens = want.totalInputTokens + ev.inputTokens
                want.totalOutputTokens = want.totalOutputTokens + ev.outputTokens
                want.cost = want.cost + ev.cost
                local h = iso_ms(ev.ms // 3600000 * 3600000)
                by_hour[h] = (by_hour[h] or 0) + ev.inputTokens
                local p = ev.provider or "<null>"
                by_provider[p] = (by_provider[p] or 0) + ev.outputTokens
              end
            end
            want.totalTokens = want.totalInputTokens + want.totalOutputTokens
            want.totalCostCents = want.cost / 1000
            want.cost = nil
            local _, got = request(base, "GET", "/usage?" .. range .. fq)
            assert.same(want, got, label .. " summary " .. range .. fq)
            local _, ts = request(base, "GET", "/usage/timeseries?interval=hour&" .. range .. fq)
            local got_hours = {}
            for _, p in ipairs(ts.data) do got_hours[p.timestamp] = p.totalInputTokens end
            assert.same(by_hour, got_hours, label .. " timeseries " .. range .. fq)
            local _, bd = request(base, "GET", "/usage/breakdown?groupBy=provider&" .. range .. fq)
            local got_providers = {}
            for _, row in ipairs(bd.data) do got_providers[row.dimension or "<null>"] = row.totalOutputTokens end
            assert.same(by_provider, got_providers, label .. " breakdown " .. range .. fq)
          end
        end
        local _, page = request(base, "GET", "/events?customerId=f3&limit=100")
        local want_ids = {}
        for n = #accepted, 1, -1 do
          if accepted[n].customerId == "f3" and accepted[n].id then want_ids[#want_ids + 1] = accepted[n].id end
        end
        local got_ids = {}
        for i, ev in ipairs(page.data) do got_ids[i] = ev.id end
        assert.same(want_ids, got_ids, label .. " listing")
      end
      check("upgraded")
      -- The keys stored by format 2 are found: every keyed event sent again is a duplicate of its own.
      local again, ids = {}, {}
      for _, ev in ipairs(accepted) do
        if ev.key then
          again[#again + 1] = { customerId = "someone", eventType = "e", idempotencyKey = ev.key }
          ids[#ids + 1] = ev.id
        end
      end
      assert.equal(133, #again)
      local dstatus, dres = request(base, "POST", "/events/batch", { events = again })
      assert.equal(201, dstatus)
      assert.equal(133, dres.duplicates)
      for i, res in ipairs(dres.results) do assert.equal(ids[i], res.id) end
      -- New events after the upgrade: an upgraded customer's new group, an upgraded group, a new customer.
      local more = {
        { customerId = "f3", eventType = "chat", model = "m-new", inputTokens = 7, outputTokens = 1, cost = 500, ms = DAY + 3600000 },
        { customerId = "f5", eventType = "chat", model = "m1", provider = "p1", inputTokens = 11, outputTokens = 2, cost = 0, ms = DAY + 7200001 },
        { customerId = "new", eventType = "chat", model = "m2", inputTokens = 13, outputTokens = 3, cost = 1, ms = DAY + 60000 },
      }
      local wire = {}
      for i, ev in ipairs(more) do
        wire[i] = { customerId = ev.customerId, eventType = ev.eventType, model = ev.model, provider = ev.provider,
          inputTokens = ev.inputTokens, outputTokens = ev.outputTokens, timestamp = iso_ms(ev.ms),
          costCents = { raw = string.format("%d.%03d", ev.cost // 1000, ev.cost % 1000) } }
        accepted[#accepted + 1] = ev
      end
      local status, res = request(base, "POST", "/events/batch", { events = wire })
      assert.equal(201, status)
      for i, ev in ipairs(more) do ev.id = res.results[i].id end
      check("after new events")
    end)
    support.stop(info)
    assert(ok, err)
    assert.equal("dims,dims_key,events,events_block,events_keys,events_ts,g_day,g_hour,g_minute,meta,r_day_total,"
      .. "r_hour_total,r_minute_total format=4", sql(db, ""))
    -- A database of a newer format is refused at start, untouched.
    sql(db, "UPDATE meta SET v = 5 WHERE k = 'format'")
    local started, serr = pcall(support.start, { dir = dir, faults = false })
    if started then support.stop(serr) end
    assert.is_false(started)
    local log = assert(io.open(dir .. "/logs/error.log")):read("*a")
    assert.truthy(log:find("was written by a newer server (format 5, this one knows 4)", 1, true))
    assert.truthy(sql(db, ""):find("format=5$"))
  end)
end)
