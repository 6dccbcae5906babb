-- Argument errors raise at once, name the argument and what is allowed, and send nothing.
local limitry = require "limitry"

-- Nothing listens at this address: a call that got as far as sending would return a
-- NetworkError instead of raising, so every raise below proves nothing was sent.
local BASE = "http://127.0.0.1:9/v1"

local function usage()
  return limitry.new { api_key = "lm_test_key_123", base_url = BASE, max_retries = 0, connect_timeout = 0.5 }:usage()
end

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_string(err)
  assert.matches(pattern, err)
  return err
end

describe("limitry.new", function()
  it("takes a key string or an options table", function()
    assert.equal("https://api.limitry.com/v1", limitry.new("lm_abc").base_url)
    local c = limitry.new { api_key = "limitry_sk_xyz", base_url = "http://127.0.0.1:1/v1/", timeout = 5 }
    assert.equal("http://127.0.0.1:1/v1", c.base_url)
    assert.equal(5, c.timeout)
    assert.equal(10, c.connect_timeout)
    assert.equal(2, c.max_retries)
  end)

  it("returns the same usage object on every call", function()
    local c = limitry.new("lm_abc")
    assert.equal(c:usage(), c:usage())
  end)

  it("requires a key", function()
    raises("api_key is required", limitry.new, { base_url = BASE })
    raises("api_key is required", limitry.new, "")
  end)

  it("rejects a key with CR/LF or spaces, without echoing it", function()
    local err = raises("api_key must not contain spaces or control characters", limitry.new, "lm_secret\r\nX-Evil: 1")
    assert.is_nil(err:find("lm_secret", 1, true))
    raises("control characters", limitry.new, "lm_a b")
  end)

  it("rejects unknown options and wrong types, naming them", function()
    raises("unknown option 'timeout_ms' %(allowed: .*timeout", limitry.new, { api_key = "k1", timeout_ms = 5 })
    raises("option 'timeout' must be a number %(got string%)", limitry.new, { api_key = "k1", timeout = "5" })
    raises("timeout must be a positive number", limitry.new, { api_key = "k1", timeout = 0 })
    raises("max_retries must be a whole number from 0 to 100", limitry.new, { api_key = "k1", max_retries = 1.5 })
    raises("base_url must be an http:// or https:// URL", limitry.new, { api_key = "k1", base_url = "ftp://x" })
    raises("expected an API key string or an options table %(got number%)", limitry.new, 42)
  end)

  it("checks extra headers", function()
    raises("headers: 'Bad Name' is not a valid header name", limitry.new, { api_key = "k1", headers = { ["Bad Name"] = "x" } })
    raises("headers: the value of 'X%-A' must be a string without control characters", limitry.new,
      { api_key = "k1", headers = { ["X-A"] = "a\r\nb" } })
    raises("set the key with api_key", limitry.new, { api_key = "k1", headers = { Authorization = "Bearer x" } })
  end)

  -- os.getenv cannot be set from Lua: run a child Lua (the same version, the same LUA_PATH and
  -- LUA_CPATH) with the variables in its environment and read what it printed.
  local function child(env, script)
    local lua = jit and "luajit" or ("lua" .. _VERSION:sub(5))
    local p = assert(io.popen(env .. " " .. lua .. " -e '" .. script .. "' 2>&1"))
    local out = p:read("*a")
    p:close()
    return out
  end
  local SHOW = [[local ok, c = pcall(require("limitry").new, %s) io.write(ok and ("ok " .. c.base_url) or c)]]

  it("reads LIMITRY_API_KEY and LIMITRY_BASE_URL only when no option is given", function()
    local env = "LIMITRY_API_KEY=lm_from_env LIMITRY_BASE_URL=http://env.invalid:1/v1"
    assert.equal("ok http://env.invalid:1/v1", child(env, SHOW:format("{}")))
    assert.equal("ok " .. BASE, child(env, SHOW:format("{ base_url = \"" .. BASE .. "\" }")))
    -- Without the variables the same call has no key.
    assert.matches("api_key is required", child("env -u LIMITRY_API_KEY -u LIMITRY_BASE_URL", SHOW:format("{}")))
    -- The key is never shown, so prove which one is used through the check on its characters:
    -- a malformed key in the environment is refused, and ignored when api_key is given.
    local bad = "LIMITRY_API_KEY=\"lm bad\""
    assert.matches("api_key must not contain spaces", child(bad, SHOW:format("{}")))
    assert.equal("ok https://api.limitry.com/v1", child("env -u LIMITRY_BASE_URL " .. bad, SHOW:format("{ api_key = \"lm_ok\" }")))
  end)

  it("takes an empty variable for an unset one", function()
    assert.equal("ok https://api.limitry.com/v1", child("LIMITRY_BASE_URL= LIMITRY_API_KEY=lm_k", SHOW:format("{}")))
    assert.matches("api_key is required", child("LIMITRY_API_KEY= LIMITRY_BASE_URL=", SHOW:format("{}")))
  end)
end)

