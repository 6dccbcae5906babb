-- limitry.cli: the `limitry` command (bin/limitry). Usage reports, event imports, quotas, rate
-- limits, alerts, checks and the local server from a shell, on the library's public API
-- (limitry.new, its resources, client:request, limitry.recorder). See docs/cli.md.
--
-- Exit status: 0 done; 1 a Limitry or network error (or a failure of the local server); 2 a usage
-- error (a wrong flag or value, no API key); 3 a "no" (check or track refused, local status: not
-- running); 4 events import: lines that were not imported (bad input, or refused by Limitry).
-- Errors are one line on stderr, "limitry: ...", naming the fix where there is one. The API key
-- is never printed.
--
-- The commands live in limitry.cli.usage, .events, .limits, .api and .server (a table of handlers
-- each, keyed "group sub"), their grammar in limitry.cli.parser, what they share in
-- limitry.cli.common.
local limitry = require "limitry"
local common = require "limitry.cli.common"
local parser_of = require "limitry.cli.parser"

local M = {}

M.EXIT = common.EXIT
local EXIT, Failure, usage_error, number_arg, is_tty = common.EXIT, common.Failure, common.usage_error, common.number_arg,
  common.is_tty
local OUTPUTS, COMMON = parser_of.OUTPUTS, parser_of.COMMON

local H = {} -- "group sub" -> function(ctx, a)
for _, name in ipairs { "usage", "events", "limits", "api", "server" } do
  for command, handler in pairs(require("limitry.cli." .. name)) do H[command] = handler end
end

M.build_parser = parser_of.build

-- Main ------------------------------------------------------------------------------------------

local function output_format(a, command)
  local allowed, piped = OUTPUTS.default, "json"
  if command == "events list" then allowed, piped = OUTPUTS.events_list, "ndjson" end
  if command == "get" or command == "post" or command == "put" or command == "delete" then allowed = { "json" } end
  local o = a.output
  if o then
    for _, v in ipairs(allowed) do if v == o then return o end end
    usage_error("--output must be one of " .. table.concat(allowed, ", ") .. " for " .. command .. " (got '" .. o .. "')")
  end
  if command == "events import" then return is_tty(1) and "table" or "json" end
  return is_tty(1) and "table" or piped
end

-- Runs the command line (argv without the program name: arg). Returns the exit status.
function M.main(argv, opts)
  opts = opts or {}
  local list = {}
  for i = 1, #argv do list[i] = argv[i] end
  local parser, paths = parser_of.build()
  local secret -- the key, redacted from anything printed
  local function report(msg)
    if msg == nil then return end
    msg = tostring(msg):gsub("\n", "; ")
    if secret and #secret > 0 then
      local i = 1
      while true do
        local s, e = msg:find(secret, i, true)
        if not s then break end
        msg = msg:sub(1, s - 1) .. "[REDACTED]" .. msg:sub(e + 1)
        i = s + 10
      end
    end
    io.stderr:write("limitry: ", msg, "\n")
  end

  local function run()
    parser.error = function(current, msg)
      local path = paths[current] or "limitry"
      usage_error(msg:gsub("\n", "; ") .. " (see " .. path .. " --help)")
    end
    local a = parser:parse(list)
    for _, name in ipairs(COMMON) do
      if a[name] == nil then a[name] = a["root_" .. name] end
    end
    local command = a.command
    if a.sub then command = command .. " " .. a.sub end
    local handler = H[command]
    if not handler then usage_error("unknown command '" .. command .. "' (see limitry --help)") end
    local ctx = { script = opts.script, quiet = a.quiet }
    if command:find("^local ") then
      ctx.output = a.output or "table"
      if ctx.output ~= "table" and ctx.output ~= "json" then usage_error("--output must be table or json") end
    else
      ctx.output = output_format(a, command)
    end
    ctx.pretty = ctx.output == "json" and is_tty(1)
    local client
    local base_url_text
    ctx.base_url_shown = function() return base_url_text or "the base URL" end
    ctx.client = function(extra)
      if client and not extra then return client end
      local key = a.key
      if key == "-" then
        key = io.stdin:read("*l")
        if not key or key:match("^%s*$") then usage_error("--key -: no key on stdin") end
        key = key:match("^%s*(.-)%s*$")
        a.key = key
      end
      ctx.key_source = "key from --key"
      if key == nil or key == "" then key, ctx.key_source = os.getenv("LIMITRY_API_KEY"), "key from LIMITRY_API_KEY" end
      if key == nil or key == "" then
        usage_error("no API key: set LIMITRY_API_KEY or pass --key KEY (--key - reads it from stdin)")
      end
      secret = key
      local o = { api_key = key, base_url = a.base_url, timeout = number_arg(a.timeout, "--timeout", false, 0.001, 1e6) }
      for k, v in pairs(extra or {}) do o[k] = v end
      local ok, c = pcall(limitry.new, o)
      if not ok then
        local msg = tostring(c):gsub("^limitry%.new: ", "")
        if msg:find("^base_url") then
          usage_error("the base URL (--base-url or LIMITRY_BASE_URL) must be an http:// or https:// URL without query, such as "
            .. limitry.DEFAULT_BASE_URL)
        end
        if msg:find("^api_key") then usage_error("the API key must not contain spaces or control characters") end
        usage_error(msg)
      end
      base_url_text = c.base_url
      if not extra then client = c end
      return c
    end
    local code = handler(ctx, a)
    if client then client:close() end
    return code or EXIT.OK
  end

  local ok, res = xpcall(run, function(e)
    if getmetatable(e) == Failure then return e end
    if type(e) == "string" and e:find("interrupted!", 1, true) then
      return setmetatable({ code = 130, msg = "interrupted (an import can be run again: events already sent count once)" }, Failure)
    end
    return { internal = true, msg = tostring(e), trace = debug.traceback("", 2) }
  end)
  if ok then
    io.stdout:flush()
    return res
  end
  io.stdout:flush()
  if getmetatable(res) == Failure then
    report(res.msg)
    return res.code
  end
  report("internal error: " .. res.msg:match("^[^\n]*") .. " (please report it; LIMITRY_DEBUG=1 shows where)")
  if os.getenv("LIMITRY_DEBUG") == "1" then io.stderr:write(res.trace, "\n") end
  return EXIT.ERROR
end

return M
