#!/bin/sh
# Runs every suite and ends with one line "N passed, M failed" summing them all.
#   tools/test.sh            everything: client specs on Lua 5.4, 5.3, 5.1 and LuaJIT, the server
#                            and nginx specs, the command line (as installed), an aggressive-GC
#                            run, UBSan, valgrind, the rock
#                            install, luacheck, the examples, the code blocks of the README and
#                            of every docs/*.md that has runnable ones
#   tools/test.sh quick V    the client specs on one Lua (5.4, 5.3, 5.1 or luajit)
#   tools/test.sh valgrind   the valgrind run alone
#   tools/test.sh ubsan      the client specs with UndefinedBehaviorSanitizer
#   tools/test.sh asan       the client specs with ASan + UBSan (sanitized host, servers unsanitized)
#   tools/test.sh fuzz       the libFuzzer harnesses, FUZZ_SECONDS each (default 30)
#   tools/test.sh differential  the JSON decoder against lua-cjson and Python's json
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
# A comma-decimal locale for json_spec, compiled under the temp folder (no system change) and
# given to the busted runs only: with LOCPATH set, glibc's newlocale keeps an allocation that
# valgrind and the fuzzers' LeakSanitizer report. Without it the locale test shows as pending.
TEST_LOCPATH=
if command -v localedef >/dev/null 2>&1 && mkdir -p "$LIMITRY_TEST_TMP/locale" &&
  localedef -i de_DE -f UTF-8 "$LIMITRY_TEST_TMP/locale/de_DE.UTF-8" >/dev/null 2>&1; then
  TEST_LOCPATH="$LIMITRY_TEST_TMP/locale"
fi
# spec/event_loop_spec.lua holds more than 1,024 descriptors (sockets numbered past FD_SETSIZE).
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
  ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
CLIENT_SPECS="spec/arguments_spec.lua spec/json_spec.lua spec/encode_spec.lua spec/client_spec.lua spec/tls_spec.lua spec/async_spec.lua spec/game_loop_spec.lua spec/hardening_spec.lua spec/fork_spec.lua spec/hostile_spec.lua spec/meta_spec.lua spec/api_spec.lua spec/steady_state_spec.lua spec/event_loop_spec.lua spec/recorder_spec.lua spec/gateway_usage_spec.lua"
TOTAL_PASSED=0
TOTAL_FAILED=0
# What failed, repeated just above the last line: a CI log is often read from its tail only.
FAILED_LIST="$LIMITRY_TEST_TMP/failed.txt"
: >"$FAILED_LIST"
LOG="$LIMITRY_TEST_TMP/last.log"
# Issue #17: the log option, client:request, what installing gives.
CLIENT_SPECS="$CLIENT_SPECS spec/log_spec.lua spec/request_spec.lua spec/install_spec.lua"

interp() { case "$1" in luajit) echo luajit ;; *) echo "lua$1" ;; esac; }

count() { # suite-name passed failed
  TOTAL_PASSED=$((TOTAL_PASSED + $2))
  TOTAL_FAILED=$((TOTAL_FAILED + $3))
  printf '== %-28s %4d passed, %d failed\n' "$1" "$2" "$3"
  if [ "$3" -gt 0 ]; then echo "$1: $3 failed" >>"$FAILED_LIST"; fi
}

# busted on Lua $1, build dir $2, suite name $3, then spec files; extra interpreter args in PRE.
run_busted() {
  lua=$(interp "$1"); build=$2; name=$3; shift 3
  env ${TEST_LOCPATH:+LOCPATH="$TEST_LOCPATH"} \
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
  # busted names each failure on a line "Failure → spec/x.lua @ N", the test's name on the next.
  if [ "$bad" -gt 0 ]; then
    sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep -A1 -E '^(Failure|Error) ' | grep -v '^--$' | sed 's/^/  /' >>"$FAILED_LIST"
  fi
}

check() { # name, command: one pass or one fail
  name=$1; shift
  if "$@" >"$LOG" 2>&1; then count "$name" 1 0; else tail -n 40 "$LOG"; count "$name" 0 1; fi
}

