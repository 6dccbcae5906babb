-- Runs the code blocks of the README (or of a docs/*.md) as written, so the docs cannot drift from
-- what works.
--   lua5.4 tools/readme-check.lua [README.md | docs/FILE.md]
--
-- The README is read now, not a list kept here, so blocks added later are checked too. In order:
--   ```sh / ```shell / ```bash  run in a fresh shell (`env -i`, only HOME, PATH, LANG and a private
--                               LuaRocks tree) with `sh -e` from a fresh copy of the checkout (the
--                               tracked and untracked files, no build/, no .test-tmp/), one shell per
--                               block, in document order, so a later block sees what an earlier one
--                               built.
--   ```lua                      a complete program, run with lua5.4 against a local server with the
--                               sample data (LIMITRY_BASE_URL, LIMITRY_API_KEY, LUA_PATH and LUA_CPATH
--                               set to the copy's lua/ and build/5.4/).
--   any other block             (nginx, text, no language) is not code to run and is listed as such.
-- A line `<!-- not-runnable -->` (optionally followed by a reason) right before a block skips it:
-- signatures and sketches that are not programs. Every block is listed with what happened to it;
-- any failure (non-zero exit, a timeout, a server left running) fails the check.
--   lua5.4 tools/readme-check.lua --count FILE   prints how many runnable blocks FILE holds, runs none
local COUNT = arg[1] == "--count"
local README = (COUNT and arg[2]) or arg[1] or "README.md"
local ROOT = io.popen("pwd"):read("*l")

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function run(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end
local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Fenced blocks: { line = N, info = "sh", code = "...", skip = reason or nil }.
local function blocks(text)
  local out, lines = {}, {}
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = line end
  local i = 1
  while i <= #lines do
    local fence, info = lines[i]:match("^ ? ? ?(```+)%s*([^`]*)$")
    if fence then
      local start, body = i, {}
      i = i + 1
      while i <= #lines and not lines[i]:match("^ ? ? ?" .. fence .. "%s*$") do
        body[#body + 1] = lines[i]
        i = i + 1
      end
      local prev = start - 1
      while prev > 0 and lines[prev]:match("^%s*$") do prev = prev - 1 end
      local reason = prev > 0 and lines[prev]:match("^%s*<!%-%-%s*not%-runnable%s*:?%s*(.-)%s*%-%->%s*$")
      out[#out + 1] = { line = start, info = (info:match("^(%S+)") or ""):lower(),
        code = table.concat(body, "\n") .. "\n", skip = reason and (reason ~= "" and reason or "marked not-runnable") }
    end
    i = i + 1
  end
  return out
end

local list = blocks(read(README))
if COUNT then
  local n = 0
  for _, b in ipairs(list) do
    if not b.skip and (b.info == "lua" or b.info == "sh" or b.info == "shell" or b.info == "bash" or b.info == "console") then n = n + 1 end
  end
  print(n)
  os.exit(0)
end
local tmp = ROOT .. "/.test-tmp/readme-check"
run("rm -rf " .. sh_quote(tmp))
local checkout, home = tmp .. "/checkout", tmp .. "/home"
assert(run("mkdir -p " .. sh_quote(checkout) .. " " .. sh_quote(home)))
-- A checkout-like copy: what git tracks plus new files not ignored, as they are in the work tree.
assert(run("git ls-files -z --cached --others --exclude-standard | xargs -0 -r sh -c "
  .. sh_quote('for f; do [ -e "$f" ] && printf "%s\\0" "$f"; done') .. " _ | tar --null -T - -cf - | tar -xf - -C "
  .. sh_quote(checkout)), "could not copy the checkout")
-- `luarocks make` as written installs into a private tree, not the machine's.
write(tmp .. "/luarocks-config.lua", string.format("rocks_trees = { { name = 'readme-check', root = %q } }\n",
  tmp .. "/rocktree"))
-- A non-root user's PATH (no sbin folders), as the README's readers have.
local ENV = "env -i HOME=" .. sh_quote(home) .. " PATH=/usr/local/bin:/usr/bin:/bin"
  .. " LANG=C.UTF-8 LUAROCKS_CONFIG=" .. sh_quote(tmp .. "/luarocks-config.lua")

local server_dir = tmp .. "/lua-server"
local server_env -- set once the first lua block needs the server

local function start_server()
  if server_env then return server_env end
  if not run("cd " .. sh_quote(checkout) .. " && " .. ENV .. " sh tools/build.sh 5.4 >" .. sh_quote(tmp .. "/build.log") .. " 2>&1") then
    error("cannot build the core for the lua blocks; see " .. tmp .. "/build.log", 0)
  end
  local p = io.popen("cd " .. sh_quote(checkout) .. " && " .. ENV .. " lua5.4 server/limitry-local start --dir "
    .. sh_quote(server_dir) .. " 2>&1")
  local out = p:read("*a")
  p:close()
  local url = out:match("LIMITRY_BASE_URL=(%S+)")
  local key = out:match("LIMITRY_API_KEY=(%S+)")
  if not url then error("cannot start the local server: " .. out, 0) end
  server_env = ENV .. " LIMITRY_BASE_URL=" .. url .. " LIMITRY_API_KEY=" .. key
    .. " LUA_PATH=" .. sh_quote(checkout .. "/lua/?.lua;" .. checkout .. "/lua/?/init.lua;;")
    .. " LUA_CPATH=" .. sh_quote(checkout .. "/build/5.4/?.so;;")
  return server_env
end

-- A server a shell block started and did not stop (its default folder in the copy) is stopped
-- here and counts as a failure.
local function leftover_server()
  local f = io.open(checkout .. "/.limitry-local/logs/nginx.pid")
  if not f then return false end
  local pid = f:read("*l")
  f:close()
  if not (pid and run("kill -0 " .. pid .. " 2>/dev/null")) then return false end
  run("cd " .. sh_quote(checkout) .. " && lua5.4 server/limitry-local stop >/dev/null 2>&1")
  return true
end

local SHELLS = { sh = "sh", shell = "sh", bash = "bash", console = "sh" }
local ran, failed = 0, 0
local ok_all, err = pcall(function()
  for n, b in ipairs(list) do
    local label = string.format("block %d (%s:%d, %s)", n, README, b.line, b.info ~= "" and b.info or "no language")
    if b.skip and (SHELLS[b.info] or b.info == "lua") then
      print(label .. ": skipped, not-runnable: " .. b.skip)
    elseif SHELLS[b.info] then
      local script = tmp .. "/block-" .. n .. ".sh"
      write(script, b.code)
      local ok = run("cd " .. sh_quote(checkout) .. " && " .. ENV .. " timeout 600 " .. SHELLS[b.info] .. " -e "
        .. sh_quote(script) .. " >" .. sh_quote(script .. ".log") .. " 2>&1")
      local left = leftover_server()
      ran = ran + 1
      if ok and not left then
        print(label .. ": ok")
      else
        failed = failed + 1
        print(label .. ": FAILED" .. (left and " (left a server running)" or "") .. "\n" .. b.code .. "--- output:")
        io.write(read(script .. ".log"))
      end
    elseif b.info == "lua" then
      local env = start_server()
      local script = tmp .. "/block-" .. n .. ".lua"
      write(script, b.code)
      local ok = run("cd " .. sh_quote(checkout) .. " && " .. env .. " timeout 120 lua5.4 " .. sh_quote(script)
        .. " >" .. sh_quote(script .. ".log") .. " 2>&1")
      ran = ran + 1
      if ok then
        print(label .. ": ok")
      else
        failed = failed + 1
        print(label .. ": FAILED\n" .. b.code .. "--- output:")
        io.write(read(script .. ".log"))
      end
    else
      print(label .. ": not code to run")
    end
  end
end)
if server_env then run("lua5.4 " .. sh_quote(checkout .. "/server/limitry-local") .. " stop --dir " .. sh_quote(server_dir) .. " >/dev/null 2>&1") end
if not ok_all then
  print("readme-check: " .. tostring(err))
  os.exit(1)
end
print(string.format("readme-check: %d blocks run, %d failed", ran, failed))
if ran == 0 then print("readme-check: no runnable block found") end
os.exit((failed == 0 and ran > 0) and 0 or 1)
