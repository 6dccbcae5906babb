#!/bin/sh
# `limitry events import` of an NDJSON file into a fresh local server (empty, --dir under
# .test-tmp/bench-import), printing: the file, events/s, the importing process's RSS every second
# (and the server's: nginx's master and worker),
# then the same import run again, and a run killed half way then run again, each followed by the
# number of events the server holds (it must be LINES every time).
#   sh bench/import.sh [LINES]        default 1,000,000 (a 210 MB file, made once: bench/import_gen.lua)
#   LUA=5.1 sh bench/import.sh        the CLI on another Lua (5.4 by default)
#   SERVER_HOME=DIR sh bench/import.sh   another server/ folder (a branch's, say)
#   CONCURRENCY=N                     batches in flight (default: the CLI's, 2)
#   ONLY_FIRST=1                      the first run alone (a quicker measure of ingest)
#   ORDER=random                      the same lines in random time order (another file, made once)
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LINES=${1:-1000000}
LUA=${LUA:-5.4}
case "$LUA" in luajit) INTERP=luajit ;; *) INTERP="lua$LUA" ;; esac
sh tools/build.sh "$LUA" >/dev/null
OUT="$ROOT/.test-tmp/bench-import"
mkdir -p "$OUT"
ORDER=${ORDER:-time}
case "$ORDER" in
  time) FILE="$OUT/events-$LINES-v2.ndjson" ;;
  random) FILE="$OUT/events-$LINES-v2-random.ndjson" ;;
  *) echo "ORDER must be time or random" >&2; exit 2 ;;
esac
[ -s "$FILE" ] || lua5.4 bench/import_gen.lua "$LINES" "$ORDER" >"$FILE"
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/$LUA/?.so;;"
CLI="$INTERP $ROOT/bin/limitry"
SERVER_OPTS=""
[ -n "${SERVER_HOME:-}" ] && SERVER_OPTS="--server-dir $SERVER_HOME"
EXTRA=""
[ -n "${CONCURRENCY:-}" ] && EXTRA="--concurrency $CONCURRENCY"
DIR=""

start_server() {
  DIR="$OUT/server-$1"
  $CLI local stop --dir "$DIR" $SERVER_OPTS >/dev/null 2>&1 || true
  rm -rf "$DIR"
  eval "$($CLI local start --dir "$DIR" --empty $SERVER_OPTS)"
}
stop_server() { $CLI local stop --dir "$DIR" $SERVER_OPTS >/dev/null 2>&1 || true; }
trap stop_server EXIT

# CPU seconds (user + system) of a process, and of the server's nginx workers.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
server_cpu() {
  total=0
  for w in $(pgrep -P "$LIMITRY_SERVER_PID"); do total=$(echo "$total $(cpu_of "$w")" | awk '{ print $1 + $2 }'); done
  echo "$total"
}

stored() {
  $CLI usage summary --from 2000-01-01 --to 2100-01-01 --timeout 600 -o csv | sed -n 2p | cut -d, -f1
}

# The RSS (MB) of the server's master and workers.
server_rss() {
  total=0
  for p in "$LIMITRY_SERVER_PID" $(pgrep -P "$LIMITRY_SERVER_PID"); do
    r=$(awk '/^VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${r:-0}))
  done
  echo $((total / 1024))
}

# Runs the import in the background, sampling its RSS (MB) every second; prints the summary line.
# $1: a label; $2: "kill" to kill -9 it once the server holds about half the file.
import_run() {
  srv0=$(server_cpu)
  $CLI events import "$FILE" -o json --no-progress $EXTRA >"$OUT/summary.json" 2>"$OUT/import.err" &
  pid=$!
  rss=""
  srss=""
  killed=""
  cli_cpu=0
  while kill -0 "$pid" 2>/dev/null; do
    r=$(awk '/^VmRSS/{printf "%d", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$r" ] && rss="$rss $r"
    srss="$srss $(server_rss)"
    c=$(cpu_of "$pid")
    [ "$c" != 0 ] && cli_cpu=$c
    if [ "${2:-}" = kill ] && [ -z "$killed" ]; then
      n=$(stored || echo 0)
      if [ "${n:-0}" -ge $((LINES / 2)) ]; then
        kill -9 "$pid"
        killed=$n
      fi
    fi
    sleep 1
  done
  wait "$pid" 2>/dev/null || true
  cpu="CPU seconds: limitry $cli_cpu (to its last second), the server's nginx worker $(echo "$(server_cpu) $srv0" | awk '{ printf "%.1f", $1 - $2 }'); load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ -n "$killed" ]; then
    echo "$1: killed with $killed events stored; RSS MB each second:$rss"
    echo "$1: the server's RSS MB each second:$srss"
    echo "$1: $cpu"
  else
    echo "$1: $(cat "$OUT/summary.json")"
    echo "$1: RSS MB each second:$rss"
    echo "$1: the server's RSS MB each second:$srss"
    echo "$1: $cpu"
    if [ -s "$OUT/import.err" ]; then sed 's/^/  stderr: /' "$OUT/import.err"; fi
  fi
}

echo "limitry events import, $LINES lines ($(du -m "$FILE" | cut -f1) MB, in $ORDER order), the CLI on $($INTERP -v 2>&1 | cut -d' ' -f1-2),"
echo "server: ${SERVER_HOME:-$ROOT/server} (nginx, 1 worker); $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
start_server a
import_run "first run"
echo "stored: $(stored)"
[ -n "${ONLY_FIRST:-}" ] && exit 0
import_run "the same file again"
echo "stored after the second run: $(stored)"
stop_server
start_server b
import_run "killed half way" kill
echo "stored after the kill: $(stored)"
import_run "run again"
echo "stored after the run again: $(stored)"
