-- limitry.cli.server: `limitry local start|stop|status`, the bundled local server (server/ in a
-- checkout; in the rock, the rock's own folder, beside bin/: copy_directories = { "server" }).
local common = require "limitry.cli.common"

local EXIT, fail, usage_error, number_arg = common.EXIT, common.fail, common.usage_error, common.number_arg
local out, emit_json, is_tty = common.out, common.emit_json, common.is_tty

local H = {} -- "group sub" -> function(ctx, a)

local function server_home(ctx, a)
  local candidates = {}
  if a.server_dir then candidates[1] = a.server_dir end
  local env = os.getenv("LIMITRY_SERVER_HOME")
  if env and env ~= "" then candidates[#candidates + 1] = env end
  local script = ctx.script or ""
  local bin = script:match("^(.*)/[^/]+$") or "."
  candidates[#candidates + 1] = bin .. "/../server"
  for _, dir in ipairs(candidates) do
    local f = io.open(dir .. "/limitry_local.lua", "rb")
    if f then
      f:close()
      return dir
    end
    if dir == a.server_dir then usage_error("--server-dir " .. dir .. " holds no limitry_local.lua") end
  end
  fail(EXIT.ERROR, "cannot find the local server (server/limitry_local.lua beside bin/); "
    .. "pass --server-dir DIR or set LIMITRY_SERVER_HOME")
end

local function load_server(ctx, a)
  local home = server_home(ctx, a)
  package.path = home .. "/?.lua;" .. package.path
  local ok, mod = pcall(require, "limitry_local")
  if not ok then
    local msg = tostring(mod):match("^[^\n]*")
    if msg:find("module 'socket' not found", 1, true) then
      fail(EXIT.ERROR, "the local server needs luasocket (Debian: apt-get install lua-socket)")
    end
    fail(EXIT.ERROR, "cannot load the local server from " .. home .. ": " .. msg)
  end
  return mod
end

local function server_folder(a)
  if a.dir then return a.dir end
  local env = os.getenv("LIMITRY_SERVER_DIR")
  if env and env ~= "" then return env end
  return ".limitry-local"
end

H["local start"] = function(ctx, a)
  local server = load_server(ctx, a)
  local argv = { "start", "--dir", server_folder(a) }
  if a.port then argv[#argv + 1] = "--port"; argv[#argv + 1] = tostring(number_arg(a.port, "--port", true, 0, 65535)) end
  if a.server_key then argv[#argv + 1] = "--key"; argv[#argv + 1] = a.server_key end
  if a.empty then argv[#argv + 1] = "--empty" end
  if a.faults then argv[#argv + 1] = "--faults" end
  -- The server's own command line prints the export lines, or one error line and exits 1.
  server.main(argv)
  if not ctx.quiet and is_tty(1) then
    io.stderr:write("limitry: local server started; configure this shell with: eval \"$(limitry local start)\"\n")
  end
end

H["local stop"] = function(ctx, a)
  local server = load_server(ctx, a)
  local dir = server_folder(a)
  local ok, res = pcall(server.stop, dir)
  if not ok then fail(EXIT.ERROR, tostring(res):gsub("^limitry%-local: ", "") .. "") end
  if not ctx.quiet then out("stopped the local server (pid " .. tostring(res) .. ") in " .. dir) end
end

H["local status"] = function(ctx, a)
  local server = load_server(ctx, a)
  local dir = server_folder(a)
  local info
  if server.running then
    info = server.running(dir)
  else
    local f = io.open(dir .. "/logs/nginx.pid", "rb")
    local pid = f and tonumber(f:read("*l") or "")
    if f then f:close() end
    if pid and server.alive(pid) then info = { pid = pid, dir = dir } end
  end
  if not info then
    if not ctx.quiet then out("not running (no server in " .. dir .. ")") end
    return EXIT.NO
  end
  if ctx.quiet then return end
  if ctx.output == "json" then return emit_json(ctx, { running = true, pid = info.pid, dir = info.dir or dir, baseUrl = info.base_url }) end
  out("running: pid " .. tostring(info.pid) .. (info.base_url and (", " .. info.base_url) or "") .. ", data in " .. (info.dir or dir))
end

return H
