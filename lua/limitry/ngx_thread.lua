-- OpenResty, openresty = "worker_thread": runs a blocking libcurl call on an nginx thread pool
-- (ngx.run_worker_thread), so the worker's event loop keeps serving while libcurl waits. The
-- thread's own Lua VM loads this module again and runs M.run there.
--
-- Overload is an answer, not a crash: each worker lets at most `max_worker_thread_calls` calls
-- wait on the pool at once and fails the rest at once with a NetworkError (kind "overloaded").
-- That also keeps the pool's task queue below `max_queue` when the cap is set below it: a full
-- queue crashes lua-nginx-module before 0.10.32.
local errors = require "limitry.errors"
local protocol = require "limitry.protocol"

local M = {}

local in_flight = 0 -- calls of this worker waiting on the pool

local function overloaded(client, why)
  local err = errors.new { name = "NetworkError", kind = "overloaded", message = why, sent = false }
  errors.finish(err, 0, client._host)
  return nil, err.msg, err
end

function M.call(client, req)
  if in_flight >= client.max_worker_thread_calls then
    return overloaded(client, "too many Limitry calls waiting for the nginx thread pool (max_worker_thread_calls = "
      .. client.max_worker_thread_calls .. ")")
  end
  in_flight = in_flight + 1
  local log = client.log
  local called, ran, res, err, entries = pcall(ngx.run_worker_thread, client.thread_pool, "limitry.ngx_thread", "run",
    client:_config(), req, log and true or false)
  in_flight = in_flight - 1
  if called and ran then
    -- The `log` option: a function cannot cross into the thread's VM, so the thread collects the
    -- attempts' entries and they are handed to it here, in order, once the call is over.
    if log and entries then
      for _, e in ipairs(entries) do
        e.transport = "worker_thread"
        log(setmetatable(e, protocol.LogEntry))
      end
    end
    if res ~= nil then return res end
    return nil, err.msg, errors.restore(err)
  end
  local why = tostring(called and res or ran)
  if why:find("thread pool", 1, true) and why:find("not found", 1, true) then
    -- No thread_pool line: set-up, not a runtime failure, so it raises like an argument error.
    error("limitry: nginx.conf needs 'thread_pool " .. client.thread_pool .. " threads=8;' at the top level "
      .. "for openresty = 'worker_thread' (" .. why .. ")", 3)
  end
  if why:find("module", 1, true) and why:find("not found", 1, true) then
    error("limitry: the worker thread cannot load limitry: lua_package_path/lua_package_cpath must find it ("
      .. why .. ")", 3)
  end
  return overloaded(client, "the nginx thread pool could not take the call: " .. why)
end

-- In the worker thread's VM: a few clients, most recently used first, so clients that differ only
-- in options cannot pile up connections. The bound: LRU_SIZE clients (and connections) per VM.
local LRU_SIZE = 4
local recent = {} -- { { key = , client = }, ... }

local function cache_key(cfg)
  local parts = {}
  for k, v in pairs(cfg) do
    if type(v) == "table" then
      local hs = {}
      for hk, hv in pairs(v) do hs[#hs + 1] = tostring(hk) .. "=" .. tostring(hv) end
      table.sort(hs)
      v = table.concat(hs, "\n")
    end
    parts[#parts + 1] = k .. "\0" .. tostring(v)
  end
  table.sort(parts)
  return table.concat(parts, "\1")
end

local function client_for(cfg)
  local key = cache_key(cfg)
  for i, entry in ipairs(recent) do
    if entry.key == key then
      table.remove(recent, i)
      table.insert(recent, 1, entry)
      return entry.client
    end
  end
  local client = require("limitry").new(cfg)
  table.insert(recent, 1, { key = key, client = client })
  if #recent > LRU_SIZE then table.remove(recent).client:close() end
  return client
end

-- want_log: collect the `log` option's entries (plain tables) and return them third.
function M.run(cfg, req, want_log)
  local client = client_for(cfg)
  local entries
  if want_log then
    entries = {}
    client.log = function(e) entries[#entries + 1] = setmetatable(e, nil) end
  end
  local ok, res, _, err = pcall(client._call, client, req)
  client.log = false
  if not ok then error(res, 0) end
  if res ~= nil then return res, nil, entries end
  return nil, setmetatable(err, nil), entries
end

return M
