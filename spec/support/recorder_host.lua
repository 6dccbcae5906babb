-- A plain Lua host (a game server, say) recording events through limitry.recorder with a spool
-- file, for spec/recorder_spec.lua and bench/recorder_kill.lua:
--   lua recorder_host.lua record SPOOL CUSTOMER N PROGRESS [HOLD]   records events 1..N
--        (input_tokens = i), ticking as it goes, and writes i to PROGRESS after each record()
--        returned; then flushes. With HOLD, it waits (up to 60 s) after event HOLD to be killed:
--        a kill aimed between two counts then lands there however slow the killer is.
--   lua recorder_host.lua drain SPOOL                         sends what the spool holds, then exits
-- The key and URL come from LIMITRY_API_KEY / LIMITRY_BASE_URL.
local recorder = require "limitry.recorder"

local mode, spool = arg[1], arg[2]
local r = recorder.new { client = {}, spool = spool, batch_size = 1000, flush_interval = 0.2 }

if mode == "record" then
  local customer, n, progress, hold = arg[3], tonumber(arg[4]), arg[5], tonumber(arg[6])
  local out = assert(io.open(progress, "w"))
  out:setvbuf("no")
  for i = 1, n do
    assert(r:record { customer_id = customer, event_type = "game_tick", input_tokens = i })
    out:write(i, "\n")
    if i % 200 == 0 then r:tick() end
    if i == hold then require("socket").sleep(60) end
  end
  out:close()
end
local ok, msg = r:close(60)
io.stdout:write(ok and "delivered\n" or (msg .. "\n"))
os.exit(ok and 0 or 1)
