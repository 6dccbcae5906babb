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
  # The sample data (server/lua/limitry_server/sample.lua) covers 2024-01-01 to 2024-03-31: say so
  # before another month prints a report of zeros.
  case "${MONTH:-2024-01}" in
    2024-01 | 2024-02 | 2024-03) ;;
    *) echo "note: the sample data covers January to March 2024, so MONTH=$MONTH has no events;" \
         "try MONTH=2024-01, 2024-02 or 2024-03"
       echo ;;
  esac
  lua5.4 examples/report.lua "${MONTH:-2024-01}" ${CUSTOMER:-}
fi
