-- Quotas, quota alerts and rate limits: their validation, their state in the worker and their
-- append-only log (DATA/config.jsonl, one JSON line per change, fsync'd before the answer, as
-- events are), replayed on start so a kill -9 loses nothing that was acknowledged.
local cjson = require "cjson.safe"
local log = require "limitry_server.log"
local encode = require "limitry_server.encode"
local time = require "limitry_server.time"
local text = require "limitry_server.text"
local valid_utf8, excerpt = text.valid_utf8, text.excerpt

local M = {}

-- kind -> { by_id = {}, order = { ids in creation order }, last = largest id number given }
local KINDS = { quota = "quota_", alert = "alert_", rateLimit = "rl_" }
local state = {}
for kind in pairs(KINDS) do state[kind] = { by_id = {}, order = {}, last = 0 } end
M.state = state
M.history = {}   -- alert id -> list of { threshold, triggeredAt, used, limit }
M.fired = {}     -- alert id -> start of the period it last fired in
local append_line

M.METRICS = { "total_tokens", "total_events", "total_cost_cents" }
M.PERIODS = { "hour", "day", "week", "month" }
M.WINDOWS = { "second", "minute", "hour" }
M.MAX_NAME = 256
M.MAX_FILTERS = 32
M.MAX_LIMIT = 2 ^ 53 - 1

