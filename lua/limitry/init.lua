-- limitry: the Lua client for Limitry's usage API.
--   local client = limitry.new(key | options)
--   local s, msg, err = client:usage():get_summary{ start_date = ..., end_date = ... }
-- The C core (limitry.core) does HTTP and JSON; this facade owns defaults, argument checks,
-- retries and the shape of the API.
local core = require "limitry.core"
local errors = require "limitry.errors"
local protocol = require "limitry.protocol"
local async = require "limitry.async"
local ngx_thread = require "limitry.ngx_thread"

local limitry = {
  VERSION = "0.1.0",
  DEFAULT_BASE_URL = "https://api.limitry.com/v1",
  null = core.null,
  is_error = errors.is_error,
}

local DEFAULTS = {
  timeout = 30,              -- seconds per attempt (connect + transfer)
  connect_timeout = 10,      -- seconds
  max_retries = 2,
  backoff = 0.5,             -- seconds before the first retry; doubles each time
  max_backoff = 8,           -- seconds
  max_retry_after = 60,      -- seconds: a longer Retry-After fails at once instead of sleeping
  max_response_size = 16 * 1024 * 1024, -- bytes (a year of hourly buckets is under 2 MiB)
  ssl_verify = true,
  openresty = "auto",        -- in nginx: "auto"/"worker_thread" run calls on a thread pool; "blocking" does not
  thread_pool = "limitry",   -- the nginx thread_pool that runs them
}

local OPTION_TYPES = {
  api_key = "string", base_url = "string", timeout = "number", connect_timeout = "number",
  max_retries = "number", backoff = "number", max_backoff = "number", max_retry_after = "number",
  max_response_size = "number", headers = "table", ca_file = "string", ca_path = "string",
  proxy = "string", no_proxy = "string", ssl_verify = "boolean", openresty = "string",
  thread_pool = "string",
}

-- The key lives only here, never in a field of the client, so printing a client cannot show it.
local secrets = setmetatable({}, { __mode = "k" })

local Client = {}
Client.__index = Client
Client.__tostring = function(c) return "limitry.client (" .. c.base_url .. ")" end
Client.__close = function(c) c:close() end

local Usage = {}
Usage.__index = Usage

local unpack = table.unpack or unpack

local function raise(msg) error("limitry.new: " .. msg, 0) end

local MAX_SECONDS = 1e6               -- timeouts and retry delays (11.6 days)
local MAX_RESPONSE_SIZE = 2 ^ 53      -- the largest byte count every Lua holds exactly

local has_control = protocol.has_control

