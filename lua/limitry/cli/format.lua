-- limitry.cli.format: how the command line writes its answers. JSON (compact, or indented on a
-- terminal), CSV (RFC 4180 quoting, LF line ends), aligned tables, and the numbers in them.
--
-- Numbers are written exactly: integers as integers, any other number as the shortest text that
-- reads back to the same double, so JSON and CSV output carry the very figures the API returned.
-- Tables are for people: thousands separators, costs (Limitry counts cents) in dollars.
local limitry = require "limitry"

local M = {}

local format, floor, concat, rep = string.format, math.floor, table.concat, string.rep
local math_type = math.type -- nil on 5.1 and LuaJIT: every number is a double there

-- The exact text of a number (JSON and CSV).
function M.number(v)
  if math_type then
    if math_type(v) == "integer" then return format("%d", v) end
  elseif v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
    return format("%d", v)
  end
  if v ~= v or v == math.huge or v == -math.huge then return "null" end -- never in an answer; JSON has no NaN
  for digits = 14, 17 do
    local s = format("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
  return format("%.17g", v)
end

-- JSON ----------------------------------------------------------------------------------------

-- Fields that hold arrays in Limitry's answers: an empty one is written [] (a decoded [] and {}
-- are the same empty Lua table).
local ARRAYS = { data = true, quotas = true, rateLimits = true, results = true }

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\b"] = "\\b", ["\f"] = "\\f" }
local function escape(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ESCAPES[c] or format("\\u%04x", c:byte()) end) .. '"'
end
M.json_string = escape

local function is_array(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for k in pairs(t) do
    if type(k) ~= "number" then return false end
    count = count + 1
  end
  return count == n
end

local function encode(v, out, indent, depth, array_hint)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = escape(v)
  elseif t == "number" then
    out[#out + 1] = M.number(v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif v == nil or v == limitry.null then
    out[#out + 1] = "null"
  elseif t == "table" then
    local nl = indent and ("\n" .. rep(indent, depth + 1)) or ""
    local close = indent and ("\n" .. rep(indent, depth)) or ""
    if is_array(v) or (next(v) == nil and array_hint) then
      if next(v) == nil then
        out[#out + 1] = "[]"
        return
      end
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = nl
        encode(v[i], out, indent, depth + 1)
      end
      out[#out + 1] = close .. "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      if keys[1] == nil then
        out[#out + 1] = "{}"
        return
      end
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = nl .. escape(k) .. (indent and ": " or ":")
        local value = v[k]
        if value == nil then value = v[tonumber(k)] end
        encode(value, out, indent, depth + 1, ARRAYS[k])
      end
      out[#out + 1] = close .. "}"
    end
  else
    out[#out + 1] = "null"
  end
end

-- The JSON text of v (keys sorted); `pretty`: indented by two spaces.
function M.json(v, pretty, array_hint)
  local out = {}
  encode(v, out, pretty and "  " or nil, 0, array_hint)
  return concat(out)
end

-- CSV -----------------------------------------------------------------------------------------

local function csv_cell(v)
  if v == nil or v == limitry.null then return "" end
  if type(v) == "number" then return M.number(v) end
  if type(v) == "table" then v = M.json(v) end
  v = tostring(v)
  if v:find('[,"\r\n]') or v:find("^%s") or v:find("%s$") then return '"' .. v:gsub('"', '""') .. '"' end
  return v
end

-- One CSV line (without its newline) from a list of n values.
function M.csv_row(values, n)
  local cells = {}
  for i = 1, n or #values do cells[i] = csv_cell(values[i]) end
  return concat(cells, ",")
end

-- Tables for people ---------------------------------------------------------------------------

-- 1234567 -> "1,234,567" (a whole number; others keep their fraction).
function M.thousands(n)
  if type(n) ~= "number" then return tostring(n or "") end
  local negative = n < 0
  if negative then n = -n end
  local whole = floor(n)
  local frac = n - whole
  local s = format("%d", whole):reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  if frac > 0 then s = s .. M.number(frac):sub(2) end
  return (negative and "-" or "") .. s
end

-- Cents as dollars: "$1,234.57"; under a cent's hundredth of a dollar, four decimals ("$0.0042").
function M.dollars(cents)
  if type(cents) ~= "number" then return "" end
  local d = cents / 100
  local negative = d < 0
  if negative then d = -d end
  local s
  if d > 0 and d < 0.01 then
    s = format("%.4f", d)
  else
    s = format("%.2f", d)
  end
  local whole, frac = s:match("^(%d+)(%..*)$")
  return (negative and "-$" or "$") .. M.thousands(tonumber(whole)) .. frac
end

-- Display width of UTF-8 text (code points; no wide characters in what we print).
local function width(s)
  local n = #s
  for _ in s:gmatch("[\128-\191]") do n = n - 1 end
  return n
end
M.width = width

-- Lines of an aligned table. columns: { { title, align = "right" }, ... }; rows: lists of text.
-- `widths` (optional): the columns' least widths, widened in place to what the rows need (a table
-- printed page by page keeps its first page's alignment).
function M.table(columns, rows, widths)
  widths = widths or {}
  for i, c in ipairs(columns) do widths[i] = math.max(widths[i] or 0, width(c.title)) end
  for _, row in ipairs(rows) do
    for i = 1, #columns do widths[i] = math.max(widths[i], width(row[i] or "")) end
  end
  local function line(cells)
    local parts = {}
    for i, c in ipairs(columns) do
      local text = cells[i] or ""
      local pad = rep(" ", widths[i] - width(text))
      parts[i] = c.align == "right" and pad .. text or text .. pad
    end
    return (concat(parts, "  "):gsub("%s+$", ""))
  end
  local titles = {}
  for i, c in ipairs(columns) do titles[i] = c.title end
  local out = { line(titles) }
  local rule = {}
  for i = 1, #columns do rule[i] = rep("-", widths[i]) end
  out[2] = concat(rule, "  ")
  for _, row in ipairs(rows) do out[#out + 1] = line(row) end
  return out
end

-- Lines of a two-column "name  value" listing (one object).
function M.pairs_table(list)
  local w = 0
  for _, p in ipairs(list) do w = math.max(w, width(p[1])) end
  local out = {}
  for _, p in ipairs(list) do out[#out + 1] = p[1] .. rep(" ", w - width(p[1]) + 2) .. (p[2] or "") end
  return out
end

-- A value as a table cell: numbers with separators, tables as compact JSON ({} as "-").
function M.cell(v)
  if v == nil or v == limitry.null then return "" end
  if type(v) == "number" then return M.thousands(v) end
  if type(v) == "table" then
    if next(v) == nil then return "-" end
    local parts = {}
    if is_array(v) then return M.json(v) end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(v[k]) end
    return concat(parts, ",")
  end
  return tostring(v)
end

return M