describe("usage calls", function()
  local START, FINISH = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"

  it("require start_date and end_date", function()
    local u = usage()
    raises("get_summary: start_date is required", u.get_summary, u, { end_date = FINISH })
    raises("get_summary: end_date is required", u.get_summary, u, START)
  end)

  it("reject dates that are not ISO 8601 or unix seconds", function()
    local u = usage()
    raises("start_date must be an ISO 8601 date%-time", u.get_summary, u, "yesterday", FINISH)
    raises("start_date is required: an ISO 8601 string .* %(got boolean%)", u.get_summary, u, true, FINISH)
    raises("end_date must be a finite, non%-negative unix time", u.get_summary, u, START, 0 / 0)
  end)

  -- Issue #17, item 5: a date the server would refuse raises here, naming the Lua argument and the
  -- real reason, instead of coming back as "APIError: Invalid startDate ..." about the wire name.
  it("check every date as the server reads it, naming the argument and the reason (issue #17)", function()
    local u = usage()
    local cases = {
      { "2024-13-01", FINISH, "start_date '2024%-13%-01' has month 13 %(months run 01 to 12%)" },
      { "2024-00-10", FINISH, "start_date '2024%-00%-10' has month 0 " },
      { "2024-02-30", FINISH, "start_date '2024%-02%-30' has day 30 %(February 2024 has days 01 to 29%)" },
      { START, "2023-02-29", "end_date '2023%-02%-29' has day 29 %(February 2023 has days 01 to 28%)" },
      { "2024-04-31T00:00:00Z", FINISH, "has day 31 %(April 2024 has days 01 to 30%)" },
      { "2024-01-01T25:00:00Z", FINISH, "start_date '2024%-01%-01T25:00:00Z' has hour 25 %(hours run 00 to 23%)" },
      { "2024-01-01T24:00:00Z", FINISH, "has hour 24 " },
      { "2024-01-01T10:60Z", FINISH, "has minute 60 %(minutes run 00 to 59%)" },
      { "2024-01-01T10:00:61Z", FINISH, "has second 61 " },
      { "2024-01-01T00:00:00.1234567890Z", FINISH, "has a fraction of 10 digits %(at most 9%)" },
      { "2024-01-01T00:00:00+25:00", FINISH, "has time zone %+25:00 %(an offset runs from %-23:59 to %+23:59%)" },
      { "2024-01-01T00:00:00+01:60", FINISH, "has time zone %+01:60 " },
      { "2024-01-01T00:00:00 UTC", FINISH, "has time zone ' UTC' %(expected Z, %+HH:MM or %-HH:MM, or none for UTC%)" },
      { "2024-01-01T00:00:00+1", FINISH, "has time zone '%+1' " },
      { "2024-01-01T1:00Z", FINISH, "has 'T1:00Z' after the date %(expected 'T' and a time" },
      { "2024-01-01X", FINISH, "has 'X' after the date" },
      { "01/02/2024", FINISH, "start_date must be an ISO 8601 date%-time such as '2024%-01%-01T00:00:00Z' or '2024%-01%-01' %(got '01/02/2024'%)" },
      { FINISH, START, "end_date must be after start_date %(got start_date '2024%-02%-01T00:00:00Z', end_date '2024%-01%-01T00:00:00Z'%)" },
      { START, START, "end_date must be after start_date" },
      -- the same instant written in two zones is an empty range
      { "2024-01-01T01:00:00+01:00", START, "end_date must be after start_date" },
      -- unix seconds are compared as sent (cut to the second)
      { 1704067200.2, 1704067200.7, "end_date must be after start_date %(got start_date 1704067200.2 %(2024%-01%-01T00:00:00Z%)" },
    }
    for _, case in ipairs(cases) do
      for _, call in ipairs { "get_summary", "start_summary" } do
        local err = raises("^usage:" .. call .. ": .*" .. case[3], u[call], u, case[1], case[2])
        assert.is_nil(err:find("startDate", 1, true), err)
      end
    end
    raises("^usage:get_breakdown: end_date '2024%-02%-30' has day 30", u.get_breakdown, u,
      { group_by = "model", start_date = START, end_date = "2024-02-30" })
    raises("^usage:get_timeseries: start_date '2024%-13%-01' has month 13", u.get_timeseries, u, "day", "2024-13-01", FINISH)
    -- A long value is shown cut.
    local long = "2024-01-01T00:00:00Z" .. string.rep("x", 100)
    local err = raises("start_date '2024%-01%-01T00:00:00Zxxxxxxxxxxxxxxxxxxxx%.%.%.' %(120 bytes%) has time zone", u.get_summary, u, long, FINISH)
    assert.is_nil(err:find(string.rep("x", 50), 1, true))
  end)

  it("take the forms of ISO 8601 the server reads, and leap days", function()
    local dates = require "limitry.dates"
    local base = dates.parse("2024-01-01")
    assert.equal(1704067200, base)
    for text, seconds in pairs {
      ["2024-02-29"] = 1709164800, ["2000-02-29T00:00:00Z"] = 951782400, ["2024-01-01T00:00Z"] = base,
      ["2024-01-01t00:00:00z"] = base, ["2024-01-01 00:00:00"] = base, ["2024-01-01T01:00:00+01:00"] = base,
      ["2023-12-31T19:00:00-0500"] = base, ["2024-01-01T00:00:00.5Z"] = base + 0.5, ["2024-01-01T00:00:00,25Z"] = base + 0.25,
      ["2024-01-01T00:00:00.123456789+00:00"] = base + 0.123456789, ["2016-12-31T23:59:60Z"] = 1483228800,
    } do
      assert.near(seconds, (dates.parse(text)), 1e-6, text)
      assert.is_true(pcall(usage().start_summary, usage(), text, "9999-12-31"), text)
    end
    assert.is_nil(dates.parse("1900-02-29"))
  end)

  it("check group_by and interval against the allowed values", function()
    local u = usage()
    raises("group_by must be one of 'model', 'customer_id', 'event_type', 'provider' %(got 'colour'%)",
      u.get_breakdown, u, { group_by = "colour", start_date = START, end_date = FINISH })
    raises("group_by must be one of .* %(missing%)", u.get_breakdown, u, { start_date = START, end_date = FINISH })
    raises("interval must be one of 'hour', 'day', 'week' %(got 'month'%)", u.get_timeseries, u, "month", START, FINISH)
  end)

  it("check filters", function()
    local u = usage()
    raises("customer_id must be a non%-empty string %(got number%)", u.get_summary, u,
      { start_date = START, end_date = FINISH, customer_id = 5 })
    raises("model must be a non%-empty string %(got an empty string%)", u.get_summary, u, START, FINISH, { model = "" })
    raises("event_type must not contain control characters", u.get_summary, u, START, FINISH, { event_type = "a\nb" })
  end)

  it("reject unknown parameters, such as camelCase wire names", function()
    local u = usage()
    raises("unknown parameter 'startDate' %(allowed: customer_id, end_date, event_type, model, start_date%)",
      u.get_summary, u, { startDate = START, end_date = FINISH })
    raises("too many arguments", u.get_summary, u, START, FINISH, {}, 1)
    raises("options after end_date must be a table", u.get_summary, u, START, FINISH, "cust")
  end)

  it("explain a call made with a dot instead of a colon", function()
    local u = usage()
    raises("call it as usage:get_summary%(%.%.%.%) with a colon", u.get_summary, { start_date = START, end_date = FINISH })
  end)

  it("send nothing when the arguments are right but nobody listens: a NetworkError comes back", function()
    local u = usage()
    local res, msg, err = u:get_summary(START, FINISH)
    assert.is_nil(res)
    assert.equal("NetworkError", err.name)
    assert.is_string(msg)
  end)
end)

describe("error values", function()
  local errors = require "limitry.errors"

  it("follow the family", function()
    local function e(name) return errors.finish(errors.new { name = name, message = "m" }, 1) end
    assert.is_true(e("TimeoutError"):is("NetworkError"))
    assert.is_true(e("TimeoutError"):is("LimitryError"))
    assert.is_false(e("TimeoutError"):is("APIError"))
    assert.is_true(e("RateLimitError"):is("APIError"))
    assert.is_true(e("AuthenticationError"):is("APIError"))
    assert.is_false(e("DecodeError"):is("APIError"))
    assert.is_true(e("DecodeError"):is("LimitryError"))
    assert.equal("DecodeError: m", tostring(e("DecodeError")))
    assert.is_true(limitry.is_error(e("APIError")))
    assert.is_false(limitry.is_error({}))
  end)
end)
