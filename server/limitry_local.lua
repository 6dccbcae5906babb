-- limitry-local: start or stop the local Limitry-compatible server (nginx + its Lua module).
--
--   limitry-local start [--dir DIR] [--port N] [--key KEY] [--empty] [--faults]
--                       [--tls-cert FILE --tls-key FILE] [--delay MS] [--latency MS] [--api-limit N]
--   limitry-local stop  [--dir DIR]      (without --dir: $LIMITRY_SERVER_DIR, which start exports)
--
-- `start` prints shell `export` lines (LIMITRY_BASE_URL, LIMITRY_API_KEY, LIMITRY_SERVER_PID,
-- LIMITRY_SERVER_DIR) so that `eval "$(lua5.4 server/limitry-local start)"` configures the client
-- for every command run after it. A second `start` in a folder whose server runs prints that
-- server's export lines (and says so on stderr). `stop` returns once nginx's processes are gone.
-- --port 0 (the default) picks a free port. Events live in DIR/data/events.db (SQLite; an
-- events.jsonl of an older version is migrated into it once and kept as events.jsonl.migrated),
-- quotas, alerts and rate limits in DIR/data/config.jsonl; on the first start of a DIR the
-- deterministic sample data is loaded unless --empty is given.
-- --faults enables the test-only fault injection and request recording (see faults.lua).
-- --delay MS (test-only) holds every usage answer MS milliseconds, without blocking nginx.
--
-- A "Limitry stand-in" for load tests of gateways (see standin.lua):
-- --latency MS holds every /v1/... answer (every route, errors too) MS milliseconds, without
--   blocking nginx.
-- --api-limit N answers at most N requests per minute per API key (fixed windows aligned to the
--   minute, counted across workers in a shared dict); over it a 429
--   {"error":"Too many requests: the API limit is N requests per minute"} (no `allowed` field: the
--   client reads it as Limitry's own limit, not a limit decision) with Retry-After (seconds to the
--   window's end, at least 1), X-RateLimit-Limit: N, X-RateLimit-Remaining: 0 and X-RateLimit-Reset
--   (unix seconds).
-- With --faults, also: POST /_test/outage?seconds=S[&status=N] makes every /v1/... request answer N
--   (default 503, 400 to 599) with {"error": ...} and Retry-After: 1 for the next S seconds
--   (seconds=0 ends it); GET /_test/stats answers {"api_requests":n,"api_limited":n,
--   "outage_answers":n,"events":n}: /v1/... requests, API-limit 429s and outage answers since start,
--   and the events stored.
local socket = require "socket"

local M = {}

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local pwd = os.getenv("PWD") or io.popen("pwd"):read("*l")
  return pwd .. "/" .. p
end
-- The folder holding this file (and lua/limitry_server).
local here = abspath((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or ".")
M.DEFAULT_KEY = "lm_local_test_key"
M.INGEST_ONLY_KEY = "lm_local_ingest_only_key"


local function die(msg) error("limitry-local: " .. msg, 0) end

function M.parse_args(list)
  local opts = { dir = ".limitry-local", port = 0, key = M.DEFAULT_KEY }
  local i = 1
  while i <= #list do
    local a = list[i]
    if a == "--dir" or a == "--port" or a == "--key" or a == "--tls-cert" or a == "--tls-key" or a == "--delay"
      or a == "--latency" or a == "--api-limit" then
      opts[a:sub(3):gsub("-", "_")] = list[i + 1] or die(a .. " needs a value")
      if a == "--dir" then opts.dir_given = true end
      i = i + 2
    elseif a == "--empty" or a == "--faults" then
      opts[a:sub(3)] = true
      i = i + 1
    else
      die("unknown argument " .. a .. " (see the header of this script)")
    end
  end
  opts.port = tonumber(opts.port) or die("--port must be a number")
  if opts.delay then opts.delay = tonumber(opts.delay) or die("--delay must be a number of milliseconds") end
  if opts.latency then
    opts.latency = tonumber(opts.latency)
    if not opts.latency or opts.latency < 0 or opts.latency > 600000 then
      die("--latency must be a number of milliseconds from 0 to 600000")
    end
  end
  if opts.api_limit then
    opts.api_limit = tonumber(opts.api_limit)
    if not opts.api_limit or opts.api_limit < 1 or opts.api_limit ~= math.floor(opts.api_limit) or opts.api_limit > 1e9 then
      die("--api-limit must be a whole number of requests per minute from 1 to 1000000000")
    end
  end
  opts.dir = abspath(opts.dir)
  if not opts.key:match("^[%w_%-%.]+$") then die("--key may hold letters, digits, '_', '-' and '.' only") end
  return opts
end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read_pid(dir)
  local f = io.open(dir .. "/logs/nginx.pid")
  if not f then return nil end
  local pid = tonumber(f:read("*l"))
  f:close()
  return pid
end

-- os.execute returns true/nil on 5.2+ and a status number on 5.1.
local function run_ok(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- kill -0 succeeds on a zombie (a dead master nobody reaped, as in containers whose init does not
-- reap), so where /proc exists a process counts as alive only when its state is not Z or X.
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then
    local state = (f:read("*a") or ""):match(".*%) (%a)") -- the last ")": a name may hold one
    f:close()
    return state ~= nil and state ~= "Z" and state ~= "X"
  end
  local self = io.open("/proc/self/stat")
  if self then -- /proc works and the pid is gone
    self:close()
    return false
  end
  return run_ok("kill -0 " .. pid .. " 2>/dev/null")
end
M.alive = alive

-- What every nginx we start shares: the Lua module, a private prefix, one worker.
local NGINX_MAIN = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
%s
worker_processes 1;
daemon on;
pid logs/nginx.pid;
error_log logs/error.log notice;
%s
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path tmp/body;
  proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi;
  scgi_temp_path tmp/scgi;
%s
}
]]

