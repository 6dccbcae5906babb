-- Async at scale (issue 8): the connection cache keeps up with the transfers in flight, and a
-- host event loop (Debian's lua-luv) drives the client in the socket-callback style while the
-- process holds more than 1,024 descriptors, where curl_multi_fdset (client:fds()) is blind.
local limitry = require "limitry"
local support = require "spec.support.server"
local uv = require "luv"

local S, E = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"

describe("event loops", function()
  local server

  setup(function() server = support.start() end)
  teardown(function() support.stop(server) end)

  local function client(opts)
    return support.client(server, "loop", { max_retries = 0, timeout = 10 }, opts)
  end

  -- Keeps `depth` calls in flight until `total` are done (each callback starts the next one).
  local function keep_in_flight(c, depth, total, drive)
    local started, done, failed = 0, 0, {}
    local usage = c:usage()
    local function start()
      started = started + 1
      usage:start_summary(S, E, function(res, msg)
        done = done + 1
        if not res then failed[#failed + 1] = msg end
        if started < total then start() end
      end)
    end
    for _ = 1, depth do start() end
    drive()
    return done, failed
  end

  it("64 calls in flight reuse their connections instead of opening one per call", function()
    local c, id = client()
    local done, failed = keep_in_flight(c, 64, 320, function()
      local deadline = support.now() + 30
      while c:poll(1) > 0 and support.now() < deadline do end
    end)
    assert.same({}, failed)
    assert.equal(320, done)
    local rec = support.recorded(server, id)
    assert.equal(320, rec.count)
    -- At most one connection per transfer in flight (a cache of 32 opened about 160 more).
    assert.is_true(rec.connections <= 64, rec.connections .. " connections for 320 calls at 64 in flight")
    c:close()
  end)

  it("a luv loop watches exactly libcurl's sockets, numbered above 1,024", function()
    -- Push the next descriptors past FD_SETSIZE (tools/test.sh raises the soft limit).
    local held = {}
    for i = 1, 1100 do
      held[i] = io.open("/dev/null", "rb")
      assert(held[i], "could not open 1,100 descriptors: raise ulimit -n")
    end
    local c = client()
    local polls, highest, watched_now = {}, -1, 0
    local timer = uv.new_timer()
    local function arm()
      local t = c:next_timeout()
      timer:stop()
      if t then timer:start(math.floor(t * 1000), 0, function() c:socket_action() arm() end) end
    end
    c:watch(function(fd, events)
      local p = polls[fd]
      if events == "" then -- libcurl may already have closed fd: stop before its number comes back
        if p then
          p:stop()
          p:close()
          polls[fd] = nil
          watched_now = watched_now - 1
        end
        return
      end
      if fd > highest then highest = fd end
      if not p then
        p = uv.new_socket_poll(fd)
        polls[fd] = p
        watched_now = watched_now + 1
      end
      p:start(events, function(err, ready)
        local ev = ((ready or ""):find("r") and "r" or "") .. ((ready or ""):find("w") and "w" or "")
        if err or ev == "" then ev = ev .. "e" end
        c:socket_action(fd, ev)
        arm()
      end)
    end)
    local guard = uv.new_timer()
    local timed_out = false
    local done, failed = keep_in_flight(c, 16, 200, function()
      arm()
      guard:start(20000, 0, function() timed_out = true uv.stop() end)
      -- The loop ends when nothing is watched and no timer is armed: every call is done.
      while not timed_out and (watched_now > 0 or c:next_timeout()) do uv.run("once") end
    end)
    guard:stop()
    guard:close()
    timer:stop()
    timer:close()
    assert.is_false(timed_out)
    assert.same({}, failed)
    assert.equal(200, done)
    assert.is_true(highest >= 1024, "highest socket " .. highest)
    -- client:fds() (curl_multi_fdset) could not have named these sockets; watch mode lists them.
    c:close()
    assert.equal(0, watched_now) -- close() told the loop to stop watching every socket
    for fd, p in pairs(polls) do p:close() polls[fd] = nil end
    uv.run("nowait")
    for _, f in ipairs(held) do f:close() end
  end)

  it("watch mode also drives req:wait() and reports sockets in fds()", function()
    local c = client()
    local seen = {}
    c:watch(function(fd, events) seen[#seen + 1] = fd .. ":" .. events end)
    local req = c:usage():start_summary(S, E)
    c:socket_action() -- the timer libcurl set when the request was added
    local fds = c:fds()
    assert.equal(1, #fds)
    assert.is_true(fds[1].read or fds[1].write)
    assert.is_table((req:wait()))
    assert.is_true(#seen >= 2, table.concat(seen, " "))
    assert.has_error(function() c:socket_action(1, "x") end,
      "client:socket_action: events must be 'r', 'w', 'rw' (with 'e' for an error)")
    c:close()
  end)

  it("in watch mode, bytes waiting on an idle keep-alive connection are never an answer", function()
    local raw = require "spec.support.raw"
    for _, mode in ipairs { "stale_bytes", "stale_408" } do
      local rs = raw.start(mode)
      local ok, why = pcall(function()
        local c = limitry.new { api_key = "lm_loop_key", base_url = rs.base_url, max_retries = 0, timeout = 5 }
        c:watch(function() end)
        local function call() return c:usage():start_summary(S, E):wait() end
        assert.equal(1, assert(call()).totalEvents)
        raw.push(rs)
        local second, msg = call()
        assert.is_nil(msg)
        assert.equal(2, second.totalEvents)
        assert.equal(2, raw.connections(rs))
        c:close()
      end)
      raw.stop(rs)
      assert(ok, why)
    end
  end)

  it("watch() is refused while requests are in flight, and socket_action() before watch()", function()
    local c = client()
    assert.has_error(function() c:socket_action() end, "client:socket_action: call client:watch(fn) first")
    local req = c:usage():start_summary(S, E)
    assert.has_error(function() c:watch(function() end) end, "client:watch: call it while no request is in flight")
    assert.is_table((req:wait()))
    c:watch(function() end)
    c:close()
    assert.has_error(function() c:watch(function() end) end, "limitry: this client is closed")
    assert.has_error(function() c:socket_action() end) -- closed: nothing to drive
  end)
end)
