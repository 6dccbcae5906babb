-- limitry.recorder: record events now, deliver them in the background in batches.
--
--   local recorder = require("limitry.recorder").new { client = { api_key = ... }, spool = "events.spool" }
--   recorder:record { customer_id = "c1", event_type = "model_call", input_tokens = 120 }
--   recorder:tick()            -- from the host's loop: never blocks (the multi-handle client)
--   recorder:flush(5)          -- waits up to 5 s for the queue to empty
--   recorder:close(5)          -- flushes, then frees the client (what is left stays in the spool)
--
-- Inside nginx, with `dict` (a lua_shared_dict), the queue is shared by every worker and outlives a
-- worker's crash and a reload; recorder:start() (in init_worker) runs the flusher on a timer.
--
-- An event gets its idempotency key when it is recorded, so every resend of it counts once. Batches
-- go out with events:batch when batch_size events wait or every flush_interval seconds, one
-- flusher at a time; failures are retried with backoff and jitter (Retry-After honoured), and no
-- event is dropped while there is room. A batch Limitry refuses as invalid (400) is split until the
-- bad event is alone; that one is dead-lettered (counted, logged with the reason, handed to the
-- dead_letter hook) and the rest delivered. A full queue refuses new events (counted, logged at a
-- bounded rate), never dropping old ones. Built on the library's public API only.
local limitry = require "limitry"
local options = require "limitry.recorder.options"
local counters = require "limitry.recorder.counters"
local settle = require "limitry.recorder.settle"
local shorthand = require "limitry.recorder.shorthand"

local M = {}
local Recorder = {}
Recorder.__index = Recorder

M.DEFAULTS = options.DEFAULTS
local check_options = options.check

local function raise(msg) error("limitry.recorder: " .. msg, 3) end

-- The recorder's own client: no retries of its own (the queue retries) and its own timeout.
local function make_client(given, timeout)
  if type(given) == "table" and getmetatable(given) and given.events then return given, false end
  local o = {}
  for k, v in pairs(given or {}) do o[k] = v end
  o.max_retries = 0
  if o.timeout == nil then o.timeout = timeout end
  return limitry.new(o), true
end

local function in_nginx() return type(rawget(_G, "ngx")) == "table" and ngx.shared ~= nil end

local dict_counters, table_counters = counters.dict, counters.table
M.dict_counters = dict_counters

M.BUCKETS = settle.BUCKETS -- a batch call's duration histogram (seconds)
M.SHORTHAND = shorthand.TEXT -- the codes record_json's text may use (limitry.recorder.shorthand)
M.expand = shorthand.expand

function M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then raise("expected an options table (got " .. type(opts) .. ")") end
  opts = opts or {}
  check_options(opts)
  if opts.dict and not in_nginx() then raise("dict needs nginx (lua-nginx-module); leave it out in a plain Lua host") end
  local self = setmetatable({}, Recorder)
  for k, v in pairs(M.DEFAULTS) do self[k] = v end
  for k, v in pairs(opts) do self[k] = v end
  self.client, self.owns_client = make_client(opts.client, self.timeout)
  self.inflight, self.failures, self.backoff_until = 0, 0, 0
  self.log_at = {}
  if opts.dict then
    local dict = ngx.shared[opts.dict]
    if not dict then raise("no lua_shared_dict named '" .. opts.dict .. "' in nginx.conf") end
    self.dict = dict
    self.queue = require("limitry.recorder.shdict_queue").new(dict, self.prefix, self.max_queued)
    dict:safe_add(self.prefix .. "last", ngx.now()) -- a partial batch waits flush_interval from the start
    self.counters = dict_counters(dict, "m:" .. self.prefix)
    self.clock = self.clock or ngx.now
    self.token = tostring(ngx.worker.pid()) .. ":" .. limitry.idempotency_key()
  else
    self.max_queued = self.max_queued or 100000
    self.counters = table_counters()
    local restored
    self.queue, restored = require("limitry.recorder.memory_queue").new { max_queued = self.max_queued, spool = opts.spool }
    self.restored = restored
    self.clock = self.clock or require("limitry.core").now
  end
  self.last_flush = self.clock() -- a partial batch waits flush_interval from now
  return self
end

local find, sub, byte, concat = string.find, string.sub, string.byte, table.concat
local unpack = table.unpack or unpack -- luacheck: ignore 113 (Lua 5.1's unpack)

-- Queue items: an event's JSON text alone (it starts with "{", or "\1" in shorthand), or with a tag (what on_delivered
-- gets back) in front: "<length of the tag>|<tag><JSON>". An untagged event is stored as it came,
-- with no copy made. Items of an older recorder ("0|<JSON>") read the same.
local BRACE = string.byte("{")

