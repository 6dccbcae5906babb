-- OpenResty: runs a blocking call on an nginx thread pool (ngx.run_worker_thread), so the
-- worker's event loop keeps serving other requests while libcurl waits. The thread's own Lua VM
-- loads this module again and runs M.run there; VMs are reused, and so is each VM's client (and
-- its keep-alive connection).
local M = {}

-- Phases in which ngx.run_worker_thread may be called (it yields the request's coroutine).
local YIELDABLE = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

function M.should_use(client)
  local mode = client.openresty
  if mode == "blocking" then return false end
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or type(ngx.run_worker_thread) ~= "function" or type(ngx.get_phase) ~= "function" then
    if mode == "worker_thread" then error("limitry: openresty = 'worker_thread' needs ngx.run_worker_thread (lua-nginx-module 0.10.20+)", 4) end
    return false
  end
  return YIELDABLE[ngx.get_phase()] == true
end

function M.call(client, shape, path)
  local errors = require "limitry.errors"
  local ok, res, msg, err = ngx.run_worker_thread(client.thread_pool, "limitry.ngx_thread", "run",
    client:_config(), shape, path)
  if not ok then
    -- The thread could not run at all: a missing thread_pool line or module path. That is set-up,
    -- not a runtime failure, so it raises like an argument error.
    error("limitry: ngx.run_worker_thread failed (" .. tostring(res) .. "); nginx.conf needs "
      .. "'thread_pool " .. client.thread_pool .. " threads=4;' at the top level and lua_package_path/"
      .. "lua_package_cpath that find limitry", 3)
  end
  if res ~= nil then return res end
  return nil, msg, errors.restore(err)
end

-- In the worker thread: one client per distinct configuration, kept for the VM's life.
local clients = {}

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

function M.run(cfg, shape, path)
  local limitry = require "limitry"
  local key = cache_key(cfg)
  local client = clients[key]
  if not client then
    client = limitry.new(cfg)
    clients[key] = client
  end
  local res, msg, err = client:_call(shape, path)
  if res ~= nil then return res end
  return nil, msg, setmetatable(err, nil)
end

return M
