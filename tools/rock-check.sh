#!/bin/sh
# Installs the rock the way the README says (luarocks make) into a private tree and loads it.
set -eu
cd "$(dirname "$0")/.."
TREE="$(pwd)/.test-tmp/rocktree"
rm -rf "$TREE"
luarocks --lua-version 5.4 --tree "$TREE" make --deps-mode=none CURL_INCDIR=/usr/include/x86_64-linux-gnu limitry-0.1.0-1.rockspec
LUA_PATH="$TREE/share/lua/5.4/?.lua;$TREE/share/lua/5.4/?/init.lua" LUA_CPATH="$TREE/lib/lua/5.4/?.so" lua5.4 -e '
  local limitry = require "limitry"
  assert(package.searchpath("limitry.core", package.cpath):find(os.getenv("TREE") or "rocktree", 1, true))
  assert(math.type(require("limitry.core").decode("[500]")[1]) == "integer")
  assert(limitry.new("lm_x"):usage())
  print("rock ok: limitry " .. limitry.VERSION)'
