-- A game server that gives each player a daily budget of AI tokens (an NPC that talks back). The
-- 60 Hz tick loop never waits on the network: each player's use so far today comes from one
-- quotas:start_check at login, every talk is counted here and recorded through limitry.recorder
-- (queued at once, sent in batches by recorder:tick()), and a player over budget gets a canned line
-- instead of the model. With a spool file, a crash of the server loses no recorded talk.
--   lua5.4 examples/game_server.lua [players] [daily_tokens]
-- Needs LIMITRY_API_KEY (and LIMITRY_BASE_URL for the local server). Prints each player's talks and
-- refusals and the tick statistics; exits 1 if Limitry's count differs from the server's or a player
-- was never refused.
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/" .. (jit and "luajit" or _VERSION:sub(5)) .. "/?.so;" .. package.cpath

local limitry = require "limitry"
local recorder = require "limitry.recorder"
local core = require "limitry.core" -- a monotonic clock and a sleep, for the loop itself

local PLAYERS = tonumber(arg[1]) or 3
local DAILY_TOKENS = tonumber(arg[2]) or 500
local TOKENS_PER_TALK = 120 -- (even) what one NPC answer costs (a real server would use the model's count)
local TICK = 1 / 60
local MAX_SECONDS = 20

local client = limitry.new { timeout = 5 }
local spool = os.tmpname() -- a real server keeps its spool in its own data folder
local events = recorder.new { client = { timeout = 5 }, flush_interval = 0.25, spool = spool }

-- One quota per player: total tokens per UTC day, matched on the player's customer id; and the
-- player's use so far today, asked for once, without waiting.
local run = tostring(os.time()) .. "-" .. tostring(math.random(1, 1e6))
local players = {}
for i = 1, PLAYERS do
  local id = "player-" .. i .. "-" .. run
  assert(client:quotas():create { name = "daily NPC tokens for " .. id, metric = "total_tokens",
    limit_value = DAILY_TOKENS, period = "day", dimension_filters = { customer_id = id } })
  local p = { id = id, talks = 0, refused = 0, used = nil, spent = 0 }
  players[i] = p
  client:quotas():start_check({ customer_id = id }, function(res, msg)
    if not res then error("could not read " .. id .. "'s quota: " .. msg) end
    p.used = res.quotas[1] and res.quotas[1].used or 0
  end)
end

local worst, ticks = 0, 0
local t0 = core.now()
local next_tick = t0

local function everyone_refused()
  for _, p in ipairs(players) do if p.refused == 0 then return false end end
  return true
end

while not everyone_refused() and core.now() - t0 < MAX_SECONDS do
  local tick_begin = core.now()
  ticks = ticks + 1

  -- Every 6 ticks a player talks to the NPC, once their use so far is known.
  if ticks % 6 == 0 then
    local p = players[math.floor(ticks / 6) % PLAYERS + 1]
    if p.used then
      if p.used + p.spent + TOKENS_PER_TALK > DAILY_TOKENS then
        p.refused = p.refused + 1
        if p.refused == 1 then
          print(string.format("%s: over today's %d tokens after %d talks; the NPC says \"Come back tomorrow\"",
            p.id, DAILY_TOKENS, p.talks))
        end
      else
        p.talks, p.spent = p.talks + 1, p.spent + TOKENS_PER_TALK
        assert(events:record { customer_id = p.id, event_type = "npc_dialogue", model = "npc-small",
          input_tokens = TOKENS_PER_TALK / 2, output_tokens = TOKENS_PER_TALK / 2 })
      end
    end
  end

  client:poll(0)  -- the login checks: finishes whatever is ready, never waits
  events:tick()   -- sends a batch when one is due, never waits

  local spent = core.now() - tick_begin
  if spent > worst then worst = spent end
  next_tick = next_tick + TICK
  local pause = next_tick - core.now()
  if pause > 0 then core.sleep(pause) end
end

-- Shutting down: what is queued goes out (or stays in the spool for the next start).
local delivered, msg = events:close(10)
local s = events:stats()
local agree = delivered ~= nil
for _, p in ipairs(players) do
  local u = assert(client:customers():get_usage(p.id, "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"))
  if u.totalTokens ~= p.spent then
    agree = false
    print(string.format("%s: Limitry counted %d tokens, the server %d", p.id, u.totalTokens, p.spent))
  end
end
local refused_all = everyone_refused()
print(string.format("%d players, %d ticks, worst tick %.2f ms, %d talks recorded, %d delivered%s, every player refused: %s",
  PLAYERS, ticks, worst * 1000, s.queued, s.sent, delivered and "" or (" (" .. msg .. ")"), tostring(refused_all)))
client:close()
if delivered then os.remove(spool) end
os.exit((agree and refused_all) and 0 or 1)
