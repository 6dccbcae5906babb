-- The multi-handle transport: async calls (start_*) outside nginx, many at a time on one libcurl
-- multi handle per client, driven by the host:
--   client:poll(seconds)                 drive transfers; never blocks longer than `seconds`
--   client:fds(), client:next_timeout()  for hosts that watch sockets themselves
--   client:watch(fn), client:socket_action(fd, events)   the socket-callback style
-- This transport drives the async calls (limitry.async) itself. start launches a call's first
-- attempt; send (a retry's) launches one and returns false: either way, the answer comes back from
-- harvest, inside poll or socket_action and never inside libcurl, which runs the call's lifecycle
-- (limitry.call.run) again with it. sleep puts the call on the waiting list and returns false;
-- start_due runs the lifecycle again when the retry is due. The configuration is libcurl's
-- (limitry.transport.curl). Per client (state.multi): the multi handle, idle handles kept for
-- their TLS sessions, the calls waiting out a retry delay, and counts.
local core = require "limitry.core"
local curl = require "limitry.transport.curl"
local call = require "limitry.call"
local new_async_call = require("limitry.async").new

local run, PENDING, now = call.run, call.PENDING, core.now

local M = { name = "multi", KINDS = curl.KINDS }

local EVENTS = { "r", "w", "rw", "" } -- libcurl's CURL_POLL_IN, _OUT, _INOUT, _REMOVE

local function driver(state)
  local d = state.multi
  if not d then
    d = {
      multi = core.multi(), -- hands each call back from next_done (the owner given to add)
      free = {},      -- idle handles, kept for their TLS sessions
      waiting = {},   -- calls waiting out a retry delay
      pending = 0,    -- calls not yet done
      running = 0,    -- handles attached to multi
      transport = M,  -- what async calls driven here run on
    }
    state.multi = d
  end
  return d
end

-- Launches an attempt of call c for the async call. Nothing changes before multi:add has
-- succeeded (the idle handle is taken off the list only then), so a raise there (an option libcurl
-- refuses, out of memory) leaves nothing behind that wait() would wait for. Returns true, or false and the error
-- (its message without a position: add is called by pcall, and start_* names the caller's line).
local function launch(state, d, c, async)
  local free = d.free
  local n = #free
  local h = free[n] or core.new()
  local multi, path = d.multi, c.path
  if state.curl_path ~= path then state.curl_path, state.curl_url = path, state.url .. path end -- curl.url, inline
  local ok, why = pcall(multi.add, multi, h, state.curl_config or curl.config(state), state.curl_url, c.method,
    c.body, c.flags, async)
  if not ok then return false, why end
  if n > 0 then free[n] = nil end
  async.handle = h
  d.running = d.running + 1
  return true
end

-- A retry's attempt: raises when it cannot start (start_due ends the call with a LimitryError).
function M.send(state, c, async)
  local ok, why = launch(state, state.multi, c, async)
  if not ok then error(why, 0) end
  return false
end

function M.sleep(seconds, async)
  local d = async.driver
  async.due = now() + seconds
  d.waiting[#d.waiting + 1] = async
  return false
end

-- Starts an async call (limitry.async) and launches its first attempt as call.run's loop would
-- (the attempt count, its start time for the log); its answer runs the loop. Raises as start_*
-- does (error()'s `level`, counted from here) when the attempt cannot start.
function M.start(client, state, c, callback, level)
  local d = state.multi or driver(state)
  local async = new_async_call(client, c, callback, d, 1)
  local ok, why = launch(state, d, c, async)
  if not ok then error(why, level) end
  if client.log then async.started = now() end
  d.pending = d.pending + 1
  return async
end

local function release(d, h)
  d.running = d.running - 1
  local free = d.free
  free[#free + 1] = h
end

-- Hands the answers of the transfers that finished to their calls: at most `finished` (what
-- perform counted; nil: until next_done has no more).
local function harvest(state, d, finished)
  local multi, free = d.multi, d.free
  for _ = 1, finished or math.huge do
    local async, status, a, b, c, doc = multi:next_done()
    if not async then return end
    local h = async.handle
    d.running = d.running - 1 -- release(d, h), inline on this path
    free[#free + 1] = h
    async.handle = false
    -- The call's lifecycle, on from its attempt's answer (h:headers() stays valid until h starts
    -- its next transfer).
    local res, msg, err = run(state, async.call, M, async, status, a, b, c, doc, h)
    if res ~= PENDING then async:complete(res, msg, err) end
    if state.multi ~= d then return end -- a callback closed the client
  end
end

-- Steps the calls whose retry is due; one whose next attempt cannot start ends with a LimitryError.
local function start_due(state, d)
  local waiting = d.waiting
  if waiting[1] == nil then return end
  local t = now()
  local i = 1
  while i <= #waiting do
    local async = waiting[i]
    if async.due <= t then
      table.remove(waiting, i)
      async.due = nil
      local ok, res, msg, err = pcall(run, state, async.call, M, async)
      if not ok then
        async:fail(state, "could not start the retry: " .. tostring(res))
        if state.multi ~= d then return end
      elseif res ~= PENDING then
        async:complete(res, msg, err)
      end
    else
      i = i + 1
    end
  end
end

local function next_due(d)
  local due
  for _, async in ipairs(d.waiting) do
    if not due or async.due < due then due = async.due end
  end
  return due
end

-- Watch mode: tells the host which sockets to watch, after libcurl changed them.
local function flush(d)
  local fn = d.watch
  if not fn then return end
  local list = d.multi:changes()
  if not list then return end
  for i = 1, #list, 2 do fn(list[i], EVENTS[list[i + 1]]) end
end

-- Drives every transfer of this client. Returns the number of calls not yet done.
function M.poll(state, timeout)
  timeout = timeout or 0
  if type(timeout) ~= "number" or timeout ~= timeout or timeout < 0 then error("client:poll: timeout must be a number of seconds >= 0", 3) end
  local d = state.multi
  if not d then return 0 end
  local deadline = core.now() + timeout
  local multi = d.multi
  while true do
    if d.waiting[1] ~= nil then start_due(state, d) end
    local _, finished = multi:perform()
    if finished > 0 then
      harvest(state, d, finished)
      if state.multi ~= d then return 0 end
    end
    if d.watch then flush(d) end
    if d.pending == 0 then return 0 end
    local t = now()
    if t >= deadline then return d.pending end
    local wait = deadline - t
    if d.waiting[1] ~= nil then wait = math.min(wait, math.max(0, next_due(d) - t)) end
    if d.running > 0 then
      -- curl_multi_wait itself returns by libcurl's next timeout, so that needs no call of its own.
      -- At most 1 s per turn; multi:wait truncates to whole ms itself.
      multi:wait(wait < 1 and wait * 1000 or 1000)
    else
      core.sleep(wait)
    end
  end
end

-- Seconds until poll() should run again though no socket is ready; nil when nothing is pending.
function M.next_timeout(state)
  local d = state.multi
  if not d or d.pending == 0 then return nil end
  local t
  local due = next_due(d)
  if due then t = math.max(0, due - core.now()) end
  if d.running > 0 then
    local ms = d.multi:timeout()
    if ms >= 0 and (not t or ms / 1000 < t) then t = ms / 1000 end
  end
  return t or 0.05
end

-- Socket-callback style: fn(fd, events) is called (never from inside libcurl) whenever the set of
-- sockets to watch changes: events "r", "w" or "rw", or "" when fd is no longer to be watched.
-- The host then calls socket_action(fd, events) when fd is ready, and socket_action() when
-- next_timeout() seconds have passed. Any descriptor number works (no FD_SETSIZE limit).
function M.watch(state, fn)
  if type(fn) ~= "function" then error("client:watch: fn must be a function(fd, events)", 3) end
  local d = driver(state)
  if d.watch ~= fn then
    if d.running > 0 then error("client:watch: call it while no request is in flight", 3) end
    d.multi:watch()
    d.watch = fn
  end
end

local MASKS = { r = 1, w = 2, rw = 3, wr = 3, e = 4, re = 5, er = 5, we = 6, ew = 6, rwe = 7 }

-- fd is ready for events ("r", "w", "rw"; an "e" for an error), or with no fd: the timeout of
-- next_timeout() expired. Drives the transfers, runs callbacks, returns the calls not yet done.
function M.socket_action(state, fd, events)
  local d = state.multi
  if not d or not d.watch then error("client:socket_action: call client:watch(fn) first", 3) end
  local mask
  if fd ~= nil then
    mask = MASKS[events or "r"]
    if type(fd) ~= "number" then error("client:socket_action: fd must be a number", 3) end
    if not mask then error("client:socket_action: events must be 'r', 'w', 'rw' (with 'e' for an error)", 3) end
  end
  start_due(state, d)
  d.multi:socket_action(fd, mask)
  harvest(state, d)
  if state.multi ~= d then return 0 end
  flush(d)
  return d.pending
end

-- The sockets in use: { {fd = n, read = bool, write = bool}, ... }.
function M.fds(state)
  local d = state.multi
  if not d then return {} end
  return d.multi:fds()
end

-- Stops the async call's transfer or its wait for a retry (limitry.async's cancel).
function M.cancel(async)
  local d = async.driver
  if async.handle then
    d.multi:remove(async.handle)
    release(d, async.handle)
    async.handle = false
    flush(d)
  end
  for i, r in ipairs(d.waiting) do
    if r == async then table.remove(d.waiting, i) break end
  end
end

-- Frees everything this client holds here; pending calls end as cancelled.
function M.close(state)
  local d = state.multi
  if not d then return end
  for _, async in ipairs(d.multi:owners()) do async:cancel() end
  for i = #d.waiting, 1, -1 do d.waiting[i]:cancel() end
  if d.watch then -- the host stops watching before the sockets close
    flush(d)
    local list = d.multi:watched()
    for i = 1, #list, 2 do d.watch(list[i], "") end
  end
  d.multi:close()
  for _, h in ipairs(d.free) do h:close() end
  state.multi = nil
end

return M