local function item_of(json, tag)
  if tag == nil then return json end
  return #tag .. "|" .. tag .. json
end

-- The JSON text and the tag of an item.
local function split_item(item)
  local first = byte(item, 1)
  if first == BRACE or first == 1 then return item, nil end
  local bar = find(item, "|", 1, true)
  local n = tonumber(sub(item, 1, bar - 1))
  return sub(item, bar + n + 1), n > 0 and sub(item, bar + 1, bar + n) or nil
end

-- Writes a log line of `kind` unless one was written less than log_interval seconds ago.
function Recorder:_log(kind, level, msg)
  local now = self.clock()
  if self.dict then
    if not self.dict:safe_add("log:" .. self.prefix .. kind, true, self.log_interval) then return end
    ngx.log(level == "error" and ngx.ERR or ngx.WARN, "limitry recorder: ", msg)
    return
  end
  if self.log_at[kind] and now - self.log_at[kind] < self.log_interval then return end
  self.log_at[kind] = now
  if self.log then self.log(level, msg) else io.stderr:write("limitry recorder: ", level, ": ", msg, "\n") end
end

-- Records an event (the table events:record takes). Returns true, or nil, msg when the queue
-- is full (the event is refused and counted; nothing older is dropped). `tag` (a string) is handed
-- back to on_delivered once Limitry has the event. Raises on a wrong event, as events:record does.
function Recorder:record(ev, tag)
  if getmetatable(self) ~= Recorder then error("limitry.recorder: call it as recorder:record(event)", 2) end
  if self.closed then error("limitry.recorder: this recorder is closed", 2) end
  if type(ev) ~= "table" then error("limitry.recorder: record expects an event table (got " .. type(ev) .. ")", 2) end
  if tag ~= nil and type(tag) ~= "string" then error("limitry.recorder: tag must be a string", 2) end
  if ev.idempotency_key == false then
    error("limitry.recorder: events need an idempotency key (leave idempotency_key out to get one)", 2)
  end
  local copy = {}
  for k, v in pairs(ev) do copy[k] = v end
  copy.idempotency_key = copy.idempotency_key or self:new_key()
  if copy.timestamp == nil then copy.timestamp = self.dict and ngx.now() or os.time() end
  -- limitry.encode_event checks the event as events:record would; its argument errors are ours.
  local ok, text = pcall(limitry.encode_event, copy)
  if not ok then error(type(text) == "string" and text:gsub("^limitry%.encode_event:", "recorder:record:") or text, 0) end
  return self:_push(text, tag)
end

-- Keys unique to this recorder: a random prefix (128 bits from the OS, once) and a counter, so
-- recording costs no system call per event.
function Recorder:new_key()
  local n = (self.key_count or 0) + 1
  self.key_count = n
  if not self.key_prefix then self.key_prefix = limitry.idempotency_key() .. "-" end
  return self.key_prefix .. n
end

-- Records an event given as its JSON text, as limitry.encode_event makes it (with its
-- idempotencyKey, which must be unique to the event): for hosts that build the text themselves.
-- The text may use the codes of M.SHORTHAND (it then starts with "\1"); they are expanded when the
-- batch is sent. Returns like record(); the text is not checked here (Limitry refusing it
-- dead-letters it).
function Recorder:record_json(json, tag)
  if getmetatable(self) ~= Recorder then error("limitry.recorder: call it as recorder:record_json(text)", 2) end
  if self.closed then error("limitry.recorder: this recorder is closed", 2) end
  if type(json) ~= "string" or not (byte(json, 1) == BRACE or byte(json, 1) == 1) then
    error("limitry.recorder: record_json expects an event's JSON object text", 2)
  end
  if tag ~= nil and type(tag) ~= "string" then error("limitry.recorder: tag must be a string", 2) end
  return self:_push(json, tag)
end

function Recorder:_push(json, tag)
  local ok, why = self.queue:push(item_of(json, tag))
  if ok then
    self.counters.incr("events_queued", 1)
    return true
  end
  self.counters.incr("events_refused", 1)
  self:_log("full", "error", "queue full (" .. self.queue:depth() .. " events): new events are refused until Limitry takes some")
  return nil, "limitry.recorder: queue " .. why
end

-- How a batch attempt ended: "done", "split" (send the halves next) or "retry" (after a backoff).
Recorder._settle = settle.settle

-- The JSON texts and tags of batch b, and the events:batch body.
local function unpack_batch(b)
  local jsons, tags = {}, {}
  for i, item in ipairs(b.items) do jsons[i], tags[i] = split_item(item) end
  return jsons, tags, shorthand.expand('{"events":[' .. concat(jsons, ",") .. "]}")
