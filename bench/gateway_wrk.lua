-- luacheck: globals init request wrk
-- wrk script for bench/gateway.lua: model calls over 20 customers ("capped" one request in 20),
-- alternating OpenAI chat completions and Anthropic messages, half of them streamed.
--   wrk -s bench/gateway_wrk.lua ... http://127.0.0.1:PORT/v1   (or /bare for the plain proxy)
local counter = 0
local prefix = "/v1"

function init(args)
  if args[1] then prefix = args[1] end
  counter = math.random(0, 1000000)
end

local BODIES = {
  { "/chat/completions", '{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}' },
  { "/messages", '{"model":"claude-3-5-sonnet","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}' },
  { "/chat/completions", '{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello"}]}' },
  { "/messages", '{"model":"claude-3-5-sonnet","max_tokens":64,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello"}]}' },
}

function request()
  counter = counter + 1
  local customer = counter % 20 == 0 and "capped" or ("cust_" .. (counter % 20))
  local b = BODIES[counter % 4 + 1]
  return wrk.format("POST", prefix .. b[1], { ["X-Customer-Id"] = customer, ["Content-Type"] = "application/json" }, b[2])
end
