#!/bin/sh
# Compiles limitry.core for each Lua named (5.4 5.3 5.1 luajit) into build/<lua>/limitry/core.so,
# with the strict warnings the project keeps (-Wall -Wextra -Werror -pedantic).
#   tools/build.sh 5.4 luajit        CC, CFLAGS_EXTRA and CURL_INCDIR may be set
set -eu
cd "$(dirname "$0")/.."
CC=${CC:-cc}
CURL_INCDIR=${CURL_INCDIR:-/usr/include/x86_64-linux-gnu}
SOURCES="src/core.c src/class.c src/handle.c src/transfer.c src/multi.c src/process.c src/json.c src/buffer.c src/encode.c src/text.c src/random.c"
for v in "$@"; do
  case "$v" in
    luajit) inc=/usr/include/luajit-2.1 ;;
    ubsan | asan) inc=/usr/include/lua5.4 ;;
    *) inc=/usr/include/lua$v ;;
  esac
  out=build/$v/limitry/core.so
  mkdir -p "build/$v/limitry"
  # shellcheck disable=SC2086
  $CC -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -g -fPIC -Wall -Wextra -Werror -pedantic ${CFLAGS_EXTRA:-} \
    -I"$inc" -I"$CURL_INCDIR" -shared -o "$out" $SOURCES -lcurl -pthread ${LDFLAGS_EXTRA:-}
  # Test-only: fork/wait for spec/fork_spec.lua where Debian's lua-posix is missing (Lua 5.4).
  $CC -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -fPIC -Wall -Wextra -Werror ${CFLAGS_EXTRA:-} -I"$inc" \
    -shared -o "build/$v/limitry_test_fork.so" spec/support/fork_shim.c ${LDFLAGS_EXTRA:-}
done
