-- The request body of a model API call, as limitry.gateway's access phase reads it: the model it
-- names, and stream_options.include_usage added to a streamed chat completion that lacks it.
-- Plain searches, no JSON decoding: this runs on every request.
local M = {}

local QUOTE, COLON = string.byte('"'), string.byte(":")
local WHITE = { [32] = true, [9] = true, [10] = true, [13] = true }

-- Where the value of the first member `name` of a JSON text starts (after the colon and spaces), or
-- nil. Plain searches for `name"` (a search for '"' would stop at every quote of the text).
local function member_value_at(body, name)
  local at = string.find(body, name .. '"', 1, true)
  while at do
    if string.byte(body, at - 1) == QUOTE then
      local i = at + #name + 1
      while WHITE[string.byte(body, i)] do i = i + 1 end
      if string.byte(body, i) == COLON then
        i = i + 1
        while WHITE[string.byte(body, i)] do i = i + 1 end
        return i
      end
    end
    at = string.find(body, name .. '"', at + 1, true)
  end
  return nil
end

-- The model a request body names ("model": "...", without escapes), or nil.
function M.model(body)
  local i = member_value_at(body, "model")
  if not i or string.byte(body, i) ~= QUOTE then return nil end
  local close = string.find(body, '"', i + 1, true)
  local model = close and string.sub(body, i + 1, close - 1)
  if not model or model == "" or string.find(model, "\\", 1, true) then return nil end
  return model
end

-- Streamed chat completions report usage only with stream_options.include_usage: added when absent.
function M.with_stream_usage(body)
  local at = member_value_at(body, "stream")
  if not at or string.sub(body, at, at + 3) ~= "true" or string.find(body, "include_usage", 1, true) then return end
  local new
  local s, e = body:find('"stream_options"%s*:%s*{%s*')
  if s then
    local sep = body:sub(e + 1, e + 1) == "}" and "" or ","
    new = body:sub(1, e) .. '"include_usage":true' .. sep .. body:sub(e + 1)
  else
    local open = body:find("{", 1, true)
    if not open then return end
    local rest = body:sub(open + 1)
    new = body:sub(1, open) .. '"stream_options":{"include_usage":true}' .. (rest:find("^%s*}") and "" or ",") .. rest
  end
  ngx.req.set_body_data(new)
end

return M
