-- The event store: columns in memory for fast scans, an append-only JSON-lines file on disk.
-- Every accepted batch is written with one write(2) on an O_APPEND descriptor and fsync'd before
-- the request is answered, so a crash loses at most the batch being answered, never stored data.
-- A torn last line (a crash mid-write) is skipped on load and fenced off with a newline.
local cjson = require "cjson.safe"
local ffi = require "ffi"
local time = require "limitry_server.time"
local text = require "limitry_server.text"
local valid_utf8, excerpt = text.valid_utf8, text.excerpt

ffi.cdef [[
int open(const char *path, int flags, int mode);
long write(int fd, const void *buf, size_t n);
int fsync(int fd);
int close(int fd);
]]
local O_WRONLY, O_CREAT, O_APPEND = 1, 64, 1024

local M = {}

local cols = {
  ts = {}, customerId = {}, eventType = {}, model = {}, provider = {},
  inputTokens = {}, outputTokens = {}, totalTokens = {}, costCents = {},
}
M.cols = cols
M.count = 0
-- The stored events themselves, by ingestion sequence (1 = first stored): listing and the
-- dimension matching of quotas and rate limits need every field, the columns only the summed ones.
M.events = {}
local seen_keys = {} -- idempotencyKey -> sequence number of the event stored with it
local fd = -1
local last_id = 0    -- the largest n of an "evt_<n>" id stored so far

local function add_to_columns(ev, ts)
  local n = M.count + 1
  M.count = n
  M.events[n] = ev
  cols.ts[n] = ts
  cols.customerId[n] = ev.customerId or false
  cols.eventType[n] = ev.eventType or false
  cols.model[n] = ev.model or false
  cols.provider[n] = ev.provider or false
  cols.inputTokens[n] = ev.inputTokens
  cols.outputTokens[n] = ev.outputTokens
  cols.totalTokens[n] = ev.totalTokens
  cols.costCents[n] = ev.costCents
  if ev.idempotencyKey then seen_keys[ev.idempotencyKey] = n end
end

-- Limits on one event (the contract gives none): each bounds what one event can cost in memory,
-- on disk and in every later scan, and keeps every sum a finite JSON number.
M.MAX_STRING = 256          -- customerId, eventType, model, provider, idempotencyKey
M.MAX_COUNT = 2 ^ 53 - 1    -- tokens and latencyMs: integers a double (and LuaJIT) holds exactly
M.MAX_COST = 1e12           -- cents per event: ten billion dollars
M.MAX_PROPERTIES = 64
M.MAX_PROPERTY_NAME = 128
M.MAX_PROPERTY_STRING = 1024
M.MAX_TIMESTAMP = 64

local STRING_FIELDS = { "customerId", "eventType", "model", "provider", "idempotencyKey" }
local COUNT_FIELDS = { "inputTokens", "outputTokens", "totalTokens", "latencyMs" }
local KNOWN = { costCents = true, properties = true, timestamp = true }
for _, n in ipairs(STRING_FIELDS) do KNOWN[n] = true end
for _, n in ipairs(COUNT_FIELDS) do KNOWN[n] = true end

local huge = math.huge
local function is_finite(v) return v == v and v ~= huge and v ~= -huge end
local function is_count(v) return type(v) == "number" and v >= 0 and v <= M.MAX_COUNT and v == math.floor(v) end

local function check_properties(p)
  if type(p) ~= "table" then return nil, "properties must be an object" end
  local n = 0
  for k, v in pairs(p) do
    -- cjson decodes a JSON array to a table with number keys; object keys are always strings.
    if type(k) ~= "string" then return nil, "properties must be an object" end
    n = n + 1
    if n > M.MAX_PROPERTIES then return nil, "properties may hold at most " .. M.MAX_PROPERTIES .. " properties" end
    if k == "" or #k > M.MAX_PROPERTY_NAME then
      return nil, "properties: names must be 1 to " .. M.MAX_PROPERTY_NAME .. " characters"
    end
    if not valid_utf8(k) then return nil, "properties: names must be valid UTF-8" end
    local tv = type(v)
    if tv == "string" then
      if #v > M.MAX_PROPERTY_STRING then
        return nil, "properties." .. k .. " must be at most " .. M.MAX_PROPERTY_STRING .. " bytes"
      end
      if not valid_utf8(v) then return nil, "properties." .. k .. " must be valid UTF-8" end
    elseif tv == "number" then
      if not is_finite(v) or v > 1e300 or v < -1e300 then
        return nil, "properties." .. k .. " must be a finite number of magnitude at most 1e300"
      end
    elseif tv ~= "boolean" then
      return nil, "properties." .. k .. " must be a string, a number or a boolean"
    end
  end
  return true
