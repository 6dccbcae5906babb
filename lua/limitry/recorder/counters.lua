-- limitry.recorder's counters (and limitry.gateway's): in the shared dict or in a plain table,
-- each { incr(name, n), get(name) }; the dict's also sync().
local M = {}

-- Counters: in the dict (shared by workers, read by limitry.gateway's metrics) or a plain table.
-- In the dict they are summed in the worker first and added to the dict by sync() (the flusher's
-- timer calls it every run): a counter costs no dict operation on the request path.
function M.dict(dict, prefix)
  local pending = {}
  local c = {
    incr = function(name, n) pending[name] = (pending[name] or 0) + n end,
    get = function(name) return (dict:get(prefix .. name) or 0) + (pending[name] or 0) end,
  }
  function c.sync()
    for name, n in pairs(pending) do
      local key = prefix .. name
      if not dict:incr(key, n) then
        dict:safe_add(key, 0)
        dict:incr(key, n)
      end
    end
    pending = {}
  end
  return c
end
function M.table()
  local t = {}
  return { incr = function(name, n) t[name] = (t[name] or 0) + n end, get = function(name) return t[name] or 0 end }
end

return M