end

local BATCH_OPTIONS = { idempotent = true } -- every event carries its key: a resend counts once

-- Whether a batch should go out now: a failed batch waits to be sent again, or the events not yet
-- taken (those in batches out for delivery do not count) fill a batch or have waited flush_interval.
local function due(self, now)
  if self.queue:has_pending() then return true end
  local waiting = self.queue:waiting()
  if waiting == 0 then return false end
  return waiting >= self.batch_size or now - self.last_flush >= self.flush_interval
end

-- Plain hosts ----------------------------------------------------------------------------------

function Recorder:_start_batches(force)
  local now = self.clock()
  while self.inflight < self.concurrency and now >= self.backoff_until and (force or due(self, now)) do
    if self.budget and not self.budget() then return end
    local b = self.queue:take(self.batch_size)
    if not b then return end
    self.last_flush = now
    local jsons, tags, body = unpack_batch(b)
    local started = self.clock()
    local ok, raised = pcall(self.client.start_request, self.client, "POST", "/events/batch", body, BATCH_OPTIONS,
      function(res, _, err)
        self.inflight = self.inflight - 1
        self:_settle(b, jsons, tags, res, err, nil, self.clock() - started)
      end)
    if ok then
      self.inflight = self.inflight + 1
    else
      self:_settle(b, jsons, tags, nil, nil, raised, 0)
    end
  end
end

-- Drives delivery; never blocks. Returns the number of events not yet delivered.
function Recorder:tick()
  if self.closed then return 0 end
  if self.dict then error("limitry.recorder: in nginx the flusher runs on its own (recorder:start())", 2) end
  if self.inflight > 0 then self.client:poll(0) end
  self:_start_batches(false)
  return self.queue:depth()
end

-- Sends everything queued, waiting at most `timeout` seconds (default 10). Returns true, or nil and
-- a message saying how many events are still waiting.
function Recorder:flush(timeout)
  timeout = timeout or 10
  if self.dict then return self:_nginx_flush(true, timeout) end
  local deadline = self.clock() + timeout
  while true do
    if self.inflight > 0 then self.client:poll(0) end
    self:_start_batches(true)
    local left = self.queue:depth()
    if left == 0 then return true end
    local now = self.clock()
    if now >= deadline then return nil, "limitry.recorder: " .. left .. " events not delivered yet" end
    if self.inflight > 0 then
      self.client:poll(math.min(0.05, deadline - now))
    else
      require("limitry.core").sleep(math.min(0.05, deadline - now, math.max(0, self.backoff_until - now)))
    end
  end
end

-- Flushes for at most `timeout` seconds, then frees the client it made. What is left stays in the
-- spool for the next start (without a spool it is lost: the message says how many).
function Recorder:close(timeout)
  if self.closed then return true end
  local ok, msg = self:flush(timeout or 5)
  self.closed = true
  if self.owns_client then self.client:close() end
  self.queue:close()
  if ok then return true end
  -- A plain host without a spool keeps nothing once closed: say so.
  if not self.dict and not self.spool then msg = msg:gsub("not delivered yet$", "not delivered, lost (no spool)") end
  return nil, msg
end

function Recorder:stats()
  local c = self.counters
  return { queued = c.get("events_queued"), sent = c.get("events_sent"), retried = c.get("events_retried"),
    refused = c.get("events_refused"), dead_lettered = c.get("events_dead_lettered"), depth = self.queue:depth(),
    batches = c.get("batches_sent"), restored = self.restored }
end

-- nginx --------------------------------------------------------------------------------------

-- One batch call and its settling, in a light thread of the flusher: returns the batch's id and
-- how it ended ("done", "split", "retry"; "retry" too when settling raised: the batch stays stored).
-- Each step waits for nginx's next timer tick first (1 ms: ngx.sleep(0) needs OpenResty's
-- delayed-events patch, which Debian's nginx lacks, and logs a warning without it): the worker
-- serves the requests that arrived meanwhile between taking a batch, building its body, and
-- settling its answer, instead of stalling them for all three (~1.5 ms for a batch of 1,000).
-- The flusher itself never yields outside ngx.thread.wait: a light thread that ended while it
-- slept came back from wait as "already waited or killed".
local function send_batch(self, b)
  local ok, outcome = pcall(function()
    ngx.sleep(0.001)
    local jsons, tags, body = unpack_batch(b)
    local started = ngx.now()
    local called, res, _, err = pcall(self.client.request, self.client, "POST", "/events/batch", body, BATCH_OPTIONS)
    ngx.sleep(0.001)
    return self:_settle(b, jsons, tags, called and res or nil, called and err or nil, not called and res or nil,
      ngx.now() - started)
  end)
  if not ok then
    self:_log("crash", "error", "settling a batch failed: " .. tostring(outcome))
    outcome = "retry"
  end
  return b.id, outcome
