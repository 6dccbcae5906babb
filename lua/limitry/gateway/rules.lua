-- The rules of limitry.gateway.decisions: which quotas and rate limits exist and the dimension
-- filters each applies to (GET /quotas, GET /rate-limits), kept in the shared dict as one blob
-- ("at|ok|" and the packed records, or "at|no|" when the key may not list them) with a version
-- counter, parsed once per version in each worker.
local codec = require "limitry.recorder.codec"

local M = {}

local concat, tostring, tonumber = table.concat, tostring, tonumber

-- Counters that never evict (see limitry.recorder.shdict_queue).
function M.add(dict, key, n, ttl)
  if n == 0 then return end
  if not dict:incr(key, n) then
    dict:safe_add(key, 0, ttl)
    dict:incr(key, n)
  end
end

function M.call_metric(self, call, err)
  self.counters.incr("calls:" .. call, 1)
  if err then self.counters.incr("call_errors:" .. call .. ":" .. tostring(err.name), 1) end
end

-- Rules ----------------------------------------------------------------------------------------

local function pack_list(records)
  local out = {}
  for i, r in ipairs(records) do
    local s = codec.pack(r)
    out[2 * i - 1], out[2 * i] = #s .. ":", s
  end
  return concat(out)
end

local function unpack_list(s, at)
  local list, i = {}, at
  while i <= #s do
    local colon = s:find(":", i, true)
    local len = colon and tonumber(s:sub(i, colon - 1))
    if not len then break end
    list[#list + 1] = codec.unpack(s:sub(colon + 1, colon + len))
    i = colon + len + 1
  end
  return list
end

-- Fetches the rules (background or cold). Returns true or nil, err.
function M.fetch(self, client)
  local q, _, qerr = client:quotas():list()
  M.call_metric(self, "quotas_list", q == nil and qerr)
  local r, rerr
  if q then
    r, _, rerr = client:rate_limits():list()
    M.call_metric(self, "rate_limits_list", r == nil and rerr)
  end
  local err = qerr or rerr
  local now = ngx.now()
  local blob
  if q and r then
    local records = {}
    for _, x in ipairs(q.data) do
      records[#records + 1] = { kind = "q", id = x.id, filters = x.dimensionFilters or {} }
    end
    for _, x in ipairs(r.data) do
      if x.enabled ~= false then records[#records + 1] = { kind = "r", id = x.id, filters = x.dimensionFilters or {} } end
    end
    blob = now .. "|ok|" .. pack_list(records)
  elseif err and err.name == "AuthenticationError" then
    -- This key may not read the rules: each customer/model is checked on its own instead.
    blob = now .. "|no|"
    self.log("rules", "warn", "the API key cannot list quotas and rate limits (" .. err.msg
      .. "); checking each customer on its own instead")
  else
    return nil, err
  end
  if not self.dict:safe_set("d:rules", blob) then return nil, { msg = "no room in the dict" } end
  M.add(self.dict, "d:rv", 1)
  return true
end

-- The parsed rules (memoized per version): { at, ok, list } or nil when never fetched.
function M.read(self)
  local v = self.dict:get("d:rv")
  if not v then return nil end
  local memo = self.rules_memo
  if memo and memo.version == v then return memo end
  local blob = self.dict:get("d:rules")
  if not blob then return nil end
  local at, state, rest = blob:match("^([^|]*)|(%a+)|()")
  memo = { version = v, at = tonumber(at), ok = state == "ok", list = state == "ok" and unpack_list(blob, rest) or {} }
  self.rules_memo, self.keys_memo, self.keys_count = memo, {}, 0
  return memo
end

function M.applies(filters, dims)
  for k, v in pairs(filters) do
    if dims[k] ~= v then return false end
  end
  return true
end


return M
