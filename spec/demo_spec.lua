-- `make demo` as a new user runs it (issue #17, item 11): a month outside the sample data says so
-- instead of printing a report of zeros without a word.
local function demo(env)
  local p = assert(io.popen(env .. " sh tools/demo.sh 2>&1"))
  local out = p:read("*a")
  local ok = p:close()
  return out, ok
end

describe("make demo", function()
  it("says the sample data covers January to March 2024 when MONTH is another month", function()
    local out, ok = demo("MONTH=2024-05")
    assert.truthy(ok, out)
    assert.truthy(out:find("note: the sample data covers January to March 2024, so MONTH=2024-05 has no events;", 1, true), out)
    assert.truthy(out:find("try MONTH=2024-01, 2024-02 or 2024-03", 1, true), out)
    assert.truthy(out:find("(no events in 2024-05)", 1, true), out)
  end)

  it("prints a month of the sample data without the note", function()
    local out, ok = demo("MONTH=2024-02 CUSTOMER=cust_acme")
    assert.truthy(ok, out)
    assert.is_nil(out:find("note:", 1, true), out)
    assert.is_nil(out:find("no events", 1, true), out)
    assert.truthy(out:find("Usage 2024-02 for cust_acme", 1, true), out)
  end)

  it("refuses a month that does not exist, saying why", function()
    local out, ok = demo("MONTH=2024-13")
    assert.falsy(ok)
    assert.truthy(out:find("report.lua: month 2024-13 has month 13 (months run 01 to 12)", 1, true), out)
  end)
end)
