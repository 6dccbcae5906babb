-- limitry.gateway.usage, the reading of token usage from model API answers, without nginx: every
-- shape, split into chunks at every byte, streams cut short, bounded memory on huge lines and bodies.
local usage = require "limitry.gateway.usage"

local OPENAI_JSON = '{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,'
  .. '"message":{"role":"assistant","content":"a \\"usage\\": {\\"prompt_tokens\\": 999} in the text"}}],'
  .. '"usage":{"prompt_tokens":30,"completion_tokens":20,"total_tokens":50,"prompt_tokens_details":{"cached_tokens":0}}}'
local OPENAI_SSE = table.concat {
  'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"delta":{"content":"Hi"}}],"usage":null}\n\n',
  'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"delta":{"content":" there"}}],"usage":null}\n\n',
  'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":20}}\n\n',
  "data: [DONE]\n\n",
}
local RESPONSES_JSON = '{"id":"resp_1","object":"response","model":"gpt-4o","output":[],"usage":{"input_tokens":30,'
  .. '"output_tokens":20,"output_tokens_details":{"reasoning_tokens":0}}}'
local RESPONSES_SSE = table.concat {
  'event: response.created\ndata: {"type":"response.created","response":{"id":"r","model":"gpt-4o","usage":null}}\n\n',
  'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hi"}\n\n',
  'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r","model":"gpt-4o",'
    .. '"usage":{"input_tokens":30,"output_tokens":20}}}\n\n',
}
local ANTHROPIC_JSON = '{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-sonnet","content":'
  .. '[{"type":"text","text":"Hi"}],"usage":{"input_tokens":30,"output_tokens":20}}'
local ANTHROPIC_SSE = table.concat {
  'event: message_start\r\ndata: {"type":"message_start","message":{"id":"m","type":"message","model":"claude-3-5-sonnet",'
    .. '"usage":{"input_tokens":30,"output_tokens":1}}}\r\n\r\n',
  'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\r\n\r\n',
  'event: message_delta\r\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":20}}\r\n\r\n',
  'event: message_stop\r\ndata: {"type":"message_stop"}\r\n\r\n',
}

local SHAPES = {
  { "OpenAI chat completions, JSON", OPENAI_JSON, "gpt-4o", "openai", false },
  { "OpenAI chat completions, SSE", OPENAI_SSE, "gpt-4o", "openai", true },
  { "OpenAI Responses, JSON", RESPONSES_JSON, "gpt-4o", "openai", false },
  { "OpenAI Responses, SSE", RESPONSES_SSE, "gpt-4o", "openai", true },
  { "Anthropic Messages, JSON", ANTHROPIC_JSON, "claude-3-5-sonnet", "anthropic", false },
  { "Anthropic Messages, SSE (CRLF lines)", ANTHROPIC_SSE, "claude-3-5-sonnet", "anthropic", true },
}

-- Feeds text in chunks of `size` bytes starting at `offset`, as nginx's body filter would.
local function read(text, size, offset, content_type)
  local x = usage.new(content_type)
  local first = offset or size
  x:feed(text:sub(1, first))
  for i = first + 1, #text, size do x:feed(text:sub(i, i + size - 1)) end
  return x:finish()
end

