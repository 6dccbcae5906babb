-- The C core's JSON encoder (core.encode, core.array_mt) and core.random_id.
local core = require "limitry.core"

local HAS_INTEGERS = math.type ~= nil
local LUA = jit and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
local TMP = os.getenv("LIMITRY_TEST_TMP") or "/tmp"
-- Made at run time: Lua 5.1 folds a literal -0.0 into its constant table, where it merges with 0.
local NEGZERO = -tonumber("0.0")

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function have(cmd)
  local p = io.popen("command -v " .. cmd .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out ~= ""
end

local function read_all(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- The error text core.encode raises for v (nil when it does not raise).
local function encode_error(v)
  local ok, err = pcall(core.encode, v)
  if ok then return nil end
  return err
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
    0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

-- Python's float.hex() of x, computed in Lua (no frexp on 5.4): "0x1.999999999999ap-4".
local function float_hex(x)
  if x == 0 then return (1 / x < 0) and "-0x0.0p+0" or "0x0.0p+0" end
  local sign = ""
  if x < 0 then sign, x = "-", -x end
  local e = math.floor(math.log(x) / math.log(2))
  while 2 ^ e > x do e = e - 1 end
  while 2 ^ (e + 1) <= x do e = e + 1 end
  local lead = 1
  if e < -1022 then e, lead = -1022, 0 end
  local m = x / 2 ^ e - lead
  local digits = {}
  for i = 1, 13 do
    m = m * 16
    local d = math.floor(m)
    digits[i] = string.format("%x", d)
    m = m - d
  end
  return string.format("%s0x%d.%sp%s%d", sign, lead, table.concat(digits), e >= 0 and "+" or "-", math.abs(e))
end

-- Whether the encoder writes this number as a JSON integer.
local function is_json_integer(x)
  if HAS_INTEGERS then return math.type(x) == "integer" end
  return x == math.floor(x) and math.abs(x) <= 2 ^ 53 and not (x == 0 and 1 / x < 0)
end

local function is_array(t)
  if getmetatable(t) == core.array_mt then return true end
  return next(t) ~= nil and t[1] ~= nil
end

-- A canonical text of a value, the same as the Python script below prints for what it parsed.
local function canon(v)
  local t = type(v)
  if v == core.null then return "N" end
  if t == "boolean" then return v and "T" or "F" end
  if t == "number" then
    if is_json_integer(v) then
      return "i:" .. (HAS_INTEGERS and tostring(v) or string.format("%.0f", v))
    end
    return "f:" .. float_hex(v)
  end
  if t == "string" then return "s:" .. hex(v) end
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[i] = canon(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  for k, x in pairs(v) do parts[#parts + 1] = hex(k) .. ":" .. canon(x) end
  table.sort(parts)
  return "{" .. table.concat(parts, ",") .. "}"
end

local PY_CANON = [[
import json, sys
def bad_constant(c):
    raise ValueError("not JSON: " + c)
def pairs_hook(pairs):
    keys = [k.encode("utf-8") for k, _ in pairs]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise ValueError("object keys not sorted or not unique")
    return dict(pairs)
def canon(v):
    if v is None: return "N"
    if v is True: return "T"
    if v is False: return "F"
    if isinstance(v, int): return "i:%d" % v
    if isinstance(v, float): return "f:" + v.hex()
    if isinstance(v, str): return "s:" + v.encode("utf-8").hex()
    if isinstance(v, list): return "[" + ",".join(canon(x) for x in v) + "]"
    return "{" + ",".join(sorted(k.encode("utf-8").hex() + ":" + canon(x) for k, x in v.items())) + "}"
out = []
for line in open(sys.argv[1], "rb").read().split(b"\n")[:-1]:
    try:
        out.append(canon(json.loads(line.decode("utf-8"), parse_constant=bad_constant, object_pairs_hook=pairs_hook)))
    except Exception as e:
        out.append("error: %s" % e)
sys.stdout.write("\n".join(out) + "\n")
]]

-- A deterministic generator (the same on every Lua: all products stay below 2^53).
local function generator(seed)
  local state = seed
  local function rand(n) -- 0 .. n-1, n <= 65536
    state = (state * 1664525 + 1013904223) % 4294967296
    return math.floor(state / 65536) % n
  end

  local function random_double()
    local kind = rand(8)
    if kind == 0 then return rand(100000) / 100 end                    -- cents
    if kind == 1 then return rand(65536) / (rand(1000) + 1) end
    if kind == 2 then return (rand(2001) - 1000) + 0.0 end              -- integral floats
    if kind == 3 then return rand(2) == 0 and NEGZERO or 0.0 end
    local f = rand(65536) * 2 ^ 36 + rand(65536) * 2 ^ 20 + rand(65536) * 2 ^ 4 + rand(16) -- 52 bits
    local sign = rand(2) == 0 and 1 or -1
    if kind == 4 then return sign * f / 2 ^ 52 * 2 ^ -1022 end           -- subnormals
    local e = kind == 5 and (rand(2046) - 1022) or (rand(140) - 70)
    return sign * (1 + f / 2 ^ 52) * 2 ^ e
  end

  local function random_integer()
    local kind = rand(4)
    if kind == 0 then return rand(2001) - 1000 end
    if HAS_INTEGERS then
      if kind == 1 then
        local special = { math.maxinteger, math.mininteger, 9007199254740993, -9007199254740993, 0, -1 }
        return special[rand(#special) + 1]
      end
      -- four 16-bit pieces; integer arithmetic wraps, so every 64-bit pattern is reachable
      local v = math.tointeger(rand(65536))
      for _ = 1, 3 do v = v * 65536 + math.tointeger(rand(65536)) end
      return v
    end
    local v = rand(32) * 2 ^ 48 + rand(65536) * 2 ^ 32 + rand(65536) * 2 ^ 16 + rand(65536) -- < 2^53
    return rand(2) == 0 and v or -v
  end

  local pieces = { '"', "\\", "/", "\127", "\n", "\t", "\0", "\31", "\8", "\12", "\r" }
  local function random_string()
    local out = {}
    for i = 1, rand(12) do
      local kind = rand(4)
      if kind == 0 then
        out[i] = string.char(32 + rand(95))
      elseif kind == 1 then
        out[i] = pieces[rand(#pieces) + 1]
      elseif kind == 2 then
        out[i] = string.char(rand(32))
      else
        local cp = rand(17) * 65536 + rand(65536)
        if cp >= 0xD800 and cp <= 0xDFFF then cp = cp + 0x800 end -- no surrogates
        out[i] = utf8_char(cp)
      end
    end
    return table.concat(out)
  end

  local value
  local function random_table(depth)
    if rand(2) == 0 then
      local t = {}
      for i = 1, rand(6) do t[i] = value(depth + 1, true) end
      if #t == 0 then setmetatable(t, core.array_mt) end
      return t
    end
    local t = {}
    for _ = 1, rand(6) do t[random_string()] = value(depth + 1, false) end
    return t
  end

  -- Nulls only as array elements and at the top: the decoder leaves null members out of objects.
  value = function(depth, nulls_allowed)
    local kind = rand(depth >= 4 and 6 or 8)
    if kind == 0 then return random_integer() end
    if kind == 1 then return random_double() end
    if kind == 2 then return random_string() end
    if kind == 3 then return rand(2) == 0 end
    if kind == 4 then return random_integer() end
    if kind == 5 then return nulls_allowed and core.null or random_double() end
    return random_table(depth)
  end
  return function() return value(0, true) end
end

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if HAS_INTEGERS and math.type(a) ~= math.type(b) then return false end
    if a == 0 and b == 0 then return 1 / a == 1 / b end
    return a == b
  end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local CORPUS_SIZE = 3000

describe("core.encode", function()
  describe("numbers", function()
    it("writes integers as integers", function()
      assert.equal("0", core.encode(0))
      assert.equal("-1", core.encode(-1))
      assert.equal("1000000", core.encode(1000000))
      assert.equal("[1,-42,500]", core.encode({ 1, -42, 500 }))
      if HAS_INTEGERS then
        assert.equal("9007199254740991", core.encode(9007199254740991))
        assert.equal("9007199254740993", core.encode(9007199254740993))
        assert.equal("-9223372036854775808", core.encode(math.mininteger))
        assert.equal("9223372036854775807", core.encode(math.maxinteger))
      else
        assert.equal("9007199254740991", core.encode(2 ^ 53 - 1))
        assert.equal("-9007199254740992", core.encode(-2 ^ 53))
        assert.equal("123456789012345", core.encode(123456789012345))
      end
    end)

    it("writes floats with the shortest of 15, 16 and 17 digits that reads back exactly", function()
      assert.equal("0.1", core.encode(0.1))
      assert.equal("0.30000000000000004", core.encode(0.1 + 0.2))
      assert.equal("0.3333333333333333", core.encode(1 / 3))
      assert.equal("-1.5", core.encode(-1.5))
      assert.equal("1e+300", core.encode(1e300))
      assert.equal("1.7976931348623157e+308", core.encode(1.7976931348623157e308))
      assert.equal("2.2250738585072014e-308", core.encode(2.2250738585072014e-308))
      assert.equal("2.5e-08", core.encode(2.5e-8))
      assert.equal("1.152921504606847e+18", core.encode(2 ^ 60))
    end)

    it("writes subnormals with their shortest text", function()
      assert.equal("5e-324", core.encode(5e-324))
      assert.equal("-1e-323", core.encode(-1e-323))
      assert.equal(5e-324, core.decode(core.encode(5e-324)))
    end)

    it("keeps integral floats floats (5.3+) and valid JSON everywhere", function()
      if HAS_INTEGERS then
        assert.equal("3.0", core.encode(3.0))
        assert.equal("-7.0", core.encode(-7.0))
        assert.equal("9007199254740992.0", core.encode(2 ^ 53))
        assert.equal("float", math.type(core.decode(core.encode(3.0))))
        assert.equal("integer", math.type(core.decode(core.encode(3))))
      else
        assert.equal("3", core.encode(3.0))
        assert.equal("9007199254740992", core.encode(2 ^ 53))
        assert.equal("9007199254740994.0", core.encode(2 ^ 53 + 2))
      end
      assert.equal("1e+20", core.encode(1e20))
      assert.equal(1e20, core.decode(core.encode(1e20)))
      assert.equal(2 ^ 53 + 2, core.decode(core.encode(2 ^ 53 + 2)))
    end)

    it("writes -0.0 as -0.0 (the sign survives a round trip) on every Lua", function()
      assert.equal("-0.0", core.encode(NEGZERO))
      assert.equal("[-0.0,0]", core.encode({ NEGZERO, 0 }))
      local back = core.decode(core.encode(NEGZERO))
      assert.equal(0, back)
      assert.equal(-math.huge, 1 / back)
    end)

    it("raises on NaN and infinities, naming the path", function()
      local nan = 0 / 0
      assert.equal("core.encode: value is not a finite number (nan)", encode_error(nan))
      assert.equal("core.encode: value is not a finite number (inf)", encode_error(math.huge))
      assert.equal("core.encode: value is not a finite number (-inf)", encode_error(-math.huge))
      local body = { events = { { cost_cents = 1 }, { cost_cents = 2 }, { cost_cents = nan } } }
      assert.equal("core.encode: events[3].cost_cents is not a finite number (nan)", encode_error(body))
      assert.equal("core.encode: [2] is not a finite number (inf)", encode_error({ 1, math.huge }))
    end)

    it("does not depend on the C locale's decimal point", function()
      if not have("localedef") then
        pending("localedef is not installed: the decimal-comma locale cannot be built")
        return
      end
      -- A private copy of de_DE (decimal comma), compiled once per test run; setlocale finds it
      -- through LOCPATH, which only a new process can be given.
      local dir = TMP .. "/locale"
      if not io.open(dir .. "/de_DE.UTF-8/LC_NUMERIC") then
        os.execute("mkdir -p " .. sh_quote(dir) .. " && localedef -i de_DE -f UTF-8 " ..
          sh_quote(dir .. "/de_DE.UTF-8") .. " >/dev/null 2>&1")
      end
      if not io.open(dir .. "/de_DE.UTF-8/LC_NUMERIC") then
        pending("localedef could not build de_DE.UTF-8 (the locales package's sources are missing)")
        return
      end
      local script = [[
        assert(os.setlocale("de_DE.UTF-8", "numeric"), "no de_DE locale")
        local core = require "limitry.core"
        -- LuaJIT formats numbers itself, so only PUC Lua shows the comma; the C library does on both.
        io.write(jit and "0,5" or string.format("%.1f", 0.5), " ", core.encode({ 0.5, 0.1 + 0.2, 1e-7, 2.5e300, -0.0 }),
          " ", core.decode(core.encode(0.75)) == 0.75 and "ok" or "bad")
      ]]
      local out = read_all("LOCPATH=" .. sh_quote(dir) .. " LUA_CPATH=" .. sh_quote(package.cpath) .. " " ..
        LUA .. " -e " .. sh_quote(script) .. " 2>&1")
      -- "0,5" proves the locale took effect in the child (PUC Lua's string.format is C's printf).
      assert.equal("0,5 [0.5,0.30000000000000004,1e-07,2.5e+300,-0.0] ok", out)
    end)
  end)

  describe("strings", function()
    it("escapes quotes, backslashes and every control character", function()
      assert.equal([["a\"b\\c/d"]], core.encode('a"b\\c/d'))
      local short = { [8] = "\\b", [9] = "\\t", [10] = "\\n", [12] = "\\f", [13] = "\\r" }
      local raw, want = {}, {}
      for c = 0, 31 do
        raw[#raw + 1] = string.char(c)
        want[#want + 1] = short[c] or string.format("\\u%04x", c)
      end
      assert.equal('"' .. table.concat(want) .. '"', core.encode(table.concat(raw)))
      assert.equal('"\127 ~"', core.encode("\127 ~"))
      assert.equal('""', core.encode(""))
      assert.equal('"a\\u0000b"', core.encode("a\0b"))
    end)

    it("passes valid UTF-8 through unchanged, boundaries included", function()
      local valid = { "é", "€", "😀", "\194\128", "\223\191", "\224\160\128", "\237\159\191", "\238\128\128",
        "\239\191\191", "\240\144\128\128", "\244\143\191\191" }
      for _, s in ipairs(valid) do
        assert.equal('"' .. s .. '"', core.encode(s), hex(s))
        assert.is_nil(core.utf8_error(s), hex(s))
      end
      assert.equal('{"clé":"naïve ☃"}', core.encode({ ["clé"] = "naïve ☃" }))
    end)

    it("raises on invalid UTF-8, naming the path and the byte", function()
      local invalid = {
        { "\128", 1 }, { "ab\255", 3 }, { "\192\128", 1 }, { "\193\191", 1 }, { "\224\128\128", 1 },
        { "\237\160\128", 1 }, { "\237\191\191", 1 }, { "\244\144\128\128", 1 }, { "\245\128\128\128", 1 },
        { "x\226\130", 2 }, { "\195", 1 }, { "a\195(", 2 }, { "\240\159\152", 1 }, { "\254", 1 },
      }
      for _, case in ipairs(invalid) do
        assert.equal("core.encode: value is not valid UTF-8 (byte " .. case[2] .. ")", encode_error(case[1]), hex(case[1]))
        -- the argument checks' helper finds the same byte
        assert.equal(case[2], core.utf8_error(case[1]), hex(case[1]))
      end
      assert.equal("core.encode: events[2].model is not valid UTF-8 (byte 4)",
        encode_error({ events = { {}, { model = "gpt\255" } } }))
      assert.equal('core.encode: properties has a key that is not valid UTF-8 (byte 2 of ["a\\xff"])',
        encode_error({ properties = { ["a\255"] = 1 } }))
    end)

    it("agrees with Python's strict UTF-8 decoder on every 2-byte start and many longer ones", function()
      if not have("python3") then
        pending("python3 is not installed")
        return
      end
      local cases = {}
      for lead = 0x80, 0xFF do
        -- continuation bytes and F8..FF start nothing: one second byte is enough for them
        local last = (lead >= 0xC0 and lead <= 0xF7) and 255 or 0
        for second = 0, last do
          for _, tail in ipairs({ "", "\128", "\191\128", "\192", "\128\192" }) do
            cases[#cases + 1] = string.char(lead, second) .. tail
          end
        end
      end
      local ours = {}
      for i, s in ipairs(cases) do
        ours[i] = encode_error(s) and "bad" or "ok"
        assert.equal(ours[i] == "bad", core.utf8_error(s) ~= nil, hex(s)) -- the argument checks agree
      end
      local file = TMP .. "/utf8-cases.txt"
      local lines = {}
      for i, s in ipairs(cases) do lines[i] = hex(s) end
      write_file(file, table.concat(lines, "\n") .. "\n")
      local py = [[
import sys
for line in open(sys.argv[1]):
    try:
        bytes.fromhex(line.strip()).decode("utf-8", "strict"); print("ok")
    except UnicodeDecodeError:
        print("bad")
]]
      local theirs = read_all("python3 -c " .. sh_quote(py) .. " " .. sh_quote(file))
      local n, mismatches = 0, {}
      for verdict in theirs:gmatch("[^\n]+") do
        n = n + 1
        if verdict ~= ours[n] and #mismatches < 5 then
          mismatches[#mismatches + 1] = hex(cases[n]) .. ": python " .. verdict .. ", ours " .. ours[n]
        end
      end
      assert.equal(#cases, n)
      assert.same({}, mismatches)
    end)
  end)

  describe("tables", function()
    it("writes sequences as arrays and string-keyed tables as objects with sorted keys", function()
      assert.equal("[1,2,3]", core.encode({ 1, 2, 3 }))
      assert.equal('{"a":1,"b":2,"c":3}', core.encode({ c = 3, a = 1, b = 2 }))
      -- byte order: uppercase before lowercase, shorter prefix first, UTF-8 last
      assert.equal('{"B":1,"a":2,"ab":3,"b":4,"é":5}', core.encode({ ["é"] = 5, b = 4, ab = 3, a = 2, B = 1 }))
      assert.equal('{"a":[true,false,null,"x",{"b":[]}]}',
        core.encode({ a = { true, false, core.null, "x", { b = setmetatable({}, core.array_mt) } } }))
      assert.equal("null", core.encode(core.null))
      assert.equal("true", core.encode(true))
      assert.equal('"s"', core.encode("s"))
    end)

    it("writes an empty table as {} and one with core.array_mt as []", function()
      assert.equal("{}", core.encode({}))
      assert.equal("[]", core.encode(setmetatable({}, core.array_mt)))
      assert.equal("[1,2]", core.encode(setmetatable({ 1, 2 }, core.array_mt)))
      assert.equal('{"events":[],"meta":{}}', core.encode({ events = setmetatable({}, core.array_mt), meta = {} }))
      assert.is_table(core.array_mt)
      assert.equal(core.array_mt, require("limitry.core").array_mt)
    end)

    it("sorts objects of any size (large ones take another path)", function()
      for _, n in ipairs({ 31, 32, 33, 200 }) do
        local t, keys = {}, {}
        for i = n, 1, -1 do
          local k = string.format("k%04d", (i * 7919) % 10007)
          t[k] = i
          keys[#keys + 1] = k
        end
        table.sort(keys)
        local want = {}
        for i, k in ipairs(keys) do want[i] = '"' .. k .. '":' .. t[k] end
        assert.equal("{" .. table.concat(want, ",") .. "}", core.encode(t), "n = " .. n)
        assert.same(t, core.decode(core.encode(t)))
      end
      local big = {}
      for i = 1, 40 do big["k" .. i] = i end
      big[1] = true
      assert.matches("mixes string and integer keys", encode_error(big))
    end)

    it("reads tables raw: metatables other than core.array_mt change nothing", function()
      local proxy = setmetatable({ a = 1 }, { __index = function() return 2 end, __len = function() return 5 end,
        __pairs = function() error("not called") end })
      assert.equal('{"a":1}', core.encode(proxy))
    end)

    it("encodes the same table twice when it is shared but not a cycle", function()
      local shared = { x = 1 }
      assert.equal('[{"x":1},{"x":1}]', core.encode({ shared, shared }))
    end)

    it("raises on tables that are neither an array nor an object, naming the path", function()
      local cases = {
        { { 1, 2, nil, 4 }, "core.encode: value is a sparse array (3 items, largest key 4; arrays need keys 1..n)" },
        { { a = { [2] = "x" } }, "core.encode: a is a sparse array (1 items, largest key 2; arrays need keys 1..n)" },
        { { 1, a = 2 }, "core.encode: value mixes string and integer keys (a JSON value is an array or an object)" },
        { { [true] = 1 }, "core.encode: value has a boolean key (object keys are strings, array keys 1..n)" },
        { { x = { [{}] = 1 } }, "core.encode: x has a table key (object keys are strings, array keys 1..n)" },
        { { [1.5] = 1 }, "core.encode: value has the number key 1.5 (object keys are strings, array keys 1..n)" },
        { { [-1] = 1 }, "-1 (object keys are strings, array keys 1..n)" },
        { { [0] = "a", "b" }, "0 (object keys are strings, array keys 1..n)" },
        { setmetatable({ a = 1 }, core.array_mt), "core.encode: value has core.array_mt but string keys" },
      }
      for i, case in ipairs(cases) do
        local err = encode_error(case[1])
        assert.is_string(err, "case " .. i)
        assert.is_truthy(err:find(case[2], 1, true), "case " .. i .. ": " .. err)
      end
    end)

    it("raises on values JSON cannot hold, naming the path", function()
      local co = coroutine.create(function() end)
      assert.equal("core.encode: value is nil (core.null encodes as null)", encode_error(nil))
      assert.equal("core.encode: events[1].callback is a function (only tables, strings, numbers, booleans and " ..
        "core.null can be encoded)", encode_error({ events = { { callback = print } } }))
      assert.matches("^core.encode: %[1%] is a userdata ", encode_error({ io.stdout }))
      assert.matches("^core.encode: f is a thread ", encode_error({ f = co }))
      assert.equal('core.encode: ["a b"]["x.y"][1] is not a finite number (nan)',
        encode_error({ ["a b"] = { ["x.y"] = { 0 / 0 } } }))
      assert.has_error(function() core.encode() end)
    end)

    it("refuses cycles and nesting deeper than 100 tables", function()
      local a = { name = "a" }
      a.child = { back = a }
      assert.equal("core.encode: child.back is a table that contains itself (a cycle)", encode_error(a))
      local arr = {}
      arr[1] = arr
      assert.equal("core.encode: [1] is a table that contains itself (a cycle)", encode_error(arr))

      local function nest(n)
        local root = {}
        local cur = root
        for _ = 2, n do
          cur[1] = {}
          cur = cur[1]
        end
        return root
      end
      assert.equal(string.rep("[", 99) .. "{}" .. string.rep("]", 99), core.encode(nest(100)))
      local err = encode_error(nest(101))
      assert.equal("core.encode: " .. string.rep("[1]", 100) .. " is nested more than 100 tables deep", err)

      -- wide objects at every level (keys kept on the Lua stack, or in an anchor table past 32)
      for _, width in ipairs({ 32, 40 }) do
        local root = {}
        local cur = root
        for depth = 1, 100 do
          for i = 1, width - 1 do cur[string.format("k%02d", i)] = i end
          if depth < 100 then
            cur.z = {}
            cur = cur.z
          end
        end
        assert.same(root, core.decode(core.encode(root)))
      end
    end)

    it("keeps working after errors (the output buffer of a failed call is released)", function()
      local body = { events = {} }
      for i = 1, 200 do body.events[i] = { customerId = "c" .. i, costCents = i / 3 } end
      local good = core.encode(body)
      body.events[200].costCents = 0 / 0
      for _ = 1, 200 do assert.is_string(encode_error(body)) end
      body.events[200].costCents = 200 / 3
      assert.equal(good, core.encode(body))
    end)
  end)

  describe("round trips", function()
    it("core.decode(core.encode(v)) equals v over a seeded corpus, integers staying integers", function()
      local gen = generator(20240101)
      for i = 1, CORPUS_SIZE do
        local v = gen()
        local text = core.encode(v)
        local back, err = core.decode(text)
        assert.is_nil(err, text)
        if not same(v, back) then
          error("value " .. i .. " did not survive: " .. text .. " decoded to " .. core.encode(back))
        end
      end
    end)

    it("Python's json reads the same values, doubles bit for bit (float.hex)", function()
      if not have("python3") then
        pending("python3 is not installed")
        return
      end
      local gen = generator(777)
      local texts, want = {}, {}
      for i = 1, CORPUS_SIZE do
        local v = gen()
        texts[i] = core.encode(v)
        want[i] = canon(v)
      end
      -- extremes written by hand, on top of the random corpus
      local extremes = { 0.1 + 0.2, 5e-324, 1.7976931348623157e308, 2 ^ -1022, NEGZERO, 1e20, 2 ^ 53,
        { s = "\0\31\"\\/\127é😀" }, setmetatable({}, core.array_mt), {} }
      if HAS_INTEGERS then
        for _, x in ipairs({ math.maxinteger, math.mininteger, 9007199254740993 }) do extremes[#extremes + 1] = x end
      end
      for _, v in ipairs(extremes) do
        texts[#texts + 1] = core.encode(v)
        want[#want + 1] = canon(v)
      end
      local file = TMP .. "/encode-corpus.jsonl"
      write_file(file, table.concat(texts, "\n") .. "\n")
      local out = read_all("python3 -c " .. sh_quote(PY_CANON) .. " " .. sh_quote(file) .. " 2>&1")
      local got = {}
      for line in out:gmatch("[^\n]+") do got[#got + 1] = line end
      assert.equal(#texts, #got, out:sub(1, 500))
      for i = 1, #texts do
        if got[i] ~= want[i] then
          error("value " .. i .. ": " .. texts[i] .. "\n python: " .. got[i] .. "\n wanted: " .. want[i])
        end
      end
    end)
  end)

  it("neither uses nor changes the host's lua-cjson settings", function()
    local ok, cjson = pcall(require, "cjson")
    if not ok then
      pending("lua-cjson is not installed for " .. LUA)
      return
    end
    local old = cjson.encode_number_precision()
    cjson.encode_number_precision(3)
    local ours = core.encode({ 0.1 + 0.2, 2 ^ 52 + 1 })
    local theirs = cjson.encode(0.123456)
    cjson.encode_number_precision(old)
    assert.equal(HAS_INTEGERS and "[0.30000000000000004,4503599627370497.0]" or "[0.30000000000000004,4503599627370497]", ours)
    assert.equal("0.123", theirs)
  end)
end)

describe("core.random_id", function()
  it("gives 1,000 distinct 32-digit lowercase hex ids", function()
    local seen, n = {}, 0
    for _ = 1, 1000 do
      local id = core.random_id()
      assert.equal(32, #id)
      assert.is_nil(id:find("[^0-9a-f]"), id)
      if not seen[id] then n = n + 1 end
      seen[id] = true
    end
    assert.equal(1000, n)
  end)

  it("gives a forked child ids other than its parent's (no userspace state)", function()
    local ok, unistd = pcall(require, "posix.unistd")
    if not ok then
      pending("lua-posix is not installed for " .. LUA .. ": no fork here (the strace test shows one getrandom per id)")
      return
    end
    local wait = require "posix.sys.wait"
    core.random_id()
    local r, w = assert(unistd.pipe())
    local pid = assert(unistd.fork())
    if pid == 0 then
      unistd.close(r)
      local ids = {}
      for i = 1, 50 do ids[i] = core.random_id() end
      unistd.write(w, table.concat(ids, "\n"))
      unistd._exit(0)
    end
    unistd.close(w)
    local parent = {}
    for i = 1, 50 do parent[core.random_id()] = i end
    local chunks = {}
    repeat
      local chunk = unistd.read(r, 4096)
      chunks[#chunks + 1] = chunk
    until not chunk or chunk == ""
    unistd.close(r)
    local _, how, status = wait.wait(pid)
    assert.equal("exited", how)
    assert.equal(0, status)
    local n = 0
    for id in table.concat(chunks):gmatch("[^\n]+") do
      n = n + 1
      assert.equal(32, #id)
      assert.is_nil(parent[id], "the child repeated the parent's id " .. id)
    end
    assert.equal(50, n)
  end)

  describe("random sources (under strace, which fails getrandom on purpose)", function()
    -- Runs `calls` random_id()s in a new Lua, getrandom failing with ENOSYS when inject is set;
    -- returns what it printed and how many times /dev/urandom was opened.
    local function under_strace(prefix, inject, calls)
      local trace = TMP .. "/random-id.strace"
      os.remove(trace)
      local script = "local core = require 'limitry.core' local out = {} for i = 1, " .. calls ..
        " do local ok, v = pcall(core.random_id) out[i] = (ok and 'id ' or 'error ') .. v end" ..
        " io.write(table.concat(out, ' '))"
      local cmd = prefix .. "strace -f -qq -o " .. sh_quote(trace) .. " -e trace=getrandom,open,openat " ..
        (inject and "-e inject=getrandom:error=ENOSYS " or "") ..
        -- LeakSanitizer cannot run under ptrace: off for the traced child of an ASan host
        "env ASAN_OPTIONS=detect_leaks=0 LUA_CPATH=" .. sh_quote(package.cpath) .. " " .. LUA .. " -e " .. sh_quote(script) .. " 2>&1"
      local out = read_all(cmd)
      local f = io.open(trace)
      local log = f and f:read("*a") or ""
      if f then f:close() end
      local _, opens = log:gsub('"/dev/urandom"', "")
      return out, opens, log
    end

    -- strace needs ptrace, which some containers forbid
    local function strace_works()
      return have("strace") and read_all("strace -f -qq -o /dev/null true 2>&1 && echo ok") == "ok\n"
    end

    it("uses getrandom, and /dev/urandom when getrandom fails", function()
      if not strace_works() then
        pending("strace is not installed or cannot trace here")
        return
      end
      -- LuaJIT seeds itself from the same sources: count our opens against a run without calls.
      local out, opens, log = under_strace("", false, 3)
      assert.matches("^id %x+ id %x+ id %x+$", out)
      -- one kernel call per id: nothing is cached in the process that a fork could copy
      local _, calls = log:gsub("getrandom%([^\n]*, 16, GRND_NONBLOCK%) = 16", "")
      assert.equal(3, calls)
      assert.equal(0, opens, "no fallback while getrandom works")
      local _, baseline = under_strace("", true, 0)
      out, opens = under_strace("", true, 3)
      assert.matches("^id [0-9a-f]+ id [0-9a-f]+ id [0-9a-f]+$", out)
      assert.equal(3 * 35 + 2, #out)
      assert.equal(baseline + 3, opens)
    end)

    it("raises a clear error when no source works", function()
      if jit then
        pending("LuaJIT cannot create a state without an OS random source, so this cannot run there")
        return
      end
      if not strace_works() or not have("unshare") then
        pending("strace or unshare is not installed, or strace cannot trace here")
        return
      end
      -- A private mount namespace whose /dev/urandom is a plain file; the host's is untouched.
      local fake = TMP .. "/not-a-device"
      write_file(fake, "")
      local probe = read_all("unshare -m sh -c 'mount --bind " .. fake .. " /dev/urandom && echo ok' 2>&1")
      if probe ~= "ok\n" then
        pending("cannot make a private mount namespace here (needs root): " .. probe)
        return
      end
      local out = under_strace("unshare -m sh -c 'mount --bind " .. fake .. " /dev/urandom && exec \"$0\" \"$@\"' ",
        true, 1)
      assert.equal("error core.random_id: no OS random source works " ..
        "(getrandom: Function not implemented; /dev/urandom: not a character device)", out)
    end)
  end)
end)

describe("query values (core.percent_encode, core.has_control)", function()
  local function unreserved(b)
    return (b >= 65 and b <= 90) or (b >= 97 and b <= 122) or (b >= 48 and b <= 57) or b == 45 or b == 46
      or b == 95 or b == 126
  end

  it("percent_encode keeps exactly A-Z a-z 0-9 - . _ ~ and writes every other byte as upper-case %XX", function()
    local all, want = {}, {}
    for b = 0, 255 do
      all[#all + 1] = string.char(b)
      want[#want + 1] = unreserved(b) and string.char(b) or ("%%%02X"):format(b)
    end
    assert.equal(table.concat(want), core.percent_encode(table.concat(all)))
    assert.equal("cust_42", core.percent_encode("cust_42"))
    assert.equal("2024-01-01T00%3A00%3A00%2B02%3A00", core.percent_encode("2024-01-01T00:00:00+02:00"))
    assert.equal("a%00b", core.percent_encode("a\0b"))
    assert.equal("", core.percent_encode(""))
    assert.equal("%C3%A9t%C3%A9", core.percent_encode("été"))
  end)

  it("has_control is true exactly for bytes 0-31 and 127, wherever they are", function()
    for b = 0, 255 do
      local control = b < 32 or b == 127
      assert.equal(control, core.has_control("ab" .. string.char(b) .. "cd"), "byte " .. b)
    end
    assert.is_false(core.has_control(""))
    assert.is_true(core.has_control(("x"):rep(10000) .. "\0"))
  end)

  it("a query sent to the server carries the encoded values", function()
    local op = require("limitry.resources").usage.get_summary -- its reader makes the path and query
    assert.equal("/usage?startDate=2024-01-01T00%3A00%3A00Z&endDate=2024-02-01&customerId=a%20b%2Fc%26d%3D%C3%A9&model=gpt-4o",
      op.arguments(op, "usage:get_summary", { start_date = "2024-01-01T00:00:00Z", end_date = "2024-02-01",
        customer_id = "a b/c&d=é", model = "gpt-4o" }))
  end)
end)

describe("core.expand", function()
  it("replaces each byte from 1 to 31 that the map names, in one pass, and leaves every other byte", function()
    local all = {}
    for b = 0, 255 do all[#all + 1] = string.char(b) end
    local s = table.concat(all)
    local want = s:gsub("[\1\2\31]", { ["\1"] = "<one>", ["\2"] = "", ["\31"] = "\1\1" })
    assert.equal(want, core.expand(s, { ["\1"] = "<one>", ["\2"] = "", ["\31"] = "\1\1", ["\0"] = "zero", [" "] = "space" }))
    assert.equal("ab", core.expand("ab", { ["\1"] = "x" }))
    assert.equal("", core.expand("", { ["\1"] = "x" }))
    assert.equal("xx", core.expand("\1\1", { ["\1"] = "x" }))
    assert.equal("\1", core.expand("\1", {}))
  end)

  it("raises on arguments of the wrong type", function()
    assert.has_error(function() core.expand(nil, {}) end)
    assert.has_error(function() core.expand("a", "b") end)
  end)
end)
