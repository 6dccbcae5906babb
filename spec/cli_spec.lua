-- The command line (bin/limitry, limitry.cli), as users get it: the rock installed with
-- `luarocks make` into a scratch tree per Lua (5.4 and 5.1), and the `limitry` on that tree's
-- PATH run in a clean environment against a local server with the sample data.
local support = require "spec.support.server"
local limitry = require "limitry"
local socket = require "socket"

local ROOT = assert(io.popen("pwd")):read("*l")
local VERSIONS = { "5.4", "5.1" }

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

local tmp = support.tmpdir("cli")

-- Installs the rock for Lua `v` into tmp/tree-v, from a copy of the checkout (without .git, build/,
-- .test-tmp/: luarocks make leaves its build products in the copy, not in the checkout). Returns
-- the tree.
local function install(v)
  local src, tree = tmp .. "/src-" .. v, tmp .. "/tree-" .. v
  assert(sh(("mkdir -p %s && tar -C %s --exclude=./.git --exclude=./build --exclude=./.test-tmp --exclude=./.limitry-local "
    .. "-cf - . | tar -C %s -xf -"):format(q(src), q(ROOT), q(src))))
  local log = tmp .. "/luarocks-" .. v .. ".log"
  local ok = sh(("cd %s && luarocks --lua-version %s --tree %s make --deps-mode=none "
    .. "CURL_INCDIR=/usr/include/x86_64-linux-gnu limitry-0.1.0-1.rockspec >%s 2>&1"):format(q(src), v, q(tree), q(log)))
  assert(ok, "luarocks make failed: " .. tostring(read(log)))
  return tree
end

local counter = 0
-- Runs `limitry args...` from `tree` in an environment holding only PATH, HOME, LANG and `env`.
-- opts: stdin (text), env (table; false removes), tty (run under script(1): stdout and stderr a
-- terminal). Returns the exit status, stdout and stderr.
local function run(tree, args, opts)
  opts = opts or {}
  counter = counter + 1
  local base = ("%s/run-%d"):format(tmp, counter)
  local env = { PATH = tree .. "/bin:/usr/bin:/bin:/usr/sbin:/sbin", HOME = os.getenv("HOME") or "/tmp", LANG = "C.UTF-8" }
  for k, v in pairs(opts.env or {}) do env[k] = v or nil end
  local parts = { "env -i" }
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = "limitry"
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local cmd = table.concat(parts, " ")
  if opts.stdin then write(base .. ".in", opts.stdin) end
  local stdin = opts.stdin and (" <" .. q(base .. ".in")) or " </dev/null"
  if opts.tty then
    cmd = "script -qec " .. q(cmd .. stdin) .. " /dev/null"
    stdin = " </dev/null"
  end
  sh(("cd %s && { %s%s >%s 2>%s; echo $? >%s; }"):format(q(opts.cwd or tmp), cmd, stdin, q(base .. ".out"),
    q(base .. ".err"), q(base .. ".rc")))
  return tonumber(read(base .. ".rc")), read(base .. ".out") or "", read(base .. ".err") or ""
end

