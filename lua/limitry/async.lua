-- Non-blocking calls on a libcurl multi handle, for hosts with an event loop.
--   local req = usage:start_summary(params [, callback])   -- same arguments as get_summary
--   client:poll(seconds)       drive transfers; never blocks longer than `seconds` (0: don't wait)
--   req:done(), req:result(), req:cancel(), req:wait(), req:await()
--   client:fds(), client:next_timeout()   for hosts that watch sockets themselves
--   client:watch(fn), client:socket_action(fd, events)   the socket-callback style: fn(fd, events)
--                              says which sockets to watch ("r", "w", "rw"; "" to stop)
-- Retries, timeouts and error values are those of the blocking calls (limitry.protocol).
local core = require "limitry.core"
local errors = require "limitry.errors"
local protocol = require "limitry.protocol"

local M = {}

local Request = {}
Request.__index = Request
M.Request = Request


local FLAGS = protocol.FLAGS
local EVENTS = { "r", "w", "rw", "" } -- libcurl's CURL_POLL_IN, _OUT, _INOUT, _REMOVE

local function client_state(c)
  local s = c._async
  if not s then
    s = {
      multi = core.multi(), -- hands each request back from next_done (the owner given to add)
      free = {},      -- idle handles, kept for their TLS sessions
      waiting = {},   -- requests waiting out a retry delay
      pending = 0,    -- requests not yet done
      running = 0,    -- handles attached to multi
    }
    c._async = s
  end
  return s
end

-- Starts one attempt. Nothing changes before multi:add has succeeded (the idle handle is taken
-- off the list only then), so a raise there (an option libcurl refuses, out of memory) leaves
-- nothing behind that wait() would wait for. Returns true, or false and the error (its message
-- without a position: add is called by pcall itself, and the caller names the user's line).
local function launch(c, req)
  local s = c._async
  local free = s.free
  local n = #free
  local h = free[n] or core.new()
  local call = req.call
  -- A 2xx JSON answer comes back decoded (headers on demand), except for limit decisions.
  local multi = s.multi
  local cfg, url = M.curl_target(c, call.path) -- set by limitry (init.lua)
  local flags = FLAGS[call.shape]
  if call.retry == "connect" then flags = flags + protocol.FRESH end -- a new connection (see init.lua's SEND)
  local ok, why = pcall(multi.add, multi, h, cfg, url, call.method, call.body, flags, req)
  if not ok then return false, why end
  if n > 0 then free[n] = nil end
  req.handle = h
  req.attempts = req.attempts + 1
  if c.log then req.started = core.now() end
  s.running = s.running + 1
  return true
end

local function release(s, h)
  s.running = s.running - 1
  local free = s.free
  free[#free + 1] = h
end

local function complete(c, req, res, msg, err)
  req.state = "done"
  req.res, req.msg, req.err = res, msg, err
  c._async.pending = c._async.pending - 1
  if req.callback then req.callback(res, msg, err) end
end

-- The `log` option's entry for the attempt of req that just ended (see protocol.log_attempt).
local function log_attempt(c, req, status, err, delay)
  protocol.log_attempt(c.log, c:_secret(), "multi", req.call, req.attempts, req.started or core.now(), status, err, delay)
end

local function settle(c, req, res, err, status)
  if res ~= nil then
    if c.log then log_attempt(c, req, status) end
    return complete(c, req, res)
  end
  local delay = protocol.retry_delay(err, req.attempts, c, req.call.retry)
  if c.log then log_attempt(c, req, err.status, err, delay) end
  if delay then
    req.sent = req.sent or err.sent
    req.due = core.now() + delay
    table.insert(c._async.waiting, req)
    return
  end
  M.finish(c, err, req.attempts, req.sent, req.call) -- set by limitry (init.lua): Client:_finish
  return complete(c, req, nil, err.msg, err)
end

local SHAPES = protocol.SHAPES -- the table itself: resources add their shapes to it later

-- Runs the callbacks of the transfers that finished: at most `finished` (what perform counted;
-- nil: until next_done has no more).
local function harvest(c, finished)
  local s = c._async
  local multi = s.multi
  for _ = 1, finished or math.huge do
    local req, status, a, b, d, doc = multi:next_done()
    if not req then return end
    local h = req.handle
    s.running = s.running - 1 -- release(s, h), inline on this path
    local free = s.free
    free[#free + 1] = h
    req.handle = false
    if a == false and SHAPES[req.call.shape](doc) then -- the common case, without settle's detour
      req.state, req.res = "done", doc
      s.pending = s.pending - 1
      if c.log then log_attempt(c, req, status) end
      local callback = req.callback
      if callback then callback(doc, nil, nil) end
    else
      if a == false then a = h:headers() end -- valid until h starts its next transfer
      local res, err = protocol.interpret(req.call.shape, c:_secret(), status, a, b, d, doc)
      settle(c, req, res, err, status)
    end
    if c._async ~= s then return end -- a callback closed the client
  end
end

local function start_due(c)
  local s = c._async
  if s.waiting[1] == nil then return end
  local now = core.now()
  local i = 1
  while i <= #s.waiting do
    local req = s.waiting[i]
    if req.due <= now then
      table.remove(s.waiting, i)
      req.due = nil
      if req.state == "running" then
        local ok, why = launch(c, req)
        if not ok then
          local err = errors.finish(errors.new { name = "LimitryError", message = "could not start the retry: " .. tostring(why) },
            req.attempts, c._host)
          complete(c, req, nil, err.msg, err)
          if c._async ~= s then return end
        end
      end
    else
      i = i + 1
    end
  end
end

local function next_due(s)
  local due
  for _, req in ipairs(s.waiting) do
    if not due or req.due < due then due = req.due end
  end
  return due
end

local function in_flight(s) return s.running > 0 end

-- Watch mode: tells the host which sockets to watch, after libcurl changed them.
local function flush(s)
  local fn = s.watch
  if not fn then return end
  local list = s.multi:changes()
  if not list then return end
  for i = 1, #list, 2 do fn(list[i], EVENTS[list[i + 1]]) end
end

-- Drives every transfer of this client. Returns the number of requests not yet done.
function M.poll(c, timeout)
  timeout = timeout or 0
  if type(timeout) ~= "number" or timeout ~= timeout or timeout < 0 then error("client:poll: timeout must be a number of seconds >= 0", 2) end
  local s = c._async
  if not s then return 0 end
  local deadline = core.now() + timeout
  local multi = s.multi
  while true do
    if s.waiting[1] ~= nil then start_due(c) end
    local _, finished = multi:perform()
    if finished > 0 then
      harvest(c, finished)
      if c._async ~= s then return 0 end
    end
    if s.watch then flush(s) end
    if s.pending == 0 then return 0 end
    local now = core.now()
    if now >= deadline then return s.pending end
    local wait = deadline - now
    if s.waiting[1] ~= nil then wait = math.min(wait, math.max(0, next_due(s) - now)) end
    if s.running > 0 then
      -- curl_multi_wait itself returns by libcurl's next timeout, so that needs no call of its own.
      -- At most 1 s per turn; multi:wait truncates to whole ms itself.
      multi:wait(wait < 1 and wait * 1000 or 1000)
    else
      core.sleep(wait)
    end
  end
end

-- Seconds until poll() should run again though no socket is ready; nil when nothing is pending.
function M.next_timeout(c)
  local s = c._async
  if not s or s.pending == 0 then return nil end
  local t
  local due = next_due(s)
  if due then t = math.max(0, due - core.now()) end
  if in_flight(s) then
    local ms = s.multi:timeout()
    if ms >= 0 and (not t or ms / 1000 < t) then t = ms / 1000 end
  end
  return t or 0.05
end

-- Socket-callback style: fn(fd, events) is called (never from inside libcurl) whenever the set of
-- sockets to watch changes: events "r", "w" or "rw", or "" when fd is no longer to be watched.
-- The host then calls socket_action(fd, events) when fd is ready, and socket_action() when
-- next_timeout() seconds have passed. Any descriptor number works (no FD_SETSIZE limit).
function M.watch(c, fn)
  if c.closed then error("limitry: this client is closed", 3) end
  if type(fn) ~= "function" then error("client:watch: fn must be a function(fd, events)", 3) end
  local s = client_state(c)
  if s.watch ~= fn then
    if in_flight(s) then error("client:watch: call it while no request is in flight", 3) end
    s.multi:watch()
    s.watch = fn
  end
end

local MASKS = { r = 1, w = 2, rw = 3, wr = 3, e = 4, re = 5, er = 5, we = 6, ew = 6, rwe = 7 }

-- fd is ready for events ("r", "w", "rw"; an "e" for an error), or with no fd: the timeout of
-- next_timeout() expired. Drives the transfers, runs callbacks, returns the requests not yet done.
function M.socket_action(c, fd, events)
  local s = c._async
  if not s or not s.watch then error("client:socket_action: call client:watch(fn) first", 3) end
  local mask
  if fd ~= nil then
    mask = MASKS[events or "r"]
    if type(fd) ~= "number" then error("client:socket_action: fd must be a number", 3) end
    if not mask then error("client:socket_action: events must be 'r', 'w', 'rw' (with 'e' for an error)", 3) end
  end
  start_due(c)
  s.multi:socket_action(fd, mask)
  harvest(c)
  if c._async ~= s then return 0 end
  flush(s)
  return s.pending
end

-- The sockets in use: { {fd = n, read = bool, write = bool}, ... }.
function M.fds(c)
  local s = c._async
  if not s then return {} end
  return s.multi:fds()
end

-- call: the request of Client:_call ({ path, method, body, shape, retry }).
function M.start(c, call, callback)
  if c.closed then error("limitry: this client is closed", 3) end
  local s = c._async or client_state(c)
  -- call: path, method and body (the URL, which may hold credentials, is made at each attempt).
  -- Seven fields, made at once so the table is sized once, for eight: handle and res are false
  -- rather than nil, which would leave them out and add them one by one later. A failure's msg,
  -- err and a retry's due grow it, on that rarer path only.
  local req = setmetatable({ client = c, call = call, state = "running", attempts = 0, callback = callback,
    handle = false, res = false }, Request)
  local ok, why = launch(c, req)
  if not ok then error(why, 3) end
  s.pending = s.pending + 1
  return req
end

-- Frees everything async; pending requests end as cancelled.
function M.close(c)
  local s = c._async
  if not s then return end
  for _, req in ipairs(s.multi:owners()) do req:cancel() end
  for i = #s.waiting, 1, -1 do s.waiting[i]:cancel() end
  if s.watch then -- the host stops watching before the sockets close
    flush(s)
    local list = s.multi:watched()
    for i = 1, #list, 2 do s.watch(list[i], "") end
  end
  s.multi:close()
  for _, h in ipairs(s.free) do h:close() end
  c._async = nil
end

function Request:done() return self.state ~= "running" end

-- res, msg, err once done; nil, "pending" before.
function Request:result()
  if self.state == "running" then return nil, "pending" end
  return self.res, self.msg, self.err
end

-- Stops the request; its callback is not called. Its result becomes a LimitryError "cancelled".
function Request:cancel()
  if self.state ~= "running" then return false end
  local c = self.client
  local s = c._async
  if self.handle then
    s.multi:remove(self.handle)
    release(s, self.handle)
    self.handle = false
    flush(s)
  end
  for i, r in ipairs(s.waiting) do
    if r == self then table.remove(s.waiting, i) break end
  end
  self.state = "cancelled"
  s.pending = s.pending - 1
  local err = errors.cancelled(self.attempts)
  self.res, self.msg, self.err = nil, err.msg, err
  return true
end

-- Blocks (polling this client) until the request is done.
function Request:wait()
  while self.state == "running" do M.poll(self.client, 1) end
  return self:result()
end

-- Inside a coroutine: yields to the host's scheduler between polls instead of blocking, and
-- returns the result once done. Outside one, the same as wait().
function Request:await()
  local co, main = coroutine.running()
  local yieldable = co ~= nil and not main
  if coroutine.isyieldable then yieldable = coroutine.isyieldable() end
  if not yieldable then return self:wait() end
  while true do
    M.poll(self.client, 0)
    if self.state ~= "running" then return self:result() end
    coroutine.yield()
  end
end

return M
