#!/bin/sh
# Runs every suite and ends with one line "N passed, M failed" summing them all.
#   tools/test.sh            everything: client specs on Lua 5.4, 5.3, 5.1 and LuaJIT, the server
#                            and nginx specs, an aggressive-GC run, UBSan, valgrind, the rock
#                            install, luacheck, the examples, the README's code blocks
#   tools/test.sh quick V    the client specs on one Lua (5.4, 5.3, 5.1 or luajit)
#   tools/test.sh valgrind   the valgrind run alone
#   tools/test.sh ubsan      the client specs with UndefinedBehaviorSanitizer
#   tools/test.sh tsan       8 Lua states in 8 threads under ThreadSanitizer (tools/tsan.sh)
# Servers are started by the specs themselves (spec/support/server.lua) on free loopback ports.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
sh tools/deps.sh || { echo "0 passed, 1 failed"; exit 1; }
export LIMITRY_TEST_TMP="$ROOT/.test-tmp"
rm -rf "$LIMITRY_TEST_TMP"
mkdir -p "$LIMITRY_TEST_TMP"
# Proxies from a developer's environment must not reroute loopback test traffic.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy no_proxy NO_PROXY
# spec/event_loop_spec.lua holds more than 1,024 descriptors (sockets numbered past FD_SETSIZE).
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
  ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
CLIENT_SPECS="spec/arguments_spec.lua spec/json_spec.lua spec/client_spec.lua spec/tls_spec.lua spec/async_spec.lua spec/game_loop_spec.lua spec/hardening_spec.lua spec/fork_spec.lua spec/steady_state_spec.lua spec/event_loop_spec.lua"
TOTAL_PASSED=0
TOTAL_FAILED=0
LOG="$LIMITRY_TEST_TMP/last.log"

interp() { case "$1" in luajit) echo luajit ;; *) echo "lua$1" ;; esac; }

count() { # suite-name passed failed
  TOTAL_PASSED=$((TOTAL_PASSED + $2))
  TOTAL_FAILED=$((TOTAL_FAILED + $3))
  printf '== %-28s %4d passed, %d failed\n' "$1" "$2" "$3"
}

# busted on Lua $1, build dir $2, suite name $3, then spec files; extra interpreter args in PRE.
run_busted() {
  lua=$(interp "$1"); build=$2; name=$3; shift 3
  LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/?.lua;;" LUA_CPATH="$ROOT/build/$build/?.so;;" \
    $lua ${LUA_PRE:-} /usr/bin/busted -o utfTerminal "$@" >"$LOG" 2>&1
  rc=$?
  sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep -v '^[●◼✱◌]*$' | tail -n 60
  summary=$(sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep -E '^[0-9]+ success' | tail -n 1)
  ok=$(echo "$summary" | sed -E 's/^([0-9]+) success.*/\1/')
  bad=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures? \/ ([0-9]+) errors?.*/\1 \2/' | awk '{print $1+$2}')
  [ -n "$ok" ] || ok=0
  [ -n "$bad" ] || bad=0
  if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi  # a crash or a runner error counts too
  count "$name" "$ok" "$bad"
}

check() { # name, command: one pass or one fail
  name=$1; shift
  if "$@" >"$LOG" 2>&1; then count "$name" 1 0; else tail -n 40 "$LOG"; count "$name" 0 1; fi
}

case "${1:-all}" in
quick)
  sh tools/build.sh "$2" || exit 1
  run_busted "$2" "$2" "client specs (Lua $2)" $CLIENT_SPECS
  ;;
valgrind)
  sh tools/build.sh 5.4 || exit 1
  sh tools/valgrind.sh && count valgrind 1 0 || count valgrind 0 1
  ;;
ubsan)
  CFLAGS_EXTRA="-O1 -fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
    LDFLAGS_EXTRA="-lubsan" sh tools/build.sh ubsan || exit 1
  run_busted 5.4 ubsan "client specs (UBSan)" $CLIENT_SPECS
  ;;
tsan)
  check "TSan: 8 Lua states in 8 threads" sh tools/tsan.sh
  ;;
all)
  if ! sh tools/build.sh 5.4 5.3 5.1 luajit; then
    echo "0 passed, 1 failed"
    exit 1
  fi
  for v in 5.4 5.3 5.1 luajit; do
    run_busted "$v" "$v" "client specs (Lua $v)" $CLIENT_SPECS
  done
  run_busted 5.4 5.4 "server + nginx specs" spec/server_spec.lua spec/server_hardening_spec.lua spec/openresty_spec.lua
  LUA_PRE="-e collectgarbage('setpause',0)" run_busted 5.4 5.4 "client specs, GC every step" spec/client_spec.lua spec/json_spec.lua spec/async_spec.lua
  CFLAGS_EXTRA="-O1 -fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
    LDFLAGS_EXTRA="-lubsan" sh tools/build.sh ubsan && run_busted 5.4 ubsan "client specs (UBSan)" $CLIENT_SPECS
  check "TSan: 8 Lua states in 8 threads" sh tools/tsan.sh
  check "valgrind (zero errors, leaks)" sh tools/valgrind.sh
  grep -E "ERROR SUMMARY|definitely lost" "$LOG" | head -n 4
  check "make bench smoke run prints a complete table" env BENCH_QUICK=1 timeout -k 5 240 sh bench/bench.sh
  check "luarocks make installs the rock" sh tools/rock-check.sh
  check "luacheck (lua/ server/ spec/ examples/ bench/)" luacheck --no-color lua/ server/ spec/ examples/ bench/
  check "examples run as written" sh tools/examples-check.sh
  check "README blocks run as written" lua5.4 tools/readme-check.lua
  ;;
esac
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
[ "$TOTAL_FAILED" -eq 0 ]
