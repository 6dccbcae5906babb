-- The recorder's queue inside nginx: a lua_shared_dict shared by every worker, which outlives a
-- worker's crash and a reload (HUP) (not a stop of nginx: the recorder flushes on the way out).
--
-- Keys, under the recorder's prefix P:
--   P.."q"        a shared-dict list of items: every worker appends (rpush), the flusher takes (lpop)
--   P.."b:"..id   a batch taken off the list and not yet settled (delivered or dead-lettered);
--                 it stays there across failures, crashes and reloads until it is settled
--   P.."bseq"     the last batch id given; P.."blow": every batch below it is settled
--   P.."held"     items in unsettled batches (with the list's length: the queue's depth)
--   P.."lock"     the flusher's token: one flusher at a time across workers, with a lease, so a
--                 crashed flusher's batches are picked up by the next one
-- Only the lock holder takes, splits and settles batches. Nothing here ever calls set/add/incr with
-- an init value, which evict the least recently used keys when the dict is full (the queue among
-- them): new keys go through safe_add/safe_set, which refuse instead.
local M = {}
local Queue = {}
Queue.__index = Queue

local concat, tostring = table.concat, tostring

local function join(items)
  local out = {}
  for i, item in ipairs(items) do out[2 * i - 1], out[2 * i] = #item .. ":", item end
  return concat(out)
end

local function split_joined(s)
  local items, i = {}, 1
  while i <= #s do
    local colon = s:find(":", i, true)
    local len = colon and tonumber(s:sub(i, colon - 1))
    if not len then break end
    items[#items + 1] = s:sub(colon + 1, colon + len)
    i = colon + len + 1
  end
  return items
end

-- A counter that exists from now on (created without evicting anything).
local function counter(dict, key, init)
  if dict:get(key) == nil then dict:safe_add(key, init) end
end

-- dict: the ngx.shared dict; prefix: its keys' prefix; max_queued: the bound on depth(), or nil:
-- the dict's memory, with an eighth of it kept free for the rest (cached limits, counters, batches).
function M.new(dict, prefix, max_queued)
  local q = setmetatable({ dict = dict, max = max_queued, reserve = math.floor(dict:capacity() / 8), P = prefix,
    k_list = prefix .. "q", k_seq = prefix .. "bseq", k_low = prefix .. "blow", k_held = prefix .. "held",
    k_lock = prefix .. "lock" }, Queue)
  counter(dict, q.k_seq, 0)
  counter(dict, q.k_low, 1)
  counter(dict, q.k_held, 0)
  return q
end

function Queue:depth()
  return (self.dict:llen(self.k_list) or 0) + (self.dict:get(self.k_held) or 0)
end

-- Items not yet taken into a batch.
function Queue:waiting() return self.dict:llen(self.k_list) or 0 end

function Queue:push(item)
  local dict = self.dict
  if self.max then
    if (dict:llen(self.k_list) or 0) + (dict:get(self.k_held) or 0) >= self.max then return nil, "full" end
  elseif dict:free_space() < self.reserve then
    return nil, "full"
  end
  local len, err = dict:rpush(self.k_list, item)
  if not len then return nil, err == "no memory" and "full" or tostring(err) end
  return true
end

-- The lock (lease seconds) for `token`: taken, or renewed when token holds it already.
function Queue:lock(token, lease)
  local dict = self.dict
  if dict:safe_add(self.k_lock, token, lease) then return true end
  if dict:get(self.k_lock) == token then
    dict:expire(self.k_lock, lease)
    return true
  end
  return false
end

function Queue:unlock(token)
  if self.dict:get(self.k_lock) == token then self.dict:delete(self.k_lock) end
end

function Queue:holds(token) return self.dict:get(self.k_lock) == token end

local function batch_key(self, id) return self.P .. "b:" .. id end

-- The oldest unsettled batch not in `busy` (ids of batches in flight), if any; moves "blow" past
-- settled ones.
local function oldest(self, busy)
  local dict = self.dict
  local low, high = dict:get(self.k_low) or 1, dict:get(self.k_seq) or 0
  local first_unsettled
  for id = low, high do
    if busy and busy[id] then -- in flight: unsettled, and not read (a batch is ~150 KB to copy)
      first_unsettled = first_unsettled or id
    else
      local joined = dict:get(batch_key(self, id))
      if joined then
        first_unsettled = first_unsettled or id
        if first_unsettled > low then dict:incr(self.k_low, first_unsettled - low) end
        return { id = id, items = split_joined(joined) }
      end
    end
  end
  local settled_to = first_unsettled or high + 1
  if settled_to > low then dict:incr(self.k_low, settled_to - low) end
  return nil
end

function Queue:has_pending()
  local dict = self.dict
  return (dict:get(self.k_seq) or 0) >= (dict:get(self.k_low) or 1)
end

-- Stores items as a new batch; nil when the dict has no room for it.
local function store(self, items)
  local dict = self.dict
  local id = dict:incr(self.k_seq, 1)
  if not id or not dict:safe_set(batch_key(self, id), join(items)) then return nil end
  return { id = id, items = items }
end

-- The next batch to send (lock holder only): an unsettled one not in `busy` first, else (unless
-- `stored_only`) up to n items off the list.
function Queue:take(n, busy, stored_only)
  local b = oldest(self, busy)
  if b or stored_only then return b end
  local dict, items = self.dict, {}
  for i = 1, n do
    local item = dict:lpop(self.k_list)
    if item == nil then break end
    items[i] = item
  end
  if items[1] == nil then return nil end
  -- No yield since the lpop: only a crash of this very process between the two loses these.
  b = store(self, items)
  if not b then
    for i = #items, 1, -1 do dict:lpush(self.k_list, items[i]) end
    return nil
  end
  dict:incr(self.k_held, #items)
  return b
end

-- Whether a batch is still stored, without copying it out of the dict (ttl, where nginx has it).
local function stored(dict, key)
  if dict.ttl then return (dict:ttl(key)) ~= nil end
  return dict:get(key) ~= nil
end

function Queue:ack(b)
  if stored(self.dict, batch_key(self, b.id)) then
    self.dict:delete(batch_key(self, b.id))
    self.dict:incr(self.k_held, -#b.items)
  end
end

function Queue.keep() end -- it stays in the dict, and is the oldest

function Queue:split(b)
  local mid = math.floor(#b.items / 2)
  local first, second = {}, {}
  for i, item in ipairs(b.items) do
    if i <= mid then first[#first + 1] = item else second[#second + 1] = item end
  end
  -- The halves are stored before the whole is deleted: a crash in between resends, never loses.
  local a = store(self, first)
  local c = a and store(self, second)
  if c then
    self.dict:delete(batch_key(self, b.id))
  elseif a then
    self.dict:delete(batch_key(self, a.id)) -- no room for both: the whole is sent again as it is
  end
end

function Queue.close() end

return M
