-- examples/game_loop.lua against a server that holds every answer 500 ms: every query completes
-- and no tick is held by a query (a blocked tick would take the full 500 ms).
local support = require "spec.support.server"

describe("examples/game_loop.lua", function()
  local server
  setup(function() server = support.start { delay = 500, empty = false } end)
  teardown(function() support.stop(server) end)

  it("completes every query with no tick over 100 ms", function()
    local lua = (jit and "luajit") or ("lua" .. _VERSION:sub(5))
    local cmd = string.format("LIMITRY_BASE_URL=%s LIMITRY_API_KEY=%s %s examples/game_loop.lua 3 12 2>&1",
      server.base_url, server.api_key, lua)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    local done, started, failed, worst = out:match("(%d+)/(%d+) queries completed, (%d+) failed, worst tick ([%d.]+) ms")
    assert.is_not_nil(done, out)
    assert.equal(12, tonumber(started))
    assert.equal(12, tonumber(done))
    assert.equal(0, tonumber(failed))
    assert.is_true(tonumber(worst) < 100, "worst tick " .. worst .. " ms")
    assert.matches("cust_acme +5148 events", out)
    io.stderr:write("\n[game loop, " .. _VERSION .. (jit and " " .. jit.version or "") .. "] " .. out:match("[^\n]*worst tick[^\n]*") .. "\n")
  end)
end)
