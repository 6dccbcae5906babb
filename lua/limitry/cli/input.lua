-- limitry.cli.input: the input of `limitry events import`: NDJSON or CSV lines read into event
-- tables (the Lua API's field names or the wire's), and each line's idempotency key.
--
-- Safe to re-run. Every event carries an idempotency key, and Limitry stores an event once per
-- key: a line's own idempotency_key (idempotencyKey) when it has one, else one derived from the
-- line itself,
--
--   imp1-[SCOPE-]LINE-HASH      LINE: the line's number in the file (a CSV record: its first line)
--                               HASH: 64 bits (16 hex digits) of the line's text, without its
--                               line end; for CSV, of the header line and the record
--
-- so importing the same file again, or again after a kill, sends every event with the key it had
-- the first time, and none is counted twice. A line edited since gets a new key (it is a new
-- event); a line inserted moves the lines after it to new numbers, hence new keys: import the new
-- lines alone (or use an idempotency_key column) rather than a file rewritten in the middle.
-- Two different files whose lines agree at the same line numbers (a line without a timestamp
-- written twice, say) would share keys: --key-scope NAME sets them apart. The hash is the same on
-- every Lua (integer arithmetic below 2^53), so a file imported with Lua 5.4 and again with 5.1
-- or LuaJIT keeps its keys.
local limitry = require "limitry"

local M = {}

local byte, find, sub, format, concat = string.byte, string.find, string.sub, string.format, table.concat

-- The line hash: two polynomial hashes over 32-bit words modulo primes below 2^31, multipliers
-- below 2^20, so every intermediate value stays below 2^52 (exact in a double and in an integer).
local P1, P2 = 2147483629, 2147483587
local M1, M2 = 1048573, 1048571
local function hash(s, h1, h2)
  local n, i = #s, 1
  while i + 7 <= n do
    local a, b, c, d, e, f, g, h = byte(s, i, i + 7)
    local w1 = a + b * 256 + c * 65536 + d * 16777216
    local w2 = e + f * 256 + g * 65536 + h * 16777216
    h1 = (h1 * M1 + w1) % P1
    h2 = (h2 * M2 + w1) % P2
    h1 = (h1 * M1 + w2) % P1
    h2 = (h2 * M2 + w2) % P2
    i = i + 8
  end
  while i <= n do
    local a = byte(s, i)
    h1 = (h1 * M1 + a + 1) % P1
    h2 = (h2 * M2 + a + 1) % P2
    i = i + 1
  end
  return h1, h2
end
M.SEED1, M.SEED2 = 7, 11

