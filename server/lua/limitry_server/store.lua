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
-- Every index is written in time or ingestion order, never per customer: a batch of a gateway's log
-- (1,000 events over an hour, for 1,000 customers) then writes a few hundred pages, not one page of
-- each per-customer index per customer (an index on (customer, t) on each rollup and one on the
-- events' customer wrote ~3,000 pages of 4 KiB a batch at a million events). A rollup row's group
-- is one integer, its gid (dims): a customer's gids are one range, customer number * 2^20 + 0, 1,
-- ..., so query.lua finds a customer's rows by seeking (t, first gid) for each t of a range; a
-- customer's events, for listings, through an index on (seq >> 12, customer): per block of 4,096
-- events, that customer's ones. (Grouped rollups keyed by the four strings cost twice as much to
-- upsert: docs/local-server-storage.md.)
--
-- Tables:
--   events (seq, ts, customer, etype, model, provider, inp, outp, cost, ikey, khash, body): seq is
--     the ingestion order (the listing cursor) and, for events stored by this store, the n of
--     evt_<n>; body is the event's exact JSON text as listed; ts has a covering index for range
--     sums; (seq >> 12, customer) an index for listings of a customer; khash is the idempotency
--     key's hash (keys.lua: the keys are looked up in memory, and only the hashes are indexed, in
--     seq order, to rebuild that table).
--   dims (gid, customer, etype, model, provider): the groups; an absent model or provider is ''
--     there (never a valid value). gid = cid * 2^20 + k: cid numbers the customers from 1, k the
--     customer's groups from 0 (at most 2^20 of them).
--   g_minute, g_hour, g_day (t, gid, n, inp, outp, cost): t is the start of the minute, hour or day.
--   r_minute_total, r_hour_total, r_day_total (t, n, inp, outp, cost): the same summed over groups.
--   meta (k, v): the format, and the next evt_<n> where a migration's ids ran ahead of its rows.
local cjson = require "cjson.safe"
local sqlite = require "limitry_server.sqlite"
local event = require "limitry_server.event"
local time = require "limitry_server.time"
local keys = require "limitry_server.keys"

local floor = math.floor
local M = {}
local body_buf = require("string.buffer").new(1024)

