-- Starts and stops real local servers for the specs (nginx + the limitry_server Lua module) and
-- reads what they recorded. Each spec file starts its own server in setup() and stops it in
-- teardown(), on a free port under a fresh temporary folder.
package.path = "server/?.lua;" .. package.path
local local_server = require "limitry_local"
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"

local M = {}

local counter = 0
local function tmpdir(tag)
  counter = counter + 1
  local base = os.getenv("LIMITRY_TEST_TMP") or ".test-tmp"
  local dir = string.format("%s/%s-%d-%d-%d", base, tag, os.time(), math.random(1, 1e6), counter)
  assert(os.execute("mkdir -p '" .. dir .. "'"))
  return dir
end
M.tmpdir = tmpdir

-- opts: faults (default true), empty (default true), tls_cert, tls_key, dir, delay, latency, api_limit
function M.start(opts)
  opts = opts or {}
  local info = local_server.start {
    dir = opts.dir or tmpdir("server"),
    faults = opts.faults ~= false,
    empty = opts.empty ~= false,
    tls_cert = opts.tls_cert,
    tls_key = opts.tls_key,
    delay = opts.delay,
    latency = opts.latency,
    api_limit = opts.api_limit,
  }
  info.root = info.base_url:gsub("/v1$", "")
  return info
end

-- Returns once nginx's processes have exited (not waiting for init to reap the master: the specs
-- stop many servers, and only `limitry-local stop` promises that).
function M.stop(info)
  if info then local_server.stop(info.dir, { reap_wait = 0 }) end
end

-- Raw HTTP helpers (luasocket), independent of the client under test.
function M.http(method, url, body, headers)
  local out = {}
  headers = headers or {}
  if body then headers["Content-Length"] = tostring(#body) end
  local _, status, resp_headers = http.request {
    method = method, url = url, headers = headers,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(out),
  }
  return status, table.concat(out), resp_headers
end

-- A client of `server` whose requests the server records under a fresh test id (returned too):
-- `defaults` are the spec's options, `opts` override them, `headers` are added to the request
-- headers (X-Limitry-Fault, X-Limitry-Now, ...).
function M.client(server, tag, defaults, opts, headers)
  local id = M.test_id(tag)
  local o = { api_key = server.api_key, base_url = server.base_url }
  for k, v in pairs(defaults or {}) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  o.headers = { ["X-Limitry-Test-Id"] = id }
  for k, v in pairs(headers or {}) do o.headers[k] = v end
  return require("limitry").new(o), id
end

local unique = 0
function M.test_id(tag)
  unique = unique + 1
  return string.format("%s-%d-%d", tag or "t", math.floor(socket.gettime() * 1000), unique)
end

-- What the server recorded for test id: { count, connections, requests = { ... } }.
function M.recorded(info, id)
  local core = require "limitry.core"
  local status, body = M.http("GET", info.root .. "/_test/requests?id=" .. id)
  assert(status == 200, "recording endpoint answered " .. tostring(status))
  return assert(core.decode(body))
end

-- A fault header value with a JSON body percent-encoded.
function M.json_fault(json, extra)
  return (extra and (extra .. ";") or "") .. "json=" .. require("limitry.core").percent_encode(json)
end

-- A port nothing listens on.
-- The options a raw limitry.core handle requires (the C core has no defaults: the facade owns them),
-- with those of t on top: for specs that call handle:request, handle:call or multi:add directly.
function M.core_options(t)
  local o = { timeout_ms = 30000, connect_timeout_ms = 10000, max_body = 16 * 1024 * 1024, verify = true }
  for k, v in pairs(t or {}) do o[k] = v end
  return o
end

-- For specs that look under a client: records every handle core.new makes (`handles`) and the
-- configuration tables handle:call is given (`configs`); with `fail_add` set to a message,
-- multi:add raises it (as a refused option or a failed curl_multi_add_handle does). restore()
-- puts the core back as it was.
function M.watch_core()
  local core = require "limitry.core"
  local seen = { handles = {}, configs = {} }
  local new = core.new
  local probe = new()
  local handle_methods = getmetatable(probe).__index
  probe:close()
  local probe_multi = core.multi()
  local multi_methods = getmetatable(probe_multi).__index
  probe_multi:close()
  local call, add = handle_methods.call, multi_methods.add
  core.new = function()
    local h = new()
    seen.handles[#seen.handles + 1] = h
    return h
  end
  handle_methods.call = function(h, cfg, ...)
    seen.configs[#seen.configs + 1] = cfg
    return call(h, cfg, ...)
  end
  multi_methods.add = function(m, ...)
    if seen.fail_add then error(seen.fail_add, 0) end
    return add(m, ...)
  end
  function seen.restore()
    core.new, handle_methods.call, multi_methods.add = new, call, add
  end
  return seen
end

function M.closed_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

function M.sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok == true or ok == 0, "failed: " .. cmd)
end

-- A throwaway CA (dir/ca.pem) and a certificate for 127.0.0.1 signed by it (dir/server.pem and
-- dir/server.key), made with openssl at test time. Returns dir.
function M.make_pki(dir)
  M.sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=limitry test CA' "
    .. "-keyout %s/ca.key -out %s/ca.pem"):format(dir, dir))
  M.sh(("openssl req -newkey rsa:2048 -nodes -subj '/CN=127.0.0.1' -keyout %s/server.key -out %s/server.csr")
    :format(dir, dir))
  local ext = assert(io.open(dir .. "/ext.cnf", "w"))
  ext:write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
  ext:close()
  M.sh(("openssl x509 -req -in %s/server.csr -CA %s/ca.pem -CAkey %s/ca.key -CAcreateserial -days 2 "
    .. "-extfile %s/ext.cnf -out %s/server.pem"):format(dir, dir, dir, dir, dir))
  return dir
end

M.now = socket.gettime
return M
