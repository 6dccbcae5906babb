-- The libcurl transport: one attempt on the client's handle (limitry.core), blocking the calling
-- thread. The handle is made on the client's first call and reused, so sequential calls share one
-- keep-alive connection (and one TLS session). Its configuration (the libcurl options of every call
-- but url, method and body) is one table the C core applies only when it is not the table applied
-- last: made again only after one of the WATCH fields was assigned (client.timeout = 5). The
-- multi-handle and worker-thread transports use the same configuration.
-- Per client (in the client's state): curl_handle, curl_config, curl_headers, curl_path/curl_url.
local core = require "limitry.core"

local M = { name = "curl" }

-- The client fields the configuration is made from.
M.WATCH = { timeout = true, connect_timeout = true, ssl_verify = true, max_response_size = true,
  ca_file = true, ca_path = true, proxy = true, no_proxy = true }

-- The C core's failure kinds: the error name, and whether an attempt that failed so is retried
-- (a TLS failure is not: a certificate does not change in a second).
M.KINDS = {
  timeout = { "TimeoutError", true }, network = { "NetworkError", true }, protocol = { "NetworkError", true },
  tls = { "NetworkError" }, decode = { "DecodeError" }, too_large = { "DecodeError" },
  memory = { "NetworkError" }, usage = { "NetworkError" }, fork = { "NetworkError" },
}

-- Seconds to whole milliseconds, rounded up: a positive timeout must never become 0, libcurl's
-- "no timeout".
local function ms(seconds) return math.max(1, math.ceil(seconds * 1000)) end
M.ms = ms

-- The header lines of every request, and of those with a JSON body (no Expect: 100-continue
-- round trip).
local function header_lists(state)
  local plain = { state.user_agent("libcurl/" .. core.curl_version) }
  for i, line in ipairs(state.header_lines) do plain[i + 1] = line end
  local json = { "Content-Type: application/json", "Expect:" }
  for i, line in ipairs(plain) do json[i + 2] = line end
  return { plain, json }
end

function M.config(state)
  local cfg = state.curl_config
  if cfg then return cfg end
  local c = state.client
  local lists = state.curl_headers or header_lists(state)
  state.curl_headers = lists
  cfg = {
    headers = lists[1], json_headers = lists[2],
    timeout_ms = ms(c.timeout), connect_timeout_ms = ms(c.connect_timeout), max_body = c.max_response_size,
    verify = c.ssl_verify, ca_file = c.ca_file, ca_path = c.ca_path, proxy = c.proxy, no_proxy = c.no_proxy,
    secret = state.key, -- redacted from every decoded answer (limitry.core)
  }
  state.curl_config = cfg
  return cfg
end

-- A WATCH field was assigned: the next call makes the configuration again.
function M.changed(state) state.curl_config = nil end

-- The full URL of path, with any user:password@ of base_url (sent, never shown); the last one is
-- kept, since a loop usually asks for the same.
function M.url(state, path)
  if state.curl_path ~= path then state.curl_path, state.curl_url = path, state.url .. path end
  return state.curl_url
end

function M.send(state, call)
  local h = state.curl_handle
  if not h then
    h = core.new()
    state.curl_handle = h
  end
  local path = call.path
  if state.curl_path ~= path then state.curl_path, state.curl_url = path, state.url .. path end
  local status, headers, body, code, doc = h:call(state.curl_config or M.config(state), state.curl_url, call.method,
    call.body, call.flags)
  return status, headers, body, code, doc, h
end

M.sleep = core.sleep

function M.close(state)
  if state.curl_handle then state.curl_handle:close() end
  state.curl_handle = nil
end

return M