# The client specs under ASan + UBSan: a sanitized lua5.4 host first on PATH (tools/asan.sh), so
# nothing is preloaded and the nginx servers the specs start are ordinary processes.
run_asan() {
  if sh tools/asan.sh >"$LOG" 2>&1; then
    # Set and restored by hand: whether assignments before a function call outlive it varies by shell.
    saved_path=$PATH
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" LSAN_OPTIONS="suppressions=$ROOT/tools/lsan.supp:print_suppressions=0"
    PATH="$ROOT/build/asan/bin:$PATH"
    # Not event_loop_spec: it loads Debian's luv (libuv, unsanitized, with its own threads and signal
    # handlers) into the process, and LeakSanitizer's exit-time tracer then crashes ("Tracer caught
    # signal 11") in some runs. valgrind runs that spec instead.
    # shellcheck disable=SC2046
    run_busted 5.4 asan "client specs (ASan+UBSan)" $(echo "$CLIENT_SPECS" | sed 's| spec/event_loop_spec.lua||')
    PATH=$saved_path
    unset LSAN_OPTIONS
  else
    tail -n 20 "$LOG"; count "client specs (ASan+UBSan)" 0 1
  fi
}

# Each libFuzzer harness for FUZZ_SECONDS (30 by default), one check each; the exec counts are shown.
run_fuzz() {
  for h in json response; do
    check "fuzz $h (${FUZZ_SECONDS:-30} s, ASan+UBSan)" sh tools/fuzz.sh "$h"
    grep "^fuzz $h:" "$LOG"
  done
}

# The decoder against lua-cjson and Python's json on the fuzz seeds and generated documents.
run_differential() {
  check "differential decode (lua-cjson, Python)" env LUA_PATH="$ROOT/lua/?.lua;;" LUA_CPATH="$ROOT/build/5.4/?.so;;" \
    lua5.4 tools/differential.lua
  tail -n 3 "$LOG"
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
asan)
  run_asan
  ;;
fuzz)
  run_fuzz
  ;;
differential)
  sh tools/build.sh 5.4 || exit 1
  run_differential
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
  run_busted 5.4 5.4 "server + nginx specs" spec/server_spec.lua spec/server_hardening_spec.lua spec/server_api_spec.lua spec/server_standin_spec.lua spec/server_scale_spec.lua spec/server_storage_spec.lua spec/openresty_spec.lua spec/openresty_hostile_spec.lua spec/gateway_spec.lua spec/demo_spec.lua
  # The command line through the installed rock (luarocks make into scratch trees for Lua 5.4 and 5.1).
  run_busted 5.4 5.4 "command line (rock, 5.4 + 5.1)" spec/cli_spec.lua
  LUA_PRE="-e collectgarbage('setpause',0)" run_busted 5.4 5.4 "client specs, GC every step" spec/client_spec.lua spec/json_spec.lua spec/async_spec.lua
  CFLAGS_EXTRA="-O1 -fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
    LDFLAGS_EXTRA="-lubsan" sh tools/build.sh ubsan && run_busted 5.4 ubsan "client specs (UBSan)" $CLIENT_SPECS
  run_asan
  run_fuzz
  run_differential
  check "TSan: 8 Lua states in 8 threads" sh tools/tsan.sh
  check "valgrind (zero errors, leaks)" sh tools/valgrind.sh
  grep -E "ERROR SUMMARY|definitely lost" "$LOG" | head -n 4
  check "make bench smoke run prints a complete table" env BENCH_QUICK=1 timeout -k 5 240 sh bench/bench.sh
  check "make bench-server smoke run (2,000 events)" env BENCH_SCALES="0 2000" BENCH_CALLS=50 BENCH_QUERIES=2 \
    timeout -k 5 120 sh bench/server.sh
  check "luarocks make installs the rock" sh tools/rock-check.sh
  check "luacheck (lua/ server/ spec/ examples/ bench/ bin/)" luacheck --no-color lua/ server/ spec/ examples/ bench/ bin/ bin/limitry
  check "examples run as written" sh tools/examples-check.sh
  check "README blocks run as written" lua5.4 tools/readme-check.lua
  # Every page of docs/ that holds a runnable block (tools/readme-check.lua --count says how many).
  for doc in docs/*.md; do
    if [ "$(lua5.4 tools/readme-check.lua --count "$doc")" -gt 0 ]; then
      check "$doc blocks run as written" lua5.4 tools/readme-check.lua "$doc"
    fi
  done
  ;;
esac
if [ -s "$FAILED_LIST" ]; then echo "== what failed"; cat "$FAILED_LIST"; fi
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
[ "$TOTAL_FAILED" -eq 0 ]
