-- The event store: SQLite (DATA/events.db, through LuaJIT's FFI to Debian's libsqlite3) in WAL mode
-- with synchronous=FULL. Every accepted batch (or tracked event) is one transaction, committed (the
-- WAL fsync'd) before the request is answered: a crash or a kill -9 loses nothing acknowledged and
-- keeps nothing half-written.
--
-- In the same transaction as the events, rollups are kept per minute, hour and day, per (customer,
-- event type, model, provider) and in total: the usage queries read them for whole minutes, hours
-- and days and the raw rows only for the partial minutes at the ends of a range (query.lua), so
-- their cost follows the range, not the number of stored events. Of each event only its key's hash
-- stays in memory (keys.lua, about 16 bytes); nothing is held in Lua tables.
--
-- Tables:
--   events (seq, ts, customer, etype, model, provider, inp, outp, cost, ikey, khash, body): seq is
--     the ingestion order (the listing cursor) and, for events stored by this store, the n of
--     evt_<n>; body is the event's exact JSON text as listed; ts has a covering index for range
--     sums, customer an index for listings; khash is the idempotency key's hash (keys.lua: the keys
--     are looked up in memory, and only the hashes are indexed, in seq order, to rebuild that table).
--   r_minute, r_hour, r_day (t, customer, etype, model, provider, n, inp, outp, cost): t is the
--     start of the minute, hour or day; an absent model or provider is '' there (never a valid value);
--     an index on (customer, t) for the queries of one customer.
--   r_minute_total, r_hour_total, r_day_total (t, n, inp, outp, cost): the same summed over groups.
--   meta (k, v): the format, and the next evt_<n> where a migration's ids ran ahead of its rows.
local cjson = require "cjson.safe"
local sqlite = require "limitry_server.sqlite"
local event = require "limitry_server.event"
local time = require "limitry_server.time"
local keys = require "limitry_server.keys"

local floor = math.floor
local M = {}

