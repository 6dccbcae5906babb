-- "Limitry stand-in" behaviour for load tests of gateways: what the real service does to a caller
-- beyond answering (latency, its own API limit, outages), cheap enough for thousands of requests/s.
-- Every bit of shared state lives in the shared dict `limitry_standin`, so it holds for every nginx
-- worker alike.
--
--   --latency MS     every /v1/... answer is held MS milliseconds (ngx.sleep: nginx is not blocked)
--   --api-limit N    at most N requests per minute per API key, in fixed windows aligned to the
--                    minute; over it a 429 whose body has no `allowed` field (Limitry's own limit,
--                    not a limit decision), with Retry-After and X-RateLimit-*
--   with --faults:   POST /_test/outage?seconds=S&status=503 (every /v1/... request answers that
--                    status for S seconds; seconds=0 ends it) and GET /_test/stats (counters since
--                    start: api_requests, api_limited, outage_answers, events)
local M = {}

local dict
local config
local floor, ceil = math.floor, math.ceil

local function json_reply(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  if headers then for k, v in pairs(headers) do ngx.header[k] = v end end
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

function M.init(conf)
  config = conf
  dict = ngx.shared.limitry_standin
end

-- The counters of GET /_test/stats; `events` is the store's own count.
local COUNTERS = { "api_requests", "api_limited", "outage_answers" }

function M.stats(stored_events)
  local parts = {}
  for i, name in ipairs(COUNTERS) do parts[i] = string.format('"%s":%d', name, dict:get(name) or 0) end
  parts[#parts + 1] = string.format('"events":%d', stored_events)
  return "{" .. table.concat(parts, ",") .. "}"
end

-- POST /_test/outage?seconds=S&status=N: every /v1/... request answers N (default 503) for the next
-- S seconds (fractions allowed, at most a day); seconds=0 ends an outage at once.
function M.outage_control(now)
  if ngx.req.get_method() ~= "POST" then
    return json_reply(405, '{"error":"Method not allowed: use POST"}', { Allow = "POST" })
  end
  local args = ngx.req.get_uri_args(10)
  local seconds = tonumber(type(args.seconds) == "string" and args.seconds or nil)
  if not seconds or seconds ~= seconds or seconds < 0 or seconds > 86400 then
    return json_reply(400, '{"error":"seconds is required: a number from 0 to 86400"}')
  end
  local status = 503
  if args.status ~= nil then
    status = type(args.status) == "string" and args.status:match("^%d%d%d$") and tonumber(args.status)
    if not status or status < 400 or status > 599 then
      return json_reply(400, '{"error":"status must be an HTTP status from 400 to 599"}')
    end
  end
  if seconds == 0 then
    dict:delete("outage")
    return json_reply(200, '{"outage":false}')
  end
  local ok, err = dict:set("outage", status, seconds)
  if not ok then return json_reply(500, '{"error":"cannot store the outage: ' .. tostring(err) .. '"}') end
  return json_reply(200, string.format('{"outage":true,"status":%d,"until":%.3f}', status, now + seconds))
end

-- Runs before every /v1/... request is routed. Returns true when it answered the request itself.
function M.before(key, now)
  dict:incr("api_requests", 1, 0)
  if config.latency_ms then ngx.sleep(config.latency_ms / 1000) end
  local outage = dict:get("outage")
  if outage then
    dict:incr("outage_answers", 1, 0)
    json_reply(outage, string.format('{"error":"Service unavailable: a simulated outage (status %d)"}', outage),
      { ["Retry-After"] = "1" })
    return true
  end
  local limit = config.api_limit
  if limit and key then
    local window = floor(now / 60)
    local n = dict:incr("l:" .. key .. ":" .. window, 1, 0, 120)
    if n and n > limit then
      dict:incr("api_limited", 1, 0)
      local reset = (window + 1) * 60
      json_reply(429, string.format('{"error":"Too many requests: the API limit is %d requests per minute"}', limit), {
        ["Retry-After"] = tostring(math.max(1, ceil(reset - now))),
        ["X-RateLimit-Limit"] = tostring(limit),
        ["X-RateLimit-Remaining"] = "0",
        ["X-RateLimit-Reset"] = tostring(reset),
      })
      return true
    end
  end
  return false
end

return M
