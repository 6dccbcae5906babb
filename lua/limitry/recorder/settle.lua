-- What a batch call's outcome does to limitry.recorder's queue and counters: delivered (acked,
-- on_delivered), refused as invalid (split until the bad event is alone, which is dead-lettered),
-- or failed (kept, retried after a backoff with jitter or Retry-After).
local limitry = require "limitry"
local shorthand = require "limitry.recorder.shorthand"

local M = {}

-- Histogram buckets of a batch call's duration (seconds), as Prometheus' defaults.
M.BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

-- How a batch attempt ended: "done", "split" (send the halves next) or "retry" (after a backoff).
function M.settle(self, b, jsons, tags, res, err, raised, seconds)
  local c, n = self.counters, #b.items
  c.incr("calls:events_batch", 1)
  if res then
    self.queue:ack(b)
    c.incr("events_sent", n)
    c.incr("batches_sent", 1)
    for _, le in ipairs(M.BUCKETS) do if seconds <= le then c.incr("batch_seconds_le:" .. le, 1) end end
    c.incr("batch_seconds_sum", seconds)
    c.incr("batch_seconds_count", 1)
    self.failures = 0
    if self.on_delivered then
      local list = {}
      for i = 1, n do if tags[i] then list[#list + 1] = tags[i] end end
      if list[1] then self.on_delivered(list) end
    end
    return "done"
  end
  local status = err and err.status
  if raised or status == 400 or status == 413 or status == 422 then
    c.incr("call_errors:events_batch:" .. (raised and "ArgumentError" or err.name), 1)
    if n == 1 then
      local reason = raised or err.msg
      self.queue:ack(b)
      c.incr("events_dead_lettered", 1)
      local json = shorthand.expand(jsons[1])
      local ev = limitry.decode(json)
      self:_log("dead", "error", "dropped an event Limitry will not take (" .. tostring(reason) .. "); customer "
        .. tostring(type(ev) == "table" and ev.customerId))
      if self.dead_letter then pcall(self.dead_letter, json, reason, tags[1]) end
      return "done"
    end
    self.queue:split(b)
    c.incr("batches_split", 1)
    return "split"
  end
  c.incr("call_errors:events_batch:" .. (err and err.name or "LimitryError"), 1)
  c.incr("events_retried", n)
  c.incr("batches_failed", 1)
  self.queue:keep(b)
  self.failures = self.failures + 1
  local delay = err and err.retry_after
  if delay then
    delay = math.min(delay, self.max_retry_after)
  else
    local cap = math.min(self.max_backoff, self.backoff * 2 ^ (self.failures - 1))
    delay = cap / 2 + math.random() * cap / 2
  end
  self.backoff_until = self.clock() + delay
  if self.dict then self.dict:safe_set(self.prefix .. "backoff", self.backoff_until) end
  if self.on_failure then pcall(self.on_failure, err or raised, n) end
  local hint = (err and err.name == "AuthenticationError") and " (check the API key)" or ""
  self:_log("retry", "warn", string.format("could not deliver %d events, retrying in %.1f s: %s%s", n, delay,
    err and err.msg or "unknown error", hint))
  return "retry"
end

return M