M.count = 0     -- events stored
M.max_seq = 0   -- the largest seq stored (listings read seq <= the first page's max_seq)
local next_id = 1
local db

-- Rollup levels, largest first: seconds -> table.
M.LEVELS = { 86400, 3600, 60 }
M.ROLLUP = { [86400] = "r_day", [3600] = "r_hour", [60] = "r_minute" }
-- The same without the groups: one row per minute, hour and day, for the queries without filters.
M.TOTAL = { [86400] = "r_day_total", [3600] = "r_hour_total", [60] = "r_minute_total" }

-- x rounded down to a multiple of size, exactly: the division may round, so the result is moved
-- onto the multiple m with m <= x < m + size (the bucket a raw row's ts is compared against).
local function floor_to(x, size)
  local m = floor(x / size) * size
  if m > x then
    m = m - size
  elseif m + size <= x then
    m = m + size
  end
  return m
end
M.floor_to = floor_to

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY,
  ts REAL NOT NULL,
  customer TEXT NOT NULL,
  etype TEXT NOT NULL,
  model TEXT,
  provider TEXT,
  inp REAL NOT NULL,
  outp REAL NOT NULL,
  cost REAL NOT NULL,
  ikey TEXT,
  khash INTEGER,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts, customer, etype, model, provider, inp, outp, cost);
CREATE INDEX IF NOT EXISTS events_customer ON events (customer);
CREATE INDEX IF NOT EXISTS events_keys ON events (seq, khash) WHERE khash IS NOT NULL;
]]
local ROLLUP_SCHEMA = [[
CREATE TABLE IF NOT EXISTS %s (
  t INTEGER NOT NULL, customer TEXT NOT NULL, etype TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL,
  n REAL NOT NULL, inp REAL NOT NULL, outp REAL NOT NULL, cost REAL NOT NULL,
  PRIMARY KEY (t, customer, etype, model, provider)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS %s_customer ON %s (customer, t);
CREATE TABLE IF NOT EXISTS %s (
  t INTEGER PRIMARY KEY, n REAL NOT NULL, inp REAL NOT NULL, outp REAL NOT NULL, cost REAL NOT NULL
) WITHOUT ROWID;
]]
M.FORMAT = 2 -- 2: with the total tables

local INSERT = "INSERT INTO events (seq, ts, customer, etype, model, provider, inp, outp, cost, ikey, khash, body)"
  .. " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
local UPSERT = "INSERT INTO %s (t, customer, etype, model, provider, n, inp, outp, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
  .. " ON CONFLICT (t, customer, etype, model, provider) DO UPDATE SET n = n + excluded.n, inp = inp + excluded.inp,"
  .. " outp = outp + excluded.outp, cost = cost + excluded.cost"
local UPSERT_TOTAL = "INSERT INTO %s (t, n, inp, outp, cost) VALUES (?, ?, ?, ?, ?) ON CONFLICT (t) DO UPDATE SET"
  .. " n = n + excluded.n, inp = inp + excluded.inp, outp = outp + excluded.outp, cost = cost + excluded.cost"

local function meta_get(k)
  local row = db:row("SELECT v FROM meta WHERE k = ?", k)
  return row and row[1]
end

local function configure(conn, durable)
  -- WAL: readers never wait for the writer; FULL: the WAL is fsync'd at every commit. A checkpoint
  -- every 4,000 pages (16 MiB) of WAL, in the commit that passes them: a few ms once in ~20 batches
  -- of 1,000 or ~500 tracks. (An nginx thread checkpointing off the request path was tried: its
  -- fsyncs beside the WAL's made tracks slower, p99 2-4 ms against 1.3-1.6 ms.) 64 MiB of page
  -- cache bound the memory whatever the data's size.
  conn:exec("PRAGMA journal_mode = WAL")
  conn:exec("PRAGMA synchronous = " .. (durable and "FULL" or "OFF"))
  conn:exec("PRAGMA wal_autocheckpoint = 4000")
  -- A big transaction (the sample data's, a migration's) grows the WAL; kept at most 16 MiB after.
  conn:exec("PRAGMA journal_size_limit = 16777216")
  conn:exec("PRAGMA cache_size = -65536")
  conn:exec("PRAGMA temp_store = MEMORY")
  conn:exec(SCHEMA)
  for _, level in ipairs(M.LEVELS) do
    local r = M.ROLLUP[level]
    conn:exec(ROLLUP_SCHEMA:format(r, r, r, M.TOTAL[level]))
  end
end

-- The rollups of a batch: level -> key -> { t, customer, etype, model, provider, n, inp, outp,
-- cost }, and level -> t -> { t, n, inp, outp, cost } for the totals.
local function rollup_groups(items)
  local levels, totals, last_t, last_s = {}, {}, {}, {}
  for _, level in ipairs(M.LEVELS) do levels[level], totals[level] = {}, {} end
  for _, item in ipairs(items) do
    local ev, ts = item[1], item[2]
    local c, e, m, p = ev.customerId, ev.eventType, ev.model or "", ev.provider or ""
    local inp, outp, cost = ev.inputTokens, ev.outputTokens, ev.costCents
    -- Lengths first: no separator character can make two groups' keys equal.
    local dims = #c .. ":" .. c .. #e .. ":" .. e .. #m .. ":" .. m .. #p .. ":" .. p
    for level, groups in pairs(levels) do
      local t = floor_to(ts, level)
      if t ~= last_t[level] then last_t[level], last_s[level] = t, tostring(t) .. "|" end
      local key = last_s[level] .. dims
      local g = groups[key]
      if g then
        g[6], g[7], g[8], g[9] = g[6] + 1, g[7] + inp, g[8] + outp, g[9] + cost
      else
        groups[key] = { t, c, e, m, p, 1, inp, outp, cost }
      end
      local tot = totals[level][t]
      if tot then
        tot[2], tot[3], tot[4], tot[5] = tot[2] + 1, tot[3] + inp, tot[4] + outp, tot[5] + cost
      else
        totals[level][t] = { t, 1, inp, outp, cost }
      end
    end
  end
  return levels, totals
end

-- Inserts items ({event, ts, h = key hash or nil} with event.id set, seq = first .. first +
-- #items - 1) and their rollups on conn, inside the caller's transaction.
local function insert_items(conn, items, first)
  local ins = conn:prepare(INSERT)
  for i, item in ipairs(items) do
    local ev, ts = item[1], item[2]
    ins:reset()
    ins:bind_int(1, first + i - 1)
    ins:bind(2, ts)
    ins:bind(3, ev.customerId)
    ins:bind(4, ev.eventType)
    ins:bind(5, ev.model)
    ins:bind(6, ev.provider)
    ins:bind(7, ev.inputTokens)
    ins:bind(8, ev.outputTokens)
    ins:bind(9, ev.costCents)
    ins:bind(10, ev.idempotencyKey)
    ins:bind(11, item.h)
    ins:bind(12, item.body or event.encode_line(ev))
    ins:step()
  end
  ins:reset()
  local levels, totals = rollup_groups(items)
  for level, groups in pairs(levels) do
    local up = conn:prepare(UPSERT:format(M.ROLLUP[level]))
    for _, g in pairs(groups) do
      up:reset()
      for i = 1, 9 do up:bind(i, g[i]) end
      up:step()
    end
    up:reset()
    up = conn:prepare(UPSERT_TOTAL:format(M.TOTAL[level]))
    for _, g in pairs(totals[level]) do
      up:reset()
      for i = 1, 5 do up:bind(i, g[i]) end
      up:step()
    end
    up:reset()
  end
end

-- The next id when it is more than max(seq) + 1 (after a migration whose ids ran ahead of its
-- rows), and the format. Not written per batch: one page less in every commit.
local function save_meta(conn, nid)
  conn:run("INSERT OR REPLACE INTO meta (k, v) VALUES ('next_id', ?), ('format', ?)", nid, M.FORMAT)
end

-- Appends already-normalized events (a list of {event, ts}) in one durable transaction, then
-- makes them visible. Each gets its id here ("evt_" and a number never given before, even across
-- restarts). Returns true, or nil and a message (nothing stored).
function M.append(batch)
  local first = next_id
  if first + #batch - 1 > keys.MAX_SEQ then return nil, "the store is full (2^32 - 1 events)" end
  for i, item in ipairs(batch) do
    local ev = item[1]
    ev.id = "evt_" .. (first + i - 1)
    if ev.idempotencyKey then item.h = keys.hash(ev.idempotencyKey) end
  end
  local ok, err = pcall(function()
    db:exec("BEGIN IMMEDIATE")
    insert_items(db, batch, first)
    db:exec("COMMIT")
  end)
  if not ok then
    if db:in_transaction() then pcall(db.exec, db, "ROLLBACK") end
    for _, item in ipairs(batch) do item[1].id = nil end
    return nil, tostring(err)
  end
  for i, item in ipairs(batch) do
    if item.h then keys.add(item.h, first + i - 1) end
  end
  next_id = first + #batch
  M.max_seq = next_id - 1
  M.count = M.count + #batch
  return true
end

-- The seq and stored text of the event stored with idempotency key `key` on conn, or nil.
local function find_key(conn, key)
  local seqs = keys.find(keys.hash(key))
  if not seqs then return nil end
  local st = conn:prepare("SELECT ikey, body FROM events WHERE seq = ?")
  for _, seq in ipairs(seqs) do
    st:reset()
    st:bind_int(1, seq)
    if st:step() and st:text(0) == key then
      local body = st:text(1)
      st:reset()
      return seq, body
    end
  end
  st:reset()
  return nil
end

-- The stored event with idempotency key `key` (decoded from its stored text), or nil.
function M.by_key(key)
  if key == nil then return nil end
  local _, body = find_key(db, key)
  return body and cjson.decode(body) or nil
end

-- Rebuilds the in-memory key table from the hashes stored with the events of conn.
local function load_keys(conn, count)
  keys.reset(count)
  local st = conn:prepare("SELECT seq, khash FROM events WHERE khash IS NOT NULL")
  st:reset()
  while st:step() do keys.add(st:double(1), st:int(0)) end
  st:reset()
end

-- Up to `limit` events with seq <= from matching the filters (customerId, eventType, model),
-- newest first: a list of their stored texts, the seq of the last one, and whether more follow.
function M.list(f, from, limit)
  local where, params = { "seq <= ?" }, { from }
  for _, c in ipairs { { "customerId", "customer" }, { "eventType", "etype" }, { "model", "model" } } do
    if f[c[1]] then
      where[#where + 1] = c[2] .. " = ?"
      params[#params + 1] = f[c[1]]
    end
  end
  params[#params + 1] = limit + 1
  local st = db:prepare("SELECT seq, body FROM events WHERE " .. table.concat(where, " AND ")
    .. " ORDER BY seq DESC LIMIT ?")
  st:bind_all(params, #params)
  local out, last, more = {}, nil, false
  while st:step() do
    if #out == limit then
      more = true
      break
    end
    last = st:int(0)
    out[#out + 1] = st:text(1)
  end
  st:reset()
  return out, last, more
end

M.db = function() return db end

-- Reads an old store's DATA/events.jsonl (one event per line, as this server wrote before it kept
-- SQLite) into a new database at tmp_path, keeping every event's id and order. A torn or unreadable
-- line is skipped, as is a second event with a key already taken. Returns the events taken and the
-- lines skipped.
local function migrate(jsonl, tmp_path)
  os.remove(tmp_path)
  os.remove(tmp_path .. "-wal")
  os.remove(tmp_path .. "-shm")
  local conn = sqlite.open(tmp_path)
  configure(conn, false)
  keys.reset(0)
  local taken, skipped, seq, max_id = 0, 0, 0, 0
  local items, pending = {}, {}
  local function flush()
    if #items == 0 then return end
    conn:exec("BEGIN")
    insert_items(conn, items, seq - #items + 1)
    conn:exec("COMMIT")
    for i, item in ipairs(items) do
      if item.h then keys.add(item.h, seq - #items + i) end
    end
    items, pending = {}, {}
  end
  for line in io.lines(jsonl) do
    local ev = cjson.decode(line)
    local ts = type(ev) == "table" and time.parse(ev.timestamp)
    local key = ts and ev.idempotencyKey
    if type(key) ~= "string" then key = nil end
    -- Every id the file holds counts, a skipped duplicate's too: none is given again.
    local num = ts and type(ev.id) == "string" and tonumber(ev.id:match("^evt_(%d+)$"))
    if num and num > max_id then max_id = num end
    -- A key stored twice (which this server never wrote) is kept once, as a duplicate would be.
    if not ts or type(ev.customerId) ~= "string" or type(ev.eventType) ~= "string"
      or (key and (pending[key] or find_key(conn, key))) then
      skipped = skipped + 1
    else
      seq = seq + 1
      taken = taken + 1
      -- Lines written before events had ids get one from their place in the file (as the old
      -- loader gave them).
      if type(ev.id) ~= "string" or not ev.id:match("^evt_%d+$") then ev.id = "evt_" .. seq end
      -- What this server always wrote; anything else in a hand-edited line is dropped, not stored.
      for _, f in ipairs { "model", "provider", "idempotencyKey" } do
        if type(ev[f]) ~= "string" then ev[f] = nil end
      end
      if type(ev.properties) ~= "table" then ev.properties = nil end
      ev.latencyMs = tonumber(ev.latencyMs)
      ev.inputTokens = tonumber(ev.inputTokens) or 0
      ev.outputTokens = tonumber(ev.outputTokens) or 0
      ev.totalTokens = ev.inputTokens + ev.outputTokens
      ev.costCents = tonumber(ev.costCents) or 0
      if key then pending[key] = true end
      items[#items + 1] = { ev, ts, body = event.encode_line(ev), h = key and keys.hash(key) }
      if #items == 10000 then flush() end
    end
  end
  flush()
  conn:exec("BEGIN")
  save_meta(conn, math.max(seq, max_id) + 1)
  conn:exec("COMMIT")
  conn:exec("PRAGMA wal_checkpoint(TRUNCATE)")
  conn:close()
  -- synchronous=OFF above: make the finished file durable before it replaces anything.
  os.execute("sync '" .. tmp_path .. "'")
  return taken, skipped
end

-- Opens (or creates) DATA/events.db. An old DATA/events.jsonl is migrated once, into a new database
-- renamed into place when complete, then renamed events.jsonl.migrated. `sample` is called to load
-- the sample data on the first start of an empty folder. Returns a line for the log.
function M.open(data_dir, sample)
  local path = data_dir .. "/events.db"
  local jsonl = data_dir .. "/events.jsonl"
  local existed = io.open(path, "rb")
  if existed then existed:close() end
  local note = ""
  if not existed then
    local old = io.open(jsonl, "rb")
    if old then
      old:close()
      local n, skipped = migrate(jsonl, path .. ".migrating")
      assert(os.rename(path .. ".migrating", path))
      os.execute("sync '" .. data_dir .. "'") -- the new name on disk before the old file's goes
      os.rename(jsonl, jsonl .. ".migrated")
      note = string.format(" (migrated %d events from events.jsonl, %d lines skipped: unreadable, or a key already taken; "
        .. "the old file is events.jsonl.migrated)", n, skipped)
      existed = true
    end
  end
  db = sqlite.open(path)
  configure(db, true)
  -- A database of another layout (a development build's) is refused at start, not at every request.
  local columns = {}
  local info = db:prepare("PRAGMA table_info(events)")
  info:reset()
  while info:step() do columns[info:text(1)] = true end
  info:reset()
  if not columns.khash then
    error("limitry-local: " .. path .. " has a layout this server does not know (no khash column): move it away", 0)
  end
  local format = tonumber(meta_get("format"))
  if format ~= M.FORMAT then
    -- Format 1 (before the total tables, never released): fill them from the grouped rollups.
    db:exec("BEGIN IMMEDIATE")
    for _, level in ipairs(M.LEVELS) do
      db:exec(string.format("INSERT OR REPLACE INTO %s (t, n, inp, outp, cost) SELECT t, total(n), total(inp),"
        .. " total(outp), total(cost) FROM %s GROUP BY t", M.TOTAL[level], M.ROLLUP[level]))
    end
    db:run("INSERT OR REPLACE INTO meta (k, v) VALUES ('format', ?)", M.FORMAT)
    db:exec("COMMIT")
  end
  M.max_seq = db:row("SELECT max(seq) FROM events")[1] or 0
  next_id = math.max(tonumber(meta_get("next_id")) or 1, M.max_seq + 1)
  M.count = db:row("SELECT count(*) FROM events")[1]
  load_keys(db, M.count)
  if not existed and sample then
    assert(M.append(sample()))
    note = " (the sample data)"
  end
  return M.count .. " events" .. note
end

return M
