-- limitry.cli.parser: the command line's grammar (argparse): every command, its flags and its
-- --help text. build() returns the root parser and, for each parser, its command's name
-- ("limitry usage summary") for usage errors.
local argparse = require "argparse"
local limitry = require "limitry"

local P = {}

local OUTPUTS = {
  default = { "table", "json", "csv" },
  events_list = { "table", "json", "ndjson", "csv" },
}

-- The options every command takes (listed last in its --help, under "Common options"). They may
-- also come before the command (`limitry -o json usage summary`): the root's go to root_<name>
-- (argparse resets an option's target when a subcommand declares it again) and are merged after.
local COMMON = { "key", "base_url", "timeout", "output", "quiet" }
local function add_globals(cmd, outputs, piped, root)
  local function target(o, name)
    if root then o:target("root_" .. name) end
    return o
  end
  local list = {
    target(cmd:option("--key", "API key (default: $LIMITRY_API_KEY); '-' reads it from stdin. Never printed.")
      :argname("KEY"), "key"),
    target(cmd:option("--base-url", "Limitry's URL (default: $LIMITRY_BASE_URL, else " .. limitry.DEFAULT_BASE_URL .. ")")
      :argname("URL"), "base_url"),
    target(cmd:option("--timeout", "seconds per request (default 30)"):argname("SECONDS"), "timeout"),
  }
  if outputs then
    list[#list + 1] = target(cmd:option("-o --output", "output: " .. table.concat(outputs, ", ") .. " (default: table "
      .. "on a terminal, " .. (piped or "json") .. " otherwise)"):argname("FMT"), "output")
  end
  list[#list + 1] = target(cmd:flag("-q --quiet", "no progress and no messages; on a change, no output (create prints "
    .. "the new id)"), "quiet")
  return list
end

-- A leaf command while it is built: the options added through it are its own, recorded in order,
-- so that its --help lists them first and the common ones after (argparse lists groups in the
-- order they are made) without reading argparse's fields.
local Leaf = {}
Leaf.__index = Leaf

local function new_leaf(cmd, common)
  return setmetatable({ cmd = cmd, own = {}, common = common }, Leaf)
end

