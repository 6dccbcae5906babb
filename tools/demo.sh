#!/bin/sh
# make demo: start the local server with the sample data, print a usage report, stop the server.
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
sh tools/build.sh 5.4
DIR="$(pwd)/.limitry-local/demo"
eval "$(lua5.4 server/limitry-local start --dir "$DIR")"
trap 'lua5.4 server/limitry-local stop --dir "$DIR" >/dev/null' EXIT
echo "local server: $LIMITRY_BASE_URL (pid $LIMITRY_SERVER_PID, data in $DIR/data)"
echo
lua5.4 examples/report.lua "${MONTH:-2024-01}" ${CUSTOMER:-}
