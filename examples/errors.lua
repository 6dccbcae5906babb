-- Handling failures: every call returns nil, msg, err on a runtime failure.
--   lua5.4 examples/errors.lua
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/" .. (jit and "luajit" or _VERSION:sub(5)) .. "/?.so;" .. package.cpath

local limitry = require "limitry"

-- A wrong key: an AuthenticationError, not retried.
local client = limitry.new { api_key = "lm_not_a_real_key", max_retries = 0, timeout = 5 }
local summary, msg, err = client:usage():get_summary("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
if not summary then
  print("failed:", msg)
  print("  name:", err.name, "status:", err.status, "attempts:", err.attempts)
  if err:is("AuthenticationError") then
    print("  -> check LIMITRY_API_KEY")
  elseif err:is("RateLimitError") then
    print("  -> retry after", err.retry_after, "seconds")
  elseif err:is("NetworkError") then
    print("  -> the network failed (timeout: " .. tostring(err:is("TimeoutError")) .. ")")
  end
end

-- Wrong arguments raise at once, before anything is sent.
local ok, problem = pcall(client:usage().get_breakdown, client:usage(), { group_by = "colour",
  start_date = "2024-01-01T00:00:00Z", end_date = "2024-02-01T00:00:00Z" })
print("raised:", ok == false, problem)
client:close()