function Leaf:option(...)
  local o = self.cmd:option(...)
  self.own[#self.own + 1] = o
  return o
end

function Leaf:flag(...)
  local o = self.cmd:flag(...)
  self.own[#self.own + 1] = o
  return o
end

function Leaf:argument(...) return self.cmd:argument(...) end

-- Groups a leaf's own options first and the common ones after.
local function group_options(leaf)
  local unpack = table.unpack or unpack
  if leaf.own[1] then leaf.cmd:group("Options", unpack(leaf.own)) end
  leaf.cmd:group("Common options", unpack(leaf.common))
end

-- --customer, --model, --event-type: the filters of the usage reports and of events list.
local function add_only(cmd)
  cmd:option("--customer", "only this customer_id"):argname("ID")
  cmd:option("--model", "only this model"):argname("MODEL")
  cmd:option("--event-type", "only this event type"):argname("TYPE")
end

local function add_filters(cmd)
  cmd:option("--from", "start (included): YYYY-MM-DD, YYYY-MM, ISO 8601, now, today, yesterday, wtd, mtd, ytd, "
    .. "7d, 24h, 2w (default: mtd)"):argname("WHEN")
  cmd:option("--to", "end (excluded), as --from (default: now)"):argname("WHEN")
  add_only(cmd)
end

local function add_event_flags(cmd)
  cmd:option("--customer", "customer_id (required)"):argname("ID")
  cmd:option("--event-type", "event_type (required), such as model_call"):argname("TYPE")
  cmd:option("--model", "model"):argname("MODEL")
  cmd:option("--provider", "provider"):argname("NAME")
  cmd:option("--input-tokens", "input tokens"):argname("N")
  cmd:option("--output-tokens", "output tokens"):argname("N")
  cmd:option("--total-tokens", "total tokens (default: input + output)"):argname("N")
  cmd:option("--latency-ms", "latency in milliseconds"):argname("N")
  cmd:option("--cost-cents", "cost in cents (fractions allowed)"):argname("CENTS")
  cmd:option("--property", "a property NAME=VALUE (a string) or NAME:=JSON (number, boolean); repeatable")
    :argname("NAME=VALUE"):count("*")
  cmd:option("--idempotency-key", "the event's key (default: a random one); the same key counts once"):argname("KEY")
  cmd:option("--timestamp", "when it happened, as --from of usage (default: the server's time)"):argname("WHEN")
end

local function build_parser()
  local paths = {} -- parser -> "limitry usage summary"
  local p = argparse("limitry", "The Limitry command line: usage reports, event imports, quotas, rate limits and checks.")
    :epilog("Exit status: 0 done, 1 a Limitry or network error, 2 a usage error, 3 a \"no\" (check, track, "
      .. "local status), 4 lines not imported (events import). Key and URL: LIMITRY_API_KEY, LIMITRY_BASE_URL. "
      .. "Every command takes --help. More: docs/cli.md.")
    :help_max_width(100)
  p:command_target("command")
  p:flag("--version", "print the version and exit"):action(function()
    print("limitry " .. limitry.VERSION .. " (limitry-lua, " .. (jit and jit.version or _VERSION) .. ")")
    os.exit(0)
  end)
  add_globals(p, { "table", "json", "ndjson", "csv" }, nil, true)
  paths[p] = "limitry"
  local function group(name, description)
    local g = p:command(name):summary(description):description(description)
    g:command_target("sub")
    paths[g] = "limitry " .. name
    return g
  end
  local leaves = {}
  local function leaf(parent, name, description, outputs, piped)
    local c = parent:command(name):summary(description):description(description)
    paths[c] = paths[parent] .. " " .. name
    leaves[#leaves + 1] = new_leaf(c, add_globals(c, outputs, piped))
    return leaves[#leaves]
  end

  local usage = group("usage", "Usage reports: totals, a breakdown, a timeseries (with a chart).")
  local c = leaf(usage, "summary", "Totals over a range: events, tokens, cost.", OUTPUTS.default)
  add_filters(c)
  c = leaf(usage, "breakdown", "Totals per model, customer, event type or provider.", OUTPUTS.default)
  add_filters(c)
  c:option("--by", "model (default), customer, event-type or provider"):argname("DIMENSION")
  c = leaf(usage, "timeseries", "Totals per hour, day or week; --chart draws them.", OUTPUTS.default)
  add_filters(c)
  c:option("--interval", "hour, day (default) or week"):argname("INTERVAL")
  c:option("--chart", "draw the series: bars (default) or spark (a sparkline as wide as the terminal)")
    :args("?"):argname("STYLE")
  c:option("--metric", "what --chart draws: cost (default), events, tokens, input, output"):argname("METRIC")
  c:option("--width", "chart width in columns (default: the terminal's)"):argname("N")
  c:flag("--ascii", "draw with ASCII characters only")

  local customers = group("customers", "A customer's usage.")
  c = leaf(customers, "usage", "Totals of one customer over a range.", OUTPUTS.default)
  c:argument("customer_id", "the customer")
  c:option("--from", "start (included), as in usage summary (default: mtd)"):argname("WHEN")
  c:option("--to", "end (excluded) (default: now)"):argname("WHEN")

  local events = group("events", "List, record and import events.")
  c = leaf(events, "list", "Events, newest first: one page, or --all pages.", OUTPUTS.events_list, "ndjson")
  add_only(c)
  c:option("--limit", "events per page, 1 to 100 (default 50; 100 with --all)"):argname("N")
  c:option("--cursor", "the page after this cursor (nextCursor of the previous page)"):argname("CURSOR")
  c:flag("--all", "every page, following the cursor")
  c = leaf(events, "record", "Record one event.", OUTPUTS.default)
  add_event_flags(c)
  c = leaf(events, "import", "Import events from NDJSON or CSV; safe to run again (see docs/cli.md).", { "table", "json", "csv" })
  c:argument("file", "an NDJSON or CSV file, or - for stdin")
  c:option("--format", "auto (default: by extension, else by the first line), ndjson or csv"):argname("FORMAT")
  c:flag("--strict", "stop at the first bad line (the lines before it are imported)")
  c:flag("--dry-run", "check every line, send nothing")
  c:option("--key-scope", "a name mixed into the derived idempotency keys (files whose lines could coincide)")
    :argname("NAME")
  c:option("--batch-size", "events per request, 1 to 1000 (default 1000)"):argname("N")
  c:option("--concurrency", "requests in flight (default 2)"):argname("N")
  c:option("--give-up", "seconds without a delivery before stopping (default 60)"):argname("SECONDS")
  c:option("--errors", "write every bad line's number and reason to FILE"):argname("FILE")
  c:option("--show-errors", "bad lines shown on stderr (default 20)"):argname("N")
  c:flag("--progress", "show the progress line even when stderr is not a terminal")
  c:flag("--no-progress", "never show the progress line"):target("progress"):action("store_false")

  for _, name in ipairs { "quotas", "rate-limits" } do
    local noun = name == "quotas" and "quota" or "rate limit"
    local g = group(name, name == "quotas" and "Quotas: tokens, events or cost per hour, day, week or month."
      or "Rate limits: events per second, minute or hour.")
    leaf(g, "list", "Every " .. noun .. ".", OUTPUTS.default)
    c = leaf(g, "get", "One " .. noun .. ".", OUTPUTS.default)
    c:argument("id", "its id")
    for _, verb in ipairs { "create", "update" } do
      c = leaf(g, verb, verb == "create" and ("Create a " .. noun .. ".") or ("Change a " .. noun .. "'s fields."),
        OUTPUTS.default)
      if verb == "update" then c:argument("id", "its id") end
      c:option("--name", "its name"):argname("NAME")
      c:option("--limit", name == "quotas" and "the limit (tokens, events or cents)" or "events per window"):argname("N")
      if name == "quotas" then
        c:option("--metric", "total_tokens, total_events or total_cost_cents"):argname("METRIC")
        c:option("--period", "hour, day, week or month"):argname("PERIOD")
      else
        c:option("--window", "second, minute or hour"):argname("WINDOW")
        c:flag("--enable", "enabled (the default on create)")
        c:flag("--disable", "disabled: neither enforced nor listed by checks")
      end
      c:option("--filter", "applies to events with NAME=VALUE (customer_id, model, event_type, provider or a "
        .. "property); repeatable" .. (verb == "update" and "; replaces the filters" or "")):argname("NAME=VALUE"):count("*")
      if verb == "update" then c:flag("--no-filters", "remove every filter") end
    end
    c = leaf(g, "delete", "Delete a " .. noun .. ".", OUTPUTS.default)
    c:argument("id", "its id")
  end

  local alerts = group("alerts", "Quota alerts: fire when usage reaches a percentage of a quota.")
  c = leaf(alerts, "list", "A quota's alerts.", OUTPUTS.default)
  c:argument("quota_id", "the quota")
  c = leaf(alerts, "get", "One alert.", OUTPUTS.default)
  c:argument("id", "its id")
  c = leaf(alerts, "create", "Add an alert to a quota.", OUTPUTS.default)
  c:argument("quota_id", "the quota")
  c:option("--threshold", "percent of the quota, 1 to 100 (required)"):argname("PERCENT")
  c = leaf(alerts, "update", "Change an alert's threshold.", OUTPUTS.default)
  c:argument("id", "its id")
  c:option("--threshold", "percent of the quota, 1 to 100 (required)"):argname("PERCENT")
  c = leaf(alerts, "delete", "Delete an alert.", OUTPUTS.default)
  c:argument("id", "its id")
  c = leaf(alerts, "history", "When an alert fired.", OUTPUTS.default)
  c:argument("id", "its id")

  c = leaf(p, "check", "May this customer make a call? Exit 0 allowed, 3 refused.", OUTPUTS.default)
  c:option("--customer", "customer_id"):argname("ID")
  c:option("--model", "model"):argname("MODEL")
  c:option("--event-type", "event type"):argname("TYPE")
  c:option("--provider", "provider"):argname("NAME")
  c:option("--dimension", "another dimension NAME=VALUE (a property); repeatable"):argname("NAME=VALUE"):count("*")
  c:option("--only", "quotas or rate-limits (default: both)"):argname("KIND")

  c = leaf(p, "track", "Check the limits, then record the event if allowed. Exit 0 allowed, 3 refused.", OUTPUTS.default)
  add_event_flags(c)

  leaf(p, "project", "The project the key belongs to.", OUTPUTS.default)

  for _, verb in ipairs { "get", "post", "put", "delete" } do
    c = leaf(p, verb, verb:upper() .. " any path of the API and print its JSON answer (raw).", { "json" })
    c:argument("path", "relative to the base URL, such as /quotas (a leading /v1 is dropped)")
    if verb == "post" or verb == "put" then
      c:option("-d --data", "the JSON body; @FILE reads a file, - reads stdin"):argname("JSON")
      c:flag("--idempotent", "safe to send twice: retried like a read")
    end
  end

  local loc = group("local", "The bundled local Limitry-compatible server (nginx + Lua).")
  for _, verb in ipairs { "start", "stop", "status" } do
    local desc = verb == "start" and "Start it and print export lines: eval \"$(limitry local start)\"."
      or verb == "stop" and "Stop it." or "Is it running? Exit 0 yes, 3 no."
    c = loc:command(verb):summary(desc):description(desc)
    paths[c] = "limitry local " .. verb
    c:option("--dir", "its folder (default: $LIMITRY_SERVER_DIR, else .limitry-local)"):argname("DIR")
    c:option("--server-dir", "where the server's code is (default: found beside bin/)"):argname("DIR")
    c:flag("-q --quiet", "no messages")
    if verb == "start" then
      c:option("--port", "its port (default: a free one)"):argname("N")
      c:option("--key", "the API key it accepts (default: lm_local_test_key)"):argname("KEY"):target("server_key")
      c:flag("--empty", "no sample data on the first start of a folder")
      c:flag("--faults", "test-only fault injection (see server/lua/limitry_server/faults.lua)")
    end
    if verb == "status" then c:option("-o --output", "table or json"):argname("FORMAT") end
  end
  for _, l in ipairs(leaves) do group_options(l) end
  return p, paths
end

P.OUTPUTS, P.COMMON, P.build = OUTPUTS, COMMON, build_parser

return P
