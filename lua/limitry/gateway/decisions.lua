-- Limit decisions without a Limitry round trip on the request path (limitry.gateway's access phase).
--
-- What is cached, in the shared dict (so every worker, and the workers after a reload, share it):
--   the rules      GET /quotas and GET /rate-limits, refreshed every rules_interval: which limits
--                  apply to a customer/model is then decided here, and a customer no limit applies
--                  to never costs a Limitry call
--   a status       per limit id, from POST /quotas/check or /rate-limits/check: used (or remaining)
--                  and the period, with how much this node had delivered to Limitry at that moment
--   two counters   per limit id and period (or window): what this node admitted or recorded (`a`)
--                  and what Limitry acknowledged of it (`v`, counted by the recorder's on_delivered)
-- A quota's use is estimated as status.used + (a - v at fetch time): this node's events that the
-- status cannot contain yet (queued, in flight) are counted at once, so a customer is refused as
-- soon as this gateway has used the quota, not at the next refresh. Rate limits alike, counting
-- admissions within the window. Statuses are refreshed in the background after `refresh_after`
-- seconds (one worker per limit, a shared lock), and right away when a period or window rolls over;
-- one older than `ttl` is "stale", served up to `stale_ttl` more seconds; after that, no decision.
-- If the rules cannot be read (a key without permission), each customer/model is checked on its
-- own (the limits its check answers are the ones that apply).
--
-- Over-admission bound: this node's requests in flight when a quota runs out (each may add its
-- tokens), plus what other nodes recorded since this node's last refresh of the status.
local codec = require "limitry.recorder.codec"
local rules_mod = require "limitry.gateway.rules"
local periods = require "limitry.gateway.periods"

local M = {}
local D = {}
D.__index = D

local floor, concat, tostring, tonumber = math.floor, table.concat, tostring, tonumber

-- opts: dict, client (request path), background (client), ttl, refresh_after, stale_ttl,
-- rules_interval, cold_wait, check_budget, counters ({incr}), log(kind, level, msg)
function M.new(opts)
  local d = setmetatable({}, D)
  for k, v in pairs(opts) do d[k] = v end
  d.known = {} -- ids of the limits whose statuses this worker stored or read
  d.rules_memo, d.keys_memo, d.keys_count, d.status_memo, d.status_count = nil, {}, 0, {}, 0
  return d
end

local add, call_metric, applies = rules_mod.add, rules_mod.call_metric, rules_mod.applies

D.fetch_rules = rules_mod.fetch -- (client): true or nil, err
D.rules = rules_mod.read        -- (): { at, ok, list } or nil when never fetched

-- Calls per minute on the decision side (checks and lists), across workers.
function D:_budget_ok(cold)
  local key = "d:b:" .. floor(ngx.now() / 60)
  local used = self.dict:get(key) or 0
  if not cold and used >= self.check_budget then return false end
  add(self.dict, key, 1, 120)
  return true
end

-- Statuses -------------------------------------------------------------------------------------

local function status_key(id) return "d:s:" .. id end

-- What Limitry had acknowledged of this node's usage for every limit of `kind` this worker knows,
-- read before a check is sent: a batch stored while the check is on its way is then counted twice
-- for a moment (refusing early), never not at all (admitting too much).
function D:_delivered_before(kind)
  local snap = {}
  for id in pairs(self.known) do
    if id:sub(1, 1) == kind then
      local st = self:status(id)
      if st then
        local key = "d:v:" .. id .. ":" .. st.p
        snap[key] = self.dict:get(key) or 0
      end
    end
  end
  return snap
end

-- Stores the statuses of a check answer (snap: _delivered_before's); returns the ids it named.
function D:_store(kind, list, snap)
  local now, dict, ids = ngx.now(), self.dict, {}
  for _, s in ipairs(list or {}) do
    if type(s) == "table" and type(s.id) == "string" and type(s.limit) == "number" then
      local id = kind .. s.id
      local st = { kind = kind, at = now, limit = s.limit }
      if kind == "q" then
        st.period, st.used, st.metric = tostring(s.period), tonumber(s.used) or 0, tostring(s.metric)
        st.p = periods.bounds(st.period, now)
      else
        st.window = tostring(s.window)
        local size = periods.WINDOW_SECONDS[st.window] or 60
        st.count = s.limit - (tonumber(s.remaining) or 0)
        st.p = (tonumber(s.reset) or (floor(now / size) + 1) * size) - size
      end
      if st.p then
        local vkey = "d:v:" .. id .. ":" .. st.p
        st.dlv = snap[vkey] or dict:get(vkey) or 0
        dict:safe_set(status_key(id), codec.pack(st))
        ids[#ids + 1] = id
        self.known[id] = true
      end
    end
  end
  return ids
end

-- Fetches the status of one limit (rules known: dims = its filters) or of every limit applying to
-- a customer/model (dims = the request's; kind nil: both checks). Returns ids or nil, err.
function D:_fetch(client, kind, dims)
  local ids = {}
  if kind ~= "r" then
    local snap = self:_delivered_before("q")
    local res, _, err = client:quotas():check(dims)
    call_metric(self, "quotas_check", res == nil and err)
    if not res then return nil, err end
    for _, id in ipairs(self:_store("q", res.quotas, snap)) do ids[#ids + 1] = id end
  end
  if kind ~= "q" then
    local snap = self:_delivered_before("r")
    local res, _, err = client:rate_limits():check(dims)
    call_metric(self, "rate_limits_check", res == nil and err)
    if not res then return nil, err end
    for _, id in ipairs(self:_store("r", res.rateLimits, snap)) do ids[#ids + 1] = id end
  end
  return ids
end

function D:status(id)
  local raw = self.dict:get(status_key(id))
  if not raw then return nil end
  local st = self.status_memo[raw]
  if not st then
    self.known[id] = true
    st = codec.unpack(raw)
    if self.status_count > 4096 then self.status_memo, self.status_count = {}, 0 end
    self.status_memo[raw], self.status_count = st, self.status_count + 1
  end
  return st
end

-- Runs fetch() in a timer unless a worker is doing so, or failed to less than a second ago, for
-- this target (one refresh at a time across workers, at most one try a second while Limitry fails).
function D:_refresh(target, fetch)
  local lock = "d:l:" .. target
  if not self.dict:safe_add(lock, true, 10) then return end
  if not self:_budget_ok(false) then return end
  local ok = ngx.timer.at(0, function(premature)
    if premature then return end
    local done, err = fetch()
    if done then
      self.dict:delete(lock)
    else
      self.dict:safe_set(lock, true, 1)
      self.log("refresh", "warn", "could not refresh limits: " .. tostring(err and err.msg))
    end
  end)
  if not ok then self.dict:delete(lock) end
end

-- Waits (bounded) for another worker's fetch of `target`, or fetches itself: true when done.
-- Returns true when fetched, false when the fetch failed or Limitry failed a cold fetch in the last
-- DOWN_SECONDS (no request waits on a Limitry that is down: the next tries happen in the
-- background), nil when another worker is fetching (wait for it).
local DOWN_SECONDS = 2
function D:_cold(target, fetch)
  local dict = self.dict
  if dict:get("d:down") then
    self:_refresh(target, fetch)
    return false
  end
  local lock = "d:l:" .. target
  if dict:safe_add(lock, true, self.cold_wait + 2) then
    self:_budget_ok(true)
    local ok, err = fetch()
    dict:delete(lock)
    if not ok then
      self.log("cold", "warn", "could not check limits: " .. tostring(err and err.msg))
      if not (err and err.status and err.status < 500 and err.status ~= 429) then dict:safe_set("d:down", true, DOWN_SECONDS) end
    end
    return ok and true or false
  end
  return nil
end

-- Decisions -------------------------------------------------------------------------------------

-- The limits (kind .. id, with their rule's filters when known) applying to a customer and model.
function D:_limits(key, customer, model, event_type, rules)
  if rules and rules.ok then
    local memo = self.keys_memo[key]
    if memo then return memo end
    local dims = { customer_id = customer, model = model, event_type = event_type }
    memo = {}
    for _, rule in ipairs(rules.list) do
      if applies(rule.filters, dims) then memo[#memo + 1] = { id = rule.kind .. rule.id, kind = rule.kind, filters = rule.filters } end
    end
    if self.keys_count > 100000 then self.keys_memo, self.keys_count = {}, 0 end -- bounded memory
    self.keys_memo[key], self.keys_count = memo, self.keys_count + 1
    return memo
  end
  local raw = self.dict:get("d:k:" .. key)
  if not raw then return nil end
  local at, list = raw:match("^([^|]*)|(.*)$")
  local out = { at = tonumber(at) }
  for id in list:gmatch("[^,]+") do out[#out + 1] = { id = id, kind = id:sub(1, 1) } end
  return out
end

-- The cold paths of decide(), each its own method: a closure made inside decide() would capture its
-- locals and keep LuaJIT from compiling the hot path (closing upvalues is not compiled).
function D:_cold_rules()
  if self:_cold("rules", function() return self:fetch_rules(self.client) end) == nil then
    self:_wait(function() return self:rules() end)
  end
  return self:rules()
end

local function fetch_key(self, client, key, dims)
  local ids, err = self:_fetch(client, nil, dims)
  if not ids then return nil, err end
  return self.dict:safe_set("d:k:" .. key, ngx.now() .. "|" .. concat(ids, ","))
end

function D:_cold_key(key, dims, rules)
  if self:_cold("k:" .. key, function() return fetch_key(self, self.client, key, dims) end) == nil then
    self:_wait(function() return self.dict:get("d:k:" .. key) end)
  end
  return self:_limits(key, dims.customer_id, dims.model, dims.event_type, rules)
end

function D:_refresh_key(key, dims)
  self:_refresh("k:" .. key, function() return fetch_key(self, self.background, key, dims) end)
end

-- A limit's own check (rules known: dims = its filters) or the request's (kind nil: both checks).
local function fetch_limit(self, client, lim, dims)
  if lim.filters then return self:_fetch(client, lim.kind, lim.filters) end
  return self:_fetch(client, nil, dims)
end

function D:_cold_status(lim, dims)
  if self:_cold(lim.id, function() return fetch_limit(self, self.client, lim, dims) end) == nil then
    self:_wait(function() return self:status(lim.id) end)
  end
  return self:status(lim.id)
end

function D:_refresh_status(lim, dims)
  self:_refresh(lim.id, function() return fetch_limit(self, self.background, lim, dims) end)
end

-- decide(customer, model, event_type) -> allowed, source, retry_after, why, admitted, limits
--   source: "fresh" (fetched for this request), "cached", "stale" or "skipped" (no decision: the
--   caller's fail_open decides); admitted: the rate-limit admissions made, and limits: the limits
--   that apply (both for account())
function D:decide(customer, model, event_type)
  local key = model and (customer .. "\0" .. model) or customer
  local dims -- made only where needed: a table per request costs collection
  local now = ngx.now()
  local source = "cached"
  local rules = self:rules()
  if not rules then
    rules = self:_cold_rules()
    if not rules then return nil, "skipped" end
    source = "fresh"
  end
  local limits = self:_limits(key, customer, model, event_type, rules)
  if not limits then -- rules unreadable: this customer/model's own check
    dims = { customer_id = customer, model = model, event_type = event_type }
    limits = self:_cold_key(key, dims, rules)
    if not limits then return nil, "skipped" end
    source = "fresh"
  elseif limits.at and now - limits.at > self.refresh_after then
    self:_refresh_key(key, { customer_id = customer, model = model, event_type = event_type })
  end
  if limits[1] == nil then return true, source, nil, nil, nil, limits end
  local refuse_after, why
  local admits = {}
  dims = { customer_id = customer, model = model, event_type = event_type }
  for _, lim in ipairs(limits) do
    local st = self:status(lim.id)
    if not st then
      st = self:_cold_status(lim, dims)
      if not st then return nil, "skipped" end
      if source == "cached" then source = "fresh" end
    end
    local age = now - st.at
    local p, next_p = periods.bounds(st.kind == "q" and st.period or st.window, now)
    if age > self.refresh_after or p ~= st.p then self:_refresh_status(lim, dims) end
    if age > self.ttl + self.stale_ttl then return nil, "skipped" end
    if age > self.ttl and source ~= "fresh" then source = "stale" end
    local mine = self.dict:get("d:a:" .. lim.id .. ":" .. p) or 0
    local used = mine
    if p == st.p then used = (st.kind == "q" and st.used or st.count) + mine - st.dlv end
    local over
    if st.kind == "q" then over = used >= st.limit else over = used + 1 > st.limit end
    if over then
      local after = next_p - now
      if not refuse_after or after > refuse_after then refuse_after, why = after, st end
    elseif st.kind == "r" then
      admits[#admits + 1] = { lim.id, p, next_p - p }
    end
  end
  if refuse_after then return false, source, refuse_after, why end
  for _, a in ipairs(admits) do add(self.dict, "d:a:" .. a[1] .. ":" .. a[2], 1, a[3] + 60) end
  return true, source, nil, nil, admits, limits
end

function D:_wait(ready)
  local deadline = ngx.now() + self.cold_wait
  while not ready() and ngx.now() < deadline and not self.dict:get("d:down") do ngx.sleep(0.005) end
end

local METRIC_AMOUNT = {
  total_tokens = function(ev) return (ev.input_tokens or 0) + (ev.output_tokens or 0) end,
  total_events = function() return 1 end,
  total_cost_cents = function(ev) return ev.cost_cents or 0 end,
}

-- After the call: counts the event against the quotas of `limits` (decide's last value) and
-- returns the recorder tag that on_delivered() turns into "delivered" counts. admits: decide's.
function D:account(limits, admits, ev, t)
  local parts = {}
  for _, a in ipairs(admits or {}) do parts[#parts + 1] = a[1] .. "|" .. a[2] .. "|1|" .. a[3] end
  for _, lim in ipairs(limits or {}) do
    if lim.kind == "q" then
      local st = self:status(lim.id)
      local amount = st and METRIC_AMOUNT[st.metric or ""] or nil
      local n = st and (amount and amount(ev) or METRIC_AMOUNT.total_tokens(ev))
      if n and n > 0 then
        local p, next_p = periods.bounds(st.period, t)
        add(self.dict, "d:a:" .. lim.id .. ":" .. p, n, next_p - p + 86400)
        parts[#parts + 1] = lim.id .. "|" .. p .. "|" .. n .. "|" .. (next_p - p + 86400)
      end
    end
  end
  return parts[1] and concat(parts, ";") or nil
end

-- The recorder's on_delivered: what Limitry now holds of this node's usage.
function D:delivered(tags)
  local dict = self.dict
  for _, tag in ipairs(tags) do
    for id, p, n, ttl in tag:gmatch("([^|;]+)|([^|;]+)|([^|;]+)|([^|;]+)") do
      add(dict, "d:v:" .. id .. ":" .. p, tonumber(n), tonumber(ttl))
    end
  end
end

return M
