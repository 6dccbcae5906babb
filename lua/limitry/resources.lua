-- Limitry's API as data: every resource, and every operation of it as one row
--   name = { METHOD, "/path/{id}", query = reader | body = reader | arguments = reader,
--            shape = answers.<shape>, retry = "safe" (default) | "unsent" | "keyed",
--            memo = true, each = true }
-- from which the facade (lua/limitry/init.lua) builds the method and its async twin, start_ + the
-- name without a leading get_ (client:quotas():get(id), :start_get(id [, callback])).
--   The method's arguments are the path's {placeholders} first, in order (each an id: a non-empty
--   string, percent-encoded), then the one argument of the `query` or `body` reader (readers:
--   lua/limitry/arguments.lua). `arguments` reads all the arguments itself instead.
--   retry: "safe", retried like the usage GETs; "unsent", only when nothing was sent (the call must
--   not be sent twice: it goes out on a new connection); "keyed", safe when every event of the
--   body carries an idempotency key, else unsent.
--   memo: the call made from the same positional arguments (not tables) is reused: a loop asking
--   for the same range again pays neither the checks nor the encoding.
--   each: the facade adds `each`, an iterator over every page of this listing (nextCursor, hasMore).
-- The resource named "client" holds operations that are methods of the client itself.
-- Adding a resource: a table here (its stubs in meta/limitry.lua, its route in the local server).
local answers = require "limitry.answers"
local args = require "limitry.arguments"

local check = args.check

-- Field lists: Lua name -> { wire name, check, required }.
local EVENT = {
  customer_id = { "customerId", check.short, true },
  event_type = { "eventType", check.short, true },
  model = { "model", check.short }, provider = { "provider", check.short },
  input_tokens = { "inputTokens", check.count }, output_tokens = { "outputTokens", check.count },
  total_tokens = { "totalTokens", check.count },
  latency_ms = { "latencyMs", check.count }, -- whole milliseconds, as the server stores them
  cost_cents = { "costCents", check.cost },
  properties = { "properties", check.map { entries = 64, key = 128, string = 1024, number = 1e300 } },
  idempotency_key = { "idempotencyKey", check.key },
  timestamp = { "timestamp", check.timestamp },
}
local FILTERS = check.map { strings_only = true, entries = 32, key = 128, string = 1024, nonempty = true }
local QUOTA = {
  name = { "name", check.short, true },
  metric = { "metric", check.one_of { "total_tokens", "total_events", "total_cost_cents" }, true },
  limit_value = { "limitValue", check.positive, true },
  period = { "period", check.one_of { "hour", "day", "week", "month" }, true },
  dimension_filters = { "dimensionFilters", FILTERS },
}
local RATE_LIMIT = {
  name = { "name", check.short, true },
  limit_value = { "limitValue", check.positive_count, true },
  window = { "window", check.one_of { "second", "minute", "hour" }, true },
  dimension_filters = { "dimensionFilters", FILTERS },
  enabled = { "enabled", check.boolean },
}
local ALERT = { threshold = { "threshold", check.whole(1, 100), true } }
local EVENT_LIST = {
  customer_id = { "customerId", check.string }, event_type = { "eventType", check.string },
  model = { "model", check.string }, limit = { "limit", check.whole(1, 100) }, cursor = { "cursor", check.string },
}
local DIMENSIONS = args.map { strings_only = true }

-- Quotas, rate limits and quota alerts: one description. `list_path` lists and creates (its
-- {placeholders} name a parent), `item_path` gets, updates and deletes one.
local function crud(list_path, item_path, fields, extra)
  local ops = {
    list = { "GET", list_path, shape = answers.resource_list },
    create = { "POST", list_path, body = args.fields(fields), shape = answers.resource, retry = "unsent" },
    get = { "GET", item_path, shape = answers.resource },
    update = { "PUT", item_path, body = args.changes(fields), shape = answers.resource, retry = "unsent" },
    delete = { "DELETE", item_path, shape = answers.deleted, retry = "unsent" },
  }
  for name, op in pairs(extra or {}) do ops[name] = op end
  return ops
end

local M = {
  usage = {
    get_summary = { "GET", "/usage", arguments = args.usage(), shape = answers.summary, memo = true },
    get_breakdown = { "GET", "/usage/breakdown", arguments = args.usage("group_by", "groupBy",
      { "model", "customer_id", "event_type", "provider" }), shape = answers.breakdown, memo = true },
    get_timeseries = { "GET", "/usage/timeseries", arguments = args.usage("interval", "interval",
      { "hour", "day", "week" }), shape = answers.timeseries, memo = true },
  },
  events = {
    record = { "POST", "/events", body = args.event(EVENT), shape = answers.event_id, retry = "keyed" },
    batch = { "POST", "/events/batch", body = args.events(EVENT), shape = answers.event_count, retry = "keyed" },
    list = { "GET", "/events", query = args.query(EVENT_LIST), shape = answers.event_page, each = true },
  },
  quotas = crud("/quotas", "/quotas/{id}", QUOTA, {
    check = { "POST", "/quotas/check", body = DIMENSIONS, shape = answers.quota_check },
  }),
  rate_limits = crud("/rate-limits", "/rate-limits/{id}", RATE_LIMIT, {
    check = { "POST", "/rate-limits/check", body = DIMENSIONS, shape = answers.rate_limit_check },
  }),
  quota_alerts = crud("/quotas/{quota_id}/alerts", "/quota-alerts/{id}", ALERT, {
    history = { "GET", "/quota-alerts/{id}/history", shape = answers.resource_list },
  }),
  customers = {
    get_usage = { "GET", "/customers/{customer_id}/usage", arguments = args.customer_range, shape = answers.customer_usage },
  },
  project = {
    get = { "GET", "/project", shape = answers.resource },
  },
  client = {
    -- check limits, then record: a limit decision is a result, not an error
    track = { "POST", "/track", body = args.event(EVENT), shape = answers.track, retry = "keyed" },
    -- an endpoint the library does not wrap: method and path are arguments
    request = { arguments = args.raw, shape = answers.any, retry = "keyed" },
  },
}

return M
