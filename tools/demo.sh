#!/bin/sh
# make demo: start the local server with the sample data, print a usage report, stop the server.
# make demo-enforce (or DEMO=enforce sh tools/demo.sh): start an empty server, create a quota and a
# rate limit, track calls until each refuses, print the decisions, stop the server.
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
sh tools/build.sh 5.4
if [ "${DEMO:-report}" = enforce ]; then
  DIR="$(pwd)/.limitry-local/demo-enforce"
  rm -rf "$DIR"
  eval "$(lua5.4 server/limitry-local start --dir "$DIR" --empty)"
else
  DIR="$(pwd)/.limitry-local/demo"
  eval "$(lua5.4 server/limitry-local start --dir "$DIR")"
fi
trap 'lua5.4 server/limitry-local stop --dir "$DIR" >/dev/null' EXIT
echo "local server: $LIMITRY_BASE_URL (pid $LIMITRY_SERVER_PID, data in $DIR/data)"
echo
if [ "${DEMO:-report}" = enforce ]; then
  lua5.4 examples/enforce.lua
else
  lua5.4 examples/report.lua "${MONTH:-2024-01}" ${CUSTOMER:-}
fi
