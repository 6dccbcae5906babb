-- A 60 Hz game loop that asks Limitry for usage while it ticks, without ever waiting on the
-- network: queries are started with start_summary and finished by client:poll(0) inside the tick.
--   lua5.4 examples/game_loop.lua [seconds] [queries]
-- Needs LIMITRY_API_KEY (and LIMITRY_BASE_URL for the local server). Prints every query's
-- outcome and the tick statistics; exits 1 if a query failed or never finished.
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/" .. (jit and "luajit" or _VERSION:sub(5)) .. "/?.so;" .. package.cpath

local limitry = require "limitry"
local core = require "limitry.core" -- a monotonic clock and a sleep, for the loop itself

local seconds = tonumber(arg[1]) or 3
local wanted = tonumber(arg[2]) or 12
local TICK = 1 / 60

local client = limitry.new { timeout = 5 }
local usage = client:usage()
local customers = { "cust_acme", "cust_globex", "cust_initech", "cust_umbrella", "cust_hooli", "cust_stark" }

local started, finished, failed = 0, 0, 0
local worst, total, ticks = 0, 0, 0
local t_start = core.now()
local next_tick = t_start

while core.now() - t_start < seconds or (finished + failed < started and core.now() - t_start < seconds + 10) do
  local tick_begin = core.now()

  -- Game work would go here. Every few ticks, the HUD wants fresh numbers for a customer.
  if started < wanted and ticks % 10 == 0 then
    started = started + 1
    local who = customers[(started - 1) % #customers + 1]
    usage:start_summary("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", { customer_id = who },
      function(summary, msg)
        if summary then
          finished = finished + 1
          print(string.format("tick %4d  %-14s %6d events  %10.2f cents", ticks, who, summary.totalEvents, summary.totalCostCents))
        else
          failed = failed + 1
          print(string.format("tick %4d  %-14s failed: %s", ticks, who, msg))
        end
      end)
  end
  client:poll(0) -- progress the network, never wait

  local spent = core.now() - tick_begin
  worst = math.max(worst, spent)
  total = total + spent
  ticks = ticks + 1
  next_tick = next_tick + TICK
  local now = core.now()
  if next_tick > now then core.sleep(next_tick - now) else next_tick = now end
end

client:close()
print(string.format("%d ticks, %d/%d queries completed, %d failed, worst tick %.2f ms, mean tick %.3f ms",
  ticks, finished, started, failed, worst * 1000, total / ticks * 1000))
os.exit((finished == started and failed == 0) and 0 or 1)
