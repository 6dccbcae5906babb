-- The life of one call, the same on every transport:
--   attempt (t.send) -> interpret (the fast path, or limitry.answers) -> retry decision -> result
-- call.run is the one retry loop. Blocking calls run it to the end; an async call (limitry.async)
-- runs it in an nginx light thread, or on the multi handle, whose send and sleep return false
-- ("later"): its driver (limitry.transport.multi) runs it again with the answer, or when the
-- retry is due, from where it stopped (the attempt count and the rest are kept in the async call).
-- A call is { method, path, body, shape, retry, flags, known } (built by the facade from an
-- operation of limitry.resources). Failures are error values (limitry.errors) whose `sent` says
-- whether the server may have the request.
local core = require "limitry.core"
local errors = require "limitry.errors"
local answers = require "limitry.answers"

local M = {}

-- What run returns while an async call goes on in the background.
M.PENDING = setmetatable({}, { __tostring = function() return "limitry.call.PENDING" end })
local PENDING = M.PENDING
local now = core.now

-- The error value of a transport failure: kind, message and libcurl's code as the transport gave
-- them; `sent`: false when no byte of the request was written (the server cannot have it).
local function failure(kinds, kind, text, code, secret, sent)
  local k = kinds[kind]
  return errors.new({ name = k and k[1] or "NetworkError", kind = kind, message = text, curl_code = code,
    sent = sent ~= false }, secret)
end

-- An attempt's outcome as a result, or nil and an error value (not yet finished: the loop fills in
-- the attempts). Takes what t.send returned, when run's fast path did not take it.
function M.outcome(t, call, secret, status, headers, body, code, doc, h)
  if status == nil then return nil, failure(t.KINDS, headers, body, code, secret, doc) end
  if headers == false then headers = h:headers() end -- valid until the handle starts its next transfer
  return answers.interpret(call.shape, secret, status, headers, body, doc)
end

-- nil when err must not be retried after `attempt` tries, else the seconds to wait first.
-- `retry` "unsent": only failures where nothing was sent (err.sent == false) are retried.
function M.retry_delay(err, attempt, client, retry, kinds)
  if attempt > client.max_retries then return nil end
  if retry == "unsent" and err.sent ~= false then return nil end
  local kind = err.kind and kinds[err.kind]
  -- A 408 usually answers a connection the server dropped as idle: worth one more try.
  local retryable = (kind and kind[2]) or err.status == 429 or (err.status and err.status >= 500)
    or (err.status == 408 and attempt == 1)
  if not retryable then return nil end
  if err.status == 429 and err.retry_after then
    if err.retry_after > client.max_retry_after then return nil end
    return err.retry_after
  end
  local cap = math.min(client.max_backoff, client.backoff * 2 ^ (attempt - 1))
  return cap / 2 + math.random() * cap / 2
end

-- Where Limitry's API lives: a 404 from a base_url without it is most likely a base_url without /v1.
local V1_HINT = "Limitry's API lives under /v1, e.g. https://api.limitry.com/v1"

-- Fills in err's final message (errors.finish) with what helps most to fix it: where the key came
-- from for an AuthenticationError, where base_url came from for a failure to reach it, and a hint
-- to check base_url for a 404 that a right base_url cannot give: any 404 when base_url does not end
-- in /v1, or a 404 on a route Limitry has (call.known; an unknown id is a 404 of its own).
function M.finish(state, err, attempts, sent_before, call)
  local origin, shown = state.origin, state.client.base_url
  local note, hint
  if err.name == "AuthenticationError" then
    note = origin.key
  elseif err.kind == "network" or err.kind == "timeout" or err.kind == "tls" or err.kind == "protocol" then
    note = origin.url
  elseif err.status == 404 and call then
    if not shown:match("^%a+://[^/]+(.*)$"):find("/v1$") or call.known then
      hint = "check base_url (" .. shown .. ", " .. origin.url:gsub("^base_url ", "") .. "): " .. V1_HINT
    end
  end
  return errors.finish(err, attempts, state.host, sent_before, note, hint)
end

-- The `log` option: one entry per attempt, on every transport. An entry is a table (fields below)
-- whose tostring is one readable line, so `log = print` works:
--   limitry: GET /usage -> 503 APIError (attempt 1, 12.3 ms, curl): injected 503; retry in 0.310 s
-- `path` has no query (its values carry customer ids and cursors); nothing in an entry holds the key.
local LogEntry = {}
LogEntry.__index = LogEntry
LogEntry.__tostring = function(e)
  local outcome = e.status and tostring(e.status) or ""
  if e.error then outcome = outcome .. (outcome ~= "" and " " or "") .. e.error end
  local line = string.format("limitry: %s %s -> %s (attempt %d, %.1f ms, %s)", e.method, e.path, outcome,
    e.attempt, e.duration * 1000, e.transport)
  if e.error and e.message then line = line .. ": " .. e.message end
  if e.retry then line = line .. string.format("; retry in %.3f s", e.retry_in) end
  return line
end
M.LogEntry = LogEntry

local function log_attempt(log, secret, t, call, attempt, started, status, err, delay)
  local path = call.path:match("^[^?#]*")
  if secret and path:find(secret, 1, true) then path = errors.redact(path, secret) end
  local e = setmetatable({ method = call.method, path = path, attempt = attempt, transport = t.name,
    duration = now() - started, status = status, retry = delay ~= nil, retry_in = delay }, LogEntry)
  if err then e.error, e.kind, e.message = err.name, err.kind, err.message end
  log(e)
end

-- The one retry loop. Returns the result, or nil, msg, err, or PENDING while an async call goes
-- on. `async`: the async call this run belongs to (nil for a blocking call), which keeps the count
-- of attempts and the rest between runs; the arguments after it, when given, are the answer of
-- its attempt that was in flight (headers is never nil in an answer or a failure: a turn of the
-- loop without one makes an attempt).
function M.run(state, call, t, async, status, headers, body, code, doc, h)
  local log = state.client.log
  local attempt, sent, started = 0, false, nil
  if async then
    attempt = async.attempts
    if log then started = async.started end
  end
  local check = call.shape.check
  while true do
    if headers == nil then
      attempt = attempt + 1
      if log then started = now() end
      status, headers, body, code, doc, h = t.send(state, call, async)
      if async then
        async.attempts = attempt
        if status == false then -- the answer comes later: run is called again with it
          if log then async.started = started end
          return PENDING
        end
      end
    end
    local res, err
    if headers == false and check(doc) then -- the fast path: a 2xx answer of the call's shape, decoded in C
      res = doc
    else
      res, err = M.outcome(t, call, state.key, status, headers, body, code, doc, h)
    end
    if res ~= nil then
      if log then log_attempt(log, state.key, t, call, attempt, started, status) end
      return res
    end
    local delay = M.retry_delay(err, attempt, state.client, call.retry, t.KINDS)
    if log then log_attempt(log, state.key, t, call, attempt, started, err.status, err, delay) end
    if async and async.sent then sent = true end -- an earlier run's attempt may have reached the server
    if not delay then
      M.finish(state, err, attempt, sent, call)
      return nil, err.msg, err
    end
    sent = sent or err.sent
    if async then async.sent = sent end
    if t.sleep(delay, async) == false then return PENDING end -- run again when the retry is due
    headers = nil
  end
end

return M
