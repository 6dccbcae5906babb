---@meta
-- Type stubs for lua-language-server: add this folder to "Lua.workspace.library".
-- They describe the API in docs/api.md; nothing here runs.

---@class limitry.Metrics
---@field totalEvents integer
---@field totalTokens integer
---@field totalInputTokens integer
---@field totalOutputTokens integer
---@field totalCostCents number

---@class limitry.BreakdownRow: limitry.Metrics
---@field dimension string|nil  nil for events without the attribute

---@class limitry.TimeseriesPoint: limitry.Metrics
---@field timestamp string  bucket start, ISO 8601 UTC

---@class limitry.Breakdown
---@field data limitry.BreakdownRow[]

---@class limitry.Timeseries
---@field data limitry.TimeseriesPoint[]

---@alias limitry.ErrorName "LimitryError"|"APIError"|"AuthenticationError"|"RateLimitError"|"NetworkError"|"TimeoutError"|"DecodeError"

---@class limitry.Error
---@field name limitry.ErrorName
---@field message string
---@field status integer|nil
---@field response table|nil
---@field retry_after number|nil
---@field rate_limit {limit: number?, remaining: number?, reset: number?}|nil
---@field headers table<string, string>|nil
---@field attempts integer
---@field msg string  the whole message, the same as tostring(err)
---@field hint string|nil  what to check, when the client can tell (a 404 from a base_url without /v1)
---@field sent boolean|nil  false: no attempt can have reached the server (nothing was written)
---@field kind string|nil
---@field curl_code integer|nil
local Error = {}
---@param name limitry.ErrorName
---@return boolean
function Error:is(name) end

---@alias limitry.Date string|integer  ISO 8601 string, or unix seconds

---@class limitry.Filters
---@field customer_id string?
---@field event_type string?
---@field model string?

---@class limitry.SummaryParams: limitry.Filters
---@field start_date limitry.Date
---@field end_date limitry.Date

---@class limitry.BreakdownParams: limitry.SummaryParams
---@field group_by "model"|"customer_id"|"event_type"|"provider"

---@class limitry.TimeseriesParams: limitry.SummaryParams
---@field interval "hour"|"day"|"week"

---@alias limitry.Request limitry.AsyncCall  the name of earlier versions

---@class limitry.AsyncCall  what every start_* returns (the "async call")
local AsyncCall = {}
---@return boolean
function AsyncCall:done() end
---@return table|nil res, string|nil msg, limitry.Error|nil err
function AsyncCall:result() end
---@return boolean cancelled
function AsyncCall:cancel() end
---@return table|nil res, string|nil msg, limitry.Error|nil err
function AsyncCall:wait() end
---@return table|nil res, string|nil msg, limitry.Error|nil err
function AsyncCall:await() end

---@class limitry.Usage
local Usage = {}
---@overload fun(self: limitry.Usage, start_date: limitry.Date, end_date: limitry.Date, filters?: limitry.Filters): limitry.Metrics|nil, string|nil, limitry.Error|nil
---@param params limitry.SummaryParams
---@return limitry.Metrics|nil res, string|nil msg, limitry.Error|nil err
function Usage:get_summary(params) end
---@overload fun(self: limitry.Usage, group_by: string, start_date: limitry.Date, end_date: limitry.Date, filters?: limitry.Filters): limitry.Breakdown|nil, string|nil, limitry.Error|nil
---@param params limitry.BreakdownParams
---@return limitry.Breakdown|nil res, string|nil msg, limitry.Error|nil err
function Usage:get_breakdown(params) end
---@overload fun(self: limitry.Usage, interval: string, start_date: limitry.Date, end_date: limitry.Date, filters?: limitry.Filters): limitry.Timeseries|nil, string|nil, limitry.Error|nil
---@param params limitry.TimeseriesParams
---@return limitry.Timeseries|nil res, string|nil msg, limitry.Error|nil err
function Usage:get_timeseries(params) end
---@param ... any  the arguments of get_summary, then an optional callback(res, msg, err)
---@return limitry.AsyncCall
function Usage:start_summary(...) end
---@param ... any  the arguments of get_breakdown, then an optional callback(res, msg, err)
---@return limitry.AsyncCall
function Usage:start_breakdown(...) end
---@param ... any  the arguments of get_timeseries, then an optional callback(res, msg, err)
---@return limitry.AsyncCall
function Usage:start_timeseries(...) end

---@class limitry.Options
---@field api_key string?
---@field base_url string?
---@field timeout number?  seconds per attempt (30)
---@field connect_timeout number?  seconds (10)
---@field max_retries integer?  (2)
---@field backoff number?  seconds (0.5)
---@field max_backoff number?  seconds (8)
---@field max_retry_after number?  seconds (60)
---@field max_response_size integer?  bytes (16 MiB)
---@field headers table<string, string>?
---@field ca_file string?
---@field ca_path string?
---@field ssl_verify boolean?  (true)
---@field proxy string?  "" turns off proxies from the environment
---@field no_proxy string?
---@field openresty "auto"|"cosocket"|"worker_thread"|"blocking"|nil  transport inside nginx ("auto": cosockets)
---@field pool_size integer?  cosockets: idle connections a worker keeps, across every pool and client (64)
---@field keepalive_timeout number?  cosockets: seconds an idle connection is kept (60)
---@field thread_pool string?  openresty = "worker_thread": the nginx thread pool ("limitry")
---@field max_worker_thread_calls integer?  openresty = "worker_thread": attempts waiting per worker (32)
---@field log (fun(entry: limitry.LogEntry))|false|nil  called once per attempt; tostring(entry) is one line

