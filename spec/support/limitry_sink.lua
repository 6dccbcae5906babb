-- A Limitry stand-in that does next to no work of its own, for measuring the gateway's cost alone
-- (bench/gateway.lua's comparison with a bare proxy): a real gateway does not share its cores with
-- Limitry, and the local server's ingest (SQLite, ~12 ms of CPU a batch of 1,000) on this machine's
-- two cores would be counted against the gateway. It answers after `latency` ms as Limitry would:
-- events:batch with {"count":N} (the events are counted, not stored), lists with no quotas and no
-- rate limits, checks with allowed. One nginx worker, at the normal priority (scheduled
-- SCHED_IDLE it starved while the gateway kept both cores busy: batches timed out and were sent again).
package.path = "server/?.lua;" .. package.path
local local_server = require "limitry_local"
local support = require "spec.support.server"

local M = {}

local HTTP = [[
  client_body_buffer_size 4m;
  client_max_body_size 8m;
  lua_shared_dict sink 1m;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:@PORT@ backlog=4096;
    location = /v1/events/batch {
      content_by_lua_block {
        ngx.sleep(@LATENCY@)
        ngx.req.read_body()
        local body, n, at = ngx.req.get_body_data() or "", 0, 1
        while true do
          at = body:find('"idempotencyKey"', at, true)
          if not at then break end
          n, at = n + 1, at + 16
        end
        ngx.shared.sink:incr("events", n, 0)
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"count":' .. n .. '}')
      }
    }
    location = /_events { content_by_lua_block { ngx.print(ngx.shared.sink:get("events") or 0) } }
    location ~ /check$ {
      content_by_lua_block {
        ngx.sleep(@LATENCY@)
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"allowed":true,"quotas":[],"rateLimits":[]}')
      }
    }
    location / {
      content_by_lua_block {
        ngx.sleep(@LATENCY@)
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"data":[]}')
      }
    }
  }
]]

-- opts.latency (ms, default 20). Returns { base_url, api_key, pid, dir, port }.
function M.start(opts)
  opts = opts or {}
  local port = local_server.free_port()
  local dir = support.tmpdir("sink")
  local http = HTTP:gsub("@(%u+)@", { PORT = tostring(port), LATENCY = tostring((opts.latency or 20) / 1000) })
  local pid = local_server.run_nginx(dir, local_server.nginx_conf(nil, http), port, "tcp")
  return { base_url = "http://127.0.0.1:" .. port .. "/v1", api_key = "sink-key", pid = pid, dir = dir, port = port }
end

-- Events the sink was sent.
function M.events(info)
  local _, body = support.http("GET", "http://127.0.0.1:" .. info.port .. "/_events")
  return tonumber(body)
end

function M.stop(info)
  if info then pcall(local_server.stop, info.dir) end
end

return M
