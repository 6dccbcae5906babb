-- The event store: columns in memory for fast scans, an append-only JSON-lines file on disk.
-- Every accepted batch is written with one write(2) on an O_APPEND descriptor and fsync'd before
-- the request is answered, so a crash loses at most the batch being answered, never stored data.
-- A torn last line (a crash mid-write) is skipped on load and fenced off with a newline.
local cjson = require "cjson.safe"
local ffi = require "ffi"
local time = require "limitry_server.time"

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
local seen_keys = {}
local fd = -1

local function add_to_columns(ev, ts)
  local n = M.count + 1
  M.count = n
  cols.ts[n] = ts
  cols.customerId[n] = ev.customerId or false
  cols.eventType[n] = ev.eventType or false
  cols.model[n] = ev.model or false
  cols.provider[n] = ev.provider or false
  cols.inputTokens[n] = ev.inputTokens
  cols.outputTokens[n] = ev.outputTokens
  cols.totalTokens[n] = ev.totalTokens
  cols.costCents[n] = ev.costCents
  if ev.idempotencyKey then seen_keys[ev.idempotencyKey] = true end
end

local function is_count(v) return type(v) == "number" and v >= 0 and v == math.floor(v) and v < 2^53 end
local function opt_string(ev, name)
  local v = ev[name]
  if v == nil or v == cjson.null then ev[name] = nil return true end
  if type(v) ~= "string" or v == "" or #v > 256 then
    return false, name .. " must be a non-empty string of at most 256 characters"
  end
  return true
end

-- Checks one incoming event and fills in derived fields. Returns the event or nil, message.
function M.normalize(ev, now)
  if type(ev) ~= "table" or ev[1] ~= nil then return nil, "an event must be a JSON object" end
  for _, name in ipairs { "customerId", "eventType" } do
    if type(ev[name]) ~= "string" or ev[name] == "" then return nil, name .. " is required (a non-empty string)" end
  end
  for _, name in ipairs { "customerId", "eventType", "model", "provider", "idempotencyKey" } do
    local ok, msg = opt_string(ev, name)
    if not ok then return nil, msg end
  end
  for _, name in ipairs { "inputTokens", "outputTokens", "totalTokens", "latencyMs" } do
    if ev[name] == cjson.null then ev[name] = nil end
    if ev[name] ~= nil and not is_count(ev[name]) then
      return nil, name .. " must be a non-negative integer"
    end
  end
  if ev.costCents == cjson.null then ev.costCents = nil end
  if ev.costCents ~= nil and (type(ev.costCents) ~= "number" or ev.costCents < 0 or ev.costCents ~= ev.costCents) then
    return nil, "costCents must be a non-negative number"
  end
  if ev.properties == cjson.null then ev.properties = nil end
  if ev.properties ~= nil and type(ev.properties) ~= "table" then return nil, "properties must be an object" end
  ev.inputTokens = ev.inputTokens or 0
  ev.outputTokens = ev.outputTokens or 0
  ev.totalTokens = ev.totalTokens or (ev.inputTokens + ev.outputTokens)
  ev.costCents = ev.costCents or 0
  local ts
  if ev.timestamp == nil or ev.timestamp == cjson.null then
    ts = now
  else
    ts = time.parse(ev.timestamp)
    if not ts then return nil, "timestamp must be an ISO 8601 date-time such as 2024-01-15T10:30:00Z" end
  end
  ev.timestamp = time.format(ts)
  return ev, nil, ts
end

function M.is_duplicate(key) return key ~= nil and seen_keys[key] == true end

-- Loads the file (creating it when absent). Returns the number of events loaded and skipped lines.
function M.open(path)
  M.path = path
  local loaded, skipped = 0, 0
  local f = io.open(path, "rb")
  local needs_fence = false
  if f then
    local data = f:read("*a")
    f:close()
    needs_fence = #data > 0 and data:sub(-1) ~= "\n"
    for line in data:gmatch("[^\n]+") do
      local ev = cjson.decode(line)
      local ts = type(ev) == "table" and time.parse(ev.timestamp)
      if ts then
        add_to_columns(ev, ts)
        loaded = loaded + 1
      else
        skipped = skipped + 1
      end
    end
  end
  fd = ffi.C.open(path, O_WRONLY + O_CREAT + O_APPEND, 420)
  if fd < 0 then error("cannot open event store " .. path .. ": " .. ffi.errno()) end
  if needs_fence then ffi.C.write(fd, "\n", 1) end
  return loaded, skipped
end

-- Appends already-normalized events (a list of {event, ts}) atomically, then makes them visible.
function M.append(batch)
  local lines = {}
  for i, item in ipairs(batch) do
    local line, err = cjson.encode(item[1])
    if not line then return nil, err end
    lines[i] = line
  end
  local blob = table.concat(lines, "\n") .. "\n"
  local off = 0
  while off < #blob do
    local n = ffi.C.write(fd, ffi.cast("const char *", blob) + off, #blob - off)
    if n < 0 then return nil, "write failed: errno " .. ffi.errno() end
    off = off + tonumber(n)
  end
  if ffi.C.fsync(fd) ~= 0 then return nil, "fsync failed: errno " .. ffi.errno() end
  for _, item in ipairs(batch) do add_to_columns(item[1], item[2]) end
  return true
end

return M