---One attempt, as the log option sees it. Never holds the API key.
---@class limitry.LogEntry
---@field method "GET"|"POST"|"PUT"|"DELETE"
---@field path string  relative to base_url, without the query
---@field attempt integer  1 for the first try
---@field status integer|nil  the answer's HTTP status; nil for a transport failure
---@field error limitry.ErrorName|nil  the failed attempt's error name; nil for a result
---@field kind string|nil  a transport failure's kind
---@field message string|nil  the failed attempt's message
---@field duration number  seconds
---@field retry boolean  whether another attempt follows
---@field retry_in number|nil  seconds until it
---@field transport "curl"|"multi"|"cosocket"|"worker_thread"


---@class limitry.Event
---@field customer_id string
---@field event_type string
---@field model string?
---@field provider string?
---@field input_tokens integer?
---@field output_tokens integer?
---@field total_tokens integer?  sent only when given
---@field latency_ms integer?  whole milliseconds, 0 to 2^53 - 1
---@field cost_cents number?  0 to 1e12
---@field properties table<string, string|number|boolean>?
---@field idempotency_key string|false|nil  default: a random key; false: none
---@field timestamp limitry.Date?

---@class limitry.QuotaStatus
---@field id string
---@field name string
---@field metric string
---@field period string
---@field limit number
---@field used number
---@field remaining number
---@field exceeded boolean

---@class limitry.RateLimitStatus
---@field id string
---@field name string
---@field window string
---@field limit number
---@field remaining number
---@field reset integer  unix seconds
---@field exceeded boolean

---@class limitry.Decision
---@field allowed boolean
---@field id string|nil  the recorded event (track, when allowed)
---@field error string|nil
---@field retry_after number|nil  seconds, on a "no"
---@field quotas limitry.QuotaStatus[]|nil
---@field rateLimits limitry.RateLimitStatus[]|nil

---@class limitry.EventPage
---@field data table[]
---@field nextCursor string|nil
---@field hasMore boolean

---@class limitry.Events
local Events = {}
---@param event limitry.Event
---@return {id: string}|nil, string|nil, limitry.Error|nil
function Events:record(event) end
---@param events limitry.Event[]
---@return {count: integer}|nil, string|nil, limitry.Error|nil
function Events:batch(events) end
---@param query {customer_id: string?, event_type: string?, model: string?, limit: integer?, cursor: string?}?
---@return limitry.EventPage|nil, string|nil, limitry.Error|nil
function Events:list(query) end
---@param query {customer_id: string?, event_type: string?, model: string?, limit: integer?}?
---@return fun(): table|nil
function Events:each(query) end
---@return limitry.AsyncCall
function Events:start_record(event, callback) end
---@return limitry.AsyncCall
function Events:start_batch(events, callback) end
---@return limitry.AsyncCall
function Events:start_list(query, callback) end

---@class limitry.LimitResource  quotas() and rate_limits()
local LimitResource = {}
---@param dimensions table<string, string|number|boolean>
---@return limitry.Decision|nil, string|nil, limitry.Error|nil
function LimitResource:check(dimensions) end
---@return {data: table[]}|nil, string|nil, limitry.Error|nil
function LimitResource:list() end
---@param id string
---@return table|nil, string|nil, limitry.Error|nil
function LimitResource:get(id) end
---@param fields table  quotas: name, metric, limit_value, period, dimension_filters?; rate limits: name, limit_value, window, dimension_filters?, enabled?
---@return table|nil, string|nil, limitry.Error|nil
function LimitResource:create(fields) end
---@param id string
---@param fields table
---@return table|nil, string|nil, limitry.Error|nil
function LimitResource:update(id, fields) end
---@param id string
---@return {success: boolean}|nil, string|nil, limitry.Error|nil
function LimitResource:delete(id) end
---@return limitry.AsyncCall
function LimitResource:start_check(dimensions, callback) end
---@return limitry.AsyncCall
function LimitResource:start_list(callback) end
---@return limitry.AsyncCall
function LimitResource:start_get(id, callback) end
---@return limitry.AsyncCall
function LimitResource:start_create(fields, callback) end
---@return limitry.AsyncCall
function LimitResource:start_update(id, fields, callback) end
---@return limitry.AsyncCall
function LimitResource:start_delete(id, callback) end

