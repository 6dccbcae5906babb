-- UTC periods and windows as Limitry counts them: quota periods hour, day, week (from Monday
-- 00:00Z) and month (from the 1st); rate-limit windows second, minute and hour. Pure arithmetic on
-- unix seconds, whatever the host's time zone.
local M = {}

local floor = math.floor
local FIXED = { second = 1, minute = 60, hour = 3600, day = 86400, week = 604800 }
M.WINDOW_SECONDS = { second = 1, minute = 60, hour = 3600 }
local MONDAY = 4 * 86400 -- 1970-01-05, the first Monday after the epoch

-- Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function month_of(t)
  local d = os.date("!*t", floor(t))
  return d.year, d.month
end

-- The start of the period (or window) `name` holding unix time t, and the start of the next one.
function M.bounds(name, t)
  local size = FIXED[name]
  if name == "week" then
    local start = floor((t - MONDAY) / size) * size + MONDAY
    return start, start + size
  elseif size then
    local start = floor(t / size) * size
    return start, start + size
  elseif name == "month" then
    local y, m = month_of(t)
    local start = days_from_civil(y, m, 1) * 86400
    if m == 12 then y, m = y + 1, 1 else m = m + 1 end
    return start, days_from_civil(y, m, 1) * 86400
  end
  return nil
end

return M
