-- The server the client benchmarks talk to: nginx (1 worker) answering GET /v1/usage with a fixed
-- summary body over keep-alive, on plain HTTP and on HTTPS with a certificate made at start.
-- Answering from a `return` directive keeps the server's cost per request small and constant, so
-- the client's cost is what differs between rows. Loopback only.
package.path = "server/?.lua;" .. package.path
local local_server = require "limitry_local"

local M = {}

M.BODY = '{"totalEvents":500,"totalTokens":200000,"totalInputTokens":120000,"totalOutputTokens":80000,"totalCostCents":500}'

local HTTP = [[
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:HTTP_PORT backlog=4096;
    location = /v1/usage { default_type application/json; return 200 'BODY'; }
  }
  server {
    listen 127.0.0.1:HTTPS_PORT ssl backlog=4096;
    ssl_certificate DIR/server.pem;
    ssl_certificate_key DIR/server.key;
    ssl_session_cache shared:bench:1m;
    location = /v1/usage { default_type application/json; return 200 'BODY'; }
  }
]]

local function sh(cmd)
  local r = os.execute(cmd .. " >/dev/null 2>&1")
  if not (r == true or r == 0) then error("failed: " .. cmd, 0) end
end

-- A self-signed certificate for 127.0.0.1 that clients trust through ca_file / cafile.
local function make_cert(dir)
  sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=127.0.0.1' -addext 'subjectAltName=IP:127.0.0.1' "
    .. "-keyout '%s/server.key' -out '%s/server.pem'"):format(dir, dir))
end

-- Returns { url, https_url, ca_file, dir, pid }; raises when nginx does not come up.
function M.start(dir)
  -- A run killed from outside (timeout, ^C) leaves its nginx behind: stop that one, by the pid it
  -- wrote in this folder, before the folder is wiped.
  local f = io.open(dir .. "/logs/nginx.pid")
  if f then
    f:close()
    pcall(local_server.stop, dir)
  end
  os.execute("rm -rf '" .. dir .. "' && mkdir -p '" .. dir .. "'")
  make_cert(dir)
  local http_port, https_port = local_server.free_port(), local_server.free_port()
  local conf = HTTP:gsub("HTTP_PORT", tostring(http_port)):gsub("HTTPS_PORT", tostring(https_port))
    :gsub("DIR", dir):gsub("BODY", M.BODY)
  local pid = local_server.run_nginx(dir, local_server.nginx_conf(nil, conf), http_port, "tcp")
  return {
    url = ("http://127.0.0.1:%d/v1"):format(http_port),
    https_url = ("https://127.0.0.1:%d/v1"):format(https_port),
    ca_file = dir .. "/server.pem", dir = dir, pid = pid,
  }
end

function M.stop(server)
  local_server.stop(server.dir)
end

return M
