#!/bin/sh
# ThreadSanitizer check: limitry.core and tools/tsan_host.c built with clang -fsanitize=thread;
# 8 Lua states in 8 threads load the module at once and call the local server. Fails on any
# TSan report or failed call. Bounded: the host is killed after 60 s.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
out=build/tsan
mkdir -p "$out/limitry"
TSAN="-fsanitize=thread -g -O1"
clang -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -Wall -Wextra -Werror $TSAN -I/usr/include/lua5.4 \
  -I/usr/include/x86_64-linux-gnu -shared -o "$out/limitry/core.so" \
  src/core.c src/request.c src/multi.c src/process.c src/json.c src/buffer.c -lcurl -pthread || exit 1
clang -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror $TSAN -I/usr/include/lua5.4 \
  -o "$out/tsan_host" tools/tsan_host.c -llua5.4 -pthread -rdynamic || exit 1
dir=$(mktemp -d "${LIMITRY_TEST_TMP:-/tmp}/tsan.XXXXXX")
env_lines=$(lua5.4 server/limitry-local start --dir "$dir" --empty) || { echo "server did not start"; exit 1; }
eval "$env_lines"
url="${LIMITRY_BASE_URL%/v1}/healthz" # 200 without a key: the host sends no headers
status=0
TSAN_OPTIONS="halt_on_error=1 exitcode=66 report_signal_unsafe=0" \
  timeout 60 "$out/tsan_host" "$ROOT/$out/?.so" "$url" 5 || status=$?
lua5.4 server/limitry-local stop --dir "$dir" >/dev/null 2>&1
rm -rf "$dir"
exit $status
