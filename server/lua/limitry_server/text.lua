-- Text checks on the request path, over the bytes through LuaJIT's FFI (Lua patterns with a
-- character class cost ~10 ns a byte; a 300 KB batch body was 16% of a batch's time):
--   valid_utf8   every string the server stores or echoes is UTF-8 (RFC 8259): a body holding other
--                bytes cannot be decoded by strict readers (Python's json, for one). Refused: stray
--                continuation bytes, truncated sequences, overlong forms, surrogates (U+D800..
--                U+DFFF, which cjson makes of a lone "\udc00" escape) and code points past U+10FFFF.
--   json_plain   nothing in s that cjson would escape: '"' .. s .. '"' is cjson.encode(s).
--   excerpt      an echo of client text for an error message, valid UTF-8 whatever it held.
local ffi = require "ffi"
local bit = require "bit"

local band = bit.band
local u8p = ffi.typeof("const uint8_t *")
local u64p = ffi.typeof("const uint64_t *")
local HIGH = 0x8080808080808080ULL

local M = {}

-- Whether the n bytes at p are all below 0x80, eight at a time.
local function ascii(p, n)
  local words = n - n % 8
  local w = ffi.cast(u64p, p)
  for i = 0, words / 8 - 1 do
    if band(w[i], HIGH) ~= 0 then return false end
  end
  for i = words, n - 1 do
    if p[i] >= 0x80 then return false end
  end
  return true
end

function M.valid_utf8(s)
  local n = #s
  local p = ffi.cast(u8p, s)
  if ascii(p, n) then return true end
  local i = 0
  while i < n do
    local c = p[i]
    if c < 0x80 then
      i = i + 1
    elseif c >= 0xC2 and c <= 0xDF then
      if i + 1 >= n then return false end
      local c2 = p[i + 1]
      if c2 < 0x80 or c2 > 0xBF then return false end
      i = i + 2
    elseif c >= 0xE0 and c <= 0xEF then
      if i + 2 >= n then return false end
      local c2, c3 = p[i + 1], p[i + 2]
      if c3 < 0x80 or c3 > 0xBF then return false end
      local lo, hi = 0x80, 0xBF
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
      if c2 < lo or c2 > hi then return false end
      i = i + 3
    elseif c >= 0xF0 and c <= 0xF4 then
      if i + 3 >= n then return false end
      local c2, c3, c4 = p[i + 1], p[i + 2], p[i + 3]
      if c3 < 0x80 or c3 > 0xBF or c4 < 0x80 or c4 > 0xBF then return false end
      local lo, hi = 0x80, 0xBF
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
      if c2 < lo or c2 > hi then return false end
      i = i + 4
    else
      return false
    end
  end
  return true
end

-- The bytes cjson escapes: control characters, '"', '/', '\' and DEL.
local ESCAPED = ffi.new("uint8_t[256]")
for b = 0, 31 do ESCAPED[b] = 1 end
for _, b in ipairs { 34, 47, 92, 127 } do ESCAPED[b] = 1 end

function M.json_plain(s)
  local p = ffi.cast(u8p, s)
  for i = 0, #s - 1 do
    if ESCAPED[p[i]] ~= 0 then return false end
  end
  return true
end

-- s, cut to at most n bytes on a character boundary, for an error message that echoes what a client
-- sent: valid UTF-8 whatever s holds (bytes of an invalid sequence become "?").
function M.excerpt(s, n)
  s = tostring(s)
  if not M.valid_utf8(s) then s = s:gsub("[\128-\255]", "?") end
  if #s <= n then return s end
  local cut = n
  while cut > 0 and (s:byte(cut + 1) or 0) >= 0x80 and (s:byte(cut + 1) or 0) < 0xC0 do cut = cut - 1 end
  return s:sub(1, cut)
end

return M
