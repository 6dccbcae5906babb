-- The C core's JSON decoder.
local core = require "limitry.core"
local limitry = require "limitry"

local HAS_INTEGERS = math.type ~= nil

describe("core.decode", function()
  it("decodes integers as integers where Lua has them, fractions as floats", function()
    local t = assert(core.decode('{"a":500,"b":-7,"c":12.5,"d":1e3,"e":0,"f":-0.5}'))
    assert.equal(500, t.a)
    assert.equal(-7, t.b)
    assert.equal(12.5, t.c)
    assert.equal(1000, t.d)
    assert.equal(-0.5, t.f)
    if HAS_INTEGERS then
      assert.equal("integer", math.type(t.a))
      assert.equal("integer", math.type(t.e))
      assert.equal("float", math.type(t.d))
      assert.equal("500", tostring(t.a))
    end
  end)

  if HAS_INTEGERS then
    it("keeps 64-bit integers exact and falls back to floats past them", function()
      local t = assert(core.decode('[9007199254740993,9223372036854775807,-9223372036854775808,9223372036854775808]'))
      assert.equal(9007199254740993, t[1])
      assert.equal(math.maxinteger, t[2])
      assert.equal(math.mininteger, t[3])
      assert.equal("float", math.type(t[4]))
    end)
  end

  it("leaves null members out, keeps null array slots as limitry.null", function()
    local t = assert(core.decode('{"a":null,"b":[1,null,3]}'))
    assert.is_nil(t.a)
    assert.equal(limitry.null, t.b[2])
    assert.equal(3, t.b[3])
    assert.equal(limitry.null, core.decode("null"))
  end)

  it("decodes strings with escapes and surrogate pairs", function()
    local t = assert(core.decode('["a\\"b\\\\c\\/d\\n\\t","\\u00e9\\u20ac","\\ud83d\\ude00"]'))
    assert.equal('a"b\\c/d\n\t', t[1])
    assert.equal("\195\169\226\130\172", t[2])
    assert.equal("\240\159\152\128", t[3])
  end)

  it("decodes literals, nesting and whitespace", function()
    local t = assert(core.decode(' { "x" : [ true , false , { } , [ ] ] } '))
    assert.is_true(t.x[1])
    assert.is_false(t.x[2])
    assert.same({}, t.x[3])
  end)

  it("returns nil and a message with the byte offset for malformed input", function()
    local cases = {
      { "", "unexpected end of input at byte 1" },
      { "{", "expected a string key at byte 2" },
      { '{"a":1,}', "expected a string key at byte 8" },
      { "[1 2]", "expected ',' or ']' at byte 4" },
      { "01", "leading zero in number at byte 2" },
      { "1.", "invalid number at byte 3" },
      { '"abc', "unterminated string" },
      { '"a\1b"', "control character in string at byte 3" },
      { '"\\x"', "invalid escape at byte 3" },
      { '"\\ud800"', "unpaired surrogate" },
      { "[1] x", "trailing characters at byte 5" },
      { "nul", "unexpected character at byte 1" },
      { "<html>", "unexpected character at byte 1" },
    }
    for _, case in ipairs(cases) do
      local v, msg = core.decode(case[1])
      assert.is_nil(v, case[1])
      assert.is_string(msg)
      assert.is_truthy(msg:find(case[2], 1, true), "for " .. case[1] .. " got: " .. msg)
    end
  end)

  it("refuses nesting deeper than 200 without overflowing the C stack", function()
    local deep = string.rep("[", 100000) .. string.rep("]", 100000)
    local v, msg = core.decode(deep)
    assert.is_nil(v)
    assert.matches("nesting too deep", msg)
    assert.is_table(core.decode(string.rep("[", 150) .. string.rep("]", 150)))
  end)

  -- The first installed locale whose decimal point really is a comma, or nil.
  local function comma_locale()
    local old = os.setlocale(nil, "numeric")
    for _, name in ipairs { "de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8", "nl_NL.UTF-8", "de_DE" } do
      if os.setlocale(name, "numeric") then
        -- LuaJIT formats numbers itself, whatever the locale; these locales all use a comma.
        local comma = jit ~= nil or string.format("%.1f", 2.5) == "2,5"
        os.setlocale(old, "numeric")
        if comma then return name end
      end
    end
    os.setlocale(old, "numeric")
  end
  local COMMA = comma_locale()

  if COMMA then
    it("is not fooled by a locale whose decimal point is a comma (" .. COMMA .. ")", function()
      local old = os.setlocale(nil, "numeric")
      assert.is_string(os.setlocale(COMMA, "numeric"))
      local ok, v = pcall(core.decode, "[2.5, 1e-2, -0.125]")
      os.setlocale(old, "numeric")
      assert.is_true(ok, v)
      assert.same({ 2.5, 0.01, -0.125 }, v)
    end)
  else
    pending("comma-decimal locale test: no de_DE/fr_FR/nl_NL locale is installed (locale-gen de_DE.UTF-8 enables it)")
  end

  it("gives every object key back exactly, however keys repeat, collide or are escaped", function()
    -- The decoder keeps recent keys in 64 slots (src/json.c): 500 distinct keys must collide.
    local parts, want = {}, {}
    for i = 1, 500 do
      local k = ("k%d_%s"):format(i, ("x"):rep(i % 40)) -- 3 to 45 bytes: around the 32-byte limit
      parts[#parts + 1] = ('"%s":%d'):format(k, i)
      want[k] = i
    end
    local doc = "{" .. table.concat(parts, ",") .. "}"
    for _ = 1, 3 do assert.same(want, core.decode(doc)) end -- the second and third pass hit the cache
    -- the same bytes spelled with an escape, a prefix, a longer key and the empty key
    assert.same({ ab = 1, a = 2, abc = 3, [""] = 4 }, core.decode('{"ab":1,"a":2,"abc":3,"":4}'))
    assert.same({ ab = 5 }, core.decode('{"a\\u0062":5}'))
    assert.same({ ab = 6, a = 7 }, core.decode('{"ab":6,"a":7}'))
    -- a key cut short by the end of the input is still an error, not a cached key
    assert.is_nil((core.decode('{"ab')))
    assert.same({ ["ab"] = { ab = true } }, core.decode('{"ab":{"ab":true}}'))
  end)

  it("with a secret, replaces it in every string: values, keys, escaped spellings, keys cached before", function()
    local key = "sk_live_0123456789"
    -- the key as an object key, decoded (and cached) without a secret first
    assert.same({ [key] = 1 }, core.decode('{"' .. key .. '":1}'))
    local doc = core.decode('{"' .. key .. '":1,"note":"no for Bearer ' .. key .. ' and ' .. key .. '",'
      .. '"escaped":"\\u0073k_live_0123456789!","list":["' .. key .. '",["x' .. key .. 'y"]],"short":"sk_","n":5}', key)
    assert.same({ ["[REDACTED]"] = 1, note = "no for Bearer [REDACTED] and [REDACTED]", escaped = "[REDACTED]!",
      list = { "[REDACTED]", { "x[REDACTED]y" } }, short = "sk_", n = 5 }, doc)
    -- and a key decoded with the secret is not cached for a decode without it
    assert.same({ [key] = 2 }, core.decode('{"' .. key .. '":2}'))
    assert.same({ a = "b" }, core.decode('{"a":"b"}', ""))
  end)

  it("raises on a non-string argument", function()
    local ok, err = pcall(core.decode, {})
    assert.is_false(ok)
    assert.matches("bad argument #1 to .*string expected, got table", err)
  end)
end)
