-- limitry.cli.import: `limitry events import FILE|-`. Reads NDJSON or CSV, checks each event as
-- events:record would, and sends them through limitry.recorder (batches of up to 1,000, a few in
-- flight), with a progress line on a terminal.
--
-- Safe to re-run. Every event carries an idempotency key, and Limitry stores an event once per
-- key: a line's own idempotency_key (idempotencyKey) when it has one, else one derived from the
-- line itself,
--
--   imp1-[SCOPE-]LINE-HASH      LINE: the line's number in the file (a CSV record: its first line)
--                               HASH: 64 bits (16 hex digits) of the line's text, without its
--                               line end; for CSV, of the header line and the record
--
-- so importing the same file again, or again after a kill, sends every event with the key it had
-- the first time, and none is counted twice. A line edited since gets a new key (it is a new
-- event); a line inserted moves the lines after it to new numbers, hence new keys: import the new
-- lines alone (or use an idempotency_key column) rather than a file rewritten in the middle.
-- Two different files whose lines agree at the same line numbers (a line without a timestamp
-- written twice, say) would share keys: --key-scope NAME sets them apart. The hash is the same on
-- every Lua (integer arithmetic below 2^53), so a file imported with Lua 5.4 and again with 5.1
-- or LuaJIT keeps its keys.
local limitry = require "limitry"

local M = {}

local byte, find, sub, format, concat = string.byte, string.find, string.sub, string.format, table.concat

-- The line hash: two polynomial hashes over 32-bit words modulo primes below 2^31, multipliers
-- below 2^20, so every intermediate value stays below 2^52 (exact in a double and in an integer).
local P1, P2 = 2147483629, 2147483587
local M1, M2 = 1048573, 1048571
local function hash(s, h1, h2)
  local n, i = #s, 1
  while i + 7 <= n do
    local a, b, c, d, e, f, g, h = byte(s, i, i + 7)
    local w1 = a + b * 256 + c * 65536 + d * 16777216
    local w2 = e + f * 256 + g * 65536 + h * 16777216
    h1 = (h1 * M1 + w1) % P1
    h2 = (h2 * M2 + w1) % P2
    h1 = (h1 * M1 + w2) % P1
    h2 = (h2 * M2 + w2) % P2
    i = i + 8
  end
  while i <= n do
    local a = byte(s, i)
    h1 = (h1 * M1 + a + 1) % P1
    h2 = (h2 * M2 + a + 1) % P2
    i = i + 1
  end
  return h1, h2
end
M.SEED1, M.SEED2 = 7, 11

