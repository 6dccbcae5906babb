-- Loaded by fuzz/response_fuzz.c: checks one call of limitry.call's outcome (how the lifecycle
-- reads an attempt: an answer through limitry.answers, a transport failure through the libcurl
-- transport's kinds) on fuzzed input and
-- raises (the harness then aborts) when a promise is broken:
--   it never raises; it returns a table, or nil and an error value whose name is in the family
--   of lua/limitry/errors.lua; the secret appears nowhere in an error (keys, values, nested
--   tables, the finished message). A successful result is the server's own data, passed through
--   unredacted (README: the key never appears in msg or err), so there the secret may appear only
--   where the body itself held it: the client never adds it.
local call = require "limitry.call"
local answers = require "limitry.answers"
local curl = require "limitry.transport.curl"
local errors = require "limitry.errors"

local function walk(v, secret, seen, path)
  local t = type(v)
  if t == "string" then
    if v:find(secret, 1, true) then error("the secret is visible at " .. path, 0) end
  elseif t == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do
      walk(k, secret, seen, path .. "[key]")
      walk(x, secret, seen, path .. "." .. tostring(k))
    end
  end
end

return function(shape, secret, status, headers, body, curl_code)
  local ok, res, err = pcall(call.outcome, curl, { shape = answers[shape] }, secret, status, headers, body, curl_code)
  if not ok then error("interpret raised: " .. tostring(res), 0) end
  if res ~= nil then
    if type(res) ~= "table" then error("a result that is not a table: " .. type(res), 0) end
    if err ~= nil then error("a result and an error together", 0) end
  else
    if not errors.is_error(err) then error("nil without an error value", 0) end
    if err.name ~= "LimitryError" and not errors.PARENT[err.name] then
      error("an error name outside the family: " .. tostring(err.name), 0)
    end
    if type(err.message) ~= "string" then error("an error without a message", 0) end
    errors.finish(err, 1, "127.0.0.1:1")
    if tostring(err) ~= err.msg then error("tostring(err) is not err.msg", 0) end
  end
  if not (type(body) == "string" and body:find(secret, 1, true)) then walk(res, secret, {}, "result") end
  walk(err, secret, {}, "err")
end
