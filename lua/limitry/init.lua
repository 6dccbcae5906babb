-- limitry: the Lua client for Limitry's usage API.
--   local client = limitry.new(key | options)
--   local s, msg, err = client:usage():get_summary{ start_date = ..., end_date = ... }
-- The C core (limitry.core) does HTTP and JSON; this facade owns defaults, argument checks,
-- retries and the shape of the API.

-- The C core, or a message that names the fix when the one found was built for another Lua: a
-- `luarocks make` for one Lua leaves its build in the folder it ran in (limitry/core.so), and Lua's
-- default path (./?.so) finds it there before the right one; the dynamic linker then refuses it
-- with "undefined symbol: lua_tointeger" (or another lua_ function that Lua lacks), which says
-- nothing of the cause. Builds for 5.1 and LuaJIT share one ABI and load into each other.
local core
do
  local ok, loaded = pcall(require, "limitry.core")
  if not ok then
    local why = tostring(loaded)
    local symbol = why:match("undefined symbol: (lua[%w_]*)")
    if symbol then
      local file = package.searchpath and package.searchpath("limitry.core", package.cpath)
        or why:match("from file '([^']+)'") or "limitry/core.so"
      local lua = jit and "luajit" or _VERSION:match("%d+%.%d+")
      local where = file:find("^%./") and ("`luarocks make` leaves its build in the folder it ran in (limitry/core.so, "
        .. "src/*.o), where Lua's default path (./?.so) finds it first: remove it (rm -rf limitry src/*.o)")
        or "LUA_CPATH (package.cpath) leads to it: point it at a build for this Lua"
      error("limitry: " .. file .. " was built for another Lua (this is " .. (jit and jit.version or _VERSION)
        .. "; the file needs " .. symbol .. "). " .. where .. ", or build for this Lua: luarocks --lua-version "
        .. (lua == "luajit" and "5.1" or lua) .. " make (in a checkout: sh tools/build.sh " .. lua .. ")", 0)
    end
    error(loaded, 0)
  end
  core = loaded
end
local errors = require "limitry.errors"
local protocol = require "limitry.protocol"
local async = require "limitry.async"
local transport = require "limitry.transport"
local cosocket = require "limitry.cosocket"
local api = require "limitry.api"

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
  openresty = "auto",        -- in nginx: "auto"/"cosocket", "worker_thread" or "blocking" (see transport.lua)
  pool_size = 64,            -- cosockets: idle keep-alive connections kept per worker and per pool
  keepalive_timeout = 60,    -- cosockets: seconds an idle connection stays in the pool
  thread_pool = "limitry",   -- openresty = "worker_thread": the nginx thread pool that runs calls
  max_worker_thread_calls = 32, -- openresty = "worker_thread": calls in flight per worker, more fail at once
}

