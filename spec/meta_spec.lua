-- The LuaLS stubs (meta/limitry.lua) list exactly the public methods the module has: a function
-- added to one and not the other fails here.
local limitry = require "limitry"

local function stub_text()
  local f = assert(io.open("meta/limitry.lua"))
  local text = f:read("*a")
  f:close()
  return text
end

local function stub_methods()
  local text = stub_text()
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

-- The stub class of each resource: what `function Client:<resource>()` is stubbed to return.
local function resource_classes()
  local text = stub_text()
  local by_resource = {}
  for class, resource in text:gmatch("%-%-%-@return limitry%.(%a%w*)\nfunction Client:([%w_]+)%(%)") do
    by_resource[resource] = class
  end
  return by_resource
end

describe("meta/limitry.lua", function()
  local stubs = stub_methods()
  local r = limitry.resources
  local stubbed_as = resource_classes()
  it("stubs exactly the methods of Client", function()
    assert.same(sorted(module_methods(limitry.Client)), sorted(stubs.Client or {}))
  end)
  -- Every resource of limitry.resources (a new one too), by the class its accessor is stubbed with.
  for resource, class in pairs(r) do
    it("stubs exactly the methods of client:" .. resource .. "()", function()
      local name = stubbed_as[resource]
      assert(name, "meta/limitry.lua: no ---@return limitry.<Class> above function Client:" .. resource .. "()")
      assert.same(sorted(module_methods(class)), sorted(stubs[name] or {}))
    end)
  end
  it("stubs exactly the public functions of the module", function()
    local public = {}
    for name, v in pairs(limitry) do
      if type(v) == "function" and not name:find("^_") then public[name] = true end
    end
    assert.same(sorted(public), sorted(stubs.limitry or {}))
  end)

  it("stubs every option limitry.new takes", function()
    local text = stub_text()
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
