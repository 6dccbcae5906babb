-- start_* inside nginx: the call runs in an nginx light thread (ngx.thread.spawn) on the transport
-- the client would use there (cosockets by default), so waiting never blocks the worker.
-- The request object has the methods of limitry.async's requests: done, result, wait, await, cancel.
local errors = require "limitry.errors"

local M = {}

local Request = {}
Request.__index = Request

function M.start(client, call, callback)
  local req = setmetatable({ state = "running", attempts = 0 }, Request)
  req.thread = ngx.thread.spawn(function()
    local ok, res, msg, err = pcall(client._call, client, call)
    if req.state ~= "running" then return end
    if not ok then
      req.raised = res -- a set-up error: raised again by wait()
      res = nil
    end
    req.state = "done"
    req.res, req.msg, req.err = res, msg, err
    if callback and ok then callback(res, msg, err) end
  end)
  return req
end

function Request:done() return self.state ~= "running" end

function Request:result()
  if self.state == "running" then return nil, "pending" end
  if self.raised then error(self.raised, 2) end
  return self.res, self.msg, self.err
end

-- Yields this request's coroutine (not the worker) until the call is done.
function Request:wait()
  if self.state == "running" then ngx.thread.wait(self.thread) end
  return self:result()
end
Request.await = Request.wait

function Request:cancel()
  if self.state ~= "running" then return false end
  ngx.thread.kill(self.thread)
  self.state = "cancelled"
  local err = errors.cancelled(self.attempts)
  self.res, self.msg, self.err = nil, err.msg, err
  return true
end

return M
