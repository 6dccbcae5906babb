-- Token usage read from a model API's answer as it streams through nginx's body filter, in bounded
-- memory (no whole stream is kept):
--   OpenAI chat completions: JSON `usage.prompt_tokens/completion_tokens`, or SSE with the usage
--     chunk of `stream_options.include_usage` and `data: [DONE]`
--   OpenAI Responses: JSON `usage.input_tokens/output_tokens`, or SSE `response.completed`
--   Anthropic Messages: JSON `usage`, or SSE `message_start` (input tokens) + `message_delta`
--     (output tokens so far) + `message_stop`
--
--   local x = usage.new(content_type)   -- "text/event-stream" reads SSE, anything else JSON
--   x:feed(chunk) ... ; local u = x:finish()
--   u = { input_tokens, output_tokens, model, provider, stream = bool, complete = bool } (the extractor itself)
-- `complete` is false when the answer ended before its last event (a client or upstream that hung up
-- mid-stream): the counts are what was seen.
local limitry = require "limitry"

local M = {}
local Extractor = {}
Extractor.__index = Extractor

local decode = limitry.decode
local find, sub, match, byte = string.find, string.sub, string.match, string.byte

local QUOTE, COLON, SPACE, BRACE = byte('"'), byte(":"), byte(" "), byte("{")

-- The text of the last usage object in s ("usage":{...} or "usage": {...}), found with plain
-- searches: a pattern search tries every position of a chunk, and a search for '"' stops at every
-- quote of the JSON. Usage objects hold numbers and objects, no braces inside strings, so %b{} fits.
local function usage_object(s)
  local found
  local at = find(s, "usage", 1, true)
  while at do
    if byte(s, at - 1) == QUOTE and byte(s, at + 5) == QUOTE and byte(s, at + 6) == COLON then
      local c = byte(s, at + 7)
      if c == BRACE or (c == SPACE and byte(s, at + 8) == BRACE) then
        found = match(s, "^%s*(%b{})", at + 7) or found
      end
    end
    at = find(s, "usage", at + 5, true)
  end
  return found
end

-- The string value of the first "model" member of s, if any.
local function model_in(s)
  local at = find(s, '"model"', 1, true)
  return at and match(s, '^%s*:%s*"([^"\\]*)"', at + 7) or nil
end

M.MAX_LINE = 1024 * 1024  -- an SSE line longer than this is skipped (its usage, if any, is lost)
M.JSON_WINDOW = 64 * 1024 -- a JSON answer keeps its first and last this many bytes

-- content_type: the answer's, or nil to tell SSE from JSON by the first bytes (a JSON answer starts
-- with "{" or "["); model: the model the request named, if known (the answer's is then not looked for).
function M.new(content_type, model)
  local sse
  if content_type ~= nil then sse = find(content_type, "event-stream", 1, true) ~= nil end
  return setmetatable({ sse = sse, parts = {}, size = 0, head = nil, complete = false, line = "", model = model },
    Extractor)
end

local function count(v)
  if type(v) == "number" and v >= 0 and v < 2 ^ 53 then return math.floor(v) end
  return nil
end

-- Takes the counts of a usage object (either vocabulary).
local function take_usage(self, u, provider)
  if type(u) ~= "table" then return end
  local input = count(u.prompt_tokens) or count(u.input_tokens)
  local output = count(u.completion_tokens) or count(u.output_tokens)
  if input then self.input = input end
  if output then self.output = output end
  if u.prompt_tokens ~= nil then self.provider = self.provider or "openai" end
  if provider then self.provider = provider end
end

-- One SSE `data:` payload: only its usage object is decoded.
local function on_event(self, data)
  if data == "[DONE]" then
    self.complete = true
    return
  end
  local object = usage_object(data)
  if object then
    local provider = (find(data, "message_", 1, true) and "anthropic") or (find(data, "response.", 1, true) and "openai") or nil
    take_usage(self, decode(object), provider)
  end
  if find(data, "message_stop", 1, true) or find(data, "response.completed", 1, true) then self.complete = true end
  if not self.model then self.model = model_in(data) end
end

local function feed_sse(self, chunk)
  local buf = self.line ~= "" and self.line .. chunk or chunk
  -- The common chunk (text deltas) holds neither: it only moves the partial line on.
  -- The end markers come after the usage (OpenAI's [DONE], Anthropic's message_stop), in short
  -- events of their own: looked for once usage was seen, or in a short chunk.
  local interesting = usage_object(buf)
    or ((self.input or #buf < 128) and (find(buf, "[DONE]", 1, true) or find(buf, "message_stop", 1, true)))
    or (not self.model and find(buf, "model", 1, true))
  if not interesting then
    if sub(buf, -1) == "\n" then
      self.line, self.skipping = "", false
    else
      local last = match(buf, "^.*()\n")
      if last then self.skipping = false end
      self.line = last and sub(buf, last + 1) or buf
      if #self.line > M.MAX_LINE then self.line, self.skipping = "", true end
    end
    return
  end
  local at = 1
  while true do
    local nl = find(buf, "\n", at, true)
    if not nl then break end
    if not self.skipping then
      local line = sub(buf, at, nl - 1)
      if sub(line, -1) == "\r" then line = sub(line, 1, -2) end
      if sub(line, 1, 5) == "data:" then
        local data = sub(line, 6)
        if sub(data, 1, 1) == " " then data = sub(data, 2) end
        on_event(self, data)
      end
    end
    self.skipping = false
    at = nl + 1
  end
  self.line = sub(buf, at)
  if #self.line > M.MAX_LINE then
    self.line, self.skipping = "", true
  end
end

local function feed_json(self, chunk)
  if not self.head then
    self.head = sub(chunk, 1, M.JSON_WINDOW)
  elseif #self.head < M.JSON_WINDOW then
    self.head = self.head .. sub(chunk, 1, M.JSON_WINDOW - #self.head)
  end
  local parts = self.parts
  parts[#parts + 1] = chunk
  self.size = self.size + #chunk
  if self.size > 2 * M.JSON_WINDOW then -- keep only the tail
    local tail = sub(table.concat(parts), -M.JSON_WINDOW)
    self.parts, self.size = { tail }, #tail
  end
end

local LEADING_JSON = { [byte("{")] = true, [byte("[")] = true }

function Extractor:feed(chunk)
  if chunk == nil or chunk == "" then return end
  local sse = self.sse
  if sse == nil then
    local first = match(chunk, "^%s*()")
    if first > #chunk then return end -- only whitespace so far
    sse = not LEADING_JSON[byte(chunk, first)]
    self.sse = sse
  end
  if sse then feed_sse(self, chunk) else feed_json(self, chunk) end
end

function Extractor:finish()
  if self.sse then
    if self.line ~= "" and not self.skipping then feed_sse(self, "\n") end
  else
    local tail = table.concat(self.parts)
    local object = usage_object(tail) -- the last one, decoded alone (the answer's text may be long)
    local u = object and decode(object)
    if type(u) == "table" then
      local head = self.head or ""
      local provider
      if find(object, "prompt_tokens", 1, true) or find(head, "response", 1, true) then
        provider = "openai"
      elseif find(head, "message", 1, true) then
        provider = "anthropic"
      end
      take_usage(self, u, provider)
      self.complete = true
    end
    if not self.model then self.model = model_in(self.head or "") end
  end
  self.input_tokens, self.output_tokens, self.stream = self.input, self.output, self.sse == true
  return self
end

return M