end

-- Checks one decoded event and returns a new table holding only its known fields, with the
-- derived ones filled in: event, nil, unix time; or nil, message naming the field.
function M.normalize(ev, now)
  if type(ev) ~= "table" then return nil, "an event must be a JSON object" end
  for k in pairs(ev) do
    if type(k) ~= "string" then return nil, "an event must be a JSON object" end
    if not KNOWN[k] then return nil, "unknown field '" .. excerpt(k, 64) .. "'" end
  end
  local out = {}
  for _, name in ipairs { "customerId", "eventType" } do
    if type(ev[name]) ~= "string" or ev[name] == "" then return nil, name .. " is required (a non-empty string)" end
  end
  for _, name in ipairs(STRING_FIELDS) do
    local v = ev[name]
    if v ~= nil and v ~= cjson.null then
      if type(v) ~= "string" or v == "" or #v > M.MAX_STRING then
        return nil, name .. " must be a non-empty string of at most " .. M.MAX_STRING .. " characters"
      end
      if not valid_utf8(v) then return nil, name .. " must be valid UTF-8" end
      out[name] = v
    end
  end
  for _, name in ipairs(COUNT_FIELDS) do
    local v = ev[name]
    if v ~= nil and v ~= cjson.null then
      if not is_count(v) then
        return nil, name .. " must be a non-negative integer of at most 9007199254740991"
      end
      out[name] = v
    end
  end
  local cost = ev.costCents
  if cost ~= nil and cost ~= cjson.null then
    if type(cost) ~= "number" or not is_finite(cost) or cost < 0 or cost > M.MAX_COST then
      return nil, "costCents must be a finite number from 0 to 1e12"
    end
    out.costCents = cost
  end
  if ev.properties ~= nil and ev.properties ~= cjson.null then
    local ok, msg = check_properties(ev.properties)
    if not ok then return nil, msg end
    out.properties = ev.properties
  end
  out.inputTokens = out.inputTokens or 0
  out.outputTokens = out.outputTokens or 0
  -- The usage contract defines totalTokens as input + output; a different value sent by a
  -- client would make totalTokens disagree with the two sums beside it, so it is refused.
  local sum = out.inputTokens + out.outputTokens
  -- Past 2^53 - 1 the sum is no longer exact in a double: totalTokens would not be input + output.
  if sum > M.MAX_COUNT then
    return nil, "inputTokens + outputTokens must be at most 9007199254740991 (totalTokens is their sum)"
  end
  if out.totalTokens ~= nil and out.totalTokens ~= sum then
    return nil, string.format("totalTokens must equal inputTokens + outputTokens (%.0f) or be left out, got %.0f",
      sum, out.totalTokens)
  end
  out.totalTokens = sum
  out.costCents = out.costCents or 0
  local ts, secs, frac
  local stamp = ev.timestamp
  if stamp == nil or stamp == cjson.null then
    -- Milliseconds, and the in-memory time is the one the stored text gives back on a restart.
    secs = math.floor(now)
    frac = string.format("%03d", math.min(999, math.floor((now - secs) * 1000)))
    ts = secs + tonumber("0." .. frac)
  else
    if type(stamp) == "string" and #stamp <= M.MAX_TIMESTAMP then ts, secs, frac = time.parse(stamp) end
    if not ts then
      return nil, "timestamp must be an ISO 8601 date-time such as 2024-01-15T10:30:00Z (a zone of at most "
        .. "+/-23:59, at most 9 fraction digits)"
    end
  end
  out.timestamp = time.format(secs, frac)
  return out, nil, ts
end

-- One stored line. Numbers are written exactly (integers as integers, others with 17 significant
-- digits) so a restart reloads the very same doubles; cjson stops at 14 digits.
local format, floor, concat = string.format, math.floor, table.concat
local function number(v)
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
  return format("%.17g", v)
end
M.number = number

