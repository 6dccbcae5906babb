-- The worker-thread transport (OpenResty, openresty = "worker_thread"): each attempt runs the
-- libcurl transport's transfer on an nginx thread pool (ngx.run_worker_thread), so the worker's
-- event loop keeps serving while libcurl waits; retries sleep with ngx.sleep in the worker, holding
-- no thread. The thread's own Lua VM loads this module again and runs M.attempt there, on a
-- handle it keeps for the configuration (the 4 most recently used per VM).
--
-- Overload is an answer, not a crash: each worker lets at most `max_worker_thread_calls` attempts
-- wait on the pool at once and fails the rest at once with a NetworkError (kind "overloaded", not
-- retried, nothing sent). That also keeps the pool's task queue below `max_queue` when the cap is
-- set below it: a full queue crashes lua-nginx-module before 0.10.32. A missing thread_pool line,
-- or a lua_package_path the thread cannot load limitry from, raises naming the line to add.
local core = require "limitry.core"
local curl = require "limitry.transport.curl"
local async = require "limitry.async"

local M = { name = "worker_thread" }

M.KINDS = setmetatable({ overloaded = { "NetworkError" } }, { __index = curl.KINDS })

local in_flight = 0 -- attempts of this worker waiting on the pool

-- The failure of an attempt the pool could not take (nothing was sent).
local function overloaded(why) return nil, "overloaded", why, nil, false end

function M.send(state, call)
  local c = state.client
  if in_flight >= c.max_worker_thread_calls then
    return overloaded("too many Limitry calls waiting for the nginx thread pool (max_worker_thread_calls = "
      .. c.max_worker_thread_calls .. ")")
  end
  in_flight = in_flight + 1
  local called, ran, status, headers, body, code, doc = pcall(ngx.run_worker_thread, c.thread_pool,
    "limitry.transport.worker_thread", "attempt", curl.config(state), curl.url(state, call.path), call.method,
    call.body, call.flags)
  in_flight = in_flight - 1
  if called and ran then return status, headers, body, code, doc end
  local why = tostring(called and status or ran)
  if why:find("thread pool", 1, true) and why:find("not found", 1, true) then
    -- No thread_pool line: set-up, not a runtime failure, so it raises like an argument error.
    error("limitry: nginx.conf needs 'thread_pool " .. c.thread_pool .. " threads=8;' at the top level "
      .. "for openresty = 'worker_thread' (" .. why .. ")", 3)
  end
  if why:find("module", 1, true) and why:find("not found", 1, true) then
    error("limitry: the worker thread cannot load limitry: lua_package_path/lua_package_cpath must find it ("
      .. why .. ")", 3)
  end
  return overloaded("the nginx thread pool could not take the call: " .. why)
end

function M.sleep(seconds) ngx.sleep(seconds) end

M.start = async.in_threads(M) -- async calls run in nginx light threads

-- In the worker thread's VM: a few handles, most recently used first, one per configuration, so
-- clients that differ only in options cannot pile up connections. The bound: LRU_SIZE handles
-- (and connections) per VM.
local LRU_SIZE = 4
local recent = {} -- { { key =, handle =, config = }, ... }

local function cache_key(cfg)
  local parts = {}
  for k, v in pairs(cfg) do
    if type(v) == "table" then v = table.concat(v, "\n") end
    parts[#parts + 1] = k .. "\0" .. tostring(v)
  end
  table.sort(parts)
  return table.concat(parts, "\1")
end

local function handle_for(cfg)
  local key = cache_key(cfg)
  for i, entry in ipairs(recent) do
    if entry.key == key then
      table.remove(recent, i)
      table.insert(recent, 1, entry)
      return entry.handle, entry.config
    end
  end
  -- The configuration table is kept: the C core applies a configuration again only when it is
  -- another table, and each attempt hands this VM a copy.
  local entry = { key = key, handle = core.new(), config = cfg }
  table.insert(recent, 1, entry)
  if #recent > LRU_SIZE then table.remove(recent).handle:close() end
  return entry.handle, entry.config
end

-- One attempt, in the thread's VM: what the libcurl transport's send returns, with the headers
-- always read (a handle cannot cross back into the worker).
function M.attempt(cfg, url, method, body, flags)
  local h, config = handle_for(cfg)
  local status, headers, text, code, doc = h:call(config, url, method, body, flags)
  if headers == false then headers = h:headers() end
  return status, headers, text, code, doc
end

return M
