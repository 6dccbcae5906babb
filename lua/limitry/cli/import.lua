-- limitry.cli.import: `limitry events import FILE|-`. Reads NDJSON or CSV, checks each event as
-- events:record would, and sends them through limitry.recorder (batches of up to 1,000, a few in
-- flight), with a progress line on a terminal. The command's flags and its output:
-- limitry.cli.events.
--
-- Safe to re-run: every event carries an idempotency key, its line's own or one derived from the
-- line (limitry.cli.input says how), so a file imported again counts no event twice.
local limitry = require "limitry"
local input = require "limitry.cli.input"

local M = {}

-- What the spec and other callers read here: the key, the hash, the CSV splitter, the fields.
M.derive_key, M.hash, M.csv_fields, M.FIELDS = input.derive_key, input.hash, input.csv_fields, input.FIELDS
M.SEED1, M.SEED2 = input.SEED1, input.SEED2

local find = string.find
local decode = limitry.decode
local hash, records = input.hash, input.records
local csv_columns, csv_event, ndjson_event = input.csv_columns, input.csv_event, input.ndjson_event

-- Strips "limitry.encode_event: " (the checks' prefix) from an argument error.
local function reason_of(err)
  return (tostring(err):gsub("^limitry%.encode_event: ", ""):gsub("^recorder:record: ", ""))
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
