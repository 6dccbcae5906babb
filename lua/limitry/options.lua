-- limitry.new's options: names, types, every default (the C core has none), the checks that raise
-- naming the option, and the request header lines the key and `headers` make.
local core = require "limitry.core"

local M = {}

M.DEFAULT_BASE_URL = "https://api.limitry.com/v1"

M.DEFAULTS = {
  timeout = 30,              -- seconds per attempt (connect + transfer)
  connect_timeout = 10,      -- seconds
  max_retries = 2,
  backoff = 0.5,             -- seconds before the first retry; doubles each time
  max_backoff = 8,           -- seconds
  max_retry_after = 60,      -- seconds: a longer Retry-After fails at once instead of sleeping
  max_response_size = 16 * 1024 * 1024, -- bytes (a year of hourly buckets is under 2 MiB)
  ssl_verify = true,
  openresty = "auto",        -- in nginx: "auto"/"cosocket", "worker_thread" or "blocking" (limitry.transport)
  pool_size = 64,            -- cosockets: idle keep-alive connections a worker keeps, across every pool
  keepalive_timeout = 60,    -- cosockets: seconds an idle connection stays in the pool
  thread_pool = "limitry",   -- openresty = "worker_thread": the nginx thread pool that runs attempts
  max_worker_thread_calls = 32, -- openresty = "worker_thread": attempts waiting per worker, more fail at once
}

M.TYPES = {
  api_key = "string", base_url = "string", timeout = "number", connect_timeout = "number",
  max_retries = "number", backoff = "number", max_backoff = "number", max_retry_after = "number",
  max_response_size = "number", headers = "table", ca_file = "string", ca_path = "string",
  proxy = "string", no_proxy = "string", ssl_verify = "boolean", openresty = "string",
  thread_pool = "string", pool_size = "number", keepalive_timeout = "number",
  max_worker_thread_calls = "number", log = "function",
}

local MAX_SECONDS = core.limits.timeout_ms / 1000 -- timeouts and retry delays (1e6 s, 11.6 days)
local MAX_RESPONSE_SIZE = core.limits.body_bytes  -- 2^53, the largest byte count every Lua holds exactly
local has_control = core.has_control

local function raise(msg) error("limitry.new: " .. msg, 0) end
M.raise = raise

-- What is wrong with the first option of opts that `types` does not name, or whose value is not of
-- its type (types: option -> a type name, or a list of the type names it may have), or nil. Shared
-- by limitry.new, limitry.recorder.new and limitry.gateway.configure, each raising it as its own.
function M.name_or_type_error(opts, types)
  for k, v in pairs(opts) do
    local want = types[k]
    if not want then
      local names = {}
      for name in pairs(types) do names[#names + 1] = name end
      table.sort(names)
      return "unknown option '" .. tostring(k) .. "' (allowed: " .. table.concat(names, ", ") .. ")"
    end
    local fits = type(v) == want
    if type(want) == "table" then
      for _, t in ipairs(want) do fits = fits or type(v) == t end
    end
    if not fits then
      return "option '" .. k .. "' must be a " .. (type(want) == "table" and table.concat(want, " or ") or want)
        .. " (got " .. type(v) .. ")"
    end
  end
  return nil
end

-- Raises on an unknown option, a wrong type or a value out of range. modes: the allowed
-- `openresty` values.
function M.check(opts, modes)
  local wrong = M.name_or_type_error(opts, M.TYPES)
  if wrong then raise(wrong) end
  -- Bounded so that every value converts to the C core's integers without overflow.
  for _, k in ipairs { "timeout", "connect_timeout" } do
    if opts[k] and not (opts[k] > 0 and opts[k] <= MAX_SECONDS) then
      raise(k .. " must be a positive number of seconds, at most 1e6")
    end
  end
  local size = opts.max_response_size
  if size and not (size >= 1 and size <= MAX_RESPONSE_SIZE and size % 1 == 0) then
    raise("max_response_size must be a positive whole number of bytes, at most 2^53")
  end
  for _, k in ipairs { "backoff", "max_backoff", "max_retry_after" } do
    if opts[k] and not (opts[k] >= 0 and opts[k] <= MAX_SECONDS) then
      raise(k .. " must be a non-negative number of seconds, at most 1e6")
    end
  end
  if opts.openresty and not modes[opts.openresty] then
    raise("openresty must be one of 'auto', 'cosocket', 'worker_thread', 'blocking'")
  end
  for _, k in ipairs { "pool_size", "max_worker_thread_calls" } do
    if opts[k] and not (opts[k] >= 1 and opts[k] <= 100000 and opts[k] % 1 == 0) then
      raise(k .. " must be a whole number from 1 to 100000")
    end
  end
  if opts.keepalive_timeout and not (opts.keepalive_timeout > 0 and opts.keepalive_timeout <= 86400) then
    raise("keepalive_timeout must be a number of seconds above 0 and at most 86400")
  end
  if opts.max_retries and (opts.max_retries < 0 or opts.max_retries % 1 ~= 0 or opts.max_retries > 100) then
    raise("max_retries must be a whole number from 0 to 100")
  end
end

-- The request header lines of every call but the User-Agent line, and what the user adds to that
-- line (the `headers` option's User-Agent).
function M.header_lines(key, extra)
  local list = {
    "Authorization: Bearer " .. key,
    "Accept: application/json",
  }
  local ua = ""
  if extra then
    local names = {}
    for name in pairs(extra) do names[#names + 1] = name end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, name in ipairs(names) do
      local value = extra[name]
      if type(name) ~= "string" or not name:find("^[%w!#$%%&'*+%-.^_`|~]+$") then
        raise("headers: '" .. tostring(name) .. "' is not a valid header name")
      end
      if type(value) ~= "string" or has_control(value) then
        raise("headers: the value of '" .. name .. "' must be a string without control characters")
      end
      local lower = name:lower()
      if lower == "authorization" then
        raise("headers: set the key with api_key, not an Authorization header")
      elseif lower == "user-agent" then
        ua = ua .. " " .. value
      else
        list[#list + 1] = name .. ": " .. value
      end
    end
  end
  return list, ua
end

-- The User-Agent line for `http`, what speaks HTTP (libcurl or nginx's Lua module).
function M.user_agent(version, http, extra)
  local lua = jit and jit.version or _VERSION
  return "User-Agent: limitry-lua/" .. version .. " (" .. lua .. "; " .. http .. ")" .. extra
end

return M
