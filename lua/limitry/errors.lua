-- The error value of every runtime failure: a table with a name in the family
--   LimitryError > { APIError > { AuthenticationError, RateLimitError },
--                    NetworkError > TimeoutError, DecodeError }
-- and tostring(err) == the message string returned beside it.
local M = {}

local PARENT = {
  APIError = "LimitryError",
  AuthenticationError = "APIError",
  RateLimitError = "APIError",
  NetworkError = "LimitryError",
  TimeoutError = "NetworkError",
  DecodeError = "LimitryError",
}
M.PARENT = PARENT

local Error = {}
Error.__index = Error
Error.__tostring = function(e) return e.msg end
M.Error = Error

-- True when e's name is `name` or descends from it.
function Error:is(name)
  local n = self.name
  while n do
    if n == name then return true end
    n = PARENT[n]
  end
  return false
end

-- Replaces every occurrence of secret in s (plain text, not a pattern).
local function redact(s, secret)
  if type(s) ~= "string" or not secret or secret == "" then return s end
  local out, start = {}, 1
  while true do
    local i, j = s:find(secret, start, true)
    if not i then break end
    out[#out + 1] = s:sub(start, i - 1)
    out[#out + 1] = "[REDACTED]"
    start = j + 1
  end
  if start == 1 then return s end
  out[#out + 1] = s:sub(start)
  return table.concat(out)
end

M.redact = redact

-- A copy of v with the secret replaced in every string, keys included, at any depth: iterative,
-- so a body nested as deep as the decoder allows (or deeper) is scrubbed all the way down.
local function redact_deep(v, secret)
  if type(v) == "string" then return redact(v, secret) end
  if type(v) ~= "table" then return v end
  local copies = {}
  local todo = {}
  local function copy_of(t)
    if type(t) == "string" then return redact(t, secret) end
    if type(t) ~= "table" then return t end
    local c = copies[t]
    if not c then
      c = {}
      copies[t] = c
      todo[#todo + 1] = t
    end
    return c
  end
  local root = copy_of(v)
  while #todo > 0 do
    local t = table.remove(todo)
    local c = copies[t]
    for k, x in pairs(t) do c[copy_of(k)] = copy_of(x) end
  end
  return root
end

-- fields: name (required), message, status, response, retry_after, headers, curl_code...
-- The message text is composed here so every failure reads the same way:
--   "<name>: <message> (HTTP <status>, <n> attempts)"
-- Only what came from the server is scrubbed; our own words never hold the key.
local OWN_FIELDS = { name = true, kind = true, status = true, curl_code = true, sent = true }

function M.new(fields, secret)
  local e = setmetatable({}, Error)
  for k, v in pairs(fields) do e[k] = OWN_FIELDS[k] and v or redact_deep(v, secret) end
  e.message = e.message or e.name
  return e
end

-- Fills in attempts and the final message; called once the retry loop has given up.
-- `host` (host:port) is named for transport failures, where the status cannot tell which server.
-- `sent_before`: an earlier attempt may have reached the server; then so may the call, whatever
-- the last attempt says (err.sent is true, and the message says so).
-- `note` (optional): one more detail, such as where the key came from ("key from LIMITRY_API_KEY");
-- `hint` (optional): what to check, after the details ("check base_url ..."), kept in e.hint too.
-- Neither ever holds the key: the client makes both from its own words and the shown base URL.
function M.finish(e, attempts, host, sent_before, note, hint)
  e.attempts = attempts
  local detail = {}
  if e.status then detail[#detail + 1] = "HTTP " .. e.status end
  if e.kind and host then detail[#detail + 1] = host end
  if attempts and attempts > 1 then detail[#detail + 1] = attempts .. " attempts" end
  if note then detail[#detail + 1] = note end
  if sent_before and e.sent == false then
    e.sent = true
    detail[#detail + 1] = "an earlier attempt may have reached the server"
  end
  e.hint = hint
  e.msg = e.name .. ": " .. e.message .. (#detail > 0 and (" (" .. table.concat(detail, ", ") .. ")") or "")
    .. (hint and ("; " .. hint) or "")
  return e
end

-- The error value of a cancelled async call (every transport's).
function M.cancelled(attempts)
  return M.finish(M.new { name = "LimitryError", message = "cancelled" }, attempts)
end

-- Gives a plain table (one that crossed a thread boundary) its methods back.
function M.restore(t)
  return setmetatable(t, Error)
end

function M.is_error(v) return getmetatable(v) == Error end

return M
