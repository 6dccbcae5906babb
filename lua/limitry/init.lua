-- limitry: the Lua client for Limitry's API; this file is the facade users require.
--   local client = limitry.new(key | options)
--   local s, msg, err = client:usage():get_summary{ start_date = ..., end_date = ... }
-- It makes clients (options: limitry.options), builds every resource's methods and their start_*
-- twins from the operations of limitry.resources, and hands each call to limitry.call (blocking)
-- or limitry.async on the transport limitry.transport picks. It knows how no transport moves bytes.
-- Each client has a private state, never reachable from the client: the key, the URLs, the header
-- lines, and what each transport keeps for it (lua/limitry/transport/init.lua).

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
local options = require "limitry.options"
local resources = require "limitry.resources"
local transport = require "limitry.transport"
local multi = transport.multi

local limitry = {
  VERSION = "0.1.0",
  DEFAULT_BASE_URL = options.DEFAULT_BASE_URL,
  null = core.null,
  is_error = errors.is_error,
}

-- client -> its private state. Weak keys and values: the client's metatable holds its state (an
-- upvalue of __newindex), so a client dropped is collected with its state, on Lua 5.1 too, where a
-- weak-keyed table's values would keep their keys alive (the state names its client).
local states = setmetatable({}, { __mode = "kv" })

local Client = {}
Client.__index = Client
Client.__tostring = function(c) return "limitry.client (" .. c.base_url .. ")" end
Client.__close = function(c) c:close() end

-- The option fields a transport derives its configuration from (transport.WATCH) live in a table of
-- their own behind each client's metatable, so that an assignment (client.timeout = 5) is seen when
-- it happens and reaches the transport (transport.changed), instead of every call comparing them.
local FIELDS_MT = { __index = Client } -- methods are found behind the fields
local function client_metatable(state)
  local fields = setmetatable({}, FIELDS_MT)
  return {
    __index = fields,
    __newindex = function(c, k, v)
      if not transport.WATCH[k] then return rawset(c, k, v) end
      fields[k] = v
      transport.changed(state)
    end,
    __class = Client, -- what check_self looks for
    __tostring = Client.__tostring,
    __close = Client.__close,
  }
end

-- limitry.new(key) or limitry.new{ api_key = ..., base_url = ..., ... }
function limitry.new(arg)
  local opts = {}
  if type(arg) == "string" then
    opts.api_key = arg
  elseif type(arg) == "table" then
    for k, v in pairs(arg) do opts[k] = v end
  elseif arg ~= nil then
    options.raise("expected an API key string or an options table (got " .. type(arg) .. ")")
  end
  options.check(opts, transport.MODES)
  local key = opts.api_key or os.getenv("LIMITRY_API_KEY")
  if key == nil or key == "" then
    local ngx = rawget(_G, "ngx")
    if type(ngx) == "table" and ngx.config and ngx.config.nginx_version then
      -- nginx clears its workers' environment: a variable set in the shell never reaches them.
      options.raise("api_key is required: pass limitry.new(key), or set LIMITRY_API_KEY and add 'env LIMITRY_API_KEY;' "
        .. "to nginx.conf's main context (nginx clears its workers' environment)")
    end
    options.raise("api_key is required: pass limitry.new(key) or set LIMITRY_API_KEY")
  end
  if core.has_control(key) or key:find("%s") then
    options.raise("api_key must not contain spaces or control characters (CR, LF, ...)")
  end
  local env_url = os.getenv("LIMITRY_BASE_URL")
  if env_url == "" then env_url = nil end -- `LIMITRY_BASE_URL=` in a shell means "not set"
  local base_url = opts.base_url or env_url or limitry.DEFAULT_BASE_URL
  if not base_url:find("^[hH][tT][tT][pP][sS]?://[^/%s]+") or core.has_control(base_url) or base_url:find("[%s?#]") then
    options.raise("base_url must be an http:// or https:// URL without query or fragment, such as " .. limitry.DEFAULT_BASE_URL)
  end
  base_url = base_url:gsub("/+$", "")
  -- user:password@ in the URL is sent (libcurl turns it into Basic auth) but never shown: the
  -- client's base_url, tostring(client) and error messages carry the URL without it.
  local scheme, authority, rest = base_url:match("^(%a+://)([^/]+)(.*)$")
  local shown = scheme .. authority:gsub("^.*@", "") .. rest

  local lines, ua_extra = options.header_lines(key, opts.headers)
  local version = limitry.VERSION
  local state = {
    key = key, url = base_url, host = shown:match("^%a+://([^/]+)"), header_lines = lines,
    user_agent = function(http) return options.user_agent(version, http, ua_extra) end,
    -- where the key and the URL came from, for the errors they cause (never the key itself)
    origin = {
      key = opts.api_key and "key given to limitry.new" or "key from LIMITRY_API_KEY",
      url = opts.base_url and "base_url given to limitry.new" or env_url and "base_url from LIMITRY_BASE_URL"
        or "the default base_url",
    },
    resources = {}, -- the objects client:usage(), client:events(), ... return, made on first use
  }
  local c = setmetatable({ base_url = shown }, client_metatable(state))
  state.client = c
  states[c] = state
  for k, v in pairs(options.DEFAULTS) do c[k] = v end
  for k, v in pairs(opts) do
    if k ~= "api_key" and k ~= "headers" and k ~= "base_url" then c[k] = v end
  end
  -- A field of its own even when unset: every attempt reads it, and a miss would go through the
  -- metatables to the methods.
  if c.log == nil then c.log = false end
  return c
