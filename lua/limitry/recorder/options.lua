-- limitry.recorder's options: their defaults and their checks (recorder.new raises on a wrong one).
local client_options = require "limitry.options"

local M = {}

M.DEFAULTS = {
  batch_size = 1000,       -- events per events:batch call (1 to 1000)
  flush_interval = 1,      -- seconds: a partial batch goes out after this long
  max_queued = nil,        -- events waiting at most: 100,000 in memory; in nginx, what the dict holds (1/8 kept free)
  concurrency = 2,         -- batches in flight at once
  backoff = 0.5,           -- seconds before the first retry of a failed batch, doubled each time
  max_backoff = 30,        -- seconds
  max_retry_after = 300,   -- seconds: a longer Retry-After is waited out at this length
  timeout = 5,             -- seconds per batch call (the recorder's own client)
  shutdown_timeout = 3,    -- seconds a stopping nginx worker spends flushing
  log_interval = 10,       -- seconds between two log lines of one kind
  prefix = "rec:",         -- nginx: the recorder's keys in the dict
}

local OPTION_TYPES = {
  client = "table", dict = "string", spool = "string", batch_size = "number", flush_interval = "number",
  max_queued = "number", concurrency = "number", backoff = "number", max_backoff = "number",
  max_retry_after = "number", timeout = "number", shutdown_timeout = "number", log_interval = "number",
  prefix = "string", log = "function", dead_letter = "function",
  on_delivered = "function", on_failure = "function", clock = "function", budget = "function",
}

local function raise(msg) error("limitry.recorder: " .. msg, 4) end

function M.check(opts)
  local wrong = client_options.name_or_type_error(opts, OPTION_TYPES)
  if wrong then raise(wrong) end
  local b = opts.batch_size
  if b and not (b >= 1 and b <= 1000 and b % 1 == 0) then raise("batch_size must be a whole number from 1 to 1000") end
  for _, k in ipairs { "max_queued", "concurrency" } do
    local v = opts[k]
    if v and not (v >= 1 and v % 1 == 0 and v < 2 ^ 31) then raise(k .. " must be a whole number >= 1") end
  end
  for _, k in ipairs { "flush_interval", "backoff", "max_backoff", "max_retry_after", "timeout", "shutdown_timeout",
    "log_interval" } do
    local v = opts[k]
    if v and not (v >= 0 and v <= 1e6) then raise(k .. " must be a number of seconds from 0 to 1e6") end
  end
  if opts.dict and opts.spool then raise("spool is for plain Lua hosts; in nginx the dict is the queue") end
end

return M
