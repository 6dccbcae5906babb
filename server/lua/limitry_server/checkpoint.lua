-- WAL checkpoints off the request path. The event store's connection never checkpoints on its own
-- (but for a backstop when the WAL passes ~200 MiB): a timer in the worker hands a PASSIVE checkpoint
-- to an nginx thread (ngx.run_worker_thread, thread pool `limitry_server`) with a connection of its
-- own, so copying the WAL into the database and fsync'ing it never holds a request. A PASSIVE
-- checkpoint waits for no one and blocks no writer; the writer restarts the WAL once all of it is
-- checkpointed. Without thread support (an older lua-nginx-module) the worker checkpoints itself.
local M = {}

-- Runs in the thread's own Lua VM: one PASSIVE checkpoint of the database at path. Returns the WAL's
-- frames and the frames checkpointed.
function M.run(path)
  local sqlite = require "limitry_server.sqlite"
  local conn = sqlite.open(path)
  local ok, row = pcall(conn.row, conn, "PRAGMA wal_checkpoint(PASSIVE)")
  conn:close()
  if not ok then error(row, 0) end
  return row[2], row[3]
end

-- Starts the timer (in the worker): every `interval` seconds, a checkpoint when something was
-- committed since the last one. store is the event store (commits, path, checkpoint()).
function M.start(store, interval)
  local running, seen = false, -1
  local function tick(premature)
    if premature or running or store.commits == seen then return end
    running = true
    local commits = store.commits
    local ok, done, err = pcall(ngx.run_worker_thread, "limitry_server", "limitry_server.checkpoint", "run", store.path)
    if not ok or not done then
      -- No thread pool (or no run_worker_thread): checkpoint here, between requests.
      local fine, ferr = pcall(store.checkpoint)
      if not fine then ngx.log(ngx.ERR, "limitry-local: checkpoint failed: ", ferr) end
      if not M.warned then
        M.warned = true
        ngx.log(ngx.WARN, "limitry-local: checkpoints run in the worker (", tostring(ok and err or done), ")")
      end
    end
    seen = commits
    running = false
  end
  return ngx.timer.every(interval, tick)
end

return M