M.count = 0     -- events stored
M.max_seq = 0   -- the largest seq stored (listings read seq <= the first page's max_seq)
local next_id = 1
local db

-- Rollup levels, largest first: seconds -> table.
M.LEVELS = { 86400, 3600, 60 }
M.ROLLUP = { [86400] = "g_day", [3600] = "g_hour", [60] = "g_minute" }
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

-- Events per block of the listing index (seq >> BLOCK_BITS).
M.BLOCK_BITS = 12
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
CREATE INDEX IF NOT EXISTS events_block ON events (seq >> %d, customer);
CREATE INDEX IF NOT EXISTS events_keys ON events (seq, khash) WHERE khash IS NOT NULL;
CREATE TABLE IF NOT EXISTS dims (
  gid INTEGER PRIMARY KEY, customer TEXT NOT NULL, etype TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS dims_key ON dims (customer, etype, model, provider);
]]
SCHEMA = SCHEMA:format(M.BLOCK_BITS)
local ROLLUP_SCHEMA = [[
CREATE TABLE IF NOT EXISTS %s (
  t INTEGER NOT NULL, gid INTEGER NOT NULL, n REAL NOT NULL, inp REAL NOT NULL, outp REAL NOT NULL, cost REAL NOT NULL,
  PRIMARY KEY (t, gid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS %s (
  t INTEGER PRIMARY KEY, n REAL NOT NULL, inp REAL NOT NULL, outp REAL NOT NULL, cost REAL NOT NULL
) WITHOUT ROWID;
]]
-- 2: with the total tables; 4: groups numbered (dims, g_*), no index per customer (events_block)
M.FORMAT = 4

local INSERT = "INSERT INTO events (seq, ts, customer, etype, model, provider, inp, outp, cost, ikey, khash, body)"
  .. " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
local UPSERT = "INSERT INTO %s (t, gid, n, inp, outp, cost) VALUES (?, ?, ?, ?, ?, ?)"
  .. " ON CONFLICT (t, gid) DO UPDATE SET n = n + excluded.n, inp = inp + excluded.inp,"
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
    conn:exec(ROLLUP_SCHEMA:format(r, M.TOTAL[level]))
  end
end

-- Groups: gid by customer, event type, model and provider, cached (nested tables keyed by the
-- event's own strings: a lookup makes no string). At most GID_CACHE groups are cached; past that
-- the cache starts afresh. A failed transaction empties it (its new dims rows are gone).
M.GID_BITS = 20
local PER_CUSTOMER = 2 ^ M.GID_BITS
M.PER_CUSTOMER = PER_CUSTOMER
local GID_CACHE = 65536
local gid_cache, gid_cached = {}, 0
local function forget_gids() gid_cache, gid_cached = {}, 0 end

-- The gid of a group (m, p: '' when absent), made on conn when new.
local function gid_of(conn, c, e, m, p)
  local by_e = gid_cache[c]
  local by_m = by_e and by_e[e]
  local by_p = by_m and by_m[m]
  local g = by_p and by_p[p]
  if g then return g end
  local row = conn:row("SELECT gid FROM dims WHERE customer = ? AND etype = ? AND model = ? AND provider = ?", c, e, m, p)
  if row then
    g = row[1]
  else
    local cid
    row = conn:row("SELECT gid FROM dims WHERE customer = ? LIMIT 1", c)
    if row then
      cid = floor(row[1] / PER_CUSTOMER)
    else
      cid = floor((conn:row("SELECT max(gid) FROM dims")[1] or 0) / PER_CUSTOMER) + 1
    end
    local last = conn:row("SELECT max(gid) FROM dims WHERE gid >= ? AND gid < ?", cid * PER_CUSTOMER,
      (cid + 1) * PER_CUSTOMER)[1]
    g = last and last + 1 or cid * PER_CUSTOMER
    if g >= (cid + 1) * PER_CUSTOMER then
      error(string.format("customer %q has %d groups (event type, model, provider) already: no more can be stored", c,
        PER_CUSTOMER), 0)
    end
    conn:run("INSERT INTO dims (gid, customer, etype, model, provider) VALUES (?, ?, ?, ?, ?)", g, c, e, m, p)
  end
  if gid_cached >= GID_CACHE then forget_gids() end
  gid_cached = gid_cached + 1
  by_e = gid_cache[c]
  if not by_e then
    by_e = {}
    gid_cache[c] = by_e
  end
  by_m = by_e[e]
  if not by_m then
    by_m = {}
    by_e[e] = by_m
  end
  by_p = by_m[m]
  if not by_p then
    by_p = {}
    by_m[m] = by_p
  end
  by_p[p] = g
  return g
end

-- The rollups of a batch: level -> t -> gid -> { n, inp, outp, cost }, and level -> t -> { t, n,
-- inp, outp, cost } for the totals.
local function rollup_groups(conn, items)
  local levels, totals = {}, {}
  local LEVELS = M.LEVELS
  for _, level in ipairs(LEVELS) do levels[level], totals[level] = {}, {} end
  for _, item in ipairs(items) do
    local ev, ts = item[1], item[2]
    local gid = gid_of(conn, ev.customerId, ev.eventType, ev.model or "", ev.provider or "")
    local inp, outp, cost = ev.inputTokens, ev.outputTokens, ev.costCents
    for li = 1, #LEVELS do
      local level = LEVELS[li]
      local t = floor_to(ts, level)
      local at = levels[level][t]
      if not at then
        at = {}
        levels[level][t] = at
        totals[level][t] = { t, 1, inp, outp, cost }
      else
        local tot = totals[level][t]
        tot[2], tot[3], tot[4], tot[5] = tot[2] + 1, tot[3] + inp, tot[4] + outp, tot[5] + cost
      end
      local g = at[gid]
      if g then
        g[1], g[2], g[3], g[4] = g[1] + 1, g[2] + inp, g[3] + outp, g[4] + cost
      else
        at[gid] = { 1, inp, outp, cost }
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
    if item.body then
      ins:bind(12, item.body)
    else
      body_buf:reset()
      ins:bind_buffer(12, event.encode_into(body_buf, ev))
    end
    ins:step()
  end
  ins:reset()
  local levels, totals = rollup_groups(conn, items)
  for level, by_t in pairs(levels) do
    local up = conn:prepare(UPSERT:format(M.ROLLUP[level]))
    for t, at in pairs(by_t) do
      for gid, g in pairs(at) do
        up:reset()
        up:bind_int(1, t)
        up:bind_int(2, gid)
        up:bind(3, g[1])
        up:bind(4, g[2])
        up:bind(5, g[3])
        up:bind(6, g[4])
        up:step()
      end
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
    forget_gids()
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
-- With a customer, block by block of the listing index (newest block first, each an index seek,
-- so a customer absent for a while costs a seek per 4,096 events passed); without one, back
-- through the events until the page is full.
function M.list(f, from, limit)
  local where, params = { "seq <= ?" }, { from }
  for _, c in ipairs { { "eventType", "etype" }, { "model", "model" } } do
    if f[c[1]] then
      where[#where + 1] = c[2] .. " = ?"
      params[#params + 1] = f[c[1]]
    end
  end
  local out, last, more = {}, nil, false
  local customer = f.customerId
  local st
  if customer then
    st = db:prepare("SELECT seq, body FROM events WHERE seq >> " .. M.BLOCK_BITS .. " = ? AND customer = ? AND "
      .. table.concat(where, " AND ") .. " ORDER BY seq DESC LIMIT ?")
    table.insert(params, 1, customer)
    table.insert(params, 1, 0)
  else
    st = db:prepare("SELECT seq, body FROM events WHERE " .. table.concat(where, " AND ") .. " ORDER BY seq DESC LIMIT ?")
  end
  local n = #params + 1
  local block = customer and math.floor(from / 2 ^ M.BLOCK_BITS) or 0
  while block >= 0 and not more do
    if customer then params[1] = block end
    params[n] = limit + 1 - #out
    st:bind_all(params, n)
    while st:step() do
      if #out == limit then
        more = true
        break
      end
      last = st:int(0)
      out[#out + 1] = st:text(1)
    end
    st:reset()
    block = block - 1
  end
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
  forget_gids()
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
  forget_gids() -- the gids of that database
  -- synchronous=OFF above: make the finished file durable before it replaces anything.
  os.execute("sync '" .. tmp_path .. "'")
  return taken, skipped
end

-- A database of an earlier format, brought to this one in one transaction (at start; a million
-- events' rollups take a few seconds, once). Format 1 (never released) had no total tables; 2 and
-- 3 (a development one) kept the rollups by the four strings, r_minute, r_hour, r_day, and 2 had an
-- index per customer on them and on the events.
local function upgrade(conn, format)
  local function exists(name)
    return conn:row("SELECT 1 FROM sqlite_master WHERE name = ?", name) ~= nil
  end
  conn:exec("BEGIN IMMEDIATE")
  local old = { [86400] = "r_day", [3600] = "r_hour", [60] = "r_minute" }
  if exists("r_day") then
    if (format or 1) < 2 then
      for _, level in ipairs(M.LEVELS) do
        conn:exec(string.format("INSERT OR REPLACE INTO %s (t, n, inp, outp, cost) SELECT t, total(n), total(inp),"
          .. " total(outp), total(cost) FROM %s GROUP BY t", M.TOTAL[level], old[level]))
      end
    end
    -- The groups: every one is in the day rollup (every event is in a day). Numbered a customer
    -- after another, in their order.
    local st = conn:prepare("SELECT DISTINCT customer, etype, model, provider FROM r_day ORDER BY 1, 2, 3, 4")
    local ins = conn:prepare("INSERT INTO dims (gid, customer, etype, model, provider) VALUES (?, ?, ?, ?, ?)")
    local cid, k, last = 0, 0, nil
    st:reset()
    while st:step() do
      local c = st:text(0)
      if c ~= last then cid, k, last = cid + 1, 0, c else k = k + 1 end
      if k >= PER_CUSTOMER then error("limitry-local: customer " .. c .. " has too many groups to convert", 0) end
      ins:reset()
      ins:bind_int(1, cid * PER_CUSTOMER + k)
      for i = 0, 3 do ins:bind(i + 2, st:text(i)) end
      ins:step()
    end
    st:reset()
    ins:reset()
    for _, level in ipairs(M.LEVELS) do
      conn:exec(string.format("INSERT INTO %s (t, gid, n, inp, outp, cost) SELECT r.t, d.gid, r.n, r.inp, r.outp, r.cost"
        .. " FROM %s r JOIN dims d ON d.customer = r.customer AND d.etype = r.etype AND d.model = r.model"
        .. " AND d.provider = r.provider", M.ROLLUP[level], old[level]))
      conn:exec("DROP TABLE " .. old[level])
    end
  end
  -- Format 2's indexes per customer (those on the rollups went with their tables).
  conn:exec("DROP INDEX IF EXISTS events_customer")
  conn:run("INSERT OR REPLACE INTO meta (k, v) VALUES ('format', ?)", M.FORMAT)
  conn:exec("COMMIT")
  forget_gids()
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
  if format and format > M.FORMAT then
    error("limitry-local: " .. path .. " was written by a newer server (format " .. format .. ", this one knows "
      .. M.FORMAT .. "): start that one, or move the folder away", 0)
  end
  if format ~= M.FORMAT then upgrade(db, format) end
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
