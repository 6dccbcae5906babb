-- limitry.cli.dates: what --from and --to accept, in UTC.
--
--   2024-01-15                  that day at 00:00Z
--   2024-01                     the 1st of that month at 00:00Z
--   2024-01-15T10:30:00Z        sent as written (a time without a zone is taken as UTC: Z is added)
--   now, today, yesterday       now; today's and yesterday's 00:00Z
--   wtd, mtd, ytd               the start of this week (Monday), month or year
--   7d, 24h, 2w                 that long before now
--
-- Ranges are half-open, [from, to): `--from 2024-01-01 --to 2024-02-01` is January.
local M = {}

local floor = math.floor

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function days_in_month(y, m)
  if m == 2 then return (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) and 29 or 28 end
  return (m == 4 or m == 6 or m == 9 or m == 11) and 30 or 31
end

-- Unix seconds of a UTC date and time; nil when a field is out of range.
function M.timegm(y, mo, d, h, mi, s)
  h, mi, s = h or 0, mi or 0, s or 0
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo) or h > 23 or mi > 59 or s > 60 then return nil end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
end

-- "YYYY-MM-DDTHH:MM:SSZ" of unix seconds.
function M.iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", floor(t)) end

-- Unix seconds of an ISO 8601 date-time with an optional fraction and zone ("Z", "+02:00",
-- "+0200"; none is UTC); nil when it is not one.
function M.parse_iso(s)
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  local h, mi, sec, frac, zone = 0, 0, 0, 0, ""
  if rest ~= "" then
    local hh, mm, tail = rest:match("^[T ](%d%d):(%d%d)(.*)$")
    if not hh then return nil end
    h, mi = tonumber(hh), tonumber(mm)
    local ss, tail2 = tail:match("^:(%d%d)(.*)$")
    if ss then sec, tail = tonumber(ss), tail2 end
    local f, tail3 = tail:match("^[.,](%d+)(.*)$")
    if f then frac, tail = tonumber("0." .. f), tail3 end
    zone = tail
  end
  local t = M.timegm(tonumber(y), tonumber(mo), tonumber(d), h, mi, sec)
  if not t then return nil end
  if zone == "" or zone == "Z" or zone == "z" then return t + frac end
  local sign, zh, zm = zone:match("^([+-])(%d%d):?(%d%d)$")
  if not sign then return nil end
  local offset = tonumber(zh) * 3600 + tonumber(zm) * 60
  return t + frac - (sign == "+" and offset or -offset)
end

local UNITS = { h = 3600, d = 86400, w = 7 * 86400 }

-- Parses a --from/--to value. Returns the text to send and its unix seconds (nil when the text is
-- sent as written and cannot be read back), or nil and a message.
function M.parse(text, now)
  now = floor(now or os.time())
  local s = text:lower()
  local day = now - now % 86400
  if s == "now" then return M.iso(now), now end
  if s == "today" then return M.iso(day), day end
  if s == "yesterday" then return M.iso(day - 86400), day - 86400 end
  if s == "wtd" then
    local weekday = (floor(day / 86400) + 3) % 7 -- 1970-01-01 was a Thursday: Monday is 0
    local t = day - weekday * 86400
    return M.iso(t), t
  end
  if s == "mtd" or s == "ytd" then
    local d = os.date("!*t", now)
    local t = M.timegm(d.year, s == "mtd" and d.month or 1, 1)
    return M.iso(t), t
  end
  local n, unit = s:match("^(%d+)([hdw])$")
  if n then
    local t = now - tonumber(n) * UNITS[unit]
    if t < 0 then return nil, "'" .. text .. "' reaches back before 1970" end
    return M.iso(t), t
  end
  local y, mo = text:match("^(%d%d%d%d)%-(%d%d)$")
  if y then
    local t = M.timegm(tonumber(y), tonumber(mo), 1)
    if not t then return nil, "'" .. text .. "' is not a month (YYYY-MM)" end
    return M.iso(t), t
  end
  if text:match("^%d%d%d%d%-%d%d%-%d%d$") then
    local t = M.parse_iso(text)
    if not t then return nil, "'" .. text .. "' is not a date (YYYY-MM-DD)" end
    return M.iso(t), t
  end
  if text:match("^%d%d%d%d%-%d%d%-%d%d[T ]%d%d:%d%d") then
    local t = M.parse_iso(text)
    if not t then return nil, "'" .. text .. "' is not an ISO 8601 date-time such as 2024-01-15T10:30:00Z" end
    local sent = text:gsub(" ", "T", 1)
    if not sent:find("[Zz]$") and not sent:find("[+-]%d%d:?%d%d$") then sent = sent .. "Z" end
    return sent, t
  end
  return nil, "'" .. text .. "' is not a date: use YYYY-MM-DD, YYYY-MM, an ISO 8601 date-time, "
    .. "now, today, yesterday, wtd, mtd, ytd, or 7d, 24h, 2w (that long ago)"
end

-- The start of the interval bucket holding t (weeks start Monday 00:00Z).
function M.bucket_start(t, interval)
  if interval == "hour" then return t - t % 3600 end
  local day = t - t % 86400
  if interval == "day" then return day end
  local weekday = (floor(day / 86400) + 3) % 7
  return day - weekday * 86400
end

M.STEP = { hour = 3600, day = 86400, week = 7 * 86400 }

return M