end

-- The next batch to send, unless none is due: a stored one not in flight (a retry, a split half)
-- first, else a new one off the queue when a whole batch waits, flush_interval has passed, or `force`.
local function next_batch(self, now, busy, force)
  local queue = self.queue
  local fresh = force or now - self.last_flush >= self.flush_interval or queue:waiting() >= self.batch_size
  return queue:take(self.batch_size, busy, not fresh)
end

-- One flusher run under the dict's lock, for `seconds` at most (5): up to `concurrency` batch calls
-- in flight, each in a light thread, while batches are due, the budget hook allows a call, and no
-- backoff is running. `force` sends partial batches too and waits out backoffs that fit (flush(),
-- and a stopping worker's drain within shutdown_timeout).
function Recorder:_nginx_flush(force, seconds)
  local dict, queue = self.dict, self.queue
  local now = ngx.now()
  self.last_flush = dict:get(self.prefix .. "last") or 0
  self.backoff_until = dict:get(self.prefix .. "backoff") or 0
  if not force and (now < self.backoff_until or not due(self, now)) then return true end
  -- A flusher that dies keeps the others waiting until its lease ends: a batch call's timeout, plus 1 s.
  local lease = self.timeout + 1
  if not queue:lock(self.token, lease) then return nil, "limitry.recorder: another worker is flushing" end
  local stop_at = now + (seconds or 5)
  local exiting = false
  local busy, threads, running, spent = {}, {}, 0, false
  while true do
    now = ngx.now()
    if not exiting and ngx.worker.exiting() then
      -- The worker is stopping (QUIT, HUP) while this run holds the lock: drain for
      -- shutdown_timeout at most, then let the next workers have the lock and the rest.
      exiting, force = true, true
      stop_at = math.min(stop_at, now + self.shutdown_timeout)
    end
    local b
    if running < self.concurrency and not spent and now < stop_at and now >= self.backoff_until
      and queue:holds(self.token) then
      b = next_batch(self, now, busy, force)
      -- Past the budget the batch stays stored (the oldest), sent by a later run.
      if b and self.budget and not self.budget() then b, spent = nil, true end
    end
    if b then
      busy[b.id], running = true, running + 1
      dict:safe_set(self.prefix .. "last", now)
      self.last_flush = now
      threads[b.id] = ngx.thread.spawn(send_batch, self, b)
    elseif running > 0 then
      local list = {}
      for _, t in pairs(threads) do list[#list + 1] = t end
      local ok, id = ngx.thread.wait(unpack(list))
      if ok and id then
        busy[id], threads[id], running = nil, nil, running - 1
      else -- cannot happen (send_batch does not raise); never wait on a thread twice
        for k, t in pairs(threads) do ngx.thread.kill(t); threads[k], busy[k] = nil, nil end
        running = 0
      end
      queue:lock(self.token, lease)
    elseif force and now < self.backoff_until and self.backoff_until < stop_at then
      -- At least 1 ms: ngx.sleep rounds down to milliseconds, and a sleep of 0 only yields.
      ngx.sleep(math.max(0.001, self.backoff_until - now))
      ngx.update_time()
    else
      break
    end
  end
  queue:unlock(self.token)
  local left = queue:depth()
  if force and left > 0 then return nil, "limitry.recorder: " .. left .. " events not delivered yet" end
  return true
end

-- Starts the flusher of this worker (call it in init_worker_by_lua): a timer every `every` seconds
-- (default a quarter of flush_interval, at most 0.25 s) that flushes what is due; when the worker
-- stops (QUIT, HUP), it flushes what it can within shutdown_timeout and leaves the rest in the dict.
function Recorder:start(every)
  if not self.dict then error("limitry.recorder: start() is for nginx; plain hosts call tick()", 2) end
  every = every or math.min(0.25, math.max(0.01, self.flush_interval / 4))
  local running = false
  local function run(premature)
    self.counters.sync()
    if running then return end
    running = true
    local ok, err = pcall(self._nginx_flush, self, premature, premature and self.shutdown_timeout or nil)
    running = false
    if not ok then self:_log("crash", "error", "flusher failed: " .. tostring(err)) end
  end
  local ok, err = ngx.timer.every(every, run)
  if not ok then error("limitry.recorder: cannot start the flusher timer: " .. tostring(err), 2) end
  return true
end

return M
