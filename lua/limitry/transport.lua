-- Which transport moves a call's bytes, chosen per call from the client's `openresty` option and
-- where the call runs:
--   "curl"           libcurl, blocking the calling thread (plain Lua hosts; openresty = "blocking")
--   "cosocket"       ngx.socket.tcp inside nginx: only the calling request waits (the default there)
--   "worker_thread"  libcurl on an nginx thread pool (openresty = "worker_thread")
-- Every transport returns the same status, headers, body (or nil, kind, message) to
-- limitry.protocol, which alone turns them into results and errors.
local M = {}

M.MODES = { auto = true, cosocket = true, worker_thread = true, blocking = true }

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

-- level: for error(), the caller of the public method.
function M.select(client, level)
  local mode = client.openresty
  local ngx = nginx()
  if mode == "blocking" then return "curl" end
  if not ngx then
    if mode == "auto" then return "curl" end
    error("limitry: openresty = '" .. mode .. "' works only inside nginx (lua-nginx-module)", level)
  end
  local phase = ngx.get_phase()
  if not YIELDABLE[phase] then
    error("limitry: cannot call Limitry in nginx's " .. phase .. " phase without blocking the worker "
      .. "(no cosockets there): make the call from a timer (ngx.timer.at(0, fn)) or an access/content "
      .. "handler, or set openresty = 'blocking' to block the worker on purpose", level)
  end
  if mode == "worker_thread" then
    if type(ngx.run_worker_thread) ~= "function" then
      error("limitry: openresty = 'worker_thread' needs ngx.run_worker_thread (lua-nginx-module 0.10.20+)", level)
    end
    return "worker_thread"
  end
  return "cosocket"
end

return M