local LINE_FIELDS = { "id", "customerId", "eventType", "model", "provider", "idempotencyKey", "timestamp",
  "inputTokens", "outputTokens", "totalTokens", "latencyMs", "costCents" }

local function value(v)
  local t = type(v)
  if t == "number" then return number(v) end
  if t == "string" then return cjson.encode(v) end
  return tostring(v)
end

function M.encode_line(ev)
  local parts = {}
  for _, name in ipairs(LINE_FIELDS) do
    local v = ev[name]
    if v ~= nil then parts[#parts + 1] = '"' .. name .. '":' .. value(v) end
  end
  if ev.properties then
    local props = {}
    for k, v in pairs(ev.properties) do props[#props + 1] = cjson.encode(k) .. ":" .. value(v) end
    parts[#parts + 1] = '"properties":{' .. concat(props, ",") .. "}"
  end
  return "{" .. concat(parts, ",") .. "}"
end

function M.is_duplicate(key) return key ~= nil and seen_keys[key] ~= nil end

-- The event stored with idempotency key `key`, or nil.
function M.by_key(key)
  local n = key ~= nil and seen_keys[key]
  return n and M.events[n] or nil
end

-- Replays every whole line of an append-only log of JSON lines through apply(decoded) (true: taken),
-- fences off a torn last line so the next write starts a line of its own, and opens the file for
-- appending. Returns the descriptor, the lines taken and the lines skipped.
local function open_lines(path, apply)
  local loaded, skipped = 0, 0
  local f = io.open(path, "rb")
  local needs_fence = false
  if f then
    local data = f:read("*a")
    f:close()
    needs_fence = #data > 0 and data:sub(-1) ~= "\n"
    for line in data:gmatch("[^\n]+") do
      local rec = cjson.decode(line)
      if type(rec) == "table" and apply(rec) then loaded = loaded + 1 else skipped = skipped + 1 end
    end
  end
  local file = ffi.C.open(path, O_WRONLY + O_CREAT + O_APPEND, 420)
  if file < 0 then error("cannot open " .. path .. ": " .. ffi.errno()) end
  if needs_fence then ffi.C.write(file, "\n", 1) end
  return file, loaded, skipped
end

-- Loads the event file (creating it when absent). Returns the number of events loaded and skipped lines.
function M.open(path)
  M.path = path
  local loaded, skipped
  fd, loaded, skipped = open_lines(path, function(ev)
    local ts = time.parse(ev.timestamp)
    if not ts then return false end
    -- Lines written before events had ids get one from their place in the file.
    if type(ev.id) ~= "string" then ev.id = "evt_" .. (M.count + 1) end
    local num = tonumber(ev.id:match("^evt_(%d+)$"))
    if num and num > last_id then last_id = num end
    add_to_columns(ev, ts)
    return true
  end)
  return loaded, skipped
end

-- Writes blob whole to fd and fsyncs it: true, or nil and a message.
local function write_synced(file, blob)
  local off = 0
  while off < #blob do
    local n = ffi.C.write(file, ffi.cast("const char *", blob) + off, #blob - off)
    if n < 0 then return nil, "write failed: errno " .. ffi.errno() end
    off = off + tonumber(n)
  end
  if ffi.C.fsync(file) ~= 0 then return nil, "fsync failed: errno " .. ffi.errno() end
  return true
end

-- Appends already-normalized events (a list of {event, ts}) atomically, then makes them visible.
-- Each gets its id here ("evt_" and a number never given before, even across restarts).
function M.append(batch)
  local lines = {}
  local first = last_id
  for i, item in ipairs(batch) do
    item[1].id = "evt_" .. (first + i)
    lines[i] = M.encode_line(item[1])
  end
  local ok, err = write_synced(fd, table.concat(lines, "\n") .. "\n")
  if not ok then
    for _, item in ipairs(batch) do item[1].id = nil end
    return nil, err
  end
  last_id = first + #batch
  for _, item in ipairs(batch) do add_to_columns(item[1], item[2]) end
  return true
end

-- Another append-only log of JSON lines (quotas, alerts, rate limits): replays every whole line
-- through apply(decoded) and returns a function appending one line durably (true or nil, msg).
function M.open_log(path, apply)
  local log, loaded, skipped = open_lines(path, apply)
  return function(line) return write_synced(log, line .. "\n") end, loaded, skipped
end

return M
