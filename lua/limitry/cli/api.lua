-- limitry.cli.api: `limitry project`, and `limitry get|post|put|delete PATH`: any path of the API
-- through client:request, its JSON answer printed as it came.
local limitry = require "limitry"
local common = require "limitry.cli.common"

local usage_error, call, emit_json, emit_record = common.usage_error, common.call, common.emit_json, common.emit_record

local H = {} -- "group sub" -> function(ctx, a)

H["project"] = function(ctx)
  local client = ctx.client()
  emit_record(ctx, call(ctx, client:project().get, client:project()))
end

-- Raw calls: limitry get|post|put|delete PATH
local function raw(method)
  return function(ctx, a)
    local path = a.path
    if path:sub(1, 1) ~= "/" then path = "/" .. path end
    local client = ctx.client()
    if client.base_url:find("/v1$") then path = path:gsub("^/v1/", "/") end
    local body = a.data
    if body == "-" then
      body = io.stdin:read("*a")
    elseif body and body:sub(1, 1) == "@" then
      local f, err = io.open(body:sub(2), "rb")
      if not f then usage_error("--data " .. body .. ": " .. tostring(err)) end
      body = f:read("*a")
      f:close()
    end
    if body and limitry.decode(body) == nil then usage_error("--data is not JSON") end
    if method ~= "GET" and method ~= "DELETE" and body == nil then body = "{}" end
    local opts = a.idempotent and { idempotent = true } or nil
    local res = call(ctx, client.request, client, method, path, body, opts)
    emit_json(ctx, res)
  end
end
H["get"], H["post"], H["put"], H["delete"] = raw("GET"), raw("POST"), raw("PUT"), raw("DELETE")

return H
