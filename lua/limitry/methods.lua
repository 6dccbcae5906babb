-- The methods of every resource, built from its operations (limitry.resources): for each one, the
-- method (blocking: result or nil, msg, err) and its async twin, start_ + the name without a
-- leading get_ (the same arguments plus an optional callback; returns an async call at once), and
-- `each` over a listing's pages. Part of the facade (lua/limitry/init.lua calls it once).
local answers = require "limitry.answers"
local args = require "limitry.arguments"
local resources = require "limitry.resources"
local run = require("limitry.call").run
local pick = require("limitry.transport").pick

local unpack = table.unpack or unpack
local FRESH = answers.FRESH

-- Routes Limitry has whatever the ids (a 404 on one means the base URL is wrong): "METHOD /path" of
-- every operation without a {placeholder} in its path.
local ROUTES = {}
for _, ops in pairs(resources) do
  for _, op in pairs(ops) do
    if op[2] and not op[2]:find("{", 1, true) then ROUTES[op[1] .. " " .. op[2]] = true end
  end
end

-- The function that makes op's call from the method's arguments, raising on a wrong one (`where`
-- names the method in the message). A call: { method, path, body, shape, retry, flags, known }
-- (limitry.call); retry "keyed" is "safe" when the body says every event carries a key, else
-- "unsent", which also asks the C core for a new connection (FRESH).
local function builder(op, where)
  local method, path, read, shape = op[1], op[2], op.arguments, op.shape
  local rule = op.retry or "safe"
  local function new_call(m, p, body, keyed, known)
    local retry = rule
    if retry == "keyed" then retry = keyed and "safe" or "unsent" end
    return { method = m, path = p, body = body, shape = shape, retry = retry,
      flags = shape.flags + (retry == "unsent" and FRESH or 0), known = known }
  end
  if read and not path then -- client:request: method and path are arguments
    return function(...)
      local p, body, keyed, m = read(op, where, ...)
      return new_call(m, p, body, keyed, ROUTES[m .. " " .. p:gsub("[?#].*$", ""):gsub("/$", "")] == true)
    end
  end
  local known = ROUTES[method .. " " .. path] == true
  if read and rule ~= "keyed" then -- the usage calls, customers:get_usage: the retry rule is known now
    local flags = shape.flags + (rule == "unsent" and FRESH or 0)
    return function(...)
      local p, body = read(op, where, ...)
      return { method = method, path = p, body = body, shape = shape, retry = rule, flags = flags, known = known }
    end
  end
  if read then
    return function(...)
      local p, body, keyed = read(op, where, ...)
      return new_call(method, p, body, keyed, known)
    end
  end
  local pieces, names = {}, {} -- path = pieces[1] .. id 1 .. pieces[2] .. id 2 ...
  local rest = path:gsub("(.-){([%w_]+)}", function(before, name)
    pieces[#pieces + 1], names[#names + 1] = before, name
    return ""
  end)
  pieces[#pieces + 1] = rest
  local n, body_reader, query_reader = #names, op.body, op.query
  return function(...)
    local p = path
    if n > 0 then
      local parts = {}
      for i = 1, n do parts[2 * i - 1], parts[2 * i] = pieces[i], args.id(where, names[i], (select(i, ...))) end
      parts[2 * n + 1] = pieces[n + 1]
      p = table.concat(parts)
    end
    local body, keyed
    if body_reader then body, keyed = body_reader(where, (select(n + 1, ...))) end
    if query_reader then p = p .. query_reader(where, (select(n + 1, ...))) end
    return new_call(method, p, body, keyed, known)
  end
end

-- For op.memo: the call made from the same positional arguments (not tables) again, without
-- checks or encoding (calls are never changed). memo = { call, n, a, b, c }.
local function memoized(make, memo)
  return function(...)
    local n, a, b, c = select("#", ...), ...
    if memo.call and n == memo.n and a == memo.a and b == memo.b and c == memo.c then return memo.call end
    local made = make(...)
    if n <= 3 and type(a) ~= "table" and type(b) ~= "table" and type(c) ~= "table" then
      memo.call, memo.n, memo.a, memo.b, memo.c = made, n, a, b, c
    end
    return made
  end
end

-- Splits an optional callback off the end of a start_* call's arguments.
local function split_callback(...)
  local n = select("#", ...)
  local list = { ... }
  if type(list[n]) == "function" then return list[n], list, n - 1 end
  return nil, list, n
end

return function(limitry, Client, states, check_self)
  local function closed() error("limitry: this client is closed", 3) end

  -- Installs op as `name` and its async twin on class. on_client: the methods are the client's own
  -- (self is the client), else a resource object's ({ client = ... }).
  local function define(class, label, name, op, on_client)
    local where = label .. ":" .. name
    local build = builder(op, where)
    local memo = op.memo and {}
    if memo then build = memoized(build, memo) end
    class[name] = function(self, ...)
      -- A client's metatable is its own (check_self looks behind it): a client is known by its state.
      if getmetatable(self) ~= class and not (on_client and states[self]) then check_self(self, class, label, name) end
      local client = on_client and self or self.client
      local c = build(...)
      if client.closed then closed() end
      return run(states[client], c, pick(client, false, 3))
    end
    local start_name = "start_" .. name:gsub("^get_", "")
    local blocking_prefix = "^" .. (where .. ":"):gsub("%p", "%%%0")
    -- An argument error names the call that was made (start_*, not get_*).
    local function build_for_start(...)
      local ok, made = pcall(build, ...)
      if not ok then error(type(made) == "string" and made:gsub(blocking_prefix, label .. ":" .. start_name .. ":") or made, 0) end
      return made
    end
    local function begin(self, c, callback)
      local client = on_client and self or self.client
      if client.closed then closed() end
      return pick(client, true, 3).start(client, states[client], c, callback, 3)
    end
    class[start_name] = function(self, ...)
      if getmetatable(self) ~= class and not (on_client and states[self]) then check_self(self, class, label, start_name) end
      local n = select("#", ...)
      if n == 3 then -- the usual (start, end, callback), without a table
        local a, b, last = ...
        if type(last) == "function" then
          local c = memo and memo.n == 2 and memo.call
          if not (c and a == memo.a and b == memo.b) then c = build_for_start(a, b) end
          return begin(self, c, last)
        end
      end
      local last = n > 0 and select(n, ...)
      if type(last) ~= "function" then return begin(self, build_for_start(...)) end
      local callback, list
      callback, list, n = split_callback(...)
      return begin(self, build_for_start(unpack(list, 1, n)), callback)
    end
  end

  -- for item in resource:each{ ... } do ... end: every page of op's listing, fetched as the loop goes
  -- (following nextCursor while hasMore; an empty page with hasMore is not the end). A failed page
  -- raises its error value, as io.lines raises on a read error.
  local function define_each(class, label, name, op)
    local check = builder(op, label .. ":" .. name)
    class.each = function(self, query_args)
      check_self(self, class, label, "each")
      local query = {}
      for k, v in pairs(query_args or {}) do query[k] = v end
      check(query) -- raises now on a wrong argument
      local page, i = nil, 0
      return function()
        while true do
          if page and i < #page.data then
            i = i + 1
            return page.data[i]
          end
          if page and not (page.hasMore and page.nextCursor) then return nil end
          if page then query.cursor = page.nextCursor end
          local res, _, err = self[name](self, query)
          if not res then error(err, 2) end
          page, i = res, 0
        end
      end
    end
  end

  local classes = {}
  for resource, ops in pairs(resources) do
    local on_client = resource == "client"
    local class = Client
    if not on_client then
      class = {}
      class.__index = class
      classes[resource] = class
      -- client:events(), client:quotas(), ...: one object each per client, made on first use.
      Client[resource] = function(self)
        local state = states[self] -- a client is known by its state
        if not state then check_self(self, Client, "client", resource) end
        local made = state.resources
        local object = made[resource]
        if not object then
          object = setmetatable({ client = self }, class)
          made[resource] = object
        end
        return object
      end
    end
    for name, op in pairs(ops) do
      define(class, resource, name, op, on_client)
      if op.each then define_each(class, resource, name, op) end
    end
  end
  limitry.Usage = classes.usage
  limitry.resources = classes
end