-- The local Limitry server's http block.
local SERVER_HTTP = [[
  client_max_body_size 16m;
  client_body_buffer_size 16m;
  keepalive_requests 100000;
  keepalive_timeout 60s;
  gzip on;
  gzip_types application/json;
  gzip_min_length 256;
  lua_package_path "%s/lua/?.lua;;";
  lua_shared_dict limitry_test 32m;
  lua_shared_dict limitry_standin 1m;
  init_worker_by_lua_block {
    require("limitry_server.api").init(dofile(ngx.config.prefix() .. "conf.lua"))
  }
  server {
    listen 127.0.0.1:%d%s;
    # nginx's own error pages are HTML; the contract's errors are {"error": "..."}.
    # (URIs, not named locations: a request whose line or headers were refused has no URI to
    # keep, and nginx refuses a named location for it.)
    error_page 400 /_error/400;
    error_page 413 /_error/413;
    error_page 414 /_error/414;
    error_page 494 /_error/494;
    error_page 500 502 503 504 /_error/500;
    location ^~ /_error/ {
      internal;
      default_type application/json;
      location = /_error/400 { return 400 '{"error":"Bad request"}'; }
      location = /_error/413 { return 413 '{"error":"Request body too large: POST /v1/events and /v1/track take at most 1 MiB, other calls 16 MiB"}'; }
      location = /_error/414 { return 414 '{"error":"Request URI too long: at most 8 KiB"}'; }
      location = /_error/494 { return 400 '{"error":"Request headers too large: at most 8 KiB per line"}'; }
      location = /_error/500 { return 500 '{"error":"Internal server error"}'; }
    }
    # One event is at most a few KiB once checked; 1 MiB leaves room for whitespace.
    location = /v1/events {
      client_max_body_size 1m;
      client_body_buffer_size 1m;
      content_by_lua_block { require("limitry_server.api").handle() }
    }
    location = /v1/track {
      client_max_body_size 1m;
      client_body_buffer_size 1m;
      content_by_lua_block { require("limitry_server.api").handle() }
    }
    location / {
      content_by_lua_block { require("limitry_server.api").handle() }
    }
  }
]]

function M.nginx_conf(main_extra, http_body)
  local user = (io.popen("id -u"):read("*l") == "0") and "user root;" or ""
  return NGINX_MAIN:format(user, main_extra or "", http_body)
end

-- Plain HTTP: ready when /healthz answers 200 (the sample data is loaded by then).
-- TLS: ready when the port accepts connections.
local function wait_ready(port, pid, tls, seconds)
  local deadline = socket.gettime() + (seconds or 30)
  while socket.gettime() < deadline do
    local c = socket.tcp()
    c:settimeout(1)
    if c:connect("127.0.0.1", port) then
      if tls then
        c:close()
        return true
      end
      c:send("GET /healthz HTTP/1.0\r\n\r\n")
      local line = c:receive("*l")
      c:close()
      if line and line:match(" 200 ") then return true end
      -- 503: the server could not open its data (see its error.log); waiting will not help.
      if line and line:match(" 503 ") then return false end
    else
      c:close()
    end
    if pid and not alive(pid) then return false end
    socket.sleep(0.05)
  end
  return false
