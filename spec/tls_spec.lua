-- HTTPS against the local server with a CA and certificate made at test time.
local limitry = require "limitry"
local support = require "spec.support.server"

describe("HTTPS", function()
  local server, pki

  setup(function()
    pki = support.tmpdir("pki")
    support.make_pki(pki)
    server = support.start { tls_cert = pki .. "/server.pem", tls_key = pki .. "/server.key" }
  end)
  teardown(function() support.stop(server) end)

  local P = { "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z" }

  it("works when ca_file names the issuing CA", function()
    assert.matches("^https://", server.base_url)
    local c = limitry.new { api_key = server.api_key, base_url = server.base_url, ca_file = pki .. "/ca.pem" }
    local s, msg = c:usage():get_summary(P[1], P[2])
    assert.is_nil(msg)
    assert.equal(0, s.totalEvents)
  end)

  it("reuses one TLS connection for sequential calls", function()
    local id = support.test_id("tls")
    local c = limitry.new { api_key = server.api_key, base_url = server.base_url, ca_file = pki .. "/ca.pem",
      headers = { ["X-Limitry-Test-Id"] = id } }
    for _ = 1, 10 do assert(c:usage():get_summary(P[1], P[2])) end
    local id_path = "/_test/requests?id=" .. id
    -- curl's exit status, not a pcall around io.popen (which succeeds whatever curl does).
    local out_file = pki .. "/recorded-" .. id .. ".json"
    support.sh("curl -sSf --max-time 10 --cacert " .. pki .. "/ca.pem -o " .. out_file .. " '" .. server.root .. id_path .. "'")
    local f = assert(io.open(out_file))
    local out = f:read("*a")
    f:close()
    local rec = assert(require("limitry.core").decode(out))
    assert.equal(10, rec.count)
    assert.equal(1, rec.connections)
  end)

  it("works when ca_path names a hashed certificate folder", function()
    local dir = pki .. "/capath"
    support.sh("mkdir -p " .. dir)
    local p = io.popen("openssl x509 -hash -noout -in " .. pki .. "/ca.pem")
    local hash = p:read("*l")
    p:close()
    support.sh("cp " .. pki .. "/ca.pem " .. dir .. "/" .. hash .. ".0")
    -- The system bundle stays in use beside ca_path; it does not hold this CA (see the next test).
    local c = limitry.new { api_key = server.api_key, base_url = server.base_url, ca_path = dir, max_retries = 0 }
    local s, msg = c:usage():get_summary(P[1], P[2])
    assert.is_nil(msg)
    assert.equal(0, s.totalEvents)
  end)

  it("fails with a clean NetworkError when the CA is not trusted", function()
    local c = limitry.new { api_key = server.api_key, base_url = server.base_url, max_retries = 0 }
    local s, msg, err = c:usage():get_summary(P[1], P[2])
    assert.is_nil(s)
    assert.equal("NetworkError", err.name)
    assert.equal("tls", err.kind)
    assert.equal(1, err.attempts)
    assert.matches("^NetworkError: TLS certificate verification failed", msg)
  end)

  it("connects without verification only when ssl_verify = false", function()
    local c = limitry.new { api_key = server.api_key, base_url = server.base_url, ssl_verify = false }
    assert(c:usage():get_summary(P[1], P[2]))
  end)
end)
