-- UTF-8 validation for every string the server stores or echoes: JSON is UTF-8 (RFC 8259), and a
-- body holding other bytes cannot be decoded by strict readers (Python's json, for one). Refused:
-- stray continuation bytes, truncated sequences, overlong forms, surrogates (U+D800..U+DFFF, which
-- cjson makes of a lone "\udc00" escape) and code points past U+10FFFF.
local byte, find = string.byte, string.find

local M = {}

function M.valid_utf8(s)
  if not find(s, "[\128-\255]") then return true end -- ASCII: the usual case, one scan in C
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    if c < 0x80 then
      i = i + 1
    elseif c >= 0xC2 and c <= 0xDF then
      local c2 = byte(s, i + 1)
      if not c2 or c2 < 0x80 or c2 > 0xBF then return false end
      i = i + 2
    elseif c >= 0xE0 and c <= 0xEF then
      local c2, c3 = byte(s, i + 1, i + 2)
      if not c3 or c3 < 0x80 or c3 > 0xBF then return false end
      local lo, hi = 0x80, 0xBF
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
      if c2 < lo or c2 > hi then return false end
      i = i + 3
    elseif c >= 0xF0 and c <= 0xF4 then
      local c2, c3, c4 = byte(s, i + 1, i + 3)
      if not c4 or c3 < 0x80 or c3 > 0xBF or c4 < 0x80 or c4 > 0xBF then return false end
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

-- s, cut to at most n bytes on a character boundary, for an error message that echoes what a client
-- sent: valid UTF-8 whatever s holds (bytes of an invalid sequence become "?").
function M.excerpt(s, n)
  s = tostring(s)
  if not M.valid_utf8(s) then s = s:gsub("[\128-\255]", "?") end
  if #s <= n then return s end
  local cut = n
  while cut > 0 and (byte(s, cut + 1) or 0) >= 0x80 and (byte(s, cut + 1) or 0) < 0xC0 do cut = cut - 1 end
  return s:sub(1, cut)
end

return M
