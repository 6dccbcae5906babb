-- Shorthand for the member names an event's JSON text carries, for queue items: a byte that JSON
-- text never holds raw (control characters other than tab, newline and return, which must be
-- escaped in strings and are not whitespace) stands for a run of text. An item written with them
-- (limitry.gateway's are) takes about half the room in a lua_shared_dict (a 150-byte value lands
-- in the dict's 256-byte slab class, a 264-byte one in the 512-byte class), so the same dict holds
-- twice the events; the flusher expands a batch with one gsub before sending it.
local M = {}

local find, gsub = string.find, string.gsub

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

local CODES = "[\1-\8\11\12\14]"

-- text with every code replaced by what it stands for (text itself when it holds none).
function M.expand(text)
  if find(text, CODES) then return (gsub(text, CODES, M.TEXT)) end
  return text
end

return M
