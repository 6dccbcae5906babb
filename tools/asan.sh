#!/bin/sh
# Builds what the ASan + UBSan run of the client specs needs:
#   build/asan/limitry/core.so   the core with -fsanitize=address,undefined
#   build/asan/bin/lua5.4        a sanitized Lua 5.4 host (tools/asan_lua.c), no LD_PRELOAD
# tools/test.sh asan then runs busted with build/asan/bin first on PATH: the specs and the child
# Lua processes they start are sanitized; nginx and the other programs are not.
set -eu
cd "$(dirname "$0")/.."
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS_EXTRA="-O1 $SAN" LDFLAGS_EXTRA="$SAN" sh tools/build.sh asan
mkdir -p build/asan/bin
# shellcheck disable=SC2086
${CC:-cc} -std=c99 -O1 -g -Wall -Wextra -Werror -pedantic $SAN -I/usr/include/lua5.4 tools/asan_lua.c \
  -llua5.4 -o build/asan/bin/lua5.4
