#!/bin/sh
# Installs the rock the way the README says (luarocks make) into a private tree and loads it, then
# checks what the rock holds: every file under lua/ is a module of the rockspec (and installed), and
# the LuaLS stubs are in the rock's meta/ folder. Last, issue #17's trap: a `luarocks make` for
# Lua 5.1 in a copy of the checkout leaves a 5.1 limitry/core.so there, and lua5.4 run from that
# copy must refuse it with a message naming the fix, not "undefined symbol: lua_tointeger".
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TREE="$ROOT/.test-tmp/rocktree"
rm -rf "$TREE"
luarocks --lua-version 5.4 --tree "$TREE" make --deps-mode=none CURL_INCDIR=/usr/include/x86_64-linux-gnu limitry-0.1.0-1.rockspec
LUA_PATH="$TREE/share/lua/5.4/?.lua;$TREE/share/lua/5.4/?/init.lua" LUA_CPATH="$TREE/lib/lua/5.4/?.so" lua5.4 -e '
  local limitry = require "limitry"
  assert(package.searchpath("limitry.core", package.cpath):find(os.getenv("TREE") or "rocktree", 1, true))
  assert(math.type(require("limitry.core").decode("[500]")[1]) == "integer")
  assert(limitry.new("lm_x"):usage())
  print("rock ok: limitry " .. limitry.VERSION)'
rm -rf limitry src/*.o # the build luarocks make leaves here (see the README's Installing)

# Every Lua file under lua/ is listed, under the module name its path gives, and was installed.
TREE="$TREE" lua5.4 -e '
  local spec = {}
  assert(load(assert(io.open("limitry-0.1.0-1.rockspec")):read("a"), "rockspec", "t", spec))()
  local modules, missing = spec.build.modules, {}
  local files = io.popen("find lua -name \"*.lua\" | sort")
  for file in files:lines() do
    local name = file:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
    if modules[name] ~= file then missing[#missing + 1] = file .. " (as " .. name .. ")" end
    local installed = os.getenv("TREE") .. "/share/lua/5.4/" .. file:gsub("^lua/", "")
    assert(io.open(installed), "not installed: " .. installed):close()
  end
  files:close()
  assert(#missing == 0, "limitry-0.1.0-1.rockspec does not list: " .. table.concat(missing, ", "))
  print("rockspec lists every module under lua/")'
dir=$(luarocks --lua-version 5.4 --tree "$TREE" show --rock-dir limitry)
cmp "$dir/meta/limitry.lua" meta/limitry.lua
echo "stubs installed: $dir/meta/limitry.lua"

# luarocks make for Lua 5.1 in a copy of the checkout, then lua5.4 from that copy.
COPY="$ROOT/.test-tmp/rock-copy"
rm -rf "$COPY" "$TREE-5.1"
mkdir -p "$COPY"
git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$COPY"
cd "$COPY"
luarocks --lua-version 5.1 --tree "$TREE-5.1" make --deps-mode=none CURL_INCDIR=/usr/include/x86_64-linux-gnu limitry-0.1.0-1.rockspec >/dev/null
test -f limitry/core.so
out=$(LUA_PATH="$TREE/share/lua/5.4/?.lua;$TREE/share/lua/5.4/?/init.lua" LUA_CPATH="./?.so;$TREE/lib/lua/5.4/?.so" \
  lua5.4 -e 'require "limitry"' 2>&1 || true)
echo "$out" | grep -q "limitry: ./limitry/core.so was built for another Lua (this is Lua 5.4; the file needs lua_" ||
  { echo "$out"; echo "lua5.4 did not name the stray 5.1 core"; exit 1; }
echo "$out" | grep -q "rm -rf limitry src/\*.o" || { echo "$out"; exit 1; }
echo "a stray 5.1 core is refused with: $(echo "$out" | head -n 1)"