-- The key of line `n` with text `text` (h1, h2: the seeds, the header's hash for CSV).
function M.derive_key(prefix, n, text, h1, h2)
  h1, h2 = hash(text, h1 or M.SEED1, h2 or M.SEED2)
  return format("%s%d-%08x%08x", prefix, n, h1, h2)
end
M.hash = hash

-- Field names: the Lua API's and the wire's. `id` (an event's id in `events list` output) is
-- skipped, so a listing can be imported again.
local FIELDS = {
  customer_id = "customer_id", customerId = "customer_id",
  event_type = "event_type", eventType = "event_type",
  model = "model", provider = "provider",
  input_tokens = "input_tokens", inputTokens = "input_tokens",
  output_tokens = "output_tokens", outputTokens = "output_tokens",
  total_tokens = "total_tokens", totalTokens = "total_tokens",
  latency_ms = "latency_ms", latencyMs = "latency_ms",
  cost_cents = "cost_cents", costCents = "cost_cents",
  properties = "properties",
  idempotency_key = "idempotency_key", idempotencyKey = "idempotency_key",
  timestamp = "timestamp",
  id = false,
}
M.FIELDS = FIELDS
local FIELD_LIST = "customer_id, event_type, model, provider, input_tokens, output_tokens, total_tokens, latency_ms, "
  .. "cost_cents, properties, idempotency_key, timestamp (or their camelCase names)"
local NUMERIC = { input_tokens = true, output_tokens = true, total_tokens = true, latency_ms = true, cost_cents = true }

local decode, null = limitry.decode, limitry.null

-- An NDJSON line's event table, or nil and why.
local function ndjson_event(line)
  local doc, err = decode(line)
  if doc == nil then return nil, "not JSON: " .. tostring(err) end
  if type(doc) ~= "table" or doc[1] ~= nil then return nil, "not a JSON object" end
  local ev = {}
  for k, v in pairs(doc) do
    local name = FIELDS[k]
    if name == nil then return nil, "unknown field '" .. tostring(k) .. "' (fields: " .. FIELD_LIST .. ")" end
    if name and v ~= null then
      if ev[name] ~= nil then return nil, "field " .. name .. " given twice" end
      ev[name] = v
    end
  end
  return ev
end

-- CSV ---------------------------------------------------------------------------------------

-- The fields of one CSV record (RFC 4180: "" inside quotes is a quote); nil, why when a quote is
-- not closed or stray text follows one.
local function csv_fields(s)
  local out = {}
  if not find(s, '"', 1, true) then
    local i, n = 1, 0
    while true do
      local comma = find(s, ",", i, true)
      n = n + 1
      if not comma then
        out[n] = sub(s, i)
        return out
      end
      out[n] = sub(s, i, comma - 1)
      i = comma + 1
    end
  end
  local i, n, len = 1, 0, #s
  while true do
    n = n + 1
    if sub(s, i, i) == '"' then
      local parts, j = {}, i + 1
      while true do
        local q = find(s, '"', j, true)
        if not q then return nil, "a quoted field is not closed" end
        parts[#parts + 1] = sub(s, j, q - 1)
        if sub(s, q + 1, q + 1) == '"' then
          parts[#parts + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      out[n] = concat(parts)
      if i > len then return out end
      if sub(s, i, i) ~= "," then return nil, "text after a closing quote (field " .. n .. ")" end
      i = i + 1
    else
      local comma = find(s, ",", i, true)
      local field = sub(s, i, (comma or len + 1) - 1)
      if find(field, '"', 1, true) then return nil, "a quote inside an unquoted field (field " .. n .. ")" end
      out[n] = field
      if not comma then return out end
      i = comma + 1
    end
  end
end
M.csv_fields = csv_fields

-- Reads a CSV header: the columns' handlers, or nil and why.
local function csv_columns(header)
  local names, err = csv_fields(header)
  if not names then return nil, err end
  local cols, seen = {}, {}
  for i, raw in ipairs(names) do
    local name = raw:match("^%s*(.-)%s*$")
    local prop = name:match("^properties%.(.+)$") or name:match("^property%.(.+)$")
    local field = FIELDS[name]
    if prop then
      cols[i] = { property = prop }
    elseif field == false then
      cols[i] = { skip = true }
    elseif field then
      cols[i] = { field = field }
    else
      return nil, "unknown column '" .. name .. "' (columns: " .. FIELD_LIST
        .. ", properties.NAME for a property)"
    end
    local id = prop and ("properties." .. prop) or field or name
    if seen[id] then return nil, "column " .. id .. " given twice" end
    seen[id] = true
  end
  if not (seen.customer_id and seen.event_type) then
    return nil, "the header needs customer_id and event_type columns (got: " .. header .. ")"
  end
  return cols
end

local function csv_event(cols, record)
  local cells, err = csv_fields(record)
  if not cells then return nil, err end
  if #cells ~= #cols then return nil, "has " .. #cells .. " fields, the header " .. #cols end
  local ev = {}
  for i, col in ipairs(cols) do
    local v = cells[i]
    if v ~= "" and not col.skip then
      if col.property then
        ev.properties = ev.properties or {}
        ev.properties[col.property] = v
      elseif col.field == "properties" then
        local p = decode(v)
        if type(p) ~= "table" then return nil, "properties must hold a JSON object (got " .. v .. ")" end
        ev.properties = ev.properties or {}
        for k, x in pairs(p) do
          if ev.properties[k] ~= nil then return nil, "property " .. tostring(k) .. " given twice" end
          ev.properties[k] = x
        end
      elseif NUMERIC[col.field] then
        local x = v:find("^%s*[%d.eE+-]+%s*$") and tonumber(v)
        if not x then return nil, col.field .. " must be a number (got '" .. v .. "')" end
        ev[col.field] = x
      elseif col.field == "timestamp" and v:find("^%d+%.?%d*$") then
        ev.timestamp = tonumber(v)
      else
        ev[col.field] = v
      end
    end
  end
  return ev
end

-- Whether a CSV record is complete (its quotes balanced); records may span lines.
local function balanced(s)
  local _, quotes = s:gsub('"', "")
  return quotes % 2 == 0
end

-- The import ------------------------------------------------------------------------------------

-- Strips "limitry.encode_event: " (the checks' prefix) from an argument error.
local function reason_of(err)
  return (tostring(err):gsub("^limitry%.encode_event: ", ""):gsub("^recorder:record: ", ""))
end

-- Source reading: returns a function giving (record text, first line number) or nil at the end.
local function records(f, csv, first_line)
  local n = 0
  local lines = f:lines()
  if first_line then
    local read = lines
    lines = function()
      local l = first_line
      if l then
        first_line = nil
        return l
      end
      return read()
    end
  end
  local first = true
  return function()
    local line = lines()
    if line == nil then return nil end
    n = n + 1
    if first then
      first = false
      if sub(line, 1, 3) == "\239\187\191" then line = sub(line, 4) end -- a UTF-8 byte order mark
    end
    if byte(line, -1) == 13 then line = sub(line, 1, -2) end
    if csv and find(line, '"', 1, true) and not balanced(line) then
      local start, parts = n, { line }
      while true do
        local more = lines()
        if more == nil then return concat(parts, "\n"), start end
        n = n + 1
        if byte(more, -1) == 13 then more = sub(more, 1, -2) end
        parts[#parts + 1] = more
        if not balanced(more) then return concat(parts, "\n"), start end
      end
    end
    return line, n
  end
end

-- Runs an import. o: input (an open file), first_line (read from it already, or nil), size (bytes, or nil), format
-- ("ndjson" or "csv"), strict, dry_run, key_scope, batch_size, concurrency, give_up (seconds),
-- client (a limitry client made for it, max_retries = 0), progress (function(state) or nil),
-- bad (function(line, reason): a line that is not imported), now (a clock in seconds).
-- Returns the summary { lines, events, bad, refused, sent, batches, seconds, stopped = reason or nil }.
function M.run(o)
  local now = o.now
  local started = now()
  local csv = o.format == "csv"
  local prefix = "imp1-" .. (o.key_scope and (o.key_scope .. "-") or "")
  local s = { lines = 0, events = 0, bad = 0, refused = 0, sent = 0, batches = 0, blank = 0, started = started }
  local rec, client
  local user_keys, line_of_key = {}, {} -- lines with their own key that are in flight: line -> key, key -> line
  local last_error, delivered_at = nil, started
  local stop_reason

  local function bad(line, reason)
    -- Ctrl-C raises "interrupted!" wherever Lua runs next, and a pcall (ours, the decoder's) may
    -- catch it: it ends the import, it is not a bad line.
    if tostring(reason):find("interrupted!", 1, true) then error("interrupted!", 0) end
    s.bad = s.bad + 1
    o.bad(line, reason)
    if o.strict and not stop_reason then stop_reason = { line = line, reason = reason, kind = "bad" } end
  end

  if not o.dry_run then
    client = o.client
    -- What the batches' failures were: the recorder retries them; we decide when to give up.
    local start_request = client.start_request
    client.start_request = function(c, method, path, body, opts, callback)
      return start_request(c, method, path, body, opts, function(res, msg, err)
        if res then
          last_error, delivered_at = nil, now()
        elseif err and err.status ~= 400 and err.status ~= 413 and err.status ~= 422 then
          last_error = err
        end
        return callback(res, msg, err)
      end)
    end
    local recorder = require "limitry.recorder"
    local high = o.batch_size * (o.concurrency + 4)
    rec = recorder.new {
      client = client,
      batch_size = o.batch_size,
      concurrency = o.concurrency,
      max_queued = high + o.batch_size,
      flush_interval = 0.2,
      max_backoff = 5,
      log = function() end, -- the import reports failures itself (one line, when it gives up)
      dead_letter = function(json, reason)
        local ev = decode(json)
        local key = type(ev) == "table" and ev.idempotencyKey or ""
        local line = line_of_key[key] or tonumber(key:match("^imp1%-.-(%d+)%-%x+$"))
        s.refused = s.refused + 1
        s.bad = s.bad + 1
        local why = tostring(type(reason) == "table" and reason.msg or reason)
        o.bad(line, "Limitry refused the event: " .. why)
        if o.strict and not stop_reason then stop_reason = { line = line, reason = why, kind = "refused" } end
      end,
      on_delivered = function(tags)
        for _, tag in ipairs(tags) do
          local key = user_keys[tag]
          if key then
            user_keys[tag] = nil
            if line_of_key[key] == tonumber(tag) then line_of_key[key] = nil end
          end
        end
      end,
    }
    s.high, s.low = high, o.batch_size * (o.concurrency + 2)
  end

  -- Stops the import when Limitry cannot be reached or refuses the key: at once when nothing was
  -- delivered yet (a wrong URL or key), after give_up seconds without a delivery otherwise.
  local function check_health()
    if not last_error then return end
    local e = last_error
    if e.name == "AuthenticationError" or (s.sent == 0 and e:is("NetworkError")) or now() - delivered_at > o.give_up then
      stop_reason = stop_reason or { kind = "error", err = e }
    end
  end

  local function stats()
    local st = rec:stats()
    s.sent, s.batches = st.sent, st.batches
    s.depth = st.depth
    return st
  end

  local function report_progress(final)
    if o.progress then
      if rec then stats() end
      s.position = o.input:seek("cur")
      o.progress(s, final)
    end
  end

  local next_progress = 0
  local h1, h2 = M.SEED1, M.SEED2
  local cols
  local bs = o.batch_size
  local queued_since_tick = 0
  local full = 2 * o.concurrency * bs -- queued + in flight: at least concurrency whole batches not yet taken
  for text, n in records(o.input, csv, o.first_line) do
    s.lines = n
    if find(text, "^%s*$") then
      s.blank = s.blank + 1
    elseif csv and not cols then
      local err
      cols, err = csv_columns(text)
      if not cols then
        stop_reason = { line = n, reason = "CSV header: " .. err, kind = "header" }
        s.bad = s.bad + 1
        break
      end
      h1, h2 = hash(text, M.SEED1, M.SEED2)
    else
      local ev, err
      if csv then ev, err = csv_event(cols, text) else ev, err = ndjson_event(text) end
      local json, tag
      if ev then
        local own = ev.idempotency_key
        if own == nil or own == false then ev.idempotency_key = M.derive_key(prefix, n, text, h1, h2) end
        local ok, res = pcall(limitry.encode_event, ev)
        if ok then
          json = res
          if own and rec then -- a line's own key: remembered while in flight, to name its line if refused
            tag = tostring(n)
            user_keys[tag] = own
            line_of_key[own] = n
          end
        else
          err = reason_of(res)
        end
      end
      if not json then
        bad(n, err)
      else
        s.events = s.events + 1
        if rec then
          local ok = rec:record_json(json, tag)
          while not ok do -- the queue is full: Limitry is slower than the file, or away
            rec:flush(0.05)
            check_health()
            if stop_reason then break end
            report_progress()
            ok = rec:record_json(json, tag)
          end
          queued_since_tick = queued_since_tick + 1
          -- Batches start only when whole batches are waiting: the recorder counts events in
          -- flight as waiting too (its tick sends whatever is queued once batch_size events are
          -- queued or in flight), so a tick at any other time could send a partial batch. So it
          -- ticks at every batch_size-th event (the events not yet taken are then a multiple of
          -- batch_size), and in between only when at least `full` events wait, which guarantees
          -- that every batch it may start is whole: then a batch answered while the file is read
          -- is followed at once by the next, and Limitry does not sit idle.
          if queued_since_tick >= bs then
            queued_since_tick = 0
            rec:tick()
            if stats().depth > s.high then
              while s.depth > s.low and not stop_reason do
                rec:flush(0.05)
                check_health()
                stats()
                report_progress()
              end
            end
            check_health()
          elseif queued_since_tick % 128 == 0 then
            if stats().depth >= full then rec:tick() else client:poll(0) end
          end
        end
      end
    end
    if stop_reason then break end
    if o.progress and n % 256 == 0 then
      local t = now()
      if t >= next_progress then
        next_progress = t + 0.25
        report_progress()
      end
    end
  end

  -- The rest: everything queued is sent (with --strict too: the lines before the bad one).
  if rec then
    while not (stop_reason and stop_reason.kind == "error") do
      local done = rec:flush(0.25)
      check_health()
      stats()
      report_progress()
      if done then break end
    end
    stats()
    rec:close(0)
    client.start_request = nil
  end
  s.seconds = now() - started
  report_progress(true)
  s.stopped = stop_reason
  return s
end

return M
