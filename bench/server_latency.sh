#!/bin/sh
# Latency of the local server over the sample data (50,400 events), measured with wrk on
# loopback: a 90-day summary and a 90-day hourly timeseries (2,160 buckets), among others.
# Bounded: each run lasts DURATION seconds (default 5), once per connection count in CONNECTIONS
# (default "1 4"), with 1 wrk thread; nginx runs one worker, as `limitry-local start` always does.
#   sh bench/server_latency.sh
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-"1 4"}
DIR="$(pwd)/.test-tmp/bench-server"
mkdir -p "$DIR"
eval "$(lua5.4 server/limitry-local start --dir "$DIR")"
trap 'lua5.4 server/limitry-local stop --dir "$DIR" >/dev/null' EXIT
AUTH="Authorization: Bearer $LIMITRY_API_KEY"
RANGE="startDate=2024-01-01T00:00:00Z&endDate=2024-03-31T00:00:00Z"

run() { # name path
  for c in $CONNECTIONS; do run_one "$1" "$2" "$c"; done
}

run_one() { # name path connections
  out=$(wrk -t1 -c"$3" -d"${DURATION}s" --latency -H "$AUTH" "$LIMITRY_BASE_URL$2")
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  errs=$(echo "$out" | awk '/Non-2xx/{print $5}')
  printf '| %-34s | %5s | %9s | %9s | %10s | %7s |\n' "$1" "$3" "$p50" "$p99" "$rps" "${errs:-0}"
}

echo "wrk -t1 -d${DURATION}s per row, nginx 1 worker, $(nproc) cores, sample data 50,400 events"
printf '| %-34s | %5s | %9s | %9s | %10s | %7s |\n' "request" "conns" "p50" "p99" "req/s" "non-2xx"
printf '|%s|%s|%s|%s|%s|%s|\n' "------------------------------------" "-------" "-----------" "-----------" "------------" "---------"
run "summary, 90 days" "/usage?$RANGE"
run "summary, 90 days, one customer" "/usage?$RANGE&customerId=cust_acme"
run "breakdown by model, 90 days" "/usage/breakdown?groupBy=model&$RANGE"
run "timeseries hourly, 90 days" "/usage/timeseries?interval=hour&$RANGE"
run "timeseries daily, 90 days" "/usage/timeseries?interval=day&$RANGE"
