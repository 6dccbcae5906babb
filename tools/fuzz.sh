#!/bin/sh
# Builds the libFuzzer harnesses in fuzz/ (clang, ASan + UBSan) and runs each for FUZZ_SECONDS
# (default 30) on the committed seeds plus what earlier runs found (build/fuzz/work-*).
#   tools/fuzz.sh              both harnesses, exit status 0 only if neither found anything
#   tools/fuzz.sh json         one harness (json or response)
#   FUZZ_SECONDS=600 tools/fuzz.sh
# A crash, a sanitizer report or a broken invariant leaves the input in build/fuzz/<name>-crash-*;
# replay it with build/fuzz/<name>_fuzz FILE.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_EACH=${FUZZ_SECONDS:-30}
CC=${FUZZ_CC:-clang}
OUT=build/fuzz
mkdir -p "$OUT"
FLAGS="-g -O1 -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined
  -fno-sanitize-recover=undefined -fno-omit-frame-pointer -I/usr/include/lua5.4 -I/usr/include/x86_64-linux-gnu -Isrc"
build() {
  case "$1" in
  # shellcheck disable=SC2086
  json) $CC $FLAGS fuzz/json_fuzz.c src/json.c -llua5.4 -lm -o "$OUT/json_fuzz" ;;
  # shellcheck disable=SC2086
  response) $CC $FLAGS -DLIMITRY_ROOT="\"$ROOT\"" fuzz/response_fuzz.c src/*.c -llua5.4 -lcurl -pthread -lm \
    -o "$OUT/response_fuzz" ;;
  *) echo "unknown harness $1 (json or response)" >&2; exit 2 ;;
  esac
}

status=0
for name in ${1:-json response}; do
  build "$name"
  mkdir -p "$OUT/work-$name"
  rm -f "$OUT/$name.log"
  if "$OUT/${name}_fuzz" -max_total_time="$SECONDS_EACH" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -dict="fuzz/$name.dict" -artifact_prefix="$OUT/$name-" \
      "$OUT/work-$name" "fuzz/corpus/$name" >"$OUT/$name.log" 2>&1; then
    result="no crash"
  else
    result="FAILED (see $OUT/$name.log)"
    grep -E "ERROR|invariant|SUMMARY|response_fuzz:|Test unit written" "$OUT/$name.log" | head -n 12 || true
    status=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$name.log")
  echo "fuzz $name: ${runs:-?} executions in ${SECONDS_EACH} s, corpus $(ls "$OUT/work-$name" | wc -l) + $(ls "fuzz/corpus/$name" | wc -l) seeds, $result"
done
exit $status