-- The key of line `n` with text `text` (h1, h2: the seeds, the header's hash for CSV).
function M.derive_key(prefix, n, text, h1, h2)
  h1, h2 = hash(text, h1 or M.SEED1, h2 or M.SEED2)
  return format("%s%d-%08x%08x", prefix, n, h1, h2)
end
M.hash = hash

-- Field names: the Lua API's and the wire's. `id` (an event's id in `events list` output) is
-- skipped, so a listing can be imported again.
local FIELDS = {
  customer_id = "customer_id", customerId = "customer_id",
  event_type = "event_type", eventType = "event_type",
  model = "model", provider = "provider",
  input_tokens = "input_tokens", inputTokens = "input_tokens",
  output_tokens = "output_tokens", outputTokens = "output_tokens",
  total_tokens = "total_tokens", totalTokens = "total_tokens",
  latency_ms = "latency_ms", latencyMs = "latency_ms",
  cost_cents = "cost_cents", costCents = "cost_cents",
  properties = "properties",
  idempotency_key = "idempotency_key", idempotencyKey = "idempotency_key",
  timestamp = "timestamp",
  id = false,
}
M.FIELDS = FIELDS
local FIELD_LIST = "customer_id, event_type, model, provider, input_tokens, output_tokens, total_tokens, latency_ms, "
  .. "cost_cents, properties, idempotency_key, timestamp (or their camelCase names)"
local NUMERIC = { input_tokens = true, output_tokens = true, total_tokens = true, latency_ms = true, cost_cents = true }

local decode, null = limitry.decode, limitry.null

-- An NDJSON line's event table, or nil and why.
local function ndjson_event(line)
  local doc, err = decode(line)
  if doc == nil then return nil, "not JSON: " .. tostring(err) end
  if type(doc) ~= "table" or doc[1] ~= nil then return nil, "not a JSON object" end
  local ev = {}
  for k, v in pairs(doc) do
    local name = FIELDS[k]
    if name == nil then return nil, "unknown field '" .. tostring(k) .. "' (fields: " .. FIELD_LIST .. ")" end
    if name and v ~= null then
      if ev[name] ~= nil then return nil, "field " .. name .. " given twice" end
      ev[name] = v
    end
  end
  return ev
end

-- CSV ---------------------------------------------------------------------------------------

-- The fields of one CSV record (RFC 4180: "" inside quotes is a quote); nil, why when a quote is
-- not closed or stray text follows one.
local function csv_fields(s)
  local out = {}
  if not find(s, '"', 1, true) then
    local i, n = 1, 0
    while true do
      local comma = find(s, ",", i, true)
      n = n + 1
      if not comma then
        out[n] = sub(s, i)
        return out
      end
      out[n] = sub(s, i, comma - 1)
      i = comma + 1
    end
  end
  local i, n, len = 1, 0, #s
  while true do
    n = n + 1
    if sub(s, i, i) == '"' then
      local parts, j = {}, i + 1
      while true do
        local q = find(s, '"', j, true)
        if not q then return nil, "a quoted field is not closed" end
        parts[#parts + 1] = sub(s, j, q - 1)
        if sub(s, q + 1, q + 1) == '"' then
          parts[#parts + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      out[n] = concat(parts)
      if i > len then return out end
      if sub(s, i, i) ~= "," then return nil, "text after a closing quote (field " .. n .. ")" end
      i = i + 1
    else
      local comma = find(s, ",", i, true)
      local field = sub(s, i, (comma or len + 1) - 1)
      if find(field, '"', 1, true) then return nil, "a quote inside an unquoted field (field " .. n .. ")" end
      out[n] = field
      if not comma then return out end
      i = comma + 1
    end
  end
end
M.csv_fields = csv_fields

-- Reads a CSV header: the columns' handlers, or nil and why.
local function csv_columns(header)
  local names, err = csv_fields(header)
  if not names then return nil, err end
  local cols, seen = {}, {}
  for i, raw in ipairs(names) do
    local name = raw:match("^%s*(.-)%s*$")
    local prop = name:match("^properties%.(.+)$") or name:match("^property%.(.+)$")
    local field = FIELDS[name]
    if prop then
      cols[i] = { property = prop }
    elseif field == false then
      cols[i] = { skip = true }
    elseif field then
      cols[i] = { field = field }
    else
      return nil, "unknown column '" .. name .. "' (columns: " .. FIELD_LIST
        .. ", properties.NAME for a property)"
    end
    local id = prop and ("properties." .. prop) or field or name
    if seen[id] then return nil, "column " .. id .. " given twice" end
    seen[id] = true
  end
  if not (seen.customer_id and seen.event_type) then
    return nil, "the header needs customer_id and event_type columns (got: " .. header .. ")"
  end
  return cols
end

local function csv_event(cols, record)
  local cells, err = csv_fields(record)
  if not cells then return nil, err end
  if #cells ~= #cols then return nil, "has " .. #cells .. " fields, the header " .. #cols end
  local ev = {}
  for i, col in ipairs(cols) do
    local v = cells[i]
    if v ~= "" and not col.skip then
      if col.property then
        ev.properties = ev.properties or {}
        ev.properties[col.property] = v
      elseif col.field == "properties" then
        local p = decode(v)
        if type(p) ~= "table" then return nil, "properties must hold a JSON object (got " .. v .. ")" end
        ev.properties = ev.properties or {}
        for k, x in pairs(p) do
          if ev.properties[k] ~= nil then return nil, "property " .. tostring(k) .. " given twice" end
          ev.properties[k] = x
        end
      elseif NUMERIC[col.field] then
        local x = v:find("^%s*[%d.eE+-]+%s*$") and tonumber(v)
        if not x then return nil, col.field .. " must be a number (got '" .. v .. "')" end
        ev[col.field] = x
      elseif col.field == "timestamp" and v:find("^%d+%.?%d*$") then
        ev.timestamp = tonumber(v)
      else
        ev[col.field] = v
      end
    end
  end
  return ev
end

-- Whether a CSV record is complete (its quotes balanced); records may span lines.
local function balanced(s)
  local _, quotes = s:gsub('"', "")
  return quotes % 2 == 0
end

-- Source reading: returns a function giving (record text, first line number) or nil at the end.
local function records(f, csv, first_line)
  local n = 0
  local lines = f:lines()
  if first_line then
    local read = lines
    lines = function()
      local l = first_line
      if l then
        first_line = nil
        return l
      end
      return read()
    end
  end
  local first = true
  return function()
    local line = lines()
    if line == nil then return nil end
    n = n + 1
    if first then
      first = false
      if sub(line, 1, 3) == "\239\187\191" then line = sub(line, 4) end -- a UTF-8 byte order mark
    end
    if byte(line, -1) == 13 then line = sub(line, 1, -2) end
    if csv and find(line, '"', 1, true) and not balanced(line) then
      local start, parts = n, { line }
      while true do
        local more = lines()
        if more == nil then return concat(parts, "\n"), start end
        n = n + 1
        if byte(more, -1) == 13 then more = sub(more, 1, -2) end
        parts[#parts + 1] = more
        if not balanced(more) then return concat(parts, "\n"), start end
      end
    end
    return line, n
  end
end
M.records = records
M.ndjson_event, M.csv_columns, M.csv_event = ndjson_event, csv_columns, csv_event

return M
