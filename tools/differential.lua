-- The JSON decoder (limitry.core.decode) against two references, on Lua 5.4:
--   Python's json: the same accept/reject decision on every document, and the same value
--     (integers exact, floats bit-identical to Python's float(), null members left out);
--   lua-cjson 2.1.0: the same values where it accepts a document Python accepts (it makes every
--     number a float, keeps null members as cjson.null, and is lax about numbers such as 01 or
--     0x10, so its accept/reject decisions are not compared).
-- Corpus: fuzz/corpus/json and fuzz/corpus/server (the fuzz seeds) and documents generated here
-- from a fixed seed (numbers of every length and exponent, escapes, nesting, and mutations).
-- Run from the repository root with limitry.core on LUA_CPATH: lua5.4 tools/differential.lua [N]
local core = require "limitry.core"
local cjson = require "cjson"

local N = tonumber(arg[1]) or 10000
local docs, names = {}, {}

local function add(name, text) docs[#docs + 1] = text names[#names + 1] = name end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

for _, dir in ipairs { "fuzz/corpus/json", "fuzz/corpus/server" } do
  local p = assert(io.popen("ls " .. dir))
  for name in p:lines() do
    local text = read(dir .. "/" .. name)
    if dir:find("server") then text = text:gsub("^[^\n]*\n", "") end -- the status line
    add(dir .. "/" .. name, text)
  end
  p:close()
end

-- Generated documents: deterministic, so a failure is reproducible by its number.
math.randomseed(20241125)
local R = math.random
local function digits(n)
  local t = { tostring(R(1, 9)) }
  for i = 2, n do t[i] = tostring(R(0, 9)) end
  return table.concat(t)
end
local function number()
  local kind = R(1, 6)
  local sign = R(1, 3) == 1 and "-" or ""
  if kind == 1 then return sign .. digits(R(1, 19)) end                       -- around int64
  if kind == 2 then return sign .. digits(R(18, 120)) end                     -- past int64, past 63 chars
  if kind == 3 then return sign .. digits(R(1, 20)) .. "." .. digits(R(1, 90)) end
  if kind == 4 then return sign .. digits(R(1, 30)) .. (R(1, 2) == 1 and "e" or "E") .. ({ "", "+", "-" })[R(1, 3)] .. R(0, 400) end
  if kind == 5 then return sign .. "0." .. string.rep("0", R(0, 330)) .. digits(R(1, 25)) end
  return sign .. digits(R(1, 3)) .. "." .. digits(R(1, 40)) .. "e-" .. R(300, 340)  -- subnormals and underflow
end
local ESCAPES = { '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041", "\\u00e9", "\\u20ac", "\\ud83d\\ude00",
  "\\u0000", "\\uFFFF" }
local function str()
  local t = {}
  for i = 1, R(0, 12) do
    local k = R(1, 5)
    if k == 1 then t[i] = ESCAPES[R(1, #ESCAPES)]
    elseif k == 2 then t[i] = ({ "\195\169", "\226\130\172", "\240\159\152\128" })[R(1, 3)]
    else t[i] = string.char(R(0x20, 0x7e)):gsub('[\\"]', "x") end
  end
  return '"' .. table.concat(t) .. '"'
end
local function value(depth)
  local k = R(1, depth > 4 and 3 or 6)
  if k == 1 then return number() end
  if k == 2 then return str() end
  if k == 3 then return ({ "true", "false", "null" })[R(1, 3)] end
  if k <= 5 then
    local t = {}
    for i = 1, R(0, 5) do t[i] = value(depth + 1) end
    return "[" .. table.concat(t, ",") .. "]"
  end
  local t = {}
  for i = 1, R(0, 5) do t[i] = str() .. ":" .. value(depth + 1) end
  return "{" .. table.concat(t, ",") .. "}"
end
local NOISE = { "", " ", ",", ".", "-", "+", "e", "0", "]", "}", "[", "{", '"', "\\", ":", "x", "\1", "\t" }
local function mutate(s)
  local i = R(1, #s + 1)
  local k = R(1, 3)
  if k == 1 then return s:sub(1, i - 1) .. s:sub(i + 1) end
  if k == 2 then return s:sub(1, i - 1) .. NOISE[R(1, #NOISE)] .. s:sub(i) end
  return s:sub(1, i - 1) .. NOISE[R(1, #NOISE)] .. s:sub(i + 1)
end
for i = 1, N do
  local doc = R(1, 3) == 1 and number() or value(0)
  if R(1, 4) == 1 then doc = mutate(doc) end
  add("generated #" .. i, doc)
end
add("nesting 200", string.rep("[", 200) .. string.rep("]", 200))
add("nesting 201", string.rep("[", 201) .. string.rep("]", 201))

-- Python's verdicts.
local tmp = os.getenv("LIMITRY_TEST_TMP") or "/tmp"
local input = tmp .. "/differential-input"
do
  local f = assert(io.open(input, "wb"))
  for _, d in ipairs(docs) do f:write(#d, "\n", d) end
  f:close()
end
local p = assert(io.popen("python3 tools/differential.py " .. input))
local verdicts = {}
for line in p:lines() do verdicts[#verdicts + 1] = line end
p:close()
assert(#verdicts == #docs, "python3 answered " .. #verdicts .. " of " .. #docs .. " documents")

-- The typed value the Python side wrote in postfix (see expr in tools/differential.py).
local NULL = core.null
local function hex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end
local function typed(tokens)
  local stack = {}
  for tok in tokens:gmatch("%S+") do
    local tag, arg = tok:match("^(%u):?(.*)$")
    if tag == "N" then stack[#stack + 1] = NULL
    elseif tag == "T" then stack[#stack + 1] = true
    elseif tag == "B" then stack[#stack + 1] = false
    elseif tag == "I" then stack[#stack + 1] = { int = assert(math.tointeger(tonumber(arg)), arg) }
    elseif tag == "F" then -- Python's repr always reads back as a float here (x + 0.0 would lose -0.0)
      local f = tonumber(arg)
      assert(math.type(f) == "float", arg)
      stack[#stack + 1] = { float = f }
    elseif tag == "S" then stack[#stack + 1] = hex(arg)
    elseif tag == "A" then
      local n, t = tonumber(arg), {}
      for i = 1, n do t[i] = stack[#stack - n + i] end
      for _ = 1, n do stack[#stack] = nil end
      stack[#stack + 1] = { array = t }
    elseif tag == "O" then
      local n, t = tonumber(arg), {}
      for i = 1, n do t[stack[#stack - 2 * n + 2 * i - 1]] = stack[#stack - 2 * n + 2 * i] end
      for _ = 1, 2 * n do stack[#stack] = nil end
      stack[#stack + 1] = { object = t }
    else error("bad token " .. tok) end
  end
  assert(#stack == 1, "unbalanced reference value")
  return stack[1]
end

local function show(v)
  if type(v) == "number" then return math.type(v) .. " " .. string.format("%.17g", v) end
  return tostring(v)
end

-- nil when `got` matches the reference, else why not. cjson_mode: numbers are all floats there and
-- null members are kept as cjson.null.
local function differ(got, ref, path, cjson_mode)
  if type(ref) == "table" and ref.int then
    if cjson_mode then
      if math.type(got) == "float" and got == ref.int + 0.0 then return nil end
    elseif math.type(got) == "integer" and got == ref.int then return nil end
    return path .. ": " .. show(got) .. ", expected integer " .. ref.int
  elseif type(ref) == "table" and ref.float then
    local f = ref.float
    if math.type(got) == "float" and got == f and 1 / got == 1 / f then return nil end
    return path .. ": " .. show(got) .. ", expected float " .. string.format("%.17g", f)
  elseif type(ref) == "table" and ref.array then
    if type(got) ~= "table" then return path .. ": " .. show(got) .. ", expected an array" end
    local n = 0
    for _ in pairs(got) do n = n + 1 end
    if n ~= #ref.array then return path .. ": " .. n .. " entries, expected " .. #ref.array end
    for i, x in ipairs(ref.array) do
      local why = differ(got[i], x, path .. "[" .. i .. "]", cjson_mode)
      if why then return why end
    end
    return nil
  elseif type(ref) == "table" and ref.object then
    if type(got) ~= "table" then return path .. ": " .. show(got) .. ", expected an object" end
    for k, x in pairs(got) do
      if ref.object[k] == nil and not (cjson_mode and x == cjson.null) then
        return path .. ": an extra member " .. string.format("%q", k)
      end
    end
    for k, x in pairs(ref.object) do
      local why = differ(got[k], x, path .. "." .. k, cjson_mode)
      if why then return why end
    end
    return nil
  end
  if got == ref then return nil end
  return path .. ": " .. show(got) .. ", expected " .. show(ref)
end

local failures, counts = {}, { ok = 0, err = 0, surrogate = 0, deep = 0, dupnull = 0, cjson_compared = 0, cjson_refused = 0 }
local function fail(i, why)
  failures[#failures + 1] = names[i] .. " " .. string.format("%q", docs[i]:sub(1, 120)) .. ": " .. why
end
for i, doc in ipairs(docs) do
  local verdict = verdicts[i]
  local got, msg = core.decode(doc)
  local kind, expr = verdict:match("^(%a+) ?(.*)$")
  counts[kind] = counts[kind] + 1
  if kind == "err" then
    if got ~= nil then fail(i, "accepted; Python refuses it") end
  elseif kind == "surrogate" then
    if got ~= nil or not msg:find("unpaired surrogate", 1, true) then fail(i, "lone surrogate: " .. tostring(msg)) end
  elseif kind == "dupnull" then
    if got == nil then fail(i, "refused (" .. msg .. "); Python accepts it") end
  elseif kind == "deep" then
    if got ~= nil or not msg:find("nesting too deep", 1, true) then fail(i, "past 200 levels: " .. tostring(msg)) end
  else
    local ref = typed(expr)
    if got == nil then
      fail(i, "refused (" .. msg .. "); Python accepts it")
    else
      local why = differ(got, ref, "$", false)
      if why then fail(i, "vs Python: " .. why) end
    end
    local cok, cval = pcall(cjson.decode, doc)
    if cok then
      counts.cjson_compared = counts.cjson_compared + 1
      local why = differ(cval, ref, "$", true)
      if why then fail(i, "lua-cjson vs Python (check the references): " .. why) end
    else
      counts.cjson_refused = counts.cjson_refused + 1
    end
  end
end

for k = 1, math.min(#failures, 25) do print("MISMATCH " .. failures[k]) end
print(("%d documents: %d accepted by Python (%d also compared with lua-cjson, %d refused by it), %d refused, "
  .. "%d lone surrogates, %d past the nesting limit, %d with a repeated name set to null (values not compared); %d mismatches")
  :format(#docs, counts.ok, counts.cjson_compared, counts.cjson_refused, counts.err, counts.surrogate, counts.deep,
    counts.dupnull, #failures))
os.exit(#failures == 0 and 0 or 1)
