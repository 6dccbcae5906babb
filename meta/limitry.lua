---@meta
-- Type stubs for lua-language-server: add this folder to "Lua.workspace.library".
-- They describe the API in README.md; nothing here runs.

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

---@class limitry.Request
local Request = {}
---@return boolean
function Request:done() end
---@return table|nil res, string|nil msg, limitry.Error|nil err
function Request:result() end
---@return boolean cancelled
function Request:cancel() end
---@return table|nil res, string|nil msg, limitry.Error|nil err
function Request:wait() end
---@return table|nil res, string|nil msg, limitry.Error|nil err
function Request:await() end

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
---@return limitry.Request
function Usage:start_summary(...) end
---@param ... any  the arguments of get_breakdown, then an optional callback(res, msg, err)
---@return limitry.Request
function Usage:start_breakdown(...) end
---@param ... any  the arguments of get_timeseries, then an optional callback(res, msg, err)
---@return limitry.Request
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
---@field pool_size integer?  cosockets: idle connections per pool and worker (64)
---@field keepalive_timeout number?  cosockets: seconds an idle connection is kept (60)
---@field thread_pool string?  openresty = "worker_thread": the nginx thread pool ("limitry")
---@field max_worker_thread_calls integer?  openresty = "worker_thread": calls waiting per worker (32)

---@class limitry.Client
---@field base_url string
local Client = {}
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

return limitry