local function put(kind, rec)
  local s = state[kind]
  if not s.by_id[rec.id] then s.order[#s.order + 1] = rec.id end
  s.by_id[rec.id] = rec
  local n = tonumber(rec.id:match("_(%d+)$"))
  if n and n > s.last then s.last = n end
end

local function remove(kind, id)
  local s = state[kind]
  if not s.by_id[id] then return end
  s.by_id[id] = nil
  for i, v in ipairs(s.order) do
    if v == id then
      table.remove(s.order, i)
      break
    end
  end
end

M.version = 0 -- changes with every quota, alert or rate-limit change applied

-- One log line -> state. Returns true when the line was understood.
local function apply(rec)
  M.version = M.version + 1
  local kind = rec.t
  if KINDS[kind] and type(rec.v) == "table" and type(rec.v.id) == "string" then
    put(kind, rec.v)
  elseif type(kind) == "string" and KINDS[kind:sub(1, -2)] and kind:sub(-1) == "-" and type(rec.id) == "string" then
    remove(kind:sub(1, -2), rec.id)
  elseif kind == "fired" and type(rec.id) == "string" and type(rec.v) == "table" then
    local h = M.history[rec.id] or {}
    M.history[rec.id] = h
    h[#h + 1] = rec.v
    M.fired[rec.id] = rec.period
  else
    return false
  end
  return true
end

function M.open(path)
  local loaded, skipped
  append_line, loaded, skipped = log.open(path, apply)
  return loaded, skipped
end

-- Logs rec durably, then applies it. Returns true or nil, message.
local function commit(rec)
  local ok, err = append_line(encode.json(rec))
  if not ok then return nil, err end
  apply(rec)
  return true
end

function M.list(kind, pred)
  local out = encode.array()
  for _, id in ipairs(state[kind].order) do
    local rec = state[kind].by_id[id]
    if not pred or pred(rec) then out[#out + 1] = rec end
  end
  return out
end

function M.get(kind, id) return state[kind].by_id[id] end

local function one_of(v, allowed, name)
  for _, a in ipairs(allowed) do if v == a then return true end end
  return nil, name .. " must be one of " .. table.concat(allowed, ", ")
end

local function check_filters(f)
  if type(f) ~= "table" then return nil, "dimensionFilters must be an object of strings" end
  local n = 0
  for k, v in pairs(f) do
    if type(k) ~= "string" then return nil, "dimensionFilters must be an object of strings" end
    n = n + 1
    if n > M.MAX_FILTERS then return nil, "dimensionFilters may hold at most " .. M.MAX_FILTERS .. " entries" end
    if k == "" or #k > 128 then return nil, "dimensionFilters: names must be 1 to 128 characters" end
    if not valid_utf8(k) then return nil, "dimensionFilters: names must be valid UTF-8" end
    if type(v) ~= "string" or v == "" or #v > 1024 then
      return nil, "dimensionFilters." .. k .. " must be a non-empty string of at most 1024 bytes"
    end
    if not valid_utf8(v) then return nil, "dimensionFilters." .. k .. " must be valid UTF-8" end
  end
  return true
end

local function positive(v, name, integer)
  if type(v) ~= "number" or v ~= v or v <= 0 or v > M.MAX_LIMIT or (integer and v ~= math.floor(v)) then
    return nil, name .. " must be a " .. (integer and "positive integer" or "number greater than 0")
      .. " of at most 9007199254740991"
  end
  return true
end

-- Field -> check(value) for each kind; `required` lists what a create must carry.
local FIELDS = {
  quota = {
    required = { "name", "metric", "limitValue", "period" },
    metric = function(v) return one_of(v, M.METRICS, "metric") end,
    period = function(v) return one_of(v, M.PERIODS, "period") end,
    limitValue = function(v) return positive(v, "limitValue", false) end,
  },
  rateLimit = {
    required = { "name", "limitValue", "window" },
    window = function(v) return one_of(v, M.WINDOWS, "window") end,
    limitValue = function(v) return positive(v, "limitValue", true) end,
    enabled = function(v)
      if type(v) ~= "boolean" then return nil, "enabled must be true or false" end
      return true
    end,
  },
  alert = {
    required = { "threshold" },
    threshold = function(v)
      if type(v) ~= "number" or v ~= math.floor(v) or v < 1 or v > 100 then
        return nil, "threshold must be an integer from 1 to 100"
      end
      return true
    end,
  },
}
local function name_check(v)
  if type(v) ~= "string" or v == "" or #v > M.MAX_NAME then
    return nil, "name must be a non-empty string of at most " .. M.MAX_NAME .. " bytes"
  end
  if not valid_utf8(v) then return nil, "name must be valid UTF-8" end
  return true
end
FIELDS.quota.name, FIELDS.rateLimit.name = name_check, name_check
FIELDS.quota.dimensionFilters, FIELDS.rateLimit.dimensionFilters = check_filters, check_filters

-- Checks a create (partial = false) or update body. Returns the accepted fields or nil, message.
local function validate(kind, body, partial)
  if type(body) ~= "table" or (next(body) ~= nil and body[1] ~= nil) then return nil, "Body must be a JSON object" end
  local fields, out = FIELDS[kind], {}
  for k, v in pairs(body) do
    if type(k) ~= "string" or k == "required" or not fields[k] then
      return nil, "unknown field '" .. excerpt(k, 64) .. "'"
    end
    if v ~= cjson.null then
      local ok, msg = fields[k](v)
      if not ok then return nil, msg end
      out[k] = v
    end
  end
  if not partial then
    for _, k in ipairs(fields.required) do
      if out[k] == nil then return nil, k .. " is required" end
    end
  end
  return out
end

local function stamp(now) return time.format(now) end

-- Creates a record of kind from a request body. Returns the record, or nil, status, message.
function M.create(kind, body, now, extra)
  local fields, err = validate(kind, body, false)
  if not fields then return nil, 400, err end
  local s = state[kind]
  local rec = { id = KINDS[kind] .. (s.last + 1), createdAt = stamp(now), updatedAt = stamp(now) }
  for k, v in pairs(fields) do rec[k] = v end
  for k, v in pairs(extra or {}) do rec[k] = v end
  if kind ~= "alert" then rec.dimensionFilters = rec.dimensionFilters or {} end
  if kind == "rateLimit" and rec.enabled == nil then rec.enabled = true end
  local ok, werr = commit { t = kind, v = rec }
  if not ok then return nil, 500, werr end
  return rec
end

function M.update(kind, id, body, now)
  local old = state[kind].by_id[id]
  if not old then return nil, 404, nil end
  local fields, err = validate(kind, body, true)
  if not fields then return nil, 400, err end
  local rec = {}
  for k, v in pairs(old) do rec[k] = v end
  for k, v in pairs(fields) do rec[k] = v end
  rec.updatedAt = stamp(now)
  local ok, werr = commit { t = kind, v = rec }
  if not ok then return nil, 500, werr end
  return rec
end

-- Deleting a quota deletes its alerts (each logged, so a restart agrees).
function M.delete(kind, id)
  if not state[kind].by_id[id] then return nil, 404 end
  if kind == "quota" then
    for _, alert in ipairs(M.list("alert", function(a) return a.quotaId == id end)) do
      local ok, err = commit { t = "alert-", id = alert.id }
      if not ok then return nil, 500, err end
    end
  end
  local ok, err = commit { t = kind .. "-", id = id }
  if not ok then return nil, 500, err end
  return true
end

-- Records that alert fired in the period starting at period_start.
function M.fire(alert, period_start, entry)
  return commit { t = "fired", id = alert.id, period = period_start, v = entry }
end

return M