local function lines(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- A CSV line's cells (the test data holds no quotes or commas inside fields).
local function cells(line)
  local t = {}
  for cell in (line .. ","):gmatch("([^,]*),") do t[#t + 1] = cell end
  return t
end

-- One clear line: exactly one line on stderr, "limitry: ...", and no Lua traceback.
local function assert_one_line(err)
  assert.are.equal(1, #lines(err), err)
  assert.truthy(err:find("^limitry: "), err)
  assert.falsy(err:find("traceback", 1, true), err)
  assert.falsy(err:find("%.lua:%d+:"), err)
end

local function ndjson(n, customer, day, extra)
  local out = {}
  for i = 1, n do
    out[i] = string.format('{"customer_id":"%s","event_type":"model_call","model":"%s","input_tokens":%d,'
      .. '"output_tokens":%d,"cost_cents":%s,"timestamp":"2025-%sT%02d:%02d:00Z"%s}', customer,
      i % 2 == 0 and "gpt-4o" or "claude-3-haiku", i, i % 7, tostring(i / 100), day, i % 24, i % 60, extra or "")
  end
  return table.concat(out, "\n") .. "\n"
end

describe("limitry, the command line", function()
  local server, client
  local trees = {}

  setup(function()
    server = support.start { empty = false }
    client = limitry.new { api_key = server.api_key, base_url = server.base_url }
    for _, v in ipairs(VERSIONS) do trees[v] = install(v) end
  end)

  teardown(function()
    if client then client:close() end
    support.stop(server)
  end)

  local function env() return { LIMITRY_API_KEY = server.api_key, LIMITRY_BASE_URL = server.base_url } end

  -- Events of one customer stored by the server.
  local function count(customer, from, to)
    local s = assert(client:usage():get_summary(from or "2000-01-01", to or "2100-01-01", { customer_id = customer }))
    return s.totalEvents
  end

  describe("its pure parts (in this process)", function()
    package.path = ROOT .. "/lua/?.lua;" .. package.path
    local dates = require "limitry.cli.dates"
    local format = require "limitry.cli.format"
    local import = require "limitry.cli.import"

    it("reads dates and shorthands in UTC", function()
      local now = 1718454645 -- 2024-06-15T12:30:45Z, a Saturday
      local function p(s) return (dates.parse(s, now)) end
      assert.are.equal("2024-01-01T00:00:00Z", p("2024-01-01"))
      assert.are.equal("2024-02-01T00:00:00Z", p("2024-02"))
      assert.are.equal("2024-01-15T10:30:00Z", p("2024-01-15T10:30:00Z"))
      assert.are.equal("2024-01-15T10:30Z", p("2024-01-15T10:30"))
      assert.are.equal("2024-01-15T10:30:00+02:00", p("2024-01-15T10:30:00+02:00"))
      assert.are.equal("2024-06-15T12:30:45Z", p("now"))
      assert.are.equal("2024-06-15T00:00:00Z", p("today"))
      assert.are.equal("2024-06-14T00:00:00Z", p("yesterday"))
      assert.are.equal("2024-06-10T00:00:00Z", p("wtd"))
      assert.are.equal("2024-06-01T00:00:00Z", p("mtd"))
      assert.are.equal("2024-01-01T00:00:00Z", p("ytd"))
      assert.are.equal("2024-06-08T12:30:45Z", p("7d"))
      assert.are.equal("2024-06-14T12:30:45Z", p("24h"))
      assert.are.equal("2024-06-01T12:30:45Z", p("2w"))
      assert.is_nil(p("2024-02-30"))
      assert.is_nil(p("2024-13"))
      assert.is_nil(p("last tuesday"))
      assert.are.equal(dates.parse_iso("2024-01-15T10:30:00Z") - 7200, dates.parse_iso("2024-01-15T10:30:00+02:00"))
    end)

    it("writes numbers exactly and tables for people", function()
      assert.are.equal("3653.649", format.number(3653.649))
      assert.are.equal("0.30000000000000004", format.number(0.1 + 0.2))
      assert.are.equal("9007199254740991", format.number(2 ^ 53 - 1))
      assert.are.equal("1,234,567", format.thousands(1234567))
      assert.are.equal("$36.54", format.dollars(3653.649))
      assert.are.equal("$1,234.57", format.dollars(123456.7))
      assert.are.equal("$0.0042", format.dollars(0.42))
      assert.are.equal('"a,b","say ""hi""",,1', format.csv_row({ "a,b", 'say "hi"', nil, 1 }, 4))
      assert.are.equal('{"a":{},"data":[],"n":[1,2.5],"s":"\\u0001\\"x"}', format.json { a = {}, data = {}, n = { 1, 2.5 },
        s = '\1"x' })
    end)

    it("derives the same key from the same line, on every Lua", function()
      local line = '{"customer_id":"c1","event_type":"model_call","input_tokens":5}'
      local key = import.derive_key("imp1-", 17, line)
      assert.are.equal(key, import.derive_key("imp1-", 17, line))
      assert.truthy(key:find("^imp1%-17%-%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x$"), key)
      assert.are_not.equal(key, import.derive_key("imp1-", 18, line))
      assert.are_not.equal(key, import.derive_key("imp1-", 17, line .. " "))
      -- the Lua 5.1 interpreter computes the very same key (doubles there, integers on 5.4)
      local p = io.popen(("lua5.1 -e %s"):format(q(
        "package.path=" .. string.format("%q", ROOT .. "/lua/?.lua;") .. "..package.path "
        .. "package.loaded.limitry={decode=function() end} "
        .. "io.write(require('limitry.cli.import').derive_key('imp1-', 17, " .. string.format("%q", line) .. "))")))
      local other = p:read("*a")
      p:close()
      assert.are.equal(key, other)
    end)

    it("splits CSV records as RFC 4180 says", function()
      assert.are.same({ "a", "", "c" }, import.csv_fields("a,,c"))
      assert.are.same({ "a,b", 'x"y', "" }, import.csv_fields('"a,b","x""y",'))
      assert.is_nil(import.csv_fields('"open'))
    end)
  end)

  for _, v in ipairs(VERSIONS) do
    describe("installed for Lua " .. v, function()
      local function limitry_cli(args, opts)
        opts = opts or {}
        local e = env()
        for k, x in pairs(opts.env or {}) do e[k] = x end
        opts.env = e
        return run(trees[v], args, opts)
      end
      -- Runs it and asserts exit 0; returns stdout and stderr.
      local function ok(args, opts)
        local rc, out, err = limitry_cli(args, opts)
        assert.are.equal(0, rc, table.concat(args, " ") .. ": " .. err)
        return out, err
      end

      it("is the rock's: the installed tree's limitry, with the modules of that tree", function()
        local rc, out = limitry_cli { "--version" }
        assert.are.equal(0, rc)
        assert.truthy(out:find("^limitry 0%.1%.0 %(limitry%-lua, Lua 5%." .. v:sub(3) .. "%)"), out)
        assert.truthy(read(trees[v] .. "/bin/limitry"), "the wrapper")
        assert.truthy(read(trees[v] .. "/lib/luarocks/rocks-" .. v .. "/limitry/0.1.0-1/server/limitry_local.lua"))
      end)

      it("has --help on every command, exit 0", function()
        local commands = {
          {}, { "usage" }, { "usage", "summary" }, { "usage", "breakdown" }, { "usage", "timeseries" },
          { "customers", "usage" }, { "events" }, { "events", "list" }, { "events", "record" }, { "events", "import" },
          { "quotas", "list" }, { "quotas", "get" }, { "quotas", "create" }, { "quotas", "update" }, { "quotas", "delete" },
          { "rate-limits", "list" }, { "rate-limits", "get" }, { "rate-limits", "create" }, { "rate-limits", "update" },
          { "rate-limits", "delete" }, { "alerts", "list" }, { "alerts", "get" }, { "alerts", "create" },
          { "alerts", "update" }, { "alerts", "delete" }, { "alerts", "history" }, { "check" }, { "track" },
          { "project" }, { "get" }, { "post" }, { "put" }, { "delete" }, { "local", "start" }, { "local", "stop" },
          { "local", "status" },
        }
        for _, c in ipairs(commands) do
          local args = { table.unpack(c) }
          args[#args + 1] = "--help"
          local rc, out, err = limitry_cli(args)
          assert.are.equal(0, rc, table.concat(args, " ") .. ": " .. err)
          local usage = "Usage: limitry" .. (c[1] and (" " .. table.concat(c, " ")) or "")
          assert.truthy(out:find(usage, 1, true), table.concat(args, " ") .. ":\n" .. out)
        end
      end)

      describe("usage", function()
        local range = { "--from", "2024-01-01", "--to", "2024-02-01" }
        local function with(args)
          local t = {}
          for _, a in ipairs(args) do t[#t + 1] = a end
          for _, a in ipairs(range) do t[#t + 1] = a end
          return t
        end

        it("breakdown --output csv prints exactly the figures the API returns", function()
          local rc, out, err = limitry_cli(with { "usage", "breakdown", "--by", "model", "--output", "csv" })
          assert.are.equal(0, rc, err)
          local api = assert(client:usage():get_breakdown("model", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"))
          local rows = lines(out)
          assert.are.equal("model,totalEvents,totalTokens,totalInputTokens,totalOutputTokens,totalCostCents", rows[1])
          assert.are.equal(#api.data + 1, #rows)
          for i, r in ipairs(api.data) do
            local c = cells(rows[i + 1])
            assert.are.equal(r.dimension or "", c[1])
            assert.are.equal(r.totalEvents, tonumber(c[2]))
            assert.are.equal(r.totalTokens, tonumber(c[3]))
            assert.are.equal(r.totalInputTokens, tonumber(c[4]))
            assert.are.equal(r.totalOutputTokens, tonumber(c[5]))
            assert.are.equal(r.totalCostCents, tonumber(c[6]))
          end
        end)

        it("--output json round-trips through a JSON parser to the API's answer", function()
          for _, sub in ipairs { { "summary" }, { "breakdown", "--by", "customer" }, { "timeseries", "--interval", "week" } } do
            local args = { "usage", table.unpack(sub) }
            local rc, out, err = limitry_cli(with(args))
            assert.are.equal(0, rc, err)
            local doc = assert(limitry.decode(out))
            local usage = client:usage()
            local api
            if sub[1] == "summary" then
              api = usage:get_summary("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
            elseif sub[1] == "breakdown" then
              api = usage:get_breakdown("customer_id", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
            else
              api = usage:get_timeseries("week", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
            end
            assert.are.same(api, doc)
          end
        end)

        it("filters: --customer, --model, --event-type, and the CSV of summary and timeseries", function()
          local rc, out = limitry_cli(with { "usage", "summary", "--customer", "cust_acme", "--model", "gpt-4o", "-o", "csv" })
          assert.are.equal(0, rc)
          local api = client:usage():get_summary("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z",
            { customer_id = "cust_acme", model = "gpt-4o" })
          local c = cells(lines(out)[2])
          assert.are.equal(api.totalEvents, tonumber(c[1]))
          assert.are.equal(api.totalCostCents, tonumber(c[5]))
          rc, out = limitry_cli(with { "usage", "timeseries", "--event-type", "nothing-like-this", "-o", "csv" })
          assert.are.equal(0, rc)
          assert.are.equal(1, #lines(out))
          out = ok(with { "usage", "timeseries", "-o", "csv" })
          assert.are.equal(32, #lines(out))
          assert.truthy(lines(out)[2]:find("^2024%-01%-01T00:00:00Z,560,"), out)
        end)

        it("prints a table on a terminal (separators, dollars) and JSON when piped", function()
          local rc, out = limitry_cli(with { "usage", "summary" }, { tty = true })
          assert.are.equal(0, rc, out)
          assert.truthy(out:find("events%s+17,360"), out)
          assert.truthy(out:find("cost%s+%$124%.38"), out)
          out = ok(with { "usage", "breakdown", "--by", "customer" }, { tty = true })
          assert.truthy(out:find("cust_acme%s+5,148%s+13,985,434%s+10,547,953%s+3,437,481%s+%$36%.54"), out)
          out = ok(with { "usage", "summary" })
          assert.are.equal(17360, assert(limitry.decode(out)).totalEvents)
          out = ok(with { "-o", "csv", "usage", "summary" }) -- a common option before the command
          assert.truthy(out:find("^totalEvents,"), out)
        end)

        it("timeseries --chart draws bars, or a sparkline, that fit the width", function()
          local rc, out, err = limitry_cli(with { "usage", "timeseries", "--chart", "--width", "60" })
          assert.are.equal(0, rc, err)
          local ls = lines(out)
          assert.are.equal(32, #ls) -- a title and 31 days
          for i = 2, #ls do
            assert.truthy(utf8.len(ls[i]) <= 60, ls[i])
            assert.truthy(ls[i]:find("^2024%-01%-%d%d █+"), ls[i])
          end
          assert.truthy(ls[3]:find("%$4%.39$"), ls[3]) -- Jan 2, the peak: the longest bar
          rc, out = limitry_cli({ "usage", "timeseries", "--from", "2024-01-01", "--to", "2024-04-01", "--interval", "hour",
            "--chart", "spark", "--metric", "events" }, { env = { COLUMNS = "50" } })
          assert.are.equal(0, rc)
          ls = lines(out)
          assert.are.equal(4, #ls)
          assert.truthy(utf8.len(ls[2]) <= 50 and utf8.len(ls[2]) >= 40, ls[2])
          assert.truthy(ls[4]:find("total 50,400"), ls[4])
          out = ok(with { "usage", "timeseries", "--chart", "--width", "40", "--ascii" })
          assert.truthy(lines(out)[2]:find("^2024%-01%-01 #+ +%$4%.06$"), out)
        end)

        it("defaults to this month so far; shorthands count back from the wall clock", function()
          local cust = "cli-now-" .. v
          ok { "events", "record", "--customer", cust, "--event-type", "model_call", "--input-tokens", "7" }
          local out = ok({ "usage", "summary", "--customer", cust }, { tty = true })
          local month = os.date("!%Y-%m")
          assert.truthy(out:find("from " .. month .. "-01T00:00:00Z to " .. os.date("!%Y-%m-%d") .. "T", 1, true), out)
          assert.truthy(out:find("events%s+1\r?\n"), out)
          for _, from in ipairs { "1d", "24h", "today", "mtd", "ytd", "wtd", os.date("!%Y-%m") } do
            out = ok { "usage", "summary", "--customer", cust, "--from", from }
            assert.are.equal(1, limitry.decode(out).totalInputTokens / 7, from)
          end
          out = ok { "usage", "summary", "--customer", cust, "--from", "7d", "--to", "1d" }
          assert.are.equal(0, limitry.decode(out).totalEvents)
        end)

        it("customers usage", function()
          local rc, out = limitry_cli(with { "customers", "usage", "cust_acme", "-o", "json" })
          assert.are.equal(0, rc)
          assert.are.equal(5148, limitry.decode(out).totalEvents)
        end)
      end)

      describe("events", function()
        it("record, then list one page, --all pages (NDJSON, JSON, CSV, table)", function()
          local cust = "cli-rec-" .. v
          for i = 1, 5 do
            local rc, out, err = limitry_cli { "events", "record", "--customer", cust, "--event-type", "model_call",
              "--model", "gpt-4o", "--input-tokens", tostring(i), "--output-tokens", "2", "--cost-cents", "0.5",
              "--property", "region=eu", "--property", "beta:=true", "--timestamp", "2025-06-0" .. i }
            assert.are.equal(0, rc, err)
            assert.truthy(limitry.decode(out).id)
          end
          local rc, out = limitry_cli { "events", "list", "--customer", cust, "--limit", "2" }
          assert.are.equal(0, rc)
          assert.are.equal(2, #lines(out)) -- one page, NDJSON when piped
          out = ok { "events", "list", "--customer", cust, "--limit", "2", "--all" }
          local evs = lines(out)
          assert.are.equal(5, #evs)
          local first = limitry.decode(evs[5])
          assert.are.same({ region = "eu", beta = true }, first.properties)
          assert.are.equal(1, first.inputTokens)
          out = ok { "events", "list", "--customer", cust, "--limit", "2", "-o", "json" }
          local page = limitry.decode(out)
          assert.are.equal(2, #page.data)
          assert.is_true(page.hasMore)
          out = ok { "events", "list", "--customer", cust, "--cursor", page.nextCursor, "--all", "-o", "json" }
          assert.are.equal(3, #limitry.decode(out))
          out = ok { "events", "list", "--customer", cust, "--all", "-o", "csv" }
          evs = lines(out)
          assert.are.equal("id,timestamp,customer_id,event_type,model,provider,input_tokens,output_tokens,total_tokens,"
            .. "latency_ms,cost_cents,idempotency_key,properties", evs[1])
          assert.are.equal(6, #evs)
          out = ok({ "events", "list", "--customer", cust }, { tty = true })
          assert.truthy(out:find("2025%-06%-01T00:00:00Z%s+" .. cust:gsub("%-", "%%-") .. "%s+model_call%s+gpt%-4o%s+1%s+2%s+%$0%.0050"), out)
        end)

        it("import: NDJSON in batches, safe to run twice, and again on the other Lua", function()
          local cust = "cli-import" -- the same file for every Lua: its keys do not change
          local file = tmp .. "/import.ndjson"
          if not read(file) then write(file, ndjson(2500, cust, "02-03")) end
          local rc, out, err = limitry_cli { "events", "import", file, "--batch-size", "300" }
          assert.are.equal(0, rc, err)
          local s = limitry.decode(out)
          assert.are.equal(2500, s.sent)
          assert.are.equal(2500, s.lines)
          assert.are.equal(0, s.bad)
          assert.are.equal(2500, count(cust))
          rc, out = limitry_cli { "events", "import", file, "-o", "table" }
          assert.are.equal(0, rc)
          assert.truthy(out:find("2,500 events sent"), out)
          assert.are.equal(2500, count(cust)) -- twice: still each once
          rc = limitry_cli({ "events", "import", "-", "--format", "ndjson" }, { stdin = read(file) })
          assert.are.equal(0, rc)
          assert.are.equal(2500, count(cust)) -- from stdin: the keys come from the lines, not the file name
          -- the progress line (on a terminal by default; --progress forces it): position, sent, rate
          _, err = ok { "events", "import", file, "--progress", "-o", "table" }
          assert.truthy(err:find("\r%[#+%] 100%%  2,500 sent  2,500 lines  [%d,]+ ev/s\27%[K"), err)
          assert.truthy(err:find("\r\27%[K$"), err) -- cleared at the end
          out = ok({ "events", "import", file }, { tty = true })
          assert.truthy(out:find("2,500 sent", 1, true) and out:find("2,500 events sent in", 1, true), out)
        end)

        it("import: killed half way and run again leaves each event once", function()
          local slow = support.start { latency = 40 }
          local slow_client = limitry.new { api_key = slow.api_key, base_url = slow.base_url }
          local cust = "cli-kill-" .. v
          local file = tmp .. "/kill-" .. v .. ".ndjson"
          write(file, ndjson(1000, cust, "02-04"))
          local e = { LIMITRY_BASE_URL = slow.base_url, LIMITRY_API_KEY = slow.api_key }
          local pidfile = tmp .. "/kill-" .. v .. ".pid"
          local parts = { "env -i PATH=" .. q(trees[v] .. "/bin:/usr/bin:/bin") }
          for k, x in pairs(e) do parts[#parts + 1] = k .. "=" .. q(x) end
          assert(sh(table.concat(parts, " ") .. " limitry events import " .. q(file)
            .. " --batch-size 10 --concurrency 1 >/dev/null 2>&1 & echo $! > " .. q(pidfile)))
          local pid = assert(tonumber(read(pidfile)))
          local function stored()
            return assert(slow_client:usage():get_summary("2025-01-01", "2026-01-01", { customer_id = cust })).totalEvents
          end
          local deadline = socket.gettime() + 20
          while stored() < 100 and socket.gettime() < deadline do socket.sleep(0.05) end
          assert(sh("kill -9 " .. pid))
          local at_kill = stored()
          assert.truthy(at_kill >= 100 and at_kill < 1000, "stored at the kill: " .. at_kill)
          local rc, out, err = run(trees[v], { "events", "import", file, "--batch-size", "100" }, { env = e })
          assert.are.equal(0, rc, err)
          assert.are.equal(1000, limitry.decode(out).sent)
          assert.are.equal(1000, stored())
          slow_client:close()
          support.stop(slow)
        end)

        it("import: CSV with a header, quotes, properties and camelCase names; bad lines named, the rest imported", function()
          local cust = "cli-csv-" .. v
          local file = tmp .. "/import-" .. v .. ".csv"
          write(file, table.concat({
            "customerId,event_type,model,inputTokens,output_tokens,cost_cents,timestamp,properties.region,idempotency_key",
            cust .. ',model_call,"gpt,4o",10,5,0.5,2025-07-01T00:00:00Z,"us ""east""",',
            cust .. ",model_call,gpt-4o,ten,5,,2025-07-01,,",
            cust .. ",model_call,gpt-4o,20,,,1751328000,eu,own-key-" .. v,
            "",
            cust .. ",model_call,gpt-4o,-3,1,,2025-07-02,,",
          }, "\r\n") .. "\r\n")
          local rc, out, err = limitry_cli { "events", "import", file, "-o", "json" }
          assert.are.equal(4, rc, err)
          local s = limitry.decode(out)
          assert.are.equal(2, s.sent)
          assert.are.equal(2, s.bad)
          local errs = lines(err)
          assert.are.equal(2, #errs)
          assert.truthy(errs[1]:find("import%-" .. v:gsub("%.", "%%.") .. "%.csv:3: input_tokens must be a number %(got 'ten'%)$"), errs[1])
          assert.truthy(errs[2]:find("%.csv:6: input_tokens must be a whole number from 0 to 2%^53 %- 1 %(got %-3%)$"), errs[2])
          assert.are.equal(2, count(cust))
          local evs = {}
          for e in client:events():each { customer_id = cust } do evs[e.inputTokens] = e end
          assert.are.equal("gpt,4o", evs[10].model)
          assert.are.same({ region = 'us "east"' }, evs[10].properties)
          assert.are.equal("own-key-" .. v, evs[20].idempotencyKey)
          assert.truthy(evs[10].idempotencyKey:find("^imp1%-2%-%x+$"), evs[10].idempotencyKey)
          rc = limitry_cli { "events", "import", file, "-q" }
          assert.are.equal(4, rc)
          assert.are.equal(2, count(cust))
          -- --strict stops at the first bad line, after importing the lines before it
          rc, _, err = limitry_cli { "events", "import", file, "--strict", "-o", "json" }
          assert.are.equal(4, rc)
          assert_one_line(err)
          assert.truthy(err:find(":3 %(%-%-strict%): input_tokens must be a number"), err)
          -- --dry-run sends nothing
          rc, out = limitry_cli { "events", "import", file, "--dry-run", "--key-scope", "dry", "-o", "json" }
          assert.are.equal(4, rc)
          assert.are.equal(2, limitry.decode(out).events)
          assert.are.equal(0, limitry.decode(out).sent)
          assert.are.equal(2, count(cust))
        end)

        it("import: a malformed line gives one line naming it and exit 4; an event Limitry refuses is named too", function()
          local cust = "cli-bad-" .. v
          local file = tmp .. "/bad-" .. v .. ".ndjson"
          write(file, table.concat({
            '{"customer_id":"' .. cust .. '","event_type":"x","input_tokens":1}',
            '{"customer_id":"' .. cust .. '","event_type":"x",',
            '{"customer_id":"' .. cust .. '","event_type":"x","input_tokens":1,"output_tokens":1,"total_tokens":5}',
            '{"customerId":"' .. cust .. '","eventType":"x","outputTokens":3,"latencyMs":12}',
          }, "\n") .. "\n")
          local rc, out, err = limitry_cli { "events", "import", file, "-o", "json" }
          assert.are.equal(4, rc, err)
          local errs = lines(err)
          assert.are.equal(2, #errs, err)
          assert.truthy(errs[1]:find("^limitry: .*:2: not JSON"), errs[1])
          assert.truthy(errs[2]:find("^limitry: .*:3: Limitry refused the event: .*totalTokens"), errs[2])
          local s = limitry.decode(out)
          assert.are.equal(2, s.sent)
          assert.are.equal(1, s.refused)
          assert.are.equal(2, count(cust))
        end)
      end)

      describe("limits", function()
        it("quotas and alerts: create, list, get, update, check, track until refused (exit 3), delete", function()
          local cust = "cli-quota-" .. v
          local rc, id, err = limitry_cli { "quotas", "create", "--name", "cli tokens", "--metric", "total_tokens",
            "--limit", "250", "--period", "day", "--filter", "customer_id=" .. cust, "-q" }
          assert.are.equal(0, rc, err)
          id = id:match("^(%S+)\n$")
          assert.truthy(id)
          local out
          out = ok { "quotas", "get", id }
          assert.are.equal(250, limitry.decode(out).limitValue)
          out = ok { "quotas", "list", "-o", "csv" }
          assert.truthy(out:find("\n" .. id .. ",cli tokens,total_tokens,250,day,", 1, true), out)
          out = ok({ "quotas", "list" }, { tty = true })
          assert.truthy(out:find(id .. "%s+cli tokens%s+total_tokens%s+250%s+day%s+customer_id=" .. cust:gsub("%-", "%%-")), out)
          out = ok { "quotas", "update", id, "--limit", "300" }
          assert.are.equal(300, limitry.decode(out).limitValue)
          local alert
          alert = ok { "alerts", "create", id, "--threshold", "50", "-q" }
          alert = alert:match("^(%S+)\n$")
          out = ok { "alerts", "list", id }
          assert.are.equal(alert, limitry.decode(out).data[1].id)
          out = ok { "alerts", "update", alert, "--threshold", "60" }
          assert.are.equal(60, limitry.decode(out).threshold)
          out = ok { "alerts", "get", alert }
          assert.are.equal(id, limitry.decode(out).quotaId)
          rc = limitry_cli { "check", "--customer", cust, "--model", "gpt-4o" }
          assert.are.equal(0, rc)
          for _ = 1, 3 do
            rc, out = limitry_cli { "track", "--customer", cust, "--event-type", "model_call", "--input-tokens", "100" }
            assert.are.equal(0, rc, out)
            assert.is_true(limitry.decode(out).allowed)
          end
          rc, out = limitry_cli({ "track", "--customer", cust, "--event-type", "model_call", "--input-tokens", "100" }, { tty = true })
          assert.are.equal(3, rc, out)
          assert.truthy(out:find("track: refused"), out)
          rc, out = limitry_cli { "check", "--customer", cust, "-o", "json" }
          assert.are.equal(3, rc)
          assert.is_false(limitry.decode(out).allowed)
          assert.is_true(limitry.decode(out).quotas[1].exceeded)
          rc, out = limitry_cli { "check", "--customer", cust, "-q" }
          assert.are.equal(3, rc)
          assert.are.equal("", out)
          out = ok { "alerts", "history", alert }
          assert.are.equal(60, limitry.decode(out).data[1].threshold)
          out = ok { "alerts", "delete", alert }
          assert.is_true(limitry.decode(out).success)
          rc = limitry_cli { "quotas", "delete", id, "-q" }
          assert.are.equal(0, rc)
          rc, _, err = limitry_cli { "quotas", "get", id }
          assert.are.equal(1, rc)
          assert_one_line(err)
          assert.truthy(err:find("not found %(HTTP 404%)"), err)
        end)

        it("rate limits: create, list, get, update, delete; check --only rate-limits", function()
          local cust = "cli-rl-" .. v
          local rc, id, err = limitry_cli { "rate-limits", "create", "--name", "cli burst", "--limit", "1", "--window", "hour",
            "--filter", "customer_id=" .. cust, "-q" }
          assert.are.equal(0, rc, err)
          id = id:match("^(%S+)\n$")
          local out
          out = ok { "rate-limits", "list" }
          local found
          for _, r in ipairs(limitry.decode(out).data) do if r.id == id then found = r end end
          assert.are.equal("hour", found.window)
          out = ok { "rate-limits", "update", id, "--limit", "2", "--disable" }
          assert.is_false(limitry.decode(out).enabled)
          assert.is_true(limitry.decode((ok { "rate-limits", "update", id, "--enable" })).enabled)
          out = ok { "rate-limits", "get", id, "-o", "csv" }
          local csv = lines(out)
          assert.are.equal("id,createdAt,dimensionFilters,enabled,limitValue,name,updatedAt,window", csv[1])
          assert.truthy(csv[2]:find(',"{""customer_id"":""' .. cust .. '""}",true,2,cli burst,', 1, true), csv[2])
          assert.are.equal(0, (limitry_cli { "track", "--customer", cust, "--event-type", "x" }))
          assert.are.equal(0, (limitry_cli { "track", "--customer", cust, "--event-type", "x" }))
          rc, out = limitry_cli { "check", "--customer", cust, "--only", "rate-limits", "-o", "csv" }
          assert.are.equal(3, rc)
          assert.truthy(out:find("\nfalse,,rate limit," .. id .. ",cli burst,2,2,0,true,hour,", 1, true), out)
          rc = limitry_cli { "rate-limits", "delete", id }
          assert.are.equal(0, rc)
        end)
      end)

      it("project, and raw get/post/put/delete", function()
        local rc, out = limitry_cli { "project" }
        assert.are.equal(0, rc)
        assert.are.equal("proj_local", limitry.decode(out).id)
        out = ok { "get", "/v1/project" }
        assert.are.equal("proj_local", limitry.decode(out).id)
        rc, out = limitry_cli { "post", "/quotas", "-d", '{"name":"raw","metric":"total_events","limitValue":5,"period":"hour"}' }
        assert.are.equal(0, rc)
        local id = limitry.decode(out).id
        out = ok({ "put", "/quotas/" .. id, "-d", "-" }, { stdin = '{"limitValue":6}' })
        assert.are.equal(6, limitry.decode(out).limitValue)
        out = ok { "delete", "/quotas/" .. id }
        assert.is_true(limitry.decode(out).success)
      end)

      describe("failures: one line, the documented exit status, no traceback, no key", function()
        it("a wrong flag or value: exit 2", function()
          for _, args in ipairs {
            { "usage", "summary", "--frm", "2024-01-01" },
            { "usage", "summary", "--from", "2024-13-01" },
            { "usage", "summary", "--from", "2024-02-01", "--to", "2024-01-01" },
            { "usage", "breakdown", "--by", "colour" },
            { "usage", "summary", "-o", "xml" },
            { "events", "list", "--limit", "500" },
            { "quotas", "create", "--name", "x" },
            { "quotas", "create", "--name", "x", "--metric", "bogus", "--limit", "5", "--period", "day" },
            { "events", "import", tmp .. "/no-such-file.ndjson" },
            { "bogus" },
            {},
          } do
            local rc, out, err = limitry_cli(args)
            assert.are.equal(2, rc, table.concat(args, " ") .. ": " .. err)
            assert.are.equal("", out)
            assert_one_line(err)
          end
          local _, _, err = limitry_cli { "usage", "summary", "--frm", "x" }
          assert.truthy(err:find("unknown option '%-%-frm'.*%-%-from.*see limitry usage summary %-%-help"), err)
        end)

        it("no key: exit 2, naming LIMITRY_API_KEY and --key", function()
          local rc, out, err = limitry_cli({ "project" }, { env = { LIMITRY_API_KEY = false } })
          assert.are.equal(2, rc)
          assert.are.equal("", out)
          assert_one_line(err)
          assert.truthy(err:find("LIMITRY_API_KEY") and err:find("%-%-key"), err)
        end)

        it("a wrong key: exit 1, the key never shown, even read from stdin", function()
          local secret = "lm_cli_secret_" .. v:gsub("%.", "_") .. "_x9z"
          for _, args in ipairs { { "project" }, { "usage", "summary" }, { "events", "list" } } do
            local rc, out, err = limitry_cli(args, { env = { LIMITRY_API_KEY = secret } })
            assert.are.equal(1, rc)
            assert_one_line(err)
            assert.truthy(err:find("AuthenticationError") and err:find("LIMITRY_API_KEY"), err)
            assert.falsy((out .. err):find(secret, 1, true))
            if args[1] == "project" then assert.truthy(err:find("(HTTP 401, key from LIMITRY_API_KEY)", 1, true), err) end
          end
          local rc, _, err = limitry_cli { "--key", secret, "project" } -- common options before the command too
          assert.are.equal(1, rc)
          assert.falsy(err:find(secret, 1, true))
          assert.truthy(err:find("(HTTP 401, key from --key)", 1, true), err)
          rc, _, err = limitry_cli({ "project", "--key", "-" }, { stdin = secret .. "\n", env = { LIMITRY_API_KEY = false } })
          assert.are.equal(1, rc)
          assert.falsy(err:find(secret, 1, true))
          local file = tmp .. "/wrongkey.ndjson"
          write(file, ndjson(10, "cli-wrongkey", "02-05"))
          local out
          rc, out, err = limitry_cli({ "events", "import", file }, { env = { LIMITRY_API_KEY = secret } })
          assert.are.equal(1, rc)
          assert_one_line(err)
          assert.falsy((out .. err):find(secret, 1, true))
          rc, out = limitry_cli({ "project", "--key", "-" }, { stdin = server.api_key .. "\n", env = { LIMITRY_API_KEY = false } })
          assert.are.equal(0, rc)
          assert.falsy(out:find(server.api_key, 1, true))
        end)

        it("an unreachable server: exit 1, naming the URL, in bounded time", function()
          local dead = "http://127.0.0.1:" .. support.closed_port() .. "/v1"
          local file = tmp .. "/unreachable.ndjson"
          write(file, ndjson(10, "cli-unreachable", "02-06"))
          for _, args in ipairs { { "project" }, { "usage", "summary" }, { "events", "import", file }, { "check", "--customer", "c" } } do
            local t0 = socket.gettime()
            local rc, out, err = limitry_cli(args, { env = { LIMITRY_BASE_URL = dead } })
            assert.are.equal(1, rc, err)
            assert_one_line(err)
            assert.truthy(err:find("NetworkError") and err:find(dead, 1, true), err)
            assert.falsy(out:find("%S"))
            assert.truthy(socket.gettime() - t0 < 10)
          end
        end)
      end)

      it("local start, status, stop: the server shipped in the rock", function()
        local dir = tmp .. "/local-" .. v
        local rc, out, err = limitry_cli { "local", "start", "--dir", dir, "--empty" }
        assert.are.equal(0, rc, err)
        local url = out:match("export LIMITRY_BASE_URL=(%S+)")
        local key = out:match("export LIMITRY_API_KEY=(%S+)")
        assert.truthy(url and key, out)
        rc, out = limitry_cli({ "usage", "summary" }, { env = { LIMITRY_BASE_URL = url, LIMITRY_API_KEY = key } })
        assert.are.equal(0, rc)
        assert.are.equal(0, limitry.decode(out).totalEvents)
        rc, out = limitry_cli { "local", "status", "--dir", dir }
        assert.are.equal(0, rc)
        assert.truthy(out:find("^running: pid %d+"), out)
        rc = limitry_cli({ "local", "stop" }, { env = { LIMITRY_SERVER_DIR = dir } })
        assert.are.equal(0, rc)
        rc, out = limitry_cli { "local", "status", "--dir", dir }
        assert.are.equal(3, rc)
        assert.truthy(out:find("not running"), out)
        rc, _, err = limitry_cli { "local", "stop", "--dir", dir .. "-none" }
        assert.are.equal(1, rc)
        assert_one_line(err)
      end)
    end)
  end
end)
