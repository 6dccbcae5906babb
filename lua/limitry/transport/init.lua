-- Transports: what moves an attempt's bytes. One folder, one file each:
--   curl           libcurl, blocking the calling thread (plain Lua hosts; openresty = "blocking")
--   multi          a libcurl multi handle: async calls (start_*) outside nginx, driven by
--                  client:poll or the host's event loop
--   cosocket       nginx's cosockets (ngx.socket.tcp): only the calling request waits (the default
--                  inside nginx)
--   worker_thread  libcurl on an nginx thread pool (openresty = "worker_thread")
--
-- The interface, which limitry.call (the one call lifecycle) is written against; `state` is the
-- client's private state (lua/limitry/init.lua: the key, the URLs, the header lines, the client and
-- its option fields), where each transport keeps its own per-client things under its own names:
--   t.name                 "curl", "multi", "cosocket" or "worker_thread" (the log entries' transport)
--   t.send(state, call, async)  one attempt of call ({ method, path, body, shape, retry, flags };
--                          async: the async call it belongs to, or nil): status, headers, body,
--                          code, decoded, handle for an answer (headers false: a 2xx JSON body
--                          decoded in C, `decoded`; handle:headers() has them), or nil, kind,
--                          message, code, sent for a failure (sent false: no byte of the request
--                          was written). A transport that answers later (multi) returns false; its
--                          driver runs call.run again with the answer when it comes.
--   t.sleep(seconds, async)  waits before the next attempt (false: the driver runs call.run again
--                          when it is due)
--   t.KINDS                its failures' kinds: kind -> { error name, retried }
--   t.close(state)         frees what it holds for this client (optional)
--   t.start(client, state, call, callback, level)  starts an async call (start_*) and returns it
--                          (limitry.async): on the multi handle, which drives it itself (and has
--                          poll(state, timeout) and cancel(async) too), or in an nginx light thread.
-- Configuration, change detection and refusals belong to each transport. The facade keeps the option
-- fields listed in WATCH behind each client's metatable and calls changed(state) when one is
-- assigned; the cosocket transport compares the fields it uses instead.
local curl = require "limitry.transport.curl"
local multi = require "limitry.transport.multi"
local cosocket = require "limitry.transport.cosocket"
local worker_thread = require "limitry.transport.worker_thread"

local M = { curl = curl, multi = multi, cosocket = cosocket, worker_thread = worker_thread }

M.MODES = { auto = true, cosocket = true, worker_thread = true, blocking = true }
M.WATCH = curl.WATCH -- libcurl's configuration serves curl, multi and worker_thread alike

function M.changed(state) curl.changed(state) end

function M.close(state)
  multi.close(state)
  curl.close(state)
end

-- Phases whose Lua code may yield, so cosockets, ngx.sleep and ngx.run_worker_thread work there.
local YIELDABLE = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

local function nginx()
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.get_phase) == "function" and type(ngx.socket) == "table" then return ngx end
  return nil
end

-- Inside nginx: the transport the client's `openresty` option and the phase allow. level: for
-- error(), the caller of the public method.
local function in_nginx(client, level)
  local mode = client.openresty
  local ngx = nginx()
  if mode == "blocking" then return curl end
  if not ngx then
    if mode == "auto" then return curl end
    error("limitry: openresty = '" .. mode .. "' works only inside nginx (lua-nginx-module)", level + 1)
  end
  local phase = ngx.get_phase()
  if not YIELDABLE[phase] then
    error("limitry: cannot call Limitry in nginx's " .. phase .. " phase without blocking the worker "
      .. "(no cosockets there): make the call from a timer (ngx.timer.at(0, fn)) or an access/content "
      .. "handler, or set openresty = 'blocking' to block the worker on purpose", level + 1)
  end
  if mode == "worker_thread" then
    if type(ngx.run_worker_thread) ~= "function" then
      error("limitry: openresty = 'worker_thread' needs ngx.run_worker_thread (lua-nginx-module 0.10.20+)", level + 1)
    end
    return worker_thread
  end
  return cosocket
end

-- The transport of a call made now (`async`: a start_* call): outside nginx, libcurl, blocking or
-- on the multi handle, without a look at nginx's phase. Raises (at `level`) where no transport may
-- run the call.
function M.pick(client, async, level)
  local mode = client.openresty
  if (mode == "auto" or mode == "blocking") and rawget(_G, "ngx") == nil then return async and multi or curl end
  local t = in_nginx(client, level + 1)
  if async and t == curl then return multi end
  return t
end

return M