end

-- Starts nginx; returns { base_url, api_key, pid, dir, port }. Raises when it cannot.
function M.start(opts)
  opts = opts or {}
  opts.dir = abspath(opts.dir or ".limitry-local")
  opts.port = opts.port or 0
  opts.key = opts.key or M.DEFAULT_KEY
  os.execute("mkdir -p '" .. opts.dir .. "/data'")
  local port = opts.port ~= 0 and opts.port or free_port()
  local tls = ""
  if opts.tls_cert then
    tls = string.format(" ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s", abspath(opts.tls_cert), abspath(opts.tls_key or die("--tls-cert needs --tls-key")))
  end
  write_file(opts.dir .. "/conf.lua", string.format(
    "return { data_dir = %q, sample = %s, faults = %s, delay_ms = %s, latency_ms = %s, api_limit = %s,"
      .. " keys = { [%q] = 'all', [%q] = 'ingest' } }\n",
    opts.dir .. "/data", tostring(not opts.empty), tostring(opts.faults == true), tostring(opts.delay or "nil"),
    tostring(opts.latency or "nil"), tostring(opts.api_limit and string.format("%d", opts.api_limit) or "nil"),
    opts.key, M.INGEST_ONLY_KEY))
  -- An events.jsonl of an older version is migrated once into events.db before the server answers
  -- (about a minute per million events): wait for it.
  local wait
  local old, new = io.open(opts.dir .. "/data/events.jsonl"), io.open(opts.dir .. "/data/events.db")
  if old and not new then
    io.stderr:write("limitry-local: migrating ", opts.dir, "/data/events.jsonl into events.db (once)\n")
    wait = 1800
  end
  if old then old:close() end
  if new then new:close() end
  local pid = M.run_nginx(opts.dir, M.nginx_conf(nil, SERVER_HTTP:format(here, port, tls)), port,
    opts.tls_cert and "tcp" or "healthz", wait)
  local info = { base_url = string.format("%s://127.0.0.1:%d/v1", opts.tls_cert and "https" or "http", port), api_key = opts.key,
    pid = pid, dir = opts.dir, port = port }
  -- What a second `start` in this folder prints while this server runs.
  write_file(opts.dir .. "/logs/server.lua", string.format("return { base_url = %q, api_key = %q, pid = %d, dir = %q, port = %d }\n",
    info.base_url, info.api_key, pid, info.dir, port))
  return info
end

-- The server running from dir ({ base_url, api_key, pid, dir, port }), or nil.
function M.running(dir)
  dir = abspath(dir or ".limitry-local")
  local pid = read_pid(dir)
  if not pid or not alive(pid) then return nil end
  local chunk = loadfile(dir .. "/logs/server.lua")
  local ok, info = pcall(chunk or error)
  if not ok or type(info) ~= "table" or info.pid ~= pid then return { pid = pid, dir = dir } end
  return info
end

-- nginx lives in /usr/sbin on Debian, which a user's PATH often lacks: $NGINX, then PATH, then there.
function M.nginx_binary()
  local named = os.getenv("NGINX")
  if named and named ~= "" then return named end
  if run_ok("command -v nginx >/dev/null 2>&1") then return "nginx" end
  for _, path in ipairs { "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/openresty/nginx/sbin/nginx" } do
    if run_ok("test -x " .. path) then return path end
  end
  die("nginx is not installed (Debian: apt-get install nginx libnginx-mod-http-lua), or set NGINX to its path")
end

-- Writes dir/nginx.conf, starts nginx with dir as its prefix and waits until it serves: "healthz"
-- (GET /healthz answers 200) or "tcp" (the port accepts). Returns the master's pid.
function M.run_nginx(dir, conf, port, ready, wait)
  local old = read_pid(dir)
  if old and alive(old) then die("an nginx is already running from " .. dir .. " (pid " .. old .. ")") end
  for _, d in ipairs { "", "/logs", "/tmp" } do os.execute("mkdir -p '" .. dir .. d .. "'") end
  write_file(dir .. "/nginx.conf", conf)
  os.remove(dir .. "/logs/nginx.pid")
  -- nginx's LuaJIT reads LUA_PATH/LUA_CPATH (and runs LUA_INIT) at start: set for another Lua,
  -- as `luarocks --lua-version 5.4 path` sets them, they load 5.4's cjson.so into LuaJIT.
  local cmd = string.format("env -u LUA_PATH -u LUA_CPATH -u LUA_INIT %s -q -p '%s/' -c nginx.conf -e logs/error.log",
    M.nginx_binary(), dir)
  if not run_ok(cmd) then die("nginx failed to start; see " .. dir .. "/logs/error.log") end
  local pid = read_pid(dir)
  if not wait_ready(port, pid, ready == "tcp", wait) then
    -- Not ready is not started: leave no nginx behind for the caller to find.
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    die("nginx did not become ready; see " .. dir .. "/logs/error.log")
  end
  return pid