local OPTION_TYPES = {
  api_key = "string", base_url = "string", timeout = "number", connect_timeout = "number",
  max_retries = "number", backoff = "number", max_backoff = "number", max_retry_after = "number",
  max_response_size = "number", headers = "table", ca_file = "string", ca_path = "string",
  proxy = "string", no_proxy = "string", ssl_verify = "boolean", openresty = "string",
  thread_pool = "string", pool_size = "number", keepalive_timeout = "number",
  max_worker_thread_calls = "number", log = "function",
  -- Internal: where the key and base_url of the client this one is rebuilt from came from (an
  -- nginx worker thread's copy, see Client:_config), so its errors name the original sources.
  _origin = "table",
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

-- The client fields libcurl's options come from. They live in a table of their own behind each
-- client's metatable, so that an assignment (client.timeout = 5) is seen when it happens and
-- drops the configuration the C core applies (curl_config), instead of every call comparing them.
local CURL_FIELDS = { timeout = true, connect_timeout = true, ssl_verify = true, max_response_size = true,
  ca_file = true, ca_path = true, proxy = true, no_proxy = true }
local FIELDS_MT = { __index = Client } -- methods are found behind the fields

local function client_metatable()
  local fields = setmetatable({}, FIELDS_MT)
  return {
    __index = fields,
    __newindex = function(c, k, v)
      if not CURL_FIELDS[k] then return rawset(c, k, v) end
      fields[k] = v
      local s = secrets[c]
      if s then s.curl_config = nil end
    end,
    __class = Client, -- what check_self looks for
    __tostring = Client.__tostring,
    __close = Client.__close,
  }
end

local MAX_SECONDS = 1e6               -- timeouts and retry delays (11.6 days)
local MAX_RESPONSE_SIZE = 2 ^ 53      -- the largest byte count every Lua holds exactly

local has_control = protocol.has_control

local function check_options(opts)
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then
      local names = {}
      for name in pairs(OPTION_TYPES) do
        if name:sub(1, 1) ~= "_" then names[#names + 1] = name end
      end
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
  if opts.openresty and not transport.MODES[opts.openresty] then
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

-- `http` names what speaks HTTP: libcurl or nginx's Lua module.
local function user_agent(http, extra)
  local lua = jit and jit.version or _VERSION
  return "User-Agent: limitry-lua/" .. limitry.VERSION .. " (" .. lua .. "; " .. http .. ")" .. (extra or "")
end

-- The request headers of every call but the User-Agent line, and what the user adds to that line.
local function build_headers(key, extra)
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
    local ngx = rawget(_G, "ngx")
    if type(ngx) == "table" and ngx.config and ngx.config.nginx_version then
      -- nginx clears its workers' environment: a variable set in the shell never reaches them.
      raise("api_key is required: pass limitry.new(key), or set LIMITRY_API_KEY and add 'env LIMITRY_API_KEY;' "
        .. "to nginx.conf's main context (nginx clears its workers' environment)")
    end
    raise("api_key is required: pass limitry.new(key) or set LIMITRY_API_KEY")
  end
  if has_control(key) or key:find("%s") then
    raise("api_key must not contain spaces or control characters (CR, LF, ...)")
  end
  local env_url = os.getenv("LIMITRY_BASE_URL")
  if env_url == "" then env_url = nil end -- `LIMITRY_BASE_URL=` in a shell means "not set"
  local base_url = opts.base_url or env_url or limitry.DEFAULT_BASE_URL
  if not base_url:find("^[hH][tT][tT][pP][sS]?://[^/%s]+") or has_control(base_url) or base_url:find("[%s?#]") then
    raise("base_url must be an http:// or https:// URL without query or fragment, such as " .. limitry.DEFAULT_BASE_URL)
  end
  base_url = base_url:gsub("/+$", "")
  -- user:password@ in the URL is sent (libcurl turns it into Basic auth) but never shown: the
  -- client's base_url, tostring(client) and error messages carry the URL without it.
  local scheme, authority, rest = base_url:match("^(%a+://)([^/]+)(.*)$")
  local shown = scheme .. authority:gsub("^.*@", "") .. rest

  local c = setmetatable({ base_url = shown }, client_metatable())
  c._host = shown:match("^%a+://([^/]+)")
  for k, v in pairs(DEFAULTS) do c[k] = v end
  for k, v in pairs(opts) do
    if k ~= "api_key" and k ~= "headers" and k ~= "base_url" and k ~= "_origin" then c[k] = v end
  end
  -- A field of its own even when unset: every attempt reads it, and a miss would go through the
  -- metatables to the methods.
  if c.log == nil then c.log = false end
  -- Where the key and the URL came from, for the errors they cause (never the key itself).
  local origin = opts._origin or {
    key = opts.api_key and "key given to limitry.new" or "key from LIMITRY_API_KEY",
    url = opts.base_url and "base_url given to limitry.new" or env_url and "base_url from LIMITRY_BASE_URL"
      or "the default base_url",
  }
  local lines, ua_extra = build_headers(key, opts.headers)
  local curl_headers = { user_agent("libcurl/" .. core.curl_version, ua_extra) }
  for i, line in ipairs(lines) do curl_headers[i + 1] = line end
  local json_headers = { "Content-Type: application/json", "Expect:" } -- no 100-continue round trip
  for i, line in ipairs(curl_headers) do json_headers[i + 1] = line end
  secrets[c] = { key = key, url = base_url, headers = curl_headers, json_headers = json_headers, header_lines = lines,
    ua_extra = ua_extra, extra_headers = opts.headers, origin = origin }
  c._usage = setmetatable({ client = c }, Usage)
  return c
end

local function ms(seconds) return math.max(1, math.ceil(seconds * 1000)) end

-- The options table handed to the C core for one attempt of req (see Client:_call).
function Client:_request_options(req)
  local s = secrets[self]
  return {
    url = s.url .. req.path,
    method = req.method,
    body = req.body,
    headers = req.body and s.json_headers or s.headers,
    -- Rounded up: a positive timeout must never become 0 ms, libcurl's "no timeout".
    timeout_ms = ms(self.timeout),
    connect_timeout_ms = ms(self.connect_timeout),
    max_body = self.max_response_size,
    verify = self.ssl_verify,
    ca_file = self.ca_file,
    ca_path = self.ca_path,
    proxy = self.proxy,
    no_proxy = self.no_proxy,
    secret = s.key, -- redacted from every decoded answer (limitry.core)
  }
end

-- The libcurl options of every call but url, method and body, as one table the C core applies only
-- when it is not the table it applied last: made again (a new table) after one of the client
-- fields it comes from was assigned (see client_metatable), else the same table.
local function curl_config(self, s)
  local cfg = s.curl_config
  if cfg then return cfg end
  cfg = self:_request_options { path = "" }
  cfg.url, cfg.json_headers = nil, s.json_headers
  s.curl_config = cfg
  return cfg
end
-- curl_config and the full URL of path (with any user:password@ of base_url, which is never shown;
-- the last one is kept, since a loop usually asks for the same). s: the client's secrets.
local function curl_target(client, s, path)
  if s.last_path ~= path then s.last_path, s.last_url = path, s.url .. path end
  return curl_config(client, s), s.last_url
end
-- What limitry.async hands the multi handle for each attempt.
function async.curl_target(client, path) return curl_target(client, secrets[client], path) end

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
  cfg._origin = secrets[self].origin
  return cfg
end

-- Where Limitry's API lives: a 404 from a base_url without it is most likely a base_url without /v1.
local V1_HINT = "Limitry's API lives under /v1, e.g. " .. limitry.DEFAULT_BASE_URL

-- Fills in err's final message (errors.finish) with what helps most to fix it: where the key came
-- from for an AuthenticationError, where base_url came from for a failure to reach it, and a hint
-- to check base_url for a 404 that a right base_url cannot give: any 404 when base_url does not end
-- in /v1, or a 404 on a route Limitry has (one without an id in its path; an unknown id is a 404 of
-- its own). req: the request (method, path). sent_before: see errors.finish.
function Client:_finish(err, attempts, sent_before, req)
  local origin = secrets[self].origin
  local note, hint
  if err.name == "AuthenticationError" then
    note = origin.key
  elseif err.kind == "network" or err.kind == "timeout" or err.kind == "tls" or err.kind == "protocol" then
    note = origin.url
  elseif err.status == 404 and req then
    local path = self.base_url:match("^%a+://[^/]+(.*)$")
    if not path:find("/v1$") or api.known_route(req.method or "GET", req.path) then
      hint = "check base_url (" .. self.base_url .. ", " .. origin.url:gsub("^base_url ", "") .. "): " .. V1_HINT
    end
  end
  return errors.finish(err, attempts, self._host, sent_before, note, hint)
end
async.finish = function(c, err, attempts, sent_before, req) return c:_finish(err, attempts, sent_before, req) end

-- What the cosocket transport needs, computed on the first call made in nginx and again when a
-- client field it uses has changed since.
function Client:_cosocket()
  local s = secrets[self]
  local conn = s.cosocket
  if conn and conn.timeout == self.timeout and conn.connect_timeout == self.connect_timeout
    and conn.verify == self.ssl_verify and conn.max_body == self.max_response_size
    and conn.keepalive_timeout == self.keepalive_timeout and conn.pool_size == self.pool_size
    and conn.proxy == self.proxy and conn.ca_file == self.ca_file and conn.ca_path == self.ca_path then
    return conn
  end
  if self.proxy and self.proxy ~= "" then
    error("limitry: the cosocket transport does not go through a proxy (option proxy); "
      .. "use openresty = 'worker_thread' to call Limitry through one", 4)
  end
  if self.ca_file or self.ca_path then
    error("limitry: ca_file/ca_path do not reach nginx's cosockets: name the CA in nginx.conf with "
      .. "lua_ssl_trusted_certificate, or use openresty = 'worker_thread'", 4)
  end
  local target = cosocket.target(self.base_url)
  local ua = user_agent("ngx_lua/" .. tostring(ngx.config and ngx.config.ngx_lua_version), s.ua_extra)
  local lines = { ua }
  for i, line in ipairs(s.header_lines) do lines[i + 1] = line end
  s.cosocket = {
    target = target,
    head = cosocket.head(target, lines),
    verify = self.ssl_verify,
    timeout_ms = ms(self.timeout),
    connect_timeout_ms = ms(self.connect_timeout),
    max_body = self.max_response_size,
    keepalive_ms = ms(self.keepalive_timeout),
    pool_size = self.pool_size,
    pool_options = { pool = cosocket.pool_name(target, self.ssl_verify, s.key), pool_size = self.pool_size },
    -- calls that must not be sent twice: a pool nothing is ever put back into, so always a new connection
    fresh_options = { pool = cosocket.pool_name(target, self.ssl_verify, s.key) .. "|fresh" },
    -- the fields these came from, to notice a change
    timeout = self.timeout, connect_timeout = self.connect_timeout, keepalive_timeout = self.keepalive_timeout,
    proxy = self.proxy, ca_file = self.ca_file, ca_path = self.ca_path,
  }
  return s.cosocket
end

-- One attempt per transport: the result, or nil and the error value (protocol.interpret).
-- A request whose retry rule is "connect" (it must not be sent twice) goes out on a new
-- connection: a reused one can die after the request went out and before any answer, and then
-- neither transport can tell whether the server has it (libcurl would even send it again itself).
local FLAGS, SHAPES = protocol.FLAGS, protocol.SHAPES -- resources add their shapes to both
local FRESH = protocol.FRESH
local SEND = {
  curl = function(c, req)
    local h, shape, s = c.handle or c:_handle(), req.shape, secrets[c]
    local cfg, url = curl_target(c, s, req.path)
    local flags = FLAGS[shape]
    if req.retry == "connect" then flags = flags + FRESH end
    -- A 2xx JSON answer comes back decoded and the headers only on demand (limit decisions read them).
    local status, headers, body, n, doc = h:call(cfg, url, req.method, req.body, flags)
    if headers == false then
      if SHAPES[shape](doc) then return doc, nil, status end
      headers = h:headers()
    end
    local res, err = protocol.interpret(shape, s.key, status, headers, body, n, doc)
    return res, err, status
  end,
  cosocket = function(c, req)
    local conn = c:_cosocket()
    local status, a, b, d, e = cosocket.request(conn, cosocket.message(conn, req.method or "GET", req.path, req.body),
      req.retry == "connect")
    local res, err = protocol.interpret(req.shape, secrets[c].key, status, a, b, d, e)
    return res, err, status
  end,
}
local SLEEP = { curl = core.sleep, cosocket = function(s) ngx.sleep(s) end }

-- One call with retries, on the transport that suits where it runs (limitry.transport).
-- req: { path, method (default GET), body (JSON text), shape, retry ("safe" or "connect") }.
-- Returns the result, or nil, msg, err.
local function call_with_retries(self, req)
  if self.closed then error("limitry: this client is closed", 3) end
  -- Outside nginx, "auto" and "blocking" are libcurl without asking limitry.transport (the same
  -- shortcut as in start_call, written out on both hot paths).
  local how, mode = "curl", self.openresty
  if (mode ~= "auto" and mode ~= "blocking") or rawget(_G, "ngx") ~= nil then how = transport.select(self, 4) end
  if how == "worker_thread" then return require("limitry.ngx_thread").call(self, req) end
  local send = SEND[how]
  local attempt, sent = 0, false
  local log = self.log
  while true do
    attempt = attempt + 1
    local started = log and core.now()
    local res, err, status = send(self, req)
    if res ~= nil then
      if log then protocol.log_attempt(log, secrets[self].key, how, req, attempt, started, status) end
      return res
    end
    local delay = protocol.retry_delay(err, attempt, self, req.retry)
    if log then protocol.log_attempt(log, secrets[self].key, how, req, attempt, started, err.status, err, delay) end
    if not delay then
      self:_finish(err, attempt, sent, req)
      return nil, err.msg, err
    end
    sent = sent or err.sent
    SLEEP[how](delay)
  end
end
Client._call = call_with_retries

-- Starts req (see Client:_call) without waiting: an nginx light thread inside nginx, the libcurl
-- multi handle elsewhere. Returns the request object.
local function start_call(self, req, callback)
  if self.closed then error("limitry: this client is closed", 3) end
  local mode = self.openresty
  if ((mode ~= "auto" and mode ~= "blocking") or rawget(_G, "ngx") ~= nil) and transport.select(self, 4) ~= "curl" then
    return require("limitry.ngx_async").start(self, req, callback)
  end
  return async.start(self, req, callback)
end
Client._start = start_call

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
function Client:watch(fn) return async.watch(self, fn) end
function Client:socket_action(fd, events) return async.socket_action(self, fd, events) end

local function check_self(self, class, label, name)
  local mt = getmetatable(self)
  if mt ~= class and not (type(mt) == "table" and rawget(mt, "__class") == class) then
    error("limitry: call it as " .. label .. ":" .. name .. "(...) with a colon", 3)
  end
end

-- Client methods called with a dot get the same clear error as the resources' methods; the
-- async drivers, like the calls, refuse a closed client.
for _, name in ipairs { "usage", "close", "poll", "next_timeout", "fds" } do
  local method = Client[name]
  local refuses_closed = name ~= "usage" and name ~= "close"
  Client[name] = function(self, ...)
    check_self(self, Client, "client", name)
    if refuses_closed and self.closed then error("limitry: this client is closed", 2) end
    return method(self, ...)
  end
end

-- Splits an optional callback off the end of a start_* call's arguments.
local function split_callback(...)
  local n = select("#", ...)
  local args = { ... }
  if type(args[n]) == "function" then return args[n], args, n - 1 end
  return nil, args, n
end

-- Installs `name` (blocking: result or nil, msg, err) and its async twin start_ + name without a
-- leading get_ (the same arguments plus an optional callback; returns a request at once) on
-- class. build(...) returns the request (see Client:_call) or raises on a wrong argument.
-- memo (usage calls): the request of the last call with positional arguments that are not tables,
-- { req =, n =, a =, b =, c = }, which start_*(a, b, callback) reuses without calling build when
-- that call had the same two arguments.
local function define(class, label, name, build, memo)
  class[name] = function(self, ...)
    if getmetatable(self) ~= class then check_self(self, class, label, name) end
    return call_with_retries(self.client, build(...))
  end
  local start_name = "start_" .. name:gsub("^get_", "")
  local blocking_prefix = "^" .. (label .. ":" .. name .. ":"):gsub("%p", "%%%0")
  -- An argument error names the call that was made (start_*, not get_*).
  local function build_for_start(...)
    local ok, req = pcall(build, ...)
    if not ok then error(type(req) == "string" and req:gsub(blocking_prefix, label .. ":" .. start_name .. ":") or req, 0) end
    return req
  end
  class[start_name] = function(self, ...)
    if getmetatable(self) ~= class then check_self(self, class, label, start_name) end
    local n = select("#", ...)
    if n == 3 then -- the usual (start, end, callback), without a table
      local a, b, last = ...
      if type(last) == "function" then
        local req = memo and memo.n == 2 and memo.req
        if not (req and a == memo.a and b == memo.b) then req = build_for_start(a, b) end
        return start_call(self.client, req, last)
      end
    end
    local last = n > 0 and select(n, ...)
    if type(last) ~= "function" then return start_call(self.client, build_for_start(...)) end
    local callback, args
    callback, args, n = split_callback(...)
    return start_call(self.client, build_for_start(unpack(args, 1, n)), callback)
  end
end

for name, call in pairs(protocol.CALLS) do
  -- The request of the last call made with positional arguments that are not tables, reused while they
  -- are the same (requests are never changed): a loop asking for the same dates again pays neither
  -- the checks nor the encoding.
  -- start_*(a, b, callback) reads it directly (see define).
  local memo = {} -- { req, n, a, b, c }
  define(Usage, "usage", name, function(...)
    local n, a, b, c = select("#", ...), ...
    if memo.req and n == memo.n and a == memo.a and b == memo.b and c == memo.c then return memo.req end
    local req = { shape = call.shape, path = protocol.build_query(name, ...) }
    if n <= 3 and type(a) ~= "table" and type(b) ~= "table" and type(c) ~= "table" then
      memo.req, memo.n, memo.a, memo.b, memo.c = req, n, a, b, c
    end
    return req
  end, memo)
end

-- events(), quotas(), rate_limits(), quota_alerts(), customers(), project(): one object each per
-- client, made on first use.
local RESOURCES = {}
for resource, calls in pairs(api.CALLS) do
  if type(calls) == "table" then
    local class = {}
    class.__index = class
    for name, build in pairs(calls) do define(class, resource, name, build) end
    RESOURCES[resource] = class
    Client[resource] = function(self)
      check_self(self, Client, "client", resource)
      local field = "_" .. resource
      if not rawget(self, field) then self[field] = setmetatable({ client = self }, class) end
      return self[field]
    end
  end
end

-- client:track(event) and client:start_track(event [, callback]): check limits, then record.
function Client:track(...)
  check_self(self, Client, "client", "track")
  return self:_call(api.CALLS.track(...))
end
function Client:start_track(...)
  check_self(self, Client, "client", "start_track")
  local callback, args, n = split_callback(...)
  local ok, req = pcall(api.CALLS.track, unpack(args, 1, n))
  if not ok then error(type(req) == "string" and req:gsub("^client:track:", "client:start_track:") or req, 0) end
  return self:_start(req, callback)
end

-- client:request(method, path [, body [, options]]) and client:start_request(... [, callback]): a call
-- to an endpoint the library does not wrap (path relative to base_url, such as "/events"); the
-- answer's JSON as a plain table, errors and retries as for every call.
function Client:request(method, path, body, opts)
  check_self(self, Client, "client", "request")
  return self:_call(api.raw_request("client:request", method, path, body, opts))
end
function Client:start_request(...)
  check_self(self, Client, "client", "start_request")
  local callback, args, n = split_callback(...)
  local method, path, body, opts = unpack(args, 1, n)
  return self:_start(api.raw_request("client:start_request", method, path, body, opts), callback)
end

-- for event in events:each{ customer_id = ... } do ... end: every page, fetched as the loop goes
-- (following nextCursor while hasMore; an empty page with hasMore is not the end). A failed page
-- raises its error value, as io.lines raises on a read error.
RESOURCES.events.each = function(self, args)
  check_self(self, RESOURCES.events, "events", "each")
  local query = {}
  for k, v in pairs(args or {}) do query[k] = v end
  api.CALLS.events.list(query) -- raises now on a wrong argument
  local page, i = nil, 0
  return function()
    while true do
      if page and i < #page.data then
        i = i + 1
        return page.data[i]
      end
      if page and not (page.hasMore and page.nextCursor) then return nil end
      if page then query.cursor = page.nextCursor end
      local res, _, err = self:list(query)
      if not res then error(err, 2) end
      page, i = res, 0
    end
  end
end

-- A fresh idempotency key (32 hex digits, 128 bits from the OS's random source), for events that
-- are queued before they are sent: the key is fixed when the event is made, so every resend of it
-- counts once.
function limitry.idempotency_key() return core.random_id() end
function limitry.encode_event(ev) return api.encode_event(ev) end

-- The JSON decoder answers go through (integers stay integers on 5.3+, null is limitry.null):
-- value, or nil and a message naming the byte where the text stops being JSON.
function limitry.decode(text)
  if type(text) ~= "string" then error("limitry.decode: expected a string (got " .. type(text) .. ")", 2) end
  return core.decode(text)
end

limitry.Client = Client
limitry.Usage = Usage
limitry.resources = RESOURCES
return limitry
