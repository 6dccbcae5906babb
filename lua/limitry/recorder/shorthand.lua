-- Shorthand for the member names an event's JSON text carries, for queue items: a byte that JSON
-- text never holds raw (control characters other than tab, newline and return, which must be
-- escaped in strings and are not whitespace) stands for a run of text. An item written with them
-- (limitry.gateway's are) takes about half the room in a lua_shared_dict (a 150-byte value lands
-- in the dict's 256-byte slab class, a 264-byte one in the 512-byte class), so the same dict holds
-- twice the events; the flusher expands a batch in one pass of the C core before sending it
-- (Lua's gsub with a table took ~3 ms a batch of 1,000, in a worker that also serves requests).
local core = require "limitry.core"

local M = {}

-- code -> the text it stands for
M.TEXT = {
  ["\1"] = '{"customerId":"',
  ["\2"] = '","eventType":',
  ["\3"] = ',"idempotencyKey":"',
  ["\4"] = '","timestamp":"',
  ["\5"] = ',"latencyMs":',
  ["\6"] = ',"model":"',
  ["\7"] = ',"provider":"',
  ["\8"] = ',"inputTokens":',
  ["\11"] = ',"outputTokens":',
  ["\12"] = ',"properties":{',
  ["\14"] = ',"costCents":',
}

local TEXT = M.TEXT

-- text with every code replaced by what it stands for (text itself when it holds none).
function M.expand(text) return core.expand(text, TEXT) end

return M
