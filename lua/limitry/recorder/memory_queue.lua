-- The recorder's queue in a plain Lua host: events in this process's memory, and, with a spool
-- file, on disk as well, so that a kill -9 of the host loses no recorded event (the next start
-- sends what was not acknowledged).
--
-- The spool is append-only: `R <len>\n<item>\n` for each recorded item (numbered 1, 2, ... in file
-- order) and `A <n> <n> ...\n` for items Limitry acknowledged (or that were dead-lettered). A torn
-- last record (a crash mid-write) is ignored. On open, the items not acknowledged are written to a
-- fresh file (a rename, so a crash there leaves the old one) and queued again, in order. The file
-- is unbuffered, so each record reaches the kernel before record() returns: what the process wrote
-- survives the process's death (kill -9, a crash), though not a power loss (plain Lua has no fsync).
local M = {}
local Queue = {}
Queue.__index = Queue

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

-- Parses a spool; returns the items not acknowledged, in order.
local function parse(data)
  local items, acked, i, n = {}, {}, 1, 0
  local len = #data
  while i <= len do
    local kind = data:sub(i, i)
    local eol = data:find("\n", i, true)
    if not eol then break end -- torn header line
    if kind == "R" then
      local size = tonumber(data:sub(i + 2, eol - 1))
      if not size or eol + size + 1 > len or data:sub(eol + size + 1, eol + size + 1) ~= "\n" then break end
      n = n + 1
      items[n] = data:sub(eol + 1, eol + size)
      i = eol + size + 2
    elseif kind == "A" then
      for seq in data:sub(i + 2, eol - 1):gmatch("%d+") do acked[tonumber(seq)] = true end
      i = eol + 1
    else
      break -- damaged: keep what came before
    end
  end
  local pending = {}
  for seq = 1, n do
    if not acked[seq] then pending[#pending + 1] = items[seq] end
  end
  return pending
end

local function record_line(item) return "R " .. #item .. "\n" .. item .. "\n" end

-- Opens (or creates) the spool at path; returns the file and the items to send again.
local function open_spool(path)
  local data = read_all(path)
  local pending = data and parse(data) or {}
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  for _, item in ipairs(pending) do f:write(record_line(item)) end
  f:close()
  assert(os.rename(tmp, path))
  f = assert(io.open(path, "ab"))
  f:setvbuf("no")
  return f, pending
end

-- opts: max_queued, spool (path or nil). Returns the queue and the number of items
-- found in the spool (queued again).
function M.new(opts)
  local q = setmetatable({
    max = opts.max_queued,
    items = {}, seqs = {}, head = 1, tail = 0, -- the FIFO of items not yet taken
    pending = {},     -- batches taken and not yet settled, to be sent again first (after a failure)
    held = 0,         -- items in batches out for delivery or pending
    next_seq = 0,     -- spool numbering of the next item
  }, Queue)
  local restored = 0
  if opts.spool then
    local f, pending = open_spool(opts.spool)
    q.spool, q.spool_path = f, opts.spool
    for _, item in ipairs(pending) do
      q.next_seq = q.next_seq + 1
      q.tail = q.tail + 1
      q.items[q.tail], q.seqs[q.tail] = item, q.next_seq
    end
    restored = #pending
  end
  return q, restored
end

function Queue:depth() return self.tail - self.head + 1 + self.held end

-- Items not yet taken into a batch.
function Queue:waiting() return self.tail - self.head + 1 end

-- Appends an item: true, or nil and why.
function Queue:push(item)
  if self:depth() >= self.max then return nil, "full" end
  if self.spool then
    local ok, err = self.spool:write(record_line(item))
    if not ok then return nil, "spool: " .. tostring(err) end
  end
  self.next_seq = self.next_seq + 1
  self.tail = self.tail + 1
  self.items[self.tail], self.seqs[self.tail] = item, self.next_seq
  return true
end

-- The next batch to send: a pending one first, else up to n items off the front.
function Queue:take(n)
  local b = table.remove(self.pending, 1)
  if b then return b end
  local count = math.min(n, self.tail - self.head + 1)
  if count <= 0 then return nil end
  local items, seqs = {}, {}
  for i = 1, count do
    local at = self.head + i - 1
    items[i], seqs[i] = self.items[at], self.seqs[at]
    self.items[at], self.seqs[at] = nil, nil
  end
  self.head = self.head + count
  self.held = self.held + count
  if self.head > self.tail then self.head, self.tail = 1, 0 end
  return { items = items, seqs = seqs }
end

function Queue:has_pending() return self.pending[1] ~= nil end

-- The batch is done (delivered, or its items dead-lettered).
function Queue:ack(b)
  self.held = self.held - #b.items
  if self.spool then
    self.spool:write("A " .. table.concat(b.seqs, " ") .. "\n")
    if self:depth() == 0 then self:compact() end
  end
end

-- The batch failed for now: it is sent again before anything newer.
function Queue:keep(b) table.insert(self.pending, 1, b) end

-- The batch is replaced by its two halves (a 400 isolates the bad event), sent first.
function Queue:split(b)
  local mid = math.floor(#b.items / 2)
  local first, second = { items = {}, seqs = {} }, { items = {}, seqs = {} }
  for i, item in ipairs(b.items) do
    local half = i <= mid and first or second
    half.items[#half.items + 1], half.seqs[#half.seqs + 1] = item, b.seqs[i]
  end
  table.insert(self.pending, 1, second)
  table.insert(self.pending, 1, first)
end

-- Nothing is queued or out: the spool starts over (it only ever held acknowledged items).
function Queue:compact()
  if not self.spool then return end
  self.spool:close()
  local f = io.open(self.spool_path, "wb")
  if f then f:close() end
  self.spool = assert(io.open(self.spool_path, "ab"))
  self.spool:setvbuf("no")
  self.next_seq = 0
end

function Queue:close()
  if self.spool then
    self.spool:close()
    self.spool = nil
  end
end

return M