end

M.free_port = free_port

-- The pids of pid's children (nginx's workers), from /proc.
local function children(pid)
  local list = {}
  local f = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children")
  if f then
    for p in (f:read("*a") or ""):gmatch("%d+") do list[#list + 1] = tonumber(p) end
    f:close()
  end
  return list
end

local function exists(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then f:close() end
  return f ~= nil
end

-- How long stop waits for an exited master to be reaped by its parent (init, once nginx has
-- daemonized): until then `kill -0` still finds it. An init that never reaps does not hold stop longer.
M.REAP_WAIT = 5

-- Stops the server started from dir, by the pid nginx wrote there, and returns once its master and
-- workers are gone: exited (killed after 10 s), and reaped unless their parent takes more than
-- M.REAP_WAIT seconds (opts.reap_wait) to do it.
function M.stop(dir, opts)
  dir = abspath(dir or ".limitry-local")
  local pid = read_pid(dir)
  if not pid then
    die("no server pid in " .. dir .. "/logs/nginx.pid: pass --dir DIR, the folder given to `start` (or set LIMITRY_SERVER_DIR)")
  end
  local procs = children(pid)
  table.insert(procs, 1, pid)
  os.execute("kill " .. pid .. " 2>/dev/null")
  local function any(test)
    for _, p in ipairs(procs) do if test(p) then return true end end
    return false
  end
  local deadline = socket.gettime() + 10
  while any(alive) and socket.gettime() < deadline do socket.sleep(0.02) end
  if any(alive) then
    for _, p in ipairs(procs) do if alive(p) then os.execute("kill -9 " .. p .. " 2>/dev/null") end end
    while any(alive) and socket.gettime() < deadline + 5 do socket.sleep(0.02) end
  end
  deadline = socket.gettime() + (opts and opts.reap_wait or M.REAP_WAIT)
  while any(exists) and socket.gettime() < deadline do socket.sleep(0.02) end
  return pid
end

local function shell_quote(v)
  if v:match("^[%w_%-%.:/@%%+=,]+$") then return v end
  return "'" .. v:gsub("'", "'\\''") .. "'"
end

function M.main(argv)
  local command = argv[1]
  local rest = {}
  for i = 2, #argv do rest[#rest + 1] = argv[i] end
  local ok, err = pcall(function()
    if command == "start" then
      local opts = M.parse_args(rest)
      local info = M.running(opts.dir)
      if info then
        -- `eval "$(limitry-local start)"` twice must still leave the shell configured.
        io.stderr:write("limitry-local: a server is already running from ", info.dir, " (pid ", info.pid,
          "); printing its settings (the options given now are not applied: stop it first to change them)\n")
        if not info.base_url then die("no settings saved in " .. info.dir .. "/logs/server.lua: stop the server and start it again") end
      else
        info = M.start(opts)
      end
      -- export lines: `eval "$(limitry-local start)"` must configure the commands run after it.
      print("export LIMITRY_BASE_URL=" .. shell_quote(info.base_url))
      print("export LIMITRY_API_KEY=" .. shell_quote(info.api_key))
      print("export LIMITRY_SERVER_PID=" .. shell_quote(tostring(info.pid)))
      print("export LIMITRY_SERVER_DIR=" .. shell_quote(info.dir))
    elseif command == "stop" then
      local opts = M.parse_args(rest)
      -- Without --dir: the folder `start` exported (eval "$(limitry-local start)" sets it).
      local env_dir = os.getenv("LIMITRY_SERVER_DIR")
      local dir = opts.dir_given and opts.dir or (env_dir and env_dir ~= "" and env_dir) or opts.dir
      print("stopped " .. M.stop(dir))
    else
      die("usage: limitry-local start|stop [--dir DIR] [--port N] [--key KEY] [--empty] [--faults] [--delay MS]"
        .. " [--latency MS] [--api-limit N] [--tls-cert F --tls-key F]")
    end
  end)
  if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
end

return M
