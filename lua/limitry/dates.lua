-- Dates as the local server reads them (server/lua/limitry_server/time.lua), checked in the client
-- so that a month 13 or the 30th of February raises naming the Lua argument instead of coming back
-- as the server's 400 about `startDate`:
--   dates.parse(text)                                   -> unix seconds, or nil and why not
--   dates.check(where, name, v, keep_fraction, max)     -> the text to send, the instant
--   dates.check_range(where, start, end, keep_fraction, max) -> the two texts to send
local has_control = require("limitry.core").has_control

local M = {}

local function raise(where, msg) error(where .. ": " .. msg, 0) end

local MAX_UNIX_TIME = 253402300799 -- 9999-12-31T23:59:59Z, the last time ISO 8601 writes in 4 digits

local MONTHS = { "January", "February", "March", "April", "May", "June", "July", "August", "September",
  "October", "November", "December" }
local function days_in_month(y, m)
  if m == 2 then return ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) and 29 or 28 end
  return (m == 4 or m == 6 or m == 9 or m == 11) and 30 or 31
end
-- Days from 1970-01-01 to y-m-d (proleptic Gregorian, any year 0000-9999).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- A piece of the caller's text for a message: at most 20 bytes of it.
local function piece(s) return #s > 20 and s:sub(1, 20) .. "..." or s end

-- Reads an ISO 8601 date-time as the local server does (server/lua/limitry_server/time.lua):
-- "YYYY-MM-DD", optionally followed by "T" (or "t", or a space) and HH:MM[:SS[.fraction]] and a
-- zone (Z, +HH:MM, -HH:MM or +HHMM; none means UTC), at most 9 fraction digits, offsets up to
-- 23:59. Returns the instant in unix seconds, or nil and why not, in words that name the field
-- (month 13, day 30 of February 2024, hour 25, an offset of +25:00...).

local function parse_date(v)
  local y, mo, d, rest = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil, "is not an ISO 8601 date-time" end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 then return nil, "has month " .. mo .. " (months run 01 to 12)" end
  local last = days_in_month(y, mo)
  if d < 1 or d > last then
    return nil, "has day " .. d .. " (" .. MONTHS[mo] .. " " .. string.format("%04d", y) .. " has days 01 to " .. last .. ")"
  end
  local secs = days_from_civil(y, mo, d) * 86400
  if rest == "" then return secs end
  local h, mi, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
  if not h then
    return nil, "has '" .. piece(rest) .. "' after the date (expected 'T' and a time, HH:MM[:SS[.fraction]], then a zone)"
  end
  h, mi = tonumber(h), tonumber(mi)
  if h > 23 then return nil, "has hour " .. h .. " (hours run 00 to 23)" end
  if mi > 59 then return nil, "has minute " .. mi .. " (minutes run 00 to 59)" end
  local s, fraction = 0, 0
  local ss, after = tail:match("^:(%d%d)(.*)$")
  if ss then
    s, tail = tonumber(ss), after
    if s > 60 then return nil, "has second " .. s .. " (seconds run 00 to 60, 60 for a leap second)" end
    local digits, after_fraction = tail:match("^[.,](%d+)(.*)$")
    if digits then
      if #digits > 9 then return nil, "has a fraction of " .. #digits .. " digits (at most 9)" end
      fraction, tail = tonumber("0." .. digits), after_fraction
    end
  end
  local offset = 0
  if tail ~= "" and tail ~= "Z" and tail ~= "z" then
    local sign, oh, om = tail:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then
      return nil, "has time zone '" .. piece(tail) .. "' (expected Z, +HH:MM or -HH:MM, or none for UTC)"
    end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then
      return nil, "has time zone " .. tail .. " (an offset runs from -23:59 to +23:59)"
    end
    offset = (oh * 60 + om) * 60
    if sign == "-" then offset = -offset end
  end
  return secs + h * 3600 + mi * 60 + s - offset + fraction
end
M.parse = parse_date

-- Dates already read: text -> unix seconds. A loop that asks for the same range again pays a table
-- lookup, not the parse. Bounded: emptied when it reaches 256 entries.
local parsed, parsed_n = {}, 0

-- What an error shows of a value the caller gave: quoted, and cut when long.
local function shown(v)
  if #v > 64 then return "'" .. v:sub(1, 40) .. "...' (" .. #v .. " bytes)" end
  return "'" .. v .. "'"
end

-- An ISO 8601 string (sent unchanged) or unix seconds (sent as YYYY-MM-DDTHH:MM:SSZ, with
-- milliseconds when `keep_fraction` and the milliseconds are not 0). Seconds are cut, never
-- rounded, to the millisecond (or the second), so a time never moves into the next second, day
-- or month: 1704067199.9996 is 2023-12-31T23:59:59.999Z. Seconds and fraction come from one
-- decimal text rounded to the microsecond, so a value written with 3 decimals keeps them although
-- its double is a hair below (1704067200.001 is 1704067200.000999927...).
-- A string is checked here as the server would check it (parse_date), so a month 13 or the 30th of
-- February raises naming the argument instead of coming back as the server's 400 about `startDate`.
-- `max`: the longest string allowed.
-- Returns the text to send and the instant in unix seconds.
local function check_date(where, name, v, keep_fraction, max)
  if type(v) == "number" then
    if not (v >= 0 and v <= MAX_UNIX_TIME) then
      raise(where, name .. " must be a finite, non-negative unix time in seconds, at most " .. MAX_UNIX_TIME .. " (9999-12-31)")
    end
    local whole, ms = string.format("%.6f", v):match("^(%d+)%.(%d%d%d)")
    local keep = keep_fraction and ms ~= "000"
    -- The instant returned is the one sent: cut as the text is.
    return os.date("!%Y-%m-%dT%H:%M:%S", tonumber(whole)) .. (keep and "." .. ms or "") .. "Z",
      tonumber(whole) + (keep and tonumber(ms) / 1000 or 0)
  end
  if type(v) ~= "string" then
    raise(where, name .. " is required: an ISO 8601 string such as '2024-01-01T00:00:00Z' or unix seconds (got " .. type(v) .. ")")
  end
  if #v > max then raise(where, name .. " must be at most " .. max .. " bytes (got " .. #v .. ")") end
  local t = parsed[v]
  if t then return v, t end
  if has_control(v) then raise(where, name .. " must be an ISO 8601 date-time without control characters") end
  local why
  t, why = parse_date(v)
  if not t then
    if why == "is not an ISO 8601 date-time" then
      raise(where, name .. " must be an ISO 8601 date-time such as '2024-01-01T00:00:00Z' or '2024-01-01' (got " .. shown(v) .. ")")
    end
    raise(where, name .. " " .. shown(v) .. " " .. why)
  end
  if parsed_n >= 256 then parsed, parsed_n = {}, 0 end
  parsed[v], parsed_n = t, parsed_n + 1
  return v, t
end
M.check = check_date

-- Both ends of a range, checked, and the range itself: the end must come after the start (the
-- contract's ranges are half-open, [start, end), and the server answers 400 otherwise).
-- Returns the two texts to send.
function M.check_range(where, start_date, end_date, keep_fraction, max)
  local a, ta = check_date(where, "start_date", start_date, keep_fraction, max)
  local b, tb = check_date(where, "end_date", end_date, keep_fraction, max)
  if tb <= ta then
    local function as_given(v, text) return type(v) == "string" and shown(v) or tostring(v) .. " (" .. text .. ")" end
    raise(where, "end_date must be after start_date (got start_date " .. as_given(start_date, a) .. ", end_date "
      .. as_given(end_date, b) .. ")")
  end
  return a, b
end

return M
