-- A model API stand-in for trying limitry.gateway without a provider key (runs in nginx's content
-- phase; examples/openresty/quickstart.conf serves it): OpenAI chat completions (/v1/chat/completions),
-- OpenAI Responses (/v1/responses) and Anthropic Messages (/v1/messages),
-- each as JSON or, when the request body says "stream": true, as server-sent events sent in
-- flushed chunks. Every answer reports 30 input and 20 output tokens (OpenAI's streamed chat only
-- with stream_options.include_usage, as OpenAI does). It counts the calls it served, and the
-- tokens it reported, in the shared dict `upstream`.
--   X-Upstream-Status: N   answer N with a JSON error instead (a failed call, nothing served)
--   X-Upstream-Cut: 1      stop a stream half way (the connection is closed, no last event)
--   X-Upstream-Pace: MS    wait MS milliseconds before each streamed event
local M = {}

local INPUT, OUTPUT = 30, 20

local function served(tokens)
  local dict = ngx.shared.upstream
  dict:incr("calls", 1, 0)
  dict:incr("tokens", tokens, 0)
end

-- Sends parts one flush each; false when the gateway stopped reading (the call is not served).
local function send(parts)
  local pace = tonumber(ngx.var.http_x_upstream_pace)
  for _, p in ipairs(parts) do
    if pace then ngx.sleep(pace / 1000) end
    if not ngx.print(p) or not ngx.flush(true) then return false end
  end
  return true
end

local function chat(model, stream, usage_wanted, cut)
  if not stream then
    ngx.header["Content-Type"] = "application/json"
    ngx.print(string.format('{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"%s","choices":[{"index":0,'
      .. '"message":{"role":"assistant","content":"Hello there, how may I help?"},"finish_reason":"stop"}],'
      .. '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}', model, INPUT, OUTPUT, INPUT + OUTPUT))
    return INPUT + OUTPUT
  end
  ngx.header["Content-Type"] = "text/event-stream"
  local chunk = '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"' .. model
    .. '","choices":[{"index":0,"delta":{"content":"%s"}}]' .. (usage_wanted and ',"usage":null' or "") .. "}"
  local parts = {}
  for _, word in ipairs { "Hello", " there", ",", " how", " may", " I", " help", "?" } do
    parts[#parts + 1] = "data: " .. chunk:format(word) .. "\n\n"
  end
  if cut then
    send { parts[1], parts[2] }
    return 0
  end
  if usage_wanted then
    parts[#parts + 1] = 'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"' .. model
      .. '","choices":[],"usage":{"prompt_tokens":' .. INPUT .. ',"completion_tokens":' .. OUTPUT .. ',"total_tokens":'
      .. (INPUT + OUTPUT) .. "}}\n\n"
  end
  parts[#parts + 1] = "data: [DONE]\n\n"
  if not send(parts) then return nil end
  return usage_wanted and INPUT + OUTPUT or 0
end

local function messages(model, stream, cut)
  if not stream then
    ngx.header["Content-Type"] = "application/json"
    ngx.print(string.format('{"id":"msg_1","type":"message","role":"assistant","model":"%s","content":[{"type":"text",'
      .. '"text":"Hello there"}],"stop_reason":"end_turn","usage":{"input_tokens":%d,"output_tokens":%d}}',
      model, INPUT, OUTPUT))
    return INPUT + OUTPUT
  end
  ngx.header["Content-Type"] = "text/event-stream"
  local parts = {
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
      .. '"model":"' .. model .. '","content":[],"usage":{"input_tokens":' .. INPUT .. ',"output_tokens":1}}}\n\n',
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}\n\n',
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":'
      .. OUTPUT .. '}}\n\n',
    'event: message_stop\ndata: {"type":"message_stop"}\n\n',
  }
  if cut then
    send { parts[1], parts[2], parts[3] }
    return INPUT
  end
  if not send(parts) then return nil end
  return INPUT + OUTPUT
end

local function responses(model, stream)
  local usage = '{"input_tokens":' .. INPUT .. ',"output_tokens":' .. OUTPUT .. ',"total_tokens":' .. (INPUT + OUTPUT) .. "}"
  if not stream then
    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"id":"resp_1","object":"response","model":"' .. model .. '","status":"completed","output":[{"type":"message",'
      .. '"content":[{"type":"output_text","text":"Hello"}]}],"usage":' .. usage .. "}")
    return INPUT + OUTPUT
  end
  ngx.header["Content-Type"] = "text/event-stream"
  return send {
    'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1","model":"' .. model .. '","usage":null}}\n\n',
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hello"}\n\n',
    'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_1","model":"' .. model
      .. '","status":"completed","usage":' .. usage .. "}}\n\n",
  } and INPUT + OUTPUT or nil
end

function M.serve()
  local status = tonumber(ngx.var.http_x_upstream_status)
  if status then
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"error":{"message":"upstream failure"}}')
    return
  end
  ngx.req.read_body()
  local body = ngx.req.get_body_data() or ""
  local model = body:match('"model"%s*:%s*"([^"]+)"') or "unknown"
  local stream = body:find('"stream"%s*:%s*true') ~= nil
  local cut = ngx.var.http_x_upstream_cut ~= nil
  local uri = ngx.var.uri
  local tokens
  if uri:find("/chat/completions$") then
    tokens = chat(model, stream, body:find('"include_usage"%s*:%s*true') ~= nil, cut)
  elseif uri:find("/messages$") then
    tokens = messages(model, stream, cut)
  elseif uri:find("/responses$") then
    tokens = responses(model, stream)
  else
    ngx.status = 404
    ngx.print('{"error":{"message":"no such endpoint"}}')
    return
  end
  if cut then return ngx.exit(444) end
  if tokens and ngx.flush(true) then served(tokens) end
end

function M.counts()
  local dict = ngx.shared.upstream
  ngx.print(string.format('{"calls":%d,"tokens":%d}', dict:get("calls") or 0, dict:get("tokens") or 0))
end

return M
