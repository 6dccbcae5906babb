-- A game server that gives each player a daily budget of AI tokens (an NPC that talks back): a
-- Limitry quota per player, checked and recorded with start_track from the 60 Hz tick loop, so the
-- loop never waits on the network. A player over budget gets a canned line instead of the model.
--   lua5.4 examples/game_server.lua [players] [daily_tokens]
-- Needs LIMITRY_API_KEY (and LIMITRY_BASE_URL for the local server). Prints each player's talks
-- and refusals and the tick statistics; exits 1 if a track call failed or a player was never refused.
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/" .. (jit and "luajit" or _VERSION:sub(5)) .. "/?.so;" .. package.cpath

local limitry = require "limitry"
local core = require "limitry.core" -- a monotonic clock and a sleep, for the loop itself

local PLAYERS = tonumber(arg[1]) or 3
local DAILY_TOKENS = tonumber(arg[2]) or 500
local TOKENS_PER_TALK = 120 -- (even) what one NPC answer costs (a real server would use the model's count)
local TICK = 1 / 60
local MAX_SECONDS = 20

local client = limitry.new { timeout = 5 }

-- One quota per player: total tokens per UTC day, matched on the player's customer id.
local run = tostring(os.time()) .. "-" .. tostring(math.random(1, 1e6))
local players = {}
for i = 1, PLAYERS do
  local id = "player-" .. i .. "-" .. run
  assert(client:quotas():create { name = "daily NPC tokens for " .. id, metric = "total_tokens",
    limit_value = DAILY_TOKENS, period = "day", dimension_filters = { customer_id = id } })
  players[i] = { id = id, talks = 0, refused = 0, waiting = false }
end

local failures, worst, ticks = 0, 0, 0
local t0 = core.now()
local next_tick = t0

local function everyone_refused()
  for _, p in ipairs(players) do if p.refused == 0 or p.waiting then return false end end
  return true
end

while not everyone_refused() and core.now() - t0 < MAX_SECONDS do
  local tick_begin = core.now()
  ticks = ticks + 1

  -- Every 6 ticks a player who is not already waiting talks to the NPC.
  if ticks % 6 == 0 then
    local p = players[math.floor(ticks / 6) % PLAYERS + 1]
    if not p.waiting then
      p.waiting = true
      client:start_track({ customer_id = p.id, event_type = "npc_dialogue", model = "npc-small",
        input_tokens = math.floor(TOKENS_PER_TALK / 2), output_tokens = math.floor(TOKENS_PER_TALK / 2) }, function(decision, msg)
        p.waiting = false
        if not decision then
          failures = failures + 1
          print(p.id .. ": track failed: " .. msg)
        elseif decision.allowed then
          p.talks = p.talks + 1
        else
          p.refused = p.refused + 1
          if p.refused == 1 then
            print(string.format("%s: over today's %d tokens after %d talks; the NPC says \"Come back tomorrow\" (retry in %s s)",
              p.id, DAILY_TOKENS, p.talks, tostring(decision.retry_after)))
          end
        end
      end)
    end
  end

  client:poll(0) -- finishes whatever is ready, runs callbacks; never waits

  local spent = core.now() - tick_begin
  if spent > worst then worst = spent end
  next_tick = next_tick + TICK
  local pause = next_tick - core.now()
  if pause > 0 then core.sleep(pause) end
end

local refused_all = everyone_refused()
print(string.format("%d players, %d ticks, worst tick %.2f ms, %d failed track calls, every player refused: %s",
  PLAYERS, ticks, worst * 1000, failures, tostring(refused_all)))
client:close()
os.exit((failures == 0 and refused_all) and 0 or 1)
