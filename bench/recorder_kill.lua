-- A plain Lua host records N events through limitry.recorder with a spool file, is killed with
-- kill -9 half way, and is started again: prints how many events it had recorded, how many Limitry
-- holds, and whether any was counted twice. lua5.4 bench/recorder_kill.lua [N] (default 100,000)
local limitry = require "limitry"
local support = require "spec.support.server"
local socket = require "socket"

local N = tonumber(arg[1]) or 100000
local server = support.start { faults = false }
local admin = limitry.new { api_key = server.api_key, base_url = server.base_url }
local dir = support.tmpdir("recorder-kill")
local customer = "kill-" .. os.time()
local env = string.format("LIMITRY_API_KEY=%s LIMITRY_BASE_URL=%s", server.api_key, server.base_url)
local t0 = socket.gettime()
local p = assert(io.popen(string.format("%s lua5.4 spec/support/recorder_host.lua record %s/spool %s %d %s/progress >/dev/null 2>&1 & echo $!",
  env, dir, customer, N, dir)))
local pid = tonumber(p:read("*l"))
p:close()
local function progress()
  local f = io.open(dir .. "/progress")
  if not f then return 0 end
  local last = 0
  for line in f:lines() do last = tonumber(line) or last end
  f:close()
  return last
end
while progress() < N / 2 and socket.gettime() - t0 < 300 do socket.sleep(0.01) end
os.execute("kill -9 " .. pid)
socket.sleep(0.2)
local recorded = progress()
local before = assert(admin:customers():get_usage(customer, "2000-01-01", "2100-01-01")).totalEvents
local t1 = socket.gettime()
local rc = os.execute(env .. " lua5.4 spec/support/recorder_host.lua drain " .. dir .. "/spool >/dev/null 2>&1")
local drain = socket.gettime() - t1
local u = assert(admin:customers():get_usage(customer, "2000-01-01", "2100-01-01"))
local sum = recorded * (recorded + 1) / 2
local once = (u.totalEvents == recorded and u.totalInputTokens == sum)
  or (u.totalEvents == recorded + 1 and u.totalInputTokens == sum + recorded + 1)
print("| measure | value |")
print("|---|---|")
print(string.format("| events recorded before kill -9 (record() returned) | %d of %d |", recorded, N))
print(string.format("| events Limitry held at the kill | %d |", before))
print(string.format("| restart: spool drained in | %.2f s (%s) |", drain, (rc == true or rc == 0) and "ok" or "failed"))
print(string.format("| events at Limitry after the restart | %d |", u.totalEvents))
print(string.format("| every recorded event once (sum of their input_tokens = 1 + ... + n) | %s |", once and "yes" or "NO"))
support.stop(server)
os.exit(once and 0 or 1)
