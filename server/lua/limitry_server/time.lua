-- UTC date arithmetic without os.time, which depends on the host's time zone.
local floor = math.floor

local M = {}

local function days_from_civil(y, m, d)
  y = (m <= 2) and (y - 1) or y
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_in_month(y, m)
  if m == 2 then
    local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
    return leap and 29 or 28
  end
  return (m == 4 or m == 6 or m == 9 or m == 11) and 30 or 31
end

-- Parses "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM[:SS[.f]][Z|+HH:MM|-HH:MM]" (a missing zone means UTC;
-- offsets up to 23:59 as RFC 3339 allows, at most 9 fraction digits).
-- Returns unix seconds (fraction kept), the whole UTC seconds and the fraction's digits ("" for
-- none), or nil. The fraction is added last, so the same instant written with another offset
-- gives the very same double (a restart re-reads the UTC form the store wrote).
function M.parse(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo) then return nil end
  local h, mi, sec, offset, digits = 0, 0, 0, 0, ""
  if rest ~= "" then
    local hh, mm, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
    if not hh then return nil end
    h, mi = tonumber(hh), tonumber(mm)
    local ss, tail2 = tail:match("^:(%d%d)(.*)$")
    if ss then
      sec = tonumber(ss)
      tail = tail2
      local frac, tail3 = tail:match("^[.,](%d+)(.*)$")
      if frac then
        if #frac > 9 then return nil end
        digits = frac
        tail = tail3
      end
    end
    if tail == "Z" or tail == "z" or tail == "" then
      offset = 0
    else
      local sign, oh, om = tail:match("^([+-])(%d%d):?(%d%d)$")
      if not sign then return nil end
      oh, om = tonumber(oh), tonumber(om)
      if oh > 23 or om > 59 then return nil end
      offset = (oh * 60 + om) * 60
      if sign == "-" then offset = -offset end
    end
    if h > 23 or mi > 59 or sec > 60 then return nil end
  end
  local secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
  if digits == "" then return secs, secs, digits end
  return secs + tonumber("0." .. digits), secs, digits
end

-- The usual form alone, "YYYY-MM-DDTHH:MM:SS[.f]Z" (1 to 9 fraction digits, seconds 00-59): the
-- unix seconds, as parse gives them, read byte by byte (parse's patterns make a string of each
-- part, for every event of a batch); nil for anything else (parse then decides). For such a text
-- format(secs, digits) is the text itself.
local byte = string.byte
local POW10 = { 10, 100, 1000, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9 }
local function digit(b) return b >= 48 and b <= 57 end
function M.parse_utc(s)
  local n = #s
  if n < 20 or n > 30 or n == 21 then return nil end
  local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10 = byte(s, 1, 10)
  local b11, b12, b13, b14, b15, b16, b17, b18, b19, b20 = byte(s, 11, 20)
  if b5 ~= 45 or b8 ~= 45 or b11 ~= 84 or b14 ~= 58 or b17 ~= 58 or byte(s, n) ~= 90 then return nil end
  if not (digit(b1) and digit(b2) and digit(b3) and digit(b4) and digit(b6) and digit(b7) and digit(b9)
    and digit(b10) and digit(b12) and digit(b13) and digit(b15) and digit(b16) and digit(b18) and digit(b19)) then
    return nil
  end
  local y, mo, d = (b1 - 48) * 1000 + (b2 - 48) * 100 + (b3 - 48) * 10 + b4 - 48, (b6 - 48) * 10 + b7 - 48,
    (b9 - 48) * 10 + b10 - 48
  local h, mi, sec = (b12 - 48) * 10 + b13 - 48, (b15 - 48) * 10 + b16 - 48, (b18 - 48) * 10 + b19 - 48
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo) or h > 23 or mi > 59 or sec > 59 then return nil end
  local secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
  if n == 20 then return secs, secs end
  -- "." then 1 to 9 digits: their value over 10^k is the double nearest the decimal fraction, as
  -- tonumber("0." .. digits) is (both rounded once, correctly, from exact integers).
  if b20 ~= 46 then return nil end
  local f = 0
  for i = 21, n - 1 do
    local x = byte(s, i) - 48
    if x < 0 or x > 9 then return nil end
    f = f * 10 + x
  end
  return secs + f / POW10[n - 21], secs
end

-- ISO 8601 in UTC for whole unix seconds t, with the fraction's digits when given.
function M.format(t, digits)
  t = floor(t)
  local days = floor(t / 86400)
  local secs = t - days * 86400
  local y, m, d = civil_from_days(days)
  return string.format("%04d-%02d-%02dT%02d:%02d:%02d%sZ", y, m, d,
    floor(secs / 3600), floor(secs % 3600 / 60), secs % 60, (digits and digits ~= "") and ("." .. digits) or "")
end

local MONDAY_1970 = 4 * 86400 -- 1970-01-01 was a Thursday
local BUCKET = { hour = 3600, day = 86400, week = 7 * 86400 }

-- Start of the UTC bucket holding t; weeks start Monday 00:00Z.
function M.bucket(t, interval)
  local size = BUCKET[interval]
  if interval == "week" then
    return floor((t - MONDAY_1970) / size) * size + MONDAY_1970
  end
  return floor(t / size) * size
end

-- The UTC period holding t, as [start, end): hour, day, week (from Monday 00:00Z), month (from
-- the 1st), or a rate-limit window (second, minute, hour).
function M.period(t, period)
  if period == "second" then
    local s = floor(t)
    return s, s + 1
  elseif period == "minute" then
    local s = floor(t / 60) * 60
    return s, s + 60
  elseif period == "month" then
    local y, m = civil_from_days(floor(t / 86400))
    local start = days_from_civil(y, m, 1) * 86400
    if m == 12 then y, m = y + 1, 1 else m = m + 1 end
    return start, days_from_civil(y, m, 1) * 86400
  end
  local start = M.bucket(t, period)
  return start, start + BUCKET[period]
end

M.days_from_civil = days_from_civil
return M
