-- A compact, exact, binary-safe text form for the flat tables a recorder queues (an event, with
-- one nested map for `properties`): what goes into nginx's shared dict and into a spool file.
-- cjson would do, but Debian's lua-cjson 2.1.0 writes at most 14 digits (2^53 - 1 becomes
-- 9.007199254741e+15) and its settings are the host's; this keeps every number exact and every
-- string's bytes (NULs and newlines included).
--
--   pack(t)    -> string     t: string keys; string, number, boolean or (one level of) table values
--   unpack(s)  -> t | nil, why
local M = {}

local format, sub, find, byte = string.format, string.sub, string.find, string.byte
local tonumber, type, pairs, concat = tonumber, type, pairs, table.concat
local math_type = math.type -- nil on 5.1/LuaJIT: every number is a double there

local function put(out, n, v)
  local t = type(v)
  if t == "string" then
    out[n + 1], out[n + 2] = "s" .. #v .. ":", v
    return n + 2
  elseif t == "number" then
    if math_type and math_type(v) == "integer" then
      out[n + 1] = format("i%d;", v)
    elseif v == v and v ~= 1 / 0 and v ~= -1 / 0 then
      out[n + 1] = format("n%.17g;", v)
    else
      error("limitry.recorder: cannot queue the number " .. tostring(v), 0)
    end
    return n + 1
  elseif t == "boolean" then
    out[n + 1] = v and "T" or "F"
    return n + 1
  end
  error("limitry.recorder: cannot queue a " .. t, 0)
end

local function pack_table(out, n, t, nested)
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  out[n + 1] = "t" .. count .. ":"
  n = n + 1
  for k, v in pairs(t) do
    if type(k) ~= "string" then error("limitry.recorder: table keys must be strings", 0) end
    out[n + 1], out[n + 2] = #k .. ":", k
    n = n + 2
    if type(v) == "table" then
      if nested then error("limitry.recorder: tables nest one level at most", 0) end
      n = pack_table(out, n, v, true)
    else
      n = put(out, n, v)
    end
  end
  return n
end

function M.pack(t)
  local out = {}
  pack_table(out, 0, t, false)
  return concat(out)
end

local S, I, N, T, F, TT = byte("s"), byte("i"), byte("n"), byte("T"), byte("F"), byte("t")

-- Reads a value at position i of s; returns value, next position (or nil on malformed input).
local read_table

local function read_value(s, i, depth)
  local c = byte(s, i)
  if c == S then
    local colon = find(s, ":", i + 1, true)
    local len = colon and tonumber(sub(s, i + 1, colon - 1))
    if not len or colon + len > #s then return nil end
    return sub(s, colon + 1, colon + len), colon + len + 1
  elseif c == I or c == N then
    local semi = find(s, ";", i + 1, true)
    local v = semi and tonumber(sub(s, i + 1, semi - 1))
    if not v then return nil end
    if math_type then v = c == I and math.tointeger(v) or v + 0.0 end
    if v == nil then return nil end
    return v, semi + 1
  elseif c == T then
    return true, i + 1
  elseif c == F then
    return false, i + 1
  elseif c == TT and depth < 2 then
    return read_table(s, i, depth + 1)
  end
  return nil
end

function read_table(s, i, depth)
  local colon = find(s, ":", i + 1, true)
  local count = colon and tonumber(sub(s, i + 1, colon - 1))
  if not count then return nil end
  local t = {}
  i = colon + 1
  for _ = 1, count do
    local kc = find(s, ":", i, true)
    local klen = kc and tonumber(sub(s, i, kc - 1))
    if not klen then return nil end
    local key = sub(s, kc + 1, kc + klen)
    local v
    v, i = read_value(s, kc + klen + 1, depth)
    if i == nil then return nil end
    t[key] = v
  end
  return t, i
end

function M.unpack(s)
  if type(s) ~= "string" or byte(s, 1) ~= TT then return nil, "not a packed table" end
  local t, i = read_table(s, 1, 1)
  if not t or i ~= #s + 1 then return nil, "a damaged record" end
  return t
end

return M