---@class limitry.QuotaAlerts
local QuotaAlerts = {}
---@param quota_id string
---@param fields {threshold: integer}
---@return table|nil, string|nil, limitry.Error|nil
function QuotaAlerts:create(quota_id, fields) end
---@param quota_id string
---@return {data: table[]}|nil, string|nil, limitry.Error|nil
function QuotaAlerts:list(quota_id) end
---@param id string
---@return table|nil, string|nil, limitry.Error|nil
function QuotaAlerts:get(id) end
---@param id string
---@param fields {threshold: integer}
---@return table|nil, string|nil, limitry.Error|nil
function QuotaAlerts:update(id, fields) end
---@param id string
---@return {success: boolean}|nil, string|nil, limitry.Error|nil
function QuotaAlerts:delete(id) end
---@param id string
---@return {data: table[]}|nil, string|nil, limitry.Error|nil
function QuotaAlerts:history(id) end
---@return limitry.AsyncCall
function QuotaAlerts:start_create(quota_id, fields, callback) end
---@return limitry.AsyncCall
function QuotaAlerts:start_list(quota_id, callback) end
---@return limitry.AsyncCall
function QuotaAlerts:start_get(id, callback) end
---@return limitry.AsyncCall
function QuotaAlerts:start_update(id, fields, callback) end
---@return limitry.AsyncCall
function QuotaAlerts:start_delete(id, callback) end
---@return limitry.AsyncCall
function QuotaAlerts:start_history(id, callback) end

---@class limitry.Customers
local Customers = {}
---@param customer_id string|{customer_id: string, start_date: limitry.Date, end_date: limitry.Date}
---@param start_date limitry.Date?
---@param end_date limitry.Date?
---@return table|nil, string|nil, limitry.Error|nil  { customerId, <the five metrics> }
function Customers:get_usage(customer_id, start_date, end_date) end
---@return limitry.AsyncCall
function Customers:start_usage(customer_id, start_date, end_date, callback) end

---@class limitry.Project
local Project = {}
---@return table|nil, string|nil, limitry.Error|nil  { id, organizationId, name, slug, createdAt, updatedAt }
function Project:get() end
---@return limitry.AsyncCall
function Project:start_get(callback) end

---@class limitry.Client
---@field base_url string
---@field log (fun(entry: limitry.LogEntry))|false  the log option; assign to change it from the next attempt
local Client = {}
---@return limitry.Events
function Client:events() end
---@param event limitry.Event
---@return limitry.Decision|nil, string|nil, limitry.Error|nil
function Client:track(event) end
---@return limitry.AsyncCall
function Client:start_track(event, callback) end
---@return limitry.LimitResource
function Client:quotas() end
---@return limitry.LimitResource
function Client:rate_limits() end
---@return limitry.QuotaAlerts
function Client:quota_alerts() end
---@return limitry.Customers
function Client:customers() end
---@return limitry.Project
function Client:project() end
---@return limitry.Usage
function Client:usage() end
---@param timeout number?  seconds, default 0
---@return integer pending
function Client:poll(timeout) end
---@return number|nil seconds
function Client:next_timeout() end
---@return {fd: integer, read: boolean, write: boolean}[]
function Client:fds() end
---Socket-callback style: fn(fd, events) with events "r", "w", "rw", or "" (stop watching fd).
---@param fn fun(fd: integer, events: string)
function Client:watch(fn) end
---fd is ready ("r", "w", "rw"; "e" for an error), or with no fd: next_timeout() expired.
---@param fd integer?
---@param events string?
---@return integer pending
function Client:socket_action(fd, events) end
function Client:close() end
---An endpoint the library does not wrap: path relative to base_url (query included, as given); body
---JSON text or a table to encode. GET and options.idempotent are retried like the usage calls, the
---rest only when nothing was sent. A 2xx answer without a body (204) returns true.
---@param method "GET"|"POST"|"PUT"|"DELETE"
---@param path string
---@param body string|table|nil
---@param options {idempotent: boolean?}?
---@return any|nil res, string|nil msg, limitry.Error|nil err
function Client:request(method, path, body, options) end
---The async twin of request: the same arguments, then an optional callback(res, msg, err).
---@param method "GET"|"POST"|"PUT"|"DELETE"
---@param path string
---@param ... any  body, options, callback
---@return limitry.AsyncCall
function Client:start_request(method, path, ...) end

---@class limitry
---@field VERSION string
---@field DEFAULT_BASE_URL string
---@field null lightuserdata
local limitry = {}
---@param key_or_options string|limitry.Options|nil
---@return limitry.Client
function limitry.new(key_or_options) end
---@param v any
---@return boolean
function limitry.is_error(v) end
---The JSON text events:record would send for event (checked as record checks it; an idempotencyKey
---added when it has none), without sending it.
---@param event limitry.Event
---@return string
function limitry.encode_event(event) end
---A fresh idempotency key: 32 lowercase hex digits, 128 bits from the OS.
---@return string
function limitry.idempotency_key() end
---The decoder answers go through: integers kept, array nulls as limitry.null.
---@param text string
---@return any|nil value, string|nil why
function limitry.decode(text) end

return limitry