end

local function check_self(self, class, label, name)
  local mt = getmetatable(self)
  if mt ~= class and not (type(mt) == "table" and rawget(mt, "__class") == class) then
    error("limitry: call it as " .. label .. ":" .. name .. "(...) with a colon", 3)
  end
end

-- Frees the transports' connections and handles, and cancels async calls; safe to call twice.
function Client:close()
  transport.close(states[self])
  self.closed = true
end

-- The multi-handle transport's event loop (limitry.transport.multi): drives async calls; poll never
-- blocks longer than `timeout` seconds (default 0).
function Client:poll(timeout) return multi.poll(states[self], timeout) end
function Client:next_timeout() return multi.next_timeout(states[self]) end
function Client:fds() return multi.fds(states[self]) end
function Client:watch(fn) return multi.watch(states[self], fn) end
function Client:socket_action(fd, events) return multi.socket_action(states[self], fd, events) end

-- Client methods called with a dot get the same clear error as the resources' methods; the
-- event-loop methods refuse a closed client.
for _, name in ipairs { "close", "poll", "next_timeout", "fds", "watch", "socket_action" } do
  local method = Client[name]
  local refuses_closed = name ~= "close"
  Client[name] = function(self, ...)
    check_self(self, Client, "client", name)
    if refuses_closed and self.closed then error("limitry: this client is closed", 2) end
    return method(self, ...)
  end
end

-- The resources' methods (limitry.resources -> classes), and limitry.Usage, limitry.Client.
require("limitry.methods")(limitry, Client, states, check_self)

-- A fresh idempotency key (32 hex digits, 128 bits from the OS's random source), for events that
-- are queued before they are sent: the key is fixed when the event is made, so every resend of it
-- counts once.
function limitry.idempotency_key() return core.random_id() end

-- The JSON events:record would send for this event (checked as record checks it), without sending it.
local record = resources.events.record.body
function limitry.encode_event(ev) return (record("limitry.encode_event", ev)) end

-- The JSON decoder answers go through (integers stay integers on 5.3+, null is limitry.null):
-- value, or nil and a message naming the byte where the text stops being JSON.
function limitry.decode(text)
  if type(text) ~= "string" then error("limitry.decode: expected a string (got " .. type(text) .. ")", 2) end
  return core.decode(text)
end

limitry.Client = Client
return limitry
