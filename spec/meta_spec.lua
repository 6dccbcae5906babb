-- The LuaLS stubs (meta/limitry.lua) list exactly the public methods the module has: a function
-- added to one and not the other fails here.
local limitry = require "limitry"

local function stub_methods()
  local f = assert(io.open("meta/limitry.lua"))
  local text = f:read("*a")
  f:close()
  local by_class = {}
  for class, method in text:gmatch("\nfunction (%a%w*)[:.]([%w_]+)%(") do
    by_class[class] = by_class[class] or {}
    by_class[class][method] = true
  end
  return by_class
end

-- The public methods of a module class (names not starting with "_", metamethods excluded).
local function module_methods(class)
  local out = {}
  for name, v in pairs(class) do
    if type(v) == "function" and not name:find("^_") then out[name] = true end
  end
  return out
end

local function sorted(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

describe("meta/limitry.lua", function()
  local stubs = stub_methods()
  local r = limitry.resources
  local classes = {
    Client = limitry.Client, Usage = limitry.Usage, Events = r.events, LimitResource = r.quotas,
    QuotaAlerts = r.quota_alerts, Customers = r.customers, Project = r.project,
  }
  for name, class in pairs(classes) do
    it("stubs exactly the methods of " .. name, function()
      assert.same(sorted(module_methods(class)), sorted(stubs[name] or {}))
    end)
  end
  it("describes rate_limits() with the same methods as quotas()", function()
    assert.same(sorted(module_methods(r.quotas)), sorted(module_methods(r.rate_limits)))
  end)
  it("stubs exactly the public functions of the module", function()
    local public = {}
    for name, v in pairs(limitry) do
      if type(v) == "function" and not name:find("^_") then public[name] = true end
    end
    assert.same(sorted(public), sorted(stubs.limitry or {}))
  end)

  it("stubs every option limitry.new takes", function()
    local f = assert(io.open("meta/limitry.lua"))
    local text = f:read("*a")
    f:close()
    local options = text:match("%-%-%-@class limitry%.Options\n(.-)\n\n")
    local stubbed = {}
    for name in options:gmatch("%-%-%-@field ([%w_]+)") do stubbed[name] = true end
    -- limitry.new lists every option it takes when given an unknown one
    local _, msg = pcall(limitry.new, { api_key = "k", not_an_option = 1 })
    local taken = {}
    for name in msg:match("%(allowed: (.-)%)"):gmatch("[%w_]+") do taken[name] = true end
    assert.same(sorted(taken), sorted(stubbed))
  end)
end)