describe("limitry.gateway.usage", function()
  for _, shape in ipairs(SHAPES) do
    it("reads " .. shape[1] .. " however the answer is cut into chunks", function()
      for cut = 1, #shape[2] do -- two chunks, split at every byte
        local u = read(shape[2], #shape[2], cut)
        assert.same({ 30, 20, shape[3], shape[4], shape[5], true },
          { u.input_tokens, u.output_tokens, u.model, u.provider, u.stream, u.complete }, "split at " .. cut)
      end
      for _, size in ipairs { 1, 2, 3, 7, 64 } do
        local u = read(shape[2], size)
        assert.same({ 30, 20, true }, { u.input_tokens, u.output_tokens, u.complete }, "chunks of " .. size)
      end
    end)
  end

  it("tells SSE from JSON by the answer's first bytes when no content type is given, or by the type", function()
    assert.is_true(read(OPENAI_SSE, 10).stream)
    assert.is_false(read("\n  " .. OPENAI_JSON, 10).stream)
    assert.is_true(read(OPENAI_SSE, 10, nil, "text/event-stream; charset=utf-8").stream)
  end)

  it("reports what a stream cut short had counted, as incomplete", function()
    local cut = ANTHROPIC_SSE:sub(1, ANTHROPIC_SSE:find("message_delta", 1, true) - 1)
    local u = read(cut, 16)
    assert.same({ 30, 1, false }, { u.input_tokens, u.output_tokens, u.complete })
    local none = read(OPENAI_SSE:sub(1, 150), 16)
    assert.same({ nil, nil, false }, { none.input_tokens, none.output_tokens, none.complete })
  end)

  it("finds the usage of a JSON answer far larger than what it keeps (first and last 64 KiB)", function()
    local big = '{"object":"chat.completion","model":"gpt-4o","choices":[{"message":{"content":"' .. string.rep("x", 3000000)
      .. '"}}],"usage":{"prompt_tokens":30,"completion_tokens":20}}'
    local x = usage.new()
    for i = 1, #big, 8192 do
      x:feed(big:sub(i, i + 8191))
      assert.is_true(x.size <= 2 * usage.JSON_WINDOW + 8192, "kept " .. x.size .. " bytes")
    end
    local u = x:finish()
    assert.same({ 30, 20, "gpt-4o", true }, { u.input_tokens, u.output_tokens, u.model, u.complete })
  end)

  it("skips an SSE line longer than MAX_LINE without keeping it, and reads the lines after it", function()
    local x = usage.new("text/event-stream")
    local long = "data: " .. string.rep("y", usage.MAX_LINE + 10)
    for i = 1, #long, 65536 do
      x:feed(long:sub(i, i + 65535))
      assert.is_true(#x.line <= usage.MAX_LINE + 65536)
    end
    x:feed("\n\n" .. OPENAI_SSE)
    local u = x:finish()
    assert.same({ 30, 20, true }, { u.input_tokens, u.output_tokens, u.complete })
  end)

  it("ignores usage objects that are not the answer's (inside strings) and null usage chunks", function()
    local u = read(OPENAI_JSON, 5)
    assert.equal(30, u.input_tokens) -- not the 999 quoted in the content
    local nulls = read('data: {"choices":[],"usage":null}\n\ndata: [DONE]\n\n', 4)
    assert.same({ nil, true }, { nulls.input_tokens, nulls.complete })
  end)

  it("never raises on garbage", function()
    for _, text in ipairs { "", "{", "data: {\n\n", '{"usage":{', '{"usage":{"prompt_tokens":"x"}}', "\0\1\2", "data: [DONE" } do
      local u = read(text, 3)
      assert.is_table(u)
    end
  end)
end)

describe("limitry.gateway.event", function()
  local event = require "limitry.gateway.event"
  local recorder = require "limitry.recorder"
  local limitry = require "limitry"

  local function same_members(a, b)
    for k, v in pairs(a) do assert.same(v, b[k], k) end
    for k in pairs(b) do assert.is_not_nil(a[k], k) end
  end

  it("writes what limitry.encode_event writes, for every combination of the optional members", function()
    local t = 1765000000.25
    local props = event.properties { { "stream", "true" } }
    for mask = 0, 31 do
      local model = mask % 2 == 1 and 'gpt-"4o"\\mini' or nil
      local provider = math.floor(mask / 2) % 2 == 1 and "openai" or nil
      local input = math.floor(mask / 4) % 2 == 1 and 30 or nil
      local output = math.floor(mask / 8) % 2 == 1 and 20 or nil
      local cost = math.floor(mask / 16) % 2 == 1 and 0.1 + 0.2 or nil
      local text = event.json('cust "q" \\', event.quote("model_call"), "key-" .. mask, t, 42, model, provider, input,
        output, cost, mask % 3 == 0 and props or "")
      assert.is_true(#text < #recorder.expand(text) - 60, "the shorthand is shorter")
      local got = limitry.decode(recorder.expand(text))
      local want = limitry.decode(limitry.encode_event {
        customer_id = 'cust "q" \\', event_type = "model_call", idempotency_key = "key-" .. mask,
        timestamp = "2025-12-06T05:46:40.250Z", latency_ms = 42, model = model, provider = provider,
        input_tokens = input, output_tokens = output, cost_cents = cost,
        properties = mask % 3 == 0 and { stream = "true" } or nil })
      same_members(got, want)
      if cost then assert.truthy(recorder.expand(text):find('"costCents":0.30000000000000004', 1, true), text) end
    end
  end)

  it("writes the milliseconds truncated, never a later second", function()
    local got = limitry.decode(recorder.expand(event.json("c", event.quote("e"), "k", 1765000000.9999, 0)))
    assert.equal("2025-12-06T05:46:40.999Z", got.timestamp)
  end)
end)

describe("limitry.gateway.configure", function()
  local gateway = require "limitry.gateway"

  local function refused(options, message)
    local ok, err = pcall(gateway.configure, options)
    assert.is_false(ok)
    assert.equal(message, (tostring(err):gsub("^[^:]*:%d+: ", "")))
  end

  it("raises on a value out of range, naming the option and what is allowed", function()
    refused({ batch_size = 5000 }, "limitry.gateway.configure: batch_size must be a whole number from 1 to 1000 (got 5000)")
    refused({ batch_size = 1.5 }, "limitry.gateway.configure: batch_size must be a whole number from 1 to 1000 (got 1.5)")
    refused({ max_queued = -5 }, "limitry.gateway.configure: max_queued must be a whole number from 1 to 2147483647 (got -5)")
    refused({ ttl = -1 }, "limitry.gateway.configure: ttl must be a number of seconds from 0 to 86400 (got -1)")
    refused({ api_budget = 0.5 }, "limitry.gateway.configure: api_budget must be a whole number of calls per minute >= 1 (got 0.5)")
    refused({ decision_header = "" }, "limitry.gateway.configure: decision_header must be a header name (letters, digits, '-', ...)")
    refused({ check_budget = 950 }, "limitry.gateway.configure: check_budget must not exceed api_budget (900)")
    refused({ fail_open = "yes" }, "limitry.gateway.configure: option 'fail_open' must be a boolean (got string)")
  end)

  it("checks the client's options as limitry.new does, leaving a missing key to the workers", function()
    refused({ client = { bogus = 1 } }, "limitry.gateway.configure: client: unknown option 'bogus' (allowed: "
      .. "api_key, backoff, base_url, ca_file, ca_path, connect_timeout, headers, keepalive_timeout, log, max_backoff, "
      .. "max_response_size, max_retries, max_retry_after, max_worker_thread_calls, no_proxy, openresty, pool_size, "
      .. "proxy, ssl_verify, thread_pool, timeout)")
    refused({ client = { api_key = 42 } }, "limitry.gateway.configure: client: option 'api_key' must be a string (got number)")
    assert.is_table(gateway.configure { client = { base_url = "http://127.0.0.1:1/v1" } })
    assert.is_table(gateway.configure { client = { api_key = "sk-test", timeout = 2 }, batch_size = 500 })
  end)
end)
