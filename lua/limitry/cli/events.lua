-- limitry.cli.events: `limitry events list|record|import`. The import's command line (its flags,
-- the progress line, the summary and the exit status); the import itself is limitry.cli.import.
local format = require "limitry.cli.format"
local common = require "limitry.cli.common"

local EXIT, fail, usage_error, number_arg, call = common.EXIT, common.fail, common.usage_error, common.number_arg, common.call
local out, emit_json, emit_lines, plural = common.out, common.emit_json, common.emit_lines, common.plural
local is_tty, terminal_width, now, event_of = common.is_tty, common.terminal_width, common.now, common.event_of

local H = {} -- "group sub" -> function(ctx, a)

local EVENT_COLUMNS = { "id", "timestamp", "customer_id", "event_type", "model", "provider", "input_tokens", "output_tokens",
  "total_tokens", "latency_ms", "cost_cents", "idempotency_key", "properties" }
local WIRE = { customer_id = "customerId", event_type = "eventType", input_tokens = "inputTokens",
  output_tokens = "outputTokens", total_tokens = "totalTokens", latency_ms = "latencyMs", cost_cents = "costCents",
  idempotency_key = "idempotencyKey" }

H["events list"] = function(ctx, a)
  local q = { customer_id = a.customer, model = a.model, event_type = a.event_type, cursor = a.cursor }
  q.limit = number_arg(a.limit, "--limit", true, 1, 100) or (a.all and 100 or nil)
  local client = ctx.client()
  local events = client:events()
  local fmt = ctx.output
  local widths -- table output: the columns' widths so far (the header is printed once)
  local count = 0
  local first_json = true
  if fmt == "csv" then out(format.csv_row(EVENT_COLUMNS)) end
  if fmt == "json" and a.all then io.stdout:write("[") end
  local page
  repeat
    page = call(ctx, events.list, events, q)
    for _, ev in ipairs(page.data) do
      count = count + 1
      if fmt == "ndjson" then
        out(format.json(ev))
      elseif fmt == "json" and a.all then
        local ok = io.stdout:write(first_json and "\n" or ",\n", format.json(ev))
        if not ok then fail(EXIT.ERROR) end
        first_json = false
      elseif fmt == "csv" then
        local row = {}
        for i, name in ipairs(EVENT_COLUMNS) do row[i] = ev[WIRE[name] or name] end
        out(format.csv_row(row, #EVENT_COLUMNS))
      end
    end
    if fmt == "json" and not a.all then emit_json(ctx, page) end
    if fmt == "table" then
      local rows = {}
      for i, ev in ipairs(page.data) do
        rows[i] = { ev.timestamp or "", ev.customerId or "", ev.eventType or "", ev.model or "",
          format.thousands(ev.inputTokens or 0), format.thousands(ev.outputTokens or 0),
          ev.costCents and format.dollars(ev.costCents) or "", ev.id or "" }
      end
      local cols = { { title = "timestamp" }, { title = "customer" }, { title = "event type" }, { title = "model" },
        { title = "input", align = "right" }, { title = "output", align = "right" }, { title = "cost", align = "right" },
        { title = "id" } }
      if rows[1] then
        local first = widths == nil
        widths = widths or {}
        local lines = format.table(cols, rows, widths)
        for i = first and 1 or 3, #lines do out(lines[i]) end -- the header once
      end
    end
    q.cursor = page.nextCursor
  until not (a.all and page.hasMore and page.nextCursor)
  if fmt == "json" and a.all then out(first_json and "]" or "\n]") end
  if fmt == "table" then
    if count == 0 then out("(no events)") end
    if page.hasMore and page.nextCursor and not ctx.quiet then
      io.stderr:write("limitry: more events: add --cursor ", page.nextCursor, " (or --all for every page)\n")
    end
  end
end

H["events record"] = function(ctx, a)
  local client = ctx.client()
  local res = call(ctx, client:events().record, client:events(), event_of(a))
  if ctx.quiet then return end
  if ctx.output == "json" then return emit_json(ctx, res) end
  if ctx.output == "csv" then
    out(format.csv_row { "id", "status" })
    return out(format.csv_row({ res.id, res.status }, 2))
  end
  local list = { { "id", res.id } }
  if res.status then list[2] = { "status", res.status } end
  emit_lines(format.pairs_table(list))
end

local function progress_printer(size)
  local width = terminal_width()
  return function(s, final)
    if final then
      io.stderr:write("\r\027[K")
      return io.stderr:flush()
    end
    local elapsed = now() - s.started
    local rate = elapsed > 0 and s.sent / elapsed or 0
    local line = string.format("%s sent  %s lines  %s ev/s", format.thousands(s.sent), format.thousands(s.lines),
      format.thousands(math.floor(rate)))
    if s.bad > 0 then line = line .. "  " .. format.thousands(s.bad) .. " bad" end
    if size and size > 0 and s.position then
      local frac = math.min(1, s.position / size)
      local eta = frac > 0 and elapsed / frac - elapsed or nil
      local bar_w = math.max(10, math.min(40, width - format.width(line) - 22))
      local filled = math.floor(frac * bar_w + 0.5)
      line = string.format("[%s%s] %3d%%  %s", string.rep("#", filled), string.rep(".", bar_w - filled),
        math.floor(frac * 100), line)
      if eta and frac < 1 then line = line .. string.format("  ETA %d:%02d", math.floor(eta / 60), math.floor(eta % 60)) end
    end
    io.stderr:write("\r", line:sub(1, width - 1), "\027[K")
    io.stderr:flush()
  end
end

H["events import"] = function(ctx, a)
  local import = require "limitry.cli.import"
  local source = a.file
  if source == "-" and a.key == "-" then usage_error("--key - and an import from stdin both need stdin: give the key in LIMITRY_API_KEY") end
  local input, size, first_line
  if source == "-" then
    input = io.stdin
  else
    local err
    input, err = io.open(source, "rb")
    if not input then usage_error("cannot read " .. source .. ": " .. tostring(err):gsub("^[^:]*: ", "")) end
    size = input:seek("end")
    input:seek("set")
  end
  local fmt = a.format or "auto"
  if fmt == "auto" then
    if source:lower():find("%.csv$") then
      fmt = "csv"
    elseif source:lower():find("%.ndjson$") or source:lower():find("%.jsonl$") or source:lower():find("%.json$") then
      fmt = "ndjson"
    else
      -- Sniff: NDJSON lines start with "{". The first line read is handed to the import.
      first_line = input:read("*l")
      fmt = first_line and first_line:match("^[\239\187\191%s]*{") and "ndjson" or "csv"
    end
  end
  if fmt ~= "ndjson" and fmt ~= "csv" then usage_error("--format must be auto, ndjson or csv (got '" .. fmt .. "')") end
  local scope = a.key_scope
  if scope and not scope:match("^[%w_.:]+$") or (scope and #scope > 64) then
    usage_error("--key-scope takes up to 64 letters, digits, '_', '.' or ':' (got '" .. scope .. "')")
  end
  local batch_size = number_arg(a.batch_size, "--batch-size", true, 1, 1000) or 1000
  local concurrency = number_arg(a.concurrency, "--concurrency", true, 1, 64) or 2
  local give_up = number_arg(a.give_up, "--give-up", false, 0) or 60
  local client
  if not a.dry_run then client = ctx.client { max_retries = 0, timeout = number_arg(a.timeout, "--timeout", false, 0.001) or 30 } end
  local shown, max_shown = 0, a.show_errors and number_arg(a.show_errors, "--show-errors", true, 0) or 20
  local errors_file
  if a.errors then
    local err
    errors_file, err = io.open(a.errors, "wb")
    if not errors_file then usage_error("--errors " .. a.errors .. ": " .. tostring(err)) end
  end
  local progress = (not ctx.quiet) and (a.progress or (a.progress == nil and is_tty(2))) and progress_printer(size) or nil
  local label = source == "-" and "stdin" or source
  local s = import.run {
    input = input, first_line = first_line, size = size, format = fmt, strict = a.strict, dry_run = a.dry_run, key_scope = scope,
    batch_size = batch_size, concurrency = concurrency, give_up = give_up, client = client, now = now,
    progress = progress,
    bad = function(line, reason)
      if errors_file then errors_file:write(label, ":", tostring(line or "?"), ": ", reason, "\n") end
      if a.strict then return end -- the failure below names it
      shown = shown + 1
      if shown <= max_shown then
        if progress then io.stderr:write("\r\027[K") end
        io.stderr:write("limitry: ", label, ":", tostring(line or "?"), ": ", reason, "\n")
      end
    end,
  }
  if input ~= io.stdin then input:close() end
  if errors_file then errors_file:close() end
  if client then client:close() end
  if shown > max_shown then
    io.stderr:write("limitry: ", format.thousands(shown - max_shown), " more bad lines not shown",
      a.errors and "" or " (--errors FILE lists them all)", "\n")
  end
  local rate = s.seconds > 0 and s.sent / s.seconds or 0
  local summary = { file = label, format = fmt, lines = s.lines, events = s.events, sent = s.sent, batches = s.batches, bad = s.bad,
    refused = s.refused, seconds = math.floor(s.seconds * 1000 + 0.5) / 1000, eventsPerSecond = math.floor(rate + 0.5),
    dryRun = a.dry_run or nil }
  local stop = s.stopped
  if stop and stop.kind == "error" then
    local e = stop.err
    local hint
    if e.name == "AuthenticationError" then
      hint = "check --key or LIMITRY_API_KEY"
    elseif e:is("NetworkError") then
      hint = "is Limitry reachable at " .. ctx.base_url_shown() .. "? (--base-url or LIMITRY_BASE_URL)"
    else
      hint = "try again later"
    end
    fail(EXIT.ERROR, "import stopped after line " .. format.thousands(s.lines) .. " (" .. plural(s.sent, "event")
      .. " sent): " .. e.msg .. "; " .. hint .. ", then run the same command again: events already sent count once")
  end
  if not ctx.quiet then
    if ctx.output == "json" then
      emit_json(ctx, summary)
    elseif ctx.output == "csv" then
      out("file,format,lines,events,sent,bad,refused,seconds,eventsPerSecond")
      out(format.csv_row({ label, fmt, s.lines, s.events, s.sent, s.bad, s.refused, summary.seconds, summary.eventsPerSecond }, 9))
    else
      if a.dry_run then
        out(string.format("%s: %s, %s to send, %s bad (dry run: nothing sent)", label, plural(s.lines, "line"),
          plural(s.events, "event"), format.thousands(s.bad)))
      else
        out(string.format("%s: %s sent in %.1f s (%s events/s); %s, %s bad%s", label, plural(s.sent, "event"),
          s.seconds, format.thousands(summary.eventsPerSecond), plural(s.lines, "line"), format.thousands(s.bad),
          s.refused > 0 and (" (" .. format.thousands(s.refused) .. " refused by Limitry)") or ""))
      end
    end
  end
  if stop and stop.kind == "header" then fail(EXIT.BAD_INPUT, label .. ":" .. stop.line .. ": " .. stop.reason) end
  if stop and a.strict then
    fail(EXIT.BAD_INPUT, "stopped at " .. label .. ":" .. tostring(stop.line or "?") .. " (--strict): " .. stop.reason
      .. "; the lines before it were imported")
  end
  if s.bad > 0 then return EXIT.BAD_INPUT end
end

return H
