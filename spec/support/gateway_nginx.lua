-- An nginx running limitry.gateway in front of a model API stand-in (examples/openresty/fake_model_api.lua),
-- as a user's nginx.conf would: the module's phase handlers on /v1/, a bare proxy_pass of the same
-- upstream on /bare/ (the reference for the added cost), /metrics, and the upstream itself on a
-- second port. Used by spec/gateway_spec.lua and bench/gateway.lua.
package.path = "server/?.lua;" .. package.path
local local_server = require "limitry_local"

local M = {}

local ROOT = os.getenv("PWD") or io.popen("pwd"):read("*l")

local HTTP = [[
  lua_package_path "@ROOT@/lua/?.lua;@ROOT@/lua/?/init.lua;@ROOT@/examples/openresty/?.lua;;";
  lua_package_cpath "@ROOT@/build/luajit/?.so;;";
  lua_shared_dict limitry @DICT@;
  lua_shared_dict upstream 1m;
  lua_socket_log_errors off;
  keepalive_requests 100000;
  init_by_lua_block {
    @INIT@
    require("limitry.gateway").configure(@CONFIG@)
  }
  init_worker_by_lua_block { require("limitry.gateway").init_worker() }
  upstream model_api {
    server 127.0.0.1:@UPSTREAM@;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:@PORT@ backlog=4096;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_ignore_client_abort @IGNORE_ABORT@;
    location /v1/ {
      access_by_lua_block      { require("limitry.gateway").access() }
      body_filter_by_lua_block { require("limitry.gateway").body_filter() }
      log_by_lua_block         { require("limitry.gateway").log() }
      proxy_pass http://model_api;
    }
    location /bare/ {
      rewrite ^/bare(/.*)$ $1 break;
      proxy_pass http://model_api;
    }
    location = /metrics { content_by_lua_block { require("limitry.gateway").metrics() } }
    location = /_pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
@EXTRA@
  }
  server {
    listen 127.0.0.1:@UPSTREAM@ backlog=4096;
    location = /_served { content_by_lua_block { require("fake_model_api").counts() } }
    location / { content_by_lua_block { require("fake_model_api").serve() } }
  }
]]

-- Lua source for a configuration table (strings, numbers, booleans, nested tables).
local function literal(v)
  if type(v) == "table" then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = string.format("[%q] = %s", k, literal(x)) end
    table.sort(parts)
    return "{ " .. table.concat(parts, ", ") .. " }"
  elseif type(v) == "string" then
    return string.format("%q", v)
  end
  return tostring(v)
end

-- opts: config (limitry.gateway.configure's table), workers (default 2), dict (default "64m"),
-- dir, ignore_client_abort (default true), extra (more locations for the gateway's server). Returns { port, upstream, dir, pid }.
function M.start(opts)
  local port, upstream = local_server.free_port(), local_server.free_port()
  local http = HTTP:gsub("@([%u_]+)@", { ROOT = ROOT, DICT = opts.dict or "64m", CONFIG = literal(opts.config or {}),
    UPSTREAM = tostring(upstream), PORT = tostring(port), INIT = opts.init or "", IGNORE_ABORT = opts.ignore_client_abort == false and "off" or "on",
    EXTRA = opts.extra or "" })
  local conf = local_server.nginx_conf("worker_shutdown_timeout 10s;", http)
    :gsub("worker_processes 1;", "worker_processes " .. (opts.workers or 2) .. ";")
    :gsub("worker_connections 1024;", "worker_connections 4096;")
  local pid = local_server.run_nginx(opts.dir, conf, port, "tcp")
  return { port = port, upstream = upstream, dir = opts.dir, pid = pid }
end

function M.stop(g)
  if g then pcall(local_server.stop, g.dir) end
end

-- Reloads nginx (HUP): new workers, the same shared dict.
function M.reload(g)
  os.execute("kill -HUP " .. g.pid)
end

return M
