-- What installing gives a new user (issue #17, items 9 and 10): a rock with every module and the
-- type stubs, and a clear refusal, naming the fix, of a limitry.core built for another Lua (the one a
-- `luarocks make` for that Lua leaves in the checkout). tools/rock-check.sh runs the real luarocks.
local support = require "spec.support.server"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

describe("the rock", function()
  -- The rockspec is Lua assignments: run it with a table of its own as globals.
  local spec, text = {}, read("limitry-0.1.0-1.rockspec")
  local chunk
  if setfenv then
    chunk = assert(loadstring(text, "rockspec")) -- luacheck: ignore 113
    setfenv(chunk, spec)
  else
    chunk = assert(load(text, "rockspec", "t", spec))
  end
  chunk()

  it("lists every Lua file under lua/ as a module, named by its path", function()
    local modules = spec.build.modules
    local listed = {}
    for name, file in pairs(modules) do
      if type(file) == "string" then listed[#listed + 1] = name .. " = " .. file end
    end
    local found = {}
    for file in run("find lua -name '*.lua'"):gmatch("[^\n]+") do
      local name = file:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      found[#found + 1] = name .. " = " .. file
    end
    table.sort(listed)
    table.sort(found)
    assert.same(found, listed)
    assert.is_table(modules["limitry.core"])
  end)

  it("installs the type stubs (and the local server and docs for the command line) and says what it is", function()
    assert.same({ "meta", "server", "docs" }, spec.build.copy_directories)
    assert.same({ limitry = "bin/limitry" }, spec.build.install.bin)
    assert.is_nil(spec.description.summary:find("usage analytics API", 1, true)) -- not only the usage calls
    for _, word in ipairs { "usage", "events", "limits", "gateway" } do
      assert.truthy(spec.description.summary:find(word, 1, true), word)
    end
  end)
end)

describe("a limitry.core built for another Lua", function()
  local this = jit and "luajit" or _VERSION:match("%d+%.%d+")
  local lua = jit and "luajit" or ("lua" .. this)
  -- one of a different ABI: 5.1's for 5.3 and 5.4, 5.4's for 5.1 and LuaJIT
  local other = (this == "5.1" or this == "luajit") and "5.4" or "5.1"

  it("is refused with a message naming the file and the fix, not 'undefined symbol'", function()
    if not io.open("build/" .. other .. "/limitry/core.so") then
      assert(os.execute("sh tools/build.sh " .. other .. " >/dev/null 2>&1"))
    end
    local dir = support.tmpdir("stray-core")
    assert(os.execute("mkdir -p " .. dir .. "/limitry && cp build/" .. other .. "/limitry/core.so " .. dir .. "/limitry/"))
    local root = os.getenv("PWD")
    local env = "LUA_PATH='" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua' LUA_CPATH='./?.so'"
    local out = run("cd " .. dir .. " && " .. env .. " " .. lua .. " -e 'require \"limitry\"'")
    local name = jit and jit.version or _VERSION
    assert.truthy(out:find("limitry: ./limitry/core.so was built for another Lua (this is " .. name .. "; the file needs lua", 1, true), out)
    assert.truthy(out:find("remove it (rm -rf limitry src/*.o)", 1, true), out)
    assert.truthy(out:find("luarocks --lua-version " .. (this == "luajit" and "5.1" or this) .. " make", 1, true), out)
    assert.is_nil(out:find("error loading module", 1, true), out)
    -- found through LUA_CPATH elsewhere, the message says so
    out = run("cd /tmp && LUA_PATH='" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua' LUA_CPATH='" .. dir .. "/?.so' "
      .. lua .. " -e 'require \"limitry\"'")
    assert.truthy(out:find("limitry: " .. dir .. "/limitry/core.so was built for another Lua", 1, true), out)
    assert.truthy(out:find("LUA_CPATH (package.cpath) leads to it", 1, true), out)
  end)
end)
