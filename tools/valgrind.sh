#!/bin/sh
# The client specs under valgrind on Lua 5.4: fails on any memory error or definitely-lost byte.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export LIMITRY_TEST_TMP="${LIMITRY_TEST_TMP:-$ROOT/.test-tmp}"
mkdir -p "$LIMITRY_TEST_TMP"
LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/?.lua;;" LUA_CPATH="$ROOT/build/5.4/?.so;;" \
  valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
  --show-leak-kinds=definite --track-origins=no --num-callers=30 \
  lua5.4 /usr/bin/busted -o utfTerminal spec/arguments_spec.lua spec/json_spec.lua spec/encode_spec.lua spec/client_spec.lua spec/tls_spec.lua spec/async_spec.lua spec/hardening_spec.lua spec/steady_state_spec.lua spec/event_loop_spec.lua
