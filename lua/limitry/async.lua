-- The async call: what every start_* returns (limitry.AsyncCall in the stubs), on every transport.
--   async:done()     true once finished or cancelled
--   async:result()   res, msg, err once done; nil, "pending" before
--   async:cancel()   stops it; its callback is not called; its result becomes LimitryError "cancelled"
--   async:wait()     blocks until done (the multi handle: polling the client; nginx: only the
--                    coroutine of the nginx request that waits)
--   async:await()    inside a coroutine, yields to the host's scheduler between polls
-- The call runs its lifecycle (limitry.call.run) in the background: on the multi handle, whose
-- driver runs it with each answer (limitry.transport.multi), or in an nginx light thread, on the
-- cosocket or worker-thread transport.
local errors = require "limitry.errors"
local run = require("limitry.call").run

local M = {}

local AsyncCall = {}
AsyncCall.__index = AsyncCall
M.AsyncCall = AsyncCall

-- Ends the call with its result and runs the callback.
function AsyncCall:complete(res, msg, err)
  self.stage, self.res = "done", res
  if res == nil then self.msg, self.err = msg, err end
  local d = self.driver
  d.pending = d.pending - 1
  local callback = self.callback
  if callback then callback(res, msg, err) end
end

-- Ends the call with a LimitryError (its next attempt could not start).
function AsyncCall:fail(state, message)
  local err = errors.finish(errors.new { name = "LimitryError", message = message }, self.attempts, state.host)
  return self:complete(nil, err.msg, err)
end

function AsyncCall:done() return self.stage ~= "running" end

function AsyncCall:result()
  if self.stage == "running" then return nil, "pending" end
  if self.raised then error(self.raised, 2) end
  return self.res, self.msg, self.err
end

function AsyncCall:cancel()
  if self.stage ~= "running" then return false end
  if self.thread then ngx.thread.kill(self.thread) else self.driver.transport.cancel(self) end
  self.stage = "cancelled"
  local d = self.driver
  d.pending = d.pending - 1
  local err = errors.cancelled(self.attempts)
  self.res, self.msg, self.err = nil, err.msg, err
  return true
end

function AsyncCall:wait()
  if self.thread then
    if self.stage == "running" then ngx.thread.wait(self.thread) end
  else
    while self.stage == "running" do self.client:poll(1) end
  end
  return self:result()
end

function AsyncCall:await()
  if self.thread then return self:wait() end
  local co, main = coroutine.running()
  local yieldable = co ~= nil and not main
  if coroutine.isyieldable then yieldable = coroutine.isyieldable() end
  if not yieldable then return self:wait() end
  while true do
    self.client:poll(0)
    if self.stage ~= "running" then return self:result() end
    coroutine.yield()
  end
end

-- A new async call, not yet started: its driver (the multi handle's state, or the per-transport
-- record of nginx light threads) gives its transport and counts the calls pending once the caller
-- has started it. Eight fields, made at
-- once so the table is sized once: handle and res are false rather than nil, which would leave them
-- out and add them one by one later; a failure's msg and err, a retry's due and sent grow the
-- table, on rarer paths only.
function M.new(client, call, callback, driver, attempts)
  return setmetatable({ client = client, call = call, callback = callback, driver = driver, stage = "running",
    attempts = attempts, handle = false, res = false }, AsyncCall)
end

-- In an nginx light thread: the whole lifecycle, blocking only this thread. A raise (a set-up
-- error) is kept and raised again by result() and wait(); the callback runs only on a result.
local function in_thread(async, state)
  local ok, res, msg, err = pcall(run, state, async.call, async.driver.transport, async)
  if async.stage ~= "running" then return end
  if ok then return async:complete(res, msg, err) end
  async.raised, async.callback = res, nil
  return async:complete(nil)
end

-- The `start` of a transport whose async calls run in nginx light threads (cosocket, worker_thread).
function M.in_threads(t)
  local driver = { transport = t, pending = 0 }
  return function(client, state, call, callback)
    local async = M.new(client, call, callback, driver, 0)
    driver.pending = driver.pending + 1
    async.thread = ngx.thread.spawn(in_thread, async, state)
    return async
  end
end

return M