local function check_options(opts)
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then
      local names = {}
      for name in pairs(OPTION_TYPES) do names[#names + 1] = name end
      table.sort(names)
      raise("unknown option '" .. tostring(k) .. "' (allowed: " .. table.concat(names, ", ") .. ")")
    end
    if type(v) ~= want then raise("option '" .. k .. "' must be a " .. want .. " (got " .. type(v) .. ")") end
  end
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
  if opts.openresty and opts.openresty ~= "auto" and opts.openresty ~= "worker_thread" and opts.openresty ~= "blocking" then
    raise("openresty must be one of 'auto', 'worker_thread', 'blocking'")
  end
  if opts.max_retries and (opts.max_retries < 0 or opts.max_retries % 1 ~= 0 or opts.max_retries > 100) then
    raise("max_retries must be a whole number from 0 to 100")
  end
end

local function user_agent()
  local lua = jit and jit.version or _VERSION
  return "limitry-lua/" .. limitry.VERSION .. " (" .. lua .. "; libcurl/" .. core.curl_version .. ")"
end

local function build_headers(key, extra)
  local list = {
    "Authorization: Bearer " .. key,
    "Accept: application/json",
  }
  local ua = user_agent()
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
  list[#list + 1] = "User-Agent: " .. ua
  return list
end

-- limitry.new(key) or limitry.new{ api_key = ..., base_url = ..., ... }
function limitry.new(arg)
  local opts
  if type(arg) == "string" then
    opts = { api_key = arg }
  elseif type(arg) == "table" then
    opts = {}
    for k, v in pairs(arg) do opts[k] = v end
  elseif arg == nil then
    opts = {}
  else
    raise("expected an API key string or an options table (got " .. type(arg) .. ")")
  end
  check_options(opts)
  local key = opts.api_key or os.getenv("LIMITRY_API_KEY")
  if key == nil or key == "" then
    raise("api_key is required: pass limitry.new(key) or set LIMITRY_API_KEY")
  end
  if has_control(key) or key:find("%s") then
    raise("api_key must not contain spaces or control characters (CR, LF, ...)")
  end
  local base_url = opts.base_url or os.getenv("LIMITRY_BASE_URL") or limitry.DEFAULT_BASE_URL
  if not base_url:find("^[hH][tT][tT][pP][sS]?://[^/%s]+") or has_control(base_url) or base_url:find("[%s?#]") then
    raise("base_url must be an http:// or https:// URL without query or fragment, such as " .. limitry.DEFAULT_BASE_URL)
  end
  base_url = base_url:gsub("/+$", "")
  -- user:password@ in the URL is sent (libcurl turns it into Basic auth) but never shown: the
  -- client's base_url, tostring(client) and error messages carry the URL without it.
  local scheme, authority, rest = base_url:match("^(%a+://)([^/]+)(.*)$")
  local shown = scheme .. authority:gsub("^.*@", "") .. rest

  local c = setmetatable({ base_url = shown }, Client)
  c._host = shown:match("^%a+://([^/]+)")
  for k, v in pairs(DEFAULTS) do c[k] = v end
  for k, v in pairs(opts) do
    if k ~= "api_key" and k ~= "headers" and k ~= "base_url" then c[k] = v end
  end
  secrets[c] = { key = key, url = base_url, headers = build_headers(key, opts.headers), extra_headers = opts.headers }
  c._usage = setmetatable({ client = c }, Usage)
  return c
end

-- The options table handed to the C core for one attempt.
function Client:_request_options(path)
  return {
    url = secrets[self].url .. path,
    headers = secrets[self].headers,
    -- Rounded up: a positive timeout must never become 0 ms, libcurl's "no timeout".
    timeout_ms = math.max(1, math.ceil(self.timeout * 1000)),
    connect_timeout_ms = math.max(1, math.ceil(self.connect_timeout * 1000)),
    max_body = self.max_response_size,
    verify = self.ssl_verify,
    ca_file = self.ca_file,
    ca_path = self.ca_path,
    proxy = self.proxy,
    no_proxy = self.no_proxy,
  }
end

function Client:_secret() return secrets[self] and secrets[self].key end

function Client:_handle()
  if not self.handle then self.handle = core.new() end
  return self.handle
end

-- The options that rebuild this client elsewhere (an nginx worker thread's Lua VM).
function Client:_config()
  local cfg = { api_key = secrets[self].key, headers = secrets[self].extra_headers, base_url = secrets[self].url }
  for k in pairs(DEFAULTS) do cfg[k] = self[k] end
  cfg.openresty = "blocking"
  for _, k in ipairs { "ca_file", "ca_path", "proxy", "no_proxy" } do cfg[k] = self[k] end
  return cfg
end

-- One call with retries. Blocking, except inside nginx request phases, where it runs on a
-- worker thread and only this request waits. Returns the result, or nil, msg, err.
function Client:_call(shape, path)
  if self.closed then error("limitry: this client is closed", 3) end
  if ngx_thread.should_use(self) then return ngx_thread.call(self, shape, path) end
  local handle = self:_handle()
  local opts = self:_request_options(path)
  local secret = self:_secret()
  local attempt = 0
  while true do
    attempt = attempt + 1
    local res, err = protocol.interpret(shape, secret, handle:request(opts))
    if res ~= nil then return res end
    local delay = protocol.retry_delay(err, attempt, self)
    if not delay then
      errors.finish(err, attempt, self._host)
      return nil, err.msg, err
    end
    core.sleep(delay)
  end
end

-- The usage object; the same one on every call.
function Client:usage() return self._usage end

-- Frees the connection and its libcurl handle, and cancels async requests; safe to call twice.
function Client:close()
  async.close(self)
  if self.handle then self.handle:close() end
  self.handle = nil
  self.closed = true
end

-- Drives async requests; never blocks longer than `timeout` seconds (default 0).
function Client:poll(timeout) return async.poll(self, timeout) end
function Client:next_timeout() return async.next_timeout(self) end
function Client:fds() return async.fds(self) end

local function check_self(self, name)
  if getmetatable(self) ~= Usage then
    error("limitry: call it as usage:" .. name .. "(...) with a colon", 3)
  end
end

for name, call in pairs(protocol.CALLS) do
  Usage[name] = function(self, ...)
    check_self(self, name)
    local path = protocol.build_query(name, ...)
    return self.client:_call(call.shape, path)
  end
  -- start_summary, start_breakdown, start_timeseries: the same arguments, plus an optional
  -- callback last; they return a request at once (see limitry.async).
  local start_name = name:gsub("^get_", "start_")
  Usage[start_name] = function(self, ...)
    check_self(self, start_name)
    local n = select("#", ...)
    local args = { ... }
    local callback
    if type(args[n]) == "function" then
      callback = args[n]
      n = n - 1
    end
    local path = protocol.build_query(name, unpack(args, 1, n))
    return async.start(self.client, call.shape, path, callback)
  end
end

limitry.Client = Client
limitry.Usage = Usage
return limitry
